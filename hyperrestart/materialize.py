"""Materialising upstream trees in a destination: idempotent, atomic, and never losing a user's local edits."""
import datetime
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from . import gitops
from .build import build_tree, collect_inputs
from .errors import BusyError, HyperrestartError, LocalChangesError
from .sources import ensure_commit

STATE_FILE = "hyperrestart-state.json"  # kept inside .git: not part of the tree
TMP_PREFIX = ".hyperrestart-tmp-"
OLD_PREFIX = ".hyperrestart-old-"
BACKUP_DIR = ".hyperrestart-backups"


class DestinationLock:
    """An exclusive flock on DEST/.hyperrestart.lock: one bootstrap per destination at a time."""

    def __init__(self, dest: Path):
        self.path = Path(dest) / ".hyperrestart.lock"
        self.handle = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise BusyError(f"another hyperrestart run holds {self.path} (pid {holder}); wait for it to finish") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def state_path(tree: Path) -> Path:
    return Path(tree) / ".git" / STATE_FILE


def read_state(tree: Path):
    path = state_path(tree)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def write_state(tree: Path, state: dict):
    path = state_path(tree)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def recover(dest: Path, log=print):
    """Undo what an interrupted run left: scratch trees are removed; a tree moved aside but not replaced is put back."""
    for leftover in sorted(dest.glob(TMP_PREFIX + "*")):
        shutil.rmtree(leftover, ignore_errors=True)
    for old in sorted(dest.glob(OLD_PREFIX + "*")):
        name = old.name[len(OLD_PREFIX):]
        if not (dest / name).exists():
            log(f"{name}: restoring the tree an interrupted run had moved aside")
            old.rename(dest / name)
        else:
            shutil.rmtree(old, ignore_errors=True)


def local_changes(tree: Path, state: dict):
    """Files that differ between the tree on disk and the tree hyperrestart made (edits, new files, commits)."""
    current = gitops.worktree_tree(tree)
    if current == state["result_tree"]:
        return current, []
    return current, gitops.changed_files(tree, state["result_tree"], current)


def save_local_changes(dest: Path, tree: Path, state: dict, current_tree: str) -> Path:
    """Write the local changes as a binary-safe patch that `git apply` restores; return its path."""
    backups = dest / BACKUP_DIR
    backups.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = backups / f"{tree.name}-local-changes-{stamp}.patch"
    diff = gitops.run(tree, "diff", "--binary", "--no-renames", state["result_tree"], current_tree, strip=False)
    path.write_text(diff)
    return path


def desired_state(inputs, result_tree, lock_result_tree):
    return {"upstream": inputs.upstream.name, "url": inputs.upstream.url, "commit": inputs.upstream.commit,
            "profile": inputs.profile, "result_tree": result_tree, "lock_result_tree": lock_result_tree,
            **inputs.fingerprint()}


def is_current(state, inputs):
    return bool(state) and state.get("commit") == inputs.upstream.commit and state.get("profile") == inputs.profile \
        and state.get("lock_result_tree") == inputs.upstream.result_tree.get(inputs.profile) \
        and {"patches": state.get("patches"), "overlay": state.get("overlay")} == inputs.fingerprint()


def materialise_one(lock, name, dest: Path, profile, *, force=False, overrides=None, bundles=None, offline=False,
                    log=print):
    """Bring DEST/NAME to the locked state of `profile`. Returns 'up to date' or 'materialised'."""
    upstream = lock.upstream(name)
    inputs = collect_inputs(lock, upstream, profile)  # before anything is touched
    expected = upstream.result_tree.get(profile)
    if not expected:
        raise HyperrestartError(f"vendor.lock has no result_tree for {name} profile {profile}: "
                                f"run `python bootstrap.py lock` after changing patches or overlay")
    tree = dest / name
    state = None
    if tree.exists():
        state = read_state(tree)
        if state is None:
            raise HyperrestartError(f"{tree} exists but was not made by hyperrestart (no .git/{STATE_FILE}); "
                                    f"move it away or choose another --dest")
        current, changes = local_changes(tree, state)
        if changes:
            listing = "\n  ".join(changes)
            if not force:
                raise LocalChangesError(
                    f"local changes detected in {tree}; nothing was touched:\n  {listing}\n"
                    f"Keep them as patches with `python bootstrap.py export {name}`, or re-run with --force "
                    f"(saves them to {dest / BACKUP_DIR}/ first).")
            saved = save_local_changes(dest, tree, state, current)
            log(f"{name}: saved local changes to {saved} (restore with `git -C {tree} apply {saved}`)")
        elif is_current(state, inputs):
            log(f"{name}: up to date ({upstream.commit[:12]}, profile {profile}, tree {expected[:12]})")
            return "up to date"
    cache = ensure_commit(upstream, overrides=overrides, bundles=bundles, offline=offline, log=log)
    scratch = dest / f"{TMP_PREFIX}{name}-{os.getpid()}"
    try:
        started = time.monotonic()
        result = build_tree(cache, inputs, scratch, log=log)
        if result != expected:
            raise HyperrestartError(f"{name} ({profile}): built tree {result} but vendor.lock expects {expected}; "
                                    f"nothing was touched (after a deliberate change run `python bootstrap.py lock`)")
        write_state(scratch, desired_state(inputs, result, expected))
        swap_into_place(dest, scratch, tree)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    log(f"{name}: materialised {upstream.commit[:12]} + {len(inputs.patches)} patch(es) + "
        f"{len(inputs.overlay)} overlay file(s), profile {profile}, tree {result[:12]} verified "
        f"({time.monotonic() - started:.1f}s) -> {tree}")
    return "materialised"


def swap_into_place(dest: Path, scratch: Path, tree: Path):
    """Two renames; an interruption between them is undone by recover() on the next run."""
    old = dest / f"{OLD_PREFIX}{tree.name}"
    if tree.exists():
        if old.exists():
            shutil.rmtree(old)
        tree.rename(old)
    scratch.rename(tree)
    if old.exists():
        shutil.rmtree(old)


def materialise(lock, names, dest, profile, **kwargs):
    dest = Path(dest).resolve()
    log = kwargs.get("log", print)
    results = {}
    with DestinationLock(dest):
        recover(dest, log=log)
        for name in names:
            results[name] = materialise_one(lock, name, dest, profile, **kwargs)
    return results
