"""The extension surface of `Optimizer`: what subclasses override, wrappers call, engines do.

`Optimizer` (optimizer.py) holds Keras' semantics. Everything else in the package
reaches it only through the members named here, never through an underscore
member (tests/test_package_layout.py checks it):

- `AlgorithmHooks`: what an algorithm (`Adagrad`, `RowWiseAdagrad`) or a sharding
  mixin overrides: its slots, its inputs to the native plan, and the engine that
  runs its steps.
- `Wrappable`: what a wrapping optimizer (`LossScaleOptimizer`) and the in-memory
  state functions call on the optimizer they hold.
- `StepEngine`: what runs a step once the optimizer decided it; `NativeStep`
  (`_native.py`) in one process, `ShardedStep` (`distributed/_sharded_step.py`)
  over the ranks of a communicator.

The records below (`Slots`, `StaticPlan`, `CallPlan`, `Settle`) are what crosses
from the optimizer to its engine. docs/architecture.md draws the flow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np

from adagrad_native.variables import Variable

T = TypeVar("T")


class AlgorithmSlots(NamedTuple):
    """An algorithm's state per stepped variable, in build order."""

    accumulators: list[Variable | None]  # None for `overwrite_with_gradient` variables
    rowwise: list[bool]  # whether the accumulator holds one value per row


class SlotInfo(NamedTuple):
    """One per-variable slot of an optimizer (`Optimizer.slots()`)."""

    variable: Variable
    owner: int  # the build index of the trainable variable it belongs to
    per_row: bool  # one value per row of its owner (else one per element)


class PlanInputs(NamedTuple):
    """An algorithm's inputs to the native plan."""

    epsilon: float
    sparse_lazy: bool  # weight decay and EMA only on the rows a sparse gradient touches


class Slots(NamedTuple):
    """The buffers of every stepped variable, aligned by build index.

    Optional slots are None where a variable has none (no EMA, no gradient
    accumulation, or `overwrite_with_gradient`, which has no accumulator).
    """

    params: list[np.ndarray]
    accumulators: list[np.ndarray | None]
    averages: list[np.ndarray | None]
    grad_accumulators: list[np.ndarray | None]
    weight_decay: list[bool]
    overwrite: list[bool]
    names: list[str]
    rowwise: list[bool]


class StaticPlan(NamedTuple):
    """The plan fields that change only when a hyperparameter is set."""

    epsilon: float
    weight_decay: float  # 0: off
    clip: str | None  # "norm", "global_norm", "value" or None
    clip_value: float
    accumulation_steps: int  # 1: off
    use_ema: bool
    sparse_lazy: bool
    formula: str = "keras"  # the update's operation order: "keras" or "torch" (cpp/step.hpp)


class CallPlan(NamedTuple):
    """What one call does, as the optimizer decided it."""

    update: bool  # an update step (False: an accumulation micro-step)
    learning_rate: float | None  # None keeps the last one (Keras evaluates it on updates)
    loss_scale: float  # gradients are divided by this (0: off)
    check_finite: bool  # stop the step untouched when a gradient is not finite
    any_update: bool  # whether any variable gets an Adagrad update
    ema_momentum: float  # this iteration's effective EMA momentum
    ema_overwrite: bool  # whether this iteration overwrites variables with their averages
    # None, or one row (learning rate, epsilon, weight decay, maximize 0/1) per tensor
    # that replaces the plan's for that tensor (torch's parameter groups).
    per_tensor: np.ndarray | None = None


StatelessValues = tuple[list[np.ndarray], list[np.ndarray]]
"""Copies of an optimizer's variables and of its trainable variables, both in build order."""

Settle = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]
"""A record of a step's outcome: (target, value if applied, value if skipped).

Each is a 0-d array of one dtype; None leaves the target as it is. The engine
writes every record in the same native call as the step, so a Ctrl-C cannot
land between the state and its records.
"""


