"""The core's torch formulas (`StepPlan.formula`, per-tensor scalars) against the numpy
oracle (tests/oracle/torch_formula.py), bit for bit on every ISA path and dtype.

This drives the engine (`NativeStep`) directly, as `adagrad_native.torch.Adagrad`
does; the comparison with torch itself is in tests/torch."""

from __future__ import annotations

import numpy as np
import pytest

from adagrad_native import SparseGradient, _native
from adagrad_native._surface import CallPlan, Slots, StaticPlan
from tests.helpers import dtype_params
from tests.oracle.torch_formula import torch_step

# 300 crosses a 256-element block; 29 = 16 + 8 + 5 reaches the 16-lane, 8-lane and
# scalar loops; () is a 0-d tensor.
SHAPES = [(300,), (3, 33), (), (29,)]
OPTIONS = {
    "plain": {},
    "weight_decay": {"weight_decay": 0.1},
    "maximize": {"weight_decay": 0.1, "maximize": True},
    "eps_large": {"eps": 0.5},
}
TORCH_PLAN = StaticPlan(
    epsilon=0.0,
    weight_decay=0.0,
    clip=None,
    clip_value=0.0,
    accumulation_steps=1,
    use_ema=False,
    sparse_lazy=True,
    formula="torch",
)


def engine(params, sums):
    e = _native.NativeStep()
    n = len(params)
    e.bind(
        Slots(
            params=params,
            accumulators=sums,
            averages=[None] * n,
            grad_accumulators=[None] * n,
            weight_decay=[True] * n,
            overwrite=[False] * n,
            names=[f"p{i}" for i in range(n)],
            rowwise=[False] * n,
        )
    )
    e.configure(TORCH_PLAN)
    return e


def call(per_tensor):
    return CallPlan(
        update=True,
        learning_rate=None,
        loss_scale=0.0,
        check_finite=False,
        any_update=True,
        ema_momentum=0.0,
        ema_overwrite=False,
        per_tensor=np.asarray(per_tensor, np.float64),
    )


def rows(options, learning_rates):
    eps = options.get("eps", 1e-10)
    wd = options.get("weight_decay", 0.0)
    return [[lr, eps, wd, float(options.get("maximize", False))] for lr in learning_rates]


@pytest.fixture(params=_native.available_isas())
def isa(request):
    assert _native.select_isa(request.param)
    yield request.param
    _native.select_isa("auto")


def bits(a):
    return np.asarray(a).view(f"u{np.asarray(a).dtype.itemsize}")


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_dense_matches_oracle(isa, float_dtype, options):
    rng = np.random.default_rng(3)
    params = [rng.normal(size=s).astype(float_dtype) for s in SHAPES]
    sums = [np.full(s, 0.1, float_dtype) for s in SHAPES]
    want_p, want_s = [p.copy() for p in params], [s.copy() for s in sums]
    e = engine(params, sums)
    for step in range(1, 4):
        grads = [rng.normal(size=s).astype(float_dtype) for s in SHAPES]
        # Each tensor its own learning rate, as torch's lr_decay with per-parameter steps makes.
        lrs = [0.05 / (1 + (step - 1) * 0.1 * (i + 1)) for i in range(len(SHAPES))]
        for i, g in enumerate(grads):
            want_p[i], want_s[i] = torch_step(
                want_p[i],
                want_s[i],
                g,
                lr=lrs[i],
                eps=options.get("eps", 1e-10),
                weight_decay=options.get("weight_decay", 0.0),
                maximize=options.get("maximize", False),
            )
        assert e.run(grads, call(rows(options, lrs))) == -1
        for i in range(len(SHAPES)):
            assert np.array_equal(bits(params[i]), bits(want_p[i])), f"param {i}, step {step}"
            assert np.array_equal(bits(sums[i]), bits(want_s[i])), f"sum {i}, step {step}"


@pytest.mark.parametrize("maximize", [False, True], ids=["descend", "maximize"])
@pytest.mark.parametrize("float_dtype", dtype_params())
def test_sparse_rows_take_torch_sparse_order(isa, float_dtype, maximize):
    rng = np.random.default_rng(5)
    p = rng.normal(size=(40, 19)).astype(float_dtype)
    s = np.zeros((40, 19), float_dtype)  # eps=0 too: untouched rows must stay (no 0/0)
    want_p, want_s = p.copy(), s.copy()
    e = engine([p], [s])
    for step in range(1, 4):
        ids = rng.integers(0, 40, 60)
        values = rng.normal(size=(60, 19)).astype(float_dtype)
        summed = {}
        for k, r in enumerate(ids):  # copies summed in index order, rounded to the dtype
            summed[r] = (
                values[k] if r not in summed else (summed[r] + values[k]).astype(float_dtype)
            )
        for r, g in summed.items():
            want_p[r], want_s[r] = torch_step(
                want_p[r], want_s[r], g, lr=0.3 / step, eps=0.0, maximize=maximize, sparse_rows=True
            )
        assert e.run([SparseGradient(ids, values)], call([[0.3 / step, 0.0, 0.0, maximize]])) == -1
        assert np.array_equal(bits(p), bits(want_p)), f"step {step}"
        assert np.array_equal(bits(s), bits(want_s)), f"step {step}"


def test_plan_defaults_to_the_keras_formula():
    from adagrad_native import _core

    plan = _core.StepPlan()
    assert plan.formula == _core.Formula.keras and plan.per_tensor is None and not plan.maximize


@pytest.mark.parametrize(
    "per_tensor, match",
    [
        ([[0.1, 1e-10, 0.0, 0.0]], "per_tensor has 1 entries; the group has 2"),
        ([[0.1, 1e-10, 0.0, 2.0]] * 2, "maximize"),
        ([0.1, 1e-10, 0.0, 0.0], "shape"),
    ],
    ids=["too_few", "maximize_not_0_or_1", "one_dimensional"],
)
def test_bad_per_tensor_scalars_change_nothing(per_tensor, match):
    params = [np.ones(5, np.float32), np.ones(3, np.float32)]
    sums = [np.zeros(5, np.float32), np.zeros(3, np.float32)]
    e = engine(params, sums)
    with pytest.raises(ValueError, match=match):
        e.run([np.ones(5, np.float32), np.ones(3, np.float32)], call(per_tensor))
    assert all((p == 1).all() for p in params) and all((s == 0).all() for s in sums)


def test_rowwise_accumulators_refuse_the_torch_formula():
    p, acc = np.ones((4, 3), np.float32), np.zeros(4, np.float32)
    e = _native.NativeStep()
    e.bind(Slots([p], [acc], [None], [None], [True], [False], ["rows"], [True]))
    e.configure(TORCH_PLAN)
    with pytest.raises(ValueError, match="Row-wise accumulators take only the Keras formula"):
        e.run([np.ones((4, 3), np.float32)], call([[0.1, 1e-10, 0.0, 0.0]]))
    assert (p == 1).all() and (acc == 0).all()
