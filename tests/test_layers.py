"""The layer rules of DESIGN.md, checked so that CI fails when one breaks.

* ``test_import_contracts`` runs ``lint-imports`` (import-linter) on the
  contracts in ``pyproject.toml`` (``[tool.importlinter]``): which layer may
  import which, no cycles between hpcbatch's packages, the client without the
  server stack, ``hpcbatch.batch`` without I/O libraries.
* ``test_no_private_names_across_modules`` walks hpcbatch's source: no module
  uses another module's private (``_name``) functions, classes or attributes.
* ``test_mypy_clean`` runs mypy over the package with the ``[tool.mypy]``
  configuration (about 20 s; deselect it locally with ``-m "not mypy"``).

The tools run in subprocesses of this interpreter, from the repository root, so
they check this working copy.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hpcbatch"


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                          check=False)


# ------------------------------------------------------------------ contracts


def test_import_contracts() -> None:
    done = _run([sys.executable, "-c",
                 ("import sys; from importlinter.cli import lint_imports_command; "
                  "sys.argv[0] = 'lint-imports'; lint_imports_command()"),
                 "--no-cache"], timeout_s=300)
    assert done.returncode == 0, f"lint-imports failed:\n{done.stdout}\n{done.stderr}"
    # Every contract of pyproject.toml was checked.
    assert "0 broken" in done.stdout, done.stdout


# -------------------------------------------------------------- private names

#: Known uses of another module's private names, as (using module, name).
#: TODO(issue 11): each entry is a place to fix (make the name public, or give
#: the caller a public method); delete the entry with the fix. A new use fails
#: the test, and so does an entry that no longer occurs.
ALLOWED_PRIVATE_USES: frozenset[tuple[str, str]] = frozenset({
})


@dataclass(frozen=True)
class PrivateUse:
    """One use of another module's private name."""

    module: str
    line: int
    name: str  # "hpcbatch.x.y._name" (a module's name) or "._name" (an object's attribute)

    def __str__(self) -> str:
        return f"{self.module}:{self.line} uses {self.name}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name != "_"


