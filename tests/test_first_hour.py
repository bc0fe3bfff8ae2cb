"""A newcomer's first hour (issue 14): the quick start ends at a cycle end, says what its numbers mean, and is never
silent for long."""
import json
import time

import pytest

from hyperrestart.core import progress
from hyperrestart.upstream import training
from hyperrestart.upstream.resolve import TINY_SETTINGS
from hyperrestart.upstream.scheduler import cycle_end_steps


def test_tiny_runs_end_at_a_cycle_end_and_evaluate_there():
    steps = TINY_SETTINGS["max_steps"]
    assert steps in cycle_end_steps(1, 2, 0, up_to=steps)  # the paper's T_0=1, T_mult=2: 1, 3, 7, 15, 31
    assert steps % TINY_SETTINGS["eval_steps"] == 0 and steps % TINY_SETTINGS["save_steps"] == 0
    config = {"lr_scheduler": "cosine_annual_w_restarts", "max_steps": steps}
    assert training.alignment_warning(config) is None


def test_a_mid_cycle_run_is_warned_about_on_the_console():
    warning = training.alignment_warning({"lr_scheduler": "cosine_annual_w_restarts", "max_steps": 16})
    assert warning.startswith("warning: max_steps=16 does NOT end at a cycle end") and "15 or 31" in warning
    assert training.alignment_warning({"lr_scheduler": "linear", "max_steps": 16}) is None
    assert training.alignment_warning({"lr_scheduler": "cosine_annual_w_restarts", "max_steps": -1}) is None


def test_the_result_comes_with_what_to_expect(tmp_path):
    (tmp_path / "eval_results.json").write_text(json.dumps(
        {"rte_eval_loss": 340.7, "rte_eval_acc": 0.0, "cola_eval_loss": 393.1, "eval_average_metrics": 0.0}))
    (tmp_path / "test_results.json").write_text("{broken")
    text = training.result_text(tmp_path, tiny=True)
    assert "result:       eval_results.json: eval_average_metrics 0; loss 340.7-393.1" in text
    assert "test_results.json" not in text and "what to expect: --tiny checks that the pipeline runs" in text
    assert "what to expect: configs/README.md" in training.result_text(tmp_path, tiny=False)
    assert "result:       no eval_results.json" in training.result_text(tmp_path / "missing", tiny=False)


def test_progress_speaks_up_when_the_trainer_is_silent(capsys):
    bar = "{:3d}%|##########| {}/{} [00:01<00:00,  4.03it/s]"
    run = training.Progress(16, every=0.2)
    try:
        run.feed("Generating train split: 300 examples [00:00, 9721.19 examples/s]")
        time.sleep(0.6)
        run.feed(bar.format(12, 2, 16))
        time.sleep(0.6)
        run.feed(bar.format(50, 1, 7))  # an evaluation's bar
        time.sleep(0.6)
        run.feed(bar.format(100, 16, 16))
        time.sleep(0.6)
    finally:
        run.close()
    lines = capsys.readouterr().out.splitlines()
    phases = [line.split(" (")[0].strip() for line in lines if not line.startswith("step ")]
    assert phases[0] == "starting: preparing the data"
    assert "training" in phases and "evaluating" in phases
    assert phases[-1] == "finishing: final evaluation, test and saving"
    assert "step 2/16" in lines and "step 16/16" in lines


def test_generating_the_tiny_files_says_so(tmp_path, capsys, monkeypatch):
    from hyperrestart.upstream.tiny import _build_once
    monkeypatch.setattr(progress, "QUIET_LIMIT", 0.3)

    def slow_build(folder):
        time.sleep(0.8)
        (folder / "made").write_text("x")
    assert (_build_once(tmp_path / "thing", slow_build, "the tiny thing") / "made").exists()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"generating the tiny thing (once; cached in {tmp_path / 'thing'}) ..."
    assert "  still generating the tiny thing (0s)" in err or "  still generating the tiny thing (1s)" in err
    assert err[-1].startswith("generating the tiny thing: done in ")
    _build_once(tmp_path / "thing", slow_build, "the tiny thing")  # cached: not a word
    assert capsys.readouterr().err == ""


