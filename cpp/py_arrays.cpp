#include "py_arrays.hpp"

#include <sstream>
#include <stdexcept>

namespace py = pybind11;
using adagrad::DType;

std::string shape_str(const std::vector<py::ssize_t>& dims) {
  std::ostringstream out;
  out << '(';
  for (size_t d = 0; d < dims.size(); ++d) out << (d > 0 ? ", " : "") << dims[d];
  out << (dims.size() == 1 ? ",)" : ")");
  return out.str();
}

std::string shape_str(const py::array& a) {
  return shape_str(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
}

std::string dtype_name(const py::dtype& dt) { return py::str(dt.attr("name")).cast<std::string>(); }

std::string type_name(const py::handle& obj) {
  return py::str(py::type::of(obj).attr("__name__")).cast<std::string>();
}

bool is_native(const py::dtype& dt) {
  const char order = dt.byteorder();
  return order == '=' || order == '|' || dt.attr("isnative").cast<bool>();
}

DType dtype_code(const py::dtype& dt, const std::string& what) {
  if (dt.kind() == 'f') {
    if (dt.itemsize() == 4) return DType::f32;
    if (dt.itemsize() == 8) return DType::f64;
    if (dt.itemsize() == 2) return DType::f16;
  }
  if (dtype_name(dt) == "bfloat16") return DType::bf16;
  throw py::type_error(what + " has dtype " + dtype_name(dt) +
                       "; expected float32, float64, float16 or bfloat16.");
}

py::array writable_buffer(const py::handle& obj, const std::string& what) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(what + " must be a numpy.ndarray; received " + type_name(obj) + ".");
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  const int flags = a.flags();
  const char* problem = nullptr;
  if (!(flags & kCContiguous)) problem = "is not C-contiguous";
  else if (!(flags & kWriteable)) problem = "is read-only";
  else if (!(flags & kAligned)) problem = "is not aligned";
  else if (!is_native(a.dtype())) problem = "is not in native byte order";
  if (problem != nullptr) {
    throw py::value_error(what + " " + problem +
                          "; it must be updated in place, so pass a C-contiguous, writeable, "
                          "aligned, native-byte-order array (e.g. np.ascontiguousarray).");
  }
  return a;
}

void* optional_slot(const py::handle& obj, const py::array& param, const std::string& what,
                    bool wide_ok, std::vector<py::array>& keep, py::ssize_t expected_size) {
  if (obj.is_none()) return nullptr;
  py::array a = writable_buffer(obj, what);
  const bool same_dtype = a.dtype().num() == param.dtype().num();
  const DType p = dtype_code(param.dtype(), what);
  const bool narrow_param = p == DType::f16 || p == DType::bf16;
  const bool wide = wide_ok && narrow_param && dtype_code(a.dtype(), what) == DType::f32;
  if (!same_dtype && !wide) {
    throw py::type_error(what + " has dtype " + dtype_name(a.dtype()) + "; expected " +
                         dtype_name(param.dtype()) +
                         (wide_ok && narrow_param ? " or float32." : "."));
  }
  const py::ssize_t want = expected_size >= 0 ? expected_size : param.size();
  if (a.size() != want) {
    throw py::value_error(what + " has " + std::to_string(a.size()) + " elements; expected " +
                          std::to_string(want) + ".");
  }
  keep.push_back(a);
  return a.mutable_data();
}

py::array cast_like_keras(const py::array& a, const py::array& param, int param_dtype_num,
                          const std::string& what) {
  if (a.dtype().num() == param_dtype_num) return a;
  dtype_code(a.dtype(), what);  // a float dtype, or a TypeError naming the dtype
  return a.attr("astype")(param.dtype());
}

bool holds_objects(const py::dtype& dt) { return dt.attr("hasobject").cast<bool>(); }

py::array scalar_buffer(const py::handle& obj, int dtype_num, const std::string& what) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(what + " must be a numpy.ndarray; received " + type_name(obj) + ".");
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  const bool dtype_ok = dtype_num < 0 ? !holds_objects(a.dtype()) : a.dtype().num() == dtype_num;
  if (a.ndim() != 0 || !dtype_ok || !(a.flags() & kWriteable) || !(a.flags() & kAligned) ||
      !is_native(a.dtype())) {
    throw py::value_error(what + " must be a writeable, aligned, native-byte-order 0-d array" +
                          (dtype_num < 0 ? std::string(" of numbers")
                                         : " of dtype " + dtype_name(py::dtype(dtype_num))) +
                          "; received dtype " + dtype_name(a.dtype()) + " of shape " +
                          shape_str(a) + ".");
  }
  return a;
}

py::array readable(py::array a) {
  // numpy's NOTSWAPPED request is ignored without a target dtype: convert explicitly.
  if (!is_native(a.dtype())) a = a.attr("astype")(a.dtype().attr("newbyteorder")("="));
  const int need = kCContiguous | kAligned;
  if ((a.flags() & need) != need) {
    a = py::array::ensure(a, need);
    if (!a) throw py::error_already_set();
  }
  return a;
}

py::array as_array(const py::handle& obj, const std::string& what) {
  py::array a = py::array::ensure(obj);
  if (!a) {
    PyErr_Clear();
    throw py::type_error(what + " must be array-like; received " + type_name(obj) + ".");
  }
  return readable(a);
}
