"""The implementations timed side by side: this package, numpy, torch, optax, Keras, roofline.

Each implementation is an `Impl`: it says whether it is installed, whether it can express a
workload's options, roughly how many array copies it holds, and prepares a `step()` closure
that performs one full, synchronous optimizer step. The in-place implementations step the
workload's parameter buffers with their own optimizer state (see `workloads.Data`); the jax
peers and the oracle hold copies.

Peer configuration (closest equivalent of Keras 3 Adagrad, lr=0.01, initial accumulator 0.1,
epsilon 1e-7 inside the square root):
- torch: `initial_accumulator_value=0.1, eps=1e-7`; torch adds eps *outside* the square root.
- optax: `adagrad(lr, initial_accumulator_value=0.1, eps=1e-7)`; optax adds eps inside the
  square root, like Keras 3.  Gradient accumulation uses `optax.MultiSteps`.
- Keras 3 (jax backend): the same Keras optimizer through a jitted `stateless_apply`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.workloads import (
    LEARNING_RATE,
    SLOT_ROLES,
    Data,
    Roofline,
    Workload,
    to_numpy_dtype,
)
from tests.oracle import ReferenceAdagrad

os.environ.setdefault("KERAS_BACKEND", "jax")

INIT_ACC = 0.1
EPSILON = 1e-7
SLOW_ELEMENTS = 50_000_000  # numpy implementations get 1 warm-up + 2 timed steps above this

StepFn = Callable[[], None]


def _installed(module: str) -> str | None:
    """None when the module can be imported, else a note saying it is missing."""
    return None if importlib.util.find_spec(module) else f"`{module}` is not installed"


def _state_slots(wl: Workload) -> int:
    """Number of per-parameter optimizer buffers Keras-style Adagrad keeps."""
    return 1 + bool(wl.options.get("use_ema")) + bool(wl.options.get("gradient_accumulation_steps"))


@dataclass(frozen=True)
class Impl:
    """An implementation of an Adagrad step that the suite can time."""

    key: str
    label: str
    prepare: Callable[[Workload, Data], StepFn]
    module: str | None = None
    plain_only: bool = False  # cannot express clipnorm / weight decay / EMA
    accumulation: bool = True  # can express gradient accumulation
    copies: float = 3.0  # rough number of parameter-sized arrays held (for memory grouping)
    slow: bool = False  # limited steps on very large workloads

    def unavailable(self, wl: Workload) -> str | None:
        """Why this implementation is not run on the workload, or None."""
        if self.module and (missing := _installed(self.module)):
            return missing
        if wl.options.get("gradient_accumulation_steps") and not self.accumulation:
            return "no gradient-accumulation equivalent"
        if self.plain_only and not wl.plain:
            return "no equivalent of clipnorm/weight_decay/use_ema in this optimizer"
        return None

    def memory_bytes(self, wl: Workload) -> float:
        itemsize = np.dtype(to_numpy_dtype(wl.dtype)).itemsize
        return wl.elements * itemsize * (self.copies + _state_slots(wl))


# -- this package --------------------------------------------------------------------------


def native_optimizer(wl: Workload, data: Data, accumulator_dtype: str | None = None) -> Any:
    """The package's optimizer for the workload, built on its parameters (made once per Data).

    The native rows step it; the roofline probe and the torch row on the package's state
    stream its buffers.
    """
    if accumulator_dtype not in data.optimizers:
        import adagrad_native as an

        kwargs: dict[str, Any] = dict(wl.options)
        if accumulator_dtype:
            kwargs["accumulator_dtype"] = accumulator_dtype
        opt = an.Adagrad(
            learning_rate=LEARNING_RATE,
            initial_accumulator_value=INIT_ACC,
            epsilon=EPSILON,
            **kwargs,
        )
        opt.build(data.params)
        data.optimizers[accumulator_dtype] = opt
    return data.optimizers[accumulator_dtype]


def native_buffers(opt: Any, data: Data) -> dict[str, list[np.ndarray]]:
    """Every tensor's buffers by role: `grad`, `param` and `workloads.SLOT_ROLES`.

    The slots come from the public `variables`, which are in Keras' order: grouped by kind,
    each kind in the order of the trainable variables.
    """
    by_role: dict[str, list[np.ndarray]] = {"grad": data.grads, "param": data.params}
    for var in opt.variables:
        role = next((r for r in SLOT_ROLES if var.path.endswith("_" + r)), None)
        if role is not None:
            by_role.setdefault(role, []).append(var.value)
    return by_role


def _native(accumulator_dtype: str | None) -> Callable[[Workload, Data], StepFn]:
    def prepare(wl: Workload, data: Data) -> StepFn:
        opt = native_optimizer(wl, data, accumulator_dtype)
        params, grads = data.params, data.grads

        def step() -> None:
            opt.apply(grads, params)

        return step

    return prepare


# -- numpy ---------------------------------------------------------------------------------


def _oracle(wl: Workload, data: Data) -> StepFn:
    ref = ReferenceAdagrad(
        learning_rate=LEARNING_RATE,
        initial_accumulator_value=INIT_ACC,
        epsilon=EPSILON,
        **wl.options,
    )
    ref.build(data.params)  # copies the parameters
    grads = data.grads

    def step() -> None:
        ref.apply(grads)

    return step


def _numpy_loop(wl: Workload, data: Data) -> StepFn:
    """The smallest in-place numpy loop of the Keras 3 update (one scratch array per tensor)."""
    params = data.params
    accs = [np.full_like(p, INIT_ACC) for p in params]
    scratch = [np.empty_like(p) for p in params]
    grads = data.grads
    lr = [p.dtype.type(LEARNING_RATE) for p in params]
    eps = [p.dtype.type(EPSILON) for p in params]

    def step() -> None:
        for p, g, a, t, lr_i, eps_i in zip(params, grads, accs, scratch, lr, eps, strict=True):
            np.multiply(g, g, out=t)
            a += t
            np.add(a, eps_i, out=t)
            np.sqrt(t, out=t)
            np.divide(g, t, out=t)
            t *= lr_i
            p -= t

    return step


# -- torch ---------------------------------------------------------------------------------


def _torch_tensor(a: np.ndarray) -> Any:
    """A torch tensor sharing the numpy buffer (bfloat16 through an int16 view)."""
    import torch

    if a.dtype == to_numpy_dtype("bfloat16"):
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _torch(on_native_state: bool = False, **flags: bool) -> Callable[[Workload, Data], StepFn]:
    """torch.optim.Adagrad with its own state, or stepping the package's accumulators."""

    def prepare(wl: Workload, data: Data) -> StepFn:
        import torch

        import adagrad_native as an

        torch.set_num_threads(an.get_num_threads())
        params = []
        for p, g in zip(data.params, data.grads, strict=True):
            t = _torch_tensor(p).requires_grad_(True)  # shares the numpy buffers, no copies
            t.grad = _torch_tensor(g)
            params.append(t)
        opt = torch.optim.Adagrad(
            params, lr=LEARNING_RATE, initial_accumulator_value=INIT_ACC, eps=EPSILON, **flags
        )
        if on_native_state:
            accumulators = native_buffers(native_optimizer(wl, data), data)["accumulator"]
            for t, acc in zip(params, accumulators, strict=True):
                opt.state[t]["sum"] = _torch_tensor(acc)

        def step() -> None:
            with torch.no_grad():
                opt.step()

        return step

    return prepare


