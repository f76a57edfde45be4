// Row-sparse gradient arguments: an object with `indices` and `values` (and
// optionally `dense_shape`), e.g. adagrad_native.SparseGradient or
// tf.IndexedSlices.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <utility>

#include "py_group.hpp"
#include "step.hpp"

bool is_sparse(const pybind11::handle& obj);

// Checks the sparse gradient of variable i completely (before anything is
// written) and fills the step's fields. Returns the arrays (indices, values)
// to keep alive for the call.
std::pair<pybind11::array, pybind11::array> sparse_gradient(const PyGroup& g, size_t i,
                                                            const pybind11::handle& obj,
                                                            adagrad::TensorStep& ts);
