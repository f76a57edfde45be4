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
#include "update.hpp"

namespace adagrad::ADAGRAD_ISA_NS {
namespace {

// How far ahead a row task prefetches, in bytes of each stream: rows are
// scattered (a DRAM or L3 miss each), so the lines of the next few kilobytes
// must be on their way while the current row is summed and updated.
constexpr int64_t kAheadBytes = 4096;
constexpr int64_t kMaxAheadRows = 16;
constexpr int kMeanLanes = 8;  // lanes of the row-wise mean (fixed order)

inline void prefetch_bytes(const void* p, int64_t bytes, bool write) {
  const char* c = static_cast<const char*>(p);
  for (int64_t i = 0; i < bytes; i += 64) {
    if (write) {
      __builtin_prefetch(c + i, 1, 3);
    } else {
      __builtin_prefetch(c + i, 0, 3);
    }
  }
}

// n items of per-thread scratch, kept for the thread's next tasks (a step has
// hundreds of row tasks; each would otherwise allocate and zero its own).
// `Use` tells apart scratch buffers of one type that are live together.
template <class T, int Use>
T* scratch(int64_t n) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < static_cast<size_t>(n)) buffer.resize(static_cast<size_t>(n));
  return buffer.data();
}
enum : int { kSumScratch, kRowScratch };

// Items ahead so that about kAheadBytes of a stream of `bytes`-long items are in flight.
inline int64_t items_ahead(int64_t bytes) {
  return std::clamp<int64_t>(kAheadBytes / std::max<int64_t>(bytes, 1), 2, kMaxAheadRows);
}

// The copies of a task's distinct rows, in the order they are summed: position p
// of `order` is value row order[p]. Reading position p prefetches position p + ahead.
template <class P>
struct Copies {
  const P* values;
  const int64_t* order;
  int64_t row_len;
  int64_t end;     // first position past the task's copies
  int64_t off, n;  // the part [off, off + n) of each row that is read
  int64_t ahead;

  Copies(const TensorStep& ts, const SparseRows& s, int64_t row_len_, int64_t d1, int64_t off_,
         int64_t n_)
      : values(static_cast<const P*>(ts.grad)), order(s.order.data()), row_len(row_len_),
        end(s.start[d1]), off(off_), n(n_),
        ahead(items_ahead(n_ * static_cast<int64_t>(sizeof(P)))) {}

  const P* row(int64_t p) const { return values + order[p] * row_len + off; }
  const P* read(int64_t p) const {
    if (p + ahead < end) prefetch_bytes(row(p + ahead), n * static_cast<int64_t>(sizeof(P)), false);
    return row(p);
  }
  // The first copies' lines, before the task reads its first row.
  void start(int64_t p) const {
    for (int64_t q = p; q < std::min(end, p + ahead); ++q) {
      prefetch_bytes(row(q), n * static_cast<int64_t>(sizeof(P)), false);
    }
  }
};

// Columns summed at a time: 256 bytes of the compute type, whose partial sums
// stay in registers over all the copies of a row (4 AVX-512 or 8 AVX2 ones).
template <class C>
constexpr int64_t kSumColumns = 256 / static_cast<int64_t>(sizeof(C));

