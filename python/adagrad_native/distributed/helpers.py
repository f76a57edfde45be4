"""What a data-parallel job needs around its optimizer: equal starts, uneven data, crashes.

- `broadcast_variables` gives every rank rank 0's parameters (the build of a
  sharded optimizer refuses ranks whose initial values differ, naming this).
- `broadcast_state` does the same for a one-process optimizer's state.
- `stop_together` ends a loop on every rank when one rank runs out of data.
- `abort_on_exception` ends the whole job at once when one rank dies of an
  uncaught exception (instead of the others waiting for their deadline).

Each is a collective with the package's agreements and deadlines.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from traceback import format_exception
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from adagrad_native._calls import as_variables, split_named
from adagrad_native._checks import integer
from adagrad_native._surface import Wrappable
from adagrad_native.distributed._coordinator import (
    DEFAULT_TIMEOUT,
    Coordinator,
    Fingerprint,
    report,
)
from adagrad_native.distributed._mpi import as_bytes, world

T = TypeVar("T")


def broadcast_variables(
    variables: Sequence[Any] | Any,
    root: int = 0,
    comm: Any = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> None:
    """Copies rank `root`'s values of `variables` into every rank's, in place (a collective).

    Args:
        variables: `Variable`s or writeable numpy arrays (a sequence or a
            mapping), the same shapes and dtypes on every rank.
        root: The rank whose values every rank gets.
        comm: An mpi4py communicator; default `MPI.COMM_WORLD`.
        timeout: Seconds a rank waits for the others, or None.
    """
    coordinator = Coordinator(world() if comm is None else comm, timeout, "broadcast_variables")

    def run() -> None:
        integer(root, "root", minimum=0, maximum=coordinator.size - 1)
        listed, names = split_named(variables)
        arrays = [v.value for v in as_variables(listed, names)]
        _broadcast(coordinator, arrays, root, "the variables to broadcast")

    coordinator.collective("broadcast_variables", run)


def broadcast_state(
    optimizer: Wrappable, root: int = 0, comm: Any = None, timeout: float | None = DEFAULT_TIMEOUT
) -> None:
    """Copies rank `root`'s state of a one-process optimizer into every rank's (a collective).

    For an optimizer replicated on every rank (not a sharded one, whose ranks
    hold different parts): its iteration, learning rate and slots.

    Args:
        optimizer: A built optimizer of this package, built alike on every rank.
        root: The rank whose state every rank gets.
        comm: An mpi4py communicator; default `MPI.COMM_WORLD`.
        timeout: Seconds a rank waits for the others, or None.
    """
    coordinator = Coordinator(world() if comm is None else comm, timeout, "broadcast_state")

    def run() -> None:
        integer(root, "root", minimum=0, maximum=coordinator.size - 1)
        if optimizer.sharded:
            raise TypeError(
                "broadcast_state copies a replicated optimizer's state; a sharded optimizer's "
                "ranks hold different parts of theirs. Save and load it with "
                "adagrad_native.distributed.save_state and load_state instead."
            )
        if not optimizer.built:
            raise ValueError("broadcast_state needs a built optimizer: call build(variables).")
        with optimizer.state_lock():
            arrays = [v.value for v in optimizer.variables]
            _broadcast(coordinator, arrays, root, "the optimizer state to broadcast")

    coordinator.collective("broadcast_state", run)


def _broadcast(coordinator: Coordinator, arrays: list[np.ndarray], root: int, what: str) -> None:
    coordinator.agree(
        Fingerprint(what, {"arrays": [[list(a.shape), a.dtype.name] for a in arrays], "root": root})
    )
    comm = coordinator.private()
    requests = [comm.Ibcast(as_bytes(a), root=root) for a in arrays if a.size]
    coordinator.wait(requests, "the broadcast")


def stop_together(
    iterable: Iterable[T], comm: Any = None, timeout: float | None = DEFAULT_TIMEOUT
) -> Iterator[T]:
    """The items of `iterable`, for as long as every rank still has one (a collective).

    With uneven data, the rank that runs out first ends the loop on every rank,
    at the same step, so no rank waits in a collective for a rank that is done:

        for x, y in distributed.stop_together(batches):
            opt.apply(gradients(x, y), params)

    The items a rank has left are not used. One byte is all-reduced per item.
    """
    coordinator = Coordinator(world() if comm is None else comm, timeout, "stop_together")

    def every_rank_has(one: bool) -> bool:
        return coordinator.collective("stop_together", lambda: coordinator.all_true(one))

    items = iter(iterable)
    while True:
        try:
            item = next(items)
        except StopIteration:
            every_rank_has(False)
            return
        if not every_rank_has(True):
            return
        yield item


def abort_on_exception(comm: Any = None) -> None:
    """From now on, an uncaught exception on this rank ends every rank of the job at once.

    It prints the traceback, then calls `MPI_Abort`; without it the other ranks
    wait in their next collective until its deadline. Running the script with
    `mpiexec -n N python -m mpi4py script.py` does the same.
    """
    communicator = world() if comm is None else comm
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        report(f"[rank {communicator.Get_rank()}] " + "".join(format_exception(kind, error, tb)))
        communicator.Abort(1)
        previous(kind, error, tb)  # not reached: Abort ends the process

    sys.excepthook = hook
