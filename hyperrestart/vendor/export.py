"""`export`: regenerate patches/NAME/ from the commits (and optionally the edits) in a materialised tree."""
import datetime
import email.parser
import re
import shutil
from pathlib import Path

from hyperrestart.vendor import gitops
from hyperrestart.vendor.build import BASE_TAG, OVERLAY_TRAILER
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.vendor.state import read_state, write_state
from hyperrestart.core.paths import PATCHES_DIR, PROJECT_ROOT
from hyperrestart.vendor.series import read_series, series_path
from hyperrestart.vendor.verify import relock


def patch_subject(text) -> str:
    subject = email.parser.HeaderParser().parsestr(text.split("\n\n", 1)[0] + "\n\n").get("Subject", "")
    return " ".join(subject.split())


def slug(subject) -> str:
    return re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")[:52].rstrip("-") or "patch"


def commit_edits(tree, message):
    """Commit every uncommitted edit as a new patch carrying a DEP-3 header."""
    today = datetime.date.today().isoformat()
    body = (f"{message}\n\nDescription: {message}\nOrigin: hyperrestart\nForwarded: not-needed\n"
            f"Last-Update: {today}\n")
    gitops.run(tree, "add", "-A")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000")
    gitops.commit_all(tree, body, date=now)


def export(lock, name, dest: Path, message=None, log=print) -> int:
    upstream = lock.upstream(name)
    tree = Path(dest).resolve() / name
    state = read_state(tree) if tree.exists() else None
    if state is None:
        raise HyperrestartError(f"{tree} is not a tree materialised by hyperrestart; run `python bootstrap.py` first")
    entries = read_series(PATCHES_DIR, name, lock.profiles)
    missing = [e.name for e in entries if not e.in_profile(state["profile"])]
    if missing:
        raise HyperrestartError(f"{tree} was materialised with profile {state['profile']}, which lacks "
                                f"{', '.join(missing)}; export needs the whole series: "
                                f"`python bootstrap.py --only {name} --profile <a profile with every patch>`")
    if gitops.run(tree, "status", "--porcelain"):
        if not message:
            raise HyperrestartError(f"{tree} has uncommitted edits: commit them (git commit) or pass "
                                    f"-m 'Subject of the new patch' to export them as a new patch")
        commit_edits(tree, message)
    overlay_dests = [o.dest for o in upstream.overlay]
    excludes = [f":(exclude){d}" for d in overlay_dests]
    existing = {}
    for entry in entries:
        path = PATCHES_DIR / name / entry.name
        existing[patch_subject(path.read_text(encoding="utf-8"))] = entry
    new_entries, written = [], []
    commits = gitops.run(tree, "rev-list", "--reverse", "--first-parent", f"{BASE_TAG}..HEAD").split()
    for commit in commits:
        if OVERLAY_TRAILER in gitops.run(tree, "log", "-1", "--format=%B", commit):
            continue
        text = gitops.run(tree, "format-patch", *gitops.FORMAT_PATCH_FLAGS, "--stdout", f"{commit}~1..{commit}",
                          "--", ".", *excludes, strip=False)  # a range: -1 with paths would pick another commit
        if "\ndiff --git " not in text:
            continue  # the commit only touched overlay files: copied back below
        subject = patch_subject(text)
        entry = existing.get(subject)
        file_name = entry.name if entry else f"{len(new_entries) + 1:04d}-{slug(subject)}.patch"
        line = entry.line if entry else file_name
        path = PATCHES_DIR / name / file_name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(file_name)
        new_entries.append((file_name, line))
    kept = {n for n, _ in new_entries}
    for entry in entries:
        if entry.name not in kept:
            (PATCHES_DIR / name / entry.name).unlink()
            log(f"{name}: removed {entry.name} (no commit with its subject is left in the tree)")
    _rewrite_series(name, entries, new_entries)
    for item in upstream.overlay:
        source, current = PROJECT_ROOT / item.source, tree / item.dest
        if current.exists() and (not source.exists() or source.read_bytes() != current.read_bytes()):
            shutil.copyfile(current, source)
            log(f"{name}: overlay {item.dest} -> {item.source} updated")
    log(f"{name}: {len(new_entries)} patch(es) in the series, {len(written)} rewritten: {', '.join(written) or 'none'}")
    relock(lock, [name], log=log)
    refreshed = lock.upstream(name)
    state.update(result_tree=gitops.worktree_tree(tree), head=gitops.run(tree, "rev-parse", "HEAD"),
                 lock_result_tree=refreshed.result_tree[state["profile"]],
                 patches=dict((n, refreshed.patches[n]) for n, _ in new_entries if n in refreshed.patches),
                 overlay={o.dest: o.sha256 for o in refreshed.overlay})
    write_state(tree, state)
    return 0


def _rewrite_series(name, old_entries, new_entries):
    """Keep the series file's comments; list the patches in commit order, each keeping its original line."""
    path = series_path(PATCHES_DIR, name)
    old_names = {e.name for e in old_entries}
    comments = [line for line in (path.read_text(encoding="utf-8").splitlines() if path.exists() else [])
                if line.partition("#")[0].strip() not in old_names]
    path.write_text("\n".join(comments + [line for _, line in new_entries]) + "\n", encoding="utf-8")
