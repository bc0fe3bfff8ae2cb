"""`drift`: would the series still apply to another upstream ref? Per patch: applies / already upstream / conflicts."""
import tempfile
from pathlib import Path

from hyperrestart.vendor import gitops, patchcheck
from hyperrestart.vendor.build import apply_patch, PatchApplyError
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import PATCHES_DIR
from hyperrestart.vendor.series import read_series
from hyperrestart.vendor.sources import WHOLE_PACKS, CacheLock, cache_repo, sources_for


def resolve_ref(cache, upstream, ref, overrides, bundles, offline, log):
    """Fetch `ref` (default: the remote's HEAD) into the cache (held exclusively); return its commit."""
    if ref:
        gitops.check_not_option(ref, "--ref")
        if gitops.has_complete_commit(cache, ref):
            return gitops.run(cache, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    errors = []
    for source in sources_for(upstream, overrides, bundles):
        if offline and source.needs_network:
            continue
        try:
            gitops.run(cache, *WHOLE_PACKS, "fetch", "-q", "--no-tags", "--depth", "1", "--", source.location,
                       ref or "HEAD")
            commit = gitops.run(cache, "rev-parse", "FETCH_HEAD^{commit}")
            gitops.run(cache, "update-ref", f"refs/hyperrestart/drift/{upstream.name}", commit)
            log(f"{upstream.name}: {ref or 'HEAD'} of {source.location} is {commit[:12]}")
            return commit
        except gitops.GitError as exc:
            errors.append(f"{source.location}: {exc.stderr.splitlines()[-1] if exc.stderr else exc}")
    raise HyperrestartError(f"cannot fetch {ref or 'HEAD'} of {upstream.name}:\n  " + "\n  ".join(errors or ["no source"]))


def drift(lock, names, ref=None, *, overrides=None, bundles=None, offline=False, log=print) -> int:
    """Exit 0 when every patch applies or is already upstream, 1 when any conflicts."""
    conflicts = 0
    for name in names:
        upstream = lock.upstream(name)
        with CacheLock(name, log) as lock_, tempfile.TemporaryDirectory(prefix="hyperrestart-drift-") as tmp:
            cache = cache_repo(name)
            commit = resolve_ref(cache, upstream, ref, overrides, bundles, offline, log)
            lock_.share()
            work = Path(tmp) / name
            work.mkdir()
            gitops.init_repo(work)
            gitops.run(work, "fetch", "-q", "--no-tags", "--", str(cache), commit)
            gitops.run(work, "checkout", "-q", "-b", "drift", commit)
            print(f"{name} @ {commit[:12]} ({'same as' if commit == upstream.commit else 'pinned is'} "
                  f"{upstream.commit[:12]}):")
            for entry in read_series(PATCHES_DIR, name, lock.profiles):
                path = Path(PATCHES_DIR) / name / entry.name
                try:
                    gitops.run(work, "apply", "--check", str(path))
                    apply_patch(work, entry.name, path)
                    verdict = "applies"
                except (gitops.GitError, PatchApplyError):
                    try:
                        gitops.run(work, "apply", "--check", "--reverse", str(path))
                        verdict = "already upstream"
                    except gitops.GitError:
                        conflicts += 1
                        verdict = "CONFLICTS\n      " + patchcheck.diagnose_failure(path, work).replace("\n", "\n      ")
                print(f"  {entry.name}: {verdict}")
    return 1 if conflicts else 0
