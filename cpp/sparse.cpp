// Row-sparse gradients and row-wise Adagrad, compiled once per ISA.
//
// A sparse gradient is first de-duplicated (dedup.cpp): each distinct row then
// gets the sum of its copies, in index order, rounded to the parameter dtype
// after every addition -- exactly the dense gradient np.add.at would build
// (sparse_sums, once a step, for the rows with more than one copy). The update
// of a row is the dense kernel's (update.hpp) run on that row's elements, so a
// touched row gets the same bits as under the dense gradient.
#include "sparse.hpp"

#include <algorithm>
#include <vector>

#include "clip.hpp"
#include "ema.hpp"
#include "kernel_common.hpp"
#include "kernels.hpp"
#include "tensor_range.hpp"
#include "update.hpp"

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

constexpr int kMeanLanes = 8;  // lanes of the row-wise mean (fixed order)

// Prefetches every cache line of [p, p + bytes): a row need not start on a line
// (numpy aligns to 16 bytes), and then its last line is one more.
inline void prefetch_bytes(const void* p, int64_t bytes, bool write) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63);
  const char* c = reinterpret_cast<const char*>(first);
  const int64_t span = bytes + static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) - first);
  for (int64_t i = 0; i < span; i += 64) {
    if (write) {
      __builtin_prefetch(c + i, 1, 3);
    } else {
      __builtin_prefetch(c + i, 0, 3);
    }
  }
}

// n items of per-thread scratch, kept for the thread's next tasks (a step has
// hundreds of row tasks; each would otherwise allocate and zero its own).
template <class T>
T* scratch(int64_t n) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < static_cast<size_t>(n)) buffer.resize(static_cast<size_t>(n));
  return buffer.data();
}

// The summed gradient of each distinct row of a sparse gradient: its values row
// when it has one copy, else its row of s.sums (sparse_sums).
template <class P>
struct GradientRows {
  const P* values;
  const P* sums;
  const SparseRows& s;
  int64_t row_len;

  GradientRows(const TensorStep& ts, const SparseRows& s_, int64_t row_len_)
      : values(static_cast<const P*>(ts.grad)), sums(reinterpret_cast<const P*>(s_.sums.data())),
        s(s_), row_len(row_len_) {}

  const P* operator[](int64_t d) const {
    const int64_t m = s.multi[d];
    return m >= 0 ? sums + m * row_len : values + s.order[s.start[d]] * row_len;
  }
};

// The copies of multi rows [m0, m1), summed in index order (the values are
// streamed in that order, each copy added to its row's sum), rounded to P after
// every addition; the first copy is the sum's start, copied as is.
struct SumsOp {
  const TensorSlots& t;
  const TensorStep& ts;
  SparseRows& s;
  int64_t m0, m1;

  template <class P, class A, class C>
  void operator()() const {
    const int64_t L = t.row_len;
    if (L <= 0) return;
    const P* __restrict values = static_cast<const P*>(ts.grad);
    P* __restrict sums = reinterpret_cast<P*>(s.sums.data());
    const int64_t* __restrict slot = s.slot.data();
    const int64_t n = static_cast<int64_t>(s.slot.size());
    const int64_t lo = 2 * m0, hi = 2 * m1;  // this task's slots
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = slot[i];
      if (k < lo || k >= hi) continue;
      const P* __restrict x = values + i * L;
      P* __restrict sum = sums + (k >> 1) * L;
      if (k & 1) {
        for (int64_t j = 0; j < L; ++j) sum[j] = x[j];
      } else {
        for (int64_t j = 0; j < L; ++j) sum[j] = from_c<P>(to_c<C>(sum[j]) + to_c<C>(x[j]));
      }
    }
  }
};

// Row-wise Adagrad, set up once per task and run row by row. Per row: the
// prepared, clipped gradient g; decay; acc += mean(g^2); v -= lr * g /
// sqrt(acc + eps); EMA. The mean is a float64 sum of squares in kMeanLanes
// lanes (element j in lane j % kMeanLanes, each lane summed in element order,
// lanes combined by a fixed halving tree), divided by L, then rounded to the
// compute type: the same bits for any thread count and ISA.
template <class P, class A, class C>
struct RowwiseUpdate {
  const TensorSlots& t;
  const StepPlan& plan;
  const GradClip<C> clip;
  const Ema<P, C> ema;
  const C lr, eps, wd;
  const bool decay, update_gacc;
  // The gradient needs no conversion, scaling or clip: the row reads the input.
  const bool gradient_as_is;
  C* g_row;  // else the clipped gradient of the row (L items)

