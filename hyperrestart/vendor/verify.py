"""`check` and `lock`: build every profile of every upstream in scratch directories, never touching a destination."""
import tempfile
from pathlib import Path

from hyperrestart.vendor import gitops, lockfile, patchcheck
from hyperrestart.vendor.build import build_tree, collect_inputs, PatchApplyError
from hyperrestart.core.files import file_sha256
from hyperrestart.core.errors import CacheError, HyperrestartError
from hyperrestart.vendor.lockfile import OverlayFile
from hyperrestart.core.paths import OVERLAY_DIR, PATCHES_DIR, PROJECT_ROOT
from hyperrestart.vendor.series import read_series
from hyperrestart.vendor.sources import cached_commit


def build_in_scratch(cache, inputs, log=print) -> str:
    with tempfile.TemporaryDirectory(prefix="hyperrestart-check-") as tmp:
        return build_tree(cache, inputs, Path(tmp) / inputs.upstream.name, log=log)


def check(lock, names, profiles, *, overrides=None, bundles=None, offline=False, log=print) -> list:
    """Problems found (empty list = pristine upstream + series + overlay gives the locked tree for every profile)."""
    problems = []
    for name in names:
        upstream = lock.upstream(name)
        for entry in read_series(PATCHES_DIR, name, lock.profiles):
            path = Path(PATCHES_DIR) / name / entry.name
            if path.exists():  # a missing file is reported by collect_inputs below
                problems += patchcheck.dep3_problems(path)
        try:
            with cached_commit(upstream, overrides=overrides, bundles=bundles, offline=offline, log=log) as cache:
                problems += check_profiles(lock, upstream, cache, profiles, log)
        except CacheError:
            raise
        except HyperrestartError as exc:  # the commit cannot be had, or a patch is refused outright
            problems.append(str(exc))
    return problems


def check_profiles(lock, upstream, cache, profiles, log) -> list:
    """Problems of building each profile of one upstream from its cached commit."""
    problems, name = [], upstream.name
    for profile in profiles:
        try:
            inputs = collect_inputs(lock, upstream, profile)
        except HyperrestartError as exc:
            problems.append(str(exc))
            # still try to apply, so a stale patch is named with its hunk too
            inputs = collect_inputs(lock, upstream, profile, verify_hashes=False)
        try:
            result = build_in_scratch(cache, inputs, log=log)
        except PatchApplyError as exc:
            problems.append(str(exc))
            continue
        expected = upstream.result_tree.get(profile)
        if result != expected:
            problems.append(f"{name} ({profile}): tree {result} != vendor.lock result_tree {expected or '(none)'}")
        else:
            log(f"{name} ({profile}): OK, tree {result[:12]} = vendor.lock")
    return problems


def discover_overlay(lock_upstream, root=PROJECT_ROOT, overlay_dir=OVERLAY_DIR):
    """The lock's explicit overlay entries (shared files such as overlay/common/) plus every file under
    overlay/<name>/, which lands at the same relative path in the tree."""
    entries = {o.dest: o for o in lock_upstream.overlay}
    own = Path(overlay_dir) / lock_upstream.name
    own_prefix = own.relative_to(root).as_posix() + "/"
    for dest, item in list(entries.items()):
        if item.source.startswith(own_prefix) and not (Path(root) / item.source).exists():
            del entries[dest]  # file removed from overlay/<name>/
    if own.is_dir() or own.is_symlink():
        for path in patchcheck.overlay_files(own, root, f"overlay of {lock_upstream.name}"):
            dest = path.relative_to(own).as_posix()
            entries[dest] = OverlayFile(dest, path.relative_to(root).as_posix())
    return sorted(entries.values(), key=lambda o: o.dest)


def relock(lock, names, *, overrides=None, bundles=None, offline=False, log=print):
    """Recompute every hash in vendor.lock for `names` after a deliberate change, then save it."""
    for name in names:
        upstream = lock.upstream(name)
        entries = read_series(PATCHES_DIR, name, lock.profiles)
        upstream.patches = {}
        for entry in entries:
            path = Path(PATCHES_DIR) / name / entry.name
            if not path.is_file():
                raise HyperrestartError(f"{path}: listed in the series but missing")
            upstream.patches[entry.name] = file_sha256(path)
        upstream.overlay = discover_overlay(upstream)
        for item in upstream.overlay:
            path = patchcheck.check_overlay_source(PROJECT_ROOT, item.source, f"overlay source of {item.dest}")
            item.sha256 = file_sha256(path)
        upstream.tree = ""  # re-derived from the commit below
        with cached_commit(upstream, overrides=overrides, bundles=bundles, offline=offline, record_tree=True,
                           log=log) as cache:
            upstream.tree = gitops.tree_of(cache, upstream.commit)
            upstream.result_tree = {}
            for profile in lock.profiles:
                inputs = collect_inputs(lock, upstream, profile)
                upstream.result_tree[profile] = build_in_scratch(cache, inputs, log=log)
                log(f"{name} ({profile}): result tree {upstream.result_tree[profile]}")
    lockfile.save(lock)
    log(f"wrote {lock.path}")
