"""RowWiseAdagrad against its numpy oracle (tests/oracle/sparse.py), dense and sparse.

Tolerance: 8 ulps per step (`tests.helpers.assert_close`): the oracle follows the
core's operation order, including the documented float64 order of the row
mean, so differences come only from the final roundings.
"""

from __future__ import annotations

import numpy as np
import pytest

import adagrad_native as an
from tests.helpers import FLOAT_DTYPES, LOW_PRECISION, assert_close, sparse_ids
from tests.oracle import RowWiseReferenceAdagrad, dense_equivalent

STEPS = 5


SHAPES = {
    "2x3": (2, 3),
    "1x1": (1, 1),
    "7x9x2": (7, 9, 2),
    "3x300": (3, 300),
    "60x17": (60, 17),
    "vector9": (9,),
    "scalar": (),
}
EMA = dict(use_ema=True, ema_momentum=0.9)
FEATURES = {
    "plain": {},
    "hparams": dict(learning_rate=0.5, initial_accumulator_value=0.3, epsilon=1e-6),
    "loss_scale": dict(loss_scale_factor=8.0),
    "clipnorm": dict(clipnorm=1.0),
    "global_clipnorm": dict(global_clipnorm=1.0),
    "clipvalue": dict(clipvalue=0.5),
    "weight_decay": dict(weight_decay=0.05),
    "ema_overwrite2": dict(ema_overwrite_frequency=2, **EMA),
    "accum2": dict(gradient_accumulation_steps=2),
    "all_features": dict(
        loss_scale_factor=4.0,
        gradient_accumulation_steps=3,
        global_clipnorm=1.0,
        weight_decay=0.05,
        **EMA,
    ),
}


def _cases():
    for dtype_id in ("f32", "f64"):
        for shape_id in SHAPES:
            for feat_id in FEATURES:
                for grad in ("dense", "sparse", "sparse_single"):
                    if grad != "dense" and SHAPES[shape_id] == ():
                        continue
                    yield pytest.param(
                        dtype_id,
                        shape_id,
                        feat_id,
                        grad,
                        id=f"{dtype_id}-{shape_id}-{feat_id}-{grad}",
                    )


@pytest.mark.parametrize("dtype_id, shape_id, feat_id, grad", list(_cases()))
def test_matches_oracle(dtype_id, shape_id, feat_id, grad, rng):
    dt = np.float32 if dtype_id == "f32" else np.float64
    shape = SHAPES[shape_id]
    kwargs = dict(learning_rate=0.1)
    kwargs.update(FEATURES[feat_id])
    init = [rng.standard_normal(shape).astype(dt), rng.standard_normal((4, 3)).astype(dt)]
    variables = [an.Variable(a.copy(), name=f"v{i}") for i, a in enumerate(init)]
    opt = an.RowWiseAdagrad(**kwargs)
    ref = RowWiseReferenceAdagrad(**kwargs)
    ref.build(init)
    for step in range(STEPS):
        grads = []
        for a in init:
            if grad != "dense" and a.ndim >= 1:
                kind = "repeated" if grad == "sparse" else "single"
                n = a.shape[0] + 2 if kind == "repeated" else a.shape[0]
                idx = sparse_ids(kind, a.shape[0], n, rng)
                grads.append(
                    an.SparseGradient(
                        idx, (rng.standard_normal((len(idx),) + a.shape[1:]) * 2).astype(dt)
                    )
                )
            else:
                grads.append((rng.standard_normal(a.shape) * 2).astype(dt))
        opt.apply(grads, variables)
        ref.apply(grads)
        for i, v in enumerate(variables):
            assert_close(v.numpy(), ref.params[i], step + 1, f"step {step} param {i}")
            assert_close(
                opt._accumulators[i].numpy(),
                ref.accumulators[i],
                step + 1,
                f"step {step} accumulator {i}",
            )


