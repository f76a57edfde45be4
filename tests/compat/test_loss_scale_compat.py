"""adagrad_native.LossScaleOptimizer vs keras.optimizers.LossScaleOptimizer (jax, CPU).

Side by side over finite, inf and NaN steps: variables, `dynamic_scale`,
`step_counter`, iterations, the `variables` layout (paths and values) and `get_config`.

Keras' `LossScaleOptimizer.apply` cannot run eagerly on the jax backend: it assigns
variables inside `ops.cond` branches, which `jax.lax.cond` traces, and raises
`UnexpectedTracerError`. Its stateful path therefore runs under `jax.disable_jit()`
(the branch runs as plain eager ops), and its `stateless_apply` -- what Keras' jax
trainer uses -- runs with the real compiled conds.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
jax = pytest.importorskip("jax")

import adagrad_native as an  # noqa: E402
from tests.compat import keras_pairs as kp  # noqa: E402

SHAPES = [(4, 3), (), (6,)]
INNER = {
    "plain": {"learning_rate": 0.1},
    "ema-clipnorm-wd": {
        "learning_rate": 0.05,
        "use_ema": True,
        "ema_momentum": 0.9,
        "ema_overwrite_frequency": 3,
        "clipnorm": 0.7,
        "weight_decay": 0.02,
        "initial_accumulator_value": 0.3,
    },
    "schedule-global_clipnorm": {
        "learning_rate": (
            "InverseTimeDecay",
            {"initial_learning_rate": 0.2, "decay_steps": 2, "decay_rate": 0.5},
        ),
        "global_clipnorm": 1.5,
        "epsilon": 1e-4,
    },
}
# What each step's gradients hold: growth every 2 finite steps, halving on inf/NaN.
PLAN = [
    "finite",
    "finite",
    "finite",
    "inf",
    "finite",
    "nan",
    "-inf",
    "finite",
    "finite",
    "finite",
    "finite",
]


def _inner(module, config):
    config = dict(config)
    lr = config.pop("learning_rate")
    if isinstance(lr, tuple):
        schedules = keras.optimizers.schedules if module is keras.optimizers else an.schedules
        lr = getattr(schedules, lr[0])(**lr[1])
    return module.Adagrad(learning_rate=lr, name="inner", **config)


def _pair(config, **kwargs):
    ko = keras.optimizers.LossScaleOptimizer(_inner(keras.optimizers, config), name="lso", **kwargs)
    ao = an.LossScaleOptimizer(_inner(an, config), name="lso", **kwargs)
    return ko, ao


def _variables(rng):
    init = [np.asarray(rng.normal(size=s), np.float32) for s in SHAPES]
    kvars = [keras.Variable(x.copy(), name=f"w{i}") for i, x in enumerate(init)]
    avars = [an.Variable(x.copy(), name=f"w{i}") for i, x in enumerate(init)]
    return kvars, avars


def _gradients(rng, kind, scale):
    grads = [np.asarray(rng.normal(size=s) * scale, np.float32) for s in SHAPES]
    if kind != "finite":
        grads[0][1, 2] = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}[kind]
    return grads


def _compare_layout_and_values(ko, ao, what):
    kvars, avars = list(ko.variables), list(ao.variables)
    assert [v.path for v in avars] == [v.path for v in kvars], what
    for k, a in zip(kvars, avars):
        kval, aval = kp.to_numpy(k), kp.to_numpy(a)
        if np.issubdtype(kval.dtype, np.integer):
            assert np.array_equal(aval, kval), f"{what}: {k.path} {aval} vs {kval}"
        else:
            assert aval.dtype == kval.dtype, f"{what}: {k.path} dtype"
            kp.assert_close(aval, kval, f"{what}: {k.path}")


def _compare(ko, ao, kvars, avars, what):
    for i, (kv, av) in enumerate(zip(kvars, avars)):
        kp.assert_close(av, kv, f"{what}: w{i}")
    assert float(kp.to_numpy(ao.dynamic_scale)) == float(kp.to_numpy(ko.dynamic_scale)), what
    assert int(kp.to_numpy(ao.step_counter)) == int(kp.to_numpy(ko.step_counter)), what
    assert int(kp.to_numpy(ao.iterations)) == int(kp.to_numpy(ko.iterations)), what
    assert float(ao.scale_loss(1.5)) == float(kp.to_numpy(ko.scale_loss(1.5))), what
    _compare_layout_and_values(ko, ao, what)


@pytest.mark.parametrize("name", list(INNER))
def test_loss_scale_optimizer_side_by_side(name):
    rng = np.random.default_rng(5)
    kvars, avars = _variables(rng)
    ko, ao = _pair(INNER[name], initial_scale=2.0**6, dynamic_growth_steps=2)
    assert ao.get_config() == ko.get_config()
    ko.build(kvars)
    ao.build(avars)
    _compare(ko, ao, kvars, avars, f"{name} built")
    scales = []
    for step, kind in enumerate(PLAN):
        scale = float(kp.to_numpy(ko.dynamic_scale))
        scales.append(scale)
        grads = _gradients(rng, kind, scale)
        with jax.disable_jit():
            ko.apply([jax.numpy.asarray(g) for g in grads], kvars)
        ao.apply([g.copy() for g in grads], avars)
        _compare(ko, ao, kvars, avars, f"{name} step {step} ({kind})")
    # The plan did exercise growth and both kinds of skip.
    assert max(scales) > 2.0**6 and min(scales) < max(scales)
    assert ao.get_config() == ko.get_config()


def test_loss_scale_optimizer_stateless_apply_matches_keras():
    """Keras' stateless path (compiled conds; what its jax trainer runs) vs ours."""
    rng = np.random.default_rng(6)
    kvars, avars = _variables(rng)
    ko, ao = _pair(INNER["plain"], initial_scale=4.0, dynamic_growth_steps=2)
    ko.build(kvars)
    ao.build(avars)
    k_train, k_opt = [v.value for v in kvars], [v.value for v in ko.variables]
    a_train, a_opt = [kp.to_numpy(v) for v in avars], [kp.to_numpy(v) for v in ao.variables]
    for step, kind in enumerate(["finite", "finite", "inf", "finite", "nan", "finite"]):
        scale = float(np.asarray(k_opt[3]))  # lso/dynamic_scale
        grads = _gradients(rng, kind, scale)
        k_train, k_opt = ko.stateless_apply(k_opt, [jax.numpy.asarray(g) for g in grads], k_train)
        a_train, a_opt = ao.stateless_apply(a_opt, grads, a_train)
        for i, (a, k) in enumerate(zip(a_train, k_train)):
            kp.assert_close(a, k, f"lso stateless step {step} ({kind}): w{i}")
        assert len(a_opt) == len(k_opt)
        for var, a, k in zip(ko.variables, a_opt, k_opt):
            what = f"lso stateless step {step} ({kind}): {var.path}"
            if np.issubdtype(np.asarray(k).dtype, np.integer):
                assert int(a) == int(k), what
            else:
                kp.assert_close(a, k, what)


