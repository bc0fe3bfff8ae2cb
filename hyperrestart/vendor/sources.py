"""Getting a pinned upstream commit into the local object cache: from a mirror, a bundle, an override or its URL."""
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hyperrestart.vendor import gitops
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.locks import FileLock
from hyperrestart.core.paths import cache_error, writable_cache_dir

MIRROR_ENV = "HYPERRESTART_MIRROR"


@dataclass
class Source:
    location: str  # URL, repository path or bundle file
    kind: str  # "url" | "path" | "bundle"

    @property
    def needs_network(self):
        return self.kind == "url" and not (self.location.startswith("file://") or os.path.exists(self.location))


def classify(location) -> Source:
    """A local bundle or repository (as an absolute path), else a URL; nothing that git could read as an option."""
    gitops.check_not_option(location, "source")
    if location.endswith(".bundle") and os.path.isfile(location):
        return Source(os.path.abspath(location), "bundle")
    if os.path.isdir(location):
        return Source(os.path.abspath(location), "path")
    return Source(location, "url")


def parse_overrides(values) -> dict:
    """--source NAME=URL|PATH, repeatable."""
    overrides = {}
    for value in values or []:
        name, sep, location = value.partition("=")
        if not sep or not name or not location:
            raise HyperrestartError(f"--source expects NAME=URL_OR_PATH, got {value!r}")
        gitops.check_not_option(location, f"--source {name}=")
        overrides[name] = location
    return overrides


def mirror_names(name):
    return (f"{name}.bundle", f"{name}.git", name)


def mirror_source(name, mirror_dir) -> Source:
    """The entry for upstream `name` in $HYPERRESTART_MIRROR; an error saying what was looked for when none is
    there (never a silent fall back to the network)."""
    base = Path(mirror_dir)
    if not base.is_dir():
        raise HyperrestartError(f"{MIRROR_ENV}={mirror_dir} is not a directory; point it at a folder holding "
                                f"{' or '.join(mirror_names(name)[:2])}, or unset it to fetch from the lock's URL")
    for candidate in mirror_names(name):
        if (base / candidate).exists():
            return classify(str(base / candidate))
    present = sorted(p.name for p in base.iterdir())
    shown = ", ".join(present[:10]) + (f", ... ({len(present)} entries)" if len(present) > 10 else "")
    raise HyperrestartError(
        f"{MIRROR_ENV}={mirror_dir} holds nothing for upstream {name}: looked for "
        f"{', '.join(str(base / c) for c in mirror_names(name))} (a bundle, a bare clone or a clone); "
        f"it holds: {shown or 'nothing'}. Rename the entry to one of those names, or unset {MIRROR_ENV} to fetch "
        f"from the lock's URL.")


def sources_for(upstream, overrides=None, bundles=None):
    """Where to look, in order: --source override, a --from pack's bundle, $HYPERRESTART_MIRROR, the lock's URL
    (git applies any url.<base>.insteadOf rewrite itself)."""
    found = []
    if overrides and upstream.name in overrides:
        found.append(classify(overrides[upstream.name]))
    if bundles and upstream.name in bundles:
        found.append(Source(str(bundles[upstream.name]), "bundle"))
    if os.environ.get(MIRROR_ENV) and not found:
        found.append(mirror_source(upstream.name, os.environ[MIRROR_ENV]))
    found.append(classify(upstream.url))
    return found


