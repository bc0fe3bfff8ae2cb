"""prepare-p3's output-folder safety: which OUT may be written or replaced, and the claim on it.

OUT is written into a temporary sibling ``.{OUT name}.prepare-p3-tmp-{pid}`` (guarded by a locked ``...-lock-{pid}``
file, hyperrestart.core.locks.FileLock) and renamed into place at the end, so a failure never leaves a folder that
looks complete; SIGTERM and Ctrl-C remove it, and a later run removes what a killed run left (its lock is no longer
held). ``--overwrite`` replaces only a folder that prepare-p3 wrote (its manifest, nothing else in it), never the
source, a folder inside it or one holding it.
"""
import errno
import json
import os
import re
import shutil
import signal
import threading
from pathlib import Path

from hyperrestart.core.errors import BusyError, HyperrestartError
from hyperrestart.core.locks import FileLock, RefusingLock

MANIFEST = "manifest.json"
TEMP_TAG = "prepare-p3"
TEMP_KINDS = ("lock", "tmp", "old")


class Terminated(HyperrestartError):
    """SIGTERM arrived while preparing; the unfinished output was removed."""

    exit_code = 128 + signal.SIGTERM


class _Signalled(BaseException):
    pass


def _raise_signalled(signum, frame):
    raise _Signalled(signum)


def written_by_prepare(folder):
    """The manifest of a folder prepare-p3 wrote, or None."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(manifest, dict) and "prepare-p3" in str(manifest.get("created_by", "")) \
            and "manifest_version" in manifest:
        return manifest
    return None


def check_locations(source, out):
    """OUT must not be the source, inside it, or hold it (--overwrite would delete the source)."""
    src, dst = Path(source).resolve(), Path(out).resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        relation = "is" if dst == src else "is inside" if src in dst.parents else "holds"
        raise HyperrestartError(f"--out {out} {relation} the P3 source {source}; write the prepared data to a folder "
                                "outside the source (e.g. a sibling such as p3_prepared)")


def check_existing_out(out, overwrite):
    """Refuse an OUT that exists unless --overwrite and it is a prepare-p3 output holding nothing else (or empty)."""
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_symlink():
        raise HyperrestartError(f"--out {out} is a symbolic link (to {os.readlink(out)}); pass the folder itself")
    if not out.is_dir():
        raise HyperrestartError(f"--out {out} exists and is not a folder; pass the path of a folder to create")
    if not overwrite:
        raise HyperrestartError(f"output {out} already exists; remove it or pass --overwrite")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    manifest = written_by_prepare(out)
    if manifest is None:
        raise HyperrestartError(f"--overwrite: {out} is not a prepare-p3 output (no {MANIFEST} written by prepare-p3) "
                                f"and is not empty ({', '.join(entries[:5])}{' ...' if len(entries) > 5 else ''}); "
                                "refusing to delete it: pick another --out or remove it yourself")
    ours = {MANIFEST, "data"}
    extra = [name for name in entries if name not in ours]
    data = out / "data"
    if data.is_dir():
        listed = manifest.get("outputs", {})
        extra += [f"data/{p.name}" for p in sorted(data.iterdir()) if f"data/{p.name}" not in listed]
    if extra:
        raise HyperrestartError(f"--overwrite: {out} holds files prepare-p3 did not write ({', '.join(extra[:5])}"
                                f"{' ...' if len(extra) > 5 else ''}); move them out first, or pick another --out")


def temp_path(out, kind, pid=None):
    """OUT's temporary sibling of one kind (lock, tmp, old) for process `pid` (default: this one)."""
    return out.parent / f".{out.name}.{TEMP_TAG}-{kind}-{os.getpid() if pid is None else pid}"


