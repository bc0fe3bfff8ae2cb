"""Restart learning-rate schedules for "Enhancing Language Model Hypernetworks with Restart", and ONE scheduler that
drives an optimizer's parameter groups with them.

Dropped by hyperrestart into both upstream trees (hyperdecoders and hyperformer) and used by the P3 runner and the
tool; this is the single source. Python 3.7 syntax and torch >= 1.7 so the `paper` profile runs on the upstreams'
original pins; nothing but torch and the standard library is imported.

Schedules (one small class each, closed form: ``lr(n, base_lr)`` is the lr after ``n`` scheduler steps, i.e. the lr
that optimizer step n + 1 applies):
- ``SGDR``: eq. 5, eta_t = eta_min + 1/2 (peak_i - eta_min) (1 + cos(pi T_cur / T_i)), T_i = T_0 T_mult^i, with an
  optional linear warmup before the first cycle, a linear warmup at each restart (``cycle_warmup``), a peak that decays
  per cycle (peak_i = base_lr * peak_decay^i, SGDR with decay) and a cycle limit after which eta_min (or a constant
  peak) is held. With the defaults it is torch's CosineAnnealingWarmRestarts, bit for bit.
- ``WSD``: warmup, stable at the base lr, then a decay (linear, cosine or 1-sqrt) to eta_min, which is held.
- ``AdaptiveRestart`` (O'Donoghue & Candes 2015, adapted to a learning rate): cosine cycles that restart when the
  training loss's moving average rises or when the gradient opposes the last update (g . dtheta > 0), never before a
  minimum cycle length; each restart is logged with its reason.
- ``Constant``, ``Linear``, ``Cosine``, ``Polynomial``: transformers' schedules of the same names with warmup (the
  same lambdas, bit for bit), for the parameter groups that do not restart.

``GroupScheduler`` is the one torch scheduler: each optimizer parameter group follows the restart schedule when its
``param_space`` ("hypernetwork" / "backbone") is in ``restart_scope`` (``all``: every group), else the base schedule.
"""
import logging
import math
import warnings

from torch.optim import lr_scheduler as _torch_schedulers

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
WSD_NAME = "wsd"
ADAPTIVE_NAME = "adaptive_restart"
# lr_scheduler values built by this module (the restart family).
FAMILY_NAMES = SCHEDULER_NAMES + (WSD_NAME, ADAPTIVE_NAME)
BASE_SCHEDULES = ("constant", "linear", "cosine", "polynomial")
SCOPES = ("all", "hypernetwork", "backbone")
AFTER_LIMIT = ("eta_min", "constant")
WSD_SHAPES = ("linear", "cosine", "sqrt")
ADAPTIVE_CRITERIA = ("loss", "gradient", "either")
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
ALL_SCHEDULER_NAMES = FAMILY_NAMES + tuple(HF_SCHEDULERS)

# Defaults from the paper's README (both trainers).
DEFAULT_T0 = 1
DEFAULT_T_MULT = 2
DEFAULT_ETA_MIN = 1e-6

_LRScheduler = getattr(_torch_schedulers, "LRScheduler", None) or _torch_schedulers._LRScheduler


def _check(ok, message, *values):
    if not ok:
        raise ValueError(message.format(*values))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name, value, minimum):
    _check(_is_int(value) and value >= minimum, "{} must be an integer >= {}, got {!r}", name, minimum, value)


