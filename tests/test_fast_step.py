"""The native steady-state step (`cpp/fast_step.cpp`, `Optimizer._keep_fast_step`).

After a general step in build order, `apply` repeats the step in one native call
until something its plan depends on changes. Every test here compares an
optimizer that takes that path with one that cannot (its gradients come as a
generator, which the fast path declines), bit for bit, and checks that the
fast path was really taken.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

import adagrad_native as an
from tests.helpers import assert_identical

SHAPES = [(7, 5), (), (0,), (33,), (4, 3, 2)]


def _data(dtype, steps, seed=3, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return params, grads


class Pair:
    """The same optimizer twice: `fast` gets lists, `general` generators."""

    def __init__(self, make, dtype=np.float32, steps=6, shapes=SHAPES):
        self.params, self.grads = _data(dtype, steps, shapes=shapes)
        self.general_params = [p.copy() for p in self.params]
        self.fast, self.general = make(), make()
        self.fast.build(self.params)
        self.general.build(self.general_params)

    def step(self, i, fast_grads=None, general_grads=None):
        self.fast.apply(fast_grads if fast_grads is not None else self.grads[i], self.params)
        self.general.apply(
            iter(general_grads if general_grads is not None else self.grads[i]), self.general_params
        )

    def assert_same(self):
        assert_identical(
            [*self.params, *(v.value for v in self.fast.variables)],
            [*self.general_params, *(v.value for v in self.general.variables)],
            "fast vs general: array",
        )

    def assert_fast(self):
        assert self.fast._engine.fast_step is not None, "the fast path was not set up"


CONFIGS = {
    "plain": dict(),
    "weight_decay": dict(weight_decay=0.05),
    "clipnorm": dict(clipnorm=0.5),
    "global_clipnorm": dict(global_clipnorm=0.5),
    "clipvalue": dict(clipvalue=0.3),
    "loss_scale_factor": dict(loss_scale_factor=4.0),
    "on_nonfinite_skip": dict(on_nonfinite="skip"),
    "acc_float32": dict(accumulator_dtype="float32"),
}


@pytest.mark.parametrize("config_id", list(CONFIGS))
def test_fast_steps_match_general_steps(float_dtype, config_id):
    pair = Pair(lambda: an.Adagrad(learning_rate=0.1, **CONFIGS[config_id]), float_dtype)
    for i in range(6):
        pair.step(i)
    pair.assert_fast()
    pair.assert_same()
    assert int(pair.fast.iterations) == 6


def test_rowwise_and_overwrite_variables_take_the_fast_path():
    params, grads = _data(np.float32, 4, shapes=[(6, 4), (5,)])
    counter = an.Variable(np.zeros(3, np.float32), name="counter")
    counter.overwrite_with_gradient = True
    general_counter = an.Variable(np.zeros(3, np.float32), name="counter")
    general_counter.overwrite_with_gradient = True
    fast, general = an.RowWiseAdagrad(0.1), an.RowWiseAdagrad(0.1)
    fast_vars = [*params, counter]
    general_vars = [*[p.copy() for p in params], general_counter]
    for i in range(4):
        g = [*grads[i], np.full(3, i, np.float32)]
        fast.apply(g, fast_vars)
        general.apply(iter(g), general_vars)
    assert fast._engine.fast_step is not None
    for a, b in zip(fast_vars, general_vars, strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    np.testing.assert_array_equal(counter.value, [3, 3, 3])


def test_tuple_of_gradients_and_no_variables_take_the_fast_path():
    pair = Pair(lambda: an.Adagrad(0.1))
    pair.step(0)
    pair.assert_fast()
    fast_step = pair.fast._engine.fast_step
    pair.fast.apply(tuple(pair.grads[1]))
    pair.general.apply(iter(pair.grads[1]))
    assert pair.fast._engine.fast_step is fast_step
    pair.assert_same()


def test_variables_as_an_iterator():
    pair = Pair(lambda: an.Adagrad(0.1))
    for i in range(3):
        pair.fast.apply(pair.grads[i], iter(pair.params))
        pair.general.apply(iter(pair.grads[i]), pair.general_params)
    pair.assert_fast()
    pair.assert_same()
    assert int(pair.fast.iterations) == 3


# Each change is applied to both optimizers between steps 3 and 4. `matters`
# checks that the change alters the result, so the comparison cannot pass by
# ignoring it.
CHANGES = {
    "learning_rate_number": lambda o: setattr(o, "learning_rate", 0.5),
    "learning_rate_assign": lambda o: o.learning_rate.assign(0.5),
    "learning_rate_schedule": lambda o: setattr(
        o, "learning_rate", an.schedules.ExponentialDecay(0.5, 2, 0.5)
    ),
    "epsilon": lambda o: setattr(o, "epsilon", 0.5),
    "weight_decay": lambda o: setattr(o, "weight_decay", 0.1),
    "clipnorm": lambda o: setattr(o, "clipnorm", 0.1),
    "global_clipnorm": lambda o: setattr(o, "global_clipnorm", 0.1),
    "clipvalue": lambda o: setattr(o, "clipvalue", 0.01),
    "loss_scale_factor": lambda o: setattr(o, "loss_scale_factor", 8.0),
    "iterations_assign": lambda o: o.iterations.assign(100),
}


@pytest.mark.parametrize("change_id", list(CHANGES))
def test_a_change_between_fast_steps_is_seen(change_id):
    def run(change):
        pair = Pair(lambda: an.Adagrad(0.1))
        for i in range(3):
            pair.step(i)
        pair.assert_fast()
        if change:
            CHANGES[change_id](pair.fast)
            CHANGES[change_id](pair.general)
        for i in range(3, 6):
            pair.step(i)
        pair.assert_same()
        assert int(pair.fast.iterations) == int(pair.general.iterations)
        return pair

    changed, unchanged = run(True), run(False)
    state = [*changed.params, changed.fast.iterations.value]
    other = [*unchanged.params, unchanged.fast.iterations.value]
    assert any(a.tobytes() != b.tobytes() for a, b in zip(state, other, strict=True)), (
        "vacuous change"
    )


def test_setting_a_number_learning_rate_every_step_stays_fast():
    # A per-step learning-rate callback writes the number into the variable.
    pair = Pair(lambda: an.Adagrad(0.1))
    pair.step(0)
    pair.assert_fast()
    fast_step = pair.fast._engine.fast_step
    for i in range(1, 6):
        pair.fast.learning_rate = pair.general.learning_rate = 0.1 / i
        pair.step(i)
    assert pair.fast._engine.fast_step is fast_step
    pair.assert_same()


def test_a_constraint_added_between_fast_steps_is_applied():
    params, grads = _data(np.float32, 4, shapes=[(5,), (3,)])
    var = an.Variable(params[0], name="w")
    opt = an.Adagrad(1.0)
    for i in range(2):
        opt.apply(grads[i], [var, params[1]])
    assert opt._engine.fast_step is not None
    var.constraint = lambda v: np.clip(v, -0.01, 0.01)
    opt.apply(grads[2], [var, params[1]])
    assert np.abs(var.value).max() <= np.float32(0.01)
    var.constraint = None
    opt.apply(grads[3], [var, params[1]])
    assert opt._engine.fast_step is not None, "the fast path comes back once the constraint is gone"


def test_nonfinite_gradient_with_raise_changes_nothing(snapshot):
    pair = Pair(lambda: an.Adagrad(0.1, on_nonfinite="raise"))
    pair.step(0)
    pair.step(1)
    pair.assert_fast()
    bad = [g.copy() for g in pair.grads[2]]
    bad[3][5] = np.nan
    snap = snapshot(pair.fast, pair.params)
    with pytest.raises(ValueError, match=r"variable 'param_3' \(index 3\) contains inf or NaN"):
        pair.fast.apply(bad, pair.params)
    snap.assert_unchanged()
    with pytest.raises(ValueError, match=r"variable 'param_3' \(index 3\) contains inf or NaN"):
        pair.general.apply(iter(bad), pair.general_params)
    pair.step(2)
    pair.assert_same()


def test_nonfinite_gradient_with_skip_changes_nothing(snapshot):
    pair = Pair(lambda: an.Adagrad(0.1, on_nonfinite="skip"))
    pair.step(0)
    pair.assert_fast()
    bad = [g.copy() for g in pair.grads[1]]
    bad[0][0, 0] = np.inf
    snap = snapshot(pair.fast, pair.params)
    pair.fast.apply(bad, pair.params)
    snap.assert_unchanged()


def _fortran(g):
    return np.asfortranarray(g) if g.ndim >= 2 else g


# Calls the fast path declines; the general path must handle them as always.
DECLINED = {
    "none_gradient": lambda grads, params: ([None, *grads[1:]], params),
    "non_contiguous_gradient": lambda grads, params: ([_fortran(g) for g in grads], params),
    "reordered_variables": lambda grads, params: (grads[::-1], params[::-1]),
    "new_view_objects": lambda grads, params: (grads, [p.view() for p in params]),
    "sparse_gradient": lambda grads, params: (
        [an.SparseGradient(np.array([1, 1, 4]), grads[0][[0, 1, 2]]), *grads[1:]],
        params,
    ),
    "byte_swapped_gradient": lambda grads, params: (
        [g.astype(g.dtype.newbyteorder()) for g in grads],
        params,
    ),
}


def _warns_if_none_gradient(declined_id):
    """Both paths warn about a None gradient, as Keras does."""
    if declined_id == "none_gradient":
        return pytest.warns(UserWarning, match="Gradients do not exist")
    return contextlib.nullcontext()


@pytest.mark.parametrize("declined_id", list(DECLINED))
def test_declined_calls_match_the_general_path(declined_id):
    pair = Pair(lambda: an.Adagrad(0.1))
    pair.step(0)
    pair.assert_fast()
    fast_grads, fast_vars = DECLINED[declined_id](pair.grads[1], pair.params)
    general_grads, general_vars = DECLINED[declined_id](pair.grads[1], pair.general_params)
    with _warns_if_none_gradient(declined_id):
        pair.fast.apply(fast_grads, fast_vars)
    with _warns_if_none_gradient(declined_id):
        pair.general.apply(iter(general_grads), general_vars)
    for i in range(2, 4):
        pair.step(i)
    pair.assert_same()
    assert int(pair.fast.iterations) == 4


@pytest.mark.parametrize(
    "bad_id, error, message",
    [
        ("dtype", TypeError, r"variable 'param_0' \(index 0\) has dtype int64"),
        ("shape", ValueError, r"variable 'param_0' \(index 0\) has shape \(5, 7\)"),
        ("count", ValueError, r"Received 4 gradients for 5 variables"),
    ],
)
def test_bad_gradients_after_fast_steps_raise_and_change_nothing(bad_id, error, message, snapshot):
    pair = Pair(lambda: an.Adagrad(0.1))
    pair.step(0)
    pair.assert_fast()
    grads = list(pair.grads[1])
    if bad_id == "dtype":
        grads[0] = grads[0].astype(np.int64)
    elif bad_id == "shape":
        grads[0] = grads[0].reshape(5, 7)
    else:
        grads = grads[:4]
    snap = snapshot(pair.fast, pair.params)
    with pytest.raises(error, match=message):
        pair.fast.apply(grads, pair.params)
    snap.assert_unchanged()


def test_stateless_apply_between_fast_steps_touches_nothing(snapshot):
    pair = Pair(lambda: an.Adagrad(0.1))
    pair.step(0)
    pair.assert_fast()
    snap = snapshot(pair.fast, pair.params)
    new_params, _ = pair.fast.stateless_apply(
        [v.value for v in pair.fast.variables], pair.grads[1], pair.params
    )
    snap.assert_unchanged()
    pair.step(1)
    pair.assert_same()
    for a, b in zip(new_params, pair.params, strict=True):
        assert a.tobytes() == b.tobytes()


def test_concurrent_apply_calls_are_serialized(restore_threads):
    # Large enough that unserialized steps overlap (and lose updates) every time.
    an.set_num_threads(2)
    shapes = [(2_000_000,), (17,)]
    params = [np.zeros(s, np.float32) for s in shapes]
    grads = [np.full(s, 0.25, np.float32) for s in shapes]
    expected = [p.copy() for p in params]
    serial = an.Adagrad(0.1)
    for _ in range(41):
        serial.apply(grads, expected)

    shared = an.Adagrad(0.1)
    shared.apply(grads, params)
    start = threading.Barrier(2)

    def worker():
        start.wait()
        for _ in range(20):
            shared.apply(grads, params)

    workers = [threading.Thread(target=worker) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert shared._engine.fast_step is not None
    assert int(shared.iterations) == 41
    for a, b in zip(params, expected, strict=True):
        assert a.tobytes() == b.tobytes()
