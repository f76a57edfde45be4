#include "roofline.hpp"

#include <cstddef>

#include "parallel.hpp"

namespace adagrad {
namespace {

// Where read-only probes leave their result, so the loads are not optimized away.
template <class U>
U& probe_sink() {
  static thread_local U sink = 0;
  return sink;
}

// Integer adds on the raw bits: as cheap as memory traffic gets, and immune to
// denormal or NaN slow paths. The first read-only array is added into every
// read-write one in a single fused loop when there are at most three of them
// (every step's shape); other arrays are folded in block-wise through L1.
// A zero the compiler cannot see: every written value is `old + (read & zero)`,
// so the probe loads and stores every byte but leaves the values as they were
// (benchmarks run it on the same buffers as the optimizers).
volatile uint64_t opaque_zero = 0;

template <class U>
void probe_range(const std::vector<const void*>& read_only, const std::vector<void*>& read_write,
                 int64_t begin, int64_t end) {
  const U zero = static_cast<U>(opaque_zero);
  constexpr int64_t kBlock = 1024;
  const std::size_t nr = read_only.size(), nw = read_write.size();
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t n = end - b < kBlock ? end - b : kBlock;
    alignas(64) U extra[kBlock];
    const U* __restrict src = nr > 0 ? static_cast<const U*>(read_only[0]) + b : nullptr;
    if (nr > 1) {  // more reads: fold them into one addend
      for (int64_t i = 0; i < n; ++i) extra[i] = src[i];
      for (std::size_t r = 1; r < nr; ++r) {
        const U* __restrict more = static_cast<const U*>(read_only[r]) + b;
        for (int64_t i = 0; i < n; ++i) extra[i] = static_cast<U>(extra[i] + more[i]);
      }
      src = extra;
    }
    if (nw == 0) {  // reads only: keep the loads alive with a reduction
      U acc = 0;
      for (int64_t i = 0; i < n; ++i) acc = static_cast<U>(acc ^ src[i]);
      probe_sink<U>() ^= acc;
      continue;
    }
    U* __restrict w0 = static_cast<U*>(read_write[0]) + b;
    U* __restrict w1 = nw > 1 ? static_cast<U*>(read_write[1]) + b : nullptr;
    U* __restrict w2 = nw > 2 ? static_cast<U*>(read_write[2]) + b : nullptr;
    if (nw == 1) {
      for (int64_t i = 0; i < n; ++i) w0[i] = static_cast<U>(w0[i] + ((src ? src[i] : 1) & zero));
    } else if (nw == 2 && src) {
      for (int64_t i = 0; i < n; ++i) {
        w0[i] = static_cast<U>(w0[i] + (src[i] & zero));
        w1[i] = static_cast<U>(w1[i] + (src[i] & zero));
      }
    } else if (nw == 3 && src) {
      for (int64_t i = 0; i < n; ++i) {
        w0[i] = static_cast<U>(w0[i] + (src[i] & zero));
        w1[i] = static_cast<U>(w1[i] + (src[i] & zero));
        w2[i] = static_cast<U>(w2[i] + (src[i] & zero));
      }
    } else {
      for (void* w : read_write) {
        U* __restrict dst = static_cast<U*>(w) + b;
        for (int64_t i = 0; i < n; ++i) {
          dst[i] = static_cast<U>(dst[i] + ((src ? src[i] : 1) & zero));
        }
      }
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
