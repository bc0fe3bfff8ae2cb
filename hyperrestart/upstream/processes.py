"""The trainer as a process tree that stops when its launcher does: started in its own process group (told to
stop if the launcher dies, even by SIGKILL, through PR_SET_PDEATHSIG), and on SIGINT/SIGTERM/SIGHUP to the launcher
every process it started (torchrun's workers included, which sit in sessions of their own) gets the signal, then
SIGKILL after a grace period."""
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 20
PR_SET_PDEATHSIG = 1


class Stopped(Exception):
    """The launcher was told to stop (by `signum`) and stopped the trainer."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _die_with_parent():  # runs in the child between fork and exec
    os.setsid()
    parent_death_signal()


def parent_death_signal():
    """This process gets SIGTERM when its parent dies (Linux; elsewhere nothing); a preexec_fn."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def descendants(pid):
    """Every live process below `pid` (read from /proc), deepest last; empty where /proc is not available."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def signal_tree(process, signum):
    """Send signum to the trainer's process group and to every process below it."""
    targets = descendants(process.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def popen_tree(cmd, **kwargs):
    """subprocess.Popen in a process group of its own that gets SIGTERM when the launcher dies."""
    return subprocess.Popen(cmd, preexec_fn=_die_with_parent, **kwargs)


@contextlib.contextmanager
def stop_with_launcher(process, grace=GRACE_SECONDS):
    """While the block runs, a stop signal to the launcher is passed to the trainer's whole tree (SIGKILL after
    `grace` seconds); on leaving, anything of the tree still alive is killed. Raises Stopped after the block when
    a stop signal came."""
    received, timers = [], []

    def forward(signum, _frame):
        received.append(signum)
        signal_tree(process, signum)
        if not timers:
            timers.append(threading.Timer(grace, signal_tree, (process, signal.SIGKILL)))
            timers[0].daemon = True
            timers[0].start()

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS} if in_main else {}
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()
        if process.poll() is None:
            signal_tree(process, signal.SIGKILL)
            process.wait()
        for pid in descendants(process.pid) if process.poll() is None else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise Stopped(received[0])
