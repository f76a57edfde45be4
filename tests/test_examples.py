"""Every script in examples/ runs to its end (each checks its own result and exits
non-zero when the training did not work). The MPI example runs in tests/distributed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import marks_for

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if "mpi" not in p.name)


def test_every_example_is_run_here():
    assert [p.name for p in SCRIPTS] == [
        "checkpoint_resume.py",
        "embeddings_recommender.py",
        "lr_schedules.py",
        "mlp_blobs.py",
        "torch_drop_in.py",
        "torch_in_place.py",
    ]


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, marks=marks_for(p.read_text())) for p in SCRIPTS],
    ids=lambda p: p.name,
)
def test_example_runs(script, tmp_path):
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "the example printed nothing"


def _public_api_problems(script: Path) -> list[str]:
    """Private modules or names outside a public module's `__all__` that a script uses."""
    import ast
    import importlib

    problems = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adagrad_native"):
            module = node.module or ""
            if any(part.startswith("_") for part in module.split(".")):
                problems.append(f"imports the private module {module}")
                continue
            public = getattr(importlib.import_module(module), "__all__", ())
            problems += [
                f"imports {a.name} from {module}, which is not in its __all__"
                for a in node.names
                if a.name not in public and not importlib.util.find_spec(f"{module}.{a.name}")
            ]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "an" and node.attr not in __import__("adagrad_native").__all__:
                problems.append(f"uses an.{node.attr}, which is not in adagrad_native.__all__")
    return problems


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_examples_use_only_the_public_api(script):
    pytest.importorskip("mpi4py")  # adagrad_native.distributed imports it
    assert not _public_api_problems(script)


def test_a_private_import_in_an_example_is_caught(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text(
        "import adagrad_native as an\nfrom adagrad_native._demo import MLP\nan._core\n"
    )
    assert len(_public_api_problems(script)) == 2