def _check_number(name, value, minimum, strict=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    _check(ok, "{} must be a finite number {} {}, got {!r}", name, ">" if strict else ">=", minimum, value)


def _check_choice(name, value, choices):
    _check(value in choices, "{} must be one of {}, got {!r}", name, ", ".join(choices), value)


def _as_int(value):
    """An integral float (a JSON 3.0) as int; anything else unchanged, for the checks to name."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def cosine_cycle_lr(k, length, peak, eta_min, warmup=0):
    """lr at offset k of a cycle: linear from eta_min to peak over `warmup` steps, then eq. 5 over `length` steps
    (written as torch's CosineAnnealingWarmRestarts writes it, so the values are the same bits)."""
    if k < warmup:
        return eta_min + (peak - eta_min) * k / warmup
    return eta_min + (peak - eta_min) * (1 + math.cos(math.pi * (k - warmup) / length)) / 2


class Schedule(object):
    """A closed-form lr schedule: ``lr(n, base_lr)``; ``restart_reason(n)`` names a restart that starts at n."""

    name = None

    def lr(self, n, base_lr):
        raise NotImplementedError

    def restart_reason(self, n):
        return None

    def settings(self):
        """The arguments that define the schedule (saved with the state and compared on load)."""
        return dict(self.__dict__)

    # adaptive schedules override these three; closed-form ones have no state beyond the step count
    def observe(self, n, loss=None, grad_dot_update=None):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class SGDR(Schedule):
    """SGDR (eq. 5) with initial warmup, warmup at each restart, peak decay and a cycle limit."""

    name = SCHEDULER_NAME

    def __init__(self, t_0=DEFAULT_T0, t_mult=DEFAULT_T_MULT, eta_min=DEFAULT_ETA_MIN, warmup_steps=0,
                 cycle_warmup=0, peak_decay=1.0, cycle_limit=0, after_limit="eta_min"):
        t_0, t_mult, warmup_steps = _as_int(t_0), _as_int(t_mult), _as_int(warmup_steps)
        cycle_warmup, cycle_limit = _as_int(cycle_warmup), _as_int(cycle_limit)
        _check_int("restart_t0 (T_0)", t_0, 1)
        _check_int("restart_t_mult (T_mult)", t_mult, 1)
        _check_number("eta_min", eta_min, 0)
        _check_int("restart_warmup_steps", warmup_steps, 0)
        _check_int("restart_cycle_warmup", cycle_warmup, 0)
        _check_number("restart_peak_decay", peak_decay, 0, strict=True)
        _check(peak_decay <= 1, "restart_peak_decay must be in (0, 1], got {!r}", peak_decay)
        _check_int("restart_cycle_limit", cycle_limit, 0)
        _check_choice("restart_after_limit", after_limit, AFTER_LIMIT)
        self.t_0, self.t_mult, self.eta_min, self.warmup_steps = t_0, t_mult, eta_min, warmup_steps
        self.cycle_warmup, self.peak_decay = cycle_warmup, peak_decay
        self.cycle_limit, self.after_limit = cycle_limit, after_limit

    def cycle(self, n):
        """(cycle index i, offset k in it, cosine length T_i) at step n >= warmup_steps."""
        m, i, length = n - self.warmup_steps, 0, self.t_0
        if self.t_mult == 1:  # equal cycles: closed form (a loop would be O(n))
            if m < length:
                return 0, m, length
            m -= length
            span = self.cycle_warmup + length
            return 1 + m // span, m % span, length
        while m >= (self.cycle_warmup if i else 0) + length:
            m -= (self.cycle_warmup if i else 0) + length
            i, length = i + 1, length * self.t_mult
        return i, m, length

    def peak(self, i, base_lr):
        return base_lr if self.peak_decay == 1 else base_lr * self.peak_decay ** i

    def lr(self, n, base_lr):
        if n < self.warmup_steps:
            return base_lr * n / self.warmup_steps
        i, k, length = self.cycle(n)
        if self.cycle_limit and i >= self.cycle_limit:
            return self.eta_min if self.after_limit == "eta_min" else self.peak(self.cycle_limit, base_lr)
        return cosine_cycle_lr(k, length, self.peak(i, base_lr), self.eta_min, self.cycle_warmup if i else 0)

    def restart_reason(self, n):
        if n <= self.warmup_steps:
            return None
        i, k, _ = self.cycle(n)
        if k == 0 and i > 0 and not (self.cycle_limit and i >= self.cycle_limit):
            return "cycle {} starts".format(i + 1)
        return None


class WSD(Schedule):
    """Warmup-stable-decay: 0 -> base over warmup_steps, base until the decay, decay over decay_steps to eta_min
    (linear, cosine, or 1 - sqrt), ending at total_steps; eta_min held after it."""

    name = WSD_NAME

    def __init__(self, total_steps, decay_steps, warmup_steps=0, eta_min=0.0, shape="linear"):
        total_steps, decay_steps, warmup_steps = _as_int(total_steps), _as_int(decay_steps), _as_int(warmup_steps)
        _check_int("max_steps (wsd)", total_steps, 1)
        _check_int("wsd_decay_steps", decay_steps, 1)
        _check_int("restart_warmup_steps", warmup_steps, 0)
        _check_number("eta_min", eta_min, 0)
        _check_choice("wsd_decay_shape", shape, WSD_SHAPES)
        _check(warmup_steps + decay_steps <= total_steps,
               "wsd warmup ({}) + decay ({}) steps exceed the run's {} steps; shorten them or train longer",
               warmup_steps, decay_steps, total_steps)
        self.total_steps, self.decay_steps, self.warmup_steps = total_steps, decay_steps, warmup_steps
        self.eta_min, self.shape = eta_min, shape

    def lr(self, n, base_lr):
        if n < self.warmup_steps:
            return base_lr * n / self.warmup_steps
        start = self.total_steps - self.decay_steps
        if n < start:
            return base_lr
        if n >= self.total_steps:
            return self.eta_min
        frac = (n - start) / self.decay_steps
        if self.shape == "linear":
            return self.eta_min + (base_lr - self.eta_min) * (1 - frac)
        if self.shape == "cosine":
            return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * frac)) / 2
        return self.eta_min + (base_lr - self.eta_min) * (1 - math.sqrt(frac))


