"""The memory-roofline probe: `StreamProbe` and `RowsProbe` of the compiled core.

The probe moves a step's bytes with the step's thread team, work list and ISA, and no
math. It is no part of the package users install: `_core` has it only when built with

    CMAKE_ARGS="-DADAGRAD_PROBE=ON" pip install -e ".[bench]"

(`.ci/run` builds it so, for `tests/test_roofline.py`). Benchmarks that compare with the
probe report it as not run, with `unavailable()`'s reason, in other builds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BUILD = 'CMAKE_ARGS="-DADAGRAD_PROBE=ON" pip install -e .'


def unavailable() -> str | None:
    """Why the probe cannot run here, or None."""
    try:
        from adagrad_native import _core
    except ImportError as e:
        return f"adagrad_native is not importable ({e})"
    if not hasattr(_core, "StreamProbe"):
        return f"this build of adagrad_native has no roofline probe (build it with {BUILD})"
    return None


def _core() -> Any:
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    from adagrad_native import _core

    return _core


def stream_probe(tensors: list[tuple[list[np.ndarray], list[np.ndarray]]]) -> Any:
    """A callable that streams whole arrays: one (read-only, read-write) pair per tensor.

    Each call reads every array and writes the read-write ones back unchanged, over the
    tensors' work list; `.bytes` is what one call moves (read-write arrays count twice).
    """
    return _core().StreamProbe(tensors)


def rows_probe(rows: np.ndarray, tables: list[np.ndarray]) -> Any:
    """A callable that reads and writes back `rows` (distinct, ascending) of every table.

    The rows stay where they are: the probe touches the very bytes a sparse step touches,
    in row tasks over the step's threads; `.bytes` is what one call moves.
    """
    return _core().RowsProbe(np.ascontiguousarray(rows, np.int64), tables)
