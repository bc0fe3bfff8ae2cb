"""Running one sweep run: its job (command, fingerprint), the run lock, the completion marker, and relaunches."""
import dataclasses
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json
from hyperrestart.core.limits import check_name_length
from hyperrestart.core.locks import RefusingLock
from hyperrestart.core.progress import Heartbeat
from hyperrestart.core.paths import PROJECT_ROOT
from hyperrestart.sweep.runners import RUNNERS, expand_env
from hyperrestart.sweep.spec import Run

COMPLETE_MARKER = ".hyperrestart-complete.json"
RUN_INFO = "sweep-run.json"
RUN_LOG = "sweep.log"


@dataclasses.dataclass
class Job:
    """Everything needed to execute one run (picklable, for submitit)."""

    sweep_name: str
    runner: str
    run: Run
    run_dir: str
    extra_args: list
    report: dict
    nodes: int = 1  # > 1: one run across the SLURM job's nodes (execute_submitted), slurm.gpus processes each
    nproc_per_node: int = 1

    @property
    def fingerprint(self):
        return self.run.fingerprint(self.runner, self.extra_args)

    def overrides(self):
        """The run's overrides with $VARS expanded (raises naming a missing variable)."""
        return expand_env(self.run.overrides, f"run {self.run.index} ({self.run.name})")

    def command(self, continuation=()):
        return RUNNERS[self.runner].command(self.run.config, self.overrides(), self.run_dir,
                                            (*self.extra_args, *continuation))


def continuation_args(job):
    """How a relaunch continues an unfinished `run` job: `--resume` from its last checkpoint, `--overwrite` when it
    left files but no checkpoint (`hyperrestart run` refuses a folder holding a run unless told which); nothing for
    a fresh folder or a P3 run (its runner resumes from its own checkpoints)."""
    if job.runner != "run":
        return ()
    from hyperrestart.upstream.run_folder import run_entries
    from hyperrestart.upstream.run_folder import latest_checkpoint
    run_dir = Path(job.run_dir)
    if latest_checkpoint(run_dir):
        return ("--resume",)
    return ("--overwrite",) if run_entries(run_dir) else ()


def make_jobs(sweep, output_root, extra_args=()):
    """One job per run, in OUTPUT_ROOT/<run name>; a run folder that resolves outside the root is an error."""
    root = Path(output_root).resolve()
    jobs = []
    for run in sweep.runs:
        check_name_length(run.name, root, f"run {run.index}'s name")
        run_dir = (root / run.name).resolve()
        if run_dir.parent != root:
            raise HyperrestartError(f"run {run.index} ({run.name}): its folder {root / run.name} resolves to "
                                    f"{run_dir}, outside the output root {root}; rename the run or remove the link")
        jobs.append(Job(sweep.name, sweep.runner, run, str(run_dir), list(sweep.args) + list(extra_args),
                        sweep.report))
    return jobs


def completion(run_dir):
    """The completion marker's content, or None when the run has not finished."""
    marker = Path(run_dir) / COMPLETE_MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_finished(job):
    """True when the run finished with this job's fingerprint; an error when it finished with another."""
    done = completion(job.run_dir)
    if done is None:
        return False
    if done.get("fingerprint") != job.fingerprint:
        raise HyperrestartError(
            f"{job.run_dir} holds a finished run with other settings (fingerprint {done.get('fingerprint')} != "
            f"{job.fingerprint}: the config or overrides changed); use another --output-root or delete that directory")
    return True




class RunLock(RefusingLock):
    """An exclusive flock on RUN_DIR/.sweep.lock: one process runs a sweep run at a time; a second is refused."""

    error = HyperrestartError

    def __init__(self, run_dir):
        super().__init__(Path(run_dir) / ".sweep.lock")

    def busy_message(self):
        return f"{self.path.parent} is being run by another process right now; wait for it"


