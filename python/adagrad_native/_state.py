"""An optimizer's state in memory: copies out, checked loads in, by name or in Keras' order.

- By name: `state_dict` / `load_state_dict`, the keys `save_state` writes to a file
  (paths relative to the optimizer, e.g. "iteration", "dense_kernel_accumulator").
- In Keras' order: `save_own_variables` / `load_own_variables` (a store keyed
  "0".."N-1", which Keras' own optimizer reads and writes) and `set_weights`.
- Copies for `stateless_apply`: `state_arrays`.

Every load checks all of what it is given before it assigns anything, so a refused
load changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from adagrad_native import _checks
from adagrad_native._calls import split_named
from adagrad_native._surface import Wrappable
from adagrad_native.variables import Variable

CONFIG_KEY = "__config__"
LEARNING_RATES = ("checkpoint", "keep")


def state_key(variable: Variable) -> str:
    """A variable's key in checkpoints: its path relative to the optimizer's name.

    So renaming the optimizer keeps the keys.
    """
    prefix = f"{variable.path.split('/', 1)[0]}/"
    return variable.path[len(prefix) :] if variable.path.startswith(prefix) else variable.path


def state_entries(variables: Sequence[Variable]) -> dict[str, Variable]:
    """Variables by unique key, in order.

    A key that repeats (variables of the same name, or an inner optimizer's
    "iteration") gets "#1", "#2", ... in order of appearance, so every variable
    is stored and the keys still do not depend on the optimizer's name.
    """
    entries: dict[str, Variable] = {}
    seen: dict[str, int] = {}
    for variable in variables:
        key = state_key(variable)
        count = seen.get(key, 0)
        seen[key] = count + 1
        entries[f"{key}#{count}" if count else key] = variable
    return entries


def _one_process(optimizer: Wrappable, what: str) -> None:
    """Refuses a sharded optimizer: this rank holds only its part of the state."""
    if optimizer.sharded:
        raise TypeError(
            f"{what} reads or writes one process's whole state, but this optimizer's state is "
            "spread over the ranks of a communicator. Use adagrad_native.distributed.save_state "
            "and load_state (a folder with every rank's part, loadable at any rank count and "
            "convertible to a one-process file with to_single_process)."
        )


def state_dict(optimizer: Wrappable) -> dict[str, Any]:
    """The optimizer's state in memory: a copy of every variable, and the config.

    Keys are those of `save_state` (paths relative to the optimizer); the
    config (`get_config()`, None when it cannot be serialized) is under
    "__config__". The arrays are copies, taken under the optimizer's lock, so
    they hold one step's state even while another thread trains.

    Raises:
        ValueError: When the optimizer is not built.
    """
    _one_process(optimizer, "state_dict")
    if not optimizer.built:
        raise ValueError("The optimizer is not built: call build(variables) first.")
    with optimizer.state_lock():
        entries = state_entries(optimizer.variables)
        state: dict[str, Any] = {key: var.numpy() for key, var in entries.items()}
    try:
        config: dict[str, Any] | None = optimizer.get_config()
    except TypeError:  # e.g. a plain callable learning rate: keep the state anyway
        config = None
    state[CONFIG_KEY] = config
    return state


def load_state_dict(
    optimizer: Wrappable,
    state: Mapping[str, Any],
    variables: Any = None,
    *,
    learning_rate: str = "checkpoint",
    source: str = "state",
) -> None:
    """Assigns what `state_dict` returned, by key, after checking all of it.

    An optimizer that is not built is built from `variables` once the state is
    checked, on a copy built first (so checking needs its state's memory twice).

    Args:
        optimizer: The optimizer to load into.
        state: Arrays by key, as `state_dict` returns them ("__config__" is ignored).
        variables: The trainable variables, for an optimizer not built yet.
        learning_rate: "checkpoint" (the default, as Keras' `load_own_variables`):
            the stored learning rate replaces the current one; "keep": the
            optimizer keeps its own (e.g. the one given to its constructor).
        source: What the state came from, for messages.

    Raises:
        ValueError: Listing the missing, unexpected and mismatched entries;
            nothing is assigned (or built) then.
    """
    _one_process(optimizer, "load_state_dict")
    _checks.one_of(learning_rate, "learning_rate", LEARNING_RATES)
    stored = {k: np.asarray(v) for k, v in state.items() if k != CONFIG_KEY}
    if optimizer.built:
        _check_state(optimizer.name, optimizer.variables, stored, source)
    else:
        if variables is None:
            raise ValueError(
                "The optimizer is not built: pass its trainable variables "
                "(load_state_dict(state, variables)) or call build(variables) first."
            )
        listed, names = split_named(variables)  # an iterator is read once
        variables = dict(zip(names, listed)) if names is not None else listed
        try:  # checked on a copy, so a refused state builds nothing
            trial = copy.deepcopy(optimizer)
        except TypeError as err:  # e.g. a sharded optimizer (its state lives on many ranks)
            raise ValueError(
                f"Cannot check the state on a copy of this optimizer ({err}): build it "
                "first, or for a sharded optimizer use adagrad_native.distributed.load_state."
            ) from err
        trial.build(variables)
        _check_state(trial.name, trial.variables, stored, source)
        optimizer.build(variables)
    with optimizer.state_lock():
        entries = state_entries(optimizer.variables)
        _commit(
            [
                (var, stored[key])
                for key, var in entries.items()
                if not (key == "learning_rate" and learning_rate == "keep")
            ]
        )


def _check_state(
    name: str, variables: Sequence[Variable], stored: dict[str, np.ndarray], source: str
) -> None:
    """Raises a ValueError listing every key, shape or dtype kind that does not match."""
    entries = state_entries(variables)
    missing = sorted(set(entries) - set(stored))
    unexpected = sorted(set(stored) - set(entries))
    mismatched = [
        f"{key}: expected {var.shape} {var.dtype}, stored {stored[key].shape} {stored[key].dtype}"
        for key, var in entries.items()
        if key in stored
        and (stored[key].shape != var.shape or stored[key].dtype.kind != var.value.dtype.kind)
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"The checkpoint {source!r} does not match optimizer '{name}': "
            f"missing {missing}, unexpected {unexpected}, mismatched {mismatched}."
        )


def _commit(assignments: Sequence[tuple[Variable, Any]]) -> None:
    """Assigns checked values to their variables."""
    for variable, value in assignments:
        variable.assign(value)


def save_own_variables(optimizer: Wrappable, store: Any) -> None:
    """Writes the optimizer's variables to `store` (a dict or h5py group) under "0", "1", ...

    The keys and order are Keras', so a real Keras optimizer built on the same
    variables can load the store, and the reverse.
    """
    _one_process(optimizer, "save_own_variables")
    with optimizer.state_lock():  # a consistent snapshot, also while another thread steps
        values = [variable.numpy() for variable in optimizer.variables]
    for i, value in enumerate(values):
        store[str(i)] = value


def load_own_variables(optimizer: Wrappable, store: Any) -> None:
    """Reads the optimizer's variables from a store written by `save_own_variables` or Keras.

    Raises:
        ValueError: When the store's entries do not match the variables (Keras
            warns and loads nothing); the message lists what was expected and
            what was stored. Nothing changes when it raises.
    """
    _one_process(optimizer, "load_own_variables")
    with optimizer.state_lock():
        variables = optimizer.variables
        keys = sorted(store.keys(), key=lambda k: (len(str(k)), str(k)))
        stored = [np.asarray(store[k]) for k in keys]
        expected_keys = [str(i) for i in range(len(variables))]
        shapes_ok = len(stored) == len(variables) and all(
            a.shape == v.shape for a, v in zip(stored, variables)
        )
        if [str(k) for k in keys] != expected_keys or not shapes_ok:
            raise ValueError(
                f"Cannot load the state of optimizer '{optimizer.name}': expected "
                f"{len(variables)} entries "
                f"{[(k, v.path, v.shape) for k, v in zip(expected_keys, variables)]}; "
                f"the store has {len(stored)} "
                f"{[(str(k), a.shape) for k, a in zip(keys, stored)]}."
                + (
                    " The optimizer is not built yet: call build(variables) first."
                    if not optimizer.built
                    else ""
                )
            )
        converted = []
        for key, variable, value in zip(keys, variables, stored):
            try:  # every value converts before any is assigned
                converted.append(np.asarray(value, dtype=variable.value.dtype))
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"Cannot load the state of optimizer '{optimizer.name}': entry "
                    f"{str(key)!r} ({variable.path}) does not convert to {variable.dtype}: "
                    f"{err}. Nothing was loaded."
                ) from err
        _commit(list(zip(variables, converted)))


def set_weights(optimizer: Wrappable, weights: Sequence[Any]) -> None:
    """Assigns `weights` to the optimizer's variables, after checking count and shapes."""
    _one_process(optimizer, "set_weights")
    if not optimizer.built:
        raise ValueError(
            f"You are calling `set_weights()` on an optimizer that has not yet been built. "
            f"Please call `optimizer.build(trainable_variables)` to create the optimizer "
            f"weights before calling `set_weights()`. Optimizer: '{optimizer.name}'."
        )
    with optimizer.state_lock():
        variables = optimizer.variables
        _commit(list(zip(variables, state_arrays(weights, variables, "weights"))))


def state_arrays(
    values: Sequence[Any], variables: Sequence[Variable], what: str
) -> list[np.ndarray]:
    """Fresh C-contiguous copies of `values`, checked against `variables` (count, shapes).

    Raises:
        ValueError: Naming the argument `what` and the first entry that does not match.
    """
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


class KerasStateMethods:
    """Keras' state methods of an optimizer (and `state_dict` beside them), on its surface."""

    def stateless_apply(
        self: Wrappable,
        optimizer_variables: Sequence[Any],
        grads: Sequence[Any],
        trainable_variables: Sequence[Any],
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """One step computed on copies: neither the inputs nor the optimizer change.

        The step runs on copies of its own, through an engine bound to them; the
        optimizer's variables never point at them, so other threads never see them.

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
        values = state_arrays(optimizer_variables, self.variables, "optimizer_variables")
        trainable = state_arrays(
            trainable_variables, self.trainable_variables, "trainable_variables"
        )
        self.step_with(list(grads), stateless=(values, trainable))
        return trainable, values

    def save_own_variables(self: Wrappable, store: Any) -> None:
        """Writes `self.variables` to `store` (a dict or h5py group) under "0", "1", ...

        The keys and order are Keras', so a real Keras optimizer built on the
        same variables can load the store, and the reverse.
        """
        save_own_variables(self, store)

    def load_own_variables(self: Wrappable, store: Any) -> None:
        """Reads `self.variables` from a store written by `save_own_variables` or Keras.

        Raises:
            ValueError: When the store's entries do not match the variables (Keras
                warns and loads nothing); the message lists what was expected and
                what was stored. Nothing changes when it raises.
        """
        load_own_variables(self, store)

    def set_weights(self: Wrappable, weights: Sequence[Any]) -> None:
        """Assigns `weights` to `self.variables`, after checking count and shapes."""
        set_weights(self, weights)

    def state_dict(self: Wrappable) -> dict[str, Any]:
        """The optimizer's state in memory: copies of its variables, and its config.

        Returns:
            A plain dict keyed as `save_state` keys its file (paths relative to
            the optimizer, e.g. "iteration", "dense_kernel_accumulator"), plus
            "__config__": `get_config()` (None when it cannot be serialized).

        Raises:
            ValueError: When the optimizer is not built.
        """
        return state_dict(self)

    def load_state_dict(
        self: Wrappable,
        state: Mapping[str, Any],
        variables: Any = None,
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
        load_state_dict(self, state, variables, learning_rate=learning_rate)
