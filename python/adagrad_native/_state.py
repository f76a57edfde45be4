"""An optimizer's state in memory: copies out, checked loads in, by name or in Keras' order.

- By name: `state_dict` / `load_state_dict`, the keys `save_state` writes to a file
  (paths relative to the optimizer, e.g. "iteration", "dense_kernel_accumulator").
- In Keras' order: `save_own_variables` / `load_own_variables` (a store keyed
  "0".."N-1", which Keras' own optimizer reads and writes) and `set_weights`.
- Copies for `stateless_apply`: `state_arrays`.

Every load is all or nothing: it checks and converts all of what it is given
(`staged_values`: shapes, dtypes, and the values each variable can hold), then
assigns everything in one native call (`commit`), which a Ctrl-C cannot split.
A refused load changes nothing; a load into an optimizer that is not built
builds it once, and undoes the build when the load is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from adagrad_native import _checks
from adagrad_native._native import assign_all
from adagrad_native._surface import Wrappable
from adagrad_native.variables import Variable

CONFIG_KEY = "__config__"
LEARNING_RATES = ("checkpoint", "keep")

Staged = list[tuple[Variable, np.ndarray]]
"""Checked values, each converted to its variable's dtype, ready to `commit`."""

Reader = Callable[[dict[str, Variable]], Mapping[Any, Any]]
"""Reads the stored values by key, given the entries the optimizer expects (key -> variable)."""


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


def check_optimizer(optimizer: Any) -> None:
    """Raises a TypeError unless `optimizer` is an optimizer of this package.

    The state functions take one as their first argument (a module function,
    unlike a method, can be handed anything).
    """
    if not all(
        hasattr(optimizer, a) for a in ("built", "variables", "state_lock", "undo_point", "sharded")
    ):
        raise TypeError(
            "Argument `optimizer` must be an optimizer of this package (e.g. "
            f"adagrad_native.Adagrad). Received: optimizer={optimizer!r:.80} of type "
            f"{type(optimizer).__name__}."
        )


