// Run-time choice of the kernel set compiled for the best ISA the CPU has.
#pragma once

#include <string>
#include <vector>

#include "kernels.hpp"

namespace adagrad {

// One ISA's kernels: a pointer per entry of ADAGRAD_KERNELS. Each ISA defines
// its own as isa_<name>::kernel_set (kernel_set.cpp).
struct Kernels {
  const char* isa;
#define ADAGRAD_KERNEL_POINTER(name, ret, params) ret(*name) params;
  ADAGRAD_KERNELS(ADAGRAD_KERNEL_POINTER)
#undef ADAGRAD_KERNEL_POINTER
};

// The active kernel set: the best supported ISA, or the one named by the
// ADAGRAD_NATIVE_ISA environment variable at import, or by select_isa().
const Kernels& kernels();

// Why ADAGRAD_NATIVE_ISA was not followed at import (empty when it was, or unset).
const std::string& isa_env_warning();

// ISAs compiled into this build that this CPU can run, best first.
std::vector<std::string> available_isas();

// Selects an ISA by name ("auto" for the best one). Returns false, changing
// nothing, when that ISA is not compiled in or not supported by this CPU.
bool select_isa(const std::string& name);

}  // namespace adagrad
