// Shared by the per-ISA kernel files (ADAGRAD_KERNEL_SOURCES in CMakeLists.txt).
// Everything here lives in that ISA's own namespace, so inline code compiled
// with one ISA's flags can never be merged by the linker into another ISA's path.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels.hpp"
#include "step.hpp"

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#endif

#ifndef ADAGRAD_ISA_NS
#error "compile kernel files with -DADAGRAD_ISA_NS=<namespace>"
#endif

namespace adagrad::ADAGRAD_ISA_NS {

// This ISA's kernels (kernels.hpp), defined by the kernel files.
ADAGRAD_KERNELS(ADAGRAD_DECLARE_KERNEL)

namespace {

// Elements per inner block: the working set of one block (up to six streams
// of 256 elements) stays in L1, so each stage below is a short, simple,
// vectorizable loop while DRAM still sees one pass per step.
constexpr int64_t kBlock = 256;

inline int64_t block_len(int64_t b, int64_t end) { return end - b < kBlock ? end - b : kBlock; }

// Cache lines a row of `bytes` bytes spans at least (one more if it starts inside one).
inline int64_t lines_of(int64_t bytes) { return (bytes + 63) / 64; }

// How many rows ahead a loop over scattered rows prefetches, when it touches
// `lines` cache lines per row: enough rows for about 27 lines in flight, and at
// least 3. On the development host (Zen 4; variants alternated step by step in
// one process, caches cold and warm) rows of 3 lines were 15% faster 8-12 rows
// ahead than 3 with the caches cold, rows of 9 lines fastest 3 ahead, and rows
// of 33 lines 2-3 ahead; the roofline probe's rows behaved alike.
inline int64_t rows_ahead(int64_t lines) {
  constexpr int64_t kLinesInFlight = 27, kMinRows = 3;
  return std::max(kMinRows, kLinesInFlight / lines);
}

inline float sqrt_c(float x) { return __builtin_sqrtf(x); }
inline double sqrt_c(double x) { return __builtin_sqrt(x); }
// a*b + c rounded once: an FMA instruction where the ISA has one (the loops
// vectorize), else libm's fma, which is correctly rounded too: the same bits.
inline float fma_c(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
inline double fma_c(double a, double b, double c) { return __builtin_fma(a, b, c); }

// The scalars of one tensor's update: its own (plan.per_tensor) or the plan's.
inline TensorScalars scalars_of(const StepPlan& plan, const TensorStep& ts) {
  if (ts.scalars != nullptr) return *ts.scalars;
  return TensorScalars{plan.learning_rate, plan.epsilon, plan.weight_decay, plan.maximize};
}

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

// Every NaN the step computes is stored as one positive quiet NaN (numpy's
// np.nan): which operand's NaN an x86 operation passes on depends on the
// operand order, which the compiler picks differently on each ISA path. NaNs
// are rare, so kernels look for one in the block they wrote (a cheap
// vectorized pass over L1) and rewrite the block only when they find one.
template <class X>
inline bool any_nan(const X* __restrict x, int64_t n) {
  unsigned seen = 0;
  if constexpr (std::is_same_v<X, float> || std::is_same_v<X, double>) {
    for (int64_t i = 0; i < n; ++i) seen |= static_cast<unsigned>(x[i] != x[i]);
  } else {  // 16-bit storage: its bits, so the check needs no conversion
    constexpr uint16_t inf = std::is_same_v<X, bf16> ? 0x7F80 : 0x7C00;
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, x + i, sizeof bits);
      seen |= static_cast<unsigned>((bits & 0x7FFF) > inf);
    }
  }
  return seen != 0;
}
template <class X>
inline void canonical_nans(X* __restrict p, int64_t n) {
  using C = std::conditional_t<std::is_same_v<X, double>, double, float>;
  const X nan = from_c<X>(std::numeric_limits<C>::quiet_NaN());
  for (int64_t i = 0; i < n; ++i) {
    const C c = to_c<C>(p[i]);
    if (c != c) p[i] = nan;
  }
}
// One value in the compute type: x, or the canonical NaN when x is NaN (a
// select, where a loop's check and rewrite would branch on every result).
template <class C>
inline C canonical_nan(C x) {
  return x != x ? std::numeric_limits<C>::quiet_NaN() : x;
}
// The check and the rewrite together, for a block that holds nothing else.
template <class X>
inline void canonicalize_nans(X* __restrict p, int64_t n) {
  if (any_nan(p, n)) canonical_nans(p, n);
}

// 16-bit conversions, eight lanes in a register where the ISA has them (GCC
// does not vectorize _Float16 or bit-manipulated bf16 conversions by itself).
// The scalar tails use the same rounding, so every ISA path gives the same bits.
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#define ADAGRAD_HAVE_LANES8 1
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const f16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load8(const bf16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline void store8(float* p, __m256 x) { _mm256_storeu_ps(p, x); }
inline void store8(f16* p, __m256 x) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}
// Same rounding as from_c<bf16>: nearest even, NaN stays a quiet NaN. The
// result is in the high 16 bits of each lane. Few shift/shuffle operations:
// they share the execution ports of sqrt and div.
inline __m256i round_to_bf16_high(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), odd);
  const __m256i quiet = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));
  const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(rounded, quiet, is_nan);
}
inline void store8(bf16* p, __m256 x) {
  // The high 16 bits of each lane, in order: bytes 2,3,6,7,.. of each 128-bit
  // half to its low 8 bytes, then the two halves' low quadwords together.
  const __m256i high = _mm256_shuffle_epi8(
      round_to_bf16_high(x),
      _mm256_setr_epi8(2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, 2, 3, 6, 7, 10,
                       11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1));
  const __m256i packed = _mm256_permute4x64_epi64(high, 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}

// Sixteen bf16 values as two float vectors holding elements 0-3,8-11 and
// 4-7,12-15: one unpack per vector instead of a widen and a shift. store16
// restores the order with one pack, so element-wise code where every stream
// uses load16/store16 needs fewer shuffles than with load8/store8.
inline void load16(const bf16* p, __m256& lo, __m256& hi) {
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i zero = _mm256_setzero_si256();
  lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, x));
  hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, x));
}
inline void store16(bf16* p, __m256 lo, __m256 hi) {
  // packus per 128-bit half: [lo 0-3, hi 4-7] and [lo 8-11, hi 12-15]. The
  // shifted values are below 2^16, so the saturation never applies.
  const __m256i packed = _mm256_packus_epi32(_mm256_srli_epi32(round_to_bf16_high(lo), 16),
                                             _mm256_srli_epi32(round_to_bf16_high(hi), 16));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), packed);
}

