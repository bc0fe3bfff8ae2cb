"""`hyperrestart run` and `hyperrestart env`: resolution, overrides, errors (hermetic) and end-to-end --tiny runs."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hyperrestart import cli
from hyperrestart.upstream import envs
from hyperrestart.upstream import arguments, lr_trace, registry, run_folder, training
from hyperrestart.upstream import resolve as resolving
from hyperrestart.core import overrides

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import CONFIGS_DIR, DEFAULT_DEST, PROJECT_ROOT

RESTART = CONFIGS_DIR / "hyperdecoders" / "glue_restart.json"


def resolve(argv):
    args = cli.build_parser().parse_args(["run", *argv])
    return resolving.resolve(args)


def test_upstream_comes_from_the_config_folder_or_the_flag(tmp_path):
    assert registry.upstream_for_config(RESTART).name == "hyperdecoders"
    assert registry.upstream_for_config(CONFIGS_DIR / "hyperformer" / "adapter_restart.json").name == "hyperformer"
    mine = tmp_path / "experiments" / "hyperformer" / "mine.json"
    assert registry.upstream_for_config(mine).name == "hyperformer"
    assert registry.upstream_for_config(tmp_path / "x.json", "hyperdecoders").name == "hyperdecoders"
    with pytest.raises(HyperrestartError, match=r"cannot tell which upstream runs .*x\.json.*--upstream"):
        registry.upstream_for_config(tmp_path / "x.json")
    with pytest.raises(HyperrestartError, match=r"unknown upstream 'hyperfoo'; choose one of: hyperdecoders"):
        registry.upstream_for_config(RESTART, "hyperfoo")


@pytest.mark.parametrize("item,expected", [
    ("max_steps=65535", ("max_steps", 65535)), ("learning_rate=3e-4", ("learning_rate", 3e-4)),
    ("do_train=false", ("do_train", False)), ('tasks=["rte","cola"]', ("tasks", ["rte", "cola"])),
    ("model_name_or_path=/models/t5", ("model_name_or_path", "/models/t5")), ("eta_min=0", ("eta_min", 0)),
    ("output_dir=a=b", ("output_dir", "a=b")), ("lr_scheduler=linear", ("lr_scheduler", "linear")),
    ("x=", ("x", "")), ("tokenizer_name=null", ("tokenizer_name", None)),
])
def test_set_values_without_known_types_are_json_else_strings(item, expected):
    assert overrides.parse_set(item) == expected


KINDS = {"learning_rate": {"float"}, "max_steps": {"int"}, "do_train": {"bool", "null"}, "tasks": {"list", "null"},
         "output_dir": {"str"}, "tokenizer_name": {"str", "null"}, "report_to": {"str", "list", "null"},
         "eta_min": {"float"}}


@pytest.mark.parametrize("item,expected", [
    ("learning_rate=3e-4", 3e-4), ("eta_min=0", 0), ("max_steps=65535", 65535), ("do_train=true", True),
    ("do_train=null", None), ('tasks=["rte"]', ["rte"]), ("output_dir=runs/x", "runs/x"),
    ('output_dir="runs/x"', "runs/x"), ("output_dir=123", "123"), ("output_dir=true", "true"),
    ("tokenizer_name=null", None), ("report_to=none", "none"), ('report_to=["tensorboard"]', ["tensorboard"]),
])
def test_set_values_follow_the_argument_type(item, expected):
    value = overrides.parse_set(item, KINDS)[1]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("item,message", [
    ("learning_rate=1e-3x", "learning_rate takes a number, e.g. 3e-4, not '1e-3x'"),
    ('learning_rate="3e-4"', "learning_rate takes a number"),
    ("max_steps=1.5", "max_steps takes an integer, e.g. 65535, not '1.5'"),
    ("max_steps=true", "max_steps takes an integer"),
    ("do_train=yes", "do_train takes true or false (or null), not 'yes'"),
    ("tasks=rte", "tasks takes a JSON list, e.g. '[\"rte\", \"mrpc\"]' (or null), not 'rte'"),
])
def test_set_values_of_the_wrong_type_are_refused(item, message):
    with pytest.raises(HyperrestartError) as error:
        overrides.parse_set(item, KINDS)
    assert message in str(error.value) and str(error.value).startswith(f"--set {item}:")


@pytest.mark.parametrize("item", ["max_steps", "=3", "bad key=1", "1abc=2"])
def test_bad_set_is_refused(item):
    with pytest.raises(HyperrestartError, match="expected key=value"):
        overrides.parse_set(item)


def test_resolution_applies_overrides_in_order_and_sets_output_dir(tmp_path):
    resolved = resolve([str(RESTART), "--set", "max_steps=100", "--set", "max_steps=65535",
                        "--set", "restart_t0=500", "--output-dir", str(tmp_path / "o")])
    config = resolved.config
    released = json.loads(RESTART.read_text())
    assert resolved.upstream.name == "hyperdecoders"
    assert config["max_steps"] == 65535 and config["restart_t0"] == 500
    assert config["output_dir"] == str(tmp_path / "o") == str(resolved.output_dir)
    assert {k: v for k, v in config.items() if k not in ("max_steps", "restart_t0", "output_dir")} == \
        {k: v for k, v in released.items() if k not in ("max_steps", "output_dir")}
    assert resolved.origin["max_steps"] == resolved.origin["restart_t0"] == "--set"
    assert resolved.origin["learning_rate"] == "the config"
    assert resolve([str(RESTART)]).output_dir is None  # a fresh default folder is made when the run starts
    with pytest.raises(HyperrestartError, match="choose the folder with --output-dir"):
        resolve([str(RESTART), "--set", "output_dir=runs/x"])


def test_default_output_dirs_are_unique_within_a_second(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(run_folder.time, "strftime", lambda *_: "20260101-120000")
    args = cli.build_parser().parse_args(["run", str(RESTART), "--tiny"])
    first, second = (run_folder.default_output_dir(args, registry.UPSTREAMS["hyperdecoders"]) for _ in range(2))
    assert first == tmp_path / "runs" / "hyperdecoders-glue_restart-tiny-20260101-120000"
    assert second == first.with_name(first.name + "-2")
    assert first.is_dir() and second.is_dir()


def _fake_tiny(tmp_path, monkeypatch):
    monkeypatch.setattr("hyperrestart.upstream.tiny.tiny_model_dir", lambda *a, **k: tmp_path / "model")
    monkeypatch.setattr("hyperrestart.upstream.tiny.tiny_data_dir", lambda *a, **k: tmp_path / f"data-mrqa{k.get('mrqa')}")


def test_tiny_uses_the_tiny_model_and_data_and_set_still_wins(tmp_path, monkeypatch):
    _fake_tiny(tmp_path, monkeypatch)
    resolved = resolve([str(RESTART), "--tiny", "--set", "max_steps=32"])
    config = resolved.config
    assert config["model_name_or_path"] == config["tokenizer_name"] == str(tmp_path / "model")
    assert config["data_dir"] == str(tmp_path / "data-mrqaTrue")
    assert (config["max_steps"], config["logging_steps"], config["eval_steps"]) == (32, 1, 5)
    assert config["lr_scheduler"] == "cosine_annual_w_restarts"
    assert resolved.origin["max_steps"] == "--set" and resolved.origin["data_dir"] == "--tiny"
    config = resolve([str(CONFIGS_DIR / "hyperformer" / "hyperformer_restart.json"), "--tiny"]).config
    assert config["max_steps"] == 15 and config["lr_scheduler"] == "consine_annealing_restart"
    assert config["data_dir"] == str(tmp_path / "data-mrqaFalse")


def test_tiny_runs_mrqa_and_set_can_pick_the_tasks(tmp_path, monkeypatch):
    _fake_tiny(tmp_path, monkeypatch)
    config = resolve([str(CONFIGS_DIR / "hyperdecoders" / "mrqa_restart.json"), "--tiny"]).config
    assert config["tasks"] == ["mrqa"] and config["data_dir"] == str(tmp_path / "data-mrqaTrue")
    assert config["max_source_length"] == 128  # room for a question and its context
    other = tmp_path / "hyperdecoders" / "superglue.json"
    other.parent.mkdir()
    other.write_text(json.dumps({"tasks": ["boolq"], "eval_tasks": ["boolq"], "learning_rate": 3e-4}))
    with pytest.raises(HyperrestartError, match=r"--tiny has data for cola, .*rte.*mrqa.*not boolq; choose tasks with "
                                                r"--set 'tasks=\[\"rte\"\]' --set 'eval_tasks=\[\"rte\"\]'"):
        resolve([str(other), "--tiny"])
    config = resolve([str(other), "--tiny", "--set", 'tasks=["rte"]', "--set", 'eval_tasks=["mrqa"]']).config
    assert (config["tasks"], config["eval_tasks"], config["max_source_length"]) == (["rte"], ["mrqa"], 128)
    hyperformer = tmp_path / "hyperformer" / "mrqa.json"
    hyperformer.parent.mkdir()
    hyperformer.write_text(json.dumps({"tasks": ["mrqa"]}))
    with pytest.raises(HyperrestartError, match=r"--tiny has data for cola, .*wnli \(hyperformer\), not mrqa"):
        resolve([str(hyperformer), "--tiny"])


def test_bad_configs_are_named(tmp_path):
    bad = tmp_path / "hyperdecoders" / "bad.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(HyperrestartError, match=r"bad\.json is not valid JSON"):
        resolve([str(bad)])
    bad.write_text("[1, 2]")
    with pytest.raises(HyperrestartError, match="must hold a JSON object"):
        resolve([str(bad)])
    with pytest.raises(HyperrestartError, match=r"missing\.json does not exist"):
        resolve([str(tmp_path / "hyperdecoders" / "missing.json")])


def test_missing_tree_says_run_bootstrap_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["run", str(RESTART), "--dest", str(tmp_path / "nowhere"), "--output-dir", str(out),
                     "--python", sys.executable])
    assert code == 1
    err = capsys.readouterr().err
    assert "no materialised hyperdecoders tree" in err and "run `python bootstrap.py` first" in err
    assert not out.exists()


FAKE_TRAINER = '''
import json, math, os, sys
cfg = json.load(open(sys.argv[1]))
out = cfg["output_dir"]
json.dump({"model_type": "t5"}, open(os.path.join(out, "config.json"), "w"))  # as the real trainers do
json.dump({"argv": sys.argv[1:], "model": cfg["model_name_or_path"]}, open(os.path.join(out, "trainer_saw.json"), "w"))
start, hist = 0, []
state_file = os.path.join(cfg["model_name_or_path"], "trainer_state.json")
if os.path.isfile(state_file):  # Trainer.train(model_path=checkpoint): continue from its state
    state = json.load(open(state_file))
    start, hist = state["global_step"], state["log_history"]
lr, total = cfg["learning_rate"], cfg["max_steps"] if cfg.get("do_train", True) else 0
for step in range(start + 1, total + 1):
    t_cur, t_i = step, 1  # SGDR T_0=1, T_mult=2: the lr AFTER `step` scheduler steps, as the Trainer logs it
    while t_cur >= t_i:
        t_cur, t_i = t_cur - t_i, t_i * 2
    hist.append({"learning_rate": 1e-6 + 0.5 * (lr - 1e-6) * (1 + math.cos(math.pi * t_cur / t_i)), "step": step})
    print("noise line", step)
    print("\\r%3d%%|#| %d/%d [00:01<00:01, 3.0it/s]" % (100 * step // total, step, total), end="")
    print("{'loss': %s, 'learning_rate': %s, 'epoch': 0.1}" % (10.0 / step, hist[-1]["learning_rate"]))
    if step % cfg["save_steps"] == 0:
        ckpt = os.path.join(out, "checkpoint-%d" % step)
        os.makedirs(ckpt)
        json.dump({"global_step": step, "log_history": hist}, open(os.path.join(ckpt, "trainer_state.json"), "w"))
        for name in ("optimizer.pt", "scheduler.pt"):
            open(os.path.join(ckpt, name), "w").close()
        if step == int(os.environ.get("CRASH_AT", 0)):
            sys.exit("killed at step %d" % step)
if cfg.get("do_train", True):
    json.dump({"global_step": total, "log_history": hist}, open(os.path.join(out, "trainer_state.json"), "w"))
if os.environ.get("KILL_IN_EVAL"):
    sys.exit("killed during the final evaluation")
if cfg.get("do_eval"):
    json.dump({"rte_eval_accuracy": 0.5}, open(os.path.join(out, "eval_results.json"), "w"))
json.dump({"rte_accuracy": 0.5}, open(os.path.join(out, "test_results.json"), "w"))
print("cwd", os.getcwd(), "data", os.environ.get("HYPERRESTART_DATA_DIR"), "offline", os.environ.get("HF_HUB_OFFLINE"))
'''


def _fake_tree(dest, upstream, body=FAKE_TRAINER, configs=(RESTART,)):
    """A tree with the training script `body`, argument dataclasses declaring every key of `configs` (typed from
    their values) plus output_dir/data_dir, and the trainer's arg_to_scheduler."""
    workdir = dest / upstream.name / upstream.workdir
    script = workdir / upstream.script
    script.parent.mkdir(parents=True)
    script.write_text(body)
    fields = {"output_dir": "str", "data_dir": "Optional[str]"}
    for config in configs:
        for key, value in json.loads(Path(config).read_text()).items():
            fields.setdefault(key, {bool: "bool", int: "int", float: "float", str: "str", list: "List[str]"}
                              [type(value)])
    body = "\n".join(f"    {name}: {kind} = None" for name, kind in sorted(fields.items()))
    module = ("import dataclasses\nfrom typing import List, Optional\n\n@dataclasses.dataclass\n"
              f"class ModelArguments:\n{body}\n")
    for name in registry.ARGUMENT_CLASSES[1:]:
        module += f"\n@dataclasses.dataclass\nclass {name}:\n    unused_{name.lower()}: int = 0\n"
    args_file = dest / upstream.name / Path(*upstream.args_import.split()[1].split(".")).with_suffix(".py")
    if upstream.name == "hyperdecoders":
        args_file = workdir / "training_args.py"
    args_file.parent.mkdir(parents=True, exist_ok=True)
    args_file.write_text(module)
    trainer = (workdir if upstream.name == "hyperdecoders" else dest / upstream.name) / Path(
        *upstream.trainer_module.split(".")).with_suffix(".py")
    trainer.parent.mkdir(parents=True, exist_ok=True)
    trainer.write_text("arg_to_scheduler = dict.fromkeys(['linear', 'constant', 'cosine_annual_w_restarts', "
                       "'consine_annealing_restart'])\n")


