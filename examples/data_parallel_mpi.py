"""Data-parallel training of a numpy softmax classifier with optimizer state sharded over ranks.

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

from adagrad_native.distributed import ShardedAdagrad


def make_blobs(rng: np.random.Generator, n: int = 4000, classes: int = 4, dim: int = 16):
    """Points around `classes` random centers, and their labels."""
    centers = rng.normal(scale=1.0, size=(classes, dim))
    labels = rng.integers(0, classes, n)
    return (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def loss_and_grads(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray):
    """The mean softmax cross-entropy of `x @ w + b` and its gradients."""
    logits = x @ w + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    return loss, [x.T @ p, p.sum(axis=0)]


def main() -> None:
    """Trains, prints the loss and accuracy, and what each rank holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="passes over the data (20)")
    parser.add_argument("--batch", type=int, default=256, help="global batch size (256)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()

    rng = np.random.default_rng(0)  # the same data and model on every rank
    x, y = make_blobs(rng)
    params = [np.zeros((x.shape[1], 4), np.float32), np.zeros(4, np.float32)]
    opt = ShardedAdagrad(0.1, average=True, clipnorm=1.0)

    for epoch in range(args.epochs):
        losses = []
        for start in range(0, len(y), args.batch):
            batch = slice(start, start + args.batch)
            mine = slice(rank, None, size)  # this rank's part of the batch
            loss, grads = loss_and_grads(*params, x[batch][mine], y[batch][mine])
            opt.apply(grads, params)
            losses.append(loss)
        mean_loss = comm.allreduce(float(np.mean(losses))) / size
        if rank == 0 and (epoch % 5 == 4 or epoch == args.epochs - 1):
            accuracy = float(((x @ params[0] + params[1]).argmax(axis=1) == y).mean())
            print(f"epoch {epoch + 1:3d}  loss {mean_loss:.4f}  accuracy {accuracy:.3f}")

    states = comm.gather(sum(v.value.nbytes for v in opt.variables))
    digest = hashlib.sha256(b"".join(p.tobytes() for p in params)).hexdigest()
    same = len(set(comm.allgather(digest))) == 1
    if rank == 0:
        print(
            f"{size} ranks; optimizer state bytes per rank: {states}; "
            f"every rank holds the same model: {same}"
        )


if __name__ == "__main__":
    main()
