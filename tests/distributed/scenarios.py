"""Scenarios run on every MPI rank, each compared bit for bit with one process.

Run by the tests as `mpiexec -n N python -m tests.distributed.scenarios NAME ...`.
Every rank builds the same parameters and knows every rank's gradients (seeded by
step and rank), so each rank can compute the one-process reference itself: the
plain optimizer applying, per step, the ranks' gradients summed in rank order
(and divided by N with `average=True`). Rank 0 prints one JSON line per
scenario: whether every rank's parameters, its shard of every optimizer slot,
and the iteration count equal the reference's.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

import adagrad_native as an
from adagrad_native.distributed import (
    ShardedAdagrad,
    ShardedEmbedding,
    ShardedRowWiseAdagrad,
)
from tests.helpers import FLOAT_DTYPES

# A 17x29 matrix straddles shard boundaries for any N at the smallest chunk, as
# do the 4099-element vector and the 0-d scalar (with N=3 one rank may own only
# part of one tensor, or nothing).
SHAPES = [(17, 29), (4099,), (), (3, 5, 7), (1,)]
BIG_SHAPES = [(300, 257), (70_000,), (5,)]  # several work items per tensor


def _gradients(shapes, dtype, step: int, rank: int, none: set[int]) -> list[Any]:
    """Rank `rank`'s gradients at `step`: `dtype` is one dtype or one per shape."""
    rng = np.random.default_rng(1000 * step + rank)
    dtypes = dtype if isinstance(dtype, list) else [dtype] * len(shapes)
    return [
        None if i in none else rng.standard_normal(s).astype(dt)
        for i, (s, dt) in enumerate(zip(shapes, dtypes))
    ]


def _summed(grads_by_rank: list[list[Any]], average: bool) -> list[Any]:
    out = []
    for per_rank in zip(*grads_by_rank):
        if per_rank[0] is None:
            out.append(None)
            continue
        total = functools.reduce(np.add, per_rank)
        if average:
            total = total / total.dtype.type(len(per_rank))
        out.append(np.asarray(total, per_rank[0].dtype))
    return out


def _slot_arrays(opt) -> dict[str, np.ndarray]:
    return {v.path.split("/", 1)[1]: v.value for v in opt.variables}


def dense(
    comm,
    *,
    cls=ShardedAdagrad,
    dtype="float32",
    shapes=SHAPES,
    steps=4,
    none_at=None,
    kwargs=None,
    reduction="sum",
    average=False,
    constraint=None,
    loss_scale_wrapper=False,
    inject_inf_at=None,
    exclude=None,
    finalize=False,
    lr=None,
    bucket_bytes=None,
) -> dict[str, Any]:
    """Trains `steps` steps sharded and in one process; compares everything."""
    rank, size = comm.Get_rank(), comm.Get_size()
    dts = [FLOAT_DTYPES[d] for d in (dtype if isinstance(dtype, list) else [dtype] * len(shapes))]
    kwargs = dict(kwargs or {})
    sharding = {} if bucket_bytes is None else {"bucket_bytes": bucket_bytes}
    rng = np.random.default_rng(7)
    init = [rng.standard_normal(s).astype(dt) for s, dt in zip(shapes, dts)]
    none_at = none_at or {}

    def make(sharded: bool):
        learning_rate = lr() if lr else 0.05
        if sharded:
            opt = cls(
                learning_rate,
                comm=comm,
                reduction=reduction,
                average=average,
                **sharding,
                **kwargs,
            )
        else:
            base = an.RowWiseAdagrad if cls is ShardedRowWiseAdagrad else an.Adagrad
            opt = base(learning_rate, **kwargs)
        variables = [an.Variable(a.copy(), name=f"w{i}") for i, a in enumerate(init)]
        if constraint:
            variables[0].constraint = constraint
        if exclude:
            opt.exclude_from_weight_decay(var_names=exclude)
        return (
            an.LossScaleOptimizer(opt, initial_scale=8.0) if loss_scale_wrapper else opt,
            variables,
        )

    ours, our_vars = make(True)
    ref, ref_vars = make(False)
    error_ours = error_ref = None
    for step in range(steps):
        none = set(none_at.get(step, ()))
        by_rank = [_gradients(shapes, dts, step, r, none) for r in range(size)]
        if inject_inf_at == step:
            for grads in by_rank[-1:]:
                grads[0] = grads[0].copy()
                grads[0].reshape(-1)[0] = np.inf
        try:
            ours.apply(by_rank[rank], our_vars)
        except ValueError as err:
            error_ours = str(err)
        try:
            ref.apply(_summed(by_rank, average), ref_vars)
        except ValueError as err:
            error_ref = str(err)
    if finalize:
        ours.finalize_variable_values(our_vars)
        ref.finalize_variable_values(ref_vars)
    problems = []
    if (error_ours is None) != (error_ref is None):
        problems.append(f"errors differ: sharded {error_ours!r}, one process {error_ref!r}")
    for a, b in zip(our_vars, ref_vars):
        if a.value.tobytes() != b.value.tobytes():
            problems.append(f"parameter {a.name} differs")
    inner = ours.inner_optimizer if loss_scale_wrapper else ours
    ref_inner = ref.inner_optimizer if loss_scale_wrapper else ref
    problems += _compare_slots(inner, ref_inner)
    if int(ours.iterations) != int(ref.iterations):
        problems.append(f"iterations {int(ours.iterations)} != {int(ref.iterations)}")
    state = sum(v.value.nbytes for v in inner.variables)
    return {"problems": problems, "state_bytes": state}


