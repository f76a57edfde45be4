"""Row-sparse gradients (`SparseGradient`): dense-equivalent semantics, lazy mode, errors.

A sparse gradient means the dense gradient `np.add.at(zeros, indices, values)`.
The native sparse path runs the same element-wise kernel as the dense path on
each touched row (or on every row when a feature needs a full pass), so its
result must equal the native dense result bit for bit. The one exception is
clipping by norm: in row mode the float64 sum of squares is taken over the
distinct rows instead of the dense chunks, in another order, so the clip
factor may differ by an ulp of float64 -- after the cast to the compute type a
difference of at most one ulp of the dtype, which we allow (rtol = 2 eps).
Against the numpy oracle: 8 ulps per step (`tests.helpers.assert_close`).
"""

from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest

import adagrad_native as an
from adagrad_native import _native
from tests.helpers import FLOAT_DTYPES, SLOT_LISTS, assert_close, sparse_ids
from tests.oracle import LazyReferenceAdagrad, ReferenceAdagrad, dense_equivalent

STEPS = 4
TABLE = (40, 6)


def assert_same(got, want, what, norm_clip=False):
    got, want = np.asarray(got), np.asarray(want)
    if norm_clip:
        eps = float(np.finfo(np.float32 if got.dtype.itemsize <= 4 else got.dtype).eps)
        np.testing.assert_allclose(
            got.astype(np.float64),
            want.astype(np.float64),
            rtol=2 * eps * STEPS,
            atol=2 * eps * STEPS,
            err_msg=what,
        )
    else:
        assert got.tobytes() == want.tobytes(), f"{what}: not bit-identical"


