"""Name-keyed optimizer state checkpoints in one `.npz` file: `save_state`, `load_state`."""

from __future__ import annotations

import copy
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

from adagrad_native import _checks
from adagrad_native._mappings import split_named
from adagrad_native.variables import Variable

CONFIG_KEY = "__config__"


def state_key(variable: Variable) -> str:
    """A variable's key in checkpoints: its path relative to the optimizer's name.

    So renaming the optimizer keeps the keys.
    """
    prefix = f"{variable.path.split('/', 1)[0]}/"
    return variable.path[len(prefix) :] if variable.path.startswith(prefix) else variable.path


def _state_entries(optimizer: Any) -> dict[str, Any]:
    """The optimizer's variables by unique key, in order.

    A key that repeats (variables of the same name, or an inner optimizer's
    "iteration") gets "#1", "#2", ... in order of appearance, so every variable
    is stored and the keys still do not depend on the optimizer's name.
    """
    entries: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for variable in optimizer.variables:
        key = state_key(variable)
        count = seen.get(key, 0)
        seen[key] = count + 1
        entries[f"{key}#{count}" if count else key] = variable
    return entries


def state_dict(optimizer: Any) -> dict[str, Any]:
    """The optimizer's state in memory: a copy of every variable, and the config.

    Keys are those of `save_state` (paths relative to the optimizer); the
    config (`get_config()`, None when it cannot be serialized) is under
    "__config__". The arrays are copies, taken under the optimizer's lock, so
    they hold one step's state even while another thread trains.

    Raises:
        ValueError: When the optimizer is not built.
    """
    if not optimizer.built:
        raise ValueError("The optimizer is not built: call build(variables) first.")
    with optimizer._state_lock():
        state: dict[str, Any] = {key: var.numpy() for key, var in _state_entries(optimizer).items()}
    try:
        config: dict[str, Any] | None = optimizer.get_config()
    except TypeError:  # e.g. a plain callable learning rate: keep the state anyway
        config = None
    state[CONFIG_KEY] = config
    return state


def save_state(optimizer: Any, file: str | os.PathLike[str] | BinaryIO) -> None:
    """Writes the optimizer's variables and config to one `.npz`, atomically.

    Keys are the variables' paths relative to the optimizer (e.g.
    "iteration", "dense_kernel_accumulator"), so a checkpoint survives
    reordering the variables or renaming the optimizer. A path is written to a
    temporary name in the same folder and renamed over it, so a crash never
    leaves a half-written checkpoint; a binary file object (e.g. `io.BytesIO`)
    is written to directly.

    Args:
        optimizer: A built optimizer.
        file: The file to write (".npz" is not appended), or a binary file object.
    """
    state = state_dict(optimizer)
    config = state.pop(CONFIG_KEY)
    state[CONFIG_KEY] = np.array(json.dumps(config))
    if hasattr(file, "write"):
        np.savez(file, **state)
    else:
        write_atomically(os.fspath(file), lambda f: np.savez(f, **state))


def read_npz(path: str | BinaryIO) -> dict[str, np.ndarray]:
    """Every array of an `.npz` checkpoint (a path or a binary file object).

    Raises:
        FileNotFoundError: When there is no such file.
        ValueError: When the file is not an `.npz` archive or cannot be read (a
            corrupt entry, a header that claims an impossible size).
    """
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array (an .npy file), not a checkpoint")
        with data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except (OSError, EOFError, MemoryError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"The file {_name(path)!r} is not a checkpoint that save_state wrote: {err}."
        ) from err


def _name(file: Any) -> str:
    return os.fspath(file) if isinstance(file, str | os.PathLike) else repr(file)


def write_atomically(path: str, write: Callable[[Any], None]) -> None:
    """Writes a file so that a crash leaves either the old file or the new one.

    The content goes to a temporary file in the same folder (what an earlier
    killed write left there is removed first), is flushed to disk, renamed over
    `path`, and the folder is flushed so the rename survives a power loss. The
    file gets the permissions of a newly created file (0666 less the umask).
    """
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}.tmp-"
    for leftover in os.listdir(folder):
        if leftover.startswith(prefix):
            os.unlink(os.path.join(folder, leftover))
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    return mask


LEARNING_RATES = ("checkpoint", "keep")


def load_state(
    optimizer: Any,
    file: str | os.PathLike[str] | BinaryIO,
    variables: Any = None,
    *,
    learning_rate: str = "checkpoint",
) -> dict[str, Any] | None:
    """Loads a `save_state` checkpoint (a path or a binary file object), by name.

    Every key, shape and dtype kind is checked before anything is assigned.

    Args:
        optimizer: The optimizer to load into; built first from `variables`
            when it is not built yet.
        file: What `save_state` wrote.
        variables: The trainable variables, for an optimizer not built yet.
        learning_rate: "checkpoint" (the default, as Keras' `load_own_variables`):
            the stored learning rate replaces the current one; "keep": the
            optimizer keeps its own (e.g. the one given to its constructor).

    Returns:
        The config stored with the state (None when it could not be saved).

    Raises:
        ValueError: Listing the missing, unexpected and mismatched entries; or
            for an unbuilt optimizer without `variables`.
    """
    if not optimizer.built and variables is None:
        raise ValueError(
            "The optimizer is not built: pass its trainable variables to load_state "
            "(load_state(optimizer, file, variables)) or call build(variables) first."
        )
    stored = read_npz(file if hasattr(file, "read") else os.fspath(file))  # type: ignore[arg-type]
    config: dict[str, Any] | None = json.loads(str(stored.pop(CONFIG_KEY, "null")))
    load_state_dict(optimizer, stored, variables, learning_rate=learning_rate, source=_name(file))
    return config


def load_state_dict(
    optimizer: Any,
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
        optimizer: As for `load_state`.
        state: Arrays by key, as `state_dict` returns them ("__config__" is
            ignored).
        variables: As for `load_state`.
        learning_rate: As for `load_state`.
        source: What the state came from, for messages.

    Raises:
        ValueError: Listing the missing, unexpected and mismatched entries;
            nothing is assigned then.
    """
    _checks.one_of(learning_rate, "learning_rate", LEARNING_RATES)
    stored = {k: np.asarray(v) for k, v in state.items() if k != CONFIG_KEY}
    if optimizer.built:
        _check_state(optimizer, stored, source)
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
        _check_state(trial, stored, source)
        optimizer.build(variables)
    with optimizer._state_lock():
        for key, var in _state_entries(optimizer).items():
            if key == "learning_rate" and learning_rate == "keep":
                continue
            var.assign(stored[key])


def _check_state(optimizer: Any, stored: dict[str, np.ndarray], source: str) -> None:
    """Raises a ValueError listing every key, shape or dtype kind that does not match."""
    entries = _state_entries(optimizer)
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
            f"The checkpoint {source!r} does not match optimizer '{optimizer.name}': "
            f"missing {missing}, unexpected {unexpected}, mismatched {mismatched}."
        )
