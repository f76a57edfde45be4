"""Plain-numpy oracle of Keras 3's Adagrad pipeline (docs/keras-pipeline.md).

Written from the semantics of ``keras/src/optimizers/base_optimizer.py`` and
``adagrad.py`` (Keras 3, generic backend path), not copied from them:

    apply(grads):
      drop None grads (all None -> ValueError)
      overwrite_with_gradient vars: v = g  (accumulation: running max, see below)
      if any grads remain:
        g = g / loss_scale_factor
        accumulation: micro-step -> gacc += g; update step -> g = (g + gacc) / k
        [update step only] clip -> weight decay -> Adagrad -> reset ALL gaccs
        EMA over every built variable (also on micro-steps), optional overwrite
        constraints of the variables of this call
      iterations_raw += 1

Element-wise math runs in the parameter dtype with Python scalars cast to that
dtype (JAX/Keras weak typing); for float16/bfloat16 parameters it runs in float32
and each stored value is rounded once, when it is stored (the package's documented
deviation: Keras rounds after every operation).  ``accumulator_dtype="float32"``
keeps 16-bit parameters' accumulators in float32.  Norms are reduced in float64, as the native core
does (Keras reduces in the gradient dtype; the difference is an ulp of the clip
factor).  A plain-float learning rate is stored as float32 like Keras' ``floatx``
``learning_rate`` variable, so float64 parameters see ``float64(float32(lr))``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class ReferenceAdagrad:
    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        initial_accumulator_value=0.1,
        epsilon=1e-7,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        exclude_from_weight_decay=(),
        overwrite_with_gradient=(),
        constraints=None,
        accumulator_dtype=None,
    ):
        self.learning_rate = learning_rate
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.use_ema = use_ema
        self.ema_momentum = ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.loss_scale_factor = loss_scale_factor
        self.k = gradient_accumulation_steps
        self.excluded = set(exclude_from_weight_decay)
        self.overwrite = set(overwrite_with_gradient)
        self.constraints = dict(constraints or {})
        self.accumulator_dtype = accumulator_dtype

    # -- state -----------------------------------------------------------------
    def build(self, params):
        self.params = [np.array(p, copy=True) for p in params]
        n = len(self.params)
        slot = [i not in self.overwrite for i in range(n)]
        self.accumulators = [
            np.full_like(p, self.initial_accumulator_value, dtype=self._accumulator_dtype(p))
            if slot[i]
            else None
            for i, p in enumerate(self.params)
        ]
        self.averages = [
            np.zeros_like(p) if self.use_ema and slot[i] else None
            for i, p in enumerate(self.params)
        ]
        # Keras creates a gradient accumulator for every variable, overwrite ones included.
        self.grad_accumulators = [np.zeros_like(p) if self.k else None for p in self.params]
        self.iterations_raw = 0

    def _accumulator_dtype(self, p):
        if self.accumulator_dtype and p.dtype.itemsize == 2:
            return np.dtype(self.accumulator_dtype)
        return p.dtype

    @property
    def iterations(self):
        return self.iterations_raw // self.k if self.k else self.iterations_raw

    def lr(self):
        """The current learning rate (Python float, before the cast to a dtype)."""
        if callable(self.learning_rate):
            return float(self.learning_rate(self.iterations_raw))
        return float(np.float32(self.learning_rate))

    # -- one step --------------------------------------------------------------
    def apply(self, grads):
        if len(grads) != len(self.params):
            raise ValueError("gradient count does not match the variable count")
        present = [i for i, g in enumerate(grads) if g is not None]
        if not present:
            raise ValueError("No gradients provided for any variable.")
        update_step = self.k is None or (self.iterations_raw + 1) % self.k == 0

        rest = []
        for i in present:
            if i not in self.overwrite:
                rest.append(i)
                continue
            g = np.asarray(grads[i], self.params[i].dtype)
            if not self.k:
                self.params[i][...] = g
            elif update_step:
                self.params[i][...] = np.maximum(g, self.grad_accumulators[i])
                self.grad_accumulators[i][...] = 0
            else:
                self.grad_accumulators[i][...] = np.maximum(g, self.grad_accumulators[i])

        if rest:
            g = {}
            for i in rest:
                dt = compute_dtype(self.params[i]).type
                g[i] = np.asarray(grads[i], self.params[i].dtype).astype(dt)
                if self.loss_scale_factor is not None:
                    g[i] = g[i] / dt(self.loss_scale_factor)
            if update_step:
                if self.k:
                    for i in rest:
                        gacc = self.grad_accumulators[i]
                        dt = compute_dtype(gacc).type
                        g[i] = (g[i] + gacc.astype(dt)) / dt(self.k)
                self._clip(g)
                # The parameters in the compute dtype, stored once after decay and Adagrad.
                work = {i: self.params[i].astype(compute_dtype(self.params[i])) for i in rest}
                self._weight_decay(work)
                self._adagrad(g, work)
                for i in rest:
                    self.params[i][...] = work[i]
                if self.k:
                    for gacc in self.grad_accumulators:
                        gacc[...] = 0
            else:
                for i in rest:
                    gacc = self.grad_accumulators[i]
                    gacc[...] = gacc.astype(compute_dtype(gacc)) + g[i]
            self._ema()
            for i in rest:
                if i in self.constraints:
                    self.params[i][...] = self.constraints[i](self.params[i].copy())
        self.iterations_raw += 1

    def _clip(self, g):
        if self.clipnorm:
            c = self.clipnorm
            for i, gi in g.items():
                dt = gi.dtype.type
                l2sum = np.sum(np.square(gi, dtype=np.float64))
                l2norm = np.sqrt(l2sum) if l2sum > 0 else l2sum  # NaN stays NaN
                g[i] = (gi * dt(c)) / dt(np.maximum(l2norm, c))
        elif self.global_clipnorm:
            c = self.global_clipnorm
            sq = sum(np.sum(np.square(gi, dtype=np.float64)) for gi in g.values())
            norm = np.sqrt(np.float64(sq))
            with np.errstate(divide="ignore", invalid="ignore"):
                # A non-finite norm makes the scale NaN (Keras adds norm - norm).
                scale = c * np.minimum(1.0 / norm, 1.0 / c) + (norm - norm)
            for i, gi in g.items():
                g[i] = gi * gi.dtype.type(scale)
        elif self.clipvalue:
            c = self.clipvalue
            for i, gi in g.items():
                g[i] = np.clip(gi, gi.dtype.type(-c), gi.dtype.type(c))

    def _weight_decay(self, work):
        if self.weight_decay is None:
            return
        for i, p in work.items():
            if i in self.excluded:
                continue
            dt = p.dtype.type
            p[...] = p - p * dt(self.weight_decay) * dt(self.lr())

    def _adagrad(self, g, work):
        lr = self.lr()
        for i, gi in g.items():
            p, acc = work[i], self.accumulators[i]
            dt = p.dtype.type
            a = acc.astype(dt) + gi * gi
            acc[...] = a
            p -= (dt(lr) * gi) / np.sqrt(a + dt(self.epsilon))

    def _ema(self):
        if not self.use_ema:
            return
        for p, avg in zip(self.params, self.averages, strict=True):
            if avg is None:
                continue
            dt = compute_dtype(p).type
            m = dt(self.ema_momentum) if self.iterations != 0 else dt(0.0)
            avg[...] = m * avg.astype(dt) + (dt(1.0) - m) * p.astype(dt)
        freq = self.ema_overwrite_frequency
        if freq and (self.iterations + 1) % freq == 0:
            for p, avg in zip(self.params, self.averages, strict=True):
                if avg is not None:
                    p[...] = avg

    def finalize_variable_values(self):
        if self.use_ema:
            for p, avg in zip(self.params, self.averages, strict=True):
                if avg is not None:
                    p[...] = avg


def compute_dtype(array):
    """The dtype the math runs in: float32 for 16-bit storage, else the storage dtype."""
    return np.dtype(np.float32) if array.dtype.itemsize == 2 else array.dtype
