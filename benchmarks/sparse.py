"""Row-sparse embedding-table step: adagrad_native vs torch.optim.Adagrad (and peers).

Workloads: a 1,000,000 x 64 float32 table and a batch of 32,768 row
ids, Zipf-distributed (numpy zipf(1.25), ~5,600 distinct) or uniform; also
row widths 16 and 256 with Zipf ids. Per implementation: median ms per step
(gradient construction included for torch, as a training loop pays it),
distinct rows updated per second, and the fraction of a memory roofline: the
time the roofline probe (`benchmarks/probe.py`) needs to move the touched rows' bytes with no math
(read+write the parameter and accumulator rows, read the values), divided by
the step time. Peers run when installed: torch (sparse gradient; Adagrad
coalesces duplicates first, like us), TensorFlow's
`ResourceSparseApplyAdagradV2` (raw op; adds duplicate squares separately), and
the numpy oracle (dense `tests/oracle` step on the dense-equivalent
gradient: the cost of ignoring sparsity).

FBGEMM's CPU row-wise Adagrad (`fbgemm-gpu-cpu`) is a peer where it loads against the
benchmarked torch; the table says why it did not run otherwise.

Run from the repository root:  python -m benchmarks.sparse [--threads N] [--repeats R] [--quick]
[--write]  (--write puts the table into benchmarks/RESULTS.md, section "Row-sparse steps")
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import adagrad_native as an
from benchmarks import report
from benchmarks.probe import stream_probe
from tests.oracle import ReferenceAdagrad

HEADING = "## Row-sparse steps"

ROWS = 1_000_000
BATCH = 32_768
LR, EPS, INIT_ACC = 0.01, 1e-7, 0.1


def make_ids(kind: str, rng: np.random.Generator, rows: int = ROWS) -> np.ndarray:
    if kind == "zipf":
        return ((rng.zipf(1.25, BATCH) - 1) % rows).astype(np.int64)
    return rng.integers(0, rows, BATCH).astype(np.int64)


def median_ms(step: Callable[[], None], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def roofline_ms(distinct: int, width: int, acc_width: int, repeats: int) -> float:
    """Time to read+write the touched rows (param + accumulator) and read the values."""
    rw = [np.zeros(distinct * width, np.float32) for _ in range(2)]
    if acc_width != width:  # row-wise: one accumulator element per row
        rw = rw[:1]
    values = [np.zeros(BATCH * width, np.float32)]
    t_rw = median_ms(stream_probe([([], rw)]), repeats)
    t_ro = median_ms(stream_probe([(values, [])]), repeats)
    return t_rw + t_ro


def bench_native(
    cls: type, table: np.ndarray, ids: np.ndarray, values: np.ndarray, repeats: int
) -> float:
    opt = cls(learning_rate=LR, epsilon=EPS, initial_accumulator_value=INIT_ACC)
    grad = an.SparseGradient(ids, values)
    return median_ms(lambda: opt.apply([grad], [table]), repeats)


def bench_torch(
    table: np.ndarray, ids: np.ndarray, values: np.ndarray, repeats: int, threads: int
) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    param = torch.nn.Parameter(torch.from_numpy(table))
    opt = torch.optim.Adagrad([param], lr=LR, eps=EPS, initial_accumulator_value=INIT_ACC)
    tid = torch.from_numpy(ids).unsqueeze(0)
    tval = torch.from_numpy(values)

    def step() -> None:
        param.grad = torch.sparse_coo_tensor(tid, tval, table.shape)
        opt.step()

    with torch.no_grad():
        return median_ms(step, repeats)


def bench_tf(table: np.ndarray, ids: np.ndarray, values: np.ndarray, repeats: int) -> float | None:
    try:
        import tensorflow as tf
    except ImportError:
        return None
    var = tf.Variable(table)
    acc = tf.Variable(np.full_like(table, INIT_ACC))
    tid, tval = tf.constant(ids), tf.constant(values)

    def step() -> None:
        tf.raw_ops.ResourceSparseApplyAdagradV2(
            var=var.handle,
            accum=acc.handle,
            lr=np.float32(LR),
            epsilon=np.float32(EPS),
            grad=tval,
            indices=tid,
        )

    return median_ms(step, repeats)


def report_missing(module: str) -> str | None:
    """None when `module` imports, else a note saying it is not installed."""
    try:
        __import__(module)
    except ImportError:
        return f"`{module}` is not installed"
    return None


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def fbgemm_unavailable() -> str | None:
    """None when FBGEMM's CPU kernels load against the installed torch, else why not."""
    try:
        import fbgemm_gpu  # noqa: F401
    except ImportError:
        return "`fbgemm-gpu-cpu` is not installed"
    except OSError as e:  # its kernels were built against another torch
        library = os.path.basename(str(e).split(":")[-1].strip())
        return (
            f"`fbgemm-gpu-cpu` {_version('fbgemm-gpu-cpu')} does not load against torch "
            f"{_version('torch')} ({library} fails to load: built for another torch release)"
        )
    return "FBGEMM loads, but its row-wise Adagrad peer is not written yet"


