"""The Keras 3 optimizer pipeline: what one step does, decided in Python.

`Optimizer` holds the Keras semantics (variables and their slots, the learning
rate, gradient accumulation, clipping and EMA settings, state in and out); it
decides what a step does -- learning rate, accumulation phase, EMA momentum,
which tensors have gradients -- and hands the whole step to its `NativeStep`
(`_native.py`), which runs every element-wise operation for every tensor in a
single native call with the GIL released. docs/architecture.md has the flow.
"""

from __future__ import annotations

import contextlib
import inspect
import numbers
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import numpy as np

from adagrad_native import _checks, checkpoint, schedules
from adagrad_native._call_order import CallOrder, describe
from adagrad_native._dtypes import check_updatable
from adagrad_native._mappings import pair_by_key, split_named
from adagrad_native._native import CallPlan, NativeStep, Settle, Slots, StaticPlan
from adagrad_native.variables import Variable, auto_name

_CLIP_ARGS = ("clipnorm", "clipvalue", "global_clipnorm")
_NONFINITE_POLICIES = ("propagate", "raise", "skip")
_NONE_ID = id(None)  # `_NONE_ID in map(id, grads)`: a None check at C speed, safe for arrays

T = TypeVar("T")


class Hyperparameter(Generic[T]):
    """A public optimizer setting, checked when set; setting it makes the native step re-read it.

    Only `__set__` is defined, so reads come straight from the instance
    dictionary, at plain attribute speed (a step reads several).

    Args:
        check: `check(optimizer, name, value)` returns the value to store or
            raises (then nothing changes), in the constructor and after it.
    """

    def __init__(self, check: Callable[[Any, str, Any], Any]) -> None:
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __set__(self, optimizer: Any, value: T) -> None:
        value = self.check(optimizer, self.name, value)
        optimizer.__dict__[self.name] = value
        native = optimizer.__dict__.get("_native")
        if native is not None:
            native.invalidate()

    if TYPE_CHECKING:

        @overload
        def __get__(self, optimizer: None, owner: type) -> Hyperparameter[T]: ...

        @overload
        def __get__(self, optimizer: object, owner: type) -> T: ...

        def __get__(self, optimizer: object, owner: type) -> Any: ...


# The checks of the hyperparameters: (optimizer, name, value) -> the value to store.
def non_negative(optimizer: Any, name: str, value: Any) -> Any:
    """A finite number >= 0 that fits float32."""
    return _checks.real(value, name, minimum=0, float32=True)


def non_negative_or_off(optimizer: Any, name: str, value: Any) -> Any:
    """None, or a finite number >= 0 that fits float32."""
    return _checks.optional_real(value, name, minimum=0, float32=True)


def one_of(*choices: Any) -> Callable[[Any, str, Any], Any]:
    """One of `choices`."""
    return lambda optimizer, name, value: _checks.one_of(value, name, choices)


def fixed_after_build(check: Callable[[Any, str, Any], Any]) -> Callable[[Any, str, Any], Any]:
    """`check`, and no change once the optimizer is built (its slots depend on the value)."""

    def checked(optimizer: Any, name: str, value: Any) -> Any:
        value = check(optimizer, name, value)
        if optimizer.__dict__.get("built") and value != optimizer.__dict__.get(name):
            raise ValueError(
                f"Argument `{name}` cannot change after the optimizer is built: its slots "
                f"were made for {name}={optimizer.__dict__.get(name)!r}. Create a new "
                f"optimizer instead. Received: {name}={value!r}"
            )
        return value

    return checked


