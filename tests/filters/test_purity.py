"""Package-shape checks: ``filters`` imports only the standard library and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import filters

PACKAGE_DIR = Path(filters.__file__).parent
SOURCES = sorted(PACKAGE_DIR.rglob("*.py"))


def _foreign_imports(source: Path) -> list[str]:
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    foreign: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.partition(".")[0]
            if top != "filters" and top not in sys.stdlib_module_names:
                foreign.append(f"{source.name}:{node.lineno}: {name}")
    return foreign


class TestPurity:
    def test_sources_are_found(self) -> None:
        """The walk sees the package's modules, so an empty pass cannot hide a broken glob."""
        assert {"__init__.py", "types.py", "pipeline.py"} <= {source.name for source in SOURCES}

    @pytest.mark.parametrize("source", SOURCES, ids=lambda source: source.name)
    def test_imports_only_stdlib(self, source: Path) -> None:
        """Every import in the module is relative, of ``filters`` itself, or of the standard library."""
        assert _foreign_imports(source) == []

    @pytest.mark.parametrize("banned", ["asyncio", "logging"])
    @pytest.mark.parametrize("source", SOURCES, ids=lambda source: source.name)
    def test_no_io_or_async_modules(self, source: Path, banned: str) -> None:
        """Stages do no I/O and no logging, so these standard modules are not imported either."""
        tree = ast.parse(source.read_text(encoding="utf-8"))
        imported = {
            alias.name.partition(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        imported |= {
            (node.module or "").partition(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 0
        }
        assert banned not in imported

    def test_detects_a_foreign_import(self, tmp_path: Path) -> None:
        """The checker itself flags a third-party import."""
        module = tmp_path / "bad.py"
        module.write_text("import pymongo\nfrom starlette.responses import Response\nfrom . import types\n")
        assert _foreign_imports(module) == ["bad.py:1: pymongo", "bad.py:2: starlette.responses"]

    def test_py_typed_ships(self) -> None:
        """The package carries the PEP 561 marker."""
        assert (PACKAGE_DIR / "py.typed").is_file()

    def test_all_is_explicit_and_resolvable(self) -> None:
        """Every name in ``__all__`` exists and ``__all__`` is sorted."""
        assert list(filters.__all__) == sorted(filters.__all__)
        for name in filters.__all__:
            assert hasattr(filters, name), name
