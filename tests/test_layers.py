"""The layering of docs/architecture.md, enforced: import-linter's contracts in
pyproject.toml hold, they break when a lower layer imports a higher one, and no
module imports another's private name."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vitlab"

pytest.importorskip("importlinter", reason="import-linter is a test dependency (pip install -e '.[dev]')")


def lint(project: Path) -> subprocess.CompletedProcess:
    """lint-imports on the project folder ``project`` (its pyproject.toml and src/)."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=project, capture_output=True,
                          text=True, env={"PYTHONPATH": str(project / "src"), "PATH": "/usr/bin:/bin"})


def copy_project(dest: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    shutil.copytree(SRC, dest / "src" / "vitlab", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_the_contracts_hold():
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 kept, 0 broken" in r.stdout


@pytest.mark.parametrize("module, bad_import, contract", [
    ("models/registry.py", "from ..train import engine", "Imports point down"),  # foundations -> commands
    ("data/catalog.py", "from ..run import checkpoint", "Imports point down"),  # foundations -> run layer
    ("run/checkpoint.py", "from .. import evaluate", "Imports point down"),  # run layer -> a command
    ("run/runtime.py", "from . import folder", "No import cycles"),  # with folder -> runtime below: a cycle
])
def test_a_wrong_import_breaks_a_contract(tmp_path, module, bad_import, contract):
    project = copy_project(tmp_path)
    path = project / "src" / "vitlab" / module
    text = path.read_text()
    if contract == "No import cycles":  # make a real cycle: runtime -> folder -> runtime
        folder = project / "src" / "vitlab" / "run" / "folder.py"
        folder.write_text(folder.read_text().replace("from ..errors import UserError",
                                                     "from ..errors import UserError\nfrom . import runtime", 1))
    path.write_text(text.replace("from __future__ import annotations",
                                 f"from __future__ import annotations\n\n{bad_import}", 1))
    r = lint(project)
    assert r.returncode != 0
    assert f"{contract}" in r.stdout and "BROKEN" in r.stdout, r.stdout


def private_imports(root: Path) -> list[str]:
    """``file:line imports _name`` for each private name imported from a vitlab module."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("vitlab")):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(root)}:{node.lineno} imports {alias.name}")
    return found


def test_no_private_name_is_imported_from_another_module():
    assert private_imports(SRC) == []


def test_the_private_import_check_finds_one(tmp_path):
    (tmp_path / "a.py").write_text("from .vit import VisionTransformer, _pair\nfrom vitlab import __version__\n")
    assert private_imports(tmp_path) == ["a.py:1 imports _pair"]
