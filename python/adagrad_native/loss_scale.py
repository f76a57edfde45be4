"""LossScaleOptimizer: Keras 3's dynamic loss scaling around an optimizer of this package."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from adagrad_native import _checks
from adagrad_native._calls import as_lists
from adagrad_native._state import state_arrays
from adagrad_native._surface import Settle
from adagrad_native.optimizer import Optimizer
from adagrad_native.serialization import deserialize, register_optimizer, serialize
from adagrad_native.variables import Variable

_BASE_DEFAULTS = {
    "weight_decay": None,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


@register_optimizer
class LossScaleOptimizer(Optimizer):
    """Dynamic loss scaling, as `keras.optimizers.LossScaleOptimizer`.

    On a step whose (scaled) gradients are all finite, the inner optimizer
    applies them divided by the current scale, and after `dynamic_growth_steps`
    such steps in a row the scale doubles. On a step with any inf or NaN
    gradient nothing is written: the scale halves and the count restarts.
    The finiteness check and the unscaling are fused into the inner
    optimizer's single native call (one extra read of the gradients).

    Args:
        inner_optimizer: The optimizer to wrap (e.g. `Adagrad`). Its
            `loss_scale_factor` is cleared: the dynamic scale replaces it.
        initial_scale: The starting loss scale.
        dynamic_growth_steps: Finite steps after which the scale doubles.
        name: The optimizer's name.
        **kwargs: Base optimizer arguments are refused (set them on the inner
            optimizer), as Keras does; `dynamic=False` is refused too.
    """

    def __init__(
        self,
        inner_optimizer: Optimizer,
        initial_scale: float = 2.0**15,
        dynamic_growth_steps: int = 2000,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not kwargs.pop("dynamic", True):
            raise ValueError(
                "LossScaleOptimizer no longer supports `dynamic=False`. Instead, simply set "
                "`loss_scale_factor` directly on the `inner_optimizer`."
            )
        for arg, default in _BASE_DEFAULTS.items():
            if arg in kwargs and kwargs.pop(arg) != default:
                raise ValueError(
                    f"LossScaleOptimizer does not support `{arg}`. Instead, set `{arg}` on the "
                    "`inner_optimizer`."
                )
        if kwargs:
            raise ValueError(
                f"LossScaleOptimizer does not support arguments: `{'`, `'.join(kwargs)}`."
            )
        if not isinstance(inner_optimizer, Optimizer):
            raise TypeError(
                "Argument `inner_optimizer` must be an optimizer of this package (e.g. "
                f"adagrad_native.Adagrad). Received: {inner_optimizer!r}"
            )
        _checks.real(
            initial_scale, "initial_scale", minimum=0, strict=True, float32=True, normal=True
        )
        _checks.integer(dynamic_growth_steps, "dynamic_growth_steps", minimum=1)
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.initial_scale = initial_scale
        self.dynamic_growth_steps = int(dynamic_growth_steps)
        self.inner_optimizer.loss_scale_factor = None  # the dynamic scale replaces it

    def build(self, var_list: Sequence[Any] | Mapping[Any, Any]) -> None:
        """Creates `step_counter` and `dynamic_scale`, then builds the inner optimizer."""
        with self.state_lock():
            if self.built:
                return
            # First: it validates the variables before anything is created. The
            # order of `variables` (these two first) does not depend on it.
            self.inner_optimizer.build(var_list)
            self.step_counter = self.add_variable((), "zeros", "int64", "none", "step_counter")
            self.dynamic_scale = self.add_variable(
                (), float(self.initial_scale), "float32", "none", "dynamic_scale"
            )
            growth = self.dynamic_growth_steps
            self.declare_value_range(
                self.step_counter,
                f"finite steps since the scale last changed (< {growth})",
                0,
                growth - 1,
            )
            # A scale of 0 or inf makes every step skip, for good.
            self.declare_value_range(
                self.dynamic_scale, "a loss scale", _checks.FLOAT32_TINY, _checks.FLOAT32_MAX
            )
            self.built = True

    def undo_point(self) -> Callable[[], None]:
        """Puts this optimizer and its inner optimizer back as they are now."""
        inner, own = self.inner_optimizer.undo_point(), super().undo_point()

        def undo() -> None:
            own()
            inner()

        return undo

    @property
    def sharded(self) -> bool:
        """Whether the inner optimizer's state is spread over ranks."""
        return self.inner_optimizer.sharded

    @property
    def trainable_variables(self) -> list[Variable]:
        """The inner optimizer's trainable variables."""
        return self.inner_optimizer.trainable_variables

    def state_lock(self) -> AbstractContextManager[Any]:
        """The inner optimizer's lock, which guards this optimizer's variables too.

        One lock for both: every step of this optimizer is a step of the inner one.
        """
        return self.inner_optimizer.state_lock()

    @property
    def variables(self) -> list[Variable]:
        """This optimizer's variables, then the inner optimizer's (Keras' order)."""
        return super().variables + self.inner_optimizer.variables

    @property
    def iterations(self) -> Variable:
        """The inner optimizer's iterations."""
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self) -> Any:
        """The inner optimizer's learning rate (settable)."""
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        if "inner_optimizer" not in self.__dict__:  # the base constructor's placeholder 0.0
            Optimizer.learning_rate.fset(self, learning_rate)  # type: ignore[attr-defined]
            return
        self.inner_optimizer.learning_rate = learning_rate

    def apply(
        self,
        grads: Sequence[Any] | Mapping[Any, Any],
        trainable_variables: Sequence[Any] | Mapping[Any, Any] | None = None,
    ) -> None:
        """Applies the unscaled gradients if all are finite; adapts the scale.

        Args:
            grads: Gradients of the scaled loss (a sequence, or a mapping as for
                `Optimizer.apply`).
            trainable_variables: As for `Optimizer.apply`.
        """
        with self.state_lock():
            self.inner_optimizer.collective(
                "apply", lambda: self._apply(grads, trainable_variables)
            )

    def _apply(self, grads: Any, trainable_variables: Any) -> None:
        if not self.built:
            call = as_lists(grads, trainable_variables, None)
            if call.build_from is None:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already "
                    "be built. Call `optimizer.build(trainable_variables)` first."
                )
            self.build(call.build_from)
            grads, trainable_variables = call.grads, call.variables
        counter, scale = self.step_counter.value, self.dynamic_scale.value
        self.inner_optimizer.step_with(
            grads,
            trainable_variables,
            loss_scale=float(scale),
            settle=self._settle(counter, scale),
        )

    def _settle(self, counter: np.ndarray, scale: np.ndarray) -> list[Settle]:
        """Both outcomes' records of a step, written by the step itself (never torn by a signal)."""
        # Keras grows at exactly growth - 1; a counter assigned beyond it grows at once
        # instead of counting on to an overflow.
        grow = int(counter) >= self.dynamic_growth_steps - 1
        return [
            (counter, np.array(0 if grow else counter + 1, np.int64), np.array(0, np.int64)),
            (
                scale,
                np.array(scale * np.float32(2.0)) if grow else None,
                np.array(scale * np.float32(0.5)),
            ),
        ]

    def stateless_apply(
        self,
        optimizer_variables: Sequence[Any],
        grads: Sequence[Any],
        trainable_variables: Sequence[Any],
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """`Optimizer.stateless_apply` with the dynamic scale: nothing real changes."""
        if not self.built:
            raise ValueError(
                "To call `stateless_apply`, LossScaleOptimizer must be built. You can build it "
                "via `optimizer.build(trainable_variables)`."
            )
        variables = self.variables  # this optimizer's, then the inner optimizer's
        values = state_arrays(optimizer_variables, variables, "optimizer_variables")
        trainable = state_arrays(
            trainable_variables, self.trainable_variables, "trainable_variables"
        )
        at = {id(v): i for i, v in enumerate(variables)}
        counter, scale = values[at[id(self.step_counter)]], values[at[id(self.dynamic_scale)]]
        self.inner_optimizer.step_with(
            _checks.iterable(grads, "grads", "gradients (arrays, SparseGradients or None)"),
            loss_scale=float(scale),
            settle=self._settle(counter, scale),
            stateless=(values[len(variables) - len(self.inner_optimizer.variables) :], trainable),
        )
        return trainable, values

    def scale_loss(self, loss: Any) -> Any:
        """Multiplies `loss` by the current scale (the initial one before build)."""
        scale = float(self.dynamic_scale.value) if self.built else self.initial_scale
        return loss * scale

    def finalize_variable_values(self, var_list: Sequence[Any]) -> None:
        """Delegates to the inner optimizer."""
        self.inner_optimizer.finalize_variable_values(var_list)

    def __repr__(self) -> str:
        """The inner optimizer, the current loss scale and the growth interval."""
        scale = float(self.dynamic_scale.value) if self.built else self.initial_scale
        return (
            f"<LossScaleOptimizer({self.inner_optimizer!r}, scale={scale:g}, "
            f"dynamic_growth_steps={self.dynamic_growth_steps})>"
        )

    def get_config(self) -> dict[str, Any]:
        """Keras' four keys: name, inner_optimizer (serialized), initial_scale, growth steps."""
        return {
            "name": self.name,
            "inner_optimizer": serialize(self.inner_optimizer),
            "initial_scale": self.initial_scale,
            "dynamic_growth_steps": self.dynamic_growth_steps,
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> LossScaleOptimizer:
        """Recreates the optimizer (and its inner optimizer) from `get_config()` output.

        Raises:
            TypeError: When `config` is not a dict.
            ValueError: When it has no "inner_optimizer".
        """
        if not isinstance(config, dict):
            raise TypeError(
                f"Argument `config` must be a dict, as get_config() returns it. Received: "
                f"config={config!r:.80} of type {type(config).__name__}."
            )
        if "inner_optimizer" not in config:
            raise ValueError(
                "A LossScaleOptimizer config needs its 'inner_optimizer' (a serialized "
                f"optimizer). Received the keys {sorted(config)}."
            )
        config = dict(config)
        inner = deserialize(config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)
