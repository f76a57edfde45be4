"""The lock of an optimizer's state, safe across `fork()`.

A step, a checkpoint and a load each hold their optimizer's lock, so none sees
half of another. A child made by `fork()` while another thread held a lock
would inherit it held by a thread that does not exist there, and hang on its
first step. So before a fork every lock is taken (the fork waits for the steps
in flight, and the child gets the state of whole steps), and the child gets new
locks. Locks are taken newest first: a wrapper (`LossScaleOptimizer`) is made
after the optimizer it wraps and takes its own lock first, so this is the order
every step takes them in too.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from types import TracebackType

_serials = itertools.count()
_live: weakref.WeakValueDictionary[int, StateLock] = weakref.WeakValueDictionary()
_held_for_fork: list[StateLock] = []


class StateLock:
    """A re-entrant lock that the at-fork handlers of this module know of."""

    def __init__(self) -> None:
        self._rlock = threading.RLock()
        _live[next(_serials)] = self

    def __enter__(self) -> None:
        self._rlock.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._rlock.release()


def _before_fork() -> None:
    for serial in sorted(_live.keys(), reverse=True):
        lock = _live.get(serial)
        if lock is not None:
            lock._rlock.acquire()
            _held_for_fork.append(lock)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop()._rlock.release()


def _after_fork_in_child() -> None:
    _held_for_fork.clear()
    for lock in list(_live.values()):
        lock._rlock = threading.RLock()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
