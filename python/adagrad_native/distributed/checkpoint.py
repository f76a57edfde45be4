"""Checkpoints of sharded state: one file per rank plus a manifest, at any rank count.

A checkpoint is a folder::

    path/manifest.json                  the current generation, the ranks, the config,
                                        and where every entry's pieces are
    path/gen-000007/rank-00000.npz ...  each rank's part of every entry

A save writes a new generation, then replaces the manifest atomically, then
removes older generations: a crash at any point leaves the previous checkpoint
loadable, and the next save removes what the crash left. A load checks the
manifest and that the pieces cover every entry exactly once, and each rank reads
only the pieces that overlap its own part. Both are collective calls that fail
together: an error on any rank (a file it cannot write or read, an entry that
does not match, a `MemoryError`) is the same exception on every rank, and
nothing is changed (neither the state nor the previous checkpoint). The folder
must be on a file system every rank sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zipfile
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from adagrad_native._dtypes import resolve_dtype
from adagrad_native._state import commit, staged_values, state_entries
from adagrad_native._surface import Wrappable
from adagrad_native.checkpoint import (
    CONFIG_KEY,
    DTYPES_KEY,
    parse_config,
    read_npz,
    write_atomically,
    write_npz,
)
from adagrad_native.distributed import _manifest
from adagrad_native.distributed._coordinator import Coordinator, Fingerprint
from adagrad_native.distributed._places import Place, ShardedState

_PLACES = "__places__"


def save_state(optimizer: ShardedState | Wrappable, path: str | os.PathLike[str]) -> None:
    """Writes a sharded optimizer's (or table's) state as a checkpoint folder (a collective).

    Args:
        optimizer: A built `ShardedAdagrad` or `ShardedRowWiseAdagrad`, a
            `LossScaleOptimizer` of one, or a `ShardedEmbedding` (its rows and
            its optimizer's state).
        path: The checkpoint folder (created if needed).
    """
    state = _sharded_state(optimizer)
    state.coordinator.collective("save_state", lambda: _save(state, os.fspath(path)))


def _save(state: ShardedState, path: str) -> None:
    coordinator = state.coordinator
    rank = coordinator.rank
    places = state.checkpoint_places()
    current = _manifest.read(path)
    number = int(current.generation.split("-")[1]) + 1 if current else 0
    generation = f"gen-{number:06d}"
    with state.state_lock():  # one step's state, also while another thread steps
        arrays = {
            key: p.variable.value.reshape(-1).copy()
            for key, p in places.items()
            if p.role != "replicated" or rank == 0  # one copy of what every rank holds
        }
    layout = {
        key: [list(p.shape), p.lo, p.hi, p.variable.dtype.name, p.role]
        for key, p in places.items()
        if key in arrays
    }
    arrays[_PLACES] = np.array(json.dumps(layout))
    file = _manifest.rank_file(path, generation, rank)
    folder = os.path.dirname(file)
    error: Exception | None = None
    try:
        os.makedirs(folder, exist_ok=True)
        write_atomically(file, lambda f: write_npz(f, arrays))
    except Exception as err:  # every rank learns it, and the new generation goes
        error = err
    try:
        coordinator.agree(
            Fingerprint("the checkpoint being saved", {"generation": generation}), error
        )
    except Exception:  # what this rank wrote goes; the previous checkpoint stays as it was
        with contextlib.suppress(OSError):
            os.unlink(file)
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # when no other rank's file is left in it
        raise
    if rank == 0:  # every rank's file is written: the manifest makes them the checkpoint
        try:
            for name in os.listdir(folder):  # a crashed save's, at more ranks
                if name.startswith("rank-") and int(name[5:10]) >= coordinator.size:
                    os.unlink(os.path.join(folder, name))
            entries = _entries(path, generation, coordinator.size)
            manifest = _manifest.Manifest(
                generation, coordinator.size, state.checkpoint_config(), entries
            )
            _write_manifest(path, manifest)
        except Exception as err:
            error = err
            shutil.rmtree(folder, ignore_errors=True)
    coordinator.agree(error=error)  # rank 0's manifest is written, or its error is everyone's
    if rank == 0:
        for name in os.listdir(path):
            if name.startswith("gen-") and name != generation:
                shutil.rmtree(os.path.join(path, name), ignore_errors=True)


def _entries(path: str, generation: str, ranks: int) -> dict[str, _manifest.Entry]:
    """Every entry's pieces, from the places each rank file lists (rank 0, at save)."""
    entries: dict[str, _manifest.Entry] = {}
    for rank in range(ranks):
        with np.load(_manifest.rank_file(path, generation, rank)) as data:
            layout = json.loads(str(data[_PLACES]))
        for key, (shape, lo, hi, dtype, role) in layout.items():
            entry = entries.setdefault(key, _manifest.Entry(tuple(shape), dtype, role, []))
            entry.pieces.append((rank, lo, hi))
    return {k: e._replace(pieces=sorted(e.pieces, key=lambda p: p[1])) for k, e in entries.items()}


def _write_manifest(path: str, manifest: _manifest.Manifest) -> None:
    """Switches the checkpoint to a new generation: the one atomic step of a save."""
    _manifest.checked(json.loads(manifest.to_json()))  # what a load will check
    text = manifest.to_json().encode()
    write_atomically(os.path.join(path, _manifest.MANIFEST), lambda f: f.write(text))


def load_state(
    optimizer: ShardedState | Wrappable, path: str | os.PathLike[str]
) -> dict[str, Any] | None:
    """Loads a checkpoint folder (any rank count) or a one-process `save_state` file.

    A collective. Every entry is read and checked on every rank before anything
    is assigned, and every rank raises the same error when one does not match.

    Returns:
        The config stored with the state (None when there is none).
    """
    state = _sharded_state(optimizer)
    config: dict[str, Any] | None = state.coordinator.collective(
        "load_state", lambda: _load(state, os.fspath(path))
    )
    return config


def _load(state: ShardedState, path: str) -> dict[str, Any] | None:
    places = state.checkpoint_places()
    try:
        staged, config, source = _read_places(path, places)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"The checkpoint {path!r} does not match '{state.name}': {err}. Nothing was loaded."
        ) from err
    checked, problems = staged_values(
        {key: (place.variable, staged[key]) for key, place in places.items()}, copy=False
    )
    if problems:
        raise ValueError(
            f"The checkpoint {path!r} does not fit '{state.name}': {problems}. Nothing was loaded."
        )
    state.coordinator.agree(Fingerprint("the checkpoint being loaded", {"source": source}))
    with state.state_lock():
        commit(checked)
    return config


