"""`hyperrestart run` and `hyperrestart env`: resolution, overrides, errors (hermetic) and end-to-end --tiny runs."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyperrestart import cli, envs, runner
from hyperrestart.commands import run as run_cmd
from hyperrestart.errors import HyperrestartError
from hyperrestart.paths import CONFIGS_DIR, DEFAULT_DEST, PROJECT_ROOT

RESTART = CONFIGS_DIR / "hyperdecoders" / "glue_restart.json"


def resolve(argv):
    args = cli.build_parser().parse_args(["run", *argv])
    return run_cmd.resolve(args)


def test_upstream_comes_from_the_config_folder_or_the_flag(tmp_path):
    assert runner.upstream_for_config(RESTART).name == "hyperdecoders"
    assert runner.upstream_for_config(CONFIGS_DIR / "hyperformer" / "adapter_restart.json").name == "hyperformer"
    mine = tmp_path / "experiments" / "hyperformer" / "mine.json"
    assert runner.upstream_for_config(mine).name == "hyperformer"
    assert runner.upstream_for_config(tmp_path / "x.json", "hyperdecoders").name == "hyperdecoders"
    with pytest.raises(HyperrestartError, match=r"cannot tell which upstream runs .*x\.json.*--upstream"):
        runner.upstream_for_config(tmp_path / "x.json")
    with pytest.raises(HyperrestartError, match=r"unknown upstream 'hyperfoo'; choose one of: hyperdecoders"):
        runner.upstream_for_config(RESTART, "hyperfoo")


@pytest.mark.parametrize("item,expected", [
    ("max_steps=65535", ("max_steps", 65535)), ("learning_rate=3e-4", ("learning_rate", 3e-4)),
    ("do_train=false", ("do_train", False)), ('tasks=["rte","cola"]', ("tasks", ["rte", "cola"])),
    ("model_name_or_path=/models/t5", ("model_name_or_path", "/models/t5")), ("eta_min=0", ("eta_min", 0)),
    ("output_dir=a=b", ("output_dir", "a=b")), ("lr_scheduler=linear", ("lr_scheduler", "linear")),
    ("x=", ("x", "")), ("tokenizer_name=null", ("tokenizer_name", None)),
])
def test_set_values_are_typed(item, expected):
    assert runner.parse_set(item) == expected


@pytest.mark.parametrize("item", ["max_steps", "=3", "bad key=1", "1abc=2"])
def test_bad_set_is_refused(item):
    with pytest.raises(HyperrestartError, match="expected key=value"):
        runner.parse_set(item)


def test_resolution_applies_overrides_in_order_and_sets_output_dir(tmp_path):
    upstream, config, out = resolve([str(RESTART), "--set", "max_steps=100", "--set", "max_steps=65535",
                                     "--set", "restart_t0=500", "--output-dir", str(tmp_path / "o")])
    released = json.loads(RESTART.read_text())
    assert upstream.name == "hyperdecoders"
    assert config["max_steps"] == 65535 and config["restart_t0"] == 500
    assert config["output_dir"] == str(tmp_path / "o") == str(out)
    assert {k: v for k, v in config.items() if k not in ("max_steps", "restart_t0", "output_dir")} == \
        {k: v for k, v in released.items() if k not in ("max_steps", "output_dir")}
    _, _, default_out = resolve([str(RESTART)])
    assert default_out.parent == PROJECT_ROOT / "runs" and default_out.name.startswith("hyperdecoders-glue_restart-")


def test_tiny_uses_the_tiny_model_and_data_and_set_still_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERRESTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("hyperrestart.tiny.tiny_model_dir", lambda *a, **k: tmp_path / "model")
    monkeypatch.setattr("hyperrestart.tiny.tiny_glue_dir", lambda *a, **k: tmp_path / "data")
    _, config, _ = resolve([str(RESTART), "--tiny", "--set", "max_steps=32"])
    assert config["model_name_or_path"] == config["tokenizer_name"] == str(tmp_path / "model")
    assert config["data_dir"] == str(tmp_path / "data")
    assert (config["max_steps"], config["logging_steps"], config["eval_steps"]) == (32, 1, 8)
    assert config["lr_scheduler"] == "cosine_annual_w_restarts"
    _, config, _ = resolve([str(CONFIGS_DIR / "hyperformer" / "hyperformer_restart.json"), "--tiny"])
    assert config["max_steps"] == 16 and config["lr_scheduler"] == "consine_annealing_restart"
    with pytest.raises(HyperrestartError, match="--tiny has data for the GLUE tasks only.*not mrqa"):
        resolve([str(CONFIGS_DIR / "hyperdecoders" / "mrqa_restart.json"), "--tiny"])


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


def _fake_tree(dest, upstream, body):
    script = dest / upstream.name / upstream.workdir / upstream.script
    script.parent.mkdir(parents=True)
    script.write_text(body)


FAKE_TRAINER = '''
import json, math, os, sys
cfg = json.load(open(sys.argv[1]))
out = cfg["output_dir"]
lr, hist = cfg["learning_rate"], []
t_cur, t_i = 0, 1
for step in range(1, cfg["max_steps"] + 1):
    t_cur += 1
    if t_cur >= t_i:
        t_cur, t_i = 0, t_i * 2
    hist.append({"learning_rate": 1e-6 + 0.5 * (lr - 1e-6) * (1 + math.cos(math.pi * t_cur / t_i)), "step": step})
os.makedirs(os.path.join(out, "checkpoint-%d" % cfg["max_steps"]))
json.dump({"global_step": cfg["max_steps"], "log_history": hist},
          open(os.path.join(out, "checkpoint-%d" % cfg["max_steps"], "trainer_state.json"), "w"))
json.dump({"rte_accuracy": 0.5}, open(os.path.join(out, "test_results.json"), "w"))
print("cwd", os.getcwd(), "data", os.environ.get("HYPERRESTART_DATA_DIR"), "offline", os.environ.get("HF_HUB_OFFLINE"))
'''


def test_run_executes_the_script_in_the_tree_and_reads_the_trace(tmp_path, capsys, monkeypatch):
    dest = tmp_path / "dest"
    _fake_tree(dest, runner.UPSTREAMS["hyperdecoders"], FAKE_TRAINER)
    out = tmp_path / "out"
    code = cli.main(["run", str(RESTART), "--dest", str(dest), "--output-dir", str(out), "--python", sys.executable,
                     "--set", "max_steps=16", "--set", "data_dir=/data/glue"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert json.loads((out / "config.json").read_text())["max_steps"] == 16
    assert f"cwd {dest / 'hyperdecoders' / 'hyperdecoder'}" in (out / "train.log").read_text()
    assert "data /data/glue" in printed
    rows = list(csv.DictReader(open(out / "lr_trace.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 17)) and float(rows[0]["learning_rate"]) == 3e-4
    assert "restarts at:  1, 3, 7, 15 " in printed
    assert "metrics:      test_results.json" in printed and "checkpoints:  checkpoint-16" in printed


def test_failing_script_exits_non_zero_and_names_the_log(tmp_path, capsys):
    dest = tmp_path / "dest"
    _fake_tree(dest, runner.UPSTREAMS["hyperformer"], "import sys\nprint('boom')\nsys.exit(3)\n")
    code = cli.main(["run", str(CONFIGS_DIR / "hyperformer" / "adapter_restart.json"), "--dest", str(dest),
                     "--output-dir", str(tmp_path / "o"), "--python", sys.executable])
    captured = capsys.readouterr()
    assert code == 1 and "finetune_t5_trainer.py exited with 3" in captured.err and "train.log" in captured.err


def test_command_and_environment(tmp_path):
    hf = runner.UPSTREAMS["hyperformer"]
    assert runner.command(hf, "py", "c.json") == ["py", "finetune_t5_trainer.py", "c.json"]
    with pytest.raises(HyperrestartError, match="hyperformer cannot train data-parallel"):
        runner.command(hf, "py", "c.json", nproc=4)
    hd = runner.UPSTREAMS["hyperdecoders"]
    assert runner.command(hd, "py", "c.json", nproc=4) == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "finetune_trainer.py", "c.json"]
    env = run_cmd.run_env(hf, tmp_path / "hyperformer", {"data_dir": "/d"}, tmp_path / "o", tiny=True)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "hyperformer")
    assert (env["HYPERRESTART_DATA_DIR"], env["HF_HUB_OFFLINE"], env["CUDA_VISIBLE_DEVICES"]) == ("/d", "1", "")
    assert env["HF_HOME"] == str(tmp_path / "o" / "hf-home")


@pytest.mark.parametrize("trace,initial,expected", [
    ([3e-4, 1.505e-4, 3e-4, 2.562e-4, 1.505e-4, 4.479e-5, 3e-4, 2.886e-4, 2.562e-4, 2.077e-4, 1.505e-4, 9.329e-5,
      4.479e-5, 1.238e-5, 3e-4, 2.971e-4], 3e-4, [1, 3, 7, 15]),  # the measured SGDR trace
    ([3e-4] * 16, 3e-4, []),  # constant
    ([i * 6e-7 for i in range(1, 17)], 0.0, []),  # linear warmup
    ([3e-4 * (1 - i / 16) for i in range(1, 17)], 3e-4, []),  # linear decay
    ([1e-4, 2e-4, 3e-4, 3e-4, 1.5e-4, 3e-4, 2.5e-4], 0.0, [4, 6]),  # restart_warmup_steps=3, T_0=1
])
def test_restart_detection(trace, initial, expected):
    assert runner.restart_steps(list(enumerate(trace, start=1)), initial) == expected


def test_lr_trace_from_printed_logs():
    text = "{'loss': 9.1, 'learning_rate': 0.0003, 'epoch': 0.01}\nnoise\n{'loss': 8.0, 'learning_rate': 0.0001505}"
    assert runner.lr_trace_from_log(text) == [(1, 3e-4), (2, 1.505e-4)]


# --- end to end on the real upstreams ------------------------------------------------------------------------------
def _real_or_skip(name):
    tree = DEFAULT_DEST / name
    if not (tree / runner.UPSTREAMS[name].workdir / runner.UPSTREAMS[name].script).is_file():
        pytest.skip(f"{tree} is not materialised; run `python bootstrap.py`")
    try:
        envs.python_for(name)
    except HyperrestartError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow  # a real 16-step training run with evaluation: a minute or more per upstream on a busy CPU
@pytest.mark.parametrize("config", ["hyperdecoders/glue_restart.json", "hyperformer/hyperformer_restart.json"])
def test_tiny_restart_run_end_to_end(config, tmp_path):
    name = config.split("/")[0]
    _real_or_skip(name)
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "hyperrestart.cli", "run", str(CONFIGS_DIR / config), "--tiny",
                             "--quiet", "--output-dir", str(out)], capture_output=True, text=True, timeout=900,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "restarts at:  1, 3, 7, 15 " in result.stdout, result.stdout
    rows = list(csv.DictReader(open(out / "lr_trace.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 17))
    assert float(rows[0]["learning_rate"]) == pytest.approx(3e-4)
    assert float(rows[1]["learning_rate"]) == pytest.approx(1.505e-4, rel=1e-3)
