"""The bootstrap tool on throw-away upstreams: fetching, applying, safety, idempotency, atomicity, export."""
import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from vendor_fixtures import BOOTSTRAP, git, write

from hyperrestart.vendor import lockfile, owned


def lock_of(project):
    return lockfile.load(project.root / "vendor.lock")


def test_materialise_builds_the_locked_tree_with_patches_and_overlay(project):
    result = project.run()
    assert result.returncode == 0, result.stderr
    lock = lock_of(project).upstream("fake")
    assert project.tree_hash() == lock.result_tree["modern"]
    assert "import sched  # registers the restart scheduler" in (project.tree / "pkg/trainer.py").read_text()
    assert "today's stack" in (project.tree / "README.md").read_text()
    assert (project.tree / "pkg/sched.py").read_text() == "SCHEDULER = 'restart'\n"
    assert (project.tree / "pkg/extra.py").read_text() == "EXTRA = 1\n"  # discovered under overlay/fake/
    state = json.loads((project.tree / ".git/hyperrestart-state.json").read_text())
    assert state["commit"] == project.commit and state["profile"] == "modern"
    assert list(state["patches"]) == ["0001-register.patch", "0002-modern.patch"]
    assert git(project.tree, "rev-parse", "hyperrestart/base") == project.commit


def test_lock_records_commit_tree_and_hashes(project):
    lock = lock_of(project).upstream("fake")
    assert lock.tree == git(project.upstream, "rev-parse", f"{project.commit}^{{tree}}")
    assert set(lock.patches) == {"0001-register.patch", "0002-modern.patch"}
    assert {o.dest for o in lock.overlay} == {"pkg/sched.py", "pkg/extra.py"}
    assert lock.result_tree["paper"] != lock.result_tree["modern"]


def test_second_run_is_a_no_op_without_network(project):
    assert project.run().returncode == 0
    before = project.tree_hash(), (project.tree / ".git/hyperrestart-state.json").stat().st_mtime_ns
    os.rename(project.upstream, project.tmp / "gone")  # any fetch would now fail
    result = project.run()
    assert result.returncode == 0, result.stderr
    assert "fake: up to date" in result.stdout
    assert (project.tree_hash(), (project.tree / ".git/hyperrestart-state.json").stat().st_mtime_ns) == before


def test_paper_profile_leaves_out_modern_patches(project):
    result = project.run("--profile", "paper")
    assert result.returncode == 0, result.stderr
    assert project.tree_hash() == lock_of(project).upstream("fake").result_tree["paper"]
    assert "today's stack" not in (project.tree / "README.md").read_text()
    assert "import sched" in (project.tree / "pkg/trainer.py").read_text()
    assert project.run("--profile", "nonsense").returncode == 1


def test_fetch_falls_back_to_a_full_fetch_when_the_server_refuses_unadvertised_commits(project):
    # protocol v0 + a commit that is not a branch tip: upload-pack refuses the shallow want
    env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.version", "GIT_CONFIG_VALUE_0": "0"}
    shutil.rmtree(project.cache)
    result = project.run(env=env)
    assert result.returncode == 0, result.stderr
    assert "shallow fetch" in result.stdout and "fetching all branches and tags instead" in result.stdout
    assert project.tree_hash() == lock_of(project).upstream("fake").result_tree["modern"]


def test_offline_without_cache_fails_fast_and_says_how_to_provide_a_mirror(project):
    # the fake lock's URL is a local path, which --offline may use: point it at a network URL
    text = project.lock_text().replace(f'url = "{project.upstream}"', 'url = "https://example.invalid/fake"')
    (project.root / "vendor.lock").write_text(text)
    shutil.rmtree(project.cache)
    started = time.monotonic()
    result = project.run("--offline")
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert "skipped (--offline)" in result.stderr and "HYPERRESTART_MIRROR" in result.stderr
    assert not project.tree.exists()


