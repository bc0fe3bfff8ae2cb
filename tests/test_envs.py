"""`hyperrestart env`: errors, and an env built from inside a venv reusing that venv's torch (fast: fake torch and pip
in a throw-away parent venv; slow: the real torch and pip)."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hyperrestart.upstream import envs
from hyperrestart.core.errors import HyperrestartError


def test_python_for_names_the_command_that_creates_the_env(tmp_path):
    with pytest.raises(HyperrestartError, match=r"no environment for hyperformer at .*; create it with "
                                                r"`hyperrestart env hyperformer`"):
        envs.python_for("hyperformer", root=tmp_path)
    with pytest.raises(HyperrestartError, match="unknown upstream"):
        envs.python_for("hyperfoo", root=tmp_path)


def test_env_needs_the_requirements_file(tmp_path):
    with pytest.raises(HyperrestartError, match=r"hyperdecoders\.txt does not exist"):
        envs.create_env("hyperdecoders", root=tmp_path / "v", requirements_dir=tmp_path)
    assert not (tmp_path / "v").exists()


def test_env_needs_torch_and_says_how_to_install_it(tmp_path):
    (tmp_path / "hyperdecoders.txt").write_text("")
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named torch' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(HyperrestartError, match=r"torch is not importable .*pip install torch==2\.13\.0"):
        envs.create_env("hyperdecoders", python=str(fake), root=tmp_path / "v", requirements_dir=tmp_path)
    assert not (tmp_path / "v").exists()


# A stand-in for pip, living in the parent venv: records its arguments (and the constraint files' text, deleted after
# the build) and "installs" each `name==version` line of its -r files as a package into the running env.
FAKE_PIP = textwrap.dedent('''\
    import json, os, sys, sysconfig
    argv = sys.argv[1:]
    record = {"argv": argv, "prefix": sys.prefix, "constraints": [open(argv[i + 1]).read()
              for i, a in enumerate(argv) if a in ("-c", "--constraint")]}
    with open(os.environ["FAKE_PIP_LOG"], "a") as handle:
        handle.write(json.dumps(record) + "\\n")
    site = sysconfig.get_paths()["purelib"]
    for i, a in enumerate(argv):
        if a in ("-r", "--requirement"):
            for line in open(argv[i + 1]):
                name, _, version = line.split("#")[0].strip().partition("==")
                if version:
                    os.makedirs(os.path.join(site, name), exist_ok=True)
                    with open(os.path.join(site, name, "__init__.py"), "w") as out:
                        out.write(f"__version__ = {version!r}\\n")
    ''')


def fake_package(site, name, version, body=""):
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(f"__version__ = {version!r}\n{body}")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def site_packages(venv):
    return next(Path(venv).glob("lib/python*/site-packages"))


def test_env_from_a_venv_reuses_its_torch_and_its_own_pins_win(tmp_path, monkeypatch):
    """The parent venv has no system site-packages: its torch, transformers and pip are visible only through it."""
    parent = tmp_path / "parent"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(parent)], check=True)
    site = site_packages(parent)
    fake_package(site, "torch", "2.99.0+fake")
    fake_package(site, "transformers", "4.57.6")
    fake_package(site, "pip", "99.0")
    (site / "pip" / "__main__.py").write_text(FAKE_PIP)
    reqs = tmp_path / "reqs"
    reqs.mkdir()
    (reqs / "hyperformer.txt").write_text("torch>=2.1\n")
    (reqs / "hyperformer-nodeps.txt").write_text("transformers==3.5.1\n")
    log = tmp_path / "pip.jsonl"
    monkeypatch.setenv("FAKE_PIP_LOG", str(log))
    root = tmp_path / "venvs"

    python = envs.create_env("hyperformer", python=str(parent / "bin" / "python"), root=root,
                             requirements_dir=reqs, log=lambda *_: None)

    probe = subprocess.run([str(python), "-c", "import json, sys, torch, transformers; print(json.dumps("
                            "[sys.prefix, torch.__version__, torch.__file__, transformers.__version__, "
                            "transformers.__file__]))"], capture_output=True, text=True, check=True)
    prefix, torch_version, torch_file, transformers_version, transformers_file = json.loads(probe.stdout)
    assert Path(prefix) == root / "hyperformer"
    assert (torch_version, Path(torch_file).parent.parent) == ("2.99.0+fake", site)  # the parent's torch
    assert transformers_version == "3.5.1"  # the env's own pin wins over the parent's 4.57.6
    assert Path(transformers_file).is_relative_to(root / "hyperformer")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [Path(c["prefix"]) for c in calls] == [root / "hyperformer"] * 2  # pip ran in the new env
    assert calls[0]["constraints"] == ["torch==2.99.0+fake\n"] and "-r" in calls[0]["argv"]
    assert "--no-deps" in calls[1]["argv"]
    marker = json.loads((root / "hyperformer" / envs.MARKER).read_text())
    assert marker["torch"] == "2.99.0+fake" and marker["parent_site_packages"] == [str(site)]


def test_env_refuses_when_the_new_env_would_not_see_the_torch(tmp_path, monkeypatch):
    """Without the parent's torch in sight pip would resolve torch itself: the build stops before pip runs."""
    parent = tmp_path / "parent"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(parent)], check=True)
    site = site_packages(parent)
    # a torch that imports in the parent but not in the new env (it checks where it runs)
    fake_package(site, "torch", "2.99.0", body=f"import sys\nassert sys.prefix == {str(parent)!r}, 'elsewhere'\n")
    fake_package(site, "pip", "99.0")
    (site / "pip" / "__main__.py").write_text(FAKE_PIP)
    (tmp_path / "hyperdecoders.txt").write_text("torch>=2.1\n")
    log = tmp_path / "pip.jsonl"
    monkeypatch.setenv("FAKE_PIP_LOG", str(log))
    with pytest.raises(HyperrestartError, match=r"the new environment does not import torch 2\.99\.0 .*pip would "
                                                r"install another torch"):
        envs.create_env("hyperdecoders", python=str(parent / "bin" / "python"), root=tmp_path / "v",
                        requirements_dir=tmp_path, log=lambda *_: None)
    assert not log.exists() and not (tmp_path / "v" / "hyperdecoders").exists()


