"""Files written whole or not at all, and file digests: the one implementation of each."""
import contextlib
import hashlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside `path` to write (by any means: a tar file, a figure); on success it replaces `path`
    in one rename, so a reader (or a crash) sees the old file or the new one, never half of it. The temp name
    carries this process's pid, so two writers never share one; it is removed on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` whole or not at all (atomic_path), flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """atomic_write_bytes of `text` as UTF-8, whatever the locale."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, content, indent=2, sort_keys=False) -> Path:
    """`content` as JSON (non-JSON values via str), ending in a newline, written atomically."""
    return atomic_write_text(path, json.dumps(content, indent=indent, sort_keys=sort_keys, default=str) + "\n")


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (hashlib.file_digest)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