def _run(dest, out, *extra, config=RESTART):
    data = dest.parent / "data" / "glue"  # pre-flight checks that data_dir exists
    data.mkdir(parents=True, exist_ok=True)
    return cli.main(["run", str(config), "--dest", str(dest), "--output-dir", str(out), "--python", sys.executable,
                     "--set", "max_steps=16", "--set", "save_steps=8", "--set", f"data_dir={data}", *extra])


@pytest.fixture
def fake_dest(tmp_path):
    dest = tmp_path / "dest"
    _fake_tree(dest, registry.UPSTREAMS["hyperdecoders"])
    return dest


def test_run_executes_the_script_in_the_tree_and_reads_the_trace(tmp_path, fake_dest, capsys):
    out = tmp_path / "out"
    code = _run(fake_dest, out, "--verbose")
    printed = capsys.readouterr().out
    assert code == 0, printed
    saved = json.loads((out / run_folder.RUN_CONFIG).read_text())
    assert saved["max_steps"] == 16 and saved["output_dir"] == str(out)
    # the trainer got hyperrestart_config.json and its own config.json (the model config) overwrote nothing of ours
    assert json.loads((out / "trainer_saw.json").read_text())["argv"] == [str(out / run_folder.RUN_CONFIG)]
    assert json.loads((out / "config.json").read_text()) == {"model_type": "t5"}
    assert f"cwd {fake_dest / 'hyperdecoders' / 'hyperdecoder'}" in (out / "train.log").read_text()
    assert f"data {tmp_path / 'data' / 'glue'}" in printed
    rows = list(csv.reader(open(out / "lr_trace.csv")))
    assert rows[0] == ["step", "lr_applied"] and [int(r[0]) for r in rows[1:]] == list(range(1, 17))
    assert "restarts at:  2, 4, 8, 16 (steps that start a new lr cycle)" in printed
    assert "metrics:      eval_results.json, test_results.json" in printed
    assert "checkpoints:  checkpoint-8, checkpoint-16" in printed


