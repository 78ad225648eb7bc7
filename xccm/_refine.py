r"""Refine colour-correction matrices on a colour-difference loss: a batched Levenberg–Marquardt.

Numpy only (the colour maths come in through a :class:`~xccm.colorimetry.Metric`); knows
nothing of xarray or Dask. For every batch element ``b`` it minimises

.. math:: \mathrm{loss}_b(M) = \sqrt{\frac{1}{N_b} \sum_i w_{bi} \, \Delta E_{bi}(M)^2}

(OpenCV's ccm loss; weights rescaled to mean 1 over the ``N_b`` samples used) as a
nonlinear least-squares problem. The residuals are :math:`\sqrt{w_{bi}}\,e_{bi}` with
:math:`e_{bi}` the 3-vector whose norm is :math:`\Delta E_{bi}` (its lightness, chroma and
hue terms, see :func:`xccm.colorimetry.lab_components`): the same sum of squares as the
residuals :math:`\sqrt{w_{bi}}\,\Delta E_{bi}`, but smooth where a patch matches well, so
Gauss–Newton steps converge fast instead of zig-zagging on the kink of a norm at 0.

Why not one ``scipy.optimize.least_squares`` call per element: the elements are independent
3x3 or 4x3 problems, and a Python-level solver loop per frame would dominate for thousands of
frames. Here every step is vectorised over the batch, while damping, step acceptance and
convergence are decided per element, so an element's result does not depend on which other
elements share its batch (or Dask chunk). The method is Levenberg–Marquardt with Marquardt's
diagonal scaling and Nielsen's damping update (Madsen, Nielsen & Tingleff, *Methods for
non-linear least squares problems*, 2004, algorithm 3.16), with a forward-difference Jacobian;
the tests check it against ``scipy.optimize.least_squares``. A step is taken only when it
lowers that element's loss, so the result is never worse than the start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RefineResult", "refine"]


@dataclass
class RefineResult:
    """Refined matrices ``(B, k, n_out)`` and per-element diagnostics ``(B,)``."""

    matrix: np.ndarray
    loss: np.ndarray
    start_loss: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray


def refine(
    s: np.ndarray,
    d: np.ndarray,
    w: np.ndarray | None,
    m0: np.ndarray,
    metric,
    *,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> RefineResult:
    """Minimise the weighted RMS colour difference over ``M``, starting from ``m0``.

    Parameters
    ----------
    s : ndarray, (B, N, n_in)
        Linear camera colours; a sample with any non-finite value is left out.
    d : ndarray, (B, N, 3)
        Reference colours in the metric's linear RGB.
    w : ndarray (B, N) or None
        Non-negative weights; zero leaves a sample out. Rescaled to mean 1 per element.
    m0 : ndarray, (B, k, 3)
        Start, ``k = n_in`` (linear) or ``n_in + 1`` (affine, offset row last). Elements
        whose start is not finite are returned as they are, with NaN losses.
    metric : xccm.colorimetry.Metric
        ``transform`` maps linear RGB to the comparison space, ``distance`` compares.
    max_iter : int
        Most Jacobian evaluations per element.
    tol : float
        Converged when the relative loss decrease of an accepted step, the relative step
        length, or the scaled gradient falls below ``tol``.
    """
    s, d, m0 = (np.asarray(a, dtype=np.float64) for a in (s, d, m0))
    n_batch, _, n_in = s.shape
    k, n_out = m0.shape[-2:]
    affine = k == n_in + 1
    valid = np.isfinite(s).all(-1) & np.isfinite(d).all(-1)
    w = np.ones(s.shape[:2]) if w is None else np.where(np.isfinite(w), w, 0.0)
    valid &= w > 0
    w = np.where(valid, w, 0.0)
    n_used = valid.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = w / (w.sum(-1, keepdims=True) / np.maximum(n_used, 1)[:, None])
    s = np.where(valid[..., None], s, 0.0)
    if affine:
        s = np.concatenate([s, np.ones((*s.shape[:2], 1))], axis=-1)
    target = metric.transform(np.where(valid[..., None], d, 0.0))
    sqrt_w = np.sqrt(w)

    def residuals(idx: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``sqrt(w) * distance`` for elements ``idx`` at parameters ``p (len(idx), k*n_out)``."""
        pred = s[idx] @ p.reshape(-1, k, n_out)
        r = sqrt_w[idx, :, None] * metric.components(metric.transform(pred), target[idx])
        return np.where(valid[idx, :, None], r, 0.0).reshape(len(idx), -1)

    p = m0.reshape(n_batch, k * n_out).copy()
    ok = np.isfinite(p).all(-1) & (n_used > 0)
    cost = np.full(n_batch, np.nan)
    iterations = np.zeros(n_batch, dtype=np.int64)
    converged = ~ok
    active = np.flatnonzero(ok)
    if active.size:
        cost[active] = _sumsq(residuals(active, p[active]))
    start = cost.copy()
    mu = np.full(n_batch, np.nan)
    nu = np.full(n_batch, 2.0)
    jac = grad = None
    fresh = np.ones(n_batch, dtype=bool)  # needs a new Jacobian (after an accepted step)
    if max_iter <= 0:  # evaluate the start only
        active = active[:0]
    while active.size:
        idx = active
        # Jacobian and gradient for the elements whose parameters moved.
        need = idx[fresh[idx]]
        if need.size:
            r0 = residuals(need, p[need])
            j_new = _jacobian(residuals, need, p[need], r0)
            if jac is None:
                jac = np.zeros((n_batch, *j_new.shape[1:]))
                grad = np.zeros((n_batch, k * n_out))
            jac[need] = j_new
            grad[need] = np.einsum("bnp,bn->bp", j_new, r0)
            iterations[need] += 1
            fresh[need] = False
        a = np.einsum("bnp,bnq->bpq", jac[idx], jac[idx])
        diag = np.maximum(np.diagonal(a, axis1=1, axis2=2), 1e-12 * _max_diag(a))
        first = np.isnan(mu[idx])
        mu[idx[first]] = 1e-3
        g = grad[idx]
        scale = np.sqrt(diag)
        small_grad = np.abs(g / scale).max(-1) <= tol * np.maximum(np.sqrt(cost[idx]), 1e-300)
        step = -np.linalg.solve(a + mu[idx, None, None] * _diag_matrix(diag), g[..., None]).squeeze(
            -1
        )
        trial = p[idx] + step
        new_cost = _sumsq(residuals(idx, trial))
        predicted = 0.5 * np.einsum("bp,bp->b", step, mu[idx, None] * diag * step - g)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (cost[idx] - new_cost) / (2 * predicted)
        better = np.isfinite(new_cost) & (new_cost < cost[idx])
        # Nielsen's damping update.
        acc = idx[better]
        factor = np.maximum(1 / 3, 1 - (2 * np.clip(rho[better], 0, 1) - 1) ** 3)
        mu[acc] *= factor
        nu[acc] = 2.0
        rej = idx[~better]
        mu[rej] *= nu[rej]
        nu[rej] *= 2.0
        rel_drop = np.where(better, (cost[idx] - new_cost) / np.maximum(cost[idx], 1e-300), 0.0)
        rel_step = np.linalg.norm(step, axis=-1) / (np.linalg.norm(p[idx], axis=-1) + tol)
        p[acc] = trial[better]
        cost[acc] = new_cost[better]
        fresh[acc] = True
        done = small_grad | (better & (rel_drop <= tol)) | (rel_step <= tol) | (cost[idx] == 0)
        converged[idx[done]] = True
        stop = done | (iterations[idx] >= max_iter) | ~np.isfinite(mu[idx])
        active = idx[~stop]
    n = np.maximum(n_used, 1)
    return RefineResult(
        matrix=p.reshape(n_batch, k, n_out),
        loss=np.where(ok, np.sqrt(cost / n), np.nan),
        start_loss=np.where(ok, np.sqrt(start / n), np.nan),
        iterations=iterations,
        converged=converged & ok,
    )


def _sumsq(r: np.ndarray) -> np.ndarray:
    return np.einsum("bn,bn->b", r, r)


def _max_diag(a: np.ndarray) -> np.ndarray:
    return np.diagonal(a, axis1=1, axis2=2).max(-1, keepdims=True)


def _diag_matrix(v: np.ndarray) -> np.ndarray:
    out = np.zeros((*v.shape, v.shape[-1]))
    i = np.arange(v.shape[-1])
    out[..., i, i] = v
    return out


def _jacobian(residuals, idx: np.ndarray, p: np.ndarray, r0: np.ndarray) -> np.ndarray:
    """Forward-difference Jacobian ``(len(idx), N, P)``, all elements at once per parameter."""
    eps = np.sqrt(np.finfo(np.float64).eps)
    jac = np.empty((*r0.shape, p.shape[-1]))
    for j in range(p.shape[-1]):
        h = eps * np.maximum(np.abs(p[:, j]), 1.0)
        q = p.copy()
        q[:, j] += h
        h = q[:, j] - p[:, j]  # the step actually taken, after rounding
        jac[..., j] = (residuals(idx, q) - r0) / h[:, None]
    return jac