  RowwiseUpdate(const TensorSlots& t_, const TensorStep& ts, const StepPlan& plan_)
      : t(t_), plan(plan_), clip(plan_, ts), ema(plan_), lr(static_cast<C>(plan_.learning_rate)),
        eps(static_cast<C>(plan_.epsilon)), wd(static_cast<C>(plan_.weight_decay)),
        decay(t_.weight_decay && plan_.weight_decay != 0.0),
        update_gacc(plan_.phase == Phase::accumulate_update && t_.grad_accumulator != nullptr),
        gradient_as_is(std::is_same_v<P, C> && plan_.clip == Clip::none &&
                       plan_.loss_scale == 0.0 && !update_gacc),
        g_row(scratch<C>(t_.row_len)) {}

  // Row r, whose gradient is grad[0, L).
  void row(int64_t r, const P* grad) { update(r, grad, mean(r, grad)); }

  // What row r's accumulator gains: the mean of the squares of its clipped
  // gradient. Unless the gradient is used as is, the clipped gradient stays in
  // g_row for update().
  C mean(int64_t r, const P* grad) {
    if constexpr (std::is_same_v<P, C>) {
      // The squares of the input itself, inlined into the caller's row loop
      // (no call, no aligned stack frame): on 16-wide rows the one-thread
      // step was 13-16% faster warm and 5-10% cold.
      if (gradient_as_is) return mean_of_total(square_total(grad));
    }
    return mean_of_blocks(r, grad);
  }

  // The sum of the squares of g[0, L) in the fixed lane order: mean() of a
  // gradient used as is, before the division.
  double square_total(const C* g) const {
    double lanes[kMeanLanes] = {};
    add_squares(g, t.row_len, lanes);
    return lane_total(lanes);
  }

  // A row's mean from its sum of squares.
  C mean_of_total(double total) const {
    return static_cast<C>(total / static_cast<double>(t.row_len));
  }

  // Row r's update, given mean(r, grad); the last mean() was this row's, or
  // the gradient is used as is.
  void update(int64_t r, const P* grad, C mean) {
    const int64_t L = t.row_len;
    const int64_t e0 = r * L;  // the row's first element
    if (update_gacc) {         // read by mean(): the accumulated gradient starts over
      P* __restrict ga = static_cast<P*>(t.grad_accumulator) + e0;
      for (int64_t i = 0; i < L; ++i) ga[i] = from_c<P>(C(0));
    }
    A* acc = static_cast<A*>(t.accumulator) + r;
    const C a = canonical_nan(to_c<C>(acc[0]) + mean);
    acc[0] = from_c<A>(a);
    const C denom = sqrt_c(a + eps);
    alignas(64) C vbuf[kBlock];
    for (int64_t b = 0; b < L; b += kBlock) {
      const int64_t n = block_len(b, L);
      P* vp = static_cast<P*>(t.param) + e0 + b;
      C* __restrict v = load_view<C>(vp, vbuf, n);
      const C* __restrict g = clipped(grad, b);
      if (decay) {
        for (int64_t i = 0; i < n; ++i) v[i] = v[i] - v[i] * wd * lr;
      }
      // The NaN rewrite as a select, not a check and a second pass: a branch on
      // each row's result held up the loads of the rows after it.
      for (int64_t i = 0; i < n; ++i) v[i] = canonical_nan(v[i] - (lr * g[i]) / denom);
      store_view(vp, v, n);
      if (plan.ema && t.average != nullptr) {
        // As the dense kernel: the EMA follows the stored value of v (rounded to P).
        ema.apply(load_view<C>(vp, vbuf, n), static_cast<P*>(t.average) + e0 + b, vp, n);
      }
    }
  }

 private:
  // mean() of a gradient that is converted, scaled or clipped first, block by
  // block. Kept out of line: its aligned buffers would otherwise stop mean()
  // from being inlined.
  __attribute__((noinline)) C mean_of_blocks(int64_t r, const P* grad) {
    const int64_t L = t.row_len;
    double lanes[kMeanLanes] = {};
    alignas(64) C gbuf[kBlock];
    alignas(64) C sbuf[kBlock];
    for (int64_t b = 0; b < L; b += kBlock) {
      const int64_t n = block_len(b, L);
      const C* g = prepared_gradient<P, C>(t, grad + b, plan, r * L + b, n, gbuf, sbuf);
      if (!gradient_as_is) {
        clip.apply(g, g_row + b, n);
        g = g_row + b;
      }
      add_squares(g, n, lanes);
    }
    return mean_of_total(lane_total(lanes));
  }

