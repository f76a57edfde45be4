"""Plain-numpy oracle of Keras 3's Adagrad that the native optimizer is checked against.

`dense` models the dense pipeline; `sparse` adds row-sparse gradients, the lazy
sparse mode and row-wise Adagrad on top of it.
"""

from tests.oracle.dense import ReferenceAdagrad, compute_dtype
from tests.oracle.sparse import (
    LazyReferenceAdagrad,
    RowWiseReferenceAdagrad,
    dense_equivalent,
    rowwise_mean,
)

__all__ = [
    "LazyReferenceAdagrad",
    "ReferenceAdagrad",
    "RowWiseReferenceAdagrad",
    "compute_dtype",
    "dense_equivalent",
    "rowwise_mean",
]
