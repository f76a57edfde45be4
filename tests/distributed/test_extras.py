"""The distributed helpers (broadcasts, stopping together) and checkpoint features (bfloat16,
LossScaleOptimizer, duplicate names, tables converted to one process, a load's reads) at 2 and
3 ranks (tests/distributed/extras.py)."""

from __future__ import annotations

import json

import pytest

from tests.distributed.conftest import launch
from tests.distributed.extras import SCENARIOS

_REPORTS: dict[int, dict[str, list[str]]] = {}


def _reports(size: int, folder) -> dict[str, list[str]]:
    if size not in _REPORTS:
        done = launch(size, "-m", "tests.distributed.extras", str(folder), timeout=300)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert done.returncode == 0 and lines, f"{done.stdout}\n{done.stderr}"
        _REPORTS[size] = {line["name"]: line["problems"] for line in lines}
    return _REPORTS[size]


@pytest.mark.parametrize("size", [2, 3], ids=lambda n: f"{n}-ranks")
@pytest.mark.parametrize("name", [s.__name__ for s in SCENARIOS])
def test_holds(tmp_path_factory, size, name):
    reports = _reports(size, tmp_path_factory.mktemp(f"extras-{size}"))
    assert name in reports, sorted(reports)
    assert reports[name] == []