def test_p3_passes_the_runner_output_on_and_says_what_it_is_still_at(capsys, monkeypatch):
    import os
    import sys
    from hyperrestart.p3.launch import call_with_heartbeat
    monkeypatch.setattr(progress, "QUIET_LIMIT", 1.3)  # a heartbeat after 0.3 s of silence
    code = ("import sys, time\n"
            "print('2026-12-02 16:22:44,173 INFO p3_trainer: loading the model (tiny)', flush=True); time.sleep(1)\n"
            "sys.stderr.write('bar \u2588 50%\\r'); sys.stderr.flush(); time.sleep(1)\n"
            "print('done'); sys.exit(3)")
    assert call_with_heartbeat([sys.executable, "-c", code], dict(os.environ), None) == 3
    out, err = capsys.readouterr()
    assert out.splitlines() == ["2026-12-02 16:22:44,173 INFO p3_trainer: loading the model (tiny)", "done"]
    lines = err.splitlines()
    assert lines[0] == "starting the P3 runner (importing torch and transformers) ..."
    assert any(line.startswith("  still running the P3 runner (") and line.endswith("s): loading the model (tiny)")
               for line in lines)
    # a progress bar's open line is closed before the heartbeat speaks
    assert any(line.startswith("  still running the P3 runner (") and line.endswith("s): bar \u2588 50%")
               for line in lines)
    assert "bar \u2588 50%\r" in err and "\r\n  still running" in err


def test_materialising_says_something_every_few_seconds(tmp_path, capsys, monkeypatch):
    from hyperrestart.vendor import materialize
    monkeypatch.setattr(progress, "QUIET_LIMIT", 1.3)

    def slow(lock, name, dest, profile, log=print, **kwargs):
        log(f"{name}: applying 3 patch(es)")
        time.sleep(0.8)
        log(f"{name}: materialised")
        return "materialised"
    monkeypatch.setattr(materialize, "materialise_one", slow)
    assert materialize.materialise(None, ["up"], tmp_path / "dest", "modern") == {"up": "materialised"}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "up: applying 3 patch(es)" and lines[-1] == "up: materialised"
    assert any(line.startswith("  still materialising up (") for line in lines[1:-1])


# --- run --repeat ----------------------------------------------------------------------------------------------------


def _threads_tree(tmp_path):
    """A fake upstream whose results depend on OMP_NUM_THREADS, as a real CPU run's do."""
    import test_run
    from hyperrestart.upstream import registry
    dest = tmp_path / "dest"
    body = test_run.FAKE_TRAINER + ('json.dump({"eval_acc": 1 / int(os.environ.get("OMP_NUM_THREADS", "7"))}, '
                                    'open(os.path.join(out, "eval_results.json"), "w"))\n')
    test_run._fake_tree(dest, registry.UPSTREAMS["hyperdecoders"], body=body)
    return dest, test_run.RESTART


def test_a_run_records_what_repeats_it_and_repeat_is_exact(tmp_path, monkeypatch, capsys):
    import sys
    from hyperrestart import cli
    from hyperrestart.upstream.repeat import RUN_RECORD
    dest, config = _threads_tree(tmp_path)
    out = tmp_path / "runs" / "first"
    common = ["--dest", str(dest), "--python", sys.executable]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    (tmp_path / "glue").mkdir()
    assert cli.main(["run", str(config), *common, "--output-dir", str(out), "--set", "max_steps=7",
                     "--set", "save_steps=7", "--set", f"data_dir={tmp_path / 'glue'}"]) == 0
    record = json.loads((out / RUN_RECORD).read_text())
    assert record["env"]["OMP_NUM_THREADS"] == "3" and record["env"]["PYTHONHASHSEED"] is None
    assert record["seed"] == 42 and record["set"] == ["max_steps=7", "save_steps=7", f"data_dir={tmp_path / 'glue'}"]
    assert record["versions"]["python"] == sys.version.split()[0] and record["versions"]["torch"]
    assert record["machine"]["cpu_count"] and record["upstream_tree"]
    capsys.readouterr()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # another shell: the repeat restores the recorded 3 threads
    monkeypatch.setenv("PYTHONHASHSEED", "5")  # and unsets what was unset
    assert cli.main(["run", "--repeat", str(out), *common]) == 0
    printed = capsys.readouterr().out
    again = out.with_name("first-repeat")
    assert json.loads((again / "eval_results.json").read_text()) == {"eval_acc": 1 / 3}
    assert f"repeat:       equal to {out} bit for bit" in printed
    assert json.loads((again / "hyperrestart_config.json").read_text())["max_steps"] == 7
    # a result that differs is an error naming it
    (out / "eval_results.json").write_text(json.dumps({"eval_acc": 0.5}))
    assert cli.main(["run", "--repeat", str(out), *common, "--output-dir", str(tmp_path / "third")]) == 1
    assert "differs from" in capsys.readouterr().err


