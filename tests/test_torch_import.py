"""torch is an extra: `adagrad_native` never imports it, and `adagrad_native.torch`
without it says which extra to install."""

from __future__ import annotations

import subprocess
import sys

BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"  # import torch -> ImportError


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, timeout=120
    )


def test_the_package_does_not_import_torch():
    done = run(
        "import adagrad_native as an, numpy as np\n"
        "an.Adagrad(0.1).apply([np.ones(3, np.float32)], [np.zeros(3, np.float32)])\n"
        "assert sys.modules['torch'] is None\n"
    )
    assert done.returncode == 0, done.stderr


def test_the_torch_module_names_the_extra():
    done = run("import adagrad_native.torch\n")
    assert done.returncode != 0
    assert "ImportError: adagrad_native.torch needs PyTorch" in done.stderr
    assert "pip install 'adagrad_native[torch]'" in done.stderr
