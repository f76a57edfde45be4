#include "dispatch.hpp"

#include <atomic>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace adagrad {

// ADAGRAD_COMPILED_ISAS (CMakeLists.txt) lists the ISAs built into this
// module, best first, as ADAGRAD_ISA(name) ADAGRAD_ISA(name) ...; each one's
// kernel set is defined by its kernel_set.cpp.
#define ADAGRAD_ISA(name)            \
  namespace isa_##name {             \
    extern const Kernels kernel_set; \
  }
ADAGRAD_COMPILED_ISAS
#undef ADAGRAD_ISA

namespace {

#if defined(__x86_64__) || defined(__i386__)
struct X86Features {
  bool avx2 = false;    // with FMA and F16C, and the OS saves the YMM registers
  bool avx512 = false;  // F, VL, BW and DQ, and the OS saves the ZMM and opmask registers
};

// Read with cpuid and xgetbv, as GCC's __builtin_cpu_supports does: the compiler
// runtime of zig, which builds the release wheels, answers false to every feature.
X86Features read_x86_features() {
  X86Features f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return f;
  const bool fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
  const bool f16c = (c >> 29) & 1;
  if (!(osxsave && avx)) return f;
  unsigned xcr0 = 0, xcr0_high = 0;
  __asm__("xgetbv" : "=a"(xcr0), "=d"(xcr0_high) : "c"(0));
  const bool ymm_state = (xcr0 & 0x06u) == 0x06u;  // SSE and AVX state
  const bool zmm_state = (xcr0 & 0xE6u) == 0xE6u;  // and opmask, ZMM0-15 upper halves, ZMM16-31
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return f;
  const bool avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1;
  const bool avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
  f.avx2 = ymm_state && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_state && avx512f && avx512vl && avx512bw && avx512dq;
  return f;
}
#endif

// Every flag an ISA's kernels are compiled with (ADAGRAD_FLAGS_* in CMakeLists.txt).
bool cpu_has(const std::string& isa) {
#if defined(__x86_64__) || defined(__i386__)
  static const X86Features features = read_x86_features();
  if (isa == "avx2") return features.avx2;
  if (isa == "avx512") return features.avx512;
#endif
  return isa == "baseline";
}

// Best first.
#define ADAGRAD_ISA(name) &isa_##name::kernel_set,
const std::vector<const Kernels*>& compiled() {
  static const std::vector<const Kernels*> all = {ADAGRAD_COMPILED_ISAS};
  return all;
}
#undef ADAGRAD_ISA

const Kernels* find(const std::string& name) {
  for (const Kernels* k : compiled()) {
    if ((name == "auto" || name == k->isa) && cpu_has(k->isa)) return k;
  }
  return nullptr;
}

std::string& env_warning() {
  static std::string warning;
  return warning;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

// ADAGRAD_NATIVE_ISA names the kernels to use ("auto" or unset: the best this
// CPU runs). A name this build does not have, or this CPU cannot run, falls
// back to "auto" with a warning that names the valid values.
const Kernels* initial() {
  const char* env = std::getenv("ADAGRAD_NATIVE_ISA");
  const Kernels* best = find("auto");
  if (env == nullptr || *env == '\0') return best;
  if (const Kernels* chosen = find(env)) return chosen;
  std::vector<std::string> built;
  bool compiled_in = false;
  for (const Kernels* k : compiled()) {
    built.emplace_back(k->isa);
    compiled_in = compiled_in || built.back() == env;
  }
  env_warning() = std::string("ADAGRAD_NATIVE_ISA='") + env + "' " +
                  (compiled_in ? "is not supported by this CPU"
                               : "is not an ISA of this build (auto, " + joined(built) + ")") +
                  "; this CPU runs auto, " + joined(available_isas()) + ". Using auto (" +
                  best->isa + ").";
  return best;
}

std::atomic<const Kernels*> g_active{initial()};

}  // namespace

const std::string& isa_env_warning() { return env_warning(); }

const Kernels& kernels() { return *g_active.load(std::memory_order_acquire); }

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const Kernels* k : compiled()) {
    if (cpu_has(k->isa)) names.emplace_back(k->isa);
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
