"""The lr schedule, counted in scheduler steps (one per --scheduler_step_unit optimizer steps). The names are the
upstream trainers' own (restart_scheduler.py's one table): the restart schedule cosine_annual_w_restarts with its
aliases, and transformers' linear / cosine / cosine_w_restarts / polynomial / constant / constant_w_warmup."""
import importlib
import importlib.util
import logging
import sys
import types
import warnings
from pathlib import Path

logger = logging.getLogger("p3_trainer")
# overlay/hyperdecoders/hyperdecoder/p3_runner/schedules.py -> overlay/common/restart_scheduler.py (project layout)
PROJECT_COPY = Path(__file__).resolve().parents[3] / "common" / "restart_scheduler.py"
SHARED_NAME = "hyperrestart._restart_scheduler"  # the name hyperrestart.upstream.scheduler loads it under


def restart_scheduler():
    """The restart_scheduler module: the tree's copy (third_party.trainers.restart_scheduler) inside hyperdecoders,
    else the project's overlay/common/restart_scheduler.py (the same file)."""
    try:
        import third_party.trainers.restart_scheduler as module
        return module
    except ImportError:
        pass
    if SHARED_NAME not in sys.modules:
        if not PROJECT_COPY.is_file():
            raise ImportError(f"restart_scheduler.py not found: neither third_party.trainers (run p3_trainer.py "
                              f"inside the hyperdecoders tree) nor {PROJECT_COPY}")
        spec = importlib.util.spec_from_file_location(SHARED_NAME, PROJECT_COPY)
        module = importlib.util.module_from_spec(spec)
        sys.modules[SHARED_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[SHARED_NAME]


def trainer_hooks():
    """overlay/common/trainer_hooks.py: the tree's copy (third_party.trainers) inside hyperdecoders, else the project's,
    imported as a package over overlay/common that shares the restart_scheduler module loaded above."""
    try:
        from third_party.trainers import trainer_hooks as module
        return module
    except ImportError:
        pass
    name = "hyperrestart_overlay_common"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(PROJECT_COPY.parent)]
        sys.modules[name] = package
        sys.modules[name + ".restart_scheduler"] = restart_scheduler()
    return importlib.import_module(name + ".trainer_hooks")


def scheduler_names():
    """Every lr_scheduler name the runner accepts: the upstream trainers' (the one table)."""
    return restart_scheduler().ALL_SCHEDULER_NAMES


def canonical_name(name):
    """The canonical spelling of a scheduler name (aliases of the restart schedule -> its name); ValueError for a
    name the upstream trainers do not know."""
    module = restart_scheduler()
    if name not in module.ALL_SCHEDULER_NAMES:
        raise ValueError(f"--lr_scheduler {name!r}: choose one of {', '.join(module.ALL_SCHEDULER_NAMES)}")
    return module.canonical_scheduler_name(name)


def is_restart(name):
    """A schedule of the restart family (SGDR and its aliases, wsd, adaptive_restart)."""
    return name in restart_scheduler().FAMILY_NAMES


def build_scheduler(args, optimizer):
    """The lr scheduler of args.lr_scheduler, counted in scheduler steps (one per --scheduler_step_unit optimizer
    steps); warns when --max_steps does not end at a restart cycle end."""
    unit = args.scheduler_step_unit
    total = args.max_steps // unit
    module = restart_scheduler()
    if is_restart(args.lr_scheduler):
        if args.max_steps % unit:
            message = (f"max_steps={args.max_steps} is not a multiple of scheduler_step_unit={unit}: the run stops "
                       f"inside a scheduler step, not at a restart cycle end")
            warnings.warn(message)
            logger.warning(message)
        elif args.lr_scheduler in module.SCHEDULER_NAMES and not args.restart_cycle_limit:
            module.check_alignment(total, args.restart_t0, args.restart_t_mult, args.restart_warmup_steps,
                                   unit=f"scheduler steps of {unit} optimizer steps",
                                   cycle_warmup=args.restart_cycle_warmup)
        restart, base, scope = module.schedules_from_args(args, max(total, 1))
        return module.GroupScheduler(optimizer, restart, base, scope)
    import transformers

    name = args.lr_scheduler
    if name == "constant" and args.warmup_steps:
        name = "constant_w_warmup"  # the runner's constant honours --warmup_steps
    make = getattr(transformers, module.HF_SCHEDULERS[name])
    if name == "constant":
        return make(optimizer)
    if name == "constant_w_warmup":
        return make(optimizer, args.warmup_steps)
    if name == "polynomial":
        return make(optimizer, args.warmup_steps, max(total, 1), lr_end=args.eta_min, power=args.polynomial_power)
    return make(optimizer, args.warmup_steps, max(total, 1))
