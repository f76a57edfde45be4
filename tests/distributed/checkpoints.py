"""Checkpoint round trips across rank counts, run on every MPI rank.

`mpiexec -n N python -m tests.distributed.checkpoints save DIR` trains three
steps at N ranks and saves a checkpoint folder plus the parameters;
`... resume STATE PARAMS SAVED_RANKS` loads STATE (a folder saved at any rank
count, or a one-process `save_state` file) at N ranks, trains two more steps,
and compares with one process that saw the same summed gradients. Rank 0
prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from mpi4py import MPI

import adagrad_native as an
from adagrad_native import distributed
from tests.distributed.scenarios import _compare_slots, _gradients, _summed

SHAPES = [(300, 64), (70_000,), (17, 29), ()]
KWARGS = dict(clipnorm=1.0, use_ema=True, weight_decay=0.01)


def initial() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def reference(saved_ranks: int, resumed_ranks: int, steps: int = 5):
    """One process: three steps of `saved_ranks` ranks' sums, then of `resumed_ranks`."""
    opt = an.Adagrad(0.05, **KWARGS)
    variables = [an.Variable(a, name=f"w{i}") for i, a in enumerate(initial())]
    for step in range(steps):
        ranks = saved_ranks if step < 3 else resumed_ranks
        by_rank = [_gradients(SHAPES, np.float32, step, r, set()) for r in range(ranks)]
        opt.apply(_summed(by_rank, False), variables)
    return opt, variables


def sharded(comm) -> tuple[distributed.ShardedAdagrad, list[an.Variable]]:
    opt = distributed.ShardedAdagrad(0.05, comm=comm, reduction="ordered", **KWARGS)
    variables = [an.Variable(a, name=f"w{i}") for i, a in enumerate(initial())]
    opt.build(variables)
    return opt, variables


def train(opt, variables, comm, steps) -> None:
    for step in steps:
        opt.apply(_gradients(SHAPES, np.float32, step, comm.Get_rank(), set()), variables)


def main(args: list[str]) -> int:
    comm = MPI.COMM_WORLD
    an.set_num_threads(1)
    problems: list[str] = []
    if args[0] == "save":
        folder = args[1]
        opt, variables = sharded(comm)
        train(opt, variables, comm, range(3))
        distributed.save_state(opt, folder)
        if comm.Get_rank() == 0:
            np.savez(os.path.join(folder, "params.npz"), *[v.value for v in variables])
    else:
        state, params, saved_ranks = args[1], args[2], int(args[3])
        opt, variables = sharded(comm)
        with np.load(params) as data:
            for i, v in enumerate(variables):
                v.assign(data[f"arr_{i}"])
        distributed.load_state(opt, state)
        train(opt, variables, comm, range(3, 5))
        ref, ref_vars = reference(saved_ranks, comm.Get_size())
        problems += [
            f"parameter {a.name} differs"
            for a, b in zip(variables, ref_vars)
            if a.value.tobytes() != b.value.tobytes()
        ]
        problems += _compare_slots(opt, ref)
    gathered = comm.gather(problems)
    if comm.Get_rank() == 0:
        print(json.dumps({"problems": [p for ps in gathered for p in ps]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
