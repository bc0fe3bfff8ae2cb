"""The bootstrap tool never loses what a user made and never touches anything outside its trees (issue 9), and
its newcomer frictions (issue 10): each test uses throw-away upstreams from tests/vendor_fixtures.py."""
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from vendor_fixtures import BOOTSTRAP, git, write

from hyperrestart.vendor import lockfile, patchcheck
from hyperrestart.core.errors import HyperrestartError


def backups(project):
    return sorted(p for p in (project.dest / ".hyperrestart-backups").glob("fake-*") if p.is_dir())


# --- 1. nothing a user made is lost on a rebuild -----------------------------------------------------------------

def _ignored_checkpoint(tree):
    write(tree / "output" / "checkpoint-500" / "pytorch_model.bin", "weights\n")
    return "output/"


def _wandb_run(tree):
    write(tree / "wandb" / "run-1" / "files" / "config.yaml", "lr: 1\n")
    return "wandb/"


def _other_branch(tree):
    git(tree, "checkout", "-q", "-b", "experiment")
    write(tree / "idea.py", "x = 1\n")
    git(tree, "add", "idea.py")
    git(tree, "commit", "-q", "-m", "idea")
    git(tree, "checkout", "-q", "hyperrestart")
    return "refs/heads/experiment"


def _stash(tree):
    (tree / "README.md").write_text("stashed edit\n")
    git(tree, "stash", "-q")
    return "refs/stash"


def _git_config(tree):
    git(tree, "config", "user.name", "Someone Local")
    return ".git/config"


KEEPERS = {"ignored checkpoint": _ignored_checkpoint, "wandb": _wandb_run, "branch": _other_branch,
           "stash": _stash, "git config": _git_config}


@pytest.mark.slow  # five rebuilds (~2 s each)
@pytest.mark.parametrize("kind", KEEPERS)
def test_a_rebuild_refuses_to_lose_ignored_files_branches_stashes_or_git_config(project, kind):
    assert project.run().returncode == 0
    named = KEEPERS[kind](project.tree)
    before = project.tree_hash()
    result = project.run("--profile", "paper")  # a profile switch rebuilds the tree
    assert result.returncode == 3, result.stdout + result.stderr
    assert named in result.stderr and "nothing was touched" in result.stderr and "--force" in result.stderr
    assert project.tree_hash() == before
    assert not backups(project)
    status = project.run("status")
    assert "not in the tree" in status.stdout and named in status.stdout
    assert project.run().returncode == 0  # no rebuild needed: nothing to refuse


@pytest.mark.slow  # five rebuilds (~2 s each)
@pytest.mark.parametrize("kind", KEEPERS)
def test_force_moves_the_whole_old_tree_to_the_backups_and_says_where(project, kind):
    assert project.run().returncode == 0
    KEEPERS[kind](project.tree)
    result = project.run("--profile", "paper", "--force")
    assert result.returncode == 0, result.stderr
    assert project.tree_hash() == lockfile.load(project.root / "vendor.lock").upstream("fake").result_tree["paper"]
    [saved] = backups(project)
    assert str(saved) in result.stdout
    if kind == "ignored checkpoint":
        assert (saved / "output/checkpoint-500/pytorch_model.bin").read_text() == "weights\n"
        assert not (project.tree / "output").exists()
    elif kind == "wandb":
        assert (saved / "wandb/run-1/files/config.yaml").exists()
    elif kind == "branch":
        assert git(saved, "show", "experiment:idea.py") == "x = 1"
    elif kind == "stash":
        assert git(saved, "stash", "list")
    else:
        assert git(saved, "config", "user.name") == "Someone Local"


