"""Every git invocation of the tool goes through run(): one error style, one scrubbed environment."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError

# Fixed identity and dates: the commits the tool makes are the same on every machine.
IDENTITY = {
    "GIT_AUTHOR_NAME": "hyperrestart", "GIT_AUTHOR_EMAIL": "hyperrestart@users.noreply.github.com",
    "GIT_COMMITTER_NAME": "hyperrestart", "GIT_COMMITTER_EMAIL": "hyperrestart@users.noreply.github.com",
}
FIXED_DATE = "2000-01-01T00:00:00+0000"
# Stable `git format-patch` flags (as Electron's patch tooling): no version signature, no stat, zeroed From line.
FORMAT_PATCH_FLAGS = ["--keep-subject", "--no-stat", "--no-signature", "--zero-commit", "--full-index"]


class GitError(HyperrestartError):
    def __init__(self, args, stderr, status):
        self.stderr = stderr.strip()
        super().__init__(f"`git {' '.join(args)}` failed (exit {status}): {self.stderr}")


# Variables that point git at another repository, work tree, index, object store or ref namespace: those of
# `git rev-parse --local-env-vars` except the `-c` settings (GIT_CONFIG_PARAMETERS/COUNT, which only configure),
# plus discovery and namespace. Inherited from the caller (a git hook, an IDE, a shell) they would make the tool
# read and write that repository instead of its own, so no git call of the tool ever sees them.
REPO_LOCATING_ENV = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE", "GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX", "GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE", "GIT_CONFIG", "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM", "GIT_QUARANTINE_PATH")


def git_env(extra=None) -> dict:
    """The environment of every git call: the caller's, without REPO_LOCATING_ENV, never prompting."""
    env = {k: v for k, v in os.environ.items() if k not in REPO_LOCATING_ENV}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", **(extra or {}))
    return env


def run(cwd, *args, env=None, strip=True, binary=False):
    """Run `git args...` in cwd; return stdout (str, or bytes with binary=True); raise GitError on failure."""
    try:
        proc = subprocess.run(["git", *map(str, args)], cwd=str(cwd), env=git_env(env), capture_output=True,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise HyperrestartError("git is not installed or not on PATH") from None
    if proc.returncode != 0:
        raise GitError([str(a) for a in args], proc.stderr.decode(errors="replace"), proc.returncode)
    if binary:
        return proc.stdout
    out = proc.stdout.decode(errors="surrogateescape")
    return out[:-1] if strip and out.endswith("\n") else out


def run_ok(cwd, *args):
    """stdout of `git args...`, or None when git fails (a question whose answer may be no)."""
    try:
        return run(cwd, *args)
    except GitError:
        return None


def check_not_option(value, what):
    """A user-given ref, URL or path must never reach git as an option (`--upload-pack=...` runs a command)."""
    if str(value).startswith("-"):
        raise HyperrestartError(f"{what} {value!r} must not start with '-' (git would read it as an option)")
    return value


def has_commit(repo_dir, sha) -> bool:
    try:
        run(repo_dir, "cat-file", "-e", f"{sha}^{{commit}}")
        return True
    except GitError:
        return False


def has_complete_commit(repo_dir, sha) -> bool:
    """The commit and every tree and blob of its tree are present (an interrupted fetch can leave less)."""
    try:
        run(repo_dir, "rev-list", "--quiet", "--objects", "--verify-objects", "--no-walk", f"{sha}^{{commit}}")
        return True
    except GitError:
        return False


def tree_of(repo_dir, rev) -> str:
    return run(repo_dir, "rev-parse", f"{rev}^{{tree}}")


def worktree_tree(repo_dir) -> str:
    """Tree hash of the working tree as it is now (tracked edits and untracked, non-ignored files included),
    computed in a throw-away index so nothing of the user's staging is changed."""
    git_dir = Path(run(repo_dir, "rev-parse", "--absolute-git-dir"))
    fd, tmp_index = tempfile.mkstemp(prefix="hyperrestart-index-", dir=git_dir)
    os.close(fd)
    try:
        if (git_dir / "index").exists():
            shutil.copyfile(git_dir / "index", tmp_index)  # reuse the stat cache: fast on a clean tree
        else:
            os.unlink(tmp_index)
        env = {"GIT_INDEX_FILE": tmp_index}
        run(repo_dir, "add", "-A", ".", env=env)
        return run(repo_dir, "write-tree", env=env)
    finally:
        if os.path.exists(tmp_index):
            os.unlink(tmp_index)


def changed_files(repo_dir, from_tree, to_tree) -> list:
    """['M path', 'A path', 'D path', ...] between two trees."""
    out = run(repo_dir, "diff", "--name-status", "--no-renames", from_tree, to_tree)
    return [" ".join(line.split("\t", 1)) for line in out.splitlines() if line]


def commit_all(repo_dir, message, date=FIXED_DATE):
    env = dict(IDENTITY, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    run(repo_dir, "commit", "-q", "--no-verify", "--allow-empty", "-m", message, env=env)


def init_repo(path):
    run(path, "init", "-q")
    # Local config only: never depend on the user's hooks, signing or autocrlf.
    for key, value in (("core.autocrlf", "false"), ("commit.gpgsign", "false"), ("core.hooksPath", "/dev/null"),
                       ("gc.auto", "0")):
        run(path, "config", key, value)
