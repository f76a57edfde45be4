// pybind11 bindings only: convert and check buffers, release the GIL, call.
// No math lives here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "dispatch.hpp"
#include "fast_step.hpp"
#include "py_group.hpp"
#include "roofline.hpp"
#include "step.hpp"

namespace py = pybind11;
using adagrad::DType;

namespace {

constexpr int kCContiguous = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_;
constexpr int kAligned = py::detail::npy_api::NPY_ARRAY_ALIGNED_;
constexpr int kWriteable = py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
constexpr int kNotSwapped = 0x0200;  // NPY_ARRAY_NOTSWAPPED

// Formats a shape like a Python tuple: (), (3,), (3, 4).
std::string shape_str(const py::array& a) {
  std::ostringstream out;
  out << '(';
  for (py::ssize_t d = 0; d < a.ndim(); ++d) out << (d > 0 ? ", " : "") << a.shape(d);
  out << (a.ndim() == 1 ? ",)" : ")");
  return out.str();
}

std::string dtype_name(const py::dtype& dt) { return py::str(dt.attr("name")).cast<std::string>(); }

// '=' and '|' are native by definition; only explicit '<'/'>' need numpy's verdict.
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

// A buffer the core writes in place: it must be exactly the memory the user
// holds, so anything that would need a copy is refused, never copied.
py::array writable_buffer(const py::handle& obj, const std::string& what) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(what + " must be a numpy.ndarray; received " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>() + ".");
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
                    bool wide_ok, std::vector<py::array>& keep, py::ssize_t expected_size = -1) {
  if (obj.is_none()) return nullptr;
  py::array a = writable_buffer(obj, what);
  const bool same_dtype = a.dtype().num() == param.dtype().num();
  const bool wide = wide_ok && dtype_code(a.dtype(), what) == DType::f32;
  if (!same_dtype && !wide) {
    throw py::type_error(what + " has dtype " + dtype_name(a.dtype()) + "; expected " +
                         dtype_name(param.dtype()) + ".");
  }
  const py::ssize_t want = expected_size >= 0 ? expected_size : param.size();
  if (a.size() != want) {
    throw py::value_error(what + " has " + std::to_string(a.size()) + " elements; expected " +
                          std::to_string(want) + ".");
  }
  keep.push_back(a);
  return a.mutable_data();
}

std::unique_ptr<PyGroup> make_group(const py::list& params, const py::list& accumulators,
                                    const py::list& averages, const py::list& grad_accumulators,
                                    const std::vector<bool>& weight_decay,
                                    const std::vector<bool>& overwrite,
                                    const std::vector<std::string>& names,
                                    const std::optional<std::vector<bool>>& rowwise) {
  const size_t n = params.size();
  if (rowwise && rowwise->size() != n) {
    throw py::value_error("SlotGroup: every list must have one entry per parameter.");
  }
  if (accumulators.size() != n || averages.size() != n || grad_accumulators.size() != n ||
      weight_decay.size() != n || overwrite.size() != n || names.size() != n) {
    throw py::value_error("SlotGroup: every list must have one entry per parameter.");
  }
  std::vector<py::array> keep;
  std::vector<py::array> param_arrays;
  std::vector<int> nums;
  std::vector<adagrad::TensorSlots> slots(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string var = "variable '" + names[i] + "' (index " + std::to_string(i) + ")";
    py::array p = writable_buffer(params[i], var);
    adagrad::TensorSlots& s = slots[i];
    s.dtype = dtype_code(p.dtype(), var);
    s.param = p.mutable_data();
    s.size = p.size();
    s.rows = p.ndim() >= 1 ? p.shape(0) : 0;
    s.row_len = s.rows > 0 ? p.size() / s.rows : 0;
    s.rowwise = rowwise && (*rowwise)[i];
    if (s.rowwise && p.ndim() < 2) {
      throw py::value_error(var + ": row-wise accumulators need a variable with 2+ dimensions.");
    }
    s.accumulator = optional_slot(accumulators[i], p, "the accumulator of " + var, true, keep,
                                  s.rowwise ? s.rows : -1);
    s.accumulator_dtype =
        accumulators[i].is_none() ? s.dtype : dtype_code(py::array(accumulators[i]).dtype(), var);
    s.average = optional_slot(averages[i], p, "the EMA average of " + var, false, keep);
    s.grad_accumulator =
        optional_slot(grad_accumulators[i], p, "the gradient accumulator of " + var, false, keep);
    s.weight_decay = weight_decay[i];
    s.overwrite = overwrite[i];
    if (!s.overwrite && s.accumulator == nullptr) {
      throw py::value_error(var + " needs an accumulator.");
    }
    keep.push_back(p);
    param_arrays.push_back(p);
    nums.push_back(p.dtype().num());
  }
  return std::make_unique<PyGroup>(std::move(slots), std::move(keep), names,
                                   std::move(param_arrays), std::move(nums));
}