def test_mirror_directory_and_source_override(project, tmp_path):
    text = project.lock_text().replace(f'url = "{project.upstream}"', 'url = "https://example.invalid/fake"')
    (project.root / "vendor.lock").write_text(text)
    shutil.rmtree(project.cache)
    mirror = tmp_path / "mirror"
    git(tmp_path, "clone", "-q", "--mirror", str(project.upstream), str(mirror / "fake.git"))
    result = project.run("--offline", env={"HYPERRESTART_MIRROR": str(mirror)})
    assert result.returncode == 0, result.stderr
    shutil.rmtree(project.cache)
    shutil.rmtree(project.dest)
    result = project.run("--source", f"fake={project.upstream}")
    assert result.returncode == 0, result.stderr
    assert project.tree_hash() == lock_of(project).upstream("fake").result_tree["modern"]
    assert project.run("--source", "fake").returncode == 1


def test_local_edits_are_refused_listed_and_kept_then_saved_with_force(project):
    assert project.run().returncode == 0
    trainer = project.tree / "pkg/trainer.py"
    trainer.write_text(trainer.read_text() + "my experiment\n")
    write(project.tree / "notes.txt", "mine\n")
    result = project.run()
    assert result.returncode == 3
    assert "local changes detected" in result.stderr
    assert "M pkg/trainer.py" in result.stderr and "A notes.txt" in result.stderr
    assert trainer.read_text().endswith("my experiment\n")  # kept
    status = project.run("status")
    assert status.returncode == 1 and "M pkg/trainer.py" in status.stdout

    result = project.run("--force")
    assert result.returncode == 0, result.stderr
    backups = list((project.dest / ".hyperrestart-backups").glob("fake-local-changes-*.patch"))
    assert len(backups) == 1 and "+my experiment" in backups[0].read_text() and "notes.txt" in backups[0].read_text()
    assert "my experiment" not in trainer.read_text()
    git(project.tree, "apply", str(backups[0]))  # the saved patch restores the edits
    assert trainer.read_text().endswith("my experiment\n")


def _corrupt_context_line(project):
    path = project.root / "patches/fake/0001-register.patch"
    path.write_text(path.read_text().replace(" line 9\n", " line nine\n", 1))
    return path


def test_a_stale_patch_fails_check_naming_patch_and_hunk_without_touching_any_tree(project):
    assert project.run().returncode == 0
    before = project.tree_hash()
    _corrupt_context_line(project)
    result = project.run("check")
    assert result.returncode == 1
    assert "0001-register.patch" in result.stderr
    assert "file pkg/trainer.py, hunk #1" in result.stderr
    assert "expected 'line nine'" in result.stderr and "actual   'line 9'" in result.stderr
    assert project.tree_hash() == before and "line 9" in (project.tree / "pkg/trainer.py").read_text()
    # the sha256 no longer matches the lock either: materialise refuses before touching anything
    result = project.run("--force")
    assert result.returncode == 1
    assert "0001-register.patch: sha256" in result.stderr and "nothing was touched" in result.stderr
    assert project.tree_hash() == before


def test_a_patch_that_no_longer_applies_leaves_the_old_tree_in_place(project):
    assert project.run().returncode == 0
    before = project.tree_hash()
    _corrupt_context_line(project)
    assert project.run("lock").returncode != 0  # lock builds every profile: the stale patch is named
    # force the new hash into the lock by hand, then materialise: the failure is atomic
    lock = lockfile.load(project.root / "vendor.lock")
    from hyperrestart.core.files import file_sha256 as sha256_file
    lock.upstreams["fake"].patches["0001-register.patch"] = sha256_file(project.root / "patches/fake/0001-register.patch")
    lockfile.save(lock)
    result = project.run("--force")
    assert result.returncode == 5
    assert "patch 0001-register.patch does not apply" in result.stderr
    assert project.tree_hash() == before
    assert not list(project.dest.glob(".hyperrestart-tmp-*"))


