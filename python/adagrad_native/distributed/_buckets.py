"""How a sharded step moves its bytes in buckets: the k-th slice of every rank's shard at once.

Each rank's shard (`_layout.py`) is cut, per dtype, into slices of about
`bucket_bytes / N` bytes; bucket k is the k-th slice of every rank. A bucket's
exchange sends every rank its slice of the gradients and brings back every
rank's updated slice of the parameters, so the memory an exchange needs is one
bucket, whatever the model's size, and every rank has work in every bucket.

Slices are cut on the core's work-item boundaries (and row boundaries of row-wise
tensors), so the items of a slice are whole items of one process's work list: its
partial sums are exactly one process's, in an order `GlobalItems` knows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from adagrad_native.distributed._layout import Piece, ShardLayout


class Slice(NamedTuple):
    """Consecutive pieces of one rank's shard (one dtype), stepped and sent together."""

    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        """The number of elements."""
        return sum(p.size for p in self.pieces)


class Bucket(NamedTuple):
    """The k-th slice of every rank's shard, of one dtype."""

    dtype: np.dtype
    slices: tuple[Slice, ...]  # by rank

    def offsets(self) -> list[int]:
        """Where each rank's slice starts in the bucket's rank-ordered buffer (and its end)."""
        out = [0]
        for s in self.slices:
            out.append(out[-1] + s.size)
        return out


def plan_buckets(
    layout: ShardLayout,
    dtypes: Sequence[np.dtype],
    steps: Sequence[int],
    bucket_bytes: int,
) -> list[Bucket]:
    """Cuts every rank's shard into the buckets of a step.

    Args:
        layout: The split of the tensors over the ranks.
        dtypes: Each tensor's dtype, in build order.
        steps: Per tensor, the spacing of the positions where a slice may start
            (the work-item size, or its lcm with the row length for row-wise tensors).
        bucket_bytes: About how many bytes a bucket holds, over all ranks.

    Returns:
        The buckets, dtype by dtype (in order of first appearance), then in shard order.
    """
    n = layout.n_ranks
    buckets: list[Bucket] = []
    for dtype in dict.fromkeys(np.dtype(d) for d in dtypes):
        tensors = [t for t, d in enumerate(dtypes) if np.dtype(d) == dtype]
        target = max(bucket_bytes // (n * dtype.itemsize), 1)
        by_rank = []
        for rank in range(n):
            pieces = [p for p in layout.pieces(rank) if p.tensor in tensors and p.size]
            by_rank.append(_cut(pieces, steps, target))
        for k in range(max((len(s) for s in by_rank), default=0)):
            slices = tuple(s[k] if k < len(s) else Slice(()) for s in by_rank)
            buckets.append(Bucket(dtype, slices))
    return buckets


def _cut(pieces: list[Piece], steps: Sequence[int], target: int) -> list[Slice]:
    """A rank's pieces as slices of about `target` elements, cut where slices may start."""
    slices: list[Slice] = []
    current: list[Piece] = []
    filled = 0
    for piece in pieces:
        step = steps[piece.tensor]
        begin = piece.begin
        while begin < piece.end:
            want = target - filled
            # The first allowed position at or after begin + want, within the piece.
            end = min(piece.end, -(-(begin + want) // step) * step)
            current.append(Piece(piece.tensor, begin, end))
            filled += end - begin
            begin = end
            if filled >= target:
                slices.append(Slice(tuple(current)))
                current, filled = [], 0
    if current:
        slices.append(Slice(tuple(current)))
    return slices


class GlobalItems:
    """Where the work items of each rank's slices sit in one process's work list.

    Args:
        sizes: The element count of each tensor, in build order.
        chunk: The work-item size.
    """

    def __init__(self, sizes: Sequence[int], chunk: int) -> None:
        self.chunk = chunk
        counts = [math.ceil(size / chunk) for size in sizes]
        self.base = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.tensor_of = np.repeat(np.arange(len(sizes), dtype=np.int32), counts)

    def of(self, slices: Sequence[Slice]) -> np.ndarray:
        """The global index of every item of these slices, in their order."""
        parts = [
            self.base[p.tensor] + np.arange(p.begin // self.chunk, -(-p.end // self.chunk))
            for s in slices
            for p in s.pieces
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
