"""The package's boundaries, read from the import statements of every module (function-level ones included).

Only pipeline/tracking/ imports mlflow and the tracking journal; data/ imports neither train/ nor tracking/;
nothing but the CLI imports the CLI; the modules import each other without a cycle, and so do the packages
(pipeline/augment/, pipeline/training/, ...: no package imports one that imports it back); importing the CLI loads
no heavy library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipeline"
JOURNAL = "pipeline.tracking.spool"
CLI = "pipeline.cli"  # the command line, pipeline/cli/ and every module in it: it may import any package


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:``: imports for annotations, never run."""
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Every module the module ``name`` imports, at any depth; ``from a import b`` is ``a.b`` when that is a module.

    Importing ``a.b`` also runs ``a/__init__``; that edge is left out, or every package whose ``__init__``
    re-exports its submodules would be a cycle with each of them.
    """
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the package, one level up per extra dot
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
            visit(child)

    visit(ast.parse(source, name))
    return found


@cache
def _imports() -> dict[str, frozenset[str]]:
    """Each module of the package -> every module it imports (the package's own and third-party ones)."""
    known = set(_modules())
    return {
        name: frozenset(_imported(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known))
        for name, path in _modules().items()
    }


def _importers(target: str) -> set[str]:
    """The package's modules that import ``target`` or a module inside it."""
    return {
        name
        for name, imported in _imports().items()
        if any(module == target or module.startswith(f"{target}.") for module in imported)
    }


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def test_the_import_graph_reads_function_level_relative_and_submodule_imports() -> None:
    assert "pipeline.inference.ray_engine" in _imports()["pipeline.inference.engine"]  # imported inside predict()
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "from .. import c\n"
        "def f():\n"
        "    from p.q.b import g\n"
        "if TYPE_CHECKING:\n"
        "    import mlflow\n"
    )
    known = {"p", "p.c", "p.q", "p.q.a", "p.q.b"}
    assert _imported(source, "p.q.a", False, known) == {"typing", "p.q.b", "p.c"}
    assert _imported("from . import a", "p.q", True, known) == {"p.q.a"}


def test_only_the_tracking_package_imports_mlflow() -> None:
    importers = _importers("mlflow")
    assert importers and all(_in(name, "pipeline.tracking") for name in importers), importers


def test_only_the_tracking_package_opens_the_journal() -> None:
    importers = _importers(JOURNAL)
    assert importers and all(_in(name, "pipeline.tracking") for name in importers), importers


def test_data_imports_neither_training_nor_tracking() -> None:
    for layer in ("pipeline.training", "pipeline.tracking"):
        wrong = {name for name in _importers(layer) if _in(name, "pipeline.data")}
        assert not wrong, f"{layer} imported by {sorted(wrong)}"


def test_nothing_imports_the_cli() -> None:
    known = set(_modules())
    scripts = {
        str(path): _imported(path.read_text(encoding="utf-8"), path.stem, False, known)
        for path in (REPO / "scripts").rglob("*.py")
    }
    importers = _importers(CLI)
    assert importers and all(_in(name, CLI) for name in importers), sorted(importers)  # its __main__ imports it
    assert [path for path, imported in scripts.items() if any(_in(module, CLI) for module in imported)] == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each back edge a depth-first walk meets; none when the graph is acyclic."""
    state: dict[str, str] = {}  # "open" while on the walk's path, "done" after
    path: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return cycles


def test_the_package_has_no_import_cycle() -> None:
    own = set(_modules())
    graph = {
        name: {module for module in imported if module in own and module != name}
        for name, imported in _imports().items()
    }
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # the walk finds one
    assert [" -> ".join(cycle) for cycle in _cycles(graph)] == []


def _package_edges(imports: dict[str, frozenset[str]], packages: set[str]) -> dict[tuple[str, str], str]:
    """(package, other package) -> one import that makes the first depend on the second: ``module -> ... -> module``.

    A package is ``pipeline.<folder>``; a top-level module (pipeline/config.py ...) belongs to none, so an import of
    one is followed to what it imports: a package importing config, which imports another package, depends on that
    package. The CLI's modules are left out: they may import every package, and only the CLI imports them.
    """

    def package(module: str) -> str | None:
        return next((p for p in packages if module == p or module.startswith(f"{p}.")), None)

    edges: dict[tuple[str, str], str] = {}
    for name in sorted(imports):
        source = package(name)
        if source is None or _in(name, CLI):
            continue
        seen: set[str] = set()
        todo = [(module, [name, module]) for module in sorted(imports[name])]
        while todo:
            module, chain = todo.pop(0)
            if module in seen or module not in imports or _in(module, CLI):
                continue
            seen.add(module)
            target = package(module)
            if target is None:  # a top-level module: what it imports counts
                todo.extend((further, [*chain, further]) for further in sorted(imports[module]))
            elif target != source:
                edges.setdefault((source, target), " -> ".join(chain))
    return edges


def test_no_package_imports_a_package_that_imports_it_back() -> None:
    toy = {
        "p.a.x": frozenset({"p.b.y"}),
        "p.b.y": frozenset(),
        "p.b.z": frozenset({"p.config"}),  # through a top-level module
        "p.config": frozenset({"p.a.w"}),
        "p.a.w": frozenset(),
    }
    toy_edges = _package_edges(toy, {"p.a", "p.b"})
    assert toy_edges == {("p.a", "p.b"): "p.a.x -> p.b.y", ("p.b", "p.a"): "p.b.z -> p.config -> p.a.w"}
    assert _cycles({"p.a": {"p.b"}, "p.b": {"p.a"}}) == [["p.a", "p.b", "p.a"]]  # no module cycle, a package one

    packages = {_module_name(path.parent) for path in PACKAGE.glob("*/__init__.py")}
    edges = _package_edges(dict(_imports()), packages)
    graph: dict[str, set[str]] = {package: set() for package in packages}
    for source, target in edges:
        graph[source].add(target)
    found = [
        " -> ".join(cycle) + "  (" + "; ".join(edges[a, b] for a, b in zip(cycle, cycle[1:], strict=False)) + ")"
        for cycle in _cycles(graph)
    ]
    assert found == []


def test_importing_the_cli_loads_neither_mlflow_nor_torch_nor_ultralytics() -> None:
    code = "import sys, pipeline.cli; print(sorted(m for m in ('mlflow', 'torch', 'ultralytics') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
