// One whole optimizer step: an optional reduction pass (norms, finiteness),
// then the fused update pass, each one parallel region over the work list.
#include <cmath>

#include "dispatch.hpp"
#include "step.hpp"

namespace adagrad {

namespace {
std::vector<int64_t> sizes_of(const std::vector<TensorSlots>& tensors) {
  std::vector<int64_t> sizes;
  sizes.reserve(tensors.size());
  for (const TensorSlots& t : tensors) sizes.push_back(t.size);
  return sizes;
}
}  // namespace

SlotGroup::SlotGroup(std::vector<TensorSlots> tensors)
    : tensors_(std::move(tensors)),
      work_(make_work_list(sizes_of(tensors_))),
      partial_sums_(work_.items.size()),
      partial_finite_(work_.items.size()) {}

StepResult run_step(SlotGroup& group, std::vector<TensorStep>& steps, const StepPlan& plan) {
  const std::vector<TensorSlots>& tensors = group.tensors();
  const WorkList& work = group.work();
  const Kernels& k = kernels();
  StepResult result;

  const bool update_step = plan.phase != Phase::accumulate;
  const bool need_norm =
      update_step && (plan.clip == Clip::norm || plan.clip == Clip::global_norm);
  if (need_norm || plan.check_finite) {
    std::vector<double>& partial = group.partial_sums();
    std::vector<unsigned char>& finite = group.partial_finite();
    for_each_item(work, [&](int64_t i) {
      const WorkItem& item = work.items[i];
      const TensorStep& ts = steps[item.tensor];
      if (ts.grad == nullptr) {
        partial[i] = 0.0;
        finite[i] = 1;
        return;
      }
      const ReduceResult r =
          k.reduce_item(tensors[item.tensor], ts, plan, item.begin, item.end);
      partial[i] = r.sum_squares;
      finite[i] = r.finite ? 1 : 0;
    });
    // Combine in item order: the same sum for any thread count.
    std::vector<double> tensor_sums(tensors.size(), 0.0);
    for (size_t i = 0; i < work.items.size(); ++i) {
      const int32_t t = work.items[i].tensor;
      tensor_sums[t] += partial[i];
      if (finite[i] == 0 && result.finite) {
        result.finite = false;
        result.first_nonfinite = t;
      }
    }
    if (plan.check_finite && !result.finite) {
      result.applied = false;
      return result;
    }
    if (need_norm) {
      double total = 0.0;
      for (size_t t = 0; t < tensors.size(); ++t) {
        if (steps[t].grad == nullptr || tensors[t].overwrite) continue;
        total += tensor_sums[t];
        // Keras: sqrt only of a positive sum (a NaN sum stays NaN).
        steps[t].norm = tensor_sums[t] > 0.0 ? std::sqrt(tensor_sums[t]) : tensor_sums[t];
      }
      result.global_norm = std::sqrt(total);
      if (plan.clip == Clip::global_norm) {
        for (TensorStep& ts : steps) ts.norm = result.global_norm;
      }
    }
  }

  for_each_item(work, [&](int64_t i) {
    const WorkItem& item = work.items[i];
    k.dense_item(tensors[item.tensor], steps[item.tensor], plan, item.begin, item.end);
  });
  return result;
}

}  // namespace adagrad
