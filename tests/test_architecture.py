"""The package's layout rules (docs/architecture.md), checked on the source: a thin CLI layer that nothing imports, and
one implementation of each shared utility."""
import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hyperrestart"
OVERLAY = PACKAGE.parent / "overlay"
ROOMS = ("core", "vendor", "upstream", "p3", "sweep", "tune", "report", "analysis", "commands")


def sources(root=PACKAGE):
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path):
    """Every module an import statement in `path` names (absolute form; relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def test_every_module_sits_in_a_room():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "cli.py")]
    assert loose == [], f"modules outside the rooms {ROOMS}: {loose}"
    rooms = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert rooms == sorted(ROOMS)
    for room in ROOMS:
        doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text(encoding="utf-8")))
        assert doc, f"hyperrestart/{room}/__init__.py says nothing about what the room holds"


def test_nothing_outside_the_cli_imports_it():
    offenders = [f"{p.relative_to(PACKAGE.parent)} imports {m}" for p in sources()
                 if "commands" not in p.relative_to(PACKAGE).parts and p.name != "cli.py"
                 for m in imported_modules(p) if m == "hyperrestart.commands" or m.startswith("hyperrestart.commands.")]
    assert offenders == []


def test_the_import_checker_sees_a_violation(tmp_path, monkeypatch):
    """The check above can fail: an upward import, relative or absolute, is found."""
    fake = tmp_path / "hyperrestart"
    (fake / "sweep").mkdir(parents=True)
    (fake / "sweep" / "x.py").write_text("from ..commands.run import cmd_run\nimport hyperrestart.commands.sweep\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    found = list(imported_modules(fake / "sweep" / "x.py"))
    assert "hyperrestart.commands.run" in found and "hyperrestart.commands.sweep" in found


def definitions(pattern, roots=(PACKAGE, OVERLAY)):
    """Files (relative) whose source matches `pattern`."""
    regex = re.compile(pattern, re.M)
    return sorted(str(p.relative_to(PACKAGE.parent)) for root in roots for p in sources(root)
                  if regex.search(p.read_text(encoding="utf-8")))


@pytest.mark.parametrize("what, pattern, home", [
    ("atomic write (temp file + os.replace)", r"os\.replace\(|\.replace\(\s*\w+\s*\)\s*$", ["hyperrestart/core/files.py"]),
    ("file digest", r"hashlib\.file_digest|def \w*sha256\w*\(", ["hyperrestart/core/files.py"]),
    ("KEY=VALUE parser", r"def parse_set\(", ["hyperrestart/core/overrides.py"]),
    ("flock", r"fcntl\.flock\(", ["hyperrestart/core/locks.py"]),
])
def test_each_utility_exists_once(what, pattern, home):
    assert definitions(pattern, roots=(PACKAGE,)) == home, f"{what} is implemented outside {home}"