def test_default_config_matches():
    k = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adagrad(name="inner"))
    a = an.LossScaleOptimizer(an.Adagrad(name="inner"))
    kcfg, acfg = k.get_config(), a.get_config()
    assert (
        list(acfg)
        == list(kcfg)
        == ["name", "inner_optimizer", "initial_scale", "dynamic_growth_steps"]
    )
    assert {x: y for x, y in acfg.items() if x != "name"} == {
        x: y for x, y in kcfg.items() if x != "name"
    }
    assert a.name.startswith("loss_scale_optimizer") and k.name.startswith("loss_scale_optimizer")
    # (Keras' from_config pops "inner_optimizer" from the dict it is given: pass copies.)
    assert an.LossScaleOptimizer.from_config(dict(kcfg)).get_config() == kcfg
    assert keras.optimizers.LossScaleOptimizer.from_config(dict(acfg)).get_config() == acfg
    assert an.deserialize(keras.optimizers.serialize(k)).get_config() == kcfg
    assert keras.optimizers.deserialize(an.serialize(a)).get_config() == acfg


def test_layout_when_built_by_the_first_apply():
    """Keras' slot paths depend on how its LossScaleOptimizer was built.

    `build()` gives "inner/w0_accumulator"; a first `apply()` builds the inner optimizer
    inside the outer one's name scope and gives "lso/inner/w0_accumulator" (a Keras
    name-scope artifact). This package always gives the former. Order, names (the last
    path component), shapes and values agree either way.
    """
    rng = np.random.default_rng(8)
    kvars, avars = _variables(rng)
    ko, ao = _pair(INNER["ema-clipnorm-wd"], initial_scale=8.0)
    grads = _gradients(rng, "finite", 8.0)
    with jax.disable_jit():
        ko.apply([jax.numpy.asarray(g) for g in grads], kvars)
    ao.apply([g.copy() for g in grads], avars)
    kpaths, apaths = [v.path for v in ko.variables], [v.path for v in ao.variables]
    assert "lso/inner/w0_accumulator" in kpaths and "inner/w0_accumulator" in apaths
    assert [p.rsplit("/", 1)[1] for p in apaths] == [p.rsplit("/", 1)[1] for p in kpaths]
    for k, a in zip(ko.variables, ao.variables):
        kp.assert_close(
            kp.to_numpy(a).astype(np.float64),
            kp.to_numpy(k).astype(np.float64),
            f"apply-built: {k.path}",
        )