def _read_places(
    path: str, places: dict[str, Place]
) -> tuple[dict[str, np.ndarray], dict[str, Any] | None, str]:
    """This rank's part of every entry, read and checked; the config; what was read."""
    if not os.path.isdir(path):
        whole = read_npz(path)
        config = parse_config(whole.pop(CONFIG_KEY, None), path)
        _check_keys(set(whole), places)
        staged = {}
        for key, place in places.items():
            stored = whole[key]
            _check_entry(key, tuple(stored.shape), stored.dtype, place)
            staged[key] = stored.reshape(-1)[place.lo : place.hi].reshape(place.variable.shape)
        return staged, config, f"the file of {os.path.getsize(path)} bytes"
    manifest = _manifest.read(path)
    if manifest is None:
        raise ValueError(f"{path!r} has no {_manifest.MANIFEST}")
    for rank in range(manifest.ranks):
        if not os.path.exists(_manifest.rank_file(path, manifest.generation, rank)):
            raise ValueError(f"the file of rank {rank} of {manifest.generation} is missing")
    _check_keys(set(manifest.entries), places)
    files: dict[int, Any] = {}
    try:
        staged = {}
        for key, place in places.items():
            entry = manifest.entries[key]
            _check_entry(key, entry.shape, resolve_dtype(entry.dtype), place)
            staged[key] = _assemble(path, manifest, key, entry, place, files)
    finally:
        for data in files.values():
            data.close()
    return staged, manifest.config, manifest.generation


def _assemble(
    path: str,
    manifest: _manifest.Manifest,
    key: str,
    entry: _manifest.Entry,
    place: Place | None,
    files: dict[int, Any],
) -> np.ndarray:
    """This rank's range of one entry (None: all of it), from only the files that overlap it."""
    lo, hi, shape = (
        (0, entry.size, entry.shape)
        if place is None
        else (place.lo, place.hi, place.variable.shape)
    )
    out = np.empty(hi - lo, resolve_dtype(entry.dtype))
    for read in _manifest.plan(entry, lo, hi):
        data = files.get(read.rank)
        if data is None:
            data = files[read.rank] = np.load(
                _manifest.rank_file(path, manifest.generation, read.rank), allow_pickle=False
            )
        listed = json.loads(str(data[_PLACES])).get(key)
        expected = [r for r in entry.pieces if r[0] == read.rank]
        if listed is None or [(read.rank, listed[1], listed[2])] != expected:
            raise ValueError(
                f"rank {read.rank}'s file does not hold the piece of {key!r} the manifest lists"
            )
        piece = data[key]
        renamed = json.loads(str(data[DTYPES_KEY])) if DTYPES_KEY in data.files else {}
        if key in renamed:
            piece = piece.view(resolve_dtype(renamed[key]))
        if piece.shape != (listed[2] - listed[1],):
            raise ValueError(f"rank {read.rank}'s piece of {key!r} has shape {piece.shape}")
        out[read.lo - lo : read.hi - lo] = piece[read.offset : read.offset + read.hi - read.lo]
    return out.reshape(shape)


