"""Optimizers pickle and deep-copy (as Keras' own optimizer tests require); Variables
read as arrays for numpy and jax, as Keras constraints read them."""

from __future__ import annotations

import copy
import pickle
import threading
import time

import numpy as np
import pytest

import adagrad_native as an
from tests.helpers import assert_identical

F32 = np.float32


def _grads(step):
    rng = np.random.default_rng(step)
    return [rng.standard_normal((3, 4)).astype(F32), rng.standard_normal(5).astype(F32)]


MAKERS = {
    "plain": lambda: an.Adagrad(0.1),
    "ema-accumulation-clip": lambda: an.Adagrad(
        0.1, use_ema=True, gradient_accumulation_steps=2, clipnorm=1.0
    ),
    "schedule": lambda: an.Adagrad(an.schedules.ExponentialDecay(0.1, 2, 0.5)),
    "rowwise": lambda: an.RowWiseAdagrad(0.1, weight_decay=0.01),
    "loss-scale": lambda: an.LossScaleOptimizer(an.Adagrad(0.1), initial_scale=4.0),
}
COPIES = {"pickle": lambda x: pickle.loads(pickle.dumps(x)), "deepcopy": copy.deepcopy}


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("maker", list(MAKERS))
def test_a_copy_of_a_trained_optimizer_trains_on_identically(maker, how):
    opt = MAKERS[maker]()
    params = [np.linspace(-1, 1, 12, dtype=F32).reshape(3, 4), np.ones(5, F32)]
    for step in range(3):
        opt.apply(_grads(step), params)
    copied_opt, copied_params = COPIES[how]((opt, params))
    for step in range(3, 6):
        opt.apply(_grads(step), params)
        copied_opt.apply(_grads(step), copied_params)
    assert_identical(copied_params, params)
    assert_identical([v.value for v in copied_opt.variables], [v.value for v in opt.variables])
    assert int(copied_opt.iterations) == int(opt.iterations)


@pytest.mark.parametrize("how", list(COPIES))
def test_a_copy_of_an_unbuilt_optimizer_builds(how):
    opt = COPIES[how](an.Adagrad(0.1, clipnorm=1.0))
    params = [np.ones(4, F32)]
    opt.apply([np.ones(4, F32)], params)
    assert opt.get_config()["clipnorm"] == 1.0 and int(opt.iterations) == 1


@pytest.mark.peer
def test_a_variable_reads_as_an_array_for_numpy_and_jax():
    v = an.Variable(np.ones(3, F32), name="w")
    assert v.dtype == "float32" and str(v.dtype) == "float32"
    assert np.result_type(v) == np.float32
    assert np.result_type(v, np.float64) == np.float64
    jnp = pytest.importorskip("jax.numpy")
    assert jnp.asarray(v).dtype == jnp.float32


# ------------------------------------------------------- copies while training
def _replayed(steps, cache={}):  # noqa: B006 - a cache across the calls of one test run
    """The parameter and accumulator values after `steps` steps of gradient 0.5."""
    if steps not in cache:
        param = np.zeros(16, F32)
        opt = an.Adagrad(0.01)
        for _ in range(steps):
            opt.apply([np.full(16, 0.5, F32)], [param])
        cache[steps] = (param[0], opt.variables[-1].value[0])
    return cache[steps]


@pytest.mark.parametrize("wrapped", [False, True], ids=["adagrad", "loss-scale-optimizer"])
@pytest.mark.parametrize("how", list(COPIES))
def test_a_copy_taken_while_another_thread_trains_holds_one_step(how, wrapped, restore_threads):
    an.set_num_threads(2)
    n = 1 << 20  # a step of about a millisecond: copies land inside steps
    param = np.zeros(n, F32)
    inner = an.Adagrad(0.01)
    opt = an.LossScaleOptimizer(inner, 1.0, dynamic_growth_steps=10**9) if wrapped else inner
    grad = np.full(n, 0.5, F32)
    opt.apply([grad], [param])
    stop = threading.Event()

    def train():
        while not stop.is_set():
            opt.apply([grad], [param])
            time.sleep(0.0002)  # a lock is not fair: let the copies in

    trainer = threading.Thread(target=train)
    trainer.start()
    seen = set()  # copies are taken until they saw the training move, whatever the machine
    deadline = time.monotonic() + 120
    try:
        while len(seen) < 10:
            assert time.monotonic() < deadline, f"the copies saw only {len(seen)} steps"
            copied = COPIES[how](opt)
            steps = int(copied.iterations)
            copied_inner = copied.inner_optimizer if wrapped else copied
            values = (copied_inner.trainable_variables[0].value, copied_inner.variables[-1].value)
            want = _replayed(steps)
            for got, expected in zip(values, want):
                assert got[0] == got[-1] == expected, f"a copy of half a step at {steps}"
            if wrapped:
                assert int(copied.step_counter) == steps
            seen.add(steps)
    finally:
        stop.set()
        trainer.join()
