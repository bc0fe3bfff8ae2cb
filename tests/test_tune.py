"""`hyperrestart tune`: tune specs checked when read (one line per problem), the distributions as Ray Tune's, PBT's
explore step kept in bounds, the report's search section; end to end (-m slow): the tiny ASHA search and the
4-member PBT."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperrestart.cli import main as cli_main
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import PROJECT_ROOT
from hyperrestart.tune import space as tune_space
from hyperrestart.tune.spec import parse_tune_spec

BASE = "configs/p3/table2_t5_restart.json"
GOOD = f"""runner: p3
config: {BASE}
set: {{seed: 1}}
search:
  space:
    learning_rate: {{loguniform: [1.0e-3, 1.0e-2]}}
    eta_min: {{uniform: [0, 1.0e-4]}}
    restart_t0: {{randint: [1, 4]}}
    optimizer: {{choice: [adamw, adafactor]}}
  metric: rougeL_micro
  mode: max
  num_samples: 6
  scheduler: {{name: asha, grace_period: 102}}
"""


def write(tmp_path, text, name="tune.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path, text, tiny=True):
    """The one-line error a spec gets from `tune --list`."""
    with pytest.raises(HyperrestartError) as caught:
        parse_tune_spec(write(tmp_path, text), tiny=tiny)
    message = str(caught.value)
    lines = message.splitlines()  # one line; an unknown option: the sweep's header and one line naming it
    assert len(lines) == 1 or (len(lines) == 2 and "found before anything runs" in lines[0]), message
    return message


def test_a_good_spec_parses_with_the_runs_steps(tmp_path):
    spec = parse_tune_spec(write(tmp_path, GOOD), tiny=True)
    assert spec.keys == ["learning_rate", "eta_min", "restart_t0", "optimizer"]
    assert (spec.max_steps, spec.eval_steps, spec.num_samples, spec.searcher) == (255, 51, 6, "random")
    assert spec.scheduler == {"name": "asha", "grace_period": 102, "reduction_factor": 2}
    fixed = dict(spec.fixed)
    assert "learning_rate" not in fixed and fixed["seed"] == 1 and fixed["max_steps"] == 255  # the search decides lr
    full = parse_tune_spec(write(tmp_path, GOOD), tiny=False)  # Table 2's own steps
    assert (full.max_steps, full.eval_steps) == (39624, 312)


@pytest.mark.parametrize("edit, expected", [
    (("search:", "serch:"), "unknown key `serch` in the spec; did you mean `search`?"),
    (("metric: rougeL_micro", "metric: rougeL_mikro"), "did you mean `rougeL_micro`?"),
    (("metric: rougeL_micro", "metric: bleu"), "`search.metric` 'bleu' is not a metric of the P3 runner"),
    (("mode: max", "mode: maximum"), "`search.mode` must be min or max"),
    (("num_samples: 6", "num_samples: 0"), "`search.num_samples` must be an integer >= 1"),
    (("{loguniform: [1.0e-3, 1.0e-2]}", "{loguniform: [1.0e-2, 1.0e-3]}"), "low 0.01 >= high 0.001"),
    (("{loguniform: [1.0e-3, 1.0e-2]}", "{loguniform: [0, 1.0e-2]}"), "needs low > 0"),
    (("{loguniform: [1.0e-3, 1.0e-2]}", "{loguniform: [.nan, 1.0e-2]}"), "NaN and infinite values are refused"),
    (("{loguniform: [1.0e-3, 1.0e-2]}", "{loguniform: [1.0e-3, .inf]}"), "NaN and infinite values are refused"),
    (("{loguniform: [1.0e-3, 1.0e-2]}", "{logunifrom: [1.0e-3, 1.0e-2]}"), "did you mean `loguniform`?"),
    (("{loguniform: [1.0e-3, 1.0e-2]}", "{loguniform: [1.0e-3]}"), "must be [low, high], two finite numbers"),
    (("{loguniform: [1.0e-3, 1.0e-2]}", "[1.0e-3, 1.0e-2]"), "must be one distribution"),
    (("{loguniform: [1.0e-3, 1.0e-2]}", "{uniform: [-1.0e-3, 1.0e-2]}"), "learning_rate"),
    (("{randint: [1, 4]}", "{randint: [1.5, 4]}"), "bounds must be integers"),
    (("{choice: [adamw, adafactor]}", "{choice: []}"), "must be a list"),
    (("{uniform: [0, 1.0e-4]}", "{uniform: [0, 2.0e-3]}"), "the restart schedule needs eta_min < learning_rate"),
    (("    learning_rate: {loguniform: [1.0e-3, 1.0e-2]}\n", ""), None),  # lr from the run: 3e-3 with --tiny
    (("    learning_rate: {loguniform: [1.0e-3, 1.0e-2]}\n    eta_min: {uniform: [0, 1.0e-4]}",
      "    eta_min: {uniform: [0, 5.0e-3]}"), "learning_rate can be as low as 0.003"),
    (("    eta_min:", "    eta_mni:"), "`eta_mni` (from search.space) is not one of the options of the P3 runner"),
    (("{name: asha, grace_period: 102}", "{name: hyperband}"), "`search.scheduler.name` is 'hyperband'"),
    (("{name: asha, grace_period: 102}", "{name: asha, grace: 102}"), "did you mean `grace_period`?"),
    (("{name: asha, grace_period: 102}", "{name: asha, grace_period: 255}"), "ASHA could stop nothing"),
    (("{name: asha, grace_period: 102}", "{name: pbt, perturbation_interval: 100}"), "must be a multiple of eval_steps"),
    (("{name: asha, grace_period: 102}", "{name: pbt, mutate: [seed]}"), "`seed`, which is not searched"),
    (("{name: asha, grace_period: 102}", "{name: pbt, mutate: [restart_t0]}"), "cannot change when it resumes"),
    (("{name: asha, grace_period: 102}", "{name: pbt, perturb_every: 2, perturbation_interval: 102}"), "not both"),
    (("  num_samples: 6\n", "  num_samples: 6\n  searcher: optuna\n"), None),
    (("  num_samples: 6\n", "  num_samples: 6\n  searcher: tpe\n"), "use one of random, optuna"),
    (("set: {seed: 1}", "set: {seed: 1, learning_rate: 1.0e-3}"), "`learning_rate` is both searched"),
    (("set: {seed: 1}", "set: {seed: -1}"), "seed"),
    (("set: {seed: 1}", "grid: {seed: [1, 2]}"), "a tune spec has no `grid:`"),
    (("runner: p3", "runner: run"), "`tune` runs the P3 runner"),
])
def test_bad_specs_are_refused_at_parse_time_in_one_line(tmp_path, edit, expected):
    old, new = edit
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    if expected is None:  # the control: a valid variant parses
        assert parse_tune_spec(write(tmp_path, text), tiny=True).searcher in ("optuna", "random")
        return
    assert expected in refused(tmp_path, text)


def test_pbt_with_another_searcher_or_a_population_of_one_is_refused(tmp_path):
    pbt = GOOD.replace("{name: asha, grace_period: 102}", "{name: pbt, perturb_every: 2, mutate: [learning_rate]}")
    spec = parse_tune_spec(write(tmp_path, pbt), tiny=True)
    assert spec.scheduler["perturbation_interval"] == 102 and spec.scheduler["mutate"] == ["learning_rate"]
    assert "use `searcher: random`" in refused(tmp_path, pbt.replace("num_samples: 6", "num_samples: 6\n  searcher: optuna"))
    assert "at least 2 members" in refused(tmp_path, pbt.replace("num_samples: 6", "num_samples: 1"))


def test_the_cli_refuses_in_one_line_without_a_traceback(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("mode: max", "mode: best"))
    assert cli_main(["tune", str(path), "--tiny", "--list"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hyperrestart: error:") and "mode" in err and len(err.splitlines()) == 1


def test_the_shipped_tiny_specs_match_the_issue(capsys):
    asha = parse_tune_spec(PROJECT_ROOT / "sweeps" / "tune_tiny.yaml", tiny=True)
    assert (asha.num_samples, asha.scheduler["name"], sorted(asha.keys)) == (8, "asha", ["eta_min", "learning_rate"])
    pbt = parse_tune_spec(PROJECT_ROOT / "sweeps" / "tune_pbt_tiny.yaml", tiny=True)
    assert (pbt.num_samples, pbt.scheduler["name"]) == (4, "pbt")
    assert pbt.scheduler["perturbation_interval"] < pbt.max_steps
    assert cli_main(["tune", "sweeps/tune_tiny.yaml", "--tiny", "--list"]) == 0
    out = capsys.readouterr().out
    assert "search\tlearning_rate\tloguniform[0.001, 0.01]" in out and "8 trial(s)" in out


@pytest.mark.slow  # seconds of plotting / importing Ray; kept out of the 90 s default suite
def test_distributions_map_to_ray_domains_with_inclusive_randint(tmp_path):
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Uniform

    spec = parse_tune_spec(write(tmp_path, GOOD), tiny=True)
    domains = tune_space.param_space(spec)
    lr, eta, t0, opt = (domains[k] for k in spec.keys)
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-3, 1e-2) and isinstance(lr.sampler, LogUniform)
    assert isinstance(eta, Float) and isinstance(eta.sampler, Uniform)
    assert isinstance(t0, Integer) and (t0.lower, t0.upper) == (1, 5)  # Ray's upper bound is exclusive
    assert isinstance(opt, Categorical) and opt.categories == ["adamw", "adafactor"]
    draws = {t0.sample() for _ in range(300)}
    assert draws == {1, 2, 3, 4}
    samples = [lr.sample() for _ in range(300)]
    assert all(1e-3 <= s <= 1e-2 for s in samples) and min(samples) < 2e-3 and max(samples) > 5e-3


@pytest.mark.slow  # 2-3 s (Ray import, plotting, parser round trips); kept out of the 90 s default suite
def test_pbt_perturbations_stay_inside_the_bounds(tmp_path):
    spec = parse_tune_spec(write(tmp_path, GOOD), tiny=True)
    clip = tune_space.Clipper(spec)
    assert clip({"learning_rate": 1.2e-2, "eta_min": -1e-9, "restart_t0": 4.8, "optimizer": "adamw"}) == \
        {"learning_rate": 1e-2, "eta_min": 0.0, "restart_t0": 4, "optimizer": "adamw"}
    assert clip({"learning_rate": 5e-3, "eta_min": 1e-5})["learning_rate"] == 5e-3
    pbt = parse_tune_spec(write(tmp_path, GOOD.replace("{name: asha, grace_period: 102}",
                                                      "{name: pbt, mutate: [learning_rate, eta_min]}")
                                .replace("{loguniform: [1.0e-3, 1.0e-2]}", "{choice: [1.0e-3, 3.0e-3]}")), tiny=True)
    mutations = tune_space.mutations(pbt)  # a choice is a list PBT shifts along, a range a domain it resamples
    assert mutations["learning_rate"] == [1e-3, 3e-3] and type(mutations["eta_min"]).__name__ == "Float"
    assert set(mutations) == {"learning_rate", "eta_min"}


@pytest.mark.slow  # 2-3 s (Ray import, plotting, parser round trips); kept out of the 90 s default suite
def test_the_report_names_the_best_finished_trial_and_plots_score_per_key(tmp_path):
    """A fake search root: finished and stopped trials; the best is the best finished one, the plot is written."""
    from hyperrestart.report.search import best_lines, plot_search, search_markdown, search_roots, trials
    from hyperrestart.sweep.jobs import COMPLETE_MARKER
    from hyperrestart.tune.trial import SEARCH_RECORD, STOPPED_MARKER, TRIAL_RECORD

    root = tmp_path / "search"
    record = {"name": "s", "metric": "rougeL_micro", "mode": "max", "searcher": "random", "max_steps": 255,
              "scheduler": {"name": "asha"}, "space": {"learning_rate": {"loguniform": [1e-3, 1e-2]},
                                                       "eta_min": {"uniform": [0, 1e-4]}}}
    root.mkdir()
    (root / SEARCH_RECORD).write_text(json.dumps(record))
    for name, lr, scores, state in (("trial_00000", 2e-3, [0, 20.0, 25.0], "finished"),
                                    ("trial_00001", 8e-3, [0, 28.0], "stopped"),  # higher, but after fewer steps
                                    ("trial_00002", 4e-3, [0, 22.0, 27.5], "finished")):
        folder = root / name
        folder.mkdir()
        (folder / TRIAL_RECORD).write_text(json.dumps({"config": {"learning_rate": lr, "eta_min": 1e-5},
                                                       "exploits": []}))
        rows = "".join(f"{i * 102},{s},{s},800,4,1.0\n" for i, s in enumerate(scores))
        (folder / "eval_log.csv").write_text("step,rougeL_micro,rougeL_macro,num_examples,num_tasks,eval_seconds\n"
                                             + rows)
        (folder / (COMPLETE_MARKER if state == "finished" else STOPPED_MARKER)).write_text("{}")
    [(found_root, found_record)] = search_roots([root])
    found = trials(found_root, found_record)
    assert [t["state"] for t in found] == ["finished", "stopped", "finished"]
    assert best_lines(root)[0] == ("best configuration: learning_rate=0.004, eta_min=1e-05 (trial_00002): "
                                   "rougeL_micro 27.50 at step 204")
    markdown = search_markdown(root, record, found)
    assert "| trial_00002 **best** | finished | 204 | 27.50 |" in markdown
    assert "| trial_00001 | stopped early (asha) | 102 | 28.00 |" in markdown
    path = plot_search(record, found, tmp_path / "out" / "search_scores.png") if (tmp_path / "out").mkdir() is None \
        else None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((tmp_path / "out" / "search.csv").open(encoding="utf-8")))
    assert [(r["trial"], r["state"], r["rougeL_micro"]) for r in rows] == [
        ("trial_00000", "finished", "25.0"), ("trial_00001", "stopped", "28.0"), ("trial_00002", "finished", "27.5")]


def test_a_second_search_into_the_same_output_root_is_refused(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    (root / "tune-search.json").write_text("{}")
    assert cli_main(["tune", "sweeps/tune_tiny.yaml", "--tiny", "--output-root", str(root)]) == 1
    assert "holds a search already" in capsys.readouterr().err
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("the user's")
    assert cli_main(["tune", "sweeps/tune_tiny.yaml", "--tiny", "--output-root", str(other)]) == 1
    assert "is not empty; a search writes its trial folders into a new or empty folder" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]  # untouched
    assert cli_main(["tune", "sweeps/tune_tiny.yaml", "--tiny", "--output-root", str(tmp_path / "new"),
                     "--nproc", "3", "--cpus", "2"]) == 1
    assert "--nproc 3 asks more CPUs per trial than the local Ray has (2, --cpus)" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()



def plan(tmp_path, **changes):
    from hyperrestart.tune.trial import TrialPlan

    settings = dict(search="s", output_root=str(tmp_path), config=str(PROJECT_ROOT / BASE), fixed=[("seed", 1)],
                    extra_args=[], keys=["learning_rate", "eta_min"], metric="rougeL_micro", max_steps=255,
                    segment=102, mutate=["learning_rate", "eta_min"], nproc=1, report={}, env={})
    settings.update(changes)
    return TrialPlan(**settings)


def test_segments_and_runner_flags_of_a_trial(tmp_path):
    from hyperrestart.tune.trial import runner_command, segment_ends, write_run_files

    assert segment_ends(0, plan(tmp_path)) == [102, 204, 255]
    assert segment_ends(102, plan(tmp_path)) == [204, 255]
    assert segment_ends(0, plan(tmp_path, segment=0)) == [255]  # ASHA: one run, stopped by killing it
    base = ["hyperrestart", "p3", "--config", "c.json"]
    assert runner_command(base, 102, 255, None) == base + ["--", "--stop_at_step", "102"]
    assert runner_command(base, 255, 255, "learning_rate,eta_min") == \
        base + ["--", "--resume_allowed_changes", "learning_rate,eta_min"]
    assert runner_command(base + ["--"], 204, 255, "none") == \
        base + ["--", "--stop_at_step", "204", "--resume_allowed_changes", "none"]
    folder = tmp_path / "trial_00002"
    folder.mkdir()
    info = write_run_files(folder, "trial_00002", {"learning_rate": 2e-3, "eta_min": 1e-6}, plan(tmp_path, nproc=2))
    assert info["command"][-2:] == ["--nproc-per-node", "2"] and info["index"] == 2 and info["arm"] == "trial_00002"
    merged = json.loads((folder / "sweep-config.json").read_text())
    assert (merged["learning_rate"], merged["eta_min"], merged["seed"]) == (2e-3, 1e-6, 1)
    assert json.loads((folder / "sweep-run.json").read_text())["labels"] == {"learning_rate": 2e-3, "eta_min": 1e-6}


def test_evaluations_are_read_whole_rows_only(tmp_path):
    from hyperrestart.tune.trial import new_evaluations

    (tmp_path / "eval_log.csv").write_text("step,rougeL_micro,rougeL_macro\n0,0.0,0.0\n51,1.5,1.0\n102,12.")
    assert [(r["step"], r["rougeL_micro"]) for r in new_evaluations(tmp_path, -1)] == [(0, 0.0), (51, 1.5)]
    assert new_evaluations(tmp_path, 51) == []  # the half-written row waits for its newline


def test_a_donors_checkpoint_replaces_the_trials_own_and_the_exploit_is_recorded(tmp_path):
    from ray.tune import Checkpoint
    from hyperrestart.tune.trial import CHECKPOINT_META, restore

    donor = tmp_path / "ray-checkpoint"
    (donor / "checkpoint-102").mkdir(parents=True)
    (donor / "checkpoint-102" / "trainer_state.pt").write_text("donor")
    (donor / CHECKPOINT_META).write_text(json.dumps({"trial": "trial_00002", "step": 102,
                                                     "config": {"learning_rate": 5e-3, "eta_min": 2e-4}}))
    run_dir = tmp_path / "trial_00001"
    for step in (51, 102):
        (run_dir / f"checkpoint-{step}").mkdir(parents=True)
        (run_dir / f"checkpoint-{step}" / "trainer_state.pt").write_text("own")
    record = {"config": {"learning_rate": 1e-3, "eta_min": 1e-7}, "exploits": []}
    new = {"learning_rate": 4e-3, "eta_min": 2.4e-4}
    step, by = restore(Checkpoint.from_directory(str(donor)), run_dir, "trial_00001", new, plan(tmp_path), record)
    assert (step, by) == (102, "trial_00002")
    assert (run_dir / "checkpoint-102" / "trainer_state.pt").read_text() == "donor"
    assert (run_dir / "checkpoint-51" / "trainer_state.pt").read_text() == "own"  # older ones stay
    [exploit] = record["exploits"]
    assert (exploit["step"], exploit["donor"], exploit["old"], exploit["new"]) == \
        (102, "trial_00002", {"learning_rate": 1e-3, "eta_min": 1e-7}, new)
    assert exploit["donor_values"] == {"learning_rate": 5e-3, "eta_min": 2e-4}
    own = json.loads((donor / CHECKPOINT_META).read_text())
    (donor / CHECKPOINT_META).write_text(json.dumps(dict(own, trial="trial_00001")))
    assert restore(Checkpoint.from_directory(str(donor)), run_dir, "trial_00001", new, plan(tmp_path),
                   record) == (102, None)  # its own checkpoint after a pause: no exploit
    assert len(record["exploits"]) == 1

# --- end to end on the tiny P3 task (-m slow) ------------------------------------------------------------------------
def tune_command(spec, root, *extra):
    return [sys.executable, "-m", "hyperrestart.cli", "tune", str(spec), "--tiny", "--output-root", str(root),
            *map(str, extra)]


def run_tune(spec, root, *extra, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(tune_command(spec, root, *extra), capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_spec(tmp_path, source, **changes):
    """A test-only copy of a shipped tiny spec with fewer trials (the shipped ones keep the issue's sizes)."""
    text = (PROJECT_ROOT / "sweeps" / source).read_text(encoding="utf-8")
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    return write(tmp_path, text, source)


test_spec.__test__ = False


@pytest.mark.slow  # a 2-trial ASHA search on the tiny P3 task, one trial at a time (~2-4 min on 2 busy cores)
def test_tiny_asha_search_stops_a_trial_early_and_reports_the_best(tmp_path):
    # one trial at a time, so ASHA's rung at step 102 holds trial_00000's score when trial_00001 (lr 1.1e-3,
    # Rouge-L 0.25 at step 102 against 12.9) reaches it: it is stopped there
    spec = test_spec(tmp_path, "tune_tiny.yaml", **{"num_samples: 8": "num_samples: 2\n  max_concurrent: 1"})
    root = tmp_path / "asha"
    out = run_tune(spec, root)
    assert "trial_00001: stopped at step 102 by asha" in out and "trial_00000: finished" in out
    assert "2 trials in" in out and "1 finished, 1 stopped early by asha, 0 failed" in out
    best = next(line for line in out.splitlines() if line.startswith("best configuration:"))
    assert "(trial_00000)" in best and "at step 255" in best
    for name in ("trial_00000", "trial_00001"):  # every trial is a run folder report reads
        folder = root / name
        assert (folder / "sweep-run.json").exists() and (folder / "eval_log.csv").exists()
    stopped = json.loads((root / "trial_00001" / ".hyperrestart-stopped.json").read_text())
    assert stopped["step"] == 102 and stopped["by"] == "asha"
    steps = [int(r["step"]) for r in csv.DictReader((root / "trial_00001" / "train_log.csv").open())]
    assert max(steps) < 255  # it ended early, not after a full run
    assert (root / "trial_00000" / ".hyperrestart-complete.json").exists()
    assert cli_main(["report", str(root), "--out", str(root / "report")]) == 0
    table = (root / "report" / "table.md").read_text()
    assert "trial_00000 **best** | finished | 255" in table and "stopped early (asha) | 102" in table
    assert "_best configuration: learning_rate=" in table and "(trial_00000)" in table
    assert (root / "report" / "search_scores.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a 2-member PBT on the tiny P3 task in 3 segments each (~4-6 min on 2 busy cores)
def test_tiny_pbt_exploits_and_the_lr_trace_shows_it(tmp_path):
    spec = test_spec(tmp_path, "tune_pbt_tiny.yaml", **{"num_samples: 4": "num_samples: 2",
                                                        "quantile_fraction: 0.25": "quantile_fraction: 0.5"})
    root = tmp_path / "pbt"
    out = run_tune(spec, root)
    assert "2 finished, 0 stopped early by pbt, 0 failed" in out
    exploits = [(folder.name, e) for folder in sorted(root.glob("trial_*"))
                for e in json.loads((folder / "tune-trial.json").read_text())["exploits"]]
    assert exploits, out
    assert any(line.startswith("exploit at step ") for line in out.splitlines())
    name, exploit = exploits[0]
    assert exploit["step"] in (102, 204) and exploit["donor"] != name
    rows = {int(r["step"]): float(r["lr"]) for r in csv.DictReader((root / name / "train_log.csv").open())}
    assert sorted(rows) == list(range(1, 256))
    step = exploit["step"]
    until = min([e["step"] for n, e in exploits if n == name and e["step"] > step] + [255])
    new = sgdr_lr(exploit["new"]["learning_rate"], exploit["new"]["eta_min"])
    for s in range(step + 1, until + 1):  # after the exploit the trace follows the new values (eq. 5, T_0 1, T_mult 2)
        assert rows[s] == pytest.approx(new(s), rel=1e-9), s
    old = sgdr_lr(exploit["old"]["learning_rate"], exploit["old"]["eta_min"])
    assert rows[step] == pytest.approx(old(step), rel=1e-9)  # before it, the trial's own values
    assert rows[step + 1] != pytest.approx(old(step + 1), rel=1e-6)  # the perturbation shows in the trace
    assert cli_main(["report", str(root), "--out", str(root / "report")]) == 0
    assert f"_exploit at step {step}: {name} continued" in (root / "report" / "table.md").read_text()


def sgdr_lr(peak, eta_min, t0=1, t_mult=2):
    """The lr optimizer step `step` applies under SGDR with one scheduler step per optimizer step."""
    def lr(step):
        t_cur, t_i = step - 1, t0
        while t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * t_mult
        return eta_min + 0.5 * (peak - eta_min) * (1 + math.cos(math.pi * t_cur / t_i))
    return lr


def descendants(pid):
    """Every live process below `pid` (from /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow  # starts Ray and a trial, then stops it (~1 min)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_tune_leaves_no_ray_or_runner_process(tmp_path, signum):
    spec = test_spec(tmp_path, "tune_tiny.yaml", **{"num_samples: 8": "num_samples: 1"})
    root = tmp_path / "stop"
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    process = subprocess.Popen(tune_command(spec, root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 300
    while not (root / "trial_00000" / "run_config.json").exists():  # the runner is training
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(1)
    tree = descendants(process.pid)
    assert any("p3_trainer.py" in Path(f"/proc/{p}/cmdline").read_text(errors="replace") for p in tree if alive(p))
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    time.sleep(3)
    left = [p for p in tree if alive(p)]
    assert left == [], [Path(f"/proc/{p}/cmdline").read_text(errors="replace") for p in left]
    assert "Traceback" not in err and "interrupted" in err


@pytest.mark.slow  # starts Ray for one trial whose runner refuses its data folder (~30 s)
def test_a_failing_trial_fails_the_search_in_one_line(tmp_path):
    spec = test_spec(tmp_path, "tune_tiny.yaml", **{"num_samples: 8": "num_samples: 1"})
    root = tmp_path / "fail"
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(tune_command(spec, root, "--set", f"data_dir={tmp_path / 'no-such-data'}"),
                          capture_output=True, text=True, env=env, timeout=600, cwd=PROJECT_ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "trial_00000: FAILED:" in done.stdout and "no-such-data" in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("hyperrestart: error: 1 of 1 trials failed: trial_00000")
    assert "Traceback" not in done.stderr
    assert not (root / "trial_00000" / ".hyperrestart-complete.json").exists()
    assert not (root / "trial_00000" / ".hyperrestart-stopped.json").exists()


@pytest.mark.slow  # the shipped specs as they are: an 8-trial ASHA search, then a 4-member PBT (~4 min each on 2 cores)
def test_the_shipped_tiny_asha_and_pbt_specs_run_end_to_end(tmp_path):
    """`hyperrestart tune sweeps/tune_tiny.yaml --tiny` and `sweeps/tune_pbt_tiny.yaml --tiny`, unchanged: ASHA ends
    some trials early and names the best configuration; PBT exploits at least once."""
    asha = tmp_path / "asha"
    out = run_tune(PROJECT_ROOT / "sweeps" / "tune_tiny.yaml", asha)
    trials = sorted(p.name for p in asha.glob("trial_*"))
    assert len(trials) == 8, out
    stopped = [name for name in trials if (asha / name / ".hyperrestart-stopped.json").exists()]
    assert stopped, out  # lrs from 1e-3 to 1e-2: the slow learners are far below the rung's median at step 102
    best = next(line for line in out.splitlines() if line.startswith("best configuration:"))
    assert "learning_rate=" in best and "eta_min=" in best
    pbt = tmp_path / "pbt"
    out = run_tune(PROJECT_ROOT / "sweeps" / "tune_pbt_tiny.yaml", pbt)
    exploits = [e for folder in sorted(pbt.glob("trial_*"))
                for e in json.loads((folder / "tune-trial.json").read_text())["exploits"]]
    assert len(list(pbt.glob("trial_*"))) == 4 and exploits, out
