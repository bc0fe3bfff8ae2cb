"""`hyperrestart run`: train an upstream on a resolved config in its env, show progress, and summarise the run."""
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json
from hyperrestart.upstream import arguments, lr_trace, nodes, processes, registry, repeat, run_folder
from hyperrestart.upstream.processes import stop_with_launcher
from hyperrestart.upstream.preflight import preflight, warn_accumulation
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

    def __init__(self, max_steps, stream=None, every=None):
        from hyperrestart.core.progress import Heartbeat
        stream = stream or sys.stdout
        self.total = max_steps if isinstance(max_steps, int) and max_steps > 0 else None
        self.stream, self.step, self.loss, self.printed = stream, 0, None, 0
        self.phase = "starting: importing the libraries, loading the model"
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit="step", desc="starting", file=stream, dynamic_ncols=True)
        self.heartbeat = Heartbeat(self.beat, every).__enter__()  # never more than a few seconds without a word

    def feed(self, line):
        self._phase(line)
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
            self.heartbeat.touch()
        self.step = done
        self.phase = "training"
        if self.total and done >= self.total:
            self.phase = "finishing: final evaluation, test and saving"

    def _phase(self, line):
        """What the trainer is doing, from its output: loading, preparing the data, training, evaluating."""
        if self.step == 0 and ("Generating " in line or line.lstrip().startswith("Map")):
            self.phase = "starting: preparing the data"
        elif self.step and self.total and self.step < self.total and self.BAR.match(line):
            self.phase = "evaluating" if int(self.BAR.match(line).group(2)) != self.total else "training"

    def beat(self, elapsed):
        """The heartbeat: the phase and the time so far (the bar's description on a terminal, else a line)."""
        if self.bar is not None:
            self.bar.set_description_str(self.phase.split(":")[0], refresh=True)
        else:
            print(f"  {self.phase} ({elapsed:.0f}s)", file=self.stream, flush=True)

    def close(self):
        self.heartbeat.__exit__(None, None, None)
        if self.bar is not None:
            self.bar.close()


def train(cmd, cwd, env, log_path: Path, mode, max_steps, header=None):
    """Run the trainer, its output to log_path; streamed (verbose), summarised (default) or silent (quiet).
    A stop signal to `run` stops the trainer's whole process tree (processes.stop_with_launcher).
    Returns (exit code, the log text of this run)."""
    progress = Progress(max_steps) if mode == "default" else None
    start = log_path.stat().st_size if log_path.exists() else 0
    try:
        with open(log_path, "a", encoding="utf-8") as log:
            if header:
                log.write(header + "\n")
            process = processes.popen_tree(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True, bufsize=1, encoding="utf-8", errors="replace")
            with stop_with_launcher(process):
                for line in process.stdout:
                    log.write(line)
                    if mode == "verbose":
                        sys.stdout.write(line)
                    elif progress:
                        progress.feed(line)
                returncode = process.wait()
    except processes.Stopped as stop:
        raise HyperrestartError(f"stopped by {stop}: the trainer and every process it started were stopped; "
                                f"continue the run from its last checkpoint with --resume (log: {log_path})") from None
    finally:
        if progress:
            progress.close()
    with open(log_path, encoding="utf-8", errors="replace") as handle:
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
    """Train: resolve and check the config before anything slow (preflight: nothing is written when it refuses),
    claim the run folder (ownership marker, lock held while the run writes), run the upstream's script in its env
    with progress, then summarise (lr trace, restarts, metrics, checkpoints). request: resolve.RunRequest.
    Across nodes (--nnodes), node rank 0's launcher does all of that; the others only start their processes."""
    from hyperrestart.upstream.envs import python_for
    recorded = None
    layout = nodes.layout(request)  # bad node options are refused first
    if request.repeat:
        request, recorded = repeat.repeat_request(request)
    if request.resume and not request.output_dir:
        raise HyperrestartError("--resume needs --output-dir: the folder of the run to continue")
    upstream = registry.upstream_for_config(request.config, request.upstream)
    config = registry.load_config(request.config)  # a missing or broken file is named before anything slow
    tree = registry.tree_dir(upstream, request.dest)
    python = Path(request.python) if request.python else python_for(upstream.name)
    spec = arguments.argument_spec(upstream, tree, python)
    resolved = resolve(request, spec, upstream, config)
    preflight(resolved, spec, request, layout)
    if layout is not None and not layout.owner:
        return _train_on_node(request, resolved, layout, tree, python)
    with run_folder.claim(request, resolved, layout) as checkpoint:
        return _train_in_folder(request, resolved, checkpoint, tree, python, recorded, layout)


