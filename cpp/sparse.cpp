// Row-sparse gradients and row-wise Adagrad, compiled once per ISA.
//
// A sparse gradient is first de-duplicated (dedup.cpp): each distinct row then
// gets the sum of its copies, in index order, rounded to the parameter dtype
// after every addition -- exactly the dense gradient np.add.at would build.
// The update of a row is the dense kernel run on that row as a tensor of its
// own, so a touched row gets the same bits as under the dense gradient.
#include "sparse.hpp"

#include <algorithm>
#include <vector>

#include "clip.hpp"
#include "ema.hpp"
#include "kernel_common.hpp"
#include "kernels.hpp"
#include "tensor_range.hpp"

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

// Rows ahead of the current one whose parameter and accumulator lines are
// prefetched: far enough to hide a DRAM miss behind the work on a 64-wide row.
constexpr int64_t kPrefetchRows = 4;
constexpr int64_t kPrefetchLines = 8;  // at most 512 bytes of each row
constexpr int kMeanLanes = 8;          // lanes of the row-wise mean (fixed order)

inline void prefetch_bytes(const void* p, int64_t bytes, bool write) {
  const char* c = static_cast<const char*>(p);
  const int64_t n = std::min<int64_t>(kPrefetchLines, (bytes + 63) / 64);
  for (int64_t i = 0; i < n; ++i) {
    if (write) {
      __builtin_prefetch(c + 64 * i, 1, 3);
    } else {
      __builtin_prefetch(c + 64 * i, 0, 3);
    }
  }
}

// Elements [off, off + n) of the summed gradient of distinct row d: a pointer
// into the values when the row has one copy, else the sum written to out.
template <class P, class C>
const P* summed_row(const TensorStep& ts, const SparseRows& s, int64_t row_len, int64_t d,
                    int64_t off, int64_t n, P* __restrict out) {
  const P* values = static_cast<const P*>(ts.grad);
  const int64_t first = s.start[d], last = s.start[d + 1];
  const P* __restrict x0 = values + s.order[first] * row_len + off;
  if (last - first == 1) return x0;
  for (int64_t j = 0; j < n; ++j) out[j] = x0[j];
  const int64_t bytes = n * static_cast<int64_t>(sizeof(P));
  for (int64_t k = first + 1; k < std::min(last, first + 1 + kPrefetchRows); ++k) {
    prefetch_bytes(values + s.order[k] * row_len + off, bytes, false);
  }
  for (int64_t k = first + 1; k < last; ++k) {
    // The copies are scattered over the values: fetch a few ahead (DRAM latency).
    if (k + kPrefetchRows < last) {
      prefetch_bytes(values + s.order[k + kPrefetchRows] * row_len + off, bytes, false);
    }
    const P* __restrict x = values + s.order[k] * row_len + off;
    for (int64_t j = 0; j < n; ++j) out[j] = from_c<P>(to_c<C>(out[j]) + to_c<C>(x[j]));
  }
  return out;
}

