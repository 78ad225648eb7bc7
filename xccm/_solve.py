r"""Closed-form solves of a model's normal equations: ridge and the white-point constraint.

ndarrays only (no xarray). The statistics are :func:`xccm._kernels.gram`'s, computed on the
*expanded* samples: the columns of ``S`` are a model's terms ``t(s)`` (``R, G, B,
sqrt(R*G), ...``), ``n_in`` of them; ``k`` columns are unknowns (``n_in``, or ``n_in + 1``
for an affine model whose ones column is the gram's own). With :math:`A = T^T W T` and
:math:`B = T^T W D` (the first ``k`` rows and columns of the statistics),

* least squares solves :math:`A M = B`;
* ``ridge=λ`` (Tikhonov toward a target :math:`M_0`) minimises
  :math:`\sum_i w_i \lVert t_i M - D_i \rVert^2 + λ \sum_{j,o} A_{jj} (M_{jo} - M_{0,jo})^2`,
  i.e. solves :math:`(A + λ\,\mathrm{diag}(A)) M = B + λ\,\mathrm{diag}(A) M_0`. Each row is
  penalised relative to its own term's weighted sum of squares :math:`A_{jj}`, so ``λ`` does
  not depend on the number of samples, their weights, the exposure or the units of a term;
  :math:`M_0` is the least-squares 3x3 of the same samples (target ``"linear"``) or the
  identity (``"identity"``), in the linear rows, zero in the others;
* a *white* constraint :math:`t_w M = d_w` (a colour mapped exactly) is solved in its null
  space: :math:`M = M_p + N Z` with :math:`M_p = t_w^T d_w / \lVert t_w \rVert^2` and the
  columns of :math:`N` an orthonormal basis of :math:`t_w^\perp`, so that
  :math:`(N^T A N) Z = N^T (B - A M_p)` (:func:`null_space`, which the ΔE refinement uses
  too);
* white balance is :math:`\mathrm{diag}(\bar D / \bar S)` in the linear rows (weighted
  means), or :math:`\mathrm{diag}(d_w / s_w)` with a white constraint; zero elsewhere.

Forming :math:`A = T^T W T` squares the condition number of the design :math:`T`, so the
plain least-squares solve :math:`M_0` of an expanded model is accurate only to about
:math:`\epsilon\,\kappa(T)^2` (``5e-8`` for a root-polynomial of degree 3 on a chart).
Iterative refinement of the normal equations (the idea of Björck's corrected semi-normal
equations, here with :math:`A`'s own factorisation) recovers the :math:`\epsilon\,\kappa(T)`
of an orthogonal (QR, SVD) solve: with the residual :math:`R = D - T M_0` of the samples,
solve :math:`A\,\delta M = T^T W R` with the same :math:`A` and take :math:`M = M_0 +
\delta M` (:func:`residual`, :func:`correct`). A step shrinks the error by about
:math:`\epsilon\,\kappa(T)^2`, down to the floor :math:`\epsilon\,\kappa(T)` that the
residual's rounding leaves: one step reaches it while :math:`\kappa(T) \lesssim
\epsilon^{-1/3} \approx 10^5`; beyond (up to the :math:`10^6` the solve admits) one step
leaves about :math:`\epsilon^2 \kappa(T)^4`.
"""

from __future__ import annotations

import numpy as np

from ._kernels import MAX_GRAM_CONDITION, report_unsolved, singular_mask

__all__ = ["correct", "null_space", "residual", "ridge_target", "solve_model_gram"]