def test_repeat_refuses_what_it_cannot_repeat(tmp_path, capsys):
    from hyperrestart import cli
    dest, config = _threads_tree(tmp_path)
    (tmp_path / "old").mkdir()
    assert cli.main(["run", "--repeat", str(tmp_path / "old")]) == 1
    assert "holds no hyperrestart_run.json" in capsys.readouterr().err
    assert cli.main(["run", "--repeat", str(tmp_path / "old"), "--set", "max_steps=3"]) == 1
    assert "drop --set, --tiny and --resume" in capsys.readouterr().err
    assert cli.main(["run"]) == 1 and "give a CONFIG to run, or --repeat RUN_DIR" in capsys.readouterr().err


@pytest.mark.slow  # two real tiny training runs (a minute or more each on a busy CPU)
def test_a_tiny_run_repeats_bit_for_bit(tmp_path):
    import test_run
    test_run._real_or_skip("hyperdecoders")
    out = tmp_path / "tiny"
    test_run._run_tiny("hyperdecoders/glue_restart.json", out)
    import subprocess
    import sys
    from hyperrestart.core.paths import PROJECT_ROOT
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", "run", "--repeat", str(out), "--output-dir",
                             str(tmp_path / "again")], capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT,
                            env=dict(__import__("os").environ, OMP_NUM_THREADS="2"))  # restored to the run's 1
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"repeat:       equal to {out} bit for bit" in result.stdout
    assert (out / "lr_trace.csv").read_bytes() == (tmp_path / "again" / "lr_trace.csv").read_bytes()
    for name in ("eval_results.json", "test_results.json"):
        assert json.loads((out / name).read_text()) == json.loads((tmp_path / "again" / name).read_text())


# --- p3 --repeat -----------------------------------------------------------------------------------------------------
FAKE_P3_RUNNER = """import json, os, sys
if sys.argv[1] == "-c":  # the run record's version probe
    exec(sys.argv[2]); sys.exit(0)
args = sys.argv[2:]
out = args[args.index("--output_dir") + 1]
seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 42
threads = int(os.environ.get("OMP_NUM_THREADS", "7"))
with open(os.path.join(out, "train_log.csv"), "w") as handle:
    handle.write("step,loss,lr,elapsed_s\\n")
    for step in range(1, 4):
        handle.write(f"{step},{seed / threads / step!r},0.003,{os.getpid() % 7}\\n")
with open(os.path.join(out, "eval_log.csv"), "w") as handle:
    handle.write(f"step,rougeL_micro,eval_seconds\\n3,{seed / threads},{os.getpid() % 5}\\n")
"""


def _fake_p3_python(tmp_path):
    """An interpreter whose 'runner' writes a P3 run's logs from its seed and OMP_NUM_THREADS (as a CPU run's numbers
    depend on them), with timing columns that differ on every run."""
    import sys
    script = tmp_path / "fake_runner.py"
    script.write_text(FAKE_P3_RUNNER, encoding="utf-8")
    python = tmp_path / "fake-python"
    python.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exec {sys.executable} "$@"\nexec {sys.executable} {script} "$@"\n',
                      encoding="utf-8")
    python.chmod(0o755)
    return python


def _p3_paths():
    from hyperrestart.p3.synthetic import tiny_p3_data, tiny_t5_dir
    return ["--model-name-or-path", str(tiny_t5_dir()), "--data-dir", str(tiny_p3_data())]


