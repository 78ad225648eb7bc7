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

import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

from ._kernels import ROBUST_MAX_ROUNDS, ROBUST_TOL, SAMPLES_PER_BLOCK, robust_weights
from ._solve import null_space
from ._threads import run_split

__all__ = ["RefineResult", "in_blocks", "refine", "refine_robust", "sample_errors"]

#: Largest ``elements x residuals x (parameters + 1)`` whose Jacobian is computed ahead, at
#: each trial point (see :func:`refine`): a single frame's, not a batch's, whose rejected
#: steps would waste the work.
_AHEAD_SIZE = 4096


#: Samples per block of :func:`in_blocks` (:data:`xccm._kernels.SAMPLES_PER_BLOCK`): a batch
#: this size keeps the solver's arrays (residuals, Jacobians, the colour maths' temporaries)
#: in cache; ten times that ran about twice as slow per element.
BLOCK_SAMPLES = SAMPLES_PER_BLOCK

_Result = TypeVar("_Result", bound="RefineResult")

#: The keywords of :func:`refine` and :func:`refine_robust` that may have a batch axis, and
#: their number of axes when they have it.
_BATCHED_NDIM = {"max_iter": 1, "ridge_target": 3, "white": 2}


def in_blocks(
    solve: Callable[..., _Result],
    s: np.ndarray,
    d: np.ndarray,
    w: np.ndarray | None,
    m0: np.ndarray,
    metric,
    *,
    parallel: bool = False,
    **kwargs: Any,
) -> _Result:
    """Run ``solve`` (:func:`refine`, :func:`refine_robust`) on blocks of the batch, joined.

    ``solve(s, d, w, m0, metric, **kwargs)`` runs on consecutive blocks of the batch of
    about :data:`BLOCK_SAMPLES` samples each; with ``parallel``, the blocks are shared out
    among threads (:func:`xccm._threads.run_split`: NumPy releases the GIL in its array
    operations), as many as there are blocks or cores. The elements are independent, so the
    result is the one of a single call. The keywords that may have a batch axis are cut
    with the batch where they have it (``max_iter (B,)``, ``ridge_target (B, k, 3)``,
    ``white``'s ``(B, k)`` and ``(B, 3)``); the others, and those without it, are passed on as
    they are. A block that raises (or Ctrl-C) stops the other threads at their next block.
    """
    n_batch, n = s.shape[:2]
    size = max(1, BLOCK_SAMPLES // max(n, 1))
    if n_batch <= size:
        return solve(s, d, w, m0, metric, **kwargs)
    if any(a is not None and a.shape[0] != n_batch for a in (d, w, m0)):
        raise ValueError(f"every array needs the batch of {n_batch} elements first")

    def cut(key, value, part):
        # a keyword is cut where it has the batch axis: one more than an element's own
        if isinstance(value, tuple):
            return tuple(cut(key, v, part) for v in value)
        if isinstance(value, np.ndarray) and value.ndim == _BATCHED_NDIM.get(key):
            return value[part]
        return value

    stop = threading.Event()  # a part that failed (an error, Ctrl-C): the others stop soon

    def blocks(lo: int, hi: int) -> list[_Result]:
        out = []
        try:
            for start in range(lo, hi, size):
                if stop.is_set():
                    break
                part = slice(start, min(start + size, hi))
                args = (a if a is None else a[part] for a in (s, d, w, m0))
                kw = {k: cut(k, v, part) for k, v in kwargs.items()}
                out.append(solve(*args, metric, **kw))
        except BaseException:
            stop.set()
            raise
        return out

    parts = run_split(blocks, n_batch, lambda lo, hi: (lo, hi), parallel, min_rows=size)
    results = [r for part in parts for r in part]
    names = [f.name for f in fields(results[0])]
    return type(results[0])(**{k: np.concatenate([getattr(r, k) for r in results]) for k in names})


@dataclass
class RefineResult:
    """Refined matrices ``(B, k, n_out)`` and per-element diagnostics ``(B,)``."""

    matrix: np.ndarray
    loss: np.ndarray
    start_loss: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray


@dataclass
class RobustResult(RefineResult):
    """:class:`RefineResult` of :func:`refine_robust`, with the robust weights ``(B, N)``.

    ``too_few``: elements whose weights left fewer than the samples needed (their matrix is
    NaN); ``converged`` is the Levenberg–Marquardt's in the last round, ``robust_converged``
    the reweighting's.
    """

    weights: np.ndarray
    scale: np.ndarray
    rounds: np.ndarray
    robust_converged: np.ndarray
    too_few: np.ndarray


def refine(
    s: np.ndarray,
    d: np.ndarray,
    w: np.ndarray | None,
    m0: np.ndarray,
    metric,
    *,
    max_iter: int | np.ndarray = 200,
    tol: float = 1e-10,
    ridge: float | None = None,
    ridge_target: np.ndarray | None = None,
    white: tuple[np.ndarray, np.ndarray] | None = None,
) -> RefineResult:
    r"""Minimise the weighted RMS colour difference over ``M``, starting from ``m0``.

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
    max_iter : int or ndarray (B,)
        Most Jacobian evaluations per element.
    tol : float
        Converged when the relative loss decrease of an accepted step, the relative step
        length, or the scaled gradient falls below ``tol``.
    ridge : float, optional
        Adds the Tikhonov penalty :math:`\lambda \sum_{jo} h_{jo} (M_{jo} - M_{0,jo})^2`
        (as residuals :math:`\sqrt{\lambda h_{jo}}\,(M_{jo} - M_{0,jo})`) with
        :math:`M_0` = ``ridge_target (B, k, 3)`` and :math:`h` the diagonal of
        :math:`J^T J` of the colour residuals at ``m0`` (the loss's curvature along each
        coefficient; for the ``"linear_rgb"`` loss the closed form's
        :math:`A_{jj}`). ``loss`` and ``start_loss`` are the colour difference alone.
    white : (t_w (B, k), d_w (B, 3)), optional
        Keep ``t_w @ M == d_w`` (a white mapped exactly): ``M = M_p + N Z`` over the null
        space of ``t_w`` (:func:`xccm._solve.null_space`), ``Z`` the parameters.
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

    def colour_residuals(idx: np.ndarray, m: np.ndarray) -> np.ndarray:
        """``sqrt(w) * distance`` for elements ``idx`` at matrices ``m (len(idx), k, n_out)``."""
        pred = s[idx] @ m
        r = sqrt_w[idx, :, None] * metric.components(metric.transform(pred), target[idx])
        return np.where(valid[idx, :, None], r, 0.0).reshape(len(idx), -1)

    to_m, p, ok = _parametrise(m0, white)
    ok &= n_used > 0
    penalty = _penalty(colour_residuals, m0, ok, ridge, ridge_target)

    def residuals(idx: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Return the residuals of elements ``idx`` at parameters ``p (len(idx), n_par)``."""
        m = to_m(idx, p)
        r = colour_residuals(idx, m)
        if penalty is None:
            return r
        h, m_target = penalty
        return np.concatenate([r, (h[idx] * (m - m_target[idx])).reshape(len(idx), -1)], -1)

    cost = np.full(n_batch, np.nan)
    iterations = np.zeros(n_batch, dtype=np.int64)
    converged = ~ok
    active = np.flatnonzero(ok)
    limit = np.broadcast_to(np.asarray(max_iter), (n_batch,))
    # Per element: the residuals at its parameters (its next Jacobian's base point), and
    # the Jacobian and gradient there once computed (``ready``: computed ahead, with the
    # residuals of the same point in one call, see _evaluate).
    n_par = p.shape[-1]  # M's entries, or the null-space parameters of a white point
    n_res = s.shape[1] * n_out + (0 if penalty is None else k * n_out)
    moving = limit[active] > 0  # the others: the start is evaluated, no step taken
    n_jac = n_batch if moving.any() else 0  # no Jacobians to store when none moves
    res = np.zeros((n_batch, n_res))
    jac = np.zeros((n_jac, n_res, n_par))
    grad = np.zeros((n_jac, n_par))
    ready = np.zeros(n_batch, dtype=bool)
    if active.size:  # the start, and its Jacobian where there will be a step
        res[active], j_new, g_new = _evaluate(residuals, active, p[active], moving)
        cost[active] = _sumsq(res[active])
        if j_new is not None:
            jac[active[moving]], grad[active[moving]], ready[active[moving]] = j_new, g_new, 1
    start = cost.copy()
    mu = np.full(n_batch, np.nan)
    nu = np.full(n_batch, 2.0)
    fresh = np.ones(n_batch, dtype=bool)  # needs a new Jacobian (after an accepted step)
    active = active[limit[active] > 0]  # else evaluate the start only
    while active.size:
        idx = active
        # Jacobian and gradient for the elements whose parameters moved.
        need = idx[fresh[idx]]
        if need.size:
            late = need[~ready[need]]
            if late.size:
                jac[late], grad[late] = _jacobian(residuals, late, p[late], res[late])
            iterations[need] += 1
            fresh[need] = False
            ready[need] = False
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
        # A small batch gets the Jacobian at the trial point in the same call, used if the
        # step is accepted: a call costs more than the arithmetic of its few colours.
        ahead = len(idx) * n_res * (n_par + 1) <= _AHEAD_SIZE
        r_trial, j_trial, g_trial = _evaluate(residuals, idx, trial, ahead)
        new_cost = _sumsq(r_trial)
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
        res[acc] = r_trial[better]
        if ahead:
            jac[acc], grad[acc], ready[acc] = j_trial[better], g_trial[better], True
        fresh[acc] = True
        done = small_grad | (better & (rel_drop <= tol)) | (rel_step <= tol) | (cost[idx] == 0)
        converged[idx[done]] = True
        stop = done | (iterations[idx] >= limit[idx]) | ~np.isfinite(mu[idx])
        active = idx[~stop]
    n = np.maximum(n_used, 1)
    everything = np.arange(n_batch)
    matrix = np.where(ok[:, None, None], to_m(everything, p), m0)
    if penalty is not None or white is not None:  # the colour difference alone
        with np.errstate(invalid="ignore", over="ignore"):
            cost = _sumsq(colour_residuals(everything, matrix))
            start = _sumsq(colour_residuals(everything, m0))
    return RefineResult(
        matrix=matrix,
        loss=np.where(ok, np.sqrt(cost / n), np.nan),
        start_loss=np.where(ok, np.sqrt(start / n), np.nan),
        iterations=iterations,
        converged=converged & ok,
    )


def _parametrise(m0: np.ndarray, white):
    """``(to_m, p0, ok)``: matrices from parameters, the start's parameters, usable starts.

    Without a constraint the parameters are ``M``'s entries; with ``white = (t_w, d_w)``
    they are ``Z`` of ``M = M_p + N Z`` (:func:`xccm._solve.null_space`).
    """
    n_batch, k, n_out = m0.shape
    if white is None:

        def entries(idx, p):
            return p.reshape(-1, k, n_out)

        p0 = m0.reshape(n_batch, k * n_out).copy()
        return entries, p0, np.isfinite(p0).all(-1)
    t_w = np.broadcast_to(np.asarray(white[0], dtype=np.float64), (n_batch, k))
    d_w = np.broadcast_to(np.asarray(white[1], dtype=np.float64), (n_batch, n_out))
    basis, pinv = null_space(t_w)
    mp = pinv[:, :, None] * d_w[:, None, :]

    def to_m(idx, p):
        return mp[idx] + basis[idx] @ p.reshape(-1, k - 1, n_out)

    with np.errstate(invalid="ignore"):
        p0 = (np.swapaxes(basis, -1, -2) @ (m0 - mp)).reshape(n_batch, (k - 1) * n_out)
    ok = np.isfinite(p0).all(-1) & np.isfinite(mp).all((-1, -2))
    return to_m, p0, ok


def _penalty(colour_residuals, m0, ok, ridge, ridge_target):
    """``(sqrt(λ h) (B, k, n_out), M_0)`` of the ridge penalty, or None without one.

    ``h``: the diagonal of ``J^T J`` of the colour residuals over the entries of ``M`` at
    ``m0`` (one forward-difference Jacobian), floored at 1e-12 of its largest entry.
    """
    if not ridge:
        return None
    n_batch, k, n_out = m0.shape
    h = np.zeros((n_batch, k * n_out))
    idx = np.flatnonzero(ok & np.isfinite(m0).all((-1, -2)))
    if idx.size:

        def flat(i, p):
            return colour_residuals(i, p.reshape(-1, k, n_out))

        p0 = m0[idx].reshape(len(idx), -1)
        jac, _ = _jacobian(flat, idx, p0, flat(idx, p0))
        h[idx] = np.einsum("bnp,bnp->bp", jac, jac)
    h = np.maximum(h, 1e-12 * h.max(-1, keepdims=True))
    target = np.zeros(m0.shape) if ridge_target is None else np.asarray(ridge_target, float)
    return np.sqrt(ridge * h).reshape(m0.shape), target


def _select(constraints: dict, idx: np.ndarray) -> dict:
    """``constraints`` of :func:`refine` for batch elements ``idx``."""
    out = dict(constraints)
    if out.get("ridge_target") is not None:
        out["ridge_target"] = out["ridge_target"][idx]
    if out.get("white") is not None:
        out["white"] = tuple(a[idx] for a in out["white"])
    return out


def _sumsq(r: np.ndarray) -> np.ndarray:
    return np.einsum("bn,bn->b", r, r)


def _max_diag(a: np.ndarray) -> np.ndarray:
    return np.diagonal(a, axis1=1, axis2=2).max(-1, keepdims=True)


def _diag_matrix(v: np.ndarray) -> np.ndarray:
    out = np.zeros((*v.shape, v.shape[-1]))
    i = np.arange(v.shape[-1])
    out[..., i, i] = v
    return out


def _shifted(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-difference points ``q (P, B, P)`` and steps ``h (P, B)`` around ``p (B, P)``.

    ``q[j]`` is ``p`` with parameter ``j`` shifted; ``h`` the steps actually taken, after
    rounding.
    """
    eps = np.sqrt(np.finfo(np.float64).eps)
    n_p = p.shape[-1]
    h = eps * np.maximum(np.abs(p), 1.0)  # (B, P): element b's step in parameter j
    q = np.broadcast_to(p, (n_p, *p.shape)).copy()
    cols = np.arange(n_p)
    q[cols, :, cols] += h.T
    return q, q[cols, :, cols] - p.T


def _difference(r: np.ndarray, r0: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jacobian ``(B, N, P)`` and gradient ``(B, P)`` from residuals at the shifted points.

    ``r (P, B, N)`` at the points of :func:`_shifted`, ``r0 (B, N)`` at the base point.
    """
    # C order, as the products with it downstream round differently on a strided view
    jac = np.ascontiguousarray(np.moveaxis((r - r0) / h[:, :, None], 0, -1))
    return jac, np.einsum("bnp,bn->bp", jac, r0)


def _jacobian(
    residuals, idx: np.ndarray, p: np.ndarray, r0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Forward-difference Jacobian ``(len(idx), N, P)`` and gradient at ``p``.

    The ``P`` shifted parameter sets of every element are evaluated in one call of
    ``residuals`` (a batch ``P`` times as long), not ``P`` calls: for one frame the per-call
    overhead of the colour maths, not the arithmetic, is the cost.
    """
    q, h = _shifted(p)
    n_p = p.shape[-1]
    r = residuals(np.tile(idx, n_p), q.reshape(-1, n_p)).reshape(n_p, *r0.shape)
    return _difference(r, r0, h)


def _evaluate(residuals, idx: np.ndarray, p: np.ndarray, jacobian: bool | np.ndarray):
    """Residuals at ``p`` and, for the elements ``jacobian`` selects, the Jacobian and gradient.

    All in one call of ``residuals``: the values are those of :func:`_jacobian` after a call
    for the residuals alone (each element is evaluated on its own), in one call fewer.
    Without any element selected the Jacobian and gradient are None.
    """
    sel = np.flatnonzero(np.broadcast_to(jacobian, idx.shape))
    if not sel.size:
        return residuals(idx, p), None, None
    q, h = _shifted(p[sel])
    n_p = p.shape[-1]
    both = residuals(
        np.concatenate([idx, np.tile(idx[sel], n_p)]), np.concatenate([p, q.reshape(-1, n_p)])
    )
    r0 = both[: len(idx)]
    return (r0, *_difference(both[len(idx) :].reshape(n_p, len(sel), -1), r0[sel], h))


def sample_errors(s: np.ndarray, d: np.ndarray, m: np.ndarray, metric) -> np.ndarray:
    """Return the colour difference ``(B, N)`` of every sample corrected by ``m (B, k, 3)``.

    NaN where a sample has a non-finite value (or the matrix is NaN).
    """
    s, d = np.asarray(s, dtype=np.float64), np.asarray(d, dtype=np.float64)
    if m.shape[-2] == s.shape[-1] + 1:
        s = np.concatenate([s, np.ones((*s.shape[:-1], 1))], axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        pred = s @ m
        e = metric.components(metric.transform(pred), metric.transform(d))
        return np.sqrt((e**2).sum(-1))


def refine_robust(
    s: np.ndarray,
    d: np.ndarray,
    w: np.ndarray | None,
    m0: np.ndarray,
    metric,
    *,
    method: str,
    tuning: float | None = None,
    max_iter: int = 200,
    min_samples: int = 0,
    max_rounds: int = ROBUST_MAX_ROUNDS,
    tol: float = ROBUST_TOL,
    **constraints,
) -> RobustResult:
    r""":func:`refine` with robust weights: an outer reweighting loop around the solver.

    The residual of a sample is its colour difference :math:`\Delta E_i` (the metric's
    distance). Weights from the ΔE at ``m0`` (a robust least-squares start, so outliers show),
    then rounds of: minimise the weighted loss with :func:`refine` (weights ``w`` times the
    robust weights, from the previous round's matrix), reweight
    (:func:`xccm._kernels.robust_weights`, the scale re-estimated), until no weight changes
    by more than ``tol`` or after ``max_rounds`` rounds. Each solve is a fixed weighted
    problem, so the solver's step acceptance stays sound (reweighting inside it would change
    the loss it compares steps on); elements that converged leave the batch. ``max_iter``
    bounds the solver's iterations over all rounds together (each round goes on from the
    last round's matrix), so a robust fit costs at most what a plain one may.

    ``constraints`` (``ridge``, ``ridge_target``, ``white``) go to :func:`refine`.

    The matrix returned is the minimiser for the weights returned (those of the last solve).
    Elements whose weights leave fewer than ``max(k, min_samples)`` samples with a positive
    weight are NaN and flagged ``too_few``.
    """
    s, d, m0 = (np.asarray(a, dtype=np.float64) for a in (s, d, m0))
    n_batch, n, _ = s.shape
    k = m0.shape[-2]
    base = np.ones((n_batch, n)) if w is None else np.asarray(w, dtype=np.float64)
    valid = np.isfinite(s).all(-1) & np.isfinite(d).all(-1) & np.isfinite(base) & (base > 0)
    base = np.where(valid, base, 0.0)
    needed = max(k, int(min_samples))
    floor = 1e-9  # a colour difference of 1e-9 is rounding, not a residual to weigh
    weights, scale = robust_weights(sample_errors(s, d, m0, metric), valid, method, tuning, floor)
    m = m0.copy()
    loss = np.full(n_batch, np.nan)
    start_loss = np.full(n_batch, np.nan)
    iterations = np.zeros(n_batch, dtype=np.int64)
    converged = np.zeros(n_batch, dtype=bool)
    robust_converged = np.zeros(n_batch, dtype=bool)
    rounds = np.zeros(n_batch, dtype=np.int64)
    too_few = (np.nan_to_num(weights) > 0).sum(-1) < needed
    active = np.flatnonzero(np.isfinite(m0).all((-1, -2)) & valid.any(-1) & ~too_few)
    first = True
    while active.size:
        idx = active
        res = refine(
            s[idx],
            d[idx],
            base[idx] * np.nan_to_num(weights[idx]),
            m[idx],
            metric,
            max_iter=max_iter - iterations[idx],
            **_select(constraints, idx),
        )
        if first:
            start_loss[idx] = res.start_loss
            first = False
        m[idx], loss[idx] = res.matrix, res.loss
        iterations[idx] += res.iterations
        converged[idx] = res.converged
        rounds[idx] += 1
        new, sc = robust_weights(
            sample_errors(s[idx], d[idx], m[idx], metric), valid[idx], method, tuning, floor
        )
        with np.errstate(invalid="ignore"):
            change = np.nanmax(np.abs(new - weights[idx]), axis=-1, initial=0.0)
        done = change <= tol
        robust_converged[idx[done]] = True
        moves = ~done & (rounds[idx] < max_rounds) & (iterations[idx] < max_iter)
        weights[idx[moves]], scale[idx[moves]] = new[moves], sc[moves]
        few = moves & ((np.nan_to_num(new) > 0).sum(-1) < needed)
        too_few[idx[few]] = True
        active = idx[moves & ~few]
    m[too_few] = np.nan
    loss[too_few] = np.nan
    converged &= ~too_few
    return RobustResult(
        matrix=m,
        loss=loss,
        start_loss=start_loss,
        iterations=iterations,
        converged=converged,
        weights=weights,
        scale=scale,
        rounds=rounds,
        robust_converged=robust_converged & ~too_few,
        too_few=too_few,
    )
