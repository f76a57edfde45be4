"""Workload definitions of the benchmark suite and the arrays they run on.

A workload is a list of parameter shapes, a parameter dtype, the optimizer options and the
byte pattern of its memory roofline.  The arrays are generated once per workload and shared
read-only (the gradients) or copied (the parameters) by every implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEARNING_RATE = 0.01
MLP_SHAPES: tuple[tuple[int, ...], ...] = ((784, 32), (32,), (32, 10), (10,))


# The buffers of one tensor that a probe pass can stream, by role: "grad", "param" and the
# optimizer's slots, named by their path suffix ("_gradient_accumulator" before "_accumulator").
SLOT_ROLES = ("gradient_accumulator", "accumulator", "average")


@dataclass(frozen=True)
class StreamPass:
    """One pass of the native roofline probe over every tensor: buffers read, read + written."""

    read_only: tuple[str, ...]
    read_write: tuple[str, ...]


@dataclass(frozen=True)
class Roofline:
    """The bytes a step must move, as probe passes over the native optimizer's own buffers.

    `accumulator_dtype` names the native optimizer whose buffers the probe streams (its
    accumulators may be wider than the parameters).
    """

    label: str
    passes: tuple[StreamPass, ...]
    accumulator_dtype: str | None = None

    def bytes_per_element(self, dtype: str) -> int:
        def itemsize(role: str) -> int:
            wide = role == "accumulator" and self.accumulator_dtype is not None
            return np.dtype(to_numpy_dtype(self.accumulator_dtype if wide else dtype)).itemsize

        return sum(
            sum(itemsize(r) for r in p.read_only) + 2 * sum(itemsize(r) for r in p.read_write)
            for p in self.passes
        )


@dataclass(frozen=True)
class Workload:
    """A benchmark case: shapes, dtype, options and the roofline(s) it is compared with."""

    key: str
    title: str
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "float32"
    options: Mapping[str, Any] = field(default_factory=dict)
    rooflines: tuple[Roofline, ...] = ()
    micro_seconds: bool = False  # report µs instead of ms (small models)

    @property
    def elements(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes)

    @property
    def accumulation_steps(self) -> int:
        return int(self.options.get("gradient_accumulation_steps") or 1)

    @property
    def plain(self) -> bool:
        """True when no clip / decay / EMA option is on (gradient accumulation aside)."""
        return not any(v for k, v in self.options.items() if k != "gradient_accumulation_steps")


def to_numpy_dtype(name: str) -> Any:
    """The numpy dtype for a name; bfloat16 comes from ml_dtypes."""
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def bert_base_shapes(layers: int = 12, vocab: int = 30522) -> tuple[tuple[int, ...], ...]:
    """A BERT-base-like parameter list: embeddings, then per layer attention, FFN, 2 LNs."""
    hidden, ffn = 768, 3072
    shapes: list[tuple[int, ...]] = [(vocab, hidden), (512, hidden), (2, hidden)]
    for _ in range(layers):
        for _ in range(4):  # query, key, value, attention output
            shapes += [(hidden, hidden), (hidden,)]
        shapes += [(hidden, ffn), (ffn,), (ffn, hidden), (hidden,)]
        shapes += [(hidden,), (hidden,), (hidden,), (hidden,)]  # 2 LayerNorms: gamma, beta
    return tuple(shapes)


PLAIN_STEP = StreamPass(("grad",), ("param", "accumulator"))


def plain_roofline() -> Roofline:
    """Read g, read+write v and acc: 20 B/element for float32."""
    return Roofline("step", (PLAIN_STEP,))


def acc32_roofline() -> Roofline:
    """Low-precision g and v with a float32 accumulator."""
    return Roofline("step, acc fp32", (PLAIN_STEP,), accumulator_dtype="float32")


def all_workloads(quick: bool = False) -> dict[str, list[Workload]]:
    """Workloads by issue number; `quick` shrinks the large ones for a smoke run."""
    big = 2 * 2**20 if quick else 16 * 2**20
    bert = bert_base_shapes(layers=1, vocab=2048) if quick else bert_base_shapes()
    size_note = " (quick: reduced size)" if quick else ""
    n_big = f"{big / 2**20:.0f}M"
    emb = "BERT-base-like" if not quick else "BERT-like, 1 layer"
    clip_ema = {"clipnorm": 1.0, "weight_decay": 0.01, "use_ema": True}

    out: dict[str, list[Workload]] = {
        "1": [
            Workload(
                "1",
                f"W1: one float32 tensor of {n_big} elements{size_note}",
                ((big,),),
                rooflines=(plain_roofline(),),
            )
        ],
        "2": [
            Workload(
                "2",
                f"W2: {emb} parameter list{size_note}",
                bert,
                rooflines=(plain_roofline(),),
            )
        ],
        "3": [
            Workload(
                "3",
                "W3: 4-tensor MLP (784x32, 32, 32x10, 10)",
                MLP_SHAPES,
                rooflines=(plain_roofline(),),
                micro_seconds=True,
            )
        ],
        "4": [
            Workload(
                "4",
                f"W4: W2 with clipnorm=1.0, weight_decay=0.01, use_ema=True{size_note}",
                bert,
                options=clip_ema,
                rooflines=(
                    Roofline(
                        "norm pass + step with EMA",
                        (
                            StreamPass(("grad",), ()),
                            StreamPass(("grad",), ("param", "accumulator", "average")),
                        ),
                    ),
                ),
            )
        ],
        "5": [
            Workload(
                "5",
                f"W5: W2 with gradient_accumulation_steps=4{size_note}",
                bert,
                options={"gradient_accumulation_steps": 4},
                rooflines=(
                    Roofline("micro-step", (StreamPass(("grad",), ("gradient_accumulator",)),)),
                    Roofline(
                        "update step",
                        (StreamPass(("grad",), ("gradient_accumulator", "param", "accumulator")),),
                    ),
                ),
            )
        ],
        "6": [],
    }
    for base_key, shapes, what in (("1", ((big,),), f"one tensor of {n_big}"), ("2", bert, emb)):
        for dtype in ("float16", "bfloat16"):
            out["6"].append(
                Workload(
                    f"6-{base_key}-{dtype}",
                    f"W6: {dtype} parameters, {what}{size_note}",
                    shapes,
                    dtype=dtype,
                    rooflines=(plain_roofline(), acc32_roofline()),
                )
            )
    return out


def thread_sizes(quick: bool = False) -> tuple[int, ...]:
    """Element counts of workload 7: one in-cache size and the large tensor."""
    return (256 * 1024, 2 * 2**20 if quick else 16 * 2**20)


@dataclass
class Data:
    """A workload's parameters and gradients: the user's arrays, shared by every implementation.

    The in-place implementations (this package, torch, the numpy loop) all step these
    parameter buffers, and each keeps its own optimizer state, as in real use. The roofline
    probe streams the package's optimizer's own buffers (`optimizers`), so it moves the
    same bytes on the same pages as the step it bounds: on this VM a stream's speed depends
    on where its pages lie (benchmarks/README.md).
    """

    params: list[np.ndarray]  # updated in place by every in-place implementation
    grads: list[np.ndarray]  # fixed
    optimizers: dict[str | None, Any] = field(default_factory=dict)  # by accumulator_dtype

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.params)


def make_data(wl: Workload, seed: int = 0) -> Data:
    """Random parameters (N(0,1)) and small random gradients (N(0, 1e-2)) of the workload.

    Every implementation steps the same parameters, so each starts from where the previous
    one left them; an Adagrad step keeps them finite, which is all the timing needs.
    """
    rng = np.random.default_rng(seed)
    dt = to_numpy_dtype(wl.dtype)
    params, grads = [], []
    for shape in wl.shapes:
        params.append(rng.standard_normal(shape, dtype=np.float32).astype(dt))
        g = rng.standard_normal(shape, dtype=np.float32)
        g *= 1e-2
        grads.append(g.astype(dt))
    return Data(params, grads)