# The Trainer's log_history learning_rate at steps 1..16 of the paper's SGDR (UPSTREAM-FACTS: the lr after step k).
LOGGED_SGDR = [3e-4, 1.505e-4, 3e-4, 2.562e-4, 1.505e-4, 4.479e-5, 3e-4, 2.886e-4, 2.562e-4, 2.077e-4, 1.505e-4,
               9.329e-5, 4.479e-5, 1.238e-5, 3e-4, 2.971e-4]


@pytest.mark.slow  # imports torch and transformers' schedules (~5 s)
def test_lr_trace_csv_equals_plot_lr_schedule_step_by_step(tmp_path, capsys):
    from hyperrestart.upstream.scheduler import lr_schedule
    config = json.loads(RESTART.read_text())
    state = {"global_step": 16, "log_history": [{"step": k, "learning_rate": lr, "loss": 1.0}
                                                for k, lr in enumerate(LOGGED_SGDR, start=1)] + [{"eval_loss": 2}]}
    (tmp_path / "checkpoint-16").mkdir()
    (tmp_path / "checkpoint-16" / "trainer_state.json").write_text(json.dumps(state))
    training.summarize(tmp_path, config)
    rows = list(csv.reader(open(tmp_path / "lr_trace.csv")))
    assert rows[0] == ["step", "lr_applied"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 17))
    assert [float(r[1]) for r in rows[1:]] == pytest.approx(lr_schedule(config, 16), rel=1e-3)
    assert "restarts at:  2, 4, 8, 16 " in capsys.readouterr().out


