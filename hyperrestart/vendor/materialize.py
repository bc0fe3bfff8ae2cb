"""Materialising upstream trees in a destination: idempotent, atomic, and never losing a user's local edits."""
import datetime
import os
import time
from pathlib import Path

from hyperrestart.vendor import gitops, owned
from hyperrestart.vendor.build import BASE_TAG, PATCHED_TAG, build_tree, collect_inputs
from hyperrestart.vendor.destination import checked_destination
from hyperrestart.vendor.state import STATE_FILE, DamagedStateError, read_state, write_state
from hyperrestart.core.files import file_sha256
from hyperrestart.core.errors import HyperrestartError, LocalChangesError
from hyperrestart.core.locks import RefusingLock
from hyperrestart.core.progress import Heartbeat
from hyperrestart.vendor.sources import cached_commit

TMP_PREFIX = ".hyperrestart-tmp-"
OLD_PREFIX = ".hyperrestart-old-"
BACKUP_DIR = ".hyperrestart-backups"
REGENERABLE_DIR = "__pycache__"
OWN_REFS = {"refs/heads/hyperrestart", f"refs/tags/{BASE_TAG}", f"refs/tags/{PATCHED_TAG}"}  # made by build_tree


class DestinationLock(RefusingLock):
    """An exclusive flock on DEST/.hyperrestart.lock: one bootstrap per destination at a time."""

    def __init__(self, dest: Path):
        super().__init__(Path(dest) / ".hyperrestart.lock")

    def busy_message(self):
        return f"another hyperrestart run holds {self.path} (pid {self.holder()}); wait for it to finish"

    on_acquired = RefusingLock.record_pid


def recover(dest: Path, log=print):
    """Finish what an interrupted run left, touching only folders with a valid marker (owned.py): scratch trees are
    deleted; a tree moved aside but not replaced is put back; a superseded one (checked before it was moved aside)
    is deleted without checking it again, as it may be half deleted. Says in one line what was cleaned up."""
    done = []
    for scratch in sorted(dest.glob(TMP_PREFIX + "*")):
        if owned.read_marker(scratch):
            owned.remove_owned(scratch)
            done.append(f"deleted the scratch tree {scratch.name}")
        elif owned.is_empty_shell(scratch):
            owned.remove_empty_shell(scratch)
            done.append(f"removed the empty folder {scratch.name}")
    for old in sorted(dest.glob(OLD_PREFIX + "*")):
        marker, name = owned.read_marker(old), old.name[len(OLD_PREFIX):]
        if not marker:
            if owned.is_empty_shell(old):
                owned.remove_empty_shell(old)
                done.append(f"removed the empty folder {old.name}")
            continue
        if marker["role"] == "superseded" and not os.path.lexists(dest / name):
            old.rename(dest / name)
            owned.marker_path(dest / name).unlink(missing_ok=True)
            done.append(f"put {name} back (moved aside by a run that did not finish)")
        else:
            owned.remove_owned(old)
            done.append(f"deleted {old.name} (the tree a finished swap replaced)")
    if done:
        log(f"cleaned up after an interrupted run in {dest}: {'; '.join(done)}")


def _in_the_way(path: Path, what):
    """Refuse, before anything is touched, when a folder the tool needs is taken by one it did not make."""
    if os.path.lexists(path):
        raise HyperrestartError(f"{path} is in the way: hyperrestart puts {what} there, but this one holds no "
                                f"hyperrestart marker (not made by it, or by an older version), so it is left alone; "
                                f"move it elsewhere or delete it yourself, then rerun")


def damaged(tree: Path, exc) -> HyperrestartError:
    detail = (exc.stderr.splitlines() or [""])[-1] if isinstance(exc, gitops.GitError) else str(exc)
    return HyperrestartError(f"{tree}: git cannot read this tree ({detail}); it looks damaged. Rerun with --force to "
                             f"move it, whole, to {tree.parent / BACKUP_DIR}/ and build it again, or move it away "
                             f"yourself")


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


def at_risk(tree: Path):
    """(what a rebuild of TREE would lose, its state, its current tree hash); a damaged tree or state file is one
    item that only --force passes."""
    try:
        state = read_state(tree)
    except DamagedStateError as exc:
        return [f"damaged state file ({exc.reason})"], None, None
    if state is None:
        return ["no hyperrestart state file"], None, None
    try:
        current, changes = local_changes(tree, state)
        return changes + outside_the_tree(tree, state), state, current
    except gitops.GitError as exc:
        return [f"unreadable by git ({(exc.stderr.splitlines() or [''])[-1]})"], None, None


def back_up_tree(dest: Path, tree: Path, items, state, current, log=print):
    """Move TREE, whole, into DEST/.hyperrestart-backups/ (its content edits also saved there as a patch) and say
    where: what --force does with a tree holding anything hyperrestart did not make."""
    name = tree.name
    changes = state is not None and current is not None and current != state["result_tree"]
    patch = save_local_changes(dest, tree, state, current) if changes else None
    backup = _unique(dest / BACKUP_DIR, f"{name}-{_stamp()}")
    tree.rename(backup)
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


