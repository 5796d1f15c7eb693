"""The layering is declared in pyproject.toml ([tool.importlinter]) and checked by `lint-imports`, which
tools/test.sh runs before pytest. What stays here is what the linter cannot see:

- app.py is a top-level module, not a package, so import-linter cannot hold it to a layer;
- a contract checks the imports written in the source; only running the code shows that importing the model,
  the numerics and the backends really loads no Qt (a plugin, a re-export, an import by name would slip past).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
QT_MODULES = ("PySide6", "shiboken6", "pyqtgraph")
QT_FREE_PACKAGES = ("core", "pipeline", "backends", "workspace")


def test_app_py_only_dispatches_to_the_cli() -> None:
    tree = ast.parse((ROOT / "app.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported <= {"__future__", "os", "sys", "cli"}, imported


def test_importing_every_qt_free_module_loads_no_qt() -> None:
    """Load every module of the Qt-free packages in a fresh interpreter and look at sys.modules."""
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for package in QT_FREE_PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
        if p.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    try:\n        importlib.import_module(m)\n"
        "    except ImportError as e:\n        print('skip', m, e, file=sys.stderr)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