def bench_oracle(table: np.ndarray, ids: np.ndarray, values: np.ndarray) -> float | None:
    ref = ReferenceAdagrad(learning_rate=LR, epsilon=EPS, initial_accumulator_value=INIT_ACC)
    ref.build([table])

    def step() -> None:
        dense = np.zeros(table.shape, table.dtype)
        np.add.at(dense, ids, values)
        ref.apply([dense])

    return median_ms(step, 2, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=an.get_num_threads())
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="only the 64-wide Zipf workload")
    parser.add_argument("--no-oracle", action="store_true", help="skip the slow numpy oracle")
    parser.add_argument("--write", action="store_true", help="write the table into RESULTS.md")
    args = parser.parse_args()
    an.set_num_threads(args.threads)
    lines: list[str] = []

    def out(line: str) -> None:
        print(line)
        lines.append(line)

    rng = np.random.default_rng(0)
    workloads = [("zipf", 64), ("uniform", 64), ("zipf", 16), ("zipf", 256)]
    if args.quick:
        workloads = workloads[:1]
    info = an.build_info()
    out(
        f"Sparse Adagrad step, {ROWS:,} rows, batch {BATCH:,}; threads={args.threads}, "
        f"isa={info['isa']}, median of {args.repeats} (`python -m benchmarks.sparse`)."
    )
    out("")
    header = (
        f"| {'workload':<16} | {'distinct':>8} | {'implementation':<26} | {'ms/step':>8} "
        f"| {'rows/s (M)':>10} | {'roofline':>8} | {'vs torch':>8} |"
    )
    out(header)
    out("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for kind, width in workloads:
        table0 = rng.standard_normal((ROWS, width)).astype(np.float32)
        ids = make_ids(kind, rng)
        values = rng.standard_normal((BATCH, width)).astype(np.float32)
        distinct = len(np.unique(ids))
        roof = roofline_ms(distinct, width, width, args.repeats)
        roof_rw = roofline_ms(distinct, width, 1, args.repeats)
        results: dict[str, tuple[float | None, float]] = {}
        results["adagrad_native Adagrad"] = (
            bench_native(an.Adagrad, table0.copy(), ids, values, args.repeats),
            roof,
        )
        results["adagrad_native RowWise"] = (
            bench_native(an.RowWiseAdagrad, table0.copy(), ids, values, args.repeats),
            roof_rw,
        )
        results["torch.optim.Adagrad"] = (
            bench_torch(table0.copy(), ids, values, args.repeats, args.threads),
            roof,
        )
        results["TF SparseApplyAdagradV2"] = (
            bench_tf(table0.copy(), ids, values, args.repeats),
            roof,
        )
        if not args.no_oracle and width == 64 and kind == "zipf":
            results["numpy oracle (dense)"] = (bench_oracle(table0.copy(), ids, values), roof)
        torch_ms = results["torch.optim.Adagrad"][0]
        for name, (ms, roof_ms) in results.items():
            if ms is None:
                continue
            speedup = f"{torch_ms / ms:7.1f}x" if torch_ms else "     n/a"
            out(
                f"| {f'{kind} x{width}':<16} | {distinct:>8,} | {name:<26} | {ms:>8.3f} "
                f"| {distinct / ms / 1e3:>10.2f} | {roof_ms / ms:>7.1%} | {speedup:>8} |"
            )
        del table0
    out("")
    out(
        "- roofline: the time to stream the touched rows' bytes (parameter and accumulator "
        "rows read and written, the values read) as contiguous arrays, over the time of the step."
    )
    for name, missing in (
        ("TensorFlow", report_missing("tensorflow")),
        ("FBGEMM", fbgemm_unavailable()),
    ):
        if missing:
            out(f"- {name}: not run; {missing}.")
    if args.write:
        section = "\n".join([HEADING, "", *lines, ""])
        report.replace_section(Path(__file__).resolve().parent / "RESULTS.md", HEADING, section)


if __name__ == "__main__":
    main()