@pytest.mark.parametrize("bad_path, message", [
    ("../outside.txt", "contains '..'"),
    ("/etc/passwd", "is absolute"),
    (".git/hooks/post-checkout", "reaches into .git"),
])
def test_unsafe_patch_paths_are_refused(project, bad_path, message):
    patch = project.root / "patches/fake/0003-evil.patch"
    patch.write_text(
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nSubject: evil\n\nDescription: x\n\n"
        f"diff --git a/{bad_path} b/{bad_path}\nnew file mode 100644\n--- /dev/null\n+++ b/{bad_path}\n"
        "@@ -0,0 +1 @@\n+pwned\n")
    with open(project.root / "patches/fake/series", "a") as series:
        series.write("0003-evil.patch\n")
    result = project.run("lock")
    assert result.returncode == 1
    assert message in result.stderr and "refusing it" in result.stderr
    assert not (project.tmp / "outside.txt").exists()


def test_binary_patches_are_refused(project):
    patch = project.root / "patches/fake/0003-binary.patch"
    patch.write_text("Subject: bin\n\ndiff --git a/x.bin b/x.bin\nnew file mode 100644\nindex 0000000..1111111\n"
                     "GIT binary patch\nliteral 3\nKcmZ?wWB>pF0RRC2\n\nliteral 0\nHcmV?d00001\n\n")
    with open(project.root / "patches/fake/series", "a") as series:
        series.write("0003-binary.patch\n")
    result = project.run("lock")
    assert result.returncode == 1 and "binary patches are refused" in result.stderr


def test_a_tampered_tree_hash_is_refused_with_expected_and_got(project):
    lock = lock_of(project)
    real = lock.upstreams["fake"].tree
    text = project.lock_text().replace(f'tree = "{real}"', 'tree = "' + "0" * 40 + '"')
    (project.root / "vendor.lock").write_text(text)
    result = project.run()
    assert result.returncode == 1
    assert f"has tree {real}, but vendor.lock expects {'0' * 40}" in result.stderr
    assert not project.tree.exists()


def test_a_changed_patch_rematerialises_cleanly(project):
    assert project.run().returncode == 0
    (project.root / "patches/fake/0002-modern.patch").write_text(project.make_patch(
        "fake2", {"README.md": "# fake upstream\n\nhello, newer stack\n"}, "Modernise"))
    assert project.run("lock").returncode == 0
    result = project.run()
    assert result.returncode == 0 and "fake: materialised" in result.stdout
    assert "newer stack" in (project.tree / "README.md").read_text()
    assert project.tree_hash() == lock_of(project).upstream("fake").result_tree["modern"]


def test_an_interrupted_swap_is_recovered(project):
    assert project.run().returncode == 0
    good = project.tree_hash()
    # killed between the two renames: the old tree is aside, the new one still in scratch (both marked as the tool's)
    owned.write_marker(project.tree, ".hyperrestart-old-fake", "superseded")
    os.rename(project.tree, project.dest / ".hyperrestart-old-fake")
    owned.make_scratch(project.dest / ".hyperrestart-tmp-fake-999")
    write(project.dest / ".hyperrestart-tmp-fake-999" / "half.txt", "half-built")
    result = project.run()
    assert result.returncode == 0, result.stderr
    assert "cleaned up after an interrupted run" in result.stdout and "put fake back" in result.stdout
    assert "deleted the scratch tree .hyperrestart-tmp-fake-999" in result.stdout
    assert project.tree_hash() == good
    assert not list(project.dest.glob(".hyperrestart-*-fake*"))


