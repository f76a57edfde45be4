"""Shared fixtures: seeded random numbers, the floating dtypes, array snapshots for
no-mutation checks."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import LOW_PRECISION, SLOT_LISTS, assert_identical, dtype_params

# Tests by what they need beyond the package: "mpi" launches mpiexec, "peer" loads a
# peer framework (keras, jax, torch). The sanitizer job (.ci/sanitize) runs every
# test that is neither, so a new test file runs under it by default.
_MARKED_FOLDERS = {"compat": "peer", "torch": "peer", "distributed": "mpi"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = item.path.parent.name
        if folder in _MARKED_FOLDERS:
            item.add_marker(_MARKED_FOLDERS[folder])


def marks_for(code: str) -> list[pytest.MarkDecorator]:
    """The markers of a test that runs `code` (an example, a docs page's blocks)."""
    marks = []
    if any(f"import {name}" in code for name in ("torch", "jax", "keras", "tensorflow")):
        marks.append(pytest.mark.peer)
    if "adagrad_native.distributed" in code or "mpi4py" in code:
        marks.append(pytest.mark.mpi)
    return marks


@pytest.fixture
def rng():
    """A freshly seeded generator, so every test sees the same numbers on every run."""
    return np.random.default_rng(20240611)


@pytest.fixture(params=dtype_params())
def float_dtype(request):
    """Each parameter dtype the core supports (np.dtype; ids float32 ... bfloat16)."""
    return request.param


@pytest.fixture(params=dtype_params(*LOW_PRECISION))
def low_precision_dtype(request):
    """float16 and bfloat16: 16-bit parameters whose math runs in float32."""
    return request.param


def optimizer_arrays(opt, variables=()):
    """Every array the optimizer and the given variables own: copies, in a fixed order.

    Covers the optimizer's `variables` (iteration, learning_rate, slots) and its
    Keras-named slot lists, so a change in any of them is seen.
    """
    arrays = [np.array(v, copy=True) for v in variables]
    arrays += [np.array(v, copy=True) for v in opt.variables]
    for attr in SLOT_LISTS:
        for v in getattr(opt, attr, None) or ():
            if v is not None:
                arrays.append(np.array(v, copy=True))
    arrays.append(np.array(int(opt._iterations)))
    return arrays


class Snapshot:
    """Bitwise snapshot of an optimizer's arrays plus some variables."""

    def __init__(self, opt, variables=()):
        self.opt, self.variables = opt, list(variables)
        self.before = optimizer_arrays(opt, self.variables)

    def assert_unchanged(self):
        assert_identical(
            optimizer_arrays(self.opt, self.variables), self.before, "optimizer or variable array"
        )


@pytest.fixture
def snapshot():
    """`snapshot(opt, variables)` -> Snapshot; call `.assert_unchanged()` after the bad call."""
    return Snapshot


@pytest.fixture
def restore_threads():
    """Restore the native thread count after a test changes it."""
    import adagrad_native as an

    n = an.get_num_threads()
    yield n
    an.set_num_threads(n)
