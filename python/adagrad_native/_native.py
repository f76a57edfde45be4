"""The execution side of a step: the one owner of the compiled core's step contract.

`Optimizer` decides what a step does (Keras semantics: which variables, the
learning rate, the accumulation phase, the EMA momentum). `NativeStep` turns
that into the core's objects and calls (`cpp/step.hpp`): the `SlotGroup` over
the optimizer's buffers, the `StepPlan` and which of its fields are current,
the native steady-state `FastStep` and when it must be dropped, and the
rebinding that `stateless_apply` needs when variables point at other buffers.
See docs/architecture.md for how a step flows from `apply` to the kernels.

Apart from `build_info` and the thread functions in `__init__`, this is the only
module that imports `_core`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from adagrad_native import _core
from adagrad_native.variables import Variable

_CLIP_MODES = {
    None: _core.Clip.none,
    "norm": _core.Clip.norm,
    "global_norm": _core.Clip.global_norm,
    "value": _core.Clip.value,
}


class Slots(NamedTuple):
    """The buffers of every trainable variable, aligned by build index.

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

    def buffers(self) -> list[int]:
        """The identity of every buffer, to tell whether a rebinding changed any."""
        return [id(a) for group in self[:4] for a in group]


Settle = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]
"""A record of a step's outcome: (target, value if applied, value if skipped).

Each is a 0-d array of one dtype; None leaves the target as it is.
"""


def settle_skipped(writes: Sequence[Settle]) -> None:
    """Writes the records of a step skipped before it reached the core, in one call.

    Args:
        writes: The step's records (see `Settle`); each takes its skipped value.
    """
    _core.settle(writes, False)


class CallPlan(NamedTuple):
    """What one call does, as the optimizer decided it."""

    update: bool  # an update step (False: an accumulation micro-step)
    learning_rate: float | None  # None keeps the last one (Keras evaluates it on updates)
    loss_scale: float  # gradients are divided by this (0: off)
    check_finite: bool  # stop the step untouched when a gradient is not finite
    any_update: bool  # whether any variable gets an Adagrad update
    ema_momentum: float  # this iteration's effective EMA momentum
    ema_overwrite: bool  # whether this iteration overwrites variables with their averages


class StaticPlan(NamedTuple):
    """The plan fields that change only when a hyperparameter is set."""

    epsilon: float
    weight_decay: float  # 0: off
    clip: str | None  # "norm", "global_norm", "value" or None
    clip_value: float
    accumulation_steps: int  # 1: off
    use_ema: bool
    sparse_lazy: bool