def _use_ema(optimizer: Any, name: str, value: Any) -> Any:
    # Turning EMA on needs an average per variable, made at build; the EMA
    # settings, accepted unchecked while EMA was off (as Keras), are checked now.
    if value and not optimizer.__dict__.get("use_ema"):
        if optimizer.__dict__.get("built"):
            raise ValueError(
                "Argument `use_ema` cannot be turned on after the optimizer is built: the "
                "EMA averages are made at build. Create the optimizer with use_ema=True. "
                f"Received: use_ema={value!r}"
            )
        if "ema_momentum" in optimizer.__dict__:
            _ema_momentum(optimizer, "ema_momentum", optimizer.ema_momentum, force=True)
            _ema_frequency(
                optimizer, "ema_overwrite_frequency", optimizer.ema_overwrite_frequency, force=True
            )
    return value


def _ema_momentum(optimizer: Any, name: str, value: Any, force: bool = False) -> Any:
    if force or optimizer.__dict__.get("use_ema"):  # Keras checks it only when used
        _checks.real(value, name, minimum=0, maximum=1)
    return value


def _ema_frequency(optimizer: Any, name: str, value: Any, force: bool = False) -> Any:
    if force or optimizer.__dict__.get("use_ema"):
        _checks.optional_integer(value, name, minimum=1)
    return value


def _loss_scale_factor(optimizer: Any, name: str, value: Any) -> Any:
    return _checks.optional_real(value, name, minimum=0, strict=True, float32=True)