def test_existing_run_is_refused_and_left_alone(tmp_path, fake_dest, capsys):
    out = tmp_path / "out"
    assert _run(fake_dest, out) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    assert _run(fake_dest, out, "--set", "learning_rate=1e-4") == 1
    err = capsys.readouterr().err
    assert f"{out} already holds a run made by hyperrestart (" in err
    assert "--resume" in err and "--overwrite" in err and "another --output-dir" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_overwrite_replaces_the_run_but_keeps_a_sweeps_files(tmp_path, fake_dest):
    out = tmp_path / "out"
    assert _run(fake_dest, out) == 0
    (out / "sweep-run.json").write_text("{}")
    (out / "stale.txt").write_text("from the old run")
    assert _run(fake_dest, out, "--overwrite", "--set", "learning_rate=1e-4") == 0
    assert json.loads((out / run_folder.RUN_CONFIG).read_text())["learning_rate"] == 1e-4
    assert (out / "sweep-run.json").exists() and not (out / "stale.txt").exists()


def test_a_folder_with_only_sweep_files_is_not_a_run(tmp_path, fake_dest):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep-run.json").write_text("{}")
    (out / "sweep.log").write_text("$ hyperrestart run\n")
    assert _run(fake_dest, out) == 0


def test_resume_continues_from_the_last_checkpoint(tmp_path, fake_dest, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("CRASH_AT", "8")
    assert _run(fake_dest, out) == 1
    assert "killed at step 8" in capsys.readouterr().err  # the log's tail comes with the error
    monkeypatch.delenv("CRASH_AT")
    saved = (out / run_folder.RUN_CONFIG).read_text()
    assert _run(fake_dest, out, "--resume") == 0
    printed = capsys.readouterr().out
    assert "from checkpoint-8" in printed
    trainer_config = json.loads((out / run_folder.RESUME_CONFIG).read_text())
    assert trainer_config["model_name_or_path"] == str(out / "checkpoint-8")
    assert json.loads((out / "trainer_saw.json").read_text())["argv"] == [str(out / run_folder.RESUME_CONFIG)]
    assert trainer_config["tokenizer_name"] == json.loads(saved)["tokenizer_name"]
    assert (out / run_folder.RUN_CONFIG).read_text() == saved  # the run's settings stay as started
    log = (out / "train.log").read_text()
    assert "killed at step 8" in log and "continuing from checkpoint-8" in log and "noise line 16" in log
    rows = list(csv.reader(open(out / "lr_trace.csv")))
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 17))  # one trace across the interruption
    assert "restarts at:  2, 4, 8, 16 " in printed


