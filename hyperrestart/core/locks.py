"""Advisory lock files (flock): the one open-and-lock mechanism behind the destination, cache and sweep-run locks."""
import fcntl
import os
from pathlib import Path

from hyperrestart.core.errors import BusyError


class FileLock:
    """flock on PATH (created, with its folder, when missing). Subclasses decide what a busy lock means: wait, or
    refuse. Released, and the file closed, on exit."""

    def __init__(self, path):
        self.path = Path(path)
        self.handle = None

    def _open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+", encoding="utf-8")

    def try_exclusive(self) -> bool:
        """Take the lock exclusively if nobody holds it; False (and nothing held) when another process does."""
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def held_elsewhere(self) -> bool:
        """Whether another process holds a lock on PATH right now: a probe that takes and drops the lock without
        waiting, creates nothing (a missing file is not held) and leaves nothing held."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def wait_exclusive(self):
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def share(self):
        """Downgrade to a shared lock: other readers may enter, no writer can."""
        fcntl.flock(self.handle, fcntl.LOCK_SH)

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class RefusingLock(FileLock):
    """An exclusive lock that refuses rather than waits: entering it while another process holds it raises `error`
    with busy_message() (one line, computed while the file is still open), and nothing is held."""

    error = BusyError

    def busy_message(self) -> str:
        raise NotImplementedError

    def on_acquired(self):
        """Called once the lock is held (e.g. record_pid)."""

    def holder(self) -> str:
        """The pid the holder recorded in the lock file (record_pid), or "unknown"."""
        self.handle.seek(0)
        return self.handle.read().strip() or "unknown"

    def record_pid(self):
        """Write this process's pid into the held lock file, for the message a second process gets."""
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{os.getpid()}\n")
        self.handle.flush()

    def __enter__(self):
        self._open()
        if not self.try_exclusive():
            message = self.busy_message()
            self.handle.close()
            raise self.error(message)
        self.on_acquired()
        return self
