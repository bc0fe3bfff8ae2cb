"""Thin GitPython layer: every git invocation of the tool goes through here, with one error style."""
import os
import shutil
import tempfile
from pathlib import Path

import git

from .errors import HyperrestartError

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


def run(cwd, *args, env=None, strip=True) -> str:
    """Run `git args...` in cwd; return stdout; raise GitError with git's message on failure."""
    full_env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    if env:
        full_env.update(env)
    try:
        status, out, err = git.Git(str(cwd)).execute(
            ["git", *map(str, args)], env=full_env, with_extended_output=True, with_exceptions=False,
            strip_newline_in_stdout=strip)
    except git.GitCommandNotFound:
        raise HyperrestartError("git is not installed or not on PATH") from None
    if status != 0:
        raise GitError([str(a) for a in args], err, status)
    return out


def has_commit(repo_dir, sha) -> bool:
    try:
        run(repo_dir, "cat-file", "-e", f"{sha}^{{commit}}")
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
