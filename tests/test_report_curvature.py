"""`hyperrestart report` picks up `analyse track` results (RUN_DIR/analysis/track.csv, written by the track writer
itself) for a sweep: the curvature section, curvature.csv and the figure, mean over each arm's tracked runs."""
import csv

import pytest
from test_report import p3_run

from hyperrestart.analysis import tasks, track
from hyperrestart.cli import main as cli_main
from hyperrestart.report import curvature

COMPARE = {"compare": {"axis": "schedule", "baseline": "no_restart"}, "seed_axis": "seed"}


def hessian_result(step, top, negative_mass, ratio):
    """One checkpoint's `analyse hessian` result, as the worker writes it (two spaces)."""
    def space(scale):
        return {"size": 10, "top": [top * scale, 1.0], "bottom": [-0.5, -0.1], "trace": 3.0, "trace_stderr": 0.1,
                "negative_mass": negative_mass * scale, "near_zero_mass": 0.5, "positive_mass": 0.5 - negative_mass,
                "signs": {"positive_of_top": 2, "negative_of_bottom": 2, "k": 2}}
    return {"checkpoint": f"checkpoint-{step}", "step": step, "loss": 80.0, "batches": 1, "seed": 0,
            "spaces": {"hypernetwork": space(1.0), "main": space(0.5)}, "r_term": {"ratio_mean": ratio}}


def write_track(run, points):
    """points: [(step, top, negative_mass, ratio)] -> RUN/analysis/track.csv through the track writer."""
    rows = tasks.summary_rows([hessian_result(*p) for p in points])
    folder = run / "analysis"
    folder.mkdir()
    return track.write_track(rows, folder / track.TRACK_FILE)


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    runs = {}
    for i, (schedule, seed) in enumerate([("no_restart", 1), ("no_restart", 2), ("restart", 1), ("restart", 2),
                                          ("other", 1)]):
        runs[(schedule, seed)] = p3_run(root, f"{schedule}_seed-{seed}", schedule, seed, 60.0 + i, i,
                                        {"schedule": schedule, "seed": str(seed)}, COMPARE)
    write_track(runs[("no_restart", 1)], [(0, 10.0, 0.1, 0.2), (2, 20.0, 0.2, 0.3), (4, 30.0, 0.3, 0.4)])
    write_track(runs[("no_restart", 2)], [(0, 12.0, 0.1, 0.2), (2, 22.0, 0.4, 0.5), (4, 34.0, 0.5, 0.6)])
    write_track(runs[("restart", 1)], [(0, 10.0, 0.1, 0.2), (2, 15.0, 0.1, 0.25), (4, 18.0, 0.2, 0.3)])
    # ("restart", 2) and ("other", 1) have no track results
    return root, runs


def test_report_adds_the_curvature_section_with_means_over_the_tracked_runs(sweep, tmp_path, capsys):
    root, _ = sweep
    out = tmp_path / "out"
    assert cli_main(["report", str(root), "--out", str(out), "--no-figures"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    markdown = (out / "table.md").read_text(encoding="utf-8")
    assert "## Curvature over training (`analyse track`)" in markdown
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and "| 4 |" in line]
    # no_restart at step 4: top 30 and 34 -> 32 ± 2.8 (sample std), mass 0.3/0.5 -> 0.4 ± 0.14, ratio 0.4/0.6
    assert "| no_restart | 2 | 4 | hypernetwork | 32 ± 2.8 | 0.4 ± 0.14 | 0.5 ± 0.14 |" in lines
    assert "| no_restart | 2 | 4 | main | 16 ± 1.4 | 0.2 ± 0.071 | – |" in lines
    assert "| restart | 1 | 4 | hypernetwork | 18 | 0.2 | 0.3 |" in lines  # one tracked run of two: n = 1
    assert not any("| other |" in line for line in lines)  # no tracked run: not in the section
    rows = list(csv.DictReader((out / "curvature.csv").open(encoding="utf-8")))
    first = next(r for r in rows if r["arm"] == "no_restart" and r["step"] == "2" and r["space"] == "hypernetwork")
    assert (float(first["top_eigenvalue_mean"]), float(first["top_eigenvalue_min"]),
            float(first["top_eigenvalue_max"]), first["n_runs"]) == (21.0, 20.0, 22.0, "2")
    assert {r["arm"] for r in rows} == {"no_restart", "restart"} and len(rows) == 2 * 2 * 3


def test_a_damaged_track_file_is_skipped_with_one_warning_line(sweep, tmp_path, capsys):
    root, runs = sweep
    path = runs[("no_restart", 2)] / "analysis" / track.TRACK_FILE
    path.write_text("step,space,top_eigenvalue\n4,hypernetwork,not-a-number\n", encoding="utf-8")
    bad = runs[("restart", 1)] / "analysis" / track.TRACK_FILE
    bad.write_bytes(b"\xff\xfe\x00garbage")
    out = tmp_path / "out"
    assert cli_main(["report", str(root), "--out", str(out), "--no-figures"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "track.csv" in line]
    assert len(warnings) == 2 and "Traceback" not in err
    assert all(line.startswith("warning: ") and "left out of the curvature section" in line for line in warnings)
    assert str(path) in err and str(bad) in err
    markdown = (out / "table.md").read_text(encoding="utf-8")
    assert "| no_restart | 1 | 4 | hypernetwork | 30 | 0.3 | 0.4 |" in markdown  # the other seed only
    assert "| restart |" not in markdown.split("## Curvature")[1]


def test_no_track_results_no_section(tmp_path, capsys):
    root = tmp_path / "sweep"
    p3_run(root, "restart_seed-1", "restart", 1, 60.0, 0, {"schedule": "restart", "seed": "1"}, COMPARE)
    out = tmp_path / "out"
    assert cli_main(["report", str(root), "--out", str(out), "--no-figures"]) == 0
    assert "Curvature" not in (out / "table.md").read_text(encoding="utf-8")
    assert not (out / "curvature.csv").exists()


@pytest.mark.slow  # draws the figures (seconds)
def test_the_figure_is_the_track_comparison_with_bands(sweep, tmp_path, monkeypatch):
    root, _ = sweep
    drawn = []
    real = curvature.plots.track_comparison_figure

    def spy(arms, title, path):
        drawn.append(arms)
        return real(arms, title, path)

    monkeypatch.setattr(curvature.plots, "track_comparison_figure", spy)
    out = tmp_path / "out"
    assert cli_main(["report", str(root), "--out", str(out)]) == 0
    assert (out / curvature.FIGURE).stat().st_size > 10_000
    assert "curvature.png" in (out / "table.md").read_text(encoding="utf-8")
    (arms,) = drawn
    assert [label for label, _, _ in arms] == ["no_restart, n=2", "restart, n=1"]
    band = {(r["step"], r["space"]): r for r in arms[0][1]}
    assert (band[(2, "main")]["top_eigenvalue_min"], band[(2, "main")]["top_eigenvalue_max"]) == (10.0, 11.0)
    assert arms[0][2] == [(1, 1e-4), (2, 5e-5), (3, 1e-4), (4, 5e-5)]  # the arm's lr curve
