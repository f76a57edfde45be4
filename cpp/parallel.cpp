#include "parallel.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
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
int default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {  // "4" or "4,2": the first level
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && n >= 1) return static_cast<int>(std::min<long>(n, kMaxThreads));
  }
#if defined(__linux__)
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) == 0) {
    return std::clamp(CPU_COUNT(&cpus), 1, kMaxThreads);
  }
#endif
  return std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, kMaxThreads);
}
std::atomic<int> g_threads{default_threads()};
}  // namespace

int get_num_threads() { return g_threads.load(std::memory_order_relaxed); }
void set_num_threads(int n) {
  g_threads.store(std::clamp(n, 1, kMaxThreads), std::memory_order_relaxed);
}

}  // namespace adagrad