def test_a_p3_run_records_what_repeats_it_and_a_tampered_result_is_a_difference(tmp_path, monkeypatch, capsys):
    from hyperrestart import cli
    from hyperrestart.upstream.repeat import RUN_RECORD
    python = _fake_p3_python(tmp_path)
    out = tmp_path / "runs" / "p3"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cli.main(["p3", *_p3_paths(), "--output-dir", str(out), "--python", str(python), "--", "--seed", "9"]) == 0
    record = json.loads((out / RUN_RECORD).read_text(encoding="utf-8"))
    assert record["kind"] == "p3" and record["seed"] == 9 and record["env"]["OMP_NUM_THREADS"] == "3"
    assert record["command"][0] == str(python) and record["upstream_tree"].startswith("p3 runner ")
    assert record["versions"]["python"] and record["machine"]["cpu_count"]
    capsys.readouterr()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # another shell: the repeat restores the recorded 3 threads
    assert cli.main(["p3", "--repeat", str(out)]) == 0
    again = out.with_name("p3-repeat")
    assert f"repeat:       equal to {out.resolve()} bit for bit" in capsys.readouterr().out
    assert (again / "train_log.csv").read_text(encoding="utf-8").splitlines()[1].startswith(f"1,{9 / 3!r},")
    assert json.loads((again / RUN_RECORD).read_text(encoding="utf-8"))["command"][
        record["command"].index("--output_dir") + 1] == str(again)
    # a tampered result is a difference, named, exit 1
    rows = (out / "train_log.csv").read_text(encoding="utf-8").replace(f"2,{9 / 3 / 2!r}", "2,1.5000000000000002")
    (out / "train_log.csv").write_text(rows, encoding="utf-8")
    assert cli.main(["p3", "--repeat", str(out), "--output-dir", str(tmp_path / "third")]) == 1
    err = capsys.readouterr().err
    assert "differs from" in err and "train_log.csv differs from step 2" in err and "Traceback" not in err


def test_p3_repeat_refuses_what_it_cannot_repeat(tmp_path, capsys):
    from hyperrestart import cli
    (tmp_path / "old").mkdir()
    assert cli.main(["p3", "--repeat", str(tmp_path / "old")]) == 1
    assert "holds no hyperrestart_run.json" in capsys.readouterr().err
    (tmp_path / "old" / "hyperrestart_run.json").write_text(json.dumps({"kind": "run"}), encoding="utf-8")
    assert cli.main(["p3", "--repeat", str(tmp_path / "old")]) == 1
    assert "is not a `hyperrestart p3` run; repeat an upstream run with `hyperrestart run --repeat" in \
        capsys.readouterr().err
    assert cli.main(["p3", "--repeat", str(tmp_path / "old"), "--tiny", "--", "--seed", "3"]) == 1
    assert "drop --tiny, runner arguments after --" in capsys.readouterr().err
    (tmp_path / "old" / "hyperrestart_run.json").write_text(json.dumps({"kind": "p3", "command": ["x"]}),
                                                             encoding="utf-8")
    assert cli.main(["run", "--repeat", str(tmp_path / "old")]) == 1
    assert "is a P3 run; repeat it with `hyperrestart p3 --repeat" in capsys.readouterr().err


