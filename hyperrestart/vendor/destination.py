"""Where trees may be materialised: a folder of its own, never a file, the filesystem root, the tool's cache or any
git repository's internals. Checked (symlinks resolved) before anything is touched."""
import os
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import cache_dir
from hyperrestart.vendor.patchcheck import is_dot_git


def _is_git_dir(path: Path) -> bool:
    """A repository's internals (a .git folder or a bare repository): HEAD, objects/ and refs/ together."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def problem(dest: Path):
    """Why DEST (resolved) may not hold trees, or None."""
    if dest.exists() and not dest.is_dir():
        return "is an existing file, not a folder"
    if dest == Path(dest.anchor):
        return "is the filesystem root"
    cache = Path(os.path.realpath(cache_dir()))
    if dest == cache or cache in dest.parents:
        return f"is inside hyperrestart's cache {cache} (the fetched upstreams live there)"
    if any(is_dot_git(part) for part in dest.parts):
        return "is inside a .git folder"
    inside = next((p for p in (dest, *dest.parents) if _is_git_dir(p)), None)
    if inside:
        return f"is inside the git repository internals {inside}"
    return None


def checked_destination(dest) -> Path:
    """DEST resolved (symlinks followed) and created; one line and nothing touched when it may not hold trees."""
    resolved = Path(os.path.realpath(dest))
    why = problem(resolved)
    if why:
        shown = f"{dest} ({resolved})" if str(resolved) != str(dest) else str(dest)
        raise HyperrestartError(f"--dest {shown} {why}; refusing it: choose a folder of its own for the trees, "
                                f"e.g. --dest ./upstream")
    try:
        resolved.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HyperrestartError(f"--dest {dest}: cannot create the folder ({exc.strerror}); choose a writable "
                                f"folder") from None
    return resolved
