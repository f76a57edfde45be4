"""Scale-out on MPI (through mpi4py, imported on first use): `pip install mpi4py mpich`.

- `ShardedAdagrad`, `ShardedRowWiseAdagrad`: data-parallel training with the
  optimizer state sharded over the ranks, equal bit for bit to one process
  applying the summed gradient.
- `ShardedEmbedding`: an embedding table whose rows and their state are split
  over the ranks, with collective `lookup` and `apply`.
- `save_state`, `load_state`, `to_single_process`: checkpoints with one file
  per rank and a manifest, loadable at any number of ranks, and convertible to
  and from the one-process `adagrad_native.save_state` file.
- `broadcast_variables`, `broadcast_state`, `stop_together`, `abort_on_exception`:
  equal starts, uneven data and crashes.

Every call is collective: an error on any rank is the same exception on every
rank and changes nothing; a rank that does not arrive ends the job after a
deadline (`timeout`, 600 s by default) with a message naming the call.

See docs/distributed.md.
"""

from __future__ import annotations

from adagrad_native.distributed.checkpoint import load_state, save_state, to_single_process
from adagrad_native.distributed.embedding import ShardedEmbedding
from adagrad_native.distributed.helpers import (
    abort_on_exception,
    broadcast_state,
    broadcast_variables,
    stop_together,
)
from adagrad_native.distributed.sharded import (
    ShardedAdagrad,
    ShardedOptimizer,
    ShardedRowWiseAdagrad,
)

__all__ = [
    "ShardedAdagrad",
    "ShardedEmbedding",
    "ShardedOptimizer",
    "ShardedRowWiseAdagrad",
    "abort_on_exception",
    "broadcast_state",
    "broadcast_variables",
    "load_state",
    "save_state",
    "stop_together",
    "to_single_process",
]
