"""Sharded Adagrad and the sharded embedding table at 1, 2 and 3 ranks, against one process.

Each scenario (tests/distributed/scenarios.py) runs on every rank and compares,
bit for bit, the parameters, every rank's shard of every optimizer slot and the
iteration count with one process applying the ranks' summed gradients.
"""

from __future__ import annotations

import pytest

from tests.distributed.scenarios import SCENARIOS

EQUIVALENCE = list(SCENARIOS)


# MPI's own sum is exact for two ranks (a + b == b + a) but may round differently
# for more, so three ranks use the rank-order reduction, which is exact for any N.
LAUNCHES = [
    pytest.param(1, "sum", id="1-rank"),
    pytest.param(2, "sum", id="2-ranks-mpi-sum"),
    pytest.param(2, "ordered", id="2-ranks-ordered"),
    pytest.param(3, "ordered", id="3-ranks-ordered"),
]


@pytest.mark.parametrize(("size", "reduction"), LAUNCHES)
@pytest.mark.parametrize("name", EQUIVALENCE)
def test_equals_one_process_bit_for_bit(scenario_results, size, reduction, name):
    report = scenario_results(size, reduction)[name]
    assert not report["problems"], report["problems"]


@pytest.mark.parametrize("size", [2, 3], ids=lambda n: f"{n}-ranks")
def test_state_per_rank_is_about_one_nth(scenario_results, size):
    whole = scenario_results(1)["big-global-clipnorm"]["state_bytes"][0]
    shards = scenario_results(size, "ordered")["big-global-clipnorm"]["state_bytes"]
    assert sum(shards) <= whole + 64 * size  # iteration and learning rate on every rank
    assert max(shards) <= whole / size * 1.25
