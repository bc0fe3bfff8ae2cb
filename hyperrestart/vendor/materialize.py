"""Materialising upstream trees in a destination: idempotent, atomic, and never losing a user's local edits."""
import datetime
import json
import os
import shutil
import time
from pathlib import Path

from hyperrestart.vendor import gitops
from hyperrestart.vendor.build import BASE_TAG, PATCHED_TAG, build_tree, collect_inputs
from hyperrestart.core.files import atomic_write_json, file_sha256
from hyperrestart.core.errors import BusyError, HyperrestartError, LocalChangesError
from hyperrestart.core.locks import FileLock
from hyperrestart.vendor.sources import cached_commit

STATE_FILE = "hyperrestart-state.json"  # kept inside .git: not part of the tree
TMP_PREFIX = ".hyperrestart-tmp-"
OLD_PREFIX = ".hyperrestart-old-"
BACKUP_DIR = ".hyperrestart-backups"
REGENERABLE_DIR = "__pycache__"
OWN_REFS = {"refs/heads/hyperrestart", f"refs/tags/{BASE_TAG}", f"refs/tags/{PATCHED_TAG}"}  # made by build_tree


class DestinationLock(FileLock):
    """An exclusive flock on DEST/.hyperrestart.lock: one bootstrap per destination at a time."""

    def __init__(self, dest: Path):
        super().__init__(Path(dest) / ".hyperrestart.lock")

    def __enter__(self):
        self._open()
        if not self.try_exclusive():
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise BusyError(f"another hyperrestart run holds {self.path} (pid {holder}); wait for it to finish")
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self


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
    atomic_write_json(path, state, sort_keys=True)


def recover(dest: Path, log=print):
    """Undo what an interrupted run left: scratch trees are removed; a tree moved aside but not replaced is put back,
    one that was replaced is disposed of as after a normal swap (never deleted while it holds anything of the user)."""
    for leftover in sorted(dest.glob(TMP_PREFIX + "*")):
        shutil.rmtree(leftover, ignore_errors=True)
    for old in sorted(dest.glob(OLD_PREFIX + "*")):
        name = old.name[len(OLD_PREFIX):]
        if not (dest / name).exists():
            log(f"{name}: restoring the tree an interrupted run had moved aside")
            old.rename(dest / name)
        else:
            dispose_old_tree(dest, old, name, log)


def local_changes(tree: Path, state: dict):
    """Files that differ between the tree on disk and the tree hyperrestart made (edits, new files, commits)."""
    current = gitops.worktree_tree(tree)
    if current == state["result_tree"]:
        return current, []
    return current, gitops.changed_files(tree, state["result_tree"], current)


def _regenerable(path):
    """Ignored paths a rebuild may drop: Python's bytecode caches, which it regenerates. (The environments of
    `hyperrestart env` live in DEST/.venvs, beside the trees, and are never touched by a rebuild.)"""
    return REGENERABLE_DIR in path.rstrip("/").split("/") or path.endswith((".pyc", ".pyo"))


def git_metadata(tree: Path) -> dict:
    """sha256 of the repository files a user changes by hand or with `git config`: config, info/exclude, hooks."""
    git_dir = Path(tree) / ".git"
    files = [git_dir / "config", git_dir / "info" / "exclude", *sorted((git_dir / "hooks").glob("*"))]
    return {f.relative_to(git_dir).as_posix(): file_sha256(f)
            for f in files if f.is_file() and not f.name.endswith(".sample")}