  // The lanes combined by the fixed halving tree.
  static double lane_total(double* __restrict lanes) {
    for (int width = kMeanLanes / 2; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
    }
    return lanes[0];
  }

  // Adds the squares of g[0, n) to the lanes: element i to lane i % kMeanLanes.
  static void add_squares(const C* __restrict g, int64_t n, double* __restrict lanes) {
    int64_t i = 0;
    for (; i + kMeanLanes <= n; i += kMeanLanes) {
      for (int j = 0; j < kMeanLanes; ++j) {
        const double x = static_cast<double>(g[i + j]);
        lanes[j] += x * x;
      }
    }
    for (; i < n; ++i) {  // tail; kBlock is a multiple of kMeanLanes
      const double x = static_cast<double>(g[i]);
      lanes[i % kMeanLanes] += x * x;
    }
  }

  // Block b of the row's clipped gradient: the input itself when nothing
  // changes it (no copy), else g_row.
  const C* clipped(const P* grad, int64_t b) const {
    if constexpr (std::is_same_v<P, C>) {
      if (gradient_as_is) return grad + b;
    }
    return g_row + b;
  }
};

// The plan of one row's update: under torch's formula, a row takes the
// operation order of torch's sparse path.
StepPlan row_plan_of(const StepPlan& plan) {
  StepPlan row_plan = plan;
  if (plan.formula == Formula::torch) row_plan.formula = Formula::torch_sparse;
  return row_plan;
}

struct RowsOp {
  const TensorSlots& t;
  const TensorStep& ts;
  const SparseRows& s;
  const StepPlan& plan;
  int64_t d0, d1;

  template <class P, class A, class C>
  void operator()() const {
    const int64_t L = t.row_len;
    if (L <= 0) return;
    if (rowwise_update(t, plan)) {
      RowwiseUpdate<P, A, C> update(t, ts, plan);
      each_row<P, A, C>([&](int64_t r, const P* g) { update.row(r, g); });
    } else {
      const StepPlan row_plan = row_plan_of(plan);
      const Blocks<P, A, C> update(t, ts, row_plan);
      each_row<P, A, C>([&](int64_t r, const P* g) { update.run(r * L, r * L + L, g); });
    }
  }

  // update(r, g) for every distinct row r of the task, g its summed gradient;
  // the gradient, parameter and accumulator lines of the rows ahead are
  // prefetched (rows are scattered: a miss each).
  template <class P, class A, class C, class Update>
  void each_row(Update&& update) const {
    const int64_t L = t.row_len;
    const GradientRows<P> grads(ts, s, L);
    const int64_t grad_bytes = L * static_cast<int64_t>(sizeof(P));
    const int64_t acc_items = t.rowwise ? 1 : L;
    const int64_t acc_bytes = acc_items * static_cast<int64_t>(sizeof(A));
    const int64_t ahead = rows_ahead(2 * lines_of(grad_bytes) + lines_of(acc_bytes));
    for (int64_t d = d0; d < std::min(d1, d0 + ahead); ++d) {
      prefetch_bytes(grads[d], grad_bytes, false);
    }
    for (int64_t d = d0; d < d1; ++d) {
      if (d + ahead < d1) {
        const int64_t r = s.rows[d + ahead];
        prefetch_bytes(grads[d + ahead], grad_bytes, false);
        prefetch_bytes(static_cast<P*>(t.param) + r * L, grad_bytes, true);
        prefetch_bytes(static_cast<A*>(t.accumulator) + r * acc_items, acc_bytes, true);
      }
      update(s.rows[d], grads[d]);
    }
  }
};

// The summed gradient of the row whose first copy is at position p of a sparse
// gradient; null at a later copy.
template <class P>
struct PositionGradients {
  const P* values;
  const P* sums;
  const int64_t* __restrict slot;
  int64_t row_len;

  PositionGradients(const TensorStep& ts, const SparseRows& s, int64_t row_len_)
      : values(static_cast<const P*>(ts.grad)), sums(reinterpret_cast<const P*>(s.sums.data())),
        slot(s.slot.data()), row_len(row_len_) {}

  const P* operator()(int64_t p) const {
    const int64_t k = slot[p];
    if (k < 0) return values + p * row_len;
    return (k & 1) != 0 ? sums + (k >> 1) * row_len : nullptr;
  }
};

