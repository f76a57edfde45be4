"""Which built variable each variable of an `apply` call is."""

from __future__ import annotations

from typing import Any

import numpy as np

from adagrad_native.variables import Variable


def describe(value: Any) -> str:
    """A short description of a variable-like object, for error messages."""
    if isinstance(value, Variable):
        return f"Variable '{value.path}' of shape {value.shape}"
    if isinstance(value, np.ndarray):
        return f"numpy array of shape {value.shape} and dtype {value.dtype}"
    return repr(value)


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
    """

    # Call patterns remembered at once; a training loop uses one or a few.
    _MAX_PATTERNS = 8

    def __init__(self, user_variables: list[Any], variables: list[Variable]) -> None:
        self._variables = variables
        self._by_id = {id(v): i for i, v in enumerate(user_variables)}
        self._by_id.update({id(v): i for i, v in enumerate(variables)})
        self._by_memory = {_array_key(v.value): i for i, v in enumerate(variables)}
        self._identity = list(range(len(variables)))
        # Each entry holds the call's objects, so their ids cannot be reused by
        # other objects while it exists.
        self._cache: dict[tuple[int, ...], tuple[list[int] | None, list[Any]]] = {}

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

    def order(self, variables: list[Any]) -> list[int] | None:
        """The build index of each variable of a call; None when it is the build order.

        Raises:
            ValueError: For an unknown variable or one named twice.
        """
        ids = tuple(map(id, variables))
        cached = self._cache.get(ids)
        if cached is None:
            cached = (self._order(variables), variables)
            if len(self._cache) > self._MAX_PATTERNS:
                self._cache.clear()
            self._cache[ids] = cached
        return cached[0]

    def _order(self, variables: list[Any]) -> list[int] | None:
        order = [self.index_of(v, position) for position, v in enumerate(variables)]
        seen: set[int] = set()
        for position, i in enumerate(order):
            if i in seen:
                raise ValueError(
                    f"Variable '{self._variables[i].path}' appears twice "
                    f"in one call (again at position {position})."
                )
            seen.add(i)
        return None if order == self._identity else order
