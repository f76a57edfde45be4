"""Compatibility tests against the real Keras 3; shared code in `tests.compat.keras_pairs`."""