class AdaptiveRestart(Schedule):
    """Cosine cycles of `period` steps (eta_min held after one) that restart on evidence, not on a clock.

    Criteria (O'Donoghue & Candes, "Adaptive restart for accelerated gradient schemes"): ``loss``, the mean of the
    last `window` training losses of the cycle is above the mean of the `window` before them; ``gradient``, the
    gradient at the current point opposes the last update (g . dtheta > 0); ``either``. A restart needs at least
    `min_cycle` steps in the current cycle. Call ``observe`` with the step's loss and g . dtheta before ``step()``;
    the restart (if any) starts at the next step and is logged with its reason.
    """

    name = ADAPTIVE_NAME

    def __init__(self, period, eta_min=DEFAULT_ETA_MIN, warmup_steps=0, criterion="loss", window=10, min_cycle=100,
                 peak_decay=1.0):
        period, warmup_steps, window, min_cycle = (_as_int(v) for v in (period, warmup_steps, window, min_cycle))
        _check_int("adaptive_restart_period", period, 1)
        _check_number("eta_min", eta_min, 0)
        _check_int("restart_warmup_steps", warmup_steps, 0)
        _check_choice("adaptive_restart_criterion", criterion, ADAPTIVE_CRITERIA)
        _check_int("adaptive_restart_window", window, 1)
        _check_int("adaptive_restart_min_cycle", min_cycle, 1)
        _check_number("restart_peak_decay", peak_decay, 0, strict=True)
        _check(peak_decay <= 1, "restart_peak_decay must be in (0, 1], got {!r}", peak_decay)
        self.period, self.eta_min, self.warmup_steps = period, eta_min, warmup_steps
        self.criterion, self.window, self.min_cycle, self.peak_decay = criterion, window, min_cycle, peak_decay
        self._reset()

    def _reset(self):
        self.cycle_start = self.warmup_steps  # step at which the current cycle began
        self.cycles = 0  # restarts so far
        self.losses = []  # the current cycle's last 2 * window losses
        self.pending = None  # reason of a restart decided by observe(), applied by the next step
        self.restarts = []  # [step n at which a cycle started, reason]

    def settings(self):
        return {k: getattr(self, k) for k in ("period", "eta_min", "warmup_steps", "criterion", "window",
                                               "min_cycle", "peak_decay")}

    def observe(self, n, loss=None, grad_dot_update=None):
        """Record step n's training loss and g . dtheta (the lr of step n was lr(n - 1)); decide a restart."""
        if n <= self.warmup_steps:
            return
        if loss is not None:
            _check(math.isfinite(loss), "adaptive restart: the training loss is {!r} at step {}", loss, n)
            self.losses = (self.losses + [float(loss)])[-2 * self.window:]
        if n - self.cycle_start < self.min_cycle:
            return
        if self.criterion in ("loss", "either") and len(self.losses) == 2 * self.window:
            before = sum(self.losses[:self.window]) / self.window
            last = sum(self.losses[self.window:]) / self.window
            if last > before:
                self.pending = "loss moving average rose from {:.6g} to {:.6g} (window {})".format(
                    before, last, self.window)
                return
        if self.criterion in ("gradient", "either") and grad_dot_update is not None and grad_dot_update > 0:
            self.pending = "gradient opposes the last update (g.dtheta = {:.6g} > 0)".format(grad_dot_update)

    def advance(self, n):
        """Called by the scheduler when it moves to step n: apply a pending restart."""
        if self.pending is not None and n > self.cycle_start:
            self.restarts.append([n, self.pending])
            logger.info("adaptive restart at optimizer step %d: %s", n + 1, self.pending)
            self.cycle_start, self.cycles, self.losses, self.pending = n, self.cycles + 1, [], None

    def lr(self, n, base_lr):
        if n < self.warmup_steps:
            return base_lr * n / self.warmup_steps
        if n >= self.cycle_start:
            start, cycles = self.cycle_start, self.cycles
        else:  # an earlier step: the cycle it belonged to
            earlier = [step for step, _ in self.restarts if step <= n]
            start, cycles = (earlier[-1] if earlier else self.warmup_steps), len(earlier)
        peak = base_lr if self.peak_decay == 1 else base_lr * self.peak_decay ** cycles
        return cosine_cycle_lr(min(n - start, self.period), self.period, peak, self.eta_min)

    def restart_reason(self, n):
        for step, reason in self.restarts:
            if step == n:
                return reason
        return None

    def state_dict(self):
        return {"cycle_start": self.cycle_start, "cycles": self.cycles, "losses": list(self.losses),
                "pending": self.pending, "restarts": [list(r) for r in self.restarts]}

    def load_state_dict(self, state):
        self.cycle_start, self.cycles = state["cycle_start"], state["cycles"]
        self.losses, self.pending = list(state["losses"]), state["pending"]
        self.restarts = [list(r) for r in state["restarts"]]


