"""Faults injected into distributed calls, run on every MPI rank.

`mpiexec -n N python -m tests.distributed.faults agreed` runs every fault that
the package must turn into the same error on every rank; each rank prints one
JSON line per fault: the exception it raised (class, message), whether anything
it holds changed (parameters, optimizer state, the checkpoint on disk), and the
seconds the call took. `... faults outside NAME TIMEOUT` runs one fault outside
the package (a rank raises, exits, skips or repeats a call): the job must end
within the deadline, with a message naming the call and the missing ranks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

import adagrad_native as an
from adagrad_native import distributed
from adagrad_native.distributed import checkpoint as sharded_checkpoint

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
SHAPES = [(40, 8), (70_000,), ()]  # the second is cut between ranks


def _params() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _grads(step: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(100 * step + RANK)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _trained(**kwargs: Any) -> tuple[Any, list[np.ndarray]]:
    opt = distributed.ShardedAdagrad(0.1, timeout=30, **kwargs)
    params = _params()
    for step in range(2):
        opt.apply(_grads(step), params)
    return opt, params


def _digest(*arrays_or_folders: Any) -> str:
    """A digest of arrays, optimizer variables and folder contents (files by name)."""
    h = hashlib.sha256()
    for item in arrays_or_folders:
        if isinstance(item, str):
            for root, _, files in sorted(os.walk(item)):
                for name in sorted(files):
                    with open(os.path.join(root, name), "rb") as f:
                        h.update(name.encode() + f.read())
        else:
            h.update(np.ascontiguousarray(np.asarray(item)).tobytes())
    return h.hexdigest()


def _state(opt: Any, params: list[np.ndarray], *folders: str) -> str:
    return _digest(*params, *[v.value for v in opt.variables], *folders)


def _folder() -> str:
    """A folder every rank shares (made by rank 0)."""
    name = tempfile.mkdtemp(prefix="faults-") if RANK == 0 else None
    return str(COMM.bcast(name))


# ---------------------------------------------------------------------- agreed
def wrong_gradient_count() -> Callable[[], Any]:
    """Rank 1 passes 2 gradients for 3 variables."""
    opt, params = _trained()
    grads = _grads(5)[:2] if RANK == 1 else _grads(5)
    return _call(opt, params, lambda: opt.apply(grads, params))


def all_none_on_one_rank() -> Callable[[], Any]:
    """Rank 1's gradients are all None."""
    opt, params = _trained()
    grads = [None] * 3 if RANK == 1 else _grads(5)
    return _call(opt, params, lambda: opt.apply(grads, params))


def unknown_variable_on_one_rank() -> Callable[[], Any]:
    """Rank 1 names a copy of a variable."""
    opt, params = _trained()
    named = [p.copy() for p in params] if RANK == 1 else params
    return _call(opt, params, lambda: opt.apply(_grads(5), named))


def wrong_shape_on_one_rank() -> Callable[[], Any]:
    """Rank 1's first gradient has another shape."""
    opt, params = _trained()
    grads = _grads(5)
    if RANK == 1:
        grads[0] = np.zeros((8, 40), np.float32)
    return _call(opt, params, lambda: opt.apply(grads, params))


def learning_rate_callable_raises() -> Callable[[], Any]:
    """The learning-rate callable of rank 1 raises (a user's own exception class)."""

    def lr() -> float:
        if RANK == 1 and calls[0] >= 2:
            raise LookupError("the schedule's table has no entry for this step")
        calls[0] += 1
        return 0.1

    calls = [0]
    opt = distributed.ShardedAdagrad(lr, timeout=30)
    params = _params()
    for step in range(2):
        opt.apply(_grads(step), params)
    return _call(opt, params, lambda: opt.apply(_grads(5), params))


def memory_error_writing_a_shard() -> Callable[[], Any]:
    """Rank 1 runs out of memory while it writes its part of a checkpoint."""
    opt, params = _trained()
    folder = _folder()
    distributed.save_state(opt, folder)
    original = sharded_checkpoint.write_npz

    def fail(file: Any, arrays: Any) -> None:
        raise MemoryError("no room for the rank file")

    def save() -> None:
        if RANK == 1:
            sharded_checkpoint.write_npz = fail  # type: ignore[assignment]
        try:
            distributed.save_state(opt, folder)
        finally:
            sharded_checkpoint.write_npz = original  # type: ignore[assignment]

    return _call(opt, params, save, folder)


