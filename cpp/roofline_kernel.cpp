// The roofline probe's element loops, compiled once per ISA like the step's
// kernels, so the probe moves bytes with the same vector width as the step.
#include <algorithm>

#include "kernel_common.hpp"
#include "kernels.hpp"
#include "roofline.hpp"

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

// A zero the compiler cannot see: writing `x + zero` stores every byte back
// unchanged (benchmarks run the probe on the optimizers' own buffers). Integer
// adds have no denormal or NaN slow paths.
volatile uint64_t opaque_zero = 0;
thread_local uint64_t read_sink = 0;  // keeps loads of read-only arrays alive

constexpr int kMaxFusedWrites = 4;

// One loop over all streams, the fastest way to move them (measured: staging
// the streams block by block costs 2-5% at 64-256 elements a block). Arrays of
// one itemsize, at most one read-only array (a step reads one gradient).
template <class U, int W>
void fused(const U* __restrict r, U* const* w, int64_t b, int64_t n) {
  const U zero = static_cast<U>(opaque_zero);
  U* __restrict w0 = W > 0 ? w[0] + b : nullptr;
  U* __restrict w1 = W > 1 ? w[1] + b : nullptr;
  U* __restrict w2 = W > 2 ? w[2] + b : nullptr;
  U* __restrict w3 = W > 3 ? w[3] + b : nullptr;
  if (r == nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (W > 0) w0[i] = static_cast<U>(w0[i] + zero);
      if constexpr (W > 1) w1[i] = static_cast<U>(w1[i] + zero);
      if constexpr (W > 2) w2[i] = static_cast<U>(w2[i] + zero);
      if constexpr (W > 3) w3[i] = static_cast<U>(w3[i] + zero);
    }
    return;
  }
  const U* __restrict g = r + b;
  U folded = 0;
  for (int64_t i = 0; i < n; ++i) {
    const U x = static_cast<U>(g[i] & zero);  // every write depends on the read
    if constexpr (W == 0) folded = static_cast<U>(folded ^ g[i]);
    if constexpr (W > 0) w0[i] = static_cast<U>(w0[i] + x);
    if constexpr (W > 1) w1[i] = static_cast<U>(w1[i] + x);
    if constexpr (W > 2) w2[i] = static_cast<U>(w2[i] + x);
    if constexpr (W > 3) w3[i] = static_cast<U>(w3[i] + x);
  }
  read_sink ^= folded;
}

template <class U>
bool try_fused(const ProbeTensor& t, int64_t begin, int64_t end) {
  const U* read = nullptr;
  U* writes[kMaxFusedWrites] = {};
  int n_writes = 0;
  for (const ProbeArray& a : t.arrays) {
    if (a.itemsize != static_cast<int>(sizeof(U))) return false;
    if (a.write) {
      if (n_writes == kMaxFusedWrites) return false;
      writes[n_writes++] = static_cast<U*>(a.data);
    } else {
      if (read != nullptr) return false;
      read = static_cast<const U*>(a.data);
    }
  }
  const int64_t n = end - begin;
  switch (n_writes) {
    case 0:
      fused<U, 0>(read, writes, begin, n);
      break;
    case 1:
      fused<U, 1>(read, writes, begin, n);
      break;
    case 2:
      fused<U, 2>(read, writes, begin, n);
      break;
    case 3:
      fused<U, 3>(read, writes, begin, n);
      break;
    default:
      fused<U, 4>(read, writes, begin, n);
      break;
  }
  return true;
}

template <class U>
void touch(const ProbeArray& a, int64_t b, int64_t n) {
  if (a.write) {
    U* __restrict p = static_cast<U*>(a.data) + b;
    const U zero = static_cast<U>(opaque_zero);
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<U>(p[i] + zero);
    return;
  }
  const U* __restrict p = static_cast<const U*>(a.data) + b;
  U folded = 0;
  for (int64_t i = 0; i < n; ++i) folded = static_cast<U>(folded ^ p[i]);
  read_sink ^= folded;
}

}  // namespace

void probe_item(const ProbeTensor& t, int64_t begin, int64_t end) {
  if (try_fused<uint32_t>(t, begin, end) || try_fused<uint16_t>(t, begin, end) ||
      try_fused<uint64_t>(t, begin, end)) {
    return;
  }
  // Any other layout (mixed itemsizes, more arrays): every array's block in
  // turn, in short blocks so the streams stay close to interleaved.
  constexpr int64_t kProbeBlock = 64;
  for (int64_t b = begin; b < end; b += kProbeBlock) {
    const int64_t n = std::min(end - b, kProbeBlock);
    for (const ProbeArray& a : t.arrays) {
      switch (a.itemsize) {
        case 2:
          touch<uint16_t>(a, b, n);
          break;
        case 8:
          touch<uint64_t>(a, b, n);
          break;
        default:
          touch<uint32_t>(a, b, n);
          break;
      }
    }
  }
}

}  // namespace adagrad::ADAGRAD_ISA_NS