class _Warmup(Schedule):
    """transformers' warmup: base * n / warmup for n < warmup (the same expression, so the same bits)."""

    def __init__(self, warmup_steps=0, total_steps=None):
        warmup_steps = _as_int(warmup_steps)
        _check_int("restart_warmup_steps", warmup_steps, 0)
        self.warmup_steps, self.total_steps = warmup_steps, _as_int(total_steps)

    def factor(self, n):
        raise NotImplementedError

    def lr(self, n, base_lr):
        return base_lr * self.factor(n)

    def _needs_total(self):
        _check(_is_int(self.total_steps) and self.total_steps > self.warmup_steps,
               "base_lr_scheduler {!r} needs max_steps greater than its warmup ({}), got {!r}",
               self.name, self.warmup_steps, self.total_steps)


class Constant(_Warmup):
    name = "constant"

    def factor(self, n):
        if n < self.warmup_steps:
            return float(n) / float(max(1.0, self.warmup_steps))
        return 1.0


class Linear(_Warmup):
    name = "linear"

    def __init__(self, warmup_steps=0, total_steps=None):
        super(Linear, self).__init__(warmup_steps, total_steps)
        self._needs_total()

    def factor(self, n):
        if n < self.warmup_steps:
            return float(n) / float(max(1, self.warmup_steps))
        return max(0.0, float(self.total_steps - n) / float(max(1, self.total_steps - self.warmup_steps)))


class Cosine(_Warmup):
    name = "cosine"

    def __init__(self, warmup_steps=0, total_steps=None):
        super(Cosine, self).__init__(warmup_steps, total_steps)
        self._needs_total()

    def factor(self, n):
        if n < self.warmup_steps:
            return float(n) / float(max(1, self.warmup_steps))
        progress = float(n - self.warmup_steps) / float(max(1, self.total_steps - self.warmup_steps))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