# ----------------------------------------------------------------- index patterns
def make_indices(pattern, step, rng, rows=TABLE[0]):
    if pattern == "unique":
        return rng.permutation(rows)[:12].astype(np.int64)
    if pattern == "duplicates":
        return rng.integers(0, rows // 4, 30).astype(np.int32)
    if pattern == "empty":
        return np.zeros(0, np.int64) if step % 2 == 0 else rng.integers(0, rows, 5)
    if pattern == "all_rows":
        return np.concatenate([rng.permutation(rows), rng.integers(0, rows, 7)])
    raise ValueError(pattern)


EMA = dict(use_ema=True, ema_momentum=0.9)
FEATURES = {
    "plain": {},
    "hparams": dict(learning_rate=0.5, initial_accumulator_value=0.3, epsilon=1e-6),
    "loss_scale": dict(loss_scale_factor=8.0),
    "accum2": dict(gradient_accumulation_steps=2),
    "accum3_ema_clipnorm": dict(gradient_accumulation_steps=3, clipnorm=1.0, **EMA),
    "clipnorm": dict(clipnorm=1.0),
    "global_clipnorm": dict(global_clipnorm=1.0),
    "clipvalue": dict(clipvalue=0.5),
    "weight_decay": dict(weight_decay=0.05),
    "ema": dict(EMA),
    "ema_overwrite2": dict(ema_overwrite_frequency=2, **EMA),
    "all_features": dict(
        loss_scale_factor=4.0,
        gradient_accumulation_steps=2,
        global_clipnorm=1.0,
        weight_decay=0.05,
        ema_overwrite_frequency=2,
        **EMA,
    ),
}
NORM_CLIP = ("clipnorm", "global_clipnorm", "accum3_ema_clipnorm", "all_features")


def _run_pair(dtype_id, feat_id, pattern, rng, extra=None, lazy=False):
    """Runs native sparse, native dense and the oracle side by side; returns them."""
    dt = FLOAT_DTYPES[dtype_id]
    kwargs = dict(learning_rate=0.1)
    kwargs.update(FEATURES[feat_id])
    kwargs.update(extra or {})
    acc_dtype = "float32" if dt.itemsize == 2 else None
    init = [rng.standard_normal(TABLE).astype(dt), rng.standard_normal((5,)).astype(dt)]
    sparse_vars = [a.copy() for a in init]
    dense_vars = [a.copy() for a in init]
    mode = "lazy" if lazy else "dense"
    o_sparse = an.Adagrad(**kwargs, accumulator_dtype=acc_dtype, sparse_updates=mode)
    o_dense = an.Adagrad(**kwargs, accumulator_dtype=acc_dtype)
    ref = (LazyReferenceAdagrad if lazy else ReferenceAdagrad)(**kwargs)
    ref.build(init)
    grads_seen = []
    for step in range(STEPS):
        idx = make_indices(pattern, step, rng)
        values = rng.standard_normal((len(idx),) + TABLE[1:]).astype(dt)
        sg = an.SparseGradient(idx, values, dense_shape=TABLE)
        bias = rng.standard_normal((5,)).astype(dt)
        o_sparse.apply([sg, bias], sparse_vars)
        o_dense.apply([dense_equivalent(idx, values, TABLE), bias], dense_vars)
        if dt in (np.float32, np.float64):
            ref.apply([sg, bias] if lazy else [dense_equivalent(idx, values, TABLE), bias])
        grads_seen.append(idx)
    return o_sparse, sparse_vars, o_dense, dense_vars, ref, dt


def _cases():
    for dtype_id in FLOAT_DTYPES:
        for feat_id in FEATURES:
            for pattern in ("unique", "duplicates", "empty", "all_rows"):
                if dtype_id != "float32" and pattern in ("unique", "empty"):
                    continue
                yield pytest.param(dtype_id, feat_id, pattern, id=f"{dtype_id}-{feat_id}-{pattern}")


@pytest.mark.parametrize("dtype_id, feat_id, pattern", list(_cases()))
def test_sparse_equals_dense(dtype_id, feat_id, pattern, rng):
    o_s, vs, o_d, vd, ref, dt = _run_pair(dtype_id, feat_id, pattern, rng)
    norm = feat_id in NORM_CLIP
    for i in range(2):
        assert_same(vs[i], vd[i], f"param {i}", norm)
    for attr in SLOT_LISTS:
        for i, (a, b) in enumerate(zip(getattr(o_s, attr), getattr(o_d, attr), strict=True)):
            if a is not None:
                assert_same(np.asarray(a), np.asarray(b), f"{attr}[{i}]", norm)
    if dt in (np.float32, np.float64):
        for i in range(2):
            assert_close(vs[i], ref.params[i], STEPS, f"oracle param {i}")
            assert_close(
                np.asarray(o_s._accumulators[i]),
                ref.accumulators[i],
                STEPS,
                f"oracle accumulator {i}",
            )


def test_untouched_rows_are_not_written_in_a_plain_step(rng):
    table = rng.standard_normal((1000, 8)).astype(np.float32)
    before = table.copy()
    opt = an.Adagrad(learning_rate=0.1)
    idx = np.array([3, 500, 3, 999])
    opt.apply([an.SparseGradient(idx, np.ones((4, 8), np.float32))], [table])
    changed = np.flatnonzero(np.any(table != before, axis=1))
    assert changed.tolist() == [3, 500, 999]
    acc = np.asarray(opt._accumulators[0])
    assert np.all(acc[[0, 1, 2, 4, 998]] == np.float32(0.1))
    np.testing.assert_array_equal(acc[3], np.float32(0.1) + np.float32(4.0))  # (1+1)^2


@pytest.mark.parametrize(
    "entry",
    [
        "apply",
        "apply_gradients",
        "stateless_apply",
        "loss_scale",
        "indexed_slices_like",
        "numpy_variable",
    ],
)
def test_entry_points(entry, rng):
    init = rng.standard_normal(TABLE).astype(np.float32)
    idx = np.array([1, 7, 1, 30], np.int64)
    values = rng.standard_normal((4, 6)).astype(np.float32)
    dense = dense_equivalent(idx, values, TABLE)
    want = init.copy()
    an.Adagrad(learning_rate=0.1).apply([dense], [want])
    sg = an.SparseGradient(idx, values)
    if entry == "indexed_slices_like":
        sg = types.SimpleNamespace(indices=idx, values=values, dense_shape=np.array(TABLE))
    var = init.copy() if entry == "numpy_variable" else an.Variable(init.copy(), name="emb")
    if entry in ("apply", "numpy_variable", "indexed_slices_like"):
        an.Adagrad(learning_rate=0.1).apply([sg], [var])
        got = np.asarray(var)
    elif entry == "apply_gradients":
        an.Adagrad(learning_rate=0.1).apply_gradients([(sg, var)])
        got = np.asarray(var)
    elif entry == "stateless_apply":
        opt = an.Adagrad(learning_rate=0.1)
        opt.build([var])
        new_vars, _ = opt.stateless_apply(
            [v.numpy() for v in opt.variables], [sg], [np.asarray(var)]
        )
        got = new_vars[0]
        np.testing.assert_array_equal(np.asarray(var), init)  # stateless: untouched
    else:
        inner = an.Adagrad(learning_rate=0.1)
        lso = an.LossScaleOptimizer(inner, initial_scale=4.0)
        lso.apply([an.SparseGradient(idx, values * np.float32(4.0))], [var])
        got = np.asarray(var)
    assert got.tobytes() == want.tobytes()


def test_loss_scale_optimizer_skips_nonfinite_sparse(rng, snapshot):
    var = an.Variable(rng.standard_normal(TABLE).astype(np.float32), name="emb")
    lso = an.LossScaleOptimizer(an.Adagrad(learning_rate=0.1), initial_scale=4.0)
    lso.build([var])
    inner = lso.inner_optimizer
    snap = snapshot(inner, [var])
    values = np.ones((2, 6), np.float32)
    values[1, 3] = np.inf
    lso.apply([an.SparseGradient([2, 5], values)], [var])
    snap.assert_unchanged()
    assert float(lso.dynamic_scale.value) == 2.0


def test_overwrite_with_gradient_variable(rng):
    init = rng.standard_normal(TABLE).astype(np.float32)
    v = an.Variable(init.copy(), name="w", overwrite_with_gradient=True)
    idx, values = np.array([4, 4, 9]), rng.standard_normal((3, 6)).astype(np.float32)
    an.Adagrad().apply([an.SparseGradient(idx, values)], [v])
    np.testing.assert_array_equal(np.asarray(v), dense_equivalent(idx, values, TABLE))


def test_one_dimensional_variable(rng):
    init = rng.standard_normal(50).astype(np.float32)
    a, b = init.copy(), init.copy()
    idx, values = np.array([3, 3, 49, 0]), rng.standard_normal(4).astype(np.float32)
    an.Adagrad(learning_rate=0.1).apply([an.SparseGradient(idx, values)], [a])
    an.Adagrad(learning_rate=0.1).apply([dense_equivalent(idx, values, (50,))], [b])
    assert a.tobytes() == b.tobytes()


def test_large_table_mixed_with_dense(rng):
    """Many rows and tasks, a zero-width table and a dense tensor in one call."""
    shape = (20000, 33)
    init = [
        rng.standard_normal(shape).astype(np.float32),
        rng.standard_normal((300, 0)).astype(np.float32),
        rng.standard_normal((70000,)).astype(np.float32),
    ]
    for kwargs in ({}, dict(global_clipnorm=5.0), dict(weight_decay=0.01, **EMA)):
        vs, vd = [a.copy() for a in init], [a.copy() for a in init]
        o_s, o_d = an.Adagrad(learning_rate=0.1, **kwargs), an.Adagrad(learning_rate=0.1, **kwargs)
        for _ in range(2):
            idx = rng.zipf(1.3, 5000) % shape[0]
            values = rng.standard_normal((5000, 33)).astype(np.float32)
            g2 = rng.standard_normal(70000).astype(np.float32)
            empty = an.SparseGradient(np.array([5, 5]), np.zeros((2, 0), np.float32))
            o_s.apply([an.SparseGradient(idx, values), empty, g2], vs)
            o_d.apply(
                [dense_equivalent(idx, values, shape), np.zeros((300, 0), np.float32), g2], vd
            )
        for a, b in zip(vs, vd, strict=True):
            assert_same(a, b, str(kwargs), norm_clip="global_clipnorm" in kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        dict(clipnorm=1.0),
        dict(global_clipnorm=1.0),
        dict(weight_decay=0.01, **EMA),
        dict(gradient_accumulation_steps=2),
    ],
    ids=["plain", "clipnorm", "global_clipnorm", "wd_ema", "accum2"],
)
def test_thread_count_does_not_change_bits(kwargs, rng, restore_threads):
    shape = (30000, 16)
    init = rng.standard_normal(shape).astype(np.float32)
    batches = [
        (rng.zipf(1.2, 20000) % shape[0], rng.standard_normal((20000, 16)).astype(np.float32))
        for _ in range(3)
    ]
    results = []
    for threads in (1, 2, 3):
        an.set_num_threads(threads)
        var = init.copy()
        opt = an.Adagrad(learning_rate=0.1, **kwargs)
        for idx, values in batches:
            opt.apply([an.SparseGradient(idx, values)], [var])
        results.append((var, np.asarray(opt._accumulators[0]).copy()))
    for var, acc in results[1:]:
        assert var.tobytes() == results[0][0].tobytes()
        assert acc.tobytes() == results[0][1].tobytes()


