"""Moving shards between ranks: gradients reduce-scattered, parameters all-gathered.

Tensors are grouped by dtype; each group travels as one flat buffer of N equal
blocks (rank r's block holds its pieces of that group's tensors, in tensor
order, padded to the longest block), which is what MPI's fastest collectives
(`Reduce_scatter_block`, `Allgather`, `Alltoall`) take.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adagrad_native.distributed._layout import Piece, ShardLayout
from adagrad_native.distributed._mpi import as_bytes, mpi

REDUCTIONS = ("sum", "ordered")
_MPI_SUMMABLE = ("float32", "float64")  # MPI has no float16/bfloat16 sum that rounds as numpy


def _flat(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1)


class Exchange:
    """The buffers and calls of one optimizer's collectives.

    Args:
        comm: The communicator.
        layout: The split of the tensors over its ranks.
        dtypes: Each tensor's dtype, in build order.
        reduction: "sum" (MPI's sum: exact for 2 ranks, may round differently
            for more) or "ordered" (gradients summed in rank order: the same
            bits as one process adding them in that order, for any number of
            ranks). 16-bit gradients are always summed in rank order.
        average: Divide the summed gradient by the number of ranks.
    """

    def __init__(
        self,
        comm: Any,
        layout: ShardLayout,
        dtypes: Sequence[np.dtype],
        reduction: str,
        average: bool,
    ) -> None:
        self.comm = comm
        self.layout = layout
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.reduction = reduction
        self.average = average
        self.pieces = [layout.pieces(r) for r in range(self.size)]
        self.groups: dict[np.dtype, list[int]] = {}
        for t, dtype in enumerate(dtypes):
            self.groups.setdefault(np.dtype(dtype), []).append(t)
        # Buffers reused by every step: fresh ones would be paged in on every step.
        self._buffers: dict[tuple[str, np.dtype], np.ndarray] = {}

    def _buffer(self, role: str, dtype: np.dtype, size: int) -> np.ndarray:
        """A reused buffer of `size` elements (contents undefined: padding is never read)."""
        buf = self._buffers.get((role, dtype))
        if buf is None or buf.size != size:
            buf = self._buffers[(role, dtype)] = np.empty(size, dtype)
        return buf

    def _block(self, tensors: Sequence[int]) -> int:
        """Elements of the longest block of these tensors' pieces over the ranks."""
        return max(sum(self.pieces[r][t].size for t in tensors) for r in range(self.size))

    def reduce_scatter(self, grads: Sequence[np.ndarray | None]) -> list[np.ndarray | None]:
        """Each rank's pieces of the summed (or averaged) gradients.

        Args:
            grads: This rank's full gradient of each tensor (C-contiguous, the
                tensor's dtype), or None where it has none (as on every rank).

        Returns:
            For each tensor, this rank's piece of the reduced gradient, flat
            (None where the gradient is None).
        """
        if self.size == 1:  # one rank owns everything: the gradients are the sums
            return [None if g is None else _flat(g) for g in grads]
        mine: list[np.ndarray | None] = [None] * len(grads)
        for dtype, tensors in self.groups.items():
            present = {t: _flat(g) for t in tensors if (g := grads[t]) is not None}
            if not present:
                continue
            block = self._block(list(present))
            send = self._buffer("send", dtype, self.size * block)
            for r in range(self.size):
                at = r * block
                for t, flat in present.items():
                    p = self.pieces[r][t]
                    send[at : at + p.size] = flat[p.begin : p.end]
                    at += p.size
            summed = self._reduce(send, block, dtype)
            at = 0
            for t in present:
                size = self.pieces[self.rank][t].size
                mine[t] = summed[at : at + size]
                at += size
        return mine

    def _reduce(self, send: np.ndarray, block: int, dtype: np.dtype) -> np.ndarray:
        out = self._buffer("reduced", dtype, block)
        if self.reduction == "sum" and dtype.name in _MPI_SUMMABLE:
            self.comm.Reduce_scatter_block(send, out, op=mpi().SUM)
        else:
            received = self._buffer("received", dtype, self.size * block)
            self.comm.Alltoall(as_bytes(send), as_bytes(received))
            parts = received.reshape(self.size, block)
            np.copyto(out, parts[0])
            for r in range(1, self.size):  # in rank order: the sum one process would take
                np.add(out, parts[r], out=out)
        if self.average:
            np.divide(out, dtype.type(self.size), out=out)
        return out

    def all_gather(self, tensors: Sequence[np.ndarray]) -> None:
        """Copies every rank's (updated) pieces into every rank's full tensors, in place."""
        if self.size == 1:
            return
        for dtype, group in self.groups.items():
            block = self._block(group)
            send = self._buffer("gather", dtype, block)
            at = 0
            for t in group:
                p = self.pieces[self.rank][t]
                send[at : at + p.size] = _flat(tensors[t])[p.begin : p.end]
                at += p.size
            received = self._buffer("gathered", dtype, self.size * block)
            self.comm.Allgather(as_bytes(send), as_bytes(received))
            for r in range(self.size):
                at = r * block
                for t in group:
                    p = self.pieces[r][t]
                    if r != self.rank:
                        _flat(tensors[t])[p.begin : p.end] = received[at : at + p.size]
                    at += p.size

    def items_by_rank(self, chunk: int) -> list[list[Piece]]:
        """Every rank's work items (in its order), from the layout alone."""
        return [
            [
                Piece(p.tensor, b, min(b + chunk, p.end))
                for p in pieces
                for b in range(p.begin, p.end, chunk)
            ]
            for pieces in self.pieces
        ]
