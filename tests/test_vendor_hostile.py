"""Issue 18, the vendoring rows: what a hostile or unlucky user could still break (patch headers split where git does
not split, linked overlay sources, folders named like the tool's, odd destinations, hostile packs, an unwritable
cache, misshapen state files). Each test uses the throw-away upstreams of tests/vendor_fixtures.py."""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from vendor_fixtures import BOOTSTRAP, git, write

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.vendor import lockfile, owned, patchcheck
from hyperrestart.vendor.build import check_regular_files_only

LINE_ENDS_GIT_IGNORES = {"form feed": "\x0c", "vertical tab": "\x0b", "NEL": "\x85", "line separator": "\u2028"}


def one_line_error(result, *needles):
    """A refusal: non-zero exit, one line on stderr holding every needle, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def lock_of(project):
    return lockfile.load(project.root / "vendor.lock")


# --- row 1: patches read as git reads them, and the built tree holds regular files only -----------------------------

def evil_link_patch(char):
    """Row 1 exactly: a header line that str.splitlines() ends early (at a fake `--- ` line), before a mode that
    makes evil_link a symlink to ~/.bashrc. git applies it."""
    return ("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: t <t@example.invalid>\n"
            "Date: Wed, 1 Jan 2020 00:00:00 +0000\nSubject: evil\n\nDescription: x\n---\n"
            f"diff --git a/evil_link b/evil_link\nsimilarity index 100{char}--- x\nnew file mode 120000\n"
            "index 0000000..1111111\n--- /dev/null\n+++ b/evil_link\n@@ -0,0 +1 @@\n+~/.bashrc\n"
            "\\ No newline at end of file\n")


def add_locked_patch(project, name, text):
    """Add a patch to the series and record its sha256 in vendor.lock by hand (as a lock made elsewhere would)."""
    project.add_patch(name, text)
    lock = lock_of(project)
    lock.upstreams["fake"].patches[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    lockfile.save(lock)


@pytest.mark.parametrize("char", LINE_ENDS_GIT_IGNORES.values(), ids=LINE_ENDS_GIT_IGNORES)
def test_the_header_check_reads_lines_as_git_does(tmp_path, char):
    path = tmp_path / "0003-evil.patch"
    path.write_text(evil_link_patch(char), encoding="utf-8")
    with pytest.raises(HyperrestartError, match=r"0003-evil.patch:\d+: mode '120000' is a symlink"):
        patchcheck.parse_patch(path)
    assert len(evil_link_patch(char).splitlines()) == len(patchcheck.git_lines(evil_link_patch(char))) + 1


@pytest.mark.slow  # three verbs per line end (~3 s each)
@pytest.mark.parametrize("char", LINE_ENDS_GIT_IGNORES.values(), ids=LINE_ENDS_GIT_IGNORES)
def test_a_symlink_hidden_behind_a_line_end_git_ignores_is_refused_by_lock_check_and_materialise(project, char):
    assert project.run().returncode == 0
    before = project.tree_hash()
    add_locked_patch(project, "0003-evil.patch", evil_link_patch(char))
    for verb in ("lock", "check", "materialise"):
        result = project.run(verb)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (verb, result.stderr)
        assert "0003-evil.patch" in result.stderr and "symlink" in result.stderr, (verb, result.stderr)
    assert not os.path.lexists(project.tree / "evil_link") and project.tree_hash() == before


PARSER_BYPASSED = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); import hyperrestart.vendor.patchcheck as p; "
                   "p._check_headers = lambda *a, **k: None; sys.argv = sys.argv[2:]; "
                   "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.slow  # three verbs with the header check disabled (~2 s)
def test_the_built_tree_check_refuses_a_symlink_even_when_the_header_check_misses_it(project):
    """Any gap in the header parser is harmless: after applying, before the swap, every entry of the built tree
    must be a regular file. Proved by switching the header check off (so which character hides the mode no longer
    matters)."""
    assert project.run().returncode == 0
    before = project.tree_hash()
    add_locked_patch(project, "0003-evil.patch", evil_link_patch("\x0c"))
    for verb in ("lock", "check", "materialise"):
        args = [verb] + (["--dest", str(project.dest)] if verb == "materialise" else [])
        result = subprocess.run([sys.executable, "-c", PARSER_BYPASSED, str(BOOTSTRAP.parent), str(BOOTSTRAP), *args],
                                env=project.env, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (verb, result.stderr)
        assert "evil_link (mode 120000)" in result.stderr and "not regular files" in result.stderr, (verb, result.stderr)
    assert not os.path.lexists(project.tree / "evil_link") and project.tree_hash() == before
    assert not list(project.dest.glob(".hyperrestart-tmp-*"))


@pytest.mark.parametrize("mode, entry", [("120000", "link"), ("160000", "sub")])
def test_check_regular_files_only_names_links_and_gitlinks(tmp_path, mode, entry):
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo / "ok.py", "x = 1\n")
    git(repo, "add", "ok.py")
    git(repo, "commit", "-q", "-m", "ok")
    check_regular_files_only(repo, "t")  # regular files pass
    blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=repo, input="~/.bashrc", text=True,
                          capture_output=True, check=True).stdout.strip()
    git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob if mode == '120000' else git(repo, 'rev-parse', 'HEAD')},{entry}")
    with pytest.raises(HyperrestartError, match=f"{entry} \\(mode {mode}\\)"):
        check_regular_files_only(repo, "t")  # in the index only
    git(repo, "commit", "-q", "-m", "bad")
    with pytest.raises(HyperrestartError, match=f"{entry} \\(mode {mode}\\)"):
        check_regular_files_only(repo, "t")


# --- row 2: overlay sources are regular files inside overlay/ --------------------------------------------------------

def _link_file_outside(project):
    secret = project.tmp / "elsewhere" / "extra.py"
    write(secret, "EXTRA = 1\n")  # the same content: its hash matches the lock
    link = project.root / "overlay/fake/pkg/extra.py"
    link.unlink()
    link.symlink_to(secret)
    return link, str(secret)


def _link_file_inside(project):
    link = project.root / "overlay/fake/pkg/extra.py"
    link.unlink()
    write(project.root / "overlay/fake/real_extra.py", "EXTRA = 1\n")
    link.symlink_to("../real_extra.py")
    return link, "../real_extra.py"


def _link_folder_outside(project):
    outside = project.tmp / "elsewhere" / "pkg"
    write(outside / "extra.py", "EXTRA = 1\n")
    folder = project.root / "overlay/fake/pkg"
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    return folder, str(outside)


def _link_common_source(project):
    secret = project.tmp / "elsewhere" / "sched.py"
    write(secret, "SCHEDULER = 'restart'\n")
    link = project.root / "overlay/common/sched.py"
    link.unlink()
    link.symlink_to(secret)
    return link, str(secret)


LINKS = {"file outside": _link_file_outside, "file inside": _link_file_inside, "folder outside": _link_folder_outside,
         "shared source": _link_common_source}


@pytest.mark.slow  # three verbs per link kind (~2 s each)
@pytest.mark.parametrize("kind", LINKS)
def test_a_linked_overlay_source_is_refused_by_lock_check_and_materialise_naming_link_and_target(project, kind):
    assert project.run("--profile", "paper").returncode == 0
    lock_before = project.lock_text()
    link, target = LINKS[kind](project)
    for verb in ("lock", "check", "materialise"):
        result = project.run(verb)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (verb, result.stderr)
        assert f"{link} is a symlink to {target}" in result.stderr, (verb, result.stderr)
    assert project.lock_text() == lock_before
    assert git(project.tree, "rev-parse", "HEAD^{tree}") == lock_of(project).upstream("fake").result_tree["paper"]


def test_an_overlay_source_outside_overlay_is_refused(project):
    project.set_lock('source = "overlay/common/sched.py"', 'source = "vendor.lock"')
    result = project.run("check")
    assert result.returncode == 1 and "'vendor.lock' is not inside overlay/" in result.stderr


# --- rows 3 and 4: only folders the tool provably made are deleted or renamed -----------------------------------------

def _superseded_copy(project, name=".hyperrestart-old-fake"):
    old = project.dest / name
    shutil.copytree(project.tree, old, symlinks=True)
    owned.write_marker(old, old.name, "superseded")
    return old


def test_a_superseded_tree_killed_half_deleted_is_disposed_of_without_reading_it(project):
    """Row 3: a kill while the replaced tree was being deleted leaves it half gone (objects missing): the next run
    deletes it without running git on it, and builds the requested profile."""
    assert project.run().returncode == 0
    old = _superseded_copy(project)
    shutil.rmtree(old / ".git" / "objects")  # what a kill during rmtree leaves: git can no longer read it
    (old / "README.md").unlink()
    result = project.run("--profile", "paper")
    assert result.returncode == 0, result.stderr
    assert "deleted .hyperrestart-old-fake (the tree a finished swap replaced)" in result.stdout
    assert not old.exists() and project.tree_hash() == lock_of(project).upstream("fake").result_tree["paper"]


@pytest.mark.slow  # two materialisations (~2 s)
def test_a_damaged_live_tree_is_named_with_what_to_do_and_force_rebuilds_it(project):
    assert project.run().returncode == 0
    shutil.rmtree(project.tree / ".git" / "objects")
    result = project.run("--profile", "paper")
    one_line_error(result, str(project.tree), "looks damaged", "--force")
    status = project.run("status")
    assert status.returncode == 1 and "DAMAGED" in status.stdout and "Traceback" not in status.stderr
    result = project.run("--profile", "paper", "--force")
    assert result.returncode == 0, result.stderr
    assert project.tree_hash() == lock_of(project).upstream("fake").result_tree["paper"]
    assert len(list((project.dest / ".hyperrestart-backups").glob("fake-*"))) == 1


def test_user_folders_named_like_the_tools_are_left_alone(project):
    """Row 4: a .hyperrestart-tmp-* folder of the user's is not deleted; a .hyperrestart-old-X one is not renamed
    to X, and when it is in the way of a swap the run stops in one line naming it, touching nothing."""
    write(project.dest / ".hyperrestart-tmp-mine" / "photo.jpg", "photo")
    write(project.dest / ".hyperrestart-tmp-fake-1" / ".git" / "notes.txt", "notes")
    write(project.dest / ".hyperrestart-old-other" / "thesis.tex", "thesis")
    write(project.dest / ".hyperrestart-old-fake" / "draft.tex", "draft")
    assert project.run().returncode == 0
    assert not (project.dest / "other").exists()
    before = project.tree_hash()
    result = project.run("--profile", "paper")
    one_line_error(result, str(project.dest / ".hyperrestart-old-fake"), "no hyperrestart marker", "move it")
    assert project.tree_hash() == before
    for path, text in ((".hyperrestart-tmp-mine/photo.jpg", "photo"), (".hyperrestart-tmp-fake-1/.git/notes.txt",
                       "notes"), (".hyperrestart-old-other/thesis.tex", "thesis"), (".hyperrestart-old-fake/draft.tex",
                                                                                     "draft")):
        assert (project.dest / path).read_text() == text
    shutil.move(project.dest / ".hyperrestart-old-fake", project.tmp / "draft-folder")
    result = project.run("--profile", "paper")
    assert result.returncode == 0, result.stderr
    assert (project.dest / ".hyperrestart-tmp-mine/photo.jpg").read_text() == "photo"
    assert "cleaned up" not in result.stdout


def test_a_marker_written_for_another_folder_name_proves_nothing(project):
    """A copy of a tool-made folder (or a live tree that still carries a marker) is not taken for a leftover."""
    assert project.run().returncode == 0
    old = _superseded_copy(project, ".hyperrestart-old-elsewhere")
    os.rename(old, project.dest / ".hyperrestart-old-fake2")
    write(project.dest / ".hyperrestart-old-fake2" / "mine.txt", "mine")
    assert project.run("--profile", "paper").returncode == 0
    assert (project.dest / ".hyperrestart-old-fake2" / "mine.txt").read_text() == "mine"
    assert owned.read_marker(project.dest / ".hyperrestart-old-fake2") is None


def test_a_lock_file_a_killed_git_left_in_the_cache_does_not_wedge_later_runs(project):
    """Found by the kill harness: a `git update-ref` killed in the shared cache left its ref lock, and every later
    run failed on it. Under the exclusive cache lock, git lock files there are a killed git's: removed, saying so."""
    assert project.run().returncode == 0
    cache = project.cache / "git" / "fake.git"
    [pinned] = list((cache / "refs" / "hyperrestart" / "pinned").iterdir())
    write(pinned.with_name(pinned.name + ".lock"), "")
    write(cache / "packed-refs.lock", "")
    result = project.run("--profile", "paper")
    assert result.returncode == 0, result.stderr
    assert "cleaned up the git cache" in result.stdout and "removed 2 lock file(s)" in result.stdout
    assert not list(cache.rglob("*.lock"))