// Rows in index order: each distinct row at its first copy. The gradient rows
// are then one stream, read apart from the scattered table rows: on uniform
// ids, where nearly every row is one copy, the one-thread row-wise step was
// 10-15%, 6-7% and 21-24% faster at widths 16, 64 and 256 than with the
// distinct rows in row order (development host, the two alternated step by
// step in one process, caches cold and warm); the element-wise one, with the
// de-duplication by position (dedup.hpp), 15-29%, 5-14% and 1-6%, and 1-12% on
// two threads. Row-wise Adagrad runs in chunks of kIndexChunk positions, the
// means of the chunk's rows first and their updates after.
constexpr int64_t kIndexChunk = 256;

struct IndexOrderRowsOp {
  const TensorSlots& t;
  const TensorStep& ts;
  const SparseRows& s;
  const StepPlan& plan;
  int64_t p0, p1;

  template <class P, class A, class C>
  void operator()() const {
    if (t.row_len <= 0) return;
    with_ids(ts, [&](const auto* ids) {
      if (rowwise_update(t, plan)) {
        rowwise<P, A, C>(ids);
      } else {
        blocks<P, A, C>(ids);
      }
    });
  }

  // Any other row update (Blocks), with the table's and the state's row of the
  // positions ahead prefetched.
  template <class P, class A, class C, class I>
  void blocks(const I* __restrict ids) const {
    const int64_t L = t.row_len;
    const StepPlan row_plan = row_plan_of(plan);
    const Blocks<P, A, C> update(t, ts, row_plan);
    const PositionGradients<P> gradient(ts, s, L);
    const int64_t row_bytes = L * static_cast<int64_t>(sizeof(P));
    const int64_t acc_items = t.rowwise ? 1 : L;
    const int64_t acc_bytes = acc_items * static_cast<int64_t>(sizeof(A));
    const int64_t ahead = rows_ahead(lines_of(row_bytes) + lines_of(acc_bytes));
    for (int64_t p = p0; p < p1; ++p) {
      if (p + ahead < p1) {
        const int64_t r = ids[p + ahead];
        prefetch_bytes(static_cast<P*>(t.param) + r * L, row_bytes, true);
        prefetch_bytes(static_cast<A*>(t.accumulator) + r * acc_items, acc_bytes, true);
      }
      const P* g = gradient(p);
      if (g != nullptr) update.run(ids[p] * L, ids[p] * L + L, g);
    }
  }

  template <class P, class A, class C, class I>
  void rowwise(const I* __restrict ids) const {
    const int64_t L = t.row_len;
    RowwiseUpdate<P, A, C> update(t, ts, plan);
    const PositionGradients<P> gradient(ts, s, L);
    const int64_t row_bytes = L * static_cast<int64_t>(sizeof(P));
    // The chunk's means first when the gradient is used as is (else each
    // update() needs its own mean() just before). Its rows' accumulator lines
    // are then prefetched in the means pass, and the updates prefetch only the
    // table rows, as many rows ahead as keep the table's and the accumulator's
    // lines in flight: on uniform ids, 64-wide rows, 5-10% faster with one
    // thread and 3-9% with two; 256-wide up to 4%; 16-wide within noise
    // (development host, alternated step by step in one process).
    const bool means_first = update.gradient_as_is;  // implies P == C
    const int64_t ahead =
        rows_ahead(means_first ? lines_of(row_bytes) + 1 : 2 * lines_of(row_bytes) + 1);
    C means[kIndexChunk];
    double totals[kIndexChunk];
    for (int64_t c0 = p0; c0 < p1; c0 += kIndexChunk) {
      const int64_t c1 = std::min(p1, c0 + kIndexChunk);
      if constexpr (std::is_same_v<P, C>) {
        if (means_first) {
          for (int64_t p = c0; p < c1; ++p) {
            prefetch_bytes(static_cast<A*>(t.accumulator) + ids[p], sizeof(A), true);
            const P* g = gradient(p);
            totals[p - c0] = g != nullptr ? update.square_total(g) : 0.0;
          }
          // The divisions in one vector loop, not one per row: on 16-wide rows
          // the one-thread step was 3-5% faster warm, 2-3% cold.
          for (int64_t i = 0; i < c1 - c0; ++i) means[i] = update.mean_of_total(totals[i]);
        }
      }
      for (int64_t p = c0; p < c1; ++p) {
        if (p + ahead < p1) {
          const int64_t r = ids[p + ahead];
          prefetch_bytes(static_cast<P*>(t.param) + r * L, row_bytes, true);
          if (!means_first) prefetch_bytes(static_cast<A*>(t.accumulator) + r, sizeof(A), true);
        }
        const P* g = gradient(p);
        if (g == nullptr) continue;
        const int64_t r = ids[p];
        update.update(r, g, means_first ? means[p - c0] : update.mean(r, g));
      }
    }
  }
};

