// Pass 2 of a step: the fused element-wise update of one work item, compiled
// once per ISA. Operation order follows Keras 3 so the numbers match it, or
// torch's Adagrad under the plan's torch formulas (update.hpp).
#include "kernel_common.hpp"
#include "kernels.hpp"
#include "update.hpp"

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

struct DenseOp {
  const TensorSlots& t;
  const TensorStep& ts;
  const StepPlan& plan;
  int64_t begin, end;
  template <class P, class A, class C>
  void operator()() const {
    const P* grad = ts.grad == nullptr ? nullptr : static_cast<const P*>(ts.grad) + begin;
    Blocks<P, A, C>(t, ts, plan).run(begin, end, grad);
  }
};

}  // namespace

void dense_item(const TensorSlots& t, const TensorStep& ts, const StepPlan& plan, int64_t begin,
                int64_t end) {
  dispatch_dtypes(t, DenseOp{t, ts, plan, begin, end});
}

}  // namespace adagrad::ADAGRAD_ISA_NS
