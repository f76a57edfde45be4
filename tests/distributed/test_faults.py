"""Faults under `mpiexec -n 2` and `-n 3`: ranks fail together, agree on every setting, and
never hang (tests/distributed/faults.py injects them)."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.distributed.conftest import launch

SIZES = [pytest.param(2, id="2-ranks"), pytest.param(3, id="3-ranks")]

# Every rank raises this class, with a message matching this pattern, and nothing changes.
AGREED = {
    "wrong-gradient-count": ("ValueError", r"rank 1: .*Received 2 gradients for 3 variables"),
    "all-none-on-one-rank": ("ValueError", r"rank 1: .*No gradients provided"),
    "unknown-variable-on-one-rank": ("ValueError", r"rank 1: .*Unknown variable at position 0"),
    "wrong-shape-on-one-rank": ("ValueError", r"rank 1: .*has shape \(8, 40\)"),
    "learning-rate-callable-raises": ("LookupError", r"rank 1: LookupError: the schedule's"),
    "memory-error-writing-a-shard": ("MemoryError", r"save_state .*rank 1: MemoryError"),
    "corrupt-manifest": ("ValueError", r"manifest.json is not valid JSON"),
    "checkpoint-gap": ("ValueError", r"'param_1_accumulator' has a gap at element \d+"),
    "checkpoint-overlap": ("ValueError", r"'param_1_accumulator' has an overlap at element \d+"),
    "checkpoint-shifted": ("ValueError", r"does not hold the piece of 'param_1_accumulator'"),
    "checkpoint-wrong-rank-count": ("ValueError", r"piece from rank \d+, but the manifest has"),
    "checkpoint-negative-accumulator": (
        "ValueError",
        r"param_1_accumulator: expected sums of squares in \[0, .*\], stored -1\.0",
    ),
    "checkpoint-of-another-model": ("ValueError", r"missing entries \['param_1_accumulator'"),
    "on-nonfinite-differs": (
        "ValueError",
        r"on_nonfinite \(ranks? 0(, 2)?: \(none\); rank 1: 'raise'",
    ),
    "clipnorm-set-after-build": ("ValueError", r"clipnorm \(ranks? 0(, 2)?: None; rank 1: 1\.0\)"),
    "learning-rate-set-after-build": (
        "ValueError",
        r"learning_rate \(ranks? 0(, 2)?: 0\.1\d*; rank 1",
    ),
    "ema-momentum-differs": ("ValueError", r"ema_momentum \(ranks? 0(, 2)?: 0\.99; rank 1: 0\.5\)"),
    "loss-scale-factor-differs": (
        "ValueError",
        r"loss_scale_factor \(ranks? 0(, 2)?: None; rank 1",
    ),
    "schedule-config-differs": ("ValueError", r"decay_rate \(ranks? 0(, 2)?: 0\.9; rank 1: 0\.5\)"),
    "initial-accumulator-differs": (
        "ValueError",
        r"initial_accumulator_value \(ranks? 0(, 2)?: 0\.1",
    ),
    "initial-values-differ": ("ValueError", r"initial values\.param_1 .*broadcast_variables"),
    "mismatched-shapes": (
        "ValueError",
        r"variables.0:param_0.shape \(ranks? 0(, 2)?: \[5\]; rank 1: \[6\]\)",
    ),
    "mismatched-none": ("ValueError", r"gradients given \(ranks? 0(, 2)?: \[True, False, True\]"),
    "different-calls": ("ValueError", r"rank 0 at apply \(call 3\), rank 1 at save_state"),
    "embedding-rows-differ": ("ValueError", r"rows \(ranks? 0(, 2)?: 100; rank 1: 101\)"),
    "embedding-dim-differs": ("ValueError", r"dim \(ranks? 0(, 2)?: 8; rank 1: 9\)"),
    "embedding-dtype-differs": (
        "ValueError",
        r"dtype \(ranks? 0(, 2)?: 'float32'; rank 1: 'float64'\)",
    ),
    "embedding-optimizer-differs": ("ValueError", r"optimizer \(ranks? 0(, 2)?: 'adagrad'; rank 1"),
    "embedding-wrong-ids-on-one-rank": ("ValueError", r"rank 1: .*Row ids must be in \[0, 20\)"),
    "embedding-overflow-when-summed-raise": ("ValueError", r"inf or NaN .* on any rank"),
}
# No error, and nothing changes either (the step is skipped on every rank, as in one process).
QUIET = ["embedding-overflow-when-summed-skip"]

_REPORTS: dict[int, dict[str, list[dict]]] = {}


def _reports(size: int) -> dict[str, list[dict]]:
    if size not in _REPORTS:
        done = launch(size, "-m", "tests.distributed.faults", "agreed", timeout=300)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert done.returncode == 0 and lines, f"{done.stdout}\n{done.stderr}"
        _REPORTS[size] = {line["name"]: line["ranks"] for line in lines}
    return _REPORTS[size]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(AGREED))
def test_every_rank_raises_the_same_error_and_nothing_changes(size, name):
    ranks = _reports(size)[name]
    assert len(ranks) == size
    errors = {json.dumps(r["error"]) for r in ranks}
    assert len(errors) == 1, [r["error"] for r in ranks]
    kind, message = ranks[0]["error"]
    expected_kind, pattern = AGREED[name]
    assert kind == expected_kind, ranks[0]["error"]
    assert re.search(pattern, message), message
    assert len(message) < 1200, f"{len(message)} characters"
    assert not any(r["changed"] for r in ranks), [r["changed"] for r in ranks]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", QUIET)
def test_a_step_every_rank_skips_changes_nothing(size, name):
    ranks = _reports(size)[name]
    assert [r["error"] for r in ranks] == [None] * size
    assert not any(r["changed"] for r in ranks)


@pytest.mark.parametrize("size", SIZES)
def test_a_rank_that_waits_for_another_costs_no_core(size):
    ranks = _reports(size)["a-slow-rank-costs-no-core"]
    waiting = ranks[0]
    assert waiting["error"] is None and waiting["seconds"] >= 1.9
    assert waiting["cpu_seconds"] < 0.25 * waiting["seconds"], waiting


# Faults outside the package end the job within the deadline, naming the call and the ranks.
OUTSIDE = {
    "raises": r"rank\(s\) \[1\] did not arrive at apply \(call 2\) within 3 s",
    "exits": r"rank\(s\) \[1\] did not arrive at apply \(call 2\) within 3 s",
    "skips": r"rank\(s\) \[1\] did not arrive at apply \(call 3\) within 3 s",
    "repeats": r"rank 0 did not answer at apply \(call 4\)",
    "sleeps": r"rank\(s\) \[1\] did not arrive at apply \(call 2\) within 3 s",
    "abort-on-exception": r"RuntimeError: the data loader of rank 1 failed",
}
DEADLINE = 3.0


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(OUTSIDE))
def test_a_fault_outside_the_package_ends_the_job_in_time(size, name):
    start = time.monotonic()
    done = launch(
        size, "-m", "tests.distributed.faults", "outside", name, str(DEADLINE), timeout=120
    )
    seconds = time.monotonic() - start
    assert done.returncode != 0, done.stdout
    assert re.search(OUTSIDE[name], done.stderr), done.stderr[-3000:]
    # The deadline, the later deadline of the ranks waiting for rank 0, and start-up.
    assert seconds < 2 * DEADLINE + 15, f"{seconds:.1f} s"
    if name == "abort-on-exception":
        assert seconds < DEADLINE + 10, f"{seconds:.1f} s: the job did not end at once"
