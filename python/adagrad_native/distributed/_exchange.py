"""Moving a bucket between ranks: gradients reduced to their owner, parameters gathered back.

The ordered reduction and the gather send every piece straight from the arrays
it lives in and receive straight into where it goes (non-blocking point-to-point
messages, one per piece and rank): no packing, no unpacking, and a rank's own
part of its slice is read where it is. Only MPI's own sum (`reduction="sum"`)
packs the bucket, because a reduce-scatter takes one buffer. Every wait has the
coordinator's deadline. Buffers are made once, at the size of the largest
bucket, and touched then, so no step pays for first use.

A reduction is started (its messages posted) and finished (waited for, added)
apart, so a step can post the next bucket's messages before it updates this
one; a gather is only started, and the step waits for all of them at its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from adagrad_native.distributed._buckets import Bucket
from adagrad_native.distributed._coordinator import Coordinator
from adagrad_native.distributed._mpi import as_bytes, mpi

REDUCTIONS = ("ordered", "sum")
_MPI_SUMMABLE = ("float32", "float64")  # MPI has no float16/bfloat16 sum that rounds as numpy
_GRADIENTS, _PARAMETERS = 21, 22  # message tags on the private communicator


def _piece(array: np.ndarray, begin: int, end: int) -> np.ndarray:
    return array.reshape(-1)[begin:end]


class Reduction(NamedTuple):
    """A bucket's reduction in flight (`Exchange.start_reduce`)."""

    bucket: int
    grads: Sequence[np.ndarray | None]
    requests: list[Any]  # its posted messages (none for MPI's sum: posted when finished)


class Exchange:
    """The buffers and messages of one sharded optimizer's buckets.

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
            mine = bucket.slices[self.rank].size
            if self._mpi_sum(bucket):
                self._buffer("send", bucket.dtype, bucket.offsets()[-1])
            else:
                self._buffer("received", bucket.dtype, self.size * mine)
            self._buffer("reduced", bucket.dtype, mine)

    def _buffer(self, role: str, dtype: np.dtype, size: int) -> np.ndarray:
        """A reused buffer of at least `size` elements (its first `size`)."""
        key = (role, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.size < size:
            buf = self._buffers[key] = np.zeros(size, dtype)
        return buf[:size]

    def _mpi_sum(self, bucket: Bucket) -> bool:
        return self.reduction == "sum" and bucket.dtype.name in _MPI_SUMMABLE and self.size > 1

    def scratch(self, dtype: np.dtype, size: int) -> np.ndarray:
        """A reused buffer for one bucket's slice of the summed gradient."""
        return self._buffer("reduced", dtype, size)

    def start_reduce(self, b: int, grads: Sequence[np.ndarray | None]) -> Reduction:
        """Posts bucket `b`'s gradient messages; `finish_reduce` completes them.

        Until then the received pieces land in this exchange's one receive
        buffer: one reduction is in flight at a time.

        Args:
            b: The bucket.
            grads: This rank's full gradient of each tensor (C-contiguous, the
                tensor's dtype); None where it has none, as on every rank.
        """
        bucket = self.buckets[b]
        if self._mpi_sum(bucket):
            return Reduction(b, grads, [])
        size = bucket.slices[self.rank].size
        received = self._buffer("received", bucket.dtype, self.size * size).reshape(self.size, -1)
        requests = []
        for peer in range(self.size):
            if peer == self.rank:
                continue
            for p in bucket.slices[peer].pieces:  # what the peer owns, from this rank
                g = grads[p.tensor]
                if g is not None and p.size:
                    requests.append(self._send(_piece(g, p.begin, p.end), peer, _GRADIENTS))
            at = 0
            for p in bucket.slices[self.rank].pieces:  # what this rank owns, from the peer
                if grads[p.tensor] is not None and p.size:
                    part = received[peer, at : at + p.size]
                    requests.append(self._receive(part, peer, _GRADIENTS))
                at += p.size
        return Reduction(b, grads, requests)

    def finish_reduce(self, reduction: Reduction, out: np.ndarray) -> None:
        """This rank's slice of the bucket's summed (or averaged) gradients, into `out`.

        Args:
            reduction: What `start_reduce` posted.
            out: This rank's slice, flat, of the bucket's dtype (elements of
                tensors without gradients are left as they are).
        """
        bucket = self.buckets[reduction.bucket]
        if self._mpi_sum(bucket):
            self._mpi_reduce(bucket, reduction.grads, out)
        else:
            self.coordinator.wait(reduction.requests, "the exchange of the gradients")
            self._add_in_rank_order(bucket, reduction.grads, out)
        if self.average:
            np.divide(out, bucket.dtype.type(self.size), out=out)

    def _add_in_rank_order(
        self, bucket: Bucket, grads: Sequence[np.ndarray | None], out: np.ndarray
    ) -> None:
        size = bucket.slices[self.rank].size
        received = self._buffer("received", bucket.dtype, self.size * size).reshape(self.size, -1)
        at = 0
        for p in bucket.slices[self.rank].pieces:  # the sum one process would take
            g = grads[p.tensor]
            if g is not None:
                parts = [
                    _piece(g, p.begin, p.end) if r == self.rank else received[r, at : at + p.size]
                    for r in range(self.size)
                ]
                target = out[at : at + p.size]
                if len(parts) == 1:  # one rank
                    np.copyto(target, parts[0])
                else:
                    np.add(parts[0], parts[1], out=target)
                    for part in parts[2:]:
                        np.add(target, part, out=target)
            at += p.size

    def _mpi_reduce(
        self, bucket: Bucket, grads: Sequence[np.ndarray | None], out: np.ndarray
    ) -> None:
        offsets = bucket.offsets()
        send = self._buffer("send", bucket.dtype, offsets[-1])
        at = 0
        for s in bucket.slices:
            for p in s.pieces:
                g = grads[p.tensor]
                send[at : at + p.size] = 0 if g is None else _piece(g, p.begin, p.end)
                at += p.size
        kind = mpi().FLOAT if bucket.dtype == np.float32 else mpi().DOUBLE
        sizes = [int(n) for n in np.diff(offsets)]
        request = self.comm.Ireduce_scatter([send, kind], [out, kind], sizes, op=mpi().SUM)
        self.coordinator.wait([request], "the reduce-scatter of the gradients")

    def start_gather(self, b: int, tensors: Sequence[np.ndarray]) -> list[Any]:
        """Posts the copies of bucket `b`'s slices into every rank's full tensors, in place.

        Returns:
            The posted requests, for the caller to wait for.
        """
        bucket = self.buckets[b]
        requests = []
        for peer in range(self.size):
            if peer == self.rank:
                continue
            for p in bucket.slices[self.rank].pieces:
                if p.size:
                    requests.append(
                        self._send(_piece(tensors[p.tensor], p.begin, p.end), peer, _PARAMETERS)
                    )
            for p in bucket.slices[peer].pieces:
                if p.size:
                    requests.append(
                        self._receive(_piece(tensors[p.tensor], p.begin, p.end), peer, _PARAMETERS)
                    )
        return requests

    def _send(self, data: np.ndarray, peer: int, tag: int) -> Any:
        return self.comm.Isend(as_bytes(data), dest=peer, tag=tag)

    def _receive(self, into: np.ndarray, peer: int, tag: int) -> Any:
        return self.comm.Irecv(as_bytes(into), source=peer, tag=tag)
