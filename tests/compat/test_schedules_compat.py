"""Compatibility of `adagrad_native.schedules` with the real Keras 3 (jax backend, CPU).

What is compared. Keras' schedule code is a sequence of float32 ops; this package runs
the same ops in the same order (IEEE float32 arithmetic, correctly rounded cos/log/pow).
That is what Keras computes when each op runs on its own: every op of an eager call on
the jax backend, except inside `ops.cond`, and every op on the TensorFlow and torch
backends. Two jax/XLA artifacts are therefore *not* reproduced:

* inside `jax.jit`, XLA turns `x / constant` into `x * (1 / constant)`, which moves
  staircase/cycle boundaries by a step and even gives NaN for PolynomialDecay(power=0.5)
  once the step passes `decay_steps`;
* `ops.cond` compiles its branches (CosineDecay with warmup, CosineDecayRestarts) even in
  eager mode, and XLA fuses `1 - a * b` into an FMA and `a / t**i` into `a * t**-i` there.
  This changes the last bit of some intermediates: up to one float32 ulp of the peak
  learning rate, and, rarely, which period a step exactly on a restart boundary is in.

How. The dense sweeps (steps 0..1000, int and float) run Keras with `ops.cond` replaced by
a Python `if` over the same branch functions: the same ops, one at a time, and ~50x faster
than the real `ops.cond`, which traces and compiles its branches on every eager call.
They use rtol = 1e-6 with no absolute term. `test_real_keras_cond_*` then checks the
unpatched Keras at every restart / warmup boundary and a sample of steps.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from adagrad_native import schedules  # noqa: E402

KS = keras.optimizers.schedules
RTOL = 1e-6

INT_STEPS = list(range(0, 1001))
# Float steps over the same range: integral values and fractions (0.25, 0.5, 0.75).
FLOAT_STEPS = [k * 1.25 for k in range(0, 801)]

CASES = [
    (
        "exp",
        "ExponentialDecay",
        {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.96},
    ),
    (
        "exp-staircase",
        "ExponentialDecay",
        {"initial_learning_rate": 0.1, "decay_steps": 7, "decay_rate": 0.5, "staircase": True},
    ),
    (
        "exp-fractional-decay_steps",
        "ExponentialDecay",
        {"initial_learning_rate": 0.3, "decay_steps": 3.3, "decay_rate": 0.5},
    ),
    (
        "exp-staircase-fractional",
        "ExponentialDecay",
        {"initial_learning_rate": 0.2, "decay_steps": 2.5, "decay_rate": 0.8, "staircase": True},
    ),
    (
        "piecewise-int",
        "PiecewiseConstantDecay",
        {"boundaries": [100, 250, 600], "values": [0.1, 0.05, 0.01, 0.001]},
    ),
    (
        "piecewise-fractional",
        "PiecewiseConstantDecay",
        {"boundaries": [-0.5, 99.5, 250.25, 600], "values": [1.0, 0.1, 0.05, 0.01, 0.001]},
    ),
    (
        "piecewise-int-values",
        "PiecewiseConstantDecay",
        {"boundaries": (10, 20), "values": (3, 2, 1), "name": "steps"},
    ),
    ("poly-linear", "PolynomialDecay", {"initial_learning_rate": 0.05, "decay_steps": 1000}),
    (
        "poly-sqrt",
        "PolynomialDecay",
        {
            "initial_learning_rate": 0.1,
            "decay_steps": 300,
            "end_learning_rate": 0.001,
            "power": 0.5,
        },
    ),
    (
        "poly-cycle",
        "PolynomialDecay",
        {
            "initial_learning_rate": 0.1,
            "decay_steps": 30,
            "end_learning_rate": 0.001,
            "power": 2.0,
            "cycle": True,
        },
    ),
    (
        "poly-cycle-fractional",
        "PolynomialDecay",
        {"initial_learning_rate": 0.1, "decay_steps": 7.5, "cycle": True},
    ),
    (
        "inverse",
        "InverseTimeDecay",
        {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.96},
    ),
    (
        "inverse-staircase",
        "InverseTimeDecay",
        {"initial_learning_rate": 0.1, "decay_steps": 7, "decay_rate": 0.5, "staircase": True},
    ),
    ("cosine", "CosineDecay", {"initial_learning_rate": 0.1, "decay_steps": 700}),
    (
        "cosine-alpha",
        "CosineDecay",
        {"initial_learning_rate": 0.1, "decay_steps": 300, "alpha": 0.1},
    ),
    (
        "cosine-warmup",
        "CosineDecay",
        {
            "initial_learning_rate": 0.0,
            "decay_steps": 500,
            "alpha": 0.05,
            "warmup_target": 0.2,
            "warmup_steps": 200,
        },
    ),
    (
        "cosine-warmup-0-steps",
        "CosineDecay",
        {
            "initial_learning_rate": 0.01,
            "decay_steps": 300,
            "warmup_target": 0.1,
            "warmup_steps": 0,
        },
    ),
    (
        "cosine-long-warmup",
        "CosineDecay",
        {
            "initial_learning_rate": 0.001,
            "decay_steps": 100,
            "warmup_target": 0.01,
            "warmup_steps": 950,
        },
    ),
    (
        "restarts-t2",
        "CosineDecayRestarts",
        {
            "initial_learning_rate": 0.1,
            "first_decay_steps": 10,
            "t_mul": 2.0,
            "m_mul": 0.9,
            "alpha": 0.1,
        },
    ),
    (
        "restarts-t1",
        "CosineDecayRestarts",
        {"initial_learning_rate": 0.1, "first_decay_steps": 10, "t_mul": 1.0, "m_mul": 0.5},
    ),
    (
        "restarts-t1.5",
        "CosineDecayRestarts",
        {
            "initial_learning_rate": 0.1,
            "first_decay_steps": 10,
            "t_mul": 1.5,
            "m_mul": 0.8,
            "alpha": 0.1,
        },
    ),
    (
        "restarts-t3",
        "CosineDecayRestarts",
        {"initial_learning_rate": 0.1, "first_decay_steps": 5, "t_mul": 3.0},
    ),
    (
        "restarts-t1.1",
        "CosineDecayRestarts",
        {"initial_learning_rate": 0.1, "first_decay_steps": 3, "t_mul": 1.1, "m_mul": 0.95},
    ),
    (
        "restarts-t1.25",
        "CosineDecayRestarts",
        {"initial_learning_rate": 0.1, "first_decay_steps": 7, "t_mul": 1.25},
    ),
    (
        # Shrinking periods: Keras (and we) give NaN from step 1000 = 100 / (1 - 0.9) on.
        "restarts-t0.9",
        "CosineDecayRestarts",
        {"initial_learning_rate": 0.1, "first_decay_steps": 100, "t_mul": 0.9},
    ),
]
CASE_PARAMS = [pytest.param(name, kwargs, id=case_id) for case_id, name, kwargs in CASES]
COND_CASES = [
    pytest.param(name, kwargs, id=case_id)
    for case_id, name, kwargs in CASES
    if name == "CosineDecayRestarts" or kwargs.get("warmup_target") is not None
]


def as_json(config):
    """The config as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(config))


