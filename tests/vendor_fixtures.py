"""Throw-away upstreams and projects for testing the bootstrap tool without network or the real upstreams."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

BOOTSTRAP = Path(__file__).resolve().parent.parent / "bootstrap.py"
FLAGS = ["--keep-subject", "--no-stat", "--no-signature", "--zero-commit", "--full-index"]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_AUTHOR_DATE": "2020-01-01T00:00:00+0000",
           "GIT_COMMITTER_DATE": "2020-01-01T00:00:00+0000", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_CONFIG_NOSYSTEM": "1"}

TRAINER = "".join(f"line {i}\n" for i in range(1, 41))


def git(cwd, *args, env=None):
    full = dict(os.environ, **GIT_ENV, **(env or {}))
    return subprocess.run(["git", *args], cwd=cwd, env=full, check=True, capture_output=True, text=True).stdout.strip()


def write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


_TEMPLATE = None  # (folder, upstream path written into its vendor.lock): built once per test session


class FakeProject:
    """A fake upstream repository plus a hyperrestart project layout that pins it.

    The first one of a session is built for real (git repositories, patches, `bootstrap.py lock`) in a folder of its
    own; every one after is a copy of it with the upstream's path in vendor.lock rewritten: the same files, hashes and
    cache, in milliseconds instead of seconds."""

    BULK_FILES = 0  # extra small files in the upstream (data/NNNN.txt): a subclass sets it for a larger tree

    def __init__(self, tmp_path: Path):
        global _TEMPLATE
        self.tmp = tmp_path
        self.upstream = tmp_path / "fake-upstream"
        self.root = tmp_path / "project"
        self.dest = tmp_path / "dest"
        self.cache = tmp_path / "cache"
        self.env = dict(os.environ, HYPERRESTART_PROJECT_ROOT=str(self.root), HYPERRESTART_CACHE=str(self.cache),
                        GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
        self.env.pop("HYPERRESTART_MIRROR", None)
        if _TEMPLATE is None:
            template = Path(tempfile.mkdtemp(prefix="hyperrestart-fake-project-"))
            atexit.register(shutil.rmtree, template, ignore_errors=True)
            FakeProject._build(template)
            _TEMPLATE = template
        self._copy_from(_TEMPLATE)

    @classmethod
    def _build(cls, folder):
        built = cls.__new__(cls)
        built.tmp, built.upstream, built.root = folder, folder / "fake-upstream", folder / "project"
        built.dest, built.cache = folder / "dest", folder / "cache"
        built.env = dict(os.environ, HYPERRESTART_PROJECT_ROOT=str(built.root), HYPERRESTART_CACHE=str(built.cache),
                         GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
        built.env.pop("HYPERRESTART_MIRROR", None)
        built._make_upstream()
        built._make_project()

    def _copy_from(self, template):
        shutil.copytree(template, self.tmp, symlinks=True, dirs_exist_ok=True)
        self.commit = git(self.upstream, "rev-parse", "HEAD~1")
        lock = self.root / "vendor.lock"
        lock.write_text(lock.read_text().replace(f'url = "{template / "fake-upstream"}"', f'url = "{self.upstream}"'))
        for clone in self.tmp.glob("work-*"):
            git(clone, "remote", "set-url", "origin", str(self.upstream))

    def _make_upstream(self):
        self.upstream.mkdir()
        git(self.upstream, "init", "-q", "-b", "main")
        write(self.upstream / "pkg" / "trainer.py", TRAINER)
        write(self.upstream / "README.md", "# fake upstream\n\nhello\n")
        write(self.upstream / ".gitignore", "output/\nwandb/\n__pycache__/\n")  # as the real upstreams ignore outputs
        for i in range(self.BULK_FILES):
            write(self.upstream / "data" / f"{i:04d}.txt", f"file {i}\n")
        git(self.upstream, "add", "-A")
        git(self.upstream, "commit", "-q", "-m", "initial")
        self.commit = git(self.upstream, "rev-parse", "HEAD")
        write(self.upstream / "LATER.md", "a later upstream commit\n")
        git(self.upstream, "add", "-A")
        git(self.upstream, "commit", "-q", "-m", "later")  # the pinned commit is not the branch tip

    def make_patch(self, name, edits, subject, description="Test patch."):
        """Commit `edits` ({path: new text}) on the pinned commit in a scratch clone; return format-patch text."""
        work = self.tmp / f"work-{name}"
        if not work.exists():
            git(self.tmp, "clone", "-q", str(self.upstream), str(work))
            git(work, "checkout", "-q", self.commit)
        for path, text in edits.items():
            write(work / path, text)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", f"{subject}\n\nDescription: {description}\nOrigin: test\n"
                                        f"Forwarded: not-needed\nLast-Update: 2020-01-01\n")
        return git(work, "format-patch", *FLAGS, "--stdout", "-1", "HEAD") + "\n"

    def _make_project(self):
        patches = self.root / "patches" / "fake"
        trainer = TRAINER.replace("line 10\n", "line 10\nimport sched  # registers the restart scheduler\n")
        write(patches / "0001-register.patch", self.make_patch("fake", {"pkg/trainer.py": trainer}, "Register"))
        write(patches / "0002-modern.patch", self.make_patch(
            "fake", {"README.md": "# fake upstream\n\nhello, today's stack\n"}, "Modernise"))
        write(patches / "series", "# fake series\n0001-register.patch\n0002-modern.patch  # profiles: modern\n")
        write(self.root / "overlay" / "common" / "sched.py", "SCHEDULER = 'restart'\n")
        write(self.root / "overlay" / "fake" / "pkg" / "extra.py", "EXTRA = 1\n")
        write(self.root / "vendor.lock", textwrap.dedent(f"""\
            lock_version = 1
            default_profile = "modern"
            profiles = ["paper", "modern"]

            [upstream.fake]
            url = "{self.upstream}"
            commit = "{self.commit}"

            [upstream.fake.overlay]
            "pkg/sched.py" = {{ source = "overlay/common/sched.py" }}
            """))
        result = self.run("lock")
        assert result.returncode == 0, result.stderr

    def run(self, *args, env=None, timeout=60):
        full_env = dict(self.env, **(env or {}))
        verb = args[0] if args and not args[0].startswith("-") else None
        if verb in (None, "materialise", "status", "export"):
            args = (*args, "--dest", str(self.dest))
        return subprocess.run([sys.executable, str(BOOTSTRAP), *args], env=full_env, capture_output=True,
                              text=True, timeout=timeout)

    @property
    def tree(self):
        return self.dest / "fake"

    def tree_hash(self):
        return git(self.tree, "rev-parse", "HEAD^{tree}")

    def lock_text(self):
        return (self.root / "vendor.lock").read_text()

    def set_lock(self, old, new):
        """Replace text in vendor.lock (e.g. point the URL somewhere else)."""
        text = self.lock_text()
        assert old in text, old
        (self.root / "vendor.lock").write_text(text.replace(old, new))

    def add_patch(self, name, text):
        """Append a raw patch file to the series (no re-lock)."""
        write(self.root / "patches" / "fake" / name, text)
        with open(self.root / "patches" / "fake" / "series", "a") as series:
            series.write(name + "\n")

