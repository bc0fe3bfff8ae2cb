"""In-process units of the bootstrap tool: lock round trip, series parsing, patch safety and diagnosis."""
import pytest

from hyperrestart.vendor import lockfile, patchcheck
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.vendor.series import profile_patches, read_series

SHA = "a" * 40


def test_lock_dumps_and_loads_back_identically(tmp_path):
    path = tmp_path / "vendor.lock"
    path.write_text(f'lock_version = 1\ndefault_profile = "modern"\nprofiles = ["paper", "modern"]\n'
                    f'[upstream.x]\nurl = "https://example.invalid/x"\ncommit = "{SHA}"\n'
                    f'[upstream.x.overlay]\n"a/b.py" = {{ source = "overlay/common/b.py", sha256 = "ff" }}\n')
    lock = lockfile.load(path)
    lock.upstreams["x"].result_tree = {"paper": "1" * 40, "modern": "2" * 40}
    lock.upstreams["x"].patches = {"0001-a.patch": "3" * 64}
    lockfile.save(lock)
    again = lockfile.load(path)
    assert again.upstreams["x"] == lock.upstreams["x"]
    assert lockfile.dumps(again) == path.read_text()


@pytest.mark.parametrize("body, message", [
    ('profiles = ["paper"]\n[upstream.x]\nurl = "u"\ncommit = "abc"\n', "full 40-hex SHA"),
    ('profiles = ["paper"]\n[upstream.x]\ncommit = "' + SHA + '"\n', "missing key 'url'"),
    ('profiles = ["paper"]\ndefault_profile = "modern"\n[upstream]\n', "unknown profile 'modern'"),
    ('profiles = [', "not valid TOML"),
])
def test_bad_locks_are_explained(tmp_path, body, message):
    path = tmp_path / "vendor.lock"
    path.write_text("lock_version = 1\n" + body)
    with pytest.raises(HyperrestartError, match=message):
        lockfile.load(path)


def test_series_profiles_and_errors(tmp_path):
    (tmp_path / "x").mkdir()
    series = tmp_path / "x" / "series"
    series.write_text("# comment\n0001-a.patch\n\n0002-b.patch  # profiles: modern\n")
    entries = read_series(tmp_path, "x", ["paper", "modern"])
    assert [e.name for e in profile_patches(entries, "paper")] == ["0001-a.patch"]
    assert [e.name for e in profile_patches(entries, "modern")] == ["0001-a.patch", "0002-b.patch"]
    series.write_text("0001-a.patch\n0001-a.patch\n")
    with pytest.raises(HyperrestartError, match="listed twice"):
        read_series(tmp_path, "x", ["paper"])
    series.write_text("../0001-a.patch\n")
    with pytest.raises(HyperrestartError, match="plain file names"):
        read_series(tmp_path, "x", ["paper"])


@pytest.mark.parametrize("path, ok", [("a/b.py", True), ("../x", False), ("/abs", False), ("a/../../x", False),
                                      (".git/config", False), ("C:/x", False), ("a\\b", False), ("", False)])
def test_relative_path_rules(path, ok):
    if ok:
        patchcheck.check_relative_path(path, "t")
    else:
        with pytest.raises(HyperrestartError, match="refusing it"):
            patchcheck.check_relative_path(path, "t")


def test_diagnosis_names_hunk_and_lines(tmp_path):
    (tmp_path / "f.py").write_text("".join(f"l{i}\n" for i in range(1, 21)))
    patch = tmp_path / "p.patch"
    patch.write_text("diff --git a/f.py b/f.py\n--- a/f.py\n+++ b/f.py\n"
                     "@@ -2,3 +2,4 @@\n l2\n l3\n+new\n l4\n"
                     "@@ -15,3 +16,4 @@\n l15\n L16\n+new\n l17\n")
    text = patchcheck.diagnose_failure(patch, tmp_path)
    assert "file f.py, hunk #2" in text
    assert "expected 'L16'" in text and "actual   'l16'" in text


def test_symlink_escape_is_refused(tmp_path):
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "link").symlink_to(tmp_path)
    with pytest.raises(HyperrestartError, match="outside the upstream tree"):
        patchcheck.check_inside_tree(tmp_path / "tree", "link/evil.py", "t")


def _modify_patch(index_line):
    return (f"Subject: x\n\n---\ndiff --git a/f.py b/f.py\n{index_line}\n--- a/f.py\n+++ b/f.py\n"
            "@@ -1 +1 @@\n-a\n+b\n")


@pytest.mark.parametrize("index_line, refused", [
    ("index 1111111..2222222 100644", None), ("index 1111111..2222222 100755", None), ("index 1111111..2222222", None),
    ("index 1111111..2222222 120000", "symlink"), ("index 1111111..2222222 0120000", "symlink"),
    ("index 1111111..2222222 160000", "submodule"), ("index 1111111..2222222 040000", "not a regular file mode"),
])
def test_the_mode_on_an_index_line_is_checked_as_git_reads_it(tmp_path, index_line, refused):
    path = tmp_path / "p.patch"
    path.write_text(_modify_patch(index_line))
    if refused is None:
        patchcheck.parse_patch(path)
    else:
        with pytest.raises(HyperrestartError, match=refused):
            patchcheck.parse_patch(path)


def test_mode_words_in_the_message_or_in_content_are_not_headers(tmp_path):
    path = tmp_path / "p.patch"
    path.write_text("Subject: x\n\nnew mode 120000 is mentioned in prose\n---\ndiff --git a/f.py b/f.py\n"
                    "--- a/f.py\n+++ b/f.py\n@@ -1 +1 @@\n-new mode 120000\n+new file mode 120000\n")
    patchcheck.parse_patch(path)


def test_rename_paths_are_checked(tmp_path):
    path = tmp_path / "p.patch"
    path.write_text("Subject: x\n\n---\ndiff --git a/f.py b/f.py\nsimilarity index 100%\nrename from f.py\n"
                    "rename to ../../outside.py\n")
    with pytest.raises(HyperrestartError, match="contains '..'"):
        patchcheck.parse_patch(path)
