"""adagrad_native.Adagrad vs the real keras.optimizers.Adagrad (Keras 3, jax backend, CPU).

128 seeded random scenarios drive both optimizers side by side and compare, after
every step, the trainable variables, `iterations`, the learning rate and
`optimizer.variables` (count, order, paths modulo the optimizer's name, values).
Then the documented deviations (docs/keras-pipeline.md) are asserted explicitly, each with the
Keras behaviour it departs from. Helpers and the tolerance rationale: keras_pairs.py.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest

keras = pytest.importorskip("keras")
jax = pytest.importorskip("jax")

from keras.src.optimizers.base_optimizer import BaseOptimizer  # noqa: E402

import adagrad_native as an  # noqa: E402
from tests.compat import keras_pairs as kp  # noqa: E402

if keras.backend.backend() != "jax":  # pragma: no cover - KERAS_BACKEND set by the user
    pytest.skip(
        "the compat tests target Keras' jax backend (KERAS_BACKEND=jax)", allow_module_level=True
    )

N_SCENARIOS = 128
SCENARIOS = [kp.make_scenario(seed) for seed in range(N_SCENARIOS)]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[sc.id for sc in SCENARIOS])
def test_random_scenario(sc):
    kp.run_scenario(sc)


def test_scenarios_cover_every_argument():
    """The random scenarios exercise every constructor argument and situation asked for."""
    seen = collections.Counter()
    for sc in SCENARIOS:
        seen.update(k for k, v in sc.kwargs.items() if v is not None and v is not False)
        seen["lr=" + sc.lr_kind] += 1
        seen.update(f"rank{len(s)}" for s in sc.shapes)
        seen[f"steps{sc.steps}"] += 1
        seen["container=" + sc.container] += 1
        seen["exclude_names"] += bool(sc.exclude_names)
        seen["exclude_vars"] += bool(sc.exclude_vars)
        seen["none_gradients"] += bool(sc.none_steps)
        seen["overwrite_with_gradient"] += bool(sc.overwrite)
        seen["constraint"] += bool(sc.constrained)
        seen["shuffled_calls"] += sc.shuffle_calls
        seen["apply_gradients"] += sc.use_apply_gradients
        seen["grads_only"] += sc.grads_only
        seen["subset_calls"] += sc.omit_missing
        seen["ema_without_overwrite"] += bool(
            sc.kwargs.get("use_ema") and not sc.kwargs.get("ema_overwrite_frequency")
        )
        seen["ema_with_accumulation"] += bool(
            sc.kwargs.get("use_ema") and sc.kwargs.get("gradient_accumulation_steps")
        )
        seen["cosine_warmup"] += "warmup_target" in sc.lr_args
        seen["staircase"] += bool(sc.lr_args.get("staircase"))
        seen["cycle"] += bool(sc.lr_args.get("cycle"))
    required = [
        "initial_accumulator_value",
        "epsilon",
        "weight_decay",
        "clipnorm",
        "clipvalue",
        "global_clipnorm",
        "use_ema",
        "ema_momentum",
        "ema_overwrite_frequency",
        "loss_scale_factor",
        "gradient_accumulation_steps",
        "name",
        *("lr=" + k for k in kp.LR_KINDS),
        "rank0",
        "rank1",
        "rank2",
        "rank3",
        "steps3",
        "steps8",
        "container=numpy",
        "container=variable",
        "exclude_names",
        "exclude_vars",
        "none_gradients",
        "overwrite_with_gradient",
        "constraint",
        "shuffled_calls",
        "apply_gradients",
        "grads_only",
        "subset_calls",
        "ema_without_overwrite",
        "ema_with_accumulation",
        "cosine_warmup",
        "staircase",
        "cycle",
    ]
    missing = [r for r in required if seen[r] < 2]
    assert not missing, f"features covered by fewer than 2 scenarios: {missing}"
    assert len({sc.id for sc in SCENARIOS}) == N_SCENARIOS


# Accumulation scenarios re-run with Keras' real, compiled `lax.cond`s (slow: ~0.5 s per
# step), to show that running the conds eagerly elsewhere changes nothing that matters.
COMPILED = [
    dataclasses.replace(sc, steps=4)
    for sc in SCENARIOS
    if sc.kwargs.get("gradient_accumulation_steps") and sc.lr_kind in ("float", "ExponentialDecay")
][:2]


@pytest.mark.parametrize("sc", COMPILED, ids=[sc.id for sc in COMPILED])
def test_compiled_cond_path(sc):
    kp.run_scenario(sc, eager_cond=False)


# ------------------------------------------------ gradient accumulation + None gradients
class BaseSemanticsAdagrad(keras.optimizers.Adagrad):
    """Keras' Adagrad with the backend-agnostic `BaseOptimizer._backend_apply_gradients`.

    That is what Keras' TensorFlow, torch and numpy backends run (and what this package
    follows). On jax it only works with `jax.disable_jit()`: its `ops.cond` branches
    assign to variables, which a traced `lax.cond` cannot.
    """

    _backend_apply_gradients = BaseOptimizer._backend_apply_gradients


def _accumulation_none_run(keras_cls):
    rng = np.random.default_rng(42)
    shapes = [(3,), (2, 2)]
    kvars = [
        keras.Variable(np.asarray(rng.normal(size=s), np.float32), name=f"w{i}")
        for i, s in enumerate(shapes)
    ]
    avars = [an.Variable(kp.to_numpy(v), name=f"w{i}") for i, v in enumerate(kvars)]
    ko = keras_cls(learning_rate=0.1, gradient_accumulation_steps=2)
    ao = an.Adagrad(learning_rate=0.1, gradient_accumulation_steps=2)
    grads = [[np.asarray(rng.normal(size=s), np.float32) for s in shapes] for _ in range(4)]
    grads[1][1] = None  # step 1 is an update step; w1 has no gradient there
    return ko, ao, kvars, avars, grads


def test_accumulation_with_none_gradients_differs_from_keras_jax_by_design():
    """Documented deviation: which gradient accumulators an update step resets.

    Keras' jax backend (`JaxOptimizer._backend_apply_gradients`) resets only the
    accumulators of the variables that have a gradient on an update step; Keras' base
    optimizer (TensorFlow/torch/numpy backends), and this package, reset all of them.
    Here w1 accumulates g1 on micro-step 0 and has no gradient on update step 1: Keras-jax
    keeps g1 in `w1_gradient_accumulator`, this package zeroes it. Everything else matches,
    and once that one accumulator is aligned the runs agree again.
    """
    ko, ao, kvars, avars, grads = _accumulation_none_run(keras.optimizers.Adagrad)
    g1 = grads[0][1]
    for step in range(2):
        kp.keras_apply(ko, grads[step], kvars, eager_cond=True)
        kp.native_apply(ao, grads[step], avars)
    skip = ("w1_gradient_accumulator",)
    kp.compare_state("acc+None step 1", ko, ao, kvars, avars, skip=skip)
    k_acc = {v.path.split("/", 1)[1]: v for v in ko.variables}["w1_gradient_accumulator"]
    a_acc = {v.path.split("/", 1)[1]: v for v in ao.variables}["w1_gradient_accumulator"]
    np.testing.assert_array_equal(kp.to_numpy(k_acc), g1)  # Keras-jax kept the sum
    np.testing.assert_array_equal(kp.to_numpy(a_acc), np.zeros_like(g1))  # reset here
    k_acc.assign(np.zeros_like(g1))
    for step in range(2, 4):
        kp.keras_apply(ko, grads[step], kvars, eager_cond=True)
        kp.native_apply(ao, grads[step], avars)
        kp.compare_state(f"acc+None step {step}", ko, ao, kvars, avars)


def test_accumulation_with_none_gradients_matches_keras_base_optimizer():
    """The same run against Keras' own base-optimizer semantics: identical at every step."""
    ko, ao, kvars, avars, grads = _accumulation_none_run(BaseSemanticsAdagrad)
    for step in range(4):
        kp.keras_apply(ko, grads[step], kvars, eager_cond=True)
        kp.native_apply(ao, grads[step], avars)
        kp.compare_state(f"base acc+None step {step}", ko, ao, kvars, avars)


