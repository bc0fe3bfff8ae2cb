"""The real upstreams: materialised trees match vendor.lock, `check` passes, the scheduler is registered."""
import ast
import py_compile
import subprocess
import sys

import pytest

from upstream_support import ROOT
from hyperrestart import gitops, lockfile
from hyperrestart.paths import LOCK_FILE
from hyperrestart.scheduler import SCHEDULER_NAMES

TRAINERS = {"hyperdecoders": "hyperdecoder", "hyperformer": "hyperformer"}


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_materialised_trees_equal_the_lock(upstream_dest, name):
    lock = lockfile.load(LOCK_FILE).upstream(name)
    tree = upstream_dest / name
    assert gitops.run(tree, "write-tree") == lock.result_tree["modern"]
    assert gitops.worktree_tree(tree) == lock.result_tree["modern"]
    assert gitops.run(tree, "rev-parse", "hyperrestart/base") == lock.commit


def test_paper_profile_materialises(upstream_dest_paper):
    for name in TRAINERS:
        lock = lockfile.load(LOCK_FILE).upstream(name)
        assert gitops.run(upstream_dest_paper / name, "write-tree") == lock.result_tree["paper"]


def test_check_passes_on_the_real_upstreams(upstream_dest):
    result = subprocess.run([sys.executable, str(ROOT / "bootstrap.py"), "check"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check passed" in result.stdout


def _dict_keys(tree_path, variable):
    module = ast.parse(tree_path.read_text())
    for node in ast.walk(module):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == variable for t in node.targets):
            if isinstance(node.value, ast.Dict):
                return {k.value for k in node.value.keys if isinstance(k, ast.Constant)} | {
                    "<expanded>" for k in node.value.keys if k is None}
    return set()


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_patched_modules_compile_and_register_both_scheduler_names(upstream_dest, name):
    package = upstream_dest / name / TRAINERS[name]
    trainer = package / "third_party/trainers/t5_trainer.py"
    for path in (trainer, package / "training_args.py", package / "third_party/trainers/restart_scheduler.py"):
        py_compile.compile(str(path), doraise=True)
    source = trainer.read_text()
    keys = _dict_keys(trainer, "arg_to_scheduler")
    registered = all(n in keys for n in SCHEDULER_NAMES) or ("SCHEDULER_NAMES" in source and "<expanded>" in keys)
    assert registered, f"{trainer} does not register {SCHEDULER_NAMES} in arg_to_scheduler (keys: {sorted(keys)})"
    assert "restart_scheduler_from_args" in source
    args_source = (package / "training_args.py").read_text()
    for field in ("restart_t0", "restart_t_mult", "eta_min", "restart_warmup_steps"):
        assert f"{field}:" in args_source, f"training_args.py lacks the {field} argument"
