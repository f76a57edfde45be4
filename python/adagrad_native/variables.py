"""Variable: a named numpy buffer that the optimizer updates in place."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from adagrad_native import _buffers, _checks
from adagrad_native._dtypes import resolve_dtype

_name_counters: dict[str, itertools.count[int]] = {}
_layout_versions = itertools.count(1)
_name_lock = threading.Lock()


def _new_name_lock() -> None:
    # A child made by fork() while another thread named a variable would
    # inherit the lock held by a thread that does not exist there.
    global _name_lock
    _name_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_name_lock)


class ValueRange(NamedTuple):
    """The values an optimizer variable can hold; loaders refuse any other.

    NaN is never in a range; `high` is inf only where a step can store inf.
    """

    what: str  # what the values are, for messages: "a step count", "sums of squares"
    low: float
    high: float


def auto_name(prefix: str) -> str:
    """Returns `prefix`, then `prefix_1`, `prefix_2`, ... (Keras' naming)."""
    with _name_lock:
        n = next(_name_counters.setdefault(prefix, itertools.count()))
    return prefix if n == 0 else f"{prefix}_{n}"


def _checked_shape(shape: Any) -> tuple[int, ...] | None:
    """None, or a tuple of dimensions >= 0 (a list or tuple of integers)."""
    if shape is None:
        return None
    dims = list(shape) if isinstance(shape, list | tuple) else None
    if dims is None or not all(
        isinstance(d, int | np.integer) and not isinstance(d, bool | np.bool_) and d >= 0
        for d in dims
    ):
        raise ValueError(
            "Argument `shape` must be a tuple (or list) of integers >= 0, or None. "
            f"Received: shape={shape!r}"
        )
    return tuple(int(d) for d in dims)


def _initial_value(initializer: Any, shape: tuple[int, ...] | None, dtype: np.dtype) -> np.ndarray:
    fills_shape = False  # a string or a number fills `shape`
    if isinstance(initializer, str):
        if shape is None:
            raise ValueError(
                f"A string initializer needs a `shape`. Received: initializer={initializer!r}, "
                "shape=None."
            )
        fills = {"zeros": 0.0, "ones": 1.0}
        if initializer not in fills:
            raise ValueError(
                f"Unknown initializer {initializer!r}; expected one of {sorted(fills)}, "
                "a number, an array or a callable(shape, dtype)."
            )
        value, fills_shape = np.asarray(fills[initializer]), True
    elif callable(initializer):
        if shape is None:
            raise ValueError("A callable initializer needs a `shape`. Received: shape=None.")
        value = np.asarray(initializer(shape, dtype=dtype.name))
    else:
        value = np.asarray(initializer)
        fills_shape = shape is not None and value.ndim == 0
    if shape is None:
        shape = value.shape
    elif not fills_shape and value.shape != tuple(shape):
        raise ValueError(
            f"The initial value has shape {value.shape}, but `shape` is {tuple(shape)}."
        )
    out = _buffers.empty(tuple(shape), dtype)
    try:
        np.copyto(out, value, casting="unsafe")  # broadcasts a fill value
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"The initial value ({value.dtype} of shape {value.shape}) does not convert to "
            f"{dtype.name}: {err}"
        ) from err
    return out


