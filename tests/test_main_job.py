"""`python -m adagrad_native`: documented flags, the version, refused bad values, a summary,
the plot."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from adagrad_native.__main__ import main

FLAGS = [
    "--epochs",
    "--batch-size",
    "--hidden",
    "--learning-rate",
    "--samples-per-class",
    "--threads",
    "--seed",
    "--plot",
    "--version",
]


def test_help_documents_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in text
    assert "(default: 40)" in text and "(default: 0.1)" in text


def test_version_prints_the_installed_version():
    done = subprocess.run(
        [sys.executable, "-m", "adagrad_native", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"adagrad_native {metadata.version('adagrad_native')}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--epochs", "0"],
        ["--threads", "0"],
        ["--threads", "5000"],
        ["--learning-rate", "nan"],
        ["--batch-size", "x"],
    ],
    ids=["epochs-0", "threads-0", "threads-too-many", "lr-nan", "batch-not-a-number"],
)
def test_bad_values_are_refused_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_a_short_run_learns_and_ends_with_a_summary(capsys, restore_threads):
    assert main(["--epochs", "3", "--samples-per-class", "200", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 thread\n" in out and "summary: train loss" in out


def test_plot_writes_the_curves(tmp_path, capsys):
    path = tmp_path / "curves.png"
    assert main(["--epochs", "2", "--samples-per-class", "100", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