@pytest.mark.parametrize("layout, shell", [
    ({}, True), ({".git/": None}, True), ({".git/hyperrestart-owner.json": "{"}, True),
    ({".git/.hyperrestart-owner.json.tmp-5.json": ""}, True), ({".git/x": ""}, False), ({"a.txt": ""}, False),
    ({".git/": None, "b/": None}, False)])
def test_only_an_empty_shell_of_the_tools_folder_counts_as_empty(tmp_path, layout, shell):
    folder = tmp_path / ".hyperrestart-tmp-fake-1"
    folder.mkdir()
    for rel, text in layout.items():
        if text is None:
            (folder / rel).mkdir(parents=True)
        else:
            write(folder / rel, text)
    assert owned.is_empty_shell(folder) is shell
    if shell:
        owned.remove_empty_shell(folder)
        assert not folder.exists()


def test_remove_owned_deletes_the_marker_last_and_refuses_unmarked_folders(tmp_path):
    folder = owned.make_scratch(tmp_path / ".hyperrestart-tmp-fake-1")
    write(folder / "a" / "b.txt", "b")
    write(folder / ".git" / "objects" / "x", "x")
    assert owned.read_marker(folder)["role"] == "scratch" and owned.read_marker(folder)["pid"] == os.getpid()
    owned.remove_owned(folder)
    assert not folder.exists()
    write(tmp_path / ".hyperrestart-tmp-fake-2" / "mine.txt", "mine")
    with pytest.raises(HyperrestartError, match="holds no hyperrestart marker"):
        owned.remove_owned(tmp_path / ".hyperrestart-tmp-fake-2")
    assert (tmp_path / ".hyperrestart-tmp-fake-2" / "mine.txt").read_text() == "mine"


