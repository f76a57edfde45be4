"""The step engine of a sharded optimizer: native steps over this rank's shard, in buckets.

`ShardedStep` is the `StepEngine` (`_surface.py`) that a sharded optimizer plugs
in instead of the one-process `NativeStep`. At build it cuts every variable into
one piece per rank (`_layout.py`) and this rank's pieces into bucket slices
(`_buckets.py`), each stepped by a `NativeStep` of its own. A step agrees with
every rank on what it does (`_coordinator.py`), then, bucket by bucket, reduces
the ranks' gradients to their owner, steps the slice and gathers the updated
parameters back. When a norm or a finiteness verdict is needed, the core folds
every rank's per-item partial sums in one process's order first (`fold_norms`),
so every rank steps with one process's norms and verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from adagrad_native._dtypes import FLOAT_DTYPE_NAMES
from adagrad_native._native import NativeStep, fold_norms, settle, work_chunk
from adagrad_native._surface import CallPlan, Settle, Slots, StaticPlan
from adagrad_native.distributed._buckets import GlobalItems, Slice, plan_buckets
from adagrad_native.distributed._coordinator import Coordinator, Fingerprint
from adagrad_native.distributed._exchange import Exchange
from adagrad_native.distributed._layout import ShardLayout
from adagrad_native.distributed._mpi import as_bytes, vector
from adagrad_native.sparse import is_sparse_gradient
from adagrad_native.variables import Variable

DEFAULT_BUCKET_BYTES = 32 << 20
_BROADCAST_HINT = (
    " Give every rank rank 0's values before build with "
    "adagrad_native.distributed.broadcast_variables(variables)."
)


def _gradient_problem(grad: Any, variable: Variable, index: int) -> str | None:
    """Why a dense gradient cannot be used for `variable`, or None."""
    what = f"The gradient for variable '{variable.path}' (index {index})"
    if is_sparse_gradient(grad):
        return (
            f"{what} is a sparse gradient; ShardedAdagrad takes dense gradients (use "
            "adagrad_native.distributed.ShardedEmbedding for embedding tables)."
        )
    array = np.asarray(grad)
    if array.dtype.name not in FLOAT_DTYPE_NAMES:  # another float dtype is cast, as Keras
        return f"{what} has dtype {array.dtype.name}; expected one of {FLOAT_DTYPE_NAMES}."
    if array.shape != variable.shape:
        return f"{what} has shape {array.shape}, but the variable has shape {variable.shape}."
    return None


def _shard(variable: Variable, begin: int, end: int, rowwise: bool) -> Variable:
    """A Variable over elements [begin, end) of `variable`'s buffer (shared memory).

    It keeps the variable's name and path, so its slots are named as one
    process names them; a row-wise piece keeps its rows (whole rows).
    """
    view = _rows(variable.value.reshape(-1)[begin:end], variable.shape, rowwise)
    shard = Variable._owned(view, variable.name, variable.path, trainable=True)
    shard.overwrite_with_gradient = variable.overwrite_with_gradient
    return shard


def _rows(flat: np.ndarray, shape: tuple[int, ...], rowwise: bool) -> np.ndarray:
    """A flat piece as whole rows of a tensor of `shape` (row-wise), else as it is."""
    if not rowwise:
        return flat
    row_length = int(np.prod(shape[1:]))
    return flat.reshape((flat.size // row_length if row_length else 0, *shape[1:]))


def checksum(array: np.ndarray) -> str:
    """A cheap digest of an array's bytes: the sum and the xor of its 64-bit words."""
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    whole = raw.size // 8 * 8
    words = raw[:whole].view(np.uint64)
    tail = np.zeros(8, np.uint8)
    tail[: raw.size - whole] = raw[whole:]
    total = int(np.add.reduce(words, dtype=np.uint64)) + int(tail.view(np.uint64)[0])
    mixed = int(np.bitwise_xor.reduce(words)) if words.size else 0
    return f"{total & (2**64 - 1):016x}{mixed ^ int(tail.view(np.uint64)[0]):016x}"


