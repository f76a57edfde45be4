// The steady-state `apply()` in one native call. Python creates a FastStep
// after a step it decided is repeatable: the same variables in build order,
// a constant learning rate and a plan that stays the same until a
// hyperparameter changes (Python then drops the FastStep). Each call checks
// that its gradients need no conversion, runs the step with the stored plan
// and bumps the iteration counter. Anything else is declined untouched and
// the caller takes the general path, which also gives the errors.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "py_group.hpp"
#include "step.hpp"

class FastStep {
 public:
  // try_step's result when it declined the call (nothing read or written).
  static constexpr int64_t kDeclined = -2;

  // `group` is a SlotGroup; `iterations` the int64 0-d counter and
  // `learning_rate` the float32 0-d learning-rate variable, both read or
  // written in place on every call; `variables` the objects a call may name.
  // A counter at its largest value declines (the general path explains).
  FastStep(pybind11::object group, const adagrad::StepPlan& plan,
           const pybind11::object& iterations, const pybind11::object& learning_rate,
           const pybind11::sequence& variables);

  // Whether `variables` (None: build order) is a call this FastStep takes.
  bool accepts(const pybind11::handle& variables) const;

  // -1: the step ran; >= 0: the plan's finiteness check found a non-finite
  // gradient in that tensor and nothing was written; kDeclined.
  int64_t try_step(const pybind11::handle& grads, const pybind11::handle& variables);

 private:
  pybind11::object group_object_;  // keeps the PyGroup alive
  PyGroup& group_;
  adagrad::StepPlan plan_;
  pybind11::array iterations_;
  pybind11::array learning_rate_;
  std::vector<pybind11::object> variables_;
  std::vector<adagrad::TensorStep> steps_;  // reused by every call
  std::vector<pybind11::object> held_;      // this call's gradients, alive without the GIL
};
