"""Inputs that used to crash the process or silently compute something else.

Each case either gives the same result as the well-formed call (a byte-swapped or
aliased gradient is read as the numbers it holds) or raises a clear error and
changes nothing (a setting the optimizer's buffers cannot honour).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

import adagrad_native as an
from tests.helpers import assert_identical, run_interrupted

F32 = np.float32


def _trained(**kwargs):
    params = [np.linspace(-1, 1, 12, dtype=F32).reshape(3, 4), np.ones(5, F32)]
    opt = an.Adagrad(0.1, **kwargs)
    opt.apply([np.full_like(p, 0.5) for p in params], params)
    return opt, params


# ------------------------------------------------------------ settings after build
SETTINGS = {
    "epsilon_negative": ("epsilon", -1.0, "epsilon"),
    "weight_decay_nan": ("weight_decay", float("nan"), "weight_decay"),
    "clipnorm_nan": ("clipnorm", float("nan"), "clipnorm"),
    "clipvalue_negative": ("clipvalue", -0.5, "clipvalue"),
    "loss_scale_factor_zero": ("loss_scale_factor", 0.0, "loss_scale_factor"),
    "epsilon_overflows_float32": ("epsilon", 1e300, "float32"),
    "use_ema_turned_on": ("use_ema", True, "EMA averages are made at build"),
    "accumulation_turned_on": ("gradient_accumulation_steps", 2, "gradient accumulators"),
    "accumulation_one": ("gradient_accumulation_steps", 1, "gradient_accumulation_steps"),
    "accumulator_dtype_changed": ("accumulator_dtype", "float32", "cannot change after"),
    "on_nonfinite_unknown": ("on_nonfinite", "sometimes", "on_nonfinite"),
    "sparse_updates_unknown": ("sparse_updates", "eager", "sparse_updates"),
}


@pytest.mark.parametrize("case", list(SETTINGS))
def test_a_bad_setting_after_build_raises_and_changes_nothing(case, snapshot):
    name, value, fragment = SETTINGS[case]
    opt, params = _trained()
    before = opt.__dict__[name]
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match=fragment):
        setattr(opt, name, value)
    assert opt.__dict__[name] is before
    snap.assert_unchanged()
    opt.apply([np.full_like(p, 0.5) for p in params], params)  # and it still steps


def test_accumulation_turned_on_through_a_loss_scale_optimizer_raises():
    opt, params = _trained()
    lso = an.LossScaleOptimizer(opt)
    with pytest.raises(ValueError, match="gradient accumulators"):
        lso.inner_optimizer.gradient_accumulation_steps = 4


def test_the_core_refuses_an_accumulation_step_without_accumulators(snapshot):
    # Below the Python checks: a plan that needs buffers the group lacks is refused.
    opt, params = _trained()
    opt.__dict__["gradient_accumulation_steps"] = 2  # bypasses the setting's check
    opt.settings_changed()
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match="no gradient accumulator"):
        opt.apply([np.full_like(p, 0.5) for p in params], params)
    snap.assert_unchanged()


@pytest.mark.parametrize("value", [1e300, -1e300], ids=["huge", "huge-negative"])
def test_a_learning_rate_that_overflows_float32_is_refused(value):
    with pytest.raises(ValueError, match="learning_rate"):
        an.Adagrad(learning_rate=value)
    opt, _ = _trained()
    with pytest.raises(ValueError, match="float32"):
        opt.learning_rate = value
    assert float(opt.learning_rate) == pytest.approx(0.1)


# ------------------------------------------------------------------------ threads
@pytest.mark.parametrize("n", [1025, 100_000, 2**31 - 1], ids=["1025", "100k", "int-max"])
def test_too_many_threads_is_refused(n, restore_threads):
    with pytest.raises(ValueError, match=r"in \[1, 1024\]"):
        an.set_num_threads(n)
    assert an.get_num_threads() == restore_threads


def test_a_huge_omp_num_threads_is_capped():
    code = (
        "import numpy as np, adagrad_native as an\n"
        "p = np.zeros(1 << 20, np.float32)\n"
        "an.Adagrad(0.1).apply([np.ones_like(p)], [p])\n"
        "print(an.get_num_threads(), float(p[0]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "100000"},
    )
    assert done.returncode == 0, done.stderr
    threads, value = done.stdout.split()
    assert int(threads) == 1024 and float(value) < 0


# --------------------------------------------------------------------- byte order
def _swapped(a):
    return a.astype(a.dtype.newbyteorder())


@pytest.mark.parametrize("grad", ["dense", "sparse-values", "sparse-ids"])
def test_byte_swapped_inputs_are_read_as_their_numbers(grad):
    def run(swap):
        table = np.linspace(-1, 1, 40, dtype=F32).reshape(10, 4)
        opt = an.Adagrad(0.1)
        ids = np.array([1, 7, 1], np.int64)
        values = np.arange(12, dtype=F32).reshape(3, 4) / 10
        if grad == "dense":
            g = np.arange(40, dtype=F32).reshape(10, 4) / 10
            g = _swapped(g) if swap else g
        else:
            g = an.SparseGradient(
                _swapped(ids) if swap and grad == "sparse-ids" else ids,
                _swapped(values) if swap and grad == "sparse-values" else values,
            )
        for _ in range(2):
            opt.apply([g], [table])
        return [table]

    assert_identical(run(True), run(False))


def test_a_byte_swapped_out_of_range_id_is_refused(snapshot):
    opt, params = _trained()
    snap = snapshot(opt, params)
    ids = np.array([1, 3], ">i8")
    with pytest.raises(ValueError, match="row id 3"):
        opt.apply([an.SparseGradient(ids, np.ones((2, 4), F32)), None], params)
    snap.assert_unchanged()


# ---------------------------------------------------------------------- aliasing
ALIASES = ["gradient-is-parameter", "gradient-is-accumulator", "overlapping-views"]


@pytest.mark.parametrize("threads", [1, 2], ids=["1-thread", "2-threads"])
@pytest.mark.parametrize("alias", ALIASES)
def test_a_gradient_sharing_memory_with_the_step_reads_as_a_copy(alias, threads, restore_threads):
    an.set_num_threads(threads)
    n = 70_000  # several work items, so two threads split the tensor

    def run(copy):
        base = np.linspace(-1, 1, n + 1, dtype=F32)
        param = base[1:] if alias == "overlapping-views" else base[:n].copy()
        opt = an.Adagrad(0.1, weight_decay=0.01)
        opt.build([param])
        accumulator = opt.variables[-1].value
        accumulator[...] = np.linspace(0.1, 2, n, dtype=F32)
        grad = {
            "gradient-is-parameter": param,
            "gradient-is-accumulator": accumulator,
            "overlapping-views": base[:-1],
        }[alias]
        opt.apply([grad.copy() if copy else grad], [param])
        return [param, accumulator]

    assert_identical(run(False), run(True))


def test_parameters_that_share_memory_are_refused():
    base = np.zeros(10, F32)
    opt = an.Adagrad(0.1)
    with pytest.raises(ValueError, match="overlap"):
        opt.build([base[:6], base[4:]])


# ---------------------------------------------------------- ids changed mid-step
def test_ids_rewritten_by_another_thread_never_reach_outside_the_table(restore_threads):
    an.set_num_threads(2)
    rows, width, n = 4096, 4, 1 << 20
    guarded = np.zeros((rows + 2, width), F32)  # a guard row on each side
    table = guarded[1:-1]
    opt = an.Adagrad(0.1)
    good = np.arange(n, dtype=np.int64) % rows
    ids = good.copy()
    values = np.ones((n, width), F32)
    stop = threading.Event()

    def rewrite():
        # Bad ids appear right after the step released the GIL (its check passed)
        # and stay while this thread holds the GIL, i.e. while the core reads them.
        pauses = iter(np.random.default_rng(0).uniform(5e-4, 1e-2, 10**6))
        while not stop.is_set():
            ids[:] = good
            # Let the step take the GIL, check, and release it: pauses of varied
            # length, so the bad ids land in the step whatever it costs here.
            time.sleep(next(pauses))
            ids[::7] = rows + 1  # would land on the guard row after the table
            deadline = time.perf_counter() + 1e-3
            while time.perf_counter() < deadline:
                pass

    writer = threading.Thread(target=rewrite)
    writer.start()
    applied = attempts = 0  # 100 steps at least, and on until one got past the check
    deadline = time.monotonic() + 120
    try:
        while attempts < 100 or not applied:
            assert time.monotonic() < deadline, "no step got past the check"
            attempts += 1
            try:
                opt.apply([an.SparseGradient(ids, values)], [table])
                applied += 1
            except ValueError:
                pass  # the check saw the bad ids: refused, as it must be
    finally:
        stop.set()
        writer.join()
    assert not guarded[0].any() and not guarded[-1].any()


# ------------------------------------------------------------------ clear errors
class _SlicesLike:
    """An IndexedSlices look-alike whose dense_shape does not fit int64."""

    indices = np.array([0])
    values = np.ones((1, 4), F32)
    dense_shape = (2**70, 4)


CLEAR_ERRORS = {
    "grads_none": (lambda opt, p: opt.apply(None), TypeError, "`grads` must be a list"),
    "grads_none_with_variables": (
        lambda opt, p: opt.apply(None, p),
        TypeError,
        "`grads` must be a list",
    ),
    "grads_one_array": (
        lambda opt, p: opt.apply(np.ones(5, F32), p),
        TypeError,
        "`grads` must be a list",
    ),
    "dense_shape_beyond_int64": (
        lambda opt, p: opt.apply(
            [an.SparseGradient([0], np.ones((1, 4), F32), (2**70, 4)), None], p
        ),
        ValueError,
        "dense_shape",
    ),
    "dense_shape_beyond_int64_duck": (
        lambda opt, p: opt.apply([_SlicesLike(), None], p),
        ValueError,
        "dense_shape",
    ),
}


@pytest.mark.parametrize("case", list(CLEAR_ERRORS))
def test_a_bad_call_gets_a_clear_error_and_changes_nothing(case, snapshot):
    call, error, fragment = CLEAR_ERRORS[case]
    opt, params = _trained()
    snap = snapshot(opt, params)
    with pytest.raises(error, match=fragment):
        call(opt, params)
    snap.assert_unchanged()


def test_loading_a_file_that_is_not_a_checkpoint_says_so(tmp_path, snapshot):
    opt, params = _trained()
    np.save(tmp_path / "array.npy", np.ones(3))
    an.save_state(opt, tmp_path / "good.npz")
    # A header that claims 2**45 x 8 elements: numpy would try to allocate a PiB.
    with zipfile.ZipFile(tmp_path / "good.npz") as z:
        entries = {name: z.read(name) for name in z.namelist()}
    name = next(n for n in entries if "accumulator" in n)
    entries[name] = entries[name].replace(b"(3, 4)", b"(35184372088832, 8)", 1)
    with zipfile.ZipFile(tmp_path / "corrupt.npz", "w") as z:
        for key, data in entries.items():
            z.writestr(key, data)
    snap = snapshot(opt, params)
    for bad, fragment in (("array.npy", "single array"), ("corrupt.npz", "header declares")):
        with pytest.raises(ValueError, match=f"not a checkpoint that save_state wrote.*{fragment}"):
            an.load_state(opt, tmp_path / bad)
    snap.assert_unchanged()


# ------------------------------------------------------------ casts, as Keras
CASTS = [
    ("float32", "float64"),
    ("float32", "float16"),
    ("float32", "bfloat16"),
    ("float64", "float32"),
    ("bfloat16", "float32"),
    ("float16", "float64"),
]


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(("variable", "gradient"), CASTS, ids=[f"{v}-from-{g}" for v, g in CASTS])
def test_a_gradient_of_another_float_dtype_is_cast_as_keras_casts_it(variable, gradient, sparse):
    from tests.helpers import FLOAT_DTYPES

    v_dtype, g_dtype = FLOAT_DTYPES[variable], FLOAT_DTYPES[gradient]
    grad = np.linspace(-1, 1, 20).astype(g_dtype).reshape(5, 4)

    def run(g):
        table = np.linspace(-1, 1, 20).astype(v_dtype).reshape(5, 4)
        opt = an.Adagrad(0.1)
        for _ in range(2):
            opt.apply([an.SparseGradient([0, 3, 3, 1, 4], g) if sparse else g], [table])
        return [table]

    assert_identical(run(grad), run(grad.astype(v_dtype)))


# ------------------------------------------------------------------------ signals
@pytest.mark.parametrize("wrapped", [False, True], ids=["adagrad", "loss-scale-optimizer"])
def test_ctrl_c_during_a_step_never_leaves_a_counter_behind(wrapped, restore_threads):
    an.set_num_threads(1)
    param = np.zeros(1 << 24, F32)  # a step of tens of ms: the signal lands inside it
    grad = np.full_like(param, 0.5)
    inner = an.Adagrad(0.1, use_ema=True)  # the general path, where the counter was Python's
    opt = an.LossScaleOptimizer(inner, initial_scale=1.0) if wrapped else inner
    opt.apply([grad], [param])
    for delay in np.random.default_rng(3).uniform(0.0, 0.04, 5):
        before = int(opt.iterations)
        run_interrupted(lambda: opt.apply([grad], [param]), float(delay))
        accumulator = inner.variables[-1].value
        steps = int(opt.iterations)
        assert steps in (before, before + 1)
        if wrapped:  # every step finite and far from the growth interval: it counts them all
            assert int(opt.step_counter) == steps, "the loss scale's counter fell behind"
        assert accumulator[0] == accumulator[-1]  # never half a step
        # The accumulator says how many steps ran: 0.1 + 0.25 per step.
        expected = np.float32(0.1)
        for _ in range(steps):
            expected = np.float32(expected + np.float32(0.25))
        assert accumulator[0] == expected, f"counter {steps}, state of another count"
