"""How the ranks of a communicator fail together, agree on what they do, and never wait forever.

Every collective call of the package (`collective`) runs in three phases: the
local work of each rank (checks and preparation, nothing written), an agreement
(`agree`: every rank learns whether any rank failed, at which call it is and
whether its settings are the same as everyone's), then the data collectives and
the writes. A rank whose local work raised still takes part in the agreement, so
its error becomes the same exception class on every rank instead of a hang.

The agreement is a gather to rank 0 and an answer from it, by non-blocking
point-to-point messages on a private duplicate of the communicator: 48 bytes a
rank on the way in and one byte on the way out when all is well; the details
(error messages, the settings that differ) travel only when something is wrong.
Every wait (`wait`) has a deadline: it polls with a sleep that frees the core,
and past the deadline it prints what did not arrive and aborts the job, because
MPI cannot cancel a collective that a rank will never join.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import pickle
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn, TypeVar

import numpy as np

from adagrad_native import _checks

DEFAULT_TIMEOUT = 600.0  # seconds a rank waits for the others; None waits forever
# Ranks wait this much longer than rank 0, which decides what timed out and says so.
_GRACE = 5.0
_STATUS = np.dtype(
    [("call", "<i8"), ("agreement", "<i8"), ("op", "<u4"), ("ok", "u1"), ("digest", "V16")]
)
_TAG_STATUS, _TAG_VERDICT, _TAG_DETAILS, _TAG_FINAL = 11, 12, 13, 14
_OK, _DETAILS, _TIMED_OUT = 0, 1, 2
_MAX_MESSAGE = 500  # characters of a disagreement message
_SPIN = 0.2  # seconds a wait tests without pause after its last completed request

T = TypeVar("T")


def check_timeout(value: Any) -> float | None:
    """A deadline in seconds (> 0), or None for none."""
    if value is None:
        return None
    return float(_checks.real(value, "timeout", minimum=0, strict=True))


def settings_of(optimizer: Any) -> dict[str, Any]:
    """An optimizer's config as the ranks must agree on it: what shapes the math.

    Its name (ranks may number their optimizers differently) and how long a rank
    waits are left out; a plain callable learning rate, which has no config, is
    agreed on by its value at each step.
    """
    try:
        config: dict[str, Any] = dict(optimizer.get_config())
    except TypeError:
        return {"learning_rate": "a callable"}
    for key in ("name", "timeout"):
        config.pop(key, None)
    return config


class Fingerprint(NamedTuple):
    """What a rank is about to do, as fields that every rank must have equal."""

    what: str  # for messages: "the settings of this step", "the variables at build", ...
    fields: dict[str, Any]  # JSON-able values by field name
    hints: dict[str, str] = {}  # noqa: RUF012 - a sentence added when a field of this name differs

    def digest(self) -> bytes:
        """16 bytes that differ when a field differs."""
        text = json.dumps(self.fields, sort_keys=True, default=repr)
        return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _mark_agreed(error: BaseException) -> BaseException:
    error.__dict__["_adagrad_agreed"] = True
    return error


def raise_agreed(error: BaseException) -> NoReturn:
    """Raises an error that every rank raises alike (no agreement needed for it)."""
    raise _mark_agreed(error)


def is_agreed(error: BaseException) -> bool:
    """Whether `error` is the outcome of an agreement (so every rank raises it)."""
    return bool(getattr(error, "__dict__", {}).get("_adagrad_agreed"))


def _exception_class(module: str, name: str) -> type[BaseException]:
    """The class of a rank's exception on this rank (RuntimeError when it cannot be had)."""
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return RuntimeError
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else RuntimeError


def _raise_as(module: str, name: str, message: str) -> NoReturn:
    cls = _exception_class(module, name)
    try:
        error = cls(message)
    except Exception:  # a class that does not take one message
        error = RuntimeError(f"{name}: {message}")
    raise _mark_agreed(error)


