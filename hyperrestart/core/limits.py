"""Bounds on what the tool reads: file size, nesting depth, finite numbers, file-name length. Each refusal states
the limit it hit."""
import json
import math
import os
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError

MAX_FILE_BYTES = 4 * 1024 * 1024  # a config or sweep spec is a few KB; 4 MB is far beyond any real one
MAX_DEPTH = 32  # nesting of mappings/lists in a config or spec (real ones nest 3 deep)
NON_FINITE = ("NaN", "Infinity", "-Infinity")


def read_text_bounded(path, what, max_bytes=MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a config/spec file, refused (naming the limit) when it is larger than max_bytes."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise HyperrestartError(f"{what} {path} does not exist") from None
    if size > max_bytes:
        raise HyperrestartError(f"{what} {path} is {size:,} bytes, over the limit of {max_bytes:,} bytes for a "
                                f"{what}; a real one is a few KB, so check that this is the right file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HyperrestartError(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _refuse_constant(name):
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number (it overflows a float)")
    return value


def loads_json(text, where):
    """JSON with only finite numbers (NaN, Infinity and overflowing literals refused), nested at most MAX_DEPTH
    deep; HyperrestartError naming `where` otherwise."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise HyperrestartError(f"{where} is nested too deeply to read (the limit is {MAX_DEPTH} levels)") from None
    except ValueError as exc:
        raise HyperrestartError(f"{where} is not valid JSON of finite numbers ({exc}); fix the file") from None
    check_depth(value, where)
    return value


def check_depth(value, where, max_depth=MAX_DEPTH):
    """Refuse a value whose mappings/lists nest deeper than max_depth (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth > max_depth:
                raise HyperrestartError(f"{where} nests mappings/lists more than {max_depth} levels deep (the "
                                        f"limit); flatten it")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def non_finite_numbers(value, prefix=""):
    """[(dotted key, value)] of every NaN or infinite float inside value (mappings/lists, iteratively)."""
    found, stack = [], [(prefix, value)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            found.append((key, item))
        elif isinstance(item, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(item))
    return sorted(found, key=lambda pair: pair[0])


def name_max(folder) -> int:
    """The longest file name (bytes) the filesystem holding `folder` (or its nearest existing parent) takes."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_name_length(name, folder, what):
    """Refuse a file name longer than the filesystem allows, before anything is written under that name."""
    limit = name_max(folder)
    size = len(str(name).encode("utf-8"))
    if size > limit:
        raise HyperrestartError(f"{what} {str(name)[:40]}... is {size} bytes long, over the file-name limit of "
                                f"{limit} bytes of the filesystem at {folder}; shorten it")
