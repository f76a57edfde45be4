"""Drive a real `keras.optimizers.Adagrad` and `adagrad_native.Adagrad` side by side.

Shared by the modules of `tests/compat/` (`from tests.compat import keras_pairs as kp`).
The conftest of this folder has already set `KERAS_BACKEND=jax` before anything here
imports keras.

Tolerance. Both sides compute in float32, but not with the same operation order:
global norms are summed in float64 chunks here and in float32 by XLA, `1 - momentum`
and `lr * g / sqrt(acc + eps)` may be contracted differently, schedules and clip
factors can differ by an ulp. Those are relative differences of a few float32 ulps
(1.2e-7 each) per step, so after <= 8 steps `RTOL = 2e-5` (the issue's bound) leaves a
margin of ~20x. A relative bound alone fails for values that end near 0: a parameter
is updated by *subtracting* O(0.1..3) quantities, so a result that happens to land
near 0 keeps the absolute error of its operands, a few ulps of O(1) (~1e-7 per step,
<= 1e-6 after 8 steps), while its relative error is unbounded. Hence the absolute
floor `ATOL = 1e-6`: it only matters for |value| < ATOL / RTOL = 0.05, and the summary
reports the relative difference where |keras value| >= 0.05 and the absolute one
below, separately, so the floor hides nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any

import jax
import keras
import numpy as np

import adagrad_native as an

RTOL = 2e-5
ATOL = 1e-6
SMALL = ATOL / RTOL  # below this |value|, the absolute floor is the binding bound

SHAPES = [(), (1,), (4,), (7,), (3, 4), (2, 5), (2, 3, 4), (3, 1, 2)]
SCHEDULES = [
    "ExponentialDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "InverseTimeDecay",
    "CosineDecay",
    "CosineDecayRestarts",
]
LR_KINDS = ["float", "callable", *SCHEDULES]
CLIP_MODES = [None, "clipnorm", "clipvalue", "global_clipnorm"]


# --------------------------------------------------------------------------- stats
class Stats:
    """Largest differences seen over every comparison of the session."""

    def __init__(self) -> None:
        self.values = 0
        self.comparisons = 0
        self.scenarios: set[str] = set()
        self.max_rel = 0.0
        self.max_rel_where = ""
        self.max_abs_small = 0.0
        self.max_abs_small_where = ""

    def update(self, ours: np.ndarray, ref: np.ndarray, what: str) -> None:
        self.comparisons += 1
        self.values += ref.size
        finite = np.isfinite(ref) & np.isfinite(ours)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(ours - ref)
        big = finite & (np.abs(ref) >= SMALL)
        if big.any():
            rel = float(np.max(diff[big] / np.abs(ref[big])))
            if rel > self.max_rel:
                self.max_rel, self.max_rel_where = rel, what
        small = finite & ~big
        if small.any():
            worst = float(np.max(diff[small]))
            if worst > self.max_abs_small:
                self.max_abs_small, self.max_abs_small_where = worst, what

    def summary_lines(self) -> list[str]:
        return [
            f"scenarios compared step by step: {len(self.scenarios)}; comparisons: "
            f"{self.comparisons}; values compared: {self.values}",
            f"largest relative difference (|keras| >= {SMALL:g}): {self.max_rel:.3e}"
            f"  [{self.max_rel_where}]  (bound {RTOL:g})",
            f"largest absolute difference (|keras| < {SMALL:g}): {self.max_abs_small:.3e}"
            f"  [{self.max_abs_small_where}]  (bound {ATOL:g} + {RTOL:g}*|keras|)",
        ]


STATS = Stats()


def to_numpy(x: Any) -> np.ndarray:
    """A numpy copy of a keras/jax/adagrad_native/numpy value."""
    if isinstance(x, keras.Variable):
        x = x.value
    return np.array(x, copy=True)


def assert_close(ours: Any, ref: Any, what: str) -> None:
    """|ours - keras| <= ATOL + RTOL * |keras| element-wise; same shape, same non-finites.

    Not `tests.helpers.assert_close` (ulps of the oracle's dtype per step): Keras runs
    through XLA in another order, so the bound is the module's RTOL/ATOL, and every
    comparison is recorded in STATS for the session summary.
    """
    o = to_numpy(ours)
    r = to_numpy(ref)
    assert o.shape == r.shape, f"{what}: shape {o.shape} here, {r.shape} in Keras"
    o64, r64 = o.astype(np.float64), r.astype(np.float64)
    assert np.array_equal(np.isnan(o64), np.isnan(r64)), f"{what}: NaNs differ\n{o}\n{r}"
    assert np.array_equal(np.isposinf(o64), np.isposinf(r64)) and np.array_equal(
        np.isneginf(o64), np.isneginf(r64)
    ), f"{what}: infinities differ\n{o}\n{r}"
    STATS.update(o64, r64, what)
    finite = np.isfinite(r64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(o64 - r64)
    bad = finite & (diff > ATOL + RTOL * np.abs(r64))
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, diff, -1))), o.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{o.size} elements differ beyond {RTOL:g} relative + "
            f"{ATOL:g}; worst at {tuple(int(j) for j in i)}: here {o64[i]!r}, Keras {r64[i]!r} "
            f"(rel {diff[i] / max(abs(r64[i]), 1e-300):.3e})\nhere:  {o!r}\nkeras: {r!r}"
        )


def relative_path(path: str, prefix: str) -> str:
    assert path.startswith(prefix + "/"), f"path {path!r} does not start with {prefix!r}/"
    return path[len(prefix) + 1 :]


def compare_optimizer_variables(ko: Any, ao: Any, what: str, skip: tuple[str, ...] = ()) -> None:
    """Same count, order, paths (modulo the optimizer's name) and values.

    `skip` lists relative paths whose *values* are not compared (layout still is).
    """
    kvars, avars = list(ko.variables), list(ao.variables)
    kpaths = [relative_path(v.path, ko.name) for v in kvars]
    apaths = [relative_path(v.path, ao.name) for v in avars]
    assert apaths == kpaths, f"{what}: optimizer.variables layout\nhere:  {apaths}\nkeras: {kpaths}"
    for path, k, a in zip(kpaths, kvars, avars):
        kval, aval = to_numpy(k), to_numpy(a)
        if np.issubdtype(kval.dtype, np.integer):
            # Keras' jax backend keeps counters in int32, this package in int64 (as Keras'
            # TensorFlow backend): only the values are compared.
            assert np.issubdtype(aval.dtype, np.integer), f"{what}: {path} is not an integer"
            assert np.array_equal(aval, kval), f"{what}: {path} = {aval} here, {kval} in Keras"
            continue
        assert aval.dtype == kval.dtype, f"{what}: {path} dtype {aval.dtype} vs {kval.dtype}"
        if path not in skip:
            assert_close(aval, kval, f"{what}: {path}")


# ----------------------------------------------------------------------- scenarios
@dataclasses.dataclass
class Scenario:
    """One seeded random configuration + gradient sequence, run on both optimizers."""

    seed: int
    shapes: list[tuple[int, ...]]
    container: str  # "variable" (adagrad_native.Variable) or "numpy" (plain arrays)
    lr_kind: str  # "float", "callable" or a schedule class name
    lr_args: dict[str, Any]
    kwargs: dict[str, Any]  # every other constructor argument that is set
    exclude_names: list[int] = dataclasses.field(default_factory=list)
    exclude_vars: list[int] = dataclasses.field(default_factory=list)
    overwrite: list[int] = dataclasses.field(default_factory=list)
    constrained: list[int] = dataclasses.field(default_factory=list)
    steps: int = 4
    grad_scale: float = 1.0
    none_steps: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    shuffle_calls: bool = False
    use_apply_gradients: bool = False  # apply_gradients(zip(grads, vars)) instead of apply
    grads_only: bool = False  # after the first call: apply(grads), variables omitted
    omit_missing: bool = False  # after the first call: leave None-gradient variables out

    @property
    def names(self) -> list[str]:
        prefix = "w" if self.container == "variable" else "param_"
        return [f"{prefix}{i}" for i in range(len(self.shapes))]

    @property
    def uses_cond(self) -> bool:
        """Whether Keras' jax backend runs a `lax.cond` in this scenario's steps."""
        return bool(
            self.kwargs.get("gradient_accumulation_steps")
            or self.lr_kind == "CosineDecayRestarts"
            or (self.lr_kind == "CosineDecay" and self.lr_args.get("warmup_target") is not None)
        )

    @property
    def id(self) -> str:
        kw = self.kwargs
        parts = [f"s{self.seed:03d}", "lr=" + self.lr_kind]
        if kw.get("initial_accumulator_value") is not None:
            parts.append(f"iav={kw['initial_accumulator_value']:.3g}")
        if kw.get("epsilon") is not None:
            parts.append(f"eps={kw['epsilon']:.1e}")
        if kw.get("weight_decay") is not None:
            ex = ("-xname" if self.exclude_names else "") + ("-xvar" if self.exclude_vars else "")
            parts.append("wd" + ex)
        for clip in CLIP_MODES[1:]:
            if kw.get(clip) is not None:
                parts.append(clip)
        if kw.get("use_ema"):
            freq = kw.get("ema_overwrite_frequency")
            parts.append("ema" + (f"-f{freq}" if freq else ""))
        if kw.get("loss_scale_factor") is not None:
            parts.append("lsf")
        if kw.get("gradient_accumulation_steps"):
            parts.append(f"acc{kw['gradient_accumulation_steps']}")
        if self.none_steps:
            parts.append("none")
        if self.overwrite:
            parts.append("owg")
        if self.constrained:
            parts.append("constraint")
        if self.shuffle_calls:
            parts.append("shuffled")
        if self.use_apply_gradients:
            parts.append("apply_gradients")
        if self.grads_only:
            parts.append("grads_only")
        if self.omit_missing:
            parts.append("subset")
        if kw.get("name"):
            parts.append("named")
        ndims = "".join(str(len(s)) for s in self.shapes)
        parts.append(f"{self.container}-d{ndims}-{self.steps}steps")
        return "-".join(parts)


def _schedule_args(kind: str, rng: np.random.Generator, base: float) -> dict[str, Any]:
    if kind == "ExponentialDecay":
        return {
            "initial_learning_rate": base,
            "decay_steps": int(rng.integers(1, 6)),
            "decay_rate": float(rng.uniform(0.3, 0.95)),
            "staircase": bool(rng.random() < 0.5),
        }
    if kind == "PiecewiseConstantDecay":
        nb = int(rng.integers(1, 4))
        boundaries = sorted(int(b) for b in rng.choice(np.arange(1, 8), nb, replace=False))
        values = [float(base * rng.uniform(0.2, 1.5)) for _ in range(nb + 1)]
        return {"boundaries": boundaries, "values": values}
    if kind == "PolynomialDecay":
        return {
            "initial_learning_rate": base,
            "decay_steps": int(rng.integers(2, 7)),
            "end_learning_rate": float(base * rng.uniform(0.0, 0.3)),
            "power": float(rng.choice([1.0, 0.5, 2.0])),
            "cycle": bool(rng.random() < 0.5),
        }
    if kind == "InverseTimeDecay":
        return {
            "initial_learning_rate": base,
            "decay_steps": int(rng.integers(1, 5)),
            "decay_rate": float(rng.uniform(0.1, 2.0)),
            "staircase": bool(rng.random() < 0.5),
        }
    if kind == "CosineDecay":
        args = {
            "initial_learning_rate": base,
            "decay_steps": int(rng.integers(2, 9)),
            "alpha": float(rng.uniform(0.0, 0.3)),
        }
        if rng.random() < 0.5:
            args.update(
                warmup_target=float(base * rng.uniform(1.0, 3.0)),
                warmup_steps=int(rng.integers(1, 4)),
            )
        return args
    assert kind == "CosineDecayRestarts"
    return {
        "initial_learning_rate": base,
        "first_decay_steps": int(rng.integers(1, 5)),
        "t_mul": float(rng.uniform(1.0, 2.5)),
        "m_mul": float(rng.uniform(0.5, 1.0)),
        "alpha": float(rng.uniform(0.0, 0.3)),
    }


def make_scenario(seed: int) -> Scenario:
    """A reproducible random scenario; lr kind and clip mode rotate with the seed.

    `seed % 8` picks the learning-rate kind and `(seed // 8) % 4` the clip mode, so
    every (lr kind, clip mode) pair appears; everything else is drawn at random.
    """
    rng = np.random.default_rng(7919 + seed)
    lr_kind = LR_KINDS[seed % len(LR_KINDS)]
    clip = CLIP_MODES[(seed // len(LR_KINDS)) % len(CLIP_MODES)]
    n = int(rng.integers(1, 5))
    shapes = [SHAPES[int(j)] for j in rng.integers(0, len(SHAPES), n)]
    container = "numpy" if rng.random() < 0.3 else "variable"
    base = float(10 ** rng.uniform(-2.0, -0.3))
    grad_scale = float(10 ** rng.uniform(-2.0, 0.5))
    kw: dict[str, Any] = {}
    if lr_kind == "float":
        lr_args = {"value": base}
    elif lr_kind == "callable":
        lr_args = {"base": base, "decay": float(rng.uniform(0.7, 1.0))}
    else:
        lr_args = _schedule_args(lr_kind, rng, base)
    r = rng.random()
    if r < 0.3:
        kw["initial_accumulator_value"] = 0.0
    elif r < 0.65:
        kw["initial_accumulator_value"] = float(rng.uniform(0.01, 1.0))
    r = rng.random()
    if r < 0.3:
        kw["epsilon"] = 1e-3
    elif r < 0.6:
        kw["epsilon"] = float(10 ** rng.uniform(-8, -2))
    sc = Scenario(
        seed=seed,
        shapes=shapes,
        container=container,
        lr_kind=lr_kind,
        lr_args=lr_args,
        kwargs=kw,
        grad_scale=grad_scale,
        steps=int(rng.integers(3, 9)),
    )
    if rng.random() < 0.45:
        kw["weight_decay"] = float(rng.uniform(0.004, 0.1))
        if n >= 2 and rng.random() < 0.5:
            sc.exclude_names = [int(rng.integers(0, n))]
        if n >= 2 and rng.random() < 0.5:
            sc.exclude_vars = [int(rng.integers(0, n))]
    if clip == "clipnorm":
        kw["clipnorm"] = float(rng.uniform(0.1, 3.0) * grad_scale)
    elif clip == "clipvalue":
        kw["clipvalue"] = float(rng.uniform(0.3, 1.5) * grad_scale)
    elif clip == "global_clipnorm":
        kw["global_clipnorm"] = float(rng.uniform(0.3, 4.0) * grad_scale)
    if rng.random() < 0.4:
        kw["use_ema"] = True
        if rng.random() < 0.5:
            kw["ema_momentum"] = float(rng.uniform(0.5, 0.99))
        if rng.random() < 0.6:
            kw["ema_overwrite_frequency"] = int(rng.integers(1, 4))
    if rng.random() < 0.3:
        kw["loss_scale_factor"] = float(rng.choice([128.0, 0.5, rng.uniform(1.0, 1000.0)]))
    if rng.random() < 0.3:
        kw["gradient_accumulation_steps"] = int(rng.integers(2, 5))
    if rng.random() < 0.25:
        kw["name"] = f"compat_opt_{seed}"
    # Keras' jax backend crashes (None * array) when `ema_overwrite_frequency` meets an
    # `overwrite_with_gradient` variable (it has no average): keep them apart.
    if (
        container == "variable"
        and n >= 2
        and rng.random() < 0.2
        and not kw.get("ema_overwrite_frequency")
    ):
        sc.overwrite = [int(rng.integers(0, n))]
    if container == "variable" and rng.random() < 0.2:
        candidates = [i for i in range(n) if i not in sc.overwrite]
        sc.constrained = [int(rng.choice(candidates))]
    # None gradients, but never together with gradient accumulation: Keras' jax backend
    # resets only the accumulators of the variables with a gradient there, this package
    # (as Keras' base optimizer) all of them -- test_accumulation_with_none_gradients.
    if n >= 2 and not kw.get("gradient_accumulation_steps"):
        for step in range(sc.steps):
            if rng.random() < 0.3:
                k = int(rng.integers(1, n))
                sc.none_steps[step] = sorted(int(i) for i in rng.choice(n, k, replace=False))
    sc.shuffle_calls = n >= 2 and rng.random() < 0.2
    sc.use_apply_gradients = rng.random() < 0.15
    draw = rng.random()
    sc.grads_only = not (sc.shuffle_calls or sc.use_apply_gradients) and draw < 0.15
    draw = rng.random()
    sc.omit_missing = bool(sc.none_steps) and not sc.grads_only and draw < 0.4
    return sc


# --------------------------------------------------------------------------- pairs
def make_learning_rates(sc: Scenario, clock: dict[str, int]) -> tuple[Any, Any]:
    """(keras learning_rate, adagrad_native learning_rate) for the scenario."""
    if sc.lr_kind == "float":
        return sc.lr_args["value"], sc.lr_args["value"]
    if sc.lr_kind == "callable":
        base, decay = sc.lr_args["base"], sc.lr_args["decay"]

        # Reads an external clock, so the value does not depend on how often (or when
        # within a step) each optimizer calls it.
        def keras_lr() -> float:
            return base * decay ** clock["step"]

        def native_lr() -> float:
            return base * decay ** clock["step"]

        return keras_lr, native_lr
    k_cls = getattr(keras.optimizers.schedules, sc.lr_kind)
    a_cls = getattr(an.schedules, sc.lr_kind)
    return k_cls(**sc.lr_args), a_cls(**sc.lr_args)


def make_optimizers(sc: Scenario, clock: dict[str, int], keras_cls: Any = None) -> tuple[Any, Any]:
    klr, alr = make_learning_rates(sc, clock)
    keras_cls = keras_cls or keras.optimizers.Adagrad
    return (keras_cls(learning_rate=klr, **sc.kwargs), an.Adagrad(learning_rate=alr, **sc.kwargs))


def keras_clip(v: Any) -> Any:
    return keras.ops.clip(v, -1.0, 1.0)


def native_clip(v: Any) -> np.ndarray:
    return np.clip(np.asarray(v), -1.0, 1.0)


def make_variables(sc: Scenario, rng: np.random.Generator) -> tuple[list[Any], list[Any]]:
    """Keras variables and this package's (Variables or numpy arrays), same values/names."""
    init = [np.asarray(rng.normal(size=s), dtype=np.float32) for s in sc.shapes]
    kvars, avars = [], []
    for i, (x, name) in enumerate(zip(init, sc.names)):
        kv = keras.Variable(x.copy(), dtype="float32", name=name)
        if i in sc.overwrite:
            kv.overwrite_with_gradient = True
        if i in sc.constrained:
            kv.constraint = keras_clip
        kvars.append(kv)
        if sc.container == "numpy":
            avars.append(x.copy())
        else:
            avars.append(
                an.Variable(
                    x.copy(),
                    name=name,
                    overwrite_with_gradient=i in sc.overwrite,
                    constraint=native_clip if i in sc.constrained else None,
                )
            )
    return kvars, avars


def exclude(sc: Scenario, ko: Any, ao: Any, kvars: list[Any], avars: list[Any]) -> None:
    if not (sc.exclude_names or sc.exclude_vars):
        return
    names = [sc.names[i] for i in sc.exclude_names] or None
    ko.exclude_from_weight_decay(
        var_list=[kvars[i] for i in sc.exclude_vars] or None, var_names=names
    )
    ao.exclude_from_weight_decay(
        var_list=[avars[i] for i in sc.exclude_vars] or None, var_names=names
    )


def draw_gradients(sc: Scenario, rng: np.random.Generator, step: int) -> list[Any]:
    scale = sc.grad_scale * (sc.kwargs.get("loss_scale_factor") or 1.0)
    grads: list[Any] = []
    for i, s in enumerate(sc.shapes):
        g = rng.normal(size=s) * (1.0 if i in sc.overwrite else scale)
        grads.append(np.asarray(g, dtype=np.float32))
    for i in sc.none_steps.get(step, ()):
        grads[i] = None
    return grads


def keras_context(eager_cond: bool) -> Any:
    """`jax.disable_jit()` makes Keras' `lax.cond`s run their branch eagerly, op by op.

    Keras' jax backend wraps gradient accumulation (and some schedules) in
    `jax.lax.cond` with fresh lambdas, which traces and compiles both branches on every
    eager call (~0.5 s per step here). Under `disable_jit` the same Keras code runs the
    taken branch as ordinary eager ops: the same JaxOptimizer logic, without XLA
    rewriting the branch (e.g. `x / k` into `x * (1/k)`, FMA contraction), which only
    moves last bits. `test_compiled_cond_path` runs accumulation without it.
    """
    return jax.disable_jit() if eager_cond else contextlib.nullcontext()


def keras_apply(
    ko: Any,
    grads: list[Any],
    kvars: list[Any] | None,
    *,
    eager_cond: bool,
    apply_gradients: bool = False,
) -> list[warnings.WarningMessage]:
    """One Keras step; `kvars=None` calls `apply(grads)` (build order)."""
    kgrads = [None if g is None else jax.numpy.asarray(g) for g in grads]
    with keras_context(eager_cond), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if apply_gradients:
            ko.apply_gradients(zip(kgrads, kvars))
        elif kvars is None:
            ko.apply(kgrads)
        else:
            ko.apply(kgrads, kvars)
    return caught


def native_apply(
    ao: Any, grads: list[Any], avars: list[Any] | None, *, apply_gradients: bool = False
) -> list[warnings.WarningMessage]:
    """One step here, checking that the gradient arrays are left untouched."""
    copies = [None if g is None else g.copy() for g in grads]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if apply_gradients:
            ao.apply_gradients(zip(copies, avars))
        elif avars is None:
            ao.apply(copies)
        else:
            ao.apply(copies, avars)
    for g, c in zip(grads, copies):
        if g is not None:
            assert np.array_equal(g, c, equal_nan=True), "apply() modified a gradient array"
    return caught


def missing_gradient_warnings(caught: list[warnings.WarningMessage]) -> int:
    return sum("Gradients do not exist" in str(w.message) for w in caught)


def learning_rate_value(opt: Any) -> float:
    return float(to_numpy(opt.learning_rate))


def compare_state(
    sc_id: str, ko: Any, ao: Any, kvars: list[Any], avars: list[Any], skip: tuple[str, ...] = ()
) -> None:
    for name, kv, av in zip([v.name for v in kvars], kvars, avars):
        assert_close(av, kv, f"{sc_id}: variable {name}")
    assert int(to_numpy(ao.iterations)) == int(to_numpy(ko.iterations)), (
        f"{sc_id}: iterations {int(to_numpy(ao.iterations))} vs {int(to_numpy(ko.iterations))}"
    )
    assert_close(
        np.float32(learning_rate_value(ao)),
        np.float32(learning_rate_value(ko)),
        f"{sc_id}: learning_rate",
    )
    compare_optimizer_variables(ko, ao, sc_id, skip=skip)


def run_scenario(
    sc: Scenario, *, eager_cond: bool | None = None, keras_cls: Any = None
) -> tuple[Any, Any]:
    """Runs every step on both optimizers, comparing everything after each step."""
    if eager_cond is None:
        eager_cond = sc.uses_cond
    rng = np.random.default_rng(sc.seed)
    clock = {"step": 0}
    kvars, avars = make_variables(sc, rng)
    ko, ao = make_optimizers(sc, clock, keras_cls)
    exclude(sc, ko, ao, kvars, avars)
    order = list(range(len(kvars)))
    STATS.scenarios.add(sc.id)
    for step in range(sc.steps):
        clock["step"] = step
        grads = draw_gradients(sc, rng, step)
        if sc.shuffle_calls and step > 0:  # the first call builds: keep the build order
            rng.shuffle(order)
        call = list(order)
        if sc.omit_missing and step > 0:
            call = [i for i in call if grads[i] is not None]
        kw = {"apply_gradients": sc.use_apply_gradients}
        if sc.grads_only and step > 0:
            kc = keras_apply(ko, grads, None, eager_cond=eager_cond)
            ac = native_apply(ao, grads, None)
        else:
            kc = keras_apply(
                ko, [grads[i] for i in call], [kvars[i] for i in call], eager_cond=eager_cond, **kw
            )
            ac = native_apply(ao, [grads[i] for i in call], [avars[i] for i in call], **kw)
        assert missing_gradient_warnings(ac) == missing_gradient_warnings(kc), (
            f"{sc.id}: step {step}: the missing-gradient warning differs"
        )
        compare_state(f"{sc.id} step {step}", ko, ao, kvars, avars)
    if sc.kwargs.get("use_ema"):
        ko.finalize_variable_values(kvars)
        ao.finalize_variable_values(avars)
        compare_state(f"{sc.id} finalize_variable_values", ko, ao, kvars, avars)
    return ko, ao