#endif

// A compute-typed view of n elements: the buffer itself when the storage type
// is the compute type, otherwise a converted copy in `buf` (L1-resident).
template <class C, class X>
inline C* load_view(X* p, C* buf, int64_t n) {
  if constexpr (std::is_same_v<C, X>) {
    (void)buf;
    (void)n;
    return p;
  } else {
    int64_t i = 0;
#ifdef ADAGRAD_HAVE_LANES8
    if constexpr (std::is_same_v<C, float>) {
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(buf + i, load8(p + i));
    }
#endif
    for (; i < n; ++i) buf[i] = to_c<C>(p[i]);
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
    int64_t i = 0;
#ifdef ADAGRAD_HAVE_LANES8
    if constexpr (std::is_same_v<C, float>) {
      for (; i + 8 <= n; i += 8) store8(p + i, _mm256_loadu_ps(buf + i));
    }
#endif
    for (; i < n; ++i) p[i] = from_c<X>(buf[i]);
  } else {
    (void)p;
    (void)buf;
    (void)n;
  }
}

// The gradient the update sees before clipping: g / loss_scale, and on an
// accumulation update step (g + gacc) / k (Keras' operation order), for
// elements [b, b + n) of t whose gradient is grad[0, n). Returns a pointer
// into gbuf, or to the gradient itself when nothing changes it.
template <class P, class C>
inline const C* prepared_gradient(const TensorSlots& t, const P* grad, const StepPlan& plan,
                                  int64_t b, int64_t n, C* gbuf, C* __restrict sbuf) {
  const C* g = load_view<C>(grad, gbuf, n);
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
