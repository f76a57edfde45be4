"""Sharded Adagrad and the sharded embedding table at N ranks, beside one process and MPI.

    python -m benchmarks.distributed [--quick] [--write]   # every run below, one table

For each workload (one float32 tensor of 16M elements; the BERT-base-like list,
110M; a 1M x 64 embedding table), in a process of its own so that its peak
memory is its own:
- one process: `adagrad_native.Adagrad` (or its sparse step of every rank's ids);
- N = 2 and 3 ranks (`mpiexec`), reduction "ordered" (the default) and "sum":
  the median step; the part of it spent waiting in MPI (the exchanges' waits);
  MPI's own collectives on the same bytes (`Reduce_scatter_block` + `Allgather`
  of the parameters' bytes; for the table, `Alltoall` of each rank's ids and
  rows, there and back); the first step; the peak RSS of each rank.
One thread per rank (`OMP_NUM_THREADS=1`): on a 2-core machine N = 3
oversubscribes. `--write` puts the table in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import median_ms, time_calls
from benchmarks.workloads import bert_base_shapes

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 11
TABLE_ROWS, TABLE_DIM, BATCH = 1_000_000, 64, 32_768


def _shapes(workload: str, quick: bool) -> list[tuple[int, ...]]:
    if workload == "16M":
        return [(1 << 20,)] if quick else [(1 << 24,)]
    return list(bert_base_shapes(layers=1, vocab=2048) if quick else bert_base_shapes())


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ids(rank: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(rank)
    ids = ((rng.zipf(1.2, BATCH) - 1) % rows).astype(np.int64)
    return ids, rng.standard_normal((BATCH, TABLE_DIM), dtype=np.float32)


# ------------------------------------------------------------ one process
def one_process(workload: str, quick: bool, ranks: int) -> dict[str, Any]:
    """One process's step of the workload (the table: every one of `ranks` ranks' ids)."""
    import adagrad_native as an

    an.set_num_threads(1)
    if workload == "embedding":
        rows = TABLE_ROWS // 10 if quick else TABLE_ROWS
        table = np.full((rows, TABLE_DIM), 0.01, np.float32)
        batches = [_ids(r, rows) for r in range(ranks)]
        grad = an.SparseGradient(
            np.concatenate([b[0] for b in batches]),
            np.concatenate([b[1] for b in batches]),
            table.shape,
        )
        opt = an.Adagrad(0.05)
        opt.build([table])
        first = time_calls(lambda: opt.apply([grad], [table]), 1)
        steps = time_calls(lambda: opt.apply([grad], [table]), REPEATS)
    else:
        params, grads = _dense(workload, quick, 0)
        opt = an.Adagrad(0.01)
        opt.build(params)
        first = time_calls(lambda: opt.apply(grads, params), 1)
        steps = time_calls(lambda: opt.apply(grads, params), REPEATS)
    return {"step_ms": median_ms(steps), "first_ms": median_ms(first), "peak_mib": [_peak_mib()]}


def _dense(workload: str, quick: bool, rank: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    shapes = _shapes(workload, quick)
    rng = np.random.default_rng(rank)
    # Written once, as initialised parameters are: no step pays for their first touch.
    params = [np.full(s, 0.01, np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-2) for s in shapes]
    return params, grads


# ----------------------------------------------------------- under mpiexec
def sharded(workload: str, quick: bool, reduction: str) -> dict[str, Any] | None:
    """This rank's part of a sharded run; rank 0 returns every rank's numbers."""
    from mpi4py import MPI

    import adagrad_native as an
    from adagrad_native.distributed import ShardedAdagrad, ShardedEmbedding

    comm = MPI.COMM_WORLD
    an.set_num_threads(1)
    if workload == "embedding":
        rows = TABLE_ROWS // 10 if quick else TABLE_ROWS
        table = ShardedEmbedding(rows, TABLE_DIM, comm=comm, learning_rate=0.05)
        ids, values = _ids(comm.Get_rank(), rows)
        coordinator = table.coordinator

        def step() -> None:
            table.apply(ids, values)

        def raw() -> float:
            return _raw_all_to_all(comm, ids, values)

    else:
        params, grads = _dense(workload, quick, comm.Get_rank())
        opt = ShardedAdagrad(0.01, comm=comm, reduction=reduction)
        opt.build(params)
        coordinator = opt.coordinator

        def step() -> None:
            opt.apply(grads, params)

        def raw() -> float:
            return _raw_collectives(comm, sum(p.size for p in params))

    waits: list[float] = []
    wait = coordinator.wait

    def timed_wait(requests: Any, what: str) -> None:
        start = time.perf_counter()
        wait(requests, what)
        waits.append(time.perf_counter() - start)

    coordinator.wait = timed_wait  # type: ignore[method-assign]
    first = time_calls(step, 1, before=comm.Barrier)
    steps, waited = [], []
    for _ in range(REPEATS):
        waits.clear()
        steps += time_calls(step, 1, before=comm.Barrier)
        waited.append(sum(waits))
    peak = _peak_mib()  # before MPI's own collectives allocate their buffers
    mine = {
        "step_ms": median_ms(steps),
        "wait_ms": median_ms(waited),
        "raw_ms": raw(),
        "first_ms": median_ms(first),
        "peak_mib": peak,
    }
    everyone = comm.gather(mine)
    if comm.Get_rank() != 0:
        return None
    return {
        **{k: max(r[k] for r in everyone) for k in ("step_ms", "wait_ms", "raw_ms", "first_ms")},
        "peak_mib": [r["peak_mib"] for r in everyone],
    }


def _raw_collectives(comm: Any, elements: int) -> float:
    """MPI's reduce-scatter plus all-gather of `elements` float32 (median ms)."""
    size = comm.Get_size()
    block = -(-elements // size)
    send = np.ones(block * size, np.float32)
    recv = np.empty(block, np.float32)
    gathered = np.empty(block * size, np.float32)

    def both() -> None:
        comm.Reduce_scatter_block(send, recv)
        comm.Allgather(recv, gathered)

    both()
    return median_ms(time_calls(both, REPEATS, before=comm.Barrier))


def _raw_all_to_all(comm: Any, ids: np.ndarray, values: np.ndarray) -> float:
    """MPI's all-to-all of a rank's ids and rows, there and back (median ms)."""
    size = comm.Get_size()
    share = -(-len(ids) // size)
    id_out = np.resize(ids, share * size)
    row_out = np.resize(values, (share * size, values.shape[1]))
    id_in, row_in = np.empty_like(id_out), np.empty_like(row_out)

    def there_and_back() -> None:
        comm.Alltoall(id_out, id_in)
        comm.Alltoall(row_out, row_in)
        comm.Alltoall(row_in, row_out)

    there_and_back()
    return median_ms(time_calls(there_and_back, REPEATS, before=comm.Barrier))


# ---------------------------------------------------------------- the driver
def _mpiexec() -> str:
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        sys.exit('mpiexec not found: pip install ".[mpi]" from a clone installs MPICH')
    return found


def _launch(ranks: int, args: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.distributed", *args]
    if ranks:
        command = [_mpiexec(), "-n", str(ranks), *command]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_all(quick: bool) -> list[dict[str, Any]]:
    """Every run of the table, each in a process (or job) of its own."""
    extra = ["--quick"] if quick else []
    rows = []
    for workload in ("16M", "BERT", "embedding"):
        for ranks in (2, 3):
            one = _launch(0, ["--one", workload, "--ranks", str(ranks), *extra])
            reductions = ("ordered",) if workload == "embedding" else ("ordered", "sum")
            for reduction in reductions:
                result = _launch(ranks, ["--job", workload, "--reduction", reduction, *extra])
                rows.append(
                    {"workload": workload, "ranks": ranks, "reduction": reduction, "one": one}
                    | result
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of `run_all`'s rows."""
    lines = [
        "| workload | ranks | reduction | step ms | of it waiting in MPI ms | MPI's collectives "
        "ms | step / MPI | first step ms | one process: step ms | peak MiB per rank "
        "| one process: peak MiB |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        one = r["one"]
        lines.append(
            f"| {r['workload']} | {r['ranks']} | {r['reduction']} | {r['step_ms']:.1f} "
            f"| {r['wait_ms']:.1f} | {r['raw_ms']:.1f} | {r['step_ms'] / r['raw_ms']:.2f} "
            f"| {r['first_ms']:.1f} | {one['step_ms']:.1f} "
            f"| {'/'.join(f'{m:.0f}' for m in r['peak_mib'])} | {one['peak_mib'][0]:.0f} |"
        )
    return "\n".join(lines)


def _section(rows: list[dict[str, Any]], elapsed_s: float) -> str:
    from mpi4py import MPI

    from benchmarks.report import machine_header

    host = machine_header("python -m benchmarks.distributed --write", elapsed_s, [])
    cpu = next(ln for ln in host.splitlines() if ln.startswith("- CPU"))
    return "\n".join(
        [
            "## Distributed: sharded Adagrad at N ranks (`python -m benchmarks.distributed`)",
            "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu[2:]}; "
            f"Python {platform.python_version()}; {MPI.Get_library_version().splitlines()[0]}; "
            f"one thread per rank, so N = 3 oversubscribes the cores; {REPEATS} timed steps, "
            "medians, the slowest rank's.",
            "- MPI's collectives: `Reduce_scatter_block` + `Allgather` of the parameters' "
            "float32 bytes (dense), `Alltoall` of each rank's ids and rows there and back "
            "(table), the least any exchange of those bytes costs with MPI's own calls. "
            "Waiting in MPI: the time inside the step's waits (the agreement, the exchanges).",
            "- One process: `adagrad_native.Adagrad` on one thread, the same tensors (the "
            "table: every rank's ids in one sparse step). Peak = each process's maximum RSS.",
            "",
            table(rows),
            "",
        ]
    )


def main() -> int:
    """Drives every run (default), or runs one part of it (--one, --job)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--one", metavar="WORKLOAD", help=argparse.SUPPRESS)
    parser.add_argument("--job", metavar="WORKLOAD", help=argparse.SUPPRESS)
    parser.add_argument("--ranks", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--reduction", default="ordered", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_process(args.one, args.quick, args.ranks)))
        return 0
    if args.job:
        result = sharded(args.job, args.quick, args.reduction)
        if result is not None:
            print(json.dumps(result))
        return 0
    start = time.monotonic()
    rows = run_all(args.quick)
    print(table(rows))
    if args.write:
        from benchmarks.report import replace_section

        replace_section(
            ROOT / "benchmarks" / "RESULTS.md",
            "## Distributed",
            _section(rows, time.monotonic() - start),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
