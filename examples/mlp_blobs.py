"""A two-layer numpy MLP trained with adagrad_native.Adagrad on generated data.

Five Gaussian blobs in 10 dimensions, a 10-32-5 network with a ReLU, softmax
cross-entropy, gradients written by hand, parameters kept in a dict (its keys name
them in checkpoints). Run: python examples/mlp_blobs.py
"""

from __future__ import annotations

import numpy as np

import adagrad_native as an


def make_blobs(rng: np.random.Generator, n: int = 2000, classes: int = 5, dim: int = 10):
    """Points around `classes` random centers, and their labels."""
    centers = rng.normal(scale=3.0, size=(classes, dim))
    labels = rng.integers(0, classes, n)
    points = centers[labels] + rng.normal(size=(n, dim))
    return points.astype(np.float32), labels


def forward(params: dict[str, np.ndarray], x: np.ndarray):
    """The hidden activations and the class probabilities."""
    hidden = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    logits = hidden @ params["w2"] + params["b2"]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return hidden, p / p.sum(axis=1, keepdims=True)


def loss_and_grads(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    """The mean cross-entropy and its gradients, by parameter name."""
    hidden, p = forward(params, x)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    d_logits = p.copy()
    d_logits[np.arange(len(y)), y] -= 1.0
    d_logits /= len(y)
    d_hidden = (d_logits @ params["w2"].T) * (hidden > 0)
    grads = {
        "w1": x.T @ d_hidden,
        "b1": d_hidden.sum(axis=0),
        "w2": hidden.T @ d_logits,
        "b2": d_logits.sum(axis=0),
    }
    return loss, grads


def main() -> None:
    """Trains 10 epochs and checks that the model learned."""
    rng = np.random.default_rng(0)
    x, y = make_blobs(rng)
    params = {
        "w1": (rng.normal(size=(10, 32)) * 0.3).astype(np.float32),
        "b1": np.zeros(32, np.float32),
        "w2": (rng.normal(size=(32, 5)) * 0.3).astype(np.float32),
        "b2": np.zeros(5, np.float32),
    }
    opt = an.Adagrad(learning_rate=0.1)
    first = loss_and_grads(params, x, y)[0]
    for _ in range(10):
        order = rng.permutation(len(y))
        for start in range(0, len(y), 64):
            batch = order[start : start + 64]
            _, grads = loss_and_grads(params, x[batch], y[batch])
            opt.apply(grads, params)  # mappings with the same keys
    loss = loss_and_grads(params, x, y)[0]
    accuracy = float((forward(params, x)[1].argmax(axis=1) == y).mean())
    print(f"loss {first:.3f} -> {loss:.3f}, accuracy {accuracy:.1%}, {opt.iterations} steps")
    assert loss < first / 2 and accuracy > 0.9, "the model did not learn"


if __name__ == "__main__":
    main()