// The summed gradient of distinct row d (its part read by `copies`): a pointer
// into the values when the row has one copy, else the sum written to out. The
// copies are added in index order, the sum rounded to P after every addition.
template <class P, class C>
const P* summed_row(const Copies<P>& copies, const SparseRows& s, int64_t d, P* __restrict out) {
  const int64_t first = s.start[d], last = s.start[d + 1];
  const P* __restrict x0 = copies.read(first);
  if (last - first == 1) return x0;
  constexpr int64_t W = kSumColumns<C>;
  const int64_t n = copies.n;
  int64_t c = 0;
  for (; c + W <= n; c += W) {
    C sum[W];
    for (int64_t j = 0; j < W; ++j) sum[j] = to_c<C>(x0[c + j]);
    for (int64_t k = first + 1; k < last; ++k) {
      // The first pass over the copies prefetches ahead; later ones find them cached.
      const P* __restrict x = (c == 0 ? copies.read(k) : copies.row(k)) + c;
      for (int64_t j = 0; j < W; ++j) sum[j] = to_c<C>(from_c<P>(sum[j] + to_c<C>(x[j])));
    }
    for (int64_t j = 0; j < W; ++j) out[c + j] = from_c<P>(sum[j]);
  }
  if (c < n) {  // the last n - c < W columns, summed in out
    for (int64_t j = c; j < n; ++j) out[j] = x0[j];
    for (int64_t k = first + 1; k < last; ++k) {
      const P* __restrict x = c == 0 ? copies.read(k) : copies.row(k);
      for (int64_t j = c; j < n; ++j) out[j] = from_c<P>(to_c<C>(out[j]) + to_c<C>(x[j]));
    }
  }
  return out;
}

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
  C* g_row;  // the clipped gradient of the row (L items)

  RowwiseUpdate(const TensorSlots& t_, const TensorStep& ts, const StepPlan& plan_)
      : t(t_), plan(plan_), clip(plan_, ts), ema(plan_), lr(static_cast<C>(plan_.learning_rate)),
        eps(static_cast<C>(plan_.epsilon)), wd(static_cast<C>(plan_.weight_decay)),
        decay(t_.weight_decay && plan_.weight_decay != 0.0),
        update_gacc(plan_.phase == Phase::accumulate_update && t_.grad_accumulator != nullptr),
        g_row(scratch<C, kRowScratch>(t_.row_len)) {}

  // Row r, whose gradient is grad[0, L).
  void row(int64_t r, const P* grad) {
    const int64_t L = t.row_len;
    const int64_t e0 = r * L;  // the row's first element
    alignas(64) C gbuf[kBlock];
    alignas(64) C sbuf[kBlock];
    alignas(64) C vbuf[kBlock];
    double lanes[kMeanLanes] = {};
    for (int64_t b = 0; b < L; b += kBlock) {
      const int64_t n = block_len(b, L);
      const C* g = prepared_gradient<P, C>(t, grad + b, plan, e0 + b, n, gbuf, sbuf);
      if (update_gacc) {
        P* __restrict ga = static_cast<P*>(t.grad_accumulator) + e0 + b;
        for (int64_t i = 0; i < n; ++i) ga[i] = from_c<P>(C(0));
      }
      C* __restrict out = g_row + b;
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
    A* acc = static_cast<A*>(t.accumulator) + r;
    const C a = to_c<C>(acc[0]) + mean;
    acc[0] = from_c<A>(a);
    canonical_nans(acc, 1);
    const C denom = sqrt_c(a + eps);
    for (int64_t b = 0; b < L; b += kBlock) {
      const int64_t n = block_len(b, L);
      P* vp = static_cast<P*>(t.param) + e0 + b;
      C* __restrict v = load_view<C>(vp, vbuf, n);
      const C* __restrict g = g_row + b;
      if (decay) {
        for (int64_t i = 0; i < n; ++i) v[i] = v[i] - v[i] * wd * lr;
      }
      for (int64_t i = 0; i < n; ++i) v[i] = v[i] - (lr * g[i]) / denom;
      canonicalize_nans(v, n);
      store_view(vp, v, n);
      if (plan.ema && t.average != nullptr) {
        // As the dense kernel: the EMA follows the stored value of v (rounded to P).
        ema.apply(load_view<C>(vp, vbuf, n), static_cast<P*>(t.average) + e0 + b, vp, n);
      }
    }
  }
};

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
    if (t.rowwise && plan.phase != Phase::accumulate && !t.overwrite) {
      RowwiseUpdate<P, A, C> update(t, ts, plan);
      each_row<P, A, C>([&](int64_t r, const P* g) { update.row(r, g); });
    } else {
      const Blocks<P, A, C> update(t, ts, plan);
      each_row<P, A, C>([&](int64_t r, const P* g) { update.run(r * L, r * L + L, g); });
    }
  }

  // update(r, g) for every distinct row r of the task, g its summed gradient;
  // the parameter and accumulator rows ahead are prefetched, like the copies.
  template <class P, class A, class C, class Update>
  void each_row(Update&& update) const {
    const int64_t L = t.row_len;
    P* sum = scratch<P, kSumScratch>(L);
    const Copies<P> copies(ts, s, L, d1, 0, L);
    const int64_t param_bytes = L * static_cast<int64_t>(sizeof(P));
    const int64_t acc_items = t.rowwise ? 1 : L;
    const int64_t acc_bytes = acc_items * static_cast<int64_t>(sizeof(A));
    const int64_t rows_ahead = items_ahead(param_bytes + acc_bytes);
    copies.start(s.start[d0]);
    for (int64_t d = d0; d < d1; ++d) {
      if (d + rows_ahead < d1) {
        const int64_t ahead = s.rows[d + rows_ahead];
        prefetch_bytes(static_cast<P*>(t.param) + ahead * L, param_bytes, true);
        prefetch_bytes(static_cast<A*>(t.accumulator) + ahead * acc_items, acc_bytes, true);
      }
      update(s.rows[d], summed_row<P, C>(copies, s, d, sum));
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
    P* sum = scratch<P, kSumScratch>(L);
    const Copies<P> copies(ts, s, std::max<int64_t>(L, 1), d1, 0, L);
    for (int64_t d = d0; d < d1; ++d) {
      if (L <= 0) {
        out[d - d0] = {0.0, true};
        continue;
      }
      const P* g = summed_row<P, C>(copies, s, d, sum);
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
      const Copies<P> copies(ts, s, L, d + 1, lo - r * L, hi - lo);
      const P* g = summed_row<P, C>(copies, s, d, dst);
      if (g != dst) std::memcpy(dst, g, static_cast<size_t>(hi - lo) * sizeof(P));
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
