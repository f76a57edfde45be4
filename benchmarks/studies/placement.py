"""Why the package places its large buffers: one step with the accumulator placed two ways.

A user's parameter and gradient are plain numpy arrays of a power-of-two size. In each of
several fresh processes (placement differs per process), two optimizers step them: one with
its accumulator as the package allocates it (`adagrad_native._buffers`), one whose
accumulator was swapped for an `np.full_like` array (an exact-size numpy mapping, as the
package allocated before; private API, benchmark only). The memory-roofline probe streams
the same bytes over each. Everything is timed interleaved, so only ratios matter.

    python -m benchmarks.studies.placement [--processes 6] [--elements 16777216]  # repo root
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]  # where the child's `python -m` runs


def child(elements: int, repeats: int) -> None:
    import adagrad_native as an
    from benchmarks.probe import stream_probe
    from benchmarks.timing import Timed, median_ms, run_group

    rng = np.random.default_rng(0)
    v = rng.standard_normal(elements, dtype=np.float32)
    g = rng.standard_normal(elements, dtype=np.float32) * np.float32(1e-2)
    placed = an.Adagrad(learning_rate=0.01)
    placed.build([v])
    unplaced = an.Adagrad(learning_rate=0.01)
    unplaced.build([v])
    accumulator = next(x for x in unplaced.variables if x.path.endswith("_accumulator"))
    accumulator._rebind(np.full_like(v, 0.1))  # the native step follows on its next call
    steps = {}
    for name, opt in (("numpy", unplaced), ("package", placed)):
        acc = next(x for x in opt.variables if x.path.endswith("_accumulator")).value
        steps[f"step {name}"] = lambda opt=opt: opt.apply([g], [v])
        steps[f"probe {name}"] = stream_probe([([g], [v, acc])])
    # Interleaved, the order rotating every round (timing.run_group); one call a sample.
    timed = {name: Timed(step, warmup=2, repeats=repeats) for name, step in steps.items()}
    run_group(timed, min_sample_s=0.0)
    print(" ".join(f"{median_ms(t.samples['step']):.3f}" for t in timed.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--processes", type=int, default=6)
    ap.add_argument("--elements", type=int, default=16 * 2**20)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.elements, args.repeats)
        return
    print(
        f"one plain float32 step of {args.elements} elements: median ms of {args.repeats} "
        "interleaved calls per process; speed-up = numpy-placed / package-placed"
    )
    print(
        "| process | step, np.full_like accumulator | step, package's | speed-up "
        "| probe, np.full_like | probe, package's | speed-up |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|")
    step_ratios, probe_ratios = [], []
    for p in range(args.processes):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.studies.placement",
                "--child",
                "--elements",
                str(args.elements),
                "--repeats",
                str(args.repeats),
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
        ).stdout.split()
        step_np, step_pkg, probe_np, probe_pkg = (float(x) for x in out)
        step_ratios.append(step_np / step_pkg)
        probe_ratios.append(probe_np / probe_pkg)
        print(
            f"| {p + 1} | {step_np:.2f} | {step_pkg:.2f} | {step_ratios[-1]:.2f} "
            f"| {probe_np:.2f} | {probe_pkg:.2f} | {probe_ratios[-1]:.2f} |"
        )
    for what, r in (("step", step_ratios), ("probe", probe_ratios)):
        print(f"{what} speed-up: median {np.median(r):.2f}, min {min(r):.2f}, max {max(r):.2f}")


if __name__ == "__main__":
    main()
