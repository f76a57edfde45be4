"""Every loader is all or nothing (docs/state.md): it refuses state no training could make,
naming the key, and changes nothing then; and a Ctrl-C lands before or after it, never
between two variables. Files are checked member by member before their data is read."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
import warnings
import zipfile

import ml_dtypes
import numpy as np
import pytest

import adagrad_native as an
from adagrad_native.checkpoint import CONFIG_KEY
from tests.helpers import run_interrupted

F32 = np.float32


def _trained(opt=None):
    params = [np.linspace(-1, 1, 12, dtype=F32).reshape(3, 4), np.ones(5, F32)]
    opt = opt or an.Adagrad(0.1)
    for _ in range(2):
        opt.apply([np.full_like(p, 0.5) for p in params], params)
    return opt, params


_FILES: dict[int, tuple[dict, bytes]] = {}  # id -> (state, its file): the last few states


def _npz(state) -> io.BytesIO:
    """`state` as a save_state file, written on its first use (a Ctrl-C aimed at a load
    must not land in the writing of its file)."""
    if id(state) not in _FILES or _FILES[id(state)][0] is not state:
        arrays = {k: np.asarray(v) for k, v in state.items() if k != CONFIG_KEY}
        file = io.BytesIO()
        np.savez(file, **arrays, **{CONFIG_KEY: np.array(json.dumps(state.get(CONFIG_KEY)))})
        if len(_FILES) > 4:
            _FILES.clear()
        _FILES[id(state)] = (state, file.getvalue())
    return io.BytesIO(_FILES[id(state)][1])


# Each loads a name-keyed state (what state_dict returns) its own way: into a built
# optimizer, or into `fresh` (not built) with `params`.
LOADERS = {
    "load_state_dict": lambda opt, fresh, params, state: opt.load_state_dict(state),
    "load_state_dict-unbuilt": lambda opt, fresh, params, state: fresh.load_state_dict(
        state, [p.copy() for p in params]
    ),
    "load_state": lambda opt, fresh, params, state: an.load_state(opt, _npz(state)),
    "load_state-unbuilt": lambda opt, fresh, params, state: an.load_state(
        fresh, _npz(state), [p.copy() for p in params]
    ),
    "load_own_variables": lambda opt, fresh, params, state: opt.load_own_variables(
        {str(i): v for i, v in enumerate(_values(state))}
    ),
    "set_weights": lambda opt, fresh, params, state: opt.set_weights(_values(state)),
}


def _values(state):
    return [v for k, v in state.items() if k != CONFIG_KEY]


def _replaced(state, key, value):
    return {**state, key: value}


IMPOSSIBLE = {
    "accumulator-nan": ("param_0_accumulator", np.full((3, 4), np.nan, F32), "sums of squares"),
    "accumulator-negative": ("param_1_accumulator", -np.ones(5, F32), "sums of squares"),
    "accumulator-inf": ("param_1_accumulator", np.full(5, np.inf, F32), "sums of squares"),
    "accumulator-minus-inf": ("param_1_accumulator", np.full(5, -np.inf, F32), "sums of squares"),
    "accumulator-overflows-float32": ("param_1_accumulator", np.full(5, 1e300), "inf in float32"),
    "learning-rate-nan": ("learning_rate", np.array(np.nan, F32), "learning rate"),
    "learning-rate-inf": ("learning_rate", np.array(np.inf, F32), "learning rate"),
    "learning-rate-negative": ("learning_rate", np.array(-0.5, F32), "learning rate"),
    "iteration-negative": ("iteration", np.array(-5), "step count"),
    "iteration-too-large": ("iteration", np.array(2**62 + 1), "step count"),
    "iteration-largest-int64": ("iteration", np.array(2**63 - 1), "step count"),
    "iteration-beyond-int64": ("iteration", np.array(2**64 - 1, np.uint64), "beyond int64"),
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE))
@pytest.mark.parametrize("loader", list(LOADERS))
def test_impossible_state_is_refused_naming_the_key_and_changes_nothing(loader, case, snapshot):
    key, value, fragment = IMPOSSIBLE[case]
    opt, params = _trained()
    state = _replaced(opt.state_dict(), key, value)
    fresh = an.Adagrad(0.1)
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match=f"{key}.*{fragment}"):
        LOADERS[loader](opt, fresh, params, state)
    snap.assert_unchanged()
    assert not fresh.built, "a refused load left the optimizer it built"
    LOADERS[loader](opt, fresh, params, opt.state_dict())  # a good state still loads


LOSS_SCALE_IMPOSSIBLE = {
    "counter-at-growth-interval": ("step_counter", np.array(2000), "finite steps"),
    "counter-negative": ("step_counter", np.array(-1), "finite steps"),
    "scale-zero": ("dynamic_scale", np.array(0.0, F32), "loss scale"),
    "scale-inf": ("dynamic_scale", np.array(np.inf, F32), "loss scale"),
    "scale-nan": ("dynamic_scale", np.array(np.nan, F32), "loss scale"),
    "scale-denormal": ("dynamic_scale", np.array(1e-40, F32), "loss scale"),
}


@pytest.mark.parametrize("case", list(LOSS_SCALE_IMPOSSIBLE))
def test_a_loss_scale_no_training_makes_is_refused(case, snapshot):
    key, value, fragment = LOSS_SCALE_IMPOSSIBLE[case]
    opt, params = _trained(an.LossScaleOptimizer(an.Adagrad(0.1), initial_scale=2.0))
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match=f"{key}.*{fragment}"):
        opt.load_state_dict(_replaced(opt.state_dict(), key, value))
    snap.assert_unchanged()
    fresh = an.LossScaleOptimizer(an.Adagrad(0.1))
    with pytest.raises(ValueError, match=f"{key}.*{fragment}"):
        fresh.load_state_dict(_replaced(opt.state_dict(), key, value), params)
    assert not fresh.built and not fresh.inner_optimizer.built


def test_what_training_can_make_loads():
    # A float16 accumulator reaches inf in ordinary training; a float64 value rounds
    # to float32; the largest loadable count leaves room for 2**62 steps.
    params = [np.ones(4, np.float16)]
    opt = an.Adagrad(0.1)
    opt.apply([np.full(4, 300.0, np.float16)], params)
    assert np.isinf(opt.variables[-1].value).all()
    other = an.Adagrad(0.1)
    other.load_state_dict(opt.state_dict(), [p.copy() for p in params])
    assert np.isinf(other.variables[-1].value).all()

    opt, params = _trained()
    state = opt.state_dict()
    state["param_1_accumulator"] = np.full(5, 0.1, np.float64)
    state["iteration"] = np.array(2**62)
    opt.load_state_dict(state)
    assert (opt.variables[-1].value == F32(0.1)).all()
    opt.apply([np.ones_like(p) for p in params], params)
    assert int(opt.iterations) == 2**62 + 1


def test_a_bfloat16_state_round_trips_through_a_file():
    params = [np.linspace(-1, 1, 12).astype(ml_dtypes.bfloat16).reshape(3, 4)]
    opt = an.Adagrad(0.1)
    opt.apply([np.full_like(params[0], 0.5)], params)
    file = io.BytesIO()
    an.save_state(opt, file)
    file.seek(0)
    other = an.Adagrad(0.1)
    an.load_state(other, file, [p.copy() for p in params])
    for a, b in zip(opt.variables, other.variables, strict=True):
        assert a.value.dtype == b.value.dtype and a.value.tobytes() == b.value.tobytes()


def test_the_counter_never_wraps_around():
    opt, params = _trained()
    grads = [np.ones_like(p) for p in params]
    opt.iterations.assign(2**63 - 2)  # a live buffer: written directly, not loaded
    opt.apply(grads, params)  # the native fast step: it counts up to the limit...
    assert int(opt.iterations) == 2**63 - 1
    before = [v.numpy() for v in opt.variables]
    with pytest.raises(ValueError, match="largest value"):  # ...and then declines
        opt.apply(grads, params)
    assert int(opt.iterations) == 2**63 - 1
    for a, b in zip(before, opt.variables):
        assert a.tobytes() == b.value.tobytes()


# ------------------------------------------------------------- Ctrl-C mid-load
def _big(n_variables=40, size=1 << 15):
    params = [np.zeros(size, F32) for _ in range(n_variables)]
    opt = an.Adagrad(0.1)
    opt.build(params)
    return opt, params


def _uniform_state(opt, count):
    """A state whose every array says `count`: the iteration, and each accumulator."""
    state = opt.state_dict()
    for key in state:
        if key.endswith("accumulator"):
            state[key] = np.full_like(state[key], count)
    state["iteration"] = np.array(count)
    return state


def _count_of(opt):
    """The one count the whole state holds (a mix of two raises)."""
    counts = {int(opt.variables[0].value)} | {float(v.value[0]) for v in opt.variables[2:]}
    counts |= {float(v.value[-1]) for v in opt.variables[2:]}
    assert len(counts) == 1, f"a mixed state: {sorted(counts)}"
    return counts.pop()


@pytest.mark.parametrize("loader", list(LOADERS))
def test_ctrl_c_during_a_load_leaves_the_old_state_or_the_new(loader):
    opt, params = _big()
    old, new = _uniform_state(opt, 1), _uniform_state(opt, 2)

    def load(fresh):
        LOADERS[loader](opt, fresh, params, new)

    load(an.Adagrad(0.1))  # its file is written now, outside the interrupted calls
    start = time.perf_counter()
    load(an.Adagrad(0.1))
    duration = time.perf_counter() - start
    seen = set()
    for delay in np.random.default_rng(5).uniform(0, 1.5 * duration, 25):
        opt.load_state_dict(old)
        fresh = an.Adagrad(0.1)
        run_interrupted(lambda fresh=fresh: load(fresh), float(delay))
        if "unbuilt" in loader:
            seen.add(_count_of(fresh) if fresh.built else "unbuilt")
        else:
            seen.add(_count_of(opt))
    assert seen <= {1, 2, "unbuilt"}


# ------------------------------------------------------------------ odd inputs
class _Pipe(io.RawIOBase):
    """A readable stream that cannot seek (a pipe, a socket)."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_a_stream_that_cannot_seek_loads():
    opt, params = _trained()
    file = io.BytesIO()
    an.save_state(opt, file)
    other = an.Adagrad(0.5)
    an.load_state(other, io.BufferedReader(_Pipe(file.getvalue())), [p.copy() for p in params])
    assert int(other.iterations) == 2


