#include "py_group.hpp"

#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "py_arrays.hpp"
#include "py_register.hpp"

namespace py = pybind11;

std::string variable_label(const std::string& name, size_t index) {
  return "variable '" + name + "' (index " + std::to_string(index) + ")";
}

std::string PyGroup::label(size_t i) const { return variable_label(names[i], i); }

void PyGroup::index_written(const std::vector<size_t>& owners) {
  written_.clear();
  for (size_t k = 0; k < keep_alive.size(); ++k) {
    const py::array& a = keep_alive[k];
    if (a.nbytes() == 0) continue;
    const auto begin = reinterpret_cast<uintptr_t>(a.data());
    written_.push_back({begin, begin + static_cast<uintptr_t>(a.nbytes()), owners[k]});
  }
  std::sort(written_.begin(), written_.end(),
            [](const Range& x, const Range& y) { return x.begin < y.begin; });
  for (size_t k = 1; k < written_.size(); ++k) {
    if (written_[k].begin < written_[k - 1].end) {
      throw py::value_error(
          "The buffers of " + label(written_[k - 1].owner) + " and " + label(written_[k].owner) +
          " overlap (a parameter or optimizer slot shares memory with another): the step "
          "writes them in place, so each must be its own array (e.g. np.copy).");
    }
  }
}

void PyGroup::check_plan(const adagrad::StepPlan& plan) const {
  if (plan.phase == adagrad::Phase::update) return;
  const std::vector<adagrad::TensorSlots>& tensors = group.tensors();
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].grad_accumulator == nullptr) {
      throw py::value_error("The step accumulates gradients, but " + label(i) +
                            " has no gradient accumulator: gradient_accumulation_steps must "
                            "be set when the optimizer is built.");
    }
  }
}

std::unique_lock<std::mutex> PyGroup::claim() {
  std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
  if (!lock.owns_lock()) {
    throw py::value_error(
        "This SlotGroup is in a step of another thread: a group takes one call at a time "
        "(an optimizer's lock keeps its own steps apart).");
  }
  return lock;
}

bool PyGroup::overlaps_written(const void* data, size_t bytes) const {
  if (bytes == 0) return false;
  const auto begin = reinterpret_cast<uintptr_t>(data);
  // The ranges do not overlap, so their ends are sorted too.
  auto it = std::upper_bound(written_.begin(), written_.end(), begin,
                             [](uintptr_t b, const Range& r) { return b < r.end; });
  return it != written_.end() && it->begin < begin + bytes;
}

namespace {

// The most work items a group may have: far
// more than any model at the core's chunk (2**24 items of 16 Ki elements are
// 2**38 elements), few enough that the work list (about 40 bytes an item)
// stays small and every task index fits the thread team's 32 bits.
constexpr int64_t kMaxItems = int64_t{1} << 24;

// ValueError unless tensors of `sizes` (each >= 0) cut into at most kMaxItems
// items of `chunk` elements (0: the core's choice).
void check_work_size(const std::vector<int64_t>& sizes, int64_t chunk, const std::string& what) {
  int64_t total = 0;
  for (int64_t size : sizes) {
    if (size < 0 || size > (int64_t{1} << 62) - total) {
      throw py::value_error(what + " must be sizes in [0, 2**62) with a sum below 2**62; " +
                            "received " + std::to_string(size) + ".");
    }
    total += size;
  }
  if (chunk <= 0) chunk = adagrad::work_chunk(sizes);
  int64_t items = 0;
  for (int64_t size : sizes) items += (size + chunk - 1) / chunk;
  if (items > kMaxItems) {
    throw py::value_error(what + " cut into " + std::to_string(items) + " work items of " +
                          std::to_string(chunk) + " elements; at most " +
                          std::to_string(kMaxItems) + " are allowed (use a larger chunk).");
  }
}

std::unique_ptr<PyGroup> make_group(const py::list& params, const py::list& accumulators,
                                    const py::list& averages, const py::list& grad_accumulators,
                                    const std::vector<bool>& weight_decay,
                                    const std::vector<bool>& overwrite,
                                    const std::vector<std::string>& names,
                                    const std::optional<std::vector<bool>>& rowwise,
                                    const std::optional<int64_t>& chunk) {
  const size_t n = params.size();
  if (chunk && *chunk < 1) {
    throw py::value_error("SlotGroup: chunk must be >= 1; received " + std::to_string(*chunk) +
                          ".");
  }
  if (rowwise && rowwise->size() != n) {
    throw py::value_error("SlotGroup: every list must have one entry per parameter.");
  }
  if (accumulators.size() != n || averages.size() != n || grad_accumulators.size() != n ||
      weight_decay.size() != n || overwrite.size() != n || names.size() != n) {
    throw py::value_error("SlotGroup: every list must have one entry per parameter.");
  }
  if (n > static_cast<size_t>(INT32_MAX)) {
    throw py::value_error("SlotGroup: at most 2**31 - 1 parameters.");
  }
  std::vector<py::array> keep;
  std::vector<py::array> param_arrays;
  std::vector<int> nums;
  std::vector<size_t> owners;  // the variable of each kept (written) array
  std::vector<adagrad::TensorSlots> slots(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string var = variable_label(names[i], i);
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
    owners.resize(keep.size(), i);
    param_arrays.push_back(p);
    nums.push_back(p.dtype().num());
  }
  std::vector<int64_t> sizes;
  for (const adagrad::TensorSlots& s : slots) sizes.push_back(s.size);
  check_work_size(sizes, chunk.value_or(0), "SlotGroup: the parameters");
  auto group =
      std::make_unique<PyGroup>(std::move(slots), std::move(keep), names, std::move(param_arrays),
                                std::move(nums), chunk.value_or(0));
  group->index_written(owners);
  return group;
}

}  // namespace

void register_group(py::module_& m) {
  py::class_<PyGroup>(m, "SlotGroup")
      .def(py::init(&make_group), py::arg("params"), py::arg("accumulators"), py::arg("averages"),
           py::arg("grad_accumulators"), py::arg("weight_decay"), py::arg("overwrite"),
           py::arg("names"), py::arg("rowwise") = py::none(), py::arg("chunk") = py::none());
  m.def(
      "work_chunk",
      [](const std::vector<int64_t>& sizes) {
        check_work_size(sizes, 0, "work_chunk: `sizes`");
        return adagrad::work_chunk(sizes);
      },
      py::arg("sizes"), "The work-item size the core chooses for tensors of these element counts.");
}
