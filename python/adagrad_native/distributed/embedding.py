"""An embedding table whose rows, and their optimizer state, are split over MPI ranks."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from adagrad_native import _checks
from adagrad_native._dtypes import resolve_dtype
from adagrad_native._state import state_entries
from adagrad_native.adagrad import Adagrad
from adagrad_native.distributed._coordinator import (
    DEFAULT_TIMEOUT,
    Coordinator,
    Fingerprint,
    check_timeout,
    raise_agreed,
    settings_of,
)
from adagrad_native.distributed._mpi import vector, world
from adagrad_native.distributed._places import Place
from adagrad_native.distributed._sharded_step import checksum
from adagrad_native.rowwise import RowWiseAdagrad
from adagrad_native.sparse import SparseGradient
from adagrad_native.variables import Variable

_OPTIMIZERS: dict[str, type[Adagrad]] = {"adagrad": Adagrad, "rowwise": RowWiseAdagrad}
_NOT_LOCAL = ("clipnorm", "global_clipnorm")


class ShardedEmbedding:
    """A `rows x dim` table, rank r owning rows `[starts[r], starts[r + 1])` and their state.

    The constructor, `lookup` and `apply` are collectives: every rank calls them,
    `lookup` and `apply` with its own batch of row ids. A step equals, bit for
    bit, one process applying a `SparseGradient` of all ranks' ids and row
    gradients concatenated in rank order to the whole table: each row gradient
    travels to the row's owner, which receives them in (sender rank, sender
    order) -- the order of that concatenation -- and runs the sparse step on its
    rows. Every call fails together (an error on any rank is the same exception
    on every rank, and nothing changes), and every rank must pass the same
    settings; a rank that does not arrive ends the job after `timeout` seconds.

    Args:
        rows: The number of rows.
        dim: The width of a row.
        comm: An mpi4py communicator; default `MPI.COMM_WORLD`.
        optimizer: "adagrad" (`Adagrad`) or "rowwise" (`RowWiseAdagrad`).
        dtype: The table's dtype.
        initial_value: None (zeros), a number, or the whole `(rows, dim)`
            table (the same on every rank; each keeps its rows).
        name: The table variable's name.
        timeout: Seconds a rank waits for the others in any call, or None.
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
        timeout: float | None = DEFAULT_TIMEOUT,
        **optimizer_kwargs: Any,
    ) -> None:
        self.comm = world() if comm is None else comm
        self.coordinator = Coordinator(
            self.comm, check_timeout(timeout), f"ShardedEmbedding '{name}'"
        )
        self.coordinator.collective(
            "ShardedEmbedding",
            lambda: self._make(rows, dim, optimizer, dtype, initial_value, name, optimizer_kwargs),
        )

    def _make(
        self,
        rows: int,
        dim: int,
        optimizer: str,
        dtype: Any,
        initial_value: Any,
        name: str,
        optimizer_kwargs: dict[str, Any],
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
        size, rank = self.coordinator.size, self.coordinator.rank
        self.starts = [r * self.rows // size for r in range(size + 1)]
        lo, hi = self.starts[rank], self.starts[rank + 1]
        np_dtype = resolve_dtype(dtype)
        if initial_value is None or np.ndim(initial_value) == 0:
            fill = 0.0 if initial_value is None else _checks.real(initial_value, "initial_value")
            local = np.full((hi - lo, self.dim), fill, np_dtype)
            initial = repr(fill)
        else:
            full = np.asarray(initial_value)
            if full.shape != (self.rows, self.dim):
                raise ValueError(
                    f"Argument `initial_value` must be a number or the whole table of shape "
                    f"{(self.rows, self.dim)}. Received: an array of shape {full.shape}."
                )
            local = np.array(full[lo:hi], np_dtype)
            initial = checksum(np.asarray(full, np_dtype))
        self.table = Variable(local, name=name)
        self.optimizer = _OPTIMIZERS[optimizer](**optimizer_kwargs)
        self.optimizer.build([self.table])
        self.coordinator.agree(
            Fingerprint(
                "the table at construction",
                {
                    "rows": self.rows,
                    "dim": self.dim,
                    "dtype": np_dtype.name,
                    "optimizer": optimizer,
                    "config": settings_of(self.optimizer),
                    "initial value": initial,
                },
            )
        )

    # ------------------------------------------------------------- checkpoints
    def state_lock(self) -> AbstractContextManager[None]:
        """The lock of the table's optimizer (it guards the rows too)."""
        return self.optimizer.state_lock()

    @property
    def name(self) -> str:
        """The table variable's name."""
        return self.table.name

    def checkpoint_places(self) -> dict[str, Place]:
        """Where this rank's rows and their state sit in the whole table's state."""
        lo, hi = self.starts[self.coordinator.rank], self.starts[self.coordinator.rank + 1]
        whole = (self.rows, self.dim)
        places = {self.name: Place(whole, lo * self.dim, hi * self.dim, self.table, "parameter")}
        for key, variable in state_entries(self.optimizer.variables).items():
            if variable.ndim == 0:  # iteration, learning_rate: the same on every rank
                places[key] = Place((), 0, 1, variable, "replicated")
            elif variable.ndim == 1:  # a row-wise accumulator: one value a row
                places[key] = Place((self.rows,), lo, hi, variable)
            else:
                places[key] = Place(whole, lo * self.dim, hi * self.dim, variable)
        return places

    def checkpoint_config(self) -> dict[str, Any] | None:
        """The config of the table's optimizer (a one-process optimizer of the table loads it)."""
        try:
            config: dict[str, Any] = self.optimizer.get_config()
        except TypeError:  # a plain callable learning rate
            return None
        return config

    # ------------------------------------------------------------------ routing
    def _route(self, ids: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checks a batch of ids; sorts it by owner, keeping its order.

        Returns:
            The ids as int64, the stable order that groups them by owner, and the
            number of ids for each owner.

        Raises:
            ValueError: For ids that are not a 1-D integer array in [0, rows).
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(
                f"Row ids must be a 1-D integer array; received shape {ids.shape} and "
                f"dtype {ids.dtype}."
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.rows):
            bad = int(ids[(ids < 0) | (ids >= self.rows)][0])
            raise ValueError(f"Row ids must be in [0, {self.rows}); received {bad}.")
        ids = ids.astype(np.int64)
        owners = np.searchsorted(self.starts, ids, side="right") - 1
        order = np.argsort(owners, kind="stable")
        counts = np.bincount(owners, minlength=self.coordinator.size).astype(np.int64)
        return ids, order, counts

    def _exchange(self, send: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All-to-all of rows (`counts[r]` rows for rank r); what arrived and from whom."""
        comm = self.coordinator.private()
        received_counts = np.empty_like(counts)
        self.coordinator.wait([comm.Ialltoall(counts, received_counts)], "the row counts")
        received = np.empty((int(received_counts.sum()), *send.shape[1:]), send.dtype)
        width = int(np.prod(send.shape[1:], dtype=np.int64))
        request = comm.Ialltoallv(
            vector(send, counts * width, _displacements(counts) * width),
            vector(received, received_counts * width, _displacements(received_counts) * width),
        )
        self.coordinator.wait([request], "the exchange of rows")
        return received, received_counts

    def _settings(self) -> Fingerprint:
        """What every rank must have equal at a call: the optimizer's settings and iteration."""
        return Fingerprint(
            "the table's settings",
            {"config": settings_of(self.optimizer), "iterations": int(self.optimizer.iterations)},
        )

    def lookup(self, ids: Any) -> np.ndarray:
        """The rows of `ids` (a collective), as a new `(len(ids), dim)` array."""
        return self.coordinator.collective("lookup", lambda: self._lookup(ids))

    def _lookup(self, ids: Any) -> np.ndarray:
        ids, order, counts = self._route(ids)
        self.coordinator.agree()
        asked, asked_counts = self._exchange(ids[order], counts)
        rows = self.table.value[asked - self.starts[self.coordinator.rank]]
        answer, _ = self._exchange(rows, asked_counts)
        out = np.empty((ids.size, self.dim), self.table.value.dtype)
        out[order] = answer
        return out

    def apply(self, ids: Any, row_gradients: Any) -> None:
        """One optimizer step with this rank's row gradients (a collective).

        Args:
            ids: This rank's row ids (may repeat, also across ranks).
            row_gradients: One gradient row per id, of the table's dtype.
        """
        self.coordinator.collective("apply", lambda: self._apply(ids, row_gradients))

    def _apply(self, ids: Any, row_gradients: Any) -> None:
        grads = np.asarray(row_gradients)
        ids, order, counts = self._route(ids)
        dtype = self.table.value.dtype
        if grads.shape != (ids.size, self.dim) or grads.dtype != dtype:
            raise ValueError(
                f"Row gradients must have shape {(ids.size, self.dim)} and dtype "
                f"{dtype}; received shape {grads.shape} and dtype {grads.dtype}."
            )
        self.coordinator.agree(self._settings())
        got_ids, _ = self._exchange(ids[order], counts)
        got_rows, _ = self._exchange(np.ascontiguousarray(grads[order]), counts)
        local = got_ids - self.starts[self.coordinator.rank]
        gradient = SparseGradient(local, got_rows, self.table.shape)
        policy = self.optimizer.on_nonfinite
        if policy != "propagate":
            # The owner's rows, summed as the step sums them: every rank decides alike.
            finite = self.optimizer.first_nonfinite([gradient], [self.table]) < 0
            if not self.coordinator.all_true(finite):
                if policy == "raise":
                    raise_agreed(
                        ValueError(
                            f"The gradient of table '{self.name}' contains inf or NaN (after "
                            "adding the rows of repeated ids); nothing was updated on any "
                            "rank (on_nonfinite='raise')."
                        )
                    )
                return
        self.optimizer.apply([gradient], [self.table])


def _displacements(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
