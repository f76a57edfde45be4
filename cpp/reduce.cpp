// Pass 1 of a step: the sum of squares and finiteness of a gradient range,
// compiled once per ISA. Sixteen float64 lanes in a fixed element-to-lane
// order, combined by a fixed tree: the result is the same bits on every ISA
// and for every thread count (the ranges themselves never depend on either).
// The lanes are explicit vectors: GCC does not vectorize a lane-indexed sum.
#include "kernel_common.hpp"
#include "kernels.hpp"

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

using D4 = double __attribute__((vector_size(32)));
using F4 = float __attribute__((vector_size(16)));
using F8 = float __attribute__((vector_size(32)));

constexpr int kLanes = 16;  // four D4 accumulators: lane j holds elements i with i % 16 == j

inline void widen4(const float* p, D4& out) {
  F4 v;
  std::memcpy(&v, p, sizeof v);
  out = __builtin_convertvector(v, D4);
}
inline void widen4(const double* p, D4& out) { std::memcpy(&out, p, sizeof out); }

// True when every value of x[0, n) is finite: x * 0 is NaN exactly for inf and
// NaN, and a sum of zeros stays zero (in any order).
template <class C>
bool all_finite(const C* __restrict x, int64_t n) {
  using V = std::conditional_t<std::is_same_v<C, double>, D4, F8>;
  constexpr int64_t kWidth = sizeof(V) / sizeof(C);
  V probe = {};
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) {
    V v;
    std::memcpy(&v, x + i, sizeof v);
    probe += v * V{};
  }
  C tail = 0;
  for (; i < n; ++i) tail += x[i] * C(0);
  for (int64_t k = 0; k < kWidth; ++k) tail += probe[k];
  return tail == C(0);
}

struct ReduceOp {
  const TensorSlots& t;
  const TensorStep& ts;
  const StepPlan& plan;
  int64_t begin, end;

  template <class P, class A, class C>
  ReduceResult operator()() const {
    D4 sums[kLanes / 4] = {};
    bool finite = true;
    alignas(64) C gbuf[kBlock];
    alignas(64) C sbuf[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = block_len(b, end);
      // Finiteness of the gradient as passed (Keras' LossScaleOptimizer checks
      // the scaled gradients, before any unscaling).
      const C* raw = load_view<C>(static_cast<const P*>(ts.grad) + b, gbuf, n);
      finite = all_finite(raw, n) && finite;
      const C* g = prepared_gradient<P, C>(t, ts, plan, b, n, gbuf, sbuf);
      int64_t i = 0;
      for (; i + kLanes <= n; i += kLanes) {
        for (int q = 0; q < kLanes / 4; ++q) {
          D4 x;
          widen4(g + i + 4 * q, x);
          sums[q] += x * x;
        }
      }
      for (; i < n; ++i) {  // tail: kBlock is a multiple of kLanes, so lanes stay aligned
        const double x = static_cast<double>(g[i]);
        sums[(i % kLanes) / 4][i % 4] += x * x;
      }
    }
    double lanes[kLanes];
    std::memcpy(lanes, sums, sizeof lanes);
    for (int width = kLanes / 2; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
    }
    return {lanes[0], finite};
  }
};

}  // namespace

ReduceResult reduce_item(const TensorSlots& t, const TensorStep& ts, const StepPlan& plan,
                         int64_t begin, int64_t end) {
  return dispatch_dtypes(t, ReduceOp{t, ts, plan, begin, end});
}

}  // namespace adagrad::ADAGRAD_ISA_NS