# -------------------------------------------------------------------- lazy mode
LAZY_FEATURES = {
    "weight_decay": dict(weight_decay=0.05),
    "ema": dict(EMA),
    "ema_overwrite2_wd": dict(weight_decay=0.05, ema_overwrite_frequency=2, **EMA),
    "clipnorm_ema": dict(clipnorm=1.0, **EMA),
}


@pytest.mark.parametrize("feat_id", list(LAZY_FEATURES))
@pytest.mark.parametrize("dtype_id", ["float32", "float64"])
def test_lazy_mode_matches_its_oracle(dtype_id, feat_id, rng):
    FEATURES["_lazy"] = LAZY_FEATURES[feat_id]
    try:
        o_s, vs, _, _, ref, _ = _run_pair(dtype_id, "_lazy", "duplicates", rng, lazy=True)
    finally:
        del FEATURES["_lazy"]
    for i in range(2):
        assert_close(vs[i], ref.params[i], STEPS, f"lazy param {i}")
    if o_s.use_ema:
        for i in range(2):
            assert_close(
                np.asarray(o_s._model_variables_moving_average[i]),
                ref.averages[i],
                STEPS,
                f"lazy average {i}",
            )


def test_lazy_leaves_untouched_rows_alone(rng):
    table = rng.standard_normal((100, 4)).astype(np.float32)
    before = table.copy()
    opt = an.Adagrad(learning_rate=0.1, weight_decay=0.1, sparse_updates="lazy", **EMA)
    opt.apply([an.SparseGradient([7, 8], np.ones((2, 4), np.float32))], [table])
    assert np.flatnonzero(np.any(table != before, axis=1)).tolist() == [7, 8]
    avg = np.asarray(opt._model_variables_moving_average[0])
    assert np.all(avg[[0, 9, 99]] == 0) and np.all(avg[[7, 8]] != 0)