def test_accumulator_shapes_and_names():
    table = an.Variable(np.zeros((10, 4, 2), np.float32), name="table")
    bias = an.Variable(np.zeros((4,), np.float32), name="bias")
    scalar = an.Variable(np.zeros((), np.float64), name="s")
    opt = an.RowWiseAdagrad(initial_accumulator_value=0.25)
    opt.build([table, bias, scalar])
    shapes = [a.shape for a in opt._accumulators]
    assert shapes == [(10,), (4,), ()]
    assert [a.path.split("/")[-1] for a in opt._accumulators] == [
        "table_accumulator",
        "bias_accumulator",
        "s_accumulator",
    ]
    assert np.all(opt._accumulators[0].numpy() == np.float32(0.25))


def test_vectors_and_scalars_behave_as_adagrad(rng):
    init = [
        rng.standard_normal((17,)).astype(np.float32),
        np.full((), rng.standard_normal(), np.float32),
    ]
    a, b = [x.copy() for x in init], [x.copy() for x in init]
    o1, o2 = an.RowWiseAdagrad(learning_rate=0.1), an.Adagrad(learning_rate=0.1)
    for _ in range(3):
        g = [rng.standard_normal(x.shape).astype(np.float32) for x in init]
        o1.apply(g, a)
        o2.apply(g, b)
    for x, y in zip(a, b, strict=True):
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("dtype_id", ["float32", *LOW_PRECISION])
@pytest.mark.parametrize("ids", ["repeated", "single"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(weight_decay=0.01, **EMA), dict(clipnorm=1.0), dict(gradient_accumulation_steps=2)],
    ids=["plain", "wd_ema", "clipnorm", "accum2"],
)
def test_sparse_equals_dense(kwargs, ids, dtype_id, rng):
    dt = FLOAT_DTYPES[dtype_id]
    shape = (500, 24)
    init = rng.standard_normal(shape).astype(dt)
    a, b = init.copy(), init.copy()
    o1, o2 = (
        an.RowWiseAdagrad(learning_rate=0.1, **kwargs),
        an.RowWiseAdagrad(learning_rate=0.1, **kwargs),
    )
    for _ in range(4):
        idx = sparse_ids(ids, 120 if ids == "repeated" else 500, 300, rng)
        values = rng.standard_normal((300, 24)).astype(dt)
        o1.apply([an.SparseGradient(idx, values)], [a])
        o2.apply([dense_equivalent(idx, values, shape)], [b])
    if "clipnorm" in kwargs:  # the norm folds the rows in another order: the last bit may differ
        tol = 1e-6 if dt == np.float32 else 1e-2
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol, atol=tol)
    else:
        assert a.tobytes() == b.tobytes()
        assert o1._accumulators[0].numpy().tobytes() == o2._accumulators[0].numpy().tobytes()


@pytest.mark.parametrize("grad", ["dense", "sparse", "sparse_single"])
def test_thread_count_does_not_change_bits(grad, rng, restore_threads):
    shape = (5000, 70)
    init = rng.standard_normal(shape).astype(np.float32)
    batches = []
    for _ in range(3):
        if grad == "sparse_single":
            idx = sparse_ids("single", shape[0], 4000, rng)
        else:
            idx = rng.zipf(1.2, 8000) % shape[0]
        values = rng.standard_normal((len(idx), 70)).astype(np.float32)
        batches.append(
            dense_equivalent(idx, values, shape)
            if grad == "dense"
            else an.SparseGradient(idx, values)
        )
    results = []
    for threads in (1, 2, 3):
        an.set_num_threads(threads)
        var = init.copy()
        opt = an.RowWiseAdagrad(learning_rate=0.1, global_clipnorm=50.0)
        for g in batches:
            opt.apply([g], [var])
        results.append((var.tobytes(), opt._accumulators[0].numpy().tobytes()))
    assert results[1] == results[0] and results[2] == results[0]


