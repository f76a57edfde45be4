"""The private compiled module checks what it receives: no call from Python, whatever its
arguments, writes outside the arrays it was given or crashes the process.

Every buffer below sits between guard bytes; a call either raises TypeError or
ValueError, or runs, and the guards are unchanged either way. Hypothesis draws
the arguments of every entry point (SlotGroup, step, FastStep, settle,
partial_sums, fold_norms, assign_all, work_chunk); the sanitizer job (.ci/sanitize) runs
this file under AddressSanitizer too.
"""

from __future__ import annotations

import threading

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adagrad_native import _core

GUARD = 64  # bytes on each side of every buffer
SENTINEL = 0xA5
DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, np.int64, np.uint8, object]


class Guarded:
    """Arrays that each sit between guard bytes, which are checked after every call."""

    def __init__(self):
        self.blocks = []

    def array(self, shape, dtype, fill=1.0, offset=0, order="C"):
        """An array of `shape` and `dtype` between guards (`offset` bytes more: unaligned)."""
        dtype = np.dtype(dtype)
        if dtype.hasobject:
            return np.full(shape, fill, dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        block = np.full(nbytes + 2 * GUARD + offset, SENTINEL, np.uint8)
        self.blocks.append((block, GUARD + offset, GUARD + offset + nbytes))
        array = (
            block[GUARD + offset : GUARD + offset + nbytes].view(dtype).reshape(shape, order=order)
        )
        if dtype.kind in "biuf" or dtype.name == "bfloat16":
            array[...] = fill
        return array

    def check(self):
        for block, begin, end in self.blocks:
            assert (block[:begin] == SENTINEL).all(), "a write before a buffer"
            assert (block[end:] == SENTINEL).all(), "a write after a buffer"


def _read_only(array):
    array.setflags(write=False)
    return array


def _call(guards, call, *args):
    """Runs `call(*args)`; refused with TypeError or ValueError, or run; the guards hold."""
    try:
        call(*args)
    except (TypeError, ValueError):
        pass
    guards.check()


def _fast_step(group, plan, counter, rate, params, grads, named):
    _core.FastStep(group, plan, counter, rate, params).try_step(grads, named)


def _group(params, accumulators=None, **kwargs):
    n = len(params)
    return _core.SlotGroup(
        params,
        accumulators if accumulators is not None else [np.ones_like(p) for p in params],
        [None] * n,
        [None] * n,
        [False] * n,
        [False] * n,
        [f"w{i}" for i in range(n)],
        **kwargs,
    )


# ------------------------------------------------------------ the holes, one each
def test_a_float32_accumulator_is_refused_for_a_float64_parameter():
    guards = Guarded()
    param, accumulator = guards.array(100, np.float64), guards.array(100, np.float32)
    with pytest.raises(TypeError, match="accumulator of variable 'w0'.*float32; expected float64"):
        _group([param], [accumulator])
    guards.check()


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_a_float32_accumulator_is_taken_for_a_16_bit_parameter(dtype):
    guards = Guarded()
    param, accumulator = guards.array(100, dtype), guards.array(100, np.float32, 0.5)
    group = _group([param], [accumulator])
    assert _core.step(group, [np.ones(100, dtype)], _core.StepPlan()) == -1
    assert (accumulator == 1.5).all()
    guards.check()


SETTLES = {
    "object-target": lambda g: [(np.array(None, object), np.array(1, object), None)],
    "wider-void-value": lambda g: [(g.array((), "V2"), np.zeros((), "V8"), None)],
    "unaligned-target": lambda g: [(g.array((), np.int64, 0, offset=1), np.array(1), None)],
    "read-only-target": lambda g: [(_read_only(g.array((), np.int64)), np.array(1), None)],
    "not-an-array": lambda g: [(0, np.array(1), None)],
    "1-d-target": lambda g: [(g.array(3, np.int64), np.array(1), None)],
    "other-dtype-value": lambda g: [(g.array((), np.int64), np.array(1.0), None)],
    "not-a-triple": lambda g: [(g.array((), np.int64),)],
}


@pytest.mark.parametrize("case", list(SETTLES))
def test_a_settle_write_that_does_not_fit_its_target_is_refused(case):
    guards = Guarded()
    with pytest.raises((TypeError, ValueError)):
        _core.settle(SETTLES[case](guards), True)
    guards.check()


def test_a_fast_step_checks_its_group_plan_and_buffers():
    guards = Guarded()
    group = _group([guards.array(10, np.float32)])
    counter, rate = np.zeros((), np.int64), np.full((), 0.1, np.float32)
    accumulate = _core.StepPlan()
    accumulate.phase = _core.Phase.accumulate
    with pytest.raises(ValueError, match="no gradient accumulator"):
        _core.FastStep(group, accumulate, counter, rate, [None])
    with pytest.raises(TypeError, match="must be a SlotGroup"):
        _core.FastStep(object(), _core.StepPlan(), counter, rate, [None])
    with pytest.raises(TypeError, match="iterations must be a numpy.ndarray"):
        _core.FastStep(group, _core.StepPlan(), 0, rate, [None])
    with pytest.raises(ValueError, match="learning_rate must be a writeable, aligned"):
        _core.FastStep(group, _core.StepPlan(), counter, np.zeros((), np.float64), [None])
    guards.check()


def test_a_fast_step_declines_at_the_counters_largest_value():
    group = _group([np.zeros(10, np.float32)])
    counter = np.array(2**63 - 1, np.int64)
    fast = _core.FastStep(group, _core.StepPlan(), counter, np.zeros((), np.float32), [None])
    assert fast.try_step([np.ones(10, np.float32)], None) == _core.DECLINED
    assert int(counter) == 2**63 - 1
    counter[...] = 2**63 - 2
    assert fast.try_step([np.ones(10, np.float32)], None) == -1
    assert int(counter) == 2**63 - 1


@pytest.mark.parametrize(
    ("sizes", "kwargs"),
    [
        ([-5], {}),
        ([2**62, 2**62], {}),
        ([2**24 + 1], {"chunk": 1}),
    ],
    ids=["negative", "sum-overflows", "too-many-items"],
)
def test_sizes_that_overflow_or_exhaust_memory_are_refused(sizes, kwargs):
    with pytest.raises(ValueError, match="sizes|work items"):
        if kwargs:
            _group([np.zeros(sizes[0], np.float32)], **kwargs)
        else:
            _core.work_chunk(sizes)


ASSIGNMENTS = {
    "other-dtype": lambda g: [(g.array(3, np.float64), np.ones(3, np.float32))],
    "other-size": lambda g: [(g.array(3, np.float64), np.ones(4))],
    "objects": lambda g: [(np.zeros(3, object), np.ones(3, object))],
    "strided-target": lambda g: [(g.array(6, np.float64)[::2], np.ones(3))],
    "read-only-target": lambda g: [(_read_only(g.array(3, np.float64)), np.ones(3))],
    "a-list": lambda g: [[g.array(3, np.float64), np.ones(3)]],
    "no-source": lambda g: [(g.array(3, np.float64), [1.0, 2.0, 3.0])],
}


@pytest.mark.parametrize("case", list(ASSIGNMENTS))
def test_assign_all_checks_every_pair_before_it_copies_any(case):
    guards = Guarded()
    first = guards.array(4, np.float32, 0.0)
    with pytest.raises((TypeError, ValueError)):
        _core.assign_all([(first, np.ones(4, np.float32)), *ASSIGNMENTS[case](guards)])
    assert not first.any(), "a pair was copied before a later one was refused"
    guards.check()


def test_one_group_takes_one_call_at_a_time():
    n = 1 << 21
    group = _group([np.zeros(n, np.float32)])
    grad = [np.ones(n, np.float32)]
    done, refused = [], []

    def steps():
        for _ in range(20):
            try:
                _core.step(group, grad, _core.StepPlan())
                done.append(1)
            except ValueError as err:
                assert "in a step of another thread" in str(err)
                refused.append(1)

    threads = [threading.Thread(target=steps) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) + len(refused) == 60 and done


# ------------------------------------------------------------------- fuzzing
SHAPES = st.sampled_from([(), (0,), (1,), (7,), (3, 5), (4, 0), (2, 3, 2), (70_001,)])


@st.composite
def arrays(draw, guards, shape=None, dtypes=DTYPES):
    shape = draw(SHAPES) if shape is None else shape
    dtype = draw(st.sampled_from(dtypes))
    layout = draw(st.sampled_from(["plain", "plain", "plain", "unaligned", "fortran", "strided"]))
    if layout == "unaligned":
        return guards.array(shape, dtype, offset=1)
    array = guards.array(shape, dtype, order="F" if layout == "fortran" else "C")
    if layout == "strided" and array.ndim:
        return array[::2]
    if draw(st.booleans()) and array.ndim and not array.dtype.hasobject:
        return _read_only(array)
    return array


@st.composite
def gradients(draw, guards, params):
    grads = []
    for p in params:
        kind = draw(st.sampled_from(["same", "same", "other", "none", "sparse", "junk"]))
        if kind == "same":
            grads.append(np.ones_like(p) if isinstance(p, np.ndarray) else p)
        elif kind == "other":
            grads.append(draw(arrays(guards)))
        elif kind == "none":
            grads.append(None)
        elif kind == "sparse":
            ids = draw(st.lists(st.integers(-3, 12), max_size=6))
            rows = np.asarray(ids, draw(st.sampled_from([np.int32, np.int64, np.uint32, float])))
            width = draw(st.sampled_from([(), (5,), (3,)]))
            values = np.ones((len(ids), *width), draw(st.sampled_from(DTYPES[:4])))
            shape = draw(st.one_of(st.none(), st.just(getattr(p, "shape", (1,))), SHAPES))
            grads.append(_Sparse(rows, values, shape))
        else:
            grads.append(draw(st.sampled_from([object(), "x", 3, [1.0, 2.0]])))
    return grads


class _Sparse:
    def __init__(self, indices, values, dense_shape):
        self.indices, self.values, self.dense_shape = indices, values, dense_shape


@st.composite
def plans(draw):
    plan = _core.StepPlan()
    plan.phase = draw(st.sampled_from(list(_core.Phase)))
    plan.clip = draw(st.sampled_from(list(_core.Clip)))
    plan.clip_value = draw(st.sampled_from([0.0, 1.0, 1e-40, float("nan")]))
    plan.accumulation_steps = draw(st.sampled_from([-1, 0, 1, 3]))
    plan.loss_scale = draw(st.sampled_from([0.0, 2.0, float("inf")]))
    plan.ema = draw(st.booleans())
    plan.check_finite = draw(st.booleans())
    plan.sparse_lazy = draw(st.booleans())
    plan.weight_decay = draw(st.sampled_from([0.0, 0.1]))
    return plan


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_arguments_make_the_core_write_outside_its_buffers(data):
    draw = data.draw
    guards = Guarded()
    n = draw(st.integers(0, 3))
    params = [draw(arrays(guards)) for _ in range(n)]
    slot = {
        "accumulators": lambda p: draw(
            st.one_of(st.none(), arrays(guards, getattr(p, "shape", None)), arrays(guards))
        ),
        "averages": lambda p: draw(st.one_of(st.none(), arrays(guards, getattr(p, "shape", None)))),
    }
    group = None
    try:
        group = _core.SlotGroup(
            params,
            [slot["accumulators"](p) for p in params],
            [slot["averages"](p) for p in params],
            [slot["averages"](p) for p in params],
            draw(st.lists(st.booleans(), min_size=n, max_size=n + draw(st.integers(0, 1)))),
            draw(st.lists(st.booleans(), min_size=n, max_size=n)),
            [f"w{i}" for i in range(n)],
            rowwise=draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=n, max_size=n))),
            chunk=draw(st.sampled_from([None, 1, 256, 0, -1])),
        )
    except (TypeError, ValueError):
        guards.check()
        return
    counter = guards.array((), np.int64, 0)
    for _ in range(draw(st.integers(1, 3))):
        grads = draw(gradients(guards, params))
        plan = draw(plans())
        settle = [(counter, np.array(counter + 1), draw(st.sampled_from([None, counter.copy()])))]
        _call(guards, _core.step, group, grads, plan, None, settle)
        _call(guards, _core.partial_sums, group, grads, plan)
        norms = draw(st.lists(st.floats(allow_nan=True), max_size=n + 1))
        _call(guards, _core.step, group, grads, plan, norms)
        rate = guards.array((), np.float32, 0.1)
        named = draw(st.sampled_from([None, list(params), params[:1]]))
        _call(guards, _fast_step, group, plan, counter, rate, list(params), grads, named)
    sources = [draw(arrays(guards, getattr(p, "shape", None))) for p in params]
    _call(guards, _core.assign_all, list(zip(params, sources)))
    entries = draw(st.integers(0, 6))
    _call(
        guards,
        _core.fold_norms,
        draw(st.lists(st.integers(-1, 3), min_size=entries, max_size=entries)),
        guards.array((draw(st.integers(0, 7)),), np.float64, 1.0),
        guards.array((draw(st.integers(0, 7)),), np.uint8, 1),
        draw(st.lists(st.booleans(), max_size=4)),
        draw(st.booleans()),
    )