def test_an_old_tree_without_the_tools_marker_is_never_deleted(project):
    assert project.run().returncode == 0
    _ignored_checkpoint(project.tree)
    # a copy of a tree under the name of a replaced one, not marked by the tool (a user's, or an older version's)
    shutil.copytree(project.tree, project.dest / ".hyperrestart-old-fake", symlinks=True)
    shutil.rmtree(project.tree / "output")
    result = project.run()
    assert result.returncode == 0, result.stderr
    kept = project.dest / ".hyperrestart-old-fake" / "output/checkpoint-500/pytorch_model.bin"
    assert kept.read_text() == "weights\n" and not backups(project)


@pytest.mark.slow  # two materialisations (~1.5 s)
def test_regenerable_pycache_does_not_block_a_rebuild(project):
    assert project.run().returncode == 0
    write(project.tree / "pkg" / "__pycache__" / "trainer.cpython-311.pyc", "bytecode")
    result = project.run("--profile", "paper")
    assert result.returncode == 0, result.stderr
    assert not backups(project)


@pytest.mark.slow  # two materialisations (~2 s)
def test_a_lock_bump_with_a_checkpoint_in_the_tree_is_refused(project):
    assert project.run().returncode == 0
    _ignored_checkpoint(project.tree)
    (project.root / "overlay/common/sched.py").write_text("SCHEDULER = 'sgdr'\n")
    assert project.run("lock").returncode == 0
    result = project.run()
    assert result.returncode == 3 and "output/" in result.stderr
    assert (project.tree / "output/checkpoint-500/pytorch_model.bin").exists()


# --- 2. --force backup of a non-UTF-8 edit ------------------------------------------------------------------------

def test_force_saves_a_non_utf8_edit_byte_exact(project):
    assert project.run().returncode == 0
    trainer = project.tree / "pkg/trainer.py"
    edited = trainer.read_bytes() + b"# caf\xe9 in latin-1\n"
    trainer.write_bytes(edited)
    result = project.run("--force")
    assert result.returncode == 0, result.stderr
    [patch] = (project.dest / ".hyperrestart-backups").glob("fake-local-changes-*.patch")
    assert b"caf\xe9" in patch.read_bytes()
    git(project.tree, "apply", str(patch))
    assert trainer.read_bytes() == edited


# --- 3. the shared git cache --------------------------------------------------------------------------------------

def _copy_object(project, cache, kind, sha):
    raw = subprocess.run(["git", "cat-file", kind, sha], cwd=project.upstream, check=True, capture_output=True).stdout
    written = subprocess.run(["git", "hash-object", "-t", kind, "-w", "--stdin"], cwd=cache, input=raw,
                             check=True, capture_output=True).stdout.decode().strip()
    assert written == sha


def _cache_with_commit_but_no_trees(project, with_trees=False):
    """What a kill during the first fetch can leave: the commit object and its ref, without its trees (or with its
    trees but without its files)."""
    cache = project.cache / "git" / "fake.git"
    subprocess.run(["rm", "-rf", str(project.cache)], check=True)
    cache.mkdir(parents=True)
    git(cache, "init", "-q", "--bare")
    _copy_object(project, cache, "commit", project.commit)
    if with_trees:
        _copy_object(project, cache, "tree", git(project.upstream, "rev-parse", f"{project.commit}^{{tree}}"))
        for line in git(project.upstream, "ls-tree", "-r", "-t", project.commit).splitlines():
            _, kind, sha = line.split("\t")[0].split()
            if kind == "tree":
                _copy_object(project, cache, "tree", sha)
    git(cache, "update-ref", f"refs/hyperrestart/pinned/{project.commit}", project.commit)
    return cache


@pytest.mark.slow  # a refetch per case (~2 s each)
@pytest.mark.parametrize("with_trees", [False, True], ids=["no trees", "no files"])
def test_a_cached_commit_without_its_trees_is_refetched(project, with_trees):
    _cache_with_commit_but_no_trees(project, with_trees)
    result = project.run()
    assert result.returncode == 0, result.stderr
    assert "incomplete" in result.stdout
    assert project.tree_hash() == lockfile.load(project.root / "vendor.lock").upstream("fake").result_tree["modern"]
    assert project.run().returncode == 0


