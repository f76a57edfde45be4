"""Plain-numpy oracle of torch's Adagrad update (the core's torch formulas).

Written from torch's operation order (its fused CPU kernel, and the sparse-gradient
branch of `torch.optim.adagrad._single_tensor_adagrad`), with every operation
correctly rounded once:

    fused (dense):  g = -g if maximize;  g = fma(wd, p, g) if wd != 0
                    sum = fma(g, g, sum);  p = p - (lr * g) / (sqrt(sum) + eps)
    sparse rows:    sum = sum + g * g;     p = fma(-lr, g / (sqrt(sum) + eps), p)

The fused multiply-adds are computed exactly (`fractions.Fraction`) and rounded
once, so the oracle does not depend on a hardware FMA; it is elementwise Python
and meant for small tensors. 16-bit parameters compute in float32 and round each
stored value once (torch's fused kernel does the same, with its constants in float32).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def _nearest(exact: Fraction, dtype: np.dtype) -> np.floating:
    """`exact` rounded to nearest (ties to even) in `dtype` (float32 or float64)."""
    guess = dtype.type(float(exact))  # float64 first: may be one step off for float32
    if not np.isfinite(guess):
        return guess
    best = guess
    for c in (np.nextafter(guess, dtype.type(-np.inf)), np.nextafter(guess, dtype.type(np.inf))):
        if not np.isfinite(c):
            continue
        d_best, d_c = abs(Fraction(float(best)) - exact), abs(Fraction(float(c)) - exact)
        bits = np.array(c).view(f"u{dtype.itemsize}")
        if d_c < d_best or (d_c == d_best and int(bits) % 2 == 0):
            best = c
    return best


def fma(a: np.floating, b: np.floating, c: np.floating) -> np.floating:
    """a * b + c rounded once, in the dtype of the operands."""
    dtype = np.dtype(type(c))
    values = [float(a), float(b), float(c)]
    if not all(np.isfinite(values)):
        return dtype.type(np.float64(a) * np.float64(b) + np.float64(c))
    return _nearest(Fraction(values[0]) * Fraction(values[1]) + Fraction(values[2]), dtype)


def torch_step(p, acc, g, *, lr, eps, weight_decay=0.0, maximize=False, sparse_rows=False):
    """One step of torch's formula; returns new (p, acc) in their storage dtypes.

    Args:
        p, acc, g: Same-shape arrays (the parameter, its `sum`, the summed gradient).
        lr: This step's learning rate, lr / (1 + (step - 1) * lr_decay).
        sparse_rows: The order of torch's sparse path instead of its fused kernel.
    """
    compute = np.dtype(np.float64) if p.dtype == np.float64 else np.dtype(np.float32)
    c = compute.type
    lr_c, eps_c, wd_c = c(lr), c(eps), c(weight_decay)
    p_out = np.asarray(p, compute).copy().ravel()
    acc_out = np.asarray(acc, compute).copy().ravel()
    g_in = np.asarray(g, compute).ravel()
    with np.errstate(all="ignore"):
        for i in range(p_out.size):
            gi = -g_in[i] if maximize else g_in[i]
            if weight_decay != 0:
                gi = fma(wd_c, p_out[i], gi)
            if sparse_rows:
                a = acc_out[i] + gi * gi
                p_out[i] = fma(-lr_c, gi / (np.sqrt(a) + eps_c), p_out[i])
            else:
                a = fma(gi, gi, acc_out[i])
                p_out[i] = p_out[i] - (lr_c * gi) / (np.sqrt(a) + eps_c)
            acc_out[i] = a
    return p_out.reshape(p.shape).astype(p.dtype), acc_out.reshape(p.shape).astype(acc.dtype)
