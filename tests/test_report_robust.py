"""`hyperrestart report` on unlucky runs (issue 18): NaN metrics flagged and kept out of averages, full precision
in every CSV, and any locale."""
import csv
import os
import subprocess
import sys

import pytest

from hyperrestart.cli import main as cli_main
from hyperrestart.core.paths import PROJECT_ROOT
from hyperrestart.report.tables import csv_number
from test_report import glue_run, p3_run


# --- row 15: NaN metrics ------------------------------------------------------------------------------------------
def test_a_run_with_nan_metrics_is_flagged_and_kept_out_of_the_average(tmp_path, capsys):
    root = tmp_path / "runs"
    glue_run(root, "restart_seed-1", {"rte_test_acc": 60.0, "test_average_metrics": 60.0})
    glue_run(root, "restart_seed-2", {"rte_test_acc": 70.0, "test_average_metrics": 70.0})
    glue_run(root, "restart_seed-3", {"rte_test_acc": float("nan"), "test_average_metrics": float("nan")})
    assert "NaN" in (root / "restart_seed-3" / "test_results.json").read_text(encoding="utf-8")
    out = tmp_path / "out"
    assert cli_main(["report", str(root), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"excluding {root / 'restart_seed-3'} from the averages: its test metrics are not numbers (rte=nan, " \
           f"Avg=nan, from test_results.json)" in err
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "| restart | 2 | 65.00 ± 7.07 | 65.00 ± 7.07 |" in table
    assert "1 run(s) skipped (see the warnings): restart_seed-3 (NaN metrics)" in table
    assert [r["run"] for r in csv.DictReader(open(out / "runs.csv", encoding="utf-8"))] == [
        "restart_seed-1", "restart_seed-2"]


def test_a_p3_run_whose_last_evaluation_is_nan_is_flagged_not_read_from_an_earlier_one(tmp_path, capsys):
    root = tmp_path / "sweep"
    p3_run(root, "a_seed-1", "a", 1, 60.0, 0)
    bad = p3_run(root, "a_seed-2", "a", 2, 61.0, 1)
    with open(bad / "eval_log.csv", "a", encoding="utf-8") as handle:
        handle.write("6,nan,nan,16,4,0.1\n")
    assert cli_main(["report", str(root)]) == 0
    captured = capsys.readouterr()
    assert f"excluding {bad} from the averages" in captured.err and "Rouge-L=nan" in captured.err
    assert "| a | 1 | 60.00 |" in captured.out


# --- row 34: full precision -----------------------------------------------------------------------------------------
def test_csv_numbers_keep_full_precision():
    assert csv_number(1.45e-06) == "1.45e-06" and csv_number(1e-07) == "1e-07"
    assert csv_number(0.1 + 0.2) == "0.30000000000000004" and float(csv_number(2 / 3)) == 2 / 3


def test_curve_csvs_keep_a_cycle_end_lr_of_1e_7(tmp_path):
    root = tmp_path / "runs"
    history = [{"loss": 1.0, "learning_rate": lr, "step": step} for step, lr in [(1, 1.45e-6), (2, 1e-7)]]
    history.append({"rte_eval_acc": 60.0, "eval_average_metrics": 60.0, "step": 2})
    run = glue_run(root, "fig5_eta_min_1e-7", {"rte_test_acc": 60.0}, history=history)
    (run / "lr_trace.csv").write_text("step,lr_applied\n1,0.0003\n2,1.45e-06\n3,1e-07\n", encoding="utf-8")
    out = tmp_path / "out"
    assert cli_main(["report", str(root), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "loss_curves.csv", encoding="utf-8")))
    assert [r["lr_applied"] for r in rows] == ["0.0003", "1.45e-06"]
    assert [r["mean"] for r in rows] == ["1.0", "1.0"]


# --- row 29: any locale -------------------------------------------------------------------------------------------
@pytest.mark.slow  # a real `hyperrestart report` process (matplotlib import, figures): ~10 s
def test_report_works_under_a_non_utf8_locale(tmp_path):
    root = tmp_path / "sweep"
    for i, (arm, seed, rouge) in enumerate([("no_restart", 1, 63.0), ("no_restart", 2, 63.5),
                                            ("restart", 1, 64.0), ("restart", 2, 64.4)]):
        p3_run(root, f"{arm}_seed-{seed}", arm, seed, rouge, i, {"schedule": arm, "seed": str(seed)})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONIOENCODING", "PYTHONUTF8"))}
    env.update(LANG="C", LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONPATH=str(PROJECT_ROOT))
    probe = subprocess.run([sys.executable, "-c", "import locale, sys; print(sys.stdout.encoding, "
                            "locale.getpreferredencoding(False))"], env=env, capture_output=True, text=True)
    assert probe.stdout.split() == ["ascii", "ANSI_X3.4-1968"], probe.stdout  # really a non-UTF-8 locale
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", "report", str(root), "--out", str(out)],
                            env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "| restart | 2 | 64.20 ± 0.28 (+0.95) |" in table
    assert "| restart | 2 | 64.20 ± 0.28 (+0.95) |" in result.stdout.decode("utf-8")
