"""Air-gapped transfer: `pack` writes the pinned commits as git bundles in one tar file; `--from` reads it back."""
import atexit
import json
import shutil
import os
import tarfile
import tempfile
from pathlib import Path

from hyperrestart.vendor import gitops
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
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        with atomic_path(out) as partial, tarfile.open(partial, "w") as tar:
            for entry in sorted(os.listdir(tmp)):
                tar.add(Path(tmp) / entry, arcname=entry)
    log(f"wrote {out}: use it with `python bootstrap.py --from {out.name}` on the air-gapped machine")


def unpack(pack_file) -> dict:
    """Extract a pack to a temporary directory; return {name: bundle path}."""
    pack_file = Path(pack_file)
    if not pack_file.is_file():
        raise HyperrestartError(f"--from {pack_file}: no such file (make one with `python bootstrap.py pack FILE`)")
    target = Path(tempfile.mkdtemp(prefix="hyperrestart-from-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    try:
        with tarfile.open(pack_file) as tar:
            tar.extractall(target, filter="data")
        manifest = json.loads((target / MANIFEST).read_text())
    except (tarfile.TarError, FileNotFoundError, json.JSONDecodeError) as exc:
        raise HyperrestartError(f"--from {pack_file}: not a hyperrestart pack ({exc})") from None
    return {name: target / info["bundle"] for name, info in manifest["upstreams"].items()}
