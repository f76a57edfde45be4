"""The test suite. A package, so pytest puts the repository root on `sys.path` and the
tests import their shared code as `tests.oracle` and `tests.helpers`."""