def corrupt_manifest() -> Callable[[], Any]:
    """The manifest is not JSON (every rank reads it)."""
    opt, params = _trained()
    folder = _folder()
    distributed.save_state(opt, folder)
    COMM.Barrier()
    if RANK == 0:
        with open(os.path.join(folder, "manifest.json"), "w") as f:
            f.write('{"format": 2, "generation": ')
    COMM.Barrier()
    return _call(opt, params, lambda: distributed.load_state(opt, folder), folder)


def _rewrite_manifest(folder: str, change: Callable[[dict[str, Any]], None]) -> None:
    COMM.Barrier()
    if RANK == 0:
        path = os.path.join(folder, "manifest.json")
        with open(path) as f:
            manifest = json.load(f)
        change(manifest)
        with open(path, "w") as f:
            json.dump(manifest, f)
    COMM.Barrier()


def _manifest_fault(change: Callable[[dict[str, Any]], None]) -> Callable[[], Any]:
    opt, params = _trained()
    folder = _folder()
    distributed.save_state(opt, folder)
    opt.apply(_grads(3), params)  # the state now differs from the checkpoint's
    _rewrite_manifest(folder, change)
    return _call(opt, params, lambda: distributed.load_state(opt, folder), folder)


def _pieces(manifest: dict[str, Any]) -> list[list[int]]:
    return manifest["entries"]["param_1_accumulator"]["pieces"]


def checkpoint_gap() -> Callable[[], Any]:
    """Rank 0's piece of an accumulator ends one element short: a gap."""
    return _manifest_fault(lambda m: _pieces(m)[0].__setitem__(2, _pieces(m)[0][2] - 1))


def checkpoint_overlap() -> Callable[[], Any]:
    """The last rank's piece starts one element early: an overlap."""
    return _manifest_fault(lambda m: _pieces(m)[-1].__setitem__(1, _pieces(m)[-1][1] - 1))


def checkpoint_shifted() -> Callable[[], Any]:
    """The cut between two ranks' pieces moves by one element (the files hold the old one)."""

    def shift(m: dict[str, Any]) -> None:
        _pieces(m)[0][2] += 1
        _pieces(m)[1][1] += 1

    return _manifest_fault(shift)


def checkpoint_wrong_rank_count() -> Callable[[], Any]:
    """The manifest claims one rank fewer than the pieces come from."""
    return _manifest_fault(lambda m: m.__setitem__("ranks", max(SIZE - 1, 1)))


def checkpoint_negative_accumulator() -> Callable[[], Any]:
    """The last rank's piece of an accumulator holds -1 (no training makes one)."""
    opt, params = _trained()
    folder = _folder()
    distributed.save_state(opt, folder)
    opt.apply(_grads(3), params)
    COMM.Barrier()
    if RANK == SIZE - 1:
        with open(os.path.join(folder, "manifest.json")) as f:
            generation = json.load(f)["generation"]
        path = os.path.join(folder, generation, f"rank-{RANK:05d}.npz")
        with np.load(path) as data:
            arrays = dict(data)
        arrays["param_1_accumulator"][-1] = -1.0
        np.savez(path, **arrays)  # type: ignore[arg-type]
    COMM.Barrier()
    return _call(opt, params, lambda: distributed.load_state(opt, folder), folder)


def checkpoint_of_another_model() -> Callable[[], Any]:
    """A checkpoint of variables of other shapes."""
    other = distributed.ShardedAdagrad(0.1, timeout=30)
    other.build([np.zeros(7, np.float32)])
    folder = _folder()
    distributed.save_state(other, folder)
    opt, params = _trained()
    return _call(opt, params, lambda: distributed.load_state(opt, folder), folder)


def _setting_fault(setter: Callable[[Any], None], **kwargs: Any) -> Callable[[], Any]:
    opt, params = _trained(**kwargs)
    if RANK == 1:
        setter(opt)
    return _call(opt, params, lambda: opt.apply(_grads(5), params))


def on_nonfinite_differs() -> Callable[[], Any]:
    """Rank 1 sets on_nonfinite="raise" after build."""
    return _setting_fault(lambda o: setattr(o, "on_nonfinite", "raise"))


def clipnorm_set_after_build() -> Callable[[], Any]:
    """Rank 1 sets clipnorm after build."""
    return _setting_fault(lambda o: setattr(o, "clipnorm", 1.0))


