"""The roofline probe reads and writes its arrays but leaves every value as it was.

The benchmarks run it on the very buffers the optimizer steps, so a probe that
changed them would feed the optimizer garbage (and slow floating-point paths).
The probe is built only for benchmarks (`-DADAGRAD_PROBE=ON`, benchmarks/probe.py);
`.ci/run` builds it so, and the wheel users install has none.
"""

import numpy as np
import pytest

from adagrad_native import _core

pytestmark = pytest.mark.skipif(
    not hasattr(_core, "StreamProbe"),
    reason="this build has no roofline probe (CMAKE_ARGS=-DADAGRAD_PROBE=ON builds it)",
)

# One tensor's arrays: (dtypes read, dtypes read and written).
LAYOUTS = {
    "step": (("float32",), ("float32", "float32")),
    "step_with_ema": (("float32",), ("float32",) * 3),
    "norm_pass": (("float32",), ()),
    "write_only": ((), ("float32",)),
    "five_writes": (("float32",), ("float32",) * 5),  # more than the fused loop takes
    "two_reads": (("float32", "float32"), ("float32",)),
    "float16": (("float16",), ("float16", "float16")),
    "float64": (("float64",), ("float64", "float64")),
    "float16_acc32": (("float16",), ("float16", "float32")),
}


def _arrays(dtypes, size, rng):
    return [rng.normal(size=size).astype(dt) for dt in dtypes]


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize(
    "sizes", [(7,), (70_001,), (0, 1, 33, 16_384, 5)], ids=["tiny", "multi_chunk", "many_tensors"]
)
def test_probe_leaves_values_unchanged_and_counts_bytes(layout, sizes):
    rng = np.random.default_rng(0)
    ro_dtypes, rw_dtypes = layout
    tensors = [(_arrays(ro_dtypes, n, rng), _arrays(rw_dtypes, n, rng)) for n in sizes]
    everything = [a for ro, rw in tensors for a in ro + rw]
    before = [a.tobytes() for a in everything]
    probe = _core.StreamProbe(tensors)
    probe()
    probe()
    assert [a.tobytes() for a in everything] == before
    assert probe.bytes == sum(a.nbytes for ro, _ in tensors for a in ro) + 2 * sum(
        a.nbytes for _, rw in tensors for a in rw
    )


def test_probe_rejects_mismatched_sizes():
    with pytest.raises(
        ValueError, match="array of tensor 1 has 4 elements; the tensor's other arrays have 3"
    ):
        _core.StreamProbe([([np.ones(2)], []), ([np.ones(3)], [np.ones(4)])])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.ones(8)[::2], "not C-contiguous"),
        (np.ones(4, np.int8), "itemsize 1; expected 2, 4 or 8"),
    ],
    ids=["strided", "one_byte_items"],
)
def test_probe_rejects_arrays_it_cannot_stream(bad, message):
    with pytest.raises(ValueError, match=message):
        _core.StreamProbe([([bad], [])])


def test_probe_refuses_to_write_a_read_only_array():
    frozen = np.ones(4)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _core.StreamProbe([([], [frozen])])
    _core.StreamProbe([([frozen], [])])()  # reading it is fine


@pytest.mark.parametrize(
    "dtypes",
    [("float32", "float32"), ("float32", "float32", "float32"), ("float16", "float64")],
    ids=["table_and_accumulator", "with_average", "mixed_itemsizes"],
)
@pytest.mark.parametrize("row_len", [1, 16, 70], ids=["rowwise_acc", "one_line", "odd"])
def test_rows_probe_leaves_tables_unchanged_and_counts_bytes(dtypes, row_len):
    rng = np.random.default_rng(1)
    tables = [rng.normal(size=(5000, row_len)).astype(dt) for dt in dtypes]
    before = [t.tobytes() for t in tables]
    rows = np.unique(rng.integers(0, 5000, 3000))
    probe = _core.RowsProbe(rows, tables)
    probe()
    probe()
    assert [t.tobytes() for t in tables] == before
    assert probe.bytes == 2 * len(rows) * sum(row_len * t.itemsize for t in tables)


@pytest.mark.parametrize(
    "rows, message",
    [
        (np.array([3, 3]), "distinct, ascending and non-negative; row 1 is 3"),
        (np.array([-1]), "row 0 is -1"),
        (np.array([10]), "table 0 has 10 rows; row 10 was asked for"),
    ],
    ids=["repeated", "negative", "past_the_end"],
)
def test_rows_probe_rejects_rows_it_cannot_touch(rows, message):
    with pytest.raises(ValueError, match=message):
        _core.RowsProbe(rows, [np.zeros((10, 4), np.float32)])
