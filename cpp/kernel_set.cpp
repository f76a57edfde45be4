// This ISA's kernel set, for dispatch.cpp: every kernel of the list, compiled
// once per ISA like the kernels themselves. Addresses only, so the table is
// constant-initialized: no code built for this ISA runs before dispatch.cpp
// has checked the CPU.
#include "dispatch.hpp"
#include "kernel_common.hpp"

namespace adagrad::ADAGRAD_ISA_NS {

#define ADAGRAD_KERNEL_ADDRESS(name, ret, params) name,
extern const Kernels kernel_set = {ADAGRAD_ISA_NAME, ADAGRAD_KERNELS(ADAGRAD_KERNEL_ADDRESS)};
#undef ADAGRAD_KERNEL_ADDRESS

}  // namespace adagrad::ADAGRAD_ISA_NS
