// The Python-side SlotGroup: the core's group plus the numpy arrays it points
// into (kept alive) and what the bindings need to check gradients against.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "step.hpp"

struct PyGroup {
  PyGroup(std::vector<adagrad::TensorSlots> slots, std::vector<pybind11::array> keep,
          std::vector<std::string> names_, std::vector<pybind11::array> params_,
          std::vector<int> nums, int64_t chunk = 0)
      : group(std::move(slots), chunk), keep_alive(std::move(keep)), names(std::move(names_)),
        params(std::move(params_)), dtype_nums(std::move(nums)) {}
  adagrad::SlotGroup group;
  std::vector<pybind11::array> keep_alive;  // the core holds raw pointers into these
  std::vector<std::string> names;
  std::vector<pybind11::array> params;
  std::vector<int> dtype_nums;

  // "variable 'w' (index 0)": how messages name variable i.
  std::string label(size_t i) const;

  // Whether [data, data + bytes) overlaps memory the step writes (a parameter
  // or a slot). Such a gradient is read from a copy: the step must see the
  // gradient as it was when the call began, on every thread.
  bool overlaps_written(const void* data, size_t bytes) const;

  // Sorts the written ranges; ValueError when two of them overlap (the step
  // would write the same memory twice, from different threads).
  void index_written(const std::vector<size_t>& owners);

  // ValueError unless the group has every buffer the plan's phase reads and
  // writes (an accumulation phase: every tensor's gradient accumulator).
  void check_plan(const adagrad::StepPlan& plan) const;

  // The group for one call (its scratch buffers are the call's): RuntimeError
  // when another thread's call holds it. An optimizer's own lock keeps its
  // steps apart; this keeps direct callers of the private module apart too.
  std::unique_lock<std::mutex> claim();

 private:
  std::mutex busy_;
  struct Range {
    uintptr_t begin, end;
    size_t owner;  // the variable index
  };
  std::vector<Range> written_;
};

// How messages name the variable `name` at `index`.
std::string variable_label(const std::string& name, size_t index);