def test_sparse_updates_config():
    assert "sparse_updates" not in an.Adagrad().get_config()
    config = an.Adagrad(sparse_updates="lazy").get_config()
    assert config["sparse_updates"] == "lazy"
    assert an.Adagrad.from_config(config).sparse_updates == "lazy"
    with pytest.raises(ValueError, match="sparse_updates"):
        an.Adagrad(sparse_updates="sometimes")


# -------------------------------------------------------------------- bad input
def _slices(indices, values, dense_shape=None):
    return types.SimpleNamespace(indices=indices, values=values, dense_shape=dense_shape)


BAD = {
    "index_too_large": (
        lambda: _slices(np.array([1, 40, 2]), np.ones((3, 6), np.float32)),
        ValueError,
        r"row id 40 at position 1.*\[0, 40\)",
    ),
    "negative_index": (
        lambda: _slices(np.array([0, 3, -1], np.int32), np.ones((3, 6), np.float32)),
        ValueError,
        "row id -1 at position 2",
    ),
    "float_indices": (
        lambda: _slices(np.array([0.0, 1.0]), np.ones((2, 6), np.float32)),
        TypeError,
        "indices .* have dtype float64; expected int32 or int64",
    ),
    "indices_2d": (
        lambda: _slices(np.array([[0, 1]]), np.ones((2, 6), np.float32)),
        ValueError,
        r"shape \(1, 2\); expected a 1-D array",
    ),
    "values_shape": (
        lambda: _slices(np.array([0, 1]), np.ones((2, 5), np.float32)),
        ValueError,
        r"values .* have shape \(2, 5\); expected \(2, 6\)",
    ),
    "values_rows": (
        lambda: _slices(np.array([0, 1]), np.ones((3, 6), np.float32)),
        ValueError,
        r"have shape \(3, 6\); expected \(2, 6\)",
    ),
    "values_dtype": (
        lambda: _slices(np.array([0, 1]), np.ones((2, 6), np.int32)),
        TypeError,
        "values .* dtype int32; expected float32, float64, float16 or bfloat16",
    ),
    "dense_shape": (
        lambda: _slices(np.array([0, 1]), np.ones((2, 6), np.float32), (41, 6)),
        ValueError,
        "dense_shape",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sparse_gradient_changes_nothing(case, rng, snapshot):
    make, error, message = BAD[case]
    table = an.Variable(rng.standard_normal(TABLE).astype(np.float32), name="emb")
    bias = an.Variable(rng.standard_normal(5).astype(np.float32), name="bias")
    opt = an.Adagrad(learning_rate=0.1, use_ema=True)
    opt.build([bias, table])
    snap = snapshot(opt, [bias, table])
    with pytest.raises(error, match=message) as info:
        # The dense gradient comes first: it must not be applied either.
        opt.apply([np.ones(5, np.float32), make()], [bias, table])
    assert "emb" in str(info.value) and "index 1" in str(info.value)
    snap.assert_unchanged()


def test_sparse_gradient_for_scalar_changes_nothing(rng, snapshot):
    s = an.Variable(np.ones((), np.float32), name="scale")
    opt = an.Adagrad()
    opt.build([s])
    snap = snapshot(opt, [s])
    with pytest.raises(ValueError, match="'scale'.*0-d"):
        opt.apply([_slices(np.array([0]), np.ones((1,), np.float32))], [s])
    snap.assert_unchanged()


@pytest.mark.parametrize(
    "indices, values, error, message",
    [
        (np.array([0.5]), np.ones((1, 2)), TypeError, "int32 or int64"),
        (np.array([[0]]), np.ones((1, 2)), ValueError, "1-D"),
        (np.array([0, 1]), np.ones((3, 2)), ValueError, "one row per index"),
        (np.array([0, 1]), np.ones((2, 2)), ValueError, "dense_shape"),
    ],
    ids=["float", "2d", "rows", "dense_shape"],
)
def test_sparse_gradient_constructor_errors(indices, values, error, message):
    dense_shape = (4, 3) if message == "dense_shape" else None
    with pytest.raises(error, match=message):
        an.SparseGradient(indices, values, dense_shape)


def test_to_dense_and_repr():
    sg = an.SparseGradient([1, 1, 0], np.arange(6, dtype=np.float32).reshape(3, 2), (3, 2))
    np.testing.assert_array_equal(sg.to_dense(), [[4, 5], [2, 4], [0, 0]])
    assert "3 ids" in repr(sg)
    with contextlib.suppress(ValueError):
        an.SparseGradient([0], np.ones((1, 2))).to_dense()


@pytest.mark.parametrize("clip", [{}, dict(global_clipnorm=1.0)], ids=["noclip", "global"])
def test_nonfinite_sparse_gradient_is_named_and_changes_nothing(clip, rng, snapshot):
    table = an.Variable(rng.standard_normal(TABLE).astype(np.float32), name="emb")
    bias = an.Variable(rng.standard_normal(5).astype(np.float32), name="bias")
    opt = an.Adagrad(on_nonfinite="raise", **clip)
    opt.build([bias, table])
    snap = snapshot(opt, [bias, table])
    values = np.ones((3, 6), np.float32)
    values[2, 1] = np.nan
    with pytest.raises(ValueError, match="'emb' \\(index 1\\) contains inf or NaN"):
        opt.apply([np.ones(5, np.float32), an.SparseGradient([4, 9, 4], values)], [bias, table])
    snap.assert_unchanged()


@pytest.mark.parametrize("layout", ["uint32_ids", "strided_values", "list_inputs"])
def test_indices_and_values_layouts(layout, rng):
    init = rng.standard_normal(TABLE).astype(np.float32)
    idx = np.array([5, 1, 5, 39], np.int64)
    values = rng.standard_normal((4, 6)).astype(np.float32)
    want = init.copy()
    an.Adagrad(learning_rate=0.1).apply([dense_equivalent(idx, values, TABLE)], [want])
    if layout == "uint32_ids":
        grad = an.SparseGradient(idx.astype(np.uint32), values)
    elif layout == "strided_values":
        wide = np.zeros((4, 12), np.float32)
        wide[:, ::2] = values
        grad = an.SparseGradient(idx[::-1][::-1], wide[:, ::2])
    else:
        grad = an.SparseGradient(idx.tolist(), values)
    got = init.copy()
    an.Adagrad(learning_rate=0.1).apply([grad], [got])
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("kwargs", [{}, dict(weight_decay=0.05, **EMA)], ids=["plain", "wd_ema"])
def test_low_precision_accumulator_in_param_dtype(low_precision_dtype, kwargs, rng):
    dt = low_precision_dtype
    init = rng.standard_normal(TABLE).astype(dt)
    a, b = init.copy(), init.copy()
    o1, o2 = an.Adagrad(learning_rate=0.1, **kwargs), an.Adagrad(learning_rate=0.1, **kwargs)
    for _ in range(3):
        idx = rng.integers(0, 10, 25)
        values = rng.standard_normal((25, 6)).astype(dt)
        o1.apply([an.SparseGradient(idx, values)], [a])
        o2.apply([dense_equivalent(idx, values, TABLE)], [b])
    assert a.tobytes() == b.tobytes()
    assert o1._accumulators[0].numpy().dtype == dt
    assert o1._accumulators[0].numpy().tobytes() == o2._accumulators[0].numpy().tobytes()


def test_parallel_dedup_of_a_large_batch(rng, restore_threads):
    """>= 2**17 ids: the radix sort runs in blocks over the threads; same bits as dense."""
    shape = (70000, 3)
    idx = rng.zipf(1.1, 150000) % shape[0]
    values = rng.standard_normal((150000, 3)).astype(np.float32)
    init = rng.standard_normal(shape).astype(np.float32)
    want = init.copy()
    an.Adagrad(learning_rate=0.1).apply([dense_equivalent(idx, values, shape)], [want])
    for threads in (1, 2, 3):
        an.set_num_threads(threads)
        got = init.copy()
        an.Adagrad(learning_rate=0.1).apply(
            [an.SparseGradient(idx.astype(np.int32), values)], [got]
        )
        assert got.tobytes() == want.tobytes(), f"{threads} threads"


class _TensorLike:
    """Like a torch tensor: `indices` and `values` methods, and `__array__`; dense."""

    def __init__(self, array):
        self._array = array

    def __array__(self, dtype=None, copy=None):
        return self._array if dtype is None else self._array.astype(dtype)

    def indices(self):
        raise RuntimeError("not a sparse tensor")

    def values(self):
        raise RuntimeError("not a sparse tensor")


def test_an_array_like_with_indices_and_values_but_no_dense_shape_is_dense():
    a, b = np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32)
    grad = np.arange(12, dtype=np.float32).reshape(4, 3)
    an.Adagrad(0.1).apply([_TensorLike(grad)], [a])
    an.Adagrad(0.1).apply([grad], [b])
    assert a.tobytes() == b.tobytes()


class _RequiresGrad:
    """Like a torch tensor that requires grad: it refuses to become an array."""

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("Can't call numpy() on Tensor that requires grad.")


def test_a_gradient_that_is_no_array_says_how_to_pass_one(snapshot):
    param = np.zeros(3, np.float32)
    opt = an.Adagrad(0.1)
    opt.build([param])
    shot = snapshot(opt, [param])
    with pytest.raises(TypeError, match=r"tensor\.detach\(\)\.numpy\(\).*received _RequiresGrad"):
        opt.apply([_RequiresGrad()], [param])
    shot.assert_unchanged()


def _steps_bits(cls, init, grads, **kwargs):
    """Parameter and accumulator bytes after stepping a copy of `init` with `grads`."""
    var = init.copy()
    opt = cls(learning_rate=0.1, **kwargs)
    for g in grads:
        opt.apply([g], [var])
    return var.tobytes(), opt._accumulators[0].numpy().tobytes()


@pytest.mark.parametrize("order", ["random", "sorted", "halves_sorted"])
@pytest.mark.parametrize("n", [32767, 32768, 70001], ids=["one_block", "two_blocks", "four_blocks"])
def test_radix_sort_blocks_give_the_dense_result(n, order, rng, restore_threads):
    """From 2 x 16 Ki ids the radix sort runs in blocks (parallel tasks); an id list sorted
    within each block but not across their boundary must still be sorted."""
    shape = (5000, 3)
    idx = rng.integers(0, shape[0], n)
    if order == "sorted":
        idx.sort()
    elif order == "halves_sorted":
        idx[: n // 2].sort()
        idx[n // 2 :].sort()
    values = rng.standard_normal((n, 3)).astype(np.float32)
    init = rng.standard_normal(shape).astype(np.float32)
    want = _steps_bits(an.Adagrad, init, [dense_equivalent(idx, values, shape)])
    for threads in (1, 2):
        an.set_num_threads(threads)
        got = _steps_bits(an.Adagrad, init, [an.SparseGradient(idx, values)])
        assert got == want, f"{threads} threads"


@contextlib.contextmanager
def _isa(name):
    assert _native.select_isa(name)
    try:
        yield
    finally:
        _native.select_isa("auto")


# Row widths around the vector lengths of the kernels (8 to 16 float32 lanes, 4 to 8
# float64 ones, blocks of 256 elements), with and without a tail.
WIDTHS = [1, 31, 32, 33, 64, 65, 130, 300]


@pytest.mark.parametrize("width", WIDTHS, ids=[f"width{w}" for w in WIDTHS])
@pytest.mark.parametrize("cls", [an.Adagrad, an.RowWiseAdagrad], ids=["adagrad", "rowwise"])
def test_summed_rows_give_the_dense_result_on_every_isa_and_thread_count(
    cls, width, float_dtype, rng, restore_threads
):
    """Rows with one copy, a few, and hundreds: the copies are summed once a step, by as
    many tasks as threads, then each row is updated (in row order; a last batch of mostly
    single copies in index order); every ISA and thread count gives the bits of the dense
    gradient's step."""
    shape = (300, width)
    init = rng.standard_normal(shape).astype(float_dtype)
    mostly_single = rng.permutation(shape[0])[:200]
    batches = []
    for idx in (rng.zipf(1.3, 2000) % shape[0], rng.zipf(1.3, 2000) % shape[0], mostly_single):
        idx = np.concatenate([idx, idx[:5]])
        batches.append((idx, rng.standard_normal((len(idx), width)).astype(float_dtype)))
    acc = {"accumulator_dtype": "float32"} if float_dtype.itemsize == 2 else {}
    dense = [dense_equivalent(i, v, shape) for i, v in batches]
    want = _steps_bits(cls, init, dense, **acc)
    sparse = [an.SparseGradient(i, v) for i, v in batches]
    for isa in _native.available_isas():
        with _isa(isa):
            for threads in (1, 2):
                an.set_num_threads(threads)
                assert _steps_bits(cls, init, sparse, **acc) == want, f"{isa}, {threads} threads"


# Index lists whose kind changes from step to step: mostly single copies (de-duplicated
# by position, from bitmaps of the table's rows, when the last list was alike and the
# de-duplication runs on one thread: one thread, or a table per thread) and mostly
# repeated rows (sorted). Hand-made lists sit at the boundary: [5, 5, 1, 2] is half
# single copies, [5, 5, 5, 1] a quarter.
KIND_SEQUENCE = ["repeated", "single", "single", [5, 5, 1, 2], "repeated", "single", [5, 5, 5, 1]]
TABLES = [(3000, 16), (2000, 5)]


@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("cls", [an.RowWiseAdagrad, an.Adagrad], ids=["rowwise", "adagrad"])
def test_index_lists_that_change_kind_give_the_bits_of_row_order(
    cls, index_dtype, threads, rng, restore_threads
):
    """Every step matches the same rows each given a second copy of zeros (always sorted,
    updated in row order): the bitmaps start clean whichever way the last step went."""
    an.set_num_threads(threads)
    single = [rng.standard_normal(shape).astype(np.float32) for shape in TABLES]
    doubled = [a.copy() for a in single]
    o1, o2 = cls(learning_rate=0.1), cls(learning_rate=0.1)
    for kind in KIND_SEQUENCE:
        grads, twice = [], []
        for rows, width in TABLES:
            if isinstance(kind, list):
                idx = np.array(kind)
            else:
                idx = sparse_ids(kind, rows, 2 * rows if kind == "repeated" else 700, rng)
            idx = idx.astype(index_dtype)
            values = (rng.standard_normal((len(idx), width)) * 2).astype(np.float32)
            grads.append(an.SparseGradient(idx, values))
            doubled_idx = np.concatenate([idx, idx])
            twice.append(an.SparseGradient(doubled_idx, np.concatenate([values, 0 * values])))
        o1.apply(grads, single)
        o2.apply(twice, doubled)
        for a, b in zip(single, doubled, strict=True):
            assert a.tobytes() == b.tobytes(), f"after {kind}"
    for a, b in zip(o1.variables, o2.variables, strict=True):
        assert a.numpy().tobytes() == b.numpy().tobytes(), a.path
