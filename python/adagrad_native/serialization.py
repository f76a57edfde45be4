"""Keras-format optimizer configs, and name-keyed state checkpoints (.npz)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

_MODULES = ("keras.optimizers", "adagrad_native")
_CONFIG_KEY = "__config__"


def _classes() -> dict[str, type]:
    from adagrad_native.adagrad import Adagrad
    from adagrad_native.loss_scale import LossScaleOptimizer
    from adagrad_native.rowwise import RowWiseAdagrad

    return {"adagrad": Adagrad, "rowwiseadagrad": RowWiseAdagrad,
            "lossscaleoptimizer": LossScaleOptimizer}


def serialize(optimizer: Any) -> dict[str, Any]:
    """The optimizer's config in Keras' outer format.

    Returns:
        `{"module": "keras.optimizers", "class_name": ..., "config": ...,
        "registered_name": None}`, loadable by `keras.optimizers.deserialize`.
    """
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
    cls = custom.get(class_name) or _classes().get(str(class_name).lower())
    if cls is None:
        raise ValueError(
            f"Unknown optimizer class_name {class_name!r}: adagrad_native implements "
            "'Adagrad', 'RowWiseAdagrad' and 'LossScaleOptimizer' (pass others in "
            "`custom_objects`)."
        )
    return cls.from_config(dict(config.get("config", {})), custom_objects=custom_objects)


def get(identifier: Any) -> Any:
    """An optimizer from a name ("adagrad"), a serialized dict, or an instance.

    Returns None for None; raises `ValueError` for anything else.
    """
    from adagrad_native.optimizer import Optimizer

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


def _state_key(optimizer: Any, variable: Any) -> str:
    # Relative to the optimizer's name, so renaming the optimizer keeps the keys.
    prefix = f"{variable.path.split('/', 1)[0]}/"
    return variable.path[len(prefix):] if variable.path.startswith(prefix) else variable.path


def _state_entries(optimizer: Any) -> dict[str, Any]:
    entries: dict[str, Any] = {}
    for variable in optimizer.variables:
        key = _state_key(optimizer, variable)
        if key in entries:  # e.g. an inner optimizer's "iteration"
            key = variable.path
        entries[key] = variable
    return entries


def save_state(optimizer: Any, path: str | os.PathLike[str]) -> None:
    """Writes the optimizer's variables and config to one `.npz`, atomically.

    Keys are the variables' paths relative to the optimizer (e.g.
    "iteration", "dense_kernel_accumulator"), so a checkpoint survives
    reordering the variables or renaming the optimizer. The file is written to
    a temporary name in the same folder and renamed over `path`, so a crash
    never leaves a half-written checkpoint.

    Args:
        optimizer: A built optimizer.
        path: The file to write (".npz" is not appended).
    """
    if not optimizer.built:
        raise ValueError("save_state needs a built optimizer: call build(variables) first.")
    arrays = {key: var.numpy() for key, var in _state_entries(optimizer).items()}
    try:
        config = json.dumps(optimizer.get_config())
    except TypeError:  # e.g. a plain callable learning rate: keep the state anyway
        config = "null"
    arrays[_CONFIG_KEY] = np.array(config)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_state(optimizer: Any, path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Loads a `save_state` checkpoint into a built optimizer, by name.

    Every key, shape and dtype kind is checked before anything is assigned.

    Returns:
        The config stored with the state (None when it could not be saved).

    Raises:
        ValueError: Listing the missing, unexpected and mismatched entries.
    """
    if not optimizer.built:
        raise ValueError("load_state needs a built optimizer: call build(variables) first.")
    entries = _state_entries(optimizer)
    with np.load(os.fspath(path), allow_pickle=False) as data:
        stored = {key: data[key] for key in data.files}
    config = json.loads(str(stored.pop(_CONFIG_KEY, "null")))
    missing = sorted(set(entries) - set(stored))
    unexpected = sorted(set(stored) - set(entries))
    mismatched = [
        f"{key}: expected {var.shape} {var.dtype}, stored {stored[key].shape} "
        f"{stored[key].dtype}"
        for key, var in entries.items()
        if key in stored and (stored[key].shape != var.shape
                              or stored[key].dtype.kind != var.value.dtype.kind)
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"The checkpoint {os.fspath(path)!r} does not match optimizer '{optimizer.name}': "
            f"missing {missing}, unexpected {unexpected}, mismatched {mismatched}."
        )
    for key, var in entries.items():
        var.assign(stored[key])
    return config
