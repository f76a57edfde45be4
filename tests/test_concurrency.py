"""Readers and writers of the state while other threads step the same optimizer.

A checkpoint, a store or a load never sees or makes half a step: every reader
and writer takes the lock that a step holds.
"""

from __future__ import annotations

import threading

import numpy as np

import adagrad_native as an

N = 1 << 20  # a step of ~1 ms at 2 threads: readers land inside steps often


def _expected_accumulator(steps: int) -> np.float32:
    """The accumulator after `steps` steps of gradient 0.5 from 0.1, added as the core adds."""
    acc = np.float32(0.1)
    for _ in range(steps):
        acc = np.float32(acc + np.float32(0.25))
    return acc


def _train_in_background(opt, param, steps):
    grad = np.full(N, 0.5, np.float32)
    thread = threading.Thread(target=lambda: [opt.apply([grad], [param]) for _ in range(steps)])
    thread.start()
    return thread


def test_checkpoints_saved_during_training_are_each_one_state(tmp_path, restore_threads):
    an.set_num_threads(2)
    param = np.zeros(N, np.float32)
    opt = an.Adagrad(0.01)
    opt.build([param])
    trainer = _train_in_background(opt, param, 200)
    seen = []
    try:
        for i in range(30):
            path = tmp_path / f"state-{i}.npz"
            an.save_state(opt, path)
            with np.load(path) as data:
                steps = int(data["iteration"])
                acc = data["param_0_accumulator"]
            assert (acc == _expected_accumulator(steps)).all(), f"a half step at {steps}"
            seen.append(steps)
    finally:
        trainer.join()
    assert len(set(seen)) > 1, "the saves did not overlap the training"


def test_stores_written_during_training_are_each_one_state(restore_threads):
    an.set_num_threads(2)
    param = np.zeros(N, np.float32)
    opt = an.Adagrad(0.01)
    opt.build([param])
    trainer = _train_in_background(opt, param, 200)
    try:
        for _ in range(30):
            store = {}
            opt.save_own_variables(store)
            steps = int(store["0"])
            assert (store["2"] == _expected_accumulator(steps)).all(), f"a half step at {steps}"
    finally:
        trainer.join()


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
