"""Keras' own test values, asserted literally.

Sources: keras/src/optimizers/adagrad_test.py and optimizer_test.py (Keras 3).  Tests of
`_clip_gradients` are asserted through the accumulator after one Adagrad step
(acc = initial + g_clipped**2), since there is no public clip method.  Keras' SGD-based
tables (EMA, accumulation) are re-derived for Adagrad by hand in the comments; the
numbers were also cross-checked against keras 3.15 (jax backend).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import adagrad_native as an

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_step(dtype):
    opt = an.Adagrad(learning_rate=0.5)
    var = an.Variable(np.array([1.0, 2.0, 3.0, 4.0], dtype))
    opt.apply_gradients(zip([np.array([1.0, 6.0, 7.0, 2.0], dtype)], [var], strict=True))
    np.testing.assert_allclose(var.numpy(), [0.5233, 1.5007, 2.5005, 3.5061], rtol=1e-4, atol=1e-4)


# fmt: off
GOLDEN = np.array([
    [0.9963, 0.9963, 0.9963, 0.9963, 0.9963, 0.9963, 0.9963, 0.9963, 0.9963, 0.9963],
    [0.9604, 0.9278, 0.9003, 0.8784, 0.8615, 0.8487, 0.8388, 0.8313, 0.8255, 0.8209],
    [0.9251, 0.8629, 0.8137, 0.7768, 0.7497, 0.7298, 0.7151, 0.704, 0.6956, 0.6891],
    [0.8903, 0.8012, 0.7342, 0.6862, 0.6521, 0.6277, 0.6099, 0.5967, 0.5867, 0.579],
    [0.856, 0.7422, 0.6604, 0.6037, 0.5644, 0.5367, 0.5168, 0.5021, 0.491, 0.4825],
])
# fmt: on


@pytest.mark.parametrize("dtype", DTYPES)
def test_correctness_with_golden(dtype):
    opt = an.Adagrad(learning_rate=0.2, initial_accumulator_value=0.3, epsilon=1e-6)
    x = an.Variable(np.ones([10], dtype))
    grads = np.arange(0.1, 1.1, 0.1).astype(dtype)
    first_grads = np.full((10,), 0.01, dtype)
    opt.apply_gradients(zip([first_grads], [x], strict=True))
    for i in range(5):
        np.testing.assert_allclose(x.numpy(), GOLDEN[i], rtol=5e-4, atol=5e-4)
        opt.apply_gradients(zip([grads], [x], strict=True))


def test_weight_decay_with_exclusions():
    # Keras: var1 takes three decayed steps (one per optimizer): 2 * (1 - 0.004)**3.
    grads = np.zeros((), np.float32)
    var1 = an.Variable(np.float32(2.0))
    var2 = an.Variable(np.float32(2.0), name="exclude")
    var3 = an.Variable(np.float32(2.0))
    opt1 = an.Adagrad(learning_rate=1.0, weight_decay=0.004)
    opt1.apply_gradients(zip([grads], [var1], strict=True))

    opt2 = an.Adagrad(learning_rate=1.0, weight_decay=0.004)
    opt2.exclude_from_weight_decay(var_names=["exclude"])
    opt2.apply_gradients(zip([grads, grads], [var1, var2], strict=True))

    opt3 = an.Adagrad(learning_rate=1.0, weight_decay=0.004)
    opt3.exclude_from_weight_decay(var_list=[var3])
    opt3.apply_gradients(zip([grads, grads], [var1, var3], strict=True))

    assert float(var1.numpy()) == pytest.approx(1.9760959, abs=1e-6)
    assert float(var2.numpy()) == pytest.approx(2.0, abs=1e-6)
    assert float(var3.numpy()) == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize(
    "kwargs, grad, clipped",
    [
        # optimizer_test / adagrad_test: clipnorm=1 on [100, 100] -> [sqrt(2)/2, sqrt(2)/2]
        pytest.param(dict(clipnorm=1), [100.0, 100.0], [2**0.5 / 2, 2**0.5 / 2], id="clipnorm"),
        # clipvalue=1 on [100, 100] -> [1, 1]
        pytest.param(dict(clipvalue=1), [100.0, 100.0], [1.0, 1.0], id="clipvalue"),
        # global_clipnorm=1 on [50, 100] -> g / ||g||
        pytest.param(
            dict(global_clipnorm=1),
            [50.0, 100.0],
            list(np.array([50.0, 100.0]) / np.linalg.norm([50.0, 100.0])),
            id="global_clipnorm",
        ),
    ],
)
def test_clip_examples_through_the_accumulator(kwargs, grad, clipped):
    var = an.Variable(np.zeros(2, np.float32))
    opt = an.Adagrad(learning_rate=1.0, **kwargs)
    opt.apply_gradients([(np.array(grad, np.float32), var)])
    clipped = np.array(clipped)
    acc = 0.1 + clipped**2
    np.testing.assert_allclose(np.asarray(opt._accumulators[0]), acc, rtol=1e-6)
    np.testing.assert_allclose(var.numpy(), -clipped / np.sqrt(acc + 1e-7), rtol=1e-6)


def test_ema_table_with_overwrite_every_3_steps():
    # Adagrad, lr=1, initial accumulator 0, epsilon 0, grads of ones, momentum 0.9,
    # overwrite every 3 steps; v0 = [[3, 4], [5, 6]] so every entry is v0 - d:
    # step 1: acc=1, v = v0 - 1;            avg = v (momentum 0 while iterations == 0)
    # step 2: acc=2, v = v0 - 1 - 1/sqrt(2) = v0 - 1.70710678
    #         avg = 0.9 (v0 - 1) + 0.1 (v0 - 1.70710678)          = v0 - 1.07071068
    # step 3: acc=3, v = v0 - 1.70710678 - 1/sqrt(3)               = v0 - 2.28445705
    #         avg = 0.9 (v0 - 1.07071068) + 0.1 (v0 - 2.28445705)  = v0 - 1.19208532
    #         (iterations + 1) % 3 == 0 -> v = avg                  = v0 - 1.19208532
    # step 4: acc=4, v = v0 - 1.19208532 - 1/2                     = v0 - 1.69208532
    #         avg = 0.9 (v0 - 1.19208532) + 0.1 (v0 - 1.69208532)  = v0 - 1.24208532
    v0 = np.array([[3.0, 4.0], [5.0, 6.0]], np.float32)
    v = an.Variable(v0.copy())
    opt = an.Adagrad(
        learning_rate=1.0,
        initial_accumulator_value=0.0,
        epsilon=0.0,
        use_ema=True,
        ema_momentum=0.9,
        ema_overwrite_frequency=3,
    )
    g = np.ones((2, 2), np.float32)
    table = [  # (v0 - v, v0 - avg, accumulator)
        (1.0, 1.0, 1.0),
        (1.70710678, 1.07071068, 2.0),
        (1.19208532, 1.19208532, 3.0),
        (1.69208532, 1.24208532, 4.0),
    ]
    for d_v, d_avg, acc in table:
        opt.apply_gradients([(g, v)])
        np.testing.assert_allclose(v.numpy(), v0 - d_v, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(opt._model_variables_moving_average[0]), v0 - d_avg, rtol=1e-6, atol=1e-6
        )
        np.testing.assert_allclose(np.asarray(opt._accumulators[0]), np.full((2, 2), acc))


def test_gradient_accumulation_3_micro_steps():
    # optimizer_test.test_gradient_accumulation, with Adagrad (lr=1, init 0.1, eps 1e-7):
    # step 3 applies g = (1 + 2) / 3 = 1: acc = 1.1, v -= 1 / sqrt(1.1 + 1e-7).
    v0 = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    v = an.Variable(v0.copy())
    g = np.ones((2, 2), np.float32)
    opt = an.Adagrad(learning_rate=1.0, gradient_accumulation_steps=3)
    assert opt.gradient_accumulation_steps == 3
    stepped = v0 - 1.0 / np.sqrt(1.1 + 1e-7)
    table = [  # (v, gradient accumulator, accumulator, _iterations, iterations)
        (v0, 1.0, 0.1, 1, 0),
        (v0, 2.0, 0.1, 2, 0),
        (stepped, 0.0, 1.1, 3, 1),
        (stepped, 1.0, 1.1, 4, 1),
    ]
    for want_v, gacc, acc, raw, it in table:
        opt.apply_gradients([(g, v)])
        np.testing.assert_allclose(v.numpy(), want_v, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(opt._accumulated_gradients[0]), np.full((2, 2), gacc))
        np.testing.assert_allclose(
            np.asarray(opt._accumulators[0]), np.full((2, 2), acc), rtol=1e-6
        )
        assert int(opt._iterations) == raw
        assert int(opt.iterations) == it


def test_gradient_accumulation_with_weight_decay_matches_mean_gradient(rng):
    # optimizer_test.test_gradient_accumulation_with_weigth_decay ("adagrad" case).
    opt1 = an.Adagrad(weight_decay=0.05)
    opt3 = an.Adagrad(weight_decay=0.05, gradient_accumulation_steps=3)
    var1 = an.Variable(np.array([[0.9], [0.5]], np.float32))
    var3 = an.Variable(np.array([[0.9], [0.5]], np.float32))
    for _ in range(8):
        grads3 = rng.random([3, 2, 1]).astype("float32")
        opt1.apply_gradients([(grads3.mean(axis=0), var1)])
        for batch in range(3):
            opt3.apply_gradients([(np.ascontiguousarray(grads3[batch]), var3)])
    np.testing.assert_allclose(var1.numpy(), var3.numpy(), rtol=1e-6, atol=1e-6)


def test_overwrite_with_gradient():
    v = an.Variable(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), overwrite_with_gradient=True)
    v2 = an.Variable(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    g = np.ones((2, 2), np.float32)
    opt = an.Adagrad(learning_rate=1.0)
    opt.apply_gradients([(g, v), (g.copy(), v2)])
    np.testing.assert_array_equal(v.numpy(), np.ones((2, 2)))
    np.testing.assert_allclose(
        v2.numpy(), [[1.0, 2.0], [3.0, 4.0]] - 1 / np.sqrt(1.1 + 1e-7), rtol=1e-6
    )
    assert opt._accumulators[0] is None


def test_overwrite_with_gradient_with_gradient_accumulation():
    # optimizer_test case with Adagrad: the overwrite variable keeps a running max in its
    # gradient accumulator and takes max(g, gacc) on the update step; v2 gets the mean
    # gradient 1.5: acc = 0.1 + 2.25, v2 -= 1.5 / sqrt(2.35 + 1e-7).
    v0 = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    v = an.Variable(v0.copy(), overwrite_with_gradient=True)
    v2 = an.Variable(v0.copy())
    ones, twos = np.ones((2, 2), np.float32), np.full((2, 2), 2.0, np.float32)
    opt = an.Adagrad(learning_rate=1.0, gradient_accumulation_steps=2)
    stepped = v0 - 1.5 / np.sqrt(2.35 + 1e-7)
    table = [  # (grad, _iterations, iterations, v, v2, gacc[0], gacc[1])
        (ones, 1, 0, v0, v0, 1.0, 1.0),
        (twos, 2, 1, np.full((2, 2), 2.0), stepped, 0.0, 0.0),
        (ones, 3, 1, np.full((2, 2), 2.0), stepped, 1.0, 1.0),
    ]
    for g, raw, it, want_v, want_v2, ga0, ga1 in table:
        opt.apply_gradients([(g, v), (g.copy(), v2)])
        assert int(opt._iterations) == raw and int(opt.iterations) == it
        np.testing.assert_allclose(v.numpy(), want_v)
        np.testing.assert_allclose(v2.numpy(), want_v2, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(opt._accumulated_gradients[0]), np.full((2, 2), ga0))
        np.testing.assert_allclose(np.asarray(opt._accumulated_gradients[1]), np.full((2, 2), ga1))


def test_static_loss_scaling():
    # optimizer_test.test_static_loss_scaling with Adagrad: unscaled g = [[1,2],[3,4]].
    v = an.Variable(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    g = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    opt = an.Adagrad(learning_rate=1.0, loss_scale_factor=1024.0)
    opt.apply_gradients([(g * 1024.0, v)])
    assert opt.scale_loss(1.0) == 1024.0
    np.testing.assert_allclose(v.numpy(), g - g / np.sqrt(0.1 + g * g + 1e-7), rtol=1e-6)


def test_callable_learning_rate():
    v = an.Variable(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    opt = an.Adagrad(learning_rate=lambda: 0.1)
    assert int(opt.iterations) == 0
    opt.apply_gradients([(np.ones((2, 2), np.float32), v)])
    np.testing.assert_allclose(
        v.numpy(), [[1.0, 2.0], [3.0, 4.0]] - 0.1 / np.sqrt(1.1 + 1e-7), rtol=1e-6
    )
    assert int(opt.iterations) == 1


def test_constraints_are_applied(rng):
    v = an.Variable(
        rng.random((2, 2)).astype(np.float32) - 1.0,
        constraint=lambda x: np.maximum(np.asarray(x), 0.0),
    )
    opt = an.Adagrad(learning_rate=0.0001)
    opt.apply_gradients([(np.zeros((2, 2), np.float32), v)])
    assert np.min(v.numpy()) == 0.0


def test_empty_gradients():
    v = an.Variable(np.array([[3.0, 4.0], [5.0, 6.0]], np.float32))
    opt = an.Adagrad(learning_rate=1.0)
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        opt.apply_gradients([(None, v)])

    v2 = an.Variable(np.array([[3.0, 4.0], [5.0, 6.0]], np.float32))
    opt = an.Adagrad(learning_rate=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.apply_gradients([(None, v), (np.ones((2, 2), np.float32), v2)])
    assert any(issubclass(w.category, UserWarning) for w in caught)
    np.testing.assert_array_equal(v.numpy(), [[3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_allclose(
        v2.numpy(), [[3.0, 4.0], [5.0, 6.0]] - 1 / np.sqrt(1.1 + 1e-7), rtol=1e-6
    )