class NativeStep:
    """Runs an optimizer's steps in the compiled core.

    Made unbound with the optimizer; `bind` at build. Every method is called
    under the optimizer's lock.

    Args:
        slots: Returns the current buffers of the optimizer's variables (read
            again after any variable's buffer or constraint changed).
    """

    def __init__(self, slots: Callable[[], Slots]) -> None:
        self._slots_source = slots
        self._chunk: int | None = None  # work-item size; None: the core's choice
        self._slots: Slots | None = None
        self._group: Any = None
        self._layout = Variable.layout_version  # the variables' layout the group reflects
        self._plan = _core.StepPlan()
        self._static: StaticPlan | None = None  # None: the plan must be configured
        self._call_key: tuple[float, bool, bool] | None = None
        self._learning_rate: float | None = None
        self._fast: Any = None
        self._fast_layout = -1
        self._single_groups: dict[int, Any] = {}

    # ------------------------------------------------------------------ binding
    def bind(self) -> None:
        """Creates the group over the optimizer's buffers (at build)."""
        self._slots = self._slots_source()
        self._group = _group(self._slots, self._chunk)
        self._layout = Variable.layout_version
        self._single_groups.clear()

    def _follow_layout(self) -> None:
        """After a variable's buffer or constraint changed: rebinds if a buffer moved.

        `stateless_apply` points variables at copies and back; the group must
        follow, and the fast step (holding the old buffers) is dropped.
        """
        self._fast = None
        slots = self._slots_source()
        if self._slots is None or slots.buffers() != self._slots.buffers():
            self._slots = slots
            self._group = _group(slots, self._chunk)
            self._single_groups.clear()
        self._layout = Variable.layout_version

    @property
    def bound_slots(self) -> Slots:
        """The buffers the group is bound to."""
        assert self._slots is not None, "bind() must run first"
        return self._slots

    def invalidate(self) -> None:
        """A hyperparameter changed: reconfigure the plan and drop the fast step."""
        self._static = None
        self._fast = None

    @property
    def needs_configuration(self) -> bool:
        """Whether `configure` must run before the next `run`."""
        return self._static is None

    def configure(self, static: StaticPlan) -> None:
        """Writes the hyperparameter-derived plan fields."""
        plan = self._plan
        plan.epsilon = static.epsilon
        plan.weight_decay = static.weight_decay
        plan.clip, plan.clip_value = _CLIP_MODES[static.clip], static.clip_value
        plan.accumulation_steps = static.accumulation_steps
        plan.sparse_lazy = static.sparse_lazy
        plan.phase = _core.Phase.update
        self._static = static
        self._call_key = None

    # ------------------------------------------------------------------- steps
    def try_fast(self, grads: Any, variables: Any) -> int | None:
        """The steady-state step in one native call, when one was kept and applies.

        Returns:
            None when it declined (nothing read or written: take the general
            path), -1 when the step ran, or the index of a tensor whose
            gradient is not finite under a finiteness check (nothing written).
        """
        fast = self._fast
        if fast is None or self._fast_layout != Variable.layout_version:
            return None
        bad: int = fast.try_step(grads, variables)
        return None if bad == _core.DECLINED else bad

    def run(self, grads: Sequence[Any], call: CallPlan, settle: Sequence[Settle] = ()) -> int:
        """One step over gradients in build order (None: no gradient).

        Args:
            grads: Dense arrays, sparse gradients or None, by build index.
            call: What this call does.
            settle: The records of the step's outcome (the iteration counter, a
                loss scale), written in the same native call as the step, so a
                Ctrl-C cannot land between the state and its records.

        Returns:
            -1 when the step ran, else the index of the first tensor whose
            gradient is not finite (only with `check_finite`; nothing written).
        """
        self.prepare(call)
        return self.step(grads, settle=settle)

    def prepare(self, call: CallPlan) -> None:
        """Writes this call's fields of the plan."""
        if self._layout != Variable.layout_version:
            self._follow_layout()
        static = self.static
        plan = self._plan
        key = (call.loss_scale, call.check_finite, call.any_update)
        if key != self._call_key:
            plan.loss_scale = call.loss_scale
            plan.check_finite = call.check_finite
            plan.reset_idle_accumulators = call.any_update
            plan.ema = static.use_ema and call.any_update
            self._call_key = key
        if static.accumulation_steps > 1:
            plan.phase = _core.Phase.accumulate_update if call.update else _core.Phase.accumulate
        if call.learning_rate is not None and call.learning_rate != self._learning_rate:
            plan.learning_rate = self._learning_rate = call.learning_rate
        if plan.ema:
            plan.ema_momentum = call.ema_momentum
            plan.ema_overwrite = call.ema_overwrite

    @property
    def static(self) -> StaticPlan:
        """The hyperparameter-derived plan settings in use."""
        assert self._static is not None, "configure() must run before a step"
        return self._static

    def step(
        self,
        grads: Sequence[Any],
        norms: Sequence[float] | None = None,
        settle: Sequence[Settle] = (),
    ) -> int:
        """The prepared step in the core.

        Args:
            grads: As for `run`.
            norms: Each tensor's clip norm, computed elsewhere (distributed
                steps); then the core's own norm and finiteness pass is skipped.
            settle: As for `run`.

        Returns:
            As `run`.
        """
        bad: int = _core.step(self._group, grads, self._plan, norms, settle)
        return bad

    def partial_sums(self, grads: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Pass 1 of the prepared step only: per work item, in item order.

        Returns:
            The float64 sum of squares of each item's gradient as the update
            would see it before clipping, and whether the gradient is finite
            there (uint8, read only under a finiteness check). Nothing is written.
        """
        sums, finite = _core.partial_sums(self._group, grads, self._plan)
        return sums, finite

    def keep_fast(
        self, variables: Sequence[Any], iterations: np.ndarray, learning_rate: np.ndarray
    ) -> None:
        """Makes the step just run repeatable natively, for as long as nothing changes.

        The FastStep repeats the last plan, reading the learning rate from its
        variable and bumping `iterations`; it declines calls with other
        variables or gradients that need conversion, and is dropped when a
        hyperparameter (`invalidate`) or any variable's layout changes.

        Args:
            variables: The objects the call named, in build order.
            iterations: The optimizer's int64 counter, bumped in place.
            learning_rate: The float32 learning-rate variable's buffer.
        """
        self._fast = _core.FastStep(self._group, self._plan, iterations, learning_rate, variables)
        self._fast_layout = Variable.layout_version

    def keeps(self, variables: Sequence[Any] | None) -> bool:
        """Whether a kept fast step takes calls naming `variables` (None: build order)."""
        fast = self._fast
        return bool(
            fast is not None
            and self._fast_layout == Variable.layout_version
            and fast.accepts(variables)
        )

    @property
    def fast_step(self) -> Any:
        """The kept steady-state step, or None."""
        return self._fast

    def update_one(self, index: int, gradient: Any, learning_rate: float, epsilon: float) -> None:
        """Only the Adagrad update of one variable: no clipping, decay, EMA or counter.

        Raises:
            ValueError: When the variable has no accumulator.
        """
        if self._layout != Variable.layout_version:
            self._follow_layout()
        group = self._single_groups.get(index)
        if group is None:
            s = self._slots
            assert s is not None, "bind() must run before update_one()"
            if s.accumulators[index] is None:
                raise ValueError(
                    f"Variable '{s.names[index]}' has overwrite_with_gradient="
                    "True; it has no Adagrad accumulator to update."
                )
            group = _core.SlotGroup(
                [s.params[index]],
                [s.accumulators[index]],
                [None],
                [None],
                [False],
                [False],
                [s.names[index]],
                [s.rowwise[index]],
            )
            self._single_groups[index] = group
        plan = _core.StepPlan()
        plan.learning_rate, plan.epsilon = learning_rate, epsilon
        _core.step(group, [gradient], plan)


def work_chunk(sizes: Sequence[int]) -> int:
    """The core's work-item size for tensors of these element counts."""
    return int(_core.work_chunk(list(sizes)))


def _group(slots: Slots, chunk: int | None) -> Any:
    return _core.SlotGroup(
        chunk=chunk,
        params=slots.params,
        accumulators=slots.accumulators,
        averages=slots.averages,
        grad_accumulators=slots.grad_accumulators,
        weight_decay=slots.weight_decay,
        overwrite=slots.overwrite,
        names=slots.names,
        rowwise=slots.rowwise,
    )


def select_isa(name: str) -> bool:
    """Selects the kernels of one ISA ("auto": the best); False when not available."""
    return bool(_core.select_isa(name))


def available_isas() -> list[str]:
    """The ISAs compiled in that this CPU runs, best first."""
    return list(_core.available_isas())