def _launch(upstream, python, config_file, request, resolved, checkpoint, layout):
    """The trainer's command: torchrun across nodes (its rendezvous id derived from the run folder and the config
    the trainer runs), standalone torchrun for --nproc > 1 (or --nnodes 1 without an endpoint), else the script."""
    if layout is None or layout.endpoint is None:  # one node: as --nproc K
        return registry.command(upstream, python, config_file, layout.nproc_per_node if layout else request.nproc)
    run_id = nodes.rendezvous_id(resolved.output_dir, run_folder.trainer_config(resolved.config, checkpoint),
                                 layout.nnodes, layout.nproc_per_node)
    return registry.command(upstream, python, config_file, launcher=nodes.torchrun_args(layout, run_id))


def _train_on_node(request, resolved, layout, tree, python) -> int:
    """A launcher of node rank > 0: start this node's processes, writing nothing into the run folder (the trainer's
    global rank 0 and node rank 0's launcher write it). Its config, log and caches go to a folder of its own."""
    import tempfile
    upstream, out = resolved.upstream, resolved.output_dir
    checkpoint = None
    if request.resume:
        run_folder.check_claim(request, resolved)
        checkpoint = run_folder.resume_checkpoint(out, resolved, run_folder.run_entries(out), layout.nproc_per_node,
                                                  layout.nnodes)
    own = Path(tempfile.mkdtemp(prefix=f"hyperrestart-node{layout.node_rank}-"))
    config_file = own / run_folder.RUN_CONFIG
    atomic_write_json(config_file, run_folder.trainer_config(resolved.config, checkpoint), indent=4)
    cmd = _launch(upstream, python, config_file, request, resolved, checkpoint, layout)
    env = dict(run_env(upstream, tree, resolved.config, own, request.tiny), **nodes.trainer_env(layout))
    log_path = own / "train.log"
    mode = "verbose" if request.verbose else "quiet" if request.quiet else "default"
    print(f"node {layout.node_rank} of {layout.nnodes}: joining the run in {out} at {layout.endpoint_text} "
          f"(node 0's launcher writes the run folder; endpoint and node rank from {layout.source}):\n  "
          f"{' '.join(cmd)}\nlog:          {log_path}", flush=True)
    started = time.monotonic()
    returncode, log_text = train(cmd, tree / upstream.workdir, env, log_path, mode, resolved.config.get("max_steps"))
    print(f"node {layout.node_rank} finished in {time.monotonic() - started:.0f}s with exit code {returncode}; "
          f"the run's results are in {out}")
    if returncode != 0:
        raise _failure(upstream, returncode, log_path, log_text, request, layout)
    return 0


