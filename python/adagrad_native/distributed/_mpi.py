"""mpi4py, imported on first use, and the buffer specs the distributed layer passes to it."""

from __future__ import annotations

from typing import Any

import numpy as np

_INSTALL = "pip install mpi4py mpich"


def mpi() -> Any:
    """The `mpi4py.MPI` module.

    Raises:
        ImportError: Naming the extra to install, when mpi4py is missing.
    """
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ImportError(
            "adagrad_native.distributed needs mpi4py and an MPI library: "
            + _INSTALL
            + " (the package's `mpi` extra: mpi4py and the MPICH wheel)."
        ) from err
    return MPI


def world() -> Any:
    """`MPI.COMM_WORLD`."""
    return mpi().COMM_WORLD


def as_bytes(array: np.ndarray) -> np.ndarray:
    """A flat uint8 view of a C-contiguous array (any dtype, bfloat16 included)."""
    return array.reshape(-1).view(np.uint8)


def vector(array: np.ndarray, counts: Any, displacements: Any) -> list[Any]:
    """A v-collective's buffer as bytes: `counts` and `displacements` in elements of `array`."""
    item = array.dtype.itemsize
    return [
        as_bytes(array),
        ([int(c) * item for c in counts], [int(d) * item for d in displacements]),
        mpi().BYTE,
    ]
