"""Name-keyed optimizer state checkpoints in one `.npz` file: `save_state`, `load_state`.

The file holds what `state_dict` returns (`_state.py`): every optimizer variable
by its key, and the config as JSON under "__config__". Reading checks every
member's header against the optimizer before it reads (or decompresses) any
data: a member's size must be what its header declares, its shape the
variable's, and no member may appear twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from adagrad_native._dtypes import resolve_dtype
from adagrad_native._state import (
    CONFIG_KEY,
    check_one_process,
    check_optimizer,
    load_by_key,
    state_dict,
)
from adagrad_native._surface import Wrappable
from adagrad_native.variables import Variable

__all__ = ["CONFIG_KEY", "load_state", "read_npz", "save_state", "write_atomically", "write_npz"]
DTYPES_KEY = "__dtypes__"

_NPY_MAGIC = b"\x93NUMPY"


def save_state(optimizer: Wrappable, file: str | os.PathLike[str] | BinaryIO) -> None:
    """Writes the optimizer's variables and config to one `.npz`, atomically.

    Keys are the variables' paths relative to the optimizer (e.g.
    "iteration", "dense_kernel_accumulator"), so a checkpoint survives
    reordering the variables or renaming the optimizer. A path is written to a
    temporary name in the same folder and renamed over it, so a crash never
    leaves a half-written checkpoint; a binary file object (e.g. `io.BytesIO`,
    a pipe) is written to directly.

    Args:
        optimizer: A built optimizer.
        file: The file to write (".npz" is not appended), or a binary file
            object open for writing.

    Raises:
        TypeError: For an `optimizer` or `file` of another kind (a file must be
            a path or a binary file object), or a sharded optimizer.
        ValueError: When the optimizer is not built, `file` is empty, a
            directory or a file object not open for writing.
        FileNotFoundError: When the folder of `file` does not exist.
    """
    check_optimizer(optimizer)
    check_one_process(optimizer, "save_state")
    _check_writable(file)
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


def _check_writable(file: Any) -> None:
    if hasattr(file, "write"):
        if isinstance(file, io.TextIOBase) or "b" not in getattr(file, "mode", "b"):
            raise TypeError(
                f"Argument `file` must be opened in binary mode ('wb'); received the text "
                f"stream {file!r}."
            )
        writable = getattr(file, "writable", None)
        if callable(writable) and not writable():
            raise ValueError(f"Argument `file` is not open for writing: {file!r}.")
        return
    if not isinstance(file, str | os.PathLike):
        raise TypeError(
            "Argument `file` must be a path (str or os.PathLike) or a binary file object "
            f"open for writing. Received: file={file!r} of type {type(file).__name__}."
        )
    path = os.fspath(file)
    if not path:
        raise ValueError("Argument `file` is an empty path; name the file to write.")
    if os.path.isdir(path):
        raise ValueError(f"Cannot save to {path!r}: it is a directory; name a file in it.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot save to {path!r}: the folder {folder!r} does not exist.")


def read_npz(
    path: str | BinaryIO, expected: Mapping[str, Variable] | None = None
) -> dict[str, np.ndarray]:
    """Every array of an `.npz` checkpoint (a path or a binary file object).

    Each member's header is read first: a member whose size is not what its
    header declares, an object array, or a member that appears twice is
    refused. Arrays `write_npz` stored by their bits get their dtype back.
    With `expected`, a member whose declared shape is not its
    variable's, or that names no variable, is not read at all: it is returned
    as a stand-in of its declared shape and dtype (no memory), for the caller's
    check to name.

    Args:
        path: A path, or a binary file object (read once; one that cannot seek
            is read into memory first).
        expected: The entries the reader's optimizer has, by key.

    Raises:
        FileNotFoundError: When there is no such file.
        TypeError: When `path` is a text stream or not a path or file object.
        ValueError: When the file is not an `.npz` archive or cannot be read (a
            corrupt or duplicate member, a header that claims another size).
    """
    name = _name(path)
    try:
        with _opened(path) as file, zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            names = [m.filename for m in members]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"it holds the member(s) {twice} more than once")
            arrays = {
                member.filename.removesuffix(".npy"): _member(archive, member, expected)
                for member in members
            }
            return _restore_dtypes(arrays)
    except (FileNotFoundError, TypeError):
        raise
    except (
        OSError,
        EOFError,
        MemoryError,
        ValueError,
        RuntimeError,  # an encrypted member
        NotImplementedError,  # a zip version or compression numpy's zipfile cannot read
        zipfile.BadZipFile,
    ) as err:
        raise ValueError(
            f"The file {name!r} is not a checkpoint that save_state wrote: {err}."
        ) from err


@contextlib.contextmanager
def _opened(file: Any) -> Iterator[Any]:
    """A path opened for reading, or a binary file object; seekable, as zipfile needs."""
    if hasattr(file, "read"):
        if isinstance(file, io.TextIOBase):
            raise TypeError(f"Argument `file` must be opened in binary mode ('rb'): {file!r}.")
        seekable = getattr(file, "seekable", None)
        if not (callable(seekable) and seekable()):
            file = io.BytesIO(_binary(file.read(), file))  # a pipe or a socket
        _check_not_npy(file)
        yield file
    elif isinstance(file, str | os.PathLike):
        if os.path.isdir(file):
            raise ValueError("it is a directory")
        with open(file, "rb") as opened:
            _check_not_npy(opened)
            yield opened
    else:
        raise TypeError(
            "Argument `file` must be a path (str or os.PathLike) or a binary file object. "
            f"Received: file={file!r} of type {type(file).__name__}."
        )


def _binary(data: Any, file: Any) -> bytes:
    if not isinstance(data, bytes):
        raise TypeError(f"Argument `file` must be opened in binary mode ('rb'): {file!r}.")
    return data


def _check_not_npy(file: Any) -> None:
    start = _binary(file.read(len(_NPY_MAGIC)), file)
    if start == _NPY_MAGIC:
        raise ValueError("it holds a single array (an .npy file), not a checkpoint")
    file.seek(-len(start), io.SEEK_CUR)


def _member(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, expected: Mapping[str, Variable] | None
) -> np.ndarray:
    """One member's array, after its header; a stand-in when `expected` does not want it."""
    with archive.open(member) as data:
        version = np.lib.format.read_magic(data)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(data)
        header = data.tell()
    if dtype.hasobject:
        raise ValueError(f"the member {member.filename!r} holds Python objects")
    count = int(np.prod(shape, dtype=object))
    declared = header + count * dtype.itemsize
    if member.file_size != declared:
        raise ValueError(
            f"the member {member.filename!r} holds {member.file_size} bytes, but its header "
            f"declares {declared} (shape {shape} of {dtype})"
        )
    key = member.filename.removesuffix(".npy")
    wanted = (
        expected is None
        or key in (CONFIG_KEY, DTYPES_KEY)
        or (key in expected and tuple(shape) == expected[key].shape)
    )
    if not wanted:  # named in the caller's message by shape and dtype, never read
        return np.broadcast_to(np.zeros((), dtype), shape)
    with archive.open(member) as data:
        array: np.ndarray = np.lib.format.read_array(data, allow_pickle=False)
    return array