class Polynomial(_Warmup):
    """transformers' polynomial decay (power 1, lr_end 1e-7), relative to each group's own base lr."""

    name = "polynomial"

    def __init__(self, warmup_steps=0, total_steps=None, lr_end=1e-7, power=1.0):
        super(Polynomial, self).__init__(warmup_steps, total_steps)
        self._needs_total()
        self.lr_end, self.power = lr_end, power

    def lr(self, n, base_lr):
        _check(base_lr > self.lr_end, "polynomial lr_end ({}) must be smaller than the lr ({})", self.lr_end, base_lr)
        if n < self.warmup_steps:
            return base_lr * (float(n) / float(max(1, self.warmup_steps)))
        if n > self.total_steps:
            return base_lr * (self.lr_end / base_lr)
        pct_remaining = 1 - (n - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        decay = (base_lr - self.lr_end) * pct_remaining ** self.power + self.lr_end
        return base_lr * (decay / base_lr)


BASE_CLASSES = {cls.name: cls for cls in (Constant, Linear, Cosine, Polynomial)}


class GroupScheduler(_LRScheduler):
    """ONE scheduler over the optimizer's parameter groups, stepped once per optimizer step.

    A group follows `restart` when restart_scope is "all" or its ``param_space`` entry is the scope; every other
    group follows `base` (default: constant). ``observe(loss, grad_dot_update)`` before ``step()`` feeds an adaptive
    restart. ``restart_reason`` names the restart that the current lr starts (None when it starts none);
    ``state_dict()`` holds the step count, the adaptive state and the settings, which ``load_state_dict`` checks.
    """

    def __init__(self, optimizer, restart, base=None, scope="all"):
        _check_choice("restart_scope", scope, SCOPES)
        self.restart, self.base, self.scope = restart, base or Constant(), scope
        if scope != "all":
            spaces = [group.get("param_space") for group in optimizer.param_groups]
            _check(all(spaces), "restart_scope {!r} needs optimizer parameter groups tagged with param_space; "
                                "the trainer must build them with param_spaces.parameter_groups", scope)
            _check(scope in spaces, "restart_scope {!r}: the model has no {} parameters (groups: {}); use "
                                    "restart_scope all", scope, scope, ", ".join(sorted(set(spaces))))
        self.schedules = [self.restart if self._restarts(group) else self.base for group in optimizer.param_groups]
        self.restart_reason = None
        super(GroupScheduler, self).__init__(optimizer)

    @property
    def observes(self):
        """What observe() needs each step: () for a clock-driven schedule, else a subset of ("loss", "gradient")."""
        criterion = getattr(self.restart, "criterion", None)
        return {"loss": ("loss",), "gradient": ("gradient",), "either": ("loss", "gradient")}.get(criterion, ())

    def _restarts(self, group):
        return self.scope == "all" or group.get("param_space") == self.scope

    def observe(self, loss=None, grad_dot_update=None):
        """The training loss and g . dtheta (summed over the restarted groups) of the step just taken."""
        self.restart.observe(self.last_epoch + 1, loss, grad_dot_update)

    def step(self, epoch=None):
        if epoch is not None:
            raise TypeError("{} is stepped once per optimizer step; step(epoch) is not supported".format(
                type(self).__name__))
        self.last_epoch += 1
        n = self.last_epoch
        if hasattr(self.restart, "advance"):
            self.restart.advance(n)
        for group, base_lr, schedule in zip(self.optimizer.param_groups, self.base_lrs, self.schedules):
            group["lr"] = schedule.lr(n, base_lr)
        self.restart_reason = self.restart.restart_reason(n)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_lr(self):
        return [s.lr(self.last_epoch, b) for s, b in zip(self.schedules, self.base_lrs)]

    def describe(self):
        """One line: which groups follow which schedule."""
        return "restart_scope {}: {} groups follow {}, {} follow {}".format(
            self.scope, sum(s is self.restart for s in self.schedules), self.restart.name,
            sum(s is self.base for s in self.schedules), self.base.name)

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs), "scope": self.scope,
                "restart": {"name": self.restart.name, "settings": self.restart.settings()},
                "base": {"name": self.base.name, "settings": self.base.settings()},
                "restart_state": self.restart.state_dict(), "_last_lr": list(self._last_lr),
                "restart_reason": self.restart_reason}

    def load_state_dict(self, state):
        if "restart" not in state:  # a checkpoint of the RestartScheduler that subclassed torch's SGDR
            state = _legacy_state(state, self)
        saved = (state["scope"], state["restart"]["name"], state["restart"]["settings"], state["base"]["name"],
                 state["base"]["settings"])
        mine = (self.scope, self.restart.name, self.restart.settings(), self.base.name, self.base.settings())
        _check(saved == mine, "the checkpoint's lr scheduler was {}, this run's is {}; resume with the same "
                              "scheduler settings", _describe(saved), _describe(mine))
        self.last_epoch, self.base_lrs = state["last_epoch"], list(state["base_lrs"])
        self.restart.load_state_dict(state["restart_state"])
        self._last_lr, self.restart_reason = list(state["_last_lr"]), state["restart_reason"]


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


