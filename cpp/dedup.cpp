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

int64_t blocks_of(int64_t n) { return std::clamp<int64_t>(n / kDedupBlock, 1, kMaxDedupBlocks); }

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

// Sorts s.keys_a[0, n), pairs (row id << 32) | position of rows below n_rows,
// by row id, stably (s.keys_b, as long, is the other buffer of the passes).
void sort_by_row(SparseRows& s, int64_t n, int64_t n_rows) {
  int bits = 0;
  while ((int64_t(1) << bits) < n_rows) ++bits;
  const int passes = (bits + 10) / 11;
  const int digit = passes > 0 ? (bits + passes - 1) / passes : 0;
  const uint64_t mask = (uint64_t(1) << digit) - 1;
  std::vector<int64_t> counts;
  for (int p = 0; p < passes; ++p) {
    radix_pass(s.keys_a.data(), s.keys_b.data(), n, blocks_of(n), 32 + p * digit, mask, counts);
    std::swap(s.keys_a, s.keys_b);
  }
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
  s.distinct = distinct;
  s.multi_count = multi_before[n_blocks];
  s.positions_only = false;
  s.multi_copies.resize(static_cast<size_t>(s.multi_count) + 1);
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
    int64_t* __restrict multi_copies = s.multi_copies.data();
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
      // Before position i: k rows, m of them multi, the other k - m one copy each.
      if (has_more(i)) multi_copies[m] = i - (k - m);
      current = has_more(i) ? m++ : -1;
      multi[k++] = current;
      slot[p] = current >= 0 ? 2 * current + 1 : -1;
    }
  });
  s.start[distinct] = n;
  s.multi_copies[s.multi_count] = n - (distinct - s.multi_count);
}

// Whether a (row id, position) pair packs into the 64 bits of a sort key.
bool fits_keys(int64_t n, int64_t n_rows) {
  constexpr int64_t kPosLimit = int64_t(1) << 32;
  return n < kPosLimit && n_rows <= kPosLimit;
}

template <class I>
void dedup_rows(const I* __restrict idx, int64_t n, int64_t n_rows, SparseRows& s) {
  if (!fits_keys(n, n_rows)) {
    // Too many positions or rows to pack a pair into 64 bits.
    std::vector<std::pair<int64_t, int64_t>> pairs(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pairs[i] = {static_cast<int64_t>(idx[i]), i};
    std::sort(pairs.begin(), pairs.end());
    group_sorted(
        n, 1, [&](int64_t i) { return pairs[i].first; }, [&](int64_t i) { return pairs[i].second; },
        s);
    return;
  }
  const int64_t n_blocks = blocks_of(n);
  std::vector<uint64_t>& a = s.keys_a;
  a.resize(static_cast<size_t>(n));
  s.keys_b.resize(static_cast<size_t>(n));
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
  if (std::count(block_sorted.begin(), block_sorted.end(), 0) > 0) sort_by_row(s, n, n_rows);
  const uint64_t* keys = s.keys_a.data();
  group_sorted(
      n, n_blocks, [keys](int64_t i) { return static_cast<int64_t>(keys[i] >> 32); },
      [keys](int64_t i) { return static_cast<int64_t>(keys[i] & 0xFFFFFFFFu); }, s);
}

// dedup_by_position for ids of one width. Two bits per table row, in word
// pairs (one cache line holds both): "seen", then "seen again"; only the
// positions of rows seen again are then sorted. Nothing between the first bit
// set and the last one cleared allocates, so the bits are all zero again
// whenever this returns or throws.
template <class I>
bool positions_by_bitmap(const I* __restrict idx, int64_t n, int64_t n_rows, SparseRows& s) {
  if (!fits_keys(n, n_rows)) return false;
  const size_t words = 2 * static_cast<size_t>((n_rows + 63) / 64);
  if (s.row_bits.size() < words) s.row_bits.assign(words, 0);
  s.slot.resize(static_cast<size_t>(n));
  s.keys_a.resize(static_cast<size_t>(n));
  s.keys_b.resize(static_cast<size_t>(n));
  uint64_t* __restrict bits = s.row_bits.data();
  // Branch-free: on uniform ids a repeat is rare and would be mispredicted.
  int64_t repeats = 0, multi = 0;
  for (int64_t p = 0; p < n; ++p) {
    const uint64_t r = static_cast<uint64_t>(idx[p]);
    const uint64_t bit = uint64_t(1) << (r & 63);
    uint64_t* __restrict pair = bits + 2 * (r >> 6);
    const uint64_t was_seen = pair[0], was_repeated = pair[1];
    const uint64_t again = was_seen & bit;
    pair[0] = was_seen | bit;
    pair[1] = was_repeated | again;
    repeats += again != 0;
    multi += (again & ~was_repeated) != 0;
  }
  const int64_t distinct = n - repeats;
  if (!mostly_single_copies(distinct, multi, n)) {  // dedup() will sort them all
    for (int64_t p = 0; p < n; ++p) {
      uint64_t* __restrict pair = bits + 2 * (static_cast<uint64_t>(idx[p]) >> 6);
      pair[0] = 0;
      pair[1] = 0;
    }
    return false;
  }
  int64_t* __restrict slot = s.slot.data();
  uint64_t* __restrict keys = s.keys_a.data();
  int64_t copies = 0;  // of multi rows
  for (int64_t p = 0; p < n; ++p) {
    const uint64_t r = static_cast<uint64_t>(idx[p]);
    uint64_t* __restrict pair = bits + 2 * (r >> 6);
    pair[0] = 0;
    slot[p] = -1;
    if ((pair[1] >> (r & 63)) & 1) keys[copies++] = (r << 32) | static_cast<uint64_t>(p);
  }
  for (int64_t i = 0; i < copies; ++i) bits[2 * (keys[i] >> 38) + 1] = 0;
  sort_by_row(s, copies, n_rows);
  keys = s.keys_a.data();
  s.multi_copies.clear();
  for (int64_t i = 0; i < copies; ++i) {
    const int64_t p = static_cast<int64_t>(keys[i] & 0xFFFFFFFFu);
    const bool first = i == 0 || (keys[i] >> 32) != (keys[i - 1] >> 32);
    if (first) s.multi_copies.push_back(i);
    slot[p] = 2 * (static_cast<int64_t>(s.multi_copies.size()) - 1) + (first ? 1 : 0);
  }
  s.multi_count = static_cast<int64_t>(s.multi_copies.size());
  s.multi_copies.push_back(copies);
  s.distinct = distinct;
  s.positions_only = true;
  return true;
}

}  // namespace

bool dedup_by_position(const TensorStep& ts, int64_t n_rows, SparseRows& s) {
  return with_ids(
      ts, [&](const auto* ids) { return positions_by_bitmap(ids, ts.n_indices, n_rows, s); });
}

void dedup(const TensorStep& ts, int64_t n_rows, SparseRows& s) {
  with_ids(ts, [&](const auto* ids) { dedup_rows(ids, ts.n_indices, n_rows, s); });
}

}  // namespace adagrad
