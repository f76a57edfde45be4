"""An `apply` call's arguments put in build order: the glue between a call and a step.

A call names its variables by position (a sequence) or by key (a mapping). This
module checks the call's shape, pairs mappings by key, finds which built variable
each variable of the call is (by identity, or by memory for another view of a
numpy array) and lays the gradients out in build order with None where a
variable has no gradient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from adagrad_native import _checks
from adagrad_native._dtypes import check_updatable
from adagrad_native.variables import Variable

_NONE_ID = id(None)  # `_NONE_ID in map(id, grads)`: a None check at C speed, safe for arrays


def describe(value: Any) -> str:
    """A short description of a variable-like object, for error messages."""
    if isinstance(value, Variable):
        return f"Variable '{value.path}' of shape {value.shape}"
    if isinstance(value, np.ndarray):
        return f"numpy array of shape {value.shape} and dtype {value.dtype}"
    return repr(value)


def split_named(variables: Any) -> tuple[list[Any], list[str] | None]:
    """The variables of a `build` call and their names.

    A mapping names its variables by its keys: plain arrays become variables of
    those names, so checkpoints are keyed by name instead of by position.

    Args:
        variables: A mapping of variables, or any iterable of them.

    Returns:
        The variables as a list, and their names (None for an iterable).

    Raises:
        ValueError: When two keys of a mapping are the same as strings.
    """
    if isinstance(variables, Mapping):
        names = [str(k) for k in variables]
        _check_unique_keys(list(variables), names, "the variables")
        return list(variables.values()), names
    return _checks.iterable(variables, "var_list", "variables"), None


def as_variables(var_list: Sequence[Any], names: list[str] | None) -> list[Variable]:
    """Validates every trainable variable, wrapping numpy arrays without copying.

    A plain array is named by `names` (a mapping's keys), else by its position.

    Raises:
        ValueError: For a variable named twice or an array the core cannot update in place.
        TypeError: For anything but a `Variable` or a numpy array.
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


class Call(NamedTuple):
    """A call's gradients and variables as lists, in the order the call named them."""

    grads: list[Any]
    variables: list[Any] | None  # None: the gradients follow the build order
    build_from: Any  # what to build from on a first call: a mapping keeps its keys


def as_lists(grads: Any, variables: Any, built_keys: list[str] | None) -> Call:
    """Checks a call's shape and turns mappings and iterables into lists.

    Either argument may be a mapping; then both must be, with the same keys (the
    variables may be omitted when the optimizer was built from a mapping).

    Args:
        grads: Gradients: a sequence or a mapping.
        variables: Variables: a sequence, a mapping or None.
        built_keys: The keys the optimizer was built with (None: not from a mapping).

    Raises:
        TypeError: When one is a mapping and the other a sequence, or an argument
            is not list-like.
        ValueError: For keys that do not pair up or collide as strings, or lengths
            that differ.
    """
    if isinstance(grads, Mapping) or isinstance(variables, Mapping):
        return _paired(grads, variables, built_keys)
    grads = _checks.iterable(
        grads, "grads", "gradients, one per variable (arrays, SparseGradients or None)"
    )
    if variables is None or not grads:  # no gradients: a no-op, as in Keras
        return Call(grads, None, None)
    variables = _checks.iterable(variables, "trainable_variables", "variables")
    if len(grads) != len(variables):
        raise ValueError(
            f"Received {len(grads)} gradients for {len(variables)} "
            "variables; pass exactly one gradient per variable."
        )
    return Call(grads, variables, variables)


def _paired(grads: Any, variables: Any, built_keys: list[str] | None) -> Call:
    if variables is None:
        if built_keys is None:
            raise ValueError(
                "`grads` is a mapping, but the optimizer was not built from a mapping of "
                "variables: pass the variables too, as a mapping with the same keys."
            )
        return Call(_by_key(grads, built_keys, "the optimizer's variables"), None, None)
    if not (isinstance(grads, Mapping) and isinstance(variables, Mapping)):
        raise TypeError(
            "`grads` and `trainable_variables` must both be mappings (with the same keys) or "
            f"both sequences; received {type(grads).__name__} and {type(variables).__name__}."
        )
    keys = [str(k) for k in variables]
    _check_unique_keys(list(variables), keys, "`trainable_variables`")
    paired = _by_key(grads, keys, "`trainable_variables`")
    return Call(paired, list(variables.values()), variables)


def _by_key(grads: Mapping[Any, Any], keys: list[str], what: str) -> list[Any]:
    names = [str(k) for k in grads]
    _check_unique_keys(list(grads), names, "`grads`")
    by_name = dict(zip(names, grads.values()))
    for key in keys:
        if key not in by_name:
            raise ValueError(f"`grads` has no entry for the key {key!r} of {what}.")
    if len(by_name) != len(keys):
        extra = next(k for k in by_name if k not in set(keys))
        raise ValueError(f"`grads` has the key {extra!r}, which is not a key of {what}.")
    return [by_name[k] for k in keys]


def _check_unique_keys(keys: list[Any], names: list[str], what: str) -> None:
    """Keys name variables as strings: two keys with one string would name one variable."""
    if len(set(names)) != len(names):
        seen: dict[str, Any] = {}
        for key, name in zip(keys, names):
            if name in seen:
                raise ValueError(
                    f"The keys {seen[name]!r} and {key!r} of {what} are the same as strings "
                    f"({name!r}); keys name variables by their string, so each must differ."
                )
            seen[name] = key


def has_none(grads: list[Any]) -> bool:
    """Whether a gradient is None (at C speed, and safe for arrays)."""
    return _NONE_ID in map(id, grads)


def none_positions(grads: list[Any]) -> list[int]:
    """The positions of the None gradients (fast when there are none)."""
    if not has_none(grads):
        return []
    return [i for i, g in enumerate(grads) if g is None]


def _array_key(array: np.ndarray) -> tuple[int, tuple[int, ...], str]:
    return (array.__array_interface__["data"][0], array.shape, array.dtype.str)


class CallOrder:
    """Maps the variables named by a call to build indices.

    A variable is known by identity (the object given to `build`, or its
    `Variable` wrapper), or, for a numpy array, by its memory: another view of
    the same buffer with the same shape and dtype names the same variable.

    Args:
        user_variables: The objects given to `build`, in build order.
        variables: Their `Variable`s, in the same order.
        keys: The keys of a mapping the optimizer was built from, else None.
    """

    # Call patterns remembered at once; a training loop uses one or a few.
    _MAX_PATTERNS = 8

    def __init__(
        self, user_variables: list[Any], variables: list[Variable], keys: list[str] | None
    ) -> None:
        self.keys = keys
        self.user_variables = user_variables
        self._variables = variables
        self._index()

    def _index(self) -> None:
        """Indexes the variables by identity and memory (again in a copy: both differ there)."""
        self._by_id = {id(v): i for i, v in enumerate(self.user_variables)}
        self._by_id.update({id(v): i for i, v in enumerate(self._variables)})
        self._by_memory = {_array_key(v.value): i for i, v in enumerate(self._variables)}
        self._identity = list(range(len(self._variables)))
        # Each entry holds the call's objects, so their ids cannot be reused by
        # other objects while it exists.
        self._cache: dict[tuple[int, ...], tuple[list[int] | None, list[Any]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "user_variables": self.user_variables,
            "_variables": self._variables,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index()

    def index_of(self, variable: Any, position: int) -> int:
        """The build index of `variable`, named at `position` of a call.

        Raises:
            ValueError: For a variable the optimizer was not built with.
        """
        index = self._by_id.get(id(variable))
        if index is None and isinstance(variable, np.ndarray):
            index = self._by_memory.get(_array_key(variable))
        if index is None:
            raise ValueError(
                f"Unknown variable at position {position}: {describe(variable)}. This optimizer "
                "can only be called for the variables it was originally built with. When "
                "working with a new set of variables, you should recreate a new optimizer "
                "instance."
            )
        return index

    def arrange(self, call: Call) -> tuple[list[Any], list[int]]:
        """The call's gradients by build index (None where a variable has none).

        Returns:
            The gradients in build order and the build indices of the call's
            variables whose gradient is None.

        Raises:
            ValueError: For a wrong count, an unknown variable or one named twice.
        """
        grads = call.grads
        if call.variables is None:
            n = len(self._variables)
            if len(grads) != n:
                raise ValueError(
                    "When passing `grads` as a list of gradient tensors, the gradients must "
                    f"match `optimizer.variables` one-to-one. Received a list of {len(grads)} "
                    f"gradients, but the optimizer is tracking {n} trainable variables."
                )
            return grads, none_positions(grads)
        order = self._order(call.variables)
        if order is None:
            return grads, none_positions(grads)
        ordered: list[Any] = [None] * len(self._variables)
        missing = []
        for i, g in zip(order, grads):
            ordered[i] = g
            if g is None:
                missing.append(i)
        return ordered, missing

    def _order(self, variables: list[Any]) -> list[int] | None:
        """The build index of each variable of a call; None when it is the build order."""
        ids = tuple(map(id, variables))
        cached = self._cache.get(ids)
        if cached is None:
            order = [self.index_of(v, position) for position, v in enumerate(variables)]
            seen: set[int] = set()
            for position, i in enumerate(order):
                if i in seen:
                    raise ValueError(
                        f"Variable '{self._variables[i].path}' appears twice "
                        f"in one call (again at position {position})."
                    )
                seen.add(i)
            cached = (None if order == self._identity else order, variables)
            if len(self._cache) > self._MAX_PATTERNS:
                self._cache.clear()
            self._cache[ids] = cached
        return cached[0]
