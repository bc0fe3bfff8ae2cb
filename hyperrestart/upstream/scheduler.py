"""The restart scheduler, loaded from its single source in overlay/common (the file dropped into both upstreams)."""
import warnings

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.overlay_import import load_overlay_module
from hyperrestart.core.paths import RESTART_SCHEDULER_FILE

_module = load_overlay_module("hyperrestart._restart_scheduler", RESTART_SCHEDULER_FILE)
RestartScheduler = _module.RestartScheduler
cycle_end_steps = _module.cycle_end_steps
nearest_aligned_steps = _module.nearest_aligned_steps
check_alignment = _module.check_alignment
restart_argument_problems = _module.restart_argument_problems
canonical_scheduler_name = _module.canonical_scheduler_name
restart_scheduler_from_args = _module.restart_scheduler_from_args
SCHEDULER_NAME = _module.SCHEDULER_NAME
SCHEDULER_NAMES = _module.SCHEDULER_NAMES
FAMILY_NAMES = _module.FAMILY_NAMES
BASE_SCHEDULES = _module.BASE_SCHEDULES
WSD_SHAPES = _module.WSD_SHAPES
SCOPES = _module.SCOPES
SGDR, WSD, AdaptiveRestart = _module.SGDR, _module.WSD, _module.AdaptiveRestart
BASE_CLASSES = _module.BASE_CLASSES
Constant, Linear, Cosine, Polynomial = _module.Constant, _module.Linear, _module.Cosine, _module.Polynomial
GroupScheduler = _module.GroupScheduler
schedules_from_args = _module.schedules_from_args


# The upstreams' arg_to_scheduler: name -> transformers function (each takes optimizer, warmup[, total]).
HF_SCHEDULERS = _module.HF_SCHEDULERS
ALL_SCHEDULER_NAMES = _module.ALL_SCHEDULER_NAMES


def _optimizer(lr):
    import torch
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def restart_settings_raw(config):
    """(T_0, T_mult, eta_min, warmup steps) of a restart config as written, with the trainers' defaults."""
    return (config.get("restart_t0", _module.DEFAULT_T0), config.get("restart_t_mult", _module.DEFAULT_T_MULT),
            config.get("eta_min", _module.DEFAULT_ETA_MIN), config.get("restart_warmup_steps") or 0)


def restart_settings(config):
    """restart_settings_raw, refused (one line) when a value is out of range: checked before any loop over
    cycles runs (restart_argument_problems)."""
    settings = restart_settings_raw(config)
    problems = restart_argument_problems(*settings)
    if problems:
        raise HyperrestartError("; ".join(problems))
    return settings


def lr_schedule(config, max_steps):
    """[lr applied by optimizer step k for k in 1..max_steps] (the lr after k-1 scheduler steps) of a config:
    the restart scheduler on a dummy parameter, or transformers' schedule."""
    name = config.get("lr_scheduler", "linear")
    lr = float(config.get("learning_rate", 5e-5))
    if name == _module.ADAPTIVE_NAME:
        raise HyperrestartError("lr_scheduler adaptive_restart restarts when training says so: its lr is known only "
                                "from a run (diagnostics.csv), not from the config")
    if name in FAMILY_NAMES:
        try:  # the restarted groups' lr (restart_scope does not change it)
            restart, _, _ = schedules_from_args(dict(config, restart_scope="all"), max_steps)
        except ValueError as exc:
            raise HyperrestartError(str(exc)) from None
        sched = GroupScheduler(_optimizer(lr), restart)
        group = sched.optimizer.param_groups[0]
        lrs = [group["lr"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": no training here
            for _ in range(max_steps - 1):
                sched.step()
                lrs.append(group["lr"])
        return lrs
    if name not in HF_SCHEDULERS:
        raise HyperrestartError(f"lr_scheduler {name!r} is not known; use one of: "
                                f"{', '.join(sorted(ALL_SCHEDULER_NAMES))}")
    import transformers
    make = getattr(transformers, HF_SCHEDULERS[name])
    warmup = int(config.get("warmup_steps") or 0)
    if name == "constant":
        sched = make(_optimizer(lr))
    elif name == "constant_w_warmup":
        sched = make(_optimizer(lr), warmup)
    else:
        sched = make(_optimizer(lr), warmup, max_steps)
    factor = sched.lr_lambdas[0]  # LambdaLR: the lr after n steps is lr * factor(n), no need to step
    return [lr * factor(n) for n in range(max_steps)]
