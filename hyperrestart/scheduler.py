"""The restart scheduler, loaded from its single source in overlay/common (the file dropped into both upstreams)."""
import importlib.util
import sys

from .paths import RESTART_SCHEDULER_FILE


def _load():
    name = "hyperrestart._restart_scheduler"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, RESTART_SCHEDULER_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_module = _load()
RestartScheduler = _module.RestartScheduler
cycle_end_steps = _module.cycle_end_steps
nearest_aligned_steps = _module.nearest_aligned_steps
check_alignment = _module.check_alignment
canonical_scheduler_name = _module.canonical_scheduler_name
restart_scheduler_from_args = _module.restart_scheduler_from_args
SCHEDULER_NAME = _module.SCHEDULER_NAME
SCHEDULER_NAMES = _module.SCHEDULER_NAMES
