"""patches/<upstream>/series: the ordered patch list, quilt-style, with optional `# profiles: a,b` tags."""
import re
from dataclasses import dataclass
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError

_TAG = re.compile(r"#\s*profiles:\s*(?P<profiles>[\w,\s+-]+)$")


@dataclass
class SeriesEntry:
    name: str
    profiles: tuple  # empty: every profile
    line: str  # the original line, kept by export

    def in_profile(self, profile):
        return not self.profiles or profile in self.profiles


def series_path(patches_dir: Path, upstream: str) -> Path:
    return Path(patches_dir) / upstream / "series"


def read_series(patches_dir, upstream, known_profiles=None):
    """Entries of the series file in order; a missing file is an empty series."""
    path = series_path(patches_dir, upstream)
    if not path.exists():
        return []
    entries, seen = [], set()
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        body, _, comment = raw.partition("#")
        name = body.strip()
        if not name:
            continue
        if len(name.split()) != 1:
            raise HyperrestartError(f"{path}:{lineno}: expected one patch name per line, got {raw!r}")
        if "/" in name or name.startswith("."):
            raise HyperrestartError(f"{path}:{lineno}: patch names are plain file names in {path.parent}, got {name!r}")
        if name in seen:
            raise HyperrestartError(f"{path}:{lineno}: {name} is listed twice")
        seen.add(name)
        profiles = ()
        if comment:
            match = _TAG.search("#" + comment)
            if match:
                profiles = tuple(p.strip() for p in match["profiles"].split(",") if p.strip())
        unknown = [p for p in profiles if known_profiles is not None and p not in known_profiles]
        if unknown:
            raise HyperrestartError(f"{path}:{lineno}: unknown profile(s) {', '.join(unknown)}; "
                                    f"vendor.lock defines {', '.join(known_profiles)}")
        entries.append(SeriesEntry(name=name, profiles=profiles, line=raw))
    return entries


def profile_patches(entries, profile):
    return [e for e in entries if e.in_profile(profile)]

