#include "thread_team.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace adagrad {

#if defined(__x86_64__) || defined(__i386__)
namespace {
constexpr unsigned kModeBits = 0xFFC0;  // FTZ, rounding, exception masks, DAZ; not the flags
}  // namespace
FloatModes FloatModes::of_this_thread() { return {_mm_getcsr() & kModeBits}; }
void FloatModes::apply_to_this_thread() const { _mm_setcsr((_mm_getcsr() & ~kModeBits) | csr); }
#else
FloatModes FloatModes::of_this_thread() { return {}; }
void FloatModes::apply_to_this_thread() const {}
#endif

namespace {

// Set while a thread runs a job's tasks: a parallel loop inside a task (the
// de-duplication of one of several sparse gradients) then runs serially, on
// the thread it is on, instead of asking the team it is part of.
thread_local bool t_in_job = false;
struct InJob {
  InJob() { t_in_job = true; }
  ~InJob() { t_in_job = false; }
  InJob(const InJob&) = delete;
  InJob& operator=(const InJob&) = delete;
};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

class Team {
 public:
  Team() = default;
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;
  ~Team() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  // Wakes up to `helpers` sleeping threads to spin for a job that is coming.
  void heads_up(int helpers) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++heads_up_;
      heads_up_helpers_ = helpers;
    }
    wake_.notify_all();
  }

  // Runs the job with up to `helpers` team threads; false, with nothing run,
  // when another caller's job holds the team.
  bool run(int64_t n_tasks, int helpers, TaskFn fn, void* context) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    fn_ = fn;
    context_ = context;
    modes_ = FloatModes::of_this_thread();
    note_job_start();
    ends_.store(static_cast<uint64_t>(n_tasks) << 32, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      start_threads(helpers);
      helpers_.store(std::min<int>(helpers, static_cast<int>(threads_.size())),
                     std::memory_order_relaxed);
      members_.store(0, std::memory_order_release);  // open: the job's fields are written
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    {
      InJob in_job;
      run_tasks(true);  // at once: helpers that are not running yet are not waited for
    }
    // Every task is taken: close the job, then wait only for helpers inside it
    // (each is finishing a task it took).
    members_.fetch_or(kClosed, std::memory_order_acq_rel);
    for (int spins = 0; (members_.load(std::memory_order_acquire) & ~kClosed) != 0; ++spins) {
      if (spins < 2000) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
    std::exception_ptr error;
    std::swap(error, error_);
    if (error) std::rethrow_exception(error);
    return true;
  }

 private:
  static constexpr int64_t kClosed = int64_t{1} << 62;
  static constexpr std::chrono::microseconds kSpin{20};
  static constexpr std::chrono::microseconds kLongestSpin{500};

  // Under mutex_. A thread the system refuses only makes the team smaller.
  void start_threads(int wanted) {
    while (static_cast<int>(threads_.size()) < wanted) {
      try {
        threads_.emplace_back(&Team::serve, this, static_cast<int>(threads_.size()));
      } catch (const std::system_error&) {
        return;
      }
    }
  }

  void serve(int id) {
    uint64_t seen = 0;
    while (await_job(id, seen)) {
      seen = generation_.load(std::memory_order_acquire);
      if (id >= helpers_.load(std::memory_order_relaxed) || !join()) continue;
      // The job joined may be a later one than the job seen, of fewer helpers:
      // its own count was stored before it opened.
      if (id < helpers_.load(std::memory_order_relaxed)) {
        modes_.apply_to_this_thread();
        InJob in_job;
        run_tasks(false);
      }
      members_.fetch_sub(1, std::memory_order_release);
    }
  }

  // How long helpers spin for the next job before they sleep: jobs that came
  // close together (a step's loops, steps in a tight loop) make them wait up to
  // twice the last gap, so they are awake for the next one; waking a sleeping
  // thread costs tens of microseconds, and a caller that starts alone does not
  // get them back. Beyond kLongestSpin apart, jobs find them asleep.
  void note_job_start() {
    const auto now = std::chrono::steady_clock::now();
    const auto gap = std::chrono::duration_cast<std::chrono::microseconds>(now - last_start_);
    last_start_ = now;
    const auto spin = 2 * gap <= kLongestSpin ? std::max(2 * gap, kSpin) : kSpin;
    spin_us_.store(spin.count(), std::memory_order_relaxed);
  }

  // Waits for a job after `seen` that this thread helps; false when stopping.
  // It spins first (see note_job_start), and longer after a heads-up.
  bool await_job(int id, uint64_t seen) {
    const auto wanted = [&] {
      return generation_.load(std::memory_order_acquire) != seen &&
             id < helpers_.load(std::memory_order_relaxed);
    };
    std::chrono::microseconds spin{spin_us_.load(std::memory_order_relaxed)};
    for (;;) {
      const auto deadline = std::chrono::steady_clock::now() + spin;
      for (int i = 1; !wanted(); ++i) {
        if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) break;
        cpu_relax();
      }
      std::unique_lock<std::mutex> lock(mutex_);
      const uint64_t heads_up = heads_up_;
      wake_.wait(lock, [&] { return stopping_ || wanted() || heads_up_ != heads_up; });
      if (stopping_) return false;
      if (wanted()) return true;
      spin = id < heads_up_helpers_ ? kLongestSpin : kSpin;
    }
  }

  bool join() {
    int64_t m = members_.load(std::memory_order_relaxed);
    while ((m & kClosed) == 0) {
      if (members_.compare_exchange_weak(m, m + 1, std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
        return true;
      }
    }
    return false;
  }

  // The caller takes tasks from the front of the list, helpers from the back,
  // so each thread walks memory in order (the hardware prefetchers follow it)
  // until they meet.
  void run_tasks(bool front) {
    for (int64_t t = claim(front); t >= 0; t = claim(front)) {
      try {
        fn_(context_, t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
        ends_.store(0, std::memory_order_relaxed);  // no task starts after one threw
      }
    }
  }

  // The next task from the front or the back; -1 when none is left.
  int64_t claim(bool front) {
    uint64_t ends = ends_.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t lo = ends & 0xFFFFFFFFu, hi = ends >> 32;
      if (lo >= hi) return -1;
      const uint64_t next = front ? ends + 1 : ends - (uint64_t{1} << 32);
      if (ends_.compare_exchange_weak(ends, next, std::memory_order_relaxed)) {
        return static_cast<int64_t>(front ? lo : hi - 1);
      }
    }
  }

  std::mutex busy_;  // held by the caller whose job the team runs
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;                             // under mutex_
  uint64_t heads_up_ = 0;                             // under mutex_: one more per heads-up
  std::chrono::steady_clock::time_point last_start_;  // the callers' (busy_ held)
  std::atomic<int64_t> spin_us_{kSpin.count()};
  int heads_up_helpers_ = 0;
  // Written under mutex_, read also without it by spinning threads.
  std::atomic<uint64_t> generation_{0};  // one more per job
  std::atomic<int> helpers_{0};          // threads 0 .. helpers_-1 help the job

  // The job: written by its caller before it opens `members_`, read by helpers
  // after they joined.
  TaskFn fn_ = nullptr;
  void* context_ = nullptr;
  FloatModes modes_;
  std::atomic<uint64_t> ends_{0};  // the unclaimed tasks [low 32 bits, high 32 bits)
  // Helpers inside the job, plus kClosed once the caller has taken the last
  // task. A helper joins only an open job and the caller returns only when no
  // helper is inside, so no helper touches a finished job or its caller's data.
  std::atomic<int64_t> members_{kClosed};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

std::unique_ptr<Team>& team_slot() {
  static std::unique_ptr<Team> team = std::make_unique<Team>();
  return team;
}

// In a child made by fork() only the forking thread exists: the team's threads
// and any lock they held are gone. The old team is abandoned, not destroyed
// (its destructor would join threads that do not exist), and a new one starts.
void renew_team_in_child() {
  (void)team_slot().release();
  team_slot() = std::make_unique<Team>();
}

Team& team() {
  static const int registered = pthread_atfork(nullptr, nullptr, renew_team_in_child);
  (void)registered;
  return *team_slot();
}

}  // namespace

void expect_parallel_loop(int helpers) {
  if (helpers > 0) team().heads_up(helpers);
}

void run_on_team(int64_t n_tasks, int helpers, TaskFn fn, void* context) {
  if (helpers > 0 && n_tasks > 1 && !t_in_job && team().run(n_tasks, helpers, fn, context)) {
    return;
  }
  for (int64_t task = 0; task < n_tasks; ++task) fn(context, task);
}

}  // namespace adagrad
