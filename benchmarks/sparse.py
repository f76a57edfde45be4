"""Row-sparse embedding-table step: adagrad_native against FBGEMM, torch and TensorFlow.

Workloads: a 1,000,000-row float32 table of width 16, 64 or 256 and a batch of 32,768 row
ids, Zipf-distributed (numpy zipf(1.25), ~5,500 distinct) or uniform (~32,200 distinct),
at 1 and 2 threads. Per workload and thread count every implementation is timed
interleaved (`timing.run_group`); the table gives the median ms per step, distinct rows
updated per second, the fraction of the sparse roofline and the time over FBGEMM's.

Implementations:
- `Adagrad` and `RowWiseAdagrad` of this package, stepping an `an.SparseGradient` on a table
  made as the package's own variable (`an.Variable`, whose buffer the package places on a
  2 MiB boundary, as torch places FBGEMM's on 64 bytes; a plain numpy array starts 16
  bytes into a line, so each 64-byte row would span two lines); the values are a plain
  numpy array, like a model's gradient.
- FBGEMM (`fbgemm-gpu-cpu`) as TorchRec runs it on CPU: `SplitTableBatchedEmbeddingBagsCodegen`
  with `EXACT_ADAGRAD` (element-wise) or `EXACT_ROWWISE_ADAGRAD`, pooled bags of one id,
  timed is the fused backward + optimizer (`out.backward(grad)`; the forward that it needs
  runs untimed before each call). It needs torch 2.13 with fbgemm-gpu-cpu 1.8.0 in an
  environment of their own: `bash benchmarks/fbgemm-env.sh` makes one; elsewhere the table
  says why FBGEMM did not run.
- torch.optim.Adagrad on a sparse gradient (it sums duplicates first, like this package;
  building the gradient is timed too, as a training loop pays it), TensorFlow's
  `ResourceSparseApplyAdagradV2` (raw op; adds duplicates' squares separately), and the
  numpy oracle (the dense `tests/oracle` step on the dense-equivalent gradient: the cost
  of ignoring sparsity; Zipf x64 only).

The sparse roofline of a step is the time the memory system needs to move what the step
must move, with no sort and no math, measured with the roofline probe (`benchmarks/probe.py`,
the step's thread team and ISA) on the package optimizer's own buffers:
- the touched rows in place: each distinct row of the table and of the accumulator (whole
  rows of L elements; RowWiseAdagrad: the one accumulator element of the row) read and
  written back, in ascending row order, the rows ahead prefetched as the step prefetches
  them (about 27 cache lines in flight, at least 3 rows; `RowsProbe`), then
- the gradient values read once, as one contiguous stream (`StreamProbe`).
Bytes counted: distinct x (4 L + 4 L) x 2 + ids x 4 L for Adagrad, distinct x (4 L + 4) x 2
+ ids x 4 L for RowWiseAdagrad (the ids themselves, 8 bytes each, are not counted). The
rows cost what rows scattered over a table cost: whole cache lines, DRAM pages and misses
where they are. "contiguous" is the same byte count streamed as contiguous arrays: a bound
no sparse step reaches (its rows are not contiguous), given for comparison.

Run from the repository root:
    python -m benchmarks.sparse [--threads 1,2] [--repeats R] [--quick | --workloads zipf:64,...]
        [--write]
(--write puts the table into benchmarks/RESULTS.md, section "Row-sparse steps")
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import adagrad_native as an
from benchmarks import report
from benchmarks.probe import rows_probe, stream_probe
from benchmarks.probe import unavailable as probe_unavailable
from benchmarks.timing import OtherLoad, Stat, Timed, median_ms, run_group, time_calls
from tests.oracle import ReferenceAdagrad

HEADING = "## Row-sparse steps"

ROWS = 1_000_000
BATCH = 32_768
LR, EPS, INIT_ACC = 0.01, 1e-7, 0.1
WORKLOADS = [(kind, width) for kind in ("zipf", "uniform") for width in (16, 64, 256)]
TARGETS = {"element-wise": 0.5, "row-wise": 0.8}  # time / FBGEMM's, at most
ROOFLINE_TARGET = 0.5

StepFn = Callable[[], None]


def make_ids(kind: str, rng: np.random.Generator, rows: int = ROWS) -> np.ndarray:
    if kind == "zipf":
        return ((rng.zipf(1.25, BATCH) - 1) % rows).astype(np.int64)
    return rng.integers(0, rows, BATCH).astype(np.int64)


@dataclass
class Impl:
    """One timed implementation of a workload."""

    label: str
    kind: str  # "element-wise" or "row-wise": which roofline and which FBGEMM it faces
    timed: Timed
    fbgemm: bool = False


def _accumulator(opt: Any) -> np.ndarray:
    acc: np.ndarray = next(v for v in opt.variables if v.path.endswith("_accumulator")).value
    return acc


def native(cls: type, table: np.ndarray, ids: np.ndarray, values: np.ndarray) -> tuple[Any, StepFn]:
    opt = cls(learning_rate=LR, epsilon=EPS, initial_accumulator_value=INIT_ACC)
    grad = an.SparseGradient(ids, values)
    opt.apply([grad], [table])  # builds

    def step() -> None:
        opt.apply([grad], [table])

    return opt, step


def roofline(
    table: np.ndarray, acc: np.ndarray, distinct: np.ndarray, values: np.ndarray
) -> StepFn:
    """The sparse roofline's step: touched rows in place, then the values streamed."""
    rows = rows_probe(distinct, [table, acc])
    stream = stream_probe([([values.reshape(-1)], [])])

    def step() -> None:
        rows()
        stream()

    return step


