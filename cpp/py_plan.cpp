// Bindings of a step's plan (step.hpp): Clip, Phase, Formula and StepPlan.
#include <pybind11/native_enum.h>
#include <pybind11/numpy.h>

#include <memory>
#include <string>
#include <vector>

#include "py_register.hpp"
#include "step.hpp"

namespace py = pybind11;

namespace {

constexpr py::ssize_t kScalarColumns = 4;  // learning_rate, epsilon, weight_decay, maximize

// StepPlan.per_tensor from Python: None, or a float64 array of one row
// (learning_rate, epsilon, weight_decay, maximize 0/1) per tensor.
void set_per_tensor(adagrad::StepPlan& plan, const py::object& rows) {
  if (rows.is_none()) {
    plan.per_tensor.reset();
    return;
  }
  auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(rows);
  if (!a) {
    PyErr_Clear();
    throw py::type_error("StepPlan.per_tensor must be None or a float64 array.");
  }
  if (a.ndim() != 2 || a.shape(1) != kScalarColumns) {
    throw py::value_error(
        "StepPlan.per_tensor must have shape (tensors, 4): learning_rate, epsilon, "
        "weight_decay, maximize per tensor; received ndim " +
        std::to_string(a.ndim()) + ".");
  }
  auto scalars =
      std::make_shared<std::vector<adagrad::TensorScalars>>(static_cast<size_t>(a.shape(0)));
  auto r = a.unchecked<2>();
  for (py::ssize_t i = 0; i < a.shape(0); ++i) {
    if (r(i, 3) != 0.0 && r(i, 3) != 1.0) {
      throw py::value_error("StepPlan.per_tensor: maximize (column 3) must be 0 or 1.");
    }
    (*scalars)[static_cast<size_t>(i)] = {r(i, 0), r(i, 1), r(i, 2), r(i, 3) != 0.0};
  }
  plan.per_tensor = std::move(scalars);
}

py::object get_per_tensor(const adagrad::StepPlan& plan) {
  if (!plan.per_tensor) return py::none();
  const std::vector<adagrad::TensorScalars>& s = *plan.per_tensor;
  py::array_t<double> out({static_cast<py::ssize_t>(s.size()), kScalarColumns});
  auto w = out.mutable_unchecked<2>();
  for (size_t i = 0; i < s.size(); ++i) {
    const auto k = static_cast<py::ssize_t>(i);
    w(k, 0) = s[i].learning_rate;
    w(k, 1) = s[i].epsilon;
    w(k, 2) = s[i].weight_decay;
    w(k, 3) = s[i].maximize ? 1.0 : 0.0;
  }
  return std::move(out);
}

}  // namespace

void register_plan(py::module_& m) {
  // Real enum.Enum subclasses, as the stub (_core.pyi) declares them.
  py::native_enum<adagrad::Clip>(m, "Clip", "enum.Enum")
      .value("none", adagrad::Clip::none)
      .value("norm", adagrad::Clip::norm)
      .value("global_norm", adagrad::Clip::global_norm)
      .value("value", adagrad::Clip::value)
      .finalize();
  py::native_enum<adagrad::Phase>(m, "Phase", "enum.Enum")
      .value("update", adagrad::Phase::update)
      .value("accumulate", adagrad::Phase::accumulate)
      .value("accumulate_update", adagrad::Phase::accumulate_update)
      .finalize();
  py::native_enum<adagrad::Formula>(m, "Formula", "enum.Enum")
      .value("keras", adagrad::Formula::keras)
      .value("torch", adagrad::Formula::torch)
      .value("torch_sparse", adagrad::Formula::torch_sparse)
      .finalize();

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
      .def_readwrite("sparse_lazy", &adagrad::StepPlan::sparse_lazy)
      .def_readwrite("formula", &adagrad::StepPlan::formula)
      .def_readwrite("maximize", &adagrad::StepPlan::maximize)
      .def_property("per_tensor", &get_per_tensor, &set_per_tensor,
                    "None, or a float64 array of one row (learning_rate, epsilon, weight_decay, "
                    "maximize 0/1) per tensor that replaces the plan's scalars for that tensor.");
}