def outside_the_tree(tree: Path, state: dict) -> list:
    """What a rebuild would lose besides the tree's content: ignored files (not regenerable ones), refs hyperrestart
    did not make (branches, tags, the stash), commits past the one it made, changed git config or hooks, linked
    worktrees. Remote-tracking refs are not listed: they are fetched again."""
    items = []
    ignored = gitops.run(tree, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory")
    items += [f"ignored {p}" for p in ignored.split("\0") if p and not _regenerable(p)]
    for ref in gitops.run(tree, "for-each-ref", "--format=%(refname)").splitlines():
        if ref not in OWN_REFS and not ref.startswith("refs/remotes/"):
            items.append(f"ref {ref}")
    if state.get("head"):
        try:
            count = int(gitops.run(tree, "rev-list", "--count", "--ignore-missing", "HEAD", "refs/heads/hyperrestart",
                                   "--not", state["head"]))
        except gitops.GitError:
            count = -1
        if count:
            items.append(f"commits on HEAD or branch hyperrestart that hyperrestart did not make "
                         f"({count if count > 0 else 'unknown number'})")
    if "git_metadata" in state:
        now, then = git_metadata(tree), state["git_metadata"]
        items += [f"changed .git/{f}" for f in sorted(set(now) | set(then)) if now.get(f) != then.get(f)]
    if any((Path(tree) / ".git" / "worktrees").glob("*")):
        items.append("linked worktrees (`git worktree list`)")
    return items


def save_local_changes(dest: Path, tree: Path, state: dict, current_tree: str) -> Path:
    """Write the local changes as a binary-safe patch (bytes: any encoding) that `git apply` restores; return it."""
    path = _unique(dest / BACKUP_DIR, f"{tree.name.removeprefix(OLD_PREFIX)}-local-changes-{_stamp()}", ".patch")
    diff = gitops.run(tree, "diff", "--binary", "--no-renames", state["result_tree"], current_tree, binary=True)
    path.write_bytes(diff)
    return path


def _stamp():
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _unique(folder: Path, stem, suffix="") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


def dispose_old_tree(dest: Path, old: Path, name, log=print):
    """Delete a replaced tree, unless it holds anything hyperrestart did not make: then move it, whole, into
    DEST/.hyperrestart-backups/ (its content changes also saved as a patch) and say where."""
    state = read_state(old)
    if state is None:
        items, current, changes = ["no hyperrestart state file"], None, []
    else:
        current, changes = local_changes(old, state)
        items = changes + outside_the_tree(old, state)
    if not items:
        shutil.rmtree(old)
        return None
    patch = save_local_changes(dest, old, state, current) if changes else None
    backup = _unique(dest / BACKUP_DIR, f"{name}-{_stamp()}")
    old.rename(backup)
    log(f"{name}: the old tree held things hyperrestart did not make ({'; '.join(items[:5])}"
        f"{'; ...' if len(items) > 5 else ''}): moved it, whole, to {backup}")
    if patch:
        log(f"{name}: its edits are also saved as {patch} (restore with `git -C {dest / name} apply {patch}`)")
    return backup


def desired_state(inputs, tree: Path, result_tree, lock_result_tree):
    return {"upstream": inputs.upstream.name, "url": inputs.upstream.url, "commit": inputs.upstream.commit,
            "profile": inputs.profile, "result_tree": result_tree, "lock_result_tree": lock_result_tree,
            "head": gitops.run(tree, "rev-parse", "HEAD"), "git_metadata": git_metadata(tree), **inputs.fingerprint()}


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
    if tree.exists():
        state = read_state(tree)
        if state is None:
            raise HyperrestartError(f"{tree} exists but was not made by hyperrestart (no .git/{STATE_FILE}); "
                                    f"move it away or choose another --dest")
        _, changes = local_changes(tree, state)
        if not changes and is_current(state, inputs):
            log(f"{name}: up to date ({upstream.commit[:12]}, profile {profile}, tree {expected[:12]})")
            return "up to date"
        at_risk = changes + outside_the_tree(tree, state)
        if at_risk and not force:
            listing = "\n  ".join(at_risk)
            raise LocalChangesError(
                f"local changes detected in {tree} that a rebuild would lose; nothing was touched:\n  {listing}\n"
                f"Keep edits and commits as patches with `python bootstrap.py export {name}` and move other files "
                f"out of the tree, or re-run with --force: the old tree, whole (all of the above), is then moved "
                f"to {dest / BACKUP_DIR}/ and its edits saved there as a patch.")
    with cached_commit(upstream, overrides=overrides, bundles=bundles, offline=offline, log=log) as cache:
        scratch = dest / f"{TMP_PREFIX}{name}-{os.getpid()}"
        try:
            started = time.monotonic()
            result = build_tree(cache, inputs, scratch, log=log)
            if result != expected:
                raise HyperrestartError(f"{name} ({profile}): built tree {result} but vendor.lock expects {expected}; "
                                        f"nothing was touched (after a deliberate change run `python bootstrap.py lock`)")
            write_state(scratch, desired_state(inputs, scratch, result, expected))
            swap_into_place(dest, scratch, tree, log)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
    log(f"{name}: materialised {upstream.commit[:12]} + {len(inputs.patches)} patch(es) + "
        f"{len(inputs.overlay)} overlay file(s), profile {profile}, tree {result[:12]} verified "
        f"({time.monotonic() - started:.1f}s) -> {tree}")
    return "materialised"


def swap_into_place(dest: Path, scratch: Path, tree: Path, log=print):
    """Two renames, then the old tree is disposed of (kept in the backups if it holds anything of the user's, which
    is checked again here: something may have been written into it during the build). An interruption anywhere is
    undone by recover() on the next run."""
    old = dest / f"{OLD_PREFIX}{tree.name}"
    if tree.exists():
        if old.exists():
            dispose_old_tree(dest, old, tree.name, log)
        tree.rename(old)
    scratch.rename(tree)
    if old.exists():
        dispose_old_tree(dest, old, tree.name, log)


def materialise(lock, names, dest, profile, **kwargs):
    dest = Path(dest).resolve()
    log = kwargs.get("log", print)
    results = {}
    with DestinationLock(dest):
        recover(dest, log=log)
        for name in names:
            results[name] = materialise_one(lock, name, dest, profile, **kwargs)
    return results
