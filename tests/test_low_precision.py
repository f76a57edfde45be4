"""float16 / bfloat16 parameters vs the numpy oracle: float32 math, one rounding per store.

Both sides compute every stage in float32 from the stored 16-bit values and round
each stored result once (nearest even), so they agree to the bit wherever the float32
math is the same. The norms of clipnorm / global_clipnorm are float64 sums in a
different order, which can move a clipped gradient by a float32 ulp and a stored
value across a rounding boundary: those features allow 1 ulp of the storage dtype.
A float16 chain that rounds after every operation (Keras' own float16 path) or a
missed rounding is off by many ulps in a large fraction of the elements.
"""

from __future__ import annotations

import numpy as np
import pytest

import adagrad_native as an
from tests.oracle import ReferenceAdagrad, RowWiseReferenceAdagrad

# Around the vector widths (8, 16 lanes), the 256-element block and the 16 Ki chunk.
SHAPES = [
    (),
    (1,),
    (7,),
    (8,),
    (9,),
    (15,),
    (16,),
    (17,),
    (29,),
    (33,),
    (3, 5, 7),
    (257,),
    (70_001,),
]
FEATURES = {
    "plain": dict(),
    "hparams": dict(learning_rate=0.5, initial_accumulator_value=0.3, epsilon=1e-3),
    "weight_decay": dict(weight_decay=0.05),
    "loss_scale": dict(loss_scale_factor=64.0),
    "clipvalue": dict(clipvalue=0.5),
    "clipnorm": dict(clipnorm=1.0),
    "global_clipnorm": dict(global_clipnorm=1.0),
    "ema_overwrite2": dict(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=2),
    "accum2": dict(gradient_accumulation_steps=2),
    "accum3_clipnorm_wd_ema": dict(
        gradient_accumulation_steps=3,
        clipnorm=1.0,
        weight_decay=0.05,
        use_ema=True,
        ema_momentum=0.9,
    ),
}
NORM_FEATURES = {"clipnorm", "global_clipnorm", "accum3_clipnorm_wd_ema"}
STEPS = 6


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in units in the last place between two arrays of one 16-bit dtype."""

    def ordered(x):
        bits = x.view(np.uint16).astype(np.int32)
        return np.where(bits & 0x8000, -(bits & 0x7FFF), bits)

    return np.abs(ordered(a) - ordered(b))


def assert_ulps(got, want, max_ulps, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    if got.dtype.itemsize != 2:  # float32 accumulators: ulps of float32
        ulps = np.abs(got - want) / np.spacing(np.abs(want))
        worst = int(np.ceil(ulps.max(initial=0)))
    else:
        worst = int(ulp_distance(got, want).max(initial=0))
    assert worst <= max_ulps, f"{what}: {worst} ulps apart (allowed {max_ulps})"


OPTIMIZERS = {
    "adagrad": (an.Adagrad, ReferenceAdagrad),
    "rowwise": (an.RowWiseAdagrad, RowWiseReferenceAdagrad),
}


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("acc_dtype", [None, "float32"], ids=["acc_param", "acc_float32"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_matches_the_oracle(low_precision_dtype, optimizer, acc_dtype, feature):
    dtype = low_precision_dtype
    rng = np.random.default_rng(11)
    kwargs = {"learning_rate": 0.1, **FEATURES[feature]}
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    params = [p.copy() for p in init]
    cls, reference = OPTIMIZERS[optimizer]
    opt = cls(**kwargs, accumulator_dtype=acc_dtype)
    ref = reference(**kwargs, accumulator_dtype=acc_dtype)
    ref.build(init)
    max_ulps = 1 if feature in NORM_FEATURES else 0
    for step in range(STEPS):
        grads = [(rng.standard_normal(s) * 2).astype(dtype) for s in SHAPES]
        opt.apply(grads, params)
        ref.apply(grads)
        for i, (p, want) in enumerate(zip(params, ref.params, strict=True)):
            assert_ulps(p, want, max_ulps, f"step {step}: param {i} {SHAPES[i]}")
        for i, (acc, want) in enumerate(zip(opt._accumulators, ref.accumulators, strict=True)):
            assert_ulps(acc.value, want, max_ulps, f"step {step}: accumulator {i}")
        if kwargs.get("use_ema"):
            for i, (avg, want) in enumerate(
                zip(opt._model_variables_moving_average, ref.averages, strict=True)
            ):
                assert_ulps(avg.value, want, max_ulps, f"step {step}: average {i}")
        if kwargs.get("gradient_accumulation_steps"):
            for i, (gacc, want) in enumerate(
                zip(opt._accumulated_gradients, ref.grad_accumulators, strict=True)
            ):
                assert_ulps(gacc.value, want, max_ulps, f"step {step}: grad accumulator {i}")


def test_rounding_after_every_operation_is_caught(low_precision_dtype):
    """The comparison above can fail: a 16-bit chain (round after each op) is far off."""
    dtype = low_precision_dtype
    rng = np.random.default_rng(5)
    p = rng.standard_normal(4096).astype(dtype)
    g = (rng.standard_normal(4096) * 2).astype(dtype)
    ref = ReferenceAdagrad(learning_rate=0.1)
    ref.build([p])
    ref.apply([g])
    acc = np.full_like(p, 0.1) + g * g  # every operation rounded to the 16-bit dtype
    chain = p - (dtype.type(0.1) * g) / np.sqrt(acc + dtype.type(1e-7))
    assert np.count_nonzero(ulp_distance(chain, ref.params[0]) > 1) > 0
