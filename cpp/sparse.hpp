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
struct SparseRows {
  std::vector<int64_t> rows;
  std::vector<int64_t> start;  // rows.size() + 1 offsets into order
  std::vector<int64_t> order;
  std::vector<uint64_t> keys_a, keys_b;  // radix-sort scratch, reused by every step
  int64_t count() const { return static_cast<int64_t>(rows.size()); }
};

}  // namespace adagrad
