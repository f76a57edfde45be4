// The flat work list, and the one parallel region that walks it and every
// other parallel loop.
#pragma once

#include <cstdint>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace adagrad {

// Elements per task: kChunk for large steps; smaller ones (down to kMinChunk)
// so that a small model still splits into about kTargetTasks tasks. Derived
// from the sizes only, never from the thread count, so the chunking, and with
// it every reduction, is the same for any thread count.
constexpr int64_t kChunk = 16384;
constexpr int64_t kMinChunk = 2048;
constexpr int64_t kTargetTasks = 8;
// Below this many elements a step is one task on the calling thread: its
// compute takes a few microseconds, less than waking a second thread.
constexpr int64_t kSerialBelow = 16384;
// The most threads a step may use: far more than any CPU this runs on, far
// fewer than the stacks of a team can exhaust memory or the OpenMP runtime
// gives up (100,000 overflowed the stack, 2**31-1 made libgomp exit).
constexpr int kMaxThreads = 1024;

struct WorkItem {
  int32_t tensor;
  int64_t begin;
  int64_t end;
};

// Tensors are cut into items of at most `chunk` elements; consecutive items
// are packed into tasks of about `chunk` elements, so tiny tensors share a task.
struct WorkList {
  int64_t chunk = kChunk;
  std::vector<WorkItem> items;
  std::vector<int64_t> task_begin;  // n_tasks + 1 offsets into items
  int64_t total = 0;
  int64_t n_tasks() const { return static_cast<int64_t>(task_begin.size()) - 1; }
};

// The item size for tensors of these sizes (from the sizes alone).
int64_t work_chunk(const std::vector<int64_t>& sizes);

// Items of `chunk` elements (0: work_chunk(sizes)). A shard of a model that
// starts on item boundaries and uses the whole model's chunk gets exactly the
// items one process would, and with them the same partial sums.
WorkList make_work_list(const std::vector<int64_t>& sizes, int64_t chunk = 0);

// The element counts (`.size`) of a list of tensors, for make_work_list.
template <class Tensor>
std::vector<int64_t> sizes_of(const std::vector<Tensor>& tensors) {
  std::vector<int64_t> sizes;
  sizes.reserve(tensors.size());
  for (const Tensor& t : tensors) sizes.push_back(t.size);
  return sizes;
}

int get_num_threads();
void set_num_threads(int n);
bool openmp_enabled();

// The floating-point control state of a thread (x86: MXCSR's modes; elsewhere
// nothing), carried from the caller to the threads of a parallel region.
struct FloatModes {
#if defined(__x86_64__) || defined(__i386__)
  static constexpr unsigned kModeBits = 0xFFC0;  // FTZ, rounding, masks, DAZ; not the flags
  unsigned csr;
  static FloatModes of_this_thread() { return {_mm_getcsr() & kModeBits}; }
  void apply_to_this_thread() const { _mm_setcsr((_mm_getcsr() & ~kModeBits) | csr); }
#else
  static FloatModes of_this_thread() { return {}; }
  void apply_to_this_thread() const {}
#endif
};

// Calls fn(task) for every task in [0, n_tasks), the tasks split over the
// threads in fixed blocks. The one parallel region of the code base: every
// parallel loop goes through it. With one thread or one task it runs on the
// calling thread without opening a region (that costs microseconds).
template <class Fn>
void parallel_for(int64_t n_tasks, Fn&& fn) {
  const int threads = get_num_threads();
  if (threads <= 1 || n_tasks <= 1) {
    for (int64_t task = 0; task < n_tasks; ++task) fn(task);
    return;
  }
  // The workers compute with the caller's floating-point modes (flush-to-zero,
  // denormals-are-zero, rounding), set whenever the caller chose them.
  const FloatModes modes = FloatModes::of_this_thread();
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
  {
    modes.apply_to_this_thread();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (int64_t task = 0; task < n_tasks; ++task) fn(task);
  }
}

// Calls fn(item_index) for every item, tasks spread over the threads.
template <class Fn>
void for_each_item(const WorkList& work, Fn&& fn) {
  parallel_for(work.n_tasks(), [&](int64_t task) {
    for (int64_t i = work.task_begin[task]; i < work.task_begin[task + 1]; ++i) fn(i);
  });
}

}  // namespace adagrad