class Variable:
    """A named, trainable numpy buffer, the package's counterpart of `keras.Variable`.

    The buffer is allocated once and every update (`assign`, the optimizer's
    step) writes into it, so `variable.value` keeps the same address for the
    variable's lifetime.

    Args:
        initializer: An array-like initial value, a number (with `shape`),
            `"zeros"` / `"ones"` (with `shape`), or a callable
            `initializer(shape, dtype=...)` returning an array.
        shape: The shape; required for string and callable initializers.
        dtype: Any numpy dtype name, or `"bfloat16"` (needs `ml_dtypes`). When
            None, an array initializer keeps its dtype and anything else gets
            `"float32"` (Keras' `floatx()`). The optimizer trains float16,
            bfloat16, float32 and float64 variables.
        trainable: Whether the variable is trainable.
        name: A name without `/`; defaults to `"variable"`, `"variable_1"`, ...
        constraint: Optional callable applied after each optimizer update:
            `variable.assign(constraint(variable))`.
        overwrite_with_gradient: When True, the optimizer sets the variable to
            its gradient instead of applying Adagrad (Keras' float8 scaling use).
        aggregation: Kept for Keras compatibility; it has no effect here.
    """

    def __init__(
        self,
        initializer: Any,
        shape: tuple[int, ...] | list[int] | None = None,
        dtype: Any = None,
        trainable: bool = True,
        name: str | None = None,
        constraint: Callable[[Any], Any] | None = None,
        overwrite_with_gradient: bool = False,
        aggregation: str = "none",
    ) -> None:
        if name is not None and (not isinstance(name, str) or "/" in name):
            raise ValueError(
                f"Argument `name` must be a string without '/'. Received: name={name!r}"
            )
        if dtype is None:
            # Keras: an array keeps its dtype; numbers, lists and initializers get floatx.
            dtype = (
                getattr(initializer, "dtype", None) if not isinstance(initializer, str) else None
            )
        np_dtype = resolve_dtype("float32" if dtype is None else dtype)
        self._value = _initial_value(initializer, _checked_shape(shape), np_dtype)
        self._init(
            self._value,
            name or auto_name("variable"),
            _checks.flag(trainable, "trainable"),
            constraint,
            overwrite_with_gradient,
            aggregation,
        )

    def _init(
        self,
        value: np.ndarray,
        name: str,
        trainable: bool,
        constraint: Any,
        overwrite_with_gradient: bool,
        aggregation: str,
    ) -> None:
        self._value = value
        self.name = name
        self._path = name
        self.trainable = bool(trainable)
        self.constraint = constraint
        self.overwrite_with_gradient = overwrite_with_gradient
        self.aggregation = aggregation
        self._value_range: ValueRange | None = None  # optimizer variables: what loads may hold

    @classmethod
    def _wrap(cls, array: np.ndarray, name: str) -> Variable:
        """A Variable that shares `array`'s memory (used for plain numpy parameters)."""
        var = cls.__new__(cls)
        var._init(array, name, True, None, False, "none")
        return var

    @classmethod
    def _owned(
        cls,
        value: np.ndarray,
        name: str,
        path: str,
        aggregation: str = "none",
        trainable: bool = False,
    ) -> Variable:
        """A Variable owning `value` as is (used for optimizer variables)."""
        var = cls.__new__(cls)
        var._init(value, name, trainable, None, False, aggregation)
        var._path = path
        return var

    # Bumped whenever any variable's constraint changes, so optimizers can cache
    # which of their variables have one (and drop a native fast step, which
    # applies no constraint) instead of checking all of them on every step.
    layout_version = 0

    @property
    def constraint(self) -> Callable[[Any], Any] | None:
        """Optional callable applied after each optimizer update."""
        return self._constraint

    @constraint.setter
    def constraint(self, value: Callable[[Any], Any] | None) -> None:
        if value is not None and not callable(value):
            raise ValueError(f"Argument `constraint` must be callable. Received: {value!r}")
        self._constraint = value
        Variable.layout_version = next(_layout_versions)  # one C call: no lost update

    @property
    def overwrite_with_gradient(self) -> bool:
        """Whether the optimizer sets this variable to its gradient (read at `build`)."""
        return self._overwrite_with_gradient

    @overwrite_with_gradient.setter
    def overwrite_with_gradient(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"`overwrite_with_gradient` must be a boolean. Received: {value!r}")
        self._overwrite_with_gradient = value

    @property
    def path(self) -> str:
        """The full name: `optimizer_name/variable_name` for optimizer variables."""
        return self._path

    @property
    def value(self) -> np.ndarray:
        """The live numpy buffer (not a copy): writes to it change the variable."""
        return self._value

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape, as a tuple."""
        return self._value.shape

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype; it compares equal to its name (`v.dtype == "float32"`).

        Keras reports a name; a numpy dtype is what numpy and jax read from an
        array-like (`np.result_type`, `jnp.asarray`), and it prints as the name.
        """
        return self._value.dtype

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return self._value.ndim

    @property
    def size(self) -> int:
        """The number of elements."""
        return self._value.size

    def numpy(self) -> np.ndarray:
        """Returns a copy of the value."""
        return self._value.copy()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if dtype is None and not copy:
            return self._value
        return np.array(self._value, dtype=dtype, copy=True)

    def _checked(self, value: Any, what: str) -> np.ndarray:
        value = np.asarray(value)
        if value.shape != self.shape:
            raise ValueError(
                f"The shape of the target variable and the shape of the target value in "
                f"`variable.{what}(value)` must match. Variable '{self.path}' has shape "
                f"{self.shape}; received value.shape={value.shape}."
            )
        checked: np.ndarray = value
        return checked

    def assign(self, value: Any) -> Variable:
        """Copies `value` into the buffer (cast to the variable's dtype)."""
        self._in_place(None, value, "assign")
        return self

    def assign_add(self, value: Any) -> Variable:
        """Adds `value` in place."""
        self._in_place(np.add, value, "assign_add")
        return self

    def assign_sub(self, value: Any) -> Variable:
        """Subtracts `value` in place."""
        self._in_place(np.subtract, value, "assign_sub")
        return self

    def _in_place(self, ufunc: np.ufunc | None, value: Any, what: str) -> None:
        checked = self._checked(value, what)
        try:
            if ufunc is None:
                np.copyto(self._value, checked, casting="unsafe")
            else:
                ufunc(self._value, checked, out=self._value, casting="unsafe")
        except (TypeError, ValueError) as err:  # e.g. strings
            raise TypeError(
                f"`variable.{what}(value)`: the value ({checked.dtype}) does not convert to "
                f"the dtype of variable '{self.path}' ({self.dtype}): {err}"
            ) from err

    def __repr__(self) -> str:
        return (
            f"<Variable path={self.path}, shape={self.shape}, dtype={self.dtype}, "
            f"value={self._value}>"
        )

    def __str__(self) -> str:
        """The value, as numpy prints it: `print(opt.iterations)` prints the step count."""
        return str(self._value)

    def __format__(self, spec: str) -> str:
        """Formats the value: `f"{opt.iterations:d}"` formats the step count."""
        return format(self._value[()] if self._value.ndim == 0 else self._value, spec)

    # Scalars (e.g. `iterations`) convert like Keras variables do.
    def __int__(self) -> int:
        return int(self._value)

    def __float__(self) -> float:
        return float(self._value)

    def __index__(self) -> int:
        return int(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __getitem__(self, key: Any) -> Any:
        return self._value[key]

    def __eq__(self, other: Any) -> Any:
        return self._value == np.asarray(other)

    def __ne__(self, other: Any) -> Any:
        return self._value != np.asarray(other)

    __hash__ = object.__hash__


def _binary(op: Callable[[Any, Any], Any], reflected: bool) -> Callable[[Variable, Any], Any]:
    if reflected:
        return lambda self, other: op(np.asarray(other), self._value)
    return lambda self, other: op(self._value, np.asarray(other))


# Arithmetic reads the value, like a Keras variable in an expression.
for _name, _op in [
    ("add", np.add),
    ("sub", np.subtract),
    ("mul", np.multiply),
    ("truediv", np.true_divide),
    ("floordiv", np.floor_divide),
    ("mod", np.mod),
    ("pow", np.power),
    ("matmul", np.matmul),
    ("lt", np.less),
    ("le", np.less_equal),
    ("gt", np.greater),
    ("ge", np.greater_equal),
]:
    setattr(Variable, f"__{_name}__", _binary(_op, reflected=False))
    if _name not in ("lt", "le", "gt", "ge"):
        setattr(Variable, f"__r{_name}__", _binary(_op, reflected=True))
setattr(Variable, "__neg__", lambda self: -self._value)  # noqa: B010 - set like the rest

__all__ = ["ValueRange", "Variable"]
