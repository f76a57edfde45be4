#include "copy_all.hpp"

#include <cstring>

namespace adagrad {

void copy_all(const std::vector<Copy>& copies) {
  for (const Copy& c : copies) std::memmove(c.target, c.source, c.bytes);
}

}  // namespace adagrad