# --- rows 6 and 7: destinations -----------------------------------------------------------------------------------

def _bare_repo(project):
    bare = project.tmp / "bare.git"
    git(project.tmp, "init", "-q", "--bare", str(bare))
    return bare / "refs"


DESTS = {
    "an existing file": (lambda p: write(p.tmp / "thesis.pdf", "pdf") or p.tmp / "thesis.pdf", "is an existing file"),
    "the filesystem root": (lambda p: "/", "is the filesystem root"),
    "the git cache's refs": (lambda p: p.cache / "git" / "fake.git" / "refs", "inside hyperrestart's cache"),
    "a link into the cache": (lambda p: os.symlink(p.cache / "git", p.tmp / "link") or p.tmp / "link" / "x",
                              "inside hyperrestart's cache"),
    "a .git folder": (lambda p: p.tree / ".git" / "trees", "inside a .git folder"),
    "a bare repository": (_bare_repo, "inside the git repository internals"),
}


@pytest.mark.parametrize("kind", DESTS)
def test_a_destination_that_cannot_hold_trees_is_refused_before_anything_is_touched(project, kind):
    assert project.run().returncode == 0  # fills the cache
    make, message = DESTS[kind]
    dest = make(project)
    fsck_before = git(project.cache / "git" / "fake.git", "fsck", "--no-progress")
    listing = sorted(os.listdir(dest)) if os.path.isdir(dest) else None
    result = subprocess.run([sys.executable, str(BOOTSTRAP), "--dest", str(dest)], env=project.env,
                            capture_output=True, text=True, timeout=60)
    one_line_error(result, message, "--dest")
    assert (sorted(os.listdir(dest)) if os.path.isdir(dest) else None) == listing
    assert git(project.cache / "git" / "fake.git", "fsck", "--no-progress") == fsck_before
    if kind == "an existing file":
        assert (project.tmp / "thesis.pdf").read_text() == "pdf"