def make_pair(name, kwargs):
    return getattr(schedules, name)(**kwargs), getattr(KS, name)(**kwargs)


def python_cond(pred, true_fn, false_fn):
    return true_fn() if bool(pred) else false_fn()


@pytest.fixture
def fast_keras_cond(monkeypatch):
    """Keras' `ops.cond` as a Python `if` (see the module docstring)."""
    from keras.src import ops as keras_ops

    monkeypatch.setattr(keras_ops, "cond", python_cond)


def assert_agree(ours, theirs, steps, label):
    """Same NaNs, and |ours - keras| <= RTOL * |keras| at every step; returns the max."""
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.where(ours == theirs, 0.0, np.abs(ours - theirs))  # equal infinities: 0
        rel = np.where(diff > 0, diff / np.abs(theirs), 0.0)
    bad = (np.isnan(ours) != np.isnan(theirs)) | (diff > RTOL * np.abs(theirs))
    if bad.any():
        rows = [
            f"step={steps[i]!r}: ours={ours[i]!r} keras={theirs[i]!r}" for i in np.flatnonzero(bad)
        ]
        pytest.fail(f"{label}: {len(rows)} steps differ, first ones:\n" + "\n".join(rows[:8]))
    return float(np.nanmax(rel, initial=0.0))


@pytest.mark.usefixtures("fast_keras_cond")
@pytest.mark.parametrize("steps", [INT_STEPS, FLOAT_STEPS], ids=["int-steps", "float-steps"])
@pytest.mark.parametrize(("name", "kwargs"), CASE_PARAMS)
def test_values_match_keras(name, kwargs, steps):
    ours, theirs = make_pair(name, kwargs)
    expected = [float(theirs(s)) for s in steps]
    worst = assert_agree([ours(s) for s in steps], expected, steps, name)
    print(f"{name} {kwargs}: max relative difference {worst:.3g}")


