"""Getting a pinned upstream commit into the local object cache: from a mirror, a bundle, an override or its URL."""
import os
from dataclasses import dataclass
from pathlib import Path

from . import gitops
from .errors import HyperrestartError
from .paths import cache_dir

MIRROR_ENV = "HYPERRESTART_MIRROR"


@dataclass
class Source:
    location: str  # URL, repository path or bundle file
    kind: str  # "url" | "path" | "bundle"

    @property
    def needs_network(self):
        return self.kind == "url" and not (self.location.startswith("file://") or os.path.exists(self.location))


def classify(location) -> Source:
    if location.endswith(".bundle") and os.path.isfile(location):
        return Source(location, "bundle")
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
        overrides[name] = location
    return overrides


def mirror_candidates(name, mirror_dir):
    base = Path(mirror_dir)
    for candidate in (base / f"{name}.bundle", base / f"{name}.git", base / name):
        if candidate.exists():
            yield classify(str(candidate))


def sources_for(upstream, overrides=None, bundles=None):
    """Where to look, in order: --source override, a --from pack's bundle, $HYPERRESTART_MIRROR, the lock's URL
    (git applies any url.<base>.insteadOf rewrite itself)."""
    found = []
    if overrides and upstream.name in overrides:
        found.append(classify(overrides[upstream.name]))
    if bundles and upstream.name in bundles:
        found.append(Source(str(bundles[upstream.name]), "bundle"))
    if os.environ.get(MIRROR_ENV):
        found.extend(mirror_candidates(upstream.name, os.environ[MIRROR_ENV]))
    found.append(classify(upstream.url))
    return found


def cache_repo(name) -> Path:
    """The bare repository holding fetched objects of one upstream (shared by every destination)."""
    path = cache_dir() / "git" / f"{name}.git"
    if not (path / "HEAD").exists():
        path.mkdir(parents=True, exist_ok=True)
        gitops.run(path, "init", "-q", "--bare")
        gitops.run(path, "config", "gc.auto", "0")
    return path


def pinned_ref(commit):
    return f"refs/hyperrestart/pinned/{commit}"


def _fetch_from(cache, source, commit, log):
    """Shallow fetch of the exact commit; full fetch when the server refuses an unadvertised commit."""
    if source.kind == "bundle":
        gitops.run(cache, "fetch", "-q", "--no-tags", source.location, "+refs/*:refs/hyperrestart/bundle/*")
        return
    try:
        gitops.run(cache, "fetch", "-q", "--no-tags", "--depth", "1", source.location, commit)
    except gitops.GitError as exc:
        log(f"  shallow fetch of {commit[:12]} refused ({exc.stderr.splitlines()[-1] if exc.stderr else 'no detail'}); "
            f"fetching all branches and tags instead")
        gitops.run(cache, "fetch", "-q", source.location, "+refs/heads/*:refs/hyperrestart/remote/heads/*",
                   "+refs/tags/*:refs/hyperrestart/remote/tags/*")


def ensure_commit(upstream, *, overrides=None, bundles=None, offline=False, log=print) -> Path:
    """Make `upstream.commit` available in the cache, verify its tree hash, and return the cache path.
    No network when the commit is already cached; with offline=True only local sources are tried."""
    cache = cache_repo(upstream.name)
    if not gitops.has_commit(cache, upstream.commit):
        errors = []
        for source in sources_for(upstream, overrides, bundles):
            if offline and source.needs_network:
                errors.append(f"{source.location}: skipped (--offline)")
                continue
            log(f"{upstream.name}: fetching {upstream.commit[:12]} from {source.location}")
            try:
                _fetch_from(cache, source, upstream.commit, log)
            except gitops.GitError as exc:
                errors.append(f"{source.location}: {exc.stderr.splitlines()[-1] if exc.stderr else exc}")
                continue
            if gitops.has_commit(cache, upstream.commit):
                break
            errors.append(f"{source.location}: fetched, but commit {upstream.commit} is not in it")
        else:
            raise HyperrestartError(
                f"cannot get {upstream.name} at {upstream.commit}:\n  " + "\n  ".join(errors) +
                f"\nProvide the upstream without network: set {MIRROR_ENV}=DIR holding {upstream.name}.git (a clone) "
                f"or {upstream.name}.bundle, pass --source {upstream.name}=PATH, or use --from PACK made by "
                f"`python bootstrap.py pack PACK` on a machine with network.")
    gitops.run(cache, "update-ref", pinned_ref(upstream.commit), upstream.commit)
    tree = gitops.tree_of(cache, upstream.commit)
    if upstream.tree and tree != upstream.tree:
        raise HyperrestartError(
            f"{upstream.name} commit {upstream.commit} has tree {tree}, but vendor.lock expects {upstream.tree}: "
            f"the source does not hold the pinned upstream (tampered or wrong mirror); refusing it")
    return cache