def contiguous_roofline(n_distinct: int, width: int, acc_width: int, values: np.ndarray) -> StepFn:
    """The same bytes as contiguous arrays (the bound of the earlier tables)."""
    rw = [np.zeros(n_distinct * width, np.float32), np.zeros(n_distinct * acc_width, np.float32)]
    rw_stream = stream_probe([([], [rw[0]]), ([], [rw[1]])])
    stream = stream_probe([([values.reshape(-1)], [])])

    def step() -> None:
        rw_stream()
        stream()

    return step


def fbgemm_unavailable() -> str | None:
    """None when FBGEMM's CPU kernels load against the installed torch, else why not."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed (`bash benchmarks/fbgemm-env.sh` makes an environment)"
    try:
        import fbgemm_gpu  # noqa: F401
    except ImportError:
        return "`fbgemm-gpu-cpu` is not installed (`bash benchmarks/fbgemm-env.sh`)"
    except OSError as e:  # its kernels were built against another torch
        library = os.path.basename(str(e).split(":")[-1].strip())
        return (
            f"`fbgemm-gpu-cpu` {_version('fbgemm-gpu-cpu')} does not load against torch "
            f"{_version('torch')} ({library} fails to load: built for another torch release; "
            "`bash benchmarks/fbgemm-env.sh` makes an environment where it does)"
        )
    return None


def fbgemm(
    optimizer: str, ids: np.ndarray, values: np.ndarray, width: int
) -> tuple[StepFn, StepFn]:
    """(untimed forward, timed fused backward + update) of FBGEMM's CPU table."""
    import torch
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        SplitTableBatchedEmbeddingBagsCodegen,
    )

    emb = SplitTableBatchedEmbeddingBagsCodegen(
        [(ROWS, width, EmbeddingLocation.HOST, ComputeDevice.CPU)],
        optimizer=getattr(EmbOptimType, optimizer),
        learning_rate=LR,
        eps=EPS,
    )
    indices = torch.from_numpy(ids)
    offsets = torch.arange(len(ids) + 1, dtype=torch.int64)  # pooled bags of one id
    grad = torch.from_numpy(values)
    out: list[Any] = []

    def forward() -> None:
        out[:] = [emb(indices, offsets)]

    def backward() -> None:
        out.pop().backward(grad)

    return forward, backward


def torch_adagrad(table: np.ndarray, ids: np.ndarray, values: np.ndarray) -> StepFn | None:
    try:
        import torch
    except ImportError:
        return None
    # Sparse tensors unchecked, as torch builds them by default (it warns until told so).
    torch.sparse.check_sparse_tensor_invariants.disable()
    param = torch.nn.Parameter(torch.from_numpy(table))  # the same memory as `table`
    opt = torch.optim.Adagrad([param], lr=LR, eps=EPS, initial_accumulator_value=INIT_ACC)
    tid = torch.from_numpy(ids).unsqueeze(0)
    tval = torch.from_numpy(values)

    def step() -> None:
        with torch.no_grad():
            param.grad = torch.sparse_coo_tensor(tid, tval, table.shape)
            opt.step()

    return step


def tf_adagrad(table: np.ndarray, ids: np.ndarray, values: np.ndarray) -> StepFn | None:
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

    return step


def oracle_ms(table: np.ndarray, ids: np.ndarray, values: np.ndarray) -> float:
    ref = ReferenceAdagrad(learning_rate=LR, epsilon=EPS, initial_accumulator_value=INIT_ACC)
    ref.build([table])

    def step() -> None:
        dense = np.zeros(table.shape, table.dtype)
        np.add.at(dense, ids, values)
        ref.apply([dense])

    return median_ms(time_calls(step, 2, warmup=1))


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _set_threads(n: int) -> None:
    an.set_num_threads(n)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)


