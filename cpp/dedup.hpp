// De-duplication of a row-sparse gradient's row ids (dedup.cpp, compiled once).
#pragma once

#include <cstdint>

#include "sparse.hpp"
#include "step.hpp"

namespace adagrad {

// Fills `s` with the distinct row ids of ts.indices (all in [0, n_rows)) and
// the positions of each one's copies, in index order. The result is fully
// determined by the indices, whatever the thread count.
void dedup(const TensorStep& ts, int64_t n_rows, SparseRows& s);

}  // namespace adagrad
