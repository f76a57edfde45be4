"""How a model's elements are split over ranks: shards on the core's item boundaries.

The compiled core cuts every tensor into work items of `chunk` elements (the
last one shorter), with `chunk` derived from the sizes of all tensors only. A
norm is the sum of per-item partial sums folded in item order; so a rank that
owns whole items computes exactly the partial sums one process would, and the
folded norm is the same bits. The cuts between ranks are therefore item
boundaries (for a row-wise tensor also row boundaries, so a row's accumulator
lives on one rank), chosen from the global sizes so that only which rank owns
an item, never the items themselves, depends on the number of ranks.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Piece(NamedTuple):
    """Elements [begin, end) of tensor `tensor` (flat, C order)."""

    tensor: int
    begin: int
    end: int

    @property
    def size(self) -> int:
        """The number of elements."""
        return self.end - self.begin


class ShardLayout:
    """The split of the flat concatenation of all tensors into one range per rank.

    Args:
        sizes: The element count of each tensor, in build order.
        row_lengths: For each tensor, the elements per row when its rows must
            stay on one rank (row-wise accumulators), else 0.
        chunk: The core's work-item size for these tensors.
        n_ranks: The number of ranks.
    """

    def __init__(self, sizes: list[int], row_lengths: list[int], chunk: int, n_ranks: int) -> None:
        self.sizes = list(sizes)
        self.chunk = chunk
        self.n_ranks = n_ranks
        self.offsets = [0]
        for size in sizes:
            self.offsets.append(self.offsets[-1] + size)
        total = self.offsets[-1]
        cuts = _cut_points(sizes, row_lengths, chunk)
        # Rank r starts at the first cut at or after r/N of the elements.
        self.starts = [0]
        for r in range(1, n_ranks):
            target = -(-total * r // n_ranks)
            self.starts.append(next(c for c in cuts if c >= max(target, self.starts[-1])))
        self.starts.append(total)

    def pieces(self, rank: int) -> list[Piece]:
        """Rank `rank`'s part of every tensor, in tensor order (empty where it has none)."""
        lo, hi = self.starts[rank], self.starts[rank + 1]
        out = []
        for t, size in enumerate(self.sizes):
            begin = min(max(lo - self.offsets[t], 0), size)
            end = min(max(hi - self.offsets[t], 0), size)
            out.append(Piece(t, begin, max(begin, end)))
        return out


def _cut_points(sizes: list[int], row_lengths: list[int], chunk: int) -> list[int]:
    """Flat offsets where a shard may start: item boundaries (and row boundaries), ascending."""
    cuts: list[int] = []
    offset = 0
    for size, row_length in zip(sizes, row_lengths):
        step = chunk if row_length <= 0 else math.lcm(chunk, row_length)
        cuts.extend(range(offset, offset + size, step))
        offset += size
    cuts.append(offset)
    return cuts
