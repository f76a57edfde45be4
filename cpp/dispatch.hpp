// Run-time choice of the kernel set compiled for the best ISA the CPU has.
#pragma once

#include <string>
#include <vector>

#include "kernels.hpp"

namespace adagrad {

struct Kernels {
  const char* isa;
  DenseItemFn dense_item;
  ReduceItemFn reduce_item;
  SparseRowsFn sparse_rows;
  SparseReduceRowsFn sparse_reduce_rows;
  SparseGatherFn sparse_gather;
  RowwiseRowsFn rowwise_rows;
  ProbeItemFn probe_item;
};

// The active kernel set: the best supported ISA, or the one named by the
// ADAGRAD_NATIVE_ISA environment variable at import, or by select_isa().
const Kernels& kernels();

// ISAs compiled into this build that this CPU can run, best first.
std::vector<std::string> available_isas();

// Selects an ISA by name ("auto" for the best one). Returns false, changing
// nothing, when that ISA is not compiled in or not supported by this CPU.
bool select_isa(const std::string& name);

}  // namespace adagrad
