"""The benchmark suite (`python -m benchmarks.run` from the repository root).

A package, so its modules import each other and the test oracle (`tests.oracle`)
by their package names, without editing `sys.path`.
"""
