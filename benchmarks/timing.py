"""Timing, the one timer of the benchmarks: medians of per-call times.

`run_group` times several implementations side by side (interleaved repeats); `time_calls`
times one callable on its own (a study, or a step between MPI barriers); `recorded`
records the time of every call of a function inside a step; `median_ms` reports.

Steps of one group are timed round-robin (the order rotates every round) so that machine
noise hits every implementation alike.  A fast step is called `inner` times in a row per
round so that a round's turn lasts at least `min_sample_s`; every call is timed on its own,
so the median is the typical call, robust to the odd scheduler stall.  A turn of a step
faster than `SETTLE_BELOW_S` starts with one untimed call, so no timed call pays for what
the previous implementation left behind (in the full W5 group, the probe's one-call turns
ran 1.4x slower than the same probe's calls in a group of its own).

With a `cycle` > 1 (gradient accumulation), each sample is one call, and a round makes
`cycle` consecutive calls of that implementation, labelled by phase: call i (counted from the
optimizer's first call) is an update step iff (i + 1) % cycle == 0, else a micro-step.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

StepFn = Callable[[], None]
SETTLE_BELOW_S = 0.25


@dataclass
class Timed:
    """A prepared step plus its timing state."""

    step: StepFn
    warmup: int
    repeats: int
    cycle: int = 1  # > 1: gradient accumulation, one call per sample, labelled by phase
    before: StepFn | None = None  # run before warm-up and every sample (e.g. set threads)
    prepare: StepFn | None = None  # untimed, before every call (e.g. a forward pass)
    calls: int = 0
    inner: int = 1
    settle: bool = False  # one untimed call at the start of every turn
    samples: dict[str, list[float]] = field(default_factory=dict)

    def call(self) -> float:
        if self.prepare:
            self.prepare()
        t0 = time.perf_counter()
        self.step()
        dt = time.perf_counter() - t0
        self.calls += 1
        return dt


def _phase(call_index: int, cycle: int) -> str:
    if cycle <= 1:
        return "step"
    return "update" if (call_index + 1) % cycle == 0 else "micro"


def run_group(steps: dict[str, Timed], min_sample_s: float = 0.02) -> None:
    """Warms up and times every step in `steps` (in place: fills `.samples`)."""
    for t in steps.values():
        if t.before:
            t.before()
        fastest = min((t.call() for _ in range(t.warmup * t.cycle)), default=float("inf"))
        single = min(t.call() for _ in range(3)) if fastest < SETTLE_BELOW_S else fastest
        t.settle = single < SETTLE_BELOW_S
        if t.cycle == 1 and single < min_sample_s:
            t.inner = max(1, min(20000, int(min_sample_s / max(single, 1e-9))))
    names = list(steps)
    rounds = max(t.repeats for t in steps.values())
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t = steps[name]
            if r >= t.repeats:
                continue
            if t.before:
                t.before()
            if t.settle:
                t.call()
            if t.cycle > 1:
                for _ in range(t.cycle):
                    phase = _phase(t.calls, t.cycle)
                    t.samples.setdefault(phase, []).append(t.call())
            else:
                samples = t.samples.setdefault("step", [])
                for _ in range(t.inner):
                    samples.append(t.call())


def time_calls(
    step: StepFn,
    samples: int,
    *,
    batch: int = 1,
    warmup: int = 0,
    before: StepFn | None = None,
) -> list[float]:
    """Seconds per call of `step`, one value per sample, after `warmup` untimed calls.

    A sample is the mean over `batch` back-to-back calls (calls too short for the clock);
    `before`, untimed, starts every sample (e.g. an MPI barrier, so ranks start together).
    """
    for _ in range(warmup):
        step()
    times = []
    for _ in range(samples):
        if before:
            before()
        t0 = time.perf_counter()
        for _ in range(batch):
            step()
        times.append((time.perf_counter() - t0) / batch)
    return times


def recorded(fn: Callable[..., Any], samples: list[float]) -> Callable[..., Any]:
    """`fn`, appending the seconds of each of its calls to `samples`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        samples.append(time.perf_counter() - t0)
        return out

    return wrapper


def median_ms(samples: list[float]) -> float:
    """The median of per-call times (seconds), in milliseconds."""
    return 1e3 * statistics.median(samples)


@dataclass(frozen=True)
class Stat:
    """Median and best of a list of per-step times (seconds), and how many there were."""

    median: float
    best: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Stat:
        return cls(statistics.median(samples), min(samples), len(samples))


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class OtherLoad:
    """Measures the CPU used by *other* processes between `start()` and `cores()`.

    On a shared 2-core machine this is the noise that matters: a second busy process makes a
    2-thread step slower (a fixed OpenMP team waits for a scheduler time slice).
    """

    def __init__(self) -> None:
        self.available = Path("/proc/stat").exists()
        self.start()

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._own = sum(os.times()[:2])
        self._busy = _busy_jiffies()[0] if self.available else 0

    def cores(self) -> float | None:
        """Average number of cores other processes kept busy since `start()`."""
        if not self.available:
            return None
        wall = time.perf_counter() - self._wall
        busy = (_busy_jiffies()[0] - self._busy) / os.sysconf("SC_CLK_TCK")
        own = sum(os.times()[:2]) - self._own
        return max(0.0, (busy - own) / wall) if wall > 0 else None


def wait_for_idle(max_wait_s: float, threshold_cores: float = 0.2) -> float | None:
    """Waits (up to `max_wait_s`) until other processes use < `threshold_cores` for 1 s.

    Returns the other processes' load of the last 1 s window (None without /proc/stat).
    """
    load: float | None = None
    deadline = time.perf_counter() + max_wait_s
    while True:
        probe = OtherLoad()
        if not probe.available:
            return None
        time.sleep(1.0)
        load = probe.cores()
        if load is None or load < threshold_cores or time.perf_counter() >= deadline:
            return load
