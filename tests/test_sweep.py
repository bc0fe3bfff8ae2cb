"""Sweep specs: expansion, validation before anything runs, and a real tiny sweep (P3 runner, tiny T5, synthetic P3)
run locally end to end, resumed, reported, and re-run through submitit's DebugExecutor."""
import csv
import json
import re
from pathlib import Path

import pytest

from hyperrestart.sweep import jobs as sweep_jobs
from hyperrestart.sweep import launch as sweep_launch
from hyperrestart.sweep import runners as sweep_runners
from hyperrestart.sweep import spec as sweep_spec
from hyperrestart.cli import main as cli_main
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.p3.synthetic import TINY_SETTINGS
from hyperrestart.core.paths import PROJECT_ROOT

SMOKE = PROJECT_ROOT / "sweeps" / "smoke_p3.yaml"
BASE = "configs/p3/table2_t5_restart.json"


def write_spec(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = f"""
runner: p3
config: {BASE}
set: {{adam_beta1: 0.9, max_steps: 8}}
grid:
  schedule:
    no_restart: {{lr_scheduler: constant}}
    restart: {{lr_scheduler: restart, eta_min: 1e-6}}
  eta_min: [0, 1e-5]
  seed: [1, 2]
"""


# --- expansion ----------------------------------------------------------------------------------------------------
def test_grid_expands_into_named_runs_with_flattened_overrides(tmp_path):
    spec = sweep_spec.parse_spec(write_spec(tmp_path, GOOD), cli_sets=["max_steps=3", "run_name=on"])
    assert spec.name == "spec" and spec.runner == "p3" and len(spec.runs) == 8
    assert [r.name for r in spec.runs[:3]] == ["no_restart_eta_min-0_seed-1", "no_restart_eta_min-0_seed-2",
                                               "no_restart_eta_min-1e-05_seed-1"]
    run = spec.runs[6]
    assert run.name == "restart_eta_min-1e-05_seed-1" and run.arm == "restart_eta_min-1e-05" and run.seed == 1
    # order: spec set, grid values, CLI --set; a repeated key keeps the last value; 1e-6 is a float (YAML 1.2)
    assert run.overrides == [("adam_beta1", 0.9), ("lr_scheduler", "restart"), ("eta_min", 1e-05), ("seed", 1),
                             ("max_steps", 3), ("run_name", "on")]
    merged = sweep_runners.merge_config(run.config, run.overrides)
    assert merged["adam_beta1"] == 0.9 and merged["eta_min"] == 1e-05 and merged["run_name"] == "on"
    assert merged["max_steps"] == 3 and merged["lr_scheduler"] == "restart" and merged["model"] == "t5"


def test_run_runner_command_uses_set_and_output_dir(tmp_path):
    spec = sweep_spec.parse_spec(write_spec(tmp_path, """
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
    job = sweep_jobs.make_jobs(spec, tmp_path / "out")[1]
    command = job.command()
    assert command[1:5] == ["-m", "hyperrestart.cli", "run", spec.runs[1].config]
    assert command[5:] == ["--nproc", "2", "--tiny", "--set", "eta_min=1e-06", "--output-dir",
                           str((tmp_path / "out" / "constant-eta1e-06").resolve())]


def test_relaunching_an_unfinished_run_resumes_or_restarts_it_explicitly(tmp_path):
    """`hyperrestart run` refuses a folder holding a run: a relaunch says --resume (a checkpoint) or --overwrite."""
    spec = sweep_spec.parse_spec(write_spec(tmp_path, """
runner: run
config: configs/hyperdecoders/glue_restart.json
grid:
  seed: [1]
"""))
    job = sweep_jobs.make_jobs(spec, tmp_path / "out")[0]
    run_dir = Path(job.run_dir)
    assert sweep_jobs.continuation_args(job) == ()  # fresh folder
    run_dir.mkdir(parents=True)
    (run_dir / "sweep-run.json").write_text("{}")  # the sweep's own bookkeeping is not a run
    assert sweep_jobs.continuation_args(job) == ()
    (run_dir / "train.log").write_text("killed before the first checkpoint\n")
    assert sweep_jobs.continuation_args(job) == ("--overwrite",)
    checkpoint = run_dir / "checkpoint-8"
    checkpoint.mkdir()
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt"):
        (checkpoint / name).write_text("{}")
    assert sweep_jobs.continuation_args(job) == ("--resume",)
    command = job.command(sweep_jobs.continuation_args(job))
    assert "--resume" in command and command[-2:] == ["--output-dir", str(run_dir)]


def test_a_mapping_value_is_one_override(tmp_path):
    """Training arguments that take a mapping (accelerator_config) get it whole, not split into dotted keys."""
    spec = sweep_spec.parse_spec(write_spec(tmp_path, "runner: run\nconfig: configs/hyperdecoders/glue_restart.json\n"
                                                  "set: {accelerator_config: {split_batches: true}}\n"
                                                  "grid: {seed: [1]}\n"))
    assert spec.runs[0].overrides == [("accelerator_config", {"split_batches": True}), ("seed", 1)]
    command = sweep_jobs.make_jobs(spec, tmp_path / "out")[0].command()
    assert command[command.index("--set") + 1] == 'accelerator_config={"split_batches": true}'


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
    ("runner: p3\nconfig: " + BASE + "\ngrid: {optim: {eta_min: [0]}}\n",
     r"`grid.optim.eta_min` must be a mapping of overrides \(or empty\), got \[0\]; a scalar axis is a list"),
    ("runner: p3\nconfig: " + BASE + "\ngrid: {seed: [1]}\nreport: {published: table9}\n",
     r"report.published: no published numbers for 'table9'.*known: table1, table2, table5"),
    ("- just a list\n", r"must be a YAML mapping"),
])
def test_malformed_spec_is_refused_before_anything_runs(tmp_path, capsys, text, message):
    path = write_spec(tmp_path, text)
    with pytest.raises(HyperrestartError, match=message) as info:
        sweep_spec.parse_spec(path)
    assert str(path) in str(info.value)
    out = tmp_path / "out"
    assert cli_main(["sweep", str(path), "--launch", "local", "--output-root", str(out)]) == 1
    assert "error:" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("grid, run_name", [
    ("{arm: {'..': {}}}", None), ("{arm: {'../escape': {}}}", None), ("{arm: {'/tmp/escape': {}}}", None),
    ("{arm: {'': {}}}", None), ("{arm: {'.hidden': {}}}", None), ("{arm: {a: {}}}", "'..'"),
    ("{task: ['..']}", "'{task}'"), ("{seed: [1]}", "'.{seed}'"),
])
def test_run_folders_stay_inside_the_output_root(tmp_path, capsys, grid, run_name):
    """A label or run name that is `..`, empty, hidden or a path is refused when the spec is read."""
    text = f"runner: p3\nconfig: {BASE}\ngrid: {grid}\n" + (f"run_name: {run_name}\n" if run_name else "")
    path = write_spec(tmp_path, text)
    with pytest.raises(HyperrestartError, match=r"cannot name a run folder|not a plain folder name") as info:
        sweep_spec.parse_spec(path)
    assert str(path) in str(info.value) and "Traceback" not in str(info.value)
    out = tmp_path / "root" / "out"
    assert cli_main(["sweep", str(path), "--task-id", "0", "--output-root", str(out)]) == 1
    assert "error:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written anywhere


def test_spec_name_must_be_a_folder_name(tmp_path):
    with pytest.raises(HyperrestartError, match=r"the sweep's `name`.*'\.\./up' is not a plain folder name"):
        sweep_spec.parse_spec(write_spec(tmp_path, f"name: ../up\nrunner: p3\nconfig: {BASE}\ngrid: {{seed: [1]}}\n"))


def test_a_run_folder_linked_outside_the_root_is_refused(tmp_path):
    spec = sweep_spec.parse_spec(write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{seed: [1]}}\n"))
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "seed-1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(HyperrestartError, match=r"run 0 \(seed-1\).*resolves to .*elsewhere, outside the output root"):
        sweep_jobs.make_jobs(spec, tmp_path / "out")


def test_unknown_keys_are_refused_when_the_spec_is_read(tmp_path, capsys):
    """Every key of `set`, the grid and --set is checked against the runner's options before a run starts (a SLURM
    array would otherwise be submitted and fail run by run); the error names each key, where it is and a close match."""
    path = write_spec(tmp_path, f"""
runner: p3
config: {BASE}
set: {{learning_rat: 1.0e-4}}
grid:
  schedule:
    restart: {{lr_schedulr: restart}}
  optim.eta_min: [0]
  seed: [1, 2]
""")
    with pytest.raises(HyperrestartError) as info:
        sweep_spec.parse_spec(path, cli_sets=["max_step=3", "output_dir=/tmp/x"])
    message = str(info.value)
    assert "`learning_rat` (from set) is not one of the options of the P3 runner" in message
    assert "did you mean learning_rate?" in message
    assert "`lr_schedulr` (from grid.schedule.restart)" in message and "did you mean lr_scheduler" in message
    assert "`optim.eta_min` (from grid.optim.eta_min) is not one of the options" in message
    assert "`max_step` (from --set)" in message
    assert "`output_dir` (from --set) is set by the sweep itself" in message
    assert message.count("learning_rat`") == 1  # one line per key and place, not per run
    out = tmp_path / "out"
    assert cli_main(["sweep", str(path), "--launch", "slurm", "--submitit-cluster", "debug",
                     "--output-root", str(out)]) == 1
    assert "learning_rat" in capsys.readouterr().err and not out.exists()


def test_unknown_keys_of_upstream_runs_are_refused(tmp_path):
    path = write_spec(tmp_path, """
runner: run
config: configs/hyperdecoders/glue_restart.json
grid:
  scheduler:
    constant: {config: configs/hyperdecoders/glue_constant.json, warmup_step: 0}
    restart: {restart_t0: 2}
  seed: [1]
""")
    with pytest.raises(HyperrestartError, match=r"`warmup_step` \(from grid.scheduler.constant\) is not one of the "
                                                r"training arguments of the patched hyperdecoders.*did you mean "
                                                r"warmup_steps"):
        sweep_spec.parse_spec(path)
    hyperformer = write_spec(tmp_path, "runner: run\nconfig: configs/hyperformer/adapter_restart.json\n"
                                       "grid: {encoder_adapter_dim: [8]}\n", "hf.yaml")
    with pytest.raises(HyperrestartError, match=r"`encoder_adapter_dim` \(from grid.encoder_adapter_dim\) is not "
                                                r"one of the training arguments of the patched hyperformer"):
        sweep_spec.parse_spec(hyperformer)
    for name in ("table1_hyperformer", "table5_schedulers"):  # the shipped specs pass
        assert len(sweep_spec.parse_spec(PROJECT_ROOT / "sweeps" / f"{name}.yaml").runs) in (24, 15)


def test_recorded_upstream_arguments_cover_every_released_config():
    """The recorded lists know the keys of every shipped config and the restart arguments the patches add."""
    recorded = sweep_runners.recorded_upstream_arguments()
    for name in ("hyperdecoders", "hyperformer"):
        assert {"restart_t0", "restart_t_mult", "eta_min", "restart_warmup_steps", "seed", "max_steps"} <= recorded[name]
        for config in (PROJECT_ROOT / "configs" / name).glob("*.json"):
            assert set(json.loads(config.read_text())) <= recorded[name], config.name


@pytest.mark.slow
def test_recorded_upstream_arguments_equal_the_live_argument_classes(tmp_path):
    """upstream_arguments.json = the fields the materialised trees' dataclasses have in their envs (half a minute)."""
    from hyperrestart.upstream import arguments, registry
    from hyperrestart.upstream.envs import python_for
    recorded = sweep_runners.recorded_upstream_arguments()
    for name in ("hyperdecoders", "hyperformer"):
        try:
            python = python_for(name)
            live = set(arguments.argument_spec(registry.upstream_named(name), registry.tree_dir(registry.upstream_named(name)),
                                              python).kinds)
        except HyperrestartError as exc:
            pytest.skip(f"{name}: {exc}")
        assert recorded[name] == live, (f"{name}: re-record with hyperrestart.sweep.spec.record_upstream_arguments(); "
                                        f"missing {sorted(live - recorded[name])}, gone {sorted(recorded[name] - live)}")


def test_keys_that_cannot_be_checked_are_said_so(tmp_path, monkeypatch, capsys):
    def no_torch():
        raise ImportError("No module named 'torch'")
    monkeypatch.setattr(sweep_runners, "p3_runner_options", no_torch)
    spec = sweep_spec.parse_spec(write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{anything: [1]}}\n"))
    assert spec.runs[0].overrides == [("anything", 1)]
    err = capsys.readouterr().err
    assert "warning:" in err and "override keys not checked" in err and "No module named 'torch'" in err


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
    monkeypatch.setattr(sweep_jobs, "execute", lambda job: executed.append(job))
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
    params = sweep_launch.executor_parameters({"partition": "gpu", "gpus": 1, "cpus": 8, "mem": "64G",
                                         "time": "2-00:00:00", "array_parallelism": 4})
    assert params == {"name": "hyperrestart", "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1,
                      "cpus_per_task": 8, "mem_gb": 64.0, "timeout_min": 2880, "slurm_partition": "gpu",
                      "slurm_array_parallelism": 4}
    assert sweep_launch.parse_time_min("12:30:00") == 750 and sweep_launch.parse_time_min(90) == 90
    assert sweep_launch.parse_mem_gb("512M") == 0.5
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


@pytest.mark.slow  # uses tiny_sweep: four tiny P3 training runs (2-10 minutes on 2 busy CPU cores)
def test_local_sweep_runs_every_run_to_completion(tiny_sweep):
    names = sorted(p.name for p in tiny_sweep.iterdir() if p.is_dir())
    assert names == ["no_restart_seed-1", "no_restart_seed-2", "restart_seed-1", "restart_seed-2"]
    for name in names:
        run = tiny_sweep / name
        done = json.loads((run / sweep_jobs.COMPLETE_MARKER).read_text())
        info = json.loads((run / sweep_jobs.RUN_INFO).read_text())
        assert done["fingerprint"] == info["fingerprint"] and done["name"] == name
        config = json.loads((run / sweep_runners.MERGED_CONFIG).read_text())
        assert config["max_steps"] == TINY_SETTINGS["max_steps"] and config["seed"] == int(name[-1])
        assert config["lr_scheduler"] == ("constant" if name.startswith("no_") else "restart")
        rows = (run / "train_log.csv").read_text().splitlines()
        assert len(rows) == TINY_SETTINGS["max_steps"] + 1 and (run / "eval_log.csv").exists()
    lrs = [float(line.split(",")[3]) for line in (tiny_sweep / "restart_seed-1" / "train_log.csv").read_text()
           .splitlines()[1:]]
    lr = TINY_SETTINGS["learning_rate"]
    assert lrs[0] == lrs[1] == lrs[3] == pytest.approx(lr) and lrs[2] < lrs[0]  # restarts at steps 2 and 4


@pytest.mark.slow  # uses tiny_sweep: four tiny P3 training runs (2-10 minutes on 2 busy CPU cores)
def test_relaunch_skips_finished_runs(tiny_sweep, capsys):
    markers = {p: p.stat().st_mtime_ns for p in tiny_sweep.glob(f"*/{sweep_jobs.COMPLETE_MARKER}")}
    assert cli_main(["sweep", str(SMOKE), "--tiny", "--launch", "local", "--output-root", str(tiny_sweep)]) == 0
    out = capsys.readouterr().out
    assert "0 run, 4 skipped (finished), 4 in all" in out and out.count("finished already, skipped") == 4
    # the result per arm, what to expect of it, and the command that writes the report
    assert "Rouge-L on the eval split, mean ± std over seeds:" in out
    assert re.search(r"\n  no_restart: \d+\.\d\d ± \d+\.\d\d \(2 runs\)\n", out), out
    assert re.search(r"\n  restart: \d+\.\d\d ± \d+\.\d\d \(2 runs\), [+-]\d+\.\d\d vs no_restart\n", out), out
    assert "what to expect: a tiny P3 run" in out
    assert f"tables and curves: hyperrestart report {tiny_sweep} --out {tiny_sweep / 'report'}" in out
    assert {p: p.stat().st_mtime_ns for p in markers} == markers
    assert cli_main(["sweep", str(SMOKE), "--tiny", "--list", "--output-root", str(tiny_sweep)]) == 0
    assert capsys.readouterr().out.count("\tfinished\t") == 4


@pytest.mark.slow  # uses tiny_sweep: four tiny P3 training runs (2-10 minutes on 2 busy CPU cores)
def test_changed_settings_do_not_mix_into_finished_runs(tiny_sweep, capsys):
    assert cli_main(["sweep", str(SMOKE), "--tiny", "--set", "max_steps=15", "--launch", "local",
                     "--output-root", str(tiny_sweep)]) == 1
    assert "holds a finished run with other settings" in capsys.readouterr().err


@pytest.mark.slow  # uses tiny_sweep: four tiny P3 training runs (2-10 minutes on 2 busy CPU cores)
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


@pytest.mark.slow  # uses tiny_sweep: four tiny P3 training runs (~90 s on 2 CPU cores)
def test_submitit_debug_executor_reruns_only_the_unfinished_run(tiny_sweep, capsys):
    victim = tiny_sweep / "restart_seed-2"
    (victim / sweep_jobs.COMPLETE_MARKER).unlink()
    assert cli_main(["sweep", str(SMOKE), "--tiny", "--launch", "slurm", "--submitit-cluster", "debug", "--wait",
                     "--output-root", str(tiny_sweep), "--partition", "gpu", "--time", "10"]) == 0
    out = capsys.readouterr().out
    assert "1 submitted, 3 skipped (finished)" in out and "restart_seed-2\tjob " in out
    assert json.loads((victim / sweep_jobs.COMPLETE_MARKER).read_text())["name"] == "restart_seed-2"


@pytest.mark.slow  # uses tiny_sweep: four tiny P3 training runs (~90 s on 2 CPU cores)
def test_failed_run_gets_no_marker_and_a_clear_error(tiny_sweep, tmp_path, capsys):
    spec = write_spec(tmp_path, f"runner: p3\nconfig: {BASE}\ngrid: {{seed: [1]}}\n")
    out = tmp_path / "o"
    # `hyperrestart p3 --python /bin/false`: the runner exits 1 at once
    assert cli_main(["sweep", str(spec), "--tiny", "--runner-args", "--python /bin/false", "--task-id", "0",
                     "--output-root", str(out)]) == 1
    err = capsys.readouterr().err
    assert "run 0 (seed-1) failed with exit code 1" in err and "sweep.log" in err
    assert not (out / "seed-1" / sweep_jobs.COMPLETE_MARKER).exists()
    assert "--python /bin/false" in (out / "seed-1" / sweep_jobs.RUN_LOG).read_text()


# --- --launch local --jobs N ---------------------------------------------------------------------------------------
def fake_local_jobs(monkeypatch, count, fail=()):
    """`count` jobs whose execute records when it ran; the indexes in `fail` raise as a failing run does."""
    import threading
    import time as time_module
    from hyperrestart.sweep import launch as sweep_launch
    state = {"running": 0, "most": 0, "started": []}
    lock = threading.Lock()

    def execute(job):
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
            state["started"].append(job)
        time_module.sleep(0.05)
        with lock:
            state["running"] -= 1
        if job in fail:
            raise HyperrestartError(f"run {job} failed")
        return "done"

    monkeypatch.setattr(sweep_launch, "check_jobs", lambda jobs: None)
    monkeypatch.setattr(sweep_launch.sweep_jobs, "execute", execute)
    return sweep_launch, list(range(count)), state


@pytest.mark.parametrize("parallel", [1, 2, 3])
def test_local_jobs_run_n_at_a_time(monkeypatch, parallel):
    sweep_launch, jobs, state = fake_local_jobs(monkeypatch, 6)
    assert sweep_launch.launch_local(jobs, parallel=parallel) == {"done": 6, "skipped": 0, "failed": 0}
    assert state["most"] == parallel and sorted(state["started"]) == jobs


def test_a_failed_local_job_stops_new_ones_unless_keep_going(monkeypatch, capsys):
    sweep_launch, jobs, state = fake_local_jobs(monkeypatch, 6, fail={0})
    with pytest.raises(HyperrestartError, match=r"^run 0 failed$"):
        sweep_launch.launch_local(jobs, parallel=2)
    assert len(state["started"]) < 6  # the runs not started when run 0 failed never start
    sweep_launch, jobs, state = fake_local_jobs(monkeypatch, 6, fail={0, 3})
    with pytest.raises(HyperrestartError, match="2 of 6 runs failed"):
        sweep_launch.launch_local(jobs, keep_going=True, parallel=2)
    assert sorted(state["started"]) == jobs
    assert capsys.readouterr().err.count("failed") == 2


def test_jobs_below_one_is_refused(monkeypatch):
    sweep_launch, jobs, state = fake_local_jobs(monkeypatch, 2)
    with pytest.raises(HyperrestartError, match="--jobs 0"):
        sweep_launch.launch_local(jobs, parallel=0)
    assert state["started"] == []