def _restore_dtypes(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Gives the arrays `write_npz` stored by their bits their dtype back."""
    stored = arrays.pop(DTYPES_KEY, None)
    if stored is None:
        return arrays
    renamed = json.loads(str(stored)) if stored.shape == () else None
    if not isinstance(renamed, dict):
        raise ValueError(f"its member {DTYPES_KEY!r} is not a JSON object of dtype names")
    for key, name in renamed.items():
        if key not in arrays or name != "bfloat16" or arrays[key].dtype != np.uint16:
            raise ValueError(
                f"its member {DTYPES_KEY!r} names {name!r} for {key!r}, which is not a uint16 "
                "member holding bfloat16 bits"
            )
        arrays[key] = arrays[key].view(resolve_dtype(name))
    return arrays


def _name(file: Any) -> str:
    return os.fspath(file) if isinstance(file, str | os.PathLike) else repr(file)


def write_atomically(path: str, write: Callable[[Any], None]) -> None:
    """Writes a file so that a crash leaves either the old file or the new one.

    The content goes to a temporary file in the same folder, is flushed to
    disk, renamed over `path`, and the folder is flushed so the rename survives
    a power loss. The file gets the permissions of a newly created file (0666
    less the umask). A writer holds a lock on its temporary file until the
    rename, so what a killed write left (nobody holds its lock) is removed,
    and saves to the same path from other threads or processes are not: the
    last rename wins, each file whole.
    """
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}.tmp-"
    for leftover in os.listdir(folder):
        if leftover.startswith(prefix):
            _remove_if_abandoned(os.path.join(folder, leftover))
    fd, tmp = _locked_temporary(folder, prefix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # before the close releases the lock
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


def _locked_temporary(folder: str, prefix: str) -> tuple[int, str]:
    """A new temporary file in `folder`, locked by this writer (fd, path)."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=prefix, dir=folder)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:  # not removed as a leftover before the lock was taken
            return fd, tmp
        os.close(fd)


def _remove_if_abandoned(path: str) -> None:
    """Removes a temporary file that no writer holds (one a killed save left)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # a save in progress
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    finally:
        os.close(fd)


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

    Every member is checked against the optimizer (its header before its
    data), and every value against its variable, before anything is
    assigned; then everything is assigned at once. A refused checkpoint
    changes nothing, also when the optimizer was built for it.

    Args:
        optimizer: The optimizer to load into; built first from `variables`
            when it is not built yet.
        file: What `save_state` wrote: a path, or a binary file object (one
            that cannot seek, such as a pipe, is read into memory first).
        variables: The trainable variables, for an optimizer not built yet.
        learning_rate: "checkpoint" (the default, as Keras' `load_own_variables`):
            the stored learning rate replaces the current one; "keep": the
            optimizer keeps its own (e.g. the one given to its constructor).

    Returns:
        The config stored with the state (None when it could not be saved).

    Raises:
        FileNotFoundError: When there is no such file.
        TypeError: For a `file` that is neither a path nor a binary file object.
        ValueError: Listing the missing, unexpected and mismatched entries
            (shapes, dtypes, values the variables cannot hold); for a file
            that is not a checkpoint; or for an unbuilt optimizer without
            `variables`.
    """
    check_optimizer(optimizer)
    if not optimizer.built and variables is None:
        raise ValueError(
            "The optimizer is not built: pass its trainable variables to load_state "
            "(load_state(optimizer, file, variables)) or call build(variables) first."
        )
    source = _name(file)
    config: list[dict[str, Any] | None] = []

    def read(expected: dict[str, Variable]) -> dict[str, np.ndarray]:
        stored = read_npz(file, expected)  # type: ignore[arg-type]
        config.append(parse_config(stored.pop(CONFIG_KEY, None), source))
        return stored

    load_by_key(optimizer, read, variables, learning_rate=learning_rate, source=source, copy=False)
    return config[-1]


def parse_config(stored: np.ndarray | None, source: str) -> dict[str, Any] | None:
    """The config a checkpoint stores (JSON text, "null" when it had none).

    Raises:
        ValueError: When it is not a JSON object (or null).
    """
    if stored is None:
        return None
    problem = None
    if stored.shape != () or stored.dtype.kind != "U":
        problem = f"a {stored.dtype} array of shape {stored.shape}, not one string"
    else:
        try:
            config = json.loads(str(stored))
        except (ValueError, RecursionError) as err:  # RecursionError: nested too deep
            problem = f"not JSON ({type(err).__name__}: {err})"
        else:
            if config is None or isinstance(config, dict):
                return config
            problem = f"JSON of a {type(config).__name__}, not of an object"
    raise ValueError(f"The config stored in {source!r} is {problem}; nothing was loaded.")
