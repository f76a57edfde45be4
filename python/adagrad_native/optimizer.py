"""The Keras 3 optimizer pipeline: what one step does, decided in Python.

`Optimizer` holds the Keras semantics (variables and their slots, the learning
rate, gradient accumulation, clipping and EMA settings); per call it decides
what the step does -- learning rate, accumulation phase, EMA momentum, which
tensors have gradients -- and hands the whole step to its step engine, which
runs every element-wise operation for every tensor in one native call with the
GIL released. Its extension surface (what subclasses override and wrappers
call) is `_surface.py`; docs/architecture.md has the flow.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, TypeVar

import numpy as np

from adagrad_native import _calls, _checks, _state
from adagrad_native._learning_rate import LearningRate
from adagrad_native._locks import fork_safe_lock
from adagrad_native._native import NativeStep, assign_all
from adagrad_native._settings import OptimizerSettings, format_settings
from adagrad_native._surface import (
    AlgorithmSlots,
    CallPlan,
    Settle,
    StatelessValues,
    StepEngine,
)
from adagrad_native._tracking import VariableTracker
from adagrad_native.variables import ValueRange, Variable, auto_name

# The largest iteration count a load accepts: room for 2**62 more steps. A step
# at the counter's own limit (2**63 - 1) raises instead of wrapping around.
LOADABLE_ITERATIONS = 2**62
_COUNTER_LIMIT = 2**63 - 1

T = TypeVar("T")


class _Target(NamedTuple):
    """The state one step reads and writes: the optimizer's own, or copies of it."""

    engine: StepEngine
    counter: np.ndarray  # the int64 0-d iteration counter
    learning_rate: np.ndarray | None  # the float32 0-d learning rate, when it is a number
    variables: list[Variable]  # the whole trainable variables, which constraints assign to


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _checked_name(name: Any) -> str | None:
    if name is not None and (not isinstance(name, str) or not name or "/" in name):
        raise ValueError(
            f"Argument `name` must be a non-empty string without '/'. Received: name={name!r}"
        )
    return name