def test_an_incomplete_cache_offline_without_a_source_names_the_cache_folder(project):
    project.set_lock(f'url = "{project.upstream}"', 'url = "https://example.invalid/fake"')
    cache = _cache_with_commit_but_no_trees(project)
    result = project.run("--offline")
    assert result.returncode == 1
    assert "incomplete" in result.stderr and str(cache) in result.stderr
    assert "Traceback" not in result.stderr


def test_the_cache_is_locked_while_a_run_uses_it(project, tmp_path):
    subprocess.run(["rm", "-rf", str(project.cache)], check=True)
    lock_path = project.cache / "git" / "fake.lock"
    lock_path.parent.mkdir(parents=True)
    out = tmp_path / "out.txt"
    with open(lock_path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with open(out, "w") as sink:
            proc = subprocess.Popen([sys.executable, str(BOOTSTRAP), "--dest", str(project.dest)], env=project.env,
                                    stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while "waiting" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, out.read_text()
        assert "waiting" in out.read_text() and str(lock_path) in out.read_text()
    assert proc.wait(timeout=60) == 0, out.read_text()
    assert project.tree_hash() == lockfile.load(project.root / "vendor.lock").upstream("fake").result_tree["modern"]


def test_two_first_runs_into_different_destinations_share_the_cache(project, tmp_path):
    subprocess.run(["rm", "-rf", str(project.cache)], check=True)
    procs = [subprocess.Popen([sys.executable, str(BOOTSTRAP), "--dest", str(tmp_path / f"d{i}")], env=project.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
    expected = lockfile.load(project.root / "vendor.lock").upstream("fake").result_tree["modern"]
    assert all(git(tmp_path / f"d{i}" / "fake", "rev-parse", "HEAD^{tree}") == expected for i in range(2))


# --- 4. modes and .git paths in patches ---------------------------------------------------------------------------

def _new_file_patch(path, mode_line):
    return ("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: t <t@example.invalid>\n"
            "Date: Wed, 1 Jan 2020 00:00:00 +0000\nSubject: link\n\n"
            f"Description: x\n---\ndiff --git a/{path} b/{path}\n{mode_line}\nindex 0000000..1111111\n"
            f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n")


@pytest.mark.parametrize("mode_line", ["new file mode 0120000", "new file mode  120000", "new file mode 120644",
                                       "new file mode 160000", "new file mode 100666", "new file mode 12x"])
def test_patches_with_a_non_regular_file_mode_are_refused(project, mode_line):
    project.add_patch("0003-link.patch", _new_file_patch("pkg/link", mode_line))
    for verb in ("lock", "check"):
        result = project.run(verb)
        assert result.returncode == 1, (verb, result.stdout, result.stderr)
        assert "0003-link.patch" in result.stderr and "mode" in result.stderr
        assert "Traceback" not in result.stderr
    assert not project.tree.exists() or not (project.tree / "pkg/link").is_symlink()


def test_a_mode_change_to_symlink_on_an_existing_file_is_refused(project):
    project.add_patch("0003-link.patch", "From: t <t@example.invalid>\nDate: Wed, 1 Jan 2020 00:00:00 +0000\n"
                                         "Subject: x\n\nDescription: x\n---\ndiff --git a/README.md b/README.md\n"
                                         "old mode 100644\nnew mode 0120000\n")
    result = project.run("lock")
    assert result.returncode == 1 and "0003-link.patch" in result.stderr and "symlink" in result.stderr


@pytest.mark.parametrize("path", [".GIT/hooks/post-checkout", "pkg/.Git/config", ".git./config"])
def test_git_directory_paths_in_any_case_are_refused_by_our_check(path):
    with pytest.raises(HyperrestartError, match="reaches into .git"):
        patchcheck.check_relative_path(path, "t")


def test_a_patch_into_dot_git_in_upper_case_is_refused_before_git_sees_it(project):
    project.add_patch("0003-evil.patch", _new_file_patch(".GIT/hooks/post-checkout", "new file mode 100755"))
    result = project.run("lock")
    assert result.returncode == 1 and "reaches into .git" in result.stderr


# --- 5. refs and URLs never become options; the caller's GIT_* never redirects git ---------------------------------

def test_a_drift_ref_that_looks_like_an_option_is_refused(project, tmp_path):
    marker = tmp_path / "pwned"
    result = project.run("drift", f"--ref=--upload-pack=touch {marker};")
    assert result.returncode == 1
    assert "must not start with '-'" in result.stderr
    assert not marker.exists()


def test_a_source_that_looks_like_an_option_is_refused(project, tmp_path):
    marker = tmp_path / "pwned"
    subprocess.run(["rm", "-rf", str(project.cache)], check=True)
    result = project.run("--source", f"fake=--upload-pack=touch {marker};")
    assert result.returncode == 1
    assert "must not start with '-'" in result.stderr
    assert not marker.exists()


@pytest.mark.slow  # every verb under a decoy environment (~2 s)
def test_callers_git_environment_does_not_redirect_any_git_call(project, tmp_path):
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    git(decoy, "init", "-q")
    write(decoy / "mine.txt", "mine\n")
    git(decoy, "add", "mine.txt")
    git(decoy, "commit", "-q", "-m", "mine")
    before = git(decoy, "for-each-ref"), git(decoy, "rev-parse", "HEAD"), git(decoy, "ls-files", "--stage")
    subprocess.run(["rm", "-rf", str(project.cache)], check=True)
    hijack = {"GIT_DIR": str(decoy / ".git"), "GIT_WORK_TREE": str(decoy), "GIT_INDEX_FILE": str(decoy / ".git/index"),
              "GIT_OBJECT_DIRECTORY": str(decoy / ".git/objects"), "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    result = project.run(env=hijack)
    assert result.returncode == 0, result.stderr
    assert project.tree_hash() == lockfile.load(project.root / "vendor.lock").upstream("fake").result_tree["modern"]
    assert (project.run("status", env=hijack).returncode, project.run("check", env=hijack).returncode) == (0, 0)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    after = tuple(subprocess.run(["git", *a], cwd=decoy, env=clean, capture_output=True, text=True).stdout.strip()
                  for a in (["for-each-ref"], ["rev-parse", "HEAD"], ["ls-files", "--stage"]))
    assert after == before
    assert (decoy / "mine.txt").read_text() == "mine\n"


# --- 6. vendor.lock validation ------------------------------------------------------------------------------------

SHA = "a" * 40


def _lock(tmp_path, body):
    path = tmp_path / "vendor.lock"
    path.write_text('lock_version = 1\nprofiles = ["paper"]\n' + body)
    return path


@pytest.mark.parametrize("name", ['"../x"', '"/abs"', '"."', '".."', '"a/b"', '"-x"', '"x y"'])
def test_upstream_names_that_are_not_plain_names_are_refused(tmp_path, name):
    path = _lock(tmp_path, f'[upstream.{name}]\nurl = "u"\ncommit = "{SHA}"\ntree = "{SHA}"\n')
    with pytest.raises(HyperrestartError, match="upstream name"):
        lockfile.load(path)


@pytest.mark.parametrize("body, message", [
    (f'[upstream.x]\nurl = 3\ncommit = "{SHA}"\n', "'url' must be a string, got integer"),
    ('[upstream.x]\nurl = "u"\ncommit = 5\n', "'commit' must be a string, got integer"),
    (f'[upstream.x]\nurl = "u"\ncommit = "{SHA}"\nresult_tree = "x"\n', "'result_tree' must be a table"),
    (f'[upstream.x]\nurl = "u"\ncommit = "{SHA}"\npatches = ["a"]\n', "'patches' must be a table, got array"),
    (f'[upstream.x]\nurl = "u"\ncommit = "{SHA}"\noverlay = {{ "a.py" = "s" }}\n', "must be a table"),
    (f'[upstream.x]\nurl = "u"\ncommit = "{SHA}"\n[upstream.x.patches]\n"a.patch" = 1\n', "must be a string"),
    ('upstream = 3\n', "'upstream' must be a table"),
])
def test_wrong_value_types_in_the_lock_are_explained(tmp_path, body, message):
    with pytest.raises(HyperrestartError, match=re.escape(message)):
        lockfile.load(_lock(tmp_path, body))


def test_wrong_types_through_the_cli_give_an_error_not_a_traceback(project):
    project.set_lock('profiles = ["paper", "modern"]', 'profiles = "paper"')
    result = project.run()
    assert result.returncode == 1 and "'profiles' must be an array" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_tree_is_an_error_not_a_skipped_check(project):
    tree = lockfile.load(project.root / "vendor.lock").upstream("fake").tree
    project.set_lock(f'tree = "{tree}"\n', "")
    result = project.run()
    assert result.returncode == 1
    assert "no 'tree'" in result.stderr and "bootstrap.py lock" in result.stderr
    assert not project.tree.exists()
    assert project.run("lock").returncode == 0  # lock records it (the only verb that may)
    assert f'tree = "{tree}"' in project.lock_text()


def test_a_cache_path_with_url_special_characters_works(project, tmp_path):
    result = project.run(env={"HYPERRESTART_CACHE": str(tmp_path / "my cache %41 #1")})
    assert result.returncode == 0, result.stderr
    assert project.tree_hash() == lockfile.load(project.root / "vendor.lock").upstream("fake").result_tree["modern"]


# --- 7. HYPERRESTART_MIRROR that holds nothing for an upstream -------------------------------------------------------

def test_a_mirror_without_the_expected_names_is_an_error_naming_them(project, tmp_path):
    mirror = tmp_path / "mirror"
    git(tmp_path, "clone", "-q", "--mirror", str(project.upstream), str(mirror / "fake-upstream.git"))
    subprocess.run(["rm", "-rf", str(project.cache)], check=True)
    result = project.run(env={"HYPERRESTART_MIRROR": str(mirror)})
    assert result.returncode == 1, result.stdout
    for name in ("fake.git", "fake.bundle"):
        assert str(mirror / name) in result.stderr
    assert "fake-upstream.git" in result.stderr  # what is there instead
    assert not project.tree.exists()


def test_a_mirror_that_is_not_a_directory_is_an_error(project, tmp_path):
    subprocess.run(["rm", "-rf", str(project.cache)], check=True)
    result = project.run(env={"HYPERRESTART_MIRROR": str(tmp_path / "nowhere")})
    assert result.returncode == 1 and "not a directory" in result.stderr


# --- 8. bootstrap.py lists only what it can run ---------------------------------------------------------------------

VENDOR_VERBS = ["materialise", "check", "status", "drift", "pack", "export", "lock", "env"]


@pytest.mark.slow  # a help call per verb (~3 s)
def test_bootstrap_help_lists_exactly_the_verbs_it_runs():
    result = subprocess.run([sys.executable, str(BOOTSTRAP), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    listed = re.findall(r"^    (\w[\w-]*)", result.stdout, flags=re.M)
    assert listed == VENDOR_VERBS
    for verb in VENDOR_VERBS:
        sub = subprocess.run([sys.executable, str(BOOTSTRAP), verb, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and f"usage: bootstrap.py {verb}" in sub.stdout, sub.stdout + sub.stderr


def test_bootstrap_with_a_verb_it_does_not_run_points_to_hyperrestart():
    result = subprocess.run([sys.executable, str(BOOTSTRAP), "run", "configs/x.json"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "hyperrestart run" in result.stderr
