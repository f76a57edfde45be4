"""The opt-in non-finite gradient policy, next to Keras' default."""

import numpy as np
import pytest

import adagrad_native as an

F32 = np.float32


def _setup(policy, **kwargs):
    params = [np.linspace(-1, 1, 40_000, dtype=F32), np.ones((3, 4), F32)]
    opt = an.Adagrad(0.1, on_nonfinite=policy, use_ema=True, **kwargs)
    opt.build(params)
    return opt, params


def _state(opt, params):
    return [p.copy() for p in params] + [v.numpy() for v in opt.variables]


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize(
    "clip", [{}, {"global_clipnorm": 1.0}, {"clipnorm": 1.0}], ids=["noclip", "global", "clipnorm"]
)
def test_raise_names_variable_and_changes_nothing(bad, clip):
    opt, params = _setup("raise", **clip)
    opt.apply([np.ones_like(p) for p in params], params)
    before = _state(opt, params)
    grads = [np.ones_like(p) for p in params]
    grads[1][2, 3] = bad
    with pytest.raises(ValueError, match=r"'param_1' \(index 1\).*inf or NaN"):
        opt.apply(grads, params)
    for a, b in zip(before, _state(opt, params)):
        np.testing.assert_array_equal(a, b)


def test_skip_drops_the_step_then_continues():
    opt, params = _setup("skip")
    ref, ref_params = _setup("propagate")
    grads = [np.full_like(p, 0.5) for p in params]
    bad = [g.copy() for g in grads]
    bad[0][123] = np.nan
    opt.apply(bad, params)  # dropped: not even the counter moves
    assert int(opt.iterations) == 0
    np.testing.assert_array_equal(params[0], np.linspace(-1, 1, 40_000, dtype=F32))
    opt.apply(grads, params)
    ref.apply(grads, ref_params)
    for a, b in zip(_state(opt, params), _state(ref, ref_params)):
        np.testing.assert_array_equal(a, b)


def test_propagate_is_keras_global_clipnorm_nan():
    # Keras: a non-finite global norm makes every gradient NaN, so every
    # variable becomes NaN after the step.
    opt, params = _setup("propagate", global_clipnorm=1.0)
    grads = [np.ones_like(p) for p in params]
    grads[1][0, 0] = np.inf
    opt.apply(grads, params)
    assert np.isnan(params[0]).all() and np.isnan(params[1]).all()


def test_unknown_policy_raises():
    with pytest.raises(ValueError, match="on_nonfinite.*'sometimes'"):
        an.Adagrad(on_nonfinite="sometimes")


def test_policy_round_trips_in_config_only_when_set():
    assert "on_nonfinite" not in an.Adagrad().get_config()  # Keras can load the default
    config = an.Adagrad(on_nonfinite="skip").get_config()
    assert an.Adagrad.from_config(config).on_nonfinite == "skip"
