"""A run folder: what a run leaves in it, the checkpoint a --resume continues from, and a fresh default folder."""
import contextlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json
from hyperrestart.core.locks import RefusingLock
from hyperrestart.core.paths import PROJECT_ROOT
from hyperrestart.upstream.registry import load_config
from hyperrestart.upstream.resolve import Resolved

RUN_CONFIG = "hyperrestart_config.json"  # the resolved config `run` saves (the trainer writes the model's config.json)
RESUME_CONFIG = "hyperrestart_resume_config.json"  # RUN_CONFIG pointed at the checkpoint a --resume continues from


def latest_checkpoint(output_dir: Path):
    """The checkpoint-N folder with the highest N that holds what a resume needs, or None."""
    complete = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
                and all((p / name).is_file() for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt"))]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


def latest_trainer_state(output_dir: Path):
    """The trainer_state.json with the highest global_step (output_dir itself or a checkpoint-*), or None."""
    best = None
    for path in [output_dir / "trainer_state.json", *output_dir.glob("checkpoint-*/trainer_state.json")]:
        if path.is_file():
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if best is None or state.get("global_step", 0) >= best[1].get("global_step", 0):
                best = (path, state)
    return best


# A run folder may also hold a sweep's bookkeeping (hyperrestart sweep writes sweep-run.json and sweep.log there
# before calling `run`): those and hidden files are not "a run", and --overwrite keeps them.
SWEEP_FILE = re.compile(r"sweep[-.]")


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


MARKER = ".hyperrestart-run.json"  # written by `run` when it claims a folder: proof that the run in it is ours
LOCK = ".hyperrestart-run.lock"  # flock held while `run` writes the folder


class RunFolderLock(RefusingLock):
    """An exclusive flock on OUT/.hyperrestart-run.lock while a run writes OUT; a second writer is refused."""

    def __init__(self, out):
        super().__init__(Path(out) / LOCK)

    def busy_message(self):
        holder = read_marker(self.path.parent) or {}
        return (f"{self.path.parent} is being written by another `hyperrestart run` (pid {holder.get('pid', '?')}, "
                f"started {holder.get('started', '?')}); wait for it to finish or choose another --output-dir")


def read_marker(out: Path):
    """The ownership marker's content (dict), or None when there is none or it is damaged."""
    try:
        data = json.loads((Path(out) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def made_by_hyperrestart(out: Path) -> bool:
    """True when `run` provably made the run in `out`: its marker, or (a run from before the marker) both the
    resolved config and the train.log that only `run` writes."""
    return read_marker(out) is not None or ((out / RUN_CONFIG).is_file() and (out / "train.log").is_file())


def write_marker(out: Path, nproc, resumed=False, nnodes=1):
    """Claim `out`: who writes it (pid, host), since when, and the processes it trains on (nproc per node, nnodes,
    world_size: a --resume must keep the world size, check_resume_processes)."""
    previous = read_marker(out) or {}
    per_node = nproc or 1
    world = previous.get("world_size", previous.get("nproc", per_node)) if resumed else per_node * nnodes
    atomic_write_json(out / MARKER, dict(previous, pid=os.getpid(), host=socket.gethostname(),
                                         started=previous.get("started") if resumed else _now(),
                                         nproc=per_node, nnodes=nnodes, world_size=world,
                                         **({"resumed": _now()} if resumed else {})))


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _listing(entries):
    return ", ".join(p.name for p in entries[:8]) + (f", ... ({len(entries)} entries)" if len(entries) > 8 else "")


def check_claim(args, resolved: Resolved):
    """Refuse, before anything is written, a folder `run` may not write: user files (never called a run, never
    deleted), a run without --resume/--overwrite, a --resume with nothing to continue."""
    out = resolved.output_dir
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise HyperrestartError(f"--output-dir {out} is a file, not a folder; choose another --output-dir")
    entries = run_entries(out)
    if args.resume:
        if not out.is_dir():
            raise HyperrestartError(f"--resume: {out} holds no run started by `hyperrestart run` (the folder does not "
                                    f"exist); start one without --resume")
        return
    if entries and not made_by_hyperrestart(out):
        raise HyperrestartError(f"{out} holds files that `hyperrestart run` did not make ({_listing(entries)}); it "
                                f"will not write into or delete them: choose another --output-dir or empty it")
    if entries and not args.overwrite:
        raise HyperrestartError(f"{out} already holds a run made by hyperrestart ({_listing(entries)}); continue it "
                                f"from its last checkpoint with --resume, replace it with --overwrite, or choose "
                                f"another --output-dir")


def layout_counts(args, layout=None):
    """(processes per node, nodes) of a run: --nproc-per-node and --nnodes (layout), else --nproc on one node."""
    return (layout.nproc_per_node, layout.nnodes) if layout is not None else (args.nproc or 1, 1)


@contextlib.contextmanager
def claim(args, resolved: Resolved, layout=None):
    """Prepare the run folder and hold its lock while the run writes it: check_claim, then under the lock (checked
    again there) delete the old run (--overwrite) and write the ownership marker. Yields the checkpoint a --resume
    continues from (or None). layout: the run's nodes.Layout (None: one node, --nproc); only node rank 0's
    launcher claims the folder."""
    check_claim(args, resolved)
    if resolved.output_dir is None:
        resolved.output_dir = default_output_dir(args, resolved.upstream)
        resolved.config["output_dir"] = str(resolved.output_dir)
    out = resolved.output_dir
    out.mkdir(parents=True, exist_ok=True)
    with RunFolderLock(out):
        check_claim(args, resolved)
        checkpoint = None
        if args.resume:
            checkpoint = resume_checkpoint(out, resolved, run_entries(out), *layout_counts(args, layout))
        else:
            for entry in run_entries(out):  # --overwrite of a run check_claim proved ours
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        nproc, nnodes = layout_counts(args, layout)
        write_marker(out, nproc, resumed=args.resume, nnodes=nnodes)
        yield checkpoint


def check_resume_processes(out: Path, nproc, nnodes=1):
    """A --resume keeps the world size of the run (nodes x processes per node): the global batch, and which examples
    each process sees. The layout may change (--nproc 2 resumes as --nnodes 2 --nproc-per-node 1): ranks, shards
    and seeds follow the global rank only."""
    marker = read_marker(out) or {}
    recorded = marker.get("world_size", marker.get("nproc"))
    asked = (nproc or 1) * nnodes
    if recorded is not None and recorded != asked:
        how = "--nproc" if nnodes == 1 else f"--nnodes {nnodes} --nproc-per-node {nproc or 1}"
        raise HyperrestartError(f"--resume: the run in {out} trained on {recorded} process(es) and {how} asks "
                                f"for {asked}; a different count changes the global batch and which examples "
                                f"each process sees, so the resumed run would not continue the same training. "
                                f"Resume with --nproc {recorded}, or --nnodes N --nproc-per-node K with N x K = "
                                f"{recorded}")


def resume_checkpoint(out: Path, resolved: Resolved, entries, nproc=None, nnodes=1):
    """The checkpoint an interrupted run in `out` continues from, after checking that it can (reads only)."""
    config = resolved.config
    check_resume_processes(out, nproc, nnodes)
    saved_file = out / RUN_CONFIG
    if not saved_file.is_file():
        raise HyperrestartError(f"--resume: {out} holds no run started by `hyperrestart run` ({RUN_CONFIG} "
                                f"missing{'; it is empty' if not entries else ''}); start one without --resume")
    saved = load_config(saved_file)
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
    if (out / "trainer_state.json").is_file():
        missing = missing_results(out, resolved)
        if missing:
            return out  # killed during its final evaluation: evaluate the final model only (resume_config)
        raise HyperrestartError(f"--resume: the run in {out} finished training and evaluation (trainer_state.json "
                                f"and its results written); nothing to resume. Use --overwrite to train it again")
    checkpoint = latest_checkpoint(out)
    if checkpoint is None:
        raise HyperrestartError(f"--resume: {out} has no complete checkpoint-N (trainer_state.json, optimizer.pt, "
                                f"scheduler.pt) to continue from (it saves every save_steps="
                                f"{config.get('save_steps', 500)} steps); start again with --overwrite")
    return checkpoint


# The results files each upstream's script writes after training, per flag (hyperdecoders: patch 0017).
RESULT_FILES = {"hyperdecoders": {"do_eval": "eval_results.json", "do_test": "test_results.json"},
                "hyperformer": {"do_eval": "val_results.json", "do_test": "test_results.json"}}


def missing_results(out: Path, resolved: Resolved) -> list:
    """The results files the run's final evaluation has not written yet."""
    files = RESULT_FILES.get(resolved.upstream.name, {})
    return [name for flag, name in files.items() if resolved.config.get(flag) and not (out / name).is_file()]


def evaluates_only(checkpoint: Path, config) -> bool:
    """A --resume of a run killed during its final evaluation continues from the run folder itself."""
    return checkpoint is not None and Path(checkpoint) == Path(config["output_dir"])


def trainer_config(config, checkpoint):
    """The config the trainer runs: the resolved config, or for a --resume the one pointed at the checkpoint."""
    return config if checkpoint is None else resume_config(config, checkpoint)


def resume_config(config, checkpoint: Path):
    """The trainer config that continues from checkpoint: both upstream scripts load the model from
    model_name_or_path and hand it to Trainer.train(model_path=...), which restores the optimizer, the scheduler and
    the trainer state (global step, log history) from that folder and skips the batches already trained on. A run
    killed during its final evaluation (checkpoint = the run folder) is evaluated only: do_train false, the final
    model loaded from the run folder."""
    resumed = dict(config, model_name_or_path=str(checkpoint),
                   tokenizer_name=config.get("tokenizer_name") or config.get("model_name_or_path"))
    if evaluates_only(checkpoint, config):  # training finished: evaluate the final model in the run folder only
        resumed["do_train"] = False
    return resumed
