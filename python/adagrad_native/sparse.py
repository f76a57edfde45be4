"""Row-sparse gradients for embedding tables: `SparseGradient`."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_sparse_gradient(grad: Any) -> bool:
    """A `SparseGradient` or an `IndexedSlices` look-alike: `indices`, `values` and `dense_shape`.

    (A torch tensor has `indices` and `values` methods, and is dense.) The core
    applies the same rule to the gradients it is given.
    """
    return all(hasattr(grad, a) for a in ("indices", "values", "dense_shape"))


class SparseGradient:
    """A row-sparse gradient: rows `values[i]` of the dense gradient at row `indices[i]`.

    Accepted by `apply`, `apply_gradients`, `stateless_apply` and
    `LossScaleOptimizer.apply` wherever a dense gradient is, mixed freely with
    dense gradients (the whole step is still one native call). Objects with
    `indices`, `values` and `dense_shape` attributes (such as
    `tf.IndexedSlices`) are accepted the same way, without this class.

    Semantics are those of the dense gradient `np.add.at(zeros, indices,
    values)`: repeated row ids are summed first, in index order, in the
    variable's dtype (Keras 3 instead adds g1**2 + g2**2 into the accumulator;
    Keras 2 and PyTorch sum first). Unless a feature needs every row (see
    `Adagrad`'s `sparse_updates`), a step only does work on the distinct rows:
    with a zero gradient Adagrad leaves a row's accumulator and value exactly
    unchanged. (The one corner where that differs from the dense gradient:
    `initial_accumulator_value=0` with `epsilon=0`, where a dense zero
    gradient computes 0/0 = NaN in untouched rows; the sparse step leaves them
    unchanged.)

    Args:
        indices: A 1-D int32 or int64 array of row ids into the variable's
            first axis; each in `[0, variable.shape[0])`. May repeat.
        values: An array of shape `(len(indices),) + variable.shape[1:]`
            and the variable's dtype.
        dense_shape: The variable's shape, or None (then not checked).

    Raises:
        TypeError: When `indices` are not integers.
        ValueError: When `indices` are not 1-D or `values` does not have one
            row per index. Checks against the variable (range, shape, dtype)
            happen when the gradient is applied, before anything is written.
    """

    __slots__ = ("indices", "values", "dense_shape")
    indices: np.ndarray
    values: np.ndarray
    dense_shape: tuple[int, ...] | None

    def __init__(self, indices: Any, values: Any, dense_shape: Any = None) -> None:
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(
                f"SparseGradient indices must be int32 or int64 row ids; received dtype "
                f"{indices.dtype}."
            )
        if indices.ndim != 1:
            raise ValueError(
                f"SparseGradient indices must be a 1-D array of row ids; received shape "
                f"{indices.shape}."
            )
        values = np.asarray(values)
        if values.ndim < 1 or values.shape[0] != indices.shape[0]:
            raise ValueError(
                f"SparseGradient values must have one row per index: {indices.shape[0]} "
                f"indices, values of shape {values.shape}."
            )
        if dense_shape is not None:
            dims = np.asarray(dense_shape).reshape(-1).tolist()
            if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
                raise TypeError(
                    "SparseGradient dense_shape must hold integer dimensions; received "
                    f"dense_shape={dense_shape!r}."
                )
            dense_shape = tuple(dims)
            if any(not 0 <= d < 2**63 for d in dense_shape):
                raise ValueError(
                    "SparseGradient dense_shape must hold dimensions in [0, 2**63); received "
                    f"dense_shape={dense_shape}."
                )
            if dense_shape[1:] != values.shape[1:]:
                raise ValueError(
                    f"SparseGradient values of shape {values.shape} do not fit dense_shape "
                    f"{dense_shape}: expected (len(indices),) + dense_shape[1:]."
                )
        self.indices = indices
        self.values = values
        self.dense_shape = dense_shape

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The dense shape (None when not given)."""
        return self.dense_shape

    def to_dense(self, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The equivalent dense gradient (duplicates summed in index order).

        Args:
            shape: The dense shape; defaults to `dense_shape`.

        Returns:
            A new array of the values' dtype.
        """
        shape = shape if shape is not None else self.dense_shape
        if shape is None:
            raise ValueError("to_dense() needs a shape: pass one or set dense_shape.")
        dense = np.zeros(shape, self.values.dtype)
        np.add.at(dense, self.indices, self.values)
        return dense

    def __repr__(self) -> str:
        return (
            f"SparseGradient(indices=<{self.indices.shape[0]} ids>, values=<shape "
            f"{self.values.shape}, {self.values.dtype}>, dense_shape={self.dense_shape})"
        )
