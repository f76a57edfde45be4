"""`an.Variable` (a named numpy buffer with Keras' surface) and plain numpy arrays as
trainable variables: construction, in-place updates (the buffer address never changes)."""

from __future__ import annotations

import numpy as np
import pytest

import adagrad_native as an
from tests.oracle import ReferenceAdagrad

F32, F64 = np.float32, np.float64


def _addr(v):
    return v.value.ctypes.data


# ------------------------------------------------------------- construction
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_from_array_keeps_dtype_and_values(dtype):
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    v = an.Variable(a)
    assert v.shape == (2, 3)
    assert np.dtype(v.dtype) == dtype
    np.testing.assert_array_equal(v.numpy(), a)
    assert v.trainable is True
    assert v.constraint is None
    assert v.overwrite_with_gradient is False


def test_from_array_is_a_copy_of_the_initializer():
    a = np.ones(3, F32)
    v = an.Variable(a)
    a[0] = 5.0
    assert v.numpy()[0] == 1.0


def test_python_floats_default_to_float32():
    # Keras: dtype None + Python floats -> floatx ("float32").
    assert np.dtype(an.Variable([1.0, 2.0]).dtype) == F32
    s = an.Variable(2.0)
    assert s.shape == () and np.dtype(s.dtype) == F32 and float(s.numpy()) == 2.0


def test_explicit_dtype_casts():
    v = an.Variable([1.0, 2.0], dtype="float64")
    assert np.dtype(v.dtype) == F64
    w = an.Variable(np.ones(2, F64), dtype=F32)
    assert np.dtype(w.dtype) == F32 and w.numpy().dtype == F32


@pytest.mark.parametrize(
    "init, fill",
    [("zeros", 0.0), ("ones", 1.0)],
    ids=["zeros", "ones"],
)
def test_string_initializers(init, fill):
    v = an.Variable(init, shape=(2, 3), dtype="float32")
    assert v.shape == (2, 3) and np.dtype(v.dtype) == F32
    np.testing.assert_array_equal(v.numpy(), np.full((2, 3), fill, F32))


def test_string_initializer_default_dtype_is_float32():
    v = an.Variable("ones", shape=(4,))
    assert np.dtype(v.dtype) == F32


def test_callable_initializer_gets_shape_and_dtype():
    seen = {}

    def init(shape, dtype=None):
        seen["shape"], seen["dtype"] = tuple(shape), np.dtype(dtype)
        return np.full(shape, 0.5, dtype)

    v = an.Variable(init, shape=(3,), dtype="float64")
    assert seen == {"shape": (3,), "dtype": np.dtype(F64)}
    np.testing.assert_array_equal(v.numpy(), np.full(3, 0.5))


def test_initializer_without_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        an.Variable("zeros")


def test_names_and_paths():
    a = an.Variable(np.ones(2, F32))
    b = an.Variable(np.ones(2, F32))
    assert a.name.startswith("variable") and b.name.startswith("variable")
    assert a.name != b.name  # Keras auto-names are unique: variable, variable_1, ...
    assert a.path == a.name
    c = an.Variable(np.ones(2, F32), name="kernel")
    assert c.name == "kernel" and c.path == "kernel"
    with pytest.raises(ValueError):
        an.Variable(np.ones(2, F32), name="a/b")  # Keras: names cannot contain "/"


def test_attributes_from_constructor():
    def clip(x):
        return np.clip(x, 0, 1)

    v = an.Variable(np.ones(2, F32), trainable=False, constraint=clip, overwrite_with_gradient=True)
    assert v.trainable is False
    assert v.constraint is clip
    assert v.overwrite_with_gradient is True


def test_overwrite_with_gradient_must_be_bool():
    v = an.Variable(np.ones(2, F32))
    v.overwrite_with_gradient = True
    assert v.overwrite_with_gradient is True
    with pytest.raises(TypeError):
        v.overwrite_with_gradient = "yes"


