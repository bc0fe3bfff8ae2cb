"""Cold materialisation vs raw `git clone` + `git checkout` + `git apply` of the same commits, and the warm no-op.

    python benchmarks/bootstrap_speed.py [--repeats 3]

Both sides fetch from the same source (the lock's URL, so git's insteadOf mirrors apply). Prints seconds and ratios.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hyperrestart.vendor import lockfile  # noqa: E402
from hyperrestart.core.paths import LOCK_FILE, PATCHES_DIR, PROJECT_ROOT  # noqa: E402
from hyperrestart.vendor.series import profile_patches, read_series  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sh(*args, cwd=None, env=None):
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)


def raw_git(lock, work: Path, profile):
    """What a careful person would type: clone, checkout the pin, apply each patch, copy the overlay."""
    for up in lock.upstreams.values():
        tree = work / up.name
        sh("git", "clone", "-q", "--no-checkout", up.url, str(tree))
        sh("git", "checkout", "-q", up.commit, cwd=tree)
        for entry in profile_patches(read_series(PATCHES_DIR, up.name, lock.profiles), profile):
            sh("git", "apply", str(PATCHES_DIR / up.name / entry.name), cwd=tree)
        for item in up.overlay:
            target = tree / item.dest
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((PROJECT_ROOT / item.source).read_bytes())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lock = lockfile.load(LOCK_FILE)
    cold, raw, warm = [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, HYPERRESTART_CACHE=str(Path(tmp) / "cache"))
            bootstrap = [sys.executable, str(ROOT / "bootstrap.py"), "--dest", str(Path(tmp) / "dest")]
            cold.append(timed(lambda: sh(*bootstrap, env=env)))
            warm.append(timed(lambda: sh(*bootstrap, env=env)))
            (Path(tmp) / "raw").mkdir()
            raw.append(timed(lambda: raw_git(lock, Path(tmp) / "raw", lock.default_profile)))
    cold_s, raw_s, warm_s = (statistics.median(v) for v in (cold, raw, warm))
    print(f"upstreams: {', '.join(lock.upstreams)}; profile {lock.default_profile}; median of {args.repeats}")
    print(f"cold bootstrap (fetch + patch + overlay + verify): {cold_s:.3f} s")
    print(f"raw git clone + checkout + apply + copy:           {raw_s:.3f} s")
    print(f"ratio cold / raw:                                  {cold_s / raw_s:.2f}x")
    print(f"warm no-op re-run:                                 {warm_s:.3f} s")


if __name__ == "__main__":
    main()