def _accumulation_steps(optimizer: Any, name: str, value: Any) -> Any:
    # Stored as given (0 and None both mean off), as Keras reports them back.
    _checks.optional_integer(value, name, minimum=2)
    if value and optimizer.__dict__.get("built") and not optimizer.gradient_accumulation_steps:
        raise ValueError(
            "Argument `gradient_accumulation_steps` cannot be turned on after the optimizer is "
            "built: the gradient accumulators are made at build. Create the optimizer with it. "
            f"Received: gradient_accumulation_steps={value!r}"
        )
    return value


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


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

    weight_decay: Hyperparameter[float | None] = Hyperparameter(non_negative_or_off)
    clipnorm: Hyperparameter[float | None] = Hyperparameter(non_negative_or_off)
    clipvalue: Hyperparameter[float | None] = Hyperparameter(non_negative_or_off)
    global_clipnorm: Hyperparameter[float | None] = Hyperparameter(non_negative_or_off)
    use_ema: Hyperparameter[bool] = Hyperparameter(_use_ema)
    ema_momentum: Hyperparameter[float] = Hyperparameter(_ema_momentum)
    ema_overwrite_frequency: Hyperparameter[int | None] = Hyperparameter(_ema_frequency)
    loss_scale_factor: Hyperparameter[float | None] = Hyperparameter(_loss_scale_factor)
    gradient_accumulation_steps: Hyperparameter[int | None] = Hyperparameter(_accumulation_steps)
    on_nonfinite: Hyperparameter[str] = Hyperparameter(one_of(*_NONFINITE_POLICIES))

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
        if kwargs.pop("decay", None) is not None:
            warnings.warn(
                "Argument `decay` is no longer supported and will be ignored.", stacklevel=2
            )
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(
                f"Argument `name` must be a non-empty string without '/'. Received: name={name!r}"
            )
        if sum(v is not None for v in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                f"global_clipnorm={global_clipnorm}"
            )
        self._native = self._make_native_step()
        self.name = name or auto_name(_snake_case(type(self).__name__))
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.use_ema = use_ema
        self.ema_momentum = ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.loss_scale_factor = loss_scale_factor
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.on_nonfinite = on_nonfinite
        self.built = False
        self._lock = threading.RLock()
        self._variables: list[Variable] = []
        self._trainable_variables: list[Variable] = []
        self._trainable_variables_indices: dict[int, int] = {}
        self._user_variables: list[Any] = []
        self._variable_keys: list[str] | None = None  # built from a mapping: its keys
        self._stepped_variables: list[Variable] = []
        self._call_order: CallOrder | None = None
        self._exclude_from_weight_decay: set[int] = set()
        self._exclude_from_weight_decay_pattern: re.Pattern[str] | None = None
        self._weight_decay_flags: list[bool] = []
        self._overwrite: tuple[bool, ...] = ()
        self._has_overwrite = False
        self._model_variables_moving_average: list[Variable | None] = []
        self._accumulated_gradients: list[Variable | None] = []
        self._constrained_cache: tuple[int, list[int]] = (-1, [])
        self._iterations = self._track(
            np.zeros((), np.int64), "iteration", aggregation="only_first_replica"
        )
        self._learning_rate: Any = None
        self.learning_rate = learning_rate

    # ----------------------------------------------------------------- variables
    def _track(self, value: np.ndarray, name: str, aggregation: str = "none") -> Variable:
        var = Variable._owned(value, name, f"{self.name}/{name}", aggregation)
        self._variables.append(var)
        return var

    def add_variable(
        self,
        shape: Sequence[int],
        initializer: Any = "zeros",
        dtype: Any = None,
        aggregation: str = "mean",
        name: str | None = None,
    ) -> Variable:
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
        template = Variable(
            initializer
            if not isinstance(initializer, numbers.Real) or isinstance(initializer, bool)
            else float(initializer),
            shape=tuple(shape),
            dtype=dtype,
            name=name or "var",
        )
        return self._track(template.value, template.name, aggregation)

    def add_variable_from_reference(
        self,
        reference_variable: Any,
        name: str | None = None,
        initializer: Any = "zeros",
        dtype: Any = None,
    ) -> Variable:
        """Creates a variable with the shape (and dtype) of `reference_variable`.

        Its name is the reference's path with `/` replaced by `_`, then `_name`.
        `dtype` (not in Keras) overrides the reference's dtype.
        """
        ref_path = getattr(reference_variable, "path", None) or str(
            getattr(reference_variable, "name", "variable")
        )
        full_name = ref_path.replace("/", "_").replace(":", "_") + "_" + (name or "var")
        if dtype is None:
            dtype = np.asarray(reference_variable).dtype
        return self.add_variable(
            np.shape(reference_variable), initializer, dtype, "mean", full_name
        )

    def add_optimizer_variables(
        self, trainable_variables: Sequence[Variable], name: str, initializer: Any = "zeros"
    ) -> list[Variable | None]:
        """One slot per variable; None for `overwrite_with_gradient` variables (as Keras)."""
        return [
            None
            if v.overwrite_with_gradient
            else self.add_variable_from_reference(v, name, initializer)
            for v in trainable_variables
        ]

    @property
    def variables(self) -> list[Variable]:
        """Optimizer variables in Keras' order (iteration, learning_rate, slots by kind)."""
        return list(self._variables)

    @contextlib.contextmanager
    def _state_lock(self) -> Iterator[None]:
        """Held by every step and by every reader and writer of the state as a whole.

        So a checkpoint never sees half a step, and a load never lands in the
        middle of one. Re-entrant.
        """
        with self._lock:
            yield

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
        if isinstance(lr, schedules.LearningRateSchedule):
            return lr(int(self._iterations.value))
        return lr()

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        # A number is written into the learning-rate variable, which the native
        # fast step reads on every call; a new schedule or callable replaces it.
        current = self._learning_rate
        if isinstance(learning_rate, schedules.LearningRateSchedule) or callable(learning_rate):
            if isinstance(current, Variable):
                self._variables.remove(current)
            self._learning_rate = learning_rate
            self._native.invalidate()
            return
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
            raise ValueError(
                "Argument `learning_rate` should be a number, or an instance of "
                "LearningRateSchedule, or a callable that takes no arguments and returns the "
                f"learning rate. Received instead: learning_rate={learning_rate!r}"
            )
        _checks.real(learning_rate, "learning_rate", minimum=0, float32=True)
        if isinstance(current, Variable):
            current.value[...] = learning_rate
        elif current is None:
            self._learning_rate = self._track(
                np.array(learning_rate, np.float32), "learning_rate", "only_first_replica"
            )
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
    def exclude_from_weight_decay(
        self, var_list: Iterable[Any] | None = None, var_names: Iterable[str] | None = None
    ) -> None:
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
        self._exclude_from_weight_decay_pattern = (
            re.compile("|".join(set(names))) if names else None
        )

    def _use_weight_decay(self, user_variable: Any, variable: Variable) -> bool:
        if id(user_variable) in self._exclude_from_weight_decay:
            return False
        pattern = self._exclude_from_weight_decay_pattern
        return pattern is None or pattern.search(variable.name) is None

    # Pickling and copying: everything but the lock and the native step, which
    # are made anew (and bound again when the optimizer was built).
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for transient in ("_lock", "_native", "_call_order"):
            state.pop(transient, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)  # the settings were checked when they were set
        self._lock = threading.RLock()
        self._native = self._make_native_step()
        self._call_order = None
        # Only an optimizer that steps natively itself was bound (a LossScaleOptimizer
        # steps through its inner optimizer, which restores its own).
        if self.built and self._stepped_variables:
            self._call_order = CallOrder(self._user_variables, self._trainable_variables)
            self._native.bind()

    def _as_variables(self, var_list: Sequence[Any], names: list[str] | None) -> list[Variable]:
        """Validates every trainable variable, wrapping numpy arrays without copying.

        A plain array is named by `names` (a mapping's keys), else by its position.
        """
        variables, seen = [], set()
        for i, v in enumerate(var_list):
            if id(v) in seen:
                raise ValueError(
                    f"Trainable variable {i} ({describe(v)}) appears twice in the variable list."
                )
            seen.add(id(v))
            if isinstance(v, Variable):
                check_updatable(v.value, f"Trainable variable {i} ('{v.path}')")
                variables.append(v)
            elif isinstance(v, np.ndarray):
                check_updatable(v, f"Trainable variable {i} (a numpy array of shape {v.shape})")
                variables.append(Variable._wrap(v, names[i] if names else f"param_{i}"))
            else:
                raise TypeError(
                    f"Trainable variable {i} must be an adagrad_native.Variable or a "
                    f"numpy.ndarray; received {type(v).__name__}."
                )
        return variables

    def build(self, var_list: Sequence[Any] | Mapping[Any, Any]) -> None:
        """Creates the optimizer variables for `var_list` (once; later calls do nothing).

        Args:
            var_list: The trainable variables: `Variable`s or C-contiguous,
                writeable float numpy arrays (updated in place); a sequence, or a
                mapping whose keys name plain arrays (checkpoints then key them
                by name, not position, and `apply` takes mappings of the same keys).
        """
        with self._lock:
            if self.built:
                return
            var_list, names = split_named(var_list)
            variables = self._as_variables(var_list, names)
            stepped = self._native_variables(variables)
            if self.use_ema:
                self._model_variables_moving_average = self.add_optimizer_variables(
                    stepped, "average"
                )
            else:
                self._model_variables_moving_average = [None] * len(variables)
            self._accumulated_gradients = [
                self.add_variable_from_reference(v, "gradient_accumulator")
                if self.gradient_accumulation_steps
                else None
                for v in stepped
            ]
            self._build_slots(stepped)
            self._stepped_variables = stepped
            self._user_variables = var_list
            self._variable_keys = names
            self._trainable_variables = variables
            self._call_order = CallOrder(var_list, variables)
            self._weight_decay_flags = [
                self._use_weight_decay(u, v) for u, v in zip(var_list, variables)
            ]
            self._overwrite = tuple(v.overwrite_with_gradient for v in variables)
            self._has_overwrite = any(self._overwrite)
            self._native.bind()
            self.built = True

    def _make_native_step(self) -> NativeStep:
        """The engine of this optimizer's steps (made once, bound at build)."""
        return NativeStep(self._native_slots)

    def _native_variables(self, variables: list[Variable]) -> list[Variable]:
        """What the native step updates, and what slots are shaped like, per variable.

        The variables themselves; a sharded optimizer returns this rank's pieces.
        """
        return variables

    # Hooks of the concrete optimizer (Adagrad): its slots and its plan inputs.
    def _build_slots(self, variables: list[Variable]) -> None:
        """Creates the algorithm's own slots (the Adagrad accumulators)."""
        raise NotImplementedError

    def _algorithm_slots(self) -> tuple[list[np.ndarray | None], list[bool]]:
        """The algorithm's state buffer of each variable, and whether it is row-wise.

        Both lists are in build order; the buffer is None for
        `overwrite_with_gradient` variables.
        """
        raise NotImplementedError

    def _plan_inputs(self) -> tuple[float, bool]:
        """The algorithm's inputs to the native plan: `(epsilon, sparse_lazy)`."""
        raise NotImplementedError

    def _native_slots(self) -> Slots:
        """The current buffers of every trainable variable and its slots, for NativeStep."""

        def arrays(slots: list[Variable | None]) -> list[np.ndarray | None]:
            return [None if s is None else s.value for s in slots]

        accumulators, rowwise = self._algorithm_slots()
        variables = self._trainable_variables
        return Slots(
            params=[v.value for v in self._stepped_variables],
            accumulators=accumulators,
            averages=arrays(self._model_variables_moving_average),
            grad_accumulators=arrays(self._accumulated_gradients),
            weight_decay=self._weight_decay_flags,
            overwrite=list(self._overwrite),
            names=[v.path for v in variables],
            rowwise=rowwise,
        )

    def _static_plan(self) -> StaticPlan:
        """The plan settings derived from the hyperparameters."""
        epsilon, sparse_lazy = self._plan_inputs()
        clip, clip_value = None, 0.0
        # Keras' precedence when several are set after construction.
        for mode, arg in (
            ("norm", self.clipnorm),
            ("global_norm", self.global_clipnorm),
            ("value", self.clipvalue),
        ):
            if arg and arg > 0:
                clip, clip_value = mode, float(arg)
                break
        return StaticPlan(
            epsilon=float(epsilon),
            weight_decay=float(self.weight_decay or 0.0),
            clip=clip,
            clip_value=clip_value,
            accumulation_steps=self.gradient_accumulation_steps or 1,
            use_ema=bool(self.use_ema),
            sparse_lazy=sparse_lazy,
        )

    # --------------------------------------------------------------------- apply
    def apply_gradients(self, grads_and_vars: Iterable[tuple[Any, Any]]) -> Variable:
        """Applies `(gradient, variable)` pairs; returns the raw iteration counter."""
        pairs = list(grads_and_vars)
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
            bad = self._native.try_fast(grads, trainable_variables)  # lists and tuples only
            if bad is None:
                paired = self._as_sequences(grads, trainable_variables)
                if paired[0] is not grads:  # mappings, now lists: maybe the fast step's
                    grads, trainable_variables = paired
                    bad = self._native.try_fast(grads, trainable_variables)
            if bad is None:
                _check_sequence(
                    grads, "grads", "gradients, one per variable (arrays, SparseGradients or None)"
                )
                if trainable_variables is not None:
                    _check_sequence(trainable_variables, "trainable_variables", "variables")
            if bad is not None:
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

    def _as_sequences(self, grads: Any, trainable_variables: Any) -> tuple[Any, Any]:
        """Mappings of gradients and variables as lists in one order (builds on a first call)."""
        if not isinstance(grads, Mapping) and not isinstance(trainable_variables, Mapping):
            return grads, trainable_variables
        paired = pair_by_key(grads, trainable_variables, self._variable_keys)  # checks first
        if isinstance(trainable_variables, Mapping) and not self.built:
            self.build(trainable_variables)  # the keys name the arrays
        return paired

    def _scaled_apply(
        self,
        grads: list[Any],
        trainable_variables: Sequence[Any] | None,
        loss_scale: float,
        settle: Sequence[Settle],
    ) -> bool:
        """One step on gradients divided by `loss_scale`; skipped if any is not finite.

        The one entry point for wrapping optimizers (LossScaleOptimizer). A
        skipped step changes nothing but the wrapper's records in `settle`,
        which are written in the same native call as the step (see
        `NativeStep.run`).

        Returns:
            Whether the step was applied (also in the wrapper's records).
        """
        with self._lock:
            ordered, missing = self._ordered_gradients(grads, trainable_variables)
            return self._step(
                ordered, missing, loss_scale=loss_scale, check_finite=True, settle=settle
            )

    def _keep_fast_step(self, trainable_variables: list[Any] | None) -> None:
        """After a step in build order with every gradient present, makes it repeatable natively.

        Steps whose plan changes from step to step (a schedule or callable
        learning rate, gradient accumulation, EMA) and constrained variables
        always take the general path.
        """
        native = self._native
        if native.keeps(trainable_variables):
            return
        if (
            type(self._learning_rate) is not Variable
            or self.gradient_accumulation_steps
            or self.use_ema
            or self._constrained()
        ):
            return
        variables = self._user_variables if trainable_variables is None else trainable_variables
        native.keep_fast(variables, self._iterations.value, self._learning_rate.value)

    def _ordered_gradients(
        self, grads: list[Any], trainable_variables: Sequence[Any] | None
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
        assert self._call_order is not None
        order = self._call_order.order(trainable_variables)
        if order is None:
            return grads, _none_positions(grads)
        ordered: list[Any] = [None] * len(self._trainable_variables)
        missing = []
        for i, g in zip(order, grads):
            ordered[i] = g
            if g is None:
                missing.append(i)
        return ordered, missing

    def _index_of(self, variable: Any, position: int) -> int:
        """The build index of `variable` (named at `position` of a call)."""
        if self._call_order is None:
            raise ValueError(
                f"Unknown variable at position {position}: {describe(variable)}. "
                "The optimizer is not built yet."
            )
        return self._call_order.index_of(variable, position)

    def _step(
        self,
        grads: list[Any],
        missing: list[int],
        loss_scale: float | None = None,
        check_finite: bool = False,
        settle: Sequence[Settle] = (),
    ) -> bool:
        """One step over gradients in build order (None: no gradient).

        `missing` lists the variables of the call with a None gradient (for the
        warning). `loss_scale` replaces `loss_scale_factor` for this call and
        `check_finite` skips the whole step when a gradient is not finite and
        `settle` records the outcome (all three for LossScaleOptimizer).
        Returns whether the step was applied.
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
        k = self.gradient_accumulation_steps
        is_update = not k or (raw + 1) % k == 0
        # Keras evaluates the learning rate only on update steps.
        learning_rate = self._current_learning_rate() if is_update and any_update else None
        ema_momentum, ema_overwrite = 0.0, False
        if self.use_ema:
            iterations = raw // k if k else raw
            freq = self.ema_overwrite_frequency
            ema_momentum = float(self.ema_momentum) if iterations else 0.0
            ema_overwrite = bool(freq and (iterations + 1) % freq == 0)
        native = self._native
        if native.needs_configuration:
            native.configure(self._static_plan())
        # The core validates every gradient before it writes anything.
        call = CallPlan(
            update=is_update,
            learning_rate=learning_rate,
            loss_scale=float(loss_scale or 0.0),
            check_finite=check_finite or self.on_nonfinite != "propagate",
            any_update=any_update,
            ema_momentum=ema_momentum,
            ema_overwrite=ema_overwrite,
        )
        # The counter is bumped in the same native call as the step.
        counter = self._iterations.value
        bad = native.run(grads, call, [(counter, np.array(counter + 1), None), *settle])
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
            v = self._trainable_variables[i]
            if grads[i] is not None and not self._overwrite[i] and v.constraint is not None:
                v.assign(v.constraint(v))
        return True

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

    # --------------------------------------------------------------------- state
    def _state_arrays(
        self, values: Sequence[Any], variables: Sequence[Variable], what: str
    ) -> list[np.ndarray]:
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
    def _swapped_state(
        self, optimizer_values: list[np.ndarray], trainable_values: list[np.ndarray]
    ) -> Iterator[None]:
        """Temporarily points every variable at other buffers.

        The native step follows: a rebound variable changes the layout version,
        so it rebinds (and drops its fast step) before its next step.
        """
        variables = self.variables + self._trainable_variables
        saved = [v._rebind(a) for v, a in zip(variables, optimizer_values + trainable_values)]
        try:
            yield
        finally:
            for v, a in zip(variables, saved):
                v._rebind(a)

    def stateless_apply(
        self,
        optimizer_variables: Sequence[Any],
        grads: Sequence[Any],
        trainable_variables: Sequence[Any],
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
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
            new_optimizer = self._state_arrays(
                optimizer_variables, self.variables, "optimizer_variables"
            )
            new_trainable = self._state_arrays(
                trainable_variables, self._trainable_variables, "trainable_variables"
            )
            with self._swapped_state(new_optimizer, new_trainable):
                self.apply(list(grads))
        return new_trainable, new_optimizer

    def save_own_variables(self, store: Any) -> None:
        """Writes `self.variables` to `store` (a dict or h5py group) under "0", "1", ...

        The keys and order are Keras', so a real Keras optimizer built on the
        same variables can load the store, and the reverse.
        """
        with self._state_lock():  # a consistent snapshot, also while another thread steps
            values = [variable.numpy() for variable in self.variables]
        for i, value in enumerate(values):
            store[str(i)] = value

    def load_own_variables(self, store: Any) -> None:
        """Reads `self.variables` from a store written by `save_own_variables` or Keras.

        Raises:
            ValueError: When the store's entries do not match the variables (Keras
                warns and loads nothing); the message lists what was expected and
                what was stored. Nothing changes when it raises.
        """
        with self._state_lock():
            variables = self.variables
            keys = sorted(store.keys(), key=lambda k: (len(str(k)), str(k)))
            stored = [np.asarray(store[k]) for k in keys]
            expected_keys = [str(i) for i in range(len(variables))]
            shapes_ok = len(stored) == len(variables) and all(
                a.shape == v.shape for a, v in zip(stored, variables)
            )
            if [str(k) for k in keys] != expected_keys or not shapes_ok:
                raise ValueError(
                    f"Cannot load the state of optimizer '{self.name}': expected "
                    f"{len(variables)} entries "
                    f"{[(k, v.path, v.shape) for k, v in zip(expected_keys, variables)]}; "
                    f"the store has {len(stored)} "
                    f"{[(str(k), a.shape) for k, a in zip(keys, stored)]}."
                    + (
                        " The optimizer is not built yet: call build(variables) first."
                        if not self.built
                        else ""
                    )
                )
            converted = []
            for key, variable, value in zip(keys, variables, stored):
                try:  # every value converts before any is assigned
                    converted.append(np.asarray(value, dtype=variable.value.dtype))
                except (TypeError, ValueError) as err:
                    raise ValueError(
                        f"Cannot load the state of optimizer '{self.name}': entry {str(key)!r} "
                        f"({variable.path}) does not convert to {variable.dtype}: {err}. Nothing "
                        "was loaded."
                    ) from err
            for variable, value in zip(variables, converted):
                variable.assign(value)

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Assigns `weights` to `self.variables`, after checking count and shapes."""
        if not self.built:
            raise ValueError(
                f"You are calling `set_weights()` on an optimizer that has not yet been built. "
                f"Please call `optimizer.build(trainable_variables)` to create the optimizer "
                f"weights before calling `set_weights()`. Optimizer: '{self.name}'."
            )
        with self._state_lock():
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
        with self._state_lock():
            var_list = list(var_list)
            averages = self._model_variables_moving_average
            if len(var_list) != len(averages):
                raise ValueError(
                    f"`finalize_variable_values` expects the {len(averages)} variables the "
                    f"optimizer was built with; received {len(var_list)}."
                )
            indices = [self._index_of(v, i) for i, v in enumerate(var_list)]
            for i in indices:
                average = averages[i]
                if average is not None:  # the variable's buffer, as the native step sees it
                    self._stepped_variables[i].assign(average.value)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state in memory: copies of its variables, and its config.

        Returns:
            A plain dict keyed as `save_state` keys its file (paths relative to
            the optimizer, e.g. "iteration", "dense_kernel_accumulator"), plus
            "__config__": `get_config()` (None when it cannot be serialized).

        Raises:
            ValueError: When the optimizer is not built.
        """
        return checkpoint.state_dict(self)

    def load_state_dict(
        self,
        state: Mapping[str, Any],
        variables: Sequence[Any] | Mapping[Any, Any] | None = None,
        *,
        learning_rate: str = "checkpoint",
    ) -> None:
        """Assigns a `state_dict()` by key, after checking every key, shape and dtype.

        Args:
            state: What `state_dict()` returned (or `np.load` of a `save_state` file).
            variables: The trainable variables, when the optimizer is not built
                yet (it is built from them first).
            learning_rate: "checkpoint" (the default, as Keras' `load_own_variables`)
                takes the stored learning rate; "keep" keeps the optimizer's own.

        Raises:
            ValueError: Listing every missing, unexpected and mismatched entry;
                nothing is assigned (or built) then.
        """
        checkpoint.load_state_dict(self, state, variables, learning_rate=learning_rate)

    def __repr__(self) -> str:
        """The class, the learning rate and every setting that differs from its default."""
        try:
            config = self.get_config()
        except TypeError:  # a plain callable learning rate
            config = {"learning_rate": self._learning_rate}
        lr = self._learning_rate
        shown = {"learning_rate": float(lr.value) if isinstance(lr, Variable) else lr}
        defaults = {
            name: p.default
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        for key, value in config.items():
            if key in defaults and key not in ("learning_rate", "name"):
                if value != defaults[key]:
                    shown[key] = value
        # float32 settings shown to float32's precision: 0.1, not 0.10000000149011612.
        args = ", ".join(
            f"{k}={float(f'{v:.7g}')!r}" if isinstance(v, float) else f"{k}={v!r}"
            for k, v in shown.items()
        )
        state = f"iterations={int(self._iterations.value)}" if self.built else "not built"
        return f"<{type(self).__name__}({args}), {state}>"

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, in Keras' format.

        Raises:
            TypeError: For a learning-rate callable that cannot be serialized
                (Keras would silently write 0.5).
        """
        lr = self._learning_rate
        if isinstance(lr, Variable):
            learning_rate: Any = float(lr.value)
        elif isinstance(lr, schedules.LearningRateSchedule):
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
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Any:
        """Creates an optimizer from `get_config()` output (ours or Keras')."""
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(
                config["learning_rate"], custom_objects=custom_objects
            )
        return cls(**config)


def _check_sequence(value: Any, name: str, what: str) -> None:
    """A list-like argument: not None, a string or a single array (which would iterate)."""
    if (
        value is None
        or isinstance(value, str | bytes | np.ndarray)
        or not hasattr(value, "__iter__")
    ):
        raise TypeError(
            f"Argument `{name}` must be a list (or another iterable) of {what}. "
            f"Received: {name}={value!r:.80}"
        )


def _none_positions(grads: list[Any]) -> list[int]:
    if _NONE_ID not in map(id, grads):
        return []
    return [i for i, g in enumerate(grads) if g is None]


def _as_variable(v: Any) -> Variable:
    if isinstance(v, Variable):
        return v
    if isinstance(v, np.ndarray):
        return Variable._wrap(v, "array")
    raise TypeError(f"Expected a Variable or a numpy array; received {type(v).__name__}.")
