// Row-sparse gradients: the distinct rows of one sparse gradient after
// de-duplication (dedup.hpp), as the sparse kernels read them.
#pragma once

#include <cstdint>
#include <vector>

namespace adagrad {

// Whether at least half of n_indices positions are single copies, given the
// distinct rows and how many of them have more than one copy.
inline bool mostly_single_copies(int64_t distinct, int64_t multi, int64_t n_indices) {
  return 2 * (distinct - multi) >= n_indices;
}

// The distinct row ids of one sparse gradient, ascending, and for each of them
// the positions of its copies in the index list, in index order: the copies of
// row rows[d] are values[order[start[d]]], ..., values[order[start[d + 1] - 1]].
// Summing them in that order makes the result independent of the thread count.
//
// A row with one copy uses its values row as its gradient. The rows with more
// (the "multi" rows) have their copies summed once a step, before the update
// (the sparse_sums kernel), into `sums`: multi_count rows of row_len items of
// the parameter dtype. The summation streams the values in index order, so it
// needs, for every position, the multi row it adds to (`slot`).
//
// dedup() fills every field. dedup_by_position() fills only what an update in
// index order reads (slot, distinct, multi_count, multi_copies) and sets
// positions_only: rows, start, order and multi are then stale.
struct SparseRows {
  std::vector<int64_t> rows;
  std::vector<int64_t> start;  // rows.size() + 1 offsets into order
  std::vector<int64_t> order;
  std::vector<int64_t> multi;  // per distinct row: its index among the multi rows, or -1
  // Per position i of the index list: 2 * the multi index of its row, + 1 when i
  // is the row's first copy; -1 when its row has one copy.
  std::vector<int64_t> slot;
  int64_t distinct = 0;
  int64_t multi_count = 0;  // multi rows are numbered in row order
  // multi_count + 1 offsets: multi_copies[m] copies belong to multi rows before m.
  std::vector<int64_t> multi_copies;
  bool positions_only = false;
  // Whether the last index list had at least half of its positions single copies.
  bool last_mostly_single = true;
  std::vector<unsigned char> sums;       // the multi rows' sums
  std::vector<uint64_t> keys_a, keys_b;  // sort scratch, reused by every step
  // dedup_by_position's two bits per table row, all zero between steps.
  std::vector<uint64_t> row_bits;

  int64_t count() const { return distinct; }
  bool mostly_single(int64_t n_indices) const {
    return mostly_single_copies(distinct, multi_count, n_indices);
  }
};

}  // namespace adagrad