def _check_keys(stored: set[str], places: dict[str, Place]) -> None:
    missing, unexpected = sorted(set(places) - stored), sorted(stored - set(places))
    if missing or unexpected:
        raise ValueError(f"missing entries {missing}, unexpected entries {unexpected}")


def _check_entry(key: str, shape: tuple[int, ...], dtype: np.dtype, place: Place) -> None:
    if shape != tuple(place.shape):
        raise ValueError(f"{key!r} has shape {shape}, expected {tuple(place.shape)}")
    if dtype != place.variable.dtype:
        raise ValueError(f"{key!r} has dtype {dtype}, expected {place.variable.dtype}")


def to_single_process(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    parameters_out: str | os.PathLike[str] | None = None,
) -> None:
    """Converts a checkpoint folder into a one-process `save_state` file (no MPI needed).

    Args:
        path: The checkpoint folder.
        out: The optimizer state file to write (`adagrad_native.load_state` reads it).
        parameters_out: Where model parameters saved with the state go (the rows of a
            `ShardedEmbedding`), as an `.npz` by name; required when there are any.
    """
    path = os.fspath(path)
    manifest = _manifest.read(path)
    if manifest is None:
        raise ValueError(f"{path!r} is not a checkpoint folder: it has no {_manifest.MANIFEST}")
    arrays: dict[str, np.ndarray] = {}
    parameters: dict[str, np.ndarray] = {}
    files: dict[int, Any] = {}
    try:
        for key, entry in manifest.entries.items():
            target = parameters if entry.role == "parameter" else arrays
            target[key] = _assemble(path, manifest, key, entry, None, files)
    finally:
        for data in files.values():
            data.close()
    if parameters and parameters_out is None:
        raise ValueError(
            f"The checkpoint {path!r} holds model parameters ({sorted(parameters)}): pass "
            "parameters_out= to write them beside the optimizer state."
        )
    arrays[CONFIG_KEY] = np.array(json.dumps(manifest.config))
    write_atomically(os.fspath(out), lambda f: write_npz(f, arrays))
    if parameters_out is not None:
        write_atomically(os.fspath(parameters_out), lambda f: write_npz(f, parameters))


def _sharded_state(obj: ShardedState | Wrappable) -> ShardedState:
    """The object as checkpoints see it: itself, or a `LossScaleOptimizer` of a sharded one."""
    if isinstance(obj, ShardedState):
        return obj
    inner = getattr(obj, "inner_optimizer", None)
    if isinstance(inner, ShardedState):
        return _Wrapped(obj, inner)
    raise TypeError(
        "adagrad_native.distributed checkpoints take a sharded optimizer, a LossScaleOptimizer "
        "of one, or a ShardedEmbedding; for a one-process optimizer use "
        f"adagrad_native.save_state / load_state. Received: {type(obj).__name__}."
    )


class _Wrapped:
    """A `LossScaleOptimizer` over a sharded optimizer: its own variables beside the inner's.

    Keys are those of the wrapper's one-process `save_state`, so the checkpoint
    converts into a file a one-process `LossScaleOptimizer` loads.
    """

    def __init__(self, wrapper: Any, inner: ShardedState) -> None:
        self.wrapper, self.inner = wrapper, inner
        self.name: str = wrapper.name
        self.coordinator: Coordinator = inner.coordinator

    def state_lock(self) -> AbstractContextManager[None]:
        lock: AbstractContextManager[None] = self.wrapper.state_lock()
        return lock

    def checkpoint_places(self) -> dict[str, Place]:
        inner = {id(p.variable): p for p in self.inner.checkpoint_places().values()}
        places = {}
        for key, variable in state_entries(self.wrapper.variables).items():
            place = inner.get(id(variable))
            if place is None:  # the wrapper's own: the same on every rank
                place = Place(variable.shape, 0, variable.size, variable, "replicated")
            places[key] = place
        return places

    def checkpoint_config(self) -> dict[str, Any] | None:
        try:
            config: dict[str, Any] = self.wrapper.get_config()
        except TypeError:
            return None
        return config