def test_resume_refuses_what_it_cannot_continue(tmp_path, fake_dest, capsys, monkeypatch):
    out = tmp_path / "out"
    assert _run(fake_dest, out, "--resume") == 1
    assert "holds no run started by `hyperrestart run`" in capsys.readouterr().err
    assert _run(fake_dest, out) == 0
    assert _run(fake_dest, out, "--resume") == 1
    assert f"the run in {out} finished training" in capsys.readouterr().err
    monkeypatch.setenv("CRASH_AT", "8")
    assert _run(fake_dest, out, "--overwrite") == 1
    monkeypatch.delenv("CRASH_AT")
    assert _run(fake_dest, out, "--resume", "--set", "learning_rate=1e-4") == 1
    assert "these differ: learning_rate: run 0.0003, now 0.0001" in capsys.readouterr().err
    for name in ("optimizer.pt", "checkpoint-8"):  # no complete checkpoint
        shutil.rmtree(out / name) if name.startswith("checkpoint") else (out / "checkpoint-8" / name).unlink()
    assert _run(fake_dest, out, "--resume") == 1
    assert "no complete checkpoint-N" in capsys.readouterr().err
    assert cli.main(["run", str(RESTART), "--resume"]) == 1
    assert "--resume needs --output-dir" in capsys.readouterr().err


