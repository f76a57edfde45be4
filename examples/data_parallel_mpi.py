"""Data-parallel training of a numpy MLP with optimizer state sharded over MPI ranks.

    pip install ".[mpi]"    # in a clone; or, beside an installed wheel: pip install mpi4py mpich
    mpiexec -n 2 python examples/data_parallel_mpi.py

Every rank holds the whole model and trains on its own slice of every batch;
`ShardedAdagrad.apply` averages the ranks' gradients, steps this rank's shard of
the optimizer state and all-gathers the parameters, so every rank ends with the
same model -- the one a single process would get from the averaged gradients.
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
from mpi4py import MPI

from adagrad_native import distributed
from adagrad_native._demo import MLP, make_spirals


def main() -> None:
    """Trains, prints the loss and accuracy, and what each rank holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="passes over the data (20)")
    parser.add_argument("--batch", type=int, default=256, help="global batch size (256)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()

    rng = np.random.default_rng(0)  # the same data and model on every rank
    x, y = make_spirals(1000, 3, 0.05, rng)
    model = MLP.create([2, 256, 256, 3], rng)
    opt = distributed.ShardedAdagrad(0.1, average=True, clipnorm=1.0)

    for epoch in range(args.epochs):
        losses = []
        for start in range(0, len(y), args.batch):
            batch = slice(start, start + args.batch)
            mine = slice(rank, None, size)  # this rank's part of the batch
            loss, grads = model.loss_and_grads(x[batch][mine], y[batch][mine])
            opt.apply(grads, model.params)
            losses.append(loss)
        mean_loss = comm.allreduce(float(np.mean(losses))) / size
        if rank == 0 and (epoch % 5 == 4 or epoch == args.epochs - 1):
            accuracy = float((model.forward(x)[0].argmax(axis=1) == y).mean())
            print(f"epoch {epoch + 1:3d}  loss {mean_loss:.4f}  accuracy {accuracy:.3f}")

    states = comm.gather(sum(v.value.nbytes for v in opt.variables))
    digest = hashlib.sha256(b"".join(p.tobytes() for p in model.params)).hexdigest()
    same = len(set(comm.allgather(digest))) == 1
    if rank == 0:
        print(
            f"{size} ranks; optimizer state bytes per rank: {states}; "
            f"every rank holds the same model: {same}"
        )


if __name__ == "__main__":
    main()
