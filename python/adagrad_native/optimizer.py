"""The Keras 3 optimizer pipeline (DESIGN.md §2), orchestrating one native call per step.

Python decides what a step does (learning rate, accumulation phase, EMA
momentum, which tensors have gradients); the compiled core does all the
element-wise work for every tensor in a single call with the GIL released.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import re
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from adagrad_native import _core
from adagrad_native._dtypes import check_updatable
from adagrad_native.schedules import LearningRateSchedule
from adagrad_native.variables import Variable, auto_name

_CLIP_ARGS = ("clipnorm", "clipvalue", "global_clipnorm")
_IDENTITY = "identity"  # a call's variables are exactly the build order
_NONFINITE_POLICIES = ("propagate", "raise", "skip")
_NONE_ID = id(None)  # `_NONE_ID in map(id, grads)`: a None check at C speed, safe for arrays


def check_real(value: Any, name: str, *, allow_none: bool = True, minimum: float = 0.0) -> Any:
    """Validates a real hyperparameter (finite, >= minimum) and returns it unchanged."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Argument `{name}` must be a real number. Received: {name}={value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(
            f"Argument `{name}` must be a finite number >= {minimum:g}. Received: {name}={value!r}"
        )
    return value


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _array_key(array: np.ndarray) -> tuple[int, tuple[int, ...], str]:
    return (array.__array_interface__["data"][0], array.shape, array.dtype.str)


