"""A run folder: what a run leaves in it, the checkpoint a --resume continues from, and a fresh default folder."""
import json
import re
import shutil
import time
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
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
                state = json.loads(path.read_text())
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
    if (out / "trainer_state.json").is_file() or (out / "pytorch_model.bin").is_file():
        raise HyperrestartError(f"--resume: the run in {out} finished training (trainer_state.json/final model "
                                f"written); nothing to resume. Use --overwrite to train it again")
    checkpoint = latest_checkpoint(out)
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
