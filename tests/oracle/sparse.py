"""Oracle helpers for row-sparse gradients and row-wise Adagrad (extends `dense`).

* `dense_equivalent`: the dense gradient of a sparse one -- `np.add.at` into
  zeros, i.e. duplicate rows summed in index order in the values' dtype. This
  is the package's definition of a sparse gradient's meaning.
* `LazyReferenceAdagrad`: `sparse_updates="lazy"` -- weight decay and EMA act
  only on the rows a sparse gradient touches (dense gradients and variables
  without a gradient are handled as in dense mode). No gradient accumulation.
* `RowWiseReferenceAdagrad`: one accumulator per row for variables with 2+
  dimensions; `acc_row += mean(g_row**2)` with the documented float64 mean
  (8 lanes, element j in lane j % 8, lanes combined 0+4.., 0+2.., 0+1).
"""

from __future__ import annotations

import numpy as np

from tests.oracle.dense import ReferenceAdagrad, compute_dtype


def dense_equivalent(indices, values, shape):
    """The dense gradient of a sparse one (duplicates summed in index order)."""
    dense = np.zeros(shape, np.asarray(values).dtype)
    np.add.at(dense, np.asarray(indices), np.asarray(values))
    return dense


def _is_sparse(g):
    return g is not None and not isinstance(g, np.ndarray) and hasattr(g, "indices")


class LazyReferenceAdagrad(ReferenceAdagrad):
    """ReferenceAdagrad with sparse_updates='lazy' (weight decay/EMA on touched rows only)."""

    def apply(self, grads):
        if self.k:
            raise NotImplementedError("the lazy oracle does not model gradient accumulation")
        self._touched = {}
        dense = []
        for i, g in enumerate(grads):
            if _is_sparse(g):
                self._touched[i] = np.unique(np.asarray(g.indices))
                g = dense_equivalent(g.indices, g.values, self.params[i].shape)
            dense.append(g)
        super().apply(dense)

    def _rows(self, i):
        return self._touched.get(i, slice(None))

    def _weight_decay(self, work):
        if self.weight_decay is None:
            return
        for i, p in work.items():
            if i in self.excluded:
                continue
            dt = p.dtype.type
            r = self._rows(i)
            p[r] = p[r] - p[r] * dt(self.weight_decay) * dt(self.lr())

    def _ema(self):
        if not self.use_ema:
            return
        freq = self.ema_overwrite_frequency
        overwrite = freq and (self.iterations + 1) % freq == 0
        for i, (p, avg) in enumerate(zip(self.params, self.averages, strict=True)):
            if avg is None:
                continue
            dt = compute_dtype(p).type
            m = dt(self.ema_momentum) if self.iterations != 0 else dt(0.0)
            r = self._rows(i)
            avg[r] = m * avg[r].astype(dt) + (dt(1.0) - m) * p[r].astype(dt)
            if overwrite:
                p[r] = avg[r]


def rowwise_mean(g):
    """mean(g_row**2) per row of g, in float64, in the core's documented order."""
    rows = g.shape[0]
    length = int(np.prod(g.shape[1:]))
    sq = g.reshape(rows, length).astype(np.float64) ** 2
    sq = np.pad(sq, ((0, 0), (0, (-length) % 8)))
    lanes = np.zeros((rows, 8))
    for k in range(sq.shape[1] // 8):
        lanes = lanes + sq[:, 8 * k : 8 * k + 8]
    for w in (4, 2, 1):
        lanes[:, :w] = lanes[:, :w] + lanes[:, w : 2 * w]
    return lanes[:, 0] / length


class RowWiseReferenceAdagrad(ReferenceAdagrad):
    """Row-wise Adagrad: accumulators of shape (rows,) for variables with 2+ dims."""

    def build(self, params):
        super().build(params)
        self.accumulators = [
            np.full(p.shape[:1], self.initial_accumulator_value, self._accumulator_dtype(p))
            if acc is not None and p.ndim >= 2
            else acc
            for p, acc in zip(self.params, self.accumulators, strict=True)
        ]

    def apply(self, grads):
        super().apply(
            [
                dense_equivalent(g.indices, g.values, self.params[i].shape) if _is_sparse(g) else g
                for i, g in enumerate(grads)
            ]
        )

    def _adagrad(self, g, work):
        lr = self.lr()
        for i, gi in g.items():
            p, acc = work[i], self.accumulators[i]
            dt = p.dtype.type
            if p.ndim < 2:
                super()._adagrad({i: gi}, work)
                continue
            a = acc.astype(dt) + rowwise_mean(gi).astype(dt)
            acc[...] = a
            denom = np.sqrt(a + dt(self.epsilon)).reshape((-1,) + (1,) * (p.ndim - 1))
            p -= (dt(lr) * gi) / denom
