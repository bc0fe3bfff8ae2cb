"""Where the project's data lives: the lock, patches, overlay and configs sit beside the package in the checkout."""
import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("HYPERRESTART_PROJECT_ROOT", Path(__file__).resolve().parents[2]))
LOCK_FILE = PROJECT_ROOT / "vendor.lock"
PATCHES_DIR = PROJECT_ROOT / "patches"
OVERLAY_DIR = PROJECT_ROOT / "overlay"
CONFIGS_DIR = PROJECT_ROOT / "configs"
REQUIREMENTS_DIR = PROJECT_ROOT / "requirements"
DEFAULT_DEST = PROJECT_ROOT / "upstream"
RESTART_SCHEDULER_FILE = OVERLAY_DIR / "common" / "restart_scheduler.py"


def cache_dir() -> Path:
    """Per-user cache (fetched upstream objects, tiny models); HYPERRESTART_CACHE overrides."""
    base = os.environ.get("HYPERRESTART_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "hyperrestart")
    return Path(base)
