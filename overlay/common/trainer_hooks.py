"""What the upstream trainers (and the P3 runner) call to use the restart family per parameter group and the step
diagnostics: one implementation for every trainer, next to restart_scheduler.py, param_spaces.py and
step_diagnostics.py in third_party/trainers/ of both trees. Python 3.7 syntax, torch and the standard library only.

    groups = scoped_param_groups(model, groups, args)            # building the optimizer
    check_scheduler_args(args)                                    # before building the scheduler
    diagnostics = make_diagnostics(model, optimizer, scheduler, args, out_dir, start_step, write, checkpoint)
    ... per optimizer step: diagnostics.on_gradients() before clipping; after optimizer.step():
    observe_step(diagnostics, scheduler, step, step_loss); scheduler.step()
    save_diagnostics(diagnostics, scheduler, checkpoint_folder, write)   # with each checkpoint
"""
import os

import torch

from . import param_spaces
from .restart_scheduler import FAMILY_NAMES, canonical_scheduler_name, split_by_space
from .step_diagnostics import StepDiagnostics

DIAGNOSTICS_STATE = "diagnostics_state.pt"


def _scope(args):
    return getattr(args, "restart_scope", None) or "all"


def scoped_param_groups(model, groups, args):
    """The optimizer's parameter groups, split by parameter space when restart_scope is not "all"; refuses a scope
    the model does not have (e.g. hypernetwork on plain T5 fine-tuning)."""
    scope = _scope(args)
    if scope == "all":
        return groups
    if not param_spaces.has_space(model, scope):
        raise ValueError("restart_scope {!r}: this model has no trainable {} parameters ({}); use restart_scope "
                         "all".format(scope, scope, param_spaces.describe(model).splitlines()[0]))
    return split_by_space(groups, param_spaces.parameter_groups(model, trainable_only=False))


def check_scheduler_args(args):
    """restart_scope other than "all" needs a schedule of the restart family."""
    scope = _scope(args)
    if scope != "all" and canonical_scheduler_name(args.lr_scheduler) not in FAMILY_NAMES:
        raise ValueError("restart_scope {!r} needs a restart lr_scheduler ({}), got {!r}".format(
            scope, ", ".join(FAMILY_NAMES), args.lr_scheduler))


def make_diagnostics(model, optimizer, scheduler, args, out_dir, start_step, write, checkpoint=None):
    """StepDiagnostics over the model's trainable hypernetwork / backbone parameters into out_dir (None when
    args.step_diagnostics is false); restores the last update from `checkpoint` when an adaptive restart needs it."""
    if not getattr(args, "step_diagnostics", False):
        return None
    spaces = dict((space, [p for _, p in named]) for space, named in param_spaces.parameter_groups(model).items())
    diagnostics = StepDiagnostics(spaces, optimizer, out_dir, start_step=start_step,
                                  flush_every=max(1, getattr(args, "logging_steps", 50) or 50), write=write,
                                  need_dot="gradient" in getattr(scheduler, "observes", ()))
    saved = os.path.join(checkpoint or "", DIAGNOSTICS_STATE)
    if checkpoint and os.path.isfile(saved):
        diagnostics.load_state_dict(torch.load(saved, map_location="cpu"))
    return diagnostics


def observe_step(diagnostics, scheduler, step, step_loss, feed=True, mark=True):
    """After optimizer.step() and before scheduler.step(): record optimizer step `step` (1-based) and feed an
    adaptive restart the step's loss (mean over processes) and g . dtheta (the same on every process: the gradients
    are all-reduced). feed / mark false (the P3 runner between scheduler steps): no observation / no restart mark."""
    if diagnostics is not None:
        diagnostics.on_update(step, step_loss, scheduler if mark else None)
    observes = getattr(scheduler, "observes", ())
    if not observes or not feed:
        return
    loss = step_loss.detach().clone().float() if torch.is_tensor(step_loss) else torch.tensor(float(step_loss))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss)
        loss /= torch.distributed.get_world_size()
    dot = None
    if "gradient" in observes:
        if diagnostics is None:
            raise ValueError("adaptive_restart_criterion {!r} needs step_diagnostics true".format(
                scheduler.restart.criterion))
        dot = diagnostics.grad_dot_update(scheduler.scope)
    scheduler.observe(loss.item(), dot)


def save_diagnostics(diagnostics, scheduler, folder, write):
    """With a checkpoint: write the pending rows, and the last update when an adaptive restart resumes from it."""
    if diagnostics is None:
        return
    diagnostics.flush()
    if write and "gradient" in getattr(scheduler, "observes", ()) and os.path.isdir(folder):
        torch.save(diagnostics.state_dict(), os.path.join(folder, DIAGNOSTICS_STATE))


def close_diagnostics(diagnostics):
    if diagnostics is not None:
        diagnostics.close()
