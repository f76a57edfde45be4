"""Learning-rate schedules with the behaviour and the numbers of Keras 3.

Every class here mirrors its namesake in ``keras.optimizers.schedules``: the same
constructor arguments and defaults, the same ``get_config()`` keys and values, and the
same learning rate for every step. Keras evaluates a schedule as a sequence of float32
tensor operations; the schedules below run the same operations, in the same order, on
numpy float32 scalars, so the discrete decisions (staircase floors, cycle ceilings,
warmup and restart boundaries) fall on the same steps as in Keras. Like XLA's CPU
kernels, results below the smallest normal float32 are flushed to zero.

The reference is Keras running each operation on its own (an eager call; the TensorFlow
and torch backends). Compilers may reorder float32 arithmetic: under ``jax.jit``, XLA
turns ``x / constant`` into ``x * (1 / constant)`` and fuses ``a * b + c``, which can move
a boundary by one step; those artifacts are not reproduced.

A schedule is called with the current step (a Python or numpy integer or float, or a
0-d numpy array) and returns a Python ``float``.

``serialize`` and ``deserialize`` read and write Keras' serialized form, so a schedule
config moves between Keras and this package in both directions. User-defined schedules
take part through :func:`register_schedule` or the ``custom_objects`` argument.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

import numpy as np

from adagrad_native._checks import flag, is_bool, real, real_list
from adagrad_native.variables import Variable

__all__ = [
    "LearningRateSchedule",
    "ExponentialDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "InverseTimeDecay",
    "CosineDecay",
    "CosineDecayRestarts",
    "serialize",
    "deserialize",
    "register_schedule",
]

#: The module name Keras writes into the serialized form of a built-in schedule.
KERAS_MODULE = "keras.optimizers.schedules"

_f32 = np.float32
_f64 = np.float64
_PI32 = np.float32(math.pi)
_ONE32 = np.float32(1.0)
_HALF32 = np.float32(0.5)

Step = int | float | np.integer | np.floating | np.ndarray


# Elementary functions are evaluated in float64 on float32 operands and rounded once to
# float32, i.e. (almost always) correctly rounded. That is within an ulp of XLA's CPU
# kernels and equal to them more often than numpy's own float32 kernels, whose results
# also vary with the CPU's SIMD level. Arithmetic stays in float32, in Keras' order.
def _cos(x: np.float32) -> np.float32:
    return _f32(np.cos(_f64(x)))


def _log(x: np.float32) -> np.float32:
    return _f32(np.log(_f64(x)))


def _pow(x: np.float32, y: np.float32) -> np.float32:
    return _flush(_f32(np.power(_f64(x), _f64(y))))


_TINY32 = np.finfo(np.float32).tiny


def _flush(x: np.float32) -> np.float32:
    """Flush a float32 subnormal to zero, as XLA's CPU kernels do (FTZ)."""
    if 0 < abs(x) < _TINY32:
        flushed: np.float32 = np.copysign(_f32(0.0), x)
        return flushed
    return x


def _result(x: np.float32) -> float:
    return float(_flush(_f32(x)))


# --------------------------------------------------------------------------- validation


def _initial_rate(value: Any) -> Any:
    """A number, or (as Keras allows) a scalar Variable, read again at every call."""
    if isinstance(value, Variable):
        if value.shape != ():
            raise ValueError(
                "Argument `initial_learning_rate` must be a number or a scalar Variable. "
                f"Received: a Variable of shape {value.shape}."
            )
        real(float(value), "initial_learning_rate")
        return value
    return real(value, "initial_learning_rate")


def _number(value: Any) -> Any:
    """A config value: a Variable's current value, anything else as it is."""
    return float(value) if isinstance(value, Variable) else value