# -- jax: optax and Keras ------------------------------------------------------------------


def _jax_synchronous() -> None:
    """Makes jax finish all of a step's work before the call returns.

    With the default asynchronous CPU dispatch, a jax thread was still busy after
    `block_until_ready` returned (tens of ms of CPU after an optax step on W5), which slowed
    whatever was timed next by up to 1.5x and left that work out of jax's own time.
    """
    import jax

    if "jax_cpu_enable_async_dispatch" in jax.config.values:
        jax.config.update("jax_cpu_enable_async_dispatch", False)


def _optax(wl: Workload, data: Data) -> StepFn:
    import jax
    import jax.numpy as jnp
    import optax

    _jax_synchronous()
    tx = optax.adagrad(LEARNING_RATE, initial_accumulator_value=INIT_ACC, eps=EPSILON)
    if wl.accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=wl.accumulation_steps)
    params = [jnp.asarray(p) for p in data.params]
    grads = [jnp.asarray(g) for g in data.grads]
    state = tx.init(params)

    def update(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted = jax.jit(update, donate_argnums=(0, 1))
    box = [params, state]

    def step() -> None:
        box[0], box[1] = jitted(box[0], box[1], grads)
        jax.block_until_ready(box)  # parameters and state: the whole step

    return step


def _keras(wl: Workload, data: Data) -> StepFn:
    import jax
    import jax.numpy as jnp
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras backend is {keras.backend.backend()!r}, not 'jax'")
    _jax_synchronous()
    variables = [keras.Variable(p, dtype=wl.dtype) for p in data.params]
    opt = keras.optimizers.Adagrad(
        learning_rate=LEARNING_RATE,
        initial_accumulator_value=INIT_ACC,
        epsilon=EPSILON,
        **wl.options,
    )
    opt.build(variables)
    box = [[v.value for v in opt.variables], [v.value for v in variables]]
    del variables  # the jax buffers now belong to `box` (and are donated every step)
    grads = [jnp.asarray(g) for g in data.grads]

    # As Keras' JAX trainer runs it in `fit`: a jitted step function that closes
    # over the optimizer and takes the state, donated. (Jitting the bound method
    # `opt.stateless_apply` ran the same step 3-4x slower.)
    def train_step(state: Any, grads: Any) -> Any:
        optimizer_variables, trainable_variables = state
        new_trainable, new_optimizer = opt.stateless_apply(
            optimizer_variables, grads, trainable_variables
        )
        return new_optimizer, new_trainable

    jitted = jax.jit(train_step, donate_argnums=0)

    def step() -> None:
        box[0], box[1] = jitted((box[0], box[1]), grads)
        jax.block_until_ready(box)  # parameters and state: the whole step

    return step


IMPLS: tuple[Impl, ...] = (
    Impl("native", "adagrad_native", _native(None), module="adagrad_native", copies=1),
    Impl(
        "torch-fused",
        "torch fused=True",
        _torch(fused=True),
        module="torch",
        plain_only=True,
        accumulation=False,
        copies=1,
    ),
    Impl(
        "torch-fused-native-state",
        "torch fused=True on adagrad_native's state",
        _torch(on_native_state=True, fused=True),
        module="torch",
        plain_only=True,
        accumulation=False,
        copies=0,
    ),
    Impl(
        "torch-loop",
        "torch foreach=False",
        _torch(foreach=False),
        module="torch",
        plain_only=True,
        accumulation=False,
        copies=1,
    ),
    Impl("optax", "optax adagrad (jit)", _optax, module="optax", plain_only=True, copies=3),
    Impl("keras", "Keras 3 jax (jitted train step)", _keras, module="keras", copies=3),
    Impl(
        "numpy-loop",
        "numpy loop (minimal)",
        _numpy_loop,
        plain_only=True,
        accumulation=False,
        copies=2,
        slow=True,
    ),
    Impl("oracle", "numpy oracle (tests/oracle)", _oracle, copies=4, slow=True),
)

NATIVE_ACC32 = Impl(
    "native-acc32",
    "adagrad_native accumulator_dtype=float32",
    _native("float32"),
    module="adagrad_native",
    copies=3,
)


# -- the roofline probe --------------------------------------------------------------------


def roofline_step(roofline: Roofline, wl: Workload, data: Data) -> StepFn:
    """A step that moves the roofline's bytes with the native probe, pass by pass.

    The probe streams the native optimizer's own buffers (and the shared parameters and
    gradients), so it moves the bytes of the step it bounds on the very same pages.
    """
    from benchmarks.probe import stream_probe

    buffers = native_buffers(native_optimizer(wl, data, roofline.accumulator_dtype), data)
    probes = [
        stream_probe(
            [
                ([buffers[r][i] for r in p.read_only], [buffers[r][i] for r in p.read_write])
                for i in range(len(data.params))
            ]
        )
        for p in roofline.passes
    ]

    def step() -> None:
        for probe in probes:
            probe()

    return step


def probe_unavailable() -> str | None:
    """Why the roofline probe cannot run, or None."""
    from benchmarks import probe

    return probe.unavailable()
