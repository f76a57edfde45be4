// A range of a tensor's elements as a tensor of its own, so the element-wise
// kernels run on [0, n) of it. Used by the step and by the sparse kernels.
#pragma once

#include <cstddef>
#include <cstdint>

#include "step.hpp"

namespace adagrad {

// Internal linkage: this header is also compiled into every ISA's kernels, and
// an inline function with external linkage built with AVX-512 flags could be
// picked by the linker for the baseline path.
namespace {

// Bytes of each storage type.
inline size_t dtype_bytes(DType d) {
  switch (d) {
    case DType::f64:
      return 8;
    case DType::f16:
    case DType::bf16:
      return 2;
    case DType::f32:
    default:
      return 4;
  }
}

// The slots of elements [begin, begin + n) of a tensor (whole rows [begin / L,
// ...) of the row-wise accumulator when the tensor is row-wise), as a tensor of
// its own: kernels then run on [0, n) of it. Null slots stay null.
inline TensorSlots offset_slots(const TensorSlots& t, int64_t begin, int64_t n) {
  auto at = [](void* p, int64_t elems, DType d) -> void* {
    return p == nullptr ? nullptr
                        : static_cast<void*>(static_cast<unsigned char*>(p) +
                                             elems * static_cast<int64_t>(dtype_bytes(d)));
  };
  TensorSlots s = t;
  const int64_t acc_begin = t.rowwise && t.row_len > 0 ? begin / t.row_len : begin;
  s.param = at(t.param, begin, t.dtype);
  s.accumulator = at(t.accumulator, acc_begin, t.accumulator_dtype);
  s.average = at(t.average, begin, t.dtype);
  s.grad_accumulator = at(t.grad_accumulator, begin, t.dtype);
  s.size = n;
  s.rows = t.row_len > 0 ? n / t.row_len : 0;
  return s;
}

// Elements [begin, begin + n) of a tensor with `grad` as their dense gradient
// (n values of the parameter dtype), e.g. the summed copies of one row of a
// sparse gradient: a dense kernel run on [0, n) of it updates just those
// elements, exactly as under the whole dense gradient.
struct DenseView {
  TensorSlots slots;
  TensorStep step;
};
inline DenseView dense_view(const TensorSlots& t, const TensorStep& ts, int64_t begin, int64_t n,
                            const void* grad) {
  DenseView v{offset_slots(t, begin, n), ts};
  v.step.sparse = false;
  v.step.grad = grad;
  return v;
}

}  // namespace
}  // namespace adagrad
