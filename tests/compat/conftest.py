"""Compatibility tests against the real Keras 3: backend setup and the session summary.

Keras reads `KERAS_BACKEND` once, when it is first imported, so it is set here,
before any test module of this directory imports keras. The tests run on the jax
backend on CPU; every module skips itself (`pytest.importorskip("keras")`) when
keras is not installed.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Prints the largest differences seen between Keras and adagrad_native."""
    # Looked up, not imported: keras_pairs imports keras, which may not be installed.
    helpers = sys.modules.get("tests.compat.keras_pairs")
    if helpers is None or not helpers.STATS.values:
        return
    terminalreporter.write_sep("=", "adagrad_native vs keras.optimizers.Adagrad")
    for line in helpers.STATS.summary_lines():
        terminalreporter.write_line(line)
