"""adagrad_native: Keras 3's Adagrad optimizer for numpy, with a fused C++ core.

Public names: `Adagrad`, `RowWiseAdagrad`, `SparseGradient`, `LossScaleOptimizer`,
`Optimizer` (their base), `Variable`, `schedules`,
`serialize` / `deserialize` / `get`, `save_state` / `load_state`,
`build_info`, `set_num_threads`, `get_num_threads`.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from adagrad_native import _checks, _core, schedules
from adagrad_native.adagrad import Adagrad
from adagrad_native.checkpoint import load_state, save_state
from adagrad_native.loss_scale import LossScaleOptimizer
from adagrad_native.optimizer import Optimizer
from adagrad_native.rowwise import RowWiseAdagrad
from adagrad_native.serialization import deserialize, get, serialize
from adagrad_native.sparse import SparseGradient
from adagrad_native.variables import Variable

try:
    __version__: str = metadata.version("adagrad_native")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"


def set_num_threads(n: int) -> None:
    """Sets the number of threads of the native step (results do not depend on it).

    Args:
        n: The number of threads, from 1 to 1024 (`MAX_THREADS` of the core).
    """
    _core.set_num_threads(_checks.integer(n, "n", minimum=1, maximum=_core.MAX_THREADS))


def get_num_threads() -> int:
    """The number of threads of the native step (default: OMP_NUM_THREADS or the cores)."""
    return _core.get_num_threads()


def build_info() -> dict[str, Any]:
    """How the core was built and what it runs: version, ISA paths, threads."""
    return {
        "version": __version__,
        "isa": _core.isa(),
        "available_isas": list(_core.available_isas()),
        "num_threads": _core.get_num_threads(),
    }


__all__ = [
    "Adagrad",
    "LossScaleOptimizer",
    "Optimizer",
    "RowWiseAdagrad",
    "SparseGradient",
    "Variable",
    "build_info",
    "deserialize",
    "get",
    "get_num_threads",
    "load_state",
    "save_state",
    "schedules",
    "serialize",
    "set_num_threads",
    "__version__",
]