def split_by_space(groups, spaces):
    """Optimizer parameter groups split by parameter space and tagged with ``param_space``.

    groups: the trainer's groups (dicts with "params" and options such as weight_decay); spaces:
    param_spaces.parameter_groups(model, trainable_only=False), {space: [(name, param)]}. Each group becomes one group
    per space it holds (same options); empty ones are dropped."""
    space_of = {}
    for space, named in spaces.items():
        for _, param in named:
            space_of[id(param)] = space
    out = []
    for group in groups:
        for space in spaces:
            params = [p for p in group["params"] if space_of.get(id(p)) == space]
            if params:
                tagged = dict(group, params=params, param_space=space)
                out.append(tagged)
    missing = sum(1 for g in groups for p in g["params"] if id(p) not in space_of)
    _check(not missing, "{} optimizer parameters belong to no parameter space; param_spaces.parameter_groups must "
                        "cover every parameter of the model", missing)
    return out


def _describe(saved):
    scope, name, settings, base, base_settings = saved
    return "{} {} (restart_scope {}, base {} {})".format(name, settings, scope, base, base_settings)


def _legacy_state(state, scheduler):
    """The state of the pre-family RestartScheduler (torch's CosineAnnealingWarmRestarts + warmup) in this form."""
    sgdr = SGDR(state["T_0"], state["T_mult"], state["eta_min"], state.get("warmup_steps", 0))
    return {"last_epoch": state["global_step"], "base_lrs": state["base_lrs"], "scope": "all",
            "restart": {"name": sgdr.name, "settings": sgdr.settings()},
            "base": {"name": scheduler.base.name, "settings": scheduler.base.settings()}, "restart_state": {},
            "_last_lr": state["_last_lr"], "restart_reason": None}


class RestartScheduler(GroupScheduler):
    """The paper's SGDR over every group (torch's CosineAnnealingWarmRestarts, bit for bit), with an optional linear
    warmup: during the first ``warmup_steps`` steps the lr rises from 0 to the base lr and the SGDR clock waits."""

    def __init__(self, optimizer, t_0=DEFAULT_T0, t_mult=DEFAULT_T_MULT, eta_min=DEFAULT_ETA_MIN, warmup_steps=0):
        super(RestartScheduler, self).__init__(optimizer, SGDR(t_0, t_mult, eta_min, warmup_steps))

    T_0 = property(lambda self: self.restart.t_0)
    T_mult = property(lambda self: self.restart.t_mult)
    eta_min = property(lambda self: self.restart.eta_min)
    warmup_steps = property(lambda self: self.restart.warmup_steps)


def cycle_end_steps(t_0, t_mult, warmup_steps=0, up_to=None, count=None, cycle_warmup=0):
    """Step counts after which a cycle ends (the lr has just reached its minimum):
    W + T_0 + (w + T_0 m) + ... + (w + T_0 m^(n-1)), w the warmup at each restart."""
    check_restart_arguments(t_0, t_mult, 0, warmup_steps)
    if up_to is None and count is None:
        raise ValueError("cycle_end_steps needs up_to or count, or it would never end")
    ends, total, length, i = [], warmup_steps, t_0, 0
    while True:
        total += length + (cycle_warmup if i else 0)
        if up_to is not None and total > up_to:
            ends.append(total)  # the first end beyond the limit, so callers can name the next aligned value
            return ends
        ends.append(total)
        if count is not None and len(ends) >= count:
            return ends
        length, i = length * t_mult, i + 1


def nearest_aligned_steps(max_steps, t_0, t_mult, warmup_steps=0, cycle_warmup=0):
    """(below, above) aligned step counts around max_steps; below is None when no cycle ends before it."""
    ends = cycle_end_steps(t_0, t_mult, warmup_steps, up_to=max_steps, cycle_warmup=cycle_warmup)
    below = [e for e in ends if e <= max_steps]
    return (below[-1] if below else None), ends[-1]


