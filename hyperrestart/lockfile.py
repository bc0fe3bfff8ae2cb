"""vendor.lock: the pinned upstream commits and every hash that proves a materialised tree is the right one (TOML)."""
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HyperrestartError

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


def _require(table, key, where):
    if key not in table:
        raise HyperrestartError(f"{where}: missing key {key!r}")
    return table[key]


def load(path) -> Lock:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise HyperrestartError(f"{path} not found: run from a hyperrestart checkout") from None
    except tomllib.TOMLDecodeError as exc:
        raise HyperrestartError(f"{path} is not valid TOML: {exc}") from None
    if data.get("lock_version") != LOCK_VERSION:
        raise HyperrestartError(f"{path}: lock_version {data.get('lock_version')!r} is not {LOCK_VERSION}")
    profiles = list(_require(data, "profiles", str(path)))
    upstreams = {}
    for name, table in _require(data, "upstream", str(path)).items():
        where = f"{path} [upstream.{name}]"
        commit = _require(table, "commit", where)
        if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
            raise HyperrestartError(f"{where}: commit must be a full 40-hex SHA, got {commit!r}")
        overlay = [OverlayFile(dest, _require(spec, "source", f"{where} overlay {dest!r}"), spec.get("sha256", ""))
                   for dest, spec in table.get("overlay", {}).items()]
        upstreams[name] = Upstream(name=name, url=_require(table, "url", where), commit=commit,
                                   tree=table.get("tree", ""), result_tree=dict(table.get("result_tree", {})),
                                   patches=dict(table.get("patches", {})), overlay=overlay)
    default = data.get("default_profile", profiles[0])
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
    tmp = lock.path.with_suffix(".lock.tmp")
    tmp.write_text(dumps(lock))
    tmp.replace(lock.path)
