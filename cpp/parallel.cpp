#include "parallel.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <thread>

namespace adagrad {

int64_t work_chunk(const std::vector<int64_t>& sizes) {
  int64_t total = 0;
  for (int64_t size : sizes) total += size;
  constexpr int64_t kAlign = 256;  // whole kernel blocks, cache-line aligned starts
  const int64_t wanted = (total / kTargetTasks + kAlign - 1) / kAlign * kAlign;
  return total < kSerialBelow ? std::max<int64_t>(total, 1) : std::clamp(wanted, kMinChunk, kChunk);
}

WorkList make_work_list(const std::vector<int64_t>& sizes, int64_t chunk) {
  WorkList work;
  for (int64_t size : sizes) work.total += size;
  if (chunk <= 0) chunk = work_chunk(sizes);
  work.chunk = chunk;
  for (size_t t = 0; t < sizes.size(); ++t) {
    for (int64_t b = 0; b < sizes[t]; b += chunk) {
      work.items.push_back({static_cast<int32_t>(t), b, std::min(sizes[t], b + chunk)});
    }
  }
  work.task_begin.push_back(0);
  int64_t filled = 0;
  for (size_t i = 0; i < work.items.size(); ++i) {
    filled += work.items[i].end - work.items[i].begin;
    if (filled >= chunk) {
      work.task_begin.push_back(static_cast<int64_t>(i) + 1);
      filled = 0;
    }
  }
  if (work.task_begin.back() != static_cast<int64_t>(work.items.size())) {
    work.task_begin.push_back(static_cast<int64_t>(work.items.size()));
  }
  return work;
}

namespace {

std::string& env_warning() {
  static std::string warning;
  return warning;
}

int cpu_count() {
#if defined(__linux__)
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) == 0) {
    return std::clamp(CPU_COUNT(&cpus), 1, kMaxThreads);
  }
#endif
  return std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, kMaxThreads);
}

// OMP_NUM_THREADS as OpenMP reads it: a positive integer, or a list ("4,2")
// whose first entry is this level's; spaces around it are allowed. Anything
// else is ignored with a warning, and a count above kMaxThreads is capped.
int default_threads() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  const char* p = env;
  while (p != nullptr && std::isspace(static_cast<unsigned char>(*p))) ++p;
  if (p == nullptr || *p == '\0') return cpu_count();
  char* end = nullptr;
  errno = 0;
  const long n = std::isdigit(static_cast<unsigned char>(*p)) ? std::strtol(p, &end, 10) : 0;
  while (end != nullptr && std::isspace(static_cast<unsigned char>(*end))) ++end;
  const bool number = end != nullptr && (*end == '\0' || *end == ',');
  if (number && n >= 1 && n <= kMaxThreads && errno == 0) return static_cast<int>(n);
  if (number && n > kMaxThreads) {
    env_warning() = std::string("OMP_NUM_THREADS='") + env + "' is more than the " +
                    std::to_string(kMaxThreads) + " threads a step may use; using " +
                    std::to_string(kMaxThreads) + ".";
    return kMaxThreads;
  }
  const int cpus = cpu_count();
  env_warning() = std::string("OMP_NUM_THREADS='") + env +
                  "' is not a thread count (a positive integer, or a list such as '4,2' whose "
                  "first entry is used); using the " +
                  std::to_string(cpus) + " CPUs this process may run on.";
  return cpus;
}

std::atomic<int> g_threads{default_threads()};

}  // namespace

const std::string& threads_env_warning() { return env_warning(); }

int get_num_threads() { return g_threads.load(std::memory_order_relaxed); }
void set_num_threads(int n) {
  g_threads.store(std::clamp(n, 1, kMaxThreads), std::memory_order_relaxed);
}

}  // namespace adagrad
