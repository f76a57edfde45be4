"""Keras-format configs: get_config/from_config, serialize/deserialize/get."""

import json

import pytest

import adagrad_native as an
from adagrad_native import schedules

KERAS_ADAGRAD_KEYS = {
    "name",
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "global_clipnorm",
    "clipvalue",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
    "initial_accumulator_value",
    "epsilon",
}

CONFIGS = {
    "defaults": {},
    "everything": dict(
        learning_rate=0.25,
        initial_accumulator_value=0.3,
        epsilon=1e-6,
        weight_decay=0.01,
        clipnorm=1.5,
        use_ema=True,
        ema_momentum=0.9,
        ema_overwrite_frequency=3,
        loss_scale_factor=128.0,
        gradient_accumulation_steps=4,
    ),
    "schedule": dict(learning_rate=schedules.ExponentialDecay(0.1, 100, 0.5)),
}


@pytest.mark.parametrize("kwargs", CONFIGS.values(), ids=CONFIGS.keys())
def test_config_round_trips_through_json(kwargs):
    opt = an.Adagrad(**kwargs)
    config = opt.get_config()
    assert set(config) == KERAS_ADAGRAD_KEYS
    again = an.Adagrad.from_config(json.loads(json.dumps(config)))
    assert again.get_config() == config


def test_defaults_are_keras():
    config = an.Adagrad().get_config()
    assert config["learning_rate"] == pytest.approx(0.001)
    assert config["initial_accumulator_value"] == 0.1
    assert config["epsilon"] == 1e-7
    assert config["ema_momentum"] == 0.99
    assert not config["use_ema"]


def test_serialize_uses_keras_outer_format():
    outer = an.serialize(an.Adagrad(0.5, name="opt"))
    assert outer["module"] == "keras.optimizers"
    assert outer["class_name"] == "Adagrad"
    assert outer["registered_name"] is None
    assert outer["config"]["name"] == "opt"
    assert an.deserialize(json.loads(json.dumps(outer))).get_config() == outer["config"]


def test_get():
    assert isinstance(an.get("adagrad"), an.Adagrad)
    assert isinstance(an.get("Adagrad"), an.Adagrad)
    assert an.get(None) is None
    opt = an.Adagrad()
    assert an.get(opt) is opt
    assert isinstance(an.get(an.serialize(opt)), an.Adagrad)
    with pytest.raises(ValueError, match="'sgd'"):
        an.get("sgd")
    with pytest.raises(ValueError, match="Could not interpret"):
        an.get(42)


def test_callable_learning_rate_is_refused_not_guessed():
    with pytest.raises(TypeError, match="plain callable has no config"):
        an.Adagrad(learning_rate=lambda: 0.1).get_config()


def test_rowwise_deserializes_by_name():
    outer = an.serialize(an.RowWiseAdagrad(0.2))
    assert outer["class_name"] == "RowWiseAdagrad"
    assert isinstance(an.deserialize(outer), an.RowWiseAdagrad)