def phase_ends(name, kwargs):
    """The steps where the warmup or the first ten restart periods end (floats)."""
    if name == "CosineDecay":
        return [kwargs["warmup_steps"], kwargs["warmup_steps"] + kwargs["decay_steps"]]
    ends, period, total = [], kwargs["first_decay_steps"], 0.0
    for _ in range(10):
        total += period
        period *= kwargs.get("t_mul", 2.0)
        ends.append(total)
    return ends


def boundary_steps(name, kwargs):
    """Integer steps next to a phase end, plus a sample of the range."""
    points = set(range(0, 1001, 125))
    for end in phase_ends(name, kwargs):
        points.update(range(math.floor(end) - 1, math.ceil(end) + 2))
    return sorted(p for p in points if 0 <= p <= 1000)


@pytest.mark.parametrize(("name", "kwargs"), COND_CASES)
def test_real_keras_cond_at_boundaries(name, kwargs, monkeypatch):
    from keras.src import ops as keras_ops

    ours, theirs = make_pair(name, kwargs)
    steps = boundary_steps(name, kwargs)
    real = np.array([float(theirs(s)) for s in steps])  # with XLA-compiled branches
    monkeypatch.setattr(keras_ops, "cond", python_cond)
    op_by_op = np.array([float(theirs(s)) for s in steps])
    mine = np.array([ours(s) for s in steps])
    # Everywhere: exactly Keras' op-by-op arithmetic.
    assert_agree(mine, op_by_op, steps, f"{name} vs op-by-op Keras")
    # Against the compiled branches: within 4 float32 ulps of the peak learning rate,
    # except where an FMA moves a step lying exactly on a restart boundary to the other
    # period (Keras' own op-by-op arithmetic disagrees with the compiled branch there).
    atol = 4 * np.finfo(np.float32).eps * np.nanmax(np.abs(real))
    close = np.isclose(mine, real, rtol=RTOL, atol=atol, equal_nan=True)
    keras_flips = ~np.isclose(
        op_by_op, real, rtol=1e-3, atol=1e-3 * np.nanmax(np.abs(real)), equal_nan=True
    )
    bad = [steps[i] for i in np.flatnonzero(~close & ~keras_flips)]
    assert not bad, f"{name}: steps {bad} differ from Keras' compiled branch beyond 4 ulps"
    on_boundary = {round(end) for end in phase_ends(name, kwargs) if abs(end - round(end)) < 1e-6}
    flips = [steps[i] for i in np.flatnonzero(keras_flips)]
    assert set(flips) <= on_boundary, f"{name}: Keras modes disagree off a boundary: {flips}"
    kept = close & ~np.isnan(real) & (real != 0)
    worst = np.max(np.abs(mine - real)[kept] / np.abs(real[kept]), initial=0.0)
    print(f"{name} {kwargs}: compiled ops.cond: max relative difference {worst:.3g}, flips {flips}")


@pytest.mark.usefixtures("fast_keras_cond")
@pytest.mark.parametrize(("name", "kwargs"), CASE_PARAMS)
def test_unusual_steps_match_keras(name, kwargs):
    # Negative, NaN and numpy-typed steps; 1e6 is far past every decay.
    steps = [-7, -2.5, -0.25, float("nan"), 10**6, np.int64(33), np.float32(33.5), np.array(12)]
    ours, theirs = make_pair(name, kwargs)
    expected = [float(theirs(s)) for s in steps]
    assert_agree([ours(s) for s in steps], expected, steps, name)


# ------------------------------------------------------------------------ configs


@pytest.mark.parametrize(("name", "kwargs"), CASE_PARAMS)
def test_get_config_matches_keras(name, kwargs):
    ours, theirs = make_pair(name, kwargs)
    assert ours.get_config() == theirs.get_config()
    assert list(ours.get_config()) == list(theirs.get_config())


