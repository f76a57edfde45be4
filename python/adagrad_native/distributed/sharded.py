"""Data-parallel Adagrad with the optimizer state sharded over MPI ranks.

Every rank holds the full parameters and computes its own gradients. `apply`
is a collective: the gradients are reduce-scattered so each rank receives the
sum (or mean) of its shard, the fused native step runs on that shard only --
accumulators, EMA averages and accumulation buffers exist only for it -- and
the updated parameters are all-gathered in place. Norms for `clipnorm` and
`global_clipnorm` are folded from every rank's per-item partial sums in the
order one process folds them, so the result is, bit for bit, that of one
process applying the summed gradient (see docs/distributed.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from adagrad_native import _checks
from adagrad_native._dtypes import FLOAT_DTYPE_NAMES
from adagrad_native._mappings import split_named
from adagrad_native._native import CallPlan, NativeStep, Settle, Slots, settle_skipped, work_chunk
from adagrad_native.adagrad import Adagrad
from adagrad_native.checkpoint import state_key
from adagrad_native.distributed._collectives import REDUCTIONS, Exchange, fold_norms
from adagrad_native.distributed._layout import ShardLayout
from adagrad_native.distributed._mpi import agree, world
from adagrad_native.distributed.checkpoint import Places
from adagrad_native.rowwise import RowWiseAdagrad
from adagrad_native.serialization import register_optimizer
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


class ShardedNativeStep(NativeStep):
    """A NativeStep over this rank's shard, wrapped in the collectives of a step."""

    def __init__(self, slots: Callable[[], Slots], comm: Any) -> None:
        super().__init__(slots)
        self._comm = comm
        self._exchange: Exchange | None = None
        self._variables: list[Variable] = []
        self._item_tensors: list[int] = []

    def distribute(self, exchange: Exchange, variables: list[Variable], chunk: int) -> None:
        """Connects the step to the full variables and their layout (before `bind`)."""
        self._exchange = exchange
        self._variables = variables
        self._chunk = chunk  # the items of one process, so partial sums match its own
        self._item_tensors = [
            item.tensor for items in exchange.items_by_rank(chunk) for item in items
        ]

    def keep_fast(
        self, variables: Sequence[Any], iterations: np.ndarray, learning_rate: np.ndarray
    ) -> None:
        """Never: a sharded step's collectives run in Python."""

    def run(self, grads: Sequence[Any], call: CallPlan, settle: Sequence[Settle] = ()) -> int:
        """A collective step: reduce-scatter, (norms), the shard's step, all-gather.

        Args:
            grads: This rank's full gradients, by build index (None: none).
            call: What this call does.
            settle: As for `NativeStep.run`.

        Returns:
            As `NativeStep.run`; every rank returns the same.
        """
        exchange = self._exchange
        assert exchange is not None, "distribute() must run before run()"
        dense = self._checked(grads)
        shapes = [p.shape for p in self.bound_slots.params]  # row-wise pieces keep rows
        reduced = [
            None if g is None else g.reshape(shape)
            for g, shape in zip(exchange.reduce_scatter(dense), shapes)
        ]
        self.prepare(call)
        static = self.static
        need_norms = call.update and static.clip in ("norm", "global_norm")
        norms: list[float] | None = None
        if need_norms or call.check_finite:
            partials, finite = self.partial_sums(reduced)
            everything = self._comm.allgather((partials, finite))
            all_partials = np.concatenate([p for p, _ in everything])
            all_finite = np.concatenate([f for _, f in everything])
            if call.check_finite and not all_finite.all():
                settle_skipped(settle)
                return self._item_tensors[int(np.argmin(all_finite))]
            counted = [
                g is not None and not v.overwrite_with_gradient
                for g, v in zip(dense, self._variables)
            ]
            norms = fold_norms(
                all_partials.tolist(),
                self._item_tensors,
                len(dense),
                counted,
                static.clip == "global_norm",
            )
        bad = self.step(reduced, norms, settle)
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
        everything = self._comm.allgather((mask, problem))
        for rank, (_, other) in enumerate(everything):
            if other is not None:
                raise ValueError(f"Rank {rank}: {other} Nothing was updated on any rank.")
        agree(self._comm, mask, "which gradients are None in this step")
        return [
            None if g is None else np.ascontiguousarray(g, dtype=v.value.dtype)
            for g, v in zip(grads, self._variables)
        ]


