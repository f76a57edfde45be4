// Checks and conversions of numpy arrays for the bindings. `what` names the
// array in error messages (e.g. "variable 'w' (index 0)").
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "step.hpp"

constexpr int kCContiguous = pybind11::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_;
constexpr int kAligned = pybind11::detail::npy_api::NPY_ARRAY_ALIGNED_;
constexpr int kWriteable = pybind11::detail::npy_api::NPY_ARRAY_WRITEABLE_;

// Formats a shape like a Python tuple: (), (3,), (3, 4).
std::string shape_str(const std::vector<pybind11::ssize_t>& dims);
std::string shape_str(const pybind11::array& a);

std::string dtype_name(const pybind11::dtype& dt);

// The name of an object's type, for messages.
std::string type_name(const pybind11::handle& obj);

// '=' and '|' are native by definition; only explicit '<'/'>' need numpy's verdict.
bool is_native(const pybind11::dtype& dt);

// The core's code for a float dtype; TypeError for any other dtype.
adagrad::DType dtype_code(const pybind11::dtype& dt, const std::string& what);

// A buffer the core writes in place: it must be exactly the memory the user
// holds, so anything that would need a copy is refused, never copied.
pybind11::array writable_buffer(const pybind11::handle& obj, const std::string& what);

// An optional slot of a parameter (None: null): a writable buffer with the
// parameter's dtype (or, when `wide_ok`, float32 for a float16 or bfloat16
// parameter, the one wider storage the kernels have) and `expected_size`
// elements (-1: the parameter's size), appended to `keep`.
void* optional_slot(const pybind11::handle& obj, const pybind11::array& param,
                    const std::string& what, bool wide_ok, std::vector<pybind11::array>& keep,
                    pybind11::ssize_t expected_size = -1);

// A gradient in its variable's dtype: one of another float dtype is cast, as
// Keras casts it (a copy); any other dtype is a TypeError naming `what`.
pybind11::array cast_like_keras(const pybind11::array& a, const pybind11::array& param,
                                int param_dtype_num, const std::string& what);

// Whether the dtype holds Python objects (whose bytes are pointers the core
// must never copy or overwrite).
bool holds_objects(const pybind11::dtype& dt);

// A writeable, aligned, native 0-d array of the given dtype (-1: any dtype
// without objects), which the core reads or writes in place (a counter, a
// setting); ValueError naming `what` otherwise.
pybind11::array scalar_buffer(const pybind11::handle& obj, int dtype_num, const std::string& what);

// An array the core only reads, in the form it reads: C-contiguous, aligned,
// native byte order; anything else is converted into a new array.
pybind11::array readable(pybind11::array a);

// Any array-like as a C-contiguous, aligned, native-byte-order array
// (converted only when needed); TypeError for anything else.
pybind11::array as_array(const pybind11::handle& obj, const std::string& what);
