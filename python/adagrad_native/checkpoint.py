"""Name-keyed optimizer state checkpoints in one `.npz` file: `save_state`, `load_state`.

The file holds what `state_dict` returns (`_state.py`): every optimizer variable
by its key, and the config as JSON under "__config__".
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from adagrad_native._dtypes import resolve_dtype
from adagrad_native._state import CONFIG_KEY, load_state_dict, state_dict
from adagrad_native._surface import Wrappable

__all__ = ["CONFIG_KEY", "load_state", "read_npz", "save_state", "write_atomically", "write_npz"]
DTYPES_KEY = "__dtypes__"


def save_state(optimizer: Wrappable, file: str | os.PathLike[str] | BinaryIO) -> None:
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
        write_npz(file, state)
    else:
        write_atomically(os.fspath(file), lambda f: write_npz(f, state))


def write_npz(file: Any, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez` that keeps dtypes numpy cannot name (bfloat16) by their bits and name.

    Such an array is stored as unsigned integers of its size, and its dtype's
    name under "__dtypes__"; `read_npz` restores it.
    """
    stored, renamed = {}, {}
    for key, array in arrays.items():
        array = np.asarray(array)
        if array.dtype.kind == "V" and array.dtype.names is None:  # e.g. ml_dtypes' bfloat16
            renamed[key] = array.dtype.name
            array = array.view(f"u{array.dtype.itemsize}")
        stored[key] = array
    if renamed:
        stored[DTYPES_KEY] = np.array(json.dumps(renamed))
    np.savez(file, **stored)  # type: ignore[arg-type]


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
            arrays = {key: data[key] for key in data.files}
        renamed = json.loads(str(arrays.pop(DTYPES_KEY, "{}")))
        for key, name in renamed.items():
            arrays[key] = arrays[key].view(resolve_dtype(name))
        return arrays
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


def load_state(
    optimizer: Wrappable,
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
