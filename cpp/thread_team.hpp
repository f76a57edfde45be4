// The threads of a step: a persistent team that never makes the caller wait
// for a thread that has not started.
//
// The calling thread starts on the task list at once, from its front; helper
// threads join when the scheduler runs them and take tasks from its back. So a
// step whose helpers are descheduled (another process holds their cores)
// finishes in about the time of one thread, instead of waiting a time slice
// at a barrier. Which
// thread runs a task never changes a result: the tasks are fixed and every
// reduction is stored per task and folded in task order by the caller.
#pragma once

#include <cstdint>

namespace adagrad {

// The floating-point control state of a thread (x86: MXCSR's modes; elsewhere
// nothing), carried from the caller to the threads that help it.
struct FloatModes {
  unsigned csr = 0;
  static FloatModes of_this_thread();
  void apply_to_this_thread() const;
};

using TaskFn = void (*)(void* context, int64_t task);

// Runs fn(context, task) for every task in [0, n_tasks) on the calling thread
// and up to `helpers` team threads, and returns when all have run. Helpers
// compute with the caller's FloatModes. While another caller's job holds the
// team (two Python threads stepping at once), the tasks run on the caller
// alone, as does a loop started inside a task. The first exception a task
// throws is rethrown here; as on one thread, no task starts after it.
void run_on_team(int64_t n_tasks, int helpers, TaskFn fn, void* context);

// A heads-up from a caller that will start a parallel loop after some serial
// work (the de-duplication of a sparse gradient): sleeping team threads wake
// and spin for it, so they are there when the loop starts.
void expect_parallel_loop(int helpers);

}  // namespace adagrad