# ------------------------------------------------------------- values
def test_value_is_live_and_numpy_is_a_copy():
    v = an.Variable(np.zeros(3, F32))
    c = v.numpy()
    c[0] = 7.0
    assert v.numpy()[0] == 0.0
    assert isinstance(v.value, np.ndarray)
    assert _addr(v) == v.value.ctypes.data  # the same buffer every time
    assert c.ctypes.data != _addr(v)


def test_array_protocol():
    v = an.Variable(np.arange(4, dtype=F32))
    np.testing.assert_array_equal(np.asarray(v), [0, 1, 2, 3])
    d = np.asarray(v, dtype=F64)
    assert d.dtype == F64
    np.testing.assert_array_equal(np.array(v) + 1, [1, 2, 3, 4])


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_assign_family_is_in_place(dtype):
    v = an.Variable(np.zeros((2, 2), dtype))
    addr = _addr(v)
    v.assign(np.array([[1.0, 2.0], [3.0, 4.0]], dtype))
    v.assign_add(np.ones((2, 2), dtype))
    v.assign_sub(np.full((2, 2), 0.5, dtype))
    np.testing.assert_array_equal(v.numpy(), [[1.5, 2.5], [3.5, 4.5]])
    v.assign(np.zeros((2, 2), F64 if dtype == F32 else F32))  # cast into the variable's dtype
    assert np.dtype(v.dtype) == dtype and v.value.dtype == dtype
    v.assign([[9.0, 8.0], [7.0, 6.0]])  # array-likes are accepted
    np.testing.assert_array_equal(v.numpy(), [[9.0, 8.0], [7.0, 6.0]])
    assert _addr(v) == addr


def test_assign_wrong_shape_raises_and_keeps_value():
    v = an.Variable(np.arange(3, dtype=F32), name="w")
    with pytest.raises(ValueError):
        v.assign(np.ones(4, F32))
    np.testing.assert_array_equal(v.numpy(), [0, 1, 2])


# ------------------------------------------------------------- with the optimizer
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_plain_numpy_arrays_are_updated_in_place(dtype, rng):
    a = rng.standard_normal(10).astype(dtype)
    b = rng.standard_normal((3, 4)).astype(dtype)
    addrs = (a.ctypes.data, b.ctypes.data)
    ref = ReferenceAdagrad(learning_rate=0.1, use_ema=True)
    ref.build([a, b])
    opt = an.Adagrad(learning_rate=0.1, use_ema=True)
    for _ in range(3):
        grads = [
            rng.standard_normal(a.shape).astype(dtype),
            rng.standard_normal(b.shape).astype(dtype),
        ]
        opt.apply(grads, [a, b])
        ref.apply(grads)
    assert (a.ctypes.data, b.ctypes.data) == addrs
    tol = 32 * np.finfo(dtype).eps
    np.testing.assert_allclose(a, ref.params[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(b, ref.params[1], rtol=tol, atol=tol)


def test_variables_and_slots_keep_their_buffers_across_steps(rng):
    v = an.Variable(rng.standard_normal(100).astype(F32), name="w")
    opt = an.Adagrad(use_ema=True, gradient_accumulation_steps=2)
    opt.apply([np.ones(100, F32)], [v])
    addrs = [_addr(v)] + [_addr(x) for x in opt.variables]
    for _ in range(4):
        opt.apply([rng.standard_normal(100).astype(F32)], [v])
    opt.finalize_variable_values([v])
    assert [_addr(v)] + [_addr(x) for x in opt.variables] == addrs


def test_mixed_variables_and_arrays_in_one_optimizer(rng):
    arr = np.ones(5, F64)
    var = an.Variable(np.ones(3, F32), name="v")
    opt = an.Adagrad(learning_rate=0.5)
    opt.apply([np.ones(5, F64), np.ones(3, F32)], [arr, var])
    want = 1.0 - 0.5 / np.sqrt(1.1 + 1e-7)
    # learning_rate lives in a float32 variable (Keras floatx), hence the f32 tolerance.
    np.testing.assert_allclose(arr, np.full(5, want), rtol=1e-6)
    np.testing.assert_allclose(var.numpy(), np.full(3, want), rtol=1e-6)
