"""Every ```python block of the README and of docs/ runs as written: each file's blocks,
in order, as one script in a fresh interpreter and an empty folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import marks_for

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


@pytest.mark.parametrize(
    "path",
    [pytest.param(f, marks=marks_for("\n".join(_blocks(f)))) for f in FILES if _blocks(f)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_code_blocks_run(path, tmp_path):
    script = tmp_path / "blocks.py"
    script.write_text("\n".join(_blocks(path)))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_docs_show_the_committed_benchmark_chart():
    chart = (ROOT / "docs" / "img" / "results.png").read_bytes()
    assert chart == (ROOT / "benchmarks" / "results.png").read_bytes(), (
        "copy benchmarks/results.png to docs/img/results.png after a benchmark run"
    )
