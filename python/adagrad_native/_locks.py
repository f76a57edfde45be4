"""The lock of an optimizer's state, safe across `fork()`.

A step, a checkpoint and a load each hold their optimizer's lock, so none sees
half of another. A child made by `fork()` while another thread held a lock
would inherit it held by a thread that does not exist there, and hang on its
first step. So before a fork every lock is taken, newest first (the fork waits
for the steps, loads and saves in flight, and the child gets the state of
whole steps), and both processes release them after it. A lock made while the
fork waited is re-initialised in the child, as CPython re-initialises its own
locks there.

The locks are CPython's re-entrant locks themselves, so taking and releasing
one in a `with` block is C code that a Ctrl-C cannot split.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref

_serials = itertools.count()
_live: dict[int, tuple[weakref.ref[object], threading.RLock]] = {}  # by serial: age
_held_for_fork: list[threading.RLock] = []


def fork_safe_lock(owner: object) -> threading.RLock:
    """A new re-entrant lock for `owner`'s state, known to the at-fork handlers while it lives."""
    lock = threading.RLock()
    serial = next(_serials)

    def forget(_: object) -> None:
        _live.pop(serial, None)

    _live[serial] = (weakref.ref(owner, forget), lock)
    return lock


def _newest_first() -> list[threading.RLock]:
    entries = sorted(list(_live.items()), key=lambda item: item[0], reverse=True)  # list(): atomic
    return [lock for _, (_, lock) in entries]


def _before_fork() -> None:
    for lock in _newest_first():
        lock.acquire()
        _held_for_fork.append(lock)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    held = set(map(id, _held_for_fork))
    _after_fork_in_parent()  # the forking thread is this process's one thread
    for lock in _newest_first():
        if id(lock) not in held:  # made while the fork waited: its holder is not here
            lock._at_fork_reinit()  # type: ignore[attr-defined]


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
