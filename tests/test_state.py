"""Optimizer state: Keras-keyed stores, set_weights, name-keyed checkpoints, stateless_apply."""

import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import adagrad_native as an

F32 = np.float32


def _trained(seed=0, steps=3, **kwargs):
    rng = np.random.default_rng(seed)
    variables = [
        an.Variable(rng.normal(size=(4, 3)).astype(F32), name="kernel"),
        an.Variable(rng.normal(size=3).astype(F32), name="bias"),
    ]
    opt = an.Adagrad(0.1, use_ema=True, gradient_accumulation_steps=2, **kwargs)
    for _ in range(steps):
        opt.apply([rng.normal(size=v.shape).astype(F32) for v in variables], variables)
    return opt, variables


def _values(opt):
    return [v.numpy() for v in opt.variables]


def test_store_round_trip_uses_keras_keys():
    opt, _ = _trained()
    store = {}
    opt.save_own_variables(store)
    assert list(store) == [str(i) for i in range(len(opt.variables))]
    fresh, _ = _trained(seed=1, steps=1)
    fresh.load_own_variables(store)
    for a, b in zip(_values(opt), _values(fresh)):
        np.testing.assert_array_equal(a, b)


def test_h5py_group_store(tmp_path):
    h5py = pytest.importorskip("h5py")
    opt, _ = _trained()
    with h5py.File(tmp_path / "state.h5", "w") as f:
        opt.save_own_variables(f.create_group("optimizer"))
    fresh, _ = _trained(seed=1, steps=1)
    with h5py.File(tmp_path / "state.h5", "r") as f:
        fresh.load_own_variables(f["optimizer"])
    for a, b in zip(_values(opt), _values(fresh)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("damage", ["drop", "extra", "shape"])
def test_mismatched_store_raises_and_changes_nothing(damage):
    opt, _ = _trained()
    store = {}
    opt.save_own_variables(store)
    if damage == "drop":
        del store[str(len(store) - 1)]
    elif damage == "extra":
        store[str(len(store))] = np.zeros(2, F32)
    else:
        store["3"] = np.zeros((5, 5), F32)
    target, _ = _trained(seed=1, steps=1)
    before = _values(target)
    with pytest.raises(ValueError, match=r"expected \d+ entries.*the store has"):
        target.load_own_variables(store)
    for a, b in zip(before, _values(target)):
        np.testing.assert_array_equal(a, b)


def test_set_weights_checks_length_and_shape():
    opt, _ = _trained()
    before = _values(opt)
    with pytest.raises(ValueError, match="one entry per variable"):
        opt.set_weights(before[:-1])
    bad = list(before)
    bad[-1] = np.zeros((9,), F32)
    with pytest.raises(ValueError, match=r"weights\[\d+\].*shape \(9,\)"):
        opt.set_weights(bad)
    for a, b in zip(before, _values(opt)):
        np.testing.assert_array_equal(a, b)
    opt.set_weights([v * 2 for v in before])
    np.testing.assert_array_equal(_values(opt)[-1], before[-1] * 2)


def test_checkpoint_is_name_keyed_and_survives_reordering(tmp_path):
    opt, variables = _trained(name="first")
    path = tmp_path / "ckpt.npz"
    an.save_state(opt, path)
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary file left behind
    rng = np.random.default_rng(5)
    reordered = [
        an.Variable(rng.normal(size=(3,)).astype(F32), name="bias"),
        an.Variable(rng.normal(size=(4, 3)).astype(F32), name="kernel"),
    ]
    other = an.Adagrad(0.1, use_ema=True, gradient_accumulation_steps=2, name="renamed")
    other.build(reordered)
    config = an.load_state(other, path)
    assert config["name"] == "first"
    for name in ("kernel_accumulator", "bias_average", "kernel_gradient_accumulator"):
        want = next(v for v in opt.variables if v.path.endswith("/" + name))
        got = next(v for v in other.variables if v.path.endswith("/" + name))
        np.testing.assert_array_equal(want.numpy(), got.numpy())
    assert int(other._iterations) == int(opt._iterations)


def test_checkpoint_mismatch_lists_the_problems(tmp_path):
    opt, _ = _trained()
    path = tmp_path / "ckpt.npz"
    an.save_state(opt, path)
    other = an.Adagrad(0.1)  # no EMA, no accumulation: fewer variables
    other.build(
        [
            an.Variable(np.ones((4, 3), F32), name="kernel"),
            an.Variable(np.ones(7, F32), name="bias"),
        ]
    )
    before = _values(other)
    with pytest.raises(ValueError, match=r"unexpected \['bias_average'.*mismatched \['bias_acc"):
        an.load_state(other, path)
    for a, b in zip(before, _values(other)):
        np.testing.assert_array_equal(a, b)


def test_stateless_apply_matches_apply_and_touches_nothing():
    opt, variables = _trained()
    rng = np.random.default_rng(9)
    grads = [rng.normal(size=v.shape).astype(F32) for v in variables]
    opt_in = _values(opt)
    train_in = [v.numpy() for v in variables]
    snapshot = [a.copy() for a in opt_in + train_in]
    new_train, new_opt = opt.stateless_apply(opt_in, grads, train_in)
    for a, b in zip(snapshot, opt_in + train_in):
        np.testing.assert_array_equal(a, b)  # inputs untouched
    for a, b in zip(opt_in, _values(opt)):
        np.testing.assert_array_equal(a, b)  # optimizer untouched
    opt.apply(grads, variables)
    for a, b in zip(new_train, variables):
        np.testing.assert_array_equal(a, b.numpy())
    for a, b in zip(new_opt, _values(opt)):
        np.testing.assert_array_equal(a, b)


def test_stateless_apply_errors():
    opt = an.Adagrad()
    with pytest.raises(ValueError, match="must be built"):
        opt.stateless_apply([], [np.ones(2, F32)], [np.ones(2, F32)])
    opt, variables = _trained()
    with pytest.raises(ValueError, match="optimizer_variables.*expected"):
        opt.stateless_apply(
            _values(opt)[:-1],
            [np.ones(v.shape, F32) for v in variables],
            [v.numpy() for v in variables],
        )
    with pytest.raises(ValueError, match="trainable_variables.*expected 2"):
        opt.stateless_apply(_values(opt), [np.ones((4, 3), F32)], [variables[0].numpy()])


# ------------------------------------------------------------- checkpoint files
def _named_alike(count):
    return [an.Variable(np.full(3, float(i + 1), np.float32), name="w") for i in range(count)]


@pytest.mark.parametrize("count", [2, 3])
def test_variables_of_the_same_name_all_reach_the_checkpoint(tmp_path, count):
    variables = _named_alike(count)
    opt = an.Adagrad(0.1)
    opt.apply([np.full(3, float(i + 1), np.float32) for i in range(count)], variables)
    an.save_state(opt, tmp_path / "state.npz")
    other = an.Adagrad(0.1, name="renamed")
    other.build(_named_alike(count))
    an.load_state(other, tmp_path / "state.npz")
    for a, b in zip(opt.variables, other.variables, strict=True):
        assert a.value.tobytes() == b.value.tobytes(), a.path


def test_a_store_value_that_does_not_convert_loads_nothing(snapshot):
    opt = an.Adagrad(0.1)
    params = [np.ones(3, np.float32)]
    opt.apply([np.ones(3, np.float32)], params)
    store = {str(i): v.numpy() for i, v in enumerate(opt.variables)}
    store[str(len(store) - 1)] = np.array(["a", "b", "c"])
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match="must convert to its variable"):
        opt.load_own_variables(store)
    snap.assert_unchanged()


