"""PyTorch's Adagrad on the native core: `adagrad_native.torch.Adagrad`.

A drop-in `torch.optim.Adagrad` for CPU tensors with the numbers of
`torch.optim.Adagrad(fused=True)`; needs PyTorch (`pip install "adagrad_native[torch]"`).
See docs/migrating.md.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "adagrad_native.torch needs PyTorch: pip install 'adagrad_native[torch]' "
        "(or install PyTorch's CPU build first, then adagrad_native)."
    ) from err

from adagrad_native.torch.optimizer import Adagrad

__all__ = ["Adagrad"]