# Random scenarios with both gradient accumulation and None gradients, against Keras'
# base-optimizer semantics (the combination the main scenarios leave out).
BASE_SCENARIOS = []
for _seed in range(1000, 1100):
    _sc = kp.make_scenario(_seed)
    if len(_sc.shapes) >= 2 and not _sc.overwrite:
        _k = 2 + _seed % 3
        _sc.kwargs["gradient_accumulation_steps"] = _k
        _sc.none_steps = {s: [s % len(_sc.shapes)] for s in range(_sc.steps) if s % 2}
        BASE_SCENARIOS.append(_sc)
    if len(BASE_SCENARIOS) == 8:
        break


@pytest.mark.parametrize("sc", BASE_SCENARIOS, ids=[sc.id for sc in BASE_SCENARIOS])
def test_accumulation_none_scenarios_against_keras_base_optimizer(sc):
    kp.run_scenario(sc, eager_cond=True, keras_cls=BaseSemanticsAdagrad)


# ------------------------------------------------------------- documented deviations
@pytest.mark.parametrize(
    "arg",
    [
        "learning_rate",
        "initial_accumulator_value",
        "epsilon",
        "weight_decay",
        "clipnorm",
        "clipvalue",
        "global_clipnorm",
    ],
)
def test_negative_hyperparameters_raise_here_keras_accepts(arg):
    """Deviation (docs/keras-pipeline.md):
    Keras never checks these signs; this package raises ValueError."""
    value = -0.1
    keras.optimizers.Adagrad(**{arg: value})  # Keras: accepted silently
    with pytest.raises(ValueError, match=arg):
        an.Adagrad(**{arg: value})


