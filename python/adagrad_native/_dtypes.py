"""Floating dtypes the core supports, and checks of arrays it updates in place."""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT_DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")


def bfloat16() -> np.dtype:
    """The bfloat16 dtype of `ml_dtypes` (an optional dependency, imported lazily)."""
    try:
        import ml_dtypes
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "bfloat16 needs the optional dependency ml_dtypes: pip install ml_dtypes"
        ) from err
    dtype: np.dtype = np.dtype(ml_dtypes.bfloat16)
    return dtype


def largest(dtype: Any) -> float:
    """The largest finite value of a floating dtype (bfloat16 included)."""
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        import ml_dtypes

        return float(ml_dtypes.finfo(dtype).max)  # type: ignore[no-untyped-call]
    return float(np.finfo(dtype).max)


def resolve_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype for `dtype`; the name "bfloat16" resolves through ml_dtypes."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        return bfloat16()
    try:
        resolved: np.dtype = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(
            f"Argument `dtype` is not a numpy dtype. Received: dtype={dtype!r}"
        ) from err
    return resolved


def check_updatable(array: np.ndarray, what: str) -> None:
    """Raises unless the core can update `array` in place, without a copy.

    A copy would silently swallow the update, so arrays that would need one
    (non-contiguous, read-only, unaligned, byte-swapped) are refused.
    """
    if array.dtype.name not in FLOAT_DTYPE_NAMES:
        raise TypeError(
            f"{what} has dtype {array.dtype.name}; expected one of {FLOAT_DTYPE_NAMES}."
        )
    problems = [
        (not array.flags.c_contiguous, "is not C-contiguous"),
        (not array.flags.writeable, "is read-only"),
        (not array.flags.aligned, "is not aligned"),
        (not array.dtype.isnative, f"is not in native byte order (dtype {array.dtype.str})"),
    ]
    for bad, problem in problems:
        if bad:
            raise ValueError(
                f"{what} {problem}; the optimizer updates parameters in place, so pass a "
                "C-contiguous, writeable, aligned, native-byte-order array "
                "(e.g. np.ascontiguousarray(x))."
            )