def host() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor() or "unknown",
    )
    l3 = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    cache = f", L3 {l3.read_text().strip()}" if l3.exists() else ""
    return f"{model}, {os.cpu_count()} cores{cache}"


def workload_steps(
    table: np.ndarray, ids: np.ndarray, values: np.ndarray, with_peers: bool
) -> dict[str, tuple[str, StepFn, StepFn | None]]:
    """label -> (kind, timed step, untimed preparation) of every implementation and roofline."""
    distinct = np.unique(ids)
    d, width = len(distinct), table.shape[1]
    # One table stepped by this package's optimizers and torch (the user's array); the
    # probes move the package's own buffers of it.
    elementwise, elementwise_step = native(an.Adagrad, table, ids, values)
    rowwise, rowwise_step = native(an.RowWiseAdagrad, table, ids, values)
    rowwise_acc = _accumulator(rowwise).reshape(-1, 1)
    steps: dict[str, tuple[str, StepFn, StepFn | None]] = {
        "adagrad_native Adagrad": ("element-wise", elementwise_step, None),
        "adagrad_native RowWiseAdagrad": ("row-wise", rowwise_step, None),
        "roofline element-wise": (
            "element-wise",
            roofline(table, _accumulator(elementwise), distinct, values),
            None,
        ),
        "roofline row-wise": ("row-wise", roofline(table, rowwise_acc, distinct, values), None),
        "contiguous element-wise": (
            "element-wise",
            contiguous_roofline(d, width, width, values),
            None,
        ),
        "contiguous row-wise": ("row-wise", contiguous_roofline(d, width, 1, values), None),
    }
    if fbgemm_unavailable() is None:
        for kind, optimizer in (
            ("element-wise", "EXACT_ADAGRAD"),
            ("row-wise", "EXACT_ROWWISE_ADAGRAD"),
        ):
            forward, backward = fbgemm(optimizer, ids, values, width)
            steps[f"FBGEMM {kind}"] = (kind, backward, forward)
    if with_peers:
        for label, step in (
            ("torch.optim.Adagrad", torch_adagrad(table, ids, values)),
            ("TF SparseApplyAdagradV2", tf_adagrad(table, ids, values)),
        ):
            if step is not None:
                steps[label] = ("element-wise", step, None)
    return steps


FBGEMM_LABELS = {"element-wise": "EXACT_ADAGRAD", "row-wise": "EXACT_ROWWISE_ADAGRAD"}


