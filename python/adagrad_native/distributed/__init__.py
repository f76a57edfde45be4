"""Scale-out on MPI (through mpi4py, imported on first use): `pip install mpi4py mpich`.

- `ShardedAdagrad`, `ShardedRowWiseAdagrad`: data-parallel training with the
  optimizer state sharded over the ranks, equal bit for bit to one process
  applying the summed gradient.
- `ShardedEmbedding`: an embedding table whose rows and their state are split
  over the ranks, with collective `lookup` and `apply`.
- `save_state`, `load_state`, `to_single_process`: checkpoints with one file
  per rank and a manifest, loadable at any number of ranks, and convertible to
  and from the one-process `adagrad_native.save_state` file.

See docs/distributed.md.
"""

from __future__ import annotations

from adagrad_native.distributed.checkpoint import load_state, save_state, to_single_process
from adagrad_native.distributed.embedding import ShardedEmbedding
from adagrad_native.distributed.sharded import ShardedAdagrad, ShardedRowWiseAdagrad

__all__ = [
    "ShardedAdagrad",
    "ShardedEmbedding",
    "ShardedRowWiseAdagrad",
    "load_state",
    "save_state",
    "to_single_process",
]
