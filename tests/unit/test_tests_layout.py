"""The tests mirror the code: unit tests of a package live in tests/unit/<package>/, and what several test
modules share lives in tests/helpers/, which no test module's neighbour has to be imported for."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
PACKAGE = TESTS.parent / "pipeline"


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_test_module_imports_another() -> None:
    wrong = {
        f"{path.relative_to(TESTS)}: {module}"
        for path in TESTS.rglob("*.py")
        for module in _imported_modules(path)
        if module.startswith("tests.") and not module.startswith("tests.helpers")
    }
    assert not wrong, sorted(wrong)


def test_every_unit_test_folder_is_named_after_a_package_of_the_code() -> None:
    folders = {p.name for p in (TESTS / "unit").iterdir() if p.is_dir() and p.name != "__pycache__"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders and folders <= packages, sorted(folders - packages)
    assert all((TESTS / "unit" / folder / "__init__.py").is_file() for folder in folders)
