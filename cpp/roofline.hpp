// The memory-roofline probe for benchmarks, built only with -DADAGRAD_PROBE=ON
// (never in the package users install). It moves the bytes of a step with no
// real math: every array is read; read-write arrays are written back unchanged.
// StreamProbe streams whole tensors through the step's work list; RowsProbe
// touches chosen rows of tables in place, as a sparse step does. Both run
// through the step's parallel loop, threads and ISA.
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

// A table whose rows a RowsProbe reads and writes back: row r is the row_len
// items at data + r * row_len * itemsize.
struct ProbeTable {
  void* data = nullptr;
  int itemsize = 4;  // 2, 4 or 8
  int64_t row_len = 0;
};

// The probe's loops, compiled once per ISA (roofline_kernel.cpp).
#define ADAGRAD_PROBE_KERNELS(X)                                                    \
  /* Moves the bytes of elements [begin, end) of one tensor's arrays. */            \
  X(probe_item, void, (const ProbeTensor& t, int64_t begin, int64_t end))           \
  /* Reads and writes back rows[0..n) of every table (rows ascending, distinct). */ \
  X(probe_rows, void, (const std::vector<ProbeTable>& tables, const int64_t* rows, int64_t n))

struct ProbeKernels {
  const char* isa;
#define ADAGRAD_PROBE_POINTER(name, ret, params) ret(*name) params;
  ADAGRAD_PROBE_KERNELS(ADAGRAD_PROBE_POINTER)
#undef ADAGRAD_PROBE_POINTER
};

class StreamProbe {
 public:
  explicit StreamProbe(std::vector<ProbeTensor> tensors);
  void run() const;  // one pass over every tensor, as one step's pass would make

 private:
  std::vector<ProbeTensor> tensors_;
  WorkList work_;
};

class RowsProbe {
 public:
  RowsProbe(std::vector<ProbeTable> tables, std::vector<int64_t> rows);
  void run() const;  // every row of every table read and written back once

 private:
  std::vector<ProbeTable> tables_;
  std::vector<int64_t> rows_;
  int64_t rows_per_task_;
};

}  // namespace adagrad