# Keras warns that serializing its lambda learning rate is unsafe: that is the Keras
# behaviour this test contrasts with, not something to check here.
@pytest.mark.filterwarnings("ignore:The object being serialized includes a `lambda`:UserWarning")
def test_callable_learning_rate_get_config_raises_here():
    """Deviation (docs/keras-pipeline.md):
    Keras serializes a lambda's bytecode (or writes 0.5 for unknown
    types); this package refuses a plain callable with a TypeError."""
    config = keras.optimizers.Adagrad(learning_rate=lambda: 0.1).get_config()
    assert isinstance(config["learning_rate"], dict)  # Keras' opaque lambda dump
    with pytest.raises(TypeError, match="callable"):
        an.Adagrad(learning_rate=lambda: 0.1).get_config()


def test_float16_math_is_float32_here():
    """Deviation (docs/keras-pipeline.md):
    Keras computes float16 steps in float16 (several roundings); this
    package computes in float32 and rounds once on store."""
    rng = np.random.default_rng(16)
    x = np.asarray(rng.normal(size=2048), np.float16)
    g = np.asarray(rng.normal(size=2048) * 0.3, np.float16)
    kv = keras.Variable(x.copy(), dtype="float16", name="h")
    av = an.Variable(x.copy(), name="h")
    ko, ao = keras.optimizers.Adagrad(learning_rate=0.1), an.Adagrad(learning_rate=0.1)
    ko.apply([jax.numpy.asarray(g)], [kv])
    ao.apply([g.copy()], [av])
    # The exact step from the stored float16 state: accumulator initialised to
    # float16(0.1), float32 learning rate, one rounding per stored result.
    acc = np.float16(0.1).astype(np.float64) + g.astype(np.float64) ** 2
    lr = np.float64(np.float32(0.1))
    exact = x.astype(np.float64) - lr * g / np.sqrt(acc + np.float64(np.float32(1e-7)))
    ulp = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64)
    ours_err = np.abs(kp.to_numpy(av).astype(np.float64) - exact) / ulp
    keras_err = np.abs(kp.to_numpy(kv).astype(np.float64) - exact) / ulp
    assert ours_err.max() <= 0.5 + 1e-3  # rounded once: correctly rounded
    np.testing.assert_array_equal(kp.to_numpy(ao.variables[-1]), acc.astype(np.float16))
    # Keras' float16 chain (g*g, +, /, sqrt, lr*g, - each rounded to float16) is not,
    # though it stays within a couple hundred float16 ulps (near-cancelling elements).
    assert keras_err.max() > 1
    assert np.count_nonzero(kp.to_numpy(ko.variables[-1]) != acc.astype(np.float16)) > 0
    assert np.count_nonzero(kp.to_numpy(av) != kp.to_numpy(kv)) > 0
    np.testing.assert_allclose(kp.to_numpy(kv), kp.to_numpy(av), rtol=1e-2, atol=1e-3)


