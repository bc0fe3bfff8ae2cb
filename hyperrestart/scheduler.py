"""The restart scheduler, loaded from its single source in overlay/common (the file dropped into both upstreams)."""
from .overlay_import import load_overlay_module
from .paths import RESTART_SCHEDULER_FILE

_module = load_overlay_module("hyperrestart._restart_scheduler", RESTART_SCHEDULER_FILE)
RestartScheduler = _module.RestartScheduler
cycle_end_steps = _module.cycle_end_steps
nearest_aligned_steps = _module.nearest_aligned_steps
check_alignment = _module.check_alignment
canonical_scheduler_name = _module.canonical_scheduler_name
restart_scheduler_from_args = _module.restart_scheduler_from_args
SCHEDULER_NAME = _module.SCHEDULER_NAME
SCHEDULER_NAMES = _module.SCHEDULER_NAMES
