"""The roofline probe reads and writes its arrays but leaves every value as it was.

The benchmarks run it on the very buffers the optimizers step, so a probe that
changed them would feed the optimizers garbage (and slow floating-point paths).
"""

import numpy as np
import pytest

from adagrad_native import _core

LAYOUTS = {  # (read-only arrays, read-write arrays)
    "step": (1, 2),
    "step_with_ema": (1, 3),
    "two_reads": (2, 2),
    "write_only": (0, 1),
    "four_writes": (1, 4),
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("size", [7, 70_001])
def test_probe_leaves_values_unchanged(layout, dtype, size):
    rng = np.random.default_rng(0)
    n_ro, n_rw = layout
    read_only = [rng.normal(size=size).astype(dtype) for _ in range(n_ro)]
    read_write = [rng.normal(size=size).astype(dtype) for _ in range(n_rw)]
    before = [a.tobytes() for a in read_only + read_write]
    _core.stream_probe(read_only, read_write)
    assert [a.tobytes() for a in read_only + read_write] == before
