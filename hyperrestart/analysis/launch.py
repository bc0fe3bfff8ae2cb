"""Run an analysis job in the run's upstream environment (overlay/common/hyperrestart_analyse.py in its tree), with
a progress bar read from the worker's progress files; torchrun spreads a landscape over --nproc processes."""
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import HyperrestartError
from ..core.paths import PROJECT_ROOT
from ..upstream import registry

ENTRY = "hyperrestart_analyse.py"
QUIET_ENV = {"WANDB_DISABLED": "true", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def job_environment(run, tree):
    """The upstream's environment for the run: its data folder, and for a --tiny run (it has hf-home/) the same
    offline Hugging Face caches and one thread per process."""
    env = registry.process_env(run.upstream, tree)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(PROJECT_ROOT)) if p)
    env.update(QUIET_ENV)
    if run.config.get("data_dir"):
        env["HYPERRESTART_DATA_DIR"] = str(run.config["data_dir"])
    if (run.dir / "hf-home").is_dir():
        env.update(OFFLINE_ENV)
        env["HF_HOME"] = str(run.dir / "hf-home")
        env["HF_DATASETS_CACHE"] = str(run.dir / "hf-home" / "datasets")
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def write_job(run, checkpoints, task, spaces, out: Path, options: dict) -> Path:
    """The job file (and the upstream config it trains from: the run's, writing into a scratch folder)."""
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "job-config.json"
    config = dict(run.config, output_dir=str(out / "scratch"))  # the P3 runner's args: never trained from here
    config_file.write_text(json.dumps(config, indent=1), encoding="utf-8")
    job = dict(options, upstream=run.kind, task=task, spaces=list(spaces), out=str(out),
               cache=str(out / "cache"), config_file=str(config_file), run_id=str(run.dir.resolve()),
               checkpoints=[c.as_job() for c in checkpoints])
    path = out / f"job-{task}.json"
    path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return path


def execute(run, job_file: Path, nproc=1, dest=None, python=None, label="analysing"):
    """Run the job; raise HyperrestartError with the log's tail when it fails."""
    from ..upstream.envs import python_for
    tree = registry.tree_dir(run.upstream, dest)
    workdir = tree / run.upstream.workdir
    if not (workdir / ENTRY).is_file():
        raise HyperrestartError(f"{workdir / ENTRY} is missing: the {run.upstream.name} tree predates "
                                f"`analyse`; run `python bootstrap.py` to refresh it")
    python = python or python_for(run.upstream.name)
    cmd = [str(python), ENTRY, str(job_file)]
    if nproc and nproc > 1:
        cmd = [str(python), "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", ENTRY,
               str(job_file)]
    out = job_file.parent
    for stale in out.glob("progress-rank*.json"):
        stale.unlink()
    log_path = out / "analyse.log"
    with open(log_path, "w", encoding="utf-8") as log, _terminated_as_interrupt():
        process = subprocess.Popen(cmd, cwd=workdir, env=job_environment(run, tree), stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            _watch(process, out / "progress-rank0.json", label)
        except BaseException:  # Ctrl-C or SIGTERM: stop the job too (finished chunks stay cached)
            process.terminate()
            process.wait()
            raise
    if process.returncode:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        raise HyperrestartError(f"the analysis in {run.upstream.name}'s environment failed (exit "
                                f"{process.returncode}); the end of {log_path}:\n" + "\n".join(tail))


@contextmanager
def _terminated_as_interrupt():
    """SIGTERM raises KeyboardInterrupt inside the block (so the job's processes are stopped with us)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt()
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _watch(process, progress_file: Path, label):
    from tqdm import tqdm
    bar = tqdm(total=None, desc=label, unit="pt", leave=False, file=sys.stderr, disable=None)
    try:
        while process.poll() is None:
            time.sleep(0.3)
            try:
                state = json.loads(progress_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            bar.total = state["total"]
            bar.n = state["done"]
            bar.set_postfix_str(state.get("label", ""), refresh=False)
            bar.refresh()
    finally:
        bar.close()