# --- row 24: --from PACK -------------------------------------------------------------------------------------------

def _tar(path, entries):
    """A tar file of {name: bytes | ('symlink', target)}."""
    with tarfile.open(path, "w") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def _manifest(upstreams):
    return json.dumps({"format": 1, "upstreams": upstreams}).encode()


PACKS = {
    "no upstreams": ({"hyperrestart-pack.json": b'{"format": 1}'}, "'upstreams' must be an object"),
    "upstreams as a list": ({"hyperrestart-pack.json": _manifest(["fake"])}, "'upstreams' must be an object"),
    "manifest not an object": ({"hyperrestart-pack.json": b"[1]"}, "'upstreams' must be an object"),
    "entry not an object": ({"hyperrestart-pack.json": _manifest({"fake": 5})}, "string 'bundle'"),
    "bundle not a string": ({"hyperrestart-pack.json": _manifest({"fake": {"bundle": ["x"]}})}, "string 'bundle'"),
    "bundle climbs out": ({"hyperrestart-pack.json": _manifest({"fake": {"bundle": "../../../outside.bundle"}})},
                          "is not a file inside the pack"),
    "bundle absolute": ({"hyperrestart-pack.json": _manifest({"fake": {"bundle": "OUTSIDE"}})},
                        "is not a file inside the pack"),
    "symlink member": ({"hyperrestart-pack.json": _manifest({"fake": {"bundle": "fake.bundle"}}),
                        "real.bundle": b"x", "fake.bundle": ("symlink", "real.bundle")}, "is a link to"),
    "member climbs out": ({"hyperrestart-pack.json": _manifest({"fake": {"bundle": "x.bundle"}}),
                           "../escaped.txt": b"x"}, "not a hyperrestart pack"),
    "bad name": ({"hyperrestart-pack.json": _manifest({"../x": {"bundle": "x.bundle"}}), "x.bundle": b"x"},
                 "not a plain name"),
}


