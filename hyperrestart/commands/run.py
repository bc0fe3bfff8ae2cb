"""`hyperrestart run CONFIG`: run an upstream's training script on a config, in that upstream's environment."""
import dataclasses
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hyperrestart.upstream import runner
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import PROJECT_ROOT
from hyperrestart.upstream.tiny import OFFLINE_ENV

# --tiny: the generated tiny T5 and GLUE/MRQA data, 16 steps with a log line per step; every value can still be --set.
TINY_SETTINGS = {
    "max_steps": 16, "logging_steps": 1, "logging_first_step": True, "eval_steps": 8, "save_steps": 8,
    "save_total_limit": 1, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16,
    "gradient_accumulation_steps": 1, "max_source_length": 64, "max_target_length": 8, "val_max_target_length": 8,
    "test_max_target_length": 8, "n_val": 16, "n_test": 16,
}
TINY_UPSTREAM_SETTINGS = {
    # small enough to train in seconds on a CPU (the released dims are 64/64/128 on d_model 768)
    "hyperdecoders": {"encoder_adapter_dim": 8, "decoder_adapter_dim": 8, "hypernetwork_bottleneck": 16,
                      "report_to": []},
    "hyperformer": {"task_embedding_dim": 16, "projected_task_embedding_dim": 8, "reduction_factor": 4},
}
# MRQA (hyperdecoders only): a question plus a three-sentence context needs more source tokens than a GLUE pair.
TINY_MRQA_TASKS = {"hyperdecoders": ("mrqa", "mrqa_reg")}
TINY_MRQA_SETTINGS = {"max_source_length": 128}
# A run folder may also hold a sweep's bookkeeping (hyperrestart sweep writes sweep-run.json and sweep.log there
# before calling `run`): those and hidden files are not "a run", and --overwrite keeps them.
SWEEP_FILE = re.compile(r"sweep[-.]")


@dataclasses.dataclass
class Resolved:
    upstream: runner.Upstream
    config: dict
    output_dir: Path  # None: a fresh default folder is made when the run starts
    origin: dict  # key -> "the config" | "--tiny" | "--set", for error messages


def tiny_overrides(upstream, config):
    """The settings --tiny applies (config: the config with --set applied, so --set can pick the tasks)."""
    from hyperrestart.upstream.tiny import GLUE_SCHEMA, tiny_data_dir, tiny_model_dir
    mrqa = TINY_MRQA_TASKS.get(upstream.name, ())
    tasks = list(dict.fromkeys(list(config.get("tasks") or []) + list(config.get("eval_tasks") or [])))
    supported = list(GLUE_SCHEMA) + list(mrqa)
    unsupported = [t for t in tasks if t not in supported]
    if unsupported:
        raise HyperrestartError(f"--tiny has data for {', '.join(supported)} ({upstream.name}), not "
                                f"{', '.join(unsupported)}; choose tasks with --set 'tasks=[\"rte\"]' "
                                f"--set 'eval_tasks=[\"rte\"]'")
    model = str(tiny_model_dir())
    settings = dict(TINY_SETTINGS, model_name_or_path=model, tokenizer_name=model,
                    data_dir=str(tiny_data_dir(mrqa=bool(mrqa))), **TINY_UPSTREAM_SETTINGS.get(upstream.name, {}))
    if any(t in mrqa for t in tasks):
        settings.update(TINY_MRQA_SETTINGS)
    return settings


def resolve(args, spec=None) -> Resolved:
    """The upstream and the config from CONFIG, --tiny and --set (values typed by spec, runner.argument_spec),
    without touching the output folder. --set applies last, so it wins over --tiny."""
    if any(runner.parse_set(item)[0] == "output_dir" for item in args.set):
        raise HyperrestartError("--set output_dir: `run` sets output_dir itself; choose the folder with --output-dir")
    upstream = runner.upstream_for_config(args.config, args.upstream)
    config = runner.load_config(args.config)
    kinds = spec.kinds if spec else None
    origin = dict.fromkeys(config, "the config")
    if args.tiny:
        tiny = tiny_overrides(upstream, runner.apply_overrides(config, args.set, kinds))
        config.update(tiny)
        origin.update(dict.fromkeys(tiny, "--tiny"))
    config = runner.apply_overrides(config, args.set, kinds)
    origin.update((runner.parse_set(item)[0], "--set") for item in args.set)
    output_dir = Path(args.output_dir).resolve() if args.output_dir else None
    if output_dir:
        config["output_dir"] = str(output_dir)
    return Resolved(upstream, config, output_dir, origin)


