// Pass 1 of a step: the sum of squares and finiteness of a gradient range,
// compiled once per ISA. Sixteen float64 lanes in a fixed element-to-lane
// order, combined by a fixed tree: the result is the same bits on every ISA
// and for every thread count (the ranges themselves never depend on either).
#include "kernel_common.hpp"
#include "kernels.hpp"

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

constexpr int kLanes = 16;

struct ReduceOp {
  const TensorSlots& t;
  const TensorStep& ts;
  const StepPlan& plan;
  int64_t begin, end;

  template <class P, class A, class C>
  ReduceResult operator()() const {
    double sums[kLanes] = {};
    double probe[kLanes] = {};  // x * 0 is NaN exactly when x is inf or NaN (order-free)
    alignas(64) C gbuf[kBlock];
    alignas(64) C sbuf[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = block_len(b, end);
      // Finiteness of the gradient as passed (Keras' LossScaleOptimizer checks
      // the scaled gradients, before any unscaling).
      const C* raw = load_view<C>(static_cast<const P*>(ts.grad) + b, gbuf, n);
      for (int64_t i = 0; i < n; ++i) probe[i % kLanes] += static_cast<double>(raw[i]) * 0.0;
      const C* g = prepared_gradient<P, C>(t, ts, plan, b, n, gbuf, sbuf);
      int64_t i = 0;
      for (; i + kLanes <= n; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) {
          const double x = static_cast<double>(g[i + j]);
          sums[j] += x * x;
        }
      }
      for (; i < n; ++i) {  // tail: kBlock is a multiple of kLanes, so lanes stay aligned
        const double x = static_cast<double>(g[i]);
        sums[i % kLanes] += x * x;
      }
    }
    for (int width = kLanes / 2; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) {
        sums[j] += sums[j + width];
        probe[j] += probe[j + width];
      }
    }
    return {sums[0], probe[0] == 0.0};
  }
};

}  // namespace

ReduceResult reduce_item(const TensorSlots& t, const TensorStep& ts, const StepPlan& plan,
                         int64_t begin, int64_t end) {
  return dispatch_dtypes(t, ReduceOp{t, ts, plan, begin, end});
}

}  // namespace adagrad::ADAGRAD_ISA_NS
