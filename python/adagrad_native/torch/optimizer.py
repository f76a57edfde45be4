"""`Adagrad`: `torch.optim.Adagrad` stepped by the package's native core.

The constructor, the parameter groups, the state (`step`, `sum`) and its
`state_dict`, hooks, LR schedulers and `zero_grad` are torch's own
(`torch.optim.Optimizer`); only the step differs: every parameter of every group
in one native call, with the numbers of `torch.optim.Adagrad(fused=True)`. See
docs/migrating.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from adagrad_native.torch._binding import Binding, parameter_name
from adagrad_native.torch._tensors import check_parameter, like


class Adagrad(torch.optim.Optimizer):
    """`torch.optim.Adagrad` for CPU tensors, stepped in one native call.

    A drop-in replacement: the same arguments, defaults, parameter groups,
    state (`step` and `sum` per parameter, torch's `state_dict` layout) and
    numbers as `torch.optim.Adagrad(fused=True)`, bit for bit on dense
    gradients (float32 and float64; float16/bfloat16 parameters are computed in
    float32 and rounded once). Sparse COO gradients (`nn.Embedding(sparse=True)`,
    `nn.EmbeddingBag(sparse=True)`) are taken uncoalesced, as torch's own sparse
    path computes them except for its square root (torch's may differ from the
    correctly rounded one by 1 ulp) and the order in which repeated ids are
    summed (here: the order they come in).

    Args:
        params: Parameters or parameter groups (dicts), as for any torch optimizer.
        lr: Learning rate (a float, or a one-element tensor).
        lr_decay: The learning rate at step t is `lr / (1 + (t - 1) * lr_decay)`.
        weight_decay: L2 penalty, added to the gradient (`g + weight_decay * p`).
        initial_accumulator_value: The starting value of each `sum`.
        eps: Added to the square root of the sum.
        foreach: Accepted for compatibility; the step is always one fused call.
        maximize: Ascend instead of descend.
        differentiable: Must be False: the step runs outside autograd.
        fused: Accepted for compatibility (the step is always fused).

    Raises:
        ValueError: For an argument out of range, `differentiable=True`, or a
            parameter not on the CPU.
        RuntimeError: For `fused=True` with `foreach=True`, as torch.
    """

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        checks = {
            "learning rate": lr,
            "lr_decay value": lr_decay,
            "weight_decay value": weight_decay,
            "initial_accumulator_value value": initial_accumulator_value,
            "epsilon value": eps,
        }
        for what, value in checks.items():
            if not 0.0 <= value:
                raise ValueError(f"Invalid {what}: {value}")
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        _check_differentiable(differentiable)
        self._lock = threading.RLock()
        self._binding: Binding | None = None
        self._new_sums: dict[int, torch.Tensor] = {}  # made by add_param_group, not yet bound
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a group (as torch's), and each new parameter's state (`step` 0, `sum`).

        Raises:
            ValueError, TypeError: For `differentiable=True` or a parameter the
                native step cannot update; the group is then not added.
        """
        super().add_param_group(param_group)
        index = len(self.param_groups) - 1
        group = self.param_groups[index]
        try:
            _check_differentiable(group["differentiable"])
            for j, p in enumerate(group["params"]):
                check_parameter(p, parameter_name(group, index, j))
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise
        fill = self.defaults["initial_accumulator_value"]  # as torch: not the group's
        for p in group["params"]:
            if not self.state.get(p):
                self.state[p] = {"step": torch.tensor(0.0), "sum": like(p, fill)}
                self._new_sums[id(p)] = self.state[p]["sum"]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adagrad step of every parameter that has a gradient.

        Args:
            closure: Re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or None.

        Raises:
            ValueError, TypeError: For a gradient the step cannot take (another
                device, a sparse layout other than rows); nothing is changed.
            RuntimeError: For a sparse gradient with weight_decay, as torch.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with self._lock:
            for group in self.param_groups:
                _check_differentiable(group["differentiable"])
            binding = self._binding
            if binding is None or not binding.is_current(self.param_groups, self.state):
                own = {**self._new_sums, **(binding.own_sums if binding is not None else {})}
                fill = self.defaults["initial_accumulator_value"]
                self._binding = binding = Binding(self.param_groups, self.state, own, fill)
                self._new_sums.clear()
            binding.step()
        return loss

    def share_memory(self) -> None:
        """Moves every `sum` to shared memory (torch's `Adagrad.share_memory`)."""
        with self._lock:
            for group in self.param_groups:
                for p in group["params"]:
                    self.state[p]["sum"].share_memory_()

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling and `load_state_dict`: torch's, then a new binding at the next step."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("fused", None)
        if not hasattr(self, "_lock"):
            self._lock = threading.RLock()
        self._binding = None
        self._new_sums = {}


def _check_differentiable(differentiable: bool) -> None:
    if differentiable:
        raise ValueError(
            "adagrad_native.torch.Adagrad steps parameters in native code, outside autograd: "
            "differentiable=True is not supported (use torch.optim.Adagrad for it)."
        )
