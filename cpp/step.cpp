// One whole optimizer step: an optional reduction pass (norms, finiteness),
// then the fused update pass, each one parallel loop over the work list.
// Row-sparse gradients are de-duplicated first; their distinct rows join the
// same parallel loops as extra tasks (row mode), unless a feature of this
// step touches every row (full pass over the tensor's work items instead).
#include "step.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

#include "dedup.hpp"
#include "dispatch.hpp"
#include "sparse.hpp"
#include "tensor_range.hpp"

namespace adagrad {

namespace {
// Distinct rows (or index positions) of one sparse tensor handled by one task.
struct RowTask {
  int32_t tensor;
  int64_t d0, d1;  // distinct rows, or with by_position index positions
  bool by_position = false;
};

// Elements a row task moves (summed gradient rows, rows and their state): 16 Ki,
// so that a typical batch spreads over the threads in tens of tasks.
constexpr int64_t kRowTaskElements = 16384;

// How a tensor takes part in this step.
enum class Mode : unsigned char { dense, rows, full };

// Does a feature of this step touch every row of a sparse tensor? Then the
// tensor is updated through its dense work items with the dense-equivalent
// gradient (zeros in untouched rows); otherwise only its distinct rows run.
bool needs_full_pass(const TensorSlots& t, const StepPlan& plan) {
  if (t.overwrite) return true;  // v = g: untouched rows become 0
  if (plan.phase == Phase::accumulate_update && t.grad_accumulator != nullptr) return true;
  if (plan.sparse_lazy) return false;
  if (plan.ema && t.average != nullptr) return true;
  return plan.phase != Phase::accumulate && t.weight_decay && plan.weight_decay != 0.0;
}

// The elements an item updates: its own range, or for a row-wise tensor the
// whole rows that start inside it (every row then belongs to one item).
std::pair<int64_t, int64_t> update_range(const TensorSlots& t, const WorkItem& item) {
  if (!t.rowwise || t.row_len <= 0) return {item.begin, item.end};
  const int64_t L = t.row_len;
  return {(item.begin + L - 1) / L * L, (item.end + L - 1) / L * L};
}

// What one step works on, shared by its phases.
struct StepRun {
  const std::vector<TensorSlots>& tensors;
  const WorkList& work;
  std::vector<TensorStep>& steps;
  const StepPlan& plan;
  const Kernels& k;
  std::vector<SparseRows>& rows;  // per tensor; filled for sparse gradients only
};

// How each tensor takes part in this step, and the tasks of both passes.
struct StepTasks {
  std::vector<Mode> mode;             // per tensor
  std::vector<int32_t> sparse_ids;    // tensors with a sparse gradient, ascending
  std::vector<RowTask> row_tasks;     // the distinct rows of row-mode tensors
  std::vector<RowTask> update_tasks;  // pass 2's: the same, or positions (index order)
  std::vector<int64_t> dense_tasks;   // work-list tasks with an item not in row mode
  bool any_sparse() const { return !sparse_ids.empty(); }
};

// One parallel loop over the dense tasks (all of the work list's when no
// gradient is sparse) and then the given row tasks.
template <class ItemFn, class RowFn>
void for_each_task(const StepRun& run, const StepTasks& tasks,
                   const std::vector<RowTask>& row_tasks, ItemFn&& item_fn, RowFn&& row_fn) {
  const WorkList& work = run.work;
  const std::vector<int64_t>* dense_tasks = tasks.any_sparse() ? &tasks.dense_tasks : nullptr;
  const int64_t n_dense =
      dense_tasks != nullptr ? static_cast<int64_t>(dense_tasks->size()) : work.n_tasks();
  const int64_t n = n_dense + static_cast<int64_t>(row_tasks.size());
  parallel_for(n, [&](int64_t task) {
    if (task < n_dense) {
      const int64_t w = dense_tasks != nullptr ? (*dense_tasks)[task] : task;
      for (int64_t i = work.task_begin[w]; i < work.task_begin[w + 1]; ++i) item_fn(i);
    } else {
      row_fn(row_tasks[task - n_dense]);
    }
  });
}

// The dense-equivalent gradient of elements [b, e) of a full-pass tensor.
void gather(const StepRun& run, int32_t t, int64_t b, int64_t e, std::vector<unsigned char>& buf) {
  const size_t bytes = static_cast<size_t>(e - b) * dtype_bytes(run.tensors[t].dtype);
  buf.assign(bytes, 0);  // all-zero bits are +0.0 in every float format
  run.k.sparse_gather(run.tensors[t], run.steps[t], run.rows[t], b, e, buf.data());
}

// The sums of the copies of every sparse gradient's multi rows (SparseRows),
// once a step for every pass that reads them. Each task streams a gradient's
// values and adds the copies of its own rows, so the tasks are as many as the
// threads, cut by copies (a row's copies stay in one task, in index order:
// the split never changes a sum).
void sum_multi_rows(const StepRun& run, const StepTasks& tasks) {
  struct SumTask {
    int32_t tensor;
    int64_t m0, m1;
  };
  std::vector<SumTask> sum_tasks;
  const int64_t parts = get_num_threads();
  for (int32_t t : tasks.sparse_ids) {
    SparseRows& rows = run.rows[t];
    const TensorSlots& slots = run.tensors[t];
    const int64_t L = slots.row_len;
    if (L <= 0 || rows.multi_count == 0) continue;
    rows.sums.resize(static_cast<size_t>(rows.multi_count * L) * dtype_bytes(slots.dtype));
    const int64_t copies = rows.multi_copies[rows.multi_count];
    int64_t m0 = 0, cut = 1;
    for (int64_t m = 0; m < rows.multi_count; ++m) {
      const int64_t seen = rows.multi_copies[m + 1];
      if (seen * parts >= copies * cut || m + 1 == rows.multi_count) {
        sum_tasks.push_back({t, m0, m + 1});
        m0 = m + 1;
        cut = seen * parts / copies + 1;
      }
    }
  }
  parallel_for(static_cast<int64_t>(sum_tasks.size()), [&](int64_t j) {
    const SumTask& task = sum_tasks[j];
    run.k.sparse_sums(run.tensors[task.tensor], run.steps[task.tensor], run.rows[task.tensor],
                      task.m0, task.m1);
  });
}

// De-duplicates tensor t's sparse gradient. A row-mode tensor that needs no
// pass over its distinct rows first (`row_partials`: a reduce pass follows)
// takes dedup_by_position when its last index list had mostly single copies
// and its de-duplication runs on one thread (`one_thread`): the bitmap pass is
// serial, while dedup() sorts a lone tensor on every thread. On uniform ids the
// one-thread row-wise step was 12-17%, 5-12% and 3-4% faster at widths 16, 64 and 256;
// with two threads on one tensor, 2-10% faster or 3-9% slower as the host's
// memory went (development host, the two alternated step by step in one
// process, caches cold and warm).
void dedup_tensor(StepRun& run, const StepTasks& tasks, int32_t t, bool row_partials,
                  bool one_thread) {
  const TensorSlots& slots = run.tensors[t];
  SparseRows& s = run.rows[t];
  const bool by_position = one_thread && !row_partials && tasks.mode[t] == Mode::rows &&
                           s.last_mostly_single && dedup_by_position(run.steps[t], slots.rows, s);
  if (!by_position) dedup(run.steps[t], slots.rows, s);
  s.last_mostly_single = s.mostly_single(run.steps[t].n_indices);
}

// Phase 0: de-duplicates every sparse gradient (tensors spread over the
// threads), decides each tensor's mode, and cuts the row-mode tensors'
// distinct rows into row tasks (`row_partials`: the reduce pass needs them
// even where the update runs in index order).
StepTasks plan_sparse(StepRun& run, bool row_partials) {
  const size_t n_tensors = run.tensors.size();
  StepTasks tasks;
  tasks.mode.assign(n_tensors, Mode::dense);
  for (size_t t = 0; t < n_tensors; ++t) {
    if (run.steps[t].sparse && run.steps[t].grad != nullptr) {
      tasks.sparse_ids.push_back(static_cast<int32_t>(t));
      tasks.mode[t] = needs_full_pass(run.tensors[t], run.plan) ? Mode::full : Mode::rows;
    }
  }
  if (!tasks.any_sparse()) return tasks;
  if (std::count(tasks.mode.begin(), tasks.mode.end(), Mode::rows) > 0) {
    expect_parallel_loop(get_num_threads() - 1);  // the row tasks, after the de-duplication
  }
  if (run.rows.size() != n_tensors) run.rows.resize(n_tensors);
  const int64_t n_sparse = static_cast<int64_t>(tasks.sparse_ids.size());
  // Several tensors spread over the threads: each one's de-duplication runs on one.
  const bool one_thread = get_num_threads() == 1 || n_sparse > 1;
  parallel_for(n_sparse, [&](int64_t j) {
    dedup_tensor(run, tasks, tasks.sparse_ids[j], row_partials, one_thread);
  });
  sum_multi_rows(run, tasks);
  for (int32_t t : tasks.sparse_ids) {
    const int64_t L = run.tensors[t].row_len;
    if (tasks.mode[t] != Mode::rows || L <= 0) continue;
    // Every row moves the same: its summed gradient, the row and its state.
    const int64_t per_task = std::max<int64_t>(1, kRowTaskElements / (3 * L));
    // By position (positions_only), the update needs no list of distinct rows.
    const int64_t count = run.rows[t].positions_only ? 0 : run.rows[t].count();
    const size_t first = tasks.row_tasks.size();
    for (int64_t d0 = 0; d0 < count; d0 += per_task) {
      tasks.row_tasks.push_back({t, d0, std::min(count, d0 + per_task)});
    }
    const int64_t n = run.steps[t].n_indices;
    // Rows that are mostly single copies (at least half of the index positions)
    // are updated in index order (sparse_rows_in_index_order): the gradient
    // rows are then read as one stream. On Zipf ids, where a few rows have most
    // copies, index order measured slower than the distinct rows in row order.
    if (run.rows[t].mostly_single(n)) {
      for (int64_t p0 = 0; p0 < n; p0 += per_task) {
        tasks.update_tasks.push_back({t, p0, std::min(n, p0 + per_task), true});
      }
    } else {
      tasks.update_tasks.insert(tasks.update_tasks.end(), tasks.row_tasks.begin() + first,
                                tasks.row_tasks.end());
    }
  }
  // Dense tasks: only those with an item of a tensor that is not in row mode.
  const WorkList& work = run.work;
  for (int64_t w = 0; w < work.n_tasks(); ++w) {
    for (int64_t i = work.task_begin[w]; i < work.task_begin[w + 1]; ++i) {
      if (tasks.mode[work.items[i].tensor] != Mode::rows) {
        tasks.dense_tasks.push_back(w);
        break;
      }
    }
  }
  return tasks;
}

bool needs_norm(const StepPlan& plan) {
  return plan.phase != Phase::accumulate &&
         (plan.clip == Clip::norm || plan.clip == Clip::global_norm);
}

// Row-mode partials: one per distinct row of each row-mode tensor.
using RowPartials = std::vector<std::vector<ReduceResult>>;

// Pass 1, in parallel: the partial sum of squares and finiteness of every work
// item (into the group's scratch) and of every distinct row.
RowPartials compute_partials(const StepRun& run, SlotGroup& group, const StepTasks& tasks) {
  const std::vector<TensorSlots>& tensors = run.tensors;
  const WorkList& work = run.work;
  const std::vector<TensorStep>& steps = run.steps;
  const StepPlan& plan = run.plan;
  const std::vector<Mode>& mode = tasks.mode;
  std::vector<double>& partial = group.partial_sums();
  std::vector<unsigned char>& finite = group.partial_finite();
  RowPartials row_partial(tasks.any_sparse() ? tensors.size() : 0);
  for (int32_t t : tasks.sparse_ids) {
    if (mode[t] == Mode::rows) row_partial[t].resize(static_cast<size_t>(run.rows[t].count()));
  }
  for_each_task(
      run, tasks, tasks.row_tasks,
      [&](int64_t i) {
        const WorkItem& item = work.items[i];
        const TensorStep& ts = steps[item.tensor];
        if (ts.grad == nullptr || mode[item.tensor] == Mode::rows) {
          partial[i] = 0.0;
          finite[i] = 1;
          return;
        }
        ReduceResult r;
        if (mode[item.tensor] == Mode::full) {
          std::vector<unsigned char> buf;
          gather(run, item.tensor, item.begin, item.end, buf);
          const int64_t n = item.end - item.begin;
          const DenseView v = dense_view(tensors[item.tensor], ts, item.begin, n, buf.data());
          r = run.k.reduce_item(v.slots, v.step, plan, 0, n);
        } else {
          r = run.k.reduce_item(tensors[item.tensor], ts, plan, item.begin, item.end);
        }
        partial[i] = r.sum_squares;
        finite[i] = r.finite ? 1 : 0;
      },
      [&](const RowTask& task) {
        run.k.sparse_reduce_rows(tensors[task.tensor], steps[task.tensor], run.rows[task.tensor],
                                 plan, task.d0, task.d1, row_partial[task.tensor].data() + task.d0);
      });
  return row_partial;
}

// Pass 1 over this group's items and distinct rows, then the one fold: entries in
// item order, then each row-mode tensor's rows in row order (the same sums for
// any thread count). Sets each step's clip norm; the result says whether the
// step goes on (check_finite stops it at a non-finite gradient).
StepResult reduce_pass(StepRun& run, SlotGroup& group, const StepTasks& tasks) {
  const RowPartials row_partial = compute_partials(run, group, tasks);
  const std::vector<WorkItem>& items = run.work.items;
  std::vector<int32_t> tensor_of;
  std::vector<double> sums;
  std::vector<unsigned char> finite;
  for (size_t i = 0; i < items.size(); ++i) {
    const int32_t t = items[i].tensor;
    if (tasks.mode[t] == Mode::rows) continue;  // not visited: its rows follow
    tensor_of.push_back(t);
    sums.push_back(group.partial_sums()[i]);
    finite.push_back(group.partial_finite()[i]);
  }
  for (int32_t t : tasks.sparse_ids) {
    if (tasks.mode[t] != Mode::rows) continue;
    for (const ReduceResult& r : row_partial[t]) {
      tensor_of.push_back(t);
      sums.push_back(r.sum_squares);
      finite.push_back(r.finite ? 1 : 0);
    }
  }
  std::vector<unsigned char> counted(run.tensors.size());
  for (size_t t = 0; t < counted.size(); ++t) {
    counted[t] = run.steps[t].grad != nullptr && !run.tensors[t].overwrite ? 1 : 0;
  }
  const Folded folded = fold_norms(tensor_of, sums.data(), finite.data(), counted,
                                   run.plan.clip == Clip::global_norm);
  StepResult result;
  result.finite = folded.first_nonfinite < 0;
  result.first_nonfinite = folded.first_nonfinite;
  if (run.plan.check_finite && !result.finite) {
    result.applied = false;
    return result;
  }
  if (needs_norm(run.plan)) {
    for (size_t t = 0; t < run.steps.size(); ++t) run.steps[t].norm = folded.norms[t];
  }
  return result;
}

// Pass 2: the fused update of every dense work item, full-pass range and
// distinct row.
void update_pass(const StepRun& run, const StepTasks& tasks) {
  const StepPlan& plan = run.plan;
  const Kernels& k = run.k;
  for_each_task(
      run, tasks, tasks.update_tasks,
      [&](int64_t i) {
        const WorkItem& item = run.work.items[i];
        const TensorSlots& t = run.tensors[item.tensor];
        const TensorStep& ts = run.steps[item.tensor];
        const Mode m = tasks.mode[item.tensor];
        if (m == Mode::rows) return;
        const bool rowwise = ts.grad != nullptr && rowwise_update(t, plan);
        if (m == Mode::dense && !rowwise) {
          k.dense_item(t, ts, plan, item.begin, item.end);
          return;
        }
        const auto [b, e] = update_range(t, item);
        if (e <= b) return;
        const void* g = ts.grad;
        std::vector<unsigned char> buf;
        if (m == Mode::full) {
          gather(run, item.tensor, b, e, buf);
          g = buf.data();
        } else {
          g = static_cast<const unsigned char*>(ts.grad) +
              b * static_cast<int64_t>(dtype_bytes(t.dtype));
        }
        if (rowwise) {
          k.rowwise_rows(t, ts, plan, b / t.row_len, e / t.row_len, g);
        } else {
          const DenseView v = dense_view(t, ts, b, e - b, g);
          k.dense_item(v.slots, v.step, plan, 0, e - b);
        }
      },
      [&](const RowTask& task) {
        const SparseRows& rows = run.rows[task.tensor];
        if (task.by_position) {
          k.sparse_rows_in_index_order(run.tensors[task.tensor], run.steps[task.tensor], rows, plan,
                                       task.d0, task.d1);
        } else {
          k.sparse_rows(run.tensors[task.tensor], run.steps[task.tensor], rows, plan, task.d0,
                        task.d1);
        }
      });
}

}  // namespace

SlotGroup::SlotGroup(std::vector<TensorSlots> tensors, int64_t chunk)
    : tensors_(std::move(tensors)), work_(make_work_list(sizes_of(tensors_), chunk)),
      partial_sums_(work_.items.size()), partial_finite_(work_.items.size()),
      sparse_rows_(std::make_shared<std::vector<SparseRows>>()) {}

Folded fold_norms(const std::vector<int32_t>& tensor_of, const double* sums,
                  const unsigned char* finite, const std::vector<unsigned char>& counted,
                  bool global) {
  const size_t n_tensors = counted.size();
  Folded out;
  std::vector<double> tensor_sums(n_tensors, 0.0);
  for (size_t i = 0; i < tensor_of.size(); ++i) {
    const int32_t t = tensor_of[i];
    tensor_sums[t] += sums[i];
    if (finite[i] == 0 && (out.first_nonfinite < 0 || t < out.first_nonfinite)) {
      out.first_nonfinite = t;
    }
  }
  double total = 0.0;
  out.norms.resize(n_tensors, 0.0);
  for (size_t t = 0; t < n_tensors; ++t) {
    if (counted[t] == 0) continue;
    total += tensor_sums[t];
    // Keras: sqrt only of a positive sum (a NaN sum stays NaN).
    out.norms[t] = tensor_sums[t] > 0.0 ? std::sqrt(tensor_sums[t]) : tensor_sums[t];
  }
  if (global) std::fill(out.norms.begin(), out.norms.end(), std::sqrt(total));
  return out;
}

std::vector<SparseRows>& SlotGroup::sparse_rows() { return *sparse_rows_; }

namespace {

// Points each tensor's step at its own scalars (plan.per_tensor), after checking
// that the plan fits the group; throws before anything is written.
void attach_scalars(const SlotGroup& group, std::vector<TensorStep>& steps, const StepPlan& plan) {
  const std::vector<TensorSlots>& tensors = group.tensors();
  if (plan.per_tensor && plan.per_tensor->size() != tensors.size()) {
    throw std::invalid_argument(
        "StepPlan.per_tensor has " + std::to_string(plan.per_tensor->size()) +
        " entries; the group has " + std::to_string(tensors.size()) + " tensors.");
  }
  for (size_t t = 0; t < tensors.size(); ++t) {
    if (tensors[t].rowwise && plan.formula != Formula::keras) {
      throw std::invalid_argument("Row-wise accumulators take only the Keras formula.");
    }
    steps[t].scalars = plan.per_tensor ? &(*plan.per_tensor)[t] : nullptr;
  }
}

}  // namespace

StepResult run_step(SlotGroup& group, std::vector<TensorStep>& steps, const StepPlan& plan,
                    const std::vector<double>* norms) {
  attach_scalars(group, steps, plan);
  StepRun run{group.tensors(), group.work(), steps, plan, kernels(), group.sparse_rows()};
  const bool reduce = norms == nullptr && (needs_norm(plan) || plan.check_finite);
  const StepTasks tasks = plan_sparse(run, reduce);
  StepResult result;
  if (norms != nullptr) {
    for (size_t t = 0; t < steps.size(); ++t) steps[t].norm = (*norms)[t];
  } else if (reduce) {
    result = reduce_pass(run, group, tasks);
    if (!result.applied) return result;
  }
  update_pass(run, tasks);
  return result;
}

int64_t run_check(SlotGroup& group, std::vector<TensorStep>& steps, const StepPlan& plan) {
  attach_scalars(group, steps, plan);
  StepPlan checking = plan;
  checking.check_finite = true;
  StepRun run{group.tensors(), group.work(), steps, checking, kernels(), group.sparse_rows()};
  return reduce_pass(run, group, plan_sparse(run, true)).first_nonfinite;
}

void run_partials(SlotGroup& group, std::vector<TensorStep>& steps, const StepPlan& plan) {
  StepRun run{group.tensors(), group.work(), steps, plan, kernels(), group.sparse_rows()};
  compute_partials(run, group, plan_sparse(run, true));
}

}  // namespace adagrad
