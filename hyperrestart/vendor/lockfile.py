"""vendor.lock: the pinned upstream commits and every hash that proves a materialised tree is the right one (TOML)."""
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_write_text

LOCK_VERSION = 1
HEADER = """\
# vendor.lock: the exact upstream commits hyperrestart builds on, and the hashes that prove a tree is right.
# url/commit are edited by hand; every hash is refreshed with `python bootstrap.py lock`.
#   tree         git tree of the pinned commit (checked after fetching)
#   result_tree  git tree after the profile's patch series + overlay (checked after materialising)
#   patches      sha256 of each patch file in patches/<name>/; overlay: destination -> source file + sha256
"""


@dataclass
class OverlayFile:
    dest: str  # path inside the upstream tree
    source: str  # path relative to the project root
    sha256: str = ""


@dataclass
class Upstream:
    name: str
    url: str
    commit: str
    tree: str = ""
    result_tree: dict = field(default_factory=dict)  # profile -> tree hash
    patches: dict = field(default_factory=dict)  # patch file name -> sha256
    overlay: list = field(default_factory=list)  # [OverlayFile]


@dataclass
class Lock:
    path: Path
    default_profile: str
    profiles: list
    upstreams: dict  # name -> Upstream

    def upstream(self, name):
        try:
            return self.upstreams[name]
        except KeyError:
            raise HyperrestartError(
                f"no upstream named {name!r} in {self.path}; known: {', '.join(self.upstreams)}") from None

    def check_profile(self, profile):
        if profile not in self.profiles:
            raise HyperrestartError(
                f"unknown profile {profile!r}; {self.path} defines: {', '.join(self.profiles)}")
        return profile


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # an upstream name is used as a folder name: DEST/NAME, cache
_TYPES = {str: "a string", dict: "a table", list: "an array"}
_TOML_TYPES = {str: "string", dict: "table", list: "array", int: "integer", float: "float", bool: "boolean"}


def _get(table, key, where, kind, default=None):
    """table[key] checked to be of `kind` (missing: `default`, or an error when default is None)."""
    if key not in table:
        if default is None:
            raise HyperrestartError(f"{where}: missing key {key!r}")
        return default
    value = table[key]
    if type(value) is not kind:
        got = _TOML_TYPES.get(type(value), type(value).__name__)
        raise HyperrestartError(f"{where}: {key!r} must be {_TYPES[kind]}, got {got} {value!r}")
    return value


def _strings(table, where):
    """A table of string values (result_tree, patches), each checked."""
    return {key: _get(table, key, where, str) for key in table}


def check_name(name, where):
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise HyperrestartError(f"{where}: upstream name {name!r} is not a plain name (letters, digits, '.', '_', "
                                f"'-', starting with a letter or digit): it names folders")
    return name


def load(path) -> Lock:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HyperrestartError(f"{path} not found: run from a hyperrestart checkout") from None
    except tomllib.TOMLDecodeError as exc:
        raise HyperrestartError(f"{path} is not valid TOML: {exc}") from None
    if data.get("lock_version") != LOCK_VERSION:
        raise HyperrestartError(f"{path}: lock_version {data.get('lock_version')!r} is not {LOCK_VERSION}")
    profiles = _get(data, "profiles", str(path), list)
    for profile in profiles:
        if type(profile) is not str:
            raise HyperrestartError(f"{path}: 'profiles' must be an array of strings, got {profile!r}")
    upstreams = {}
    for name, table in _get(data, "upstream", str(path), dict).items():
        where = f"{path} [upstream.{name}]"
        check_name(name, str(path))
        if type(table) is not dict:
            raise HyperrestartError(f"{where}: must be a table, got {table!r}")
        commit = _get(table, "commit", where, str)
        if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
            raise HyperrestartError(f"{where}: commit must be a full 40-hex SHA, got {commit!r}")
        url = _get(table, "url", where, str)
        if url.startswith("-"):
            raise HyperrestartError(f"{where}: url {url!r} must not start with '-'")
        overlay = []
        for dest, spec in _get(table, "overlay", where, dict, {}).items():
            entry = f"{where} overlay {dest!r}"
            if type(spec) is not dict:
                raise HyperrestartError(f"{entry}: must be a table {{ source = ..., sha256 = ... }}, got {spec!r}")
            overlay.append(OverlayFile(dest, _get(spec, "source", entry, str), _get(spec, "sha256", entry, str, "")))
        upstreams[name] = Upstream(
            name=name, url=url, commit=commit, tree=_get(table, "tree", where, str, ""),
            result_tree=_strings(_get(table, "result_tree", where, dict, {}), f"{where} result_tree"),
            patches=_strings(_get(table, "patches", where, dict, {}), f"{where} patches"), overlay=overlay)
    default = _get(data, "default_profile", str(path), str, profiles[0] if profiles else "")
    lock = Lock(path=path, default_profile=default, profiles=profiles, upstreams=upstreams)
    lock.check_profile(default)
    return lock


def _q(text):
    return json.dumps(text)  # a TOML basic string


def dumps(lock: Lock) -> str:
    lines = [HEADER, f"lock_version = {LOCK_VERSION}", f"default_profile = {_q(lock.default_profile)}",
             "profiles = [" + ", ".join(_q(p) for p in lock.profiles) + "]"]
    for up in lock.upstreams.values():
        lines += ["", f"[upstream.{up.name}]", f"url = {_q(up.url)}", f"commit = {_q(up.commit)}",
                  f"tree = {_q(up.tree)}"]
        if up.result_tree:
            lines.append("result_tree = { " + ", ".join(f"{p} = {_q(t)}" for p, t in up.result_tree.items()) + " }")
        lines += ["", f"[upstream.{up.name}.patches]"]
        lines += [f"{_q(name)} = {_q(digest)}" for name, digest in up.patches.items()]
        lines += ["", f"[upstream.{up.name}.overlay]"]
        lines += [f"{_q(o.dest)} = {{ source = {_q(o.source)}, sha256 = {_q(o.sha256)} }}" for o in up.overlay]
    return "\n".join(lines) + "\n"


def save(lock: Lock):
    atomic_write_text(lock.path, dumps(lock))
