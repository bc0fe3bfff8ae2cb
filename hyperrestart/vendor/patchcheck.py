"""Checks made before any tree is touched (content hashes, safe paths) and the diagnosis of a patch that fails."""
import difflib
import os
import posixpath
import re
import stat
from pathlib import Path

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from hyperrestart.core.errors import HyperrestartError


def git_lines(text: str) -> list:
    """The lines of a patch as git reads them: ending only at '\\n' (never at a form feed, '\\x0b', '\\x85' or
    U+2028, where str.splitlines() would split), each without its '\\n'."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def check_relative_path(path: str, what: str):
    """Refuse a path that is absolute, climbs with '..', reaches into .git, or is not plain POSIX."""
    problem = None
    if not path:
        problem = "is empty"
    elif path.startswith("/") or posixpath.isabs(path) or (len(path) > 1 and path[1] == ":"):
        problem = "is absolute"
    elif "\\" in path:
        problem = "contains a backslash"
    elif ".." in path.split("/"):
        problem = "contains '..'"
    elif any(is_dot_git(part) for part in path.split("/")):
        problem = "reaches into .git"
    if problem:
        raise HyperrestartError(f"{what}: path {path!r} {problem}; refusing it (paths must stay inside the upstream tree)")


OVERLAY_ROOT = "overlay"


def _refuse_link(path, what):
    raise HyperrestartError(f"{what}: {path} is a symlink to {os.readlink(path)}; overlay sources must be regular "
                            f"files inside {OVERLAY_ROOT}/ (copy the file in instead of linking it)")


def check_overlay_source(root, source, what):
    """An overlay source is a regular file inside ROOT/overlay/, reached through no symlink (a linked file or folder
    would bring content from outside the project into the trees and the lock)."""
    check_relative_path(source, what)
    parts = source.split("/")
    if parts[0] != OVERLAY_ROOT or len(parts) < 2:
        raise HyperrestartError(f"{what}: {source!r} is not inside {OVERLAY_ROOT}/; overlay sources live there")
    path = Path(root)
    for part in parts:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise HyperrestartError(f"{source}: overlay file missing") from None
        if stat.S_ISLNK(mode):
            _refuse_link(path, what)
    if not stat.S_ISREG(mode):
        raise HyperrestartError(f"{what}: {path} is not a regular file; overlay sources must be regular files")
    return path


def overlay_files(folder, root, what):
    """Every regular file under FOLDER (bytecode caches left out), as paths relative to ROOT; any symlink (to a
    file or a folder) or other non-regular entry on the way is refused, never skipped."""
    folder = Path(folder)
    if folder.is_symlink():
        _refuse_link(folder, what)
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in [*dirs, *sorted(files)]:
            path = Path(top) / name
            if path.is_symlink():
                _refuse_link(path, what)
        found += [check_overlay_source(root, (Path(top) / f).relative_to(root).as_posix(), what)
                  for f in sorted(files)]
    return sorted(found)


def is_dot_git(part):
    """.git as git itself refuses it (verify_path): in any case, and as NTFS reads `.git.`, `.git ` or `git~1`."""
    folded = part.lower().rstrip(". ")
    return folded in (".git", "git~1")


# File modes, read as git reads them (octal; the type is in the S_IFMT bits). Patches may only carry regular files.
S_IFMT, S_IFLNK, S_IFGITLINK = 0o170000, 0o120000, 0o160000
REGULAR_MODES = (0o100644, 0o100755)
MODE_HEADERS = ("old mode", "new mode", "deleted file mode", "new file mode")
PATH_HEADERS = ("rename from", "rename to", "copy from", "copy to")
_OCTAL = re.compile(r"\s*([0-7]+)(?:\s|$)")


def check_mode(text, where):
    """Refuse a mode (a header's value, as git parses it: optional blanks, octal digits, then a blank or the end)
    that is not a regular file's: symlinks, submodules, anything else."""
    match = _OCTAL.match(text)
    mode = int(match[1], 8) if match else None
    if mode is not None and mode & S_IFMT == S_IFLNK:
        raise HyperrestartError(f"{where}: mode {text.strip()!r} is a symlink; patches that create or change "
                                f"symlinks are refused")
    if mode is not None and mode & S_IFMT == S_IFGITLINK:
        raise HyperrestartError(f"{where}: mode {text.strip()!r} is a submodule (gitlink); refused")
    if mode not in REGULAR_MODES:
        raise HyperrestartError(f"{where}: mode {text.strip()!r} is not a regular file mode (100644 or 100755); "
                                f"refused")


def _check_headers(name, text):
    """The extended header lines of every file diff: modes (including the one on `index` lines) and rename/copy
    paths. Lines before the first `diff --git` (the message) and inside hunks are content, not headers."""
    in_header = False
    for lineno, line in enumerate(git_lines(text), 1):
        where = f"{name}:{lineno}"
        if line.startswith("diff --git "):
            in_header = True
        elif line.startswith(("--- ", "+++ ", "@@ ")):
            in_header = False
        elif in_header:
            keyword = next((k for k in MODE_HEADERS if line.startswith(k + " ")), None)
            if keyword:
                check_mode(line[len(keyword):], where)
            elif line.startswith("index "):
                _, _, mode = line[len("index "):].partition(" ")
                if mode:
                    check_mode(mode, where)
            else:
                keyword = next((k for k in PATH_HEADERS if line.startswith(k + " ")), None)
                if keyword:
                    check_relative_path(line[len(keyword) + 1:], where)


def _strip_prefix(path):
    if path is None or path == "/dev/null":
        return None
    return path[2:] if path[:2] in ("a/", "b/") else path


def parse_patch(path) -> PatchSet:
    """Parse a patch with unidiff and refuse unsafe content: bad paths, binary diffs, any mode but a regular file's."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise HyperrestartError(f"{path.name}: not UTF-8 ({exc.reason} at byte {exc.start}); "
                                f"ship files in other encodings in overlay/") from None
    for lineno, line in enumerate(git_lines(text), 1):
        if line.startswith("GIT binary patch") or (line.startswith("Binary files ") and line.endswith(" differ")):
            raise HyperrestartError(f"{path.name}:{lineno}: binary patches are refused (ship the file in overlay/)")
    _check_headers(path.name, text)
    try:
        patch = PatchSet(text)
    except UnidiffParseError as exc:
        raise HyperrestartError(f"{path.name}: not a valid unified diff ({exc})") from None
    if not len(patch):
        raise HyperrestartError(f"{path.name}: contains no diff")
    for patched in patch:
        for candidate in (_strip_prefix(patched.source_file), _strip_prefix(patched.target_file)):
            if candidate is not None:
                check_relative_path(candidate, f"{path.name}")
    return patch


def touched_paths(patch: PatchSet):
    paths = set()
    for patched in patch:
        for candidate in (_strip_prefix(patched.source_file), _strip_prefix(patched.target_file)):
            if candidate is not None:
                paths.add(candidate)
    return sorted(paths)


def check_inside_tree(root, relpath, what):
    """Refuse a path that leaves the tree through a symlink already in it."""
    root = os.path.realpath(root)
    resolved = os.path.realpath(os.path.join(root, relpath))
    if resolved != root and not resolved.startswith(root + os.sep):
        raise HyperrestartError(f"{what}: {relpath!r} resolves outside the upstream tree (symlink); refusing it")


def dep3_problems(path) -> list:
    """Missing DEP-3 fields in a patch header (only Description is mandatory here)."""
    header = Path(path).read_text(encoding="utf-8", errors="replace").split("\ndiff --git ", 1)[0]
    return [] if "Description:" in header else [f"{Path(path).name}: header has no DEP-3 'Description:' field"]


def _hunk_source_lines(hunk):
    return [line.value.rstrip("\n") for line in hunk if line.is_context or line.is_removed]


def _find_block(lines, block, start):
    """Index of `block` in `lines`, searching outward from `start` as git apply does; None if absent."""
    n = len(block)
    if n == 0:
        return start
    for distance in range(0, len(lines) + 1):
        for idx in (start + distance, start - distance):
            if 0 <= idx <= len(lines) - n and lines[idx:idx + n] == block:
                return idx
    return None


def diagnose_failure(patch_path, tree_root) -> str:
    """Name the file and hunk of `patch_path` that does not match `tree_root`, with expected vs actual lines."""
    patch = parse_patch(patch_path)
    for patched in patch:
        source = _strip_prefix(patched.source_file)
        target = _strip_prefix(patched.target_file)
        if source is None:  # new file
            if target and os.path.exists(os.path.join(tree_root, target)):
                return f"file {target}: the patch creates it, but it already exists"
            continue
        file_path = os.path.join(tree_root, source)
        if not os.path.exists(file_path):
            return f"file {source}: missing from the tree"
        with open(file_path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
        offset = 0
        for number, hunk in enumerate(patched, 1):
            block = _hunk_source_lines(hunk)
            expected_at = hunk.source_start - 1 + offset
            found = _find_block(lines, block, expected_at)
            if found is not None:
                offset = found - (hunk.source_start - 1)
                continue
            actual = lines[max(expected_at, 0):max(expected_at, 0) + len(block)]
            first = next((i for i, (e, a) in enumerate(zip(block, actual)) if e != a), min(len(block), len(actual)))
            exp_line = block[first] if first < len(block) else "<end of hunk>"
            act_line = actual[first] if first < len(actual) else "<end of file>"
            diff = "\n".join("      " + d for d in difflib.unified_diff(
                block, actual, "expected (patch)", f"actual ({source})", lineterm="", n=1))
            return (f"file {source}, hunk #{number} ({str(hunk).splitlines()[0].strip()}):\n"
                    f"    line {expected_at + first + 1}: expected {exp_line!r}\n"
                    f"    {' ' * len(str(expected_at + first + 1))}       actual   {act_line!r}\n{diff}")
    return "every hunk's context matches; git refused it for another reason (see git's message)"
