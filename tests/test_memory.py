"""Memory: a dropped optimizer frees its buffers at once, without the cyclic garbage
collector (no reference cycle holds them), and a load into an unbuilt optimizer builds it
once (as much memory as a load into a built one)."""

from __future__ import annotations

import copy
import gc
import io
import pickle
import tracemalloc
import weakref

import numpy as np
import pytest

import adagrad_native as an

F32 = np.float32


@pytest.fixture
def no_cyclic_gc():
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if enabled:
        gc.enable()


def _steps(opt, params, n=3):
    for _ in range(n):
        opt.apply([np.full_like(p, 0.5) for p in params], params)


def _loaded_unbuilt(opt, params):
    source = copy.deepcopy(opt)  # not built: the same optimizer, trained elsewhere
    _steps(source, [p.copy() for p in params])
    opt.load_state_dict(source.state_dict(), params)


def _mapping_steps(opt, params):
    for _ in range(3):
        opt.apply({"w": np.full_like(params[0], 0.5)}, {"w": params[0]})


def _saved(opt, params):
    _steps(opt, params)
    opt.state_dict()
    an.save_state(opt, io.BytesIO())


def _refused(opt, params):
    _steps(opt, params)
    try:
        opt.apply([np.ones(3, F32)], params)
    except ValueError:
        pass


USES = {
    "fast-steps": _steps,
    "general-steps": lambda o, p: _steps(o, [an.Variable(a, constraint=np.abs) for a in p]),
    "mapping-steps": lambda o, p: (
        _steps(o, {"w": p[0]}.values()) or o.apply({"w": p[0]}, {"w": p[0]})
    ),
    "state-dict-and-save": lambda o, p: (
        _steps(o, p),
        o.state_dict(),
        an.save_state(o, io.BytesIO()),
    ),
    "load-into-unbuilt": _loaded_unbuilt,
    "stateless-apply": lambda o, p: (
        _steps(o, p),
        o.stateless_apply([v.numpy() for v in o.variables], [np.ones_like(p[0])], [p[0].copy()]),
    ),
    "copies": lambda o, p: (_steps(o, p), copy.deepcopy(o), pickle.loads(pickle.dumps(o))),
    "a-refused-step": _refused,
    "a-settings-change": lambda o, p: (_steps(o, p), setattr(o, "clipnorm", 1.0), _steps(o, p)),
}
MAKERS = {
    "adagrad": lambda: an.Adagrad(0.1),
    "schedule-ema-accumulation": lambda: an.Adagrad(
        an.schedules.ExponentialDecay(0.1, 2, 0.5), use_ema=True, gradient_accumulation_steps=2
    ),
    "rowwise": lambda: an.RowWiseAdagrad(0.1),
    "loss-scale": lambda: an.LossScaleOptimizer(an.Adagrad(0.1)),
}


@pytest.mark.parametrize("maker", list(MAKERS))
@pytest.mark.parametrize("use", list(USES))
def test_a_dropped_optimizer_is_freed_without_the_cyclic_collector(use, maker, no_cyclic_gc):
    params = [np.ones((64, 8), F32)]
    opt = MAKERS[maker]()
    USES[use](opt, params)
    buffers = [
        weakref.ref(v.value.base if v.value.base is not None else v.value) for v in opt.variables
    ]
    freed = weakref.ref(opt)
    del opt
    assert freed() is None, "a reference cycle keeps the optimizer"
    assert all(b() is None for b in buffers), "a reference cycle keeps its buffers"


def test_twelve_dropped_optimizers_never_hold_more_than_one_at_once(no_cyclic_gc):
    size = 4 << 20  # 16 MiB parameters, 16 MiB accumulators
    tracemalloc.start()
    try:
        for _ in range(12):
            params = [np.zeros(size, F32)]
            opt = an.Adagrad(0.1)
            _steps(opt, params, 2)
            del opt, params
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one = 2 * size * 4 + size * 4  # parameters, accumulators, one gradient
    assert peak < 2 * one, f"peak {peak / 2**20:.0f} MiB for optimizers of {one / 2**20:.0f} MiB"


@pytest.mark.parametrize("how", ["load_state_dict", "load_state"])
def test_a_load_into_an_unbuilt_optimizer_builds_once_and_takes_the_memory_of_a_built_one(
    how, monkeypatch
):
    size = 4 << 20
    source = an.Adagrad(0.1)
    _steps(source, [np.zeros(size, F32)], 1)
    file = io.BytesIO()
    an.save_state(source, file)
    state = source.state_dict()
    del source

    def load(opt, params):
        if how == "load_state":
            file.seek(0)
            an.load_state(opt, file, params)
        else:
            opt.load_state_dict(state, params)

    builds = []
    real_build_slots = an.Adagrad.build_slots
    monkeypatch.setattr(
        an.Adagrad, "build_slots", lambda self, v: builds.append(1) or real_build_slots(self, v)
    )

    def peak_of(built_first):
        params = [np.zeros(size, F32)]
        tracemalloc.start()
        try:
            opt = an.Adagrad(0.1)
            if built_first:
                opt.build(params)
            load(opt, params)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    into_built = peak_of(True)
    builds.clear()
    into_unbuilt = peak_of(False)
    assert builds == [1]
    assert into_unbuilt < 1.1 * into_built, (into_unbuilt / 2**20, into_built / 2**20)
