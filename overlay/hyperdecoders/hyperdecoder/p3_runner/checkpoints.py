"""Checkpoint folders OUTPUT_DIR/checkpoint-STEP: model, tokenizer, optimizer, scheduler, RNG states of every process
and the data position, so a resumed run continues exactly."""
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("p3_trainer")


def rng_state():
    """This process's python, numpy, torch (and CUDA) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(output_dir):
    """The complete checkpoint folders of output_dir (they have trainer_state.pt), oldest first."""
    found = [(int(p.name.split("-")[1]), p) for p in Path(output_dir).glob("checkpoint-*")
             if p.name.split("-")[1].isdigit() and (p / "trainer_state.pt").exists()]
    return [p for _, p in sorted(found)]


def save_checkpoint(args, dist, model, tokenizer, optimizer, scheduler, state, diagnostics=None):
    """OUTPUT_DIR/checkpoint-STEP (written to a temp folder, then renamed); rank 0 writes, RNG per rank."""
    step = state["step"]
    final = Path(args.output_dir) / f"checkpoint-{step}"
    tmp = Path(args.output_dir) / f".checkpoint-{step}.tmp"
    rngs = [None] * dist.world
    if dist.world > 1:
        torch.distributed.all_gather_object(rngs, rng_state())
    else:
        rngs = [rng_state()]
    if dist.main:
        shutil.rmtree(tmp, ignore_errors=True)
        unwrap(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save({"state": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rngs, "args": vars(args)}, tmp / "trainer_state.pt")
        if diagnostics is not None:  # rows up to this step; the last update when an adaptive restart needs it
            from .schedules import trainer_hooks

            trainer_hooks().save_diagnostics(diagnostics, scheduler, str(tmp), True)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(args.output_dir)[:-args.save_total_limit] if args.save_total_limit else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def unwrap(model):
    """The model inside DDP's wrapper."""
    return model.module if hasattr(model, "module") else model


def detect_checkpoint(args):
    """The checkpoint a run continues from: the newest in --output_dir under --resume auto, else None."""
    found = checkpoints(args.output_dir) if args.resume == "auto" else []
    return found[-1] if found else None


def restore(checkpoint, optimizer, scheduler, rank, args=None):
    """Load the optimizer, scheduler and this process's RNG states of `checkpoint`; returns its training state
    (step, epoch, batch_in_epoch, scheduler_steps). With --resume_allowed_changes (args), settings that differ from
    the checkpoint's are refused unless allowed; allowed ones drive the schedule and optimizer from here on."""
    from . import resume_changes

    saved = torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=False)
    allowed = resume_changes.parse_allowed(getattr(args, "resume_allowed_changes", None))
    changed = resume_changes.changed_settings(saved.get("args", {}), vars(args)) if allowed is not None else {}
    problem = resume_changes.refusal(changed, allowed or ())
    if problem:
        raise SystemExit(f"p3_trainer: error: {problem}")
    groups, fresh = resume_changes.fresh_settings(optimizer, scheduler)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(resume_changes.scheduler_state(saved["scheduler"], fresh) if changed
                              else saved["scheduler"])
    if changed:
        resume_changes.take_over(optimizer, scheduler, groups)
        logger.info("resumed with changed settings: %s", ", ".join(f"{k} {old!r} -> {new!r}"
                                                                    for k, (old, new) in changed.items()))
    set_rng_state(saved["rng"][rank] if len(saved["rng"]) > rank else saved["rng"][0])
    logger.info("resumed from %s at step %d", checkpoint, saved["state"]["step"])
    return saved["state"]
