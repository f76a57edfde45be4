// The only contract between Python and C++: what a tensor's buffers are
// (TensorSlots, fixed at build), and what one step does (StepPlan, per call).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "parallel.hpp"

namespace adagrad {
struct SparseRows;
}

namespace adagrad {

enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

// The buffers of one trainable variable. Optional slots are null when absent.
// Python keeps the arrays alive and never re-allocates them.
struct TensorSlots {
  void* param = nullptr;
  void* accumulator = nullptr;       // null for overwrite_with_gradient variables
  void* average = nullptr;           // EMA average; null unless use_ema
  void* grad_accumulator = nullptr;  // null unless gradient accumulation
  int64_t size = 0;
  DType dtype = DType::f32;              // parameter, gradient, average, gradient accumulator
  DType accumulator_dtype = DType::f32;  // the Adagrad accumulator (may be wider)
  bool weight_decay = true;              // false when excluded from weight decay
  bool overwrite = false;                // overwrite_with_gradient: v = g, no Adagrad
  // Row-wise Adagrad: one accumulator element per row (accumulator has `rows`
  // elements). Only for variables with 2+ dimensions.
  bool rowwise = false;
  int64_t rows = 0;     // the first dimension (0 for a 0-d variable)
  int64_t row_len = 0;  // elements per row: size / rows
};

// Which part of a gradient-accumulation cycle this call is.
enum class Phase : int {
  update = 0,             // no accumulation: a plain step
  accumulate = 1,         // micro-step: gacc += g, parameters untouched
  accumulate_update = 2,  // g = (g + gacc) / k, gacc = 0, then a plain step
};

enum class Clip : int { none = 0, norm = 1, global_norm = 2, value = 3 };

// Whose operation order the Adagrad update follows (each a switch in the one
// element loop of dense.cpp). The torch formulas use a correctly rounded fma
// where torch's kernels compute one, on every ISA path.
enum class Formula : int {
  // Keras 3: v -= v*wd*lr; acc += g*g; v -= lr*g / sqrt(acc + eps).
  keras = 0,
  // torch.optim.Adagrad(fused=True): g = -g if maximize; g = fma(wd, v, g);
  // acc = fma(g, g, acc); v -= lr*g / (sqrt(acc) + eps).
  torch = 1,
  // torch's sparse-gradient path (what the rows of a sparse gradient get under
  // `torch`): acc += g*g; v = fma(-lr, g / (sqrt(acc) + eps), v).
  torch_sparse = 2,
};

// One tensor's own scalars for a step, replacing the plan's: torch's parameter
// groups each have their own, and each parameter's step count makes its
// learning rate lr / (1 + (step - 1) * lr_decay) its own.
struct TensorScalars {
  double learning_rate = 0.0;
  double epsilon = 0.0;
  double weight_decay = 0.0;
  bool maximize = false;
};

// Scalars of one step. Python decides every policy (schedule, phase, EMA
// momentum for this iteration); C++ only applies them.
struct StepPlan {
  double learning_rate = 0.001;
  double epsilon = 1e-7;
  double weight_decay = 0.0;  // 0: off
  Clip clip = Clip::none;
  double clip_value = 0.0;
  double loss_scale = 0.0;  // 0: off; otherwise g is divided by it
  Phase phase = Phase::update;
  int64_t accumulation_steps = 1;
  bool ema = false;
  double ema_momentum = 0.0;  // effective momentum: 0 on the first iteration
  bool ema_overwrite = false;
  bool check_finite = false;  // find non-finite gradients before writing anything
  // On an accumulation update step, also zero the gradient accumulators of
  // variables without a gradient this call (Keras' update step resets all).
  bool reset_idle_accumulators = true;
  // Row-sparse gradients: weight decay and EMA only on the touched rows
  // (a documented deviation from dense semantics), instead of a full pass.
  bool sparse_lazy = false;
  Formula formula = Formula::keras;
  bool maximize = false;  // torch formulas: the gradient is negated (ascent)
  // Empty, or one entry per tensor that replaces learning_rate, epsilon,
  // weight_decay and maximize for that tensor (shared: copies of a plan are cheap).
  std::shared_ptr<const std::vector<TensorScalars>> per_tensor;
};

// Per-call, per-tensor inputs.
struct TensorStep {
  const void* grad = nullptr;  // null: no gradient this step; sparse: the values
  double norm = 0.0;           // clip norm input (per-tensor or global), from pass 1
  // A row-sparse gradient: `grad` holds n_indices rows of row_len elements,
  // row i belonging to row indices[i] (validated: 0 <= id < rows) of the tensor.
  bool sparse = false;
  const void* indices = nullptr;
  int64_t n_indices = 0;
  int index_bytes = 8;  // 4 (int32) or 8 (int64)
  // This tensor's entry of plan.per_tensor (set by run_step); null: the plan's scalars.
  const TensorScalars* scalars = nullptr;
};

// Whether tensor t's update is row-wise Adagrad's (not an accumulation or overwrite).
inline bool rowwise_update(const TensorSlots& t, const StepPlan& plan) {
  return t.rowwise && plan.phase != Phase::accumulate && !t.overwrite;
}

// fn(ids) with the row ids of a sparse gradient as the type they are stored in.
template <class Fn>
inline decltype(auto) with_ids(const TensorStep& ts, Fn&& fn) {
  if (ts.index_bytes == 4) return fn(static_cast<const int32_t*>(ts.indices));
  return fn(static_cast<const int64_t*>(ts.indices));
}

struct StepResult {
  bool finite = true;
  int64_t first_nonfinite = -1;  // tensor index, when !finite
  bool applied = true;           // false when check_finite stopped the step
};

// All trainable variables of one optimizer, with the work list cut once.
class SlotGroup {
 public:
  // `chunk`: the work-item size (0: the core's choice for these tensors).
  explicit SlotGroup(std::vector<TensorSlots> tensors, int64_t chunk = 0);
  const std::vector<TensorSlots>& tensors() const { return tensors_; }
  const WorkList& work() const { return work_; }
  // Per-item partial sums of squares; scratch reused by every step.
  std::vector<double>& partial_sums() { return partial_sums_; }
  std::vector<unsigned char>& partial_finite() { return partial_finite_; }
  // One de-duplication result per tensor (used by sparse gradients only).
  std::vector<SparseRows>& sparse_rows();