// Row-wise Adagrad on rows [r0, r1) of t; the gradient of row r is at
// g_rows + (r - r0) * L. Per row: the prepared, clipped gradient g; decay;
// acc += mean(g^2); v -= lr * g / sqrt(acc + eps); EMA. The mean is a float64
// sum of squares in kMeanLanes lanes (element j in lane j % kMeanLanes, each
// lane summed in element order, lanes combined by a fixed halving tree),
// divided by L, then rounded to the compute type: the same bits for any
// thread count and ISA.
template <class P, class A, class C>
void rowwise_impl(const TensorSlots& t, const TensorStep& ts, const StepPlan& plan, int64_t r0,
                  int64_t r1, const P* g_rows, std::vector<C>& row) {
  const int64_t L = t.row_len;
  if (L <= 0 || r1 <= r0) return;
  if (row.size() < static_cast<size_t>(L)) row.resize(static_cast<size_t>(L));
  const GradClip<C> clip(plan, ts);
  const C lr = static_cast<C>(plan.learning_rate), eps = static_cast<C>(plan.epsilon);
  const C wd = static_cast<C>(plan.weight_decay);
  const Ema<P, C> ema(plan);
  const bool decay = t.weight_decay && plan.weight_decay != 0.0;
  const bool update_gacc = plan.phase == Phase::accumulate_update && t.grad_accumulator != nullptr;
  alignas(64) C gbuf[kBlock];
  alignas(64) C sbuf[kBlock];
  alignas(64) C vbuf[kBlock];
  for (int64_t r = r0; r < r1; ++r) {
    if (r + kPrefetchRows < r1) {
      prefetch_bytes(static_cast<P*>(t.param) + (r + kPrefetchRows) * L,
                     L * static_cast<int64_t>(sizeof(P)), true);
    }
    const auto [sub, st] = dense_view(t, ts, r * L, L, g_rows + (r - r0) * L);
    double lanes[kMeanLanes] = {};
    for (int64_t b = 0; b < L; b += kBlock) {
      const int64_t n = block_len(b, L);
      const C* g = prepared_gradient<P, C>(sub, st, plan, b, n, gbuf, sbuf);
      if (update_gacc) {
        P* __restrict ga = static_cast<P*>(sub.grad_accumulator) + b;
        for (int64_t i = 0; i < n; ++i) ga[i] = from_c<P>(C(0));
      }
      C* __restrict out = row.data() + b;
      clip.apply(g, out, n);
      int64_t i = 0;
      for (; i + kMeanLanes <= n; i += kMeanLanes) {
        for (int j = 0; j < kMeanLanes; ++j) {
          const double x = static_cast<double>(out[i + j]);
          lanes[j] += x * x;
        }
      }
      for (; i < n; ++i) {  // tail; kBlock is a multiple of kMeanLanes
        const double x = static_cast<double>(out[i]);
        lanes[i % kMeanLanes] += x * x;
      }
    }
    for (int width = kMeanLanes / 2; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
    }
    const C mean = static_cast<C>(lanes[0] / static_cast<double>(L));
    A* acc = static_cast<A*>(sub.accumulator);
    const C a = to_c<C>(acc[0]) + mean;
    acc[0] = from_c<A>(a);
    canonical_nans(acc, 1);
    const C denom = sqrt_c(a + eps);
    for (int64_t b = 0; b < L; b += kBlock) {
      const int64_t n = block_len(b, L);
      P* vp = static_cast<P*>(sub.param) + b;
      C* __restrict v = load_view<C>(vp, vbuf, n);
      const C* __restrict g = row.data() + b;
      if (decay) {
        for (int64_t i = 0; i < n; ++i) v[i] = v[i] - v[i] * wd * lr;
      }
      for (int64_t i = 0; i < n; ++i) v[i] = v[i] - (lr * g[i]) / denom;
      canonicalize_nans(v, n);
      store_view(vp, v, n);
      if (plan.ema && sub.average != nullptr) {
        // As the dense kernel: the EMA follows the stored value of v (rounded to P).
        ema.apply(load_view<C>(vp, vbuf, n), static_cast<P*>(sub.average) + b, vp, n);
      }
    }
  }
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
    std::vector<P> sum(static_cast<size_t>(L));
    std::vector<C> row;  // row-wise scratch, sized on first use
    const bool rowwise = t.rowwise && plan.phase != Phase::accumulate && !t.overwrite;
    // Under torch's formula a row takes the operation order of torch's sparse path.
    StepPlan row_plan = plan;
    if (plan.formula == Formula::torch) row_plan.formula = Formula::torch_sparse;
    for (int64_t d = d0; d < d1; ++d) {
      if (d + kPrefetchRows < d1) {
        const int64_t ahead = s.rows[d + kPrefetchRows];
        prefetch_bytes(static_cast<P*>(t.param) + ahead * L, L * static_cast<int64_t>(sizeof(P)),
                       true);
        if (!t.rowwise) {
          prefetch_bytes(static_cast<A*>(t.accumulator) + ahead * L,
                         L * static_cast<int64_t>(sizeof(A)), true);
        }
        prefetch_bytes(static_cast<const P*>(ts.grad) + s.order[s.start[d + kPrefetchRows]] * L,
                       L * static_cast<int64_t>(sizeof(P)), false);
      }
      const int64_t r = s.rows[d];
      const P* g = summed_row<P, C>(ts, s, L, d, 0, L, sum.data());
      if (rowwise) {
        rowwise_impl<P, A, C>(t, ts, plan, r, r + 1, g, row);
      } else {
        const DenseView v = dense_view(t, ts, r * L, L, g);
        dense_item(v.slots, v.step, row_plan, 0, L);
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
    std::vector<P> sum(static_cast<size_t>(L > 0 ? L : 1));
    for (int64_t d = d0; d < d1; ++d) {
      if (L <= 0) {
        out[d - d0] = {0.0, true};
        continue;
      }
      const P* g = summed_row<P, C>(ts, s, L, d, 0, L, sum.data());
      const DenseView v = dense_view(t, ts, s.rows[d] * L, L, g);
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
    const int64_t r_lo = begin / L, r_hi = (end - 1) / L;
    auto it = std::lower_bound(s.rows.begin(), s.rows.end(), r_lo);
    for (; it != s.rows.end() && *it <= r_hi; ++it) {
      const int64_t d = it - s.rows.begin();
      const int64_t r = *it;
      const int64_t lo = std::max(begin, r * L), hi = std::min(end, (r + 1) * L);
      P* dst = out + (lo - begin);
      const P* g = summed_row<P, C>(ts, s, L, d, lo - r * L, hi - lo, dst);
      if (g != dst) std::memcpy(dst, g, static_cast<size_t>(hi - lo) * sizeof(P));
    }
  }
};

struct RowwiseOp {
  const TensorSlots& t;
  const TensorStep& ts;
  const StepPlan& plan;
  int64_t r0, r1;
  const void* g;

  template <class P, class A, class C>
  void operator()() const {
    std::vector<C> row;
    rowwise_impl<P, A, C>(t, ts, plan, r0, r1, static_cast<const P*>(g), row);
  }
};

}  // namespace

void sparse_rows(const TensorSlots& t, const TensorStep& ts, const SparseRows& s,
                 const StepPlan& plan, int64_t d0, int64_t d1) {
  dispatch_dtypes(t, RowsOp{t, ts, s, plan, d0, d1});
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
