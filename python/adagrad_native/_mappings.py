"""Variables and gradients given as mappings: names for plain arrays, pairing by key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def split_named(variables: Any) -> tuple[list[Any], list[str] | None]:
    """The variables of a `build` call and their names.

    A mapping names its variables by its keys: plain arrays become variables of
    those names, so checkpoints are keyed by name instead of by position.

    Args:
        variables: A mapping of variables, or any iterable of them.

    Returns:
        The variables as a list, and their names (None for an iterable).
    """
    if isinstance(variables, Mapping):
        return list(variables.values()), [str(k) for k in variables]
    return list(variables), None


def pair_by_key(
    grads: Any, variables: Any, built_keys: list[str] | None
) -> tuple[list[Any], list[Any] | None]:
    """Gradients and variables as two lists in the variables' order.

    Either may be a mapping; then both must be, with the same keys (the
    variables' mapping may be omitted when the optimizer was built from one).

    Args:
        grads: Gradients, a mapping or a sequence.
        variables: Variables, a mapping, a sequence or None.
        built_keys: The keys the optimizer was built with (None: not from a mapping).

    Returns:
        The gradients in the variables' order, and the variables (None when omitted).

    Raises:
        TypeError: When one is a mapping and the other a sequence.
        ValueError: Naming the first key that is in one mapping and not the other.
    """
    if variables is None and isinstance(grads, Mapping):
        if built_keys is None:
            raise ValueError(
                "`grads` is a mapping, but the optimizer was not built from a mapping of "
                "variables: pass the variables too, as a mapping with the same keys."
            )
        return _paired(grads, built_keys, "the optimizer's variables"), None
    if not (isinstance(grads, Mapping) and isinstance(variables, Mapping)):
        raise TypeError(
            "`grads` and `trainable_variables` must both be mappings (with the same keys) or "
            f"both sequences; received {type(grads).__name__} and {type(variables).__name__}."
        )
    keys = [str(k) for k in variables]
    return _paired(grads, keys, "`trainable_variables`"), list(variables.values())


def _paired(grads: Mapping[Any, Any], keys: list[str], what: str) -> list[Any]:
    by_name = {str(k): g for k, g in grads.items()}
    for key in keys:
        if key not in by_name:
            raise ValueError(f"`grads` has no entry for the key {key!r} of {what}.")
    if len(by_name) != len(keys):
        extra = next(k for k in by_name if k not in set(keys))
        raise ValueError(f"`grads` has the key {extra!r}, which is not a key of {what}.")
    return [by_name[k] for k in keys]
