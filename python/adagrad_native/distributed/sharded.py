"""Data-parallel Adagrad with the optimizer state sharded over MPI ranks.

Every rank holds the full parameters and computes its own gradients. `apply`
is a collective: the gradients are reduce-scattered so each rank receives the
sum (or mean) of its shard, the fused native step runs on that shard only --
accumulators, EMA averages and accumulation buffers exist only for it -- and
the updated parameters are all-gathered in place. Norms for `clipnorm` and
`global_clipnorm` are folded by the core from every rank's per-item partial
sums in the order one process folds them, so the result is, bit for bit, that
of one process applying the summed gradient (see docs/distributed.md).

Sharding is one mixin, `ShardedOptimizer`, that plugs the sharded step engine
into an algorithm: `ShardedAdagrad` and `ShardedRowWiseAdagrad` are that mixin
over `Adagrad` and `RowWiseAdagrad`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adagrad_native import _checks
from adagrad_native._state import state_entries
from adagrad_native._surface import StepEngine
from adagrad_native.adagrad import Adagrad
from adagrad_native.distributed._coordinator import (
    DEFAULT_TIMEOUT,
    Coordinator,
    check_timeout,
    settings_of,
)
from adagrad_native.distributed._exchange import REDUCTIONS
from adagrad_native.distributed._layout import ShardLayout
from adagrad_native.distributed._mpi import world
from adagrad_native.distributed._places import Place
from adagrad_native.distributed._sharded_step import DEFAULT_BUCKET_BYTES, ShardedStep
from adagrad_native.rowwise import RowWiseAdagrad
from adagrad_native.serialization import register_optimizer


class ShardedOptimizer:
    """Shards an optimizer's state over the ranks of an MPI communicator (a mixin).

    Put it before an algorithm class (`class X(ShardedOptimizer, Adagrad)`): it
    takes the keyword arguments below and passes the rest on, and its step
    engine (`ShardedStep`) runs every step as a collective.

    Args:
        learning_rate: As the algorithm's.
        comm: An mpi4py communicator; default `MPI.COMM_WORLD`.
        reduction: "ordered" (default) or "sum"; see `ShardedAdagrad`.
        average: Apply the mean of the ranks' gradients instead of their sum.
        timeout: Seconds a rank waits for the others in any call (build, apply,
            checkpoints) before it ends the job with a message naming the call and
            the ranks that did not arrive; None waits forever. Default 600.
        bucket_bytes: About how many bytes one exchange of gradients or parameters
            moves (over all ranks): the memory the exchange needs. Default 32 MiB.
        **kwargs: Every other argument of the algorithm.
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        *,
        comm: Any = None,
        reduction: str = "ordered",
        average: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
        **kwargs: Any,
    ) -> None:
        self.comm = world() if comm is None else comm
        self.reduction = _checks.one_of(reduction, "reduction", REDUCTIONS)
        self.average = _checks.flag(average, "average")
        self.timeout = check_timeout(timeout)
        self.bucket_bytes = _checks.integer(bucket_bytes, "bucket_bytes", minimum=1024)
        self.coordinator = Coordinator(self.comm, self.timeout, type(self).__name__)
        self._sharded_step = ShardedStep(
            self.coordinator, self.reduction, self.average, self._fingerprint, self.bucket_bytes
        )
        super().__init__(learning_rate, **kwargs)  # type: ignore[call-arg]
        self.coordinator.owner = f"{type(self).__name__} '{self.name}'"  # type: ignore[attr-defined]

    def _fingerprint(self: Any) -> dict[str, Any]:
        """What every rank must have equal at every call: the settings and the iteration."""
        return {"config": settings_of(self), "iterations": int(self.iterations)}

    def make_step_engine(self) -> StepEngine:
        """The sharded step (made once, before the algorithm's constructor runs)."""
        return self._sharded_step

    @property
    def sharded(self) -> bool:
        """True: each rank holds its part of the state (see `checkpoint_places`)."""
        return True

    @property
    def shard_layout(self) -> ShardLayout:
        """How the variables are split over the ranks (after build)."""
        layout = self._sharded_step.layout
        if layout is None:
            raise ValueError("The optimizer is not built yet: call build(variables) first.")
        return layout

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            f"A {type(self).__name__} cannot be pickled or copied: its state is spread over the "
            "ranks of a communicator. Save it with adagrad_native.distributed.save_state."
        )

    def checkpoint_places(self: Any) -> dict[str, Place]:
        """Where this rank's shard of every optimizer variable sits in the whole state.

        Keyed as `adagrad_native.save_state` keys a one-process file, so the two
        convert into each other (variables of the same name get "#1", "#2", ...).
        """
        pieces = self.shard_layout.pieces(self.comm.Get_rank())
        trainable = self.trainable_variables
        owners = {id(s.variable): s for s in self.slots()}
        places: dict[str, Place] = {}
        for key, variable in state_entries(self.variables).items():
            slot = owners.get(id(variable))
            if slot is None:  # iteration, learning_rate: the same on every rank
                places[key] = Place(variable.shape, 0, variable.size, variable, "replicated")
                continue
            whole, piece = trainable[slot.owner].shape, pieces[slot.owner]
            per = 1
            if slot.per_row:  # one value a row
                per, whole = max(int(np.prod(whole[1:])), 1), (whole[0],)
            places[key] = Place(whole, piece.begin // per, piece.end // per, variable)
        return places

    def checkpoint_config(self: Any) -> dict[str, Any] | None:
        """The optimizer's config, stored with its checkpoint (None when it has none)."""
        try:
            config: dict[str, Any] = self.get_config()
        except TypeError:  # a plain callable learning rate
            return None
        return config

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

    def get_config(self) -> dict[str, Any]:
        """The algorithm's config plus the sharding arguments (the communicator is not saved)."""
        config: dict[str, Any] = super().get_config()  # type: ignore[misc]
        config.update(
            {
                "reduction": self.reduction,
                "average": self.average,
                "timeout": self.timeout,
                "bucket_bytes": self.bucket_bytes,
            }
        )
        return config


@register_optimizer
class ShardedAdagrad(ShardedOptimizer, Adagrad):
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
    `reduction="ordered"` (the default) the gradients are added in rank order
    on every rank, so the result is the same bits for any number of ranks;
    with `"sum"` MPI adds them, which for more than two ranks may round
    differently. Sparse gradients are refused: see `ShardedEmbedding`.

    Every call is collective and fails together: an error on any rank (a bad
    gradient, a setting that differs, a `MemoryError`, an exception from a
    learning-rate callable) is the same exception on every rank, and nothing
    changes. A rank that does not arrive ends the job after `timeout` seconds.

    Args:
        learning_rate: As `Adagrad`.
        comm: An mpi4py communicator; default `MPI.COMM_WORLD`.
        reduction: "ordered" (default) or "sum"; see above.
        average: Apply the mean of the ranks' gradients instead of their sum.
        timeout: See `ShardedOptimizer`.
        bucket_bytes: See `ShardedOptimizer`.
        **kwargs: Every other `Adagrad` argument.
    """


@register_optimizer
class ShardedRowWiseAdagrad(ShardedOptimizer, RowWiseAdagrad):
    """`RowWiseAdagrad` with sharded state: a row's accumulator lives on one rank.

    Shards of a 2+-d variable end on row boundaries. Arguments and behaviour
    are those of `ShardedAdagrad` and `RowWiseAdagrad`.
    """
