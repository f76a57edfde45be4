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

#define ADAGRAD_DECLARE_KERNELS(ns)                                                       \
  namespace ns {                                                                          \
  void dense_item(const TensorSlots&, const TensorStep&, const StepPlan&, int64_t, int64_t); \
  ReduceResult reduce_item(const TensorSlots&, const TensorStep&, const StepPlan&, int64_t,  \
                           int64_t);                                                      \
  }

ADAGRAD_DECLARE_KERNELS(isa_baseline)
ADAGRAD_DECLARE_KERNELS(isa_avx2)
ADAGRAD_DECLARE_KERNELS(isa_avx512)

}  // namespace adagrad
