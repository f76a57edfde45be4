"""Learning-rate schedules: Keras' schedules, a plain callable, and changing the rate.

Prints the rate each schedule gives every 10 steps, then solves a least-squares problem,
raising a plain rate half-way. Run: python examples/lr_schedules.py
"""

from __future__ import annotations

import numpy as np

import adagrad_native as an
from adagrad_native import schedules


def main() -> None:
    """Prints the schedules' rates, then solves the least-squares problem."""
    rates = {
        "ExponentialDecay": schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5),
        "PiecewiseConstant": schedules.PiecewiseConstantDecay([20, 40], [0.1, 0.05, 0.01]),
        "CosineDecay+warmup": schedules.CosineDecay(
            0.0, decay_steps=50, warmup_target=0.1, warmup_steps=10
        ),
        "callable": lambda: 0.05,  # read at every update step, as Keras does
    }
    for name, rate in rates.items():
        opt = an.Adagrad(learning_rate=rate)
        param = np.zeros(1, np.float32)
        seen = []
        for _ in range(60):
            seen.append(float(opt.learning_rate))  # the rate of the next step
            opt.apply([np.ones(1, np.float32)], [param])
        print(f"{name:20s} " + " ".join(f"{r:.4f}" for r in seen[::10]))

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 20)).astype(np.float32)
    truth = rng.normal(size=20).astype(np.float32)
    b = a @ truth
    x = np.zeros(20, np.float32)
    opt = an.Adagrad(learning_rate=0.05)
    for _ in range(50):
        opt.apply([a.T @ (a @ x - b) / len(b)], [x])
    opt.learning_rate = 0.5  # a number can be changed between steps (a schedule cannot)
    for _ in range(200):
        opt.apply([a.T @ (a @ x - b) / len(b)], [x])
    error = float(np.abs(x - truth).max())
    print(f"least squares: largest error {error:.2e} after {opt.iterations} steps")
    assert error < 1e-2, "did not converge"


if __name__ == "__main__":
    main()
