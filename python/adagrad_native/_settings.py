"""An optimizer's settings: checked descriptors, weight-decay exclusions, the plan they make.

A `Hyperparameter` checks every value it is given (in the constructor and
after it) and tells its optimizer, under its lock, that a setting changed, so
the step engine re-reads the plan. Reads cost a plain attribute lookup.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from adagrad_native import _checks, schedules
from adagrad_native._surface import CallPlan, PlanInputs, StaticPlan
from adagrad_native.variables import Variable

NONFINITE_POLICIES = ("propagate", "raise", "skip")

T = TypeVar("T")


class Hyperparameter(Generic[T]):
    """A public optimizer setting, checked when set; setting it calls `settings_changed()`.

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
        # Under the optimizer's lock (once the constructor made it): a step in
        # another thread sees the setting before or after, never half-applied.
        lock = optimizer.__dict__.get("_lock")
        with contextlib.nullcontext() if lock is None else lock:
            value = self.check(optimizer, self.name, value)
            optimizer.__dict__[self.name] = value
            optimizer.settings_changed()

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


def norm_bound(optimizer: Any, name: str, value: Any) -> Any:
    """None, or a finite number >= 0 that fits float32 and is 0 or a normal float32.

    The clip divides by it (or by the norm): a denormal makes a zero gradient NaN.
    """
    return _checks.optional_real(value, name, minimum=0, float32=True, normal=True)


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


def check_use_ema(optimizer: Any, name: str, value: Any) -> Any:
    # Turning EMA on needs an average per variable, made at build; the EMA
    # settings, accepted unchecked while EMA was off (as Keras), are checked now.
    value = _checks.flag(value, name)
    if value and not optimizer.__dict__.get("use_ema"):
        if optimizer.__dict__.get("built"):
            raise ValueError(
                "Argument `use_ema` cannot be turned on after the optimizer is built: the "
                "EMA averages are made at build. Create the optimizer with use_ema=True. "
                f"Received: use_ema={value!r}"
            )
        if "ema_momentum" in optimizer.__dict__:
            check_ema_momentum(optimizer, "ema_momentum", optimizer.ema_momentum, force=True)
            check_ema_frequency(
                optimizer, "ema_overwrite_frequency", optimizer.ema_overwrite_frequency, force=True
            )
    return value


def check_ema_momentum(optimizer: Any, name: str, value: Any, force: bool = False) -> Any:
    if force or optimizer.__dict__.get("use_ema"):  # Keras checks it only when used
        _checks.real(value, name, minimum=0, maximum=1)
    return value


def check_ema_frequency(optimizer: Any, name: str, value: Any, force: bool = False) -> Any:
    if force or optimizer.__dict__.get("use_ema"):
        _checks.optional_integer(value, name, minimum=1)
    return value


def check_loss_scale_factor(optimizer: Any, name: str, value: Any) -> Any:
    return _checks.optional_real(value, name, minimum=0, strict=True, float32=True, normal=True)


def check_accumulation_steps(optimizer: Any, name: str, value: Any) -> Any:
    # Stored as given (0 and None both mean off), as Keras reports them back.
    _checks.optional_integer(value, name, minimum=2, maximum=2**62)
    if value and optimizer.__dict__.get("built") and not optimizer.gradient_accumulation_steps:
        raise ValueError(
            "Argument `gradient_accumulation_steps` cannot be turned on after the optimizer is "
            "built: the gradient accumulators are made at build. Create the optimizer with it. "
            f"Received: gradient_accumulation_steps={value!r}"
        )
    return value