def check_alignment(max_steps, t_0, t_mult, warmup_steps=0, unit="steps", cycle_warmup=0):
    """Warn (and return the message) when a run of ``max_steps`` does not stop at a cycle end; None when it does."""
    below, above = nearest_aligned_steps(max_steps, t_0, t_mult, warmup_steps, cycle_warmup)
    if below == max_steps:
        return None
    nearest = "{} or {}".format(below, above) if below is not None else str(above)
    extra = ", cycle_warmup={}".format(cycle_warmup) if cycle_warmup else ""
    message = (
        "max_steps={} does not end at a restart cycle end (T_0={}, T_mult={}, warmup_steps={}{}, in {}): "
        "the run stops mid-cycle, not at eta_min. Nearest aligned max_steps: {}.".format(
            max_steps, t_0, t_mult, warmup_steps, extra, unit, nearest)
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


def _arg(args, name, default):
    value = args.get(name, default) if isinstance(args, dict) else getattr(args, name, default)
    return default if value is None else value


def schedules_from_args(args, num_training_steps=None):
    """(restart schedule, base schedule, scope) from training arguments (an object or a dict), checked.

    Arguments: lr_scheduler (a FAMILY_NAMES name), restart_t0, restart_t_mult, eta_min, restart_warmup_steps,
    restart_cycle_warmup, restart_peak_decay, restart_cycle_limit, restart_after_limit, wsd_decay_steps,
    wsd_decay_shape, adaptive_restart_period (0: the run's length), adaptive_restart_criterion,
    adaptive_restart_window, adaptive_restart_min_cycle, restart_scope, base_lr_scheduler. The base schedule warms up
    over the same restart_warmup_steps.
    """
    name = canonical_scheduler_name(_arg(args, "lr_scheduler", SCHEDULER_NAME))
    _check_choice("lr_scheduler (restart family)", name, (SCHEDULER_NAME, WSD_NAME, ADAPTIVE_NAME))
    warmup = _arg(args, "restart_warmup_steps", 0)
    eta_min = _arg(args, "eta_min", DEFAULT_ETA_MIN)
    decay = _arg(args, "restart_peak_decay", 1.0)
    total = _as_int(num_training_steps) if num_training_steps else None
    if name == SCHEDULER_NAME:
        restart = SGDR(_arg(args, "restart_t0", DEFAULT_T0), _arg(args, "restart_t_mult", DEFAULT_T_MULT), eta_min,
                       warmup, _arg(args, "restart_cycle_warmup", 0), decay, _arg(args, "restart_cycle_limit", 0),
                       _arg(args, "restart_after_limit", "eta_min"))
    elif name == WSD_NAME:
        _check(total is not None, "lr_scheduler wsd needs the run's length (max_steps)")
        restart = WSD(total, _arg(args, "wsd_decay_steps", 0), warmup, eta_min, _arg(args, "wsd_decay_shape", "linear"))
    else:
        period = _arg(args, "adaptive_restart_period", 0) or total
        _check(period is not None, "lr_scheduler adaptive_restart needs adaptive_restart_period or max_steps")
        restart = AdaptiveRestart(period, eta_min, warmup, _arg(args, "adaptive_restart_criterion", "loss"),
                                  _arg(args, "adaptive_restart_window", 10), _arg(args, "adaptive_restart_min_cycle", 100),
                                  decay)
    base_name = _arg(args, "base_lr_scheduler", "constant")
    _check_choice("base_lr_scheduler", base_name, BASE_SCHEDULES)
    base = BASE_CLASSES[base_name](warmup, total)
    scope = _arg(args, "restart_scope", "all")
    _check_choice("restart_scope", scope, SCOPES)
    return restart, base, scope


def restart_scheduler_from_args(optimizer, args, num_training_steps=None):
    """The GroupScheduler of an upstream's training arguments (see schedules_from_args); warns when an SGDR run of
    num_training_steps does not stop at a cycle end."""
    restart, base, scope = schedules_from_args(args, num_training_steps)
    if num_training_steps and isinstance(restart, SGDR) and not restart.cycle_limit:
        check_alignment(num_training_steps, restart.t_0, restart.t_mult, restart.warmup_steps,
                        cycle_warmup=restart.cycle_warmup)
    scheduler = GroupScheduler(optimizer, restart, base, scope)
    logger.info(scheduler.describe())
    return scheduler
