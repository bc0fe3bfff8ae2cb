"""Where the project's data lives: the lock, patches, overlay and configs sit beside the package in the checkout."""
import os
from pathlib import Path

from hyperrestart.core.errors import CacheError

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


def cache_error(path, exc: OSError) -> CacheError:
    """One line naming the cache location that cannot be written, and the variables that move it."""
    return CacheError(f"cannot write hyperrestart's cache at {path} ({exc.strerror or exc}); set "
                             f"HYPERRESTART_CACHE (or XDG_CACHE_HOME) to a writable folder")


def writable_cache_dir(*parts) -> Path:
    """cache_dir()/PARTS, created; cache_error when it cannot be."""
    path = cache_dir().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cache_error(path, exc) from None
    return path