 private:
  std::vector<TensorSlots> tensors_;
  WorkList work_;
  std::vector<double> partial_sums_;
  std::vector<unsigned char> partial_finite_;
  std::shared_ptr<std::vector<SparseRows>> sparse_rows_;
};

// The one norm fold: the partial sums of squares and finiteness of every work item
// (or distinct row) of a step, each tagged with its tensor, added per tensor in the
// order given, in float64. Norms follow Keras (the square root of a positive sum; a
// NaN sum stays NaN); `global` gives every tensor the norm of all counted tensors.
// A distributed step folds every rank's partial sums with it, in one process's
// item order, so its norms and finiteness verdict are one process's.
struct Folded {
  std::vector<double> norms;     // per tensor
  int64_t first_nonfinite = -1;  // the smallest tensor with a non-finite entry
};
Folded fold_norms(const std::vector<int32_t>& tensor_of, const double* sums,
                  const unsigned char* finite, const std::vector<unsigned char>& counted,
                  bool global);

// Runs one whole step over every tensor. `steps` is aligned with the group's
// tensors. Thread-safe for distinct groups; one group is used by one caller
// at a time (the Python optimizer holds a lock).
// `norms`, when given, are each tensor's clip norm from fold_norms over partial
// sums gathered elsewhere (a distributed step): pass 1 is skipped.
StepResult run_step(SlotGroup& group, std::vector<TensorStep>& steps, const StepPlan& plan,
                    const std::vector<double>* norms = nullptr);

// Whether the step would find every gradient finite (plan.check_finite's verdict,
// on the gradients as passed, row-sparse ones with their duplicates summed):
// -1, or the smallest tensor that is not. Nothing is written.
int64_t run_check(SlotGroup& group, std::vector<TensorStep>& steps, const StepPlan& plan);

// Pass 1 alone, over dense gradients: each work item's sum of squares and
// finiteness, into group.partial_sums() and group.partial_finite(). Nothing
// is written to any tensor.
void run_partials(SlotGroup& group, std::vector<TensorStep>& steps, const StepPlan& plan);

}  // namespace adagrad
