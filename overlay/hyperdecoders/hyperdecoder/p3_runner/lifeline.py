"""Stop means stop: every process of a run dies with the process that started it (Linux prctl PR_SET_PDEATHSIG).

torchrun starts its workers in sessions of their own, so a signal to the launcher's process group (what a user or a
scheduler sends) never reaches them, and a SIGKILLed torchrun would leave them training, orphaned. So the launcher
(`hyperrestart p3`) gives its child a parent-death signal (`preexec`), and each worker arms one itself at start
(`guard_worker`): it checks that its parent, the torchrun agent, is still the launcher's child, so a launcher that died
before the signal was armed is caught too. No torch, no transformers: the tool imports this file."""
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
LAUNCHER_PID = "HYPERRESTART_P3_LAUNCHER_PID"  # set by `hyperrestart p3` for the processes it starts


def set_parent_death_signal(signum):
    """Ask the kernel to send `signum` to this process when its parent dies; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


def preexec(parent_pid, signum=signal.SIGTERM):
    """A subprocess preexec_fn: the child gets `signum` when `parent_pid` dies, and exits at once when it already
    has (race-free: armed before the check). SIGTERM lets torchrun stop its workers itself."""
    def arm():
        set_parent_death_signal(signum)
        if os.getppid() != parent_pid:
            os._exit(128 + signum)
    return arm


def parent_of(pid):
    """The parent pid of `pid` (from /proc), or None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def guard_worker():
    """Under torchrun: SIGKILL this worker when the agent that started it dies; exit now when the agent, or the
    `hyperrestart p3` that started the agent, is already gone."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not set_parent_death_signal(signal.SIGKILL):
        return
    launcher = os.environ.get(LAUNCHER_PID)
    agent = os.getppid()
    if agent == 1 or (launcher and parent_of(agent) != int(launcher)):
        sys.exit("p3_trainer: the torchrun launcher that started this worker is gone; stopping")
