"""SGDR restart schedule (Loshchilov & Hutter) as used by "Enhancing Language Model Hypernetworks with Restart".

Dropped by hyperrestart into both upstream trees (hyperdecoders and hyperformer); this is the single source.
Kept compatible with Python 3.7 and torch 1.7 so the `paper` profile runs on the upstreams' original pins.

eq. 5: eta_t = eta_min + 1/2 (eta_max - eta_min) (1 + cos(pi T_cur / T_i)),  T_i = T_0 * T_mult^i
"""
import logging
import warnings

from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

logger = logging.getLogger(__name__)

# The one table of lr scheduler names, used by both upstream trainers (their arg_to_scheduler), the P3 runner and
# hyperrestart. The restart schedule's name, and its aliases with the reason each is kept:
SCHEDULER_NAME = "cosine_annual_w_restarts"
ALIAS_REASONS = {
    "consine_annealing_restart": "the paper's released hyperformer configs spell it so",
    "restart": "the P3 runner's name for it before the scheduler names were unified",
}
SCHEDULER_ALIASES = tuple(ALIAS_REASONS)
SCHEDULER_NAMES = (SCHEDULER_NAME,) + SCHEDULER_ALIASES
# The upstream trainers' other schedules (their arg_to_scheduler): name -> the transformers function that makes it
# (each takes optimizer, warmup steps[, total steps]).
HF_SCHEDULERS = {
    "linear": "get_linear_schedule_with_warmup",
    "cosine": "get_cosine_schedule_with_warmup",
    "cosine_w_restarts": "get_cosine_with_hard_restarts_schedule_with_warmup",
    "polynomial": "get_polynomial_decay_schedule_with_warmup",
    "constant": "get_constant_schedule",
    "constant_w_warmup": "get_constant_schedule_with_warmup",
}
ALL_SCHEDULER_NAMES = SCHEDULER_NAMES + tuple(HF_SCHEDULERS)

# Defaults from the paper's README (both trainers).
DEFAULT_T0 = 1
DEFAULT_T_MULT = 2
DEFAULT_ETA_MIN = 1e-6


class RestartScheduler(CosineAnnealingWarmRestarts):
    """torch's CosineAnnealingWarmRestarts, stepped once per optimizer step, with an optional linear warmup.

    During the first ``warmup_steps`` steps the lr rises linearly from 0 to the base lr (the Hugging Face warmup
    convention) and the SGDR clock does not run; SGDR starts with T_cur = 0 at step ``warmup_steps``. With
    ``warmup_steps=0`` (the paper's behaviour) it is exactly torch's class.
    """

    def __init__(self, optimizer, t_0=DEFAULT_T0, t_mult=DEFAULT_T_MULT, eta_min=DEFAULT_ETA_MIN, warmup_steps=0):
        check_restart_arguments(t_0, t_mult, eta_min, warmup_steps)
        self.warmup_steps = int(warmup_steps)
        self.global_step = -1  # number of step() calls so far, minus the initial one torch makes
        super(RestartScheduler, self).__init__(optimizer, T_0=int(t_0), T_mult=int(t_mult), eta_min=eta_min)

    def step(self, epoch=None):
        if epoch is not None:
            raise TypeError("RestartScheduler is stepped once per optimizer step; step(epoch) is not supported")
        self.global_step += 1
        if self.global_step < self.warmup_steps:
            for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base_lr * self.global_step / self.warmup_steps
            self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
            return
        super(RestartScheduler, self).step()


def _is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value not in (float("inf"), float("-inf"))


def restart_argument_problems(t_0, t_mult, eta_min=DEFAULT_ETA_MIN, warmup_steps=0, learning_rate=None):
    """One message per out-of-range restart setting (empty when all are valid): T_0 an integer >= 1, T_mult an
    integer >= 1, eta_min a finite number >= 0 (and below the learning rate when given), warmup an integer >= 0.
    Checked before any loop over cycles runs, so no setting can make one unbounded."""
    problems = []
    if not _is_integer(t_0) or t_0 < 1:
        problems.append("restart_t0 (T_0) must be an integer >= 1, got {!r}".format(t_0))
    if not _is_integer(t_mult) or t_mult < 1:
        problems.append("restart_t_mult (T_mult) must be an integer >= 1, got {!r}".format(t_mult))
    if not _is_number(eta_min) or eta_min < 0:
        problems.append("eta_min must be a finite number >= 0, got {!r}".format(eta_min))
    elif learning_rate is not None and _is_number(learning_rate) and eta_min >= learning_rate:
        problems.append("eta_min ({!r}) must be below learning_rate ({!r}): the lr falls from learning_rate to "
                        "eta_min in each cycle".format(eta_min, learning_rate))
    if warmup_steps is not None and (not _is_integer(warmup_steps) or warmup_steps < 0):
        problems.append("restart_warmup_steps must be an integer >= 0, got {!r}".format(warmup_steps))
    return problems


