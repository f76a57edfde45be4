// The exponential moving average of the parameters, shared by the dense and
// row-wise kernels. Kernel files only: it lives in the ISA's own namespace,
// like kernel_common.hpp.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernel_common.hpp"

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

template <class P, class C>
struct Ema {
  C m, one_minus_m;
  bool overwrite;

  explicit Ema(const StepPlan& plan)
      : m(static_cast<C>(plan.ema_momentum)), one_minus_m(C(1) - static_cast<C>(plan.ema_momentum)),
        overwrite(plan.ema_overwrite) {}

  // avg = m*avg + (1-m)*v over n <= kBlock elements, then optionally
  // param = avg (the stored average, copied). `v` is the stored parameter in
  // the compute type (Keras averages the variable as assigned).
  void apply(const C* __restrict v, P* avg_store, P* param, int64_t n) const {
    alignas(64) C mbuf[kBlock];
    C* __restrict avg = load_view<C>(avg_store, mbuf, n);
    for (int64_t i = 0; i < n; ++i) avg[i] = m * avg[i] + one_minus_m * v[i];
    canonicalize_nans(avg, n);
    store_view(avg_store, avg, n);
    if (overwrite) std::memcpy(param, avg_store, static_cast<size_t>(n) * sizeof(P));
  }
};

}  // namespace
}  // namespace adagrad::ADAGRAD_ISA_NS