// Gradients are only read, so one that is not contiguous, aligned and native
// is copied into a form that is; its dtype and shape must match exactly.
py::array gradient_buffer(const PyGroup& g, size_t i, const py::handle& obj) {
  const std::string var = "variable '" + g.names[i] + "' (index " + std::to_string(i) + ")";
  py::array a = py::isinstance<py::array>(obj) ? py::reinterpret_borrow<py::array>(obj)
                                               : py::array::ensure(obj);
  if (!a) {
    PyErr_Clear();
    throw py::type_error("The gradient for " + var + " must be array-like; received " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>() + ".");
  }
  const py::array& p = g.params[i];
  if (a.dtype().num() != g.dtype_nums[i]) {
    throw py::type_error("The gradient for " + var + " has dtype " + dtype_name(a.dtype()) +
                         ", but the variable has dtype " + dtype_name(p.dtype()) +
                         ". Cast the gradient, e.g. grad.astype(np." + dtype_name(p.dtype()) +
                         ").");
  }
  bool same_shape = a.ndim() == p.ndim();
  for (py::ssize_t d = 0; same_shape && d < a.ndim(); ++d) same_shape = a.shape(d) == p.shape(d);
  if (!same_shape) {
    throw py::value_error("The gradient for " + var + " has shape " + shape_str(a) +
                          ", but the variable has shape " + shape_str(p) + ".");
  }
  const int need = kCContiguous | kAligned;
  if ((a.flags() & need) != need || !is_native(a.dtype())) {
    a = py::array::ensure(a, need | kNotSwapped);
    if (!a) throw py::error_already_set();
  }
  return a;
}

// A row-sparse gradient: an object with `indices` and `values` (and optionally
// `dense_shape`), e.g. adagrad_native.SparseGradient or tf.IndexedSlices.
bool is_sparse(const py::handle& obj) {
  return !py::isinstance<py::array>(obj) && py::hasattr(obj, "indices") &&
         py::hasattr(obj, "values");
}

py::array as_array(const py::handle& obj, const std::string& what) {
  py::array a = py::array::ensure(obj, kCContiguous | kAligned | kNotSwapped);
  if (!a) {
    PyErr_Clear();
    throw py::type_error(what + " must be array-like; received " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>() + ".");
  }
  return a;
}

