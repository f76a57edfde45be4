"""Readers and writers of the state while other threads step the same optimizer.

A checkpoint, a store or a load never sees or makes half a step: every reader
and writer takes the lock that a step holds.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

import adagrad_native as an

N = 1 << 20  # a step of ~1 ms at 2 threads: readers land inside steps often


def _expected_accumulator(steps: int) -> np.float32:
    """The accumulator after `steps` steps of gradient 0.5 from 0.1, added as the core adds."""
    acc = np.float32(0.1)
    for _ in range(steps):
        acc = np.float32(acc + np.float32(0.25))
    return acc


class _Trainer:
    """Steps `opt` in a background thread until the block ends.

    It pauses briefly between steps: a lock is not fair, and a thread that takes
    it again at once could keep the readers out until training is over.
    """

    def __init__(self, opt, param):
        self.opt, self.param = opt, param
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        grad = np.full(N, 0.5, np.float32)
        while not self.stop.is_set():
            self.opt.apply([grad], [self.param])
            time.sleep(0.0005)

    def wait_past(self, steps: int) -> None:
        """Waits until training has gone past `steps` steps, so reads see it move."""
        deadline = time.monotonic() + 30
        while int(self.opt.iterations) <= steps:
            assert time.monotonic() < deadline, "the training thread stopped stepping"
            time.sleep(0.0002)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _built():
    an.set_num_threads(2)
    param = np.zeros(N, np.float32)
    opt = an.Adagrad(0.01)
    opt.build([param])
    return opt, param


def test_checkpoints_saved_during_training_are_each_one_state(tmp_path, restore_threads):
    opt, param = _built()
    seen = [0]
    with _Trainer(opt, param) as trainer:
        for i in range(30):
            trainer.wait_past(seen[-1])
            path = tmp_path / f"state-{i}.npz"
            an.save_state(opt, path)
            with np.load(path) as data:
                steps = int(data["iteration"])
                acc = data["param_0_accumulator"]
            assert (acc == _expected_accumulator(steps)).all(), f"a half step at {steps}"
            seen.append(steps)


def test_stores_written_during_training_are_each_one_state(restore_threads):
    opt, param = _built()
    steps = 0
    with _Trainer(opt, param) as trainer:
        for _ in range(30):
            trainer.wait_past(steps)
            store = {}
            opt.save_own_variables(store)
            steps = int(store["0"])
            assert (store["2"] == _expected_accumulator(steps)).all(), f"a half step at {steps}"


def test_four_threads_on_one_optimizer_apply_every_step(restore_threads):
    an.set_num_threads(2)
    param = np.zeros(N, np.float32)
    opt = an.Adagrad(0.01)
    grad = np.full(N, 0.5, np.float32)
    threads = [
        threading.Thread(target=lambda: [opt.apply([grad], [param]) for _ in range(25)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(opt.iterations) == 100
    assert (opt.variables[-1].value == _expected_accumulator(100)).all()


def test_checkpoints_during_stateless_apply_hold_only_real_states(tmp_path, restore_threads):
    # stateless_apply points the variables at copies while it steps them; a
    # checkpoint taken meanwhile must still see the optimizer's own state.
    an.set_num_threads(2)
    param = np.zeros(N, np.float32)
    opt = an.Adagrad(0.01)
    opt.apply([np.full(N, 0.5, np.float32)], [param])
    real = [v.numpy() for v in opt.variables]
    values = [v.numpy() for v in opt.variables]
    grad = [np.full(N, 0.5, np.float32)]

    def imagine():
        for _ in range(40):
            opt.stateless_apply(values, grad, [param.copy()])

    thread = threading.Thread(target=imagine)
    thread.start()
    try:
        for i in range(20):
            path = tmp_path / f"state-{i}.npz"
            an.save_state(opt, path)
            with np.load(path) as data:
                assert int(data["iteration"]) == 1
                assert data["param_0_accumulator"].tobytes() == real[-1].tobytes()
    finally:
        thread.join()


def test_optimizers_stepping_at_once_in_two_threads_each_get_their_own_result(restore_threads):
    # One caller holds the thread team, the other runs its tasks alone: both exact.
    an.set_num_threads(2)
    grad = np.full(N, 0.5, np.float32)

    def train(param):
        opt = an.Adagrad(0.01, clipnorm=1.0)
        for _ in range(30):
            opt.apply([grad], [param])

    params = [np.linspace(-1, 1, N, dtype=np.float32) for _ in range(3)]
    threads = [threading.Thread(target=train, args=(p,)) for p in params[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    an.set_num_threads(1)
    train(params[2])
    assert params[0].tobytes() == params[2].tobytes()
    assert params[1].tobytes() == params[2].tobytes()


def test_stateless_apply_is_never_seen_through_the_optimizers_variables(restore_threads):
    # Another thread reads the live variables (no lock) while stateless_apply steps
    # a hypothetical state: it sees only the optimizer's own.
    an.set_num_threads(2)
    param = np.zeros(N, np.float32)
    opt = an.Adagrad(0.01)
    opt.apply([np.full(N, 0.5, np.float32)], [param])
    real = [v.numpy() for v in opt.variables]
    stepped = param.copy()
    hypothetical = [np.array(1000), real[1], np.full(N, 7.0, np.float32)]
    grad = [np.full(N, 0.5, np.float32)]
    inside, stop = threading.Event(), threading.Event()  # a stateless step is in flight

    def imagine():
        while not stop.is_set():
            inside.set()
            opt.stateless_apply(hypothetical, grad, [param.copy()])
            inside.clear()

    thread = threading.Thread(target=imagine)
    thread.start()
    overlapping = 0  # reads while a stateless step ran: until enough, whatever the machine
    deadline = time.monotonic() + 120
    try:
        while overlapping < 200:
            assert time.monotonic() < deadline, f"only {overlapping} reads raced a stateless step"
            during = inside.is_set()
            iteration, _, accumulator = (v.value for v in opt.variables)
            assert int(iteration) == 1
            assert accumulator[0] == accumulator[N // 2] == accumulator[-1] == real[2][0]
            overlapping += during and inside.is_set()
    finally:
        stop.set()
        thread.join()
    assert param.tobytes() == stepped.tobytes()


@pytest.fixture
def frequent_thread_switches():
    """Python switches threads every microsecond, so races show in a short test."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