@pytest.mark.parametrize("sets,message", [
    (["learning_rat=1e-4"], "unknown training argument 'learning_rat' (from --set); did you mean 'learning_rate'?"),
    (["lr_scheduler=cosine_annual_with_restarts"], "lr_scheduler 'cosine_annual_with_restarts' (from --set) is not "
     "one of the schedulers hyperdecoders knows: consine_annealing_restart, constant, cosine_annual_w_restarts, "
     "linear; did you mean "
     "'cosine_annual_w_restarts'?"),
    (["learning_rate=1e-3x"], "--set learning_rate=1e-3x: learning_rate takes a number, e.g. 3e-4, not '1e-3x'"),
    (["zzz_qqq=1", "max_step=3"], "2 problem(s)"),
])
def test_preflight_refuses_bad_keys_and_values_before_the_trainer_starts(tmp_path, fake_dest, capsys, sets,
                                                                         message):
    argv = [item for s in sets for item in ("--set", s)]
    assert _run(fake_dest, tmp_path / "out", *argv) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_argument_spec_is_cached_per_tree_content_and_env(tmp_path, fake_dest, monkeypatch):
    monkeypatch.setenv("HYPERRESTART_CACHE", str(tmp_path / "cache"))
    upstream = registry.UPSTREAMS["hyperdecoders"]
    tree = fake_dest / "hyperdecoders"
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / envs.MARKER).write_text('{"requirements_sha256": "a"}')
    first = arguments.argument_spec(upstream, tree, venv / "bin" / "python")
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(arguments.subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    assert arguments.argument_spec(upstream, tree, venv / "bin" / "python") == first and calls == []
    args_file = tree / "hyperdecoder" / "training_args.py"
    args_file.write_text(args_file.read_text().replace("learning_rate:", "learning_rate_x:"))
    edited = arguments.argument_spec(upstream, tree, venv / "bin" / "python")  # the tree changed: asked again
    assert len(calls) == 1 and "learning_rate_x" in edited.kinds and "learning_rate" not in edited.kinds
    (venv / envs.MARKER).write_text('{"requirements_sha256": "b"}')
    arguments.argument_spec(upstream, tree, venv / "bin" / "python")  # the env changed
    arguments.argument_spec(upstream, tree, sys.executable)  # not an env of `hyperrestart env`: never cached
    arguments.argument_spec(upstream, tree, sys.executable)
    assert len(calls) == 4


def test_preflight_names_a_typo_in_the_config_file(tmp_path, capsys):
    config = tmp_path / "hyperdecoders" / "typo.json"
    config.parent.mkdir()
    config.write_text(json.dumps(dict(json.loads(RESTART.read_text()), learning_rat=1e-4, warmup_step=5)))
    dest = tmp_path / "dest"
    _fake_tree(dest, registry.UPSTREAMS["hyperdecoders"])
    assert _run(dest, tmp_path / "out", config=config) == 1
    err = capsys.readouterr().err
    assert "unknown training argument 'learning_rat' (from the config); did you mean 'learning_rate'?" in err
    assert "unknown training argument 'warmup_step' (from the config); did you mean 'warmup_steps'?" in err


def test_default_output_is_quiet_with_progress_and_verbose_streams(tmp_path, fake_dest, capsys):
    assert _run(fake_dest, tmp_path / "quiet") == 0
    quiet = capsys.readouterr().out.splitlines()
    assert "noise line 3" in (tmp_path / "quiet" / "train.log").read_text()
    assert not any("noise" in line for line in quiet)
    assert [line for line in quiet if line.startswith("step ")] == [
        "step 2/16  loss 5", "step 4/16  loss 2.5", "step 6/16  loss 1.667", "step 8/16  loss 1.25",
        "step 10/16  loss 1", "step 12/16  loss 0.8333", "step 14/16  loss 0.7143", "step 16/16  loss 0.625"]
    assert len(quiet) < 22  # the command, the progress, the summary with the result, the alignment warning
    # 16 steps of T_0=1, T_mult=2 stop right after a restart: said on the console, not only in train.log
    assert ("warning: max_steps=16 does NOT end at a cycle end (T_0=1, T_mult=2, restart_warmup_steps=0): the run "
            "stops mid-cycle. Nearest aligned max_steps: 15 or 31. Set it with --set max_steps=N.") in quiet
    assert "what to expect: configs/README.md names the paper's table" in "\n".join(quiet)
    assert _run(fake_dest, tmp_path / "verbose", "--verbose") == 0
    assert sum("noise line" in line for line in capsys.readouterr().out.splitlines()) == 16
    assert _run(fake_dest, tmp_path / "silent", "--quiet") == 0
    assert not any(line.startswith("step ") for line in capsys.readouterr().out.splitlines())


def test_progress_follows_the_training_bar_only(capsys):
    progress = training.Progress(16)
    for line in ["Map: 100%|██████████| 16/16 [00:00<00:00, 632.88 examples/s]",  # datasets, before training
                 "  0%|          | 0/16 [00:00<?, ?it/s]/site-packages/torch/utils/data/dataloader.py:759: UserWarning",
                 "  6%|▋         | 1/16 [00:00<00:07,  1.94it/s]", "{'loss': 81.266, 'learning_rate': 0.0003}",
                 " 12%|█▎        | 2/16 [00:01<00:09,  1.52it/s]", "7it [00:00,  8.57it/s]",  # an evaluation
                 "100%|██████████| 1/1 [00:00<00:00,  4.03it/s]", "100%|██████████| 16/16 [00:09<00:00,  4.03it/s]"]:
        progress.feed(line)
    progress.close()
    assert capsys.readouterr().out.splitlines() == ["step 2/16  loss 81.27", "step 16/16  loss 81.27"]


def test_failing_script_exits_non_zero_and_names_the_log(tmp_path, capsys):
    dest = tmp_path / "dest"
    config = CONFIGS_DIR / "hyperformer" / "adapter_restart.json"
    _fake_tree(dest, registry.UPSTREAMS["hyperformer"], "import sys\nprint('boom')\nsys.exit(3)\n", configs=[config])
    code = cli.main(["run", str(config), "--dest", str(dest), "--output-dir", str(tmp_path / "o"), "--python",
                     sys.executable])
    captured = capsys.readouterr()
    assert code == 1 and "finetune_t5_trainer.py exited with 3" in captured.err and "train.log" in captured.err
    assert "boom" in captured.err


def test_command_and_environment(tmp_path):
    hf = registry.UPSTREAMS["hyperformer"]
    assert registry.command(hf, "py", "c.json") == ["py", "finetune_t5_trainer.py", "c.json"]
    with pytest.raises(HyperrestartError, match="hyperformer cannot train data-parallel"):
        registry.command(hf, "py", "c.json", nproc=4)
    hd = registry.UPSTREAMS["hyperdecoders"]
    assert registry.command(hd, "py", "c.json", nproc=4) == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "finetune_trainer.py", "c.json"]
    env = training.run_env(hf, tmp_path / "hyperformer", {"data_dir": "/d"}, tmp_path / "o", tiny=True)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "hyperformer")
    assert (env["HYPERRESTART_DATA_DIR"], env["HF_HUB_OFFLINE"], env["CUDA_VISIBLE_DEVICES"]) == ("/d", "1", "")
    assert env["HF_HOME"] == str(tmp_path / "o" / "hf-home")


