"""`adagrad_native.torch.Adagrad` beside `torch.optim.Adagrad` (default and fused=True).

Cases, each timed interleaved (benchmarks/timing.py: round-robin, rotating order, medians):
- the optimizer step alone on the dense suite's parameter lists (W1 one 16M float32 tensor,
  W2 the BERT-base-like list of 195 tensors, W3 the 4-tensor MLP), gradients fixed;
- a small CNN (two convolutions, batch norm, a linear layer; batch 64 of 3x32x32): the
  optimizer step alone and the whole training step (forward, backward, step);
- a DLRM-style model: two `nn.EmbeddingBag(sparse=True)` tables (1,000,000 and 200,000 rows
  of 64) and an MLP, batch 2,048 with 20 ids per bag (Zipf-distributed): the optimizer step
  alone (the same uncoalesced sparse gradients every time) and the whole training step.
  `fused=True` does not take sparse gradients, so torch's default is the only peer there.

Each implementation steps its own copy of the parameters with its own state, as a user's
program would; torch and this package both use 2 threads (the machine's cores).

Run from the repository root:  python -m benchmarks.torch_drop_in [--quick] [--repeats R]
[--write]  (--write puts the table into benchmarks/RESULTS.md, section "torch drop-in")
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import adagrad_native as an
import adagrad_native.torch as ant
from benchmarks import report
from benchmarks.timing import OtherLoad, Stat, Timed, run_group
from benchmarks.workloads import MLP_SHAPES, bert_base_shapes

HEADING = "## torch drop-in"
IMPLS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "torch default": lambda params, **kw: torch.optim.Adagrad(params, **kw),
    "torch fused=True": lambda params, **kw: torch.optim.Adagrad(params, fused=True, **kw),
    "adagrad_native.torch": lambda params, **kw: ant.Adagrad(params, **kw),
}
OPTIONS = {"lr": 0.01, "weight_decay": 0.0}


class Case:
    """One row group of the table: a step per implementation, timed together."""

    def __init__(self, title: str, micro: bool = False) -> None:
        self.title, self.micro = title, micro
        self.steps: dict[str, Timed] = {}

    def add(self, name: str, step: Callable[[], None], repeats: int, warmup: int = 3) -> None:
        self.steps[name] = Timed(step, warmup=warmup, repeats=repeats)

    def run(self) -> tuple[dict[str, Stat], float | None]:
        load = OtherLoad()
        run_group(self.steps)
        return {k: Stat.of(t.samples["step"]) for k, t in self.steps.items()}, load.cores()


def optimizer_steps(case: Case, shapes, repeats: int) -> None:
    """The optimizer step alone on parameters of these shapes, one fixed gradient each."""
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=g) for s in shapes]
    for name, make in IMPLS.items():
        params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
        for p, grad in zip(params, grads):
            p.grad = grad  # shared: read-only for every implementation
        case.add(name, make(params, **OPTIONS).step, repeats)


def small_cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 8 * 8, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )


class Dlrm(torch.nn.Module):
    """Two sparse embedding-bag tables and an MLP on their concatenation."""

    def __init__(self, users: int, items: int, dim: int = 64) -> None:
        super().__init__()
        self.users = torch.nn.EmbeddingBag(users, dim, mode="sum", sparse=True)
        self.items = torch.nn.EmbeddingBag(items, dim, mode="sum", sparse=True)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2 * dim, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1)
        )

    def forward(self, batch):
        users, items, offsets = batch
        return self.mlp(torch.cat([self.users(users, offsets), self.items(items, offsets)], 1))


def zipf_ids(rows: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy((rng.zipf(1.25, n) - 1) % rows)


def training_cases(
    title: str, model: torch.nn.Module, batch, loss_fn, repeats: int, sparse: bool, micro: bool
) -> tuple[Case, Case]:
    """The optimizer step alone (fixed gradients) and the whole training step."""
    alone, whole = Case(f"{title}: optimizer step", micro), Case(f"{title}: training step", micro)
    for name, make in IMPLS.items():
        if sparse and "fused" in name:
            continue
        m = copy.deepcopy(model)
        opt = make(m.parameters(), **OPTIONS)

        def train_step(m=m, opt=opt) -> None:
            opt.zero_grad()
            loss_fn(m(batch)).backward()
            opt.step()

        train_step()
        whole.add(name, train_step, repeats)
        m_alone = copy.deepcopy(m)
        opt_alone = make(m_alone.parameters(), **OPTIONS)
        loss_fn(m_alone(batch)).backward()  # gradients kept for every timed step
        alone.add(name, opt_alone.step, repeats)
    return alone, whole


def table_lines(results: list[tuple[Case, dict[str, Stat], float | None]]) -> list[str]:
    lines = [
        "| case | implementation | median | best | vs torch default | vs torch fused=True |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case, stats, load in results:
        unit, scale = ("µs", 1e6) if case.micro else ("ms", 1e3)
        base = stats["torch default"].median
        fused = stats.get("torch fused=True")
        for name, s in stats.items():
            vs_fused = f"{fused.median / s.median:.2f}x" if fused else "n/a"
            lines.append(
                f"| {case.title} | {name} | {s.median * scale:,.1f} {unit} "
                f"| {s.best * scale:,.1f} {unit} | {base / s.median:.2f}x | {vs_fused} |"
            )
        if load is not None and load > 0.2:
            lines.append(f"| {case.title} | (other processes: {load:.1f} cores busy) | | | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--write", action="store_true", help="write the table into RESULTS.md")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    threads = an.get_num_threads()
    torch.set_num_threads(threads)
    torch.sparse.check_sparse_tensor_invariants.disable()  # torch's default, said explicitly
    rng = np.random.default_rng(0)
    big = 2**20 if args.quick else 16 * 2**20
    bert = bert_base_shapes(layers=1, vocab=2048) if args.quick else bert_base_shapes()

    results = []
    for title, shapes, micro in (
        (f"W1: one tensor of {big / 2**20:.0f}M", ((big,),), False),
        (f"W2: BERT-base-like list ({len(bert)} tensors)", bert, False),
        ("W3: 4-tensor MLP", MLP_SHAPES, True),
    ):
        case = Case(f"{title}: optimizer step", micro)
        optimizer_steps(case, shapes, repeats)
        results.append((case, *case.run()))
        del case

    torch.manual_seed(0)
    images = (torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    cnn_cases = training_cases(
        "small CNN, batch 64",
        small_cnn(),
        images[0],
        lambda out: torch.nn.functional.cross_entropy(out, images[1]),
        repeats,
        sparse=False,
        micro=True,
    )
    users, items = (100_000, 20_000) if args.quick else (1_000_000, 200_000)
    batch, per_bag = 2048, 20
    dlrm_batch = (
        zipf_ids(users, batch * per_bag, rng),
        zipf_ids(items, batch * per_bag, rng),
        torch.arange(0, batch * per_bag, per_bag),
    )
    target = torch.rand(batch, 1)
    dlrm_cases = training_cases(
        f"DLRM-style ({users:,} + {items:,} rows x 64, batch {batch})",
        Dlrm(users, items),
        dlrm_batch,
        lambda out: torch.nn.functional.mse_loss(out, target),
        repeats,
        sparse=True,
        micro=False,
    )
    for case in (*cnn_cases, *dlrm_cases):
        results.append((case, *case.run()))

    lines = [
        f"torch {torch.__version__}, {threads} threads (torch and adagrad_native), isa "
        f"{an.build_info()['isa']}; medians of interleaved samples "
        "(`python -m benchmarks.torch_drop_in`).",
        "",
        *table_lines(results),
        "",
        "- vs: the peer's median over this one's (above 1: adagrad_native.torch is faster).",
        "- DLRM-style: torch's fused kernel does not take sparse gradients, so it is not a peer.",
    ]
    print("\n".join(lines))
    if args.write:
        section = "\n".join([HEADING, "", *lines, ""])
        report.replace_section(Path(__file__).resolve().parent / "RESULTS.md", HEADING, section)


if __name__ == "__main__":
    main()
