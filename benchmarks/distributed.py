"""Sharded Adagrad and the sharded embedding table at N ranks: where a step's time goes.

    mpiexec -n N python -m benchmarks.distributed [--quick] [--repeats 5]
    python -m benchmarks.distributed --table N1.json N2.json ...   # the Markdown table

For the 16M-element float32 tensor and the BERT-base-like list: the optimizer
state bytes per rank, the median step split into reduce-scatter, local step
(the shard's fused step, the norm gather, Python) and all-gather, and, as the
limit of the communication part, MPI's own `Reduce_scatter_block` and
`Allgather` on buffers of the same bytes. Then the sparse table's step
(1M x 64 float32, 32,768 Zipf ids per rank). One thread per rank (`OMP_NUM_THREADS=1`):
on this 2-core machine N=3 oversubscribes. Rank 0 prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from benchmarks.timing import median_ms, recorded, time_calls
from benchmarks.workloads import bert_base_shapes


def dense(comm: Any, name: str, shapes: list[tuple[int, ...]], repeats: int) -> dict[str, Any]:
    from adagrad_native.distributed import ShardedAdagrad

    rng = np.random.default_rng(comm.Get_rank())
    params = [np.zeros(s, np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-2) for s in shapes]
    opt = ShardedAdagrad(0.01, comm=comm)
    opt.build(params)
    exchange = opt._sharded_step._exchange
    rs: list[float] = []
    ag: list[float] = []
    exchange.reduce_scatter = recorded(exchange.reduce_scatter, rs)  # type: ignore[method-assign]
    exchange.all_gather = recorded(exchange.all_gather, ag)  # type: ignore[method-assign]
    opt.apply(grads, params)  # warm-up
    rs.clear()
    ag.clear()
    # Every rank starts each step together.
    total = time_calls(lambda: opt.apply(grads, params), repeats, before=comm.Barrier)
    # MPI alone on the same bytes: the padded send buffer and the gathered block.
    size = comm.Get_size()
    block = exchange._block(list(range(len(shapes))))
    send = np.ones(size * block, np.float32)
    recv = np.empty(block, np.float32)
    gathered = np.empty(size * block, np.float32)
    mpi_rs: list[float] = []
    mpi_ag: list[float] = []
    if size > 1:
        for _ in range(repeats):
            mpi_rs += time_calls(
                lambda: comm.Reduce_scatter_block(send, recv), 1, before=comm.Barrier
            )
            mpi_ag += time_calls(lambda: comm.Allgather(recv, gathered), 1, before=comm.Barrier)
    else:
        mpi_rs = mpi_ag = [0.0]
    step = [t - a - b for t, a, b in zip(total, rs, ag)]
    return {
        "workload": name,
        "elements": int(sum(int(np.prod(s)) for s in shapes)),
        "state_bytes": sum(v.value.nbytes for v in opt.variables),
        "total_ms": median_ms(total),
        "reduce_scatter_ms": median_ms(rs),
        "local_step_ms": median_ms(step),
        "all_gather_ms": median_ms(ag),
        "mpi_reduce_scatter_ms": median_ms(mpi_rs),
        "mpi_all_gather_ms": median_ms(mpi_ag),
    }


def sparse(comm: Any, rows: int, dim: int, batch: int, repeats: int) -> dict[str, Any]:
    from adagrad_native.distributed import ShardedEmbedding

    table = ShardedEmbedding(rows, dim, comm=comm, learning_rate=0.05)
    rng = np.random.default_rng(comm.Get_rank())
    ids = (rng.zipf(1.2, batch) - 1) % rows
    values = rng.standard_normal((batch, dim), dtype=np.float32)
    table.apply(ids, values)
    samples = time_calls(lambda: table.apply(ids, values), repeats, before=comm.Barrier)
    return {
        "workload": f"sparse {rows}x{dim}, {batch} Zipf ids per rank",
        "state_bytes": sum(v.value.nbytes for v in table.optimizer.variables),
        "total_ms": median_ms(samples),
    }


def measure(quick: bool, repeats: int) -> int:
    from mpi4py import MPI

    import adagrad_native as an

    comm = MPI.COMM_WORLD
    an.set_num_threads(1)
    big = 1 << 20 if quick else 1 << 24
    bert = bert_base_shapes(layers=1, vocab=2048) if quick else bert_base_shapes()
    results = [
        dense(comm, f"one float32 tensor of {big}", [(big,)], repeats),
        dense(comm, "BERT-base-like list", list(bert), repeats),
        sparse(comm, 100_000 if quick else 1_000_000, 64, 32_768, repeats),
    ]
    everything = comm.gather(results)
    if comm.Get_rank() == 0:
        per_rank = [
            {**r, "state_bytes": [rank[i]["state_bytes"] for rank in everything]}
            for i, r in enumerate(results)
        ]
        print(json.dumps({"ranks": comm.Get_size(), "results": per_rank}))
    return 0


def table(paths: list[str]) -> str:
    """The Markdown tables of several runs' JSON output (one file per rank count)."""
    runs = [json.load(open(p)) for p in paths]
    lines = [
        "| workload | ranks | state MiB per rank | step ms | reduce-scatter ms | local step ms "
        "| all-gather ms | MPI reduce-scatter ms | MPI all-gather ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    sparse_lines = ["| workload | ranks | state MiB per rank | step ms |", "|---|--:|--:|--:|"]
    for run in runs:
        for r in run["results"]:
            mib = "/".join(f"{b / 2**20:.1f}" for b in r["state_bytes"])
            if "reduce_scatter_ms" in r:
                lines.append(
                    f"| {r['workload']} | {run['ranks']} | {mib} | {r['total_ms']:.1f} "
                    f"| {r['reduce_scatter_ms']:.1f} | {r['local_step_ms']:.1f} "
                    f"| {r['all_gather_ms']:.1f} | {r['mpi_reduce_scatter_ms']:.1f} "
                    f"| {r['mpi_all_gather_ms']:.1f} |"
                )
            else:
                sparse_lines.append(
                    f"| {r['workload']} | {run['ranks']} | {mib} | {r['total_ms']:.2f} |"
                )
    return "\n".join(lines) + "\n\n" + "\n".join(sparse_lines)


def main() -> int:
    """Measures under mpiexec, or prints the table of saved runs with --table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (5)")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="print the table of runs")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return 0
    return measure(args.quick, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
