"""Checkpoints of sharded optimizers: saved at 2 ranks, resumed at 1, 2 and 3, converted
to and from the one-process file, and never torn by a save that dies half way."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import adagrad_native as an
from adagrad_native import distributed
from adagrad_native.distributed import checkpoint as sharded_checkpoint
from tests.distributed.checkpoints import KWARGS, SHAPES, reference
from tests.distributed.conftest import launch


def _run(size: int, *args: str) -> list[str]:
    done = launch(size, "-m", "tests.distributed.checkpoints", *args)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, f"{done.stdout}\n{done.stderr}"
    return json.loads(lines[-1])["problems"]


@pytest.fixture(scope="module")
def saved_at_two(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoint")
    assert _run(2, "save", str(folder)) == []
    return folder


@pytest.mark.parametrize("size", [1, 2, 3], ids=lambda n: f"resumed-at-{n}")
def test_a_checkpoint_saved_at_two_ranks_resumes_at_any_count(saved_at_two, size):
    problems = _run(size, "resume", str(saved_at_two), str(saved_at_two / "params.npz"), "2")
    assert problems == []


def test_a_checkpoint_converts_to_the_one_process_file(saved_at_two, tmp_path):
    single = tmp_path / "single.npz"
    distributed.to_single_process(saved_at_two, single)
    want, want_vars = reference(2, 2, steps=3)
    got = an.Adagrad(0.05, **KWARGS)
    got.build([an.Variable(np.zeros(s, np.float32), name=f"w{i}") for i, s in enumerate(SHAPES)])
    an.load_state(got, single)
    for a, b in zip(got.variables, want.variables, strict=True):
        assert a.path.split("/")[1:] == b.path.split("/")[1:]
        assert a.value.tobytes() == b.value.tobytes(), a.path


def test_a_one_process_file_resumes_at_two_ranks(tmp_path):
    opt, variables = reference(2, 2, steps=3)
    an.save_state(opt, tmp_path / "single.npz")
    np.savez(tmp_path / "params.npz", *[v.value for v in variables])
    problems = _run(2, "resume", str(tmp_path / "single.npz"), str(tmp_path / "params.npz"), "2")
    assert problems == []


def test_a_save_that_dies_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    opt = distributed.ShardedAdagrad(0.1)
    params = [np.ones(5, np.float32)]
    opt.apply([np.full(5, 0.5, np.float32)], params)
    distributed.save_state(opt, tmp_path)
    before = [v.numpy() for v in opt.variables]
    opt.apply([np.full(5, 0.5, np.float32)], params)

    def die(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the rank files, before the manifest

    monkeypatch.setattr(sharded_checkpoint, "_write_manifest", die)  # the commit point
    with pytest.raises(KeyboardInterrupt):
        distributed.save_state(opt, tmp_path)
    monkeypatch.undo()
    assert len([n for n in os.listdir(tmp_path) if n.startswith("gen-")]) == 2
    distributed.load_state(opt, tmp_path)
    for v, b in zip(opt.variables, before, strict=True):
        assert v.value.tobytes() == b.tobytes(), v.path
    distributed.save_state(opt, tmp_path)  # the next save removes what the dead one left
    assert len([n for n in os.listdir(tmp_path) if n.startswith("gen-")]) == 1


def test_a_checkpoint_of_another_model_is_refused_and_changes_nothing(tmp_path):
    opt = distributed.ShardedAdagrad(0.1)
    opt.build([np.ones(5, np.float32)])
    distributed.save_state(opt, tmp_path)
    other = distributed.ShardedAdagrad(0.1)
    other.build([np.ones(6, np.float32)])
    before = [v.numpy() for v in other.variables]
    with pytest.raises(ValueError, match=r"param_0_accumulator.*shape \(5,\).*\(6,\)"):
        distributed.load_state(other, tmp_path)
    for v, b in zip(other.variables, before, strict=True):
        assert v.value.tobytes() == b.tobytes()


@pytest.mark.parametrize("size", [1, 3], ids=lambda n: f"resumed-at-{n}")
def test_a_sharded_table_saved_at_two_ranks_resumes_at_another_count(tmp_path, size):
    assert _run(2, "table-save", str(tmp_path)) == []
    assert _run(size, "table-resume", str(tmp_path)) == []
