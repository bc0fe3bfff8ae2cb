"""`hyperrestart run` against hostile or unlucky input (issue 18): ownership of run folders, one writer, stop means
stop, numbers and ranges, bounded configs, paths checked before anything starts. Hermetic (a fake trainer)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hyperrestart import cli
from hyperrestart.core.paths import CONFIGS_DIR, PROJECT_ROOT
from hyperrestart.upstream import preflight, registry, run_folder, training
from test_run import RESTART, _fake_tree, _run

# keys the shipped config does not set, declared by the fake trainer's argument classes too
EXTRA_KEYS = {"restart_t_mult": 2, "restart_t0": 1, "restart_warmup_steps": 0, "warmup_steps": 0, "eta_min": 1e-6,
              "tokenizer_name": "t5-base"}


@pytest.fixture
def fake_dest(tmp_path):
    extra = tmp_path / "extra_keys.json"
    extra.write_text(json.dumps(EXTRA_KEYS), encoding="utf-8")
    dest = tmp_path / "dest"
    _fake_tree(dest, registry.UPSTREAMS["hyperdecoders"], configs=(RESTART, extra))
    return dest

HYPERFORMER = CONFIGS_DIR / "hyperformer" / "adapter_restart.json"


def _tree_state(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes() if p.is_file() else None) for p in folder.rglob("*"))


# --- row 5: --overwrite deletes only a run hyperrestart made ------------------------------------------------------
def _user_folder(tmp_path):
    out = tmp_path / "thesis"
    (out / "photos").mkdir(parents=True)
    (out / "thesis.tex").write_text("chapter 1", encoding="utf-8")
    (out / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    return out


@pytest.mark.parametrize("flag", [[], ["--overwrite"]])
def test_user_files_are_never_called_a_run_nor_deleted(tmp_path, fake_dest, capsys, flag):
    out = _user_folder(tmp_path)
    before = _tree_state(out)
    assert _run(fake_dest, out, *flag) == 1
    err = capsys.readouterr().err
    assert "did not make (photos, thesis.tex)" in err and "choose another --output-dir" in err
    assert "holds a run" not in err and "Traceback" not in err
    assert _tree_state(out) == before  # nothing deleted, nothing written (no marker, no lock file)


def test_overwrite_replaces_a_run_hyperrestart_made(tmp_path, fake_dest):
    out = tmp_path / "out"
    assert _run(fake_dest, out) == 0
    marker = json.loads((out / run_folder.MARKER).read_text(encoding="utf-8"))
    assert marker["pid"] == os.getpid() and marker["nproc"] == 1 and marker["started"]
    (out / "stale.txt").write_text("old", encoding="utf-8")
    assert _run(fake_dest, out, "--overwrite") == 0
    assert not (out / "stale.txt").exists() and (out / run_folder.MARKER).exists()


# --- one writer per run folder ------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_in_one_line(tmp_path, fake_dest, capsys):
    out = tmp_path / "out"
    assert _run(fake_dest, out) == 0
    before = _tree_state(out)
    capsys.readouterr()
    with run_folder.RunFolderLock(out):
        assert _run(fake_dest, out, "--overwrite") == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is being written by another `hyperrestart run` (pid" in err
    assert _tree_state(out) == before


# --- row 21: a refused run leaves nothing behind ------------------------------------------------------------------
def test_refused_nproc_leaves_nothing_behind(tmp_path, capsys):
    dest = tmp_path / "dest"
    _fake_tree(dest, registry.UPSTREAMS["hyperformer"], configs=[HYPERFORMER])
    out = tmp_path / "out"
    argv = ["run", str(HYPERFORMER), "--dest", str(dest), "--output-dir", str(out), "--python", sys.executable,
            "--set", "max_steps=4"]
    assert cli.main([*argv, "--nproc", "2"]) == 1
    assert "hyperformer cannot train data-parallel" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(argv) == 0  # the corrected rerun into the same folder is not refused


def test_resume_with_another_process_count_is_refused(tmp_path, fake_dest, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("CRASH_AT", "8")
    assert _run(fake_dest, out) == 1
    monkeypatch.delenv("CRASH_AT")
    capsys.readouterr()
    assert _run(fake_dest, out, "--resume", "--nproc", "2") == 1
    err = capsys.readouterr().err
    assert "trained on 1 process(es) and --nproc asks for 2" in err and "Resume with --nproc 1" in err
    assert _run(fake_dest, out, "--resume") == 0


# --- row 14: NaN and infinities ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "nan", "inf", "1e999"])
def test_non_finite_set_values_are_refused(tmp_path, fake_dest, capsys, value):
    assert _run(fake_dest, tmp_path / "out", "--set", f"learning_rate={value}") == 1
    err = capsys.readouterr().err
    assert "learning_rate must be a finite number" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e400"])
def test_non_finite_config_values_are_refused(tmp_path, fake_dest, capsys, literal):
    config = tmp_path / "configs" / "hyperdecoders" / "c.json"
    config.parent.mkdir(parents=True)
    config.write_text(RESTART.read_text(encoding="utf-8").replace('"learning_rate": 0.0003',
                                                                  f'"learning_rate": {literal}'), encoding="utf-8")
    assert literal in config.read_text(encoding="utf-8")
    assert _run(fake_dest, tmp_path / "out", config=config) == 1
    err = capsys.readouterr().err
    assert "not valid JSON of finite numbers" in err and "Traceback" not in err


# --- row 25: ranges checked before any loop over cycles -------------------------------------------------------------
@pytest.mark.parametrize("item,message", [
    ("restart_t_mult=0", "restart_t_mult (T_mult) must be an integer >= 1, got 0"),
    ("restart_t0=0", "restart_t0 (T_0) must be an integer >= 1, got 0"),
    ("restart_warmup_steps=-5", "restart_warmup_steps must be an integer >= 0, got -5"),
    ("eta_min=0.5", "eta_min (0.5) must be below learning_rate"),
    ("warmup_steps=-1", "warmup_steps is -1 (from --set); it must be an integer >= 0"),
    ("max_steps=0", "max_steps is 0 (from --set); it must be an integer >= 1"),
    ("learning_rate=0", "learning_rate is 0 (from --set); it must be a finite number > 0"),
    ("gradient_accumulation_steps=0", "gradient_accumulation_steps is 0 (from --set)"),
])
def test_out_of_range_settings_are_refused_at_preflight(tmp_path, fake_dest, capsys, item, message):
    assert _run(fake_dest, tmp_path / "out", "--set", item) == 1
    err = capsys.readouterr().err
    # restart settings are refused by the restart family's own checks (pre-flight), the others by upstream/ranges.py
    assert message in err and ("out of range" in err or "problem(s)" in err) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("item,message", [
    ("restart_t_mult=0", "restart_t_mult (T_mult) must be an integer >= 1, got 0"),
    ("restart_t0=0", "restart_t0 (T_0) must be an integer >= 1, got 0"),
    ("restart_warmup_steps=-5", "restart_warmup_steps must be an integer >= 0, got -5"),
])
def test_plot_lr_refuses_out_of_range_restart_settings(tmp_path, capsys, item, message):
    code = cli.main(["plot-lr", str(RESTART), "--set", item, "--out", str(tmp_path / "lr.png")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err and not (tmp_path / "lr.png").exists()


@pytest.mark.slow  # imports the trainer side (~5 s)
def test_the_trainer_side_checks_arguments_before_the_alignment_loop():
    """The overlay's restart_scheduler_from_args (run inside the trainers) refuses T_mult=0 at once; before, its
    alignment check looped forever growing a list."""
    import types
    import torch
    from hyperrestart.upstream import scheduler
    module = sys.modules["hyperrestart._restart_scheduler"]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    signal.alarm(10)  # a regression loops forever: fail instead of hanging
    try:
        for t_0, t_mult in [(1, 0), (0, 2), (2, 1.5)]:
            args = types.SimpleNamespace(restart_t0=t_0, restart_t_mult=t_mult, eta_min=1e-6, learning_rate=0.1)
            with pytest.raises(ValueError, match="must be an integer >= 1"):
                module.restart_scheduler_from_args(optimizer, args, num_training_steps=100)
            with pytest.raises(ValueError):
                scheduler.cycle_end_steps(t_0, t_mult, up_to=100)
    finally:
        signal.alarm(0)


# --- row 26: size and depth of a config ----------------------------------------------------------------------------
def test_deep_and_huge_configs_are_refused_with_the_limit(tmp_path, fake_dest, capsys):
    folder = tmp_path / "configs" / "hyperdecoders"
    folder.mkdir(parents=True)
    deep = folder / "deep.json"
    deep.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    huge = folder / "huge.json"
    with open(huge, "wb") as handle:
        handle.truncate(90 * 1024 * 1024)  # sparse: 90 MB that cost nothing to write
    started = time.monotonic()
    assert _run(fake_dest, tmp_path / "out", config=deep) == 1
    assert "nested too deeply to read (the limit is 32 levels)" in capsys.readouterr().err
    assert _run(fake_dest, tmp_path / "out", config=huge) == 1
    err = capsys.readouterr().err
    assert "94,371,840 bytes, over the limit of 4,194,304 bytes" in err and "Traceback" not in err
    assert time.monotonic() - started < 5
    medium = folder / "medium.json"
    medium.write_text('{"a": ' + "[" * 40 + "]" * 40 + "}", encoding="utf-8")
    assert _run(fake_dest, tmp_path / "out", config=medium) == 1
    assert "more than 32 levels deep (the limit)" in capsys.readouterr().err


# --- row 17: fail before spawning, and show the failing process's traceback -------------------------------------
@pytest.mark.parametrize("item,message", [
    ("model_name_or_path=/missing/model", "model_name_or_path /missing/model does not exist (a local model is a "
                                          "folder holding config.json)"),
    ("tokenizer_name=./no-tokenizer", "tokenizer_name ./no-tokenizer does not exist"),
    ("data_dir=/missing/data", "data_dir /missing/data is not an existing folder"),
])
def test_missing_local_paths_are_refused_before_anything_starts(tmp_path, fake_dest, capsys, item, message):
    assert _run(fake_dest, tmp_path / "out", "--set", item) == 1
    err = capsys.readouterr().err
    assert message in err and not (tmp_path / "out").exists()


def test_a_model_folder_without_its_files_is_refused(tmp_path, fake_dest, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "notes.txt").write_text("x", encoding="utf-8")
    assert _run(fake_dest, tmp_path / "out", "--set", f"model_name_or_path={model}") == 1
    assert f"model_name_or_path {model} is not a model folder (it holds no config.json)" in capsys.readouterr().err


def test_more_processes_than_cores_on_cpu_warns(monkeypatch, capsys):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(preflight, "has_gpu", lambda: False)
    preflight.check_processes(registry.UPSTREAMS["hyperdecoders"], 8, {})
    assert "warning: --nproc 8 starts 8 training processes on 2 CPU core(s) and no GPU" in capsys.readouterr().err
    preflight.check_processes(registry.UPSTREAMS["hyperdecoders"], 2, {})
    assert capsys.readouterr().err == ""
    with pytest.raises(Exception, match="give a process count >= 1"):
        preflight.check_processes(registry.UPSTREAMS["hyperdecoders"], 0, {})


TORCHRUN_LOG = """\
[rank1]: Traceback (most recent call last):
[rank1]:   File "finetune_trainer.py", line 120, in <module>
[rank1]:     main()
[rank1]:   File "finetune_trainer.py", line 40, in main
[rank1]:     model = load(path)
[rank1]: OSError: Incorrect path_or_model_id: '/missing/model'. Please provide either the path to a local folder
some other rank's output
E1202 12:00:00.000 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: 1) local_rank: 1
Traceback (most recent call last):
  File "/usr/lib/python3.11/site-packages/torch/distributed/run.py", line 905, in main
    run(args)
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
finetune_trainer.py FAILED
  exitcode  : 1 (pid: 123)
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
"""


def test_failure_excerpt_is_the_workers_traceback_not_the_launchers():
    excerpt = training.failure_excerpt(TORCHRUN_LOG)
    assert excerpt[0] == "Traceback (most recent call last):"
    assert excerpt[-1].startswith("OSError: Incorrect path_or_model_id: '/missing/model'")
    assert not any("To enable traceback" in line or "ChildFailedError" in line for line in excerpt)
    assert training.failure_excerpt("just\nsome lines") == ["just", "some lines"]


def test_a_failing_trainer_shows_its_traceback_on_the_console(tmp_path, capsys):
    dest = tmp_path / "dest"
    body = "print('loading')\nraise OSError('no file named config.json in /models/t5')\n"
    _fake_tree(dest, registry.UPSTREAMS["hyperdecoders"], body)
    assert _run(dest, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "the failing process's last lines:" in err
    assert "OSError: no file named config.json in /models/t5" in err


# --- stop means stop ----------------------------------------------------------------------------------------------
SLEEPY_TRAINER = '''
import json, os, subprocess, sys, time
cfg = json.load(open(sys.argv[1]))
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
with open(os.path.join(cfg["output_dir"], "pids.txt"), "w") as handle:
    handle.write("%d %d" % (os.getpid(), worker.pid))
print("started", flush=True)
time.sleep(120)
'''


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _start_sleepy(tmp_path):
    dest = tmp_path / "dest"
    _fake_tree(dest, registry.UPSTREAMS["hyperdecoders"], SLEEPY_TRAINER)
    (tmp_path / "data").mkdir()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hyperrestart.cli", "run", str(RESTART), "--dest", str(dest), "--output-dir",
           str(out), "--python", sys.executable, "--set", f"data_dir={tmp_path / 'data'}"]
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    launcher = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    deadline = time.monotonic() + 30
    while not (out / "pids.txt").exists() or not (out / "pids.txt").read_text(encoding="utf-8"):
        assert time.monotonic() < deadline and launcher.poll() is None, launcher.communicate()
        time.sleep(0.05)
    return launcher, [int(p) for p in (out / "pids.txt").read_text(encoding="utf-8").split()], cmd, env, out


@pytest.mark.slow  # two real `hyperrestart run` processes (~10 s each on a busy 2-core machine)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_launcher_stops_every_process_it_started(tmp_path, signum):
    launcher, pids, cmd, env, out = _start_sleepy(tmp_path)
    try:
        second = subprocess.run(cmd + ["--overwrite"], env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 4 and "is being written by another `hyperrestart run`" in second.stderr
        os.killpg(launcher.pid, signum)  # what a user's Ctrl-C or a scheduler does: the launcher's process group
        _, err = launcher.communicate(timeout=30)
        assert launcher.returncode == 1 and f"stopped by {signal.Signals(signum).name}" in err
        deadline = time.monotonic() + 10
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, pids)), "a trainer process outlived its launcher"
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # a real `hyperrestart run` process
def test_a_killed_launcher_takes_its_trainer_with_it(tmp_path):
    launcher, pids, *_ = _start_sleepy(tmp_path)
    try:
        os.kill(launcher.pid, signal.SIGKILL)  # cannot be caught: the trainer's parent-death signal stops it
        launcher.communicate(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(pids[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pids[0])
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# --- row 23: a setting that does nothing is refused (or made to work: hyperdecoders' dropout, patch 0024) ---------
@pytest.mark.parametrize("upstream,config,item,message", [
    ("hyperdecoders", RESTART, "attention_dropout=0.0", "attention_dropout=0.0 (from --set) does nothing in "
                                                        "hyperdecoders: T5 has no such setting"),
    ("hyperdecoders", RESTART, "encoder_layerdrop=0.1", "encoder_layerdrop=0.1 (from --set) does nothing"),
    ("hyperformer", HYPERFORMER, "dropout=0.0", "dropout=0.0 (from --set) does nothing in hyperformer: the script "
                                                "copies it into the T5 config under a name T5 does not read"),
])
def test_settings_an_upstream_never_applies_are_refused(tmp_path, capsys, upstream, config, item, message):
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"dropout": 0.1, "attention_dropout": 0.1, "encoder_layerdrop": 0.1}),
                     encoding="utf-8")
    dest = tmp_path / "dest"
    _fake_tree(dest, registry.UPSTREAMS[upstream], configs=(config, extra))
    code = cli.main(["run", str(config), "--dest", str(dest), "--output-dir", str(tmp_path / "out"), "--python",
                     sys.executable, "--set", "max_steps=4", "--set", item])
    err = capsys.readouterr().err
    assert code == 1 and message in err and not (tmp_path / "out").exists()


# --- row 22: a run killed during its final evaluation completes with --resume, evaluating only --------------------
def test_a_run_killed_during_its_final_evaluation_resumes_evaluating_only(tmp_path, fake_dest, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("KILL_IN_EVAL", "1")
    assert _run(fake_dest, out) == 1
    assert (out / "trainer_state.json").exists() and not (out / "eval_results.json").exists()
    monkeypatch.delenv("KILL_IN_EVAL")
    state = (out / "trainer_state.json").read_bytes()
    capsys.readouterr()
    assert _run(fake_dest, out, "--resume") == 0
    printed = capsys.readouterr().out
    assert "(training finished: evaluating the final model only)" in printed
    trainer_config = json.loads((out / run_folder.RESUME_CONFIG).read_text(encoding="utf-8"))
    assert trainer_config["do_train"] is False and trainer_config["model_name_or_path"] == str(out)
    assert (out / "eval_results.json").exists() and (out / "test_results.json").exists()
    assert (out / "trainer_state.json").read_bytes() == state  # nothing trained again
    assert [r.split(",")[0] for r in (out / "lr_trace.csv").read_text(encoding="utf-8").split()[1:]] == [
        str(k) for k in range(1, 17)]
    assert _run(fake_dest, out, "--resume") == 1
    assert "finished training and evaluation" in capsys.readouterr().err


# --- row 19: gradient accumulation that may not divide an epoch: warned at start and at --resume ------------------
def test_gradient_accumulation_is_warned_at_start_and_at_resume(tmp_path, fake_dest, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("CRASH_AT", "8")
    assert _run(fake_dest, out, "--set", "gradient_accumulation_steps=3") == 1
    first = capsys.readouterr().err
    monkeypatch.delenv("CRASH_AT")
    assert _run(fake_dest, out, "--set", "gradient_accumulation_steps=3", "--resume") == 0
    resumed = capsys.readouterr().err
    for err in (first, resumed):
        assert ("warning: gradient_accumulation_steps=3: a --resume is bit-exact only when "
                "gradient_accumulation_steps divides the number of batches per process in an epoch") in err
        assert "Choose gradient_accumulation_steps=1" in err
    assert _run(fake_dest, tmp_path / "one", "--set", "gradient_accumulation_steps=1") == 0
    assert "gradient_accumulation_steps" not in capsys.readouterr().err


# --- real upstreams (rows 20, 22, 23) -----------------------------------------------------------------------------
def _tiny(config, out, *extra, check=True):
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", "run", str(CONFIGS_DIR / config), "--tiny",
                             "--output-dir", str(out), *extra], capture_output=True, text=True, timeout=1200,
                            cwd=PROJECT_ROOT, env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _simulate_kill(full, part, keep_checkpoint):
    """`part`: what a run killed after checkpoint-`keep_checkpoint` leaves (its config pointed at `part`)."""
    import shutil
    shutil.copytree(full, part, symlinks=True)
    for entry in part.iterdir():
        if entry.name.startswith("checkpoint-") and entry.name != f"checkpoint-{keep_checkpoint}":
            shutil.rmtree(entry)
        elif entry.is_file() and entry.name not in (run_folder.RUN_CONFIG, "train.log", run_folder.MARKER):
            entry.unlink()
    config = part / run_folder.RUN_CONFIG
    config.write_text(config.read_text(encoding="utf-8").replace(str(full), str(part)), encoding="utf-8")


def _losses(out):
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    return [e["loss"] for e in state["log_history"] if "loss" in e]


def _weights_equal(a, b):
    import torch
    from safetensors.torch import load_file
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow  # two real 2-process tiny runs (~2 min each on a busy CPU)
def test_a_two_process_cpu_run_resumes_to_the_same_losses_and_weights(tmp_path):
    from test_run import _real_or_skip
    _real_or_skip("hyperdecoders")
    sets = ["--set", "save_total_limit=3", "--set", "load_best_model_at_end=false"]
    full, part = tmp_path / "full", tmp_path / "part"
    _tiny("hyperdecoders/glue_restart.json", full, "--nproc", "2", *sets)
    _simulate_kill(full, part, keep_checkpoint=10)
    refused = _tiny("hyperdecoders/glue_restart.json", part, *sets, "--resume", check=False)
    assert refused.returncode == 1 and "trained on 2 process(es) and --nproc asks for 1" in refused.stderr
    resumed = _tiny("hyperdecoders/glue_restart.json", part, "--nproc", "2", *sets, "--resume")
    assert "from checkpoint-10" in resumed.stdout
    assert len(_losses(full)) == 15 and _losses(part) == _losses(full)
    assert _weights_equal(full, part)


@pytest.mark.slow  # a real tiny run, then its final evaluation again
def test_dropout_zero_reaches_the_model_and_a_run_killed_in_evaluation_completes(tmp_path):
    from test_run import _real_or_skip
    _real_or_skip("hyperdecoders")
    full, part = tmp_path / "full", tmp_path / "part"
    _tiny("hyperdecoders/glue_restart.json", full, "--set", "dropout=0.0")
    assert json.loads((full / "config.json").read_text(encoding="utf-8"))["dropout_rate"] == 0.0
    _simulate_kill(full, part, keep_checkpoint=15)
    (part / "trainer_state.json").write_bytes((full / "trainer_state.json").read_bytes())  # training had finished
    (part / "model.safetensors").write_bytes((full / "model.safetensors").read_bytes())
    (part / "config.json").write_bytes((full / "config.json").read_bytes())
    for name in ("tokenizer_config.json", "spiece.model", "special_tokens_map.json", "generation_config.json"):
        if (full / name).exists():
            (part / name).write_bytes((full / name).read_bytes())
    resumed = _tiny("hyperdecoders/glue_restart.json", part, "--set", "dropout=0.0", "--resume")
    assert "evaluating the final model only" in resumed.stdout
    for name in ("eval_results.json", "test_results.json"):
        assert json.loads((part / name).read_text(encoding="utf-8")) == json.loads(
            (full / name).read_text(encoding="utf-8"))
    assert (part / "lr_trace.csv").read_bytes() == (full / "lr_trace.csv").read_bytes()
    assert _losses(part) == _losses(full)
