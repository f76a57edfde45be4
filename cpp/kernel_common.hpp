// Shared by the per-ISA kernel files (dense.cpp, reduce.cpp). Everything here
// lives in that ISA's own namespace, so inline code compiled with one ISA's
// flags can never be merged by the linker into another ISA's path.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "step.hpp"

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#ifndef ADAGRAD_ISA_NS
#error "compile kernel files with -DADAGRAD_ISA_NS=<namespace>"
#endif

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

// Elements per inner block: the working set of one block (up to six streams
// of 256 elements) stays in L1, so each stage below is a short, simple,
// vectorizable loop while DRAM still sees one pass per step.
constexpr int64_t kBlock = 256;

inline int64_t block_len(int64_t b, int64_t end) { return end - b < kBlock ? end - b : kBlock; }

inline float sqrt_c(float x) { return __builtin_sqrtf(x); }
inline double sqrt_c(double x) { return __builtin_sqrt(x); }

using f16 = _Float16;
struct bf16 {
  uint16_t bits;
};

template <class C, class X>
inline C to_c(X x) {
  return static_cast<C>(x);
}
template <>
inline float to_c<float, bf16>(bf16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

template <class X, class C>
inline X from_c(C c) {
  return static_cast<X>(c);
}
// Round to nearest even; NaN stays a (quiet) NaN instead of rounding to inf.
template <>
inline bf16 from_c<bf16, float>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  const bool is_nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return bf16{static_cast<uint16_t>(is_nan ? quiet_nan : rounded)};
}

// A compute-typed view of n elements: the buffer itself when the storage type
// is the compute type, otherwise a converted copy in `buf` (L1-resident).
template <class C, class X>
inline C* load_view(X* p, C* buf, int64_t n) {
  if constexpr (std::is_same_v<C, X>) {
    (void)buf;
    (void)n;
    return p;
  } else {
    for (int64_t i = 0; i < n; ++i) buf[i] = to_c<C>(p[i]);
    return buf;
  }
}
template <class C, class X>
inline const C* load_view(const X* p, C* buf, int64_t n) {
  return load_view<C>(const_cast<X*>(p), buf, n);
}
// Writes a view back; a no-op when the view was the buffer itself.
template <class C, class X>
inline void store_view(X* p, const C* buf, int64_t n) {
  if constexpr (!std::is_same_v<C, X>) {
    for (int64_t i = 0; i < n; ++i) p[i] = from_c<X>(buf[i]);
  } else {
    (void)p;
    (void)buf;
    (void)n;
  }
}

// 16-bit conversions, eight at a time where the ISA has them (GCC does not
// vectorize _Float16 or bit-manipulated bf16 conversions by itself). The
// scalar tails use the same rounding, so every ISA path gives the same bits.
template <>
inline float* load_view<float, f16>(f16* p, float* buf, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    _mm256_storeu_ps(buf + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < n; ++i) buf[i] = static_cast<float>(p[i]);
  return buf;
}
template <>
inline void store_view<float, f16>(f16* p, const float* buf, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(buf + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i), h);
  }
#endif
  for (; i < n; ++i) p[i] = static_cast<f16>(buf[i]);
}
template <>
inline float* load_view<float, bf16>(bf16* p, float* buf, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    const __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    _mm256_storeu_ps(buf + i, _mm256_castsi256_ps(u));
  }
#endif
  for (; i < n; ++i) buf[i] = to_c<float>(p[i]);
  return buf;
}
template <>
inline void store_view<float, bf16>(bf16* p, const float* buf, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256i lsb = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF);
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
  const __m256i quiet = _mm256_set1_epi32(0x40);
  for (; i + 8 <= n; i += 8) {
    const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(buf + i));
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), lsb);
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, bias), odd), 16);
    const __m256i nan_bits = _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet);
    const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    const __m256i r = _mm256_blendv_epi8(rounded, nan_bits, is_nan);
    // Pack the eight 32-bit lanes (each < 2^16) to 16 bits, in order.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xD8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i), _mm256_castsi256_si128(packed));
  }
#endif
  for (; i < n; ++i) p[i] = from_c<bf16>(buf[i]);
}

// The gradient the update sees before clipping: g / loss_scale, and on an
// accumulation update step (g + gacc) / k (Keras' operation order). Returns
// a pointer into gbuf, or to the gradient itself when nothing changes it.
template <class P, class C>
inline const C* prepared_gradient(const TensorSlots& t, const TensorStep& ts,
                                  const StepPlan& plan, int64_t b, int64_t n, C* gbuf,
                                  C* __restrict sbuf) {
  const C* g = load_view<C>(static_cast<const P*>(ts.grad) + b, gbuf, n);
  if (plan.loss_scale != 0.0) {
    const C scale = static_cast<C>(plan.loss_scale);
    for (int64_t i = 0; i < n; ++i) gbuf[i] = g[i] / scale;
    g = gbuf;
  }
  if (plan.phase == Phase::accumulate_update && t.grad_accumulator != nullptr) {
    const C* acc = load_view<C>(static_cast<const P*>(t.grad_accumulator) + b, sbuf, n);
    const C k = static_cast<C>(plan.accumulation_steps);
    for (int64_t i = 0; i < n; ++i) gbuf[i] = (g[i] + acc[i]) / k;
    g = gbuf;
  }
  return g;
}

// Calls fn.template operator()<P, A, C>() for the tensor's storage types:
// parameter P, accumulator A, compute C (float64 math only for float64).
template <class Fn>
inline auto dispatch_dtypes(const TensorSlots& t, Fn&& fn) {
  const bool wide_acc = t.accumulator_dtype == DType::f32;
  switch (t.dtype) {
    case DType::f64:
      return fn.template operator()<double, double, double>();
    case DType::f16:
      return wide_acc ? fn.template operator()<f16, float, float>()
                      : fn.template operator()<f16, f16, float>();
    case DType::bf16:
      return wide_acc ? fn.template operator()<bf16, float, float>()
                      : fn.template operator()<bf16, bf16, float>();
    case DType::f32:
    default:
      return fn.template operator()<float, float, float>();
  }
}

}  // namespace
}  // namespace adagrad::ADAGRAD_ISA_NS