struct ReduceRowsOp {
  const TensorSlots& t;
  const TensorStep& ts;
  const SparseRows& s;
  const StepPlan& plan;
  int64_t d0, d1;
  ReduceResult* out;

  template <class P, class A, class C>
  void operator()() const {
    const int64_t L = t.row_len;
    const GradientRows<P> grads(ts, s, L);
    for (int64_t d = d0; d < d1; ++d) {
      if (L <= 0) {
        out[d - d0] = {0.0, true};
        continue;
      }
      const DenseView v = dense_view(t, ts, s.rows[d] * L, L, grads[d]);
      out[d - d0] = reduce_item(v.slots, v.step, plan, 0, L);
    }
  }
};

struct GatherOp {
  const TensorSlots& t;
  const TensorStep& ts;
  const SparseRows& s;
  int64_t begin, end;
  void* buf;

  template <class P, class A, class C>
  void operator()() const {
    const int64_t L = t.row_len;
    if (L <= 0 || end <= begin) return;
    P* __restrict out = static_cast<P*>(buf);
    const GradientRows<P> grads(ts, s, L);
    const int64_t r_lo = begin / L, r_hi = (end - 1) / L;
    auto it = std::lower_bound(s.rows.begin(), s.rows.end(), r_lo);
    for (; it != s.rows.end() && *it <= r_hi; ++it) {
      const int64_t d = it - s.rows.begin();
      const int64_t r = *it;
      const int64_t lo = std::max(begin, r * L), hi = std::min(end, (r + 1) * L);
      std::memcpy(out + (lo - begin), grads[d] + (lo - r * L),
                  static_cast<size_t>(hi - lo) * sizeof(P));
    }
  }
};

struct RowwiseOp {
  const TensorSlots& t;
  const TensorStep& ts;
  const StepPlan& plan;
  int64_t r0, r1;
  const void* grad_rows;

  // Rows [r0, r1) of t, whose gradient rows are consecutive at grad_rows.
  template <class P, class A, class C>
  void operator()() const {
    const int64_t L = t.row_len;
    if (L <= 0 || r1 <= r0) return;
    RowwiseUpdate<P, A, C> update(t, ts, plan);
    const P* g = static_cast<const P*>(grad_rows);
    for (int64_t r = r0; r < r1; ++r) {
      if (r + 4 < r1) {  // consecutive rows: their first lines, 4 rows ahead
        prefetch_bytes(static_cast<P*>(t.param) + (r + 4) * L,
                       std::min<int64_t>(512, L * static_cast<int64_t>(sizeof(P))), true);
      }
      update.row(r, g + (r - r0) * L);
    }
  }
};

}  // namespace

void sparse_sums(const TensorSlots& t, const TensorStep& ts, SparseRows& s, int64_t m0,
                 int64_t m1) {
  dispatch_dtypes(t, SumsOp{t, ts, s, m0, m1});
}

void sparse_rows(const TensorSlots& t, const TensorStep& ts, const SparseRows& s,
                 const StepPlan& plan, int64_t d0, int64_t d1) {
  dispatch_dtypes(t, RowsOp{t, ts, s, plan, d0, d1});
}

void sparse_rows_in_index_order(const TensorSlots& t, const TensorStep& ts, const SparseRows& s,
                                const StepPlan& plan, int64_t p0, int64_t p1) {
  dispatch_dtypes(t, IndexOrderRowsOp{t, ts, s, plan, p0, p1});
}

void sparse_reduce_rows(const TensorSlots& t, const TensorStep& ts, const SparseRows& s,
                        const StepPlan& plan, int64_t d0, int64_t d1, ReduceResult* out) {
  dispatch_dtypes(t, ReduceRowsOp{t, ts, s, plan, d0, d1, out});
}

void sparse_gather(const TensorSlots& t, const TensorStep& ts, const SparseRows& s, int64_t begin,
                   int64_t end, void* buf) {
  dispatch_dtypes(t, GatherOp{t, ts, s, begin, end, buf});
}

void rowwise_rows(const TensorSlots& t, const TensorStep& ts, const StepPlan& plan, int64_t r0,
                  int64_t r1, const void* grad_rows) {
  dispatch_dtypes(t, RowwiseOp{t, ts, plan, r0, r1, grad_rows});
}

}  // namespace adagrad::ADAGRAD_ISA_NS
