"""torch.optim.Adagrad -> adagrad_native.torch.Adagrad: the one-line switch.

A small recommender (two sparse embedding-bag tables and an MLP) trained as a PyTorch
user trains it: parameter groups, an LR scheduler, gradient clipping, a checkpoint
through torch.save / torch.load(weights_only=True). Only the import differs from torch;
the numbers are those of torch.optim.Adagrad(fused=True) (checked at the end on the
dense MLP, bit for bit).
Run: python examples/torch_drop_in.py   (needs torch: pip install "adagrad_native[torch]")
"""

from __future__ import annotations

import copy
import io

import torch

from adagrad_native.torch import Adagrad  # was: from torch.optim import Adagrad

USERS, ITEMS, DIM, BATCH, PER_BAG = 5_000, 2_000, 16, 256, 5


class Recommender(torch.nn.Module):
    """Two sparse embedding-bag tables (users, items) and an MLP on their concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.users = torch.nn.EmbeddingBag(USERS, DIM, mode="sum", sparse=True)
        self.items = torch.nn.EmbeddingBag(ITEMS, DIM, mode="sum", sparse=True)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2 * DIM, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
        )

    def forward(self, users, items, offsets):
        """One logit per bag."""
        x = torch.cat([self.users(users, offsets), self.items(items, offsets)], dim=1)
        return self.mlp(x).squeeze(1)


def batches(n, seed):
    """Bags of ids whose label depends on them (a learnable signal)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        users = torch.randint(0, USERS, (BATCH * PER_BAG,), generator=g)
        items = torch.randint(0, ITEMS, (BATCH * PER_BAG,), generator=g)
        offsets = torch.arange(0, BATCH * PER_BAG, PER_BAG)
        user_score = (users % 7).view(BATCH, PER_BAG).float().mean(1)
        item_score = (items % 5).view(BATCH, PER_BAG).float().mean(1)
        label = (user_score > item_score).float()
        yield users, items, offsets, label


def make_optimizer(model):
    """Tables without weight decay (torch refuses it on sparse gradients), the MLP with."""
    return Adagrad(
        [
            {"params": [model.users.weight, model.items.weight]},
            {"params": model.mlp.parameters(), "weight_decay": 1e-4, "lr": 0.05},
        ],
        lr=0.1,
    )


def train(model, opt, scheduler, data):
    """The training loop, as with any torch optimizer; returns the last loss."""
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for users, items, offsets, label in data:
        opt.zero_grad()
        loss = loss_fn(model(users, items, offsets), label)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.mlp.parameters(), 1.0)
        opt.step()
        scheduler.step()
    return loss.item()


def main() -> None:
    """Trains, checkpoints, resumes; checks the learning and the bits against torch."""
    torch.manual_seed(0)
    model = Recommender()
    opt = make_optimizer(model)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)
    first = train(model, opt, scheduler, batches(1, seed=1))
    train(model, opt, scheduler, batches(100, seed=2))

    # A checkpoint as torch writes and reads it; training resumes from it.
    buf = io.BytesIO()
    state = {"model": model, "opt": opt, "scheduler": scheduler}
    torch.save({k: v.state_dict() for k, v in state.items()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = Recommender()
    resumed.load_state_dict(saved["model"])
    opt2 = make_optimizer(resumed)
    scheduler2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=50, gamma=0.5)
    opt2.load_state_dict(saved["opt"])
    scheduler2.load_state_dict(saved["scheduler"])
    last = train(resumed, opt2, scheduler2, batches(100, seed=3))
    print(f"loss {first:.3f} -> {last:.3f} after 201 steps (resumed from a checkpoint at 101)")
    assert last < 0.8 * first, "the model did not learn"

    # The same numbers as torch's fused Adagrad, bit for bit (dense gradients).
    mlp_mine, mlp_torch = copy.deepcopy(resumed.mlp), copy.deepcopy(resumed.mlp)
    mine = Adagrad(mlp_mine.parameters(), lr=0.05, weight_decay=1e-4, lr_decay=0.01)
    theirs = torch.optim.Adagrad(
        mlp_torch.parameters(), lr=0.05, weight_decay=1e-4, lr_decay=0.01, fused=True
    )
    x, y = torch.randn(64, 2 * DIM), torch.rand(64, 1)
    for mlp, o in ((mlp_mine, mine), (mlp_torch, theirs)):
        for _ in range(20):
            o.zero_grad()
            torch.nn.functional.mse_loss(mlp(x), y).backward()
            o.step()
    same = all(torch.equal(a, b) for a, b in zip(mlp_mine.parameters(), mlp_torch.parameters()))
    print(f"bit-identical to torch.optim.Adagrad(fused=True) after 20 steps: {same}")
    assert same


if __name__ == "__main__":
    main()
