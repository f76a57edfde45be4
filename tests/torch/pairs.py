"""Helpers of the torch tests: twin models trained side by side, one with
`adagrad_native.torch.Adagrad` and one with `torch.optim.Adagrad`, and the
distances between their numbers (in ulps)."""

from __future__ import annotations

import copy

import numpy as np
import torch

import adagrad_native.torch as ant

# torch.optim.Adagrad's own test inputs (its optim_db entry), plus eps and lr_decay alone.
TORCH_INPUTS = {
    "default": {},
    "weight_decay": {"weight_decay": 0.1},
    "maximize": {"weight_decay": 0.1, "maximize": True},
    "lr": {"lr": 0.1},
    "initial_accumulator_value": {"initial_accumulator_value": 0.1, "weight_decay": 0.1},
    "lr_decay": {"lr": 0.1, "lr_decay": 0.5, "weight_decay": 0.1},
    "lr_decay_inexact": {"lr": 0.05, "lr_decay": 0.1},  # (step - 1) * 0.1 rounds
    "tensor_lr": {"lr": torch.tensor(0.001)},
    "eps": {"eps": 1e-3, "lr": 0.05},
}


def small_cnn(dtype=torch.float32, channels_last=False):
    """A small CNN (conv, batch norm, linear): the dense case of the benchmarks."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    ).to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def cnn_batches(n, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(16, 3, 8, 8, generator=g, dtype=dtype),
            torch.randint(0, 10, (16,), generator=g),
        )
        for _ in range(n)
    ]


def train(model, opt, batches, after_backward=None):
    """Steps `opt` over the batches (cross entropy); `after_backward(model)` may edit grads."""
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if after_backward is not None:
            after_backward(model)
        opt.step()


def twins(model):
    """Two independent copies of a model."""
    return copy.deepcopy(model), copy.deepcopy(model)


def options(kwargs):
    """A fresh copy of optimizer kwargs (a tensor lr is not shared between optimizers)."""
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}


def native_and_torch(model, kwargs, torch_kwargs=None):
    """(native model, native optimizer, torch model, torch optimizer) on twin models."""
    mine, theirs = twins(model)
    opt_mine = ant.Adagrad(mine.parameters(), **options(kwargs))
    opt_theirs = torch.optim.Adagrad(theirs.parameters(), **options(kwargs), **(torch_kwargs or {}))
    return mine, opt_mine, theirs, opt_theirs


_BITS = {torch.float64: torch.int64, torch.float32: torch.int32}


def ulps(a, b):
    """The largest distance between two float tensors in units in the last place (NaN = NaN)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        raise TypeError(f"{a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)}")
    a, b = a.detach().contiguous(), b.detach().contiguous()
    both_nan = (torch.isnan(a) & torch.isnan(b)).numpy()
    width = a.element_size() * 8
    ia = a.view(_BITS.get(a.dtype, torch.int16)).numpy().astype(np.int64)
    ib = b.view(_BITS.get(a.dtype, torch.int16)).numpy().astype(np.int64)
    # Map sign-magnitude bits onto a line where neighbouring floats differ by one.
    low = -(1 << (width - 1))
    ia = np.where(ia < 0, low - ia, ia)
    ib = np.where(ib < 0, low - ib, ib)
    d = np.abs(ia - ib)
    d[both_nan] = 0
    return int(d.max(initial=0))


def assert_bit_identical(params_a, params_b, what="parameter"):
    for i, (a, b) in enumerate(zip(params_a, params_b, strict=True)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what} {i}"
        assert ulps(a, b) == 0, f"{what} {i}: {ulps(a, b)} ulps apart"
