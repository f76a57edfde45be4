// The memory-roofline probe for benchmarks: moves the same bytes per element
// as a step (reads, in-place read+writes) with no real math, through the same
// chunk list and parallel region as a step.
#pragma once

#include <cstdint>
#include <vector>

namespace adagrad {

// All arrays have `size` elements of `itemsize` bytes (2, 4 or 8). Every
// read_only array is read once; every read_write array is read and written
// back unchanged.
void stream_probe(const std::vector<const void*>& read_only,
                  const std::vector<void*>& read_write, int64_t size, int itemsize);

}  // namespace adagrad
