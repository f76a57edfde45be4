"""The main job's model and data: a numpy MLP classifier on generated spirals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def make_spirals(
    n_per_class: int, n_classes: int, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved 2-D spirals, one arm per class: not linearly separable."""
    t = np.sqrt(rng.uniform(0.05, 1.0, size=(n_classes, n_per_class)))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    angle = (t * 3.0 * np.pi + (2 * np.pi / n_classes) * np.arange(n_classes)[:, None]).ravel()
    radius = t.ravel()
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    x += rng.normal(scale=noise, size=x.shape)
    order = rng.permutation(len(labels))
    return x[order].astype(np.float32), labels[order]


@dataclass
class MLP:
    """A two-hidden-layer ReLU network with softmax cross-entropy, in numpy."""

    params: list[np.ndarray]

    @classmethod
    def create(cls, sizes: list[int], rng: np.random.Generator) -> MLP:
        params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            params.append(
                (rng.normal(size=(fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
            )
            params.append(np.zeros(fan_out, np.float32))
        return cls(params)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        activations = [x]
        h = x
        layers = len(self.params) // 2
        for layer in range(layers):
            h = h @ self.params[2 * layer] + self.params[2 * layer + 1]
            if layer < layers - 1:
                h = np.maximum(h, 0.0)
            activations.append(h)
        return h, activations

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        logits, activations = self.forward(x)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -float(log_probs[np.arange(len(y)), y].mean())
        delta = np.exp(log_probs)
        delta[np.arange(len(y)), y] -= 1.0
        delta /= len(y)
        grads: list[np.ndarray] = [np.empty(0)] * len(self.params)
        for layer in reversed(range(len(self.params) // 2)):
            grads[2 * layer] = (activations[layer].T @ delta).astype(np.float32)
            grads[2 * layer + 1] = delta.sum(axis=0).astype(np.float32)
            if layer > 0:
                delta = (delta @ self.params[2 * layer].T) * (activations[layer] > 0)
        return loss, grads

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.forward(x)[0].argmax(axis=1) == y).mean())
