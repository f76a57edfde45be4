"""Tests of `adagrad_native.schedules` without Keras.

Expected numbers come from Keras' own schedule tests (keras/src/optimizers/schedules/
learning_rate_schedule_test.py, rewritten here) or from the closed-form definitions of
the schedules evaluated in float64; none is derived from this package. The tolerance is
Keras' own (rtol = atol = 1e-6): the schedules compute in float32, whose rounding error
(~6e-8 relative per operation) stays well inside it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import adagrad_native as an
from adagrad_native import schedules
from adagrad_native.schedules import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    LearningRateSchedule,
    PiecewiseConstantDecay,
    PolynomialDecay,
)

KERAS_TOL = {"rel": 1e-6, "abs": 1e-6}


def approx(expected):
    return pytest.approx(expected, **KERAS_TOL)


# ------------------------------------------------------- closed-form references (float64)


def cosine_reference(step, decay_steps, alpha=0.0):
    """Keras-test reference: the multiplier of a cosine decay without warmup."""
    progress = min(step, decay_steps) / decay_steps
    return (1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * progress)) + alpha


def warmup_reference(step, warmup_steps, initial, target):
    """Keras-test reference: linear warmup from `initial` to `target`."""
    return initial + (target - initial) * step / warmup_steps


def restarts_reference(step, period, t_mul=2.0, m_mul=1.0, alpha=0.0):
    """Keras-test reference: SGDR multiplier, found by walking the periods."""
    peak = 1.0
    while step >= period:
        step -= period
        period *= t_mul
        peak *= m_mul
    cosine = peak * 0.5 * (1.0 + math.cos(math.pi * step / period))
    return (1.0 - alpha) * cosine + alpha


# ------------------------------------------------------------------ Keras' test values

KERAS_VALUES = [
    # ExponentialDecayTest
    ("exp-continuous", lambda: ExponentialDecay(0.05, 10, 0.96), 5, 0.05 * 0.96 ** (5 / 10)),
    ("exp-staircase-step1", lambda: ExponentialDecay(0.1, 3, 0.96, staircase=True), 1.0, 0.1),
    ("exp-staircase-step2", lambda: ExponentialDecay(0.1, 3, 0.96, staircase=True), 2, 0.1),
    (
        "exp-staircase-step100",
        lambda: ExponentialDecay(0.1, 3, 0.96, staircase=True),
        100,
        0.1 * 0.96 ** (100 // 3),
    ),
    # PiecewiseConstantDecayTest.test_piecewise_values (float step variable)
    *[
        (
            f"piecewise-float-step{step:g}",
            lambda: PiecewiseConstantDecay([100, 110, 120], [1.0, 0.1, 0.01, 0.001]),
            step,
            expected,
        )
        for step, expected in [
            (-999.0, 1.0),
            (100.0, 1.0),
            (105.0, 0.1),
            (110.0, 0.1),
            (120.0, 0.01),
            (999.0, 0.001),
        ]
    ],
    # PiecewiseConstantDecayTest.test_boundary_values (int64 step variable)
    *[
        (
            f"piecewise-int64-step{step}",
            lambda: PiecewiseConstantDecay([1, 2, 3], [0.4, 0.5, 0.6, 0.7]),
            np.int64(step),
            expected,
        )
        for step, expected in [(0, 0.4), (1, 0.4), (2, 0.5), (3, 0.6), (4, 0.7)]
    ],
    # LinearDecayTest
    ("linear-halfway", lambda: PolynomialDecay(0.05, 10, 0.0), 5, 0.05 * 0.5),
    ("linear-end", lambda: PolynomialDecay(0.05, 10, 0.001), 10, 0.001),
    ("linear-halfway-with-end", lambda: PolynomialDecay(0.05, 10, 0.001), 5, (0.05 + 0.001) / 2),
    ("linear-beyond-end", lambda: PolynomialDecay(0.05, 10, 0.001), 15, 0.001),
    (
        "linear-beyond-end-cycle",
        lambda: PolynomialDecay(0.05, 10, 0.001, cycle=True),
        15,
        (0.05 - 0.001) * 0.25 + 0.001,
    ),
    # SqrtDecayTest
    ("sqrt-halfway", lambda: PolynomialDecay(0.05, 10, 0.0, power=0.5), 5, 0.05 * 0.5**0.5),
    ("sqrt-end", lambda: PolynomialDecay(0.05, 10, 0.001, power=0.5), 10, 0.001),
    (
        "sqrt-halfway-with-end",
        lambda: PolynomialDecay(0.05, 10, 0.001, power=0.5),
        5,
        (0.05 - 0.001) * 0.5**0.5 + 0.001,
    ),
    ("sqrt-beyond-end", lambda: PolynomialDecay(0.05, 10, 0.001, power=0.5), 15, 0.001),
    (
        "sqrt-beyond-end-cycle",
        lambda: PolynomialDecay(0.05, 10, 0.001, power=0.5, cycle=True),
        15,
        (0.05 - 0.001) * 0.25**0.5 + 0.001,
    ),
    ("sqrt-begin-cycle", lambda: PolynomialDecay(0.001, 10, cycle=True), 0, 0.001),
    # InverseTimeDecayTest (float step variable 0.0, 1.0, ..., 10.0)
    *[
        (
            f"inverse-time-step{i}",
            lambda: InverseTimeDecay(0.1, 10, 0.96),
            float(i),
            0.1 / (1 + i / 10 * 0.96),
        )
        for i in range(11)
    ],
    *[
        (
            f"inverse-time-staircase-step{i}",
            lambda: InverseTimeDecay(0.1, 10, 0.96, staircase=True),
            float(i),
            0.1 / (1 + 0.96 * (i // 10)),
        )
        for i in range(11)
    ],
    # CosineDecayTest
    *[
        (f"cosine-step{s}", lambda: CosineDecay(1.0, 1000), s, cosine_reference(s, 1000))
        for s in range(0, 1500, 250)
    ],
    *[
        (
            f"cosine-alpha-step{s}",
            lambda: CosineDecay(1.0, 1000, 0.1),
            s,
            cosine_reference(s, 1000, 0.1),
        )
        for s in range(0, 1500, 250)
    ],
    *[
        (
            f"cosine-float64-lr-step{s}",
            lambda: CosineDecay(np.float64(1.0), 1000),
            s,
            cosine_reference(s, 1000),
        )
        for s in range(0, 1500, 250)
    ],
    *[
        (
            f"cosine-warmup-step{s}",
            lambda: CosineDecay(0.0, 10, warmup_target=10.0, warmup_steps=1500),
            s,
            warmup_reference(s, 1500, 0.0, 10.0),
        )
        for s in range(0, 1500, 250)
    ],
    *[
        (
            f"cosine-warmup-then-decay-step{s}",
            lambda: CosineDecay(0.0, 1000, warmup_target=10.0, warmup_steps=2000),
            s,
            warmup_reference(s, 2000, 0.0, 10.0)
            if s <= 2000
            else 10.0 * cosine_reference(s - 2000, 1000),
        )
        for s in range(0, 3000, 250)
    ],
    # CosineDecayRestartsTest
    *[
        (
            f"restarts-{label}-step{s}",
            factory,
            s,
            restarts_reference(s, 1000, **kwargs),
        )
        for label, factory, kwargs in [
            ("default", lambda: CosineDecayRestarts(1.0, 1000), {}),
            ("float64-lr", lambda: CosineDecayRestarts(np.float64(1.0), 1000), {}),
            ("alpha", lambda: CosineDecayRestarts(1.0, 1000, alpha=0.1), {"alpha": 0.1}),
            ("m_mul", lambda: CosineDecayRestarts(1.0, 1000, m_mul=0.9), {"m_mul": 0.9}),
            ("t_mul1", lambda: CosineDecayRestarts(1.0, 1000, t_mul=1.0), {"t_mul": 1.0}),
        ]
        for s in range(0, 1500, 250)
    ],
]


@pytest.mark.parametrize(
    ("factory", "step", "expected"),
    [pytest.param(f, s, e, id=i) for i, f, s, e in KERAS_VALUES],
)
def test_keras_test_values(factory, step, expected):
    value = factory()(step)
    assert type(value) is float
    assert value == approx(expected)


# --------------------------------------------------------- semantics beyond Keras' tests


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        # A step on a multiple of decay_steps ends the current cycle (ceil(2) == 2).
        pytest.param(PolynomialDecay(0.1, 10, 0.01, cycle=True), 20, 0.01, id="poly-cycle-at-20"),
        pytest.param(
            PolynomialDecay(0.1, 10, 0.01, cycle=True),
            21,
            (0.1 - 0.01) * (1 - 21 / 30) + 0.01,
            id="poly-cycle-at-21",
        ),
        pytest.param(PolynomialDecay(0.1, 10, 0.01, cycle=True), 0, 0.1, id="poly-cycle-at-0"),
        pytest.param(
            ExponentialDecay(0.1, 2.5, 0.5, staircase=True), 7, 0.1 * 0.5**2, id="exp-stair-frac"
        ),
        pytest.param(
            InverseTimeDecay(0.1, 4, 1.0, staircase=True), 7.9, 0.1 / 2, id="inverse-stair-float"
        ),
        # The warmup ends exactly at warmup_steps, where the decay starts at the target.
        pytest.param(
            CosineDecay(0.0, 100, warmup_target=1.0, warmup_steps=10), 10, 1.0, id="warmup-end"
        ),
        pytest.param(
            CosineDecay(0.0, 100, warmup_target=1.0, warmup_steps=10),
            5.5,
            0.55,
            id="warmup-float-step",
        ),
        pytest.param(
            CosineDecay(0.0, 100, alpha=0.2, warmup_target=1.0, warmup_steps=10),
            500,
            0.2,
            id="warmup-then-floor",
        ),
        pytest.param(
            CosineDecay(0.5, 100, warmup_target=1.0, warmup_steps=0),
            0,
            1.0,
            id="zero-warmup-starts-at-target",
        ),
        # Restarts start at m_mul**i times the peak: t_mul=2 restarts at 10, 30, 70.
        pytest.param(CosineDecayRestarts(0.1, 10, m_mul=0.5), 10, 0.05, id="restart-at-10"),
        pytest.param(CosineDecayRestarts(0.1, 10, m_mul=0.5), 30, 0.025, id="restart-at-30"),
        pytest.param(CosineDecayRestarts(0.1, 10, m_mul=0.5), 70, 0.0125, id="restart-at-70"),
        pytest.param(
            CosineDecayRestarts(0.1, 10, m_mul=0.5),
            45,
            0.1 * restarts_reference(45, 10, m_mul=0.5),
            id="restart-mid-period-3",
        ),
        pytest.param(
            CosineDecayRestarts(0.1, 5, t_mul=3.0, alpha=0.1),
            65,
            0.1,
            id="restart-t_mul3-at-65",
        ),
        pytest.param(
            CosineDecayRestarts(0.1, 10, t_mul=1.0, m_mul=0.5), 20, 0.025, id="restart-t_mul1-at-20"
        ),
    ],
)
def test_schedule_values(schedule, step, expected):
    assert schedule(step) == approx(expected)


def test_restart_boundary_follows_keras_float32_rounding():
    # Periods of 10, 11, 12.1 steps: step 21 starts the third period mathematically, but
    # in float32 log(1.21) / log(1.1) is just below 2, so Keras (checked with keras 3.15,
    # jax backend) is still at the very end of the second period: learning rate 0.
    schedule = CosineDecayRestarts(0.1, 10, t_mul=1.1)
    assert schedule(21) == pytest.approx(0.0, abs=1e-9)
    assert schedule(20) == approx(0.1 * restarts_reference(20, 10, t_mul=1.1))


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        # Keras casts the boundaries to the step's dtype: for an integer step -0.5 and 1.5
        # truncate to 0 and 1 (values checked against keras 3.15, jax backend).
        pytest.param(0, 1.0, id="int-step-0"),
        pytest.param(1, 2.0, id="int-step-1"),
        pytest.param(2, 3.0, id="int-step-2"),
        pytest.param(0.0, 2.0, id="float-step-0"),
        pytest.param(1.5, 2.0, id="float-step-1.5"),
        pytest.param(1.75, 3.0, id="float-step-1.75"),
        pytest.param(np.int32(0), 1.0, id="np-int32-step-0"),
        pytest.param(np.float32(0.0), 2.0, id="np-float32-step-0"),
        pytest.param(float("nan"), 0.0, id="nan-step"),
    ],
)
def test_piecewise_boundaries_take_the_step_dtype(step, expected):
    schedule = PiecewiseConstantDecay([-0.5, 1.5], [1.0, 2.0, 3.0])
    assert schedule(step) == expected


def test_integer_initial_learning_rate_computes_in_float():
    # Keras would compute in int32 here and return 0; we always compute in float32.
    assert ExponentialDecay(1, 10, 0.5)(5) == approx(0.5**0.5)
    assert PiecewiseConstantDecay([5], [3, 1])(7) == 1.0


STEP_FORMS = [
    pytest.param(7, id="int"),
    pytest.param(7.0, id="float"),
    pytest.param(np.int32(7), id="np.int32"),
    pytest.param(np.int64(7), id="np.int64"),
    pytest.param(np.uint8(7), id="np.uint8"),
    pytest.param(np.float16(7), id="np.float16"),
    pytest.param(np.float32(7), id="np.float32"),
    pytest.param(np.float64(7), id="np.float64"),
    pytest.param(np.array(7), id="0d-int-array"),
    pytest.param(np.array(7.0, dtype=np.float32), id="0d-float32-array"),
]

ALL_SCHEDULES = [
    pytest.param(ExponentialDecay(0.1, 3, 0.9), id="exponential"),
    pytest.param(ExponentialDecay(0.1, 3, 0.9, staircase=True), id="exponential-staircase"),
    pytest.param(PiecewiseConstantDecay([3, 7, 9], [0.4, 0.3, 0.2, 0.1]), id="piecewise"),
    pytest.param(PolynomialDecay(0.1, 10, power=2.0), id="polynomial"),
    pytest.param(PolynomialDecay(0.1, 4, cycle=True), id="polynomial-cycle"),
    pytest.param(InverseTimeDecay(0.1, 3, 0.5), id="inverse-time"),
    pytest.param(CosineDecay(0.1, 20, alpha=0.1), id="cosine"),
    pytest.param(CosineDecay(0.0, 20, warmup_target=0.1, warmup_steps=10), id="cosine-warmup"),
    pytest.param(CosineDecayRestarts(0.1, 3, t_mul=1.5, m_mul=0.9), id="restarts"),
]


@pytest.mark.parametrize("schedule", ALL_SCHEDULES)
@pytest.mark.parametrize("step", STEP_FORMS)
def test_step_forms_agree(schedule, step):
    value = schedule(step)
    assert type(value) is float
    assert value == schedule(7)


# ------------------------------------------------------------------ defaults and configs

DEFAULT_CONFIGS = [
    pytest.param(
        lambda: ExponentialDecay(0.1, 100, 0.9),
        {
            "initial_learning_rate": 0.1,
            "decay_steps": 100,
            "decay_rate": 0.9,
            "staircase": False,
            "name": "ExponentialDecay",
        },
        id="ExponentialDecay",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay([10, 20], [0.3, 0.2, 0.1]),
        {"boundaries": [10, 20], "values": [0.3, 0.2, 0.1], "name": "PiecewiseConstant"},
        id="PiecewiseConstantDecay",
    ),
    pytest.param(
        lambda: PolynomialDecay(0.1, 100),
        {
            "initial_learning_rate": 0.1,
            "decay_steps": 100,
            "end_learning_rate": 0.0001,
            "power": 1.0,
            "cycle": False,
            "name": "PolynomialDecay",
        },
        id="PolynomialDecay",
    ),
    pytest.param(
        lambda: InverseTimeDecay(0.1, 100, 0.5),
        {
            "initial_learning_rate": 0.1,
            "decay_steps": 100,
            "decay_rate": 0.5,
            "staircase": False,
            "name": "InverseTimeDecay",
        },
        id="InverseTimeDecay",
    ),
    pytest.param(
        lambda: CosineDecay(0.1, 100),
        {
            "initial_learning_rate": 0.1,
            "decay_steps": 100,
            "alpha": 0.0,
            "name": "CosineDecay",
            "warmup_target": None,
            "warmup_steps": 0,
        },
        id="CosineDecay",
    ),
    pytest.param(
        lambda: CosineDecayRestarts(0.1, 100),
        {
            "initial_learning_rate": 0.1,
            "first_decay_steps": 100,
            "t_mul": 2.0,
            "m_mul": 1.0,
            "alpha": 0.0,
            "name": "SGDRDecay",
        },
        id="CosineDecayRestarts",
    ),
]


@pytest.mark.parametrize(("factory", "expected"), DEFAULT_CONFIGS)
def test_defaults_and_config_keys(factory, expected):
    config = factory().get_config()
    assert config == expected
    assert list(config) == list(expected)  # Keras' key order
    for key, value in expected.items():
        assert type(config[key]) is type(value), key


# Keras' own test_config instances (run_class_serialization_test) plus the extras.
CONFIG_INSTANCES = [
    pytest.param(
        lambda: ExponentialDecay(
            initial_learning_rate=0.05,
            decay_steps=10,
            decay_rate=0.96,
            staircase=True,
            name="my_ed",
        ),
        id="ExponentialDecay",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay(boundaries=[10, 20], values=[1, 2, 3], name="my_pcd"),
        id="PiecewiseConstantDecay",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay(boundaries=(10, 20.5), values=(1.0, 2.0, 3.0)),
        id="PiecewiseConstantDecay-tuples",
    ),
    pytest.param(
        lambda: PolynomialDecay(
            initial_learning_rate=0.1,
            decay_steps=100,
            end_learning_rate=0.005,
            power=1.0,
            cycle=False,
            name="my_ld",
        ),
        id="PolynomialDecay",
    ),
    pytest.param(
        lambda: InverseTimeDecay(
            initial_learning_rate=0.05,
            decay_steps=10,
            decay_rate=0.96,
            staircase=True,
            name="my_itd",
        ),
        id="InverseTimeDecay",
    ),
    pytest.param(
        lambda: CosineDecay(
            initial_learning_rate=0.05,
            decay_steps=10,
            alpha=0.1,
            warmup_target=0.2,
            warmup_steps=2,
            name="my_cd",
        ),
        id="CosineDecay",
    ),
    pytest.param(
        lambda: CosineDecayRestarts(
            initial_learning_rate=0.05,
            first_decay_steps=10,
            alpha=0.1,
            t_mul=3.0,
            m_mul=4.0,
            name="my_cdr",
        ),
        id="CosineDecayRestarts",
    ),
    pytest.param(lambda: CosineDecay(0.1, 50, name=None), id="CosineDecay-name-None"),
]

PROBE_STEPS = [0, 1, 2, 5, 9, 10, 11, 19.5, 25, 100, 1000]


@pytest.mark.parametrize("factory", CONFIG_INSTANCES)
def test_from_config_round_trip(factory):
    schedule = factory()
    config = schedule.get_config()
    clone = type(schedule).from_config(config)
    assert type(clone) is type(schedule)
    assert clone.get_config() == config
    assert [clone(s) for s in PROBE_STEPS] == [schedule(s) for s in PROBE_STEPS]


@pytest.mark.parametrize("factory", CONFIG_INSTANCES)
def test_serialize_is_keras_form(factory):
    schedule = factory()
    assert schedules.serialize(schedule) == {
        "module": "keras.optimizers.schedules",
        "class_name": type(schedule).__name__,
        "config": schedule.get_config(),
        "registered_name": None,
    }


@pytest.mark.parametrize("factory", CONFIG_INSTANCES)
def test_json_round_trip(factory):
    schedule = factory()
    text = json.dumps(schedules.serialize(schedule))
    clone = schedules.deserialize(json.loads(text))
    assert type(clone) is type(schedule)
    assert json.dumps(schedules.serialize(clone)) == text
    assert [clone(s) for s in PROBE_STEPS] == [schedule(s) for s in PROBE_STEPS]


def test_serialize_turns_numpy_scalars_into_python_numbers():
    schedule = ExponentialDecay(np.float32(0.5), np.int64(10), np.float64(0.25))
    config = schedules.serialize(schedule)["config"]
    assert config["initial_learning_rate"] == 0.5 and type(config["initial_learning_rate"]) is float
    assert config["decay_steps"] == 10 and type(config["decay_steps"]) is int
    assert type(config["decay_rate"]) is float
    json.dumps(config)


def test_deserialize_accepts_legacy_form_without_module():
    # The form of Keras' `deserialize` docstring: only class_name and config.
    schedule = schedules.deserialize(
        {
            "class_name": "PolynomialDecay",
            "config": {
                "cycle": False,
                "decay_steps": 10000,
                "end_learning_rate": 0.01,
                "initial_learning_rate": 0.1,
                "name": None,
                "power": 0.5,
            },
        }
    )
    assert isinstance(schedule, PolynomialDecay)
    assert schedule.power == 0.5 and schedule.name is None
    assert schedule(5000) == approx((0.1 - 0.01) * 0.5**0.5 + 0.01)


def test_deserialize_passes_an_instance_through():
    schedule = CosineDecay(0.1, 10)
    assert schedules.deserialize(schedule) is schedule


def test_deserialize_bare_class_name_needs_arguments():
    with pytest.raises(TypeError, match="Could not build 'ExponentialDecay'"):
        schedules.deserialize("ExponentialDecay")


# --------------------------------------------------------------------- user schedules


class HalvingSchedule(LearningRateSchedule):
    """A user schedule: halves every `every` steps."""

    def __init__(self, start, every=1):
        self.start = start
        self.every = every

    def __call__(self, step):
        return self.start * 0.5 ** (int(step) // self.every)

    def get_config(self):
        return {"start": self.start, "every": self.every}


@schedules.register_schedule(package="TestPkg")
class RegisteredHalving(HalvingSchedule):
    pass


@schedules.register_schedule(package="TestPkg", name="Renamed")
class RegisteredWithName(HalvingSchedule):
    pass


@schedules.register_schedule
class RegisteredBare(HalvingSchedule):
    pass


@schedules.register_schedule("PositionalPkg")
class RegisteredPositional(HalvingSchedule):
    pass


@pytest.mark.parametrize(
    ("cls", "registered_name"),
    [
        pytest.param(RegisteredHalving, "TestPkg>RegisteredHalving", id="package"),
        pytest.param(RegisteredWithName, "TestPkg>Renamed", id="package-and-name"),
        pytest.param(RegisteredBare, "Custom>RegisteredBare", id="bare-decorator"),
        pytest.param(RegisteredPositional, "PositionalPkg>RegisteredPositional", id="positional"),
    ],
)
def test_registered_user_schedule_round_trip(cls, registered_name):
    schedule = cls(0.8, every=3)
    config = schedules.serialize(schedule)
    assert config == {
        "module": __name__,
        "class_name": cls.__name__,
        "config": {"start": 0.8, "every": 3},
        "registered_name": registered_name,
    }
    clone = schedules.deserialize(json.loads(json.dumps(config)))
    assert type(clone) is cls
    assert clone.get_config() == {"start": 0.8, "every": 3}
    assert clone(7) == schedule(7) == 0.2


def test_unregistered_user_schedule_needs_custom_objects():
    config = schedules.serialize(HalvingSchedule(1.0, every=2))
    assert config["registered_name"] == "HalvingSchedule"
    assert config["module"] == __name__
    with pytest.raises(ValueError, match="class_name='HalvingSchedule'"):
        schedules.deserialize(config)
    clone = schedules.deserialize(config, custom_objects={"HalvingSchedule": HalvingSchedule})
    assert type(clone) is HalvingSchedule
    assert clone(5) == 0.25


def test_custom_objects_override_builtin_names():
    class MyExponential(ExponentialDecay):
        pass

    config = schedules.serialize(ExponentialDecay(0.1, 10, 0.5))
    clone = schedules.deserialize(config, custom_objects={"ExponentialDecay": MyExponential})
    assert type(clone) is MyExponential


def test_subclass_of_builtin_is_not_serialized_as_builtin():
    class MyCosine(CosineDecay):
        pass

    config = schedules.serialize(MyCosine(0.1, 10))
    assert config["class_name"] == "MyCosine"
    assert config["module"] == __name__
    assert config["registered_name"] == "MyCosine"


def test_register_rejects_non_schedules():
    with pytest.raises(TypeError, match="subclass of LearningRateSchedule"):
        schedules.register_schedule(dict)
    with pytest.raises(TypeError, match="subclass of LearningRateSchedule"):
        schedules.register_schedule(package="X")(len)


def test_register_requires_get_config():
    class NoConfig(LearningRateSchedule):
        def __call__(self, step):
            return 0.1

    with pytest.raises(ValueError, match="'NoConfig'.*get_config"):
        schedules.register_schedule(NoConfig)


def test_register_rejects_bad_package_and_name():
    with pytest.raises(TypeError, match="`package`.*package=3"):
        schedules.register_schedule(package=3)
    with pytest.raises(TypeError, match="`name`.*name=3"):
        schedules.register_schedule(package="X", name=3)


# ------------------------------------------------------------------------ base class


def test_base_class_call_and_get_config_raise():
    class Bare(LearningRateSchedule):
        pass

    with pytest.raises(NotImplementedError, match=r"'Bare'.*__call__"):
        Bare()(0)
    with pytest.raises(NotImplementedError, match=r"'Bare'.*get_config"):
        Bare().get_config()
    with pytest.raises(NotImplementedError, match="get_config"):
        schedules.serialize(Bare())
    assert "Bare object" in repr(Bare())


def test_base_from_config_passes_keywords():
    assert HalvingSchedule.from_config({"start": 2.0, "every": 4}).get_config() == {
        "start": 2.0,
        "every": 4,
    }


def test_repr_names_class_and_arguments():
    text = repr(ExponentialDecay(0.1, 10, 0.5, staircase=True))
    assert text == (
        "ExponentialDecay(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5, "
        "staircase=True, name='ExponentialDecay')"
    )


def test_public_names():
    assert set(schedules.__all__) == {
        "LearningRateSchedule",
        "ExponentialDecay",
        "PiecewiseConstantDecay",
        "PolynomialDecay",
        "InverseTimeDecay",
        "CosineDecay",
        "CosineDecayRestarts",
        "serialize",
        "deserialize",
        "register_schedule",
    }
    for name in schedules.__all__:
        assert hasattr(schedules, name)


# -------------------------------------------------------------------------- bad input

BAD_ARGUMENTS = [
    # Keras' own checks.
    pytest.param(
        lambda: ExponentialDecay(0.1, 0, 0.9),
        ValueError,
        ["`decay_steps` must be > 0", "Received: decay_steps=0"],
        id="exp-decay_steps-0",
    ),
    pytest.param(
        lambda: PolynomialDecay(0.1, -5),
        ValueError,
        ["`decay_steps` must be > 0", "Received: decay_steps=-5"],
        id="poly-decay_steps-negative",
    ),
    pytest.param(
        lambda: InverseTimeDecay(0.1, 0.0, 0.5),
        ValueError,
        ["`decay_steps` must be > 0", "Received: decay_steps=0.0"],
        id="inverse-decay_steps-0",
    ),
    pytest.param(
        lambda: CosineDecay(0.1, -1),
        ValueError,
        ["`decay_steps` must be > 0", "Received: decay_steps=-1"],
        id="cosine-decay_steps-negative",
    ),
    pytest.param(
        lambda: CosineDecayRestarts(0.1, 0),
        ValueError,
        ["`first_decay_steps` must be > 0", "Received: first_decay_steps=0"],
        id="restarts-first_decay_steps-0",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay([10, 20], [1.0, 0.5]),
        ValueError,
        ["one more entry than `boundaries`", "[10, 20] of length 2", "[1.0, 0.5] of length 2"],
        id="piecewise-length-mismatch",
    ),
    # Our additional checks.
    pytest.param(
        lambda: PiecewiseConstantDecay([], [1.0]),
        ValueError,
        ["`boundaries` must contain at least one step", "boundaries=[]"],
        id="piecewise-empty",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay([10, 10], [1.0, 0.5, 0.1]),
        ValueError,
        ["strictly increasing", "boundaries=[10, 10]", "entry 1 is 10"],
        id="piecewise-not-increasing",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay([10, "20"], [1.0, 0.5, 0.1]),
        TypeError,
        ["`boundaries` must contain only real numbers", "boundaries[1]='20'", "str"],
        id="piecewise-string-boundary",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay([10], [1.0, float("nan")]),
        ValueError,
        ["`values` must contain only finite numbers", "values[1]=nan"],
        id="piecewise-nan-value",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay(10, [1.0, 0.5]),
        TypeError,
        ["`boundaries` must be a list or tuple", "boundaries=10", "int"],
        id="piecewise-scalar-boundaries",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay(np.array([[1, 2]]), [1.0, 0.5, 0.1]),
        ValueError,
        ["`boundaries` must be one-dimensional", "(1, 2)"],
        id="piecewise-2d-boundaries",
    ),
    pytest.param(
        lambda: CosineDecayRestarts(0.1, 10, t_mul=0.0),
        ValueError,
        ["`t_mul` must be > 0", "Received: t_mul=0.0"],
        id="restarts-t_mul-0",
    ),
    pytest.param(
        lambda: CosineDecay(0.1, 10, warmup_target=0.5, warmup_steps=-3),
        ValueError,
        ["`warmup_steps` must be >= 0", "Received: warmup_steps=-3"],
        id="cosine-negative-warmup_steps",
    ),
    pytest.param(
        lambda: CosineDecay(0.1, 10, warmup_target="0.5"),
        TypeError,
        ["`warmup_target` must be a real number", "warmup_target='0.5'", "str"],
        id="cosine-string-warmup_target",
    ),
    pytest.param(
        lambda: ExponentialDecay("0.1", 10, 0.9),
        TypeError,
        ["`initial_learning_rate` must be a real number", "initial_learning_rate='0.1'", "str"],
        id="exp-string-lr",
    ),
    pytest.param(
        lambda: ExponentialDecay(True, 10, 0.9),
        TypeError,
        ["`initial_learning_rate` must be a real number", "initial_learning_rate=True", "bool"],
        id="exp-bool-lr",
    ),
    pytest.param(
        lambda: ExponentialDecay(0.1, 10, None),
        TypeError,
        ["`decay_rate` must be a real number", "decay_rate=None", "NoneType"],
        id="exp-none-decay_rate",
    ),
    pytest.param(
        lambda: PolynomialDecay(float("inf"), 10),
        ValueError,
        ["`initial_learning_rate` must be a finite number", "initial_learning_rate=inf"],
        id="poly-inf-lr",
    ),
    pytest.param(
        lambda: PolynomialDecay(0.1, float("nan")),
        ValueError,
        ["`decay_steps` must be a finite number", "decay_steps=nan"],
        id="poly-nan-decay_steps",
    ),
    pytest.param(
        lambda: PolynomialDecay(0.1, 10, power="2"),
        TypeError,
        ["`power` must be a real number", "power='2'"],
        id="poly-string-power",
    ),
    pytest.param(
        lambda: ExponentialDecay(0.1, 10, 0.9, staircase="yes"),
        TypeError,
        ["`staircase` must be a bool", "staircase='yes'", "str"],
        id="exp-string-staircase",
    ),
    pytest.param(
        lambda: PolynomialDecay(0.1, 10, cycle=1),
        TypeError,
        ["`cycle` must be a bool", "cycle=1", "int"],
        id="poly-int-cycle",
    ),
    pytest.param(
        lambda: InverseTimeDecay(0.1, 10, 0.5, name=5),
        TypeError,
        ["`name` must be a string or None", "name=5", "int"],
        id="inverse-int-name",
    ),
    pytest.param(
        lambda: CosineDecayRestarts(0.1, 10, m_mul=[0.5]),
        TypeError,
        ["`m_mul` must be a real number", "m_mul=[0.5]", "list"],
        id="restarts-list-m_mul",
    ),
    pytest.param(
        lambda: CosineDecayRestarts(0.1, 10, alpha=float("nan")),
        ValueError,
        ["`alpha` must be a finite number", "alpha=nan"],
        id="restarts-nan-alpha",
    ),
]


@pytest.mark.parametrize(("factory", "error", "fragments"), BAD_ARGUMENTS)
def test_bad_arguments(factory, error, fragments):
    with pytest.raises(error) as info:
        factory()
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("step", "fragments"),
    [
        pytest.param("5", ["step='5'", "str"], id="string"),
        pytest.param(None, ["step=None", "NoneType"], id="none"),
        pytest.param(True, ["step=True", "bool"], id="bool"),
        pytest.param(np.bool_(True), ["step=", "bool"], id="np.bool_"),
        pytest.param([1, 2], ["step=[1, 2]", "list", "shape (2,)"], id="list"),
        pytest.param(np.arange(3), ["ndarray", "shape (3,)"], id="1d-array"),
        pytest.param(np.array(1 + 2j), ["complex128"], id="complex"),
        pytest.param(object(), ["object", "dtype object"], id="object"),
    ],
)
@pytest.mark.parametrize("schedule", ALL_SCHEDULES)
def test_bad_step(schedule, step, fragments):
    with pytest.raises(TypeError, match="integer or float scalar") as info:
        schedule(step)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("config", "error", "fragments"),
    [
        pytest.param(
            {"class_name": "NoSuchDecay", "config": {}},
            ValueError,
            ["class_name='NoSuchDecay'", "'ExponentialDecay'", "'CosineDecayRestarts'"],
            id="unknown-class",
        ),
        pytest.param(
            {"class_name": "Mystery", "config": {}, "registered_name": "Pkg>Mystery"},
            ValueError,
            ["class_name='Mystery'", "registered_name='Pkg>Mystery'", "TestPkg>Renamed"],
            id="unknown-registered",
        ),
        pytest.param(
            {"class_name": "LearningRateSchedule", "config": {}},
            ValueError,
            ["class_name='LearningRateSchedule'"],
            id="abstract-base",
        ),
        pytest.param(
            {"config": {"decay_steps": 1}},
            ValueError,
            ["no 'class_name' key", "decay_steps"],
            id="missing-class_name",
        ),
        pytest.param(
            {"class_name": "CosineDecay", "config": [0.1, 10]},
            TypeError,
            ["'config' entry", "'CosineDecay'", "[0.1, 10]", "list"],
            id="config-not-a-dict",
        ),
        pytest.param(
            {"class_name": "CosineDecay", "config": {"initial_learning_rate": 0.1}},
            TypeError,
            ["Could not build 'CosineDecay'", "decay_steps"],
            id="missing-argument",
        ),
        pytest.param(
            {
                "class_name": "CosineDecay",
                "config": {"initial_learning_rate": 0.1, "decay_steps": 0},
            },
            ValueError,
            ["`decay_steps` must be > 0", "Received: decay_steps=0"],
            id="invalid-argument",
        ),
        pytest.param(42, TypeError, ["config=42", "int"], id="not-a-dict"),
    ],
)
def test_bad_deserialize(config, error, fragments):
    with pytest.raises(error) as info:
        schedules.deserialize(config)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_bad_custom_objects():
    with pytest.raises(TypeError, match="`custom_objects`"):
        schedules.deserialize({"class_name": "CosineDecay", "config": {}}, custom_objects=[1])


def test_custom_object_without_from_config():
    with pytest.raises(TypeError, match="no `from_config"):
        schedules.deserialize({"class_name": "Fn", "config": {}}, custom_objects={"Fn": len})


def test_serialize_rejects_non_schedules():
    with pytest.raises(TypeError, match="LearningRateSchedule instance.*float"):
        schedules.serialize(0.1)


def test_serialize_rejects_non_dict_config():
    class ListConfig(HalvingSchedule):
        def get_config(self):
            return [self.start]

    with pytest.raises(TypeError, match=r"get_config\(\)` must return a dict.*\[1.0\]"):
        schedules.serialize(ListConfig(1.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda lr: ExponentialDecay(lr, 10, 0.5),
        lambda lr: PolynomialDecay(lr, 10),
        lambda lr: InverseTimeDecay(lr, 10, 0.5),
        lambda lr: CosineDecay(lr, 10),
        lambda lr: CosineDecayRestarts(lr, 10),
    ],
    ids=["exponential", "polynomial", "inverse-time", "cosine", "cosine-restarts"],
)
def test_a_variable_as_initial_learning_rate_is_read_at_every_call(make):
    # Keras accepts a variable here and reads its current value at every call.
    rate = an.Variable(np.float32(0.1), name="lr")
    schedule, same_as_number = make(rate), make(0.1)
    assert schedule(3) == same_as_number(3)
    rate.assign(0.2)
    assert schedule(3) == make(0.2)(3)
    assert schedule.get_config()["initial_learning_rate"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="scalar Variable"):
        make(an.Variable(np.ones(2, np.float32)))