// Checks a sparse gradient completely (before anything is written) and fills
// the step's fields. Returns the arrays to keep alive for the call.
std::pair<py::array, py::array> sparse_gradient(const PyGroup& g, size_t i, const py::handle& obj,
                                                adagrad::TensorStep& ts) {
  const std::string var = "variable '" + g.names[i] + "' (index " + std::to_string(i) + ")";
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
  if (values.dtype().num() != g.dtype_nums[i]) {
    throw py::type_error("The sparse gradient's values for " + var + " have dtype " +
                         dtype_name(values.dtype()) + ", but the variable has dtype " +
                         dtype_name(p.dtype()) + ". Cast the values, e.g. values.astype(np." +
                         dtype_name(p.dtype()) + ").");
  }
  const py::ssize_t n = idx.shape(0);
  bool same = values.ndim() == p.ndim() && values.shape(0) == n;
  for (py::ssize_t d = 1; same && d < p.ndim(); ++d) same = values.shape(d) == p.shape(d);
  if (!same) {
    std::ostringstream want;
    want << '(' << n;
    for (py::ssize_t d = 1; d < p.ndim(); ++d) want << ", " << p.shape(d);
    want << (p.ndim() == 1 ? ",)" : ")");
    throw py::value_error("The sparse gradient's values for " + var + " have shape " +
                          shape_str(values) + "; expected " + want.str() +
                          " (one row of the variable's shape " + shape_str(p) + " per index).");
  }
  if (py::hasattr(obj, "dense_shape") && !obj.attr("dense_shape").is_none()) {
    py::array ds = as_array(obj.attr("dense_shape"), "The sparse gradient's dense_shape");
    bool ok = ds.ndim() == 1 && ds.shape(0) == p.ndim();
    for (py::ssize_t d = 0; ok && d < p.ndim(); ++d) {
      ok = py::int_(ds.attr("__getitem__")(d)).cast<int64_t>() == p.shape(d);
    }
    if (!ok) {
      throw py::value_error("The sparse gradient's dense_shape for " + var + " is " +
                            py::str(obj.attr("dense_shape")).cast<std::string>() +
                            ", but the variable has shape " + shape_str(p) + ".");
    }
  }
  const int64_t rows = p.shape(0);
  auto check_range = [&](auto* ids) {
    for (py::ssize_t j = 0; j < n; ++j) {
      const int64_t r = static_cast<int64_t>(ids[j]);
      if (r < 0 || r >= rows) {
        throw py::value_error("The sparse gradient for " + var + " has row id " +
                              std::to_string(r) + " at position " + std::to_string(j) +
                              "; row ids must be in [0, " + std::to_string(rows) +
                              ") for a variable of shape " + shape_str(p) + ".");
      }
    }
  };
  ts.sparse = true;
  ts.n_indices = n;
  ts.index_bytes = static_cast<int>(idx.itemsize());
  ts.indices = idx.data();
  if (ts.index_bytes == 4) {
    check_range(static_cast<const int32_t*>(ts.indices));
  } else {
    check_range(static_cast<const int64_t*>(ts.indices));
  }
  // A present gradient must have a non-null pointer, also with no rows.
  static const double kEmpty = 0.0;
  ts.grad = values.size() > 0 ? values.data() : static_cast<const void*>(&kEmpty);
  return {idx, values};
}

int64_t step(PyGroup& g, const py::sequence& grads, const adagrad::StepPlan& plan) {
  const size_t n = g.group.tensors().size();
  if (grads.size() != n) {
    throw py::value_error("Expected " + std::to_string(n) + " gradients (one per variable); received " +
                          std::to_string(grads.size()) + ".");
  }
  std::vector<py::array> held;
  held.reserve(2 * n);
  std::vector<adagrad::TensorStep> steps(n);
  for (size_t i = 0; i < n; ++i) {
    py::handle obj = grads[i];
    if (obj.is_none()) continue;
    if (is_sparse(obj)) {
      auto [idx, values] = sparse_gradient(g, i, obj, steps[i]);
      held.push_back(idx);
      held.push_back(values);
      continue;
    }
    held.push_back(gradient_buffer(g, i, obj));
    steps[i].grad = held.back().data();
  }
  adagrad::StepResult r;
  {
    py::gil_scoped_release release;
    r = adagrad::run_step(g.group, steps, plan);
  }
  return r.applied ? -1 : r.first_nonfinite;
}

// The probe plus the arrays it points into (kept alive).
struct PyStreamProbe {
  std::unique_ptr<adagrad::StreamProbe> probe;
  std::vector<py::array> keep_alive;
  int64_t bytes = 0;  // moved by one run: reads once, read-writes twice
};