def test_a_save_removes_what_a_killed_save_left_and_keeps_the_umask(tmp_path):
    opt = an.Adagrad(0.1)
    opt.build([np.ones(3, np.float32)])
    leftover = tmp_path / ".state.npz.tmp-killed"
    leftover.write_bytes(b"half a checkpoint")
    old = os.umask(0o027)
    try:
        an.save_state(opt, tmp_path / "state.npz")
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]
    assert (tmp_path / "state.npz").stat().st_mode & 0o777 == 0o640


def test_a_save_flushes_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    opt = an.Adagrad(0.1)
    opt.build([np.ones(3, np.float32)])
    an.save_state(opt, tmp_path / "state.npz")
    assert synced == [False, True]  # the file, then its folder


_SAVER = """
import sys, numpy as np, adagrad_native as an
path = sys.argv[1]
param = np.zeros(1 << 22, np.float32)
opt = an.Adagrad(0.1)
opt.build([param])
print("ready", flush=True)
while True:  # alternate two states until killed
    for value in (1.0, 2.0):
        opt.variables[-1].assign(np.full(1 << 22, value, np.float32))
        opt.iterations.assign(int(value))
        an.save_state(opt, path)
"""


@pytest.mark.parametrize("delay", [0.05, 0.13, 0.31], ids=["early", "middle", "late"])
def test_a_save_killed_by_sigkill_leaves_a_whole_checkpoint(tmp_path, delay):
    path = tmp_path / "state.npz"
    saver = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE)
    try:
        assert saver.stdout is not None and saver.stdout.readline().strip() == b"ready"
        while not path.exists():
            time.sleep(0.01)
        time.sleep(delay)
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait(timeout=60)
        saver.stdout.close()
    opt = an.Adagrad(0.1)
    opt.build([np.zeros(1 << 22, np.float32)])
    an.load_state(opt, path)  # the old or the new checkpoint, whole
    step = int(opt.iterations)
    assert step in (1, 2) and (opt.variables[-1].value == np.float32(step)).all()
    an.save_state(opt, path)  # removes whatever the killed save left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]


