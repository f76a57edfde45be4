#include "roofline.hpp"

#include "parallel.hpp"

namespace adagrad {
namespace {

constexpr int64_t kProbeBlock = 256;

// Integer adds on the raw bits: as cheap as memory traffic gets, and immune to
// denormal or NaN slow paths.
template <class U>
void probe_range(const std::vector<const void*>& read_only, const std::vector<void*>& read_write,
                 int64_t begin, int64_t end) {
  for (int64_t b = begin; b < end; b += kProbeBlock) {
    const int64_t n = end - b < kProbeBlock ? end - b : kProbeBlock;
    alignas(64) U sum[kProbeBlock] = {};
    for (const void* r : read_only) {
      const U* __restrict src = static_cast<const U*>(r) + b;
      for (int64_t i = 0; i < n; ++i) sum[i] = static_cast<U>(sum[i] + src[i]);
    }
    for (void* w : read_write) {
      U* __restrict dst = static_cast<U*>(w) + b;
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<U>(dst[i] + sum[i]);
    }
  }
}

}  // namespace

void stream_probe(const std::vector<const void*>& read_only,
                  const std::vector<void*>& read_write, int64_t size, int itemsize) {
  const WorkList work = make_work_list({size});
  for_each_item(work, [&](int64_t i) {
    const WorkItem& item = work.items[i];
    switch (itemsize) {
      case 2:
        probe_range<uint16_t>(read_only, read_write, item.begin, item.end);
        break;
      case 8:
        probe_range<uint64_t>(read_only, read_write, item.begin, item.end);
        break;
      default:
        probe_range<uint32_t>(read_only, read_write, item.begin, item.end);
        break;
    }
  });
}

}  // namespace adagrad
