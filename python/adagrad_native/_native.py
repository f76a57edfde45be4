"""The execution side of a step: the one owner of the compiled core's step contract.

`Optimizer` decides what a step does (Keras semantics: which variables, the
learning rate, the accumulation phase, the EMA momentum). `NativeStep` turns
that into the core's objects and calls (`cpp/step.hpp`): the `SlotGroup` over
the optimizer's buffers, the `StepPlan` and which of its fields are current,
and the native steady-state `FastStep` and when it must be dropped. It is the
`StepEngine` (`_surface.py`) of one process; a sharded optimizer's engine
steps its shard through one. See docs/architecture.md for how a step flows
from `apply` to the kernels.

Apart from `build_info` and the thread functions in `__init__`, this is the only
module that imports `_core`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from adagrad_native import _core
from adagrad_native._surface import CallPlan, Settle, Slots, StaticPlan
from adagrad_native.variables import Variable

T = TypeVar("T")

_FORMULAS = {"keras": _core.Formula.keras, "torch": _core.Formula.torch}

# ADAGRAD_NATIVE_ISA or OMP_NUM_THREADS that the core could not follow as given
# (docs/performance.md): it says so, and what it uses instead.
for _message in _core.environment_warnings():
    warnings.warn(_message, RuntimeWarning, stacklevel=2)

_CLIP_MODES = {
    None: _core.Clip.none,
    "norm": _core.Clip.norm,
    "global_norm": _core.Clip.global_norm,
    "value": _core.Clip.value,
}


def assign_all(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    """Copies each source over its target (same dtype and size), all in one native call.

    Every pair is checked before anything is copied, and no Python code (a
    Ctrl-C's handler) runs between two copies.
    """
    _core.assign_all(pairs)


def settle(writes: Sequence[Settle], applied: bool) -> None:
    """Writes the records of a step decided outside the core, all in one native call.

    Args:
        writes: The step's records (see `Settle`).
        applied: Whether the step was applied (else each takes its skipped value).
    """
    _core.settle(writes, applied)


class NativeStep:
    """Runs an optimizer's steps in the compiled core (a `StepEngine` of one process).

    Made unbound with the optimizer; `bind` at build. Every method is called
    under the optimizer's lock.

    Args:
        chunk: The work-item size; None: the core's choice for the tensors (a
            sharded step gives the whole model's, so its pieces' items are the
            whole tensors' items).
    """

    def __init__(self, chunk: int | None = None) -> None:
        self._chunk = chunk
        self._slots: Slots | None = None
        self._group: Any = None
        self._plan = _core.StepPlan()
        self._static: StaticPlan | None = None  # None: the plan must be configured
        self._call_key: tuple[float, bool, bool] | None = None
        self._learning_rate: float | None = None
        self._per_tensor = False  # whether the plan holds per-tensor scalars
        self._fast: Any = None
        self._fast_layout = -1
        self._single_groups: dict[int, Any] = {}

    def collective(self, op: str, fn: Callable[[], T]) -> T:
        """One process has no other rank to agree with: runs `fn`."""
        return fn()

    # ------------------------------------------------------------------ binding
    def place(self, variables: list[Variable], rowwise: list[bool]) -> list[Variable]:
        """One process steps the variables themselves."""
        return variables

    def bind(self, slots: Slots) -> None:
        """Creates the group over the buffers of the variables and their slots (at build)."""
        self._slots = slots
        self._group = _core.SlotGroup(
            chunk=self._chunk,
            params=slots.params,
            accumulators=slots.accumulators,
            averages=slots.averages,
            grad_accumulators=slots.grad_accumulators,
            weight_decay=slots.weight_decay,
            overwrite=slots.overwrite,
            names=slots.names,
            rowwise=slots.rowwise,
        )
        self._single_groups.clear()

    @property
    def bound_slots(self) -> Slots:
        """The buffers the group is bound to."""
        assert self._slots is not None, "bind() must run first"
        return self._slots

    def publish(self) -> None:
        """Nothing to do: one process holds the only copy of the variables."""

    def settings_changed(self) -> None:
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
        plan.formula = _FORMULAS[static.formula]
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
        if call.per_tensor is not None or self._per_tensor:
            plan.per_tensor = call.per_tensor
            self._per_tensor = call.per_tensor is not None

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
            norms: Each tensor's clip norm, from `fold_norms` over partial sums
                gathered elsewhere (a sharded step); then the core's own norm
                and finiteness pass is skipped.
            settle: As for `run`.

        Returns:
            As `run`.
        """
        bad: int = _core.step(self._group, grads, self._plan, norms, settle)
        return bad

    def first_nonfinite(self, grads: Sequence[Any], call: CallPlan) -> int:
        """The step's finiteness check alone (nothing written): -1, or the first bad tensor."""
        self.prepare(call)
        bad: int = _core.first_nonfinite(self._group, grads, self._plan)
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
        hyperparameter (`settings_changed`) or a constraint changes.

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


def fold_norms(
    tensor_of: np.ndarray,
    sums: np.ndarray,
    finite: np.ndarray,
    counted: list[bool],
    global_norm: bool,
) -> tuple[list[float], int]:
    """The core's one norm fold over given partial sums (see `_core.fold_norms`).

    Args:
        tensor_of: The tensor of each entry.
        sums: Each entry's float64 sum of squares, in one process's item order.
        finite: Each entry's finiteness (uint8).
        counted: Per tensor: whether its sum counts (a gradient, not `overwrite_with_gradient`).
        global_norm: One norm over all counted tensors (`global_clipnorm`).

    Returns:
        Each tensor's norm, and the smallest tensor with a non-finite entry (-1: none).
    """
    norms, first_nonfinite = _core.fold_norms(
        tensor_of.tolist(), sums, finite, counted, global_norm
    )
    return norms, first_nonfinite


def work_chunk(sizes: Sequence[int]) -> int:
    """The core's work-item size for tensors of these element counts."""
    return int(_core.work_chunk(list(sizes)))


def select_isa(name: str) -> bool:
    """Selects the kernels of one ISA ("auto": the best); False when not available."""
    return bool(_core.select_isa(name))


def available_isas() -> list[str]:
    """The ISAs compiled in that this CPU runs, best first."""
    return list(_core.available_isas())
