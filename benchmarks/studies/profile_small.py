"""Where the time of a small-model `apply()` goes: Python orchestration vs the native call.

Usage, from the repository root:
    python -m benchmarks.studies.profile_small [--steps 20000] [--threads 1]

Prints, for the 4-tensor MLP of workload 3: the time per `apply()`, the time of the native
probe over the same bytes, the time of `apply()` on 4 one-element tensors (≈ fixed per-call
overhead), and a cProfile listing of the Python functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
from collections.abc import Callable

import numpy as np

from benchmarks.timing import median_ms, time_calls
from benchmarks.workloads import LEARNING_RATE, MLP_SHAPES


def per_call(fn: Callable[[], None], steps: int) -> float:
    """Median over 5 batches of the time per call, in µs."""
    return 1e3 * median_ms(time_calls(fn, 5, batch=steps // 5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import adagrad_native as an
    from benchmarks.probe import stream_probe

    if args.threads:
        an.set_num_threads(args.threads)
    params = [np.zeros(s, np.float32) for s in MLP_SHAPES]
    grads = [np.full(s, 1e-2, np.float32) for s in MLP_SHAPES]
    opt = an.Adagrad(learning_rate=LEARNING_RATE)
    opt.build(params)
    tiny_p = [np.zeros(1, np.float32) for _ in MLP_SHAPES]
    tiny_g = [np.ones(1, np.float32) for _ in MLP_SHAPES]
    tiny = an.Adagrad(learning_rate=LEARNING_RATE)
    tiny.build(tiny_p)
    n = sum(p.size for p in params)
    accumulators = [v.value for v in opt.variables if v.path.endswith("_accumulator")]
    probe = stream_probe([([g], [p, a]) for p, g, a in zip(params, grads, accumulators)])

    apply_us = per_call(lambda: opt.apply(grads, params), args.steps)
    tiny_us = per_call(lambda: tiny.apply(tiny_g, tiny_p), args.steps)
    probe_us = per_call(probe, args.steps)
    print(f"threads {an.get_num_threads()}, MLP {n} elements")
    print(f"apply() MLP              {apply_us:8.2f} µs")
    print(f"apply() 4 x 1 element    {tiny_us:8.2f} µs  (per-call overhead)")
    print(f"probe over MLP buffers   {probe_us:8.2f} µs  (20 B/elem, includes its own call)")

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.steps):
        opt.apply(grads, params)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    print(out.getvalue())


if __name__ == "__main__":
    main()