def is_up_to_date(tree: Path, inputs, force, log=print) -> bool:
    """Before anything is touched: whether the existing TREE is already the locked one. Refuses a tree that is not
    hyperrestart's, and (without --force) one that is damaged or holds anything a rebuild would lose."""
    name, dest = tree.name, tree.parent
    if tree.is_symlink() or not tree.is_dir():
        raise HyperrestartError(f"{tree} exists but is not a folder made by hyperrestart; move it away or choose "
                                f"another --dest")
    try:
        state = read_state(tree)
    except DamagedStateError:
        if force:
            return False  # the swap moves it, whole, to the backups
        raise
    if state is None:
        raise HyperrestartError(f"{tree} exists but was not made by hyperrestart (no .git/{STATE_FILE}); "
                                f"move it away or choose another --dest")
    try:
        _, changes = local_changes(tree, state)
        if not changes and is_current(state, inputs):
            upstream = inputs.upstream
            log(f"{name}: up to date ({upstream.commit[:12]}, profile {inputs.profile}, "
                f"tree {upstream.result_tree[inputs.profile][:12]})")
            return True
        risky = changes + outside_the_tree(tree, state)
    except gitops.GitError as exc:
        if force:
            return False  # the swap moves it, whole, to the backups
        raise damaged(tree, exc) from None
    if risky and not force:
        raise local_changes_error(tree, risky, name, dest)
    return False


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
    if os.path.lexists(tree):
        if is_up_to_date(tree, inputs, force, log):
            return "up to date"
        _in_the_way(dest / f"{OLD_PREFIX}{name}", "the tree it replaces")
    with cached_commit(upstream, overrides=overrides, bundles=bundles, offline=offline, log=log) as cache:
        scratch = dest / f"{TMP_PREFIX}{name}-{os.getpid()}"
        _in_the_way(scratch, "the tree it builds")
        try:
            started = time.monotonic()
            owned.make_scratch(scratch)
            log(f"{name}: applying {len(inputs.patches)} patch(es) + {len(inputs.overlay)} overlay file(s), then "
                "verifying the tree")
            result = build_tree(cache, inputs, scratch, log=log)
            if result != expected:
                raise HyperrestartError(f"{name} ({profile}): built tree {result} but vendor.lock expects {expected}; "
                                        f"nothing was touched (after a deliberate change run `python bootstrap.py lock`)")
            write_state(scratch, desired_state(inputs, scratch, result, expected))
            swap_into_place(dest, scratch, tree, force, log)
        finally:
            if owned.read_marker(scratch):
                owned.remove_owned(scratch)
    log(f"{name}: materialised {upstream.commit[:12]} + {len(inputs.patches)} patch(es) + "
        f"{len(inputs.overlay)} overlay file(s), profile {profile}, tree {result[:12]} verified "
        f"({time.monotonic() - started:.1f}s) -> {tree}")
    return "materialised"


def local_changes_error(tree, items, name, dest, when=""):
    listing = "\n  ".join(items)
    return LocalChangesError(
        f"local changes detected in {tree}{when} that a rebuild would lose; nothing was touched:\n  {listing}\n"
        f"Keep edits and commits as patches with `python bootstrap.py export {name}` and move other files "
        f"out of the tree, or re-run with --force: the old tree, whole (all of the above), is then moved "
        f"to {dest / BACKUP_DIR}/ and its edits saved there as a patch.")


def swap_into_place(dest: Path, scratch: Path, tree: Path, force=False, log=print):
    """Put the built tree in place. The old tree is checked once more (something may have been written into it
    during the build): holding anything of the user's it is refused, or with --force moved whole to the backups;
    clean, it is marked superseded, moved aside, and deleted after the new tree is in place. A kill anywhere is
    finished by recover() on the next run, which never needs to read the superseded tree."""
    aside = dest / f"{OLD_PREFIX}{tree.name}"
    moved_aside = False
    if os.path.lexists(tree):
        items, state, current = at_risk(tree)
        if items and not force:
            raise local_changes_error(tree, items, tree.name, dest, when=" (written while the new tree was built)")
        if items:
            back_up_tree(dest, tree, items, state, current, log)
        else:
            owned.write_marker(tree, aside.name, "superseded")
            tree.rename(aside)
            moved_aside = True
    scratch.rename(tree)
    owned.marker_path(tree).unlink(missing_ok=True)
    if moved_aside:
        owned.write_marker(aside, aside.name, "disposing")
        owned.remove_owned(aside)


def materialise(lock, names, dest, profile, **kwargs):
    """Materialise each upstream of `names`; never more than a few seconds without a line (core.progress)."""
    dest = checked_destination(dest)
    log = kwargs.pop("log", print)
    results = {}
    with DestinationLock(dest):
        recover(dest, log=log)
        for name in names:
            with Heartbeat(lambda seconds, name=name: log(f"  still materialising {name} ({seconds:.0f}s)")) as beat:
                def said(text, beat=beat):
                    log(text)
                    beat.touch()
                results[name] = materialise_one(lock, name, dest, profile, log=said, **kwargs)
    return results
