"""One virtual environment per upstream, at <root>/upstream/.venvs/NAME, built from requirements/NAME.txt.

The venv is made with --system-site-packages so an installed torch is reused (never a second multi-GB download);
pip is given a constraint pinning torch to that installed version. A marker file records the requirements' hashes:
an env whose requirements changed since it was built is reported as stale.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import HyperrestartError
from .paths import DEFAULT_DEST, REQUIREMENTS_DIR

UPSTREAM_NAMES = ("hyperdecoders", "hyperformer")
MARKER = "hyperrestart-env.json"
TORCH_HINT = "pip install torch==2.13.0  (the CPU build; any torch>=2.1 already installed is reused)"


def venvs_root() -> Path:
    """Where the envs live; HYPERRESTART_VENVS overrides <root>/upstream/.venvs."""
    return Path(os.environ.get("HYPERRESTART_VENVS") or DEFAULT_DEST / ".venvs")


def env_dir(name, root=None) -> Path:
    return Path(root or venvs_root()) / name


def _check_name(name):
    if name not in UPSTREAM_NAMES:
        raise HyperrestartError(f"unknown upstream {name!r}; choose one of: {', '.join(UPSTREAM_NAMES)}")


def requirement_files(name, requirements_dir=None):
    """(requirements file, no-deps file or None); error if the main one is missing."""
    base = Path(requirements_dir or REQUIREMENTS_DIR)
    main = base / f"{name}.txt"
    if not main.is_file():
        raise HyperrestartError(f"{main} does not exist: the requirements of upstream {name} are not written yet "
                                f"(requirements/{name}.txt, one pip requirement a line)")
    nodeps = base / f"{name}-nodeps.txt"
    return main, (nodeps if nodeps.is_file() else None)


def _fingerprint(files):
    digest = hashlib.sha256()
    for path in files:
        if path is not None:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _python_in(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def python_for(name, root=None, requirements_dir=None) -> Path:
    """The python of upstream `name`'s env; HyperrestartError naming the command that creates it when it is absent."""
    _check_name(name)
    venv = env_dir(name, root)
    python, marker = _python_in(venv), venv / MARKER
    if not python.exists() or not marker.exists():
        raise HyperrestartError(f"no environment for {name} at {venv}; create it with `hyperrestart env {name}`")
    try:
        recorded = json.loads(marker.read_text()).get("requirements_sha256")
        files = requirement_files(name, requirements_dir)
    except (ValueError, HyperrestartError):
        return python
    if recorded != _fingerprint(files):
        print(f"warning: the environment for {name} was built from other requirements than "
              f"requirements/{name}.txt now holds; refresh it with `hyperrestart env {name} --recreate`",
              file=sys.stderr)
    return python


def torch_version(python) -> str:
    """torch's version as `python` imports it; HyperrestartError saying how to install it when it cannot."""
    result = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise HyperrestartError(f"torch is not importable by {python} ({tail}); the upstream envs reuse an installed "
                                f"torch instead of downloading one. Install it first: `{python} -m {TORCH_HINT}`")
    return result.stdout.strip().splitlines()[-1]


def create_env(name, python=None, recreate=False, root=None, requirements_dir=None, log=print) -> Path:
    """Create (or with recreate, rebuild) upstream `name`'s env; returns its python. Nothing half-built is left."""
    _check_name(name)
    main, nodeps = requirement_files(name, requirements_dir)
    python = python or sys.executable
    venv = env_dir(name, root)
    if venv.exists():
        if not recreate:
            if (venv / MARKER).exists():
                log(f"{name}: environment exists at {venv} (use --recreate to rebuild it)")
                return python_for(name, root, requirements_dir)
            log(f"{name}: removing the incomplete environment at {venv}")
        shutil.rmtree(venv)
    torch = torch_version(python)
    log(f"{name}: creating {venv} with {python} (reusing torch {torch})")
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The base's pip is visible through the system site-packages and installs into the venv: no ensurepip (~20 s).
        has_pip = subprocess.run([str(python), "-c", "import pip"], capture_output=True).returncode == 0
        _run([str(python), "-m", "venv", "--system-site-packages", *(["--without-pip"] if has_pip else []), str(venv)],
             "python -m venv")
        env_python = _python_in(venv)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
            constraints.write(f"torch=={torch}\n")
        pip = [str(env_python), "-m", "pip", "install", "--disable-pip-version-check"]
        try:
            _run(pip + ["-c", constraints.name, "-r", str(main)], f"pip install -r {main}")
            if nodeps is not None:
                _run(pip + ["--no-deps", "-r", str(nodeps)], f"pip install --no-deps -r {nodeps}")
        finally:
            os.unlink(constraints.name)
        if torch_version(env_python) != torch:
            raise HyperrestartError(f"the requirements of {name} replaced torch {torch}; remove torch from {main}")
        (venv / MARKER).write_text(json.dumps({
            "upstream": name, "base_python": str(python), "torch": torch,
            "requirements_sha256": _fingerprint((main, nodeps))}, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    log(f"{name}: ready; python: {env_python}")
    return env_python


def _run(cmd, what):
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise HyperrestartError(f"{what} failed (exit {result.returncode}); see the output above")