@pytest.mark.parametrize("kind", PACKS)
def test_a_hostile_or_broken_pack_is_refused_in_one_line(project, tmp_path, kind):
    entries, message = PACKS[kind]
    outside = tmp_path / "outside.bundle"
    assert project.run("pack", str(tmp_path / "good.tar")).returncode == 0
    shutil.copyfile(tmp_path / "good.tar", outside)  # a real bundle-bearing file outside the pack: never followed
    if kind == "bundle absolute":
        entries = {"hyperrestart-pack.json": _manifest({"fake": {"bundle": str(outside)}})}
    pack = _tar(tmp_path / "hostile.tar", entries)
    shutil.rmtree(project.cache)
    result = project.run("--from", str(pack))
    one_line_error(result, message)
    assert not project.tree.exists()
    assert not list(tmp_path.rglob("escaped.txt")) and not os.path.exists("/tmp/escaped.txt")


# --- row 28: an unwritable cache location ---------------------------------------------------------------------------

def _read_only_home(tmp_path):
    """A HOME on a read-only filesystem: a read-only bind mount where this user may make one, else sysfs."""
    home = tmp_path / "ro-home"
    home.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {home} {home} && "
                            f"mount -o remount,ro,bind {home} {home}"], capture_output=True)
    if probe.returncode == 0:
        return ["unshare", "-m", "sh", "-c", f'mount --bind {home} {home} && mount -o remount,ro,bind {home} {home} '
                f'&& exec "$0" "$@"'], home
    return [], "/sys"


