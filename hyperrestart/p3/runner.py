"""Where the P3 runner lives and how the tool loads it.

The runner is overlay code (overlay/hyperdecoders/hyperdecoder/: the entry script p3_trainer.py and its package
p3_runner/), because it must also run inside the hyperdecoders tree without this package; the tool imports those same
files, like hyperrestart.upstream.scheduler does the restart scheduler.
"""
import importlib
import importlib.util
import sys

from hyperrestart.core.overlay_import import load_overlay_module
from hyperrestart.core.paths import OVERLAY_DIR

RUNNER_DIR = OVERLAY_DIR / "hyperdecoders" / "hyperdecoder"
RUNNER_FILE = RUNNER_DIR / "p3_trainer.py"
RUNNER_PACKAGE = RUNNER_DIR / "p3_runner"


def runner_files():
    """The runner's files, relative to RUNNER_DIR (the entry script first): what bootstrap drops into the tree."""
    package = sorted(p.relative_to(RUNNER_DIR) for p in RUNNER_PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    return [RUNNER_FILE.relative_to(RUNNER_DIR), *package]


def runner_module():
    """The P3 runner's entry script as a module (imports torch): main, parse_args, build_scheduler, rouge_l, ..."""
    return load_overlay_module("hyperrestart._p3_trainer", RUNNER_FILE)


def arguments_module():
    """The runner's argument dataclasses (p3_runner/arguments.py) alone: no torch, no transformers."""
    return load_overlay_module("hyperrestart._p3_runner_arguments", RUNNER_PACKAGE / "arguments.py")


def lifeline_module():
    """The runner's parent-death helpers (p3_runner/lifeline.py) alone: no torch."""
    return load_overlay_module("hyperrestart._p3_runner_lifeline", RUNNER_PACKAGE / "lifeline.py")


def runner_part(name):
    """A module of the runner's package p3_runner/ (e.g. "mixing", "batching": numpy only), imported inside the
    package hyperrestart._p3_runner so its relative imports work; nothing else of the package is imported."""
    package = "hyperrestart._p3_runner"
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(package, RUNNER_PACKAGE / "__init__.py",
                                                      submodule_search_locations=[str(RUNNER_PACKAGE)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.{name}")
