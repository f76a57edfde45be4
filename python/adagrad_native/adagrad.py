"""Adagrad: Keras 3's `keras.optimizers.Adagrad`, with a fused native step."""

from __future__ import annotations

import math
from typing import Any

from adagrad_native._dtypes import largest
from adagrad_native._settings import Hyperparameter, fixed_after_build, non_negative, one_of
from adagrad_native._surface import AlgorithmSlots, PlanInputs
from adagrad_native.optimizer import Optimizer
from adagrad_native.serialization import register_optimizer
from adagrad_native.variables import Variable

_SPARSE_UPDATES = ("dense", "lazy")


@register_optimizer
class Adagrad(Optimizer):
    """Optimizer that implements the Adagrad algorithm, as Keras 3 does.

    Per step and element: `acc += g * g; v -= lr * g / sqrt(acc + epsilon)`
    (epsilon inside the square root, as Keras 3), after the shared pipeline
    (loss-scale unscaling, gradient accumulation, clipping, decoupled weight
    decay) and before EMA and constraints. Every element-wise operation of a
    step runs in one native call over all variables.

    float16 and bfloat16 variables are computed in float32 and rounded once on
    store (Keras computes in the variable's dtype, where the default epsilon
    underflows). float64 variables are computed in float64.

    Deviations from Keras, each where Keras contradicts its own documentation:
    negative `initial_accumulator_value`, `learning_rate`, `epsilon`,
    `weight_decay` and clip values raise `ValueError`; any real number is
    accepted as `learning_rate` (Keras insists on a Python float); calling
    `exclude_from_weight_decay` after `build` raises; `get_config` refuses a
    plain callable learning rate instead of writing a made-up 0.5.

    Args:
        learning_rate: A number, a `LearningRateSchedule` or a zero-argument
            callable. Defaults to 0.001.
        initial_accumulator_value: Starting value of the accumulators; >= 0.
        epsilon: Added to the accumulator inside the square root; >= 0.
        weight_decay: See `Optimizer` for this and the remaining arguments.
        clipnorm: Per-gradient L2 norm bound.
        clipvalue: Element-wise bound.
        global_clipnorm: Joint L2 norm bound over all gradients.
        use_ema: Keep an exponential moving average of the variables.
        ema_momentum: EMA momentum in [0, 1].
        ema_overwrite_frequency: Overwrite variables with their averages every N iterations.
        loss_scale_factor: Gradients are divided by this.
        gradient_accumulation_steps: Update every N calls with the mean gradient.
        name: Defaults to "adagrad" ("adagrad_1", ... for later instances, as Keras).
        accumulator_dtype: Not in Keras. None keeps each accumulator in its
            variable's dtype (Keras' behaviour); "float32" stores the
            accumulators of float16/bfloat16 variables in float32, which is
            recommended: the accumulator only grows, and in 16 bits its small
            increments are soon rounded away. float32/float64 variables keep
            their own dtype either way.
        on_nonfinite: Not in Keras: "propagate" (default, as Keras), "raise" or
            "skip"; see `Optimizer`.
        sparse_updates: Not in Keras; how row-sparse gradients (`SparseGradient`)
            are applied. "dense" (default): exactly as the dense gradient with
            duplicate rows summed. A plain step then only touches the distinct
            rows (an untouched row's Adagrad update is exactly zero), but weight
            decay, EMA and `overwrite_with_gradient` act on every row by
            definition, and a gradient-accumulation update step uses the dense
            accumulated gradient, so those steps make one full pass over the
            table. "lazy": weight decay and EMA (and its overwrite) act only on
            the touched rows, so no step without an accumulation update needs a
            full pass -- a deliberate deviation from dense semantics for large
            embedding tables (like TensorFlow's lazy Adam). Accumulation update
            steps remain full passes.
        **kwargs: Only the deprecated `decay` (ignored with a warning).
    """

    initial_accumulator_value: Hyperparameter[float] = Hyperparameter(non_negative)
    epsilon: Hyperparameter[float] = Hyperparameter(non_negative)
    # None: each accumulator in its variable's dtype, as Keras.
    accumulator_dtype: Hyperparameter[str | None] = Hyperparameter(
        fixed_after_build(one_of(None, "float32"))
    )
    sparse_updates: Hyperparameter[str] = Hyperparameter(one_of(*_SPARSE_UPDATES))

    def __init__(
        self,
        learning_rate: Any = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        use_ema: bool = False,
        ema_momentum: float = 0.99,
        ema_overwrite_frequency: int | None = None,
        loss_scale_factor: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
        accumulator_dtype: str | None = None,
        on_nonfinite: str = "propagate",
        sparse_updates: str = "dense",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
            on_nonfinite=on_nonfinite,
            **kwargs,
        )
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon
        self.accumulator_dtype = accumulator_dtype
        self.sparse_updates = sparse_updates
        self._accumulators: list[Variable | None] = []  # Keras' name for the slots

    def build_slots(self, variables: list[Variable]) -> AlgorithmSlots:
        """One accumulator per variable, filled with `initial_accumulator_value`."""
        init = float(self.initial_accumulator_value)
        self._accumulators = [
            None
            if v.overwrite_with_gradient
            else self.add_variable_from_reference(
                v, "accumulator", init, dtype=self.accumulator_dtype_for(v)
            )
            for v in variables
        ]
        self.declare_sums_of_squares(self._accumulators)
        return AlgorithmSlots(self._accumulators, [False] * len(variables))

    def declare_sums_of_squares(self, accumulators: list[Variable | None]) -> None:
        """Accumulators hold sums of squares: >= 0 and never NaN (loads refuse others).

        Finite too, but in float16, whose accumulators reach inf in ordinary
        training (a step then leaves its variable unchanged).
        """
        for slot in accumulators:
            if slot is not None:
                high = math.inf if slot.dtype == "float16" else largest(slot.dtype)
                self.declare_value_range(slot, "sums of squares", 0.0, high)

    def accumulator_dtype_for(self, variable: Variable) -> str:
        """The dtype of `variable`'s accumulator (see `accumulator_dtype`)."""
        low_precision = variable.dtype in ("float16", "bfloat16")
        return (
            self.accumulator_dtype
            if low_precision and self.accumulator_dtype
            else variable.dtype.name
        )

    def plan_inputs(self) -> PlanInputs:
        """Epsilon, and whether sparse updates are lazy."""
        return PlanInputs(float(self.epsilon), self.sparse_updates == "lazy")

    def get_config(self) -> dict[str, Any]:
        """Keras' Adagrad config: the base keys plus the accumulator value and epsilon."""
        config = super().get_config()
        config.update(
            {
                "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon,
            }
        )
        # Our own options only when set, so that Keras can load the config.
        if self.accumulator_dtype is not None:
            config["accumulator_dtype"] = self.accumulator_dtype
        if self.on_nonfinite != "propagate":
            config["on_nonfinite"] = self.on_nonfinite
        if self.sparse_updates != "dense":
            config["sparse_updates"] = self.sparse_updates
        return config
