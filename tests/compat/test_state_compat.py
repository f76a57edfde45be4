"""Optimizer state moving between Keras and adagrad_native, and `stateless_apply`.

`save_own_variables` -> `load_own_variables` both ways (Keras store -> ours, ours ->
Keras) after a few steps, then both continue and must keep agreeing; the same through
an h5py group; `stateless_apply` compared with Keras' `stateless_apply`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")
jax = pytest.importorskip("jax")

import adagrad_native as an  # noqa: E402
from tests.compat import keras_pairs as kp  # noqa: E402

SHAPES = [(3, 4), (), (5,), (2, 1, 3)]
CONFIGS = {
    "plain": {"learning_rate": 0.05},
    "schedule": {
        "learning_rate": (
            "ExponentialDecay",
            {"initial_learning_rate": 0.1, "decay_steps": 2, "decay_rate": 0.7},
        )
    },
    "ema-overwrite": {
        "learning_rate": 0.1,
        "use_ema": True,
        "ema_momentum": 0.8,
        "ema_overwrite_frequency": 2,
    },
    # 3 steps with k=3 stop right before an update: the store holds a live accumulation.
    "accumulation": {
        "learning_rate": 0.1,
        "gradient_accumulation_steps": 3,
        "weight_decay": 0.05,
        "use_ema": True,
    },
    "clipnorm-lsf": {
        "learning_rate": 0.2,
        "clipnorm": 0.5,
        "loss_scale_factor": 64.0,
        "initial_accumulator_value": 0.0,
        "epsilon": 1e-3,
    },
}


def _optimizer(module, config):
    config = dict(config)
    lr = config.pop("learning_rate")
    if isinstance(lr, tuple):
        schedules = keras.optimizers.schedules if module is keras.optimizers else an.schedules
        lr = getattr(schedules, lr[0])(**lr[1])
    return module.Adagrad(learning_rate=lr, **config)


def _uses_cond(config):
    return bool(config.get("gradient_accumulation_steps"))


def _new_vars(values):
    kvars = [keras.Variable(np.array(v, np.float32), name=f"w{i}") for i, v in enumerate(values)]
    avars = [an.Variable(np.array(v, np.float32), name=f"w{i}") for i, v in enumerate(values)]
    return kvars, avars


def _grads(rng, scale=1.0):
    return [np.asarray(rng.normal(size=s) * scale, np.float32) for s in SHAPES]


def _step(ko, ao, kvars, avars, grads, config, what):
    kp.keras_apply(ko, grads, kvars, eager_cond=_uses_cond(config))
    kp.native_apply(ao, grads, avars)
    kp.compare_state(what, ko, ao, kvars, avars)


def _transfer_both_ways(name, config, store_factory):
    rng = np.random.default_rng(3)
    scale = config.get("loss_scale_factor", 1.0)
    init = [rng.normal(size=s) for s in SHAPES]
    kvars, avars = _new_vars(init)
    ko, ao = _optimizer(keras.optimizers, config), _optimizer(an, config)
    for step in range(3):
        _step(ko, ao, kvars, avars, _grads(rng, scale), config, f"{name} step {step}")

    # Keras -> ours: a fresh optimizer of this package, built on copies of the
    # variables, loads Keras' store.
    keras_store = store_factory("keras")
    ko.save_own_variables(keras_store)
    assert sorted(keras_store.keys(), key=int) == [str(i) for i in range(len(ko.variables))]
    k_vals = [kp.to_numpy(v) for v in kvars]
    _, avars2 = _new_vars(k_vals)
    ao2 = _optimizer(an, config)
    ao2.build(avars2)
    ao2.load_own_variables(keras_store)
    kp.compare_optimizer_variables(ko, ao2, f"{name}: ours loaded from Keras")

    # Ours -> Keras.
    our_store = store_factory("ours")
    ao.save_own_variables(our_store)
    kvars2, _ = _new_vars([kp.to_numpy(v) for v in avars])
    ko2 = _optimizer(keras.optimizers, config)
    ko2.build(kvars2)
    ko2.load_own_variables(our_store)
    kp.compare_optimizer_variables(ko2, ao, f"{name}: Keras loaded from ours")

    # Both pairs keep stepping alike: (Keras original, ours restored) and
    # (Keras restored, ours original).
    for step in range(3, 7):
        grads = _grads(rng, scale)
        _step(ko, ao2, kvars, avars2, grads, config, f"{name} Keras->ours step {step}")
        _step(ko2, ao, kvars2, avars, grads, config, f"{name} ours->Keras step {step}")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_save_load_own_variables_both_ways(name):
    _transfer_both_ways(name, CONFIGS[name], lambda who: {})


@pytest.mark.parametrize("name", ["plain", "accumulation"])
def test_save_load_own_variables_through_h5py(name, tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "optimizer.h5", "w") as f:
        _transfer_both_ways(name, CONFIGS[name], f.create_group)


# ------------------------------------------------------------------- stateless_apply
STATELESS = {
    "plain": ({"learning_rate": 0.05}, False),
    "wd-clipnorm-none": ({"learning_rate": 0.1, "weight_decay": 0.02, "clipnorm": 0.4}, True),
    "ema-overwrite": (
        {"learning_rate": 0.1, "use_ema": True, "ema_momentum": 0.7, "ema_overwrite_frequency": 2},
        False,
    ),
    "schedule-global_clipnorm": (
        {
            "learning_rate": (
                "PolynomialDecay",
                {
                    "initial_learning_rate": 0.2,
                    "decay_steps": 3,
                    "end_learning_rate": 0.01,
                    "power": 2.0,
                    "cycle": True,
                },
            ),
            "global_clipnorm": 1.0,
        },
        False,
    ),
    "accumulation": (
        {"learning_rate": 0.1, "gradient_accumulation_steps": 2, "loss_scale_factor": 4.0},
        False,
    ),
}


def _warns_if_missing(grads):
    """Keras and this package both warn about a None gradient."""
    if any(g is None for g in grads):
        return pytest.warns(UserWarning, match="Gradients do not exist")
    return contextlib.nullcontext()


@pytest.mark.parametrize("name", list(STATELESS))
def test_stateless_apply_matches_keras(name):
    """Keras' stateless_apply (real, compiled `lax.cond`s) vs ours, 4 chained steps."""
    config, with_none = STATELESS[name]
    rng = np.random.default_rng(11)
    kvars, avars = _new_vars([rng.normal(size=s) for s in SHAPES])
    ko, ao = _optimizer(keras.optimizers, config), _optimizer(an, config)
    ko.build(kvars)
    ao.build(avars)
    k_train = [v.value for v in kvars]
    k_opt = [v.value for v in ko.variables]
    a_train = [kp.to_numpy(v) for v in avars]
    a_opt = [kp.to_numpy(v) for v in ao.variables]
    a_own_before = [kp.to_numpy(v) for v in ao.variables] + [kp.to_numpy(v) for v in avars]
    scale = config.get("loss_scale_factor", 1.0)
    for step in range(4):
        grads = _grads(rng, scale)
        if with_none and step % 2:
            grads[1] = None
        inputs = [x.copy() for x in a_train + a_opt]
        with _warns_if_missing(grads):
            k_train, k_opt = ko.stateless_apply(
                k_opt, [None if g is None else jax.numpy.asarray(g) for g in grads], k_train
            )
        with _warns_if_missing(grads):
            new_train, new_opt = ao.stateless_apply(a_opt, grads, a_train)
        for before, after in zip(inputs, a_train + a_opt):  # inputs untouched
            np.testing.assert_array_equal(before, after)
        a_train, a_opt = new_train, new_opt
        assert len(a_opt) == len(k_opt) and len(a_train) == len(k_train)
        for i, (a, k) in enumerate(zip(a_train, k_train)):
            kp.assert_close(a, k, f"stateless {name} step {step}: trainable {i}")
        for var, a, k in zip(ao.variables, a_opt, k_opt):
            what = f"stateless {name} step {step}: {var.path}"
            if np.issubdtype(np.asarray(k).dtype, np.integer):
                assert int(a) == int(k), what
            else:
                kp.assert_close(a, k, what)
    # Neither optimizer's own state moved.
    for before, var in zip(a_own_before, list(ao.variables) + avars):
        np.testing.assert_array_equal(before, kp.to_numpy(var))
    assert int(kp.to_numpy(ko.iterations)) == 0