def run_entries(output_dir: Path) -> list:
    """What a run left in output_dir: every entry except hidden files and a sweep's bookkeeping."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if not p.name.startswith(".") and not SWEEP_FILE.match(p.name))


def default_output_dir(args, upstream) -> Path:
    """runs/<upstream>-<config>[-tiny]-<time>[-N], created here: mkdir is atomic, so two runs started in the same
    second get different folders."""
    stem = Path(args.config).stem + ("-tiny" if args.tiny else "")
    base = PROJECT_ROOT / "runs" / f"{upstream.name}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise HyperrestartError(f"cannot create a run folder next to {base}; pass --output-dir")


def prepare_output_dir(args, resolved: Resolved):
    """Make sure the run may write to its folder: refuse one that holds a run unless --resume or --overwrite.
    Returns the checkpoint to resume from (or None)."""
    out = resolved.output_dir
    if out is None:
        resolved.output_dir = default_output_dir(args, resolved.upstream)
        resolved.config["output_dir"] = str(resolved.output_dir)
        return None
    entries = run_entries(out)
    if args.resume:
        return resume_checkpoint(out, resolved, entries)
    if entries and not args.overwrite:
        shown = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise HyperrestartError(f"{out} already holds a run ({shown}); continue it from its last checkpoint with "
                                f"--resume, replace it with --overwrite, or choose another --output-dir")
    for entry in entries:  # --overwrite
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return None


def resume_checkpoint(out: Path, resolved: Resolved, entries):
    """The checkpoint an interrupted run in `out` continues from, after checking that it can."""
    config = resolved.config
    saved_file = out / runner.RUN_CONFIG
    if not saved_file.is_file():
        raise HyperrestartError(f"--resume: {out} holds no run started by `hyperrestart run` ({runner.RUN_CONFIG} "
                                f"missing{'; it is empty' if not entries else ''}); start one without --resume")
    saved = runner.load_config(saved_file)
    changed = sorted(k for k in set(saved) | set(config) if saved.get(k, "<unset>") != config.get(k, "<unset>"))
    if changed:
        diffs = "; ".join(f"{k}: run {saved.get(k, '<unset>')!r}, now {config.get(k, '<unset>')!r}" for k in changed)
        raise HyperrestartError(f"--resume continues the run in {out} with its own settings, but these differ: "
                                f"{diffs}. Resume with the same config and --set values, or start a new run "
                                f"(--overwrite or another --output-dir)")
    for flag in ("optimize_from_scratch", "not_load_t5_checkpoint"):
        if config.get(flag):
            raise HyperrestartError(f"--resume: with {flag}=true the {resolved.upstream.name} script does not load "
                                    f"a checkpoint, so it cannot resume; start a new run")
    if (out / "trainer_state.json").is_file() or (out / "pytorch_model.bin").is_file():
        raise HyperrestartError(f"--resume: the run in {out} finished training (trainer_state.json/final model "
                                f"written); nothing to resume. Use --overwrite to train it again")
    checkpoint = runner.latest_checkpoint(out)
    if checkpoint is None:
        raise HyperrestartError(f"--resume: {out} has no complete checkpoint-N (trainer_state.json, optimizer.pt, "
                                f"scheduler.pt) to continue from (it saves every save_steps="
                                f"{config.get('save_steps', 500)} steps); start again with --overwrite")
    return checkpoint


def resume_config(config, checkpoint: Path):
    """The trainer config that continues from checkpoint: both upstream scripts load the model from
    model_name_or_path and hand it to Trainer.train(model_path=...), which restores the optimizer, the scheduler and
    the trainer state (global step, log history) from that folder and skips the batches already trained on."""
    return dict(config, model_name_or_path=str(checkpoint),
                tokenizer_name=config.get("tokenizer_name") or config.get("model_name_or_path"))


def run_env(upstream, tree, config, output_dir, tiny):
    env = runner.process_env(upstream, tree)
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
    found = runner.latest_trainer_state(output_dir)
    trace = runner.lr_trace_from_state(found[1], config) if found else []
    source = str(found[0]) if found else None
    if len(trace) < 2 and log_text:
        trace, source = runner.lr_trace_from_log(log_text, config), "train.log"
    lines = [f"output dir:   {output_dir}"]
    if len(trace) >= 2:
        runner.write_lr_trace(trace, output_dir / "lr_trace.csv")
        lines.append(f"lr trace:     {output_dir / 'lr_trace.csv'} (lr applied by steps {trace[0][0]}-{trace[-1][0]}, "
                     f"from {source})")
        restarts = runner.restart_steps(trace)
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


def cmd_run(args):
    from hyperrestart.upstream.envs import python_for
    if args.resume and not args.output_dir:
        raise HyperrestartError("--resume needs --output-dir: the folder of the run to continue")
    upstream = runner.upstream_for_config(args.config, args.upstream)
    runner.load_config(args.config)  # a missing or broken file is named before anything slow
    tree = runner.tree_dir(upstream, args.dest)
    python = Path(args.python) if args.python else python_for(upstream.name)
    spec = runner.argument_spec(upstream, tree, python)
    resolved = resolve(args, spec)
    runner.check_config(resolved.config, spec, upstream, resolved.origin)
    checkpoint = prepare_output_dir(args, resolved)
    config, output_dir = resolved.config, resolved.output_dir
    config_file = output_dir / runner.RUN_CONFIG
    header = None
    if checkpoint is None:
        config_file.write_text(json.dumps(config, indent=4) + "\n")
    else:
        config_file = output_dir / runner.RESUME_CONFIG
        config_file.write_text(json.dumps(resume_config(config, checkpoint), indent=4) + "\n")
        header = f"=== hyperrestart run --resume: continuing from {checkpoint.name} ==="
    cmd = runner.command(upstream, python, config_file, args.nproc)
    env = run_env(upstream, tree, config, output_dir, args.tiny)
    log_path = output_dir / "train.log"
    mode = "verbose" if args.verbose else "quiet" if args.quiet else "default"
    print(f"running {upstream.name} in {tree / upstream.workdir}" + (f" from {checkpoint.name}" if checkpoint else "")
          + f":\n  {' '.join(cmd)}\nlog:          {log_path}" + ("" if args.verbose else " (--verbose streams it)"),
          flush=True)
    started = time.monotonic()
    returncode, log_text = train(cmd, tree / upstream.workdir, env, log_path, mode, config.get("max_steps"), header)
    print(f"finished in {time.monotonic() - started:.0f}s with exit code {returncode}")
    summarize(output_dir, config, log_text)
    if returncode != 0:
        tail = "" if args.verbose else "\n  ".join([":"] + log_text.rstrip().splitlines()[-15:])
        raise HyperrestartError(f"{upstream.script} exited with {returncode}; see {log_path}{tail}")
    return 0


def register(subparsers):
    parser = subparsers.add_parser(
        "run", help="train an upstream on a config (configs/hyperdecoders/*.json, configs/hyperformer/*.json)",
        description="Resolve CONFIG (+ --tiny, --set), check every key and the lr scheduler against the upstream's "
                    f"arguments, write it to OUTPUT/{runner.RUN_CONFIG}, run the upstream's training script in its "
                    "materialised tree with its env's python (output in OUTPUT/train.log), then write "
                    "lr_trace.csv (step,lr_applied: the lr each optimizer step used) and print the steps that start "
                    "a new lr cycle, the metrics and the checkpoints.")
    parser.add_argument("config", help="JSON training arguments; its folder names the upstream")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training argument; VALUE is JSON (3e-4, 65535, true, null, "
                             "'[\"rte\"]'), and for a string argument a bare word is the string "
                             "(--set model_name_or_path=/models/t5); checked against the argument's type; repeatable")
    parser.add_argument("--nproc", type=int, default=None, help="processes (torch.distributed.run --nproc_per_node)")
    parser.add_argument("--tiny", action="store_true",
                        help="the generated tiny T5 and GLUE/MRQA data, 16 steps, offline, CPU: a smoke run in "
                             "seconds")
    parser.add_argument("--dest", help="folder holding the materialised trees (default: upstream/)")
    parser.add_argument("--output-dir", help="where the run writes (default: a new runs/<upstream>-<config>-<time>); "
                                             "a folder holding a run needs --resume or --overwrite")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="continue the interrupted run in --output-dir from its last checkpoint (same config "
                               "and --set values)")
    existing.add_argument("--overwrite", action="store_true",
                          help="delete the run in --output-dir and start again (a sweep's sweep* files are kept)")
    parser.add_argument("--upstream", choices=sorted(runner.UPSTREAMS), help="override the upstream the folder names")
    parser.add_argument("--python", help="interpreter to run with (default: the upstream's env, `hyperrestart env`)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--verbose", action="store_true", help="stream the trainer's whole output (it always goes "
                                                               "to OUTPUT/train.log)")
    output.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    parser.set_defaults(func=cmd_run)
