"""The data-parallel example runs as its docstring says, and every rank ends with one model."""

from __future__ import annotations

from tests.distributed.conftest import launch


def test_the_data_parallel_example_runs_on_two_ranks():
    done = launch(2, "examples/data_parallel_mpi.py", "--epochs", "2")
    assert done.returncode == 0, done.stderr
    assert "every rank holds the same model: True" in done.stdout, done.stdout
