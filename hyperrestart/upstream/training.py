"""`hyperrestart run`: train an upstream on a resolved config in its env, show progress, and summarise the run."""
import math
import re
import subprocess
import sys
import time
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json
from hyperrestart.upstream import arguments, lr_trace, registry, run_folder
from hyperrestart.upstream.resolve import resolve
from hyperrestart.upstream.tiny import OFFLINE_ENV


def run_env(upstream, tree, config, output_dir, tiny):
    env = registry.process_env(upstream, tree)
    if config.get("data_dir"):
        env["HYPERRESTART_DATA_DIR"] = str(config["data_dir"])
    if tiny:
        from hyperrestart.p3.synthetic import TINY_THREADS
        env.update(OFFLINE_ENV)
        env.setdefault("OMP_NUM_THREADS", TINY_THREADS)  # a tiny model gains nothing from threads that share 2 cores
        env["HF_HOME"] = str(output_dir / "hf-home")
        env["HF_DATASETS_CACHE"] = str(output_dir / "hf-home" / "datasets")
    return env


class Progress:
    """The default view of a training run: the step count (read from the Trainer's progress bar, whose total is
    max_steps) and the last logged loss; a tqdm bar on a terminal, otherwise a line every tenth of the run.
    Other progress bars (datasets' "Map: ...", evaluation) have a description or another total."""

    BAR = re.compile(r"^\s*\d+%\|[^|]*\| (\d+)/(\d+) \[")  # a bar without a description ("Map: ..." has one)
    LOSS = re.compile(r"'loss': ([0-9.eE+-]+|nan|inf)")

    def __init__(self, max_steps, stream=None):
        stream = stream or sys.stdout
        self.total = max_steps if isinstance(max_steps, int) and max_steps > 0 else None
        self.stream, self.step, self.loss, self.printed = stream, 0, None, 0
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit="step", desc="training", file=stream, dynamic_ncols=True)

    def feed(self, line):
        loss = self.LOSS.search(line)
        if loss:
            self.loss = float(loss.group(1))
        bar = self.BAR.match(line)
        if bar:
            done, total = int(bar.group(1)), int(bar.group(2))
            if self.total is None:
                self.total = total  # epoch-based run: the first bar is the training bar
                if self.bar is not None:
                    self.bar.reset(total=total)
            if total == self.total and done > self.step:
                self._advance(done)

    def _advance(self, done):
        if self.bar is not None:
            self.bar.update(done - self.step)
            if self.loss is not None:
                self.bar.set_postfix(loss=f"{self.loss:.4g}", refresh=False)
        elif done == self.total or done >= self.printed + math.ceil(self.total / 10):
            loss = f"  loss {self.loss:.4g}" if self.loss is not None else ""
            print(f"step {done}/{self.total}{loss}", file=self.stream, flush=True)
            self.printed = done
        self.step = done

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train(cmd, cwd, env, log_path: Path, mode, max_steps, header=None):
    """Run the trainer, its output to log_path; streamed (verbose), summarised (default) or silent (quiet).
    Returns (exit code, the log text of this run)."""
    progress = Progress(max_steps) if mode == "default" else None
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "a") as log:
        if header:
            log.write(header + "\n")
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        try:
            for line in process.stdout:
                log.write(line)
                if mode == "verbose":
                    sys.stdout.write(line)
                elif progress:
                    progress.feed(line)
        finally:
            returncode = process.wait()
            if progress:
                progress.close()
    with open(log_path, errors="replace") as handle:
        handle.seek(start)
        return returncode, handle.read()


