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


# ------------------------------------------------------------ the extension surface
def _optimizer_classes() -> tuple[set[type], set[type]]:
    """The classes `Optimizer` is made of, and every other class that takes part in one.

    The first are Optimizer's own bases (their modules define its members); the
    second are the package's subclasses and the mixins combined with them.
    """
    import importlib

    from adagrad_native.optimizer import Optimizer

    for name in _graph():
        if name.endswith("._core"):
            continue
        try:
            importlib.import_module(name)
        except ImportError as err:  # a module of an extra that is not installed (torch)
            if "pip install" not in str(err):
                raise
    own = {c for c in Optimizer.__mro__ if c.__module__.startswith(NAME)}
    users: set[type] = set()
    todo = [Optimizer]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            users.update(c for c in sub.__mro__ if c.__module__.startswith(NAME))
    return own, users - own


def _private_members(classes: set[type]) -> set[str]:
    """Single-underscore names those classes define: methods, and attributes they assign."""
    names: set[str] = set()
    for cls in classes:
        tree = ast.parse(Path(inspect_file(cls)).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
                for inner in ast.walk(node):
                    if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                        names.add(inner.name)
                    elif isinstance(inner, ast.Attribute) and isinstance(inner.ctx, ast.Store):
                        names.add(inner.attr)
                    elif isinstance(inner, ast.AnnAssign) and isinstance(inner.target, ast.Name):
                        names.add(inner.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def inspect_file(cls: type) -> str:
    import inspect

    return inspect.getfile(cls)


def test_only_the_optimizer_modules_touch_its_underscore_members():
    own, users = _optimizer_classes()
    private = _private_members(own)
    assert {"_lock", "_engine", "_trainable_variables", "_step"} <= private  # not vacuous
    own_files = {Path(inspect_file(c)).resolve() for c in own}
    user_names = {(Path(inspect_file(c)).resolve(), c.__name__) for c in users}
    touches = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.resolve() in own_files:
            continue
        tree = ast.parse(path.read_text())
        for cls_node in [None, *[n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]]:
            part_of_an_optimizer = (
                cls_node is not None and (path.resolve(), cls_node.name) in user_names
            )
            for node in ast.walk(cls_node or tree):
                if not (isinstance(node, ast.Attribute) and node.attr in private):
                    continue
                on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                on_super = (
                    isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", None) == "super"
                )
                if (on_self or on_super) and not part_of_an_optimizer:
                    continue  # another class's own member of the same name
                touches.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
    assert not sorted(set(touches)), (
        "modules outside the optimizer's own touch its underscore members (use the "
        f"extension surface, adagrad_native._surface): {sorted(set(touches))}"
    )


def test_nothing_outside_the_optimizers_sets_built():
    # A table or a wrapper that is not an optimizer must not pose as a built one.
    own, users = _optimizer_classes()
    optimizer_files = {Path(inspect_file(c)).resolve() for c in own | users}
    fakes = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            target = None
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                target = node.attr
            elif isinstance(node, ast.Assign):
                target = next(
                    (t.id for t in node.targets if isinstance(t, ast.Name) and t.id == "built"),
                    None,
                )
            if target == "built" and path.resolve() not in optimizer_files:
                fakes.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not fakes, fakes


def test_the_state_functions_are_typed_against_the_surface_protocols():
    import typing

    from adagrad_native import _state, _surface, checkpoint
    from adagrad_native.distributed import checkpoint as sharded_checkpoint

    for function in (
        checkpoint.save_state,
        checkpoint.load_state,
        _state.state_dict,
        _state.load_state_dict,
        _state.save_own_variables,
        _state.load_own_variables,
        _state.set_weights,
    ):
        assert typing.get_type_hints(function)["optimizer"] is _surface.Wrappable, function
    from adagrad_native.distributed._places import ShardedState

    for function in (sharded_checkpoint.save_state, sharded_checkpoint.load_state):
        hint = typing.get_type_hints(function)["optimizer"]
        assert set(typing.get_args(hint)) == {ShardedState, _surface.Wrappable}, function
