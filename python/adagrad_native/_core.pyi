"""Type stub of the compiled core (cpp/module.cpp). Private: use the adagrad_native package."""

from collections.abc import Sequence
from enum import Enum
from typing import Any

import numpy as np

DECLINED: int
MAX_THREADS: int

class Clip(Enum):
    none = 0
    norm = 1
    global_norm = 2
    value = 3

class Phase(Enum):
    update = 0
    accumulate = 1
    accumulate_update = 2

class Formula(Enum):
    keras = 0
    torch = 1
    torch_sparse = 2

class StepPlan:
    learning_rate: float
    epsilon: float
    weight_decay: float
    clip: Clip
    clip_value: float
    loss_scale: float
    phase: Phase
    accumulation_steps: int
    ema: bool
    ema_momentum: float
    ema_overwrite: bool
    check_finite: bool
    reset_idle_accumulators: bool
    sparse_lazy: bool
    formula: Formula
    maximize: bool
    per_tensor: np.ndarray | None
    def __init__(self) -> None: ...

class SlotGroup:
    def __init__(
        self,
        params: list[np.ndarray],
        accumulators: list[np.ndarray | None],
        averages: list[np.ndarray | None],
        grad_accumulators: list[np.ndarray | None],
        weight_decay: list[bool],
        overwrite: list[bool],
        names: list[str],
        rowwise: list[bool] | None = None,
        chunk: int | None = None,
    ) -> None: ...

class FastStep:
    def __init__(
        self,
        group: SlotGroup,
        plan: StepPlan,
        iterations: np.ndarray,
        learning_rate: np.ndarray,
        variables: Sequence[Any],
    ) -> None: ...
    def accepts(self, variables: Sequence[Any] | None) -> bool: ...
    def try_step(self, grads: Any, variables: Any) -> int: ...

def step(
    group: SlotGroup,
    grads: Sequence[Any],
    plan: StepPlan,
    norms: Sequence[float] | None = None,
    settle: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = (),
) -> int: ...
def settle(
    writes: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]], applied: bool
) -> None: ...
def first_nonfinite(group: SlotGroup, grads: Sequence[Any], plan: StepPlan) -> int: ...
def fold_norms(
    tensor_of: Sequence[int],
    sums: np.ndarray,
    finite: np.ndarray,
    counted: Sequence[bool],
    global_norm: bool,
) -> tuple[list[float], int]: ...
def partial_sums(
    group: SlotGroup, grads: Sequence[Any], plan: StepPlan
) -> tuple[np.ndarray, np.ndarray]: ...
def work_chunk(sizes: Sequence[int]) -> int: ...
def assign_all(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None: ...
def team_self_test() -> list[str]: ...
def environment_warnings() -> list[str]: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def isa() -> str: ...
def available_isas() -> list[str]: ...
def select_isa(name: str) -> bool: ...
