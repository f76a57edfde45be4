"""Every compiled ISA path gives the same bits (-ffp-contract=off, fixed reductions)."""

import numpy as np
import pytest

import adagrad_native as an
from adagrad_native import _native

FEATURES = {
    "plain": {},
    "global_clip_ema": {"global_clipnorm": 0.5, "use_ema": True, "ema_overwrite_frequency": 2},
    "clipnorm_wd_scale": {"clipnorm": 0.3, "weight_decay": 0.01, "loss_scale_factor": 8.0},
    "clipvalue_accum": {"clipvalue": 0.2, "gradient_accumulation_steps": 2},
    "wd_acc32": {"weight_decay": 0.01, "accumulator_dtype": "float32"},
    "nonfinite": {},  # NaN and inf in the gradients propagate into the stored values
}


def _run(isa, dtype, features):
    assert _native.select_isa(isa)
    rng = np.random.default_rng(7)
    # 29 = 16 + 8 + 5 reaches the 16-lane, 8-lane and scalar loops of one block.
    shapes = [(70_001,), (3, 33), (), (17,), (29,)]
    params = [rng.normal(size=s).astype(dtype) for s in shapes]
    nonfinite = features is FEATURES["nonfinite"]
    opt = an.Adagrad(0.05, **features)
    for step in range(4):
        grads = [rng.normal(size=s).astype(dtype) for s in shapes]
        if nonfinite and step == 2:
            grads[0][[3, 40, 41, 69_999]] = [np.nan, np.inf, -np.inf, np.nan]
            grads[4][[19, 27]] = [np.inf, np.nan]
        opt.apply(grads, params)
    return [p.tobytes() for p in params] + [v.value.tobytes() for v in opt.variables]


@pytest.fixture
def restore_isa():
    yield
    _native.select_isa("auto")


@pytest.mark.parametrize("features", FEATURES.values(), ids=FEATURES.keys())
def test_isa_paths_bit_identical(float_dtype, features, restore_isa):
    isas = _native.available_isas()
    if len(isas) < 2:
        pytest.skip(f"only one ISA path runs on this CPU: {isas}")
    runs = {isa: _run(isa, float_dtype, features) for isa in isas}
    first = runs[isas[0]]
    for isa in isas[1:]:
        for a, b in zip(first, runs[isa]):
            assert a == b, f"{isas[0]} vs {isa}"


def test_build_info_reports_the_active_path(restore_isa):
    info = an.build_info()
    assert info["isa"] in info["available_isas"]
    assert "baseline" in info["available_isas"]
    assert _native.select_isa("baseline") and an.build_info()["isa"] == "baseline"
    assert not _native.select_isa("no-such-isa")
    assert an.build_info()["isa"] == "baseline"  # a refused selection changes nothing
