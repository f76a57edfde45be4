// The roofline probe's element loops, compiled once per ISA like the step's
// kernels, so the probe moves bytes with the same vector width as the step.
// Built only with -DADAGRAD_PROBE=ON (roofline.hpp).
#include <algorithm>

#include "kernel_common.hpp"
#include "kernels.hpp"
#include "roofline.hpp"

namespace adagrad::ADAGRAD_ISA_NS {

ADAGRAD_PROBE_KERNELS(ADAGRAD_DECLARE_KERNEL)

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
void touch(void* data, bool write, int64_t n) {
  if (write) {
    U* __restrict p = static_cast<U*>(data);
    const U zero = static_cast<U>(opaque_zero);
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<U>(p[i] + zero);
    return;
  }
  const U* __restrict p = static_cast<const U*>(data);
  U folded = 0;
  for (int64_t i = 0; i < n; ++i) folded = static_cast<U>(folded ^ p[i]);
  read_sink ^= folded;
}

// n items of `itemsize` bytes at data.
void touch_items(void* data, int itemsize, bool write, int64_t n) {
  switch (itemsize) {
    case 2:
      touch<uint16_t>(data, write, n);
      break;
    case 8:
      touch<uint64_t>(data, write, n);
      break;
    default:
      touch<uint32_t>(data, write, n);
      break;
  }
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
      touch_items(static_cast<char*>(a.data) + b * a.itemsize, a.itemsize, a.write, n);
    }
  }
}

// The rows' lines are prefetched as the sparse step's are (rows_ahead): the rows
// are scattered, so without it the probe would wait for every miss.
void probe_rows(const std::vector<ProbeTable>& tables, const int64_t* rows, int64_t n) {
  int64_t lines = 0;
  for (const ProbeTable& t : tables) lines += lines_of(t.row_len * t.itemsize);
  const int64_t ahead = rows_ahead(std::max<int64_t>(lines, 1));
  for (int64_t k = 0; k < n; ++k) {
    if (k + ahead < n) {
      for (const ProbeTable& t : tables) {
        const int64_t bytes = t.row_len * t.itemsize;
        const char* row = static_cast<const char*>(t.data) + rows[k + ahead] * bytes;
        for (int64_t line = 0; line < bytes; line += 64) __builtin_prefetch(row + line, 1, 3);
      }
    }
    for (const ProbeTable& t : tables) {
      char* row = static_cast<char*>(t.data) + rows[k] * t.row_len * t.itemsize;
      touch_items(row, t.itemsize, true, t.row_len);
    }
  }
}

#define ADAGRAD_PROBE_ADDRESS(name, ret, params) name,
extern const ProbeKernels probe_set = {ADAGRAD_ISA_NAME,
                                       ADAGRAD_PROBE_KERNELS(ADAGRAD_PROBE_ADDRESS)};
#undef ADAGRAD_PROBE_ADDRESS

}  // namespace adagrad::ADAGRAD_ISA_NS
