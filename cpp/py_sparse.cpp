#include "py_sparse.hpp"

#include <string>
#include <vector>

#include "py_arrays.hpp"

namespace py = pybind11;

// A SparseGradient, or a look-alike of tf.IndexedSlices: all three attributes
// (a torch tensor has `indices` and `values` methods, and is dense). The
// Python side's rule is sparse.py's is_sparse_gradient.
bool is_sparse(const py::handle& obj) {
  return !py::isinstance<py::array>(obj) && py::hasattr(obj, "indices") &&
         py::hasattr(obj, "values") && py::hasattr(obj, "dense_shape");
}

std::pair<py::array, py::array> sparse_gradient(const PyGroup& g, size_t i, const py::handle& obj,
                                                adagrad::TensorStep& ts) {
  const std::string var = g.label(i);
  const py::array& p = g.params[i];
  if (p.ndim() == 0) {
    throw py::value_error("The gradient for " + var +
                          " is a sparse gradient, but the variable is 0-d (a scalar has no "
                          "rows). Pass a dense gradient.");
  }
  py::array idx = as_array(obj.attr("indices"), "The sparse gradient's indices for " + var);
  const char kind = idx.dtype().kind();
  if ((kind != 'i' && kind != 'u') || (idx.itemsize() != 4 && idx.itemsize() != 8) ||
      (kind == 'u' && idx.itemsize() == 8)) {
    throw py::type_error("The sparse gradient's indices for " + var + " have dtype " +
                         dtype_name(idx.dtype()) + "; expected int32 or int64 row ids.");
  }
  if (idx.ndim() != 1) {
    throw py::value_error("The sparse gradient's indices for " + var + " have shape " +
                          shape_str(idx) + "; expected a 1-D array of row ids.");
  }
  if (kind == 'u') {  // uint32: widen, so the core sees int32/int64 only
    idx = py::array::ensure(idx.attr("astype")("int64"));
  }
  py::array values = as_array(obj.attr("values"), "The sparse gradient's values for " + var);
  values = cast_like_keras(values, p, g.dtype_nums[i], "The sparse gradient's values for " + var);
  const py::ssize_t n = idx.shape(0);
  bool same = values.ndim() == p.ndim() && values.shape(0) == n;
  for (py::ssize_t d = 1; same && d < p.ndim(); ++d) same = values.shape(d) == p.shape(d);
  if (!same) {
    std::vector<py::ssize_t> want(p.shape(), p.shape() + p.ndim());
    want[0] = n;
    throw py::value_error("The sparse gradient's values for " + var + " have shape " +
                          shape_str(values) + "; expected " + shape_str(want) +
                          " (one row of the variable's shape " + shape_str(p) + " per index).");
  }
  if (py::hasattr(obj, "dense_shape") && !obj.attr("dense_shape").is_none()) {
    py::array ds = as_array(obj.attr("dense_shape"), "The sparse gradient's dense_shape");
    bool ok = ds.ndim() == 1 && ds.shape(0) == p.ndim();
    for (py::ssize_t d = 0; ok && d < p.ndim(); ++d) {
      // Compared as Python numbers: a dimension beyond int64 is just not equal.
      ok = ds.attr("__getitem__")(d).equal(py::int_(p.shape(d)));
    }
    if (!ok) {
      throw py::value_error("The sparse gradient's dense_shape for " + var + " is " +
                            py::str(obj.attr("dense_shape")).cast<std::string>() +
                            ", but the variable has shape " + shape_str(p) + ".");
    }
  }
  // The core reads the ids after the GIL is released, when another thread may
  // refill the caller's array: it reads a private copy, checked here.
  idx = idx.attr("copy")();
  const int64_t rows = p.shape(0);
  ts.sparse = true;
  ts.n_indices = n;
  ts.index_bytes = static_cast<int>(idx.itemsize());
  ts.indices = idx.data();
  with_ids(ts, [&](const auto* ids) {
    for (py::ssize_t j = 0; j < n; ++j) {
      const int64_t r = static_cast<int64_t>(ids[j]);
      if (r < 0 || r >= rows) {
        throw py::value_error("The sparse gradient for " + var + " has row id " +
                              std::to_string(r) + " at position " + std::to_string(j) +
                              "; row ids must be in [0, " + std::to_string(rows) +
                              ") for a variable of shape " + shape_str(p) + ".");
      }
    }
  });
  if (g.overlaps_written(values.data(), static_cast<size_t>(values.nbytes()))) {
    values = values.attr("copy")();  // read as it was when the call began
  }
  // A present gradient must have a non-null pointer, also with no rows.
  static const double kEmpty = 0.0;
  ts.grad = values.size() > 0 ? values.data() : static_cast<const void*>(&kEmpty);
  return {idx, values};
}