REQUIRED = {
    "ExponentialDecay": (0.1, 100, 0.9),
    "PiecewiseConstantDecay": ([10, 20], [0.3, 0.2, 0.1]),
    "PolynomialDecay": (0.1, 100),
    "InverseTimeDecay": (0.1, 100, 0.5),
    "CosineDecay": (0.1, 100),
    "CosineDecayRestarts": (0.1, 100),
}


@pytest.mark.parametrize("name", list(REQUIRED))
def test_defaults_match_keras(name):
    ours = getattr(schedules, name)(*REQUIRED[name]).get_config()
    theirs = getattr(KS, name)(*REQUIRED[name]).get_config()
    assert ours == theirs
    assert [type(v) for v in ours.values()] == [type(v) for v in theirs.values()]


@pytest.mark.parametrize(("name", "kwargs"), CASE_PARAMS)
def test_serialize_matches_keras(name, kwargs):
    ours, theirs = make_pair(name, kwargs)
    assert schedules.serialize(ours) == KS.serialize(theirs)


@pytest.mark.parametrize(("name", "kwargs"), CASE_PARAMS)
def test_keras_config_loads_here(name, kwargs):
    theirs = getattr(KS, name)(**kwargs)
    serialized = json.loads(json.dumps(KS.serialize(theirs)))
    for ours in (
        schedules.deserialize(serialized),
        getattr(schedules, name).from_config(theirs.get_config()),
    ):
        assert type(ours) is getattr(schedules, name)
        assert as_json(ours.get_config()) == as_json(theirs.get_config())
        steps = [0, 1, 7, 99, 250, 999.5]
        assert_agree([ours(s) for s in steps], [float(theirs(s)) for s in steps], steps, name)


@pytest.mark.parametrize(("name", "kwargs"), CASE_PARAMS)
def test_our_config_loads_in_keras(name, kwargs):
    ours = getattr(schedules, name)(**kwargs)
    serialized = json.loads(json.dumps(schedules.serialize(ours)))
    for theirs in (KS.deserialize(serialized), getattr(KS, name).from_config(ours.get_config())):
        assert type(theirs) is getattr(KS, name)
        assert as_json(theirs.get_config()) == as_json(ours.get_config())


def test_numpy_scalar_arguments_serialize_like_keras():
    kwargs = {
        "initial_learning_rate": np.float32(0.1),
        "decay_steps": np.int64(10),
        "decay_rate": np.float64(0.5),
    }
    ours, theirs = make_pair("ExponentialDecay", kwargs)
    assert schedules.serialize(ours) == KS.serialize(theirs)


def test_optimizer_config_embeds_our_serialized_form():
    ours, theirs = make_pair("CosineDecay", {"initial_learning_rate": 0.1, "decay_steps": 10})
    embedded = keras.optimizers.Adagrad(learning_rate=theirs).get_config()["learning_rate"]
    assert embedded == schedules.serialize(ours)


@keras.saving.register_keras_serializable(package="CompatPkg", name="Halving")
class KerasHalving(KS.LearningRateSchedule):
    def __init__(self, start):
        self.start = start

    def __call__(self, step):
        return self.start * 0.5 ** (int(step) // 10)

    def get_config(self):
        return {"start": self.start}


@schedules.register_schedule(package="CompatPkg", name="Halving")
class OurHalving(schedules.LearningRateSchedule):
    def __init__(self, start):
        self.start = start

    def __call__(self, step):
        return self.start * 0.5 ** (int(step) // 10)

    def get_config(self):
        return {"start": self.start}


def test_registered_user_schedule_serializes_like_keras():
    ours = schedules.serialize(OurHalving(0.4))
    theirs = KS.serialize(KerasHalving(0.4))
    assert ours["registered_name"] == theirs["registered_name"] == "CompatPkg>Halving"
    assert ours["config"] == theirs["config"]
    assert ours["module"] == theirs["module"] == __name__
    # Each side reads the other's dict into its own registered class.
    assert type(schedules.deserialize(json.loads(json.dumps(theirs)))) is OurHalving
    assert type(KS.deserialize(json.loads(json.dumps(ours)))) is KerasHalving
