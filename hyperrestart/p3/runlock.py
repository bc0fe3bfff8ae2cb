"""One writer per P3 run folder: `hyperrestart p3` holds an exclusive lock on OUTPUT_DIR/.hyperrestart-p3.lock while
the runner (and every worker it starts) writes there; a second `p3` on that folder is refused in one line. A run
folder this launch created is removed again when the runner fails before writing anything into it."""
from contextlib import contextmanager
from pathlib import Path

from hyperrestart.core.locks import RefusingLock

LOCK_NAME = ".hyperrestart-p3.lock"


class RunFolderLock(RefusingLock):
    """An exclusive flock on OUTPUT_DIR/.hyperrestart-p3.lock holding this pid; BusyError when another holds it."""

    def __init__(self, output_dir):
        super().__init__(Path(output_dir) / LOCK_NAME)

    def busy_message(self):
        return (f"{self.path.parent} is being written by another `hyperrestart p3` right now (pid {self.holder()}); "
                f"wait for it to finish or stop it, or pick another --output-dir")

    on_acquired = RefusingLock.record_pid


def missing_folders(path):
    """The folders from `path` up that do not exist yet (deepest first)."""
    path = Path(path).absolute()
    return [p for p in [path, *path.parents] if not p.exists()]


@contextmanager
def locked_run_folder(output_dir):
    """Create OUTPUT_DIR if needed and hold its lock; yields a function `failed()` to call when the runner failed,
    which removes the folders this launch created when nothing but the lock file is in them."""
    created = missing_folders(output_dir)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    outcome = {"failed": False}
    try:
        with RunFolderLock(output_dir) as lock:
            yield lambda: outcome.update(failed=True)
            if outcome["failed"] and created and [p.name for p in Path(output_dir).iterdir()] == [LOCK_NAME]:
                lock.path.unlink()
    finally:
        if outcome["failed"]:
            for folder in created:
                try:
                    folder.rmdir()  # only an empty folder this launch made
                except OSError:
                    break
