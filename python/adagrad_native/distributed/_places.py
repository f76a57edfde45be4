"""What a distributed checkpoint reads and writes: each rank's places in the whole state."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol, runtime_checkable

from adagrad_native.distributed._coordinator import Coordinator
from adagrad_native.variables import Variable

ROLES = ("sharded", "replicated", "parameter")


class Place(NamedTuple):
    """Where one rank's part of a state entry sits in the whole entry."""

    shape: tuple[int, ...]  # the whole entry's shape
    lo: int  # the rank's flat range [lo, hi) of the whole entry
    hi: int
    variable: Variable  # the rank's part
    # "sharded": each rank holds its range; "replicated": every rank holds the whole
    # (saved once, by rank 0); "parameter": a sharded model parameter (an embedding
    # table), kept apart from the optimizer state when converted to one process.
    role: str = "sharded"


@runtime_checkable
class ShardedState(Protocol):
    """A sharded optimizer, a `ShardedEmbedding`, or a wrapper of one, as checkpoints see it."""

    @property
    def name(self) -> str:
        """The name the checkpoint's messages use."""
        ...

    @property
    def coordinator(self) -> Coordinator:
        """The agreements and deadlines of the object's collective calls."""
        ...

    def state_lock(self) -> AbstractContextManager[None]:
        """Held while the state is copied out or assigned."""
        ...

    def checkpoint_places(self) -> dict[str, Place]:
        """Where this rank's state sits in the whole state, by checkpoint key."""
        ...

    def checkpoint_config(self) -> dict[str, Any] | None:
        """The config stored with the checkpoint (None when there is none)."""
        ...