def check_one_process(optimizer: Wrappable, what: str) -> None:
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
        TypeError: When `optimizer` is not an optimizer of this package, or a
            sharded one.
        ValueError: When the optimizer is not built.
    """
    check_optimizer(optimizer)
    check_one_process(optimizer, "state_dict")
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


# ------------------------------------------------------------- checked values
def staged_values(
    entries: Mapping[str, tuple[Variable, Any]], *, copy: bool = True
) -> tuple[Staged, list[str]]:
    """Checks and converts values to load into variables; the one check of every loader.

    Each value must have its variable's shape and dtype family (floats, bfloat16
    included, or integers), fit the variable's dtype (no finite value that
    becomes inf or wraps around), and lie in the variable's declared range
    (`ValueRange`: e.g. accumulators are sums of squares, >= 0 and never NaN;
    iteration counts are in [0, 2**62]). An `.npz` file's bfloat16 (stored as
    2-byte voids) is read as bfloat16.

    Args:
        entries: key -> (the variable, the value to load into it). The key
            names the entry in messages.
        copy: Whether the staged arrays must be new ones (False: a value that
            needs no conversion is staged as it is, e.g. one read from a file).

    Returns:
        The staged (variable, array) pairs, for `commit`, and one sentence per
        refused key ("key: expected ..., stored ...").
    """
    staged: Staged = []
    problems: list[str] = []
    for key, (variable, value) in entries.items():
        try:
            staged.append((variable, _staged_value(variable, value, copy)))
        except _Refused as why:
            problems.append(f"{key}: {why}")
    return staged, problems


class _Refused(Exception):
    """Why a value cannot be loaded into its variable (a sentence for a message)."""


def _family(dtype: np.dtype) -> str:
    if dtype.kind == "f" or dtype.name == "bfloat16":
        return "float"
    return "integer" if dtype.kind in "iu" else f"{dtype.kind!r} kind"


def _staged_value(variable: Variable, value: Any, copy: bool) -> np.ndarray:
    target = variable.value.dtype
    want = f"expected shape {variable.shape} of {target}"
    try:
        stored = np.asarray(value)
    except Exception as err:  # an object that will not become an array
        raise _Refused(f"{want}, stored {type(value).__name__} ({err})") from err
    if stored.dtype.kind == "V" and stored.dtype.fields is None and target.name == "bfloat16":
        if stored.dtype.itemsize == 2:  # how an .npz file stores bfloat16
            stored = stored.view(target)
    if stored.shape != variable.shape or _family(stored.dtype) != _family(target):
        raise _Refused(f"{want}, stored shape {stored.shape} of {stored.dtype}")
    if _family(target) == "integer" and stored.size:
        info = np.iinfo(target)
        low, high = stored.min(), stored.max()
        if low < info.min or high > info.max:
            raise _Refused(f"{want}, stored {low if low < info.min else high}, beyond {target}")
    with np.errstate(over="ignore", invalid="ignore"):
        array = (
            np.array(stored, target, order="C", copy=True)
            if copy
            else np.asarray(stored, target, order="C")
        )
    if _family(target) == "float" and stored.dtype != target:
        overflow = np.isinf(array) & np.isfinite(stored)
        if overflow.any():
            at = _first(overflow)
            raise _Refused(f"{want}, stored {stored[at]}{_where(at)}, which is inf in {target}")
    limits = variable._value_range
    # min and max read the array once each; NaN makes both fail (the search is for messages).
    if (
        limits is not None
        and array.size
        and not (array.min() >= limits.low and array.max() <= limits.high)
    ):
        at = _first(~((array >= limits.low) & (array <= limits.high)))
        raise _Refused(
            f"expected {limits.what} in [{_shown(limits.low)}, {_shown(limits.high)}], stored "
            f"{stored[at]}{_where(at)}"
        )
    return array


def _shown(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:.8g}"


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _where(index: tuple[int, ...]) -> str:
    return f" at index {index if len(index) > 1 else index[0]}" if index else ""


def commit(staged: Staged) -> None:
    """Assigns staged values (`staged_values`) to their variables, all in one native call.

    A Ctrl-C (Python runs signal handlers between calls) lands before or after
    it, never between two variables.
    """
    assign_all([(variable.value, array) for variable, array in staged])


# ---------------------------------------------------------------- loads by key
def load_state_dict(
    optimizer: Wrappable,
    state: Mapping[str, Any],
    variables: Any = None,
    *,
    learning_rate: str = "checkpoint",
    source: str = "state",
) -> None:
    """Assigns what `state_dict` returned, by key, after checking all of it.

    An optimizer that is not built is built from `variables` first; when the
    state is refused, the build is undone.

    Args:
        optimizer: The optimizer to load into.
        state: Arrays by key, as `state_dict` returns them ("__config__" is ignored).
        variables: The trainable variables, for an optimizer not built yet.
        learning_rate: "checkpoint" (the default, as Keras' `load_own_variables`):
            the stored learning rate replaces the current one; "keep": the
            optimizer keeps its own (e.g. the one given to its constructor).
        source: What the state came from, for messages.

    Raises:
        TypeError: When `state` is not a mapping.
        ValueError: Listing the missing, unexpected and mismatched entries
            (shapes, dtypes, values the variables cannot hold); nothing is
            assigned (or built) then.
    """
    if not isinstance(state, Mapping):
        raise TypeError(
            "Argument `state` must be a mapping of arrays by key, as state_dict() returns "
            f"it. Received: state of type {type(state).__name__}."
        )
    load_by_key(
        optimizer, lambda expected: state, variables, learning_rate=learning_rate, source=source
    )


def load_by_key(
    optimizer: Wrappable,
    read: Reader,
    variables: Any,
    *,
    learning_rate: str,
    source: str,
    copy: bool = True,
) -> None:
    """The loader by key behind `load_state_dict` and `load_state`.

    Args:
        optimizer: The optimizer to load into; built from `variables` when it
            is not built (once; the build is undone when the load is refused).
        read: Gives the stored values by key ("__config__" ignored), knowing the
            entries the optimizer expects, so a file's members can be checked
            against them before they are read.
        variables: The trainable variables, for an optimizer not built yet.
        learning_rate: "checkpoint" or "keep" (see `load_state_dict`).
        source: What the state came from, for messages.
        copy: As for `staged_values` (False for values the reader made).
    """
    check_optimizer(optimizer)
    check_one_process(optimizer, "Loading a one-process state")
    _checks.one_of(learning_rate, "learning_rate", LEARNING_RATES)
    if optimizer.built:  # its entries are fixed: the file is read outside the lock
        stored = read(state_entries(optimizer.variables))
        with optimizer.state_lock():
            commit(_staged_state(optimizer, stored, learning_rate, source, copy))
        return
    if variables is None:
        raise ValueError(
            "The optimizer is not built: pass its trainable variables "
            "(load_state_dict(state, variables)) or call build(variables) first."
        )
    with optimizer.state_lock():
        undo = None if optimizer.built else optimizer.undo_point()  # None: built meanwhile
        try:
            optimizer.build(variables)
            stored = read(state_entries(optimizer.variables))
            commit(_staged_state(optimizer, stored, learning_rate, source, copy))
        except BaseException:  # also a Ctrl-C: the optimizer is as it was
            if undo is not None:
                undo()
            raise


def _staged_state(
    optimizer: Wrappable, stored: Mapping[Any, Any], learning_rate: str, source: str, copy: bool
) -> Staged:
    """Every entry of the optimizer checked against the stored values, staged for `commit`.

    Raises:
        ValueError: Listing the missing, unexpected and mismatched entries.
    """
    entries = state_entries(optimizer.variables)
    keys = {key for key in stored if key != CONFIG_KEY}
    missing = sorted(set(entries) - keys)
    unexpected = sorted(keys - set(entries), key=str)
    skipped = "learning_rate" if learning_rate == "keep" else None
    staged, mismatched = staged_values(
        {
            key: (variable, stored[key])
            for key, variable in entries.items()
            if key in keys and key != skipped
        },
        copy=copy,
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"The checkpoint {source!r} does not match optimizer '{optimizer.name}': "
            f"missing {missing}, unexpected {unexpected}, mismatched {mismatched}. "
            "Nothing was loaded."
        )
    return staged


# --------------------------------------------------------- loads in Keras' order
def save_own_variables(optimizer: Wrappable, store: Any) -> None:
    """Writes the optimizer's variables to `store` (a dict or h5py group) under "0", "1", ...

    The keys and order are Keras', so a real Keras optimizer built on the same
    variables can load the store, and the reverse.

    Raises:
        TypeError: When `store` is not a mapping-like store (`keys()` and `[key] =`).
    """
    if not (hasattr(store, "keys") and hasattr(store, "__setitem__")):
        raise TypeError(
            "Argument `store` must be a dict or an h5py group, which save_own_variables fills "
            f"under '0', '1', .... Received: store of type {type(store).__name__}."
        )
    check_one_process(optimizer, "save_own_variables")
    with optimizer.state_lock():  # a consistent snapshot, also while another thread steps
        values = [variable.numpy() for variable in optimizer.variables]
    for i, value in enumerate(values):
        store[str(i)] = value


def load_own_variables(optimizer: Wrappable, store: Any) -> None:
    """Reads the optimizer's variables from a store written by `save_own_variables` or Keras.

    Raises:
        TypeError: When `store` is not a mapping-like store (`keys()` and `[key]`).
        ValueError: When the store's entries do not match the variables (Keras
            warns and loads nothing); the message lists what was expected and
            what was stored. Nothing changes when it raises.
    """
    if not (hasattr(store, "keys") and hasattr(store, "__getitem__")):
        raise TypeError(
            "Argument `store` must be a dict or an h5py group keyed '0', '1', ..., as "
            f"save_own_variables writes it. Received: store of type {type(store).__name__}."
        )
    check_one_process(optimizer, "load_own_variables")
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
        staged, problems = staged_values(
            {f"{k} ({v.path})": (v, a) for k, v, a in zip(expected_keys, variables, stored)}
        )
        if problems:
            raise ValueError(
                f"Cannot load the state of optimizer '{optimizer.name}': {problems}. Each "
                "entry must convert to its variable; nothing was loaded."
            )
        commit(staged)


def set_weights(optimizer: Wrappable, weights: Sequence[Any]) -> None:
    """Assigns `weights` to the optimizer's variables, after checking all of them.

    Raises:
        ValueError: When the optimizer is not built, or on a count, shape,
            dtype or value that does not fit (nothing is assigned then).
    """
    check_one_process(optimizer, "set_weights")
    if not optimizer.built:
        raise ValueError(
            f"You are calling `set_weights()` on an optimizer that has not yet been built. "
            f"Please call `optimizer.build(trainable_variables)` to create the optimizer "
            f"weights before calling `set_weights()`. Optimizer: '{optimizer.name}'."
        )
    weights = _checks.iterable(weights, "weights", "arrays, one per optimizer variable")
    with optimizer.state_lock():
        variables = optimizer.variables
        if len(weights) != len(variables):
            raise ValueError(
                f"Argument `weights` must have one entry per variable: expected "
                f"{len(variables)} ({[v.path for v in variables]}), received {len(weights)}."
            )
        staged, problems = staged_values(
            {f"weights[{i}] ({v.path})": (v, w) for i, (v, w) in enumerate(zip(variables, weights))}
        )
        if problems:
            raise ValueError(
                f"Cannot set the weights of optimizer '{optimizer.name}': {problems}. Nothing "
                "was assigned."
            )
        commit(staged)


def state_arrays(
    values: Sequence[Any], variables: Sequence[Variable], what: str
) -> list[np.ndarray]:
    """Fresh C-contiguous copies of `values`, checked against `variables` (count, shapes).

    Raises:
        ValueError: Naming the argument `what` and the first entry that does not match.
    """
    values = _checks.iterable(values, what, "arrays, one per variable")
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
        grads = _checks.iterable(grads, "grads", "gradients (arrays, SparseGradients or None)")
        self.step_with(grads, stateless=(values, trainable))
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
