"""Folders the tool makes beside the trees (scratch builds, replaced trees), and the proof that it made them: a marker
inside the folder's .git, naming the folder, with the pid and time of the run that wrote it. Only a folder holding a
valid marker is ever deleted or renamed by the tool; anything else under those names is the user's."""
import datetime
import json
import os
import shutil
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_json

MARKER = "hyperrestart-owner.json"  # in FOLDER/.git: never part of a tree, never an untracked file
ROLES = ("scratch", "superseded", "disposing")


def marker_path(folder: Path) -> Path:
    return Path(folder) / ".git" / MARKER


def write_marker(folder: Path, name, role):
    """Mark FOLDER (already holding .git) as the tool's, valid while the folder is called `name`."""
    assert role in ROLES
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(marker_path(folder), {"folder": name, "role": role, "pid": os.getpid(), "time": now})


def read_marker(folder: Path):
    """The marker of FOLDER, or None when it has no valid one (missing, unreadable, wrong shape, or written for a
    folder of another name: a copy or a live tree is never taken for a leftover)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        marker = json.loads(marker_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    valid = type(marker) is dict and marker.get("folder") == folder.name and marker.get("role") in ROLES \
        and type(marker.get("pid")) is int and type(marker.get("time")) is str
    return marker if valid else None


def _marker_only(name):
    """The marker, or the temp file it is written through (core.files.atomic_path), and nothing else."""
    return name == MARKER or name.startswith(f".{MARKER}.tmp-")


def is_empty_shell(folder: Path) -> bool:
    """FOLDER holds nothing but a .git folder that is empty or holds only this tool's marker file (whole or half
    written): what a kill leaves between creating a folder and marking it, or between removing its last file and the
    folder itself. Removing it loses nothing of the user's."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    children = list(folder.iterdir())
    if not children:
        return True
    git_dir = children[0]
    if len(children) > 1 or git_dir.name != ".git" or git_dir.is_symlink() or not git_dir.is_dir():
        return False
    return all(_marker_only(p.name) and p.is_file() and not p.is_symlink() for p in git_dir.iterdir())


def remove_empty_shell(folder: Path):
    folder = Path(folder)
    if (folder / ".git").is_dir():
        for path in (folder / ".git").iterdir():
            path.unlink()
        (folder / ".git").rmdir()
    folder.rmdir()


def make_scratch(folder: Path) -> Path:
    """Create FOLDER/.git with its marker before anything else goes in (a kill leaves at most an empty folder)."""
    (Path(folder) / ".git").mkdir(parents=True)
    write_marker(folder, Path(folder).name, "scratch")
    return Path(folder)


def remove_owned(folder: Path):
    """Delete a folder that holds a valid marker, the marker last: a kill part-way leaves a folder that is still
    provably the tool's, and the next run finishes the job."""
    folder = Path(folder)
    if read_marker(folder) is None:
        raise HyperrestartError(f"{folder} holds no hyperrestart marker; it was left alone")
    try:
        for child in sorted(folder.iterdir()):
            if child.name != ".git":
                _remove(child)
        for child in sorted((folder / ".git").iterdir()):
            if child.name != MARKER:
                _remove(child)
        marker_path(folder).unlink()
        (folder / ".git").rmdir()
        folder.rmdir()
    except OSError as exc:
        raise HyperrestartError(f"cannot delete {folder}, a folder hyperrestart made ({exc.strerror}: {exc.filename}); "
                                f"fix its permissions or delete it by hand, then rerun") from None


def _remove(path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
