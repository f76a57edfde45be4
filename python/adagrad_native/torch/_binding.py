"""The native step's hold on a torch optimizer's parameters and state.

`Binding` ties every parameter of every group, its `sum` and its `step` to one
`NativeStep` (the package's `StepEngine`), so one native call steps them all.
The torch objects stay the source of truth: each step first checks that they are
still the ones bound (a parameter whose `p.data` was replaced, a state loaded or
assigned, a group added) and binds again when they are not, so a step never
writes memory the model no longer uses.

The step counters of all parameters live in one float32 array; each state's
`step` is a 0-d tensor view of its element (torch's layout, as `fused=True` keeps
it), so the counters of one call are bumped together.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np
import torch

from adagrad_native._native import NativeStep
from adagrad_native._surface import CallPlan, Slots, StaticPlan
from adagrad_native.sparse import SparseGradient
from adagrad_native.torch._tensors import (
    Layout,
    check_parameter,
    dense_gradient,
    layout_of,
    like,
    memory_view,
    same_layout,
    sparse_gradient,
)

# Torch's formula on every tensor; each tensor's learning rate, epsilon, weight
# decay and maximize come per call (`CallPlan.per_tensor`).
_TORCH_PLAN = StaticPlan(
    epsilon=0.0,
    weight_decay=0.0,
    clip=None,
    clip_value=0.0,
    accumulation_steps=1,
    use_ema=False,
    sparse_lazy=True,
    formula="torch",
)


_PLAIN_DTYPES = (torch.float32, torch.float64, torch.float16)


def storage_key(p: torch.Tensor) -> tuple[Any, ...]:
    """What identifies the memory a parameter's elements are in (changes with `p.data = x`)."""
    return (p.data_ptr(), p.stride(), p.shape, p.dtype)


def parameter_name(group: dict[str, Any], g: int, j: int) -> str:
    """How messages name parameter j of group g (by its name when the group has names)."""
    names = group.get("param_names")
    return str(names[j]) if names else f"param_groups[{g}]['params'][{j}]"


class Entry(NamedTuple):
    """One bound parameter."""

    param: torch.Tensor
    key: tuple[Any, ...]  # storage_key(param) when bound
    layout: Layout
    target: torch.Tensor  # what the step updates: the parameter, or its staged copy
    state_sum: torch.Tensor  # the tensor in state["sum"]
    step_view: torch.Tensor  # the tensor in state["step"]
    name: str
    group: int  # its index in param_groups
    plain: bool  # contiguous and real, not bfloat16: its gradient's numpy view is taken as is
    sum_ptr: int  # state_sum.data_ptr() when bound


