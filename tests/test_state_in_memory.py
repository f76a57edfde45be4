"""State in memory (`state_dict` / `load_state_dict`) and in file objects; loading into
an optimizer that is not built yet; what loading does with the learning rate."""

from __future__ import annotations

import io

import numpy as np
import pytest

import adagrad_native as an
from adagrad_native.checkpoint import CONFIG_KEY

FEATURES = {
    "plain": {},
    "ema_accumulation": {"use_ema": True, "gradient_accumulation_steps": 2},
}


def _trained(features, steps=3):
    rng = np.random.default_rng(5)
    params = [rng.standard_normal((6, 4)).astype(np.float32), np.zeros(4, np.float32)]
    opt = an.Adagrad(0.1, **features)
    for _ in range(steps):
        opt.apply([rng.standard_normal(p.shape).astype(np.float32) for p in params], params)
    return opt, params


def _arrays(state):
    return {k: np.asarray(v).tobytes() for k, v in state.items() if k != CONFIG_KEY}


@pytest.mark.parametrize("features", list(FEATURES))
def test_state_dict_round_trips_into_a_new_unbuilt_optimizer(features):
    opt, params = _trained(FEATURES[features])
    state = opt.state_dict()
    assert state[CONFIG_KEY] == opt.get_config()
    other = an.Adagrad(0.1, **FEATURES[features])
    other.load_state_dict(state, [p.copy() for p in params])
    assert _arrays(other.state_dict()) == _arrays(state)


def test_state_dict_is_a_copy():
    opt, params = _trained({})
    state = opt.state_dict()
    before = _arrays(state)
    opt.apply([np.ones_like(p) for p in params], params)
    assert _arrays(state) == before


@pytest.mark.parametrize("features", list(FEATURES))
def test_save_and_load_through_a_file_object(features):
    opt, params = _trained(FEATURES[features])
    file = io.BytesIO()
    an.save_state(opt, file)
    file.seek(0)
    other = an.Adagrad(0.1, **FEATURES[features])
    config = an.load_state(other, file, [p.copy() for p in params])
    assert config == opt.get_config()
    assert _arrays(other.state_dict()) == _arrays(opt.state_dict())


@pytest.mark.parametrize(("choice", "expected"), [("checkpoint", 0.1), ("keep", 0.5)])
def test_the_learning_rate_comes_from_where_the_caller_says(choice, expected):
    opt, params = _trained({})
    other = an.Adagrad(0.5)
    other.load_state_dict(opt.state_dict(), [p.copy() for p in params], learning_rate=choice)
    assert float(other.learning_rate) == pytest.approx(expected)


def test_a_refused_state_leaves_an_unbuilt_optimizer_unbuilt():
    opt, params = _trained({})
    state = opt.state_dict()
    state["param_0_accumulator"] = np.zeros((2, 2), np.float32)
    other = an.Adagrad(0.1)
    with pytest.raises(ValueError, match=r"mismatched \['param_0_accumulator: expected"):
        other.load_state_dict(state, params)
    assert not other.built


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda o, s: o.load_state_dict(s), ValueError, "not built: pass its trainable variables"),
        (
            lambda o, s: an.load_state(o, io.BytesIO(b"not a checkpoint"), None),
            ValueError,
            "not built",
        ),
        (
            lambda o, s: o.load_state_dict(s, [np.zeros((6, 4), np.float32)], learning_rate="x"),
            ValueError,
            r"`learning_rate` must be one of \('checkpoint', 'keep'\)",
        ),
    ],
    ids=["no-variables", "file-no-variables", "bad-learning-rate-choice"],
)
def test_bad_loads_are_refused_and_build_nothing(call, error, message):
    state = _trained({})[0].state_dict()
    other = an.Adagrad(0.1)
    with pytest.raises(error, match=message):
        call(other, state)
    assert not other.built


def test_a_file_object_that_is_not_a_checkpoint_says_so():
    opt, params = _trained({})
    with pytest.raises(ValueError, match="is not a checkpoint that save_state wrote"):
        an.load_state(opt, io.BytesIO(b"garbage"))


def test_variables_given_as_an_iterator_are_read_once():
    opt, params = _trained({})
    other = an.Adagrad(0.1)
    other.load_state_dict(opt.state_dict(), iter([p.copy() for p in params]))
    assert _arrays(other.state_dict()) == _arrays(opt.state_dict())
