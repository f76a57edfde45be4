"""ADAGRAD_NATIVE_ISA and OMP_NUM_THREADS (docs/performance.md): a value the core cannot
follow gives a warning at import that names the valid values and what is used instead;
a valid one is followed silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from adagrad_native import _native

IMPORT = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import adagrad_native as an
print(json.dumps({
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    "isa": an.build_info()["isa"],
    "threads": an.get_num_threads(),
}))
"""


def _imported(**env):
    clean = {
        k: v for k, v in os.environ.items() if k not in ("ADAGRAD_NATIVE_ISA", "OMP_NUM_THREADS")
    }
    done = subprocess.run(
        [sys.executable, "-c", IMPORT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


BEST = _native.available_isas()[0]
CPUS = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("value", "isa"), [("", BEST), ("auto", BEST), ("baseline", "baseline")], ids=repr
)
def test_a_valid_isa_is_followed_silently(value, isa):
    got = _imported(ADAGRAD_NATIVE_ISA=value)
    assert got["warnings"] == [] and got["isa"] == isa


def test_an_unknown_isa_warns_naming_the_valid_values():
    got = _imported(ADAGRAD_NATIVE_ISA="sse9")
    (warning,) = got["warnings"]
    assert warning.startswith("RuntimeWarning: ADAGRAD_NATIVE_ISA='sse9' is not an ISA of this")
    for name in _native.available_isas():
        assert name in warning
    assert f"Using auto ({BEST})" in warning and got["isa"] == BEST


def test_an_isa_this_cpu_cannot_run_warns():
    compiled = ["avx512", "avx2", "baseline"]
    missing = [name for name in compiled if name not in _native.available_isas()]
    if not missing:
        pytest.skip("this CPU runs every compiled ISA path")
    got = _imported(ADAGRAD_NATIVE_ISA=missing[0])
    (warning,) = got["warnings"]
    assert "is not supported by this CPU" in warning and got["isa"] == BEST


@pytest.mark.parametrize(
    ("value", "threads"), [("", CPUS), ("3", 3), (" 2 ", 2), ("4,2", 4)], ids=repr
)
def test_a_valid_thread_count_is_followed_silently(value, threads):
    got = _imported(OMP_NUM_THREADS=value)
    assert got["warnings"] == [] and got["threads"] == threads


@pytest.mark.parametrize("value", ["abc", "0", "-2", "4x", "2.5"])
def test_an_invalid_thread_count_warns_and_uses_the_cpus(value):
    got = _imported(OMP_NUM_THREADS=value)
    (warning,) = got["warnings"]
    assert f"OMP_NUM_THREADS='{value}' is not a thread count (a positive integer" in warning
    assert f"using the {CPUS} CPUs" in warning and got["threads"] == CPUS


def test_a_thread_count_beyond_the_limit_warns_and_is_capped():
    got = _imported(OMP_NUM_THREADS="100000")
    (warning,) = got["warnings"]
    assert "is more than the 1024 threads a step may use; using 1024" in warning
    assert got["threads"] == 1024