def clean_stale(out, say):
    """Remove the temporary siblings of OUT left by prepare-p3 runs that died (their lock is free); a replaced OUT
    they had set aside (``-old-``) is put back when OUT is missing. A live run's lock is a BusyError."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.{TEMP_TAG}-({'|'.join(TEMP_KINDS)})-(\d+)$")
    found = {}
    for entry in out.parent.iterdir():
        match = pattern.match(entry.name)
        if match:
            found.setdefault(int(match.group(2)), {})[match.group(1)] = entry
    for pid, paths in sorted(found.items()):
        lock = paths.get("lock")
        if lock is not None and FileLock(lock).held_elsewhere():
            raise BusyError(f"another prepare-p3 (pid {pid}) is writing {out} now (lock {lock}); wait for it to "
                            "finish, or stop it")
        old = paths.get("old")
        if old is not None:
            if not (out.exists() or out.is_symlink()) and written_by_prepare(old):
                old.rename(out)
                say(f"prepare-p3: restored {out} from {old.name}, set aside by an interrupted run (pid {pid})")
            else:
                shutil.rmtree(old)
                say(f"prepare-p3: removed {old}, left by an interrupted run (pid {pid})")
        if "tmp" in paths:
            shutil.rmtree(paths["tmp"])
            say(f"prepare-p3: removed {paths['tmp']}, left by an interrupted run (pid {pid})")
        if lock is not None:
            lock.unlink(missing_ok=True)


class ClaimLock(RefusingLock):
    """OUT's lock file for this process (temp_path(out, "lock")), held exclusively and holding this pid."""

    def __init__(self, out):
        super().__init__(temp_path(out, "lock"))

    def busy_message(self):
        return f"{self.path} is held by another process; wait for it to finish, or stop it"

    on_acquired = RefusingLock.record_pid

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.path.unlink(missing_ok=True)


class Claim:
    """Context: clean stale siblings, hold OUT's lock, catch SIGTERM; on exit remove the temporary folder and lock.
    `tmp` is the folder to build OUT in; publish() moves it into place."""

    def __init__(self, out, say):
        self.out, self.say = out, say
        self.lock, self.tmp = ClaimLock(out), temp_path(out, "tmp")

    def __enter__(self):
        self.out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(self.out, self.say)
        self.lock.__enter__()
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, _raise_signalled)
        return self

    def publish(self):
        """Move the finished temporary folder to OUT; an existing OUT is set aside first and removed after, so OUT
        is at every moment the old folder or the new one (an interrupted swap is undone by __exit__ or the next
        run's clean_stale)."""
        if self.out.exists() or self.out.is_symlink():
            old = temp_path(self.out, "old")
            self.out.rename(old)
            self.tmp.rename(self.out)
            shutil.rmtree(old)
        else:
            self.tmp.rename(self.out)

    def __exit__(self, kind, exc, tb):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        shutil.rmtree(self.tmp, ignore_errors=True)
        set_aside = temp_path(self.out, "old")
        if set_aside.exists():  # stopped between moving OUT aside and the new one into place: put OUT back
            if self.out.exists() or self.out.is_symlink():
                shutil.rmtree(set_aside, ignore_errors=True)
            else:
                set_aside.rename(self.out)
        self.lock.__exit__(kind, exc, tb)
        if kind is _Signalled:
            raise Terminated(f"terminated by SIGTERM; removed the unfinished output {self.tmp}; "
                             f"{self.out} is as it was") from None
        return False


def check_parent(out):
    """The nearest existing folder above OUT must be a folder (mkdir under a file fails with a puzzling message)."""
    for ancestor in Path(out).absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise HyperrestartError(f"cannot create --out {out}: {ancestor} is a file, not a folder; "
                                        "pick another --out")
            return


def filesystem_error(exc, source, out):
    """A one-line HyperrestartError for an OSError while reading SOURCE or writing OUT (what, where, what to do)."""
    where = exc.filename or ""
    if where and Path(source).resolve() in Path(where).resolve().parents:
        what = "permission denied" if exc.errno in (errno.EACCES, errno.EPERM) else exc.strerror or str(exc)
        return HyperrestartError(f"cannot read {where}: {what}; check the P3 source {source}")
    what, advice = {errno.ENOSPC: ("the disk is full", "free some space"),
                    errno.EDQUOT: ("the disk quota is exceeded", "free some space"),
                    errno.EACCES: ("permission denied", "pick a --out in a folder you can write"),
                    errno.EPERM: ("operation not permitted", "pick a --out in a folder you can write"),
                    errno.EROFS: ("the file system is read-only", "pick a --out on a writable disk")}.get(
        exc.errno, (exc.strerror or str(exc), "fix that"))
    return HyperrestartError(f"cannot write the output {out}{f' ({where})' if where else ''}: {what}; nothing was "
                             f"left behind: {advice}, then run again")
