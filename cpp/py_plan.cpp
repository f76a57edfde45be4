// Bindings of a step's plan (step.hpp): Clip, Phase and StepPlan.
#include <pybind11/native_enum.h>

#include "py_register.hpp"
#include "step.hpp"

namespace py = pybind11;

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
}