class StepEngine(Protocol):
    """Runs an optimizer's steps. Made once per optimizer, placed and bound at build.

    Every method is called under the optimizer's state lock.
    """

    def collective(self, op: str, fn: Callable[[], T]) -> T:
        """Runs one call of the optimizer (`fn`) as the engine runs calls.

        One process just calls it; over several ranks, an exception on any rank
        becomes the same exception on every rank (the call's agreements).
        """
        ...

    def place(self, variables: list[Variable], rowwise: list[bool]) -> list[Variable]:
        """The variables this engine steps, which the slots are shaped like.

        The variables themselves in one process; this rank's pieces of them
        when the state is sharded (row-wise variables cut on row boundaries).
        """
        ...

    def bind(self, slots: Slots) -> None:
        """Binds the engine to the buffers of the placed variables and their slots."""
        ...

    def settings_changed(self) -> None:
        """A hyperparameter changed: `configure` runs before the next step."""
        ...

    @property
    def needs_configuration(self) -> bool:
        """Whether `configure` must run before the next step."""
        ...

    def configure(self, static: StaticPlan) -> None:
        """Takes the hyperparameter-derived plan fields."""
        ...

    def try_fast(self, grads: Any, variables: Any) -> int | None:
        """The kept steady-state step, if one applies to this call.

        Returns:
            None when it declined (nothing read or written), -1 when it ran, or
            the index of a tensor whose gradient is not finite under a
            finiteness check (nothing written).
        """
        ...

    def run(self, grads: Sequence[Any], call: CallPlan, settle: Sequence[Settle]) -> int:
        """One step over gradients in build order (None: no gradient).

        Returns:
            -1 when the step ran, else the index of the first tensor whose
            gradient is not finite (only with `call.check_finite`; nothing written).
        """
        ...

    def first_nonfinite(self, grads: Sequence[Any], call: CallPlan) -> int:
        """The step's finiteness check alone: -1, or the first bad tensor (nothing written)."""
        ...

    def keep_fast(
        self, variables: Sequence[Any], iterations: np.ndarray, learning_rate: np.ndarray
    ) -> None:
        """Makes the step just run repeatable in one native call (or does nothing)."""
        ...

    def keeps(self, variables: Sequence[Any] | None) -> bool:
        """Whether a kept fast step takes calls naming `variables` (None: build order)."""
        ...

    def update_one(self, index: int, gradient: Any, learning_rate: float, epsilon: float) -> None:
        """Only the Adagrad update of one variable: no clipping, decay, EMA or counter."""
        ...

    def publish(self) -> None:
        """The placed pieces were assigned outside a step: every copy of the variables follows."""
        ...


class AlgorithmHooks(Protocol):
    """What a subclass of `Optimizer` overrides (defaults raise or do the one-process thing)."""

    def state_per_row(self, variable: Variable) -> bool:
        """Whether the variable's algorithm state has one value per row (placed on row bounds)."""
        ...

    def build_slots(self, variables: list[Variable]) -> AlgorithmSlots:
        """Creates the algorithm's slots for the placed variables (`add_variable...`)."""
        ...

    def plan_inputs(self) -> PlanInputs:
        """The algorithm's inputs to the native plan."""
        ...

    def make_step_engine(self) -> StepEngine:
        """The engine of this optimizer's steps (made once, in the constructor)."""
        ...


class Wrappable(Protocol):
    """What wrappers and the state functions may use of an optimizer they hold."""

    @property
    def sharded(self) -> bool:
        """Whether the state is spread over ranks (then the one-process state functions refuse)."""
        ...

    @property
    def name(self) -> str:
        """The optimizer's name."""
        ...

    @property
    def built(self) -> bool:
        """Whether `build` ran."""
        ...

    @property
    def variables(self) -> list[Variable]:
        """The optimizer variables, in Keras' order."""
        ...

    @property
    def trainable_variables(self) -> list[Variable]:
        """The built trainable variables, in build order."""
        ...

    def build(self, var_list: Any) -> None:
        """Creates the optimizer variables (once)."""
        ...

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (Keras' format)."""
        ...

    def state_lock(self) -> AbstractContextManager[Any]:
        """Held by every step and by every whole-state reader or writer (re-entrant)."""
        ...

    def collective(self, op: str, fn: Callable[[], T]) -> T:
        """Runs `fn` as one call of the optimizer (see `StepEngine.collective`)."""
        ...

    def undo_point(self) -> Callable[[], None]:
        """A callable that puts the optimizer back as it is now (how a refused load unbuilds)."""
        ...

    def step_with(
        self,
        grads: Any,
        trainable_variables: Any = None,
        *,
        loss_scale: float | None = None,
        settle: Sequence[Settle] = (),
        stateless: StatelessValues | None = None,
    ) -> bool:
        """One step as `apply`, on a dynamic loss scale, with a wrapper's records, or on copies."""
        ...
