"""RowWiseAdagrad: Adagrad with one accumulator per row of each matrix-like variable."""

from __future__ import annotations

from typing import Any

from adagrad_native._surface import AlgorithmSlots
from adagrad_native.adagrad import Adagrad
from adagrad_native.serialization import register_optimizer
from adagrad_native.variables import Variable


@register_optimizer
class RowWiseAdagrad(Adagrad):
    """Adagrad with one accumulator per row, for embedding tables (not in Keras).

    For a variable with 2 or more dimensions the accumulator has shape
    `(variable.shape[0],)`, cutting the optimizer state by the row width. Per
    row of the (unscaled, accumulated, clipped) gradient `g_row`::

        acc_row += mean(g_row ** 2)
        v_row   -= lr * g_row / sqrt(acc_row + epsilon)

    The mean is computed in float64 in a fixed order -- element `j` of the
    row goes to lane `j % 8`, each lane sums in element order, the 8 lanes
    combine by halving (0+4, 1+5, ...; then 0+2, 1+3; then 0+1) -- then
    divided by the row length and rounded once to the compute type (float32,
    or float64 for float64 variables). Results therefore do not depend on the
    thread count or the CPU. 0-d and 1-d variables get an element-wise
    accumulator and behave exactly as in `Adagrad`.

    Dense gradients and `SparseGradient`s are both accepted; a sparse gradient
    only touches its distinct rows (duplicates summed first), with the same
    full-pass rules as `Adagrad` (see `sparse_updates`). Every other argument,
    the pipeline and the API are those of `Adagrad`.
    """

    def state_per_row(self, variable: Variable) -> bool:
        """One accumulator value per row for variables of 2+ dimensions."""
        return variable.ndim >= 2 and not variable.overwrite_with_gradient

    def build_slots(self, variables: list[Variable]) -> AlgorithmSlots:
        """A `(rows,)` accumulator for each 2+-d variable, an element-wise one otherwise."""
        init = float(self.initial_accumulator_value)
        slots: list[Variable | None] = []
        rowwise = []
        for v in variables:
            per_row = self.state_per_row(v)
            rowwise.append(per_row)
            if v.overwrite_with_gradient:
                slots.append(None)
                continue
            dtype = self.accumulator_dtype_for(v)
            if per_row:
                name = v.path.replace("/", "_").replace(":", "_") + "_accumulator"
                slots.append(self.add_variable((v.shape[0],), init, dtype, "mean", name))
            else:
                slots.append(self.add_variable_from_reference(v, "accumulator", init, dtype=dtype))
        self._accumulators = slots
        self.declare_sums_of_squares(slots)
        return AlgorithmSlots(slots, rowwise)

    def get_config(self) -> dict[str, Any]:
        """Adagrad's config (RowWiseAdagrad takes the same arguments)."""
        return super().get_config()
