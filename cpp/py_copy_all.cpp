// Binding of copy_all (copy_all.hpp): every (target, source) pair checked
// before any byte is copied, then all copies in one call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "copy_all.hpp"
#include "py_arrays.hpp"
#include "py_register.hpp"

namespace py = pybind11;

namespace {

void assign_all(const py::sequence& pairs) {
  std::vector<py::array> keep;  // alive while the GIL is released
  std::vector<adagrad::Copy> copies;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const std::string what = "assign_all: pair " + std::to_string(i);
    py::object pair = pairs[i];
    if (!py::isinstance<py::tuple>(pair) || py::len(pair) != 2) {
      throw py::type_error(what + " must be a (target, source) tuple of numpy arrays.");
    }
    py::array target = writable_buffer(pair.cast<py::tuple>()[0], what + "'s target");
    py::handle source_obj = pair.cast<py::tuple>()[1];
    if (!py::isinstance<py::array>(source_obj)) {
      throw py::type_error(what + "'s source must be a numpy.ndarray; received " +
                           type_name(source_obj) + ".");
    }
    py::array source = readable(py::reinterpret_borrow<py::array>(source_obj));
    const bool same_dtype =
        source.dtype().num() == target.dtype().num() && source.itemsize() == target.itemsize();
    if (!same_dtype || holds_objects(target.dtype()) || source.size() != target.size()) {
      throw py::value_error(what + ": the source (" + dtype_name(source.dtype()) + " of shape " +
                            shape_str(source) + ") must have the target's dtype (" +
                            dtype_name(target.dtype()) + ", without Python objects) and size (" +
                            shape_str(target) + ").");
    }
    copies.push_back({target.mutable_data(), source.data(), static_cast<size_t>(target.nbytes())});
    keep.push_back(target);
    keep.push_back(source);
  }
  py::gil_scoped_release release;
  adagrad::copy_all(copies);
}

}  // namespace

void register_copy_all(py::module_& m) {
  m.def("assign_all", &assign_all, py::arg("pairs"),
        "Copies each source array over its target array (same dtype and size), every pair "
        "checked first and all copied in one call (GIL released): nothing runs between two "
        "copies.");
}