def _modules(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted((root / "hpcbatch").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if not all(part.isidentifier() for part in parts):
            continue  # template programs (hpcbatch/templates/job-manager/main.py) are not modules
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _defined_private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, variables, and
    attributes it assigns (``self._x = ...``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {name for name in names if _private(name)}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` in ``module`` imports from."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _private_module_outside(module: str, target: str) -> str | None:
    """The first private part of ``target`` (a module path) whose package ``module`` is not in."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _private(part) and not _in_package(module, ".".join(parts[:i])):
            return ".".join(parts[: i + 1])
    return None


def _private_uses(root: Path) -> Iterator[PrivateUse]:
    """Every use, in the ``hpcbatch`` package under ``root``, of a name private to another module:

    * ``from hpcbatch.x import _name`` (also relative), unless ``_name`` is a
      private module of the importer's own package;
    * ``import hpcbatch.x._mod`` / ``from hpcbatch.x._mod import name`` from
      outside package ``hpcbatch.x``;
    * ``mod._name`` where ``mod`` is bound to another hpcbatch module;
    * ``obj._name`` (``obj`` not ``self``/``cls``) where ``_name`` is defined by
      other hpcbatch modules and not by this one (``self.service._pool_row()``).
    """
    modules = _modules(root)
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in modules.items()}
    defined = {name: _defined_private_names(tree) for name, tree in trees.items()}
    defined_anywhere = set().union(*defined.values())
    for module, tree in trees.items():
        is_package = modules[module].name == "__init__.py"
        aliases: dict[str, str] = {}  # local name -> the hpcbatch module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if not _in_package(alias.name, "hpcbatch"):
                        continue
                    bad = _private_module_outside(module, alias.name)
                    if bad:
                        yield PrivateUse(module, node.lineno, bad)
                    if alias.asname:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, is_package, node)
                if not _in_package(source, "hpcbatch"):
                    continue
                bad = _private_module_outside(module, source)
                if bad:
                    yield PrivateUse(module, node.lineno, bad)
                    continue
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    if target in modules:
                        aliases[alias.asname or alias.name] = target
                    if not _private(alias.name):
                        continue
                    if target in modules and _in_package(module, source):
                        continue  # a private module of the importer's own package
                    yield PrivateUse(module, node.lineno, target)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in aliases:
                if aliases[value.id] != module:
                    yield PrivateUse(module, node.lineno, f"{aliases[value.id]}.{node.attr}")
            elif isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            elif node.attr not in defined[module] and node.attr in defined_anywhere:
                yield PrivateUse(module, node.lineno, f".{node.attr}")


def test_no_private_names_across_modules() -> None:
    uses = sorted(set(_private_uses(ROOT)), key=lambda u: (u.module, u.line, u.name))
    new = [str(u) for u in uses if (u.module, u.name) not in ALLOWED_PRIVATE_USES]
    assert not new, ("modules use other modules' private names (make the name public, or add "
                     "a public method):\n" + "\n".join(new))
    fixed = ALLOWED_PRIVATE_USES - {(u.module, u.name) for u in uses}
    assert not fixed, f"fixed, delete from ALLOWED_PRIVATE_USES: {sorted(fixed)}"


def test_private_use_scan_sees_each_form(tmp_path: Path) -> None:
    """The scanner on a throwaway package: each form it must catch, and what it must allow."""
    files = {
        "hpcbatch/__init__.py": "",
        "hpcbatch/store/__init__.py": "",
        "hpcbatch/store/database.py": "def _helper(): ...\nclass Store:\n    def _row(self): ...\n",
        "hpcbatch/store/_sql.py": "from . import database\nfrom .database import Store\n",
        "hpcbatch/store/events.py": "from hpcbatch.store import _sql\nfrom ._sql import Store\n",
        "hpcbatch/core/__init__.py": "",
        "hpcbatch/core/service.py": (
            "from hpcbatch.store import database as db\n"
            "from hpcbatch.store.database import _helper\n"
            "import hpcbatch.store.database as store\n"
            "from hpcbatch.store._sql import x\n"
            "import hpcbatch.store._sql\n"
            "from ..store import database\n"
            "class S:\n"
            "    def __init__(self): self._mine = 1\n"
            "    def f(self, store_obj, other):\n"
            "        db._helper(); store._helper; database._helper; store_obj._row(); other._mine\n"
            "        store_obj.__class__; self._row\n"
        ),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = sorted((u.module, u.line, u.name) for u in _private_uses(tmp_path))
    service = "hpcbatch.core.service"
    assert found == [
        (service, 2, "hpcbatch.store.database._helper"),
        (service, 4, "hpcbatch.store._sql"),
        (service, 5, "hpcbatch.store._sql"),
        (service, 10, "._row"),
        (service, 10, "hpcbatch.store.database._helper"),
        (service, 10, "hpcbatch.store.database._helper"),
        (service, 10, "hpcbatch.store.database._helper"),
    ]


# ----------------------------------------------------------------------- mypy


#: mypy errors left in files whose fixes belong to other work, by file.
#: TODO(issue 11): the owner after each path fixes them and lowers the count (to
#: delete the entry at 0). Any error elsewhere fails the test, and so does a
#: count that changed, either way.
MYPY_ERRORS_ALLOWED: dict[str, int] = {
}


@pytest.mark.mypy
def test_mypy_clean() -> None:
    done = _run([sys.executable, "-m", "mypy", "-p", "hpcbatch"], timeout_s=600)
    assert "error: " in done.stdout or done.returncode == 0, done.stdout + done.stderr
    counts: dict[str, int] = {}
    for line in done.stdout.splitlines():
        path, _, rest = line.partition(":")
        if ": error: " in rest:
            counts[path] = counts.get(path, 0) + 1
    changed = {path: (MYPY_ERRORS_ALLOWED.get(path, 0), n)
               for path, n in (MYPY_ERRORS_ALLOWED | counts).items()
               if counts.get(path, 0) != MYPY_ERRORS_ALLOWED.get(path, 0)}
    assert not changed, (
        "mypy -p hpcbatch: errors per file differ from MYPY_ERRORS_ALLOWED "
        f"(path: (allowed, found)): {changed}\n{done.stdout}")