def _saved(opt) -> bytes:
    file = io.BytesIO()
    an.save_state(opt, file)
    return file.getvalue()


def _rewritten(data: bytes, change) -> io.BytesIO:
    """The checkpoint `data` with its members {name: bytes} changed by `change`."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = [(name, z.read(name)) for name in z.namelist()]
    members = change(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a member written twice, on purpose
        for name, content in members:
            z.writestr(name, content)
    out.seek(0)
    return out


def _npy(array) -> bytes:
    file = io.BytesIO()
    np.save(file, array, allow_pickle=True)
    return file.getvalue()


def _with(name, content):
    return lambda members: [(n, c) for n, c in members if n != name] + [(name, content)]


def _byte(data: bytes, signature: bytes, offset: int, value: int) -> io.BytesIO:
    raw = bytearray(data)
    raw[raw.find(signature) + offset] = value
    return io.BytesIO(bytes(raw))


def _config(array):
    return lambda data: _rewritten(data, _with("__config__.npy", _npy(array)))


ODD_FILES = {
    "config-not-json": (_config(np.array("{x")), "not JSON"),
    "config-nested-too-deep": (_config(np.array("[" * 10**5 + "]" * 10**5)), "RecursionError"),
    "config-a-list": (_config(np.array("[1]")), "of a list"),
    "config-not-a-string": (_config(np.ones(2)), "not one string"),
    "member-twice": (
        lambda d: _rewritten(d, lambda m: [*m, ("iteration.npy", _npy(np.array(7)))]),
        "more than once",
    ),
    "member-of-objects": (
        lambda d: _rewritten(d, _with("iteration.npy", _npy(np.array([None], object)))),
        "Python objects",
    ),
    "member-longer-than-its-header": (
        lambda d: _rewritten(d, _with("iteration.npy", _npy(np.array(7)) + b"\0" * 64)),
        "header declares",
    ),
    "member-shorter-than-its-header": (
        lambda d: _rewritten(d, _with("iteration.npy", _npy(np.array(7))[:-4])),
        "header declares",
    ),
    "zip-version-unsupported": (lambda d: _byte(d, b"PK\x01\x02", 6, 99), "zip file version"),
    "compression-unsupported": (lambda d: _byte(d, b"PK\x01\x02", 10, 99), "compression"),
    "not-a-zip": (lambda d: io.BytesIO(d[100:]), "not a checkpoint"),
    "an-npy-file": (lambda d: io.BytesIO(_npy(np.ones(3))), "single array"),
}


@pytest.mark.parametrize("unbuilt", [False, True], ids=["built", "unbuilt"])
@pytest.mark.parametrize("case", list(ODD_FILES))
def test_a_file_that_is_not_a_whole_checkpoint_is_refused_and_changes_nothing(
    case, unbuilt, snapshot
):
    make, fragment = ODD_FILES[case]
    opt, params = _trained()
    target = an.Adagrad(0.1) if unbuilt else opt
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match=fragment):
        an.load_state(target, make(_saved(opt)), [p.copy() for p in params] if unbuilt else None)
    snap.assert_unchanged()
    assert target.built != unbuilt


def test_a_member_larger_than_its_variable_is_never_decompressed():
    opt, params = _trained()
    # 1 GiB of zeros deflates to about 1 MiB: its header says (2**28,), not (5,).
    huge = _npy(np.zeros(2**28, F32))
    file = _rewritten(_saved(opt), _with("param_1_accumulator.npy", huge))
    del huge
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"param_1_accumulator.*stored shape \(268435456,\)"):
            an.load_state(opt, file)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB were allocated for a refused member"


BAD_ARGUMENTS = {
    "state-a-list": (lambda o, p: o.load_state_dict([1, 2]), TypeError, "must be a mapping"),
    "state-none": (lambda o, p: o.load_state_dict(None), TypeError, "must be a mapping"),
    "store-a-list": (lambda o, p: o.load_own_variables([1]), TypeError, "`store` must be"),
    "weights-none": (lambda o, p: o.set_weights(None), TypeError, "`weights` must be a list"),
    "weights-a-string": (
        lambda o, p: o.set_weights([np.array(1), "x", np.ones((3, 4)), np.ones(5)]),
        ValueError,
        r"weights\[1\].*learning_rate",
    ),
    "load-from-none": (lambda o, p: an.load_state(o, None), TypeError, "path .* or a binary file"),
    "load-from-text": (lambda o, p: an.load_state(o, io.StringIO("x")), TypeError, "binary mode"),
    "load-from-a-folder": (lambda o, p: an.load_state(o, p), ValueError, "is a directory"),
    "save-to-none": (lambda o, p: an.save_state(o, None), TypeError, "path .* or a binary file"),
    "save-to-text": (lambda o, p: an.save_state(o, io.StringIO()), TypeError, "binary mode"),
    "save-to-a-read-handle": (
        lambda o, p: an.save_state(o, io.BufferedReader(io.BytesIO())),
        ValueError,
        "not open for writing",
    ),
    "save-to-a-folder": (lambda o, p: an.save_state(o, p), ValueError, "is a directory"),
    "save-to-a-missing-folder": (
        lambda o, p: an.save_state(o, p / "missing" / "state.npz"),
        FileNotFoundError,
        "does not exist",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_a_bad_argument_to_a_loader_or_saver_is_named(case, tmp_path, snapshot):
    call, error, fragment = BAD_ARGUMENTS[case]
    opt, params = _trained()
    snap = snapshot(opt, params)
    with pytest.raises(error, match=fragment):
        call(opt, tmp_path)
    snap.assert_unchanged()
    assert list(tmp_path.iterdir()) == []