def _compare_slots(ours, ref) -> list[str]:
    """This rank's shard of every slot equals the same elements of the reference's slot."""
    problems = []
    ref_slots = _slot_arrays(ref)
    pieces = ours.shard_layout.pieces(ours.comm.Get_rank())
    paths = [v.path + "_" for v in ref.trainable_variables]
    for key, mine in _slot_arrays(ours).items():
        full = ref_slots[key].reshape(-1)
        if key in ("iteration", "learning_rate"):
            expected = full
        else:
            t = next(i for i, path in enumerate(paths) if key.startswith(path))
            size = ref.trainable_variables[t].size
            per = size // full.size if full.size else 1  # a row-wise slot: one value a row
            expected = full[pieces[t].begin // per : pieces[t].end // per]
        if mine.reshape(-1).tobytes() != expected.tobytes():
            problems.append(f"slot {key} differs on this rank's shard")
    return problems


def embedding(
    comm, *, optimizer="adagrad", dtype="float32", rows=1000, dim=8, steps=3, kwargs=None
) -> dict[str, Any]:
    """A sharded table against one process applying the rank-order concatenation."""
    rank, size = comm.Get_rank(), comm.Get_size()
    dt = FLOAT_DTYPES[dtype]
    kwargs = dict(kwargs or {})
    init = np.random.default_rng(3).standard_normal((rows, dim)).astype(dt)
    table = ShardedEmbedding(
        rows, dim, comm=comm, optimizer=optimizer, dtype=dt, initial_value=init, **kwargs
    )
    ref_opt = (an.RowWiseAdagrad if optimizer == "rowwise" else an.Adagrad)(**kwargs)
    ref_table = an.Variable(init.copy(), name="embedding")
    problems = []
    for step in range(steps):
        batches = []
        for r in range(size):
            rng = np.random.default_rng(100 * step + r)
            ids = rng.zipf(1.3, 40) % rows  # repeats within and across ranks
            batches.append((ids, rng.standard_normal((ids.size, dim)).astype(dt)))
        got = table.lookup(batches[rank][0])
        if got.tobytes() != ref_table.value[batches[rank][0]].tobytes():
            problems.append(f"lookup differs at step {step}")
        table.apply(*batches[rank])
        all_ids = np.concatenate([b[0] for b in batches])
        all_rows = np.concatenate([b[1] for b in batches])
        ref_opt.apply([an.SparseGradient(all_ids, all_rows, (rows, dim))], [ref_table])
    lo, hi = table.starts[rank], table.starts[rank + 1]
    if table.table.value.tobytes() != ref_table.value[lo:hi].tobytes():
        problems.append("table rows differ")
    ref_acc = ref_opt.variables[-1].value
    if table.optimizer.variables[-1].value.tobytes() != ref_acc[lo:hi].tobytes():
        problems.append("accumulator rows differ")
    return {
        "problems": problems,
        "state_bytes": sum(v.value.nbytes for v in table.optimizer.variables),
    }


def _clip_small(v):
    return np.clip(v, -0.5, 0.5)


SCENARIOS: dict[str, Callable[[Any], dict[str, Any]]] = {}
for _dtype in FLOAT_DTYPES:
    SCENARIOS[f"plain-{_dtype}"] = functools.partial(dense, dtype=_dtype)
    SCENARIOS[f"all-features-{_dtype}"] = functools.partial(
        dense,
        dtype=_dtype,
        kwargs=dict(
            clipnorm=1.0,
            weight_decay=0.01,
            use_ema=True,
            ema_overwrite_frequency=3,
            loss_scale_factor=4.0,
        ),
    )
    SCENARIOS[f"rowwise-{_dtype}"] = functools.partial(
        dense, cls=ShardedRowWiseAdagrad, dtype=_dtype, kwargs=dict(global_clipnorm=2.0)
    )
# Buckets of about 1 KiB over all ranks: many slices, cut inside tensors and across them.
_SMALL_BUCKETS = 1024
SCENARIOS.update(
    {
        "buckets-plain": functools.partial(dense, bucket_bytes=_SMALL_BUCKETS),
        "buckets-all-features": functools.partial(
            dense,
            bucket_bytes=_SMALL_BUCKETS,
            steps=5,
            kwargs=dict(
                global_clipnorm=1.0, weight_decay=0.01, use_ema=True, ema_overwrite_frequency=2
            ),
        ),
        "buckets-rowwise-big": functools.partial(
            dense,
            cls=ShardedRowWiseAdagrad,
            shapes=BIG_SHAPES,
            bucket_bytes=64 << 10,
            kwargs=dict(clipnorm=3.0),
        ),
        "buckets-mixed-dtypes": functools.partial(
            dense,
            dtype=["float32", "float16", "float64", "bfloat16", "float32"],
            bucket_bytes=_SMALL_BUCKETS,
            kwargs=dict(clipnorm=1.0, use_ema=True),
        ),
        "buckets-accumulation": functools.partial(
            dense,
            steps=7,
            bucket_bytes=_SMALL_BUCKETS,
            kwargs=dict(gradient_accumulation_steps=3, use_ema=True, ema_overwrite_frequency=1),
        ),
        "buckets-nonfinite-skip": functools.partial(
            dense, inject_inf_at=2, bucket_bytes=_SMALL_BUCKETS, kwargs=dict(on_nonfinite="skip")
        ),
        "big-global-clipnorm": functools.partial(
            dense, shapes=BIG_SHAPES, kwargs=dict(global_clipnorm=5.0)
        ),
        "big-clipnorm-rowwise": functools.partial(
            dense, cls=ShardedRowWiseAdagrad, shapes=BIG_SHAPES, kwargs=dict(clipnorm=3.0)
        ),
        "clipvalue": functools.partial(dense, kwargs=dict(clipvalue=0.5)),
        "weight-decay-exclusion": functools.partial(
            dense, kwargs=dict(weight_decay=0.1), exclude=["w1"]
        ),
        "ema-finalize": functools.partial(dense, kwargs=dict(use_ema=True), finalize=True),
        "accumulation": functools.partial(
            dense, steps=7, kwargs=dict(gradient_accumulation_steps=3, clipnorm=1.0)
        ),
        "accumulation-none": functools.partial(
            dense, steps=6, none_at={2: [1], 4: [0, 2]}, kwargs=dict(gradient_accumulation_steps=2)
        ),
        "none-gradients": functools.partial(dense, none_at={1: [0], 2: [1, 3]}),
        "schedule": functools.partial(dense, lr=lambda: an.schedules.ExponentialDecay(0.1, 2, 0.5)),
        "callable-lr": functools.partial(dense, lr=lambda: lambda: 0.02),
        "constraint": functools.partial(dense, constraint=_clip_small),
        "average": functools.partial(dense, average=True, kwargs=dict(clipnorm=1.0)),
        "loss-scale-optimizer": functools.partial(
            dense, loss_scale_wrapper=True, inject_inf_at=1, steps=4
        ),
        "nonfinite-skip": functools.partial(
            dense, inject_inf_at=2, kwargs=dict(on_nonfinite="skip", clipnorm=1.0)
        ),
        "nonfinite-raise": functools.partial(
            dense, inject_inf_at=2, kwargs=dict(on_nonfinite="raise")
        ),
        "embedding-adagrad": embedding,
        "embedding-rowwise": functools.partial(embedding, optimizer="rowwise"),
        "embedding-features": functools.partial(
            embedding, kwargs=dict(weight_decay=0.01, use_ema=True)
        ),
        **{
            f"embedding-{dtype}": functools.partial(embedding, dtype=dtype)
            for dtype in FLOAT_DTYPES
            if dtype != "float32"
        },
    }
)


def main(args: list[str]) -> int:
    """Runs the named scenarios (all with "all"); rank 0 prints one JSON line each.

    `--reduction ordered` runs the dense scenarios with that reduction.
    """
    comm = MPI.COMM_WORLD
    an.set_num_threads(1)
    reduction = "sum"
    if "--reduction" in args:
        at = args.index("--reduction")
        reduction = args[at + 1]
        args = args[:at] + args[at + 2 :]
    for name in list(SCENARIOS) if args == ["all"] else args:
        scenario = SCENARIOS[name]
        if getattr(scenario, "func", None) is dense:
            scenario = functools.partial(scenario, reduction=reduction)
        try:
            result = scenario(comm)
        except Exception:  # reported, so one broken scenario does not hide the others
            result = {"problems": [traceback.format_exc()]}
        gathered = comm.gather(result)
        if comm.Get_rank() == 0:
            report = {
                "name": name,
                "size": comm.Get_size(),
                "reduction": reduction,
                "problems": {r: g["problems"] for r, g in enumerate(gathered) if g["problems"]},
                "state_bytes": [g.get("state_bytes") for g in gathered],
                "errors": [g.get("error") for g in gathered],
            }
            print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
