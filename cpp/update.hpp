// The fused element-wise update of a tensor's elements, block by block, in
// Keras 3's operation order (or torch's under the plan's torch formulas):
// shared by the dense kernel (dense.cpp: a work item) and the sparse one
// (sparse.cpp: the distinct rows of a sparse gradient, each with its summed
// gradient). Kernel files only: it lives in the
// ISA's own namespace, like kernel_common.hpp.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "clip.hpp"
#include "ema.hpp"
#include "kernel_common.hpp"

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

// The update of one tensor for one step, set up once (clip, EMA and scalars of
// the plan) and run on any of its element ranges.
template <class P, class A, class C>
struct Blocks {
  const TensorSlots& t;
  const StepPlan& plan;
  const GradClip<C> clip;
  const Ema<P, C> ema_of;
  const TensorScalars s;  // this tensor's learning rate, epsilon, weight decay, maximize
  const C lr, eps, wd;
  const C sign;  // torch formulas: -1 under maximize, else 1 (g * sign is exact)
  const bool decay;

  Blocks(const TensorSlots& t_, const TensorStep& ts_, const StepPlan& plan_)
      : t(t_), plan(plan_), clip(plan_, ts_), ema_of(plan_), s(scalars_of(plan_, ts_)),
        lr(static_cast<C>(s.learning_rate)), eps(static_cast<C>(s.epsilon)),
        wd(static_cast<C>(s.weight_decay)), sign(s.maximize ? C(-1) : C(1)),
        decay(t_.weight_decay && s.weight_decay != 0.0) {}

  P* param(int64_t b) const { return static_cast<P*>(t.param) + b; }
  P* gacc(int64_t b) const { return static_cast<P*>(t.grad_accumulator) + b; }

  void zero_gacc(int64_t b, int64_t n) const {
    P* __restrict ga = gacc(b);
    const P zero = from_c<P>(C(0));
    for (int64_t i = 0; i < n; ++i) ga[i] = zero;
  }

  // Calls fn(formula, decay) with both as compile-time constants, so each
  // combination gets its own vectorized loop.
  template <class Fn>
  auto with_update(Fn&& fn) const {
    const auto decayed = [&](auto formula) {
      return decay ? fn(formula, std::true_type{}) : fn(formula, std::false_type{});
    };
    switch (plan.formula) {
      case Formula::torch:
        return decayed(std::integral_constant<Formula, Formula::torch>{});
      case Formula::torch_sparse:
        return decayed(std::integral_constant<Formula, Formula::torch_sparse>{});
      case Formula::keras:
      default:
        return decayed(std::integral_constant<Formula, Formula::keras>{});
    }
  }

  // One element of the update in formula F (step.hpp's Formula, where each
  // order is spelled out): updates acc, returns the new v.
  template <Formula F, bool kDecay>
  C update_element(C g, C& acc, C v) const {
    if constexpr (F == Formula::keras) {
      if constexpr (kDecay) v = v - v * wd * lr;
      acc = acc + g * g;
      return v - (lr * g) / sqrt_c(acc + eps);
    } else {
      g = g * sign;
      if constexpr (kDecay) g = fma_c(wd, v, g);
      if constexpr (F == Formula::torch) {
        acc = fma_c(g, g, acc);
        return v - (lr * g) / (sqrt_c(acc) + eps);
      } else {
        acc = acc + g * g;
        return fma_c(-lr, g / (sqrt_c(acc) + eps), v);
      }
    }
  }

