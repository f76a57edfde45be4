"""What an optimizer, a variable and `iterations` look like when printed."""

from __future__ import annotations

import numpy as np

import adagrad_native as an


def test_an_optimizer_shows_its_class_learning_rate_and_changed_settings():
    opt = an.Adagrad(0.1, clipnorm=1.0, use_ema=True)
    assert repr(opt) == "<Adagrad(learning_rate=0.1, clipnorm=1.0, use_ema=True), not built>"
    opt.apply([np.ones(3, np.float32)], [np.zeros(3, np.float32)])
    assert repr(opt).endswith("iterations=1>")
    assert repr(an.RowWiseAdagrad()) == "<RowWiseAdagrad(learning_rate=0.001), not built>"


def test_a_loss_scale_optimizer_shows_its_inner_optimizer_and_scale():
    opt = an.LossScaleOptimizer(an.Adagrad(0.5), initial_scale=8.0)
    assert repr(opt) == (
        "<LossScaleOptimizer(<Adagrad(learning_rate=0.5), not built>, scale=8, "
        "dynamic_growth_steps=2000)>"
    )


def test_iterations_prints_and_formats_as_the_number():
    opt, param = an.Adagrad(), np.zeros(2, np.float32)
    for _ in range(3):
        opt.apply([np.ones(2, np.float32)], [param])
    assert str(opt.iterations) == "3"
    assert f"{opt.iterations:04d}" == "0003"
    assert "value=3" in repr(opt.iterations)


def test_with_gradient_accumulation_the_repr_counts_optimizer_steps():
    opt, param = an.Adagrad(0.1, gradient_accumulation_steps=2), np.zeros(2, np.float32)
    for calls in range(1, 6):
        opt.apply([np.ones(2, np.float32)], [param])
        assert int(opt.iterations) == calls // 2
        assert repr(opt).endswith(f"iterations={calls // 2}>")