@pytest.mark.parametrize("kind", ["read-only filesystem", "a path under a file"])
def test_an_unwritable_cache_location_is_named_with_the_variable_that_moves_it(project, tmp_path, kind):
    if kind == "read-only filesystem":
        prefix, home = _read_only_home(tmp_path)
    else:
        write(tmp_path / "file", "x")
        prefix, home = [], tmp_path / "file" / "home"
    env = {k: v for k, v in project.env.items() if k not in ("HYPERRESTART_CACHE", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    for verb in ("materialise", "check"):
        args = [verb] + (["--dest", str(project.dest)] if verb == "materialise" else [])
        result = subprocess.run([*prefix, sys.executable, str(BOOTSTRAP), *args], env=env, capture_output=True,
                                text=True, timeout=60)
        one_line_error(result, f"cannot write hyperrestart's cache at {home}/.cache/hyperrestart",
                       "HYPERRESTART_CACHE", "XDG_CACHE_HOME")


# --- row 30: a state file of the wrong shape ------------------------------------------------------------------------

def _state(project):
    return json.loads((project.tree / ".git" / "hyperrestart-state.json").read_text(encoding="utf-8"))


SHAPES = {"a list": lambda s: [], "an empty object": lambda s: {}, "a string": lambda s: "x", "null": lambda s: None,
          "commit a number": lambda s: dict(s, commit=5), "patches a list": lambda s: dict(s, patches=[]),
          "overlay hashes not strings": lambda s: dict(s, overlay={"pkg/sched.py": 1}),
          "not JSON": lambda s: "{"}


def _damage_state(project, kind):
    state_file = project.tree / ".git" / "hyperrestart-state.json"
    content = SHAPES[kind](_state(project))
    state_file.write_text("{" if kind == "not JSON" else json.dumps(content), encoding="utf-8")


@pytest.mark.slow  # three verbs per shape (~2 s each)
@pytest.mark.parametrize("kind", SHAPES)
def test_a_misshapen_state_file_is_reported_as_damaged_with_its_repair(project, kind):
    assert project.run().returncode == 0
    _damage_state(project, kind)
    one_line_error(project.run(), "hyperrestart-state.json is damaged", "--force")
    status = project.run("status")
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert "DAMAGED" in status.stdout and "--force" in status.stdout


@pytest.mark.slow  # two materialisations (~3 s)
def test_the_repair_of_a_damaged_state_file_works(project):
    assert project.run().returncode == 0
    _damage_state(project, "a list")
    for args in (("--profile", "paper"), ("export", "fake")):
        one_line_error(project.run(*args), "hyperrestart-state.json is damaged", "--force")
    result = project.run("--force")
    assert result.returncode == 0, result.stderr
    assert project.tree_hash() == lock_of(project).upstream("fake").result_tree["modern"]
    assert project.run("status").returncode == 0
    [backup] = (project.dest / ".hyperrestart-backups").glob("fake-*")
    assert json.loads((backup / ".git" / "hyperrestart-state.json").read_text(encoding="utf-8")) == []
