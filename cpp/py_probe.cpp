// Binding of the roofline probe (roofline.hpp), for benchmarks; built only with
// -DADAGRAD_PROBE=ON.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "py_arrays.hpp"
#include "py_register.hpp"
#include "roofline.hpp"

namespace py = pybind11;

namespace {

// The probe plus the arrays it points into (kept alive).
struct PyStreamProbe {
  std::unique_ptr<adagrad::StreamProbe> probe;
  std::vector<py::array> keep_alive;
  int64_t bytes = 0;  // moved by one run: reads once, read-writes twice
};

// tensors: one (read_only, read_write) pair of array lists per tensor.
std::unique_ptr<PyStreamProbe> make_probe(
    const std::vector<std::pair<py::list, py::list>>& tensors) {
  auto out = std::make_unique<PyStreamProbe>();
  std::vector<adagrad::ProbeTensor> probe_tensors;
  for (size_t t = 0; t < tensors.size(); ++t) {
    adagrad::ProbeTensor pt;
    pt.size = -1;
    for (const bool write : {false, true}) {
      for (const py::handle& obj : write ? tensors[t].second : tensors[t].first) {
        const std::string what = "array of tensor " + std::to_string(t);
        if (!py::isinstance<py::array>(obj)) throw py::type_error(what + " is not a numpy array.");
        py::array a = write ? writable_buffer(obj, what) : py::reinterpret_borrow<py::array>(obj);
        if (!(a.flags() & kCContiguous)) throw py::value_error(what + " is not C-contiguous.");
        if (a.itemsize() != 2 && a.itemsize() != 4 && a.itemsize() != 8) {
          throw py::value_error(what + " has itemsize " + std::to_string(a.itemsize()) +
                                "; expected 2, 4 or 8.");
        }
        if (pt.size >= 0 && a.size() != pt.size) {
          throw py::value_error(what + " has " + std::to_string(a.size()) +
                                " elements; the tensor's other arrays have " +
                                std::to_string(pt.size) + ".");
        }
        pt.size = a.size();
        // Read-only arrays are only read (ProbeArray::write is false).
        pt.arrays.push_back({const_cast<void*>(a.data()), static_cast<int>(a.itemsize()), write});
        out->bytes += a.nbytes() * (write ? 2 : 1);
        out->keep_alive.push_back(a);
      }
    }
    pt.size = std::max<int64_t>(pt.size, 0);
    probe_tensors.push_back(std::move(pt));
  }
  out->probe = std::make_unique<adagrad::StreamProbe>(std::move(probe_tensors));
  return out;
}

// The probe plus the tables it points into (kept alive).
struct PyRowsProbe {
  std::unique_ptr<adagrad::RowsProbe> probe;
  std::vector<py::array> keep_alive;
  int64_t bytes = 0;  // moved by one run: every touched row read and written
};

// rows: distinct row ids, ascending; tables: arrays of at least max(rows) + 1 rows.
std::unique_ptr<PyRowsProbe> make_rows_probe(const py::array_t<int64_t>& rows,
                                             const py::list& tables) {
  auto out = std::make_unique<PyRowsProbe>();
  const py::array_t<int64_t> ids = py::array_t<int64_t, py::array::c_style>::ensure(rows);
  if (!ids || ids.ndim() != 1) throw py::value_error("rows must be a 1-D array of row ids.");
  std::vector<int64_t> row_ids(ids.data(), ids.data() + ids.size());
  for (size_t i = 0; i < row_ids.size(); ++i) {
    if (row_ids[i] < 0 || (i > 0 && row_ids[i] <= row_ids[i - 1])) {
      throw py::value_error("rows must be distinct, ascending and non-negative; row " +
                            std::to_string(i) + " is " + std::to_string(row_ids[i]) + ".");
    }
  }
  std::vector<adagrad::ProbeTable> probe_tables;
  for (size_t t = 0; t < tables.size(); ++t) {
    const std::string what = "table " + std::to_string(t);
    py::array a = writable_buffer(tables[t], what);
    if (!(a.flags() & kCContiguous)) throw py::value_error(what + " is not C-contiguous.");
    if (a.ndim() < 1) throw py::value_error(what + " has no rows (0-d).");
    if (a.itemsize() != 2 && a.itemsize() != 4 && a.itemsize() != 8) {
      throw py::value_error(what + " has itemsize " + std::to_string(a.itemsize()) +
                            "; expected 2, 4 or 8.");
    }
    if (!row_ids.empty() && row_ids.back() >= a.shape(0)) {
      throw py::value_error(what + " has " + std::to_string(a.shape(0)) + " rows; row " +
                            std::to_string(row_ids.back()) + " was asked for.");
    }
    const int64_t row_len = a.shape(0) > 0 ? a.size() / a.shape(0) : 0;
    probe_tables.push_back({a.mutable_data(), static_cast<int>(a.itemsize()), row_len});
    out->bytes += 2 * static_cast<int64_t>(row_ids.size()) * row_len * a.itemsize();
    out->keep_alive.push_back(a);
  }
  out->probe = std::make_unique<adagrad::RowsProbe>(std::move(probe_tables), std::move(row_ids));
  return out;
}

}  // namespace

void register_probe(py::module_& m) {
  py::class_<PyStreamProbe>(m, "StreamProbe",
                            "Memory-roofline probe for benchmarks: each call reads every "
                            "read-only array and reads and writes back (unchanged) every "
                            "read-write array, over the tensors' work list with the step's "
                            "threads, chunking and ISA.")
      .def(py::init(&make_probe), py::arg("tensors"))
      .def_property_readonly("bytes", [](const PyStreamProbe& p) { return p.bytes; })
      .def("__call__", [](const PyStreamProbe& p) {
        py::gil_scoped_release release;
        p.probe->run();
      });
  py::class_<PyRowsProbe>(m, "RowsProbe",
                          "Sparse memory-roofline probe for benchmarks: each call reads and "
                          "writes back (unchanged) the given rows of every table, in place, "
                          "with the step's threads, row tasks and ISA.")
      .def(py::init(&make_rows_probe), py::arg("rows"), py::arg("tables"))
      .def_property_readonly("bytes", [](const PyRowsProbe& p) { return p.bytes; })
      .def("__call__", [](const PyRowsProbe& p) {
        py::gil_scoped_release release;
        p.probe->run();
      });
}