@pytest.mark.slow  # two real tiny P3 runs (~30-60 s each on a busy CPU)
def test_a_tiny_p3_run_repeats_bit_for_bit(tmp_path):
    import os
    import subprocess
    import sys
    from hyperrestart.core.paths import PROJECT_ROOT
    out = tmp_path / "tiny"
    common = [sys.executable, "-m", "hyperrestart.cli", "p3"]
    first = subprocess.run([*common, "--tiny", "--tiny-mixing", "--output-dir", str(out), "--", "--max_steps", "15",
                            "--eval_steps", "15", "--progress", "false"], capture_output=True, text=True, timeout=900,
                           cwd=PROJECT_ROOT, env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    assert first.returncode == 0, first.stderr[-3000:]
    result = subprocess.run([*common, "--repeat", str(out), "--output-dir", str(tmp_path / "again")],
                            capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT,
                            env=dict(os.environ, OMP_NUM_THREADS="2"))  # restored to the run's 1
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"repeat:       equal to {out} bit for bit" in result.stdout
    record = json.loads((tmp_path / "again" / "hyperrestart_run.json").read_text(encoding="utf-8"))
    assert record["env"]["OMP_NUM_THREADS"] == "1" and record["tiny"] and record["tiny_mixing"]
    lines = (out / "train_log.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 16
    again = (tmp_path / "again" / "train_log.csv").read_text(encoding="utf-8").splitlines()
    column = lines[0].split(",").index("loss")
    assert [line.split(",")[column] for line in lines] == [line.split(",")[column] for line in again]


# --- env: quiet on success -------------------------------------------------------------------------------------------
PIP_OUTPUT = """Looking in indexes: https://pypi.org/simple
Requirement already satisfied: torch>=2.1 in /base/site-packages (2.13.0+cpu)
Requirement already satisfied: regex in /base/site-packages (2024.1)
Collecting protobuf==3.20.3 (from -r requirements/hyperformer.txt (line 14))
  Downloading protobuf-3.20.3-py2.py3-none-any.whl (162 kB)
Installing collected packages: protobuf
  Attempting uninstall: protobuf
    Found existing installation: protobuf 7.36.2
    Not uninstalling protobuf at /base/site-packages, outside environment /venvs/hyperformer
ERROR: pip's dependency resolver does not currently take into account all the packages that are installed. This behaviour is the source of the following dependency conflicts.
tensorboard 2.21.0 requires protobuf<8.0.0,>=6.31.1, but you have protobuf 3.20.3 which is incompatible.
Successfully installed protobuf-3.20.3
"""


def test_pip_is_quiet_on_success_and_explains_the_base_pythons_conflict(tmp_path):
    from hyperrestart.upstream import envs
    fake = tmp_path / "fake_pip.py"
    fake.write_text(f"print({PIP_OUTPUT!r}, end='')\n", encoding="utf-8")
    shown = []
    lines = envs._pip([__import__("sys").executable, str(fake)], tmp_path / "pip.log", False, shown.append)
    assert shown == ["  Collecting protobuf==3.20.3", "  Installing collected packages: protobuf"]
    assert (tmp_path / "pip.log").read_text(encoding="utf-8").endswith(PIP_OUTPUT)
    venv = tmp_path / "venv"
    (venv / "lib" / "python3.11" / "site-packages" / "protobuf-3.20.3.dist-info").mkdir(parents=True)
    summary = envs.pip_summary(lines, venv, tmp_path / "hyperformer.txt")
    assert summary[0] == ("installed protobuf-3.20.3; 2 requirements already satisfied (the base python's packages "
                          "are reused)")
    assert summary[1].startswith("note: the base python's tensorboard 2.21.0 wants protobuf<8.0.0,>=6.31.1; this env "
                                 "pins protobuf 3.20.3 (hyperformer.txt says why)")
    assert len(summary) == 2 and not any(line.startswith("ERROR") for line in summary)
    # a conflict between the env's own packages is not explained away
    own = [line.replace("tensorboard 2.21.0", "protobuf 3.20.3") for line in lines]
    assert envs.pip_summary(own, venv, tmp_path / "hyperformer.txt")[1].startswith("warning: pip reports a conflict")


def test_a_failing_pip_shows_its_end_and_its_log(tmp_path):
    from hyperrestart.core.errors import HyperrestartError
    from hyperrestart.upstream import envs
    fake = tmp_path / "fake_pip.py"
    fake.write_text("print('Collecting nothing==9')\nprint('ERROR: No matching distribution found')\nraise "
                    "SystemExit(1)\n", encoding="utf-8")
    with pytest.raises(HyperrestartError, match=r"pip install failed \(exit 1\); pip's output is in .*pip.log; its "
                                                r"end:\n  Collecting nothing==9\n  ERROR: No matching distribution"):
        envs._pip([__import__("sys").executable, str(fake)], tmp_path / "pip.log", False, lambda *_: None)


# --- sweep: each run's result -----------------------------------------------------------------------------------
def test_a_sweep_run_reports_its_result(tmp_path):
    from hyperrestart.sweep.jobs import Job, result_text
    from hyperrestart.sweep.spec import Run
    p3 = tmp_path / "p3"
    p3.mkdir()
    (p3 / "eval_log.csv").write_text("step,rougeL_micro,rougeL_macro\n0,1.5,1.0\n255,27.125,26.0\n")
    glue = tmp_path / "glue"
    glue.mkdir()
    (glue / "test_results.json").write_text(json.dumps({"test_average_metrics": 71.25, "rte_test_loss": 3.0}))
    run = Run.__new__(Run)
    assert result_text(Job("s", "p3", run, str(p3), [], {})) == "Rouge-L 27.12 at step 255"
    assert result_text(Job("s", "run", run, str(glue), [], {})) == "test_results.json: test_average_metrics 71.25"
    assert result_text(Job("s", "run", run, str(tmp_path), [], {})) == "no metrics file"
    assert result_text(Job("s", "p3", run, str(tmp_path), [], {})).startswith("no Rouge-L (")


# --- report --published: the paper's row order ----------------------------------------------------------------------
def test_published_report_lists_arms_in_the_papers_row_order(tmp_path):
    from test_report import p3_run
    from hyperrestart.cli import main
    root = tmp_path / "p3"
    arms = ["hyperdecoder_restart", "t5_restart", "extra_arm", "hyperdecoder_no_restart", "t5_no_restart"]
    for index, arm in enumerate(arms):
        p3_run(root, f"{arm}_seed1", arm, 1, 60.0 + index, index, report_cfg={})
    out = tmp_path / "out"
    assert main(["report", str(root), "--published", "table2", "--out", str(out), "--no-figures"]) == 0
    table = (out / "table.md").read_text()
    listed = [line.split(" | ")[0][2:] for line in table.splitlines() if line.startswith("| ") and " | 1 | " in line]
    assert listed == ["t5_no_restart", "t5_restart", "hyperdecoder_no_restart", "hyperdecoder_restart", "extra_arm"]
    assert main(["report", str(root), "--out", str(tmp_path / "plain"), "--no-figures"]) == 0
    plain = (tmp_path / "plain" / "table.md").read_text()
    assert [line.split(" | ")[0][2:] for line in plain.splitlines() if " | 1 | " in line] == arms  # the runs' order


def test_a_tiny_sweeps_config_says_it_is_tiny(tmp_path):
    from hyperrestart.sweep.runners import merge_config
    from hyperrestart.sweep.spec import parse_spec
    from hyperrestart.core.paths import PROJECT_ROOT
    spec = parse_spec(PROJECT_ROOT / "sweeps" / "smoke_p3.yaml", tiny=True)
    merged = merge_config(spec.runs[0].config, spec.runs[0].overrides)
    assert merged["_note"].startswith("hyperrestart sweep --tiny: a CPU smoke test")
    assert "lr 0.003, 32/8 tokens, batch 16, 255 steps evaluated every 51 on 800 examples" in merged["_note"]
    assert "Table 2" not in merged["_note"] and merged["learning_rate"] == 0.003


# --- plots: legends cover no curve, the lr is in the legend and visible ------------------------------------------
def _legend_below_axes(fig, axes):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = axes.get_legend()
    return legend.get_window_extent(renderer).y1 <= axes.get_window_extent(renderer).y0, \
        [text.get_text() for text in legend.get_texts()]


@pytest.mark.slow  # 2-3 s (Ray import, plotting, parser round trips); kept out of the 90 s default suite
def test_report_curves_legend_is_below_the_plot_and_names_the_lr(tmp_path):
    import matplotlib.pyplot as plt
    from test_report import p3_run
    from hyperrestart.report import aggregate, figures, runs
    root = tmp_path / "sweep"
    for i, (arm, seed) in enumerate([("no_restart", 1), ("no_restart", 2), ("restart", 1), ("restart", 2)]):
        p3_run(root, f"{arm}_seed-{seed}", arm, seed, 60.0 + i, i)
    results, _ = runs.choose_split(runs.load_runs([root], warn=lambda m: None), "auto", lambda m: None, [])
    _, rows = aggregate.aggregate(results)
    fig = figures.draw_curves(rows, figures.curve_bands(rows, "metric"), "metric")
    below, labels = _legend_below_axes(fig, fig.axes[0])
    assert below, "the legend overlaps the plot"
    assert labels == ["no_restart (n=2)", "restart (n=2)", "no_restart: lr", "restart: lr"]
    low, high = fig.axes[1].get_ylim()  # the lr axis: from 0, the highest lr (1e-4) well below the top
    assert low == 0 and high == pytest.approx(1.15e-4)
    plt.close(fig)


@pytest.mark.slow  # seconds of plotting / importing Ray; kept out of the 90 s default suite
def test_plot_lr_legend_leaves_the_last_cycle_free(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from hyperrestart.upstream import lr_plot
    from hyperrestart.upstream.scheduler import lr_schedule
    seen = {}
    monkeypatch.setattr(plt, "close", lambda fig: seen.setdefault("fig", fig))
    config = {"lr_scheduler": "constant", "learning_rate": 3e-4}
    lr_plot.plot(lr_schedule(config, 31), config, 31, tmp_path / "constant.png")
    fig = seen["fig"]
    below, labels = _legend_below_axes(fig, fig.axes[0])
    assert below and labels == ["lr used by the step", "max_steps=31"]
    low, high = fig.axes[0].get_ylim()
    assert low == 0 and high == pytest.approx(3e-4 * 1.15)  # a constant lr: a line at 87% height, not the border


# --- p3 --tiny: the runner's progress and evaluations, not the libraries' chatter ----------------------------------
def test_tiny_p3_runner_env_silences_library_chatter(tmp_path, monkeypatch):
    from types import SimpleNamespace
    from hyperrestart.p3.launch import TINY_QUIET_ENV, runner_env
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    env = runner_env(SimpleNamespace(tiny=True, output_dir=str(tmp_path)))
    assert env["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1" and env["TRANSFORMERS_VERBOSITY"] == "error"
    assert TINY_QUIET_ENV.items() <= env.items()
    assert "TRANSFORMERS_VERBOSITY" not in runner_env(SimpleNamespace(tiny=False, output_dir=str(tmp_path)))


# --- T0's mixing rates: examples-proportional mixing ----------------------------------------------------------------
def _mixing():
    from hyperrestart.core.overlay_import import load_overlay_module
    from hyperrestart.core.paths import OVERLAY_DIR
    return load_overlay_module("hyperrestart._p3_mixing", OVERLAY_DIR / "hyperdecoders" / "hyperdecoder" / "p3_runner"
                               / "mixing.py")


def test_t0_mixing_rates_keep_every_row_and_cap_the_rate():
    from hyperrestart.p3.tasks import mixing_rates
    rows = {"amazon_polarity_Is_this_review": 3_600_000, "app_reviews_convert_to_rating": 288_065}
    assert mixing_rates(rows) == {"amazon_polarity_Is_this_review": 500_000 // 9,
                                  "app_reviews_convert_to_rating": 288_065}


def test_sampled_task_proportions_match_the_rates_over_100k_draws():
    import numpy as np
    mixing = _mixing()
    rates = {"a": 55_555, "b": 288_065, "c": 10_000, "d": 1_000}
    task_rows, start = {}, 0
    for task, size in zip(rates, (500, 300, 200, 7)):  # a task smaller than its draws cycles through its rows
        task_rows[task] = np.arange(start, start + size)
        start += size
    batches = mixing.mixture_block(task_rows, rates, batch_size=100, block=0, seed=3, block_steps=1000)
    rows = np.concatenate(batches)
    assert len(rows) == 100_000
    owner = np.searchsorted([task_rows[t][-1] for t in rates], rows)  # task index of each drawn row
    total = sum(rates.values())
    for i, (task, rate) in enumerate(rates.items()):
        p = rate / total
        sigma = (p * (1 - p) / len(rows)) ** 0.5
        assert abs((owner == i).mean() - p) < 4 * sigma, task  # within 4 standard errors of the rate
    counts = np.bincount(rows[owner == 3], minlength=start)[task_rows["d"]]
    assert counts.max() - counts.min() <= 1  # a small task's rows are used evenly (whole permutations)


def test_mixture_is_reproducible_by_seed_and_resumes_exactly():
    import numpy as np
    mixing = _mixing()
    task_rows = {"a": np.arange(0, 50), "b": np.arange(50, 80)}
    rates = {"a": 5, "b": 3}
    first = [mixing.mixture_block(task_rows, rates, 8, block, seed=7, block_steps=20) for block in range(3)]
    again = [mixing.mixture_block(task_rows, rates, 8, block, seed=7, block_steps=20) for block in range(3)]
    assert first == again  # same seed, same order
    assert mixing.mixture_block(task_rows, rates, 8, 0, seed=8, block_steps=20) != first[0]
    # a run stopped in block 1 at batch 13 and resumed there continues the same stream
    stream = [batch for block in first for batch in block]
    resumed = first[0] + first[1][:13] + mixing.mixture_block(task_rows, rates, 8, 1, seed=7, block_steps=20)[13:] \
        + mixing.mixture_block(task_rows, rates, 8, 2, seed=7, block_steps=20)
    assert resumed == stream
    with pytest.raises(ValueError, match="finite and positive"):
        mixing.mixture_block(task_rows, {"a": 1, "b": 0}, 8, 0, seed=7)
