// Entry points of the element-wise kernels: the one list of them. Each is
// compiled once per ISA (namespace isa_<name>, kernel_common.hpp); dispatch.cpp
// picks one ISA's set at run time.
#pragma once

#include <cstdint>

#include "step.hpp"

namespace adagrad {

struct ReduceResult {
  double sum_squares;
  bool finite;
};

struct SparseRows;

// X(name, return type, parameters) for every kernel.
#define ADAGRAD_KERNELS(X)                                                                        \
  /* Pass 2: the fused update of elements [begin, end) of one tensor. */                          \
  X(dense_item, void,                                                                             \
    (const TensorSlots& t, const TensorStep& ts, const StepPlan& plan, int64_t begin,             \
     int64_t end))                                                                                \
  /* Pass 1: sum of squares (in float64, in a fixed order) and finiteness of the gradient         \
     that the update will see before clipping, over [begin, end). */                              \
  X(reduce_item, ReduceResult,                                                                    \
    (const TensorSlots& t, const TensorStep& ts, const StepPlan& plan, int64_t begin,             \
     int64_t end))                                                                                \
  /* Sparse gradients: the sums of multi rows [m0, m1) of a de-duplicated sparse gradient         \
     (SparseRows: rows with more than one copy), into s.sums, which holds s.multi_count rows. */  \
  X(sparse_sums, void,                                                                            \
    (const TensorSlots& t, const TensorStep& ts, SparseRows& s, int64_t m0, int64_t m1))          \
  /* Sparse gradients, row mode: the update of distinct rows [d0, d1) of a de-duplicated          \
     sparse gradient, its multi rows summed (sparse_sums). */                                     \
  X(sparse_rows, void,                                                                            \
    (const TensorSlots& t, const TensorStep& ts, const SparseRows& s, const StepPlan& plan,       \
     int64_t d0, int64_t d1))                                                                     \
  /* Row mode, a sparse gradient whose rows are mostly single copies: the distinct rows           \
     whose first copy is at index positions [p0, p1), in index order. */                          \
  X(sparse_rows_in_index_order, void,                                                             \
    (const TensorSlots& t, const TensorStep& ts, const SparseRows& s, const StepPlan& plan,       \
     int64_t p0, int64_t p1))                                                                     \
  /* Row mode, pass 1: one ReduceResult per distinct row in [d0, d1), into out. */                \
  X(sparse_reduce_rows, void,                                                                     \
    (const TensorSlots& t, const TensorStep& ts, const SparseRows& s, const StepPlan& plan,       \
     int64_t d0, int64_t d1, ReduceResult* out))                                                  \
  /* Full pass: writes the dense-equivalent gradient of elements [begin, end) into a              \
     zero-filled buffer of the parameter's dtype. */                                              \
  X(sparse_gather, void,                                                                          \
    (const TensorSlots& t, const TensorStep& ts, const SparseRows& s, int64_t begin, int64_t end, \
     void* buf))                                                                                  \
  /* Row-wise Adagrad update of rows [r0, r1), whose gradient rows are consecutive at             \
     grad_rows (parameter dtype). */                                                              \
  X(rowwise_rows, void,                                                                           \
    (const TensorSlots& t, const TensorStep& ts, const StepPlan& plan, int64_t r0, int64_t r1,    \
     const void* grad_rows))

#define ADAGRAD_DECLARE_KERNEL(name, ret, params) ret name params;

}  // namespace adagrad