class OptimizerSettings:
    """The settings of Keras' base optimizer, and the native plan fields they make."""

    weight_decay: Hyperparameter[float | None] = Hyperparameter(non_negative_or_off)
    clipnorm: Hyperparameter[float | None] = Hyperparameter(norm_bound)
    clipvalue: Hyperparameter[float | None] = Hyperparameter(non_negative_or_off)
    global_clipnorm: Hyperparameter[float | None] = Hyperparameter(norm_bound)
    use_ema: Hyperparameter[bool] = Hyperparameter(check_use_ema)
    ema_momentum: Hyperparameter[float] = Hyperparameter(check_ema_momentum)
    ema_overwrite_frequency: Hyperparameter[int | None] = Hyperparameter(check_ema_frequency)
    loss_scale_factor: Hyperparameter[float | None] = Hyperparameter(check_loss_scale_factor)
    gradient_accumulation_steps: Hyperparameter[int | None] = Hyperparameter(
        check_accumulation_steps
    )
    on_nonfinite: Hyperparameter[str] = Hyperparameter(one_of(*NONFINITE_POLICIES))

    built: bool
    _exclude_from_weight_decay: set[int]
    _exclude_from_weight_decay_pattern: re.Pattern[str] | None

    def init_settings(
        self,
        *,
        weight_decay: float | None,
        clipnorm: float | None,
        clipvalue: float | None,
        global_clipnorm: float | None,
        use_ema: bool,
        ema_momentum: float,
        ema_overwrite_frequency: int | None,
        loss_scale_factor: float | None,
        gradient_accumulation_steps: int | None,
        on_nonfinite: str,
        **kwargs: Any,
    ) -> None:
        """Checks and sets the constructor's settings (see `Optimizer`).

        Raises:
            ValueError: For an unknown argument, a bad value, or two clip modes.
        """
        if kwargs.pop("decay", None) is not None:
            warnings.warn(
                "Argument `decay` is no longer supported and will be ignored.", stacklevel=3
            )
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        if sum(v is not None for v in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                f"global_clipnorm={global_clipnorm}"
            )
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
        self._exclude_from_weight_decay = set()
        self._exclude_from_weight_decay_pattern = None

    def settings_changed(self) -> None:
        """A setting that shapes the step changed (the optimizer tells its engine)."""

    def plan_inputs(self) -> PlanInputs:
        """The algorithm's inputs to the native plan; algorithms implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement plan_inputs.")

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
        variables = [] if var_list is None else _checks.iterable(var_list, "var_list", "variables")
        names = [] if var_names is None else _checks.iterable(var_names, "var_names", "strings")
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise TypeError(
                    "Argument `var_names` must hold strings (regular expressions searched in the "
                    f"variable names). Received: var_names[{i}]={name!r}"
                )
        self._exclude_from_weight_decay = {id(v) for v in variables}
        self._exclude_from_weight_decay_pattern = (
            re.compile("|".join(set(names))) if names else None
        )

    def _use_weight_decay(self, user_variable: Any, variable: Variable) -> bool:
        if id(user_variable) in self._exclude_from_weight_decay:
            return False
        pattern = self._exclude_from_weight_decay_pattern
        return pattern is None or pattern.search(variable.name) is None

    def static_plan(self) -> StaticPlan:
        """The plan settings derived from the hyperparameters."""
        epsilon, sparse_lazy = self.plan_inputs()
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

    def scale_loss(self, loss: Any) -> Any:
        """Multiplies `loss` by `loss_scale_factor` when it is set."""
        if self.loss_scale_factor is not None:
            return loss * self.loss_scale_factor
        return loss

    def call_plan(
        self,
        raw_iterations: int,
        any_update: bool,
        learning_rate: Callable[[], float],
        loss_scale: float | None,
    ) -> CallPlan:
        """What one call does, decided as Keras' base optimizer decides it.

        Args:
            raw_iterations: The calls made so far (Keras' raw iteration count).
            any_update: Whether some variable gets an Adagrad update (a gradient,
                not `overwrite_with_gradient`).
            learning_rate: The call's learning rate (evaluated on update steps only,
                as Keras does).
            loss_scale: A dynamic loss scale replacing `loss_scale_factor`; with
                one, a step with a non-finite gradient is skipped.
        """
        k = self.gradient_accumulation_steps
        is_update = not k or (raw_iterations + 1) % k == 0
        ema_momentum, ema_overwrite = 0.0, False
        if self.use_ema:
            iterations = raw_iterations // k if k else raw_iterations
            freq = self.ema_overwrite_frequency
            ema_momentum = float(self.ema_momentum) if iterations else 0.0
            ema_overwrite = bool(freq and (iterations + 1) % freq == 0)
        scale = self.loss_scale_factor if loss_scale is None else loss_scale
        return CallPlan(
            update=is_update,
            learning_rate=learning_rate() if is_update and any_update else None,
            loss_scale=float(scale or 0.0),
            check_finite=loss_scale is not None or self.on_nonfinite != "propagate",
            any_update=any_update,
            ema_momentum=ema_momentum,
            ema_overwrite=ema_overwrite,
        )

    def settings_config(self) -> dict[str, Any]:
        """The base optimizer's settings as Keras' `get_config` writes them."""
        return {
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

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (the optimizer's config)."""
        raise NotImplementedError

    def changed_settings(self) -> dict[str, Any]:
        """The constructor arguments in `get_config()` that differ from their defaults."""
        try:
            config = self.get_config()
        except TypeError:  # a plain callable learning rate
            return {}
        defaults = {
            name: p.default
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        return {
            key: value
            for key, value in config.items()
            if key in defaults and key not in ("learning_rate", "name") and value != defaults[key]
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Any:
        """Creates an optimizer from `get_config()` output (ours or Keras').

        Raises:
            TypeError: When `config` is not a dict.
        """
        if not isinstance(config, dict):
            raise TypeError(
                f"Argument `config` must be a dict, as get_config() returns it. Received: "
                f"config={config!r:.80} of type {type(config).__name__}."
            )
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(
                config["learning_rate"], custom_objects=custom_objects
            )
        return cls(**config)


def format_settings(settings: dict[str, Any]) -> str:
    """`name=value, ...`; float32 settings to float32's precision (0.1, not 0.10000000149...)."""
    return ", ".join(
        f"{k}={float(f'{v:.7g}')!r}" if isinstance(v, float) else f"{k}={v!r}"
        for k, v in settings.items()
    )
