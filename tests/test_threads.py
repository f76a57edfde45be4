"""Determinism across thread counts (docs/architecture.md): chunking never depends on the number of
threads and norms are combined in chunk order, so 1 and 2 threads agree bit for bit."""

from __future__ import annotations

import ctypes
import platform
import subprocess

import numpy as np
import pytest

import adagrad_native as an
from tests.helpers import assert_identical

CONFIGS = {
    "global_clipnorm_ema_wd": dict(
        global_clipnorm=1.0,
        use_ema=True,
        ema_momentum=0.9,
        ema_overwrite_frequency=2,
        weight_decay=0.01,
    ),
    "clipnorm_accum2_ema": dict(clipnorm=1.0, gradient_accumulation_steps=2, use_ema=True),
    "plain": dict(),
}
LAYOUTS = {
    # > 1M elements per tensor, not a multiple of any chunk size.
    "large": [((1_200_003,), np.float32), ((1_048_583,), np.float64), ((1000, 1031), np.float32)],
    # Many small tensors of mixed sizes and dtypes.
    "many_small": [((i % 37 + 1,), np.float32 if i % 3 else np.float64) for i in range(400)],
}


def _run(threads, layout, config, seed=7, steps=3):
    an.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(shape).astype(dt) for shape, dt in layout]
    opt = an.Adagrad(learning_rate=0.1, **config)
    for _ in range(steps):
        grads = [(rng.standard_normal(p.shape) * 3).astype(p.dtype) for p in params]
        opt.apply(grads, params)
    return params + [np.array(v, copy=True) for v in opt.variables]


@pytest.mark.parametrize("layout_id", list(LAYOUTS))
@pytest.mark.parametrize("config_id", list(CONFIGS))
def test_one_and_two_threads_are_bit_identical(layout_id, config_id, restore_threads):
    one = _run(1, LAYOUTS[layout_id], CONFIGS[config_id])
    two = _run(2, LAYOUTS[layout_id], CONFIGS[config_id])
    assert_identical(two, one, "2 threads vs 1: array")


def test_thread_count_round_trip(restore_threads):
    if not an.build_info()["openmp"]:
        pytest.skip("built without OpenMP: the thread count is fixed at 1")
    for n in (1, 2, 3):
        an.set_num_threads(n)
        assert an.get_num_threads() == n
        info = an.build_info()
        assert info["num_threads"] == n


def test_build_info_keys():
    info = an.build_info()
    assert {"version", "isa", "openmp", "num_threads"} <= set(info)
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["isa"], str) and info["isa"]
    assert info["version"] == an.__version__


def test_invalid_thread_count_raises(restore_threads):
    with pytest.raises(ValueError):
        an.set_num_threads(0)
    assert an.get_num_threads() == restore_threads


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="MXCSR is x86's")
def test_the_callers_flush_to_zero_reaches_every_thread(tmp_path, restore_threads):
    # A tiny library sets the calling thread's MXCSR, as a caller's own code would.
    source = tmp_path / "mxcsr.c"
    source.write_text(
        "#include <xmmintrin.h>\n"
        "unsigned get_csr(void) { return _mm_getcsr(); }\n"
        "void set_csr(unsigned v) { _mm_setcsr(v); }\n"
    )
    library = tmp_path / "mxcsr.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    csr = ctypes.CDLL(str(library))
    csr.get_csr.restype = ctypes.c_uint
    ftz_daz = 0x8040

    def step(threads):
        an.set_num_threads(threads)
        param = np.full(70_001, 1e-40, np.float32)  # denormals: zero under DAZ
        an.Adagrad(0.1).apply([np.zeros_like(param)], [param])
        return [param]

    default = csr.get_csr()
    plain = step(2)  # the team's threads exist now, started under the default modes
    csr.set_csr(default | ftz_daz)
    try:
        # Two threads first: a smaller team first would let the runtime retire the
        # worker and start a new one, which inherits the caller's modes anyway.
        two, one = step(2), step(1)
    finally:
        csr.set_csr(default)
    assert_identical(one, two)
    assert not one[0].any() and plain[0].all(), "the modes must change the result"
