"""Native Adagrad vs the numpy oracle (tests/oracle/dense.py) over dtypes x shapes x features.

Tolerance: 8 ulps of the dtype per step (`tests.helpers.assert_close` says why).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import pytest

import adagrad_native as an
from tests.helpers import assert_close
from tests.oracle import ReferenceAdagrad

STEPS = 6


# --------------------------------------------------------------------------- cases
SHAPES = {
    "0d": (),
    "1": (1,),
    "7": (7,),
    "8": (8,),
    "9": (9,),
    "1023": (1023,),
    "1025": (1025,),
    "3x5x7": (3, 5, 7),
    "many50": None,
}
SHAPES_ALL = dict(SHAPES, **{"100003": (100003,)})
_SMALL = [
    (),
    (1,),
    (2,),
    (3,),
    (5,),
    (2, 3),
    (4, 4),
    (7,),
    (8,),
    (9,),
    (16,),
    (17,),
    (3, 1, 2),
    (0,),
    (31,),
    (33,),
    (2, 2, 2),
    (64,),
    (65,),
    (1, 1),
    (6, 5),
    (15,),
    (2, 0),
    (127,),
    (129,),
]


def make_layout(shape_id, dtype_id):
    """[(name, shape, dtype)] for a case: the main tensor plus two small companions."""
    if shape_id == "many50":
        specs = [
            (f"t{i}" + ("_bias" if i % 7 == 3 else ""), _SMALL[i % len(_SMALL)]) for i in range(50)
        ]
    else:
        specs = [("main", SHAPES_ALL[shape_id]), ("aux_bias", (3,)), ("aux_kernel", (2, 2))]
    out = []
    for i, (name, shape) in enumerate(specs):
        if dtype_id == "f32":
            dt = np.float32
        elif dtype_id == "f64":
            dt = np.float64
        else:  # mixed: alternate, starting with float32
            dt = np.float32 if i % 2 == 0 else np.float64
        out.append((name, shape, np.dtype(dt)))
    return out


@dataclass
class Feature:
    opt: dict = field(default_factory=dict)  # keyword arguments shared by both optimizers
    lr: str = "float"  # "float" | "schedule" | "callable"
    grad_scale: float = 1.0
    none_grads: bool = False
    overwrite: bool = False  # the last variable has overwrite_with_gradient=True
    exclude_var: bool = False  # variable 1 excluded from weight decay by var_list
    exclude_name: tuple = ()  # excluded from weight decay by var_names
    constraint: bool = False  # variables 0 and 1 clipped to [-0.9, 0.9]
    numpy_arrays: bool = False  # plain numpy arrays instead of an.Variable
    zero_grad_step: bool = False  # variable 0 gets an all-zero gradient at step 2


EMA = dict(use_ema=True, ema_momentum=0.9)
FEATURES = {
    "plain": Feature(),
    "numpy_arrays": Feature(numpy_arrays=True),
    "numpy_arrays_ema_wd": Feature(
        numpy_arrays=True, exclude_var=True, opt=dict(weight_decay=0.05, **EMA)
    ),
    "hparams": Feature(opt=dict(learning_rate=0.5, initial_accumulator_value=0.3, epsilon=1e-6)),
    "lr_schedule": Feature(lr="schedule"),
    "lr_callable": Feature(lr="callable"),
    "loss_scale": Feature(opt=dict(loss_scale_factor=128.0), grad_scale=128.0),
    "clipnorm": Feature(opt=dict(clipnorm=1.0), grad_scale=3.0, zero_grad_step=True),
    "clipvalue": Feature(opt=dict(clipvalue=0.5)),
    "global_clipnorm": Feature(opt=dict(global_clipnorm=1.0), grad_scale=3.0, zero_grad_step=True),
    "wd_exclude_var": Feature(opt=dict(weight_decay=0.05), exclude_var=True),
    "wd_exclude_name": Feature(opt=dict(weight_decay=0.05), exclude_name=("bias",)),
    "ema": Feature(opt=dict(EMA)),
    "ema_overwrite3": Feature(opt=dict(ema_overwrite_frequency=3, **EMA)),
    "accum2": Feature(opt=dict(gradient_accumulation_steps=2)),
    "accum3_ema_clipnorm": Feature(
        opt=dict(gradient_accumulation_steps=3, clipnorm=1.0, **EMA), grad_scale=3.0
    ),
    "accum3_global_ema_overwrite2": Feature(
        opt=dict(
            gradient_accumulation_steps=3, global_clipnorm=1.0, ema_overwrite_frequency=2, **EMA
        ),
        grad_scale=3.0,
    ),
    "accum2_clipvalue_wd_schedule": Feature(
        lr="schedule",
        exclude_var=True,
        opt=dict(gradient_accumulation_steps=2, clipvalue=0.5, weight_decay=0.05),
    ),
    "none_grads": Feature(none_grads=True),
    "none_grads_ema_global": Feature(
        none_grads=True, opt=dict(global_clipnorm=1.0, **EMA), grad_scale=3.0
    ),
    "none_grads_accum3_ema": Feature(
        none_grads=True, opt=dict(gradient_accumulation_steps=3, **EMA)
    ),
    "overwrite": Feature(overwrite=True),
    "overwrite_accum2": Feature(overwrite=True, opt=dict(gradient_accumulation_steps=2)),
    "overwrite_ema_global_scale": Feature(
        overwrite=True,
        grad_scale=4.0,
        opt=dict(global_clipnorm=1.0, loss_scale_factor=4.0, ema_overwrite_frequency=2, **EMA),
    ),
    "constraints": Feature(constraint=True, grad_scale=2.0),
    "constraints_accum2_ema": Feature(
        constraint=True, grad_scale=2.0, opt=dict(gradient_accumulation_steps=2, **EMA)
    ),
    "all_features": Feature(
        lr="schedule",
        none_grads=True,
        overwrite=True,
        exclude_name=("bias",),
        constraint=True,
        grad_scale=8.0,
        opt=dict(
            loss_scale_factor=4.0,
            gradient_accumulation_steps=2,
            global_clipnorm=1.0,
            weight_decay=0.05,
            ema_overwrite_frequency=2,
            **EMA,
        ),
    ),
}
LARGE_FEATURES = [
    "plain",
    "global_clipnorm",
    "ema_overwrite3",
    "accum3_ema_clipnorm",
    "all_features",
]


def _cases():
    for dtype_id in ("f32", "f64"):
        for shape_id in SHAPES:
            for feat_id in FEATURES:
                yield pytest.param(
                    dtype_id, shape_id, feat_id, id=f"{dtype_id}-{shape_id}-{feat_id}"
                )
        for feat_id in LARGE_FEATURES:
            yield pytest.param(dtype_id, "100003", feat_id, id=f"{dtype_id}-100003-{feat_id}")
    for shape_id in ("9", "many50"):
        for feat_id in FEATURES:
            yield pytest.param("mixed", shape_id, feat_id, id=f"mixed-{shape_id}-{feat_id}")


def _lr_pair(kind, base):
    """(native learning_rate, oracle learning_rate) for a feature."""
    if kind == "float":
        return base, base
    if kind == "callable":
        return (lambda: 0.25), (lambda it: 0.25)
    base_cls = getattr(getattr(an, "schedules", None), "LearningRateSchedule", None)
    if base_cls is None:
        pytest.skip("adagrad_native.schedules.LearningRateSchedule is missing")

    class Halving(base_cls):
        # Powers of two: exact in every dtype, so the oracle needs no rounding model.
        def __call__(self, step):
            return 0.5 ** (1 + int(np.asarray(step)) % 3)

        def get_config(self):
            return {}

    return Halving(), (lambda it: 0.5 ** (1 + it % 3))


def _clip09(x):
    return np.clip(x, -0.9, 0.9)


def setup_case(dtype_id, shape_id, feat: Feature, rng):
    layout = make_layout(shape_id, dtype_id)
    n = len(layout)
    init = [rng.standard_normal(s).astype(d) for _, s, d in layout]
    overwrite = (n - 1,) if feat.overwrite else ()
    constraints = {0: _clip09, 1: _clip09} if feat.constraint else {}
    excluded = set()
    if feat.exclude_var:
        excluded.add(1)
    for i, (name, _, _) in enumerate(layout):
        if any(f in name for f in feat.exclude_name):
            excluded.add(i)

    kwargs = dict(learning_rate=0.1)
    kwargs.update(feat.opt)
    native_lr, ref_lr = _lr_pair(feat.lr, kwargs.pop("learning_rate"))
    ref = ReferenceAdagrad(
        learning_rate=ref_lr,
        exclude_from_weight_decay=excluded,
        overwrite_with_gradient=overwrite,
        constraints=constraints,
        **kwargs,
    )
    ref.build(init)
    opt = an.Adagrad(learning_rate=native_lr, **kwargs)

    if feat.numpy_arrays:
        variables = [a.copy() for a in init]
    else:
        variables = [
            an.Variable(
                a.copy(),
                name=name,
                constraint=constraints.get(i),
                overwrite_with_gradient=i in overwrite,
            )
            for i, (a, (name, _, _)) in enumerate(zip(init, layout, strict=True))
        ]
    if feat.exclude_var:
        opt.exclude_from_weight_decay(var_list=[variables[1]])
    if feat.exclude_name:
        opt.exclude_from_weight_decay(var_names=list(feat.exclude_name))
    return opt, variables, ref, layout


def make_grads(step, layout, feat: Feature, rng):
    grads = []
    for i, (_, shape, dt) in enumerate(layout):
        g = (rng.standard_normal(shape) * feat.grad_scale).astype(dt)
        if feat.zero_grad_step and step == 2 and i == 0:
            g = np.zeros(shape, dt)
        if feat.none_grads and (i + step) % 3 == 1:
            g = None
        grads.append(g)
    return grads


def check_state(opt, variables, ref, step, uses_ema, uses_accum):
    steps = step + 1
    for i, v in enumerate(variables):
        assert_close(np.asarray(v), ref.params[i], steps, f"step {step}: param {i}")
    slot_lists = [("_accumulators", ref.accumulators)]
    if uses_ema:
        slot_lists.append(("_model_variables_moving_average", ref.averages))
    if uses_accum:
        slot_lists.append(("_accumulated_gradients", ref.grad_accumulators))
    for attr, want in slot_lists:
        got = getattr(opt, attr)
        assert len(got) == len(want), f"{attr}: {len(got)} slots, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if w is None:
                assert g is None, f"{attr}[{i}] should be None (overwrite_with_gradient)"
            else:
                assert_close(np.asarray(g), w, steps, f"step {step}: {attr}[{i}]")
    assert int(opt.iterations) == ref.iterations
    assert int(opt._iterations) == ref.iterations_raw


@pytest.mark.parametrize("dtype_id, shape_id, feat_id", list(_cases()))
def test_matches_reference(dtype_id, shape_id, feat_id, rng):
    feat = FEATURES[feat_id]
    opt, variables, ref, layout = setup_case(dtype_id, shape_id, feat, rng)
    uses_ema = bool(feat.opt.get("use_ema"))
    uses_accum = bool(feat.opt.get("gradient_accumulation_steps"))
    for step in range(STEPS):
        grads = make_grads(step, layout, feat, rng)
        warn = (
            pytest.warns(UserWarning) if any(g is None for g in grads) else contextlib.nullcontext()
        )
        with warn:
            # Exercise the three entry points in turn.
            if step % 3 == 0:
                opt.apply(grads, variables)
            elif step % 3 == 1:
                ret = opt.apply_gradients(zip(grads, variables, strict=True))
                assert int(ret) == step + 1  # Keras returns the raw iteration counter
            else:
                opt.apply(grads)
        ref.apply(grads)
        check_state(opt, variables, ref, step, uses_ema, uses_accum)
    if uses_ema:
        opt.finalize_variable_values(variables)
        ref.finalize_variable_values()
        for i, v in enumerate(variables):
            assert_close(np.asarray(v), ref.params[i], STEPS, f"finalized param {i}")


# ------------------------------------------------------------------ API details
def test_variables_order_names_and_dtypes():
    w = an.Variable(np.ones((2, 3), np.float32), name="w")
    b = an.Variable(np.ones((3,), np.float64), name="b")
    s = an.Variable(np.ones((), np.float32), name="s", overwrite_with_gradient=True)
    opt = an.Adagrad(learning_rate=0.1, use_ema=True, gradient_accumulation_steps=2, name="opt")
    assert [v.path for v in opt.variables] == ["opt/iteration", "opt/learning_rate"]
    opt.build([w, b, s])
    # Keras groups slots by kind (all averages, all gradient accumulators, all accumulators);
    # overwrite_with_gradient variables get a gradient accumulator but no average/accumulator.
    assert [v.path for v in opt.variables] == [
        "opt/iteration",
        "opt/learning_rate",
        "opt/w_average",
        "opt/b_average",
        "opt/w_gradient_accumulator",
        "opt/b_gradient_accumulator",
        "opt/s_gradient_accumulator",
        "opt/w_accumulator",
        "opt/b_accumulator",
    ]
    assert [v.name for v in opt.variables][:3] == ["iteration", "learning_rate", "w_average"]
    dtypes = [np.dtype(v.dtype) for v in opt.variables]
    assert dtypes[0] == np.int64 and dtypes[1] == np.float32
    assert dtypes[2:] == [
        np.float32,
        np.float64,
        np.float32,
        np.float64,
        np.float32,
        np.float32,
        np.float64,
    ]
    assert opt._accumulators[2] is None and opt._model_variables_moving_average[2] is None
    assert opt._accumulated_gradients[2] is not None
    np.testing.assert_array_equal(np.asarray(opt._accumulators[1]), np.full(3, 0.1))
    assert np.asarray(opt._accumulators[0]).dtype == np.float32
    np.testing.assert_array_equal(
        np.asarray(opt._accumulators[0]), np.full((2, 3), 0.1, np.float32)
    )


def test_schedule_has_no_learning_rate_variable():
    opt = an.Adagrad(learning_rate=lambda: 0.1)
    assert [v.name for v in opt.variables] == ["iteration"]


def test_build_twice_keeps_slots():
    v = an.Variable(np.ones(3, np.float32))
    opt = an.Adagrad()
    opt.build([v])
    first = list(opt.variables)
    opt.build([v])
    assert len(opt.variables) == len(first)
    assert all(a is b for a, b in zip(opt.variables, first, strict=True))


def test_name_default_and_explicit():
    assert an.Adagrad().name.startswith("adagrad")
    assert an.Adagrad(name="mine").name == "mine"


def test_learning_rate_property_and_setter():
    v = an.Variable(np.ones(4, np.float32))
    opt = an.Adagrad(learning_rate=0.5)
    assert float(opt.learning_rate) == 0.5
    opt.learning_rate = 0.25
    assert float(opt.learning_rate) == 0.25
    opt.apply([np.ones(4, np.float32)], [v])
    ref = ReferenceAdagrad(learning_rate=0.25)
    ref.build([np.ones(4, np.float32)])
    ref.apply([np.ones(4, np.float32)])
    assert_close(np.asarray(v), ref.params[0], 1, "param after setter")
    # A number stored in the learning_rate variable (float32, Keras' floatx).
    lr_var = [x for x in opt.variables if x.name == "learning_rate"][0]
    assert float(np.asarray(lr_var)) == 0.25


def test_iterations_counter():
    v = an.Variable(np.ones((2, 2), np.float32))
    opt = an.Adagrad(learning_rate=1.0)
    assert int(opt.iterations) == 0
    opt.apply_gradients([(np.ones((2, 2), np.float32), v)])
    assert int(opt.iterations) == 1
    opt.apply_gradients([(np.ones((2, 2), np.float32), v)])
    assert int(opt.iterations) == 2


def test_empty_grads_is_a_no_op(snapshot):
    v = an.Variable(np.ones(3, np.float32))
    opt = an.Adagrad()
    opt.build([v])
    snap = snapshot(opt, [v])
    opt.apply([], [])
    snap.assert_unchanged()


def test_update_step_direct():
    v = an.Variable(np.array([1.0, 2.0, 3.0], np.float32))
    g = np.array([0.5, -1.0, 2.0], np.float32)
    opt = an.Adagrad(learning_rate=0.1, initial_accumulator_value=0.2, epsilon=1e-6)
    opt.build([v])
    opt.update_step(g, v, 0.5)
    acc = np.float32(0.2) + g * g
    want = np.array([1.0, 2.0, 3.0], np.float32) - (np.float32(0.5) * g) / np.sqrt(
        acc + np.float32(1e-6)
    )
    assert_close(np.asarray(opt._accumulators[0]), acc, 1, "accumulator")
    assert_close(np.asarray(v), want, 1, "param")
    assert int(opt.iterations) == 0  # update_step does not count


def test_optimizer_assign_helpers():
    v = an.Variable(np.zeros(3, np.float32))
    opt = an.Adagrad()
    addr = np.asarray(v).ctypes.data
    opt.assign(v, np.array([1.0, 2.0, 3.0], np.float32))
    opt.assign_add(v, np.ones(3, np.float32))
    opt.assign_sub(v, np.array([0.5, 0.5, 0.5], np.float32))
    np.testing.assert_array_equal(np.asarray(v), [1.5, 2.5, 3.5])
    assert v.value.ctypes.data == addr


def test_add_variable_and_from_reference():
    opt = an.Adagrad(name="opt")
    n_before = len(opt.variables)
    x = opt.add_variable((2, 3), initializer="ones", dtype="float64", name="extra")
    assert x.path == "opt/extra" and x.shape == (2, 3) and np.dtype(x.dtype) == np.float64
    np.testing.assert_array_equal(np.asarray(x), np.ones((2, 3)))
    ref = an.Variable(np.ones(4, np.float32), name="dense_kernel")
    y = opt.add_variable_from_reference(ref, name="momentum")
    assert y.name == "dense_kernel_momentum" and y.path == "opt/dense_kernel_momentum"
    assert y.shape == (4,) and np.dtype(y.dtype) == np.float32
    np.testing.assert_array_equal(np.asarray(y), np.zeros(4, np.float32))
    assert len(opt.variables) == n_before + 2
    assert not x.trainable


def test_scale_loss():
    assert an.Adagrad(loss_scale_factor=1024.0).scale_loss(1.0) == 1024.0
    assert an.Adagrad().scale_loss(3.0) == 3.0


@pytest.mark.parametrize("bad", [np.inf, np.nan], ids=["inf", "nan"])
def test_nonfinite_global_norm_makes_every_gradient_nan(bad):
    # Keras: scale = c*min(1/N, 1/c) + (N - N) is NaN for a non-finite N (docs/keras-pipeline.md).
    a = an.Variable(np.ones(3, np.float32), name="a")
    b = an.Variable(np.ones(2, np.float32), name="b")
    opt = an.Adagrad(global_clipnorm=1.0)
    opt.apply([np.array([1.0, bad, 0.0], np.float32), np.ones(2, np.float32)], [a, b])
    assert np.isnan(np.asarray(a)).all() and np.isnan(np.asarray(b)).all()


def test_nonfinite_clipnorm_only_hits_its_tensor():
    a = an.Variable(np.ones(3, np.float32), name="a")
    b = an.Variable(np.ones(2, np.float32), name="b")
    opt = an.Adagrad(clipnorm=1.0)
    opt.apply([np.array([1.0, np.nan, 0.0], np.float32), np.ones(2, np.float32)], [a, b])
    assert np.isnan(np.asarray(a)).all()
    assert np.isfinite(np.asarray(b)).all()


def test_assign_between_steps_is_seen_by_the_core(rng):
    # The core holds the buffer's address: Variable.assign must write into it.
    init = rng.standard_normal(16).astype(np.float32)
    v = an.Variable(init.copy())
    opt = an.Adagrad(learning_rate=0.1)
    ref = ReferenceAdagrad(learning_rate=0.1)
    ref.build([init])
    g = rng.standard_normal(16).astype(np.float32)
    opt.apply([g], [v])
    ref.apply([g])
    new = rng.standard_normal(16).astype(np.float32)
    v.assign(new)
    ref.params[0][...] = new
    opt.apply([g], [v])
    ref.apply([g])
    assert_close(np.asarray(v), ref.params[0], 2, "param after assign")


def test_fresh_view_objects_in_swapped_order_update_the_right_variables():
    # Temporary objects can get the ids of the previous call's objects; the
    # call-order cache must not map them by those ids alone.
    a, b = np.zeros(3, np.float32), np.zeros(3, np.float32)
    opt = an.Adagrad(1.0)
    opt.build([a, b])
    up, down = np.ones(3, np.float32), -np.ones(3, np.float32)
    for _ in range(3):
        opt.apply([up, down], [a.view(), b.view()])
        opt.apply([down, up], [b.view(), a.view()])
    ref_a, ref_b = np.zeros(3, np.float32), np.zeros(3, np.float32)
    ref = an.Adagrad(1.0)
    for _ in range(6):
        ref.apply([up, down], [ref_a, ref_b])
    assert a.tobytes() == ref_a.tobytes() and b.tobytes() == ref_b.tobytes()
