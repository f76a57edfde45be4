// Row-sparse gradients: the distinct rows of one sparse gradient after
// de-duplication (dedup.hpp), as the sparse kernels read them.
#pragma once

#include <cstdint>
#include <vector>

namespace adagrad {

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
struct SparseRows {
  std::vector<int64_t> rows;
  std::vector<int64_t> start;  // rows.size() + 1 offsets into order
  std::vector<int64_t> order;
  std::vector<int64_t> multi;  // per distinct row: its index among the multi rows, or -1
  // Per position i of the index list: 2 * the multi index of its row, + 1 when i
  // is the row's first copy; -1 when its row has one copy.
  std::vector<int64_t> slot;
  int64_t multi_count = 0;
  std::vector<unsigned char> sums;       // the multi rows' sums
  std::vector<uint64_t> keys_a, keys_b;  // radix-sort scratch, reused by every step
  int64_t count() const { return static_cast<int64_t>(rows.size()); }
};

}  // namespace adagrad
