"""The distributed helpers and checkpoint features, run on every MPI rank.

`mpiexec -n N python -m tests.distributed.extras DIR` runs every scenario (DIR:
a folder every rank shares); rank 0 prints one JSON line per scenario with every
rank's problems (an empty list when all held).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

import adagrad_native as an
from adagrad_native import distributed
from adagrad_native.distributed import _manifest
from adagrad_native.distributed import checkpoint as sharded_checkpoint
from tests.distributed import scenarios
from tests.helpers import FLOAT_DTYPES

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()


def _grads(shapes: list[tuple[int, ...]], step: int, dtype: Any = np.float32) -> list[Any]:
    rng = np.random.default_rng(100 * step + RANK)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _same_everywhere(arrays: list[np.ndarray], what: str) -> list[str]:
    mine = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
    return [] if len(set(COMM.allgather(mine))) == 1 else [f"{what} differ between ranks"]


def broadcast_variables(folder: str) -> list[str]:
    rng = np.random.default_rng(RANK)  # a different start on every rank
    params = {"w": rng.standard_normal((30, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}
    wanted = COMM.bcast(params["w"].copy())
    distributed.broadcast_variables(params)
    problems = [] if params["w"].tobytes() == wanted.tobytes() else ["not rank 0's values"]
    opt = distributed.ShardedAdagrad(0.1)
    opt.apply({k: np.ones_like(v) for k, v in params.items()}, params)  # the build now agrees
    return problems + _same_everywhere(list(params.values()), "parameters")


def broadcast_state(folder: str) -> list[str]:
    params = [np.ones((6, 3), np.float32)]
    opt = an.Adagrad(0.1, use_ema=True)
    for step in range(2 + RANK):  # another state on every rank
        opt.apply(_grads([(6, 3)], step), params)
    wanted = COMM.bcast([v.numpy() for v in opt.variables])
    distributed.broadcast_state(opt)
    got = [v.numpy() for v in opt.variables]
    same = all(a.tobytes() == b.tobytes() for a, b in zip(got, wanted))
    return [] if same else ["not rank 0's state"]


def stop_together(folder: str) -> list[str]:
    batches = [np.full(3, i, np.float32) for i in range(3 + RANK)]  # uneven: 3, 4, 5, ...
    opt, params = distributed.ShardedAdagrad(0.1), [np.zeros(3, np.float32)]
    seen = 0
    for batch in distributed.stop_together(batches):
        opt.apply([batch], params)
        seen += 1
    return [] if seen == 3 and int(opt.iterations) == 3 else [f"{seen} batches on rank {RANK}"]


def _roundtrip(make: Callable[[], Any], variables: Callable[[], list[Any]], folder: str) -> list:
    """Train, save, load into a fresh twin, compare every optimizer variable."""
    opt, params = make(), variables()
    shapes = [np.shape(p) for p in params]
    dtype = np.asarray(params[0]).dtype
    for step in range(3):
        opt.apply(_grads(shapes, step, dtype), params)
    distributed.save_state(opt, folder)
    twin, twin_params = make(), variables()
    twin.build(twin_params)
    distributed.load_state(twin, folder)
    problems = [
        f"{a.path} differs after the round trip"
        for a, b in zip(opt.variables, twin.variables)
        if a.value.tobytes() != b.value.tobytes()
    ]
    return problems


def bfloat16_checkpoint(folder: str) -> list[str]:
    bf16 = FLOAT_DTYPES["bfloat16"]

    def variables() -> list[np.ndarray]:
        return [np.ones((20, 5), bf16), np.ones(70_000, bf16)]

    problems = _roundtrip(lambda: distributed.ShardedAdagrad(0.1, use_ema=True), variables, folder)
    if RANK == 0:  # the converted file loads into one process, dtype and all
        single = os.path.join(folder, "single.npz")
        distributed.to_single_process(folder, single)
        one = an.Adagrad(0.1, use_ema=True)
        one.build(variables())
        an.load_state(one, single)
        problems += [f"{v.path} is {v.dtype}" for v in one.variables[2:] if v.dtype != bf16]
    return problems


def loss_scale_checkpoint(folder: str) -> list[str]:
    def make() -> Any:
        return an.LossScaleOptimizer(distributed.ShardedAdagrad(0.1), initial_scale=8.0)

    def variables() -> list[np.ndarray]:
        return [np.ones((40, 4), np.float32), np.ones(5000, np.float32)]

    problems = _roundtrip(make, variables, folder)
    if RANK == 0:
        single = os.path.join(folder, "single.npz")
        distributed.to_single_process(folder, single)
        one = an.LossScaleOptimizer(an.Adagrad(0.1), initial_scale=8.0)
        one.build(variables())
        an.load_state(one, single)
        if int(one.iterations) != 3:
            problems.append(f"one process loaded {int(one.iterations)} iterations")
    return problems


def duplicate_names(folder: str) -> list[str]:
    def variables() -> list[an.Variable]:
        return [an.Variable(np.ones(3000, np.float32), name="w") for _ in range(3)]

    problems = _roundtrip(lambda: distributed.ShardedAdagrad(0.1), variables, folder)
    manifest = _manifest.read(folder)
    keys = sorted(manifest.entries) if manifest else []
    expected = ["iteration", "learning_rate", "w_accumulator", "w_accumulator#1", "w_accumulator#2"]
    return problems + ([] if keys == expected else [f"entries {keys}"])


def one_process_functions_refuse(folder: str) -> list[str]:
    opt, params = distributed.ShardedAdagrad(0.1), [np.ones(100, np.float32)]
    opt.build(params)
    calls = {
        "save_state": lambda: an.save_state(opt, os.path.join(folder, f"x{RANK}.npz")),
        "state_dict": opt.state_dict,
        "load_state_dict": lambda: opt.load_state_dict({}),
        "save_own_variables": lambda: opt.save_own_variables({}),
        "load_own_variables": lambda: opt.load_own_variables({}),
        "set_weights": lambda: opt.set_weights([]),
    }
    problems = []
    for name, call in calls.items():
        try:
            call()
            problems.append(f"{name} did not refuse")
        except TypeError as err:
            if "adagrad_native.distributed.save_state" not in str(err):
                problems.append(f"{name}: {err}")
    return problems


def embedding_conversion(folder: str) -> list[str]:
    init = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    table = distributed.ShardedEmbedding(50, 4, initial_value=init, learning_rate=0.2)
    reference, ref_table = an.Adagrad(0.2), an.Variable(init.copy(), name="embedding")
    for step in range(3):
        batches = [
            (np.random.default_rng(10 * step + r).integers(0, 50, 7), np.ones((7, 4), np.float32))
            for r in range(SIZE)
        ]
        table.apply(*batches[RANK])
        ids = np.concatenate([b[0] for b in batches])
        rows = np.concatenate([b[1] for b in batches])
        reference.apply([an.SparseGradient(ids, rows)], [ref_table])
    distributed.save_state(table, folder)
    problems: list[str] = []
    if RANK == 0:
        single, rows_file = os.path.join(folder, "opt.npz"), os.path.join(folder, "rows.npz")
        try:
            distributed.to_single_process(folder, single)
            problems.append("the table was dropped without parameters_out")
        except ValueError as err:
            if "parameters_out" not in str(err):
                problems.append(str(err))
        distributed.to_single_process(folder, single, parameters_out=rows_file)
        with np.load(rows_file) as rows:
            table_value = rows["embedding"]
        one = an.deserialize({"class_name": "Adagrad", "config": {"learning_rate": 0.2}})
        variable = an.Variable(table_value, name="embedding")
        an.load_state(one, single, [variable])
        if variable.value.tobytes() != ref_table.value.tobytes():
            problems.append("the converted table differs")
        for a, b in zip(one.variables, reference.variables):
            if a.value.tobytes() != b.value.tobytes():
                problems.append(f"{a.path} differs")
    return problems


def load_reads_only_overlapping_pieces(folder: str) -> list[str]:
    shapes = [(300, 64), (70_000,)]
    opt = distributed.ShardedAdagrad(0.1)
    params = [np.ones(s, np.float32) for s in shapes]
    opt.apply(_grads(shapes, 0), params)
    distributed.save_state(opt, folder)
    opened: list[str] = []
    original = np.load

    def recording_load(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.path.basename(str(file)))
        return original(file, *args, **kwargs)

    sharded_checkpoint.np.load = recording_load  # type: ignore[attr-defined]
    try:
        distributed.load_state(opt, folder)
    finally:
        sharded_checkpoint.np.load = original  # type: ignore[attr-defined]
    allowed = {f"rank-{RANK:05d}.npz", "rank-00000.npz"}  # its own, and rank 0's scalars
    return [] if set(opened) <= allowed else [f"rank {RANK} read {sorted(set(opened))}"]


def floating_point_errors_raise(folder: str) -> list[str]:
    with np.errstate(all="raise"):
        report = scenarios.dense(
            COMM,
            reduction="ordered",
            shapes=scenarios.BIG_SHAPES,
            kwargs=dict(global_clipnorm=2.0, use_ema=True),
        )
    return list(report["problems"])


def build_mismatch_message_is_short(folder: str) -> list[str]:
    shapes = [(768, 768)] * 150 + [(768,)] * 50  # a BERT-sized description
    if RANK == 1:
        shapes[117] = (768, 767)
    opt = distributed.ShardedAdagrad(0.1)
    try:
        opt.build([np.zeros(s, np.float32) for s in shapes])
    except ValueError as err:
        message = str(err)
        problems = [] if "117:param_117.shape" in message else [f"does not name it: {message}"]
        return problems + ([] if len(message) < 700 else [f"{len(message)} characters"])
    return ["no error"]


def micro_steps_gather_nothing(folder: str) -> list[str]:
    from adagrad_native.distributed._exchange import Exchange

    gathers: list[int] = []
    original = Exchange.start_gather

    def counted(self: Exchange, b: int, tensors: Any) -> list[Any]:
        gathers.append(b)
        return original(self, b, tensors)

    Exchange.start_gather = counted  # type: ignore[method-assign]
    try:
        params = [np.ones((64, 8), np.float32)]
        opt = distributed.ShardedAdagrad(0.1, gradient_accumulation_steps=3)
        per_call = []
        for step in range(6):
            before = len(gathers)
            opt.apply(_grads([(64, 8)], step), params)
            per_call.append(len(gathers) - before)
    finally:
        Exchange.start_gather = original  # type: ignore[method-assign]
    micro, updates = per_call[0:2] + per_call[3:5], [per_call[2], per_call[5]]
    problems = [f"micro-steps gathered parameters: {per_call}"] if any(micro) else []
    return problems + ([] if all(updates) else [f"an update gathered nothing: {per_call}"])


SCENARIOS = [
    micro_steps_gather_nothing,
    broadcast_variables,
    broadcast_state,
    stop_together,
    bfloat16_checkpoint,
    loss_scale_checkpoint,
    duplicate_names,
    one_process_functions_refuse,
    embedding_conversion,
    load_reads_only_overlapping_pieces,
    floating_point_errors_raise,
    build_mismatch_message_is_short,
]


def main(args: list[str]) -> int:
    an.set_num_threads(1)
    for scenario in SCENARIOS:
        folder = os.path.join(args[0], scenario.__name__)
        try:
            problems = scenario(folder)
        except Exception as err:  # reported, so one broken scenario does not hide the others
            problems = [f"{type(err).__name__}: {err}"]
        gathered = COMM.gather(problems)
        if RANK == 0:
            line = {"name": scenario.__name__, "problems": [p for ps in gathered for p in ps]}
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
