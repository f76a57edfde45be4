// Binding of the roofline probe (roofline.hpp), for benchmarks.
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
}
