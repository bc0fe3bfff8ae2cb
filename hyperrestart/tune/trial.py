"""One trial, run by Ray in a worker: a normal P3 run folder OUTPUT_ROOT/<trial name> (the sweep's files:
sweep-config.json, sweep-run.json, sweep.log, the completion marker), its evaluations reported to Ray as they appear
in eval_log.csv, so a scheduler can stop it early.

Under PBT the run goes in segments of `perturbation_interval` steps (the runner's --stop_at_step): each segment ends
with an evaluation and a checkpoint, reported together. A trial that Ray restarts from a checkpoint (its own after a
pause, or a donor's after an exploit) copies it into its folder and resumes; an exploit resumes with
--resume_allowed_changes naming the mutated keys only, and is recorded in tune-trial.json (step, donor, old -> new
values). A trial that is stopped (ASHA, Ctrl-C) stops its runner's whole process tree."""
import csv
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from hyperrestart.core.files import atomic_write_json
from hyperrestart.core.paths import PROJECT_ROOT
from hyperrestart.sweep.jobs import COMPLETE_MARKER, RUN_INFO, RUN_LOG, RunLock
from hyperrestart.sweep.runners import RUNNERS

SEARCH_RECORD = "tune-search.json"       # in OUTPUT_ROOT: what was searched, how (report reads it)
TRIAL_RECORD = "tune-trial.json"        # the trial's searched values, initial values and exploits
STOPPED_MARKER = ".hyperrestart-stopped.json"  # written by `tune` for a trial its scheduler stopped early
CHECKPOINT_META = "tune-checkpoint.json"  # inside a Ray checkpoint: which trial saved it, at which step, its values
POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 15


@dataclasses.dataclass
class TrialPlan:
    """What every trial shares (picklable: it travels to Ray's workers)."""

    search: str
    output_root: str
    config: str               # the base JSON config
    fixed: list               # [(key, value)] with $VARS expanded
    extra_args: list          # `hyperrestart p3` arguments
    keys: list                # the searched keys
    metric: str
    max_steps: int
    segment: int              # PBT: steps per segment (the perturbation interval); 0: one segment
    mutate: list              # PBT: the keys an exploit may change
    nproc: int
    report: dict
    env: dict                 # environment of the runner (tiny data paths, threads)


def trial_index(name):
    """trial_00003 -> 3."""
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def run_trial(config, plan):
    """Ray's trainable: the trial's run, segment by segment, each evaluation reported as it appears."""
    from ray import tune

    name = tune.get_context().get_trial_name()
    run_dir = Path(plan.output_root) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        record = read_record(run_dir) or {"trial": name, "search": plan.search, "initial": dict(config),
                                          "exploits": []}
        start, allowed = 0, None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            start, donor = restore(checkpoint, run_dir, name, config, plan, record)
            allowed = ",".join(plan.mutate) if donor else "none"
        record["config"] = dict(config)
        atomic_write_json(run_dir / TRIAL_RECORD, record)
        info = write_run_files(run_dir, name, config, plan)
        reported = start if checkpoint is not None else -1  # a fresh trial reports its step-0 evaluation too
        for end in segment_ends(start, plan):
            reported = run_segment(run_dir, plan, info, end, allowed, reported, config)
            allowed = "none"  # later segments continue the trial's own checkpoint: nothing may change


def segment_ends(start, plan):
    """The steps at which the segments after `start` end: every `segment` steps, and max_steps."""
    if not plan.segment:
        return [plan.max_steps]
    return [s for s in range(plan.segment, plan.max_steps, plan.segment) if s > start] + [plan.max_steps]


