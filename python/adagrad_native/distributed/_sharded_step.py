"""The step engine of a sharded optimizer: a native step over this rank's shard, in collectives.

`ShardedStep` is the `StepEngine` (`_surface.py`) that a sharded optimizer plugs
in instead of the one-process `NativeStep`. At build it cuts every variable into
one piece per rank (`_layout.py`) and steps only this rank's pieces through a
`NativeStep` of its own; each step reduce-scatters the ranks' gradients, lets
the core fold every rank's per-item partial sums exactly as one process folds
its own (norms, finiteness), runs the shard's fused step and all-gathers the
updated parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adagrad_native._dtypes import FLOAT_DTYPE_NAMES
from adagrad_native._native import NativeStep, work_chunk
from adagrad_native._surface import CallPlan, Settle, Slots, StaticPlan
from adagrad_native.distributed._collectives import Exchange
from adagrad_native.distributed._layout import ShardLayout
from adagrad_native.distributed._mpi import agree
from adagrad_native.sparse import is_sparse_gradient
from adagrad_native.variables import Variable


def _gradient_problem(grad: Any, variable: Variable, index: int) -> str | None:
    """Why a dense gradient cannot be used for `variable`, or None."""
    what = f"The gradient for variable '{variable.path}' (index {index})"
    if is_sparse_gradient(grad):
        return (
            f"{what} is a sparse gradient; ShardedAdagrad takes dense gradients (use "
            "adagrad_native.distributed.ShardedEmbedding for embedding tables)."
        )
    array = np.asarray(grad)
    if array.dtype.name not in FLOAT_DTYPE_NAMES:  # another float dtype is cast, as Keras
        return f"{what} has dtype {array.dtype.name}; expected one of {FLOAT_DTYPE_NAMES}."
    if array.shape != variable.shape:
        return f"{what} has shape {array.shape}, but the variable has shape {variable.shape}."
    return None


def _shard(variable: Variable, begin: int, end: int, rowwise: bool) -> Variable:
    """A Variable over elements [begin, end) of `variable`'s buffer (shared memory).

    It keeps the variable's name and path, so its slots are named as one
    process names them; a row-wise piece keeps its rows (whole rows).
    """
    flat = variable.value.reshape(-1)[begin:end]
    view = flat
    if rowwise:
        row_length = int(np.prod(variable.shape[1:]))
        rows = (end - begin) // row_length if row_length else 0
        view = flat.reshape((rows, *variable.shape[1:]))
    shard = Variable._owned(view, variable.name, variable.path, trainable=True)
    shard.overwrite_with_gradient = variable.overwrite_with_gradient
    return shard


class ShardedStep:
    """Steps this rank's shard of every variable; every call is a collective.

    Args:
        comm: The mpi4py communicator.
        reduction: "sum" or "ordered" (see `Exchange`).
        average: Apply the mean of the ranks' gradients instead of their sum.
    """

    def __init__(self, comm: Any, reduction: str, average: bool) -> None:
        self.comm = comm
        self.reduction = reduction
        self.average = average
        self.layout: ShardLayout | None = None
        self._variables: list[Variable] = []
        self._rowwise: list[bool] = []
        self._exchange: Exchange | None = None
        self._local = NativeStep()
        self._static: StaticPlan | None = None

    # ------------------------------------------------------------------ binding
    def place(self, variables: list[Variable], rowwise: list[bool]) -> list[Variable]:
        """Cuts the variables on the core's item (and row) bounds; returns this rank's pieces."""
        sizes = [v.size for v in variables]
        rows = [int(np.prod(v.shape[1:])) if r else 0 for v, r in zip(variables, rowwise)]
        chunk = work_chunk(sizes)
        layout = ShardLayout(sizes, rows, chunk, self.comm.Get_size())
        pieces = layout.pieces(self.comm.Get_rank())
        self.layout = layout
        self._variables = variables
        self._rowwise = rowwise
        self._exchange = Exchange(
            self.comm, layout, [v.value.dtype for v in variables], self.reduction, self.average
        )
        # The shard's items are the whole tensors' items this rank owns, so its
        # partial sums are exactly those one process computes for them.
        self._local = NativeStep(chunk=chunk, whole_sizes=sizes)
        if self._static is not None:
            self._local.configure(self._static)
        return [_shard(v, p.begin, p.end, r) for v, p, r in zip(variables, pieces, rowwise)]

    def bind(self, slots: Slots) -> None:
        """Agrees with every rank on the variables and settings, then binds the shard.

        Raises:
            ValueError: On every rank, when the ranks' variables or settings differ.
        """
        agree(
            self.comm,
            {
                "variables": [
                    (v.shape, v.dtype, v.overwrite_with_gradient, r, wd)
                    for v, r, wd in zip(self._variables, self._rowwise, slots.weight_decay)
                ],
                "settings": self._static,
                "reduction": (self.reduction, self.average),
            },
            "the variables and optimizer settings at build",
        )
        self._local.bind(slots)

    def settings_changed(self) -> None:
        """A hyperparameter changed: the shard's plan is configured again."""
        self._static = None
        self._local.settings_changed()

    @property
    def needs_configuration(self) -> bool:
        """Whether `configure` must run before the next step."""
        return self._local.needs_configuration

    def configure(self, static: StaticPlan) -> None:
        """Takes the hyperparameter-derived plan fields."""
        self._static = static
        self._local.configure(static)

    # ------------------------------------------------------------------- steps
    def try_fast(self, grads: Any, variables: Any) -> int | None:
        """Never: a sharded step's collectives run in Python."""
        return None

    def keep_fast(
        self, variables: Sequence[Any], iterations: np.ndarray, learning_rate: np.ndarray
    ) -> None:
        """Never: a sharded step's collectives run in Python."""

    def keeps(self, variables: Sequence[Any] | None) -> bool:
        """A sharded step keeps no fast step."""
        return False

    def run(self, grads: Sequence[Any], call: CallPlan, settle: Sequence[Settle]) -> int:
        """A collective step: reduce-scatter, (partial sums), the shard's step, all-gather.

        Args:
            grads: This rank's full gradients, by build index (None: none).
            call: What this call does.
            settle: As for `NativeStep.run`.

        Returns:
            As `NativeStep.run`; every rank returns the same.
        """
        exchange = self._exchange
        assert exchange is not None, "place() must run before run()"
        dense = self._checked(grads)
        shapes = [p.shape for p in self._local.bound_slots.params]  # row-wise pieces keep rows
        reduced = [
            None if g is None else g.reshape(shape)
            for g, shape in zip(exchange.reduce_scatter(dense), shapes)
        ]
        local = self._local
        local.prepare(call)
        static = local.static
        partials = None
        if call.check_finite or (call.update and static.clip in ("norm", "global_norm")):
            sums, finite = local.partial_sums(reduced)
            everything = self.comm.allgather((sums, finite))
            partials = (
                np.concatenate([s for s, _ in everything]),
                np.concatenate([f for _, f in everything]),
            )
        bad = local.step(reduced, partials, settle)
        if bad < 0:
            exchange.all_gather([v.value for v in self._variables])
        return bad

    def _checked(self, grads: Sequence[Any]) -> list[np.ndarray | None]:
        """The gradients as C-contiguous arrays, after every rank agreed they are usable."""
        problem = None
        for i, (g, v) in enumerate(zip(grads, self._variables)):
            if g is not None:
                problem = _gradient_problem(g, v, i)
                if problem:
                    break
        mask = [g is None for g in grads]
        everything = self.comm.allgather((mask, problem))
        for rank, (_, other) in enumerate(everything):
            if other is not None:
                raise ValueError(f"Rank {rank}: {other} Nothing was updated on any rank.")
        agree(self.comm, mask, "which gradients are None in this step")
        return [
            None if g is None else np.ascontiguousarray(g, dtype=v.value.dtype)
            for g, v in zip(grads, self._variables)
        ]

    def update_one(self, index: int, gradient: Any, learning_rate: float, epsilon: float) -> None:
        """Not available: a single-variable update would bypass the collectives."""
        raise NotImplementedError(
            "A sharded optimizer does not support update_step; use apply (a collective)."
        )

    def publish(self) -> None:
        """Every rank's pieces were assigned: all-gathers them into every rank's variables."""
        assert self._exchange is not None, "place() must run before publish()"
        self._exchange.all_gather([v.value for v in self._variables])
