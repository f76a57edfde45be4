// The memory-roofline probe for benchmarks: moves the bytes of a step over the
// same tensors, through the same chunk list and parallel loop, with no real
// math. Every array is read; read-write arrays are written back unchanged.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel.hpp"

namespace adagrad {

struct ProbeArray {
  void* data = nullptr;
  int itemsize = 4;  // 2, 4 or 8
  bool write = false;
};

// The arrays of one tensor: all have `size` elements (their itemsizes may differ,
// e.g. a float16 parameter with a float32 accumulator).
struct ProbeTensor {
  std::vector<ProbeArray> arrays;
  int64_t size = 0;
};

class StreamProbe {
 public:
  explicit StreamProbe(std::vector<ProbeTensor> tensors);
  void run() const;  // one pass over every tensor, as one step's pass would make

 private:
  std::vector<ProbeTensor> tensors_;
  WorkList work_;
};

}  // namespace adagrad