def write_run_files(run_dir, name, config, plan):
    """sweep-config.json (the merged runner config) and sweep-run.json (what report reads: arm, labels)."""
    overrides = list(plan.fixed) + sorted(config.items())
    RUNNERS["p3"].prepare(plan.config, overrides, run_dir)
    command = RUNNERS["p3"].command(plan.config, overrides, run_dir, plan.extra_args)
    if plan.nproc > 1:
        command += ["--nproc-per-node", str(plan.nproc)]
    seed = dict(plan.fixed).get("seed")
    info = {"sweep": plan.search, "runner": "p3", "index": trial_index(name), "name": name, "arm": name,
            "seed": seed, "labels": {k: config[k] for k in plan.keys}, "config": plan.config,
            "overrides": [[k, v] for k, v in overrides], "report": plan.report, "tune": True,
            "command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(run_dir / RUN_INFO, info)
    return info


def read_record(run_dir):
    path = Path(run_dir) / TRIAL_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def own_checkpoints(run_dir):
    """{step: folder} of the runner's complete checkpoints in run_dir."""
    found = {}
    for path in Path(run_dir).glob("checkpoint-*"):
        step = path.name.split("-", 1)[1]
        if step.isdigit() and (path / "trainer_state.pt").exists():
            found[int(step)] = path
    return found


def restore(checkpoint, run_dir, name, config, plan, record):
    """Copy a Ray checkpoint (this trial's after a pause, a donor's after an exploit) into run_dir as its newest
    checkpoint; the trial's own checkpoints at or after that step are the runner's and are replaced. Returns (step,
    donor name or None); an exploit is appended to the record."""
    with checkpoint.as_directory() as folder:
        meta = json.loads((Path(folder) / CHECKPOINT_META).read_text(encoding="utf-8"))
        step = int(meta["step"])
        for own_step, path in own_checkpoints(run_dir).items():
            if own_step >= step:
                shutil.rmtree(path)
        shutil.copytree(Path(folder) / f"checkpoint-{step}", Path(run_dir) / f"checkpoint-{step}")
    if meta["trial"] == name:
        return step, None
    previous = record.get("config") or record.get("initial") or {}
    record["exploits"].append({
        "step": step, "donor": meta["trial"], "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "old": {k: previous.get(k) for k in plan.keys}, "donor_values": {k: meta["config"].get(k) for k in plan.keys},
        "new": {k: config.get(k) for k in plan.keys}})
    return step, meta["trial"]


def runner_command(command, end, max_steps, allowed):
    """The trial's `hyperrestart p3` command for a segment ending at `end`: runner flags after `--`."""
    flags = (["--stop_at_step", str(end)] if end < max_steps else []) + \
        (["--resume_allowed_changes", allowed] if allowed else [])
    if not flags:
        return list(command)
    return list(command) + ([] if "--" in command else ["--"]) + flags


def run_segment(run_dir, plan, info, end, allowed, reported, config):
    """Run the runner up to `end`, reporting each evaluation after step `reported` as it appears. The evaluation at
    `end` waits for the runner to exit: before max_steps it goes to Ray with the checkpoint; at max_steps the
    completion marker is written first (a scheduler stops a trial when it reports its last step). Returns the last
    step reported; raises RuntimeError (Ray marks the trial failed) when the runner fails."""
    from ray import tune

    env = dict(os.environ, **plan.env)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                              if p])
    full = runner_command(info["command"], end, plan.max_steps, allowed)
    with open(run_dir / RUN_LOG, "ab") as log:
        log.write(f"$ {' '.join(full)}\n".encode())
        log.flush()
        process = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while process.poll() is None:
            for row in new_evaluations(run_dir, reported):
                if row["step"] >= end:
                    break  # reported once the runner has saved and exited
                tune.report(metrics(row, plan))
                reported = row["step"]
            time.sleep(POLL_SECONDS)
        if process.returncode != 0:
            tail = (run_dir / RUN_LOG).read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
            raise RuntimeError(f"the P3 runner failed with exit code {process.returncode}; log: "
                               f"{run_dir / RUN_LOG}: " + " | ".join(tail))
        final = end == plan.max_steps
        if final:  # the runner reached max_steps and exited 0
            atomic_write_json(run_dir / COMPLETE_MARKER, dict(info, finished=time.strftime("%Y-%m-%dT%H:%M:%S")))
        rows = new_evaluations(run_dir, reported)
        for row in rows:
            if row is rows[-1] and not final:
                report_with_checkpoint(run_dir, row, plan, config)
            else:
                tune.report(metrics(row, plan))
            reported = row["step"]
        return reported
    finally:
        stop_tree(process)


def metrics(row, plan):
    return {"step": row["step"], plan.metric: row[plan.metric],
            **{k: v for k, v in row.items() if k.startswith("rougeL")}}


def report_with_checkpoint(run_dir, row, plan, config):
    """Report the segment's last evaluation with its checkpoint (copied with who saved it, where and with what
    values), so PBT can pause this trial or clone it."""
    from ray import tune

    step = row["step"]
    staging = run_dir / f".tune-checkpoint-{step}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(run_dir / f"checkpoint-{step}", staging / f"checkpoint-{step}")
        atomic_write_json(staging / CHECKPOINT_META, {"trial": run_dir.name, "step": step, "config": dict(config)})
        tune.report(metrics(row, plan), checkpoint=tune.Checkpoint.from_directory(str(staging)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def new_evaluations(run_dir, after):
    """Complete rows of eval_log.csv with step > after, as numbers."""
    path = Path(run_dir) / "eval_log.csv"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    text = text[:text.rfind("\n") + 1]  # a row being written is read next time
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            values = {k: float(v) for k, v in row.items()}
        except (TypeError, ValueError):
            continue
        values["step"] = int(values["step"])
        if values["step"] > after:
            rows.append(values)
    return rows


def stop_tree(process):
    """SIGTERM the runner's process group (the launcher and the runner; torchrun workers die with their agent),
    SIGKILL it after a grace period."""
    if process.poll() is not None:
        return
    for signum, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