  // Decay, then Adagrad, in the plan's formula. `grad`: the gradient of
  // elements [b, b + n).
  void adagrad(int64_t b, int64_t n, const P* grad) const {
#ifdef ADAGRAD_HAVE_LANES8
    if constexpr (!std::is_same_v<P, C>) {
      if (plan.loss_scale == 0.0 && plan.clip == Clip::none &&
          (plan.phase != Phase::accumulate_update || t.grad_accumulator == nullptr)) {
        with_update([&](auto formula, auto decayed) {
          adagrad_in_registers<decltype(formula)::value, decltype(decayed)::value>(b, n, grad);
        });
        return;
      }
    }
#endif
    alignas(64) C gbuf[kBlock];
    alignas(64) C sbuf[kBlock];
    alignas(64) C vbuf[kBlock];
    alignas(64) C abuf[kBlock];
    const C* g = prepared_gradient<P, C>(t, grad, plan, b, n, gbuf, sbuf);
    if (plan.phase == Phase::accumulate_update && t.grad_accumulator != nullptr) zero_gacc(b, n);
    if (plan.clip != Clip::none) {  // else g stays the input: no copy on the plain path
      clip.apply(g, gbuf, n);
      g = gbuf;
    }
    A* acc_store = static_cast<A*>(t.accumulator) + b;
    C* __restrict v = load_view<C>(param(b), vbuf, n);
    C* __restrict acc = load_view<C>(acc_store, abuf, n);
    const unsigned nan_seen = with_update([&](auto formula, auto decayed) {
      return update_loop<decltype(formula)::value, decltype(decayed)::value>(g, v, acc, n);
    });
    if (nan_seen != 0) {  // a NaN accumulator makes v NaN too: one check covers both
      canonical_nans(v, n);
      canonical_nans(acc, n);
    }
    store_view(acc_store, acc, n);
    store_view(param(b), v, n);
  }

  // The element loop of adagrad() (one pass over the block); returns nonzero
  // when some v became NaN.
  template <Formula F, bool kDecay>
  unsigned update_loop(const C* __restrict g, C* __restrict v, C* __restrict acc, int64_t n) const {
    unsigned nan_seen = 0;
    for (int64_t i = 0; i < n; ++i) {
      C a = acc[i];
      const C vi = update_element<F, kDecay>(g[i], a, v[i]);
      acc[i] = a;
      v[i] = vi;
      nan_seen |= static_cast<unsigned>(vi != vi);
    }
    return nan_seen;
  }

#ifdef ADAGRAD_HAVE_LANES8
  // The plain step of 16-bit parameters in one loop, converting in registers:
  // the staged path's separate conversion loops cost 2-3x the arithmetic.
  // Same operations in the same order as update_element, so the same bits.
  template <Formula F, bool kDecay>
  void adagrad_in_registers(int64_t b, int64_t n, const P* grad) const {
    const P* __restrict g = grad;
    P* __restrict v = param(b);
    A* __restrict acc = static_cast<A*>(t.accumulator) + b;
    const __m256 lr8 = _mm256_set1_ps(lr), eps8 = _mm256_set1_ps(eps), wd8 = _mm256_set1_ps(wd);
    const __m256 sign8 = _mm256_set1_ps(sign), neg_lr8 = _mm256_set1_ps(-lr);
    const auto update = [&](__m256 gi, __m256& a, __m256& vi) {
      if constexpr (F == Formula::keras) {
        if constexpr (kDecay) vi = _mm256_sub_ps(vi, _mm256_mul_ps(_mm256_mul_ps(vi, wd8), lr8));
        a = _mm256_add_ps(a, _mm256_mul_ps(gi, gi));
        const __m256 den = _mm256_sqrt_ps(_mm256_add_ps(a, eps8));
        vi = _mm256_sub_ps(vi, _mm256_div_ps(_mm256_mul_ps(lr8, gi), den));
      } else {
        gi = _mm256_mul_ps(gi, sign8);
        if constexpr (kDecay) gi = _mm256_fmadd_ps(wd8, vi, gi);
        if constexpr (F == Formula::torch) {
          a = _mm256_fmadd_ps(gi, gi, a);
          const __m256 den = _mm256_add_ps(_mm256_sqrt_ps(a), eps8);
          vi = _mm256_sub_ps(vi, _mm256_div_ps(_mm256_mul_ps(lr8, gi), den));
        } else {
          a = _mm256_add_ps(a, _mm256_mul_ps(gi, gi));
          const __m256 den = _mm256_add_ps(_mm256_sqrt_ps(a), eps8);
          vi = _mm256_fmadd_ps(neg_lr8, _mm256_div_ps(gi, den), vi);
        }
      }
    };
    int64_t i = 0;
    if constexpr (std::is_same_v<P, bf16> && std::is_same_v<A, bf16>) {
      for (; i + 16 <= n; i += 16) {  // every stream is bf16: the cheaper 16-lane order
        __m256 g0, g1, a0, a1, v0, v1;
        load16(g + i, g0, g1);
        load16(acc + i, a0, a1);
        load16(v + i, v0, v1);
        update(g0, a0, v0);
        update(g1, a1, v1);
        store16(acc + i, a0, a1);
        store16(v + i, v0, v1);
      }
    }
    for (; i + 8 <= n; i += 8) {
      const __m256 gi = load8(g + i);
      __m256 a = load8(acc + i), vi = load8(v + i);
      update(gi, a, vi);
      store8(acc + i, a);
      store8(v + i, vi);
    }
    for (; i < n; ++i) {
      C a = to_c<C>(acc[i]);
      const C vi = update_element<F, kDecay>(to_c<C>(g[i]), a, to_c<C>(v[i]));
      acc[i] = from_c<A>(a);
      v[i] = from_c<P>(vi);
    }
    // As in adagrad(): a NaN accumulator makes v NaN too.
    if (any_nan(v, n)) {
      canonical_nans(v, n);
      canonical_nans(acc, n);
    }
  }
#endif

