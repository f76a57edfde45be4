"""Name-keyed optimizer state checkpoints in one `.npz` file: `save_state`, `load_state`."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

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


def save_state(optimizer: Any, path: str | os.PathLike[str]) -> None:
    """Writes the optimizer's variables and config to one `.npz`, atomically.

    Keys are the variables' paths relative to the optimizer (e.g.
    "iteration", "dense_kernel_accumulator"), so a checkpoint survives
    reordering the variables or renaming the optimizer. The file is written to
    a temporary name in the same folder and renamed over `path`, so a crash
    never leaves a half-written checkpoint.

    Args:
        optimizer: A built optimizer.
        path: The file to write (".npz" is not appended).
    """
    if not optimizer.built:
        raise ValueError("save_state needs a built optimizer: call build(variables) first.")
    with optimizer._state_lock():  # a consistent snapshot, also while another thread steps
        arrays = {key: var.numpy() for key, var in _state_entries(optimizer).items()}
    try:
        config = json.dumps(optimizer.get_config())
    except TypeError:  # e.g. a plain callable learning rate: keep the state anyway
        config = "null"
    arrays[CONFIG_KEY] = np.array(config)
    write_atomically(os.fspath(path), lambda f: np.savez(f, **arrays))


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an `.npz` checkpoint.

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
            f"The file {path!r} is not a checkpoint that save_state wrote: {err}."
        ) from err


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


def load_state(optimizer: Any, path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Loads a `save_state` checkpoint into a built optimizer, by name.

    Every key, shape and dtype kind is checked before anything is assigned.

    Returns:
        The config stored with the state (None when it could not be saved).

    Raises:
        ValueError: Listing the missing, unexpected and mismatched entries.
    """
    if not optimizer.built:
        raise ValueError("load_state needs a built optimizer: call build(variables) first.")
    entries = _state_entries(optimizer)
    stored = read_npz(os.fspath(path))
    config: dict[str, Any] | None = json.loads(str(stored.pop(CONFIG_KEY, "null")))
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
            f"The checkpoint {os.fspath(path)!r} does not match optimizer '{optimizer.name}': "
            f"missing {missing}, unexpected {unexpected}, mismatched {mismatched}."
        )
    with optimizer._state_lock():
        for key, var in entries.items():
            var.assign(stored[key])
    return config
