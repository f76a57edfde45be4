"""Moving a bucket between ranks: gradients reduced to their owner, parameters gathered back.

Every call is a non-blocking MPI collective on bytes, waited for with the
coordinator's deadline. Buffers are made once, at the size of the largest
bucket, and touched then, so no step pays for first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adagrad_native.distributed._buckets import Bucket
from adagrad_native.distributed._coordinator import Coordinator
from adagrad_native.distributed._mpi import mpi, vector

REDUCTIONS = ("ordered", "sum")
_MPI_SUMMABLE = ("float32", "float64")  # MPI has no float16/bfloat16 sum that rounds as numpy


def _flat(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1)


class Exchange:
    """The buffers and collectives of one sharded optimizer's buckets.

    Args:
        coordinator: The calls' agreements and deadlines (and the communicator).
        buckets: The buckets of a step (`plan_buckets`).
        reduction: "ordered" (the gradients of the ranks added in rank order: the
            same bits as one process adding them in that order, for any number
            of ranks) or "sum" (MPI's own sum, which may round differently for
            more than two ranks). 16-bit gradients are always added in rank order.
        average: Divide the summed gradient by the number of ranks.
    """

    def __init__(
        self, coordinator: Coordinator, buckets: Sequence[Bucket], reduction: str, average: bool
    ) -> None:
        self.coordinator = coordinator
        self.comm = coordinator.private()
        self.rank, self.size = coordinator.rank, coordinator.size
        self.buckets = list(buckets)
        self.reduction = reduction
        self.average = average
        self._buffers: dict[tuple[str, np.dtype], np.ndarray] = {}
        for bucket in self.buckets:  # made and touched now, at their largest
            total = bucket.offsets()[-1]
            mine = bucket.slices[self.rank].size
            self._buffer("send", bucket.dtype, total)
            self._buffer("received", bucket.dtype, self.size * mine)
            self._buffer("reduced", bucket.dtype, mine)

    def _buffer(self, role: str, dtype: np.dtype, size: int) -> np.ndarray:
        """A reused buffer of at least `size` elements (its first `size`)."""
        key = (role, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.size < size:
            buf = self._buffers[key] = np.zeros(size, dtype)
        return buf[:size]

    def scratch(self, dtype: np.dtype, size: int) -> np.ndarray:
        """A reused buffer for one bucket's slice of the summed gradient."""
        return self._buffer("reduced", dtype, size)

    def reduce(self, b: int, grads: Sequence[np.ndarray | None], out: np.ndarray) -> None:
        """This rank's slice of bucket `b`'s summed (or averaged) gradients, into `out`.

        Args:
            b: The bucket.
            grads: This rank's full gradient of each tensor (C-contiguous, the
                tensor's dtype); None where it has none, as on every rank (then
                its elements are zeros).
            out: This rank's slice, flat, of the bucket's dtype.
        """
        bucket = self.buckets[b]
        offsets = bucket.offsets()
        send = self._buffer("send", bucket.dtype, offsets[-1])
        at = 0
        for s in bucket.slices:
            for p in s.pieces:
                g = grads[p.tensor]
                if g is None:
                    send[at : at + p.size] = 0
                else:
                    send[at : at + p.size] = _flat(g)[p.begin : p.end]
                at += p.size
        sizes = np.diff(offsets)
        mine = int(sizes[self.rank])
        if self.reduction == "sum" and bucket.dtype.name in _MPI_SUMMABLE:
            kind = _mpi_type(bucket.dtype)
            request = self.comm.Ireduce_scatter(
                [send, kind], [out, kind], [int(s) for s in sizes], op=mpi().SUM
            )
            self.coordinator.wait([request], "the reduce-scatter of the gradients")
        else:
            received = self._buffer("received", bucket.dtype, self.size * mine)
            request = self.comm.Ialltoallv(
                vector(send, sizes, offsets[:-1]),
                vector(received, [mine] * self.size, [r * mine for r in range(self.size)]),
            )
            self.coordinator.wait([request], "the exchange of the gradients")
            parts = received.reshape(self.size, mine)
            np.copyto(out, parts[0])
            for r in range(1, self.size):  # in rank order: the sum one process would take
                np.add(out, parts[r], out=out)
        if self.average:
            np.divide(out, bucket.dtype.type(self.size), out=out)

    def gather(self, b: int, tensors: Sequence[np.ndarray]) -> None:
        """Copies every rank's slice of bucket `b` into every rank's full tensors, in place."""
        bucket = self.buckets[b]
        offsets = bucket.offsets()
        buf = self._buffer("send", bucket.dtype, offsets[-1])
        at = offsets[self.rank]
        for p in bucket.slices[self.rank].pieces:
            buf[at : at + p.size] = _flat(tensors[p.tensor])[p.begin : p.end]
            at += p.size
        sizes = np.diff(offsets)
        request = self.comm.Iallgatherv(
            mpi().IN_PLACE,
            vector(buf, sizes, offsets[:-1]),
        )
        self.coordinator.wait([request], "the all-gather of the parameters")
        for r, s in enumerate(bucket.slices):
            if r == self.rank:
                continue
            at = offsets[r]
            for p in s.pieces:
                _flat(tensors[p.tensor])[p.begin : p.end] = buf[at : at + p.size]
                at += p.size


def _mpi_type(dtype: np.dtype) -> Any:
    return mpi().FLOAT if dtype == np.float32 else mpi().DOUBLE
