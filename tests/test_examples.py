"""Every script in examples/ runs to its end (each checks its own result and exits
non-zero when the training did not work). The MPI example runs in tests/distributed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if "mpi" not in p.name)


def test_every_example_is_run_here():
    assert [p.name for p in SCRIPTS] == [
        "checkpoint_resume.py",
        "embeddings_recommender.py",
        "lr_schedules.py",
        "mlp_blobs.py",
        "torch_in_place.py",
    ]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
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