def test_integer_learning_rate_accepted_here():
    """Deviation (docs/keras-pipeline.md):
    Keras insists on a Python float; any real number works here."""
    with pytest.raises(ValueError):
        keras.optimizers.Adagrad(learning_rate=1)
    assert an.Adagrad(learning_rate=1).get_config()["learning_rate"] == 1.0


def test_exclude_from_weight_decay_after_build_raises_here():
    """Deviation (docs/keras-pipeline.md) -- Keras documents the rule but its guard never fires."""
    kv = keras.Variable(np.ones(3, np.float32), name="w")
    ko = keras.optimizers.Adagrad(weight_decay=0.1)
    ko.build([kv])
    ko.exclude_from_weight_decay(var_names=["w"])  # Keras: silently accepted
    ao = an.Adagrad(weight_decay=0.1)
    ao.build([an.Variable(np.ones(3, np.float32), name="w")])
    with pytest.raises(ValueError, match="before the optimizer is built"):
        ao.exclude_from_weight_decay(var_names=["w"])


def test_load_own_variables_count_mismatch_raises_here():
    """Deviation (docs/keras-pipeline.md):
    Keras warns and loads nothing; this package raises, naming both."""
    kv = keras.Variable(np.ones(3, np.float32), name="w")
    ko = keras.optimizers.Adagrad()
    ko.build([kv])
    with pytest.warns(UserWarning, match="Skipping variable loading"):
        ko.load_own_variables({"0": np.array(0)})
    ao = an.Adagrad()
    ao.build([an.Variable(np.ones(3, np.float32), name="w")])
    with pytest.raises(ValueError, match="expected 3 entries"):
        ao.load_own_variables({"0": np.array(0)})


def test_empty_gradient_list_is_a_no_op_in_both():
    kv = [keras.Variable(np.ones(3, np.float32), name="w")]
    av = [an.Variable(np.ones(3, np.float32), name="w")]
    ko, ao = keras.optimizers.Adagrad(), an.Adagrad()
    ko.apply([], kv)
    ao.apply([], av)
    assert not ko.built and not ao.built
    assert int(kp.to_numpy(ko.iterations)) == int(kp.to_numpy(ao.iterations)) == 0


def test_all_none_gradients_raise_in_both():
    kv = [keras.Variable(np.ones(3, np.float32), name="w")]
    av = [an.Variable(np.ones(3, np.float32), name="w")]
    ko, ao = keras.optimizers.Adagrad(), an.Adagrad()
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        ko.apply([None], kv)
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        ao.apply([None], av)
    assert ko.built and ao.built  # both build before refusing
    kp.compare_optimizer_variables(ko, ao, "all None")


# --------------------------------------------------------------------- edge values
def _edge_scenario(kwargs, *, lr=0.1, steps=3, seed=5):
    return kp.Scenario(
        seed=seed,
        shapes=[(4,), (2, 3)],
        container="variable",
        lr_kind="float",
        lr_args={"value": lr},
        kwargs=kwargs,
        steps=steps,
    )


EDGE = {
    "clipnorm=0": {"clipnorm": 0.0},  # 0 means off in Keras (`clipnorm and clipnorm > 0`)
    "clipvalue=0": {"clipvalue": 0.0},
    "global_clipnorm=0": {"global_clipnorm": 0.0},
    "weight_decay=0": {"weight_decay": 0.0},
    "epsilon=0": {"epsilon": 0.0},
    "iav=0-eps=0": {"initial_accumulator_value": 0.0, "epsilon": 0.0},
    "ema_momentum=0": {"use_ema": True, "ema_momentum": 0.0, "ema_overwrite_frequency": 2},
    "ema_momentum=1": {"use_ema": True, "ema_momentum": 1.0},
    "gradient_accumulation_steps=0": {"gradient_accumulation_steps": 0},
    "gradient_accumulation_steps=None": {"gradient_accumulation_steps": None},
    "loss_scale_factor=1": {"loss_scale_factor": 1.0},
    "huge-iav": {"initial_accumulator_value": 1e6},
}