def test_low_precision_and_update_step(rng):
    for dt in (FLOAT_DTYPES[name] for name in LOW_PRECISION):
        var = an.Variable(rng.standard_normal((6, 5)).astype(dt), name="w")
        opt = an.RowWiseAdagrad(learning_rate=0.1, accumulator_dtype="float32")
        opt.apply([an.SparseGradient([1, 1, 4], np.ones((3, 5), dt))], [var])
        acc = opt._accumulators[0].numpy()
        assert acc.dtype == np.float32 and acc.shape == (6,)
        np.testing.assert_allclose(acc[[1, 4]], [0.1 + 4.0, 0.1 + 1.0], rtol=1e-6)
    w = an.Variable(np.ones((3, 2), np.float32), name="w")
    opt = an.RowWiseAdagrad(learning_rate=0.5)
    opt.build([w])
    opt.update_step(np.full((3, 2), 2.0, np.float32), w, 0.5)
    np.testing.assert_allclose(opt._accumulators[0].numpy(), [4.1] * 3, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), 1 - 0.5 * 2 / np.sqrt(4.1 + 1e-7), rtol=1e-6)


def test_config_round_trip():
    opt = an.RowWiseAdagrad(learning_rate=0.2, epsilon=1e-6, sparse_updates="lazy")
    again = an.RowWiseAdagrad.from_config(opt.get_config())
    assert isinstance(again, an.RowWiseAdagrad)
    assert again.get_config() == opt.get_config()


def test_stateless_apply_and_state_round_trip(rng):
    init = rng.standard_normal((30, 4)).astype(np.float32)
    var = an.Variable(init.copy(), name="emb")
    opt = an.RowWiseAdagrad(learning_rate=0.1)
    opt.build([var])
    grad = an.SparseGradient([3, 3, 7], rng.standard_normal((3, 4)).astype(np.float32))
    new_vars, new_opt = opt.stateless_apply(
        [v.numpy() for v in opt.variables], [grad], [init.copy()]
    )
    np.testing.assert_array_equal(var.numpy(), init)  # nothing changed in place
    opt.apply([grad], [var])
    assert new_vars[0].tobytes() == var.numpy().tobytes()
    assert [a.shape for a in new_opt] == [v.shape for v in opt.variables]
    other = an.RowWiseAdagrad(learning_rate=0.1)
    other.build([an.Variable(init.copy(), name="emb")])
    other.set_weights([v.numpy() for v in opt.variables])
    assert other._accumulators[0].numpy().tobytes() == opt._accumulators[0].numpy().tobytes()


ORDER_FEATURES = {
    "plain": {},
    "lazy_wd_ema": dict(sparse_updates="lazy", weight_decay=0.05, **EMA),
    "clipnorm": dict(clipnorm=1.0),
    "global_clipnorm": dict(global_clipnorm=1.0),
    "clipvalue": dict(clipvalue=0.5),
    "loss_scale": dict(loss_scale_factor=8.0),
}


@pytest.mark.parametrize("feat_id", list(ORDER_FEATURES))
@pytest.mark.parametrize("dtype_id", list(FLOAT_DTYPES))
def test_index_order_and_row_order_give_the_same_bits(dtype_id, feat_id, rng):
    """Rows with one copy each are updated in index order; the same rows each given a
    second copy of zeros (x + 0 is x) are updated over the distinct rows in row order."""
    dt = FLOAT_DTYPES[dtype_id]
    shape = (3000, 300)  # 300 wide: two blocks of a row
    init = rng.standard_normal(shape).astype(dt)
    single, doubled = init.copy(), init.copy()
    kwargs = dict(learning_rate=0.1, **ORDER_FEATURES[feat_id])
    o1, o2 = an.RowWiseAdagrad(**kwargs), an.RowWiseAdagrad(**kwargs)
    for _ in range(3):
        idx = sparse_ids("single", shape[0], 700, rng)
        values = (rng.standard_normal((len(idx), shape[1])) * 2).astype(dt)
        o1.apply([an.SparseGradient(idx, values)], [single])
        twice = an.SparseGradient(np.concatenate([idx, idx]), np.concatenate([values, 0 * values]))
        o2.apply([twice], [doubled])
    assert single.tobytes() == doubled.tobytes()
    for a, b in zip(o1.variables, o2.variables, strict=True):
        assert a.numpy().tobytes() == b.numpy().tobytes(), a.path
