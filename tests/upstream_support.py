"""Access to the real upstreams for tests: materialised once per session, or a skip that says why not."""
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hyperrestart.vendor import lockfile, sources  # noqa: E402
from hyperrestart.core.paths import LOCK_FILE  # noqa: E402


@lru_cache(maxsize=None)
def unreachable_reason(name):
    """None when upstream `name` can be fetched (cache, mirror, override-free URL incl. git insteadOf), else why not."""
    upstream = lockfile.load(LOCK_FILE).upstream(name)
    if (sources.cache_repo(name) / "objects").exists():
        from hyperrestart.vendor import gitops
        if gitops.has_commit(sources.cache_repo(name), upstream.commit):
            return None
    tried = []
    for source in sources.sources_for(upstream):
        if source.kind in ("path", "bundle"):
            return None
        try:
            subprocess.run(["git", "ls-remote", "--exit-code", source.location, "HEAD"], check=True, timeout=30,
                           capture_output=True, text=True, env=dict(os.environ, GIT_TERMINAL_PROMPT="0"))
            return None
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = (getattr(exc, "stderr", None) or str(exc)).strip().splitlines()
            tried.append(f"{source.location}: {detail[-1] if detail else 'failed'}")
    return (f"upstream {name} is not reachable ({'; '.join(tried)}); to run these tests "
            f"point git at a mirror (`git config --global url.<mirror>.insteadOf {upstream.url}`) or set "
            f"HYPERRESTART_MIRROR")


@lru_cache(maxsize=None)
def _materialise(dest, profile):
    result = subprocess.run([sys.executable, str(ROOT / "bootstrap.py"), "--dest", dest, "--profile", profile],
                            capture_output=True, text=True, timeout=600)
    return result


def materialised_dest(tmp_root: Path, profile="modern") -> Path:
    """Both upstreams materialised (once per session and profile) under tmp_root, or skip."""
    for name in lockfile.load(LOCK_FILE).upstreams:
        reason = unreachable_reason(name)
        if reason:
            pytest.skip(reason)
    dest = tmp_root / f"upstream-{profile}"
    result = _materialise(str(dest), profile)
    assert result.returncode == 0, f"bootstrap failed:\n{result.stdout}\n{result.stderr}"
    return dest
