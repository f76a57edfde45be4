#include "py_fast_step.hpp"

#include <cstdint>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "py_arrays.hpp"
#include "py_register.hpp"

namespace py = pybind11;

namespace {

constexpr int kReadable = kCContiguous | kAligned;

// A gradient the core reads as it is: an ndarray with the parameter's dtype
// and shape, C-contiguous, aligned, in native byte order. Anything else goes
// the general way, which converts it or explains what is wrong.
bool ready(const py::handle& obj, const PyGroup& group, size_t i) {
  const py::array& param = group.params[i];
  if (!py::isinstance<py::array>(obj)) return false;
  const auto* a = py::detail::array_proxy(obj.ptr());
  const auto* d = py::detail::array_descriptor_proxy(a->descr);
  if (d->type_num != group.dtype_nums[i] || (a->flags & kReadable) != kReadable) return false;
  if (d->byteorder != '=' && d->byteorder != '|') return false;
  if (a->nd != param.ndim()) return false;
  py::ssize_t elements = 1;
  for (int k = 0; k < a->nd; ++k) {
    if (a->dimensions[k] != param.shape(k)) return false;
    elements *= a->dimensions[k];
  }
  // A gradient sharing memory with what the step writes goes the general way (a copy).
  return !group.overlaps_written(a->data, static_cast<size_t>(elements * param.itemsize()));
}

PyGroup& group_of(const py::object& group) {
  if (!py::isinstance<PyGroup>(group)) {
    throw py::type_error("FastStep: `group` must be a SlotGroup; received " + type_name(group) +
                         ".");
  }
  return group.cast<PyGroup&>();
}

// The items of a list or tuple (borrowed), or nullptr for anything else.
PyObject* const* items_of(const py::handle& seq, py::ssize_t& size) {
  if (PyList_Check(seq.ptr())) {
    size = PyList_GET_SIZE(seq.ptr());
    return PySequence_Fast_ITEMS(seq.ptr());
  }
  if (PyTuple_Check(seq.ptr())) {
    size = PyTuple_GET_SIZE(seq.ptr());
    return PySequence_Fast_ITEMS(seq.ptr());
  }
  return nullptr;
}

}  // namespace

FastStep::FastStep(py::object group, const adagrad::StepPlan& plan, const py::object& iterations,
                   const py::object& learning_rate, const py::sequence& variables)
    : group_object_(std::move(group)), group_(group_of(group_object_)), plan_(plan),
      iterations_(
          scalar_buffer(iterations, py::dtype::of<int64_t>().num(), "FastStep: iterations")),
      learning_rate_(
          scalar_buffer(learning_rate, py::dtype::of<float>().num(), "FastStep: learning_rate")),
      steps_(group_.group.tensors().size()) {
  group_.check_plan(plan_);
  if (variables.size() != steps_.size()) {
    throw std::invalid_argument("FastStep: one variable per tensor of the group.");
  }
  for (const py::handle& v : variables) variables_.push_back(py::reinterpret_borrow<py::object>(v));
  held_.reserve(steps_.size());
}

bool FastStep::accepts(const py::handle& variables) const {
  if (variables.is_none()) return true;
  py::ssize_t n = 0;
  PyObject* const* items = items_of(variables, n);
  if (items == nullptr || static_cast<size_t>(n) != variables_.size()) return false;
  for (py::ssize_t i = 0; i < n; ++i) {
    if (items[i] != variables_[i].ptr()) return false;
  }
  return true;
}

int64_t FastStep::try_step(const py::handle& grads, const py::handle& variables) {
  py::ssize_t n = 0;
  PyObject* const* items = items_of(grads, n);
  if (items == nullptr || static_cast<size_t>(n) != steps_.size() || !accepts(variables)) {
    return kDeclined;
  }
  for (py::ssize_t i = 0; i < n; ++i) {
    if (!ready(items[i], group_, static_cast<size_t>(i))) return kDeclined;
  }
  int64_t& iterations = *static_cast<int64_t*>(iterations_.mutable_data());
  if (iterations == std::numeric_limits<int64_t>::max()) return kDeclined;
  std::unique_lock<std::mutex> claimed;
  try {
    claimed = group_.claim();
  } catch (const py::value_error&) {
    return kDeclined;  // the general path raises the error
  }
  // Every check passed; from here on the call is taken.
  held_.clear();
  for (py::ssize_t i = 0; i < n; ++i) {
    held_.push_back(py::reinterpret_borrow<py::object>(items[i]));
    steps_[i] = adagrad::TensorStep{};
    steps_[i].grad = py::detail::array_proxy(items[i])->data;
  }
  plan_.learning_rate = *static_cast<const float*>(learning_rate_.data());
  adagrad::StepResult r;
  {
    py::gil_scoped_release release;
    r = adagrad::run_step(group_.group, steps_, plan_);
  }
  held_.clear();
  if (!r.applied) return r.first_nonfinite;
  ++iterations;
  return -1;
}

void register_fast_step(py::module_& m) {
  py::class_<FastStep>(m, "FastStep")
      .def(py::init<py::object, const adagrad::StepPlan&, const py::object&, const py::object&,
                    const py::sequence&>(),
           py::arg("group"), py::arg("plan"), py::arg("iterations"), py::arg("learning_rate"),
           py::arg("variables"))
      .def("accepts", &FastStep::accepts, py::arg("variables"))
      .def("try_step", &FastStep::try_step, py::arg("grads"), py::arg("variables"),
           "The steady-state step: -1 when it ran, >= 0 the tensor whose gradient is not "
           "finite (plan.check_finite; nothing written), DECLINED when the call needs the "
           "general path (nothing read or written).");
  m.attr("DECLINED") = FastStep::kDeclined;
}