def _flatten(fields: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts as {"a.b": repr}, for naming the fields that differ."""
    if isinstance(fields, dict):
        out: dict[str, str] = {}
        for key, value in fields.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): repr(fields)}


def disagreement(
    what: str, by_rank: Sequence[dict[str, Any] | None], hints: dict[str, str] | None = None
) -> str:
    """Names each field whose value differs between ranks, and each rank's value (short)."""
    flat = [_flatten(f or {}) for f in by_rank]
    names = list(dict.fromkeys(name for f in flat for name in f))  # rank 0's order first
    parts = []
    for name in names:
        values = [f.get(name, "(none)") for f in flat]
        if len(set(values)) > 1:
            groups: dict[str, list[int]] = {}
            for rank, value in enumerate(values):
                groups.setdefault(value, []).append(rank)
            shown = "; ".join(
                f"{'rank' if len(r) == 1 else 'ranks'} {', '.join(map(str, r))}: {v[:40]}"
                for v, r in groups.items()
            )
            parts.append(f"{name} ({shown})")
    text = f"Ranks disagree on {what}: " + ", ".join(parts)
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    hint = "".join(
        sentence
        for field, sentence in (hints or {}).items()
        if any(part.startswith(field) for part in parts)
    )
    return text + ". Every rank must make the same calls with the same settings." + hint


class Coordinator:
    """The agreements and deadline-bounded waits of one distributed object's calls.

    Args:
        comm: The mpi4py communicator of the object.
        timeout: Seconds a rank waits for the others in any collective, or None.
        owner: How messages name the object, e.g. "ShardedAdagrad 'adagrad'".
    """

    def __init__(self, comm: Any, timeout: float | None, owner: str) -> None:
        self.comm = comm
        self.timeout = check_timeout(timeout)
        self.owner = owner
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        self._private: Any = None  # a duplicate of `comm`, made at the first call
        self._calls = 0  # collective calls made
        self._agreements = 0  # agreements made
        self._depth = 0  # nested collective calls: only the outermost agrees on failures
        self._op = ""
        self._agreed_in_call = False

    # ------------------------------------------------------------------ calls
    def collective(self, op: str, fn: Callable[[], T]) -> T:
        """Runs `fn` as one collective call: a failure on any rank fails every rank alike.

        `fn` does its local work, then reaches the call's agreements (`agree`). A
        rank whose work raised before the next agreement takes part in it with
        its error, so every rank raises the same exception class, naming the
        rank(s) and their messages.
        """
        outermost = self._depth == 0
        if outermost:
            self._calls += 1
            self._op = op
        self._depth += 1
        try:
            return fn()
        except BaseException as error:
            if outermost and not is_agreed(error):
                self._agree(False, None, error)
            raise
        finally:
            self._depth -= 1

    @property
    def where(self) -> str:
        """The current call, for messages: "apply (call 12)"."""
        return f"{self._op or 'a call'} (call {self._calls})"

    def agree(
        self, fingerprint: Fingerprint | None = None, error: BaseException | None = None
    ) -> None:
        """Every rank learns that all are here, at the same call, with equal fingerprints.

        Args:
            fingerprint: What every rank must have equal (None: nothing).
            error: This rank's failure, if its work since the last agreement failed.

        Raises:
            ValueError: On every rank, when the ranks are at different calls or
                their fingerprints differ (naming each differing field).
            Exception: The class of the first failed rank's error, on every rank,
                naming every failed rank and its message.
        """
        self._agree(error is None, fingerprint, error)

    def _agree(
        self, ok: bool, fingerprint: Fingerprint | None, error: BaseException | None
    ) -> None:
        self._agreements += 1
        comm = self.private()
        status = np.zeros((), _STATUS)
        status["call"], status["agreement"] = self._calls, self._agreements
        status["op"] = zlib.crc32(self._op.encode())
        status["ok"] = 1 if ok else 0
        if fingerprint is not None:
            status["digest"] = np.void(fingerprint.digest())
        details = {
            "where": self.where,
            "agreement": self._agreements,
            "error": None
            if error is None
            else (type(error).__module__, type(error).__qualname__, str(error)),
            "fields": None if fingerprint is None else fingerprint.fields,
            "what": None if fingerprint is None else fingerprint.what,
            "hints": None if fingerprint is None else fingerprint.hints,
        }
        if self.rank == 0:
            self._decide(comm, status, details)
        else:
            self._follow(comm, status, details)

    def _decide(self, comm: Any, status: np.ndarray, details: dict[str, Any]) -> None:
        """Rank 0: gathers the statuses, answers every rank, raises what all raise."""
        statuses = np.zeros(self.size, _STATUS)
        statuses[0] = status
        requests = [
            comm.Irecv(statuses[r : r + 1].view(np.uint8), source=r, tag=_TAG_STATUS)
            for r in range(1, self.size)
        ]
        missing = self._wait_for(requests, self.timeout)
        if missing:
            ranks = [r + 1 for r in missing]
            message = (
                f"{self.owner}: rank(s) {ranks} did not arrive at {self.where} within "
                f"{self.timeout:g} s: they raised outside the package, exited, or made other "
                "calls (see their output). Aborting the job: MPI cannot cancel a collective."
            )
            self._answer(comm, _TIMED_OUT, message)
            self.abort(message)
        first = statuses[0]
        same = all(
            s["call"] == first["call"]
            and s["agreement"] == first["agreement"]
            and s["op"] == first["op"]
            and s["digest"] == first["digest"]
            for s in statuses
        )
        if same and statuses["ok"].all():
            self._answer(comm, _OK, None)
            return
        self._answer(comm, _DETAILS, None)
        by_rank = [details] + [
            self._recv_object(comm, r, _TAG_DETAILS) for r in range(1, self.size)
        ]
        final = _final(by_rank)
        for r in range(1, self.size):
            self._send_object(comm, final, r, _TAG_FINAL)
        _raise_as(*final)

    def _follow(self, comm: Any, status: np.ndarray, details: dict[str, Any]) -> None:
        """Any other rank: sends its status, waits for rank 0's answer."""
        send = comm.Isend(status.reshape(1).view(np.uint8), dest=0, tag=_TAG_STATUS)
        verdict = np.zeros(1, np.uint8)
        answer = comm.Irecv(verdict, source=0, tag=_TAG_VERDICT)
        timeout = None if self.timeout is None else self.timeout + min(_GRACE, self.timeout)
        if self._wait_for([answer], timeout):
            self.abort(
                f"{self.owner}: rank 0 did not answer at {self.where} within {timeout:g} s; "
                "aborting the job."
            )
        self._wait_for([send], timeout)
        if verdict[0] == _OK:
            return
        if verdict[0] == _TIMED_OUT:
            self.abort(str(self._recv_object(comm, 0, _TAG_FINAL)))
        self._send_object(comm, details, 0, _TAG_DETAILS)
        _raise_as(*self._recv_object(comm, 0, _TAG_FINAL))

    def _answer(self, comm: Any, verdict: int, message: str | None) -> None:
        answers = [
            comm.Isend(np.array([verdict], np.uint8), dest=r, tag=_TAG_VERDICT)
            for r in range(1, self.size)
        ]
        if message is not None:
            for r in range(1, self.size):
                self._send_object(comm, message, r, _TAG_FINAL, wait=False)
            return
        self.wait(answers, "the answer to an agreement")

    def all_true(self, flag: bool) -> bool:
        """Whether `flag` is true on every rank (a one-byte all-reduce, with the deadline)."""
        from mpi4py import MPI

        mine, everyone = np.array([1 if flag else 0], np.uint8), np.zeros(1, np.uint8)
        request = self.private().Iallreduce(mine, everyone, op=MPI.MIN)
        self.wait([request], "an all-reduce of a decision")
        return bool(everyone[0])

    # -------------------------------------------------------- waits and sends
    def private(self) -> Any:
        """The private duplicate of the communicator (made on first use, with a deadline)."""
        if self._private is None:
            private, request = self.comm.Idup()
            self.wait([request], "the set-up of the private communicator")
            self._private = private
        return self._private

    def wait(self, requests: Sequence[Any], what: str) -> None:
        """Waits for non-blocking MPI requests until the deadline, then aborts the job."""
        if self._wait_for(requests, self.timeout):
            self.abort(
                f"{self.owner}: {what} at {self.where} did not complete within "
                f"{self.timeout:g} s on rank {self.rank}: another rank stopped taking part "
                "(it raised outside the package, exited, or made other calls). Aborting "
                "the job: MPI cannot cancel a collective."
            )

    def _wait_for(self, requests: Sequence[Any], timeout: float | None) -> list[int]:
        """Polls until every request is done or `timeout` passes; the undone ones' indices.

        MPI moves a message only while a rank is inside an MPI call, so a rank
        tests without pause while its messages complete; once none has completed
        for `_SPIN` seconds (a rank that does not come), it sleeps between tests,
        longer and longer up to 10 ms, so waiting for another rank costs no core.
        """
        from mpi4py import MPI

        deadline = math.inf if timeout is None else time.monotonic() + timeout
        pending = list(requests)
        undone = len(pending)
        last_progress, pause = time.monotonic(), 0.0
        while undone:
            completed = MPI.Request.Testsome(pending)
            now = time.monotonic()
            if completed:
                undone -= len(completed)
                last_progress, pause = now, 0.0
                continue
            if now > deadline:
                return [i for i, r in enumerate(pending) if r != MPI.REQUEST_NULL]
            if now - last_progress > _SPIN:
                pause = min(max(pause * 2, 5e-5), 0.01)
                time.sleep(pause)
        return []

    def _send_object(self, comm: Any, obj: Any, dest: int, tag: int, wait: bool = True) -> None:
        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        request = comm.Isend(data, dest=dest, tag=tag)
        if wait:
            self.wait([request], "a message of an agreement")

    def _recv_object(self, comm: Any, source: int, tag: int) -> Any:
        from mpi4py import MPI

        status = MPI.Status()
        deadline = math.inf if self.timeout is None else time.monotonic() + self.timeout
        while not comm.Iprobe(source=source, tag=tag, status=status):
            if time.monotonic() > deadline:
                self.abort(
                    f"{self.owner}: rank {source} sent no details at {self.where} within "
                    f"{self.timeout:g} s; aborting the job."
                )
            time.sleep(1e-4)
        data = np.empty(status.Get_count(MPI.BYTE), np.uint8)
        comm.Recv(data, source=source, tag=tag)
        return pickle.loads(data.tobytes())

    def abort(self, message: str) -> NoReturn:
        """Prints `message` and ends every rank of the job (MPI_Abort)."""
        report(f"[rank {self.rank}] {message}\n")
        self.comm.Abort(1)
        raise SystemExit(1)  # not reached: Abort ends the process


def report(text: str) -> None:
    """Writes `text` to stderr at once, before the job is aborted.

    One write, then a moment for the launcher to pass it on: an abort ends the
    processes, and output still on its way may be lost.
    """
    sys.stderr.flush()
    os.write(2, text.encode(errors="replace"))
    time.sleep(0.2)


def _final(by_rank: Sequence[dict[str, Any]]) -> tuple[str, str, str]:
    """The exception every rank raises: (module, class name, message)."""
    failed = [(r, d["error"]) for r, d in enumerate(by_rank) if d["error"] is not None]
    where = by_rank[0]["where"]
    if failed:
        first = failed[0][1]
        parts = [f"rank {r}: {name}: {message.rstrip('.')}" for r, (_, name, message) in failed]
        text = f"{where} failed on {'; '.join(parts)}. Nothing was changed on any rank."
        return first[0], first[1], text[:4000]
    places = [(d["where"], d["agreement"]) for d in by_rank]
    if len(set(places)) > 1:
        at = ", ".join(f"rank {r} at {w}" for r, (w, _) in enumerate(places))
        return (
            "builtins",
            "ValueError",
            f"Ranks are at different calls: {at}. Every rank must make the same collective "
            "calls in the same order. Nothing was changed on any rank.",
        )
    what = f"{by_rank[0]['what']} at {where}"
    fields = [d["fields"] for d in by_rank]
    return "builtins", "ValueError", disagreement(what, fields, by_rank[0]["hints"])
