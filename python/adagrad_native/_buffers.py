"""Where the package's own large buffers (variables, optimizer slots) are placed in memory.

A step streams the parameter, gradient and optimizer buffers side by side, and on the
development VM its speed depends on where they sit relative to one another. numpy gives an
array of a power-of-two size a mapping of exactly that size plus a page, so arrays
allocated one after the other sit a near power-of-two distance apart. Against a user's
plain numpy parameter and gradient, a 16M-element float32 step with the accumulator placed
as below ran 1.01-1.19x faster (median 1.07, six fresh processes) than with an
`np.full_like` accumulator (`benchmarks/studies/placement.py`).

So buffers of at least `LARGE_BYTES` start on a 2 MiB boundary inside a mapping 2 MiB
larger than they need. That breaks the power-of-two spacing, and lets every page of the
buffer be a transparent huge page, since numpy asks the kernel for huge pages on
allocations this large. The padding is never written: it costs address space, not memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

HUGE_PAGE = 2 << 20
# numpy requests transparent huge pages for allocations from 4 MiB up; smaller
# buffers come from the heap, where placement is not a concern.
LARGE_BYTES = 4 << 20


def empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialized C-contiguous, writeable array; large ones start on a 2 MiB boundary.

    Args:
        shape: The array's shape.
        dtype: A numpy dtype (including ml_dtypes' bfloat16).

    Returns:
        The array. A large one is a view into a slightly larger byte buffer, which it keeps
        alive through `.base`.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < LARGE_BYTES:
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + HUGE_PAGE, np.uint8)
    start = -raw.ctypes.data % HUGE_PAGE
    placed: np.ndarray = raw[start : start + nbytes].view(dtype).reshape(shape)
    return placed