@pytest.mark.parametrize("name", list(EDGE))
def test_edge_values(name):
    sc = _edge_scenario(EDGE[name])
    kp.run_scenario(sc)
    ko, ao = kp.make_optimizers(
        dataclasses.replace(sc, kwargs={**sc.kwargs, "name": "edge"}), {"step": 0}
    )
    assert ao.get_config() == ko.get_config()


def test_zero_learning_rate():
    kp.run_scenario(_edge_scenario({"weight_decay": 0.1, "use_ema": True}, lr=0.0))


def test_zero_gradient_elements_with_zero_accumulator_and_epsilon():
    """0 / sqrt(0 + 0) is NaN in Keras; it must be the same NaN here."""
    kv = [keras.Variable(np.array([1.0, 2.0, 3.0], np.float32), name="w")]
    av = [an.Variable(np.array([1.0, 2.0, 3.0], np.float32), name="w")]
    kw = {"learning_rate": 0.1, "initial_accumulator_value": 0.0, "epsilon": 0.0}
    ko, ao = keras.optimizers.Adagrad(**kw), an.Adagrad(**kw)
    g = [np.array([0.0, 1.0, -2.0], np.float32)]
    kp.keras_apply(ko, g, kv, eager_cond=False)
    kp.native_apply(ao, g, av)
    kp.compare_state("0/sqrt(0)", ko, ao, kv, av)


@pytest.mark.parametrize("clip", kp.CLIP_MODES, ids=lambda c: str(c))
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
def test_nonfinite_gradients_propagate_as_keras(clip, bad):
    """Default policy: inf/NaN flow like Keras (global_clipnorm turns all into NaN)."""
    kwargs = {"use_ema": True} if clip is None else {clip: 0.5, "use_ema": True}
    rng = np.random.default_rng(9)
    kvars = [
        keras.Variable(np.asarray(rng.normal(size=s), np.float32), name=f"w{i}")
        for i, s in enumerate([(5,), (2, 2)])
    ]
    avars = [an.Variable(kp.to_numpy(v), name=f"w{i}") for i, v in enumerate(kvars)]
    ko, ao = keras.optimizers.Adagrad(0.1, **kwargs), an.Adagrad(0.1, **kwargs)
    for step in range(3):
        grads = [np.asarray(rng.normal(size=v.shape), np.float32) for v in kvars]
        if step == 1:
            grads[0][2] = bad
        kp.keras_apply(ko, grads, kvars, eager_cond=False)
        kp.native_apply(ao, grads, avars)
        kp.compare_state(f"nonfinite {clip} {bad} step {step}", ko, ao, kvars, avars)


def test_learning_rate_setter_mid_training():
    sc = _edge_scenario({"use_ema": True, "weight_decay": 0.05}, steps=2)
    rng = np.random.default_rng(1)
    kvars, avars = kp.make_variables(sc, rng)
    ko, ao = kp.make_optimizers(sc, {"step": 0})
    for step, lr in enumerate([None, 0.5, None, 0.01]):
        if lr is not None:
            ko.learning_rate = lr
            ao.learning_rate = lr
        grads = kp.draw_gradients(sc, rng, step)
        kp.keras_apply(ko, grads, kvars, eager_cond=False)
        kp.native_apply(ao, grads, avars)
        kp.compare_state(f"lr setter step {step}", ko, ao, kvars, avars)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)
    kso = keras.optimizers.Adagrad(schedule)
    aso = an.Adagrad(an.schedules.ExponentialDecay(0.1, 2, 0.5))
    with pytest.raises(TypeError):
        kso.learning_rate = 0.1
    with pytest.raises(TypeError):
        aso.learning_rate = 0.1