def test_a_run_killed_at_any_moment_is_recovered_by_the_next(project):
    assert project.run().returncode == 0
    good = project.tree_hash()
    for delay in (0.05, 0.15, 0.3):
        (project.tree / "pkg/trainer.py").write_text("edited\n")
        proc = subprocess.Popen([sys.executable, str(BOOTSTRAP), "--force", "--dest", str(project.dest)],
                                env=project.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay * random.uniform(0.8, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        result = project.run("--force")
        assert result.returncode == 0, result.stderr
        assert project.tree_hash() == good
        assert not list(project.dest.glob(".hyperrestart-tmp-*"))


def test_a_second_concurrent_run_is_refused(project):
    project.dest.mkdir()
    with open(project.dest / ".hyperrestart.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("12345")
        handle.flush()
        result = project.run()
    assert result.returncode == 4
    assert "another hyperrestart run holds" in result.stderr
    assert not project.tree.exists()


def test_pack_then_from_materialises_without_any_source(project, tmp_path):
    pack = tmp_path / "upstreams.tar"
    result = project.run("pack", str(pack))
    assert result.returncode == 0, result.stderr
    shutil.rmtree(project.cache)
    os.rename(project.upstream, tmp_path / "gone")
    result = project.run("--from", str(pack))
    assert result.returncode == 0, result.stderr
    assert project.tree_hash() == lock_of(project).upstream("fake").result_tree["modern"]
    assert project.run("--from", str(tmp_path / "missing.tar")).returncode == 1


@pytest.mark.slow  # several materialise/export round trips (~6 s)
def test_export_round_trip_is_byte_identical_and_captures_new_work(project):
    assert project.run().returncode == 0
    patches = project.root / "patches/fake"
    before = {p.name: p.read_bytes() for p in patches.iterdir()}
    result = project.run("export", "fake")
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_bytes() for p in patches.iterdir()} == before

    # uncommitted edits need a message; with one they become a new patch and the lock follows
    trainer = project.tree / "pkg/trainer.py"
    trainer.write_text(trainer.read_text().replace("line 30\n", "line 30\nrestart = True\n"))
    result = project.run("export", "fake")
    assert result.returncode == 1 and "-m" in result.stderr
    result = project.run("export", "fake", "-m", "Enable restarts by default")
    assert result.returncode == 0, result.stderr
    assert (patches / "0003-enable-restarts-by-default.patch").exists()
    series = (patches / "series").read_text()
    assert series.splitlines()[0] == "# fake series" and series.rstrip().endswith("0003-enable-restarts-by-default.patch")
    assert "0002-modern.patch  # profiles: modern" in series
    assert project.run("check").returncode == 0
    status = project.run("status")
    assert status.returncode == 0 and "local modifications: none" in status.stdout
    # overlay edits go back to their source file
    (project.tree / "pkg/sched.py").write_text("SCHEDULER = 'sgdr'\n")
    git(project.tree, "commit", "-qam", "tweak overlay")
    assert project.run("export", "fake").returncode == 0
    assert (project.root / "overlay/common/sched.py").read_text() == "SCHEDULER = 'sgdr'\n"
    assert project.run("check").returncode == 0


def test_drift_reports_applies_already_upstream_and_conflicts(project):
    # upstream moves on: it takes patch 0002's change itself and rewrites the lines patch 0001 needs
    work = project.tmp / "drift-work"
    git(project.tmp, "clone", "-q", str(project.upstream), str(work))
    write(work / "README.md", "# fake upstream\n\nhello, today's stack\n")
    git(work, "commit", "-qam", "take the modern change")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/next")
    result = project.run("drift", "--ref", "next")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0001-register.patch: applies" in result.stdout
    assert "0002-modern.patch: already upstream" in result.stdout
    write(work / "pkg/trainer.py", "rewritten\n")
    git(work, "commit", "-qam", "rewrite trainer")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/next2")
    result = project.run("drift", "--ref", "next2")
    assert result.returncode == 1
    assert "0001-register.patch: CONFLICTS" in result.stdout and "hunk #1" in result.stdout


def test_series_with_an_unknown_profile_is_an_error(project):
    with open(project.root / "patches/fake/series", "a") as series:
        series.write("0002-modern.patch  # profiles: future\n")
    result = project.run()
    assert result.returncode == 1
    assert "series" in result.stderr