def _init_cache(path: Path):
    """Create the bare cache repository atomically (initialised beside it, then renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        gitops.run(tmp, "init", "-q", "--bare")
        gitops.run(tmp, "config", "gc.auto", "0")  # objects are never repacked behind a reader's back
        try:
            tmp.rename(path)
        except OSError:  # another run created it first
            if not (path / "HEAD").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_repo(name) -> Path:
    """The bare repository holding fetched objects of one upstream (shared by every destination), created when
    missing; change it only under CacheLock."""
    path = writable_cache_dir("git") / f"{name}.git"
    if not (path / "HEAD").exists():
        try:
            _init_cache(path)
        except OSError as exc:
            raise cache_error(path.parent, exc) from None
    return path


class CacheLock(FileLock):
    """flock on CACHE/git/NAME.lock: exclusive while the cache changes, shared (share()) while it is read, so two
    runs, into the same or different destinations, never fetch into it at the same time."""

    def __init__(self, name, log=None):
        super().__init__(writable_cache_dir("git") / f"{name}.lock")
        self.log = log

    def __enter__(self):
        try:
            self._open()
        except OSError as exc:
            raise cache_error(self.path.parent, exc) from None
        if not self.try_exclusive():
            if self.log:
                self.log(f"waiting for another hyperrestart run that uses the git cache ({self.path})")
            self.wait_exclusive()
        return self


def remove_stale_git_locks(cache: Path, log):
    """Git's lock files in the cache (refs/**.lock, packed-refs.lock, shallow.lock, ...): while this run holds the
    exclusive CacheLock no git process of the tool runs there, so one left is a killed git's, and would make every
    later ref update fail. Removed, saying so in one line."""
    stale = sorted(p for p in [*cache.glob("*.lock"), *(cache / "refs").rglob("*.lock")] if p.is_file())
    for path in stale:
        path.unlink()
    if stale:
        log(f"cleaned up the git cache {cache}: removed {len(stale)} lock file(s) left by a killed git process "
            f"({', '.join(p.relative_to(cache).as_posix() for p in stale[:3])}{', ...' if len(stale) > 3 else ''})")


def pinned_ref(commit):
    return f"refs/hyperrestart/pinned/{commit}"


# Every fetch into the cache lands as one pack, which appears whole (its index is written last) or not at all, so a
# killed fetch leaves no commit without its files (git would otherwise unpack small fetches object by object).
WHOLE_PACKS = ("-c", "fetch.unpackLimit=1", "-c", "transfer.unpackLimit=1")


def _fetch_from(cache, source, commit, log):
    """Shallow fetch of the exact commit; full fetch when the server refuses an unadvertised commit."""
    fetch = (*WHOLE_PACKS, "fetch", "-q", "--no-tags")
    if source.kind == "bundle":
        gitops.run(cache, *fetch, "--", source.location, "+refs/*:refs/hyperrestart/bundle/*")
        return
    try:
        gitops.run(cache, *fetch, "--depth", "1", "--", source.location, commit)
    except gitops.GitError as exc:
        log(f"  shallow fetch of {commit[:12]} refused ({exc.stderr.splitlines()[-1] if exc.stderr else 'no detail'}); "
            f"fetching all branches and tags instead")
        gitops.run(cache, *fetch, "--", source.location, "+refs/heads/*:refs/hyperrestart/remote/heads/*",
                   "+refs/tags/*:refs/hyperrestart/remote/tags/*")


def _fetch_commit(cache, upstream, sources, offline, log) -> list:
    """Try each source until `cache` holds the whole commit; return the errors met (empty on success)."""
    errors = []
    for source in sources:
        if offline and source.needs_network:
            errors.append(f"{source.location}: skipped (--offline)")
            continue
        log(f"{upstream.name}: fetching {upstream.commit[:12]} from {source.location}")
        try:
            _fetch_from(cache, source, upstream.commit, log)
        except gitops.GitError as exc:
            errors.append(f"{source.location}: {exc.stderr.splitlines()[-1] if exc.stderr else exc}")
            continue
        if gitops.has_complete_commit(cache, upstream.commit):
            return []
        errors.append(f"{source.location}: fetched, but commit {upstream.commit} (with all its files) is not in it")
    return errors or ["no source"]


def _refill(cache: Path, upstream, sources, offline, log) -> list:
    """The cache has the commit but not all of its objects (a fetch was interrupted): fetch it into a fresh cache
    (negotiation with the broken one would skip the missing objects) and swap that in. Errors, or [] when done."""
    log(f"{upstream.name}: the git cache {cache} holds commit {upstream.commit[:12]} but not all of its files "
        f"(incomplete: an interrupted fetch?); fetching it again into a fresh cache")
    fresh = cache.with_name(f"{cache.name}.fresh-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    _init_cache(fresh)
    try:
        errors = _fetch_commit(fresh, upstream, sources, offline, log)
        if not errors:
            broken = cache.with_name(f"{cache.name}.broken-{os.getpid()}")
            cache.rename(broken)
            fresh.rename(cache)
            shutil.rmtree(broken, ignore_errors=True)
        return errors
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def _how_to_provide(upstream):
    return (f"Provide the upstream without network: set {MIRROR_ENV}=DIR holding {upstream.name}.git (a clone) "
            f"or {upstream.name}.bundle, pass --source {upstream.name}=PATH, or use --from PACK made by "
            f"`python bootstrap.py pack PACK` on a machine with network.")


@contextmanager
def cached_commit(upstream, *, overrides=None, bundles=None, offline=False, record_tree=False, exclusive=False,
                  log=print):
    """Hold the cache of `upstream` (a shared lock; exclusive=True to change it further) with its pinned commit
    present in full and its tree checked against vendor.lock; yields the cache path. No network when the commit is
    already cached; with offline=True only local sources are tried. record_tree=True (only `lock`) accepts a lock
    without `tree`."""
    with CacheLock(upstream.name, log) as lock:
        cache = cache_repo(upstream.name)
        remove_stale_git_locks(cache, log)
        if not gitops.has_complete_commit(cache, upstream.commit):
            sources = sources_for(upstream, overrides, bundles)
            incomplete = gitops.has_commit(cache, upstream.commit)
            errors = [] if incomplete else _fetch_commit(cache, upstream, sources, offline, log)
            if incomplete or (errors and gitops.has_commit(cache, upstream.commit)):
                incomplete = True  # the cache claims objects it lacks: fetching into it cannot repair it
                errors = _refill(cache, upstream, sources, offline, log)
            if errors:
                state = (f"the git cache {cache} is incomplete (an interrupted fetch?) and could not be refilled"
                         if incomplete else f"cannot get {upstream.name} at {upstream.commit}")
                raise HyperrestartError(
                    f"{state}:\n  " + "\n  ".join(errors) + f"\n{_how_to_provide(upstream)}" +
                    (f"\nIf this persists, delete the cache folder {cache} (it only holds fetched copies)."
                     if incomplete else ""))
        if gitops.run_ok(cache, "rev-parse", "-q", "--verify", pinned_ref(upstream.commit)) != upstream.commit:
            gitops.run(cache, "update-ref", pinned_ref(upstream.commit), upstream.commit)
        tree = gitops.tree_of(cache, upstream.commit)
        if not upstream.tree and not record_tree:
            raise HyperrestartError(
                f"vendor.lock [upstream.{upstream.name}] has no 'tree': the fetched commit cannot be verified. "
                f"Run `python bootstrap.py lock` to record it (after checking {upstream.commit} is the commit you mean).")
        if upstream.tree and tree != upstream.tree:
            raise HyperrestartError(
                f"{upstream.name} commit {upstream.commit} has tree {tree}, but vendor.lock expects {upstream.tree}: "
                f"the source does not hold the pinned upstream (tampered or wrong mirror); refusing it")
        if not exclusive:
            lock.share()
        yield cache
