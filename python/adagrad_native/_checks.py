"""Argument checks shared by every public entry point, with one wording.

Each check raises `TypeError` for a value of the wrong kind and `ValueError` for
one out of range; the message names the argument, says what was expected and
repeats the value received: "Argument `x` must be ... Received: x=...".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, cast

import numpy as np


def is_bool(value: Any) -> bool:
    """Whether `value` is a Python or numpy bool (which `numbers.Real` would accept)."""
    return isinstance(value, bool | np.bool_)


def _received(name: str, value: Any, with_type: bool = False) -> str:
    kind = f" of type {type(value).__name__}" if with_type else ""
    return f"Received: {name}={value!r}{kind}."


FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32


def real(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    strict: bool = False,
    maximum: float | None = None,
    float32: bool = False,
    normal: bool = False,
) -> Any:
    """Checks a finite real number, optionally bounded; returns it unchanged.

    Args:
        value: The value to check.
        name: The argument's name, for the message.
        minimum: The lower bound, or None for none.
        strict: Whether the lower bound itself is excluded (`> minimum`).
        maximum: The (inclusive) upper bound, or None for none.
        float32: The value is used in float32 math (or stored as float32): it
            must not overflow there, where it would silently become inf.
        normal: A positive value must be a normal float32 (>= 1.1754944e-38): it
            divides (or its inverse scales) gradients, and a smaller one flushes
            to 0 or overflows them to inf, turning the variables into NaN.

    Raises:
        TypeError: When `value` is not a real number (bools are not).
        ValueError: When it is not finite or out of bounds.
    """
    if is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a real number (int or float). "
            + _received(name, value, with_type=True)
        )
    if not math.isfinite(value):
        raise ValueError(f"Argument `{name}` must be a finite number. " + _received(name, value))
    number = cast(float, value)  # compared as given: a huge int must not overflow
    if float32 and abs(number) > FLOAT32_MAX:
        raise ValueError(
            f"Argument `{name}` must be at most {FLOAT32_MAX:.6g} in magnitude: it is used "
            "in float32, where it would overflow to inf. " + _received(name, value)
        )
    if normal and 0 < abs(number) < FLOAT32_TINY:
        raise ValueError(
            f"Argument `{name}` must be at least {FLOAT32_TINY:.8g} (the smallest normal "
            "float32) when it is not 0: a smaller value is flushed to 0 or scales the "
            "gradients to inf, and the variables become NaN. " + _received(name, value)
        )
    too_low = minimum is not None and (number <= minimum if strict else number < minimum)
    too_high = maximum is not None and number > maximum
    if too_low or too_high:
        if minimum is not None and maximum is not None:
            bound = f"in [{minimum:g}, {maximum:g}]"
        elif minimum is not None:
            bound = f"{'>' if strict else '>='} {minimum:g}"
        else:
            bound = f"<= {maximum:g}"
        raise ValueError(f"Argument `{name}` must be {bound}. " + _received(name, value))
    return value


def optional_real(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    strict: bool = False,
    float32: bool = False,
    normal: bool = False,
) -> Any:
    """`real`, with None accepted (meaning "off")."""
    if value is None:
        return None
    return real(value, name, minimum=minimum, strict=strict, float32=float32, normal=normal)


def integer(value: Any, name: str, *, minimum: int, maximum: int | None = None) -> int:
    """Checks an integer in [`minimum`, `maximum`] (bools are not integers); returns an int.

    Raises:
        ValueError: For a non-integer or a value out of range (as Keras raises
            `ValueError` for its integer arguments).
    """
    integral = not is_bool(value) and isinstance(value, numbers.Integral)
    if not integral or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"Argument `{name}` must be an integer {bound}. " + _received(name, value))
    return int(value)


def optional_integer(value: Any, name: str, *, minimum: int, maximum: int | None = None) -> Any:
    """`integer`, with None and 0 accepted as "off" and returned unchanged (as Keras)."""
    off = value is None or (
        not is_bool(value) and isinstance(value, numbers.Integral) and value == 0
    )
    return value if off else integer(value, name, minimum=minimum, maximum=maximum)


def real_list(value: Any, name: str) -> list[Any] | tuple[Any, ...]:
    """Require a list, tuple or 1-d numpy array of finite real numbers."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(
                f"Argument `{name}` must be one-dimensional. "
                f"Received: {name} with shape {value.shape}."
            )
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise TypeError(
            f"Argument `{name}` must be a list or tuple of numbers. "
            f"Received: {name}={value!r} of type {type(value).__name__}."
        )
    for index, item in enumerate(value):
        if is_bool(item) or not isinstance(item, numbers.Real):
            raise TypeError(
                f"Argument `{name}` must contain only real numbers. "
                f"Received: {name}[{index}]={item!r} of type {type(item).__name__} "
                f"in {name}={value!r}."
            )
        if not math.isfinite(item):
            raise ValueError(
                f"Argument `{name}` must contain only finite numbers. "
                f"Received: {name}[{index}]={item!r} in {name}={value!r}."
            )
    return value


def flag(value: Any, name: str) -> bool:
    """Checks a Python or numpy bool; returns it as a bool.

    Raises:
        TypeError: For anything else (1 and "yes" included).
    """
    if not is_bool(value):
        raise TypeError(
            f"Argument `{name}` must be a bool (True or False). "
            + _received(name, value, with_type=True)
        )
    return bool(value)


def iterable(value: Any, name: str, what: str) -> list[Any]:
    """A list of what a list-like argument holds (an iterator is read once).

    None, a string and a single array are refused: they are not lists, or would
    iterate into something else.

    Raises:
        TypeError: Naming the argument and what it should hold.
    """
    single = isinstance(value, str | bytes | np.ndarray)
    if value is None or single or not hasattr(value, "__iter__"):
        raise TypeError(
            f"Argument `{name}` must be a list (or another iterable) of {what}. "
            f"Received: {name}={value!r:.80}"
        )
    return list(value)


def one_of(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """Checks that `value` is one of `choices`; returns it unchanged.

    Raises:
        ValueError: Naming the choices.
    """
    if value not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {tuple(choices)}. " + _received(name, value)
        )
    return value
