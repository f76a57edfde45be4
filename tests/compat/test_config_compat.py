"""Configs and serialization: adagrad_native vs the real keras.optimizers.Adagrad.

`get_config()` both ways (same keys and values), `from_config` of each other's
configs (also after a JSON round trip, and stepping the results side by side),
`serialize` / `deserialize` / `get` in Keras' outer format.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import adagrad_native as an  # noqa: E402
from tests.compat import keras_pairs as kp  # noqa: E402

# Every random scenario whose learning rate has a config (not the plain callable),
# each under an explicit name so that the two configs must be equal as a whole.
CONFIG_SCENARIOS = [
    dataclasses.replace(sc, kwargs={**sc.kwargs, "name": f"cfg_{sc.seed}"})
    for sc in (kp.make_scenario(seed) for seed in range(64))
    if sc.lr_kind != "callable"
]


def _pair(sc):
    return kp.make_optimizers(sc, {"step": 0})


def _json(config):
    return json.loads(json.dumps(config))


@pytest.mark.parametrize("sc", CONFIG_SCENARIOS, ids=[sc.id for sc in CONFIG_SCENARIOS])
def test_get_config_and_from_config_both_ways(sc):
    ko, ao = _pair(sc)
    kcfg, acfg = ko.get_config(), ao.get_config()
    assert list(acfg) == list(kcfg)  # same keys, same order
    assert acfg == kcfg
    for roundtrip in (dict, _json):
        # Keras' config loads here, and ours loads in Keras; both reproduce the config.
        assert an.Adagrad.from_config(roundtrip(kcfg)).get_config() == kcfg
        assert keras.optimizers.Adagrad.from_config(roundtrip(acfg)).get_config() == acfg


@pytest.mark.parametrize("sc", CONFIG_SCENARIOS[::6], ids=[sc.id for sc in CONFIG_SCENARIOS[::6]])
def test_optimizers_from_each_others_configs_step_alike(sc):
    """A Keras optimizer made from our JSON config and ours made from Keras' step alike."""
    ko, ao = _pair(sc)
    ko2 = keras.optimizers.Adagrad.from_config(_json(ao.get_config()))
    ao2 = an.Adagrad.from_config(_json(ko.get_config()))
    rng = np.random.default_rng(sc.seed)
    kvars, avars = kp.make_variables(sc, rng)
    kp.exclude(sc, ko2, ao2, kvars, avars)
    for step in range(min(sc.steps, 4)):
        grads = kp.draw_gradients(sc, rng, step)
        kp.keras_apply(ko2, grads, kvars, eager_cond=sc.uses_cond)
        kp.native_apply(ao2, grads, avars)
        kp.compare_state(f"{sc.id} (from configs) step {step}", ko2, ao2, kvars, avars)


@pytest.mark.parametrize("sc", CONFIG_SCENARIOS[::4], ids=[sc.id for sc in CONFIG_SCENARIOS[::4]])
def test_serialize_deserialize_both_ways(sc):
    ko, ao = _pair(sc)
    ours, theirs = an.serialize(ao), keras.optimizers.serialize(ko)
    assert ours == theirs
    assert _json(ours) == _json(theirs)
    k_from_ours = keras.optimizers.deserialize(_json(ours))
    assert isinstance(k_from_ours, keras.optimizers.Adagrad)
    assert k_from_ours.get_config() == ao.get_config()
    a_from_keras = an.deserialize(_json(theirs))
    assert isinstance(a_from_keras, an.Adagrad)
    assert a_from_keras.get_config() == ko.get_config()
    assert keras.optimizers.get(ours).get_config() == ao.get_config()
    assert an.get(theirs).get_config() == ko.get_config()


def test_get_by_name_and_defaults_match():
    def without_name(config):
        return {k: v for k, v in config.items() if k != "name"}

    k, a = keras.optimizers.get("adagrad"), an.get("adagrad")
    assert isinstance(k, keras.optimizers.Adagrad) and isinstance(a, an.Adagrad)
    assert without_name(a.get_config()) == without_name(k.get_config())
    assert an.get(None) is None and keras.optimizers.get(None) is None
    assert an.get(a) is a
    with pytest.raises(ValueError):
        keras.optimizers.get("no_such_optimizer")
    with pytest.raises(ValueError):
        an.get("no_such_optimizer")


def test_default_config_and_default_names_match():
    """Defaults, and the auto-generated names' pattern (adagrad, adagrad_1, ...)."""
    k, a = keras.optimizers.Adagrad(), an.Adagrad()
    kcfg, acfg = k.get_config(), a.get_config()
    assert {x: y for x, y in acfg.items() if x != "name"} == {
        x: y for x, y in kcfg.items() if x != "name"
    }
    for name in (k.name, a.name):
        assert name == "adagrad" or (
            name.startswith("adagrad_") and name[len("adagrad_") :].isdigit()
        )