def learning_rate_set_after_build() -> Callable[[], Any]:
    """Rank 1 sets another learning rate after build."""
    return _setting_fault(lambda o: setattr(o, "learning_rate", 0.2))


def ema_momentum_differs() -> Callable[[], Any]:
    """Rank 1 sets another EMA momentum after build."""
    return _setting_fault(lambda o: setattr(o, "ema_momentum", 0.5), use_ema=True)


def loss_scale_factor_differs() -> Callable[[], Any]:
    """Rank 1 sets a loss scale factor after build."""
    return _setting_fault(lambda o: setattr(o, "loss_scale_factor", 2.0))


def schedule_config_differs() -> Callable[[], Any]:
    """Rank 1's schedule decays faster."""
    rate = 0.5 if RANK == 1 else 0.9
    opt = distributed.ShardedAdagrad(an.schedules.ExponentialDecay(0.1, 10, rate), timeout=30)
    params = _params()
    return _call(opt, params, lambda: opt.apply(_grads(5), params))


def initial_accumulator_differs() -> Callable[[], Any]:
    """Rank 1 builds with another initial_accumulator_value."""
    opt = distributed.ShardedAdagrad(
        0.1, initial_accumulator_value=0.2 if RANK == 1 else 0.1, timeout=30
    )
    params = _params()
    return _call(opt, params, lambda: opt.build(params))


def initial_values_differ() -> Callable[[], Any]:
    """Rank 1's initial parameters differ (no broadcast before build)."""
    opt = distributed.ShardedAdagrad(0.1, timeout=30)
    params = _params()
    if RANK == 1:
        params[1][7] += 1
    return _call(opt, params, lambda: opt.build(params))


def mismatched_shapes() -> Callable[[], Any]:
    """Rank 1 builds with another shape."""
    opt = distributed.ShardedAdagrad(0.1, timeout=30)
    params = [np.zeros((5,) if RANK != 1 else (6,), np.float32)]
    return _call(opt, params, lambda: opt.build(params))


def mismatched_none() -> Callable[[], Any]:
    """Rank 0 passes None where the others pass a gradient."""
    opt, params = _trained()
    grads = _grads(5)
    if RANK == 0:
        grads[1] = None
    return _call(opt, params, lambda: opt.apply(grads, params))


def different_calls() -> Callable[[], Any]:
    """Rank 1 saves a checkpoint while the others step."""
    opt, params = _trained()
    folder = _folder()
    if RANK == 1:
        return _call(opt, params, lambda: distributed.save_state(opt, folder), folder)
    return _call(opt, params, lambda: opt.apply(_grads(5), params), folder)


def embedding_rows_differ() -> Callable[[], Any]:
    """Rank 1 makes the table with another row count."""
    return _embedding_fault(rows=101 if RANK == 1 else 100)


def embedding_dim_differs() -> Callable[[], Any]:
    """Rank 1 makes the table with another width."""
    return _embedding_fault(dim=9 if RANK == 1 else 8)


def embedding_dtype_differs() -> Callable[[], Any]:
    """Rank 1 makes the table in float64."""
    return _embedding_fault(dtype="float64" if RANK == 1 else "float32")


def embedding_optimizer_differs() -> Callable[[], Any]:
    """Rank 1 makes the table with the row-wise optimizer."""
    return _embedding_fault(optimizer="rowwise" if RANK == 1 else "adagrad")


def _embedding_fault(**kwargs: Any) -> Callable[[], Any]:
    kwargs = {"rows": 100, "dim": 8, **kwargs}
    rows, dim = kwargs.pop("rows"), kwargs.pop("dim")
    return _call(None, [], lambda: distributed.ShardedEmbedding(rows, dim, timeout=30, **kwargs))


def embedding_overflow_when_summed(policy: str) -> Callable[[], Any]:
    """Every rank's row for id 3 is finite; their float16 sum is not."""
    table = distributed.ShardedEmbedding(
        8, 4, dtype="float16", on_nonfinite=policy, initial_value=0.5, timeout=30
    )
    rows = np.full((1, 4), 40000, np.float16)
    return _call(table.optimizer, [table.table.value], lambda: table.apply([3], rows))


def embedding_wrong_ids_on_one_rank() -> Callable[[], Any]:
    """Rank 1 passes an id past the table."""
    table = distributed.ShardedEmbedding(20, 4, timeout=30)
    ids = [3, 25] if RANK == 1 else [3, 4]
    grads = np.ones((2, 4), np.float32)
    return _call(table.optimizer, [table.table.value], lambda: table.apply(ids, grads))