class Optimizer:
    """The shared Keras 3 optimizer pipeline; `Adagrad` is its concrete optimizer.

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
        if on_nonfinite not in _NONFINITE_POLICIES:
            raise ValueError(
                f"Argument `on_nonfinite` must be one of {_NONFINITE_POLICIES}. Received: "
                f"on_nonfinite={on_nonfinite!r}"
            )
        if kwargs.pop("decay", None) is not None:
            warnings.warn("Argument `decay` is no longer supported and will be ignored.",
                          stacklevel=2)
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(
                f"Argument `name` must be a non-empty string without '/'. Received: name={name!r}"
            )
        self._validate(weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema,
                       ema_momentum, ema_overwrite_frequency, loss_scale_factor,
                       gradient_accumulation_steps)
        self._fast_step: Any = None  # the native steady-state step; see _keep_fast_step
        self._fast_version = -1  # Variable.constraint_version when it was made
        self.name = name or auto_name(_snake_case(type(self).__name__))
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.use_ema = use_ema
        self.ema_momentum = ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.loss_scale_factor = loss_scale_factor
        # Stored as given (0 and None both mean off), as Keras reports them back.
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.on_nonfinite = on_nonfinite
        self.built = False
        self._lock = threading.RLock()
        self._variables: list[Variable] = []
        self._trainable_variables: list[Variable] = []
        self._trainable_variables_indices: dict[int, int] = {}
        self._user_variables: list[Any] = []
        self._exclude_from_weight_decay: set[int] = set()
        self._exclude_from_weight_decay_pattern: re.Pattern[str] | None = None
        self._model_variables_moving_average: list[Variable | None] = []
        self._accumulated_gradients: list[Variable | None] = []
        self._group: Any = None
        self._plan = _core.StepPlan()
        self._plan_key: tuple[Any, ...] | None = None
        self._plan_lr: float | None = None
        self._order_cache: dict[tuple[int, ...], tuple[Any, list[Any]]] = {}
        self._constrained_cache: tuple[int, list[int]] = (-1, [])
        self._iterations = self._track(np.zeros((), np.int64), "iteration",
                                       aggregation="only_first_replica")
        self._learning_rate: Any = None
        self.learning_rate = learning_rate

    def __setattr__(self, name: str, value: Any) -> None:
        # A public attribute may be a hyperparameter the native fast step has
        # baked into its plan, and so may the learning-rate object: setting one
        # drops it. A number set as `learning_rate` is written into the
        # learning-rate variable, which the fast step reads on every call.
        if (not name.startswith("_") and name != "learning_rate") or name == "_learning_rate":
            object.__setattr__(self, "_fast_step", None)
        object.__setattr__(self, name, value)

    @staticmethod
    def _validate(weight_decay: Any, clipnorm: Any, clipvalue: Any, global_clipnorm: Any,
                  use_ema: Any, ema_momentum: Any, ema_overwrite_frequency: Any,
                  loss_scale_factor: Any, gradient_accumulation_steps: Any) -> None:
        check_real(weight_decay, "weight_decay")
        for arg, value in zip(_CLIP_ARGS, (clipnorm, clipvalue, global_clipnorm)):
            check_real(value, arg)
        if sum(v is not None for v in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                f"global_clipnorm={global_clipnorm}"
            )
        if use_ema:
            check_real(ema_momentum, "ema_momentum", allow_none=False)
            if ema_momentum > 1:
                raise ValueError(
                    "`ema_momentum` must be in the range [0, 1]. Received: "
                    f"ema_momentum={ema_momentum}"
                )
            if ema_overwrite_frequency and (
                isinstance(ema_overwrite_frequency, bool)
                or not isinstance(ema_overwrite_frequency, numbers.Integral)
                or ema_overwrite_frequency < 1
            ):
                raise ValueError(
                    "`ema_overwrite_frequency` must be an integer >= 1 or None. Received: "
                    f"ema_overwrite_frequency={ema_overwrite_frequency}"
                )
        if loss_scale_factor is not None:
            check_real(loss_scale_factor, "loss_scale_factor")
            if loss_scale_factor == 0:
                raise ValueError(
                    "Argument `loss_scale_factor` must be > 0 or None. Received: "
                    "loss_scale_factor=0"
                )
        if gradient_accumulation_steps and (
            isinstance(gradient_accumulation_steps, bool)
            or not isinstance(gradient_accumulation_steps, numbers.Integral)
            or gradient_accumulation_steps < 2
        ):
            raise ValueError(
                "`gradient_accumulation_steps` must be an integer >= 2. Received: "
                f"gradient_accumulation_steps={gradient_accumulation_steps}"
            )

    # ----------------------------------------------------------------- variables
    def _track(self, value: np.ndarray, name: str, aggregation: str = "none") -> Variable:
        var = Variable._owned(value, name, f"{self.name}/{name}", aggregation)
        self._variables.append(var)
        return var

    def add_variable(self, shape: Sequence[int], initializer: Any = "zeros", dtype: Any = None,
                     aggregation: str = "mean", name: str | None = None) -> Variable:
        """Creates and tracks an optimizer variable.

        Args:
            shape: The variable's shape.
            initializer: `"zeros"`, `"ones"`, a number, or a callable(shape, dtype).
            dtype: The dtype (default float32).
            aggregation: Kept for Keras compatibility.
            name: The variable's name (its path is `optimizer_name/name`).

        Returns:
            The new `Variable`.
        """
        template = Variable(initializer if not isinstance(initializer, numbers.Real)
                            or isinstance(initializer, bool) else float(initializer),
                            shape=tuple(shape), dtype=dtype, name=name or "var")
        return self._track(template.value, template.name, aggregation)

    def add_variable_from_reference(self, reference_variable: Any, name: str | None = None,
                                    initializer: Any = "zeros", dtype: Any = None) -> Variable:
        """Creates a variable with the shape (and dtype) of `reference_variable`.

        Its name is the reference's path with `/` replaced by `_`, then `_name`.
        `dtype` (not in Keras) overrides the reference's dtype.
        """
        ref_path = getattr(reference_variable, "path", None) or str(
            getattr(reference_variable, "name", "variable"))
        full_name = ref_path.replace("/", "_").replace(":", "_") + "_" + (name or "var")
        if dtype is None:
            dtype = np.asarray(reference_variable).dtype
        return self.add_variable(np.shape(reference_variable), initializer, dtype, "mean",
                                 full_name)

    def add_optimizer_variables(self, trainable_variables: Sequence[Variable], name: str,
                                initializer: Any = "zeros") -> list[Variable | None]:
        """One slot per variable; None for `overwrite_with_gradient` variables (as Keras)."""
        return [None if v.overwrite_with_gradient
                else self.add_variable_from_reference(v, name, initializer)
                for v in trainable_variables]

    @property
    def variables(self) -> list[Variable]:
        """Optimizer variables in Keras' order (iteration, learning_rate, slots by kind)."""
        return list(self._variables)

    @property
    def iterations(self) -> Variable:
        """Completed optimizer steps (`apply` calls // accumulation steps)."""
        k = self.gradient_accumulation_steps
        if k:
            return Variable._owned(self._iterations.value // k, "iterations", "iterations")
        return self._iterations

    # -------------------------------------------------------------- learning rate
    @property
    def learning_rate(self) -> Any:
        """The current learning rate (the float32 variable when it is a number)."""
        lr = self._learning_rate
        if isinstance(lr, Variable):
            return lr
        if isinstance(lr, LearningRateSchedule):
            return lr(int(self._iterations.value))
        return lr()

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        current = self._learning_rate
        if isinstance(learning_rate, LearningRateSchedule) or callable(learning_rate):
            if isinstance(current, Variable):
                self._variables.remove(current)
            self._learning_rate = learning_rate
            return
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
            raise ValueError(
                "Argument `learning_rate` should be a number, or an instance of "
                "LearningRateSchedule, or a callable that takes no arguments and returns the "
                f"learning rate. Received instead: learning_rate={learning_rate!r}"
            )
        check_real(learning_rate, "learning_rate", allow_none=False)
        if isinstance(current, Variable):
            current.value[...] = learning_rate
        elif current is None:
            self._learning_rate = self._track(np.array(learning_rate, np.float32),
                                              "learning_rate", "only_first_replica")
        else:
            raise TypeError(
                f"This optimizer was created with a {type(current).__name__} as its "
                "`learning_rate`, hence its learning rate is not settable to a number. If you "
                "need a settable learning rate, create the optimizer with a float "
                f"`learning_rate`. Received: learning_rate={learning_rate!r}"
            )

    def _current_learning_rate(self) -> float:
        if type(self._learning_rate) is Variable:  # the common case, read directly
            return float(self._learning_rate.value)
        lr = self.learning_rate
        try:
            return float(lr.value if isinstance(lr, Variable) else lr)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"The learning rate must evaluate to a number; received {lr!r} from "
                f"{self._learning_rate!r}."
            ) from err

    # --------------------------------------------------------------------- build
    def exclude_from_weight_decay(self, var_list: Iterable[Any] | None = None,
                                  var_names: Iterable[str] | None = None) -> None:
        """Excludes variables from weight decay; must be called before `build`.

        Args:
            var_list: Variables (or arrays) to exclude.
            var_names: Strings; a variable whose name matches any of them (as a
                regular expression searched in the name, like Keras) is excluded.

        Raises:
            ValueError: When the optimizer is already built (Keras' documented
                rule, which its own guard never enforces).
        """
        if self.built:
            raise ValueError(
                "`exclude_from_weight_decay()` can only be configured before the optimizer is "
                "built."
            )
        self._exclude_from_weight_decay = {id(v) for v in var_list or ()}
        names = list(var_names or ())
        self._exclude_from_weight_decay_pattern = re.compile("|".join(set(names))) if names \
            else None

    def _use_weight_decay(self, user_variable: Any, variable: Variable) -> bool:
        if id(user_variable) in self._exclude_from_weight_decay:
            return False
        pattern = self._exclude_from_weight_decay_pattern
        return pattern is None or pattern.search(variable.name) is None

    def _as_variables(self, var_list: Sequence[Any]) -> list[Variable]:
        """Validates every trainable variable, wrapping numpy arrays without copying."""
        variables, seen = [], set()
        for i, v in enumerate(var_list):
            if id(v) in seen:
                raise ValueError(f"Trainable variable {i} ({_describe(v)}) appears twice in "
                                 "the variable list.")
            seen.add(id(v))
            if isinstance(v, Variable):
                check_updatable(v.value, f"Trainable variable {i} ('{v.path}')")
                variables.append(v)
            elif isinstance(v, np.ndarray):
                check_updatable(v, f"Trainable variable {i} (a numpy array of shape {v.shape})")
                variables.append(Variable._wrap(v, f"param_{i}"))
            else:
                raise TypeError(
                    f"Trainable variable {i} must be an adagrad_native.Variable or a "
                    f"numpy.ndarray; received {type(v).__name__}."
                )
        return variables

    def build(self, var_list: Sequence[Any]) -> None:
        """Creates the optimizer variables for `var_list` (once; later calls do nothing).

        Args:
            var_list: The trainable variables: `Variable`s or C-contiguous,
                writeable float numpy arrays (updated in place).
        """
        with self._lock:
            if self.built:
                return
            var_list = list(var_list)
            variables = self._as_variables(var_list)
            if self.use_ema:
                self._model_variables_moving_average = self.add_optimizer_variables(
                    variables, "average")
            else:
                self._model_variables_moving_average = [None] * len(variables)
            self._accumulated_gradients = [
                self.add_variable_from_reference(v, "gradient_accumulator")
                if self.gradient_accumulation_steps else None
                for v in variables
            ]
            self._build_slots(variables)
            self._user_variables = var_list
            self._trainable_variables = variables
            self._trainable_variables_indices = {id(v): i for i, v in enumerate(var_list)}
            self._trainable_variables_indices.update({id(v): i for i, v in enumerate(variables)})
            self._array_indices = {_array_key(v.value): i for i, v in enumerate(variables)}
            self._overwrite = tuple(v.overwrite_with_gradient for v in variables)
            self._has_overwrite = any(self._overwrite)
            self._all_indices = list(range(len(variables)))
            self._group = self._make_group(variables, var_list)
            self.built = True

    def _build_slots(self, variables: list[Variable]) -> None:
        """Creates the algorithm's own slots (the Adagrad accumulators)."""
        raise NotImplementedError

    def _slot_arrays(self) -> list[np.ndarray | None]:
        """The algorithm's per-variable state buffers, aligned with the variables."""
        raise NotImplementedError

    def _make_group(self, variables: list[Variable], user_variables: list[Any]) -> Any:
        def arrays(slots: list[Variable | None]) -> list[np.ndarray | None]:
            return [None if s is None else s.value for s in slots]

        return _core.SlotGroup(
            params=[v.value for v in variables],
            accumulators=self._slot_arrays(),
            averages=arrays(self._model_variables_moving_average),
            grad_accumulators=arrays(self._accumulated_gradients),
            weight_decay=[self._use_weight_decay(u, v) for u, v in zip(user_variables, variables)],
            overwrite=[v.overwrite_with_gradient for v in variables],
            names=[v.path for v in variables],
            rowwise=[self._rowwise(v) for v in variables],
        )

    def _rowwise(self, variable: Variable) -> bool:
        """Whether the variable's accumulator has one element per row (RowWiseAdagrad)."""
        return False

    # --------------------------------------------------------------------- apply
    def apply_gradients(self, grads_and_vars: Iterable[tuple[Any, Any]]) -> Variable:
        """Applies `(gradient, variable)` pairs; returns the raw iteration counter."""
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._iterations

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> None:
        """Updates the trainable variables in place from their gradients (one step).

        Args:
            grads: One gradient per variable (a numpy array of the variable's shape
                and dtype, a row-sparse `SparseGradient` or `tf.IndexedSlices`-like
                object, or None to skip that variable this step).
            trainable_variables: The variables, in any order; builds the optimizer
                on the first call. When omitted, `grads` follow the build order.

        Raises:
            ValueError: On a length mismatch, an unknown variable, a shape
                mismatch, all gradients None, or an array that cannot be
                updated in place. Nothing is modified when it raises.
            TypeError: On a gradient whose dtype differs from its variable's.
        """
        with self._lock:
            fast = self._fast_step
            if fast is not None and self._fast_version == Variable.constraint_version:
                bad = fast.try_step(grads, trainable_variables)
                if bad != _core.DECLINED:
                    if bad >= 0 and self.on_nonfinite == "raise":
                        raise self._nonfinite_error(bad)
                    return
            grads = list(grads)
            if not grads:
                return
            if trainable_variables is not None:
                trainable_variables = list(trainable_variables)  # may be an iterator
            ordered, missing = self._ordered_gradients(grads, trainable_variables)
            if self._step(ordered, missing) and ordered is grads and not missing:
                self._keep_fast_step(trainable_variables)

    def _keep_fast_step(self, trainable_variables: list[Any] | None) -> None:
        """After a step in build order with every gradient present, makes it repeatable natively.

        The native FastStep repeats this step's plan, reading the learning rate
        from its variable and bumping `iterations`, for as long as nothing the
        plan depends on changes: a hyperparameter (`__setattr__` drops it), a
        variable's constraint (`_fast_version`) or the call's variables (it
        declines). Steps whose plan changes from step to step (a schedule or
        callable learning rate, gradient accumulation, EMA) and constrained
        variables always take the general path.
        """
        fast = self._fast_step
        if (fast is not None and self._fast_version == Variable.constraint_version
                and fast.accepts(trainable_variables)):
            return
        if (type(self._learning_rate) is not Variable or self.gradient_accumulation_steps
                or self.use_ema or self._constrained()):
            return
        variables = self._user_variables if trainable_variables is None else trainable_variables
        self._fast_step = _core.FastStep(self._group, self._plan, self._iterations.value,
                                         self._learning_rate.value, variables)
        self._fast_version = Variable.constraint_version

    def _ordered_gradients(self, grads: list[Any], trainable_variables: Sequence[Any] | None
                           ) -> tuple[list[Any], list[int]]:
        """Checks the call and builds on first use.

        Returns:
            The gradients in build order (None where a variable has none) and the
            indices of the variables of this call whose gradient is None.
        """
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already be "
                    "built on a list of variables. Call `optimizer.build(trainable_variables)` "
                    "first."
                )
            n = len(self._trainable_variables)
            if len(grads) != n:
                raise ValueError(
                    "When passing `grads` as a list of gradient tensors, the gradients must "
                    f"match `optimizer.variables` one-to-one. Received a list of {len(grads)} "
                    f"gradients, but the optimizer is tracking {n} trainable variables."
                )
            return grads, _none_positions(grads)
        trainable_variables = list(trainable_variables)
        if len(grads) != len(trainable_variables):
            raise ValueError(
                f"Received {len(grads)} gradients for {len(trainable_variables)} "
                "variables; pass exactly one gradient per variable."
            )
        if not self.built:
            self.build(trainable_variables)
        ids = tuple(map(id, trainable_variables))
        cached = self._order_cache.get(ids)
        if cached is None:
            # The entry holds the objects, so their ids cannot be reused while it exists.
            cached = (self._build_order(trainable_variables), trainable_variables)
            if len(self._order_cache) > 8:  # a few call patterns at most; keep it bounded
                self._order_cache.clear()
            self._order_cache[ids] = cached
        order = cached[0]
        if order is _IDENTITY:
            return grads, _none_positions(grads)
        ordered: list[Any] = [None] * len(self._trainable_variables)
        missing = []
        for i, g in zip(order, grads):
            ordered[i] = g
            if g is None:
                missing.append(i)
        return ordered, missing

    def _index_of(self, variable: Any, position: int) -> int:
        index = self._trainable_variables_indices.get(id(variable))
        if index is None and isinstance(variable, np.ndarray):
            index = self._array_indices.get(_array_key(variable))
        if index is None:
            raise ValueError(
                f"Unknown variable at position {position}: {_describe(variable)}. This optimizer "
                "can only be called for the variables it was originally built with. When "
                "working with a new set of variables, you should recreate a new optimizer "
                "instance."
            )
        return index

    def _build_order(self, variables: list[Any]) -> Any:
        """The build-order index of each variable of a call (or _IDENTITY)."""
        order = [self._index_of(v, position) for position, v in enumerate(variables)]
        seen: set[int] = set()
        for position, i in enumerate(order):
            if i in seen:
                raise ValueError(f"Variable '{self._trainable_variables[i].path}' appears twice "
                                 f"in one call (again at position {position}).")
            seen.add(i)
        return _IDENTITY if order == list(range(len(self._trainable_variables))) else order

    def _step(self, grads: list[Any], missing: list[int], loss_scale: float | None = None,
              check_finite: bool = False) -> bool:
        """One step over gradients in build order (None: no gradient).

        `missing` lists the variables of the call with a None gradient (for the
        warning). `loss_scale` replaces `loss_scale_factor` for this call and
        `check_finite` skips the whole step when a gradient is not finite (both
        for LossScaleOptimizer). Returns whether the step was applied.
        """
        if self._has_overwrite or _NONE_ID in map(id, grads):
            if all(g is None for g in grads):
                raise ValueError("No gradients provided for any variable.")
            overwrite = self._overwrite
            any_update = any(g is not None and not overwrite[i] for i, g in enumerate(grads))
        else:
            any_update = True
        raw = int(self._iterations.value)
        if loss_scale is None:
            loss_scale = self.loss_scale_factor
        plan = self._build_plan(raw, any_update, float(loss_scale or 0.0),
                                check_finite or self.on_nonfinite != "propagate")
        # The core validates every gradient before it writes anything.
        bad = _core.step(self._group, grads, plan)
        if bad >= 0:
            if self.on_nonfinite == "raise" and not check_finite:
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
            if grads[i] is not None and not self._overwrite[i]:
                v = self._trainable_variables[i]
                v.assign(v.constraint(v))
        self._iterations.value[()] = raw + 1
        return True

    def _nonfinite_error(self, index: int) -> ValueError:
        return ValueError(
            f"The gradient for variable '{self._trainable_variables[index].path}' (index "
            f"{index}) contains inf or NaN; nothing was updated (on_nonfinite='raise')."
        )

    def _constrained(self) -> list[int]:
        """Indices of the variables that have a constraint (cached)."""
        if self._constrained_cache[0] != Variable.constraint_version:
            indices = [i for i, v in enumerate(self._trainable_variables)
                       if v.constraint is not None]
            self._constrained_cache = (Variable.constraint_version, indices)
        return self._constrained_cache[1]

    def _build_plan(self, raw: int, any_update: bool, loss_scale: float,
                    check_finite: bool) -> Any:
        """Fills the StepPlan for this call.

        Fields that only change with the hyperparameters are rewritten only when
        those change: a step must cost a few microseconds of Python at most.
        """
        plan = self._plan
        k = self.gradient_accumulation_steps
        key = (self.epsilon, self.weight_decay, self.clipnorm, self.global_clipnorm,
               self.clipvalue, k, loss_scale, check_finite, any_update, self.use_ema,
               getattr(self, "sparse_updates", "dense"))
        if key != self._plan_key:
            plan.epsilon = float(self.epsilon)
            plan.weight_decay = float(self.weight_decay or 0.0)
            self._set_clip(plan)
            plan.accumulation_steps = k or 1
            plan.loss_scale = loss_scale
            plan.check_finite = check_finite
            plan.reset_idle_accumulators = any_update
            plan.ema = bool(self.use_ema) and any_update
            plan.sparse_lazy = getattr(self, "sparse_updates", "dense") == "lazy"
            if not k:
                plan.phase = _core.Phase.update
            self._plan_key = key
        is_update = not k or (raw + 1) % k == 0
        if k:
            plan.phase = _core.Phase.accumulate_update if is_update else _core.Phase.accumulate
        if is_update and any_update:
            lr = self._current_learning_rate()  # Keras evaluates it only on update steps
            if lr != self._plan_lr:
                plan.learning_rate = self._plan_lr = lr
        if plan.ema:
            iterations = raw // k if k else raw
            plan.ema_momentum = float(self.ema_momentum) if iterations else 0.0
            freq = self.ema_overwrite_frequency
            plan.ema_overwrite = bool(freq and (iterations + 1) % freq == 0)
        return plan

    def _set_clip(self, plan: Any) -> None:
        # Keras' precedence when several are set after construction.
        for arg, mode in ((self.clipnorm, _core.Clip.norm),
                          (self.global_clipnorm, _core.Clip.global_norm),
                          (self.clipvalue, _core.Clip.value)):
            if arg and arg > 0:
                plan.clip, plan.clip_value = mode, float(arg)
                return
        plan.clip, plan.clip_value = _core.Clip.none, 0.0

    # --------------------------------------------------------------------- state
    def _state_arrays(self, values: Sequence[Any], variables: Sequence[Variable],
                      what: str) -> list[np.ndarray]:
        """Fresh C-contiguous copies of `values`, checked against `variables`."""
        values = list(values)
        if len(values) != len(variables):
            raise ValueError(
                f"Argument `{what}` must have one entry per variable: expected "
                f"{len(variables)} ({[v.path for v in variables]}), received {len(values)}."
            )
        arrays = []
        for i, (value, var) in enumerate(zip(values, variables)):
            array = np.asarray(value)
            if array.shape != var.shape:
                raise ValueError(
                    f"`{what}[{i}]` is for '{var.path}' of shape {var.shape}; received shape "
                    f"{array.shape}."
                )
            arrays.append(np.array(array, dtype=var.value.dtype, order="C", copy=True))
        return arrays

    @contextlib.contextmanager
    def _swapped_state(self, optimizer_values: list[np.ndarray],
                       trainable_values: list[np.ndarray]) -> Iterator[None]:
        """Temporarily points every variable (and the native group) at other buffers."""
        variables = self.variables + self._trainable_variables
        saved = [v._value for v in variables]
        for v, value in zip(variables, optimizer_values + trainable_values):
            v._value = value
        saved_groups = self._swap_groups()
        try:
            yield
        finally:
            for v, value in zip(variables, saved):
                v._value = value
            self._restore_groups(saved_groups)

    def _swap_groups(self) -> Any:
        saved = (self._group, self._fast_step, self._fast_version)
        self._group = self._make_group(self._trainable_variables, self._user_variables)
        self._fast_step = None  # it holds the real buffers
        return saved

    def _restore_groups(self, saved: Any) -> None:
        self._group, self._fast_step, self._fast_version = saved

    def stateless_apply(self, optimizer_variables: Sequence[Any], grads: Sequence[Any],
                        trainable_variables: Sequence[Any]) -> tuple[list[np.ndarray],
                                                                    list[np.ndarray]]:
        """One step computed on copies: neither the inputs nor the optimizer change.

        Args:
            optimizer_variables: Values for `self.variables`, in that order.
            grads: Gradients in build order (None to skip a variable).
            trainable_variables: Values for the built trainable variables, in order.

        Returns:
            `(new_trainable_variables, new_optimizer_variables)`: new numpy arrays
            with the same results `apply` would give from that state.
        """
        if not self.built:
            raise ValueError(
                f"To call `stateless_apply`, {type(self).__name__} must be built (i.e. its "
                "variables must have been created). You can build it via "
                "`optimizer.build(trainable_variables)`."
            )
        with self._lock:
            new_optimizer = self._state_arrays(optimizer_variables, self.variables,
                                               "optimizer_variables")
            new_trainable = self._state_arrays(trainable_variables, self._trainable_variables,
                                               "trainable_variables")
            with self._swapped_state(new_optimizer, new_trainable):
                self.apply(list(grads))
        return new_trainable, new_optimizer

    def save_own_variables(self, store: Any) -> None:
        """Writes `self.variables` to `store` (a dict or h5py group) under "0", "1", ...

        The keys and order are Keras', so a real Keras optimizer built on the
        same variables can load the store, and the reverse.
        """
        for i, variable in enumerate(self.variables):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store: Any) -> None:
        """Reads `self.variables` from a store written by `save_own_variables` or Keras.

        Raises:
            ValueError: When the store's entries do not match the variables (Keras
                warns and loads nothing); the message lists what was expected and
                what was stored. Nothing changes when it raises.
        """
        variables = self.variables
        keys = sorted(store.keys(), key=lambda k: (len(str(k)), str(k)))
        stored = [np.asarray(store[k]) for k in keys]
        expected_keys = [str(i) for i in range(len(variables))]
        shapes_ok = len(stored) == len(variables) and all(
            a.shape == v.shape for a, v in zip(stored, variables))
        if [str(k) for k in keys] != expected_keys or not shapes_ok:
            raise ValueError(
                f"Cannot load the state of optimizer '{self.name}': expected "
                f"{len(variables)} entries "
                f"{[(k, v.path, v.shape) for k, v in zip(expected_keys, variables)]}; the store "
                f"has {len(stored)} {[(str(k), a.shape) for k, a in zip(keys, stored)]}."
                + (" The optimizer is not built yet: call build(variables) first."
                   if not self.built else "")
            )
        for variable, value in zip(variables, stored):
            variable.assign(value)

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Assigns `weights` to `self.variables`, after checking count and shapes."""
        arrays = self._state_arrays(weights, self.variables, "weights")
        for variable, value in zip(self.variables, arrays):
            variable.assign(value)

    # ------------------------------------------------------------ other methods
    def assign(self, variable: Any, value: Any) -> None:
        """Assigns `value` to a variable (a `Variable` or a numpy array) in place."""
        _as_variable(variable).assign(value)

    def assign_add(self, variable: Any, value: Any) -> None:
        """Adds `value` to a variable in place."""
        _as_variable(variable).assign_add(value)

    def assign_sub(self, variable: Any, value: Any) -> None:
        """Subtracts `value` from a variable in place."""
        _as_variable(variable).assign_sub(value)

    def scale_loss(self, loss: Any) -> Any:
        """Multiplies `loss` by `loss_scale_factor` when it is set."""
        if self.loss_scale_factor is not None:
            return loss * self.loss_scale_factor
        return loss

    def finalize_variable_values(self, var_list: Sequence[Any]) -> None:
        """With `use_ema`, overwrites each variable with its moving average.

        Args:
            var_list: The trainable variables, in build order.

        Raises:
            ValueError: When `var_list` does not match the built variables.
        """
        if not self.use_ema:
            return
        var_list = list(var_list)
        averages = self._model_variables_moving_average
        if len(var_list) != len(averages):
            raise ValueError(
                f"`finalize_variable_values` expects the {len(averages)} variables the optimizer "
                f"was built with; received {len(var_list)}."
            )
        indices = [self._index_of(v, i) for i, v in enumerate(var_list)]
        for v, i in zip(var_list, indices):
            if averages[i] is not None:
                _as_variable(v).assign(averages[i].value)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, in Keras' format.

        Raises:
            TypeError: For a learning-rate callable that cannot be serialized
                (Keras would silently write 0.5).
        """
        lr = self._learning_rate
        if isinstance(lr, Variable):
            learning_rate: Any = float(lr.value)
        elif isinstance(lr, LearningRateSchedule):
            from adagrad_native import schedules

            learning_rate = schedules.serialize(lr)
        else:
            raise TypeError(
                f"Cannot serialize the learning rate {lr!r}: a plain callable has no config. Use "
                "a number or a LearningRateSchedule subclass to get a config."
            )
        return {
            "name": self.name,
            "learning_rate": learning_rate,
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "global_clipnorm": self.global_clipnorm,
            "clipvalue": self.clipvalue,
            "use_ema": self.use_ema,
            "ema_momentum": self.ema_momentum,
            "ema_overwrite_frequency": self.ema_overwrite_frequency,
            "loss_scale_factor": self.loss_scale_factor,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any],
                    custom_objects: dict[str, Any] | None = None) -> Any:
        """Creates an optimizer from `get_config()` output (ours or Keras')."""
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            from adagrad_native import schedules

            config["learning_rate"] = schedules.deserialize(config["learning_rate"],
                                                            custom_objects=custom_objects)
        return cls(**config)


def _none_positions(grads: list[Any]) -> list[int]:
    if _NONE_ID not in map(id, grads):
        return []
    return [i for i, g in enumerate(grads) if g is None]


def _describe(v: Any) -> str:
    if isinstance(v, Variable):
        return f"Variable '{v.path}' of shape {v.shape}"
    if isinstance(v, np.ndarray):
        return f"numpy array of shape {v.shape} and dtype {v.dtype}"
    return repr(v)


def _as_variable(v: Any) -> Variable:
    if isinstance(v, Variable):
        return v
    if isinstance(v, np.ndarray):
        return Variable._wrap(v, "array")
    raise TypeError(f"Expected a Variable or a numpy array; received {type(v).__name__}.")