def _check_name(value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(
            "Argument `name` must be a string or None. "
            f"Received: name={value!r} of type {type(value).__name__}."
        )


def _read_step(step: Any) -> int | float:
    """Return ``step`` as a Python int (integer steps) or float (floating steps)."""
    if is_bool(step):
        raise TypeError(
            "A schedule expects the step as an integer or float scalar. "
            f"Received: step={step!r} of type {type(step).__name__}."
        )
    if isinstance(step, numbers.Integral):
        return int(step)
    if isinstance(step, numbers.Real):
        return float(step)
    array = None
    if not isinstance(step, str | bytes):
        try:
            array = np.asarray(step)
        except Exception:  # any conversion failure becomes the TypeError below
            array = None
    if array is None or array.ndim != 0 or array.dtype.kind not in "iuf":
        shape = "" if array is None else f" with shape {array.shape} and dtype {array.dtype}"
        raise TypeError(
            "A schedule expects the step as an integer or float scalar "
            "(Python number, numpy scalar or 0-d numpy array). "
            f"Received: step={step!r} of type {type(step).__name__}{shape}."
        )
    return int(array) if array.dtype.kind in "iu" else float(array)


# ------------------------------------------------------------------------------ classes


class LearningRateSchedule:
    """Base class of the learning-rate schedules.

    A schedule maps the optimizer step to a learning rate. Subclasses implement
    ``__call__(step)``; to be serializable they also implement ``get_config()``,
    whose dict is passed back to the constructor by ``from_config()``.

    Example:
        >>> class InverseStep(LearningRateSchedule):
        ...     def __init__(self, base):
        ...         self.base = base
        ...     def __call__(self, step):
        ...         return self.base / (float(step) + 1.0)
        ...     def get_config(self):
        ...         return {"base": self.base}
        >>> InverseStep(0.1)(4)
        0.02
    """

    def __call__(self, step: Step) -> float:
        """Returns the learning rate for ``step``.

        Args:
            step: The current optimizer step.

        Returns:
            The learning rate as a Python float.

        Raises:
            NotImplementedError: Always; subclasses override this method.
        """
        raise NotImplementedError(
            f"The learning-rate schedule {type(self).__name__!r} does not implement "
            "`__call__(self, step)`; subclasses of LearningRateSchedule must override it."
        )

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments that recreate this schedule.

        Raises:
            NotImplementedError: Always; serializable subclasses override this method.
        """
        raise NotImplementedError(
            f"The learning-rate schedule {type(self).__name__!r} does not implement "
            "`get_config()`; override it to make the schedule serializable."
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LearningRateSchedule:
        """Creates a schedule from the output of :meth:`get_config`.

        Args:
            config: A dict of constructor arguments.

        Returns:
            A new schedule instance.
        """
        return cls(**config)

    def __repr__(self) -> str:
        try:
            config = self.get_config()
        except NotImplementedError:
            return object.__repr__(self)
        arguments = ", ".join(f"{key}={value!r}" for key, value in config.items())
        return f"{type(self).__name__}({arguments})"


class _RateDecay(LearningRateSchedule):
    """The shared arguments, checks and config of ExponentialDecay and InverseTimeDecay."""

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: float,
        decay_rate: float,
        staircase: bool,
        name: str | None,
    ) -> None:
        super().__init__()
        initial_learning_rate = _initial_rate(initial_learning_rate)
        real(decay_steps, "decay_steps", minimum=0, strict=True)
        real(decay_rate, "decay_rate")
        staircase = flag(staircase, "staircase")
        _check_name(name)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = name

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments (the same keys as Keras)."""
        return {
            "initial_learning_rate": _number(self.initial_learning_rate),
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


class ExponentialDecay(_RateDecay):
    """Exponential decay: ``initial_learning_rate * decay_rate ** (step / decay_steps)``.

    With ``staircase=True`` the exponent ``step / decay_steps`` is floored, so the
    learning rate drops once every ``decay_steps`` steps.

    Args:
        initial_learning_rate: The learning rate at step 0.
        decay_steps: The number of steps over which the rate is multiplied by
            ``decay_rate``. Must be > 0.
        decay_rate: The multiplicative factor per ``decay_steps`` steps.
        staircase: Whether to decay in discrete jumps.
        name: An optional name; defaults to ``"ExponentialDecay"``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``decay_steps`` is not > 0 or a number is not finite.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: float,
        decay_rate: float,
        staircase: bool = False,
        name: str | None = "ExponentialDecay",
    ) -> None:
        super().__init__(initial_learning_rate, decay_steps, decay_rate, staircase, name)

    def __call__(self, step: Step) -> float:
        """Returns the decayed learning rate at ``step`` as a Python float."""
        with np.errstate(all="ignore"):
            exponent = _f32(_read_step(step)) / _f32(self.decay_steps)
            if self.staircase:
                exponent = np.floor(exponent)
            rate = _f32(self.initial_learning_rate) * _pow(_f32(self.decay_rate), exponent)
        return _result(rate)


class PiecewiseConstantDecay(LearningRateSchedule):
    """A learning rate that is constant between step boundaries.

    The result is ``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, and ``values[-1]`` once
    ``step > boundaries[-1]``.

    As in Keras, the boundaries are converted to the type of the step before the
    comparison: for an integer step a fractional boundary is truncated toward zero
    (``2.5`` acts as ``2``); for a float step the comparison runs in float32.

    Args:
        boundaries: Strictly increasing step boundaries (at least one).
        values: The learning rates, one more than ``boundaries``.
        name: An optional name; defaults to ``"PiecewiseConstant"``.

    Raises:
        TypeError: If ``boundaries`` or ``values`` is not a sequence of real numbers.
        ValueError: If the lengths do not match, ``boundaries`` is empty or not
            strictly increasing.
    """

    def __init__(
        self,
        boundaries: Sequence[float],
        values: Sequence[float],
        name: str | None = "PiecewiseConstant",
    ) -> None:
        super().__init__()
        boundaries = real_list(boundaries, "boundaries")
        values = real_list(values, "values")
        if len(boundaries) != len(values) - 1:
            raise ValueError(
                "Argument `values` must have exactly one more entry than `boundaries`. "
                f"Received: boundaries={boundaries!r} of length {len(boundaries)}, "
                f"and values={values!r} of length {len(values)}."
            )
        if not boundaries:
            raise ValueError(
                "Argument `boundaries` must contain at least one step. "
                f"Received: boundaries={boundaries!r}, values={values!r}. "
                "For a constant learning rate pass a float instead of a schedule."
            )
        for index in range(1, len(boundaries)):
            if not boundaries[index - 1] < boundaries[index]:
                raise ValueError(
                    "Argument `boundaries` must be strictly increasing. "
                    f"Received: boundaries={boundaries!r} "
                    f"(entry {index} is {boundaries[index]!r}, after {boundaries[index - 1]!r})."
                )
        _check_name(name)
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step: Step) -> float:
        """Returns the learning rate of the interval containing ``step``."""
        value = _read_step(step)
        if isinstance(value, int):
            # Keras casts each boundary to the (integer) step dtype; a float boundary
            # becomes a float32 first and is then truncated toward zero.
            bounds: list[Any] = [
                b if isinstance(b, numbers.Integral) else int(np.trunc(_f32(b)))
                for b in self.boundaries
            ]
            position: Any = value
        else:
            bounds = [_f32(b) for b in self.boundaries]
            position = _f32(value)
        # Exactly one of these intervals holds the step; a NaN step matches none and
        # gives 0.0, as in Keras.
        if position <= bounds[0]:
            return _result(self.values[0])
        if position > bounds[-1]:
            return _result(self.values[-1])
        for low, high, rate in zip(bounds[:-1], bounds[1:], self.values[1:-1], strict=True):
            if low < position <= high:
                return _result(rate)
        return 0.0

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments (the same keys as Keras)."""
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """Polynomial decay from ``initial_learning_rate`` to ``end_learning_rate``.

    ``(initial - end) * (1 - step / decay_steps) ** power + end``, with the step capped
    at ``decay_steps``. With ``cycle=True`` the horizon is instead the first multiple of
    ``decay_steps`` not below the step (and ``decay_steps`` itself at step 0), so the
    decay restarts after every ``decay_steps`` steps.

    Args:
        initial_learning_rate: The learning rate at step 0.
        decay_steps: The length of the decay. Must be > 0.
        end_learning_rate: The learning rate reached after ``decay_steps`` steps.
        power: The exponent of the polynomial; ``1.0`` is a linear decay.
        cycle: Whether to restart the decay after ``decay_steps`` steps.
        name: An optional name; defaults to ``"PolynomialDecay"``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``decay_steps`` is not > 0 or a number is not finite.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: float,
        end_learning_rate: float = 0.0001,
        power: float = 1.0,
        cycle: bool = False,
        name: str | None = "PolynomialDecay",
    ) -> None:
        super().__init__()
        initial_learning_rate = _initial_rate(initial_learning_rate)
        real(decay_steps, "decay_steps", minimum=0, strict=True)
        real(end_learning_rate, "end_learning_rate")
        real(power, "power")
        cycle = flag(cycle, "cycle")
        _check_name(name)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.cycle = cycle
        self.name = name

    def __call__(self, step: Step) -> float:
        """Returns the decayed learning rate at ``step`` as a Python float."""
        with np.errstate(all="ignore"):
            initial = _f32(self.initial_learning_rate)
            end = _f32(self.end_learning_rate)
            position = _f32(_read_step(step))
            horizon = _f32(self.decay_steps)
            if self.cycle:
                # Step 0 uses one period; otherwise the first multiple at or above it.
                periods = _ONE32 if position == 0 else np.ceil(position / horizon)
                horizon = horizon * periods
            else:
                position = np.minimum(position, horizon)
            fraction = position / horizon
            rate = (initial - end) * _pow(_ONE32 - fraction, _f32(self.power)) + end
        return _result(rate)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments (the same keys as Keras)."""
        return {
            "initial_learning_rate": _number(self.initial_learning_rate),
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "cycle": self.cycle,
            "name": self.name,
        }


class InverseTimeDecay(_RateDecay):
    """Inverse-time decay: ``initial_learning_rate / (1 + decay_rate * step / decay_steps)``.

    With ``staircase=True`` the ratio ``step / decay_steps`` is floored.

    Args:
        initial_learning_rate: The learning rate at step 0.
        decay_steps: The step scale of the decay. Must be > 0.
        decay_rate: The decay rate.
        staircase: Whether to decay in discrete jumps.
        name: An optional name; defaults to ``"InverseTimeDecay"``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``decay_steps`` is not > 0 or a number is not finite.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: float,
        decay_rate: float,
        staircase: bool = False,
        name: str | None = "InverseTimeDecay",
    ) -> None:
        super().__init__(initial_learning_rate, decay_steps, decay_rate, staircase, name)

    def __call__(self, step: Step) -> float:
        """Returns the decayed learning rate at ``step`` as a Python float."""
        with np.errstate(all="ignore"):
            ratio = _f32(_read_step(step)) / _f32(self.decay_steps)
            if self.staircase:
                ratio = np.floor(ratio)
            denominator = _ONE32 + _f32(self.decay_rate) * ratio
            rate = _f32(self.initial_learning_rate) / denominator
        return _result(rate)


class CosineDecay(LearningRateSchedule):
    """Cosine decay, optionally after a linear warmup.

    Without warmup (``warmup_target=None``) the rate goes from
    ``initial_learning_rate`` to ``initial_learning_rate * alpha`` along half a cosine
    over ``decay_steps`` steps and then stays there.

    With a ``warmup_target`` the rate first rises linearly from
    ``initial_learning_rate`` to ``warmup_target`` over ``warmup_steps`` steps, then
    decays along the cosine from ``warmup_target`` to ``warmup_target * alpha`` over
    the next ``decay_steps`` steps.

    Args:
        initial_learning_rate: The learning rate at step 0.
        decay_steps: The length of the cosine decay. Must be > 0.
        alpha: The final learning rate as a fraction of the decay's start value.
        name: An optional name; defaults to ``"CosineDecay"``.
        warmup_target: The learning rate reached at the end of the warmup, or
            ``None`` for no warmup.
        warmup_steps: The length of the warmup (used only with a ``warmup_target``).
            Must be >= 0.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``decay_steps`` is not > 0, ``warmup_steps`` is negative or a
            number is not finite.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: float,
        alpha: float = 0.0,
        name: str | None = "CosineDecay",
        warmup_target: float | None = None,
        warmup_steps: float = 0,
    ) -> None:
        super().__init__()
        initial_learning_rate = _initial_rate(initial_learning_rate)
        real(decay_steps, "decay_steps", minimum=0, strict=True)
        real(alpha, "alpha")
        _check_name(name)
        if warmup_target is not None:
            real(warmup_target, "warmup_target")
        real(warmup_steps, "warmup_steps", minimum=0)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.alpha = alpha
        self.name = name
        self.warmup_steps = warmup_steps
        self.warmup_target = warmup_target

    def _decay(self, position: np.float32, horizon: np.float32, start: np.float32) -> np.float32:
        fraction = position / horizon
        cosine = _HALF32 * (_ONE32 + _cos(_PI32 * fraction))
        # Keras evaluates `1 - alpha` on the Python value before the float32 product.
        decayed = _f32(1 - self.alpha) * cosine + _f32(self.alpha)
        return start * decayed

    def __call__(self, step: Step) -> float:
        """Returns the learning rate at ``step`` as a Python float."""
        with np.errstate(all="ignore"):
            initial = _f32(self.initial_learning_rate)
            horizon = _f32(self.decay_steps)
            position = _f32(_read_step(step))
            if self.warmup_target is None:
                rate = self._decay(np.minimum(position, horizon), horizon, initial)
                return _result(rate)
            target = _f32(self.warmup_target)
            warmup = _f32(self.warmup_steps)
            position = np.minimum(position, horizon + warmup)
            if position < warmup:
                rate = (target - initial) * (position / warmup) + initial
            else:
                rate = self._decay(position - warmup, horizon, target)
        return _result(rate)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments (the same keys as Keras)."""
        return {
            "initial_learning_rate": _number(self.initial_learning_rate),
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "name": self.name,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
        }


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR, Loshchilov & Hutter, 2016).

    The first period decays the multiplier from 1 to ``alpha`` along half a cosine
    over ``first_decay_steps`` steps. Each following period is ``t_mul`` times longer
    than the previous one and starts from ``m_mul`` times its peak.

    Args:
        initial_learning_rate: The learning rate at step 0.
        first_decay_steps: The length of the first period. Must be > 0.
        t_mul: The growth factor of the period length. Must be > 0.
        m_mul: The factor applied to the peak learning rate at every restart.
        alpha: The final learning rate of a period as a fraction of
            ``initial_learning_rate``.
        name: An optional name; defaults to ``"SGDRDecay"``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``first_decay_steps`` or ``t_mul`` is not > 0 or a number is
            not finite.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        first_decay_steps: float,
        t_mul: float = 2.0,
        m_mul: float = 1.0,
        alpha: float = 0.0,
        name: str | None = "SGDRDecay",
    ) -> None:
        super().__init__()
        initial_learning_rate = _initial_rate(initial_learning_rate)
        real(first_decay_steps, "first_decay_steps", minimum=0, strict=True)
        real(t_mul, "t_mul", minimum=0, strict=True)
        real(m_mul, "m_mul")
        real(alpha, "alpha")
        _check_name(name)
        self.initial_learning_rate = initial_learning_rate
        self.first_decay_steps = first_decay_steps
        self.t_mul = t_mul
        self.m_mul = m_mul
        self.alpha = alpha
        self.name = name

    def __call__(self, step: Step) -> float:
        """Returns the learning rate at ``step`` as a Python float."""
        with np.errstate(all="ignore"):
            t_mul = _f32(self.t_mul)
            alpha = _f32(self.alpha)
            fraction = _f32(_read_step(step)) / _f32(self.first_decay_steps)
            if t_mul == _ONE32:
                restart = np.floor(fraction)
                fraction = fraction - restart
            else:
                # Periods grow geometrically: invert their partial sums to find the
                # current period, then the position inside it.
                restart = np.floor(_log(_ONE32 - fraction * (_ONE32 - t_mul)) / _log(t_mul))
                growth = _pow(t_mul, restart)
                elapsed = (_ONE32 - growth) / (_ONE32 - t_mul)
                fraction = (fraction - elapsed) / growth
            peak = _pow(_f32(self.m_mul), restart)
            cosine = _HALF32 * peak * (_ONE32 + _cos(_PI32 * fraction))
            decayed = (_ONE32 - alpha) * cosine + alpha
            rate = _f32(self.initial_learning_rate) * decayed
        return _result(rate)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments (the same keys as Keras)."""
        return {
            "initial_learning_rate": _number(self.initial_learning_rate),
            "first_decay_steps": self.first_decay_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "alpha": self.alpha,
            "name": self.name,
        }


# ------------------------------------------------------------------------ serialization

_BUILTINS: dict[str, type[LearningRateSchedule]] = {
    cls.__name__: cls
    for cls in (
        ExponentialDecay,
        PiecewiseConstantDecay,
        PolynomialDecay,
        InverseTimeDecay,
        CosineDecay,
        CosineDecayRestarts,
    )
}
_REGISTERED: dict[str, type] = {}
_REGISTERED_NAMES: dict[type, str] = {}

_T = TypeVar("_T", bound=type)


@overload
def register_schedule(cls: _T, *, package: str = ..., name: str | None = ...) -> _T: ...


@overload
def register_schedule(
    cls: str | None = None, *, package: str = ..., name: str | None = ...
) -> Callable[[_T], _T]: ...


def register_schedule(cls: Any = None, *, package: str = "Custom", name: str | None = None) -> Any:
    """Registers a user schedule class so that it can be serialized and deserialized.

    The class is recorded under ``"package>name"`` (``name`` defaults to the class
    name), the same key ``keras.saving.register_keras_serializable`` uses, and
    :func:`serialize` writes that key as ``registered_name``. Usable bare
    (``@register_schedule``), with keywords (``@register_schedule(package="mine")``) or,
    as in Keras, with the package as the only positional argument
    (``@register_schedule("mine")``).

    Args:
        cls: The class to register, or the package name, or ``None``.
        package: The package part of the registered name.
        name: The name part; defaults to the class name.

    Returns:
        The class itself, or a decorator when no class was given.

    Raises:
        TypeError: If the decorated object is not a ``LearningRateSchedule`` subclass,
            or ``package``/``name`` is not a string.
        ValueError: If the class does not override ``get_config()``.
    """
    if isinstance(cls, str):
        package, cls = cls, None
    if not isinstance(package, str):
        raise TypeError(
            f"Argument `package` must be a string. Received: package={package!r} "
            f"of type {type(package).__name__}."
        )
    if name is not None and not isinstance(name, str):
        raise TypeError(
            f"Argument `name` must be a string or None. Received: name={name!r} "
            f"of type {type(name).__name__}."
        )

    def decorator(target: _T) -> _T:
        if not (isinstance(target, type) and issubclass(target, LearningRateSchedule)):
            raise TypeError(
                "register_schedule expects a subclass of LearningRateSchedule. "
                f"Received: {target!r} of type {type(target).__name__}."
            )
        if target.get_config is LearningRateSchedule.get_config:
            raise ValueError(
                f"Cannot register {target.__name__!r}: it does not override "
                "`get_config()`, so it cannot be serialized."
            )
        key = f"{package}>{name if name is not None else target.__name__}"
        _REGISTERED[key] = target
        _REGISTERED_NAMES[target] = key
        return target

    return decorator if cls is None else decorator(cls)


def _plain(value: Any) -> Any:
    """Convert numpy scalars inside a config to Python numbers, as Keras does."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    return value


def serialize(schedule: LearningRateSchedule) -> dict[str, Any]:
    """Returns the Keras serialized form of a schedule.

    Built-in schedules give ``{"module": "keras.optimizers.schedules", "class_name":
    ..., "config": ..., "registered_name": None}``, the dict Keras writes, so Keras can
    read it. Other classes give their Python module, class name and registered name
    (``"package>Name"`` when registered, else the class name).

    Args:
        schedule: The schedule to serialize.

    Returns:
        A JSON-compatible dict.

    Raises:
        TypeError: If ``schedule`` is not a ``LearningRateSchedule`` or its
            ``get_config()`` does not return a dict.
    """
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(
            "serialize expects a LearningRateSchedule instance. "
            f"Received: {schedule!r} of type {type(schedule).__name__}."
        )
    cls = type(schedule)
    config = schedule.get_config()
    if not isinstance(config, dict):
        raise TypeError(
            f"`{cls.__name__}.get_config()` must return a dict. Received: {config!r} "
            f"of type {type(config).__name__}."
        )
    config = _plain(config)
    if _BUILTINS.get(cls.__name__) is cls:
        return {
            "module": KERAS_MODULE,
            "class_name": cls.__name__,
            "config": config,
            "registered_name": None,
        }
    module = None if cls.__module__ == "__main__" else cls.__module__
    return {
        "module": module,
        "class_name": cls.__name__,
        "config": config,
        "registered_name": _REGISTERED_NAMES.get(cls, cls.__name__),
    }


def _known_names(custom_objects: Mapping[str, Any]) -> str:
    names = list(_BUILTINS) + sorted(_REGISTERED) + sorted(custom_objects)
    return ", ".join(repr(name) for name in dict.fromkeys(names))


def deserialize(
    config: Mapping[str, Any] | str | LearningRateSchedule,
    custom_objects: Mapping[str, Any] | None = None,
) -> LearningRateSchedule:
    """Creates a schedule from its serialized form.

    Accepts the dict :func:`serialize` and Keras write, the older form with only
    ``class_name`` and ``config``, or a bare class name (for classes whose
    constructor needs no argument). A schedule instance is returned unchanged.

    The class is looked up by ``registered_name`` among the classes registered with
    :func:`register_schedule` and ``custom_objects``, then by ``class_name`` in
    ``custom_objects``, the registered classes and the built-in schedules.

    Args:
        config: The serialized schedule.
        custom_objects: Optional mapping from (registered or class) name to class.

    Returns:
        The schedule instance.

    Raises:
        TypeError: If ``config`` has the wrong shape or the class cannot be built
            from its config.
        ValueError: If the class name is unknown.
    """
    if isinstance(config, LearningRateSchedule):
        return config
    if custom_objects is None:
        custom_objects = {}
    if not isinstance(custom_objects, Mapping):
        raise TypeError(
            "Argument `custom_objects` must be a dict mapping names to classes. "
            f"Received: custom_objects={custom_objects!r}."
        )
    if isinstance(config, str):
        config = {"class_name": config, "config": {}}
    if not isinstance(config, Mapping):
        raise TypeError(
            "deserialize expects a dict with the keys 'class_name' and 'config'. "
            f"Received: config={config!r} of type {type(config).__name__}."
        )
    if "class_name" not in config:
        raise ValueError(
            f"The serialized schedule has no 'class_name' key. Received: config={dict(config)!r}."
        )
    class_name = config["class_name"]
    registered_name = config.get("registered_name")
    inner = config.get("config")
    inner = {} if inner is None else inner
    if not isinstance(inner, Mapping):
        raise TypeError(
            f"The 'config' entry of a serialized {class_name!r} must be a dict. "
            f"Received: {inner!r} of type {type(inner).__name__}."
        )

    # Registered and user-supplied classes come first, as in Keras.
    user = {**custom_objects, **_REGISTERED}
    cls = None
    for key in (registered_name, class_name):
        if isinstance(key, str) and key in user:
            cls = user[key]
            break
    if cls is None and isinstance(class_name, str):
        cls = _BUILTINS.get(class_name)
    if cls is None:
        raise ValueError(
            f"Unknown learning-rate schedule: class_name={class_name!r}"
            f"{'' if registered_name is None else f', registered_name={registered_name!r}'}. "
            f"Known schedules: {_known_names(custom_objects)}. Register a custom class "
            "with @register_schedule or pass it in custom_objects={'Name': cls}."
        )
    if not callable(getattr(cls, "from_config", None)):
        raise TypeError(
            f"Cannot build {class_name!r}: {cls!r} has no `from_config()` class method."
        )
    try:
        schedule: LearningRateSchedule = cls.from_config(dict(inner))
        return schedule
    except TypeError as error:
        raise TypeError(
            f"Could not build {class_name!r} from its config {dict(inner)!r}: {error}"
        ) from error