def null_space(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis ``N (..., k, k - 1)`` of the vectors orthogonal to ``c (..., k)``.

    Also returns ``c / |c|^2`` (``(..., k)``), so that ``M_p = outer(c / |c|^2, d)`` is the
    smallest matrix with ``c @ M_p == d``. From a complete QR of ``c`` as a column.

    Examples
    --------
    >>> n, _ = null_space(np.array([1.0, 1.0, 0.0]))
    >>> np.allclose(np.array([1.0, 1.0, 0.0]) @ n, 0), n.shape
    (True, (3, 2))
    """
    c = np.asarray(c, dtype=np.float64)
    safe = np.where(np.isfinite(c).all(-1, keepdims=True), c, 1.0)
    q, _ = np.linalg.qr(safe[..., :, None], mode="complete")
    with np.errstate(invalid="ignore", divide="ignore"):
        pinv = c / (c * c).sum(-1, keepdims=True)
    return q[..., :, 1:], pinv


def ridge_target(a: np.ndarray, b: np.ndarray, linear_rows, target: str) -> np.ndarray:
    """Return the ridge target ``M_0 (..., k, n_out)``: the least-squares 3x3 or the identity.

    ``a``, ``b``: the normal equations ``(..., k, k)`` and ``(..., k, n_out)``;
    ``linear_rows``: the rows of the channel terms (``R, G, B``). The 3x3 is the least
    squares of the channel terms alone (NaN if they are singular).
    """
    lin = np.asarray(linear_rows)
    out = np.zeros(b.shape)
    if target == "identity":
        n = min(len(lin), b.shape[-1])
        out[..., lin[:n], np.arange(n)] = 1.0
        return out
    sub = a[..., lin[:, None], lin[None, :]]
    bad = singular_mask(sub, MAX_GRAM_CONDITION, symmetric=True) | ~np.isfinite(sub).all((-1, -2))
    sub = np.where(bad[..., None, None], np.eye(len(lin)), sub)
    m3 = np.linalg.solve(sub, b[..., lin, :])
    m3[bad] = np.nan
    out[..., lin, :] = m3
    return out


def solve_model_gram(
    g: np.ndarray,
    n_in: int,
    *,
    k: int,
    linear_rows,
    init: str = "least_squares",
    min_samples: int = 0,
    ridge: float | None = None,
    target: str = "linear",
    white_t: np.ndarray | None = None,
    white_d: np.ndarray | None = None,
    model: str = "linear",
) -> np.ndarray:
    """Solve packed statistics for a model's matrix, with ridge and a white constraint.

    Parameters
    ----------
    g : ndarray (..., p + 1, p)
        :func:`xccm._kernels.gram` of the expanded samples (``p = n_in + 1 + n_out``).
    n_in : int
        Columns of the expanded samples (the model's terms).
    k : int
        Unknowns per column: ``n_in``, or ``n_in + 1`` (affine: the gram's ones column).
    linear_rows : sequence of int
        The rows of the channel terms (``R, G, B``): white balance and the ``"linear"``
        ridge target live there.
    init, min_samples
        As for :func:`xccm._kernels.solve_gram`.
    ridge : float, optional
        ``λ`` of the penalty (see the module docstring); None or 0: none.
    target : {"linear", "identity"}
        The ridge target.
    white_t, white_d : ndarray (..., k) and (..., n_out), optional
        The constraint ``white_t @ M == white_d``.
    model : str
        The model's name, for messages.

    Returns
    -------
    ndarray (..., k, n_out)
        NaN (with an :class:`~xccm._kernels.InsufficientSamplesWarning`) where too few
        samples, a singular system or a non-finite white colour; a ValueError if no batch
        element can be fitted.
    """
    m, bad, needed, overflow, count = solve_model_stats(
        g,
        n_in,
        k=k,
        linear_rows=linear_rows,
        init=init,
        min_samples=min_samples,
        ridge=ridge,
        target=target,
        white_t=white_t,
        white_d=white_d,
    )
    report_unsolved(bad, overflow, count, needed, model=model, init=init)
    return m


def solve_model_stats(
    g,
    n_in,
    *,
    k,
    linear_rows,
    init="least_squares",
    min_samples=0,
    ridge=None,
    target="linear",
    white_t=None,
    white_d=None,
):
    """:func:`solve_model_gram` without its warning: ``(m, bad, needed, overflow, count)``."""
    p = g.shape[-1]
    n_out = p - n_in - 1
    stats, count = g[..., :p, :], g[..., p, 0]
    overflow = ~np.isfinite(stats).all(axis=(-1, -2))
    stats = np.where(overflow[..., None, None], 0.0, stats)
    lin = np.asarray(linear_rows)
    white = white_t is not None
    if white:
        white_t = np.broadcast_to(np.asarray(white_t, dtype=np.float64), (*g.shape[:-2], k))
        white_d = np.broadcast_to(np.asarray(white_d, dtype=np.float64), (*g.shape[:-2], n_out))
        white_ok = np.isfinite(white_t).all(-1) & np.isfinite(white_d).all(-1)
    else:
        white_ok = np.ones(g.shape[:-2], dtype=bool)
    if init == "white_balance":
        if n_out != len(lin):
            raise ValueError(
                f"init='white_balance' needs as many output as input channels; got "
                f"{len(lin)} in and {n_out} out"
            )
        if white:
            sum_s, sum_d = white_t[..., lin], white_d
        else:
            sum_s, sum_d = stats[..., n_in, lin], stats[..., n_in, n_in + 1 :]
        needed = max(1, min_samples)
        with np.errstate(divide="ignore", invalid="ignore"):
            gains = sum_d / sum_s
        bad = (count < needed) | ~np.isfinite(gains).all(axis=-1) | overflow | ~white_ok
        m = np.zeros((*g.shape[:-2], k, n_out))
        m[..., lin, np.arange(len(lin))] = np.where(bad[..., None], 0.0, gains)
        m[bad] = np.nan
        return m, bad, needed, overflow, count
    a = stats[..., :k, :k]
    b = stats[..., :k, n_in + 1 :]
    needed = max(k, min_samples)
    bad = (count < needed) | overflow | ~white_ok
    if ridge:
        m0 = ridge_target(a, b, lin, target)
        h = np.diagonal(a, axis1=-2, axis2=-1)
        h = np.maximum(h, 1e-12 * h.max(-1, keepdims=True))
        eye = np.eye(k)
        a = a + ridge * h[..., :, None] * eye
        b = b + ridge * h[..., :, None] * m0
        bad |= ~np.isfinite(m0).all((-1, -2))
    if white:
        basis, pinv = null_space(white_t)
        mp = pinv[..., :, None] * white_d[..., None, :]
        a_n = np.swapaxes(basis, -1, -2) @ a @ basis
        b_n = np.swapaxes(basis, -1, -2) @ (b - a @ np.where(bad[..., None, None], 0.0, mp))
        bad |= singular_mask(a_n, MAX_GRAM_CONDITION, symmetric=True)
        a_n = np.where(bad[..., None, None], np.eye(k - 1), a_n)
        b_n = np.where(bad[..., None, None], 0.0, b_n)
        m = mp + basis @ np.linalg.solve(a_n, b_n)
    else:
        bad |= singular_mask(a, MAX_GRAM_CONDITION, symmetric=True)
        a = np.where(bad[..., None, None], np.eye(k), a)
        b = np.where(bad[..., None, None], 0.0, b)
        m = np.linalg.solve(a, b)
    m = np.array(m, dtype=np.float64)
    m[bad] = np.nan
    return m, bad, needed, overflow, count


def residual(t: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Return ``D - T M`` per sample: ``t (..., n_in)``, ``d (..., n_out)``, ``m (..., k, n_out)``.

    ``k`` is ``n_in``, or ``n_in + 1`` with the offset in the last row (the gram's ones
    column). Float64; NaN where a colour or the matrix is (the gram then leaves the sample
    out, as it did the colour).

    Examples
    --------
    >>> residual(np.array([1.0, 2.0]), np.array([3.0]), np.array([[1.0], [1.0]]))
    array([0.])
    """
    t = np.asarray(t, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    n_in = t.shape[-1]
    fitted = (t[..., None, :] @ m[..., :n_in, :])[..., 0, :]
    if m.shape[-2] > n_in:
        fitted = fitted + m[..., n_in, :]
    return np.asarray(d, dtype=np.float64) - fitted


def correct(g: np.ndarray, g_r: np.ndarray, m: np.ndarray, *, n_in: int, k: int) -> np.ndarray:
    """One step of iterative refinement of a least-squares solve: ``M + A^-1 T^T W R``.

    ``g``: the statistics ``M`` solved (:func:`xccm._kernels.gram` of ``T``, ``D``);
    ``g_r``: those of ``T`` and the residual ``R = D - T M`` (:func:`residual`) with the same
    weights, whose ``T^T W R`` block is the right-hand side of the correction; ``m (..., k,
    n_out)``. The correction solves with ``A`` of ``g``, as ``M`` was. A batch element whose
    ``M`` is NaN stays NaN; one whose correction is not finite (an overflowing residual)
    keeps ``M``.

    Examples
    --------
    >>> from xccm._kernels import gram
    >>> t = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> d = np.array([[1.0], [2.0], [2.0]])
    >>> rough = np.array([[0.5], [1.5]])
    >>> m = correct(gram(t, d), gram(t, residual(t, d, rough)), rough, n_in=2, k=2)
    >>> np.allclose(m, np.linalg.lstsq(t, d, rcond=None)[0])
    True
    """
    m = np.array(m, dtype=np.float64)
    p = g.shape[-1]
    a = g[..., :k, :k]
    b = g_r[..., :k, n_in + 1 : p]
    good = np.isfinite(m).all((-1, -2)) & np.isfinite(b).all((-1, -2))
    good &= np.isfinite(a).all((-1, -2))
    a = np.where(good[..., None, None], a, np.eye(k))
    b = np.where(good[..., None, None], b, 0.0)
    step = np.linalg.solve(a, b)
    good &= np.isfinite(step).all((-1, -2))
    return np.where(good[..., None, None], m + np.where(good[..., None, None], step, 0.0), m)
