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
// rows). A stable sort has one result, so the blocks the passes are cut into
// (each histogrammed and scattered by one task) never change it; they depend
// on the length alone. Lists shorter than two blocks run on the calling thread.
constexpr int64_t kDedupBlock = 16384;
constexpr int64_t kMaxDedupBlocks = 16;

// [begin, end) of block blk of n items cut into n_blocks.
inline std::pair<int64_t, int64_t> block_range(int64_t blk, int64_t n_blocks, int64_t n) {
  const int64_t size = (n + n_blocks - 1) / n_blocks;
  return {std::min(n, blk * size), std::min(n, (blk + 1) * size)};
}

// One stable pass over the digit at `shift`: a histogram per block, the offsets
// of digit d of block b after those of (d, blocks < b) and of all smaller digits,
// then each block scattered in order.
void radix_pass(const uint64_t* __restrict a, uint64_t* __restrict b, int64_t n, int64_t n_blocks,
                int shift, uint64_t mask, std::vector<int64_t>& counts) {
  const size_t buckets = static_cast<size_t>(mask) + 1;
  counts.assign(static_cast<size_t>(n_blocks) * buckets, 0);
  parallel_for(n_blocks, [&](int64_t blk) {
    int64_t* __restrict c = counts.data() + blk * static_cast<int64_t>(buckets);
    const auto [begin, end] = block_range(blk, n_blocks, n);
    for (int64_t i = begin; i < end; ++i) ++c[(a[i] >> shift) & mask];
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
    const auto [begin, end] = block_range(blk, n_blocks, n);
    for (int64_t i = begin; i < end; ++i) b[c[(a[i] >> shift) & mask]++] = a[i];
  });
}

// Groups (row id, position) pairs sorted by row id, stably: the distinct rows,
// where each one's copies start, the positions in order, and the multi rows
// (SparseRows::multi, SparseRows::slot), in one count and one write pass over
// blocks of pairs. `row(i)` and `pos(i)` read pair i.
template <class Row, class Pos>
void group_sorted(int64_t n, int64_t n_blocks, Row&& row, Pos&& pos, SparseRows& s) {
  const auto first_copy = [&](int64_t i) { return i == 0 || row(i) != row(i - 1); };
  const auto has_more = [&](int64_t i) { return i + 1 < n && row(i + 1) == row(i); };
  // Per block: the distinct rows and the multi rows whose first copy it holds.
  std::vector<int64_t> distinct_before(static_cast<size_t>(n_blocks) + 1, 0);
  std::vector<int64_t> multi_before(static_cast<size_t>(n_blocks) + 1, 0);
  parallel_for(n_blocks, [&](int64_t blk) {
    const auto [begin, end] = block_range(blk, n_blocks, n);
    int64_t distinct = 0, multi = 0;
    for (int64_t i = begin; i < end; ++i) {
      if (!first_copy(i)) continue;
      ++distinct;
      multi += has_more(i);
    }
    distinct_before[blk + 1] = distinct;
    multi_before[blk + 1] = multi;
  });
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    distinct_before[blk + 1] += distinct_before[blk];
    multi_before[blk + 1] += multi_before[blk];
  }
  const int64_t distinct = distinct_before[n_blocks];
  s.multi_count = multi_before[n_blocks];
  s.rows.resize(static_cast<size_t>(distinct));
  s.start.resize(static_cast<size_t>(distinct) + 1);
  s.multi.resize(static_cast<size_t>(distinct));
  s.order.resize(static_cast<size_t>(n));
  s.slot.resize(static_cast<size_t>(n));
  parallel_for(n_blocks, [&](int64_t blk) {
    const auto [begin, end] = block_range(blk, n_blocks, n);
    int64_t* __restrict rows = s.rows.data();
    int64_t* __restrict start = s.start.data();
    int64_t* __restrict multi = s.multi.data();
    int64_t* __restrict order = s.order.data();
    int64_t* __restrict slot = s.slot.data();
    int64_t k = distinct_before[blk], m = multi_before[blk];
    // The multi index of the row in progress: a row that began in an earlier
    // block and goes on here is the last multi row begun before this block.
    int64_t current = begin < end && !first_copy(begin) ? m - 1 : -1;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p = pos(i);
      order[i] = p;
      if (!first_copy(i)) {
        slot[p] = 2 * current;
        continue;
      }
      rows[k] = row(i);
      start[k] = i;
      current = has_more(i) ? m++ : -1;
      multi[k++] = current;
      slot[p] = current >= 0 ? 2 * current + 1 : -1;
    }
  });
  s.start[distinct] = n;
}

template <class I>
void dedup_rows(const I* __restrict idx, int64_t n, int64_t n_rows, SparseRows& s) {
  constexpr int64_t kPosLimit = int64_t(1) << 32;
  if (n >= kPosLimit || n_rows > kPosLimit) {
    // Too many positions or rows to pack a pair into 64 bits.
    std::vector<std::pair<int64_t, int64_t>> pairs(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pairs[i] = {static_cast<int64_t>(idx[i]), i};
    std::sort(pairs.begin(), pairs.end());
    group_sorted(
        n, 1, [&](int64_t i) { return pairs[i].first; }, [&](int64_t i) { return pairs[i].second; },
        s);
    return;
  }
  const int64_t n_blocks = std::clamp<int64_t>(n / kDedupBlock, 1, kMaxDedupBlocks);
  std::vector<uint64_t>& a = s.keys_a;
  std::vector<uint64_t>& b = s.keys_b;
  a.resize(static_cast<size_t>(n));
  b.resize(static_cast<size_t>(n));
  std::vector<unsigned char> block_sorted(static_cast<size_t>(n_blocks));
  parallel_for(n_blocks, [&](int64_t blk) {
    const auto [begin, end] = block_range(blk, n_blocks, n);
    uint64_t* __restrict keys = a.data();
    bool sorted = begin == 0 || idx[begin] >= idx[begin - 1];
    for (int64_t i = begin; i < end; ++i) {
      keys[i] = (static_cast<uint64_t>(idx[i]) << 32) | static_cast<uint64_t>(i);
      if (i > begin && idx[i] < idx[i - 1]) sorted = false;
    }
    block_sorted[blk] = sorted;
  });
  if (std::count(block_sorted.begin(), block_sorted.end(), 0) > 0) {
    int bits = 0;
    while ((int64_t(1) << bits) < n_rows) ++bits;
    const int passes = (bits + 10) / 11;
    const int digit = passes > 0 ? (bits + passes - 1) / passes : 0;
    const uint64_t mask = (uint64_t(1) << digit) - 1;
    std::vector<int64_t> counts;
    for (int p = 0; p < passes; ++p) {
      radix_pass(a.data(), b.data(), n, n_blocks, 32 + p * digit, mask, counts);
      std::swap(a, b);
    }
  }
  const uint64_t* keys = a.data();
  group_sorted(
      n, n_blocks, [keys](int64_t i) { return static_cast<int64_t>(keys[i] >> 32); },
      [keys](int64_t i) { return static_cast<int64_t>(keys[i] & 0xFFFFFFFFu); }, s);
}

}  // namespace

void dedup(const TensorStep& ts, int64_t n_rows, SparseRows& s) {
  with_ids(ts, [&](const auto* ids) { dedup_rows(ids, ts.n_indices, n_rows, s); });
}

}  // namespace adagrad
