"""Matrix factorization on generated ratings, with row-sparse embedding updates.

Users and items each have an embedding table; a rating is the dot product of the two
rows. A batch touches only a few rows of each table, so its gradients are
`SparseGradient`s (row ids and rows) and only those rows are updated. Trains once with
`Adagrad` (a state per element) and once with `RowWiseAdagrad` (one per row: 64x less
optimizer state). Run: python examples/embeddings_recommender.py
"""

from __future__ import annotations

import numpy as np

import adagrad_native as an

USERS, ITEMS, DIM, RANK = 5_000, 2_000, 16, 4


def make_ratings(rng: np.random.Generator, n: int = 100_000):
    """Ratings from hidden rank-4 factors, plus noise; item ids follow a Zipf law."""
    users_true = rng.normal(size=(USERS, RANK))
    items_true = rng.normal(size=(ITEMS, RANK))
    u = rng.integers(0, USERS, n)
    i = np.minimum(rng.zipf(1.3, n) - 1, ITEMS - 1)
    r = (users_true[u] * items_true[i]).sum(axis=1) + rng.normal(scale=0.1, size=n)
    return u, i, r.astype(np.float32)


def train(optimizer: an.Optimizer, data, rng: np.random.Generator) -> float:
    """Five epochs of batches of 512 ratings; returns the final RMSE on all ratings."""
    u, i, r = data
    users = (rng.normal(size=(USERS, DIM)) * 0.1).astype(np.float32)
    items = (rng.normal(size=(ITEMS, DIM)) * 0.1).astype(np.float32)
    for _ in range(5):
        for start in range(0, len(r), 512):
            bu, bi, br = u[start : start + 512], i[start : start + 512], r[start : start + 512]
            error = (users[bu] * items[bi]).sum(axis=1) - br  # d(0.5 * error^2)
            grad_users = an.SparseGradient(bu, error[:, None] * items[bi], users.shape)
            grad_items = an.SparseGradient(bi, error[:, None] * users[bu], items.shape)
            optimizer.apply([grad_users, grad_items], [users, items])
    error = (users[u] * items[i]).sum(axis=1) - r
    return float(np.sqrt(np.mean(error**2)))


def main() -> None:
    """Both optimizers on the same ratings; each must cut the RMSE well below the baseline."""
    rng = np.random.default_rng(0)
    data = make_ratings(rng)
    baseline = float(np.sqrt(np.mean(data[2] ** 2)))
    for cls in (an.Adagrad, an.RowWiseAdagrad):
        optimizer = cls(learning_rate=0.5)
        rmse = train(optimizer, data, np.random.default_rng(1))
        state = sum(v.value.size for v in optimizer.variables[2:])
        print(
            f"{cls.__name__:15s} RMSE {baseline:.3f} -> {rmse:.3f}; optimizer state {state} values"
        )
        assert rmse < 0.6 * baseline, f"{cls.__name__} did not learn"


if __name__ == "__main__":
    main()
