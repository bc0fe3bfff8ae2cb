"""Sweep specs: expansion, validation before anything runs, and a real tiny sweep (P3 runner, tiny T5, synthetic P3)
run locally end to end, resumed, reported, and re-run through submitit's DebugExecutor."""
import csv
import json
import re

import pytest

from hyperrestart import sweep as sweeps
from hyperrestart.cli import main as cli_main
from hyperrestart.errors import HyperrestartError
from hyperrestart.p3.synthetic import TINY_SETTINGS
from hyperrestart.paths import PROJECT_ROOT

SMOKE = PROJECT_ROOT / "sweeps" / "smoke_p3.yaml"
BASE = "configs/p3/table2_t5_restart.json"


def write_spec(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = f"""
runner: p3
config: {BASE}
set: {{optim: {{betas: {{b1: 0.9}}}}, max_steps: 8}}
grid:
  schedule:
    no_restart: {{lr_scheduler: constant}}
    restart: {{lr_scheduler: restart, eta_min: 1e-6}}
  opt: {{eta_min: [0, 1e-5]}}
  seed: [1, 2]
"""


# --- expansion ----------------------------------------------------------------------------------------------------
def test_grid_expands_into_named_runs_with_flattened_overrides(tmp_path):
    spec = sweeps.parse_spec(write_spec(tmp_path, GOOD), cli_sets=["max_steps=3", "note=on"])
    assert spec.name == "spec" and spec.runner == "p3" and len(spec.runs) == 8
    assert [r.name for r in spec.runs[:3]] == ["no_restart_eta_min-0_seed-1", "no_restart_eta_min-0_seed-2",
                                               "no_restart_eta_min-1e-05_seed-1"]
    run = spec.runs[6]
    assert run.name == "restart_eta_min-1e-05_seed-1" and run.arm == "restart_eta_min-1e-05" and run.seed == 1
    # order: spec set, grid values, CLI --set; a repeated key keeps the last value; 1e-6 is a float (YAML 1.2)
    assert run.overrides == [("optim.betas.b1", 0.9), ("lr_scheduler", "restart"), ("eta_min", 1e-06),
                             ("opt.eta_min", 1e-05), ("seed", 1), ("max_steps", 3), ("note", "on")]
    merged = sweeps.merge_config(run.config, run.overrides)
    assert merged["optim"] == {"betas": {"b1": 0.9}} and merged["opt"] == {"eta_min": 1e-05}
    assert merged["max_steps"] == 3 and merged["lr_scheduler"] == "restart" and merged["model"] == "t5"


def test_run_runner_command_uses_set_and_output_dir(tmp_path):
    spec = sweeps.parse_spec(write_spec(tmp_path, """
runner: run
config: configs/hyperdecoders/glue_restart.json
args: [--nproc, "2"]
grid:
  scheduler:
    constant: {config: configs/hyperdecoders/glue_constant.json}
    restart: {}
  eta_min: [0, 1.0e-6]
run_name: "{scheduler}-eta{eta_min}"
"""), tiny=True)
    assert [r.name for r in spec.runs] == ["constant-eta0", "constant-eta1e-06", "restart-eta0", "restart-eta1e-06"]
    assert spec.runs[0].config.endswith("glue_constant.json") and spec.runs[3].config.endswith("glue_restart.json")
    job = sweeps.make_jobs(spec, tmp_path / "out")[1]
    command = job.command()
    assert command[1:5] == ["-m", "hyperrestart.cli", "run", spec.runs[1].config]
    assert command[5:] == ["--nproc", "2", "--tiny", "--set", "eta_min=1e-06", "--output-dir",
                           str((tmp_path / "out" / "constant-eta1e-06").resolve())]


def test_list_prints_index_name_and_overrides(tmp_path, capsys):
    assert cli_main(["sweep", str(SMOKE), "--list", "--output-root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# smoke_p3: 4 runs, runner p3")
    assert lines[1].split("\t")[:3] == ["0", "no_restart_seed-1", "-"]
    assert "lr_scheduler=constant seed=1" in lines[1] and "data_dir='${P3_DATA}'" in lines[1]
    assert lines[4].split("\t")[:2] == ["3", "restart_seed-2"]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("text, message", [
    ("runner: p3\nconfig: " + BASE + "\ngrid: {seed: [1]}\nsed: 3\n", r"unknown top-level key\(s\) sed"),
    ("runner: p3\nconfig: " + BASE + "\ngrid: {seed: []}\n", r"grid axis `seed` is empty"),
    ("runner: p3\nconfig: " + BASE + "\ngrid: {schedule: {}}\n", r"grid axis `schedule` is empty"),
    ("runner: p3\nconfig: " + BASE + "\ngrid: {}\n", r"`grid` must be a non-empty mapping"),
    ("runner: p3\nconfig: " + BASE + "\ngrid: {seed: [1, 2], lr: [1, 2]}\nrun_name: 'lr{lr}'\n",
     r"runs 0 and 2 are both named `lr1`"),
    ("runner: p3\nconfig: " + BASE + "\ngrid: {x: [a, 'a!']}\n", r"runs 0 and 1 are both named `x-a`"),
    ("runner: slurmy\nconfig: " + BASE + "\ngrid: {seed: [1]}\n", r"`runner` is 'slurmy'; use one of run, p3"),
    ("runner: p3\nconfig: configs/p3/nope.json\ngrid: {seed: [1]}\n", r"`config` names configs/p3/nope.json, which "
                                                                     r"does not exist"),
    ("runner: p3\nconfig: " + BASE + "\ngrid: {arm: {a: {config: configs/none.json}}}\n",
     r"`grid.arm.a.config` names configs/none.json"),
    ("runner: p3\ngrid: {seed: [1]}\n", r"`config` \(the base JSON config\) is missing"),
    ("runner: p3\nconfig: " + BASE + "\ngrid: {s: {a: {}, b: {}}}\nreport: {compare: {axis: s, baseline: c}}\n",
     r"report.compare.baseline `c` is not a label of axis `s` \(a, b\)"),
    ("runner: p3\nconfig: " + BASE + "\ngrid: {seed: [1]}\nslurm: {gpu: 1}\n", r"unknown key\(s\) in `slurm`: gpu; allowed: partition, gpus"),
    ("runner: p3\nconfig: " + BASE + "\ngrid: {seed: [1]}\nrun_name: '{sed}'\n", r"unknown field 'sed'"),
    ("- just a list\n", r"must be a YAML mapping"),
])
def test_malformed_spec_is_refused_before_anything_runs(tmp_path, capsys, text, message):
    path = write_spec(tmp_path, text)
    with pytest.raises(HyperrestartError, match=message) as info:
        sweeps.parse_spec(path)
    assert str(path) in str(info.value)
    out = tmp_path / "out"
    assert cli_main(["sweep", str(path), "--launch", "local", "--output-root", str(out)]) == 1
    assert "error:" in capsys.readouterr().err and not out.exists()


def test_missing_spec_and_bad_task_id(tmp_path, capsys, monkeypatch):
    assert cli_main(["sweep", str(tmp_path / "none.yaml"), "--list"]) == 1
    assert "none.yaml does not exist" in capsys.readouterr().err
    assert cli_main(["sweep", str(SMOKE), "--task-id", "4", "--output-root", str(tmp_path)]) == 1
    assert "task id 4 is out of range" in capsys.readouterr().err and not any(tmp_path.iterdir())
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert cli_main(["sweep", str(SMOKE), "--output-root", str(tmp_path)]) == 1
    assert "--task-id K (or set SLURM_ARRAY_TASK_ID)" in capsys.readouterr().err


def test_array_task_id_comes_from_slurm_env(tmp_path, monkeypatch):
    executed = []
    monkeypatch.setattr(sweeps, "execute", lambda job: executed.append(job))
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("P3_DATA", "/data/p3")
    monkeypatch.setenv("FLAN_T5_BASE", "/models/flan")
    assert cli_main(["sweep", str(SMOKE), "--output-root", str(tmp_path)]) == 0
    assert [job.run.name for job in executed] == ["restart_seed-1"]
    overrides = dict(executed[0].overrides())
    assert overrides["data_dir"] == "/data/p3" and overrides["model_name_or_path"] == "/models/flan"


def test_unset_environment_variable_is_named_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("P3_DATA", raising=False)
    assert cli_main(["sweep", str(SMOKE), "--launch", "local", "--output-root", str(tmp_path / "o")]) == 1
    assert "needs the environment variable(s) P3_DATA" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_slurm_resources_map_to_submitit_and_no_cluster_is_an_error(tmp_path, monkeypatch, capsys):
    params = sweeps.executor_parameters({"partition": "gpu", "gpus": 1, "cpus": 8, "mem": "64G",
                                         "time": "2-00:00:00", "array_parallelism": 4})
    assert params == {"name": "hyperrestart", "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1,
                      "cpus_per_task": 8, "mem_gb": 64.0, "timeout_min": 2880, "slurm_partition": "gpu",
                      "slurm_array_parallelism": 4}
    assert sweeps.parse_time_min("12:30:00") == 750 and sweeps.parse_time_min(90) == 90
    assert sweeps.parse_mem_gb("512M") == 0.5
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    monkeypatch.setenv("P3_DATA", "x")
    monkeypatch.setenv("FLAN_T5_BASE", "y")
    assert cli_main(["sweep", str(SMOKE), "--launch", "slurm", "--output-root", str(tmp_path / "o")]) == 1
    assert "no SLURM here" in capsys.readouterr().err


# --- a real tiny sweep --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """sweeps/smoke_p3.yaml --tiny --launch local: 2 schedules x 2 seeds of the P3 runner (tiny T5 and learnable P3,
    TINY_SETTINGS: 255 steps, evaluated every 51)."""
    root = tmp_path_factory.mktemp("sweep")
    hf = root / "hf"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in (("HF_HOME", hf), ("HF_DATASETS_CACHE", hf / "datasets"), ("HF_HUB_OFFLINE", 1),
                           ("HF_DATASETS_OFFLINE", 1), ("TRANSFORMERS_OFFLINE", 1)):
            patch.setenv(key, str(value))
        code = cli_main(["sweep", str(SMOKE), "--tiny", "--launch", "local", "--output-root", str(root / "runs")])
    assert code == 0
    return root / "runs"


def test_local_sweep_runs_every_run_to_completion(tiny_sweep):
    names = sorted(p.name for p in tiny_sweep.iterdir() if p.is_dir())
    assert names == ["no_restart_seed-1", "no_restart_seed-2", "restart_seed-1", "restart_seed-2"]
    for name in names:
        run = tiny_sweep / name
        done = json.loads((run / sweeps.COMPLETE_MARKER).read_text())
        info = json.loads((run / sweeps.RUN_INFO).read_text())
        assert done["fingerprint"] == info["fingerprint"] and done["name"] == name
        config = json.loads((run / sweeps.MERGED_CONFIG).read_text())
        assert config["max_steps"] == TINY_SETTINGS["max_steps"] and config["seed"] == int(name[-1])
        assert config["lr_scheduler"] == ("constant" if name.startswith("no_") else "restart")
        rows = (run / "train_log.csv").read_text().splitlines()
        assert len(rows) == TINY_SETTINGS["max_steps"] + 1 and (run / "eval_log.csv").exists()
    lrs = [float(line.split(",")[3]) for line in (tiny_sweep / "restart_seed-1" / "train_log.csv").read_text()
           .splitlines()[1:]]
    lr = TINY_SETTINGS["learning_rate"]
    assert lrs[0] == lrs[1] == lrs[3] == pytest.approx(lr) and lrs[2] < lrs[0]  # restarts at steps 2 and 4


def test_relaunch_skips_finished_runs(tiny_sweep, capsys):
    markers = {p: p.stat().st_mtime_ns for p in tiny_sweep.glob(f"*/{sweeps.COMPLETE_MARKER}")}
    assert cli_main(["sweep", str(SMOKE), "--tiny", "--launch", "local", "--output-root", str(tiny_sweep)]) == 0
    out = capsys.readouterr().out
    assert "0 run, 4 skipped (finished), 4 in all" in out and out.count("finished already, skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in markers} == markers
    assert cli_main(["sweep", str(SMOKE), "--tiny", "--list", "--output-root", str(tiny_sweep)]) == 0
    assert capsys.readouterr().out.count("\tfinished\t") == 4


def test_changed_settings_do_not_mix_into_finished_runs(tiny_sweep, capsys):
    assert cli_main(["sweep", str(SMOKE), "--tiny", "--set", "max_steps=15", "--launch", "local",
                     "--output-root", str(tiny_sweep)]) == 1
    assert "holds a finished run with other settings" in capsys.readouterr().err


def test_report_of_the_tiny_sweep(tiny_sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli_main(["report", str(tiny_sweep), "--out", str(out), "--with-loss"]) == 0
    table = (out / "table.md").read_text()
    assert capsys.readouterr().out.startswith(table)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Arm")]
    assert [r.split(" | ")[0] for r in rows] == ["| no_restart", "| restart"]
    assert all(re.search(r"\| \d+\.\d\d ± \d+\.\d\d", r) for r in rows)
    assert re.search(r"± \d+\.\d\d \([+\u2212]\d+\.\d\d\)", rows[1]) and "(" not in rows[0]
    arms = list(csv.DictReader((out / "table.csv").open()))
    assert [a["arm"] for a in arms] == ["no_restart", "restart"] and arms[1]["baseline"] == "no_restart"
    assert all(a["n"] == "2" and a["Rouge-L_std"] != "" for a in arms)
    # the tiny P3 is learnable: Rouge-L well above 0, different per seed, and a curve of several evaluations
    assert all(float(a["Rouge-L_mean"]) > 5 and float(a["Rouge-L_std"]) > 0 for a in arms)
    logs = sorted(tiny_sweep.glob("*/eval_log.csv"))
    assert len(logs) == 4 and all(len(list(csv.DictReader(log.open()))) == 6 for log in logs)  # steps 0, 51, .., 255
    assert float(arms[0]["Final loss_std"]) > 0  # the seeds differ
    for figure in ("metric_curves.png", "loss_curves.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"


def test_submitit_debug_executor_reruns_only_the_unfinished_run(tiny_sweep, capsys):
    victim = tiny_sweep / "restart_seed-2"
    (victim / sweeps.COMPLETE_MARKER).unlink()
    assert cli_main(["sweep", str(SMOKE), "--tiny", "--launch", "slurm", "--submitit-cluster", "debug", "--wait",
                     "--output-root", str(tiny_sweep), "--partition", "gpu", "--time", "10"]) == 0
    out = capsys.readouterr().out
    assert "1 submitted, 3 skipped (finished)" in out and "restart_seed-2\tjob " in out
    assert json.loads((victim / sweeps.COMPLETE_MARKER).read_text())["name"] == "restart_seed-2"


def test_failed_run_gets_no_marker_and_a_clear_error(tiny_sweep, tmp_path, capsys):
    spec = write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{seed: [1]}}\n")
    out = tmp_path / "o"
    # `hyperrestart p3 --python /bin/false`: the runner exits 1 at once
    assert cli_main(["sweep", str(spec), "--tiny", "--runner-args", "--python /bin/false", "--task-id", "0",
                     "--output-root", str(out)]) == 1
    err = capsys.readouterr().err
    assert "run 0 (seed-1) failed with exit code 1" in err and "sweep.log" in err
    assert not (out / "seed-1" / sweeps.COMPLETE_MARKER).exists()
    assert "--python /bin/false" in (out / "seed-1" / sweeps.RUN_LOG).read_text()