class Optimizer(OptimizerSettings, VariableTracker, _state.KerasStateMethods):
    """The shared Keras 3 optimizer pipeline; `Adagrad` is its concrete optimizer.

    Its extension surface is `adagrad_native._surface`: what a subclass
    overrides (`AlgorithmHooks`) and what wrappers call (`Wrappable`).

    Args:
        learning_rate: A non-negative number, a `LearningRateSchedule` (called
            with the raw iteration count), or a zero-argument callable.
        weight_decay: Decoupled weight decay `v -= v * weight_decay * lr`, or None.
        clipnorm: Clip each gradient to this L2 norm, or None.
        clipvalue: Clip each gradient element to `[-clipvalue, clipvalue]`, or None.
        global_clipnorm: Clip all gradients to this joint L2 norm, or None.
            At most one of the three clip arguments may be set.
        use_ema: Keep an exponential moving average of every trainable variable.
        ema_momentum: The EMA momentum, in [0, 1] (checked when `use_ema`).
        ema_overwrite_frequency: Overwrite the variables with their average every
            this many iterations, or None.
        loss_scale_factor: Divide gradients by this before using them, or None.
        gradient_accumulation_steps: Update every this many calls with the mean
            gradient, or None.
        name: The optimizer's name; the prefix of its variables' paths.
        on_nonfinite: Not in Keras. "propagate" (Keras' behaviour: inf/NaN flow
            into the variables; with `global_clipnorm` every gradient becomes
            NaN), "raise" (a `ValueError` naming the first variable whose
            gradient has inf or NaN; nothing changes) or "skip" (the step is
            dropped: nothing changes, not even the iteration count). Costs one
            extra read of the gradients.
        **kwargs: Only the deprecated `decay` (ignored with a warning) is accepted.
    """

    def __init__(
        self,
        learning_rate: Any,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        use_ema: bool = False,
        ema_momentum: float = 0.99,
        ema_overwrite_frequency: int | None = None,
        loss_scale_factor: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
        on_nonfinite: str = "propagate",
        **kwargs: Any,
    ) -> None:
        self._engine = self.make_step_engine()
        self.name = _checked_name(name) or auto_name(_snake_case(type(self).__name__))
        self.init_settings(
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            on_nonfinite=on_nonfinite,
            **kwargs,
        )
        self.built = False
        self._lock = fork_safe_lock(self)
        self._variables: list[Variable] = []
        self._trainable_variables: list[Variable] = []
        self._stepped_variables: list[Variable] = []  # what the engine steps
        self._call_order: _calls.CallOrder | None = None
        self._weight_decay_flags: list[bool] = []
        self._overwrite: tuple[bool, ...] = ()
        self._has_overwrite = False
        self._model_variables_moving_average: list[Variable | None] = []
        self._accumulated_gradients: list[Variable | None] = []
        self._algorithm_slots = AlgorithmSlots([], [])
        self._constrained_cache: tuple[int, list[int]] = (-1, [])
        self._iterations = self._track(
            np.zeros((), np.int64),
            "iteration",
            aggregation="only_first_replica",
            value_range=ValueRange("a step count", 0, LOADABLE_ITERATIONS),
        )
        self._learning_rate = LearningRate()
        self.learning_rate = learning_rate

    # ------------------------------------------------------ hooks of subclasses
    def state_per_row(self, variable: Variable) -> bool:
        """Whether the algorithm keeps one state value per row of `variable` (default: no)."""
        return False

    def make_step_engine(self) -> StepEngine:
        """The engine of this optimizer's steps: the native step of one process."""
        return NativeStep()

    # ------------------------------------------------------------------ surface
    def settings_changed(self) -> None:
        """A setting that shapes the step changed: the engine re-reads the plan."""
        self._engine.settings_changed()

    def collective(self, op: str, fn: Callable[[], T]) -> T:
        """Runs `fn` as one call of the optimizer: sharded, a failure on any rank fails all."""
        with self._lock:
            return self._engine.collective(op, fn)

    def state_lock(self) -> AbstractContextManager[Any]:
        """Held by every step and every whole-state reader or writer (re-entrant, fork-safe)."""
        return self._lock

    @property
    def sharded(self) -> bool:
        """Whether the state is spread over the ranks of a communicator (`distributed`)."""
        return False

    @property
    def trainable_variables(self) -> list[Variable]:
        """The trainable variables the optimizer was built with, in build order."""
        return list(self._trainable_variables)

    @property
    def iterations(self) -> Variable:
        """Completed optimizer steps (`apply` calls // accumulation steps)."""
        k = self.gradient_accumulation_steps
        if k:
            return Variable._owned(self._iterations.value // k, "iterations", "iterations")
        return self._iterations

    # ------------------------------------------------------------ learning rate
    @property
    def learning_rate(self) -> Any:
        """The current learning rate (the float32 variable when it is a number)."""
        return self._learning_rate.current(int(self._iterations.value))

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        with self._lock:  # a step in another thread sees the old rate or the new one
            if self._learning_rate.set(learning_rate, self._track, self._variables.remove):
                self.settings_changed()

    # -------------------------------------------------------------------- build
    def build(self, var_list: Sequence[Any] | Mapping[Any, Any]) -> None:
        """Creates the optimizer variables for `var_list` (once; later calls do nothing).

        Args:
            var_list: The trainable variables: `Variable`s or C-contiguous,
                writeable float numpy arrays (updated in place); a sequence, or a
                mapping whose keys name plain arrays (checkpoints then key them
                by name, not position, and `apply` takes mappings of the same keys).
        """
        with self._lock:
            if not self.built:
                self.collective("build", lambda: self._build_or_roll_back(var_list))

    def _build_or_roll_back(self, var_list: Any) -> None:
        undo = self.undo_point()
        try:
            user_variables, names = _calls.split_named(var_list)
            variables = _calls.as_variables(user_variables, names)
            self._build(user_variables, names, variables)
        except BaseException:  # nothing of a refused build stays behind
            undo()
            raise

    def undo_point(self) -> Callable[[], None]:
        """A callable that puts the optimizer back as it is now, in one assignment.

        What a refused build, or a refused load into an optimizer it built,
        calls: the optimizer is then as it was (unbuilt, with its settings),
        even when a Ctrl-C lands in the middle. Take it under `state_lock()`.
        """
        saved = dict(self.__dict__)
        saved["_variables"] = list(self._variables)  # build appends to the list itself
        saved["_engine"] = self.make_step_engine()  # not bound to the undone build's buffers

        def undo() -> None:
            self.__dict__ = saved

        return undo

    def _build(
        self, user_variables: list[Any], names: list[str] | None, variables: list[Variable]
    ) -> None:
        """Places the variables, makes their slots in Keras' order and binds the engine."""
        self._engine.configure(self.static_plan())
        stepped = self._engine.place(variables, [self.state_per_row(v) for v in variables])
        self._make_slots(stepped, self.use_ema, bool(self.gradient_accumulation_steps))
        self._stepped_variables = stepped
        self._trainable_variables = variables
        self._call_order = _calls.CallOrder(user_variables, variables, names)
        self._weight_decay_flags = [
            self._use_weight_decay(u, v) for u, v in zip(user_variables, variables)
        ]
        self._overwrite = tuple(v.overwrite_with_gradient for v in variables)
        self._has_overwrite = any(self._overwrite)
        self._engine.bind(self._slots(lambda v: v.value))
        self.built = True

    # -------------------------------------------------------------------- apply
    def apply_gradients(self, grads_and_vars: Iterable[tuple[Any, Any]]) -> Variable:
        """Applies `(gradient, variable)` pairs; returns the raw iteration counter."""
        pairs = _checks.iterable(grads_and_vars, "grads_and_vars", "(gradient, variable) pairs")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise TypeError(
                    "Argument `grads_and_vars` must hold (gradient, variable) pairs. "
                    f"Received: grads_and_vars[{i}] of type {type(pair).__name__}"
                )
        self.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._iterations

    def apply(
        self,
        grads: Sequence[Any] | Mapping[Any, Any],
        trainable_variables: Sequence[Any] | Mapping[Any, Any] | None = None,
    ) -> None:
        """Updates the trainable variables in place from their gradients (one step).

        Args:
            grads: One gradient per variable (a numpy array of the variable's shape
                and dtype, a row-sparse `SparseGradient` or `tf.IndexedSlices`-like
                object, or None to skip that variable this step); a sequence, or
                a mapping with the keys of `trainable_variables`.
            trainable_variables: The variables, in any order; builds the optimizer
                on the first call. When omitted, `grads` follow the build order
                (or, as a mapping, the keys the optimizer was built with).

        Raises:
            ValueError: On a length mismatch, a key in one mapping only, an
                unknown variable, a shape mismatch, all gradients None, or an
                array that cannot be updated in place. Nothing is modified when
                it raises.
            TypeError: On a gradient that is not a float array of the variable's
                dtype family, or a mapping paired with a sequence.
        """
        with self._lock:
            bad = self._engine.try_fast(grads, trainable_variables)  # lists and tuples only
            if bad is None:
                self.step_with(grads, trainable_variables)
            elif bad >= 0 and self.on_nonfinite == "raise":
                raise self._nonfinite_error(bad)

    def step_with(
        self,
        grads: Any,
        trainable_variables: Any = None,
        *,
        loss_scale: float | None = None,
        settle: Sequence[Settle] = (),
        stateless: StatelessValues | None = None,
    ) -> bool:
        """One step as `apply` (its general path), for wrappers; whether it was applied.

        Args:
            grads: As for `apply`.
            trainable_variables: As for `apply`.
            loss_scale: Gradients are divided by this instead of `loss_scale_factor`,
                and a step with a non-finite gradient is skipped (`LossScaleOptimizer`).
            settle: A wrapper's records of the step's outcome, written in the same
                native call as the step (see `Settle`).
            stateless: Copies of `variables` and of the trainable variables (both
                in build order) that the step reads and writes instead.
        """
        with self._lock:
            return self._engine.collective(
                "apply",
                lambda: self._step_call(grads, trainable_variables, loss_scale, settle, stateless),
            )

    def _step_call(
        self,
        grads: Any,
        trainable_variables: Any,
        loss_scale: float | None,
        settle: Sequence[Settle],
        stateless: StatelessValues | None,
    ) -> bool:
        """The general path of a call: its arguments in build order, then one step."""
        keys = self._call_order.keys if self._call_order is not None else None
        call = _calls.as_lists(grads, trainable_variables, keys)
        if not call.grads:
            return False
        if not self.built:
            if call.build_from is None:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already "
                    "be built on a list of variables. Call "
                    "`optimizer.build(trainable_variables)` first."
                )
            self.build(call.build_from)
        assert self._call_order is not None
        ordered, missing = self._call_order.arrange(call)
        applied = self._step(self._target(stateless), ordered, missing, loss_scale, settle)
        if applied and stateless is None and ordered is call.grads and not missing:
            self._keep_fast_step(call.variables)
        return applied

    def _target(self, stateless: StatelessValues | None) -> _Target:
        """The optimizer's own state, or copies of it with an engine of their own."""
        lr = self._learning_rate.variable
        if stateless is None:
            buffer = None if lr is None else lr.value
            return _Target(self._engine, self._iterations.value, buffer, self._trainable_variables)
        optimizer_values, trainable_values = stateless
        copies = dict(zip(map(id, self._variables), optimizer_values))
        copies.update(zip(map(id, self._stepped_variables), trainable_values))
        engine = self.make_step_engine()
        engine.place(self._stepped_variables, self._algorithm_slots.rowwise)
        engine.bind(self._slots(lambda v: copies[id(v)]))
        return _Target(
            engine,
            copies[id(self._iterations)],
            None if lr is None else copies[id(lr)],
            [Variable._wrap(copies[id(v)], v.name) for v in self._stepped_variables],
        )

    def _keep_fast_step(self, trainable_variables: list[Any] | None) -> None:
        """After a step in build order with every gradient present, makes it repeatable natively.

        Not when the plan changes from step to step (a schedule or callable learning
        rate, accumulation, EMA) or a variable has a constraint.
        """
        engine = self._engine
        if engine.keeps(trainable_variables):
            return
        lr = self._learning_rate.variable
        if lr is None or self.gradient_accumulation_steps or self.use_ema or self._constrained():
            return
        assert self._call_order is not None
        variables = (
            self._call_order.user_variables if trainable_variables is None else trainable_variables
        )
        engine.keep_fast(variables, self._iterations.value, lr.value)

    def _step(
        self,
        target: _Target,
        grads: list[Any],
        missing: list[int],
        loss_scale: float | None,
        settle: Sequence[Settle],
    ) -> bool:
        """One step over gradients in build order (None: no gradient); whether it applied.

        `missing` lists the variables of the call with a None gradient (for the
        warning); `loss_scale` and `settle` are `step_with`'s.
        """
        call = self._call_plan(target, grads, loss_scale)
        # The engine checks every gradient before it writes anything, and bumps
        # the counter in the same native call as the step.
        counter = target.counter
        bad = target.engine.run(grads, call, [(counter, np.array(counter + 1), None), *settle])
        if bad >= 0:
            if self.on_nonfinite == "raise" and loss_scale is None:
                raise self._nonfinite_error(bad)
            return False
        if missing:
            paths = [self._trainable_variables[i].path for i in missing]
            warnings.warn(
                f"Gradients do not exist for variables {paths} when minimizing the loss. If "
                "using `model.compile()`, did you forget to provide a `loss` argument?",
                stacklevel=4,
            )
        for i in self._constrained():
            constraint = self._trainable_variables[i].constraint
            if grads[i] is not None and not self._overwrite[i] and constraint is not None:
                variable = target.variables[i]
                variable.assign(constraint(variable))
        return True

    def _call_plan(self, target: _Target, grads: list[Any], loss_scale: float | None) -> CallPlan:
        """What this call does (see `OptimizerSettings.call_plan`); configures the engine."""
        if self._has_overwrite or _calls.has_none(grads):
            if all(g is None for g in grads):
                raise ValueError("No gradients provided for any variable.")
            overwrite = self._overwrite
            any_update = any(g is not None and not overwrite[i] for i, g in enumerate(grads))
        else:
            any_update = True
        raw = int(target.counter)
        if raw >= _COUNTER_LIMIT:
            raise ValueError(
                f"The iteration counter of optimizer '{self.name}' is at its largest value "
                f"({raw}): another step would overflow it. Nothing was updated."
            )
        if target.engine.needs_configuration:
            target.engine.configure(self.static_plan())
        rate = self._learning_rate
        return self.call_plan(
            raw, any_update, lambda: rate.at(raw, target.learning_rate), loss_scale
        )

    def first_nonfinite(self, grads: Any, trainable_variables: Any = None) -> int:
        """The step's finiteness verdict on `grads`, without stepping (nothing is written).

        Returns:
            -1, or the build index of the first variable whose gradient (as passed,
            a sparse one with its duplicates summed) has inf or NaN.
        """
        with self._lock:
            if not self.built or self._call_order is None:
                raise ValueError("Call `build()` (or `apply()`) before `first_nonfinite()`.")
            call = _calls.as_lists(grads, trainable_variables, self._call_order.keys)
            ordered, _ = self._call_order.arrange(call)
            target = self._target(None)
            return self._engine.first_nonfinite(ordered, self._call_plan(target, ordered, None))

    def _nonfinite_error(self, index: int) -> ValueError:
        return ValueError(
            f"The gradient for variable '{self._trainable_variables[index].path}' (index "
            f"{index}) contains inf or NaN; nothing was updated (on_nonfinite='raise')."
        )

    def _constrained(self) -> list[int]:
        """Indices of the variables that have a constraint (cached)."""
        if self._constrained_cache[0] != Variable.layout_version:
            indices = [
                i for i, v in enumerate(self._trainable_variables) if v.constraint is not None
            ]
            self._constrained_cache = (Variable.layout_version, indices)
        return self._constrained_cache[1]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Applies only the algorithm's update to one built variable, as Keras does.

        No clipping, weight decay, EMA or counter increment.

        Args:
            gradient: The gradient, of the variable's shape and dtype.
            variable: A variable the optimizer was built with.
            learning_rate: The learning rate to use.
        """
        if not self.built or self._call_order is None:
            raise ValueError("Call `build()` (or `apply()`) before `update_step()`.")
        try:
            number = float(learning_rate)  # also a 0-d array or a Variable
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"Argument `learning_rate` must be a number. Received: learning_rate="
                f"{learning_rate!r:.80}"
            ) from err
        lr = float(_checks.real(number, "learning_rate", minimum=0, float32=True))
        with self._lock:
            index = self._call_order.index_of(variable, 0)
            self._engine.update_one(index, gradient, lr, float(self.plan_inputs().epsilon))

    def finalize_variable_values(self, var_list: Sequence[Any]) -> None:
        """With `use_ema`, overwrites each variable with its moving average.

        Args:
            var_list: The trainable variables, in build order.

        Raises:
            ValueError: When `var_list` does not match the built variables.
        """
        if not self.use_ema:
            return
        var_list = _checks.iterable(var_list, "var_list", "the trainable variables")
        with self._lock:
            averages = self._model_variables_moving_average
            if len(var_list) != len(averages) or self._call_order is None:
                raise ValueError(
                    f"`finalize_variable_values` expects the {len(averages)} variables the "
                    f"optimizer was built with; received {len(var_list)}."
                )
            indices = [self._call_order.index_of(v, i) for i, v in enumerate(var_list)]

            def finalize() -> None:
                # Every variable in one native call: a Ctrl-C never leaves some averaged.
                assign_all(
                    [
                        (self._stepped_variables[i].value, average.value)
                        for i in indices
                        if (average := averages[i]) is not None
                    ]
                )
                self._engine.publish()

            self._engine.collective("finalize_variable_values", finalize)

    # Pickling and copying: everything but the lock and the engine, which are
    # made anew (and bound again when the optimizer was built). The values are
    # copied under the lock, so a copy holds one step's state even while another
    # thread steps; the copy writes them back into its own variables.
    def __getstate__(self) -> dict[str, Any]:
        with self.state_lock():
            snapshot = [v.value.copy() for v in self.variables + self.trainable_variables]
            state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_engine")}
        state["_snapshot"] = snapshot
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        snapshot = state.pop("_snapshot", [])
        self.__dict__.update(state)  # the settings were checked when they were set
        self._lock = fork_safe_lock(self)
        self._engine = self.make_step_engine()
        for variable, value in zip(self.variables + self.trainable_variables, snapshot):
            np.copyto(variable.value, value)
        # Only an optimizer that steps itself is bound (a LossScaleOptimizer steps
        # through its inner optimizer, which restores its own).
        if self.built and self._stepped_variables:
            self._engine.place(self._stepped_variables, self._algorithm_slots.rowwise)
            self._engine.bind(self._slots(lambda v: v.value))

    def __repr__(self) -> str:
        """The class, the learning rate and every setting that differs from its default."""
        shown = {"learning_rate": self._learning_rate.shown(), **self.changed_settings()}
        state = f"iterations={int(self.iterations)}" if self.built else "not built"
        return f"<{type(self).__name__}({format_settings(shown)}), {state}>"

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, in Keras' format.

        Raises:
            TypeError: For a learning-rate callable that cannot be serialized
                (Keras would silently write 0.5).
        """
        return {
            "name": self.name,
            "learning_rate": self._learning_rate.config(),
            **self.settings_config(),
        }
