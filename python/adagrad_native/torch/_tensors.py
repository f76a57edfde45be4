"""Torch tensors as the numpy arrays the native step reads and updates in place.

Adagrad is element-wise, so a tensor is stepped through a view of its memory:
its own shape when it is contiguous (sparse gradients need its rows), else the
elements in memory order when they fill their memory with no gaps (e.g.
`channels_last`), the gradient and the accumulator then laid out the same way.
A parameter with gaps (a strided slice of a larger tensor) is stepped through
a contiguous copy, written back after the step (`Layout.staged`).
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import torch

from adagrad_native._dtypes import bfloat16
from adagrad_native.sparse import SparseGradient

SUPPORTED_DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.complex64,
    torch.complex128,
)


class Layout(enum.Enum):
    """How the native step reaches a parameter's elements."""

    contiguous = "contiguous"  # a view with the parameter's shape (sparse gradients too)
    dense = "dense"  # no gaps, another order (channels_last): a flat view in memory order
    staged = "staged"  # gaps: a contiguous copy, stepped and then copied back


def check_parameter(p: torch.Tensor, what: str) -> None:
    """Raises unless the native step can update `p` (a CPU floating or complex tensor).

    Raises:
        ValueError: For a tensor on another device.
        TypeError: For a dtype the core has no kernel for.
    """
    if p.device.type != "cpu":
        raise ValueError(
            f"{what} is on device {p.device}; adagrad_native.torch.Adagrad steps CPU "
            "tensors only (use torch.optim.Adagrad for other devices)."
        )
    if p.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{what} has dtype {p.dtype}; expected float32, float64, float16, bfloat16, "
            "complex64 or complex128."
        )


def is_dense(t: torch.Tensor) -> bool:
    """Whether the elements fill their memory range with no gaps and no overlap."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda d: d[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def layout_of(p: torch.Tensor) -> Layout:
    """How the native step reaches the elements of `p`."""
    if p.is_contiguous():
        return Layout.contiguous
    return Layout.dense if is_dense(p) else Layout.staged


def as_real(t: torch.Tensor) -> torch.Tensor:
    """A complex tensor as its (real, imaginary) pairs; others unchanged (torch's Adagrad)."""
    return torch.view_as_real(t) if t.is_complex() else t


def array_of(t: torch.Tensor) -> np.ndarray:
    """The numpy view of a CPU tensor (bfloat16 through ml_dtypes); never a copy."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(bfloat16())
    return t.numpy()


def memory_view(t: torch.Tensor, layout: Layout) -> np.ndarray:
    """A writeable numpy view of a tensor laid out as `layout` says (not `staged`)."""
    t = as_real(t.detach())
    if layout is Layout.dense:
        t = t.as_strided((t.numel(),), (1,))
    return array_of(t)


def like(p: torch.Tensor, value: torch.Tensor | float) -> torch.Tensor:
    """A new tensor shaped and laid out as `p` (contiguous when `p` has gaps), filled."""
    layout = layout_of(p)
    fmt = torch.contiguous_format if layout is Layout.staged else torch.preserve_format
    out = torch.empty_like(p.detach(), memory_format=fmt)
    if isinstance(value, torch.Tensor):
        out.copy_(value)
    else:
        out.fill_(complex(value, value) if p.is_complex() else value)
    return out


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors of one shape put each element at the same memory offset."""
    return a.shape == b.shape and (a.stride() == b.stride() or a.numel() <= 1)


def dense_gradient(g: torch.Tensor, target: torch.Tensor, layout: Layout) -> np.ndarray:
    """The dense gradient of a parameter, laid out as the arrays the step updates.

    Args:
        g: The gradient (`p.grad`).
        target: The tensor the step updates for `p` (the parameter, or its staged copy).
        layout: How the step reaches the elements of `target`.
    """
    if not g.is_cpu:
        raise ValueError(f"The gradient is on device {g.device}; expected a CPU tensor.")
    g = g.detach()  # a gradient made with create_graph=True
    if layout is Layout.dense or not g.is_contiguous():
        if g.shape == target.shape and not same_layout(g, target):
            g = like(target, g)
    return memory_view(g, Layout.dense if layout is Layout.dense else Layout.contiguous)


def sparse_gradient(g: torch.Tensor, p: torch.Tensor, layout: Layout, what: str) -> Any:
    """A sparse COO gradient as the row-sparse gradient the core takes, uncoalesced.

    Its copies of a row are summed in the order of their positions (torch sums them in
    the order of its sort of the ids, which it does not keep stable).

    Raises:
        ValueError: When the sparse gradient is not one of rows of `p`.
    """
    if g.layout != torch.sparse_coo:
        raise ValueError(f"{what} has a {g.layout} gradient; expected a strided or sparse COO one.")
    if g.sparse_dim() != 1 or g.dim() == 0:
        raise ValueError(
            f"{what} has a sparse gradient with sparse_dim={g.sparse_dim()}; expected sparse "
            "rows (sparse_dim=1), as nn.Embedding(sparse=True) and nn.EmbeddingBag make."
        )
    if p.is_complex() or layout is not Layout.contiguous:
        raise ValueError(
            f"{what} takes a sparse gradient but is complex or not contiguous; its rows must be "
            "contiguous real rows (e.g. `p.data = p.data.contiguous()`)."
        )
    if not g.is_cpu:
        raise ValueError(f"The gradient of {what} is on device {g.device}; expected a CPU tensor.")
    return SparseGradient(g._indices()[0].numpy(), array_of(g._values()))