def _cycle_starts(config, steps):
    from hyperrestart.upstream.scheduler import cycle_end_steps, restart_settings
    t_0, t_mult, _, warmup = restart_settings(config)
    return [end + 1 for end in cycle_end_steps(t_0, t_mult, warmup, up_to=steps) if end + 1 <= steps]


@pytest.mark.slow  # imports torch's schedulers per case (~3 s)
@pytest.mark.parametrize("settings", [{}, {"restart_t0": 3}, {"restart_t0": 2, "restart_t_mult": 1},
                                      {"restart_warmup_steps": 3}, {"restart_warmup_steps": 5, "restart_t0": 4}])
def test_restart_detection_finds_the_cycle_starts(settings):
    from hyperrestart.upstream.scheduler import lr_schedule
    config = dict(json.loads(RESTART.read_text()), **settings)
    trace = list(enumerate(lr_schedule(config, 40), start=1))
    assert lr_trace.restart_steps(trace) == _cycle_starts(config, 40)
    assert lr_trace.restart_steps(trace[:16]) == ([2, 4, 8, 16] if not settings else _cycle_starts(config, 16))


@pytest.mark.slow  # imports transformers' schedules (~3 s)
@pytest.mark.parametrize("name", ["constant", "linear", "cosine", "polynomial", "constant_w_warmup"])
@pytest.mark.parametrize("warmup", [0, 4])
def test_no_restarts_without_the_restart_scheduler_and_initial_lr_matches(name, warmup):
    from hyperrestart.upstream.scheduler import lr_schedule
    config = {"lr_scheduler": name, "learning_rate": 3e-4, "warmup_steps": warmup}
    lrs = lr_schedule(config, 40)
    assert lr_trace.restart_steps(list(enumerate(lrs, start=1))) == []
    assert lr_trace.initial_lr(config) == pytest.approx(lrs[0])


def test_lr_trace_from_printed_logs():
    text = "{'loss': 9.1, 'learning_rate': 0.0003, 'epoch': 0.01}\nnoise\n{'loss': 8.0, 'learning_rate': 0.0001505}"
    config = {"learning_rate": 3e-4, "logging_steps": 1, "logging_first_step": True}
    assert lr_trace.lr_trace_from_log(text, config) == [(1, 3e-4), (2, 3e-4), (3, 1.505e-4)]
    config = {"learning_rate": 3e-4, "logging_steps": 10, "logging_first_step": True}
    assert lr_trace.lr_trace_from_log(text, config) == [(1, 3e-4), (2, 3e-4), (11, 1.505e-4)]


# --- the command line -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [[], ["--help"]])
def test_no_verb_prints_the_help_and_succeeds(argv):
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", *argv], capture_output=True, text=True,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: hyperrestart") and "plot-lr" in result.stdout and "run" in result.stdout


