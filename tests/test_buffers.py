"""Large buffers the package allocates start on a 2 MiB boundary; small ones are plain."""

import numpy as np
import pytest

import adagrad_native as an
from adagrad_native import _buffers
from tests.helpers import FLOAT_DTYPES, dtype_params

HUGE_PAGE = 2 << 20
LARGE = _buffers.LARGE_BYTES


@pytest.mark.parametrize("dtype", [*dtype_params(), pytest.param(np.dtype(np.int64), id="int64")])
@pytest.mark.parametrize(
    "shape",
    [(), (3,), (LARGE // 2 - 1,), (LARGE // 2, 3), (1024, 1025, 2)],
    ids=["0d", "small", "just_below_4mib_for_2_byte", "large_2d", "large_3d"],
)
def test_empty_gives_a_writeable_c_contiguous_array_of_the_shape_and_dtype(dtype, shape):
    a = _buffers.empty(shape, dtype)
    assert a.shape == shape and a.dtype == np.dtype(dtype)
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    a[...] = 1  # every byte is usable
    assert np.all(a == 1)
    if a.nbytes >= LARGE:
        assert a.ctypes.data % HUGE_PAGE == 0
    else:
        assert a.base is None  # a plain numpy allocation


def test_large_buffers_stay_alive_through_their_view():
    a = _buffers.empty((LARGE,), np.uint8)
    a[-1] = 7
    assert a.base is not None and a.base.nbytes == LARGE + HUGE_PAGE
    assert a[-1] == 7


@pytest.mark.parametrize("initializer", ["zeros", "ones", 0.25, "array", "callable"])
def test_large_variables_are_placed_and_hold_their_initial_value(initializer):
    shape = (1024, 1025)  # 4.0 MiB in float32
    values = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    init = {"array": values, "callable": lambda shape, dtype: values.astype(dtype)}.get(
        initializer, initializer
    )
    var = an.Variable(init, shape=None if initializer == "array" else shape, dtype="float32")
    expected = {"zeros": 0.0, "ones": 1.0, 0.25: 0.25}.get(initializer, values)
    np.testing.assert_array_equal(var.value, np.broadcast_to(expected, shape).astype(np.float32))
    assert var.value.ctypes.data % HUGE_PAGE == 0


@pytest.mark.parametrize("dtype", dtype_params("float32", "bfloat16"))
def test_optimizer_slots_of_large_parameters_are_placed(dtype):
    param = np.zeros((2048, 1024), dtype)  # a plain numpy parameter: not placed
    opt = an.Adagrad(
        initial_accumulator_value=0.5,
        use_ema=True,
        gradient_accumulation_steps=2,
        accumulator_dtype="float32" if dtype == FLOAT_DTYPES["bfloat16"] else None,
    )
    opt.build([param])
    slots = [v for v in opt.variables if v.shape == param.shape]
    assert len(slots) == 3  # average, gradient accumulator, accumulator
    for slot in slots:
        assert slot.value.ctypes.data % HUGE_PAGE == 0, slot.path
    accumulator = next(
        v
        for v in slots
        if v.path.endswith("_accumulator") and not v.path.endswith("_gradient_accumulator")
    )
    assert np.all(accumulator.value == 0.5)