def _train_in_folder(request, resolved, checkpoint, tree, python, recorded=None, layout=None) -> int:
    """recorded: the record of the run a --repeat repeats (upstream/repeat.py), else None. layout: the run's
    nodes.Layout when it spans nodes (this launcher is node rank 0), else None."""
    upstream = resolved.upstream
    config_file, header = write_run_config(resolved, checkpoint)
    cmd = _launch(upstream, python, config_file, request, resolved, checkpoint, layout)
    output_dir = resolved.output_dir
    env = run_env(upstream, tree, resolved.config, output_dir, request.tiny or (recorded or {}).get("tiny_env"))
    if recorded:
        repeat.apply_env(env, recorded["env"])
    if layout is not None:
        env.update(nodes.trainer_env(layout))
    if checkpoint is None:
        made = repeat.record(output_dir, request, resolved, env, python, tree, request.tiny or recorded is not None
                             and recorded.get("tiny_env"))
        changed = repeat.differences(recorded, made) if recorded else []
        if changed:
            print("warning: repeating with another setup, so the numbers may differ: " + "; ".join(changed),
                  flush=True)
    log_path = output_dir / "train.log"
    mode = "verbose" if request.verbose else "quiet" if request.quiet else "default"
    origin = ""
    if checkpoint is not None:
        origin = (" (training finished: evaluating the final model only)"
                  if run_folder.evaluates_only(checkpoint, resolved.config) else f" from {checkpoint.name}")
    if layout is not None and layout.endpoint is not None:
        origin += (f", node 0 of {layout.nnodes} (owns the run folder; the others join at {layout.endpoint_text}, "
                   f"within {layout.timeout}s; endpoint and node rank from {layout.source})")
    print(f"running {upstream.name} in {tree / upstream.workdir}{origin}"
          + f":\n  {' '.join(cmd)}\nlog:          {log_path}" + ("" if request.verbose else " (--verbose streams it)"),
          flush=True)
    warn_accumulation(resolved.config)
    warning = alignment_warning(resolved.config)
    if warning:
        print(warning, flush=True)
    started = time.monotonic()
    returncode, log_text = train(cmd, tree / upstream.workdir, env, log_path, mode, resolved.config.get("max_steps"),
                                 header)
    print(f"finished in {time.monotonic() - started:.0f}s with exit code {returncode}")
    summarize(output_dir, resolved.config, log_text)
    if returncode == 0:
        print(result_text(output_dir, request.tiny or (recorded or {}).get("tiny_env")))
        if recorded:
            print(repeat.check_repeat(Path(request.repeat), output_dir))
    if returncode != 0:
        raise _failure(upstream, returncode, log_path, log_text, request, layout)
    return 0


MATCHING = ("start every node's `hyperrestart run` with the same CONFIG, --set values, --output-dir (one folder every "
            "node sees), --nnodes, --nproc-per-node and --resume, node ranks 0..{last} once each (the rendezvous id is "
            "derived from them)")


def _failure(upstream, returncode, log_path, log_text, request, layout=None):
    """The error for a failed trainer: the other nodes never joined (rendezvous timeout), the launcher hosting the
    rendezvous stopped before they did (connection lost), or the failing process's last lines."""
    if layout is not None and layout.endpoint is not None:
        matching = MATCHING.format(last=layout.nnodes - 1)
        if "RendezvousTimeoutError" in log_text:
            return HyperrestartError(f"the other node(s) did not join the run at {layout.endpoint_text} within "
                                     f"{layout.timeout}s (--rdzv-timeout); {matching}; log: {log_path}")
        if "RendezvousConnectionError" in log_text:
            return HyperrestartError(f"lost the rendezvous at {layout.endpoint_text}: the launcher hosting it (the "
                                     f"first to start there) stopped before the other node(s) joined this run; "
                                     f"{matching}; log: {log_path}")
    excerpt = "" if request.verbose else failure_excerpt(log_text)
    return HyperrestartError(f"{upstream.script} exited with {returncode}; see {log_path}" + (
        "\n  the failing process's last lines:\n    " + "\n    ".join(excerpt) if excerpt else ""))


LAUNCHER_ERRORS = ("ChildFailedError", "torch.distributed.elastic", "torch/distributed/run.py")
RANK_PREFIX = re.compile(r"^\[(?:default)?rank\d+\]:\s?")


def failure_excerpt(log_text, limit=15):
    """The last lines of the failing process's last traceback in the log (a worker's, not the launcher's
    "exitcode: 1 ... To enable traceback" report), or the log's last lines when there is no traceback."""
    lines = [RANK_PREFIX.sub("", line) for line in log_text.rstrip().splitlines()]
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith("Traceback (most recent call last)")]
    for position in reversed(range(len(starts))):
        start = starts[position]
        end = starts[position + 1] if position + 1 < len(starts) else len(lines)
        block = lines[start:end]
        cut = next((i for i, line in enumerate(block[1:], 1) if line and not line[0].isspace()
                    and not line.startswith("During handling")), len(block) - 1)
        block = block[:cut + 1]
        if not any(marker in line for line in block for marker in LAUNCHER_ERRORS):
            return block[-limit:]
    return lines[-limit:]


