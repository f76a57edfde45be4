// Gradient clipping, shared by the dense and row-wise kernels. Kernel files
// only: it lives in the ISA's own namespace, like kernel_common.hpp.
#pragma once

#include <cstdint>

#include "kernel_common.hpp"

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

// The plan's clip of one tensor's gradient in the compute type C. The scalars
// come from the plan and the norm of pass 1 exactly as Keras derives them
// (NaN propagates as in jnp.maximum).
template <class C>
struct GradClip {
  Clip mode;
  C c{}, d{}, global_scale{};

  GradClip(const StepPlan& plan, const TensorStep& ts) : mode(plan.clip) {
    c = static_cast<C>(plan.clip_value);
    const C norm = static_cast<C>(ts.norm);
    if (mode == Clip::norm) {
      d = (norm != norm || norm > c) ? norm : c;  // max(norm, c)
    } else if (mode == Clip::global_norm) {
      const C inv_norm = C(1) / norm;
      const C inv_c = C(1) / c;
      const C smaller = (inv_norm != inv_norm || inv_norm < inv_c) ? inv_norm : inv_c;
      global_scale = c * smaller + (norm - norm);  // non-finite norm -> NaN
    }
  }

  // out[i] = the clipped g[i] for i < n (a copy under Clip::none). `out` may
  // be `g` itself (the dense kernel clips in place), hence no __restrict.
  void apply(const C* g, C* out, int64_t n) const {
    switch (mode) {
      case Clip::value: {
        const C hi = c, lo = -c;
        for (int64_t i = 0; i < n; ++i) {
          C x = g[i];
          x = x < lo ? lo : x;  // NaN compares false and stays NaN
          out[i] = x > hi ? hi : x;
        }
        break;
      }
      case Clip::norm:
        for (int64_t i = 0; i < n; ++i) out[i] = (g[i] * c) / d;
        break;
      case Clip::global_norm:
        for (int64_t i = 0; i < n; ++i) out[i] = g[i] * global_scale;
        break;
      case Clip::none:
        for (int64_t i = 0; i < n; ++i) out[i] = g[i];
        break;
    }
  }
};

}  // namespace
}  // namespace adagrad::ADAGRAD_ISA_NS
