"""Arithmetic cost of a step per element, with the data in cache (one thread).

Usage, from the repository root:
    python -m benchmarks.studies.in_cache [--elements 8192] [--calls 4000]

For each parameter dtype, times the native step (`NativeStep.step`, no Python orchestration) on
a tensor small enough to stay in L1/L2, minus the same call on 8 elements, and the roofline
probe over the same bytes. When the step costs more per element in cache than the bytes
cost from DRAM (the suite's probe), the step is bound by its arithmetic, not by memory: the
exact float32 square root and division, plus conversions for 16-bit types.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

import adagrad_native as an
from benchmarks.probe import stream_probe
from benchmarks.timing import median_ms, time_calls

TINY = 8


def per_call_ns(fn: Callable[[], None], calls: int) -> float:
    """Median over 9 batches of the time per call, in ns."""
    return 1e6 * median_ms(time_calls(fn, 9, batch=calls // 9))


def step_ns_per_element(dtype: object, n: int, calls: int, **options: object) -> float:
    rng = np.random.default_rng(0)
    costs = []
    for size in (TINY, n):
        params = [rng.standard_normal(size).astype(dtype)]
        grads = [(rng.standard_normal(size) * 1e-2).astype(dtype)]
        opt = an.Adagrad(**options)  # type: ignore[arg-type]
        opt.apply(grads, params)  # builds and prepares the plan
        step = lambda o=opt, g=grads: o._native.step(g)  # noqa: E731
        costs.append(per_call_ns(step, calls))
    return (costs[1] - costs[0]) / (n - TINY)


def probe_ns_per_element(itemsize: int, n: int, calls: int) -> float:
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize]
    big = [np.ones(n, bits) for _ in range(3)]
    tiny = [a[:TINY] for a in big]
    full = per_call_ns(stream_probe([(big[:1], big[1:])]), calls)
    base = per_call_ns(stream_probe([(tiny[:1], tiny[1:])]), calls)
    return (full - base) / (n - TINY)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--elements", type=int, default=8192)
    ap.add_argument("--calls", type=int, default=4000)
    args = ap.parse_args()
    an.set_num_threads(1)
    dtypes: list[tuple[str, object]] = [("float32", np.float32), ("float16", np.float16)]
    try:
        import ml_dtypes

        dtypes.append(("bfloat16", ml_dtypes.bfloat16))
    except ImportError:
        print("(ml_dtypes is not installed: no bfloat16 row)")
    print(f"isa {an.build_info()['isa']}, 1 thread, {args.elements} elements in cache")
    print("| parameter dtype | step ns/elem | probe ns/elem (same bytes) |")
    print("|---|--:|--:|")
    for name, dtype in dtypes:
        step = step_ns_per_element(dtype, args.elements, args.calls)
        probe = probe_ns_per_element(np.dtype(dtype).itemsize, args.elements, args.calls)
        print(f"| {name} | {step:.3f} | {probe:.3f} |")


if __name__ == "__main__":
    main()
