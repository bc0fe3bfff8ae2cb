"""Crash safety as a property (issue 18): materialise, a profile switch and a rebuild after a lock bump are each
killed with SIGKILL at random moments, many times. After every kill the next plain run must succeed with the tree
equal to vendor.lock, and the files a user keeps in the destination (some in folders named like the tool's) must be
intact. No destination may be left wedged.

The kill delays are drawn from a seeded generator; the seed is printed, and HYPERRESTART_KILL_SEED=<seed> replays
the same delays (where each lands still depends on the machine's speed). HYPERRESTART_KILLS sets the kills per
operation (default 50). Run with `python -m pytest tests/test_vendor_kills.py -m slow -s` to see the summary."""
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from vendor_fixtures import BOOTSTRAP, FakeProject, git, write

from hyperrestart.vendor import gitops, owned
from hyperrestart.vendor.state import read_state

KILLS = int(os.environ.get("HYPERRESTART_KILLS", "50"))
SEED = int(os.environ.get("HYPERRESTART_KILL_SEED") or random.SystemRandom().randrange(2 ** 32))
USER_FILES = {"notes.txt": "my notes\n", ".hyperrestart-tmp-mine/photo.jpg": "photo bytes\n",
              ".hyperrestart-old-thesis/thesis.tex": "\\chapter{One}\n", ".hyperrestart-tmp-fake-7/.git/x": "x\n"}


class BulkyProject(FakeProject):
    """A tree of a hundred-odd files, so that deleting a replaced tree takes a while, as it does for real trees."""
    BULK_FILES = 150


def phase(dest, name="fake"):
    """Where a kill landed, read from what it left in DEST."""
    old = owned.read_marker(dest / f".hyperrestart-old-{name}")
    if old and old["role"] == "disposing":
        return "deleting the replaced tree"
    if old:
        return "between the renames" if not (dest / name).exists() else "replaced, before deleting the old tree"
    if any(owned.read_marker(p) for p in dest.glob(f".hyperrestart-tmp-{name}-*")):
        return "building in scratch"
    return "no folder of its own in flight (before building, or done)"


class Operation:
    """One operation to kill: `prepare(i)` sets up iteration i and returns the bootstrap arguments and profile."""

    def __init__(self, project, kind):
        self.project, self.kind = project, kind
        self.locks = None
        if kind == "rebuild":  # two locked states of the project, told apart by one overlay file
            sched = project.root / "overlay/common/sched.py"
            first = (sched.read_text(), project.lock_text())
            sched.write_text("SCHEDULER = 'restart, bumped'\n")
            assert project.run("lock").returncode == 0
            self.locks = [first, (sched.read_text(), project.lock_text())]

    def prepare(self, i):
        project = self.project
        if self.kind == "materialise":
            if project.tree.exists():
                shutil.rmtree(project.tree)
            return (), "modern"
        if self.kind == "switch":
            profile = ("paper", "modern")[i % 2]
            return ("--profile", profile), profile
        text, lock = self.locks[i % 2]
        (project.root / "overlay/common/sched.py").write_text(text)
        (project.root / "vendor.lock").write_text(lock)
        return (), "modern"


def expected_tree(project, profile):
    from hyperrestart.vendor import lockfile
    return lockfile.load(project.root / "vendor.lock").upstream("fake").result_tree[profile]


def check_destination(project, profile):
    """Problems with DEST after a successful plain run (empty list: as it must be)."""
    problems, dest = [], project.dest
    want = expected_tree(project, profile)
    state = read_state(project.tree)
    if git(project.tree, "rev-parse", "HEAD^{tree}") != want or gitops.worktree_tree(project.tree) != want:
        problems.append("tree differs from vendor.lock")
    if not state or state["result_tree"] != want or state["profile"] != profile:
        problems.append(f"state file does not describe the locked tree: {state}")
    for rel, text in USER_FILES.items():
        if not (dest / rel).is_file() or (dest / rel).read_text() != text:
            problems.append(f"user file lost or changed: {rel}")
    expected = {"fake", ".hyperrestart.lock", *(rel.split("/")[0] for rel in USER_FILES)}
    strays = sorted(set(os.listdir(dest)) - expected)
    if strays:
        contents = {s: sorted(str(p.relative_to(dest / s)) for p in (dest / s).rglob("*"))[:8] for s in strays}
        problems.append(f"left behind: {contents}")
    return problems


def run_killed(project, args, delay, trigger=None):
    """Start the operation and SIGKILL its process group `delay` s after it starts, or after `trigger()` first
    holds (polled every 2 ms); True if it finished before the kill."""
    proc = subprocess.Popen([sys.executable, str(BOOTSTRAP), *args, "--dest", str(project.dest)], env=project.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while trigger and proc.poll() is None and not trigger():
        time.sleep(0.002)
    try:
        proc.wait(timeout=delay)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False


def swap_began(dest, kind):
    """The trigger of the targeted kills: the old tree has been moved aside (switch, rebuild), or, for a first
    materialise, the scratch tree exists."""
    if kind != "materialise":
        return os.path.lexists(dest / ".hyperrestart-old-fake")
    return any(owned.read_marker(p) for p in dest.glob(".hyperrestart-tmp-fake-*"))


def timed_run(project, args):
    started = time.monotonic()
    result = project.run(*args)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["materialise", "switch", "rebuild"])
def test_sigkill_at_random_moments_never_wedges_a_destination_or_loses_a_user_file(tmp_path, kind):
    seed = SEED + ("materialise", "switch", "rebuild").index(kind)
    replay = f"(seed {seed}: replay with HYPERRESTART_KILL_SEED={SEED})"
    rng = random.Random(seed)
    started = time.monotonic()
    project = BulkyProject(tmp_path)
    for rel, text in USER_FILES.items():
        write(project.dest / rel, text)
    operation = Operation(project, kind)
    timed_run(project, operation.prepare(1)[0])  # fills the cache; the loop starts from a built tree
    # the duration of one whole operation, unkilled: kills are spread over it, with extra weight on its end (swap
    # and deletion of the replaced tree)
    span = sum(timed_run(project, operation.prepare(i)[0]) for i in (0, 1)) / 2
    phases, failures, finished, kills, i = collections.Counter(), [], 0, 0, -1
    while kills < KILLS and i < 3 * KILLS:
        i += 1
        args, profile = operation.prepare(i)
        # half the kills anywhere in the operation; half targeted: a random moment after the swap began (for a
        # first materialise: after the scratch tree appeared), so that many land while the replaced tree is deleted
        targeted = rng.random() < 0.5
        delay = span * (rng.uniform(0.0, 0.5 if kind == "materialise" else 0.04) if targeted
                        else rng.uniform(0.0, 1.05))
        if run_killed(project, args, delay, (lambda: swap_began(project.dest, kind)) if targeted else None):
            finished += 1
        else:
            kills += 1
            phases[phase(project.dest)] += 1
        result = project.run(*args)
        if result.returncode != 0:
            failures.append(f"kill {i} after {delay:.3f}s: the next run failed: {result.stderr.strip()}")
            shutil.rmtree(project.tree, ignore_errors=True)  # un-wedge by hand, to go on counting
            continue
        failures += [f"kill {i} after {delay:.3f}s: {p}" for p in check_destination(project, profile)]
    wall = time.monotonic() - started
    summary = (f"{kind}: {kills} kills ({finished} more runs finished first), operation {span:.2f}s, "
               f"{len(failures)} problems, wall {wall:.0f}s {replay}; where kills landed: {dict(phases)}")
    print(summary)
    assert not failures, summary + "\n" + "\n".join(failures)
    assert kills == KILLS, summary
