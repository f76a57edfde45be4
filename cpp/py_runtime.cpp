// Bindings of the run-time settings: thread count (parallel.hpp) and ISA
// (dispatch.hpp).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "dispatch.hpp"
#include "parallel.hpp"
#include "py_register.hpp"
#include "team_self_test.hpp"

namespace py = pybind11;

void register_runtime(py::module_& m) {
  m.def("get_num_threads", &adagrad::get_num_threads);
  m.def("set_num_threads", &adagrad::set_num_threads, py::arg("n"));
  m.attr("MAX_THREADS") = adagrad::kMaxThreads;
  m.def("isa", []() { return std::string(adagrad::kernels().isa); });
  m.def("available_isas", &adagrad::available_isas);
  m.def("select_isa", &adagrad::select_isa, py::arg("name"));
  m.def(
      "environment_warnings",
      []() {
        std::vector<std::string> warnings;
        for (const std::string* w :
             {&adagrad::isa_env_warning(), &adagrad::threads_env_warning()}) {
          if (!w->empty()) warnings.push_back(*w);
        }
        return warnings;
      },
      "What the core could not follow in ADAGRAD_NATIVE_ISA and OMP_NUM_THREADS at import.");
  m.def("team_self_test", &adagrad::team_self_test,
        "Checks the thread team's rare paths (a task that throws, a loop inside a task); "
        "returns what failed.");
}