def a_slow_rank_costs_no_core() -> Callable[[], Any]:
    """Rank 1 arrives 2 s late: rank 0 waits without spinning (its CPU time is reported)."""
    opt, params = _trained()
    cpu = [0.0]

    def late_step() -> None:
        if RANK == 1:
            time.sleep(2.0)
        start = time.process_time()
        opt.apply(_grads(5), params)
        cpu[0] = time.process_time() - start

    report = _call(opt, params, late_step)
    report.update(cpu_seconds=round(cpu[0], 3), changed=False)  # the step was meant to change it
    return report


def _call(opt: Any, params: list[np.ndarray], fn: Callable[[], Any], *folders: str):
    """Runs `fn` after a snapshot; returns the rank's report."""
    before = _state(opt, params, *folders) if opt is not None else None
    COMM.Barrier()  # no rank starts before every rank has looked
    start = time.monotonic()
    error = None
    try:
        fn()
    except BaseException as err:  # reported: the point is which, and on every rank
        error = [type(err).__name__, str(err)]
    seconds = time.monotonic() - start
    COMM.Barrier()  # every rank is done with the shared folder before it is looked at
    changed = opt is not None and _state(opt, params, *folders) != before
    return {"error": error, "changed": changed, "seconds": round(seconds, 3)}


AGREED: dict[str, Callable[[], Any]] = {
    f.__name__.replace("_", "-"): f
    for f in (
        wrong_gradient_count,
        all_none_on_one_rank,
        unknown_variable_on_one_rank,
        wrong_shape_on_one_rank,
        learning_rate_callable_raises,
        memory_error_writing_a_shard,
        corrupt_manifest,
        checkpoint_gap,
        checkpoint_overlap,
        checkpoint_shifted,
        checkpoint_wrong_rank_count,
        checkpoint_negative_accumulator,
        checkpoint_of_another_model,
        on_nonfinite_differs,
        clipnorm_set_after_build,
        learning_rate_set_after_build,
        ema_momentum_differs,
        loss_scale_factor_differs,
        schedule_config_differs,
        initial_accumulator_differs,
        initial_values_differ,
        mismatched_shapes,
        mismatched_none,
        different_calls,
        embedding_rows_differ,
        embedding_dim_differs,
        embedding_dtype_differs,
        embedding_optimizer_differs,
        embedding_wrong_ids_on_one_rank,
        a_slow_rank_costs_no_core,
    )
}
AGREED["embedding-overflow-when-summed-raise"] = functools.partial(
    embedding_overflow_when_summed, "raise"
)
AGREED["embedding-overflow-when-summed-skip"] = functools.partial(
    embedding_overflow_when_summed, "skip"
)


# ------------------------------------------------------------- outside faults
def _outside(name: str, timeout: float) -> None:
    """One fault outside the package; the job must end within the deadline."""
    opt = distributed.ShardedAdagrad(0.1, timeout=timeout)
    params = _params()
    opt.apply(_grads(0), params)
    if name == "raises" and RANK == 1:
        raise RuntimeError("the data loader of rank 1 failed")
    if name == "exits" and RANK == 1:
        return  # uneven data: rank 1 is done, the others step on
    if name == "skips" and RANK == 1:
        opt.apply(_grads(2), params)  # one step fewer: rank 1 jumps to its last call
        return
    if name == "repeats" and RANK == 1:
        opt.apply(_grads(1), params)  # one step more
    if name == "abort-on-exception":
        distributed.abort_on_exception()
        if RANK == 1:
            raise RuntimeError("the data loader of rank 1 failed")
    if name == "sleeps" and RANK == 1:
        time.sleep(timeout * 10)
    opt.apply(_grads(1), params)
    opt.apply(_grads(2), params)
    print(json.dumps({"rank": RANK, "finished": True}), flush=True)


def main(args: list[str]) -> int:
    an.set_num_threads(1)
    if args[0] == "outside":
        _outside(args[1], float(args[2]))
        return 0
    names = list(AGREED) if args[1:] == [] else args[1:]
    for name in names:
        try:
            report = AGREED[name]()
        except Exception as err:  # a broken scenario is reported, not hidden
            report = {"error": ["scenario-broke", f"{type(err).__name__}: {err}"]}
        reports = COMM.gather(report)  # each rank's, printed by rank 0 on one line
        if RANK == 0:
            print(json.dumps({"name": name, "ranks": reports}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
