"""Import a file of overlay/ as a module: the overlay keeps the single source of code that also runs inside the
upstream trees (the restart scheduler, the P3 runner), and the tool uses that same file."""
import importlib.util
import sys


def load_overlay_module(name, path):
    """The module at `path`, imported once under `name`."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