def summarize(output_dir: Path, config, log_text=""):
    """Write lr_trace.csv and print where the trace, metrics and checkpoints are, and the restart steps."""
    found = run_folder.latest_trainer_state(output_dir)
    trace = lr_trace.lr_trace_from_state(found[1], config) if found else []
    source = str(found[0]) if found else None
    if len(trace) < 2 and log_text:
        trace, source = lr_trace.lr_trace_from_log(log_text, config), "train.log"
    lines = [f"output dir:   {output_dir}"]
    if len(trace) >= 2:
        lr_trace.write_lr_trace(trace, output_dir / "lr_trace.csv")
        lines.append(f"lr trace:     {output_dir / 'lr_trace.csv'} (lr applied by steps {trace[0][0]}-{trace[-1][0]}, "
                     f"from {source})")
        restarts = lr_trace.restart_steps(trace)
        lines.append("restarts at:  " + (", ".join(map(str, restarts)) if restarts else "none")
                     + " (steps that start a new lr cycle)")
    else:
        lines.append("lr trace:     none found (no trainer_state.json with learning_rate entries)")
    metrics = sorted(p for p in output_dir.glob("*.json") if "results" in p.name or "metrics" in p.name)
    lines.append("metrics:      " + (", ".join(p.name for p in metrics) if metrics else "none"))
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])
                         if p.name.split("-")[-1].isdigit() else 0)
    lines.append("checkpoints:  " + (", ".join(p.name for p in checkpoints) if checkpoints else "none"))
    print("\n".join(lines))
    return trace


def run(request) -> int:
    """Train: resolve and check the config before anything slow, prepare the run folder, run the upstream's script
    in its env with progress, then summarise (lr trace, restarts, metrics, checkpoints). request: resolve.RunRequest."""
    from hyperrestart.upstream.envs import python_for
    if request.resume and not request.output_dir:
        raise HyperrestartError("--resume needs --output-dir: the folder of the run to continue")
    upstream = registry.upstream_for_config(request.config, request.upstream)
    config = registry.load_config(request.config)  # a missing or broken file is named before anything slow
    tree = registry.tree_dir(upstream, request.dest)
    python = Path(request.python) if request.python else python_for(upstream.name)
    spec = arguments.argument_spec(upstream, tree, python)
    resolved = resolve(request, spec, upstream, config)
    arguments.check_config(resolved.config, spec, upstream, resolved.origin)
    checkpoint = run_folder.prepare_output_dir(request, resolved)
    config_file, header = write_run_config(resolved, checkpoint)
    cmd = registry.command(upstream, python, config_file, request.nproc)
    output_dir = resolved.output_dir
    env = run_env(upstream, tree, resolved.config, output_dir, request.tiny)
    log_path = output_dir / "train.log"
    mode = "verbose" if request.verbose else "quiet" if request.quiet else "default"
    print(f"running {upstream.name} in {tree / upstream.workdir}" + (f" from {checkpoint.name}" if checkpoint else "")
          + f":\n  {' '.join(cmd)}\nlog:          {log_path}" + ("" if request.verbose else " (--verbose streams it)"),
          flush=True)
    started = time.monotonic()
    returncode, log_text = train(cmd, tree / upstream.workdir, env, log_path, mode, resolved.config.get("max_steps"),
                                 header)
    print(f"finished in {time.monotonic() - started:.0f}s with exit code {returncode}")
    summarize(output_dir, resolved.config, log_text)
    if returncode != 0:
        tail = "" if request.verbose else "\n  ".join([":"] + log_text.rstrip().splitlines()[-15:])
        raise HyperrestartError(f"{upstream.script} exited with {returncode}; see {log_path}{tail}")
    return 0


def write_run_config(resolved, checkpoint):
    """Save the resolved config as RUN_CONFIG (a new run) or RESUME_CONFIG (pointed at the checkpoint a --resume
    continues from). Returns (the file the trainer reads, the header line for train.log)."""
    if checkpoint is None:
        path = resolved.output_dir / run_folder.RUN_CONFIG
        atomic_write_json(path, resolved.config, indent=4)
        return path, None
    path = resolved.output_dir / run_folder.RESUME_CONFIG
    atomic_write_json(path, run_folder.resume_config(resolved.config, checkpoint), indent=4)
    return path, f"=== hyperrestart run --resume: continuing from {checkpoint.name} ==="
