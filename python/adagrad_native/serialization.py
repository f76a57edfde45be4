"""Keras-format optimizer configs: `serialize`, `deserialize`, `get`."""

from __future__ import annotations

from typing import Any, TypeVar

from adagrad_native.optimizer import Optimizer

OptimizerType = TypeVar("OptimizerType", bound=type[Optimizer])

# The package's optimizer classes by lower-case class name, filled by
# `register_optimizer` as their modules are imported.
_CLASSES: dict[str, type[Optimizer]] = {}


def register_optimizer(cls: OptimizerType) -> OptimizerType:
    """Class decorator: makes `deserialize` find `cls` by its (case-insensitive) name."""
    _CLASSES[cls.__name__.lower()] = cls
    return cls


def serialize(optimizer: Any) -> dict[str, Any]:
    """The optimizer's config in Keras' outer format.

    Returns:
        `{"module": "keras.optimizers", "class_name": ..., "config": ...,
        "registered_name": None}`, loadable by `keras.optimizers.deserialize`.

    Raises:
        TypeError: When `optimizer` is not an optimizer of this package.
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            "Argument `optimizer` must be an optimizer of this package (e.g. "
            f"adagrad_native.Adagrad). Received: optimizer={optimizer!r:.80}."
        )
    return {
        "module": "keras.optimizers",
        "class_name": type(optimizer).__name__,
        "config": optimizer.get_config(),
        "registered_name": None,
    }


def deserialize(config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> Any:
    """Creates an optimizer from `serialize()` output or Keras' equivalent.

    Class names are matched case-insensitively, as Keras does for built-ins.

    Raises:
        ValueError: For a class this package does not implement.
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(
            "Argument `config` must be a dict with a 'class_name' (and 'config') key, as "
            f"written by serialize(). Received: {config!r}"
        )
    class_name = config["class_name"]
    custom = dict(custom_objects or {})
    cls = custom.get(class_name) or _CLASSES.get(str(class_name).lower())
    if cls is None:
        raise ValueError(
            f"Unknown optimizer class_name {class_name!r}: adagrad_native implements "
            "'Adagrad', 'RowWiseAdagrad' and 'LossScaleOptimizer' (pass others in "
            "`custom_objects`)."
        )
    return cls.from_config(config.get("config", {}), custom_objects=custom_objects)


def get(identifier: Any) -> Any:
    """An optimizer from a name ("adagrad"), a serialized dict, or an instance.

    Returns None for None; raises `ValueError` for anything else.
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        obj = deserialize(identifier)
    elif isinstance(identifier, str):
        obj = deserialize({"class_name": identifier, "config": {}})
    else:
        obj = identifier
    if isinstance(obj, Optimizer):
        return obj
    raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}")
