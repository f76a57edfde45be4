"""LossScaleOptimizer: Keras' own test cases, with Adagrad as the inner optimizer.

Keras tests with SGD; the expected values here are Keras' Adagrad single-step
golden values (lr=0.5, var [1, 2, 3, 4], grad [1, 6, 7, 2]), because a finite
step must give exactly what the inner optimizer gives on the unscaled gradient.
"""

import numpy as np
import pytest

import adagrad_native as an

F32 = np.float32
ADAGRAD_STEP = [0.5233, 1.5007, 2.5005, 3.5061]


def _lso(**kwargs):
    return an.LossScaleOptimizer(an.Adagrad(learning_rate=0.5), **kwargs)


def _run(optimizer, grads, variables, stateless):
    """One step, stateful or through stateless_apply (writing its results back)."""
    if not stateless:
        optimizer.apply(grads, variables)
        return
    optimizer.build(variables)
    new_vars, new_opt = optimizer.stateless_apply(
        [v.numpy() for v in optimizer.variables], grads, [np.asarray(v) for v in variables]
    )
    for ref, value in zip(optimizer.variables, new_opt):
        ref.assign(value)
    for ref, value in zip(variables, new_vars):
        ref.assign(value)


MODES = pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])


@MODES
@pytest.mark.parametrize("inner_scale", [None, 100.0], ids=["plain", "inner_loss_scale"])
def test_finite_step_applies_the_unscaled_gradient(stateless, inner_scale):
    inner = an.Adagrad(learning_rate=0.5, loss_scale_factor=inner_scale)
    optimizer = an.LossScaleOptimizer(inner)
    assert inner.loss_scale_factor is None  # the dynamic scale replaces it, as Keras
    grads = [np.array([1.0, 6.0, 7.0, 2.0], F32) * F32(optimizer.initial_scale)]
    variables = [an.Variable(np.array([1.0, 2.0, 3.0, 4.0], F32))]
    _run(optimizer, grads, variables, stateless)
    np.testing.assert_allclose(variables[0].numpy(), ADAGRAD_STEP, rtol=1e-4, atol=1e-4)


@MODES
def test_infinite_step_changes_no_variable(stateless):
    optimizer = _lso()
    variables = [an.Variable(np.array([1.0, 2.0, 3.0, 4.0], F32))]
    _run(optimizer, [np.full(4, np.inf, F32)], variables, stateless)
    np.testing.assert_array_equal(variables[0].numpy(), [1.0, 2.0, 3.0, 4.0])
    assert int(optimizer.iterations) == 0
    assert float(optimizer.dynamic_scale.value) == 2.0**14


@MODES
def test_overwrite_with_gradient_is_not_unscaled(stateless):
    optimizer = _lso()
    grads = [np.array([1.0, 6.0, 7.0, 2.0], F32)]
    variables = [an.Variable(np.array([1.0, 2.0, 3.0, 4.0], F32), overwrite_with_gradient=True)]
    _run(optimizer, grads, variables, stateless)
    np.testing.assert_array_equal(variables[0].numpy(), grads[0])


@MODES
def test_downscaling(stateless):
    optimizer = _lso(initial_scale=400.0)
    variables = [an.Variable(np.array([1.0, 2.0, 3.0, 4.0], F32))]
    for _ in range(4):
        _run(optimizer, [np.full(4, np.inf, F32)], variables, stateless)
    assert optimizer.scale_loss(1.0) == pytest.approx(25.0)


@MODES
def test_upscaling(stateless):
    optimizer = _lso(initial_scale=2.0, dynamic_growth_steps=2)
    variables = [an.Variable(np.array([1.0, 2.0, 3.0, 4.0], F32))]
    for _ in range(8):
        _run(optimizer, [np.array([1.0, 6.0, 7.0, 2.0], F32)], variables, stateless)
    assert optimizer.scale_loss(1.0) == pytest.approx(32.0)


@MODES
def test_iterations_follow_the_inner_optimizer(stateless):
    optimizer = _lso()
    variables = [an.Variable(np.array([1.0, 2.0, 3.0, 4.0], F32))]
    optimizer.build(variables)
    assert int(optimizer.iterations) == 0
    for i in range(3):
        _run(optimizer, [np.array([1.0, 6.0, 7.0, 2.0], F32)], variables, stateless)
        assert int(optimizer.iterations) == i + 1


def test_variables_layout_is_keras():
    optimizer = _lso(name="lso")
    optimizer.build([an.Variable(np.ones(3, F32), name="w")])
    paths = [v.path for v in optimizer.variables]
    assert paths[:4] == [
        "lso/iteration",
        "lso/learning_rate",
        "lso/step_counter",
        "lso/dynamic_scale",
    ]
    assert paths[4:] == [
        f"{optimizer.inner_optimizer.name}/{n}"
        for n in ("iteration", "learning_rate", "w_accumulator")
    ]


def test_config_has_keras_four_keys_and_round_trips():
    optimizer = _lso(initial_scale=3.0, dynamic_growth_steps=2, name="test_opt")
    config = optimizer.get_config()
    assert set(config) == {"name", "inner_optimizer", "initial_scale", "dynamic_growth_steps"}
    assert config["inner_optimizer"]["class_name"] == "Adagrad"
    clone = an.LossScaleOptimizer.from_config(config)
    assert clone.get_config() == config


def test_deserializes_keras_config_with_base_defaults():
    config = {
        "name": "loss_scale_optimizer",
        "weight_decay": None,
        "clipnorm": None,
        "global_clipnorm": None,
        "clipvalue": None,
        "use_ema": False,
        "ema_momentum": 0.99,
        "ema_overwrite_frequency": None,
        "loss_scale_factor": None,
        "gradient_accumulation_steps": None,
        "inner_optimizer": an.serialize(an.Adagrad(0.5)),
        "initial_scale": 2.0,
        "dynamic_growth_steps": 2,
    }
    assert an.LossScaleOptimizer.from_config(config).dynamic_growth_steps == 2


def test_refused_arguments():
    with pytest.raises(ValueError, match="set `loss_scale_factor`"):
        _lso(dynamic=False)
    with pytest.raises(ValueError, match="arguments: `foo`, `bar`"):
        _lso(foo=True, bar=3)
    for arg, value in [
        ("weight_decay", 0.5),
        ("clipnorm", 0.5),
        ("use_ema", True),
        ("gradient_accumulation_steps", 2),
    ]:
        with pytest.raises(ValueError, match="on the `inner_optimizer`"):
            _lso(**{arg: value})
    with pytest.raises(ValueError, match="dynamic_growth_steps.*0"):
        _lso(dynamic_growth_steps=0)


def test_scale_loss_before_and_after_build():
    optimizer = _lso(initial_scale=8.0)
    assert optimizer.scale_loss(2.0) == 16.0
    optimizer.build([np.ones(2, F32)])
    assert optimizer.scale_loss(2.0) == 16.0