def write_run_config(resolved, checkpoint):
    """Save the resolved config as RUN_CONFIG (a new run) or RESUME_CONFIG (pointed at the checkpoint a --resume
    continues from). Returns (the file the trainer reads, the header line for train.log)."""
    if checkpoint is None:
        path = resolved.output_dir / run_folder.RUN_CONFIG
        atomic_write_json(path, resolved.config, indent=4)
        return path, None
    path = resolved.output_dir / run_folder.RESUME_CONFIG
    atomic_write_json(path, run_folder.resume_config(resolved.config, checkpoint), indent=4)
    if run_folder.evaluates_only(checkpoint, resolved.config):
        return path, "=== hyperrestart run --resume: training finished; evaluating the final model only ==="
    return path, f"=== hyperrestart run --resume: continuing from {checkpoint.name} ==="


def alignment_warning(config):
    """A warning line when a restart run's max_steps stops mid-cycle (the trainer's own warning goes to train.log
    only), else None."""
    from hyperrestart.upstream.lr_plot import alignment_text
    from hyperrestart.upstream.scheduler import SCHEDULER_NAMES, nearest_aligned_steps, restart_settings
    max_steps = config.get("max_steps")
    if config.get("lr_scheduler") not in SCHEDULER_NAMES or not isinstance(max_steps, int) or max_steps < 1:
        return None
    t_0, t_mult, _, warmup = restart_settings(config)
    if nearest_aligned_steps(max_steps, t_0, t_mult, warmup)[0] == max_steps:
        return None
    return "warning: " + alignment_text(config, max_steps) + " Set it with --set max_steps=N."


RESULT_FILES = ("eval_results.json", "val_results.json", "test_results.json")  # val_: hyperformer
# What a --tiny run's numbers mean (README "Quick start" says the same).
TINY_EXPECTATION = """what to expect: --tiny checks that the pipeline runs, not that it learns.
  A random d_model-32 T5 trained 15 steps (frozen, adapters only) generates no valid label yet: every accuracy, F1
  and correlation is 0.0 (a non-zero score is luck). The loss is upstream's label-smoothed NLL summed over a batch's
  target tokens (~32 in a training batch of 4, ~128 in an eval batch of 16): 80-90 per training step and 330-400 per
  eval batch are ~2.7 nats per token, as expected. Real numbers need the real model and data (configs/README.md)."""
FULL_EXPECTATION = ("what to expect: configs/README.md names the paper's table and row for this config; GLUE "
                    "accuracies/F1/correlations are percentages there.")


def result_text(output_dir: Path, tiny):
    """The run's headline metrics (averages, else every non-loss number) from its results files, and what to expect
    of them."""
    lines = []
    for name, (shown, losses) in _results(output_dir).items():
        text = ", ".join(f"{k} {v:.4g}" for k, v in list(shown.items())[:8])
        if losses:
            text += f"; loss {min(losses):.4g}-{max(losses):.4g}" if len(losses) > 1 else f"; loss {losses[0]:.4g}"
        lines.append(f"result:       {name}: {text or 'no metrics'}")
    if not lines:
        lines.append("result:       no eval_results.json or test_results.json (do_eval/do_test off?)")
    return "\n".join(lines + [TINY_EXPECTATION if tiny else FULL_EXPECTATION])


def _results(output_dir: Path) -> dict:
    """{results file: (headline metrics: the averages, else every non-loss number; [losses])} of a run folder."""
    found = {}
    for name in RESULT_FILES:
        try:
            metrics = json.loads((Path(output_dir) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and "loss" not in k and not k.endswith(("runtime", "per_second", "samples"))}
        found[name] = ({k: v for k, v in numbers.items() if "average" in k} or numbers,
                       [v for k, v in metrics.items() if "loss" in k and isinstance(v, (int, float))])
    return found


def headline_metrics(output_dir: Path) -> dict:
    """{results file: its headline metrics} (see _results)."""
    return {name: shown for name, (shown, _) in _results(output_dir).items()}
