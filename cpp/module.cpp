// The _core module: pybind11 bindings only (convert and check buffers,
// release the GIL, call). No math lives in any py_* file.
#include <pybind11/pybind11.h>

#include "py_register.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "adagrad_native's compiled core (private; use the adagrad_native package).";
  register_plan(m);
  register_group(m);
  register_fast_step(m);
  register_step(m);
#ifdef ADAGRAD_PROBE
  register_probe(m);  // benchmarks' builds only (CMakeLists.txt)
#endif
  register_runtime(m);
  register_copy_all(m);
}
