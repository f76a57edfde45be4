"""Launching scenarios under `mpiexec` (one launch per rank count, results cached)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "mpi4py",
    reason='the distributed tests need mpi4py and MPICH: pip install ".[mpi]" from a clone',
)

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600  # a hang (a rank waiting in a collective forever) fails, it does not block CI


def mpiexec() -> list[str]:
    """The launcher next to this interpreter (the mpich wheel's), else the one on PATH."""
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.fail('mpiexec not found: pip install ".[mpi]" from a clone installs MPICH')
    return [found]


def launch(size: int, *argv: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Runs `python argv...` on `size` ranks from the repository root."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [*mpiexec(), "-n", str(size), sys.executable, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_RESULTS: dict[tuple[int, str], dict[str, dict]] = {}


@pytest.fixture(scope="session")
def scenario_results():
    """`scenario_results(size, reduction)`: every scenario's report (one launch each)."""

    def results(size: int, reduction: str = "sum") -> dict[str, dict]:
        key = (size, reduction)
        if key not in _RESULTS:
            done = launch(
                size, "-m", "tests.distributed.scenarios", "all", "--reduction", reduction
            )
            reports = [
                json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")
            ]
            assert done.returncode == 0 and reports, (
                f"mpiexec -n {size} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
            _RESULTS[key] = {r["name"]: r for r in reports}
        return _RESULTS[key]

    return results
