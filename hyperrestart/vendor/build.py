"""Building one patched tree: pinned commit + the profile's patch series (git am, zero fuzz) + overlay files."""
import shutil
from dataclasses import dataclass
from pathlib import Path

from hyperrestart.vendor import gitops, patchcheck
from hyperrestart.core.files import file_sha256
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import PATCHES_DIR, PROJECT_ROOT
from hyperrestart.vendor.series import profile_patches, read_series
from hyperrestart.vendor.sources import pinned_ref

BASE_TAG = "hyperrestart/base"
PATCHED_TAG = "hyperrestart/patched"
OVERLAY_TRAILER = "Hyperrestart-Overlay: true"


class PatchApplyError(HyperrestartError):
    exit_code = 5


@dataclass
class Inputs:
    """The verified files one profile of one upstream is built from."""
    upstream: object
    profile: str
    patches: list  # [(name, Path, sha256)]
    overlay: list  # [(OverlayFile, Path, sha256)]

    def fingerprint(self):
        return {"patches": {n: h for n, _, h in self.patches}, "overlay": {o.dest: h for o, _, h in self.overlay}}


def collect_inputs(lock, upstream, profile, patches_dir=PATCHES_DIR, root=PROJECT_ROOT, verify_hashes=True):
    """Check every patch and overlay file of the profile against the lock and for unsafe paths, before anything
    is touched. Returns Inputs; raises listing every problem at once."""
    lock.check_profile(profile)
    problems, patches, overlay = [], [], []
    for entry in profile_patches(read_series(patches_dir, upstream.name, lock.profiles), profile):
        path = Path(patches_dir) / upstream.name / entry.name
        if not path.is_file():
            problems.append(f"{path}: listed in the series but missing")
            continue
        digest = file_sha256(path)
        expected = upstream.patches.get(entry.name)
        if verify_hashes and digest != expected:
            problems.append(f"{entry.name}: sha256 {digest[:16]}… but vendor.lock has "
                            f"{(expected or 'no entry')[:16]}… (after a deliberate change run `python bootstrap.py lock`)")
        try:
            patchcheck.parse_patch(path)
        except HyperrestartError as exc:
            problems.append(str(exc))
        patches.append((entry.name, path, digest))
    for item in upstream.overlay:
        try:
            patchcheck.check_relative_path(item.dest, f"overlay entry of {upstream.name}")
            path = patchcheck.check_overlay_source(root, item.source, f"overlay source of {upstream.name}")
        except HyperrestartError as exc:
            problems.append(str(exc))
            continue
        digest = file_sha256(path)
        if verify_hashes and digest != item.sha256:
            problems.append(f"{item.source}: sha256 {digest[:16]}… but vendor.lock has {(item.sha256 or 'none')[:16]}… "
                            f"(after a deliberate change run `python bootstrap.py lock`)")
        overlay.append((item, path, digest))
    if problems:
        raise HyperrestartError(f"{upstream.name} ({profile}): inputs do not match vendor.lock; nothing was touched:\n  "
                                + "\n  ".join(problems))
    return Inputs(upstream, profile, patches, overlay)


def checkout_pinned(cache, upstream, workdir: Path):
    """A fresh repository at the pinned commit on branch `hyperrestart`, objects copied from the cache."""
    workdir.mkdir(parents=True, exist_ok=True)  # a scratch folder may already hold its ownership marker
    gitops.init_repo(workdir)
    # --depth 1 records the pinned commit as a shallow root, so history tools (rebase -i, log) work in the tree
    # a plain path, not a file:// URL (which would need quoting for '%', '#' or spaces in the cache path)
    gitops.run(workdir, "fetch", "-q", "--no-tags", "--depth", "1", "--", str(cache), pinned_ref(upstream.commit))
    gitops.run(workdir, "checkout", "-q", "-b", "hyperrestart", upstream.commit)
    gitops.run(workdir, "tag", "-f", BASE_TAG, upstream.commit)
    gitops.run(workdir, "remote", "add", "origin", upstream.url)


def apply_patches(workdir, patches):
    """Apply [(name, path)] in order with one `git am` (zero fuzz). On failure keep the patches that applied,
    and raise naming the failing patch, file, hunk and mismatching lines."""
    if not patches:
        return
    env = {k: v for k, v in gitops.IDENTITY.items() if k.startswith("GIT_COMMITTER")}  # authors come from patches
    before = gitops.run(workdir, "rev-parse", "HEAD")
    try:
        gitops.run(workdir, "am", "-q", "--keep", "--keep-cr", "--committer-date-is-author-date",
                   "--whitespace=nowarn", *[str(path) for _, path in patches], env=env)
    except gitops.GitError as exc:
        applied = int(gitops.run(workdir, "rev-list", "--count", f"{before}..HEAD"))
        try:
            gitops.run(workdir, "am", "--quit")  # keep what applied: the diagnosis reads the tree it failed on
            gitops.run(workdir, "reset", "-q", "--hard")
        except gitops.GitError:
            pass
        name, path = patches[applied]
        detail = patchcheck.diagnose_failure(path, workdir)
        raise PatchApplyError(f"patch {name} does not apply:\n  {detail}\n"
                              f"  git: {exc.stderr.splitlines()[0] if exc.stderr else ''}") from None


def apply_patch(workdir, name, path):
    apply_patches(workdir, [(name, path)])


def apply_overlay(workdir, overlay):
    for item, path, _ in overlay:
        patchcheck.check_inside_tree(workdir, item.dest, f"overlay {item.source}")
        target = Path(workdir) / item.dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        gitops.run(workdir, "add", "-f", "--", item.dest)
    files = "\n".join(f"  {item.dest} <- {item.source}" for item, _, _ in overlay)
    gitops.commit_all(workdir, f"hyperrestart overlay\n\n{files}\n\n{OVERLAY_TRAILER}\n")


def build_tree(cache, inputs: Inputs, workdir: Path, log=print) -> str:
    """Build the patched tree in `workdir`; return its tree hash."""
    upstream = inputs.upstream
    checkout_pinned(cache, upstream, workdir)
    for name, path, _ in inputs.patches:
        for touched in patchcheck.touched_paths(patchcheck.parse_patch(path)):
            patchcheck.check_inside_tree(workdir, touched, name)
    try:
        apply_patches(workdir, [(name, path) for name, path, _ in inputs.patches])
    except PatchApplyError as exc:
        raise PatchApplyError(f"{upstream.name} at {upstream.commit[:12]} (profile {inputs.profile}): {exc}") from None
    gitops.run(workdir, "tag", "-f", PATCHED_TAG)
    apply_overlay(workdir, inputs.overlay)
    check_regular_files_only(workdir, f"{upstream.name} ({inputs.profile})")
    return gitops.tree_of(workdir, "HEAD")


def check_regular_files_only(workdir, what):
    """Every entry of the built tree (HEAD and the index) is a regular file, 100644 or 100755: no symlink (120000)
    or submodule (160000), however a patch got one past the checks made before applying it."""
    listed = gitops.run(workdir, "ls-tree", "-r", "-z", "--full-tree", "HEAD") + "\0" + \
        gitops.run(workdir, "ls-files", "-s", "-z")
    bad = sorted({entry.split("\t", 1)[1] + f" (mode {entry.split()[0]})" for entry in listed.split("\0")
                  if entry and entry.split()[0] not in ("100644", "100755")})
    if bad:
        raise HyperrestartError(f"{what}: the patched tree holds entries that are not regular files: {', '.join(bad)}; "
                                f"refused before it reaches any destination (symlinks and submodules are not allowed)")
