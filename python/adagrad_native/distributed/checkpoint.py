"""Checkpoints of sharded optimizers: one file per rank plus a manifest, at any rank count.

A checkpoint is a folder::

    path/manifest.json          which generation is current, the ranks, the config
    path/gen-000007/rank-00000.npz ...   each rank's shard of every slot

A save writes a new generation, then replaces the manifest atomically, then
removes older generations: a crash at any point leaves the previous
checkpoint loadable, and the next save removes what the crash left. Each rank
file holds, per slot, this rank's elements of the flat slot and where they go
(`lo`, `hi` of the whole slot's `shape`), so a checkpoint loads at any number of
ranks, and converts to and from the one-process `save_state` file.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from adagrad_native._surface import ShardedState
from adagrad_native.checkpoint import CONFIG_KEY, read_npz, write_atomically

_MANIFEST = "manifest.json"
_FORMAT = 1


def save_state(optimizer: ShardedState, path: str | os.PathLike[str]) -> None:
    """Writes a sharded optimizer's (or table's) state as a checkpoint folder (a collective).

    Args:
        optimizer: A built `ShardedAdagrad` or `ShardedRowWiseAdagrad`, or a
            `ShardedEmbedding` (its rows and its optimizer's state).
        path: The checkpoint folder (created if needed).
    """
    places = optimizer.checkpoint_places()  # raises on every rank when not built
    comm = optimizer.comm
    rank, size = comm.Get_rank(), comm.Get_size()
    path = os.fspath(path)
    current = _read_manifest(path) if rank == 0 else None
    number = int(current["generation"].split("-")[1]) + 1 if current else 0
    generation = comm.bcast(f"gen-{number:06d}")
    folder = os.path.join(path, generation)
    if rank == 0:
        os.makedirs(path, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)  # left by a crashed save
        os.makedirs(folder)
    comm.Barrier()
    with optimizer.state_lock():  # a consistent snapshot, also while another thread steps
        arrays = {key: var.value.reshape(-1).copy() for key, (_, _, _, var) in places.items()}
    layout = {key: [list(shape), lo, hi] for key, (shape, lo, hi, _) in places.items()}
    arrays["__places__"] = np.array(json.dumps(layout))
    problem = None
    try:
        _write_npz(os.path.join(folder, f"rank-{rank:05d}.npz"), arrays)
    except OSError as err:
        problem = str(err)
    for other_rank, other in enumerate(comm.allgather(problem)):  # also the barrier
        if other is not None:
            raise OSError(
                f"Rank {other_rank} could not write its part of the checkpoint "
                f"{path!r}: {other}. The previous checkpoint is unchanged."
            )
    if rank == 0:
        config = optimizer.checkpoint_config()
        manifest = {"format": _FORMAT, "generation": generation, "ranks": size, "config": config}
        _write_manifest(path, manifest)
        for name in os.listdir(path):
            if name.startswith("gen-") and name != generation:
                shutil.rmtree(os.path.join(path, name), ignore_errors=True)
    comm.Barrier()


def load_state(optimizer: ShardedState, path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Loads a checkpoint folder (any rank count) or a one-process `save_state` file.

    A collective. Every entry is checked on every rank before anything is
    assigned, and every rank raises the same error when one does not match.

    Returns:
        The config stored with the state (None when it could not be saved).
    """
    places = optimizer.checkpoint_places()  # raises on every rank when not built
    comm = optimizer.comm
    path = os.fspath(path)
    problem, config, chosen = None, None, {}
    try:
        whole, config = _read_whole(path)
        for key, (shape, lo, hi, var) in places.items():
            stored = whole.get(key)
            if stored is None:
                raise ValueError(f"missing {key!r}")
            if tuple(stored.shape) != tuple(shape):
                raise ValueError(f"{key!r} has shape {stored.shape}, expected {shape}")
            chosen[key] = stored.reshape(-1)[lo:hi].reshape(var.shape)
        unexpected = sorted(set(whole) - set(places))
        if unexpected:
            raise ValueError(f"unexpected entries {unexpected}")
    except (OSError, ValueError, KeyError) as err:
        problem = f"{err}"
    for rank, other in enumerate(comm.allgather(problem)):
        if other is not None:
            raise ValueError(
                f"The checkpoint {path!r} does not match '{optimizer.name}' "
                f"(rank {rank}): {other}. Nothing was loaded."
            )
    with optimizer.state_lock():
        for key, (_, _, _, var) in places.items():
            var.assign(chosen[key])
    return config


def to_single_process(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Converts a checkpoint folder into a one-process `save_state` file (no MPI needed)."""
    whole, config = _read_whole(os.fspath(path))
    arrays = dict(whole)
    arrays[CONFIG_KEY] = np.array(json.dumps(config))
    _write_npz(os.fspath(out), arrays)


def _read_whole(path: str) -> tuple[dict[str, np.ndarray], Any]:
    """Every slot, whole, from a checkpoint folder or a one-process file; and the config."""
    if not os.path.isdir(path):
        stored = read_npz(path)
        config = json.loads(str(stored.pop(CONFIG_KEY, "null")))
        return stored, config
    manifest = _read_manifest(path)
    if manifest is None:
        raise ValueError(f"{path!r} has no {_MANIFEST}")
    folder = os.path.join(path, manifest["generation"])
    whole: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for rank in range(manifest["ranks"]):
        data = read_npz(os.path.join(folder, f"rank-{rank:05d}.npz"))
        places = json.loads(str(data.pop("__places__")))
        for key, (shape, lo, hi) in places.items():
            if key not in whole:
                whole[key] = np.zeros(int(np.prod(shape)), data[key].dtype)
                shapes[key] = tuple(shape)
            whole[key][lo:hi] = data[key]
    return {key: a.reshape(shapes[key]) for key, a in whole.items()}, manifest["config"]


def _read_manifest(path: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(path, _MANIFEST)) as f:
            manifest: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        return None
    return manifest


def _write_manifest(path: str, manifest: dict[str, Any]) -> None:
    """Switches the checkpoint to a new generation: the one atomic step of a save."""
    write_atomically(
        os.path.join(path, _MANIFEST), lambda f: f.write(json.dumps(manifest).encode())
    )


def _write_npz(path: str, arrays: dict[str, Any]) -> None:
    write_atomically(path, lambda f: np.savez(f, **arrays))
