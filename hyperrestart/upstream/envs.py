"""One virtual environment per upstream, at <root>/upstream/.venvs/NAME, built from requirements/NAME.txt.

The venv reuses the creating interpreter's packages (torch above all: never a second multi-GB download): a .pth file
in its site-packages adds that interpreter's site-packages directories (a venv's own included, which
`venv --system-site-packages` would miss) AFTER the venv's own, so the upstream's pins (transformers 3.5.1 for
hyperformer) win over the parent's. Before pip runs, the new env must import the parent's torch; pip is then given a
constraint pinning torch to that version, so it can only keep it. A marker file records the requirements' hashes: an
env whose requirements changed since it was built is reported as stale.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import DEFAULT_DEST, REQUIREMENTS_DIR

UPSTREAM_NAMES = ("hyperdecoders", "hyperformer")
MARKER = "hyperrestart-env.json"
PARENT_PTH = "_hyperrestart_parent.pth"
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


def _torch(python):
    """(torch's version as `python` imports it, None) or (None, the error's last line)."""
    result = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return None, (result.stderr.strip().splitlines() or ["(no output)"])[-1]
    return result.stdout.strip().splitlines()[-1], None


def torch_version(python) -> str:
    """torch's version as `python` imports it; HyperrestartError saying how to install it when it cannot."""
    version, error = _torch(python)
    if version is None:
        raise HyperrestartError(f"torch is not importable by {python} ({error}); the upstream envs reuse an installed "
                                f"torch instead of downloading one. Install it first: `{python} -m {TORCH_HINT}`")
    return version


def site_dirs(python) -> list:
    """The site-packages directories `python` imports from (a venv's own first, then its base's if it includes
    them, and the user site when enabled), in its sys.path order."""
    probe = ("import json, os, site, sys\n"
             "dirs = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])\n"
             "dirs = {os.path.abspath(d) for d in dirs}\n"
             "print(json.dumps([p for p in sys.path if p and os.path.abspath(p) in dirs]))")
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:
        raise HyperrestartError(f"cannot list the site-packages of {python}: {result.stderr.strip()[-300:]}")
    return json.loads(result.stdout)


def _link_parent(venv, dirs):
    """Make `venv` import from `dirs` after its own site-packages (site.addsitedir also runs their .pth files)."""
    site = subprocess.run([str(_python_in(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in dirs)
    (Path(site) / PARENT_PTH).write_text(lines)


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
    parent_dirs = site_dirs(python)
    log(f"{name}: creating {venv} with {python} (reusing torch {torch} and the packages of {', '.join(parent_dirs)})")
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        _run([str(python), "-m", "venv", "--without-pip", str(venv)], "python -m venv")
        _link_parent(venv, parent_dirs)
        env_python = _python_in(venv)
        seen, error = _torch(env_python)
        if seen != torch:
            raise HyperrestartError(f"the new environment does not import torch {torch} as {python} does "
                                    f"({error or f'it imports torch {seen}'}); pip would install another torch, so "
                                    f"nothing was installed. Is torch in one of {parent_dirs}?")
        if subprocess.run([str(env_python), "-c", "import pip"], capture_output=True).returncode != 0:
            _run([str(env_python), "-m", "ensurepip", "--default-pip"], "python -m ensurepip")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
            constraints.write(f"torch=={torch}\n")
        # the constraint: pip may keep the parent's torch (it satisfies every requirement) but never fetch another
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
            "upstream": name, "base_python": str(python), "torch": torch, "parent_site_packages": parent_dirs,
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
