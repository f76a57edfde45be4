"""Parameters and gradients as mappings: paired by key, named by key in checkpoints."""

from __future__ import annotations

import io

import numpy as np
import pytest

import adagrad_native as an
from tests.helpers import assert_identical


def _params():
    rng = np.random.default_rng(3)
    return {
        "kernel": rng.standard_normal((4, 3)).astype(np.float32),
        "bias": rng.standard_normal(3).astype(np.float32),
    }


def _grads(params, scale=0.5):
    return {k: np.full_like(v, scale) for k, v in params.items()}


@pytest.mark.parametrize("clip", [{}, {"clipnorm": 1.0}], ids=["plain", "clipnorm"])
def test_mappings_step_as_the_same_lists(clip):
    by_key, by_list = _params(), _params()
    a, b = an.Adagrad(0.1, **clip), an.Adagrad(0.1, **clip)
    for _ in range(3):
        grads = _grads(by_key)
        a.apply(dict(reversed(list(grads.items()))), by_key)  # any key order
        b.apply(list(_grads(by_list).values()), list(by_list.values()))
    assert_identical(list(by_key.values()), list(by_list.values()))


def test_after_a_build_from_a_mapping_the_gradients_alone_will_do():
    params = _params()
    opt = an.Adagrad(0.1)
    opt.build(params)
    opt.apply(_grads(params))
    assert int(opt.iterations) == 1
    names = [v.path.split("/")[-1] for v in opt.variables[2:]]
    assert names == ["kernel_accumulator", "bias_accumulator"]


@pytest.mark.parametrize(
    ("grads", "message"),
    [
        (lambda g: {"kernel": g["kernel"]}, "no entry for the key 'bias'"),
        (lambda g: {**g, "other": g["bias"]}, "the key 'other', which is not a key"),
    ],
    ids=["missing-key", "extra-key"],
)
def test_a_key_in_one_mapping_only_is_named_and_nothing_changes(grads, message, snapshot):
    params = _params()
    opt = an.Adagrad(0.1)
    opt.apply(_grads(params), params)
    before = [p.copy() for p in params.values()]
    shot = snapshot(opt)
    with pytest.raises(ValueError, match=message):
        opt.apply(grads(_grads(params)), params)
    shot.assert_unchanged()
    assert_identical(list(params.values()), before)


def test_a_mapping_with_a_sequence_is_refused():
    params = _params()
    with pytest.raises(TypeError, match="both be mappings"):
        an.Adagrad().apply(list(_grads(params).values()), params)
    opt = an.Adagrad()
    opt.build(list(params.values()))
    with pytest.raises(ValueError, match="not built from a mapping"):
        opt.apply(_grads(params))


def test_checkpoints_of_named_arrays_survive_reordering():
    params = _params()
    opt = an.Adagrad(0.1)
    opt.apply(_grads(params, 0.3), params)
    opt.apply(
        {"kernel": np.full((4, 3), 0.1, np.float32), "bias": np.full(3, 0.9, np.float32)}, params
    )
    file = io.BytesIO()
    an.save_state(opt, file)
    file.seek(0)
    reordered = {"bias": params["bias"].copy(), "kernel": params["kernel"].copy()}
    other = an.Adagrad(0.1)
    an.load_state(other, file, reordered)
    state, loaded = opt.state_dict(), other.state_dict()
    for key in ("kernel_accumulator", "bias_accumulator", "iteration"):
        assert loaded[key].tobytes() == state[key].tobytes(), key


def test_a_loss_scale_optimizer_takes_mappings_too():
    by_key, by_list = _params(), _params()
    a = an.LossScaleOptimizer(an.Adagrad(0.1), initial_scale=4.0)
    b = an.LossScaleOptimizer(an.Adagrad(0.1), initial_scale=4.0)
    for _ in range(2):
        a.apply(_grads(by_key, 2.0), by_key)
        b.apply(list(_grads(by_list, 2.0).values()), list(by_list.values()))
    assert_identical(list(by_key.values()), list(by_list.values()))
    assert int(a.step_counter) == 2


@pytest.mark.parametrize(
    "grads",
    [lambda g: {"kernel": g["kernel"]}, lambda g: list(g.values())],
    ids=["missing-key", "a-list-for-a-mapping"],
)
def test_a_refused_first_call_leaves_the_optimizer_unbuilt(grads):
    params = _params()
    opt = an.Adagrad(0.1)
    with pytest.raises((ValueError, TypeError)):
        opt.apply(grads(_grads(params)), params)
    assert not opt.built


COLLIDING = {
    "build": lambda opt, a, b: opt.build({1: a, "1": b}),
    "first-apply": lambda opt, a, b: opt.apply({1: a, "1": b}, {1: a, "1": b}),
    "gradients-after-a-build": lambda opt, a, b: (
        opt.build({"1": a, "2": b}),
        opt.apply({1: np.ones(3, np.float32), "1": np.ones(3, np.float32), "2": b}),
    ),
    "loss-scale-first-apply": lambda opt, a, b: an.LossScaleOptimizer(opt).apply(
        {1: a, "1": b}, {1: a, "1": b}
    ),
}


@pytest.mark.parametrize("case", list(COLLIDING))
def test_keys_that_are_the_same_as_strings_are_refused(case):
    # {1: a, "1": b}: one key would name two variables (or two gradients one variable).
    a, b = np.ones(3, np.float32), np.full(3, 2.0, np.float32)
    opt = an.Adagrad(0.1)
    with pytest.raises(ValueError, match=r"keys 1 and '1' of .* are the same as strings"):
        COLLIDING[case](opt, a, b)
    assert (a == 1).all() and (b == 2).all()
    if case != "gradients-after-a-build":
        assert not opt.built
    else:
        assert int(opt.iterations) == 0
