"""Checkpoint and resume: an interrupted run ends bit for bit where a straight one does.

Trains 20 steps straight; then trains 10, saves the optimizer (`save_state`, an atomic
`.npz`; also `state_dict()` in memory), builds a fresh optimizer in the "new process",
loads, and trains 10 more. Run: python examples/checkpoint_resume.py
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

import adagrad_native as an

SETTINGS = dict(learning_rate=0.05, clipnorm=1.0, use_ema=True, gradient_accumulation_steps=2)


def batch_gradients(step: int, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The gradients of step `step` (made up, and the same in any process)."""
    rng = np.random.default_rng(step)  # the data of step `step`, whatever the process
    return {k: (rng.normal(size=v.shape) + 0.1 * v).astype(np.float32) for k, v in params.items()}


def fresh_params() -> dict[str, np.ndarray]:
    """The model's initial parameters, by name."""
    rng = np.random.default_rng(42)
    return {
        "kernel": rng.normal(size=(64, 32)).astype(np.float32),
        "bias": np.zeros(32, np.float32),
    }


def train(opt: an.Adagrad, params: dict[str, np.ndarray], steps: range) -> None:
    """Applies the gradients of `steps`."""
    for step in steps:
        opt.apply(batch_gradients(step, params), params)


def main() -> None:
    """Straight, then interrupted and resumed; checks that both end the same."""
    straight = fresh_params()
    train(an.Adagrad(**SETTINGS), straight, range(20))

    resumed = fresh_params()
    opt = an.Adagrad(**SETTINGS)
    train(opt, resumed, range(10))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "optimizer.npz")
        an.save_state(opt, path)
        saved = {k: v.copy() for k, v in resumed.items()}  # the model's own checkpoint
        del opt, resumed  # ... the process ends; a new one starts:
        resumed = saved
        opt = an.Adagrad(**SETTINGS)
        an.load_state(opt, path, resumed)  # builds it from the named arrays
    in_memory = an.Adagrad(**SETTINGS)
    in_memory.load_state_dict(opt.state_dict(), {k: v.copy() for k, v in resumed.items()})
    train(opt, resumed, range(10, 20))

    same = all(straight[k].tobytes() == resumed[k].tobytes() for k in straight)
    print(f"{opt.iterations} iterations (2 batches each); same bits as the straight run: {same}")
    assert same, "the resumed run differs"


if __name__ == "__main__":
    main()