def rows_of(
    title: str,
    d: int,
    threads: int,
    steps: dict[str, tuple[str, StepFn, StepFn | None]],
    ms: dict[str, float],
    misses: list[str],
) -> list[str]:
    """Markdown rows of one workload at one thread count; appends missed targets to `misses`."""
    lines = []
    for label, (kind, _, _) in steps.items():
        if label.startswith(("roofline", "contiguous")):
            continue
        t = ms[label]
        roof = ms[f"roofline {kind}"] / t
        contig = ms[f"contiguous {kind}"] / t
        fb = ms.get(f"FBGEMM {kind}")
        ratio = "—" if fb is None else f"{t / fb:.2f}"
        name = f"FBGEMM {FBGEMM_LABELS[kind]}" if label.startswith("FBGEMM") else label
        lines.append(
            f"| {title} | {d:,} | {threads} | {name} | {t:.3f} | {d / t / 1e3:.2f} "
            f"| {roof:.2f} | {contig:.2f} | {ratio} |"
        )
        if label.startswith("adagrad_native"):
            where = f"{title}, {threads} thread(s), {label.split()[1]}"
            if fb is not None and t / fb > TARGETS[kind]:
                misses.append(f"{where}: {t / fb:.2f} x FBGEMM")
            if roof < ROOFLINE_TARGET:
                misses.append(f"{where}: {roof:.2f} of the roofline")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only the Zipf x64 workload")
    parser.add_argument(
        "--workloads", default=None, help="e.g. zipf:64,uniform:16 (default: all six)"
    )
    parser.add_argument("--no-oracle", action="store_true", help="skip the slow numpy oracle")
    parser.add_argument("--no-peers", action="store_true", help="no torch, TensorFlow, oracle")
    parser.add_argument("--write", action="store_true", help="write the table into RESULTS.md")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    missing_probe = probe_unavailable()
    if missing_probe:
        raise SystemExit(f"benchmarks.sparse needs the roofline probe: {missing_probe}")
    missing_fbgemm = fbgemm_unavailable()
    out(
        f"Sparse Adagrad step, {ROWS:,}-row float32 table, batch {BATCH:,} ids; "
        f"isa={an.build_info()['isa']}; host: {host()}; median of {args.repeats} interleaved "
        "repeats (`python -m benchmarks.sparse`)."
    )
    out("")
    header = ["workload", "distinct", "threads", "implementation", "ms/step", "rows/s (M)"]
    header += ["roofline", "contiguous", "time / FBGEMM"]
    out("| " + " | ".join(header) + " |")
    out("|" + "|".join("---" if i < 4 else "--:" for i in range(len(header))) + "|")
    misses: list[str] = []
    load = OtherLoad()
    rng = np.random.default_rng(0)
    workloads = [("zipf", 64)] if args.quick else WORKLOADS
    if args.workloads:
        workloads = [(k, int(w)) for k, w in (x.split(":") for x in args.workloads.split(","))]
    for kind, width in workloads:
        title = f"{kind} x{width}"
        # The table as the package's own variable, whose buffer the package places (on a
        # 2 MiB boundary: no row straddles more cache lines than it must; numpy's 16-byte
        # alignment would split every 64-byte row, torch aligns FBGEMM's to 64 bytes).
        table = an.Variable(rng.standard_normal((ROWS, width)).astype(np.float32)).value
        ids = make_ids(kind, rng)
        values = rng.standard_normal((BATCH, width)).astype(np.float32)
        d = len(np.unique(ids))
        oracle = None
        if not (args.no_oracle or args.no_peers) and (kind, width) == ("zipf", 64):
            oracle = oracle_ms(table.copy(), ids, values)
        steps = workload_steps(table, ids, values, not args.no_peers)
        for n in threads:
            group = {
                label: Timed(
                    step,
                    args.warmup,
                    args.repeats,
                    before=lambda n=n: _set_threads(n),
                    prepare=prepare,
                )
                for label, (_, step, prepare) in steps.items()
            }
            run_group(group)
            ms = {label: 1e3 * Stat.of(t.samples["step"]).median for label, t in group.items()}
            for line in rows_of(title, d, n, steps, ms, misses):
                out(line)
            if oracle is not None and n == threads[0]:
                roof = ms["roofline element-wise"] / oracle
                out(
                    f"| {title} | {d:,} | — | numpy oracle (dense) | {oracle:.3f} "
                    f"| {d / oracle / 1e3:.2f} | {roof:.2f} | | |"
                )
        del steps, group, table, values
        gc.collect()
    out("")
    for note in notes(missing_fbgemm, not args.no_peers, load.cores(), misses):
        out(note)
    if args.write:
        section = "\n".join([HEADING, "", *lines, ""])
        report.replace_section(Path(__file__).resolve().parent / "RESULTS.md", HEADING, section)


def notes(
    missing_fbgemm: str | None, peers: bool, cores: float | None, misses: list[str]
) -> list[str]:
    lines = [
        "- roofline: the time the probe needs to read and write back, in place, every touched "
        "row of the table and of the accumulator (RowWiseAdagrad: its one accumulator element "
        "per row) in ascending order, rows ahead prefetched as the step does, and to read the "
        "gradient values once as a stream, over the step's time; contiguous: the same bytes "
        "as contiguous arrays (a bound no sparse step reaches), over the step's time. Bytes: "
        "distinct x L x (4 + 4) x 2 + ids x L x 4 (Adagrad), distinct x (4 L + 4) x 2 + ids x "
        "L x 4 (RowWiseAdagrad). Peers face the roofline of their kind (element-wise or row-wise).",
        "- time / FBGEMM: this row's time over FBGEMM's of the same kind (EXACT_ADAGRAD for "
        "element-wise steps, EXACT_ROWWISE_ADAGRAD for RowWiseAdagrad); targets: at most "
        f"{TARGETS['element-wise']} (Adagrad) and {TARGETS['row-wise']} (RowWiseAdagrad), and "
        f"at least {ROOFLINE_TARGET} of the roofline.",
        f"- FBGEMM: not run; {missing_fbgemm}."
        if missing_fbgemm
        else f"- FBGEMM: fbgemm-gpu-cpu {_version('fbgemm-gpu-cpu')} with torch "
        f"{_version('torch')}: the fused backward + optimizer of "
        "`SplitTableBatchedEmbeddingBagsCodegen` (pooled bags of one id), its forward untimed.",
    ]
    if peers:
        for name, module in (("torch", "torch"), ("TensorFlow", "tensorflow")):
            try:
                __import__(module)
            except ImportError:
                lines.append(f"- {name}: not run; `{module}` is not installed.")
    if cores is not None:
        lines.append(f"- other processes kept {cores:.2f} cores busy on average during the run.")
    lines.append(
        "- targets missed: " + "; ".join(misses)
        if misses
        else "- every target met on every workload and thread count."
    )
    return lines


if __name__ == "__main__":
    main()
