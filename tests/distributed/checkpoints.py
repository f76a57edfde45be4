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


def table(comm) -> tuple[distributed.ShardedEmbedding, an.RowWiseAdagrad, an.Variable]:
    """A sharded row-wise table and its one-process twin, after three steps of 2 ranks' ids."""
    init = np.random.default_rng(5).standard_normal((500, 8)).astype(np.float32)
    sharded_table = distributed.ShardedEmbedding(
        500, 8, comm=comm, optimizer="rowwise", initial_value=init, use_ema=True
    )
    ref_opt = an.RowWiseAdagrad(use_ema=True)
    ref_table = an.Variable(init.copy(), name="embedding")
    return sharded_table, ref_opt, ref_table


def table_batches(step: int, ranks: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for r in range(ranks):
        rng = np.random.default_rng(100 * step + r)
        ids = rng.zipf(1.3, 30) % 500
        out.append((ids, rng.standard_normal((ids.size, 8)).astype(np.float32)))
    return out


def main(args: list[str]) -> int:
    comm = MPI.COMM_WORLD
    an.set_num_threads(1)
    problems: list[str] = []
    if args[0] in ("table-save", "table-resume"):
        emb, ref_opt, ref_table = table(comm)
        for step in range(5):
            batches = table_batches(step, 2 if step < 3 else comm.Get_size())
            ids = np.concatenate([b[0] for b in batches])
            ref_opt.apply(
                [an.SparseGradient(ids, np.concatenate([b[1] for b in batches]))], [ref_table]
            )
            if args[0] == "table-save" and step < 3:
                emb.apply(*batches[comm.Get_rank()])
            if args[0] == "table-resume" and step == 2:
                distributed.load_state(emb, args[1])
            if args[0] == "table-resume" and step >= 3:
                emb.apply(*batches[comm.Get_rank()])
            if args[0] == "table-save" and step == 2:
                distributed.save_state(emb, args[1])
                break
        if args[0] == "table-resume":
            lo, hi = emb.starts[comm.Get_rank()], emb.starts[comm.Get_rank() + 1]
            if emb.table.value.tobytes() != ref_table.value[lo:hi].tobytes():
                problems.append("table rows differ")
            for ours, theirs in zip(emb.optimizer.variables, ref_opt.variables, strict=True):
                expected = theirs.value if theirs.ndim == 0 else theirs.value[lo:hi]
                if ours.value.tobytes() != expected.tobytes():
                    problems.append(f"{ours.path} differs")
    elif args[0] == "save":
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
