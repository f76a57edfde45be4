#include "team_self_test.hpp"

#include <atomic>
#include <stdexcept>
#include <thread>

#include "parallel.hpp"

namespace adagrad {
namespace {

constexpr int64_t kTasks = 64;

// Every task runs exactly once, whoever runs it.
bool all_tasks_run_once() {
  std::vector<std::atomic<int>> runs(kTasks);
  parallel_for(kTasks, [&](int64_t task) { runs[task].fetch_add(1); });
  for (const std::atomic<int>& r : runs) {
    if (r.load() != 1) return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> team_self_test() {
  std::vector<std::string> failures;
  if (!all_tasks_run_once()) failures.push_back("a plain loop did not run every task once");

  // A task that throws: the caller gets the exception, and the team still works.
  std::atomic<int64_t> started{0};
  bool rethrown = false;
  try {
    parallel_for(kTasks, [&](int64_t task) {
      started.fetch_add(1);
      if (task == 3) throw std::runtime_error("task 3");
    });
  } catch (const std::runtime_error& e) {
    rethrown = std::string(e.what()) == "task 3";
  }
  if (!rethrown) failures.push_back("a task's exception did not reach the caller");
  // On one thread the tasks run in order, so exactly tasks 0-3 started (with
  // helpers, tasks they took before the throw may run too).
  if (get_num_threads() == 1 && started.load() != 4) {
    failures.push_back("tasks started after one threw");
  }
  if (!all_tasks_run_once()) failures.push_back("the team did not recover after an exception");

  // A loop inside a task runs on that task's thread, and every inner task runs once.
  std::atomic<int> wrong_thread{0}, inner_runs{0};
  parallel_for(8, [&](int64_t) {
    const std::thread::id outer = std::this_thread::get_id();
    parallel_for(8, [&](int64_t) {
      inner_runs.fetch_add(1);
      if (std::this_thread::get_id() != outer) wrong_thread.fetch_add(1);
    });
  });
  if (inner_runs.load() != 64) failures.push_back("a nested loop did not run every task");
  if (wrong_thread.load() != 0) failures.push_back("a nested loop left its task's thread");
  return failures;
}

}  // namespace adagrad
