// A self-test of the thread team through the one parallel loop, for the test
// suite: the paths a step rarely takes (a task that throws, a loop inside a task).
#pragma once

#include <string>
#include <vector>

namespace adagrad {

// Runs the checks with the current thread count; returns what failed (empty: all passed).
std::vector<std::string> team_self_test();

}  // namespace adagrad
