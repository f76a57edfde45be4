"""Helpers shared by the test modules: the floating dtypes, the optimizer's slot lists,
tolerances against the oracle, bitwise comparisons."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import ml_dtypes  # in the `test` extra: bfloat16 is always tested
import numpy as np
import pytest

# Every parameter dtype the core supports, by name; the names are the test ids.
FLOAT_DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
LOW_PRECISION = ("float16", "bfloat16")  # 16-bit storage, float32 math


def dtype_params(*names):
    """`pytest.param`s of the named dtypes (all of them by default), each with its name as id."""
    return [pytest.param(FLOAT_DTYPES[name], id=name) for name in names or FLOAT_DTYPES]


# Keras' names of an optimizer's per-variable slot lists (None where a variable has none).
SLOT_LISTS = ("_accumulators", "_model_variables_moving_average", "_accumulated_gradients")


def assert_close(got, want, steps, what):
    """`got` is the native result, `want` the numpy oracle's, after `steps` steps.

    Same shape and dtype, then values within 8 ulps of the dtype per step, relative
    to the value and absolutely to max(1, |want|max). Why: every element goes
    through ~10 correctly rounded operations per step on both sides; the native core
    may contract a*b+c into an FMA, reduces norms in float64 and may fold the clip
    factor into one multiply, so a value may differ by a few ulps per step.
    Parameters are O(1), and a difference of two O(1) numbers carries an absolute,
    not relative, error, hence the absolute term. A real bug (wrong order, a missing
    cast, a stale slot) is off by orders of magnitude more.
    """
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    tol = 8 * np.finfo(want.dtype).eps * max(steps, 1)
    scale = max(1.0, float(np.nanmax(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)


def assert_identical(got, want, what="array"):
    """Two lists of arrays agree bit for bit: same length, shapes, dtypes and bytes."""
    assert len(got) == len(want), f"{what}s: {len(got)}, expected {len(want)}"
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape and a.dtype == b.dtype, (
            f"{what} {i}: {a.shape} {a.dtype}, expected {b.shape} {b.dtype}"
        )
        assert a.tobytes() == b.tobytes(), f"{what} {i} differs: {a!r}, expected {b!r}"


def run_interrupted(call: Callable[[], Any], delay: float) -> bool:
    """Runs `call` with a Ctrl-C (SIGINT) due after `delay` seconds; whether `call` returned.

    The timer starts inside the `try` that handles its KeyboardInterrupt, and the
    `try` ends only once the timer has fired and its handler had its turn: the
    interrupt lands in `call` or in the wait after it, never in the test's own
    code, however late a busy machine runs the timer's thread. Python runs the
    handler at the main thread's next instruction; when that instruction is in a
    finalizer (`__del__`, a gc callback), Python reports the KeyboardInterrupt as
    unraisable and drops it, so no interrupt comes: then `call` simply returned
    (and that report, which is expected, is not passed on). Run it from
    the main thread (Python delivers signals there).
    """
    # A runner started in the background (`cmd &` in a script) inherits SIGINT
    # ignored, and Python then installs no handler: put Python's own in place.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    report_unraisable = sys.unraisablehook

    def drop_our_interrupt(unraisable: Any) -> None:  # the one a finalizer dropped
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            report_unraisable(unraisable)

    sys.unraisablehook = drop_our_interrupt
    timer = threading.Timer(delay, signal.raise_signal, (signal.SIGINT,))
    returned = False
    try:
        timer.start()
        call()
        returned = True
        while timer.is_alive():  # the interrupt lands here at the latest
            time.sleep(0.001)
        time.sleep(0.01)  # its handler runs at the next instruction
    except KeyboardInterrupt:
        pass
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = report_unraisable
    return returned


def sparse_ids(kind: str, rows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n row ids below `rows`: "repeated" draws them at random (most rows get several
    copies, so the update runs over the distinct rows in row order); "single" gives
    most rows one copy and one row three (the update runs in index order)."""
    if kind == "repeated":
        return rng.integers(0, rows, n)
    ids = rng.permutation(rows)[: max(1, n - 2)]
    return np.concatenate([ids, ids[:1], ids[:1]])[:n] if n >= 3 else ids
