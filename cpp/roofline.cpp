#include "roofline.hpp"

#include <utility>

#include "dispatch.hpp"

namespace adagrad {

StreamProbe::StreamProbe(std::vector<ProbeTensor> tensors)
    : tensors_(std::move(tensors)), work_(make_work_list(sizes_of(tensors_))) {}

void StreamProbe::run() const {
  const auto probe_item = kernels().probe_item;
  for_each_item(work_, [&](int64_t i) {
    const WorkItem& item = work_.items[i];
    probe_item(tensors_[item.tensor], item.begin, item.end);
  });
}

}  // namespace adagrad