// tensors: one (read_only, read_write) pair of array lists per tensor.
std::unique_ptr<PyStreamProbe> make_probe(const std::vector<std::pair<py::list, py::list>>& tensors) {
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

PYBIND11_MODULE(_core, m) {
  m.doc() = "adagrad_native's compiled core (private; use the adagrad_native package).";

  py::enum_<adagrad::Clip>(m, "Clip")
      .value("none", adagrad::Clip::none)
      .value("norm", adagrad::Clip::norm)
      .value("global_norm", adagrad::Clip::global_norm)
      .value("value", adagrad::Clip::value);
  py::enum_<adagrad::Phase>(m, "Phase")
      .value("update", adagrad::Phase::update)
      .value("accumulate", adagrad::Phase::accumulate)
      .value("accumulate_update", adagrad::Phase::accumulate_update);

  py::class_<adagrad::StepPlan>(m, "StepPlan")
      .def(py::init<>())
      .def_readwrite("learning_rate", &adagrad::StepPlan::learning_rate)
      .def_readwrite("epsilon", &adagrad::StepPlan::epsilon)
      .def_readwrite("weight_decay", &adagrad::StepPlan::weight_decay)
      .def_readwrite("clip", &adagrad::StepPlan::clip)
      .def_readwrite("clip_value", &adagrad::StepPlan::clip_value)
      .def_readwrite("loss_scale", &adagrad::StepPlan::loss_scale)
      .def_readwrite("phase", &adagrad::StepPlan::phase)
      .def_readwrite("accumulation_steps", &adagrad::StepPlan::accumulation_steps)
      .def_readwrite("ema", &adagrad::StepPlan::ema)
      .def_readwrite("ema_momentum", &adagrad::StepPlan::ema_momentum)
      .def_readwrite("ema_overwrite", &adagrad::StepPlan::ema_overwrite)
      .def_readwrite("check_finite", &adagrad::StepPlan::check_finite)
      .def_readwrite("reset_idle_accumulators", &adagrad::StepPlan::reset_idle_accumulators)
      .def_readwrite("sparse_lazy", &adagrad::StepPlan::sparse_lazy);

  py::class_<PyGroup>(m, "SlotGroup")
      .def(py::init(&make_group), py::arg("params"), py::arg("accumulators"),
           py::arg("averages"), py::arg("grad_accumulators"), py::arg("weight_decay"),
           py::arg("overwrite"), py::arg("names"), py::arg("rowwise") = py::none())
      .def_property_readonly("num_tensors",
                             [](const PyGroup& g) { return g.group.tensors().size(); })
      .def_property_readonly("num_tasks", [](const PyGroup& g) { return g.group.work().n_tasks(); })
      .def_property_readonly("chunk_elements", [](const PyGroup& g) { return g.group.work().chunk; });

  py::class_<FastStep>(m, "FastStep")
      .def(py::init<py::object, const adagrad::StepPlan&, py::array, py::array,
                    const py::sequence&>(),
           py::arg("group"), py::arg("plan"), py::arg("iterations"), py::arg("learning_rate"),
           py::arg("variables"))
      .def("accepts", &FastStep::accepts, py::arg("variables"))
      .def("try_step", &FastStep::try_step, py::arg("grads"), py::arg("variables"),
           "The steady-state step: -1 when it ran, >= 0 the tensor whose gradient is not "
           "finite (plan.check_finite; nothing written), DECLINED when the call needs the "
           "general path (nothing read or written).");
  m.attr("DECLINED") = FastStep::kDeclined;

  m.def("step", &step, py::arg("group"), py::arg("grads"), py::arg("plan"),
        "Runs one optimizer step over every tensor of the group (GIL released). Returns -1, or "
        "the index of the first tensor with a non-finite gradient when plan.check_finite "
        "stopped the step before anything was written.");
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
  m.def("get_num_threads", &adagrad::get_num_threads);
  m.def("set_num_threads", &adagrad::set_num_threads, py::arg("n"));
  m.def("openmp_enabled", &adagrad::openmp_enabled);
  m.def("isa", []() { return std::string(adagrad::kernels().isa); });
  m.def("available_isas", &adagrad::available_isas);
  m.def("select_isa", &adagrad::select_isa, py::arg("name"));
}
