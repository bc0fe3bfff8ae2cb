"""Air-gapped transfer: `pack` writes the pinned commits as git bundles in one tar file; `--from` reads it back."""
import atexit
import json
import shutil
import os
import posixpath
import tarfile
import tempfile
from pathlib import Path

from hyperrestart.vendor import gitops
from hyperrestart.vendor.lockfile import check_name
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.files import atomic_path
from hyperrestart.vendor.sources import WHOLE_PACKS, cached_commit, pinned_ref

MANIFEST = "hyperrestart-pack.json"


def pack(lock, names, out: Path, *, overrides=None, bundles=None, offline=False, log=print):
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="hyperrestart-pack-") as tmp:
        manifest = {"format": 1, "upstreams": {}}
        for name in names:
            upstream = lock.upstream(name)
            bundle = Path(tmp) / f"{name}.bundle"
            with cached_commit(upstream, overrides=overrides, bundles=bundles, offline=offline, exclusive=True,
                               log=log) as cache:
                if (cache / "shallow").exists() and not offline:
                    # a bundle must be self-contained: take the history too when the cache only has the commit
                    gitops.run(cache, *WHOLE_PACKS, "fetch", "-q", "--unshallow", "--no-tags", "--", upstream.url,
                               "+refs/heads/*:refs/hyperrestart/remote/heads/*")
                try:
                    gitops.run(cache, "bundle", "create", "-q", str(bundle), pinned_ref(upstream.commit))
                except gitops.GitError as exc:
                    raise HyperrestartError(f"cannot bundle {name}: {exc.stderr}") from None
            manifest["upstreams"][name] = {"commit": upstream.commit, "tree": upstream.tree,
                                           "bundle": bundle.name}
            log(f"{name}: bundled {upstream.commit[:12]} ({bundle.stat().st_size // 1024} KiB)")
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        with atomic_path(out) as partial, tarfile.open(partial, "w") as tar:
            for entry in sorted(os.listdir(tmp)):
                tar.add(Path(tmp) / entry, arcname=entry)
    log(f"wrote {out}: use it with `python bootstrap.py --from {out.name}` on the air-gapped machine")


def unpack(pack_file) -> dict:
    """Extract a pack to a temporary directory; return {name: bundle path}. Only regular files and folders are
    extracted (tarfile's data filter: no absolute or '..' names), and every bundle the manifest names must be a
    regular file inside the extraction folder."""
    pack_file = Path(pack_file)
    if not pack_file.is_file():
        raise HyperrestartError(f"--from {pack_file}: no such file (make one with `python bootstrap.py pack FILE`)")
    target = Path(tempfile.mkdtemp(prefix="hyperrestart-from-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    try:
        with tarfile.open(pack_file) as tar:
            for member in tar.getmembers():
                if not (member.isfile() or member.isdir()):
                    kind = f"a link to {member.linkname!r}" if member.issym() or member.islnk() else "not a file"
                    raise HyperrestartError(f"--from {pack_file}: member {member.name!r} is {kind}; a pack holds only "
                                            f"files (remake it with `python bootstrap.py pack FILE`)")
            tar.extractall(target, filter="data")
        manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (tarfile.TarError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HyperrestartError(f"--from {pack_file}: not a hyperrestart pack ({exc})") from None
    return _bundles(manifest, target, f"--from {pack_file}: {MANIFEST}")


def _bundles(manifest, target: Path, where) -> dict:
    """{name: bundle path} from a parsed manifest, each entry checked."""
    remake = "remake the pack with `python bootstrap.py pack FILE`"
    upstreams = manifest.get("upstreams") if type(manifest) is dict else None
    if type(upstreams) is not dict:
        got = type(upstreams).__name__ if type(manifest) is dict and "upstreams" in manifest else "nothing"
        raise HyperrestartError(f"{where}: 'upstreams' must be an object {{NAME: {{commit, tree, bundle}}}}, "
                                f"got {got}; {remake}")
    found = {}
    for name, info in upstreams.items():
        check_name(name, where)
        rel = info.get("bundle") if type(info) is dict else None
        if type(rel) is not str:
            raise HyperrestartError(f"{where}: upstream {name!r} must be an object with a string 'bundle', "
                                    f"got {info!r:.60}; {remake}")
        parts = rel.split("/")
        path = target.joinpath(*parts) if rel and not posixpath.isabs(rel) and ".." not in parts else None
        if path is None or "\\" in rel or path.is_symlink() or not path.is_file() \
                or not os.path.realpath(path).startswith(os.path.realpath(target) + os.sep):
            raise HyperrestartError(f"{where}: bundle {rel!r} of {name} is not a file inside the pack; {remake}")
        found[name] = path
    return found
