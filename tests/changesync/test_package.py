"""Package-shape checks: PyMongo is reached through one module, and every error lives in errors.py."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import changesync
from changesync import errors

PACKAGE = Path(changesync.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
# The one boundary to the driver (changesync.mongo); the schema generator is a dev tool.
PYMONGO_BOUNDARY = {PACKAGE / "mongo.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_boundary_imports_pymongo():
    """Nothing but changesync/mongo.py imports PyMongo: errors are mapped there, once."""
    importers = [
        str(path.relative_to(PACKAGE))
        for path in MODULES
        if any(name == "pymongo" or name.startswith("pymongo.") for name in imported_modules(path))
    ]
    assert importers == ["mongo.py"]


def test_every_exception_class_is_in_errors_py():
    """No module but errors.py defines an exception."""
    elsewhere = []
    for path in MODULES:
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and (base.id.endswith("Error") or base.id.endswith("Exception"))
                for base in node.bases
            ):
                elsewhere.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert elsewhere == []


def test_every_error_is_used():
    """Each error of errors.py is raised or caught somewhere else in the package (unused ones go)."""
    sources = "\n".join(path.read_text(encoding="utf-8") for path in MODULES if path.name != "errors.py")
    defined = [name for name, value in vars(errors).items() if inspect.isclass(value) and issubclass(value, Exception)]
    subclassed = {base.__name__ for name in defined for base in getattr(errors, name).__bases__}
    unused = [name for name in defined if name not in sources and name not in subclassed]
    assert unused == []
