"""The package's import graph: no cycle, and the compiled core behind one module.

See docs/architecture.md: `_native.py` owns the step contract with `_core`;
`__init__` may reach it only for build information and threads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import adagrad_native

PACKAGE = Path(adagrad_native.__file__).parent
NAME = "adagrad_native"


def _imports(path: Path) -> set[str]:
    """The package modules a module imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(NAME + "."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(NAME):
            if node.module == NAME:  # `from adagrad_native import x`: x is a module
                found.update(f"{NAME}.{a.name}" for a in node.names)
            else:
                found.add(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    """Each module of the package (but `__init__`) and the package modules it imports."""
    modules = {
        ".".join((NAME, *p.relative_to(PACKAGE).with_suffix("").parts)): p
        for p in PACKAGE.rglob("*.py")
        if p.stem != "__init__"
    }
    return {name: _imports(path) for name, path in modules.items()}


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        assert module not in stack, f"import cycle: {' -> '.join([*stack, module])}"
        if module in done:
            return
        for imported in sorted(graph[module] & graph.keys()):
            visit(imported, [*stack, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_only_the_native_module_imports_the_core():
    importers = sorted(m for m, imported in _graph().items() if f"{NAME}._core" in imported)
    assert importers == [f"{NAME}._native"]
