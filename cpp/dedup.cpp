// De-duplication of row-sparse gradients, compiled once: it runs its own
// parallel loops, one layer above the per-ISA kernels.
#include "dedup.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include "parallel.hpp"

namespace adagrad {
namespace {

// Sorts (row id, position) pairs by row id, stably, so the copies of a row
// keep their index order; then groups them. An LSD radix sort over only the
// bits a row id of this tensor can have (two 10-11 bit passes for a million
// rows); its result is fully determined by the input, whatever the threads.
// Index lists at least this long are sorted by kDedupBlocks blocks in parallel
// (shorter ones take ~100 us serially: less than four fork/joins cost on a busy
// machine).
constexpr int64_t kParallelDedup = int64_t(1) << 17;
constexpr int64_t kDedupBlocks = 16;

template <class I>
void dedup_rows(const I* __restrict idx, int64_t n, int64_t n_rows, SparseRows& s) {
  s.rows.clear();
  s.order.clear();
  s.start.assign(1, 0);
  if (n == 0) return;
  s.order.resize(static_cast<size_t>(n));
  constexpr int64_t kPosLimit = int64_t(1) << 32;
  if (n >= kPosLimit || n_rows > kPosLimit) {
    std::vector<std::pair<int64_t, int64_t>> pairs(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pairs[i] = {static_cast<int64_t>(idx[i]), i};
    std::sort(pairs.begin(), pairs.end());
    for (int64_t i = 0; i < n; ++i) {
      if (i == 0 || pairs[i].first != pairs[i - 1].first) {
        if (i > 0) s.start.push_back(i);
        s.rows.push_back(pairs[i].first);
      }
      s.order[i] = pairs[i].second;
    }
    s.start.push_back(n);
    return;
  }
  std::vector<uint64_t>& a = s.keys_a;
  std::vector<uint64_t>& b = s.keys_b;
  a.resize(static_cast<size_t>(n));
  b.resize(static_cast<size_t>(n));
  bool sorted = true;
  for (int64_t i = 0; i < n; ++i) {
    a[i] = (static_cast<uint64_t>(idx[i]) << 32) | static_cast<uint64_t>(i);
    if (i > 0 && idx[i] < idx[i - 1]) sorted = false;
  }
  if (!sorted) {
    int bits = 0;
    while ((int64_t(1) << bits) < n_rows) ++bits;
    const int passes = (bits + 10) / 11;
    const int digit = passes > 0 ? (bits + passes - 1) / passes : 0;
    const uint64_t mask = (uint64_t(1) << digit) - 1;
    const size_t buckets = size_t(1) << digit;
    // Fixed blocks of the input, each histogrammed and scattered by one
    // thread; block b's copies of a digit go after those of blocks < b, so
    // the sort stays stable and its result independent of the thread count.
    const int64_t n_blocks = n >= kParallelDedup ? kDedupBlocks : 1;
    const int64_t block = (n + n_blocks - 1) / n_blocks;
    std::vector<int64_t> counts(static_cast<size_t>(n_blocks) * buckets);
    for (int p = 0; p < passes; ++p) {
      const int shift = 32 + p * digit;
      std::fill(counts.begin(), counts.end(), 0);
      parallel_for(n_blocks, [&](int64_t blk) {
        int64_t* __restrict c = counts.data() + blk * static_cast<int64_t>(buckets);
        const int64_t end = std::min(n, (blk + 1) * block);
        for (int64_t i = blk * block; i < end; ++i) ++c[(a[i] >> shift) & mask];
      });
      int64_t running = 0;
      for (size_t dgt = 0; dgt < buckets; ++dgt) {
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
          int64_t& c = counts[blk * static_cast<int64_t>(buckets) + dgt];
          const int64_t here = c;
          c = running;
          running += here;
        }
      }
      parallel_for(n_blocks, [&](int64_t blk) {
        int64_t* __restrict c = counts.data() + blk * static_cast<int64_t>(buckets);
        const int64_t end = std::min(n, (blk + 1) * block);
        for (int64_t i = blk * block; i < end; ++i) b[c[(a[i] >> shift) & mask]++] = a[i];
      });
      std::swap(a, b);
    }
  }
  uint64_t previous = ~uint64_t(0);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t row = a[i] >> 32;
    if (row != previous) {
      if (i > 0) s.start.push_back(i);
      s.rows.push_back(static_cast<int64_t>(row));
      previous = row;
    }
    s.order[i] = static_cast<int64_t>(a[i] & 0xFFFFFFFFu);
  }
  s.start.push_back(n);
}

}  // namespace

void dedup(const TensorStep& ts, int64_t n_rows, SparseRows& s) {
  if (ts.index_bytes == 4) {
    dedup_rows(static_cast<const int32_t*>(ts.indices), ts.n_indices, n_rows, s);
  } else {
    dedup_rows(static_cast<const int64_t*>(ts.indices), ts.n_indices, n_rows, s);
  }
}

}  // namespace adagrad
