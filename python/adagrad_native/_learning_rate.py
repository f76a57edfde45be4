"""An optimizer's learning rate: a number (a float32 variable), a schedule, or a callable."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from adagrad_native import _checks, schedules
from adagrad_native.variables import ValueRange, Variable

Track = Callable[[np.ndarray, str, str, ValueRange], Variable]  # (value, name, ...) -> tracked
RATES = ValueRange("a learning rate", 0.0, _checks.FLOAT32_MAX)


class LearningRate:
    """What `Optimizer.learning_rate` holds, evaluated as Keras evaluates it.

    A number lives in the float32 optimizer variable "learning_rate" (so it is
    saved with the state and read by the native fast step); a
    `LearningRateSchedule` is called with the raw iteration count; any other
    callable with no arguments.
    """

    def __init__(self) -> None:
        self.variable: Variable | None = None  # a number's variable
        self.source: Any = None  # a schedule or a callable

    def set(self, value: Any, track: Track, untrack: Callable[[Variable], None]) -> bool:
        """Sets a new learning rate; returns whether the step plan must be re-read.

        A number is written into the existing variable (the plan reads it there);
        a schedule or callable replaces the variable.

        Raises:
            ValueError: For a value that is neither a number >= 0 nor a callable.
            TypeError: For a number after a schedule or callable (Keras' rule).
        """
        if isinstance(value, schedules.LearningRateSchedule) or callable(value):
            if self.variable is not None:
                untrack(self.variable)
                self.variable = None
            self.source = value
            return True
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                "Argument `learning_rate` should be a number, or an instance of "
                "LearningRateSchedule, or a callable that takes no arguments and returns the "
                f"learning rate. Received instead: learning_rate={value!r}"
            )
        _checks.real(value, "learning_rate", minimum=0, float32=True)
        if self.variable is not None:
            self.variable.value[...] = value
        elif self.source is None:
            self.variable = track(
                np.array(value, np.float32), "learning_rate", "only_first_replica", RATES
            )
        else:
            raise TypeError(
                f"This optimizer was created with a {type(self.source).__name__} as its "
                "`learning_rate`, hence its learning rate is not settable to a number. If you "
                "need a settable learning rate, create the optimizer with a float "
                f"`learning_rate`. Received: learning_rate={value!r}"
            )
        return False

    def current(self, raw_iterations: int) -> Any:
        """The public value: the variable, or the schedule's or callable's value."""
        if self.variable is not None:
            return self.variable
        if isinstance(self.source, schedules.LearningRateSchedule):
            return self.source(raw_iterations)
        return self.source()

    def at(self, raw_iterations: int, buffer: np.ndarray | None) -> float:
        """The number a step uses (a number from `buffer`: the variable's or a copy's).

        Raises:
            TypeError: When a schedule or callable returns something that is not a number.
        """
        if buffer is not None:
            return float(buffer)
        value = self.current(raw_iterations)
        try:
            return float(value.value if isinstance(value, Variable) else value)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"The learning rate must evaluate to a number; received {value!r} from "
                f"{self.source!r}."
            ) from err

    def config(self) -> Any:
        """The learning rate in a config: a float, or a serialized schedule.

        Raises:
            TypeError: For a plain callable (Keras would silently write 0.5).
        """
        if self.variable is not None:
            return float(self.variable.value)
        if isinstance(self.source, schedules.LearningRateSchedule):
            return schedules.serialize(self.source)
        raise TypeError(
            f"Cannot serialize the learning rate {self.source!r}: a plain callable has no "
            "config. Use a number or a LearningRateSchedule subclass to get a config."
        )

    def shown(self) -> Any:
        """The learning rate as a repr shows it."""
        return float(self.variable.value) if self.variable is not None else self.source
