"""The docs are held to the code: every file path and every `module.name` they name exists.

Covers the backticked spans of README.md, docs/, the READMEs of benchmarks/ and
examples/, and the docstrings of the package, the benchmarks and the examples.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_DIRS = ("python/", "cpp/", "tests/", "benchmarks/", "docs/", "examples/", ".ci/")
TOP_FILES = {
    "README.md",
    "CMakeLists.txt",
    "pyproject.toml",
    "CHANGELOG.md",
    "LICENSE",
    "mkdocs.yml",
}
CODE_SUFFIXES = (".py", ".cpp", ".hpp", ".pyi")
DOTTED = re.compile(r"\b(?:adagrad_native|benchmarks|tests)(?:\.[A-Za-z_]\w*)+")
SPAN = re.compile(r"`([^`\n]+)`")


def _markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for folder in ("benchmarks", "examples"):
        files += sorted((ROOT / folder).rglob("README.md"))
    return files


def _docstrings(path: Path) -> str:
    tree = ast.parse(path.read_text())
    nodes = [tree, *ast.walk(tree)]
    kinds = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
    return "\n".join(ast.get_docstring(n) or "" for n in nodes if isinstance(n, kinds))


def _sources() -> dict[str, str]:
    """Every text whose references are checked, by where it comes from."""
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in _markdown_files()}
    for folder in ("python/adagrad_native", "benchmarks", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            texts[f"{path.relative_to(ROOT)} (docstrings)"] = _docstrings(path)
    return texts


_CODE_FILES = {p.name for suffix in CODE_SUFFIXES for p in ROOT.rglob(f"*{suffix}")}


def _path_problem(span: str) -> str | None:
    """Why a span that names a file of the repository names none, or None."""
    span = span.split("::")[0].split(":")[0].rstrip("/")
    if " " in span or "*" in span or "<" in span or "..." in span:
        return None  # a pattern or a placeholder, not a path
    if span.startswith(TOP_DIRS) or span in TOP_FILES:
        return None if (ROOT / span).exists() else "no such file or folder"
    if "/" not in span and span.endswith(CODE_SUFFIXES):
        return None if span in _CODE_FILES else "no file of that name"
    return None


def _name_problem(dotted: str) -> str | None:
    """Why `package.module.attribute...` names nothing, or None."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(target, attribute):
                return f"{'.'.join(parts[:split])} has no {attribute!r}"
            target = getattr(target, attribute)
        return None
    return "no such module"


def _references() -> list[tuple[str, str, str]]:
    found = []
    for where, text in _sources().items():
        for span in SPAN.findall(text):
            found.append((where, "path", span))
            found += [(where, "name", d) for d in DOTTED.findall(span)]
    return found


REFERENCES = _references()


def test_the_references_are_many():
    # Not vacuous: the docs name files and modules in backticks throughout.
    assert sum(kind == "name" for _, kind, _ in REFERENCES) > 30
    assert sum(_path_problem(s) is None and "/" in s for _, k, s in REFERENCES if k == "path") > 30


@pytest.mark.parametrize("where", sorted({w for w, _, _ in REFERENCES}))
def test_every_named_file_and_module_exists(where):
    mpi = pytest.importorskip("mpi4py", reason="adagrad_native.distributed imports it")
    del mpi
    problems = []
    for source, kind, span in REFERENCES:
        if source != where:
            continue
        problem = _path_problem(span) if kind == "path" else _name_problem(span)
        if problem:
            problems.append(f"`{span}`: {problem}")
    assert not problems, problems


def test_a_wrong_reference_is_caught():
    assert _path_problem("cpp/no_such_file.cpp")
    assert _path_problem("nosuch_module.py")
    assert _name_problem("adagrad_native.NoSuchThing")
    assert _name_problem("adagrad_native.no_such_module.thing")
    assert _path_problem("cpp/step.cpp") is None
    assert _name_problem("adagrad_native.distributed.ShardedAdagrad") is None