class Binding:
    """A NativeStep over the parameters and state of one torch optimizer.

    Args:
        param_groups: The optimizer's groups.
        state: The optimizer's state (a dict by parameter): each parameter's `sum`
            and `step` (tensors or numbers), made when absent. Sums this binding did not
            make (`own_sums`) are copied into tensors of its own, laid out as
            their parameter, and the state then holds those.
        own_sums: The sums of the binding this one replaces, by parameter id.
        fill: The starting `sum` of a parameter whose state has none (torch's
            `initial_accumulator_value` of the optimizer's defaults).
    """

    def __init__(
        self,
        param_groups: list[dict[str, Any]],
        state: dict[Any, Any],
        own_sums: dict[int, torch.Tensor],
        fill: float,
    ) -> None:
        params = [
            (p, g, j) for g, group in enumerate(param_groups) for j, p in enumerate(group["params"])
        ]
        self.groups = list(param_groups)
        self.group_sizes = [len(group["params"]) for group in param_groups]
        self.state = state
        self.group_index = np.array([g for _, g, _ in params], dtype=np.int64)
        self.steps = np.zeros(len(params), np.float32)
        step_views = torch.from_numpy(self.steps)
        entries = []
        for i, (p, g, j) in enumerate(params):
            name = parameter_name(param_groups[g], g, j)
            check_parameter(p, name)
            layout = layout_of(p)
            target = p if layout is not Layout.staged else like(p, p)
            st = state[p]
            if "sum" not in st or "step" not in st:  # a loaded state without this parameter
                st.update(step=torch.tensor(0.0), sum=like(p, fill))
            self.steps[i] = float(st["step"])
            state_sum = own_sums.get(id(p))
            if (
                st["sum"] is not state_sum  # not ours: copied, never shared
                or state_sum.dtype != target.dtype
                or not same_layout(state_sum, target)
            ):
                state_sum = adopted_sum(st["sum"], target, name)
            plain = layout is Layout.contiguous and p.dtype in _PLAIN_DTYPES
            entry = Entry(
                p,
                storage_key(p),
                layout,
                target,
                state_sum,
                step_views[i],
                name,
                g,
                plain,
                state_sum.data_ptr(),
            )
            entries.append(entry)
        self.entries = entries
        views = [Layout.dense if e.layout is Layout.dense else Layout.contiguous for e in entries]
        n = len(entries)
        self.engine = NativeStep()
        self.engine.bind(
            Slots(
                params=[memory_view(e.target, v) for e, v in zip(entries, views)],
                accumulators=[memory_view(e.state_sum, v) for e, v in zip(entries, views)],
                averages=[None] * n,
                grad_accumulators=[None] * n,
                weight_decay=[True] * n,
                overwrite=[False] * n,
                names=[e.name for e in entries],
                rowwise=[False] * n,
            )
        )
        # Only now, with everything checked: the state holds the bound tensors.
        for e in entries:
            state[e.param]["sum"], state[e.param]["step"] = e.state_sum, e.step_view
        self.engine.configure(_TORCH_PLAN)
        self._plan: CallPlan | None = None  # the last call's, while it holds
        self._plan_values: list[tuple[float, ...]] | None = None

    @property
    def own_sums(self) -> dict[int, torch.Tensor]:
        """The bound sums by parameter id (what a new binding keeps without a copy)."""
        return {id(e.param): e.state_sum for e in self.entries}

    def is_current(self, param_groups: list[dict[str, Any]], state: dict[Any, Any]) -> bool:
        """Whether the optimizer's groups, parameters and state are still the bound ones."""
        if state is not self.state or len(param_groups) != len(self.groups):
            return False
        for group, bound, size in zip(param_groups, self.groups, self.group_sizes):
            if group is not bound or len(group["params"]) != size:
                return False
        i = 0
        for group in param_groups:
            for p in group["params"]:
                e = self.entries[i]
                st = state.get(p)
                if (
                    p is not e.param
                    or st is None
                    or st.get("sum") is not e.state_sum
                    or st.get("step") is not e.step_view
                    or storage_key(p) != e.key
                    or e.state_sum.data_ptr() != e.sum_ptr  # moved (share_memory_)
                ):
                    return False
                i += 1
        return True

    def step(self) -> None:
        """One step of every parameter with a gradient, in one native call.

        Raises:
            ValueError, TypeError: For a gradient the step cannot take, before
                anything is written.
        """
        grads = self.gradients()
        stepped = [g is not None for g in grads]
        if not any(stepped):
            return
        staged = [e for e, s in zip(self.entries, stepped) if s and e.layout is Layout.staged]
        with torch.no_grad():
            for e in staged:
                e.target.copy_(e.param)
        self.engine.run(grads, self.call_plan(grads))
        with torch.no_grad():
            for e in staged:
                e.param.copy_(e.target)
        if all(stepped):
            self.steps += np.float32(1)
        else:
            self.steps[np.array(stepped)] += np.float32(1)

    def gradients(self) -> list[Any]:
        """Every parameter's gradient as the core takes it (None: no gradient)."""
        grads: list[Any] = []
        for e in self.entries:
            g = e.param.grad
            if g is None:
                grads.append(None)
                continue
            if e.plain:  # the common case: a CPU tensor's numpy view as it is
                try:
                    grads.append(g.numpy())
                    continue
                except (TypeError, RuntimeError):  # sparse, another device, requires grad
                    pass
            if g.is_sparse:
                if self.groups[e.group]["weight_decay"] != 0:  # torch's rule and message
                    raise RuntimeError(
                        "weight_decay option is not compatible with sparse gradients"
                    )
                grads.append(sparse_gradient(g, e.param, e.layout, e.name))
            else:
                grads.append(dense_gradient(g, e.target, e.layout))
        return grads

    def call_plan(self, grads: list[Any]) -> CallPlan:
        """This call's scalars per tensor: learning rate, epsilon, weight decay, maximize.

        Kept while the groups' values stay and no group decays its rate (the common
        case: only the steps move, and they do not enter the learning rate then).
        """
        groups = self.groups
        values: list[tuple[float, ...]] = [
            (float(g["lr"]), float(g["lr_decay"]), float(g["eps"]), float(g["weight_decay"]))
            + (float(g["maximize"]),)
            for g in groups
        ]
        if values == self._plan_values and self._plan is not None:
            return self._plan
        table = np.array(values).reshape(len(groups), 5)[self.group_index]
        lr, lr_decay = table[:, 0], table[:, 1]
        step = (self.steps + np.float32(1)).astype(np.float64)  # the step about to be taken
        sparse = np.array([isinstance(g, SparseGradient) for g in grads])
        clr = learning_rates(lr, lr_decay, step, sparse)
        plan = CallPlan(
            update=True,
            learning_rate=None,
            loss_scale=0.0,
            check_finite=False,
            any_update=True,
            ema_momentum=0.0,
            ema_overwrite=False,
            per_tensor=np.column_stack([clr, table[:, 2:]]),
        )
        decays = any(v[1] != 0.0 for v in values)
        self._plan, self._plan_values = (None, None) if decays else (plan, values)
        return plan


def learning_rates(
    lr: np.ndarray, lr_decay: np.ndarray, step: np.ndarray, sparse: np.ndarray
) -> np.ndarray:
    """Torch's `lr / (1 + (step - 1) * lr_decay)` per tensor, in float64, rounded as torch.

    Torch's fused kernel (dense gradients) computes the denominator as one fused
    multiply-add, its sparse path (Python) with two roundings.
    """
    denominator = 1.0 + (step - 1.0) * lr_decay
    for i in np.flatnonzero((lr_decay != 0.0) & ~sparse):
        denominator[i] = _fused_denominator(float(step[i]) - 1.0, float(lr_decay[i]))
    result: np.ndarray = lr / denominator
    return result


@functools.lru_cache(maxsize=1024)
def _fused_denominator(steps_before: float, lr_decay: float) -> float:
    """fma(steps_before, lr_decay, 1.0): the product and the sum rounded once."""
    if not (math.isfinite(steps_before) and math.isfinite(lr_decay)):
        return 1.0 + steps_before * lr_decay
    return float(Fraction(steps_before) * Fraction(lr_decay) + 1)


def adopted_sum(value: Any, target: torch.Tensor, name: str) -> torch.Tensor:
    """A state's `sum` as a new tensor laid out as `target`.

    Raises:
        ValueError: When it does not have the parameter's shape.
    """
    if not isinstance(value, torch.Tensor) or value.shape != target.shape:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"The state 'sum' of {name} has shape {shape}; expected the parameter's shape "
            f"{tuple(target.shape)}."
        )
    return like(target, value.detach().to(dtype=target.dtype, device=target.device))
