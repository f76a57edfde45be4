"""Property tests: random shapes, dtypes, features and sparse ids against the numpy
oracle, and the same bits at 1 and 2 threads and on every ISA path, also with inf
and NaN in the gradients (hypothesis draws the cases)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adagrad_native as an
from adagrad_native import _native
from tests.helpers import FLOAT_DTYPES, assert_close, assert_identical
from tests.oracle import ReferenceAdagrad, RowWiseReferenceAdagrad, dense_equivalent

OPTIMIZERS = {
    "adagrad": (an.Adagrad, ReferenceAdagrad),
    "rowwise": (an.RowWiseAdagrad, RowWiseReferenceAdagrad),
}

SHAPES = st.lists(
    st.one_of(
        st.just(()),
        st.tuples(st.integers(1, 40)),
        st.tuples(st.integers(1, 9), st.integers(1, 9)),
        st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 3)),
        st.just((70_001,)),  # several work items, split over the threads
    ),
    min_size=1,
    max_size=4,
)
CLIPS = st.sampled_from([{}, {"clipnorm": 0.5}, {"clipvalue": 0.1}, {"global_clipnorm": 1.0}])
FEATURES = st.fixed_dictionaries(
    {},
    optional={
        "weight_decay": st.sampled_from([0.01, 0.1]),
        "use_ema": st.just(True),
        "gradient_accumulation_steps": st.integers(2, 3),
        "loss_scale_factor": st.sampled_from([2.0, 8.0]),
        "epsilon": st.sampled_from([1e-7, 1e-3]),
    },
)


@st.composite
def cases(draw):
    optimizer = draw(st.sampled_from(list(OPTIMIZERS)))
    dtype = draw(st.sampled_from(list(FLOAT_DTYPES)))
    shapes = draw(SHAPES)
    kwargs = {**draw(CLIPS), **draw(FEATURES)}
    steps = draw(st.integers(1, 3))
    sparse = draw(st.booleans()) and len(shapes[0]) >= 1
    nonfinite = draw(st.integers(0, 3)) == 0  # NaN of both signs and inf in a quarter
    seed = draw(st.integers(0, 2**32 - 1))
    return optimizer, dtype, shapes, kwargs, steps, sparse, nonfinite, seed


def _data(dtype, shapes, steps, sparse, nonfinite, seed):
    rng = np.random.default_rng(seed)
    dt = FLOAT_DTYPES[dtype]
    init = [rng.standard_normal(s).astype(dt) for s in shapes]
    if nonfinite:
        for p in init:
            p.reshape(-1)[rng.integers(0, p.size, 2)] = [-np.nan, np.inf]
    grads = []
    for _ in range(steps):
        step = [rng.standard_normal(s).astype(dt) for s in shapes]
        if nonfinite:
            for g in step:
                g.reshape(-1)[rng.integers(0, g.size, 4)] = [np.nan, -np.nan, np.inf, -np.inf]
        if sparse:
            rows = shapes[0][0]
            ids = rng.integers(0, rows, size=rng.integers(0, 2 * rows + 1))
            values = rng.standard_normal((ids.size, *shapes[0][1:])).astype(dt)
            step[0] = an.SparseGradient(ids, values, shapes[0])
        grads.append(step)
    return init, grads


def _run(optimizer, init, grads, kwargs, isa, threads):
    _native.select_isa(isa)
    an.set_num_threads(threads)
    params = [a.copy() for a in init]
    opt = OPTIMIZERS[optimizer][0](0.1, **kwargs)
    for step in grads:
        opt.apply(step, params)
    return params + [v.value for v in opt.variables]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_random_steps_match_the_oracle_on_any_thread_count_and_isa(case):
    optimizer, dtype, shapes, kwargs, steps, sparse, nonfinite, seed = case
    init, grads = _data(dtype, shapes, steps, sparse, nonfinite, seed)
    threads = an.get_num_threads()
    try:
        one = _run(optimizer, init, grads, kwargs, "auto", 1)
        assert_identical(one, _run(optimizer, init, grads, kwargs, "auto", 2), "2 threads")
        for isa in _native.available_isas()[1:]:
            assert_identical(one, _run(optimizer, init, grads, kwargs, isa, 2), isa)
    finally:
        _native.select_isa("auto")
        an.set_num_threads(threads)
    if nonfinite:
        return  # inf - inf and NaN: the bits above are the claim, not the oracle's values
    ref = OPTIMIZERS[optimizer][1](learning_rate=0.1, **kwargs)
    ref.build(init)
    for step in grads:
        if optimizer == "adagrad":  # the oracle applies the dense equivalent
            step = [
                dense_equivalent(g.indices, g.values, g.dense_shape)
                if isinstance(g, an.SparseGradient)
                else g
                for g in step
            ]
        ref.apply(step)
    for i, (got, want) in enumerate(zip(one, ref.params)):
        assert_close(got, want, steps, f"parameter {i}")