def test_saves_to_one_path_from_many_threads_each_land_whole(tmp_path):
    # A save removes what a killed save left, never another save's temporary file.
    import threading

    opt = an.Adagrad(0.1)
    opt.build([np.zeros(1 << 20, np.float32)])
    errors = []

    def save(value):
        for _ in range(15):
            try:
                with opt.state_lock():  # a state whose count says what it holds
                    opt.variables[-1].assign(np.full(1 << 20, value, np.float32))
                    opt.iterations.assign(int(value))
                an.save_state(opt, tmp_path / "state.npz")
            except Exception as err:  # noqa: BLE001 - any error at all is the finding
                errors.append(repr(err))

    threads = [threading.Thread(target=save, args=(float(v),)) for v in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]
    other = an.Adagrad(0.1)
    an.load_state(other, tmp_path / "state.npz", [np.zeros(1 << 20, np.float32)])
    step = int(other.iterations)
    assert step in (1, 2, 3) and (other.variables[-1].value == np.float32(step)).all()


_RIVAL = """
import sys, numpy as np, adagrad_native as an
opt = an.Adagrad(0.1)
opt.build([np.zeros(1 << 20, np.float32)])
opt.iterations.assign(int(sys.argv[2]))
for _ in range(20):
    an.save_state(opt, sys.argv[1])
"""


def test_saves_to_one_path_from_many_processes_each_land_whole(tmp_path):
    path = tmp_path / "state.npz"
    rivals = [
        subprocess.Popen([sys.executable, "-c", _RIVAL, str(path), str(n)], stderr=subprocess.PIPE)
        for n in (1, 2, 3)
    ]
    outcomes = [(r.wait(timeout=300), r.stderr.read()) for r in rivals]
    for rival in rivals:
        rival.stderr.close()
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    opt = an.Adagrad(0.1)
    an.load_state(opt, path, [np.zeros(1 << 20, np.float32)])
    assert int(opt.iterations) in (1, 2, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]