@register_optimizer
class ShardedAdagrad(Adagrad):
    """`Adagrad` whose optimizer state is sharded over the ranks of an MPI communicator.

    Use it as `Adagrad` on every rank, with the same variables and arguments;
    `build`, `apply` and `finalize_variable_values` are collectives. Each rank
    passes its own gradients; the step applies their sum (or mean, with
    `average=True`) to every rank's copy of the parameters. Optimizer state
    (accumulators, EMA averages, gradient accumulators) exists on each rank
    only for its shard: about 1/N of it, `variables` lists this rank's part.

    The result equals, bit for bit, one process applying the summed gradient,
    with every feature of `Adagrad` (schedules, all clip modes, weight decay,
    EMA, gradient accumulation, loss scaling, `LossScaleOptimizer`, the
    non-finite policies, constraints, float16/bfloat16, None gradients). With
    `reduction="sum"` MPI adds the gradients, which for more than two ranks
    may round differently from adding them in rank order; `"ordered"` adds
    them in rank order on every rank, so the result is the same bits for any
    number of ranks. Sparse gradients are refused: see `ShardedEmbedding`.

    Args:
        learning_rate: As `Adagrad`.
        comm: An mpi4py communicator; default `MPI.COMM_WORLD`.
        reduction: "sum" (default) or "ordered"; see above.
        average: Apply the mean of the ranks' gradients instead of their sum.
        **kwargs: Every other `Adagrad` argument.
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        *,
        comm: Any = None,
        reduction: str = "sum",
        average: bool = False,
        **kwargs: Any,
    ) -> None:
        self.comm = world() if comm is None else comm
        self.reduction = _checks.one_of(reduction, "reduction", REDUCTIONS)
        self.average = _checks.flag(average, "average")
        super().__init__(learning_rate, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            f"A {type(self).__name__} cannot be pickled or copied: its state is spread over the "
            "ranks of a communicator. Save it with adagrad_native.distributed.save_state."
        )

    def _make_native_step(self) -> NativeStep:
        return ShardedNativeStep(self._native_slots, self.comm)

    def build(self, var_list: Sequence[Any] | Mapping[Any, Any]) -> None:
        """Cuts the variables into shards and creates this rank's slots (a collective).

        Args:
            var_list: As for `Optimizer.build`.

        Raises:
            ValueError: On every rank, when the ranks' variables or settings differ.
        """
        with self._lock:
            if self.built:
                return
            var_list, names = split_named(var_list)
            variables = self._as_variables(var_list, names)
            agree(
                self.comm,
                self._description(var_list, variables),
                "the variables and optimizer settings at build",
            )
            sizes = [v.size for v in variables]
            rowwise = [self._rowwise(v) for v in variables]
            rows = [int(np.prod(v.shape[1:])) if r else 0 for v, r in zip(variables, rowwise)]
            chunk = work_chunk(sizes)
            layout = ShardLayout(sizes, rows, chunk, self.comm.Get_size())
            self._layout = layout
            pieces = layout.pieces(self.comm.Get_rank())
            self._shards = [
                _shard(v, p.begin, p.end, r) for v, p, r in zip(variables, pieces, rowwise)
            ]
            self._exchange = Exchange(
                self.comm, layout, [v.value.dtype for v in variables], self.reduction, self.average
            )
            native = self._native
            assert isinstance(native, ShardedNativeStep)
            native.distribute(self._exchange, variables, chunk)
            super().build(dict(zip(names, var_list)) if names else var_list)

    def _native_variables(self, variables: list[Variable]) -> list[Variable]:
        return self._shards

    def _description(self, var_list: list[Any], variables: list[Variable]) -> Any:
        lr = self._learning_rate
        return {
            "class": type(self).__name__,
            "variables": [
                (v.shape, v.dtype, v.overwrite_with_gradient, self._use_weight_decay(u, v))
                for u, v in zip(var_list, variables)
            ],
            "settings": self._static_plan(),
            "learning_rate": float(lr.value) if isinstance(lr, Variable) else type(lr).__name__,
            "reduction": (self.reduction, self.average),
        }

    def _checkpoint_places(self) -> Places:
        """Where this rank's shard of every optimizer variable sits in the whole state."""
        pieces = self._layout.pieces(self.comm.Get_rank())
        places: Places = {}
        for slots in (self._model_variables_moving_average, self._accumulated_gradients):
            for t, slot in enumerate(slots):
                if slot is not None:
                    shape = self._trainable_variables[t].shape
                    places[state_key(slot)] = (shape, pieces[t].begin, pieces[t].end, slot)
        for t, slot in enumerate(self._accumulators):
            if slot is None:
                continue
            variable = self._trainable_variables[t]
            per, whole = 1, variable.shape
            if self._rowwise(variable):  # one value a row
                per, whole = max(int(np.prod(variable.shape[1:])), 1), (variable.shape[0],)
            places[state_key(slot)] = (whole, pieces[t].begin // per, pieces[t].end // per, slot)
        for variable in self.variables:  # iteration, learning_rate: the same on every rank
            places.setdefault(state_key(variable), (variable.shape, 0, variable.size, variable))
        return places

    def _keep_fast_step(self, trainable_variables: list[Any] | None) -> None:
        pass  # a sharded step's collectives run in Python

    def finalize_variable_values(self, var_list: Sequence[Any]) -> None:
        """With `use_ema`, sets every rank's variables to their averages (a collective)."""
        if not self.use_ema:
            return
        super().finalize_variable_values(var_list)  # this rank's shards
        self._exchange.all_gather([v.value for v in self._trainable_variables])

    def stateless_apply(
        self,
        optimizer_variables: Sequence[Any],
        grads: Sequence[Any],
        trainable_variables: Sequence[Any],
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Not available: the optimizer state is spread over the ranks."""
        raise NotImplementedError(
            f"{type(self).__name__} does not support stateless_apply: its optimizer state is "
            "spread over the ranks. Use apply, or Adagrad in one process."
        )

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Not available: a single-variable update would bypass the collectives."""
        raise NotImplementedError(
            f"{type(self).__name__} does not support update_step; use apply (a collective)."
        )

    def get_config(self) -> dict[str, Any]:
        """Adagrad's config plus `reduction` and `average` (the communicator is not saved)."""
        config = super().get_config()
        config.update({"reduction": self.reduction, "average": self.average})
        return config


@register_optimizer
class ShardedRowWiseAdagrad(ShardedAdagrad, RowWiseAdagrad):
    """`RowWiseAdagrad` with sharded state: a row's accumulator lives on one rank.

    Shards of a 2+-d variable end on row boundaries. Arguments and behaviour
    are those of `ShardedAdagrad` and `RowWiseAdagrad`.
    """


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