def test_env_help_names_the_real_default_folder(capsys, monkeypatch):
    monkeypatch.delenv("HYPERRESTART_VENVS", raising=False)
    assert envs.venvs_root() == PROJECT_ROOT / "upstream" / ".venvs"
    with pytest.raises(SystemExit):
        cli.main(["env", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default: $HYPERRESTART_VENVS, else upstream/.venvs in the project)" in help_text
    assert "Create upstream/.venvs/NAME" in help_text


# --- end to end on the real upstreams ------------------------------------------------------------------------------
def _real_or_skip(name):
    tree = DEFAULT_DEST / name
    if not (tree / registry.UPSTREAMS[name].workdir / registry.UPSTREAMS[name].script).is_file():
        pytest.skip(f"{tree} is not materialised; run `python bootstrap.py`")
    try:
        envs.python_for(name)
    except HyperrestartError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow  # imports each upstream's argument classes and trainer in its env (~10 s each)
@pytest.mark.parametrize("name", ["hyperdecoders", "hyperformer"])
def test_every_shipped_config_passes_the_preflight_check(name):
    _real_or_skip(name)
    upstream = registry.UPSTREAMS[name]
    spec = arguments.argument_spec(upstream, registry.tree_dir(upstream), envs.python_for(name))
    assert spec.kinds["learning_rate"] == {"float"} and spec.kinds["max_steps"] == {"int"}
    assert "list" in spec.kinds["tasks"] and "str" in spec.kinds["output_dir"]
    assert {"cosine_annual_w_restarts", "consine_annealing_restart", "linear", "constant"} <= set(spec.schedulers)
    for config in sorted((CONFIGS_DIR / name).glob("*.json")):
        args = cli.build_parser().parse_args(["run", str(config), "--tiny", "--output-dir", "/nonexistent"])
        resolved = resolving.resolve(args, spec)
        arguments.check_config(resolved.config, spec, upstream, resolved.origin)
    with pytest.raises(HyperrestartError, match="did you mean 'learning_rate'"):
        arguments.check_config({"learning_rat": 1}, spec, upstream, {})


def _run_tiny(config, out, *extra):
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", "run", str(CONFIGS_DIR / config), "--tiny",
                             "--output-dir", str(out), *extra], capture_output=True, text=True, timeout=900,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow  # a real 16-step training run with evaluation: a minute or more per upstream on a busy CPU
@pytest.mark.parametrize("config", ["hyperdecoders/glue_restart.json", "hyperformer/hyperformer_restart.json"])
def test_tiny_restart_run_end_to_end(config, tmp_path):
    from hyperrestart.upstream.scheduler import lr_schedule
    _real_or_skip(config.split("/")[0])
    out = tmp_path / "run"
    printed = _run_tiny(config, out)
    assert "restarts at:  2, 4, 8 " in printed, printed  # 15 steps: the run ends at the fourth cycle's end
    assert "warning:" not in printed and "what to expect:" in printed and "result:       test_results.json" in printed
    assert "step 15/15" in printed and len((out / "train.log").read_text().splitlines()) > 100
    assert json.loads((out / run_folder.RUN_CONFIG).read_text())["max_steps"] == 15
    rows = list(csv.DictReader(open(out / "lr_trace.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 16))
    config_used = json.loads((out / run_folder.RUN_CONFIG).read_text())
    assert [float(r["lr_applied"]) for r in rows] == pytest.approx(lr_schedule(config_used, 15), rel=1e-6)


@pytest.mark.slow  # a real MRQA run on the tiny data (chunking, generation, squad metrics)
def test_tiny_mrqa_run_end_to_end(tmp_path):
    _real_or_skip("hyperdecoders")
    out = tmp_path / "mrqa"
    printed = _run_tiny("hyperdecoders/mrqa_restart.json", out)
    assert "restarts at:  2, 4, 8 " in printed, printed
    metrics = {name: json.loads((out / name).read_text()) for name in ("eval_results.json", "test_results.json")
               if (out / name).exists()}
    assert metrics and all(any("f1" in key for key in m) for m in metrics.values()), metrics


@pytest.mark.slow  # two real runs: an interrupted one (simulated by deleting its end) and its resumption
def test_tiny_run_resumes_from_its_checkpoint(tmp_path):
    _real_or_skip("hyperdecoders")
    out = tmp_path / "run"
    sets = ["--set", "save_total_limit=3", "--set", "load_best_model_at_end=false"]
    _run_tiny("hyperdecoders/glue_restart.json", out, *sets)
    full = list(csv.DictReader(open(out / "lr_trace.csv")))
    state = json.loads((out / "trainer_state.json").read_text())
    # what a run killed between steps 10 and 15 leaves: checkpoint-10, no final state, model or checkpoint-15
    shutil.rmtree(out / "checkpoint-15")
    for path in out.iterdir():
        if path.is_file() and path.name not in (run_folder.RUN_CONFIG, "train.log"):
            path.unlink()
    printed = _run_tiny("hyperdecoders/glue_restart.json", out, *sets, "--resume")
    assert "from checkpoint-10" in printed
    resumed = json.loads((out / "trainer_state.json").read_text())
    assert resumed["global_step"] == 15
    assert [e["step"] for e in resumed["log_history"] if "loss" in e] == list(range(1, 16))
    # the schedule continues exactly; the losses before the checkpoint are the first run's (after it they differ:
    # the upstream trainers do not restore the random state)
    assert [e["learning_rate"] for e in resumed["log_history"] if "loss" in e] == pytest.approx(
        [e["learning_rate"] for e in state["log_history"] if "loss" in e])
    assert [e["loss"] for e in resumed["log_history"] if "loss" in e][:10] == \
        [e["loss"] for e in state["log_history"] if "loss" in e][:10]
    assert list(csv.DictReader(open(out / "lr_trace.csv"))) == full
