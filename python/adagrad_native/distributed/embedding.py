"""An embedding table whose rows, and their optimizer state, are split over MPI ranks."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from adagrad_native import _checks
from adagrad_native._dtypes import resolve_dtype
from adagrad_native._state import state_key
from adagrad_native._surface import Place
from adagrad_native.adagrad import Adagrad
from adagrad_native.distributed._mpi import as_bytes, world
from adagrad_native.rowwise import RowWiseAdagrad
from adagrad_native.sparse import SparseGradient
from adagrad_native.variables import Variable

_OPTIMIZERS: dict[str, type[Adagrad]] = {"adagrad": Adagrad, "rowwise": RowWiseAdagrad}
_NOT_LOCAL = ("clipnorm", "global_clipnorm")


class ShardedEmbedding:
    """A `rows x dim` table, rank r owning rows `[starts[r], starts[r + 1])` and their state.

    `lookup` and `apply` are collectives: every rank calls them with its own
    batch of row ids. A step equals, bit for bit, one process applying a
    `SparseGradient` of all ranks' ids and row gradients concatenated in rank
    order to the whole table: each row gradient travels to the row's owner,
    which receives them in (sender rank, sender order) -- the order of that
    concatenation -- and runs the sparse step on its rows.

    Args:
        rows: The number of rows.
        dim: The width of a row.
        comm: An mpi4py communicator; default `MPI.COMM_WORLD`.
        optimizer: "adagrad" (`Adagrad`) or "rowwise" (`RowWiseAdagrad`).
        dtype: The table's dtype.
        initial_value: None (zeros), a number, or the whole `(rows, dim)`
            table (the same on every rank; each keeps its rows).
        name: The table variable's name.
        **optimizer_kwargs: Arguments of the optimizer. `clipnorm` and
            `global_clipnorm` are refused: the norm of a table split over
            ranks is not what one process would compute.
    """

    def __init__(
        self,
        rows: int,
        dim: int,
        *,
        comm: Any = None,
        optimizer: str = "adagrad",
        dtype: Any = "float32",
        initial_value: Any = None,
        name: str = "embedding",
        **optimizer_kwargs: Any,
    ) -> None:
        self.rows = _checks.integer(rows, "rows", minimum=1)
        self.dim = _checks.integer(dim, "dim", minimum=1)
        _checks.one_of(optimizer, "optimizer", tuple(_OPTIMIZERS))
        for arg in _NOT_LOCAL:
            if optimizer_kwargs.get(arg) is not None:
                raise ValueError(
                    f"Argument `{arg}` is not supported by ShardedEmbedding: the norm of a "
                    f"table split over ranks is not the norm one process would compute. "
                    f"Received: {arg}={optimizer_kwargs[arg]!r}"
                )
        self.comm = world() if comm is None else comm
        size, rank = self.comm.Get_size(), self.comm.Get_rank()
        self.starts = [r * self.rows // size for r in range(size + 1)]
        lo, hi = self.starts[rank], self.starts[rank + 1]
        np_dtype = resolve_dtype(dtype)
        if initial_value is None or np.ndim(initial_value) == 0:
            local = np.full((hi - lo, self.dim), initial_value or 0, np_dtype)
        else:
            full = np.asarray(initial_value)
            if full.shape != (self.rows, self.dim):
                raise ValueError(
                    f"Argument `initial_value` must be a number or the whole table of shape "
                    f"{(self.rows, self.dim)}. Received: an array of shape {full.shape}."
                )
            local = np.array(full[lo:hi], np_dtype)
        self.table = Variable(local, name=name)
        self.optimizer = _OPTIMIZERS[optimizer](**optimizer_kwargs)
        self.optimizer.build([self.table])

    def state_lock(self) -> AbstractContextManager[None]:
        """The lock of the table's optimizer (it guards the rows too)."""
        return self.optimizer.state_lock()

    @property
    def name(self) -> str:
        """The table variable's name."""
        return self.table.name

    def checkpoint_places(self) -> dict[str, Place]:
        """Where this rank's rows and their state sit in the whole table's state."""
        lo, hi = self.starts[self.comm.Get_rank()], self.starts[self.comm.Get_rank() + 1]
        whole = (self.rows, self.dim)
        places = {self.name: Place(whole, lo * self.dim, hi * self.dim, self.table)}
        for variable in self.optimizer.variables:
            if variable.ndim == 0:  # iteration, learning_rate: the same on every rank
                places[state_key(variable)] = Place((), 0, 1, variable)
            elif variable.ndim == 1:  # a row-wise accumulator: one value a row
                places[state_key(variable)] = Place((self.rows,), lo, hi, variable)
            else:
                places[state_key(variable)] = Place(whole, lo * self.dim, hi * self.dim, variable)
        return places

    def checkpoint_config(self) -> dict[str, Any] | None:
        """No config: a table is made by its constructor, not from a config."""
        return None

    # ------------------------------------------------------------------ routing
    def _route(self, ids: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checks a batch of ids on every rank; sorts it by owner, keeping its order.

        Returns:
            The ids as int64, the stable order that groups them by owner, and the
            number of ids for each owner.
        """
        ids = np.asarray(ids)
        problem = None
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            problem = (
                f"Row ids must be a 1-D integer array; received shape {ids.shape} and "
                f"dtype {ids.dtype}."
            )
        elif ids.size and (ids.min() < 0 or ids.max() >= self.rows):
            bad = int(ids[(ids < 0) | (ids >= self.rows)][0])
            problem = f"Row ids must be in [0, {self.rows}); received {bad}."
        problems = self.comm.allgather(problem)
        for rank, other in enumerate(problems):
            if other is not None:
                raise ValueError(f"Rank {rank}: {other} Nothing was changed on any rank.")
        ids = ids.astype(np.int64)
        owners = np.searchsorted(self.starts, ids, side="right") - 1
        order = np.argsort(owners, kind="stable")
        counts = np.bincount(owners, minlength=self.comm.Get_size())
        return ids, order, counts

    def _exchange(
        self, send: np.ndarray, counts: np.ndarray, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Alltoallv of rows of `width` items; returns what arrived and from whom (counts)."""
        recv_counts = np.empty_like(counts)
        self.comm.Alltoall(counts, recv_counts)
        item = send.dtype.itemsize * width
        received = np.empty((int(recv_counts.sum()), *send.shape[1:]), send.dtype)
        self.comm.Alltoallv(
            [as_bytes(send), counts * item], [as_bytes(received), recv_counts * item]
        )
        return received, recv_counts

    def lookup(self, ids: Any) -> np.ndarray:
        """The rows of `ids` (a collective), as a new `(len(ids), dim)` array."""
        ids, order, counts = self._route(ids)
        asked, asked_counts = self._exchange(ids[order], counts, 1)
        rows = self.table.value[asked - self.starts[self.comm.Get_rank()]]
        answer, _ = self._exchange(rows, asked_counts, self.dim)
        out = np.empty((ids.size, self.dim), self.table.value.dtype)
        out[order] = answer
        return out

    def apply(self, ids: Any, row_gradients: Any) -> None:
        """One optimizer step with this rank's row gradients (a collective).

        Args:
            ids: This rank's row ids (may repeat, also across ranks).
            row_gradients: One gradient row per id, of the table's dtype.
        """
        grads = np.asarray(row_gradients)
        ids, order, counts = self._route(ids)
        dtype = self.table.value.dtype
        if grads.shape != (ids.size, self.dim) or grads.dtype != dtype:
            problem = (
                f"Row gradients must have shape {(ids.size, self.dim)} and dtype "
                f"{dtype}; received shape {grads.shape} and dtype {grads.dtype}."
            )
        else:
            problem = None
        for rank, other in enumerate(self.comm.allgather(problem)):
            if other is not None:
                raise ValueError(f"Rank {rank}: {other} Nothing was changed on any rank.")
        got_ids, _ = self._exchange(ids[order], counts, 1)
        got_rows, _ = self._exchange(np.ascontiguousarray(grads[order]), counts, self.dim)
        local = got_ids - self.starts[self.comm.Get_rank()]
        gradient = SparseGradient(local, got_rows, self.table.shape)
        if self.optimizer.on_nonfinite != "propagate":
            finite = bool(np.isfinite(got_rows).all())
            if not all(self.comm.allgather(finite)):
                if self.optimizer.on_nonfinite == "raise":
                    raise ValueError(
                        "A row gradient contains inf or NaN; nothing was updated "
                        "on any rank (on_nonfinite='raise')."
                    )
                return
        self.optimizer.apply([gradient], [self.table])
