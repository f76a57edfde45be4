// Binding of one general step: every gradient checked (dense ones converted
// when they must be), then the core's step with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "py_arrays.hpp"
#include "py_group.hpp"
#include "py_register.hpp"
#include "py_sparse.hpp"
#include "step.hpp"

namespace py = pybind11;

namespace {

// Gradients are only read, so one that is not contiguous, aligned and native
// is copied into a form that is; its dtype and shape must match exactly.
py::array gradient_buffer(const PyGroup& g, size_t i, const py::handle& obj) {
  const std::string var = g.label(i);
  py::array a = py::isinstance<py::array>(obj) ? py::reinterpret_borrow<py::array>(obj)
                                               : py::array::ensure(obj);
  if (!a) {
    PyErr_Clear();
    throw py::type_error("The gradient for " + var + " must be a numpy array or array-like (" +
                         "a torch tensor as tensor.detach().numpy(), a jax array as " +
                         "np.asarray(array)); received " + type_name(obj) + ".");
  }
  const py::array& p = g.params[i];
  a = cast_like_keras(a, p, g.dtype_nums[i], "The gradient for " + var);
  bool same_shape = a.ndim() == p.ndim();
  for (py::ssize_t d = 0; same_shape && d < a.ndim(); ++d) same_shape = a.shape(d) == p.shape(d);
  if (!same_shape) {
    throw py::value_error("The gradient for " + var + " has shape " + shape_str(a) +
                          ", but the variable has shape " + shape_str(p) + ".");
  }
  a = readable(a);
  if (g.overlaps_written(a.data(), static_cast<size_t>(a.nbytes()))) a = a.attr("copy")();
  return a;
}

// Checks every gradient of a call and fills `steps`; `held` keeps the arrays
// the core reads alive while the GIL is released.
std::vector<adagrad::TensorStep> gradients(const PyGroup& g, const py::sequence& grads,
                                           bool sparse_ok, std::vector<py::array>& held) {
  const size_t n = g.group.tensors().size();
  if (grads.size() != n) {
    throw py::value_error("Expected " + std::to_string(n) +
                          " gradients (one per variable); received " +
                          std::to_string(grads.size()) + ".");
  }
  held.reserve(2 * n);
  std::vector<adagrad::TensorStep> steps(n);
  for (size_t i = 0; i < n; ++i) {
    py::handle obj = grads[i];
    if (obj.is_none()) continue;
    if (is_sparse(obj)) {
      if (!sparse_ok) {
        throw py::value_error("The gradient for " + g.label(i) +
                              " is sparse; partial sums are taken over dense gradients only.");
      }
      auto [idx, values] = sparse_gradient(g, i, obj, steps[i]);
      held.push_back(idx);
      held.push_back(values);
      continue;
    }
    held.push_back(gradient_buffer(g, i, obj));
    steps[i].grad = held.back().data();
  }
  return steps;
}

// One write that records a step's outcome: `target` (a writeable 0-d array)
// takes the bytes of `applied` or `skipped` (0-d, same dtype; absent: unchanged).
struct Settle {
  py::array target;
  std::optional<py::array> applied, skipped;
};

std::optional<py::array> settle_value(const py::handle& v) {
  if (v.is_none()) return std::nullopt;
  if (!py::isinstance<py::array>(v)) {
    throw py::type_error("A settle value must be a 0-d numpy array or None; received " +
                         type_name(v) + ".");
  }
  return py::reinterpret_borrow<py::array>(v);
}

std::vector<Settle> settle_writes(const py::sequence& writes) {
  std::vector<Settle> out;
  for (const py::handle& w : writes) {
    if (!py::isinstance<py::tuple>(w) || py::len(w) != 3) {
      throw py::type_error(
          "A settle write must be a (target, if_applied, if_skipped) tuple; "
          "received " +
          type_name(w) + ".");
    }
    const py::tuple t = py::reinterpret_borrow<py::tuple>(w);
    Settle s{scalar_buffer(t[0], -1, "A settle target"), settle_value(t[1]), settle_value(t[2])};
    for (const std::optional<py::array>& v : {s.applied, s.skipped}) {
      if (v && (v->ndim() != 0 || v->dtype().num() != s.target.dtype().num() ||
                v->itemsize() != s.target.itemsize() || holds_objects(v->dtype()) ||
                !is_native(v->dtype()))) {
        throw py::value_error("A settle value must be a 0-d array of its target's dtype (" +
                              dtype_name(s.target.dtype()) + "); received " +
                              dtype_name(v->dtype()) + " of shape " + shape_str(*v) + ".");
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

// All writes of one outcome in one call: Python runs a signal handler only
// between calls, so a Ctrl-C never leaves some of them done and others not.
void settle(std::vector<Settle>& writes, bool applied) {
  for (Settle& s : writes) {
    const std::optional<py::array>& v = applied ? s.applied : s.skipped;
    if (v) std::memmove(s.target.mutable_data(), v->data(), static_cast<size_t>(v->itemsize()));
  }
}

// Given partials (sums, finite): one per item of the group's whole tensors.
struct GivenPartials {
  py::array_t<double> sums;
  py::array_t<uint8_t> finite;
  adagrad::Partials view;
};

GivenPartials given_partials(const PyGroup& g, const py::tuple& partials) {
  const size_t n = g.group.whole_items().size();
  if (partials.size() != 2) {
    throw py::value_error("`partials` must be a pair (sums, finite); received " +
                          std::to_string(partials.size()) + " items.");
  }
  GivenPartials p{
      py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(partials[0]),
      py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(partials[1]),
      {}};
  if (!p.sums || !p.finite) {
    PyErr_Clear();
    throw py::type_error("`partials` must hold a float64 and a uint8 array.");
  }
  if (p.sums.ndim() != 1 || p.finite.ndim() != 1 || static_cast<size_t>(p.sums.size()) != n ||
      static_cast<size_t>(p.finite.size()) != n) {
    throw py::value_error(
        "`partials` must hold one sum and one finite flag per work item of "
        "the whole tensors (" +
        std::to_string(n) + "); received shapes " + shape_str(p.sums) + " and " +
        shape_str(p.finite) + ".");
  }
  p.view = {p.sums.data(), p.finite.data(), static_cast<int64_t>(n)};
  return p;
}

int64_t step(PyGroup& g, const py::sequence& grads, const adagrad::StepPlan& plan,
             const std::optional<py::tuple>& partials, const py::sequence& settle_with) {
  std::vector<Settle> writes = settle_writes(settle_with);
  g.check_plan(plan);
  std::optional<GivenPartials> given;
  if (partials) given = given_partials(g, *partials);
  std::vector<py::array> held;
  // Given partials are sums over dense gradients only.
  std::vector<adagrad::TensorStep> steps = gradients(g, grads, !given, held);
  std::unique_lock<std::mutex> claimed = g.claim();
  adagrad::StepResult r;
  {
    py::gil_scoped_release release;
    r = adagrad::run_step(g.group, steps, plan, given ? &given->view : nullptr);
  }
  // In the same call as the step, so the outcome's records (the iteration
  // counter, a loss scale) never fall behind or run ahead of the state.
  settle(writes, r.applied);
  return r.applied ? -1 : r.first_nonfinite;
}

py::tuple partial_sums(PyGroup& g, const py::sequence& grads, const adagrad::StepPlan& plan) {
  g.check_plan(plan);
  std::vector<py::array> held;
  std::vector<adagrad::TensorStep> steps = gradients(g, grads, false, held);
  std::unique_lock<std::mutex> claimed = g.claim();
  {
    py::gil_scoped_release release;
    adagrad::run_partials(g.group, steps, plan);
  }
  const std::vector<double>& sums = g.group.partial_sums();
  const std::vector<unsigned char>& finite = g.group.partial_finite();
  return py::make_tuple(
      py::array_t<double>(static_cast<py::ssize_t>(sums.size()), sums.data()),
      py::array_t<uint8_t>(static_cast<py::ssize_t>(finite.size()), finite.data()));
}

}  // namespace

void register_step(py::module_& m) {
  m.def("step", &step, py::arg("group"), py::arg("grads"), py::arg("plan"),
        py::arg("partials") = py::none(), py::arg("settle") = py::tuple(),
        "Runs one optimizer step over every tensor of the group (GIL released). Returns -1, or "
        "the index of the first tensor with a non-finite gradient when plan.check_finite "
        "stopped the step before anything was written. `partials`: (float64 sums, uint8 "
        "finite) of every work item of the whole tensors, gathered elsewhere; they replace "
        "the norm and finiteness pass and are folded as its own would be. `settle`: "
        "(target, if_applied, if_skipped) triples of 0-d arrays written after the step in the "
        "same call (None: unchanged).");
  m.def(
      "settle",
      [](const py::sequence& writes, bool applied) {
        std::vector<Settle> parsed = settle_writes(writes);
        settle(parsed, applied);
      },
      py::arg("writes"), py::arg("applied"),
      "The writes of `step`'s `settle` for one outcome, all in one call.");
  m.def("partial_sums", &partial_sums, py::arg("group"), py::arg("grads"), py::arg("plan"),
        "Pass 1 alone over dense gradients: (float64 sum of squares, uint8 finite) per work "
        "item of the group, in item order. Writes nothing.");
}
