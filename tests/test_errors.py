"""Bad input (docs/keras-pipeline.md): the right error, a message naming the variable and
the received value, and not one byte changed in any parameter or optimizer variable."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import adagrad_native as an
from adagrad_native._native import NativeStep

F32, F64 = np.float32, np.float64
ANY_ERROR = (ValueError, TypeError)


def _message(excinfo):
    return str(excinfo.value)


def _assert_fragments(msg, fragments):
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in error message: {msg!r}"


def _good_grads():
    return [np.array([0.5, -1.0, 2.0], F32), np.full((2, 2), 0.25, F64), np.array([3.0, -4.0], F32)]


@pytest.fixture
def trained():
    """An optimizer with every slot kind (EMA, accumulation, overwrite var), one step in."""
    alpha = an.Variable(np.arange(3, dtype=F32), name="alpha")
    beta = an.Variable(np.ones((2, 2), F64), name="beta")
    omega = an.Variable(np.zeros(2, F32), name="omega", overwrite_with_gradient=True)
    opt = an.Adagrad(
        learning_rate=0.1, use_ema=True, gradient_accumulation_steps=2, weight_decay=0.01
    )
    variables = [alpha, beta, omega]
    opt.apply(_good_grads(), variables)
    return opt, variables


# ------------------------------------------------------------- bad steps
def _bad_grad_cases():
    g = _good_grads()
    return {
        # id: (grads, pass variables?, fragments)
        "too_few_grads_without_vars": ([g[0], g[1]], False, ["2", "3"]),
        "too_few_grads_with_vars": ([g[0], g[1]], True, ["2", "3"]),
        "too_many_grads_with_vars": (g + [g[0]], True, ["4", "3"]),
        "shape_mismatch_last": ([g[0], g[1], np.ones(3, F32)], True, ["omega", "(3,)", "(2,)"]),
        "shape_mismatch_middle": (
            [g[0], np.ones((2, 3), F64), g[2]],
            True,
            ["beta", "(2, 3)", "(2, 2)"],
        ),
        "shape_mismatch_no_vars": (
            [g[0], np.ones((4,), F64), g[2]],
            False,
            ["beta", "(4,)", "(2, 2)"],
        ),
        "shape_mismatch_after_none": ([None, np.ones((1,), F64), g[2]], True, ["beta", "(1,)"]),
        "bool_gradient": ([g[0], g[1].astype(bool), g[2]], True, ["beta", "bool"]),
        "int_gradient": ([np.array([1, 2, 3], np.int32), g[1], g[2]], True, ["alpha", "int32"]),
        "all_none": ([None, None, None], True, ["No gradients provided for any variable"]),
        "all_none_without_vars": (
            [None, None, None],
            False,
            ["No gradients provided for any variable"],
        ),
    }


@pytest.mark.parametrize("case", list(_bad_grad_cases()))
def test_bad_step_raises_and_changes_nothing(case, trained, snapshot):
    opt, variables = trained
    grads, with_vars, fragments = _bad_grad_cases()[case]
    snap = snapshot(opt, variables)
    with pytest.raises(ANY_ERROR) as excinfo:
        if with_vars:
            opt.apply(grads, variables)
        else:
            opt.apply(grads)
    _assert_fragments(_message(excinfo), fragments)
    snap.assert_unchanged()
    # The optimizer is still usable afterwards.
    opt.apply(_good_grads(), variables)
    assert int(opt._iterations) == 2


def test_length_mismatch_is_a_value_error(trained):
    opt, variables = trained
    with pytest.raises(ValueError):
        opt.apply(_good_grads()[:2])


def test_unknown_variable(trained, snapshot):
    opt, variables = trained
    gamma = an.Variable(np.ones((2, 2), F64), name="gamma")
    snap = snapshot(opt, variables + [gamma])
    with pytest.raises(ValueError) as excinfo:
        opt.apply(_good_grads(), [variables[0], gamma, variables[2]])
    _assert_fragments(_message(excinfo), ["gamma"])
    snap.assert_unchanged()


def test_unknown_plain_array(trained, snapshot):
    opt, variables = trained
    stranger = np.ones(3, F32)
    snap = snapshot(opt, variables + [stranger])
    with pytest.raises(ValueError):
        opt.apply(_good_grads(), [stranger, variables[1], variables[2]])
    snap.assert_unchanged()


# ----------------------------------------------- arrays that cannot be updated in place
def _noncontiguous():
    return np.ones((3, 4), F32)[:, ::2]


def _readonly():
    a = np.ones((3, 2), F32)
    a.setflags(write=False)
    return a


def _byteswapped():
    other = ">" if sys.byteorder == "little" else "<"
    return np.ones((3, 2), np.dtype(F32).newbyteorder(other))


def _integer():
    return np.ones((3, 2), np.int32)


BAD_ARRAYS = {
    "noncontiguous": (_noncontiguous, r"contiguous"),
    "fortran_order": (lambda: np.asfortranarray(np.ones((3, 2), F32)), r"contiguous"),
    "readonly": (_readonly, r"read-only|read only|writeable|writable"),
    "byteswapped": (_byteswapped, r"byte.?order|endian|native"),
    "int32": (_integer, r"int32|float"),
}


@pytest.mark.parametrize("entry", ["apply", "build"])
@pytest.mark.parametrize("kind", list(BAD_ARRAYS))
def test_unusable_array_is_rejected(kind, entry, snapshot):
    make, pattern = BAD_ARRAYS[kind]
    bad = make()
    good = an.Variable(np.arange(3, dtype=F32), name="alpha")
    opt = an.Adagrad(learning_rate=0.1)
    snap = snapshot(opt, [good, bad])
    with pytest.raises(ANY_ERROR) as excinfo:
        if entry == "apply":
            opt.apply([np.ones(3, F32), np.ones(bad.shape, bad.dtype)], [good, bad])
        else:
            opt.build([good, bad])
    assert re.search(pattern, _message(excinfo), re.IGNORECASE), _message(excinfo)
    snap.assert_unchanged()


# ------------------------------------------------------------- constructor
CTOR_CASES = {
    "clipnorm_and_clipvalue": (
        dict(clipnorm=1.0, clipvalue=0.5),
        ["Only one of", "clipnorm=1.0", "clipvalue=0.5"],
    ),
    "clipnorm_and_global": (
        dict(clipnorm=1.0, global_clipnorm=2.0),
        ["Only one of", "global_clipnorm=2.0"],
    ),
    "clipvalue_and_global": (dict(clipvalue=0.5, global_clipnorm=2.0), ["Only one of"]),
    # Keras counts `is not None`, so a zero clip still counts as set.
    "clipnorm_zero_and_clipvalue": (dict(clipnorm=0.0, clipvalue=0.5), ["Only one of"]),
    "ema_momentum_above_1": (dict(use_ema=True, ema_momentum=1.5), ["ema_momentum", "1.5"]),
    "ema_momentum_negative": (dict(use_ema=True, ema_momentum=-0.1), ["ema_momentum", "-0.1"]),
    "ema_overwrite_frequency_negative": (
        dict(use_ema=True, ema_overwrite_frequency=-1),
        ["ema_overwrite_frequency", "-1"],
    ),
    "ema_overwrite_frequency_float": (
        dict(use_ema=True, ema_overwrite_frequency=2.5),
        ["ema_overwrite_frequency", "2.5"],
    ),
    "accumulation_1": (dict(gradient_accumulation_steps=1), ["gradient_accumulation_steps", "1"]),
    "accumulation_negative": (
        dict(gradient_accumulation_steps=-2),
        ["gradient_accumulation_steps", "-2"],
    ),
    "initial_accumulator_negative": (
        dict(initial_accumulator_value=-0.1),
        ["initial_accumulator_value", "-0.1"],
    ),
    "learning_rate_negative": (dict(learning_rate=-0.1), ["learning_rate", "-0.1"]),
    "learning_rate_string": (dict(learning_rate="fast"), ["learning_rate", "fast"]),
    "epsilon_negative": (dict(epsilon=-1e-07), ["epsilon", "-1e-07"]),
    "weight_decay_negative": (dict(weight_decay=-0.01), ["weight_decay", "-0.01"]),
    "clipnorm_negative": (dict(clipnorm=-1.0), ["clipnorm", "-1.0"]),
    "clipvalue_negative": (dict(clipvalue=-1.0), ["clipvalue", "-1.0"]),
    "global_clipnorm_negative": (dict(global_clipnorm=-1.0), ["global_clipnorm", "-1.0"]),
    # Below float32's smallest normal, a divisor flushes to 0 or scales gradients to
    # inf: parameters became NaN.
    "clipnorm_denormal": (dict(clipnorm=1e-40), ["clipnorm", "smallest normal", "1e-40"]),
    "clipnorm_below_float32": (dict(clipnorm=1e-300), ["clipnorm", "smallest normal"]),
    "global_clipnorm_denormal": (dict(global_clipnorm=1e-40), ["global_clipnorm", "normal"]),
    "loss_scale_factor_denormal": (dict(loss_scale_factor=1e-40), ["loss_scale_factor", "normal"]),
    "unknown_kwarg": (dict(foo=1), ["not recognized", "foo"]),
    "misspelled_kwarg": (dict(learningrate=0.1), ["not recognized", "learningrate"]),
}


@pytest.mark.parametrize("case", list(CTOR_CASES))
def test_constructor_rejects(case):
    kwargs, fragments = CTOR_CASES[case]
    errors = ANY_ERROR if case == "learning_rate_string" else ValueError
    with pytest.raises(errors) as excinfo:
        an.Adagrad(**kwargs)
    _assert_fragments(_message(excinfo), fragments)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(dict(use_ema=False, ema_momentum=1.5), id="ema_momentum_unused"),
        pytest.param(dict(gradient_accumulation_steps=0), id="accumulation_zero_is_off"),
        pytest.param(dict(learning_rate=1), id="int_learning_rate"),
        pytest.param(dict(learning_rate=np.float32(0.5)), id="numpy_learning_rate"),
        pytest.param(dict(initial_accumulator_value=0.0, epsilon=0.0), id="zeros"),
        pytest.param(dict(clipnorm=0.0), id="clipnorm_zero_is_off"),
        pytest.param(dict(global_clipnorm=1.2e-38), id="smallest_normal_global_clipnorm"),
        pytest.param(dict(loss_scale_factor=1.2e-38), id="smallest_normal_loss_scale"),
        pytest.param(dict(clipvalue=1e-40), id="denormal_clipvalue_clips_to_it"),
    ],
)
def test_constructor_accepts(kwargs):
    # Keras validates ema_* only with use_ema and gradient_accumulation_steps only when
    # truthy; docs/keras-pipeline.md: any real learning rate is accepted.
    opt = an.Adagrad(**kwargs)
    v = an.Variable(np.ones(2, F32))
    opt.apply([np.ones(2, F32)], [v])
    assert np.isfinite(v.numpy()).all()


def test_decay_kwarg_warns_and_is_ignored():
    with pytest.warns(UserWarning, match="decay"):
        an.Adagrad(decay=0.1)


# ------------------------------------------------------------- misc API misuse
def test_apply_without_variables_before_build():
    opt = an.Adagrad()
    with pytest.raises(ValueError, match="built"):
        opt.apply([np.ones(3, F32)])
    assert int(opt._iterations) == 0


def test_exclude_from_weight_decay_after_build_raises(trained, snapshot):
    opt, variables = trained
    snap = snapshot(opt, variables)
    with pytest.raises(ValueError, match="before"):
        opt.exclude_from_weight_decay(var_names=["alpha"])
    snap.assert_unchanged()


def test_finalize_with_wrong_length_raises(trained, snapshot):
    opt, variables = trained
    snap = snapshot(opt, variables)
    with pytest.raises(ValueError) as excinfo:
        opt.finalize_variable_values(variables[:2])
    _assert_fragments(_message(excinfo), ["2", "3"])
    snap.assert_unchanged()


def test_setting_float_learning_rate_over_a_schedule_raises():
    base = getattr(getattr(an, "schedules", None), "LearningRateSchedule", None)
    if base is None:
        pytest.skip("adagrad_native.schedules.LearningRateSchedule is missing")

    class Constant(base):
        def __call__(self, step):
            return 0.1

        def get_config(self):
            return {}

    opt = an.Adagrad(learning_rate=Constant())
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.5


def test_none_gradient_warning_names_the_variables(trained):
    opt, variables = trained
    g = _good_grads()
    with pytest.warns(UserWarning) as record:
        opt.apply([g[0], None, g[2]], variables)
    msg = " ".join(str(w.message) for w in record)
    assert "beta" in msg and "alpha" not in msg, msg
    assert "Gradients do not exist" in msg


def test_non_finite_gradient_is_not_rejected_by_default():
    # Keras propagates NaN/inf (the raise/skip policies are opt-in).
    v = an.Variable(np.ones(2, F32), name="v")
    opt = an.Adagrad()
    opt.apply([np.array([np.nan, 1.0], F32)], [v])
    assert np.isnan(v.numpy()[0]) and np.isfinite(v.numpy()[1])


@pytest.mark.parametrize(
    ("name", "value"),
    [("clipnorm", 1e-40), ("global_clipnorm", 5e-324), ("loss_scale_factor", 1e-39)],
)
def test_a_denormal_divisor_set_after_build_is_refused(name, value, trained, snapshot):
    opt, variables = trained
    snap = snapshot(opt, variables)
    with pytest.raises(ValueError, match=f"`{name}` must be at least 1.1754944e-38"):
        setattr(opt, name, value)
    snap.assert_unchanged()


def test_a_denormal_initial_loss_scale_is_refused():
    with pytest.raises(ValueError, match="`initial_scale` must be at least 1.1754944e-38"):
        an.LossScaleOptimizer(an.Adagrad(0.1), initial_scale=1e-40)


def test_a_refused_build_leaves_nothing_behind():
    # The second variable cannot be updated in place: nothing of the first stays.
    opt = an.Adagrad(0.1, use_ema=True)
    before = dict(opt.__dict__)
    good, bad = np.ones(3, F32), np.ones(6, F32)[::2]
    with pytest.raises(ValueError, match="not C-contiguous"):
        opt.build([good, bad])
    assert not opt.built and [v.path for v in opt.variables] == [
        f"{opt.name}/iteration",
        f"{opt.name}/learning_rate",
    ]
    assert opt.__dict__.keys() == before.keys()
    opt.apply([np.ones(3, F32)], [good])  # and it builds on
    assert len(opt.variables) == 4


def test_a_build_refused_after_its_slots_were_made_is_undone(monkeypatch):
    opt = an.Adagrad(0.1)
    params = [np.ones(3, F32)]

    def refuse(self, variables):  # the last step of a build fails
        raise ValueError("refused by the test")

    monkeypatch.setattr(NativeStep, "bind", refuse)
    with pytest.raises(ValueError, match="refused by the test"):
        opt.build(params)
    monkeypatch.undo()
    assert not opt.built and len(opt.variables) == 2 and opt.trainable_variables == []
    opt.apply([np.ones(3, F32)], params)
    assert int(opt.iterations) == 1 and len(opt.variables) == 3


# ------------------------------------------------------- every other entry point
def _built():
    opt, param = an.Adagrad(0.1, use_ema=True), np.ones(3, F32)
    opt.apply([np.ones(3, F32)], [param])
    return opt, param


ENTRY_POINTS = {
    "save_state-of-no-optimizer": (
        lambda: an.save_state(None, sys.stdout.buffer),
        TypeError,
        "`optimizer` must be an optimizer of this package",
    ),
    "load_state-into-no-optimizer": (
        lambda: an.load_state("state.npz", "state.npz"),
        TypeError,
        "`optimizer` must be an optimizer",
    ),
    "save_state-to-an-empty-path": (lambda: an.save_state(_built()[0], ""), ValueError, "empty"),
    "serialize-no-optimizer": (lambda: an.serialize(3), TypeError, "`optimizer` must be"),
    "from_config-of-a-string": (
        lambda: an.Adagrad.from_config("x"),
        TypeError,
        "`config` must be a dict",
    ),
    "deserialize-a-string-config": (
        lambda: an.deserialize({"class_name": "Adagrad", "config": "x"}),
        TypeError,
        "`config` must be a dict",
    ),
    "loss-scale-config-without-inner": (
        lambda: an.LossScaleOptimizer.from_config({"initial_scale": 2.0}),
        ValueError,
        "needs its 'inner_optimizer'",
    ),
    "use_ema-an-array": (
        lambda: an.Adagrad(use_ema=np.ones(2)),
        TypeError,
        "`use_ema` must be a bool",
    ),
    "use_ema-a-string": (lambda: an.Adagrad(use_ema="yes"), TypeError, "`use_ema` must be a bool"),
    "accumulation-beyond-int64": (
        lambda: an.Adagrad(gradient_accumulation_steps=2**70),
        ValueError,
        "gradient_accumulation_steps",
    ),
    "variable-shape-an-int": (lambda: an.Variable("zeros", shape=5), ValueError, "`shape` must be"),
    "variable-shape-a-float": (
        lambda: an.Variable("zeros", shape=(2.5,)),
        ValueError,
        "`shape` must be",
    ),
    "variable-shape-negative": (
        lambda: an.Variable("zeros", shape=(-1,)),
        ValueError,
        "`shape` must be",
    ),
    "variable-trainable-an-array": (
        lambda: an.Variable(np.ones(2), trainable=np.ones(2)),
        TypeError,
        "`trainable` must be a bool",
    ),
    "variable-of-bytes": (lambda: an.Variable(b"x"), TypeError, "does not convert to float32"),
    "variable-assigned-strings": (
        lambda: an.Variable(np.ones(2)).assign(np.array(["a", "b"])),
        TypeError,
        r"assign\(value\)`: the value \(<U1\) does not convert",
    ),
    "sparse-dense-shape-a-float": (
        lambda: an.SparseGradient([0], np.ones((1, 3)), (4.5, 3)),
        TypeError,
        "integer dimensions",
    ),
    "sparse-dense-shape-inf": (
        lambda: an.SparseGradient([0], np.ones((1, 3)), (np.inf, 3)),
        TypeError,
        "integer dimensions",
    ),
    "apply_gradients-none": (
        lambda: _built()[0].apply_gradients(None),
        TypeError,
        "`grads_and_vars` must be a list",
    ),
    "apply_gradients-not-pairs": (
        lambda: _built()[0].apply_gradients([np.ones(3, F32)]),
        TypeError,
        r"grads_and_vars\[0\] of type ndarray",
    ),
    "update_step-learning-rate-a-string": (
        lambda: (lambda o, p: o.update_step(np.ones(3, F32), p, "x"))(*_built()),
        TypeError,
        "`learning_rate` must be a number",
    ),
    "finalize-none": (
        lambda: _built()[0].finalize_variable_values(None),
        TypeError,
        "`var_list` must be a list",
    ),
    "exclude-names-not-strings": (
        lambda: an.Adagrad().exclude_from_weight_decay(var_names=[1]),
        TypeError,
        r"var_names\[0\]=1",
    ),
    "exclude-list-an-int": (
        lambda: an.Adagrad().exclude_from_weight_decay(var_list=3),
        TypeError,
        "`var_list` must be a list",
    ),
    "stateless-values-none": (
        lambda: (lambda o, p: o.stateless_apply(None, [np.ones(3, F32)], [p]))(*_built()),
        TypeError,
        "`optimizer_variables` must be a list",
    ),
    "stateless-grads-none": (
        lambda: (lambda o, p: o.stateless_apply([v.numpy() for v in o.variables], None, [p]))(
            *_built()
        ),
        TypeError,
        "`grads` must be a list",
    ),
    "save_own_variables-into-an-array": (
        lambda: _built()[0].save_own_variables(np.ones(3)),
        TypeError,
        "`store` must be a dict or an h5py group",
    ),
}


@pytest.mark.parametrize("case", list(ENTRY_POINTS))
def test_an_odd_argument_to_any_entry_point_gets_a_clear_error(case):
    call, error, fragment = ENTRY_POINTS[case]
    with pytest.raises(error, match=fragment):
        call()
