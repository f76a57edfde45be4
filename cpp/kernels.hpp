// Entry points of the element-wise kernels. Each is compiled once per ISA
// (namespace isa_<name>); dispatch.cpp picks one set at run time.
#pragma once

#include <cstdint>

#include "step.hpp"

namespace adagrad {

struct ReduceResult {
  double sum_squares;
  bool finite;
};

// Pass 2: the fused update of elements [begin, end) of one tensor.
using DenseItemFn = void (*)(const TensorSlots&, const TensorStep&, const StepPlan&, int64_t,
                             int64_t);
// Pass 1: sum of squares (in float64, in a fixed order) and finiteness of the
// gradient that the update will see before clipping, over [begin, end).
using ReduceItemFn = ReduceResult (*)(const TensorSlots&, const TensorStep&, const StepPlan&,
                                      int64_t, int64_t);

struct SparseRows;
struct ProbeTensor;

// Sparse gradients (sparse.cpp). Row mode: the update of distinct rows
// [d0, d1) of a de-duplicated sparse gradient (copies summed in index order).
using SparseRowsFn = void (*)(const TensorSlots&, const TensorStep&, const SparseRows&,
                              const StepPlan&, int64_t, int64_t);
// Row mode, pass 1: one ReduceResult per distinct row in [d0, d1), into out.
using SparseReduceRowsFn = void (*)(const TensorSlots&, const TensorStep&, const SparseRows&,
                                    const StepPlan&, int64_t, int64_t, ReduceResult*);
// Full pass: writes the dense-equivalent gradient of elements [begin, end) into
// a zero-filled buffer of the parameter's dtype.
using SparseGatherFn = void (*)(const TensorSlots&, const TensorStep&, const SparseRows&,
                                int64_t, int64_t, void*);
// Row-wise Adagrad update of rows [r0, r1), whose gradient rows are
// consecutive at `grad_rows` (parameter dtype).
using RowwiseRowsFn = void (*)(const TensorSlots&, const TensorStep&, const StepPlan&, int64_t,
                               int64_t, const void*);

// Roofline probe (benchmarks): moves the bytes of elements [begin, end) of one
// tensor's arrays, leaving every value unchanged.
using ProbeItemFn = void (*)(const ProbeTensor&, int64_t, int64_t);

#define ADAGRAD_DECLARE_KERNELS(ns)                                                       \
  namespace ns {                                                                          \
  void dense_item(const TensorSlots&, const TensorStep&, const StepPlan&, int64_t, int64_t); \
  ReduceResult reduce_item(const TensorSlots&, const TensorStep&, const StepPlan&, int64_t,  \
                           int64_t);                                                      \
  void sparse_rows(const TensorSlots&, const TensorStep&, const SparseRows&, const StepPlan&, \
                   int64_t, int64_t);                                                     \
  void sparse_reduce_rows(const TensorSlots&, const TensorStep&, const SparseRows&,         \
                          const StepPlan&, int64_t, int64_t, ReduceResult*);              \
  void sparse_gather(const TensorSlots&, const TensorStep&, const SparseRows&, int64_t,     \
                     int64_t, void*);                                                     \
  void rowwise_rows(const TensorSlots&, const TensorStep&, const StepPlan&, int64_t, int64_t, \
                    const void*);                                                         \
  void probe_item(const ProbeTensor&, int64_t, int64_t);                                  \
  }

ADAGRAD_DECLARE_KERNELS(isa_baseline)
ADAGRAD_DECLARE_KERNELS(isa_avx2)
ADAGRAD_DECLARE_KERNELS(isa_avx512)

}  // namespace adagrad
