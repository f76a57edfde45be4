"""Peak-RSS growth of this package over N steps, measured in a fresh process.

Run as `python -m benchmarks.memory --workload 2 --steps 50` (run.py does it): the child
builds the workload, applies 3 warm-up steps, resets the kernel's peak-RSS mark
(`/proc/self/clear_refs`, value 5), runs the steps, and prints JSON with the growth of the
peak (VmHWM) over the resident size before the steps.  A fresh process keeps the peaks of
other implementations out of the number.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]  # where `python -m benchmarks.memory` runs


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(workload_key: str, steps: int, quick: bool) -> dict[str, Any]:
    """Runs in the child process: build, warm up, reset the peak, step, report."""
    import adagrad_native as an
    from benchmarks.workloads import LEARNING_RATE, all_workloads, make_data

    wl = next(w for ws in all_workloads(quick).values() for w in ws if w.key == workload_key)
    data = make_data(wl)
    opt = an.Adagrad(learning_rate=LEARNING_RATE, **wl.options)
    for _ in range(3):
        opt.apply(data.grads, data.params)
    reset = _reset_peak()
    rss_before = _status_kib("VmRSS")
    hwm_before = _status_kib("VmHWM")
    for _ in range(steps):
        opt.apply(data.grads, data.params)
    hwm_after = _status_kib("VmHWM")
    return {
        "workload": wl.key,
        "title": wl.title,
        "elements": wl.elements,
        "steps": steps,
        "peak_reset": reset,
        "rss_before_kib": rss_before,
        "hwm_before_kib": hwm_before,
        "hwm_after_kib": hwm_after,
        # With the peak reset, the peak starts at the current RSS; without it, only growth
        # beyond the earlier peak (build-time transients included) can be seen.
        "growth_kib": hwm_after - (rss_before if reset else hwm_before),
        "threads": an.get_num_threads(),
    }


def measure_in_child(workload_key: str, steps: int, quick: bool) -> dict[str, Any]:
    """Runs `measure` in a fresh interpreter and returns its result (or an error note)."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.memory",
        "--workload",
        workload_key,
        "--steps",
        str(steps),
    ] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    if proc.returncode != 0:
        return {"workload": workload_key, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", default="2")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(json.dumps(measure(args.workload, args.steps, args.quick)))


if __name__ == "__main__":
    main()