def execute(job, quiet=False, node_args=()):
    """Run one job unless finished; returns 'skipped', 'done'; raises HyperrestartError when the runner fails.
    node_args: node 0's `hyperrestart run` options of a run across nodes (execute_submitted)."""
    if is_finished(job):
        if not quiet:
            print(f"[{job.run.index}] {job.run.name}: finished already, skipped", flush=True)
        return "skipped"
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        command = job.command((*continuation_args(job), *node_args))
        RUNNERS[job.runner].prepare(job.run.config, job.overrides(), run_dir)
        info = {"sweep": job.sweep_name, "runner": job.runner, "index": job.run.index, "name": job.run.name,
                "arm": job.run.arm, "seed": job.run.seed, "labels": job.run.labels, "config": job.run.config,
                "overrides": [[k, v] for k, v in job.run.overrides], "report": job.report,
                "fingerprint": job.fingerprint, "command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(run_dir / RUN_INFO, info)
        if not quiet:
            print(f"[{job.run.index}] {job.run.name}: {shlex.join(command[1:])}", flush=True)
        started = time.monotonic()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(PROJECT_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        with open(run_dir / RUN_LOG, "ab") as log, Heartbeat(_progress_line(job, quiet)):
            log.write(f"$ {shlex.join(command)}\n".encode())
            log.flush()
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        elapsed = time.monotonic() - started
        if code != 0:
            tail = (run_dir / RUN_LOG).read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            raise HyperrestartError(f"run {job.run.index} ({job.run.name}) failed with exit code {code} after "
                                    f"{elapsed:.0f}s; log: {run_dir / RUN_LOG}\n  " + "\n  ".join(tail))
        atomic_write_json(run_dir / COMPLETE_MARKER, dict(info, finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                           seconds=round(elapsed, 1)))
    if not quiet:
        print(f"[{job.run.index}] {job.run.name}: done in {elapsed:.1f}s; {result_text(job)}", flush=True)
    return "done"


def _progress_line(job, quiet):
    """The heartbeat of a running job: its log's last line (the runner's latest step or evaluation)."""
    def say(elapsed):
        if quiet:
            return
        try:
            with open(Path(job.run_dir) / RUN_LOG, "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
                tail = handle.read().decode("utf-8", "replace").replace("\r", "\n").strip().splitlines()
        except OSError:
            tail = []
        last = tail[-1].strip() if tail else ""
        last = "starting" if not last or last.startswith("$ ") else last
        print(f"  [{job.run.index}] {elapsed:.0f}s: {last[:110]}", flush=True)
    return say


def result_text(job):
    """A finished run's headline result in a few words: the P3 runner's last Rouge-L, or a `run`'s average metric."""
    run_dir = Path(job.run_dir)
    if job.runner == "p3":
        from hyperrestart.p3.metrics import summarize
        try:
            final = summarize(run_dir)["final"]
        except (HyperrestartError, KeyError, ValueError) as exc:
            return f"no Rouge-L ({exc})"
        return f"Rouge-L {final['rougeL_micro']:.2f} at step {int(final['step'])}"
    from hyperrestart.upstream.training import headline_metrics
    found = headline_metrics(run_dir)
    return "; ".join(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                     for name, metrics in found.items()) or "no metrics file"


def node_layout(job, job_environment=None):
    """This node's place in the job's run across nodes (upstream.nodes.Layout), from submitit's JobEnvironment."""
    from hyperrestart.upstream.nodes import layout
    from hyperrestart.upstream.resolve import RunRequest
    if job_environment is None:
        import submitit
        job_environment = submitit.JobEnvironment()
    request = RunRequest(config=job.run.config, nnodes=job.nodes, nproc_per_node=job.nproc_per_node,
                         output_dir=job.run_dir)
    return layout(request, job_environment=job_environment)


def join(job, node_args):
    """A node other than 0 of a run across nodes: start this node's part of the run; the run folder, its lock, its
    sweep-run.json, sweep.log and completion marker are node 0's (its output goes to this task's submitit log)."""
    if is_finished(job):
        return "skipped"
    command = job.command((*continuation_args(job), *node_args))
    print(f"[{job.run.index}] {job.run.name}: {shlex.join(command[1:])}", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PROJECT_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    code = subprocess.run(command, env=env).returncode
    if code != 0:
        raise HyperrestartError(f"run {job.run.index} ({job.run.name}), node {node_args[-1]}: exited with {code}; "
                                f"see this task's submitit log and node 0's {Path(job.run_dir) / RUN_LOG}")
    return "joined"


def execute_submitted(job, job_environment=None):
    """The function submitit runs on each node of a job (must be importable). One node: execute the job. Across
    nodes (job.nodes > 1): every node starts `hyperrestart run` with the same endpoint (the job's first node, a port
    from the job id); node 0 executes the job (lock, run record, completion marker), the others join it."""
    if job.nodes <= 1:
        return execute(job)
    from hyperrestart.upstream.nodes import node_args
    layout = node_layout(job, job_environment)
    if layout.owner:
        return execute(job, node_args=node_args(layout))
    return join(job, node_args(layout))
