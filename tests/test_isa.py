"""Every compiled ISA path gives the same bits (-ffp-contract=off, fixed reductions)."""

import platform
from pathlib import Path

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
    # NaN of both signs and inf, in the gradients and the parameters, propagate
    # into the stored values (inf - inf and 0 * inf make new NaNs).
    "nonfinite": {},
    "nonfinite_ema_accum": {"use_ema": True, "gradient_accumulation_steps": 2},
    "nonfinite_rowwise": {},
}
NONFINITE = [np.nan, -np.nan, np.inf, -np.inf]


def _run(isa, dtype, features):
    assert _native.select_isa(isa)
    rng = np.random.default_rng(7)
    # 29 = 16 + 8 + 5 reaches the 16-lane, 8-lane and scalar loops of one block.
    shapes = [(70_001,), (3, 33), (), (17,), (29,)]
    params = [rng.normal(size=s).astype(dtype) for s in shapes]
    nonfinite = any(features is v for k, v in FEATURES.items() if k.startswith("nonfinite"))
    if nonfinite:
        for p in params[:2] + params[3:]:
            p.flat[rng.integers(0, p.size, 4)] = NONFINITE
    cls = an.RowWiseAdagrad if features is FEATURES["nonfinite_rowwise"] else an.Adagrad
    opt = cls(0.05, **features)
    for step in range(4):
        grads = [rng.normal(size=s).astype(dtype) for s in shapes]
        if nonfinite and step >= 1:
            for g in grads[:2] + grads[3:]:
                g.flat[rng.integers(0, g.size, 8)] = NONFINITE * 2
        opt.apply(grads, params)
    return params + [v.value for v in opt.variables]


def _bits(a):
    return a.view(f"u{a.dtype.itemsize}")


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
            assert a.tobytes() == b.tobytes(), f"{isas[0]} vs {isa}"


@pytest.mark.parametrize("features", [k for k in FEATURES if k.startswith("nonfinite")])
def test_every_nan_a_step_writes_is_the_canonical_nan(float_dtype, features, restore_isa):
    canonical = _bits(np.array(np.nan, float_dtype))
    for isa in _native.available_isas():
        arrays = [a for a in _run(isa, float_dtype, FEATURES[features]) if a.dtype.kind != "i"]
        nans = [np.isnan(a.astype(np.float64)) for a in arrays]
        assert sum(n.sum() for n in nans) > 20, "too few NaNs: the case tests nothing"
        for i, (a, nan) in enumerate(zip(arrays, nans)):
            assert (_bits(a)[nan] == canonical).all(), f"{isa}: array {i} has another NaN"


def test_build_info_reports_the_active_path(restore_isa):
    info = an.build_info()
    assert info["isa"] in info["available_isas"]
    assert "baseline" in info["available_isas"]
    assert _native.select_isa("baseline") and an.build_info()["isa"] == "baseline"
    assert not _native.select_isa("no-such-isa")
    assert an.build_info()["isa"] == "baseline"  # a refused selection changes nothing


# The CPU flags (Linux's names) each x86-64 path is compiled for (ADAGRAD_FLAGS_* in
# CMakeLists.txt), best first.
X86_ISA_FLAGS = {
    "avx512": {"avx512f", "avx512vl", "avx512bw", "avx512dq", "fma", "f16c", "avx2"},
    "avx2": {"avx2", "fma", "f16c"},
}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the x86-64 paths")
def test_every_path_the_cpu_can_run_is_offered():
    # A build whose feature detection fails still runs, on the baseline path alone, and
    # the bit-identity tests above skip: this catches it.
    cpu_flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            cpu_flags = set(line.split(":", 1)[1].split())
            break
    expected = [isa for isa, flags in X86_ISA_FLAGS.items() if flags <= cpu_flags]
    assert _native.available_isas() == [*expected, "baseline"]
