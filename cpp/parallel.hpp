// The flat work list, and the one parallel loop that walks it and every
// other parallel loop.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "thread_team.hpp"

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
// fewer than a team whose stacks exhaust memory (100,000 threads did).
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

// The thread count of a step (default: OMP_NUM_THREADS, else the CPUs this
// process may run on; at most kMaxThreads).
int get_num_threads();
void set_num_threads(int n);

// Why OMP_NUM_THREADS was not followed as given at import (empty when it was, or unset).
const std::string& threads_env_warning();

// Calls fn(task) for every task in [0, n_tasks) on the calling thread and the
// thread team (thread_team.hpp), which takes tasks as its threads arrive. The
// one parallel loop of the code base: every parallel loop goes through it.
// With one thread or one task it runs on the calling thread alone.
template <class Fn>
void parallel_for(int64_t n_tasks, Fn&& fn) {
  const int threads = get_num_threads();
  if (threads <= 1 || n_tasks <= 1) {
    for (int64_t task = 0; task < n_tasks; ++task) fn(task);
    return;
  }
  using F = std::remove_reference_t<Fn>;
  const TaskFn call = [](void* context, int64_t task) { (*static_cast<F*>(context))(task); };
  const int helpers = static_cast<int>(std::min<int64_t>(threads - 1, n_tasks - 1));
  run_on_team(n_tasks, helpers, call, const_cast<void*>(static_cast<const void*>(&fn)));
}

// Calls fn(item_index) for every item, tasks spread over the threads.
template <class Fn>
void for_each_item(const WorkList& work, Fn&& fn) {
  parallel_for(work.n_tasks(), [&](int64_t task) {
    for (int64_t i = work.task_begin[task]; i < work.task_begin[task + 1]; ++i) fn(i);
  });
}

}  // namespace adagrad