def check_restart_arguments(t_0, t_mult, eta_min=DEFAULT_ETA_MIN, warmup_steps=0, learning_rate=None):
    """ValueError listing every out-of-range restart setting (restart_argument_problems)."""
    problems = restart_argument_problems(t_0, t_mult, eta_min, warmup_steps, learning_rate)
    if problems:
        raise ValueError("; ".join(problems))


def cycle_end_steps(t_0, t_mult, warmup_steps=0, up_to=None, count=None):
    """Step counts after which a cycle ends (the lr has just reached its minimum): W + T_0 (1 + m + ... + m^(n-1))."""
    check_restart_arguments(t_0, t_mult, 0, warmup_steps)
    if up_to is None and count is None:
        raise ValueError("cycle_end_steps needs up_to or count, or it would never end")
    ends, total, length = [], warmup_steps, t_0
    while True:
        total += length
        if up_to is not None and total > up_to:
            ends.append(total)  # the first end beyond the limit, so callers can name the next aligned value
            return ends
        ends.append(total)
        if count is not None and len(ends) >= count:
            return ends
        length *= t_mult


def nearest_aligned_steps(max_steps, t_0, t_mult, warmup_steps=0):
    """(below, above) aligned step counts around max_steps; below is None when no cycle ends before it."""
    ends = cycle_end_steps(t_0, t_mult, warmup_steps, up_to=max_steps)
    below = [e for e in ends if e <= max_steps]
    return (below[-1] if below else None), ends[-1]


def check_alignment(max_steps, t_0, t_mult, warmup_steps=0, unit="steps"):
    """Warn (and return the message) when a run of ``max_steps`` does not stop at a cycle end; None when it does."""
    below, above = nearest_aligned_steps(max_steps, t_0, t_mult, warmup_steps)
    if below == max_steps:
        return None
    nearest = "{} or {}".format(below, above) if below is not None else str(above)
    message = (
        "max_steps={} does not end at a restart cycle end (T_0={}, T_mult={}, warmup_steps={}, in {}): "
        "the run stops mid-cycle, not at eta_min. Nearest aligned max_steps: {}.".format(
            max_steps, t_0, t_mult, warmup_steps, unit, nearest)
    )
    warnings.warn(message)
    logger.warning(message)
    return message


def canonical_scheduler_name(name):
    """Map an alias of the restart schedule (ALIAS_REASONS) to its canonical name, saying so in the log."""
    if name in SCHEDULER_ALIASES:
        logger.warning("lr_scheduler %r is an alias of %r (%s)", name, SCHEDULER_NAME, ALIAS_REASONS[name])
        return SCHEDULER_NAME
    return name


def restart_scheduler_from_args(optimizer, args, num_training_steps=None):
    """Build the scheduler from an upstream's training arguments (restart_t0, restart_t_mult, eta_min,
    restart_warmup_steps); warn when num_training_steps is not at a cycle end."""
    t_0 = getattr(args, "restart_t0", DEFAULT_T0)
    t_mult = getattr(args, "restart_t_mult", DEFAULT_T_MULT)
    eta_min = getattr(args, "eta_min", DEFAULT_ETA_MIN)
    warmup = getattr(args, "restart_warmup_steps", 0) or 0
    check_restart_arguments(t_0, t_mult, eta_min, warmup, getattr(args, "learning_rate", None))
    if num_training_steps:
        check_alignment(num_training_steps, t_0, t_mult, warmup)
    return RestartScheduler(optimizer, t_0=t_0, t_mult=t_mult, eta_min=eta_min, warmup_steps=warmup)
