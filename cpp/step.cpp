// One whole optimizer step: an optional reduction pass (norms, finiteness),
// then the fused update pass, each one parallel region over the work list.
// Row-sparse gradients are de-duplicated first; their distinct rows join the
// same parallel regions as extra tasks (row mode), unless a feature of this
// step touches every row (full pass over the tensor's work items instead).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "dedup.hpp"
#include "dispatch.hpp"
#include "sparse.hpp"
#include "step.hpp"
#include "tensor_range.hpp"

namespace adagrad {

namespace {
// Distinct rows of one sparse tensor handled by one task.
struct RowTask {
  int32_t tensor;
  int64_t d0, d1;
};

// Elements of distinct rows per row task: a few thousand, so that the ~6k
// rows of a typical batch spread over the threads in tens of tasks.
constexpr int64_t kRowTaskElements = 4096;

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

// One parallel region over the dense tasks `dense_tasks` (indices into the
// work list's tasks) and the row tasks.
template <class ItemFn, class RowFn>
void for_each_task(const WorkList& work, const std::vector<int64_t>* dense_tasks,
                   const std::vector<RowTask>& row_tasks, ItemFn&& item_fn, RowFn&& row_fn) {
  const int64_t n_dense = dense_tasks != nullptr ? static_cast<int64_t>(dense_tasks->size())
                                                 : work.n_tasks();
  const int64_t n = n_dense + static_cast<int64_t>(row_tasks.size());
  auto run = [&](int64_t task) {
    if (task < n_dense) {
      const int64_t w = dense_tasks != nullptr ? (*dense_tasks)[task] : task;
      for (int64_t i = work.task_begin[w]; i < work.task_begin[w + 1]; ++i) item_fn(i);
    } else {
      row_fn(row_tasks[task - n_dense]);
    }
  };
  parallel_for(n, run);
}
}  // namespace

SlotGroup::SlotGroup(std::vector<TensorSlots> tensors)
    : tensors_(std::move(tensors)),
      work_(make_work_list(sizes_of(tensors_))),
      partial_sums_(work_.items.size()),
      partial_finite_(work_.items.size()),
      sparse_rows_(std::make_shared<std::vector<SparseRows>>()) {}

std::vector<SparseRows>& SlotGroup::sparse_rows() { return *sparse_rows_; }

StepResult run_step(SlotGroup& group, std::vector<TensorStep>& steps, const StepPlan& plan) {
  const std::vector<TensorSlots>& tensors = group.tensors();
  const WorkList& work = group.work();
  const Kernels& k = kernels();
  StepResult result;
  const size_t n_tensors = tensors.size();

  // Phase 0: de-duplicate every sparse gradient (one tensor per thread).
  std::vector<Mode> mode(n_tensors, Mode::dense);
  std::vector<int32_t> sparse_ids;
  for (size_t t = 0; t < n_tensors; ++t) {
    if (steps[t].sparse && steps[t].grad != nullptr) {
      sparse_ids.push_back(static_cast<int32_t>(t));
      mode[t] = needs_full_pass(tensors[t], plan) ? Mode::full : Mode::rows;
    }
  }
  std::vector<SparseRows>& rows = group.sparse_rows();
  std::vector<RowTask> row_tasks;
  std::vector<int64_t> dense_tasks;
  const bool any_sparse = !sparse_ids.empty();
  if (any_sparse) {
    if (rows.size() != n_tensors) rows.resize(n_tensors);
    const int64_t n_sparse = static_cast<int64_t>(sparse_ids.size());
    parallel_for(n_sparse, [&](int64_t j) {
      const int32_t t = sparse_ids[j];
      dedup(steps[t], tensors[t].rows, rows[t]);
    });
    for (int32_t t : sparse_ids) {
      if (mode[t] != Mode::rows || tensors[t].row_len <= 0) continue;
      const int64_t per_task = std::max<int64_t>(1, kRowTaskElements / tensors[t].row_len);
      const int64_t count = rows[t].count();
      for (int64_t d = 0; d < count; d += per_task) {
        row_tasks.push_back({t, d, std::min(count, d + per_task)});
      }
    }
    // Dense tasks: only those with an item of a tensor that is not in row mode.
    for (int64_t w = 0; w < work.n_tasks(); ++w) {
      for (int64_t i = work.task_begin[w]; i < work.task_begin[w + 1]; ++i) {
        if (mode[work.items[i].tensor] != Mode::rows) {
          dense_tasks.push_back(w);
          break;
        }
      }
    }
  }
  const std::vector<int64_t>* dense_list = any_sparse ? &dense_tasks : nullptr;

  // The dense-equivalent gradient of elements [b, e) of a full-pass tensor.
  auto gather = [&](int32_t t, int64_t b, int64_t e, std::vector<unsigned char>& buf) {
    const size_t bytes = static_cast<size_t>(e - b) * dtype_bytes(tensors[t].dtype);
    buf.assign(bytes, 0);  // all-zero bits are +0.0 in every float format
    k.sparse_gather(tensors[t], steps[t], rows[t], b, e, buf.data());
  };

  const bool update_step = plan.phase != Phase::accumulate;
  const bool need_norm =
      update_step && (plan.clip == Clip::norm || plan.clip == Clip::global_norm);
  if (need_norm || plan.check_finite) {
    std::vector<double>& partial = group.partial_sums();
    std::vector<unsigned char>& finite = group.partial_finite();
    // Row-mode partials: one per distinct row, combined in row order below.
    std::vector<std::vector<ReduceResult>> row_partial(any_sparse ? n_tensors : 0);
    for (int32_t t : sparse_ids) {
      if (mode[t] == Mode::rows) row_partial[t].resize(static_cast<size_t>(rows[t].count()));
    }
    for_each_task(
        work, dense_list, row_tasks,
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
            gather(item.tensor, item.begin, item.end, buf);
            const int64_t n = item.end - item.begin;
            const DenseView v = dense_view(tensors[item.tensor], ts, item.begin, n, buf.data());
            r = k.reduce_item(v.slots, v.step, plan, 0, n);
          } else {
            r = k.reduce_item(tensors[item.tensor], ts, plan, item.begin, item.end);
          }
          partial[i] = r.sum_squares;
          finite[i] = r.finite ? 1 : 0;
        },
        [&](const RowTask& task) {
          k.sparse_reduce_rows(tensors[task.tensor], steps[task.tensor], rows[task.tensor], plan,
                               task.d0, task.d1, row_partial[task.tensor].data() + task.d0);
        });
    // Combine in item order: the same sum for any thread count.
    std::vector<double> tensor_sums(n_tensors, 0.0);
    for (size_t i = 0; i < work.items.size(); ++i) {
      const int32_t t = work.items[i].tensor;
      if (mode[t] == Mode::rows) {
        if (finite[i] == 0) finite[i] = 1;  // unreachable: row-mode items are skipped
        continue;
      }
      tensor_sums[t] += partial[i];
      if (finite[i] == 0 && result.finite) {
        result.finite = false;
        result.first_nonfinite = t;
      }
    }
    for (int32_t t : sparse_ids) {
      if (mode[t] != Mode::rows) continue;
      for (const ReduceResult& r : row_partial[t]) {
        tensor_sums[t] += r.sum_squares;
        if (!r.finite && (result.finite || t < result.first_nonfinite)) {
          result.finite = false;
          result.first_nonfinite = t;
        }
      }
    }
    if (plan.check_finite && !result.finite) {
      result.applied = false;
      return result;
    }
    if (need_norm) {
      double total = 0.0;
      for (size_t t = 0; t < n_tensors; ++t) {
        if (steps[t].grad == nullptr || tensors[t].overwrite) continue;
        total += tensor_sums[t];
        // Keras: sqrt only of a positive sum (a NaN sum stays NaN).
        steps[t].norm = tensor_sums[t] > 0.0 ? std::sqrt(tensor_sums[t]) : tensor_sums[t];
      }
      if (plan.clip == Clip::global_norm) {
        const double global_norm = std::sqrt(total);
        for (TensorStep& ts : steps) ts.norm = global_norm;
      }
    }
  }

  for_each_task(
      work, dense_list, row_tasks,
      [&](int64_t i) {
        const WorkItem& item = work.items[i];
        const TensorSlots& t = tensors[item.tensor];
        const TensorStep& ts = steps[item.tensor];
        const Mode m = mode[item.tensor];
        if (m == Mode::rows) return;
        const bool rowwise_update =
            t.rowwise && ts.grad != nullptr && plan.phase != Phase::accumulate && !t.overwrite;
        if (m == Mode::dense && !rowwise_update) {
          k.dense_item(t, ts, plan, item.begin, item.end);
          return;
        }
        const auto [b, e] = update_range(t, item);
        if (e <= b) return;
        const void* g = ts.grad;
        std::vector<unsigned char> buf;
        if (m == Mode::full) {
          gather(item.tensor, b, e, buf);
          g = buf.data();
        } else {
          g = static_cast<const unsigned char*>(ts.grad) +
              b * static_cast<int64_t>(dtype_bytes(t.dtype));
        }
        if (rowwise_update) {
          k.rowwise_rows(t, ts, plan, b / t.row_len, e / t.row_len, g);
        } else {
          const DenseView v = dense_view(t, ts, b, e - b, g);
          k.dense_item(v.slots, v.step, plan, 0, e - b);
        }
      },
      [&](const RowTask& task) {
        k.sparse_rows(tensors[task.tensor], steps[task.tensor], rows[task.tensor], plan, task.d0,
                      task.d1);
      });
  return result;
}

}  // namespace adagrad
