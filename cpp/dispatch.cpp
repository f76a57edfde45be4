#include "dispatch.hpp"

#include <atomic>
#include <cstdlib>

namespace adagrad {
namespace {

bool cpu_has(const std::string& isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == "avx512") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  }
#endif
  return isa == "baseline";
}

#define ADAGRAD_KERNEL_SET(ns)                                                        \
  Kernels {                                                                           \
    #ns, isa_##ns::dense_item, isa_##ns::reduce_item, isa_##ns::sparse_rows,           \
        isa_##ns::sparse_reduce_rows, isa_##ns::sparse_gather, isa_##ns::rowwise_rows,   \
        isa_##ns::probe_item                                                          \
  }

// Best first.
const std::vector<Kernels>& compiled() {
  static const std::vector<Kernels> all = {
#if defined(ADAGRAD_HAVE_AVX512)
      ADAGRAD_KERNEL_SET(avx512),
#endif
#if defined(ADAGRAD_HAVE_AVX2)
      ADAGRAD_KERNEL_SET(avx2),
#endif
      ADAGRAD_KERNEL_SET(baseline),
  };
  return all;
}

const Kernels* find(const std::string& name) {
  for (const Kernels& k : compiled()) {
    if ((name == "auto" || name == k.isa) && cpu_has(k.isa)) return &k;
  }
  return nullptr;
}

const Kernels* initial() {
  const char* env = std::getenv("ADAGRAD_NATIVE_ISA");
  const Kernels* chosen = env != nullptr ? find(env) : nullptr;
  return chosen != nullptr ? chosen : find("auto");
}

std::atomic<const Kernels*> g_active{initial()};

}  // namespace

const Kernels& kernels() { return *g_active.load(std::memory_order_acquire); }

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const Kernels& k : compiled()) {
    if (cpu_has(k.isa)) names.emplace_back(k.isa);
  }
  return names;
}

bool select_isa(const std::string& name) {
  const Kernels* k = find(name);
  if (k == nullptr) return false;
  g_active.store(k, std::memory_order_release);
  return true;
}

}  // namespace adagrad