SETTINGS = {
    "clipnorm": lambda i: 1.0 if i % 2 else None,
    "weight_decay": lambda i: 0.01 if i % 2 else None,
    "epsilon": lambda i: 1e-7 if i % 2 else 1e-6,
    "learning_rate": lambda i: 0.01 if i % 2 else 0.02,
    "on_nonfinite": lambda i: "raise" if i % 2 else "propagate",
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_settings_changed_while_another_thread_steps_never_break_a_step(
    setting, frequent_thread_switches
):
    param = np.zeros(64, np.float32)
    opt = an.Adagrad(0.01, use_ema=True)  # the general path: each step reads the plan
    grad = np.full(64, 0.5, np.float32)
    errors, stop = [], threading.Event()

    def train():
        while not stop.is_set():
            try:
                opt.apply([grad], [param])
            except Exception as err:  # noqa: BLE001 - any error at all is the finding
                errors.append(repr(err))

    trainer = threading.Thread(target=train)
    trainer.start()
    deadline = time.monotonic() + 120
    try:
        i = 0  # settings change until the trainer took 500 steps among them
        while i < 20_000 or int(opt.iterations) < 500:
            assert time.monotonic() < deadline, "the trainer did not step"
            setattr(opt, setting, SETTINGS[setting](i))
            i += 1
    finally:
        stop.set()
        trainer.join()
    assert errors == []
    assert np.isfinite(param).all() and param[0] == param[-1]
