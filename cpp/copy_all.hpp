// Copies that land together: a load's checked values over an optimizer's state.
#pragma once

#include <cstddef>
#include <vector>

namespace adagrad {

struct Copy {
  void* target;
  const void* source;
  size_t bytes;
};

// Every copy, in order, in one call: no Python code (a Ctrl-C's handler runs
// between calls) runs between two of them, so a load assigns all or nothing.
void copy_all(const std::vector<Copy>& copies);

}  // namespace adagrad
