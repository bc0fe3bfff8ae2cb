"""The real upstreams: materialised trees match vendor.lock, `check` passes, the scheduler is registered."""
import json
import os
import py_compile
import subprocess
import sys

import pytest

from upstream_support import ROOT
from hyperrestart.vendor import gitops, lockfile
from hyperrestart.core.paths import LOCK_FILE
from hyperrestart.upstream.scheduler import SCHEDULER_NAMES

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


@pytest.mark.slow  # builds every profile of both real upstreams (~10 s)
def test_check_passes_on_the_real_upstreams(upstream_dest):
    result = subprocess.run([sys.executable, str(ROOT / "bootstrap.py"), "check"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check passed" in result.stdout


IMPORTS = {"hyperdecoders": ("hyperdecoder", "third_party.trainers.t5_trainer"),
           "hyperformer": (".", "hyperformer.third_party.trainers.t5_trainer")}


def _upstream_python(name):
    from hyperrestart.upstream.envs import python_for
    from hyperrestart.core.errors import HyperrestartError
    try:
        return str(python_for(name))
    except HyperrestartError as exc:
        pytest.skip(f"no environment for {name}: {exc}")


@pytest.mark.slow  # imports each upstream's trainer in its env (~20 s each)
@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_patched_modules_compile_and_register_both_scheduler_names(upstream_dest, name):
    package = upstream_dest / name / TRAINERS[name]
    for path in (package / "third_party/trainers/t5_trainer.py", package / "training_args.py",
                 package / "third_party/trainers/restart_scheduler.py"):
        py_compile.compile(str(path), doraise=True)
    cwd, module = IMPORTS[name]
    snippet = (f"import json, importlib; t = importlib.import_module({module!r}); "
               f"print(json.dumps(sorted(t.arg_to_scheduler)))")
    result = subprocess.run([_upstream_python(name), "-c", snippet], cwd=upstream_dest / name / cwd,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(upstream_dest / name)})
    assert result.returncode == 0, result.stderr[-3000:]
    registered = json.loads(result.stdout.strip().splitlines()[-1])
    for scheduler in SCHEDULER_NAMES:
        assert scheduler in registered
    args_source = (package / "training_args.py").read_text()
    for field in ("restart_t0", "restart_t_mult", "eta_min", "restart_warmup_steps"):
        assert f"{field}:" in args_source, f"training_args.py lacks the {field} argument"
