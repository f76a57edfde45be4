"""Property tests: random shapes, dtypes, features and sparse ids against the numpy
oracle, and the same bits at 1 and 2 threads (hypothesis draws the cases)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adagrad_native as an
from tests.helpers import FLOAT_DTYPES, assert_close, assert_identical
from tests.oracle import ReferenceAdagrad, dense_equivalent

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
    dtype = draw(st.sampled_from(list(FLOAT_DTYPES)))
    shapes = draw(SHAPES)
    kwargs = {**draw(CLIPS), **draw(FEATURES)}
    steps = draw(st.integers(1, 3))
    sparse = draw(st.booleans()) and len(shapes[0]) >= 1
    seed = draw(st.integers(0, 2**32 - 1))
    return dtype, shapes, kwargs, steps, sparse, seed


def _data(dtype, shapes, steps, sparse, seed):
    rng = np.random.default_rng(seed)
    dt = FLOAT_DTYPES[dtype]
    init = [rng.standard_normal(s).astype(dt) for s in shapes]
    grads = []
    for _ in range(steps):
        step = [rng.standard_normal(s).astype(dt) for s in shapes]
        if sparse:
            rows = shapes[0][0]
            ids = rng.integers(0, rows, size=rng.integers(0, 2 * rows + 1))
            values = rng.standard_normal((ids.size, *shapes[0][1:])).astype(dt)
            step[0] = an.SparseGradient(ids, values, shapes[0])
        grads.append(step)
    return init, grads


def _native(init, grads, kwargs, threads):
    an.set_num_threads(threads)
    params = [a.copy() for a in init]
    opt = an.Adagrad(0.1, **kwargs)
    for step in grads:
        opt.apply(step, params)
    return params + [v.value for v in opt.variables]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_random_steps_match_the_oracle_and_any_thread_count(case):
    dtype, shapes, kwargs, steps, sparse, seed = case
    init, grads = _data(dtype, shapes, steps, sparse, seed)
    threads = an.get_num_threads()
    try:
        one, two = _native(init, grads, kwargs, 1), _native(init, grads, kwargs, 2)
    finally:
        an.set_num_threads(threads)
    assert_identical(one, two)
    ref = ReferenceAdagrad(learning_rate=0.1, **kwargs)
    ref.build(init)
    for step in grads:
        ref.apply(
            [
                dense_equivalent(g.indices, g.values, g.dense_shape)
                if isinstance(g, an.SparseGradient)
                else g
                for g in step
            ]
        )
    for i, (got, want) in enumerate(zip(one, ref.params)):
        assert_close(got, want, steps, f"parameter {i}")
