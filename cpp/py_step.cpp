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

int64_t step(PyGroup& g, const py::sequence& grads, const adagrad::StepPlan& plan,
             const std::optional<std::vector<double>>& norms, const py::sequence& settle_with) {
  std::vector<Settle> writes = settle_writes(settle_with);
  if (norms && norms->size() != g.group.tensors().size()) {
    throw py::value_error("Expected one norm per tensor (" +
                          std::to_string(g.group.tensors().size()) + "); received " +
                          std::to_string(norms->size()) + ".");
  }
  g.check_plan(plan);
  std::vector<py::array> held;
  std::vector<adagrad::TensorStep> steps = gradients(g, grads, true, held);
  std::unique_lock<std::mutex> claimed = g.claim();
  adagrad::StepResult r;
  {
    py::gil_scoped_release release;
    r = adagrad::run_step(g.group, steps, plan, norms ? &*norms : nullptr);
  }
  // In the same call as the step, so the outcome's records (the iteration
  // counter, a loss scale) never fall behind or run ahead of the state.
  settle(writes, r.applied);
  return r.applied ? -1 : r.first_nonfinite;
}

int64_t first_nonfinite(PyGroup& g, const py::sequence& grads, const adagrad::StepPlan& plan) {
  g.check_plan(plan);
  std::vector<py::array> held;
  std::vector<adagrad::TensorStep> steps = gradients(g, grads, true, held);
  std::unique_lock<std::mutex> claimed = g.claim();
  py::gil_scoped_release release;
  return adagrad::run_check(g.group, steps, plan);
}

// The one norm fold (step.hpp) over partial sums gathered from several ranks.
py::tuple fold_norms(const std::vector<int32_t>& tensor_of,
                     const py::array_t<double, py::array::c_style | py::array::forcecast>& sums,
                     const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& finite,
                     const std::vector<bool>& counted, bool global) {
  const size_t n = tensor_of.size();
  if (static_cast<size_t>(sums.size()) != n || static_cast<size_t>(finite.size()) != n) {
    throw py::value_error("fold_norms: one sum and one finite flag per entry (" +
                          std::to_string(n) + "); received " + std::to_string(sums.size()) +
                          " and " + std::to_string(finite.size()) + ".");
  }
  for (int32_t t : tensor_of) {
    if (t < 0 || static_cast<size_t>(t) >= counted.size()) {
      throw py::value_error("fold_norms: tensor index " + std::to_string(t) + " out of [0, " +
                            std::to_string(counted.size()) + ").");
    }
  }
  const std::vector<unsigned char> counted_bytes(counted.begin(), counted.end());
  const adagrad::Folded folded =
      adagrad::fold_norms(tensor_of, sums.data(), finite.data(), counted_bytes, global);
  return py::make_tuple(folded.norms, folded.first_nonfinite);
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
        py::arg("norms") = py::none(), py::arg("settle") = py::tuple(),
        "Runs one optimizer step over every tensor of the group (GIL released). Returns -1, or "
        "the index of the first tensor with a non-finite gradient when plan.check_finite "
        "stopped the step before anything was written. `norms`: each tensor's clip norm, "
        "from fold_norms over partial sums gathered elsewhere; then the norm and finiteness "
        "pass is skipped. `settle`: "
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
  m.def("first_nonfinite", &first_nonfinite, py::arg("group"), py::arg("grads"), py::arg("plan"),
        "The finiteness check of a step alone (row-sparse gradients with their duplicates "
        "summed): -1, or the smallest tensor whose gradient is not finite. Writes nothing.");
  m.def("fold_norms", &fold_norms, py::arg("tensor_of"), py::arg("sums"), py::arg("finite"),
        py::arg("counted"), py::arg("global_norm"),
        "The one norm fold of pass 1 over given entries (each a sum of squares and a finite "
        "flag, tagged with its tensor), in order: (norm per tensor, the smallest tensor with "
        "a non-finite entry or -1).");
  m.def("partial_sums", &partial_sums, py::arg("group"), py::arg("grads"), py::arg("plan"),
        "Pass 1 alone over dense gradients: (float64 sum of squares, uint8 finite) per work "
        "item of the group, in item order. Writes nothing.");
}