class ShardedStep:
    """Steps this rank's shard of every variable; every call is a collective.

    Args:
        coordinator: The optimizer's agreements and deadlines.
        reduction: "ordered" or "sum" (see `Exchange`).
        average: Apply the mean of the ranks' gradients instead of their sum.
        describe: The optimizer's settings as JSON-able fields (its config and
            iteration), which every rank must have equal at every step.
        bucket_bytes: About how many bytes a bucket of the exchange holds.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        reduction: str,
        average: bool,
        describe: Callable[[], dict[str, Any]],
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    ) -> None:
        self.coordinator = coordinator
        self.reduction = reduction
        self.average = average
        self.bucket_bytes = bucket_bytes
        self.layout: ShardLayout | None = None
        self._describe = describe
        self._variables: list[Variable] = []
        self._rowwise: list[bool] = []
        self._pieces: list[Any] = []  # this rank's piece of each variable
        self._exchange: Exchange | None = None
        self._steps: list[NativeStep] = []  # one per bucket
        self._static: StaticPlan | None = None
        self._items: GlobalItems | None = None
        self._item_index: np.ndarray = np.zeros(0, np.int64)  # every rank's items, gathered order
        self._counts: list[int] = []  # items per rank
        self._reduced: list[np.ndarray] = []  # this rank's slice of each bucket's gradient

    # ----------------------------------------------------------------- calls
    def collective(self, op: str, fn: Callable[[], Any]) -> Any:
        """Runs `fn` as a collective call: a failure on any rank fails every rank alike."""
        return self.coordinator.collective(op, fn)

    # ------------------------------------------------------------------ binding
    def place(self, variables: list[Variable], rowwise: list[bool]) -> list[Variable]:
        """Cuts the variables on the core's item (and row) bounds; returns this rank's pieces."""
        sizes = [v.size for v in variables]
        rows = [int(np.prod(v.shape[1:])) if r else 0 for v, r in zip(variables, rowwise)]
        chunk = work_chunk(sizes)
        self.layout = ShardLayout(sizes, rows, chunk, self.coordinator.size)
        self._variables, self._rowwise = variables, rowwise
        self._pieces = self.layout.pieces(self.coordinator.rank)
        self._items = GlobalItems(sizes, chunk)
        return [_shard(v, p.begin, p.end, r) for v, p, r in zip(variables, self._pieces, rowwise)]

    def bind(self, slots: Slots) -> None:
        """Agrees with every rank on the variables and settings, then binds each bucket.

        Raises:
            ValueError: On every rank, when the ranks' variables, settings or
                initial values differ.
        """
        assert self.layout is not None and self._items is not None, "place() runs first"
        variables = self._variables
        self.coordinator.agree(
            Fingerprint(
                "the variables and settings at build",
                {
                    "variables": {
                        f"{i}:{v.path}": {
                            "shape": list(v.shape),
                            "dtype": v.dtype.name,
                            "overwrite_with_gradient": v.overwrite_with_gradient,
                            "row-wise": r,
                            "weight decay": wd,
                        }
                        for i, (v, r, wd) in enumerate(
                            zip(variables, self._rowwise, slots.weight_decay)
                        )
                    },
                    "settings": self._describe(),
                    "reduction": [self.reduction, self.average],
                    "initial values": {v.path: checksum(v.value) for v in variables},
                },
                hints={"initial values": _BROADCAST_HINT},
            )
        )
        steps = [
            int(np.lcm(self.layout.chunk, np.prod(v.shape[1:], dtype=np.int64)))
            if r
            else self.layout.chunk
            for v, r in zip(variables, self._rowwise)
        ]
        buckets = plan_buckets(self.layout, [v.dtype for v in variables], steps, self.bucket_bytes)
        self._exchange = Exchange(self.coordinator, buckets, self.reduction, self.average)
        rank = self.coordinator.rank
        self._steps = []
        for bucket in buckets:
            step = NativeStep(chunk=self.layout.chunk)
            step.bind(self._bucket_slots(slots, bucket.slices[rank]))
            if self._static is not None:
                step.configure(self._static)
            self._steps.append(step)
        self._reduced = []
        by_rank = (
            [self._items.of([b.slices[r] for b in buckets]) for r in range(len(buckets[0].slices))]
            if buckets
            else []
        )
        self._counts = [len(i) for i in by_rank]
        self._item_index = np.concatenate(by_rank) if by_rank else np.zeros(0, np.int64)

    def _bucket_slots(self, slots: Slots, mine: Slice) -> Slots:
        """Views of the shard's buffers for one slice: a tensor of its own per piece."""

        def view(
            buffers: Sequence[np.ndarray | None], t: int, lo: int, hi: int, per_row: bool
        ) -> np.ndarray | None:
            buffer = buffers[t]
            if buffer is None:
                return None
            if per_row:  # one value a row
                length = int(np.prod(self._variables[t].shape[1:]))
                return buffer.reshape(-1)[lo // length : hi // length]
            return _rows(buffer.reshape(-1)[lo:hi], self._variables[t].shape, self._rowwise[t])

        fields: dict[str, list[Any]] = {name: [] for name in Slots._fields}
        for p in mine.pieces:
            t = p.tensor
            lo, hi = p.begin - self._pieces[t].begin, p.end - self._pieces[t].begin
            fields["params"].append(view(slots.params, t, lo, hi, False))
            fields["accumulators"].append(view(slots.accumulators, t, lo, hi, slots.rowwise[t]))
            fields["averages"].append(view(slots.averages, t, lo, hi, False))
            fields["grad_accumulators"].append(view(slots.grad_accumulators, t, lo, hi, False))
            for name in ("weight_decay", "overwrite", "names", "rowwise"):
                fields[name].append(getattr(slots, name)[t])
        return Slots(**fields)

    def settings_changed(self) -> None:
        """A hyperparameter changed: every bucket's plan is configured again."""
        self._static = None
        for step in self._steps:
            step.settings_changed()

    @property
    def needs_configuration(self) -> bool:
        """Whether `configure` must run before the next step."""
        return self._static is None

    def configure(self, static: StaticPlan) -> None:
        """Takes the hyperparameter-derived plan fields."""
        self._static = static
        for step in self._steps:
            step.configure(static)

    # ------------------------------------------------------------------- steps
    def try_fast(self, grads: Any, variables: Any) -> int | None:
        """Never: a sharded step's collectives run in Python."""
        return None

    def keep_fast(
        self, variables: Sequence[Any], iterations: np.ndarray, learning_rate: np.ndarray
    ) -> None:
        """Never: a sharded step's collectives run in Python."""

    def keeps(self, variables: Sequence[Any] | None) -> bool:
        """A sharded step keeps no fast step."""
        return False

    def run(self, grads: Sequence[Any], call: CallPlan, settle_with: Sequence[Settle]) -> int:
        """A collective step: agreement, then bucket by bucket reduce, step, gather.

        Args:
            grads: This rank's full gradients, by build index (None: none).
            call: What this call does.
            settle_with: As for `NativeStep.run`.

        Returns:
            As `NativeStep.run`; every rank returns the same.
        """
        exchange = self._exchange
        assert exchange is not None and self._static is not None, "bind() and configure() first"
        dense = self._checked(grads)
        self.coordinator.agree(
            Fingerprint(
                "the settings of this step",
                {
                    "settings": self._describe(),
                    "call": call._asdict(),
                    "gradients given": [g is not None for g in dense],
                },
            )
        )
        for step in self._steps:
            step.prepare(call)
        static = self._static
        norms: list[float] | None = None
        if call.check_finite or (call.update and static.clip in ("norm", "global_norm")):
            norms, bad = self._folded_norms(dense, static.clip == "global_norm")
            if bad >= 0 and call.check_finite:
                settle(settle_with, False)
                return bad
        params_change = call.update or call.ema_overwrite
        params = [v.value for v in self._variables]
        last = len(self._steps) - 1
        streamed = norms is None  # one bucket's reduced gradient at a time
        reduction = exchange.start_reduce(0, dense) if streamed and self._steps else None
        gathers: list[Any] = []
        for b, step in enumerate(self._steps):
            if reduction is not None:
                reduced = self._reduced_buffer(b, keep=False)
                exchange.finish_reduce(reduction, reduced)
                # The next bucket's messages are posted before this bucket's update.
                reduction = exchange.start_reduce(b + 1, dense) if b < last else None
            else:
                reduced = self._reduced_buffer(b, keep=True)
            pieces = exchange.buckets[b].slices[self.coordinator.rank].pieces
            bucket_norms = None if norms is None else [norms[p.tensor] for p in pieces]
            step.step(
                self._gradient_views(reduced, pieces, dense),
                bucket_norms,
                settle_with if b == last else (),
            )
            if params_change:
                gathers += exchange.start_gather(b, params)
        self.coordinator.wait(gathers, "the all-gather of the parameters")
        if not self._steps:
            settle(settle_with, True)
        return -1

    def _reduced_buffer(self, b: int, keep: bool) -> np.ndarray:
        """Where bucket `b`'s slice of the summed gradient goes.

        Streamed steps reuse one buffer (a bucket's worth); a step that needs every
        norm before any update keeps every bucket's slice (this rank's shard).
        """
        assert self._exchange is not None
        bucket = self._exchange.buckets[b]
        size = bucket.slices[self.coordinator.rank].size
        if keep:
            while len(self._reduced) < len(self._steps):
                other = self._exchange.buckets[len(self._reduced)]
                self._reduced.append(
                    np.zeros(other.slices[self.coordinator.rank].size, other.dtype)
                )
            return self._reduced[b]
        return self._exchange.scratch(bucket.dtype, size)

    def _gradient_views(
        self, reduced: np.ndarray, pieces: Sequence[Any], dense: Sequence[np.ndarray | None]
    ) -> list[np.ndarray | None]:
        """A slice's reduced gradient as one array per piece (None where none was given)."""
        views: list[np.ndarray | None] = []
        at = 0
        for p in pieces:
            flat = reduced[at : at + p.size]
            at += p.size
            shape = self._variables[p.tensor].shape
            views.append(
                None if dense[p.tensor] is None else _rows(flat, shape, self._rowwise[p.tensor])
            )
        return views

    def _folded_norms(
        self, dense: Sequence[np.ndarray | None], global_norm: bool
    ) -> tuple[list[float], int]:
        """Every bucket reduced and kept; every rank's item sums folded in one process's order."""
        exchange = self._exchange
        assert exchange is not None and self._items is not None
        rank = self.coordinator.rank
        sums, finite = [], []
        reduction = exchange.start_reduce(0, dense) if self._steps else None
        for b, step in enumerate(self._steps):
            reduced = self._reduced_buffer(b, keep=True)
            assert reduction is not None
            exchange.finish_reduce(reduction, reduced)
            reduction = exchange.start_reduce(b + 1, dense) if b + 1 < len(self._steps) else None
            pieces = exchange.buckets[b].slices[rank].pieces
            s, f = step.partial_sums(self._gradient_views(reduced, pieces, dense))
            sums.append(s)
            finite.append(f)
        mine_sums = np.concatenate(sums) if sums else np.zeros(0)
        mine_finite = np.concatenate(finite) if finite else np.zeros(0, np.uint8)
        all_sums, all_finite = self._gathered(mine_sums, mine_finite)
        n_items = len(self._items.tensor_of)
        global_sums = np.zeros(n_items)
        global_finite = np.ones(n_items, np.uint8)
        global_sums[self._item_index] = all_sums
        global_finite[self._item_index] = all_finite
        counted = [
            g is not None and not v.overwrite_with_gradient for g, v in zip(dense, self._variables)
        ]
        return fold_norms(self._items.tensor_of, global_sums, global_finite, counted, global_norm)

    def _gathered(self, sums: np.ndarray, finite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's item sums and flags, concatenated in rank order (one buffer collective)."""
        comm = self.coordinator.private()
        counts = self._counts
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        record = np.zeros(len(sums), [("sum", "<f8"), ("finite", "u1")])
        record["sum"], record["finite"] = sums, finite
        out = np.zeros(sum(counts), record.dtype)
        request = comm.Iallgatherv(as_bytes(record), vector(out, counts, displs))
        self.coordinator.wait([request], "the all-gather of the partial sums")
        return out["sum"], out["finite"]

    def _checked(self, grads: Sequence[Any]) -> list[np.ndarray | None]:
        """The gradients as C-contiguous arrays of their variables' dtypes.

        Raises:
            ValueError: For a gradient that is sparse or of the wrong shape or dtype.
        """
        for i, (g, v) in enumerate(zip(grads, self._variables)):
            if g is not None:
                problem = _gradient_problem(g, v, i)
                if problem:
                    raise ValueError(problem)
        return [
            None if g is None else np.ascontiguousarray(g, dtype=v.value.dtype)
            for g, v in zip(grads, self._variables)
        ]

    def first_nonfinite(self, grads: Sequence[Any], call: CallPlan) -> int:
        """Not available: a sharded step decides finiteness on the summed gradient."""
        raise NotImplementedError("A sharded optimizer's finiteness is decided by its step.")

    def update_one(self, index: int, gradient: Any, learning_rate: float, epsilon: float) -> None:
        """Not available: a single-variable update would bypass the collectives."""
        raise NotImplementedError(
            "A sharded optimizer does not support update_step; use apply (a collective)."
        )

    def publish(self) -> None:
        """Every rank's pieces were assigned: all-gathers them into every rank's variables."""
        assert self._exchange is not None, "bind() runs first"
        self.coordinator.agree()
        params = [v.value for v in self._variables]
        requests = [
            r
            for b in range(len(self._exchange.buckets))
            for r in self._exchange.start_gather(b, params)
        ]
        self.coordinator.wait(requests, "the all-gather of the parameters")
