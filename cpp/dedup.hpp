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

// What an update in index order needs of dedup() (SparseRows::positions_only),
// when at least half of the positions of ts.indices are single copies; else
// returns false, and dedup() must run. The same slot, distinct, multi_count and
// multi_copies as dedup() gives, at a fraction of its cost on such ids: a pass
// over the ids with two bits per table row (kept in `s`), then a sort of the
// repeated rows' positions only.
bool dedup_by_position(const TensorStep& ts, int64_t n_rows, SparseRows& s);

}  // namespace adagrad
