#include "roofline.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "dispatch.hpp"

namespace adagrad {

// Each compiled ISA's probe loops (roofline_kernel.cpp), best first as in dispatch.cpp.
#define ADAGRAD_ISA(name)                \
  namespace isa_##name {                 \
    extern const ProbeKernels probe_set; \
  }
ADAGRAD_COMPILED_ISAS
#undef ADAGRAD_ISA

namespace {

// The probe loops of the ISA the step uses now.
const ProbeKernels& probe_kernels() {
#define ADAGRAD_ISA(name) &isa_##name::probe_set,
  static const ProbeKernels* const all[] = {ADAGRAD_COMPILED_ISAS};
#undef ADAGRAD_ISA
  const char* active = kernels().isa;
  for (const ProbeKernels* k : all) {
    if (std::strcmp(k->isa, active) == 0) return *k;
  }
  return *all[0];  // unreachable: every compiled ISA has its probe loops
}

// Elements a row task moves, as the sparse step's row tasks.
constexpr int64_t kRowTaskElements = 16384;

}  // namespace

StreamProbe::StreamProbe(std::vector<ProbeTensor> tensors)
    : tensors_(std::move(tensors)), work_(make_work_list(sizes_of(tensors_))) {}

void StreamProbe::run() const {
  const auto probe_item = probe_kernels().probe_item;
  for_each_item(work_, [&](int64_t i) {
    const WorkItem& item = work_.items[i];
    probe_item(tensors_[item.tensor], item.begin, item.end);
  });
}

RowsProbe::RowsProbe(std::vector<ProbeTable> tables, std::vector<int64_t> rows)
    : tables_(std::move(tables)), rows_(std::move(rows)) {
  int64_t per_row = 0;
  for (const ProbeTable& t : tables_) per_row += t.row_len;
  rows_per_task_ = std::max<int64_t>(1, kRowTaskElements / std::max<int64_t>(1, per_row));
}

void RowsProbe::run() const {
  const auto probe_rows = probe_kernels().probe_rows;
  const int64_t n = static_cast<int64_t>(rows_.size());
  const int64_t n_tasks = (n + rows_per_task_ - 1) / rows_per_task_;
  parallel_for(n_tasks, [&](int64_t task) {
    const int64_t r0 = task * rows_per_task_;
    probe_rows(tables_, rows_.data() + r0, std::min(rows_per_task_, n - r0));
  });
}

}  // namespace adagrad
