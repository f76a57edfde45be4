"""Determinism across thread counts (docs/architecture.md): chunking never depends on the number of
threads and norms are combined in chunk order, so 1 and 2 threads agree bit for bit."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

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
    for n in (1, 2, 3):
        an.set_num_threads(n)
        assert an.get_num_threads() == n
        info = an.build_info()
        assert info["num_threads"] == n


def test_build_info_keys():
    info = an.build_info()
    assert {"version", "isa", "available_isas", "num_threads"} <= set(info)
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
        # Two threads first, on the team started under the default modes: a
        # thread started now would inherit the caller's modes anyway.
        two, one = step(2), step(1)
    finally:
        csr.set_csr(default)
    assert_identical(one, two)
    assert not one[0].any() and plain[0].all(), "the modes must change the result"


# Run in a fresh interpreter: other libraries a test session imports (JAX) warn
# or misbehave at fork on their own.
FORK_SCRIPT = """
import multiprocessing
import numpy as np
import adagrad_native as an

def steps():
    an.set_num_threads(2)
    param = np.linspace(-1, 1, 1 << 20, dtype=np.float32)
    opt = an.Adagrad(0.1, clipnorm=1.0)
    for _ in range(3):
        opt.apply([np.full_like(param, 0.5)], [param])
    return param.tobytes()

def child(results):
    results.put(hash(steps()))  # small: a large message would stall the pipe

if __name__ == "__main__":
    expected = hash(steps())  # the team's threads exist and have worked
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    process = context.Process(target=child, args=(results,))
    process.start()
    process.join(timeout=30)
    if process.is_alive():
        process.kill()
        raise SystemExit("the forked child hung in its first threaded step")
    assert process.exitcode == 0, process.exitcode
    assert results.get(timeout=10) == expected, "the child's steps differ"
    print("forked child stepped")
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="the fork start method is POSIX's")
def test_a_child_forked_after_threaded_steps_can_step(tmp_path):
    script = tmp_path / "fork_after_steps.py"
    script.write_text(FORK_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "forked child stepped" in done.stdout


def test_a_loop_inside_a_task_runs_on_its_thread(restore_threads):
    # Two sparse gradients of 2**17 unsorted ids: each one's de-duplication is a
    # parallel loop of its own, started inside a task of the team's loop over them.
    rng = np.random.default_rng(9)
    n = 1 << 17
    grads = [
        an.SparseGradient(rng.permutation(n) % 50_000, np.ones((n, 4), np.float32), (50_000, 4))
        for _ in range(2)
    ]

    def run(threads):
        an.set_num_threads(threads)
        tables = [np.zeros((50_000, 4), np.float32) for _ in range(2)]
        an.Adagrad(0.1).apply(grads, tables)
        return tables

    assert_identical(run(2), run(1))


@pytest.mark.parametrize("threads", [1, 2], ids=["1-thread", "2-threads"])
def test_the_team_self_test_reaches_its_rare_paths(threads, restore_threads):
    # A task that throws (the caller gets its exception, the team recovers) and a
    # loop inside a task (it stays on the task's thread), inside the core itself.
    an.set_num_threads(threads)
    from adagrad_native import _core

    assert _core.team_self_test() == []
