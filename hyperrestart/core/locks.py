"""Advisory lock files (flock): the one open-and-lock mechanism behind the destination, cache and sweep-run locks."""
import fcntl
from pathlib import Path


class FileLock:
    """flock on PATH (created, with its folder, when missing). Subclasses decide what a busy lock means: wait, or
    refuse. Released, and the file closed, on exit."""

    def __init__(self, path):
        self.path = Path(path)
        self.handle = None

    def _open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")

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
