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

// Best first.
const std::vector<Kernels>& compiled() {
  static const std::vector<Kernels> all = {
#if defined(ADAGRAD_HAVE_AVX512)
      {"avx512", isa_avx512::dense_item, isa_avx512::reduce_item},
#endif
#if defined(ADAGRAD_HAVE_AVX2)
      {"avx2", isa_avx2::dense_item, isa_avx2::reduce_item},
#endif
      {"baseline", isa_baseline::dense_item, isa_baseline::reduce_item},
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