  // Accumulation micro-step: gacc += g / loss_scale.
  void accumulate(int64_t b, int64_t n, const P* grad) const {
    alignas(64) C gbuf[kBlock];
    alignas(64) C sbuf[kBlock];
    alignas(64) C abuf[kBlock];
    const C* g = prepared_gradient<P, C>(t, grad, plan, b, n, gbuf, sbuf);
    C* __restrict ga = load_view<C>(gacc(b), abuf, n);
    for (int64_t i = 0; i < n; ++i) ga[i] = ga[i] + g[i];
    canonicalize_nans(ga, n);
    store_view(gacc(b), ga, n);
  }

  // overwrite_with_gradient: v = g; under accumulation a running element-wise
  // maximum (NaN-propagating like ops.maximum), applied on the update step.
  void overwrite(int64_t b, int64_t n, const P* grad) const {
    const P* __restrict g = grad;
    P* __restrict v = param(b);
    if (plan.phase == Phase::update || t.grad_accumulator == nullptr) {
      std::memcpy(v, g, static_cast<size_t>(n) * sizeof(P));
      return;
    }
    P* __restrict ga = gacc(b);
    P* __restrict out = plan.phase == Phase::accumulate ? ga : v;
    for (int64_t i = 0; i < n; ++i) {
      const C x = to_c<C>(g[i]), y = to_c<C>(ga[i]);
      out[i] = from_c<P>((x != x || x > y) ? x : y);
    }
    if (plan.phase == Phase::accumulate_update) zero_gacc(b, n);
  }

  // The EMA follows the stored value of v (rounded to P).
  void ema(int64_t b, int64_t n) const {
    alignas(64) C vbuf[kBlock];
    ema_of.apply(load_view<C>(param(b), vbuf, n), static_cast<P*>(t.average) + b, param(b), n);
  }

  // Elements [begin, end) of t, whose gradient is grad[0, end - begin) (null:
  // no gradient this step).
  void run(int64_t begin, int64_t end, const P* grad) const {
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t n = block_len(b, end);
      const P* g = grad == nullptr ? nullptr : grad + (b - begin);
      if (g == nullptr) {
        // No gradient: Keras still resets its accumulator on an update step.
        if (plan.phase == Phase::accumulate_update && plan.reset_idle_accumulators &&
            t.grad_accumulator != nullptr) {
          zero_gacc(b, n);
        }
      } else if (t.overwrite) {
        overwrite(b, n, g);
      } else if (plan.phase == Phase::accumulate) {
        accumulate(b, n, g);
      } else {
        adagrad(b, n, g);
      }
      if (plan.ema && t.average != nullptr) ema(b, n);
    }
  }
};

}  // namespace
}  // namespace adagrad::ADAGRAD_ISA_NS