@pytest.mark.slow  # builds a real venv and runs pip (10-60 s)
def test_env_is_created_reusing_torch_then_idempotent(tmp_path, capfd):
    (tmp_path / "hyperformer.txt").write_text("torch>=2.1\n")
    (tmp_path / "hyperformer-nodeps.txt").write_text("")
    root = tmp_path / "venvs"
    python = envs.create_env("hyperformer", root=root, requirements_dir=tmp_path, log=lambda *_: None)
    assert python == envs.python_for("hyperformer", root=root, requirements_dir=tmp_path)
    probe = subprocess.run([str(python), "-c", "import sys, torch; print(sys.prefix); print(torch.__file__)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert Path(probe[0]) == root / "hyperformer" and not probe[1].startswith(str(root))  # the installed torch
    marker = json.loads((root / "hyperformer" / envs.MARKER).read_text())
    assert marker["torch"] == __import__("torch").__version__
    out = capfd.readouterr().out
    assert "Requirement already satisfied" not in out, out  # quiet: pip's whole output is in the log
    pip_log = (root / "hyperformer-pip.log").read_text(encoding="utf-8")
    assert "Requirement already satisfied: torch>=2.1" in pip_log and "Collecting torch" not in pip_log, pip_log
    mtime = (root / "hyperformer" / envs.MARKER).stat().st_mtime
    envs.create_env("hyperformer", root=root, requirements_dir=tmp_path, log=lambda *_: None)
    assert (root / "hyperformer" / envs.MARKER).stat().st_mtime == mtime  # not rebuilt


@pytest.mark.slow  # installs the real torch wheel into a parent venv, then builds an env from it (a few minutes)
def test_env_from_a_venv_with_the_real_torch(tmp_path, capfd):
    """A parent venv holding its own real torch (from a local wheel: pip --no-index, never a download) and seeing the
    interpreter's transformers 4.x; the env built from it imports that torch and its own transformers 3.5.1."""
    import torch
    parent = tmp_path / "parent"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(parent)], check=True)
    version = torch.__version__
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(parent / "bin" / "python"), "install",
                              "--no-index", "--no-deps", "--ignore-installed", "-q", f"torch=={version}"],
                             capture_output=True, text=True)
    if install.returncode:
        pytest.skip(f"no local torch {version} wheel for pip --no-index (PIP_FIND_LINKS): {install.stderr[-300:]}")
    site = site_packages(parent)
    (tmp_path / "hyperformer.txt").write_text("torch>=2.1\n")
    (tmp_path / "hyperformer-nodeps.txt").write_text("transformers==3.5.1\n")
    root = tmp_path / "venvs"
    python = envs.create_env("hyperformer", python=str(parent / "bin" / "python"), root=root,
                             requirements_dir=tmp_path, log=lambda *_: None)
    probe = subprocess.run([str(python), "-c", "import json, importlib.metadata as m, importlib.util as u, torch; "
                            "print(json.dumps([torch.__version__, torch.__file__, m.version('transformers'), "
                            "u.find_spec('transformers').origin]))"], capture_output=True, text=True, check=True)
    torch_version, torch_file, transformers_version, transformers_file = json.loads(probe.stdout)
    assert torch_version == version and Path(torch_file).is_relative_to(site)  # the parent venv's own torch
    assert transformers_version == "3.5.1" and Path(transformers_file).is_relative_to(root / "hyperformer")
    pip_log = (root / "hyperformer-pip.log").read_text(encoding="utf-8")  # pip's output goes to the log (quiet)
    assert f"Requirement already satisfied: torch>=2.1 in {site}" in pip_log and "Collecting torch" not in pip_log, \
        pip_log
