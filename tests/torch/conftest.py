"""The torch tests: torch's sparse-tensor invariant checks opted in explicitly (torch
warns when they are left implicit, and every warning fails a test here)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch.sparse.check_sparse_tensor_invariants.enable()
