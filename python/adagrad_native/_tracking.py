"""Optimizer variables and slots: created, named and tracked in Keras' order."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from adagrad_native._surface import AlgorithmSlots, SlotInfo, Slots
from adagrad_native.variables import ValueRange, Variable


class VariableTracker:
    """The optimizer-variable API of Keras' optimizers (`add_variable`, `variables`, ...).

    A variable's path is `optimizer_name/variable_name`; `variables` lists them
    in the order they were made, which is Keras' order when the optimizer makes
    them as Keras does (iteration, learning rate, then each kind of slot).
    """

    name: str
    _variables: list[Variable]
    _stepped_variables: list[Variable]  # what the engine steps, in build order
    _trainable_variables: list[Variable]
    _weight_decay_flags: list[bool]
    _overwrite: tuple[bool, ...]
    _model_variables_moving_average: list[Variable | None]
    _accumulated_gradients: list[Variable | None]
    _algorithm_slots: AlgorithmSlots

    def build_slots(self, variables: list[Variable]) -> AlgorithmSlots:
        """Creates the algorithm's slots for the stepped variables; algorithms implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build_slots.")

    def _make_slots(self, stepped: list[Variable], ema: bool, accumulation: bool) -> None:
        """Makes every per-variable slot in Keras' order: averages, accumulators, algorithm."""
        self._model_variables_moving_average = (
            self.add_optimizer_variables(stepped, "average") if ema else [None] * len(stepped)
        )
        self._accumulated_gradients = [
            self.add_variable_from_reference(v, "gradient_accumulator") if accumulation else None
            for v in stepped
        ]
        self._algorithm_slots = self.build_slots(stepped)

    def _track(
        self,
        value: np.ndarray,
        name: str,
        aggregation: str = "none",
        value_range: ValueRange | None = None,
    ) -> Variable:
        var = Variable._owned(value, name, f"{self.name}/{name}", aggregation)
        var._value_range = value_range
        self._variables.append(var)
        return var

    def declare_value_range(self, variable: Variable, what: str, low: float, high: float) -> None:
        """Declares the values an optimizer variable can hold; loaders refuse any other.

        Args:
            variable: A variable this optimizer made (`add_variable...`).
            what: What the values are, for messages (e.g. "sums of squares").
            low: The smallest value.
            high: The largest value (inf: inf is a value a step can store).
        """
        variable._value_range = ValueRange(what, low, high)

    def add_variable(
        self,
        shape: Sequence[int],
        initializer: Any = "zeros",
        dtype: Any = None,
        aggregation: str = "mean",
        name: str | None = None,
    ) -> Variable:
        """Creates and tracks an optimizer variable.

        Args:
            shape: The variable's shape.
            initializer: `"zeros"`, `"ones"`, a number, or a callable(shape, dtype).
            dtype: The dtype (default float32).
            aggregation: Kept for Keras compatibility.
            name: The variable's name (its path is `optimizer_name/name`).

        Returns:
            The new `Variable`.
        """
        template = Variable(
            initializer
            if not isinstance(initializer, numbers.Real) or isinstance(initializer, bool)
            else float(initializer),
            shape=tuple(shape),
            dtype=dtype,
            name=name or "var",
        )
        return self._track(template.value, template.name, aggregation)

    def add_variable_from_reference(
        self,
        reference_variable: Any,
        name: str | None = None,
        initializer: Any = "zeros",
        dtype: Any = None,
    ) -> Variable:
        """Creates a variable with the shape (and dtype) of `reference_variable`.

        Its name is the reference's path with `/` replaced by `_`, then `_name`.
        `dtype` (not in Keras) overrides the reference's dtype.
        """
        ref_path = getattr(reference_variable, "path", None) or str(
            getattr(reference_variable, "name", "variable")
        )
        full_name = ref_path.replace("/", "_").replace(":", "_") + "_" + (name or "var")
        if dtype is None:
            dtype = np.asarray(reference_variable).dtype
        return self.add_variable(
            np.shape(reference_variable), initializer, dtype, "mean", full_name
        )

    def add_optimizer_variables(
        self, trainable_variables: Sequence[Variable], name: str, initializer: Any = "zeros"
    ) -> list[Variable | None]:
        """One slot per variable; None for `overwrite_with_gradient` variables (as Keras)."""
        return [
            None
            if v.overwrite_with_gradient
            else self.add_variable_from_reference(v, name, initializer)
            for v in trainable_variables
        ]

    @property
    def variables(self) -> list[Variable]:
        """Optimizer variables in Keras' order (iteration, learning_rate, slots by kind).

        They are live views of the state: a read while another thread steps may
        mix two steps; `state_dict()` is a snapshot of one.
        """
        return list(self._variables)

    def assign(self, variable: Any, value: Any) -> None:
        """Assigns `value` to a variable (a `Variable` or a numpy array) in place."""
        _as_variable(variable).assign(value)

    def assign_add(self, variable: Any, value: Any) -> None:
        """Adds `value` to a variable in place."""
        _as_variable(variable).assign_add(value)

    def assign_sub(self, variable: Any, value: Any) -> None:
        """Subtracts `value` from a variable in place."""
        _as_variable(variable).assign_sub(value)

    def slots(self) -> list[SlotInfo]:
        """Every per-variable slot, with the build index of its variable and its layout."""
        found = []
        per_row = self._algorithm_slots.rowwise
        for kind in (
            self._model_variables_moving_average,
            self._accumulated_gradients,
            self._algorithm_slots.accumulators,
        ):
            for t, slot in enumerate(kind):
                if slot is not None:
                    row = per_row[t] if kind is self._algorithm_slots.accumulators else False
                    found.append(SlotInfo(slot, t, row))
        return found

    def _slots(self, buffer: Any) -> Slots:
        """The buffers of every stepped variable and its slots, as `buffer(variable)` gives them."""

        def arrays(slots: Sequence[Variable | None]) -> list[np.ndarray | None]:
            return [None if s is None else buffer(s) for s in slots]

        return Slots(
            params=[buffer(v) for v in self._stepped_variables],
            accumulators=arrays(self._algorithm_slots.accumulators),
            averages=arrays(self._model_variables_moving_average),
            grad_accumulators=arrays(self._accumulated_gradients),
            weight_decay=self._weight_decay_flags,
            overwrite=list(self._overwrite),
            names=[v.path for v in self._trainable_variables],
            rowwise=self._algorithm_slots.rowwise,
        )


def _as_variable(v: Any) -> Variable:
    if isinstance(v, Variable):
        return v
    if isinstance(v, np.ndarray):
        return Variable._wrap(v, "array")
    raise TypeError(f"Expected a Variable or a numpy array; received {type(v).__name__}.")
