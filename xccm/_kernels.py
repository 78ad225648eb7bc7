"""Array kernels for colour-correction matrices: ndarrays only, channel axis last.

This module knows nothing of xarray or Dask. Every function takes and returns plain arrays
whose last axis (or last two axes, for matrices) are the core axes; leading axes are batch
axes that broadcast in the NumPy way.

Conventions (row vectors, as in ``D = S @ M``):

* a *linear* matrix has shape ``(..., n_in, n_out)``;
* an *affine* matrix has shape ``(..., n_in + 1, n_out)``, its last row being the offset;
* a *gram* is the packed sufficient statistic of a weighted least-squares fit, see :func:`gram`.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "apply_matrix",
    "gram",
    "invert_matrix",
    "singular_mask",
    "solve_gram",
]

#: Largest condition number of the normal matrix treated as solvable. The normal equations
#: square the condition number of the design matrix, so this admits design matrices with a
#: condition number up to ~1e6, beyond which float64 least squares loses most digits.
MAX_GRAM_CONDITION = 1e12

#: Largest condition number of a matrix that :func:`invert_matrix` inverts.
MAX_INVERT_CONDITION = 1e12


class InsufficientSamplesWarning(UserWarning):
    """Some batch elements had too few valid samples (or a singular system) to be fitted."""


def apply_matrix(x: np.ndarray, m: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
    """Apply a linear or affine matrix to ``x`` along its last axis.

    Parameters
    ----------
    x : ndarray, shape (..., n_in)
        Colours, channel axis last. Integer input is read as ``dtype``.
    m : ndarray, shape (..., n_in, n_out) or (..., n_in + 1, n_out)
        Matrix; its leading axes broadcast against the leading axes of ``x``.
    dtype : dtype, optional
        Floating dtype of the result. Defaults to ``m.dtype``.

    Returns
    -------
    ndarray, shape (..., n_out)

    Examples
    --------
    >>> apply_matrix(np.array([[1.0, 2.0, 3.0]]), np.diag([1.0, 0.5, 2.0]))
    array([[1., 1., 6.]])
    """
    dtype = np.dtype(m.dtype if dtype is None else dtype)
    n_in = x.shape[-1]
    x = x.astype(dtype, copy=False)
    m = m.astype(dtype, copy=False)
    if m.shape[-2] == n_in + 1:
        up, offset = m[..., :-1, :], m[..., -1:, :]
    elif m.shape[-2] == n_in:
        up, offset = m, None
    else:
        raise ValueError(
            f"matrix has {m.shape[-2]} rows; expected {n_in} (linear) or {n_in + 1} (affine) "
            f"for {n_in} input channels"
        )
    out = _matmul_rows(x, up)
    if offset is not None:
        out += offset[..., 0, :]  # (..., n_out) broadcasts against out's leading axes
    return out


def _matmul_rows(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Row-vector product ``x @ m`` with ``x (..., n_in)`` and ``m (..., n_in, n_out)``.

    The leading axes of ``m`` broadcast against those of ``x``. Trailing leading axes where
    ``m`` has size 1 (the pixels sharing one matrix) are flattened into the rows of a single
    matrix product, so the work is a few large GEMMs rather than one tiny product per pixel.
    """
    lead_x, n_in = x.shape[:-1], x.shape[-1]
    lead_m = m.shape[:-2]
    if len(lead_m) > len(lead_x):
        raise ValueError(f"matrix has more batch axes {lead_m} than the image {lead_x}")
    lead_m = (1,) * (len(lead_x) - len(lead_m)) + lead_m
    m = m.reshape((*lead_m, *m.shape[-2:]))
    # Number of trailing batch axes over which the matrix is constant.
    k = 0
    while k < len(lead_x) and lead_m[len(lead_x) - 1 - k] == 1:
        k += 1
    head = lead_x[: len(lead_x) - k]
    rows = int(np.prod(lead_x[len(lead_x) - k :], dtype=np.int64))
    xs = x.reshape((*head, rows, n_in))
    ms = m.reshape((*lead_m[: len(lead_x) - k], *m.shape[-2:]))
    out = np.matmul(xs, ms)
    return out.reshape((*lead_x, m.shape[-1]))


def gram(
    s: np.ndarray,
    d: np.ndarray,
    w: np.ndarray | None = None,
    n_sample_axes: int = 1,
) -> np.ndarray:
    """Packed weighted normal-equation statistics of one block of samples.

    With ``X = [S, 1, D]`` (``p = n_in + 1 + n_out`` columns) and ``W`` the weights of the
    valid samples (zero for a sample with a non-finite value in ``s`` or ``d``), returns
    ``G = X^T W X`` and the number of samples with positive weight, packed as one array so a
    chunked reduction needs a single sum: ``out[..., :p, :]`` is ``G`` and
    ``out[..., p, 0]`` is the count. ``G`` holds everything a fit needs:
    ``S+^T W S+`` (the top-left ``n_in + 1`` square), ``S+^T W D`` (the block beside it), the
    weighted channel sums (the ones row) and ``D^T W D`` (for the residual). Statistics add up
    over disjoint blocks of samples.

    Parameters
    ----------
    s : ndarray, shape (..., *samples, n_in)
    d : ndarray, shape (..., *samples, n_out)
        Broadcastable against ``s`` on every axis but the last.
    w : ndarray, shape (..., *samples), optional
        Non-negative weights, broadcastable like ``d``. ``None`` means all ones.
    n_sample_axes : int
        How many axes before the channel axis are sample axes (summed over).

    Returns
    -------
    ndarray, shape (..., p + 1, p), float64

    Raises
    ------
    ValueError
        If a weight is negative or NaN.

    Examples
    --------
    >>> s = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    >>> g = gram(s, 2 * s)
    >>> g.shape, int(g[7, 0])
    ((8, 7), 4)
    """
    n_in, n_out = s.shape[-1], d.shape[-1]
    batch = np.broadcast_shapes(
        s.shape[:-1],
        d.shape[:-1],
        () if w is None else np.shape(w),
    )
    lead, samples = batch[: len(batch) - n_sample_axes], batch[len(batch) - n_sample_axes :]
    n = int(np.prod(samples, dtype=np.int64))
    s = np.broadcast_to(s, (*batch, n_in)).reshape((*lead, n, n_in))
    d = np.broadcast_to(d, (*batch, n_out)).reshape((*lead, n, n_out))
    weight = np.ones((*lead, n)) if w is None else _check_weights(w, batch).reshape((*lead, n))
    valid = np.isfinite(s).all(axis=-1) & np.isfinite(d).all(axis=-1) & (weight > 0)
    root = np.where(valid, np.sqrt(np.where(valid, weight, 0.0)), 0.0)[..., None]
    p = n_in + 1 + n_out
    x = np.empty((*lead, n, p))
    x[..., :n_in] = np.where(valid[..., None], s, 0.0)
    x[..., n_in] = 1.0
    x[..., n_in + 1 :] = np.where(valid[..., None], d, 0.0)
    x *= root
    out = np.zeros((*lead, p + 1, p))
    out[..., :p, :] = np.matmul(np.swapaxes(x, -1, -2), x)
    out[..., p, 0] = valid.sum(axis=-1)
    return out


def _check_weights(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), shape)
    if np.isnan(w).any() or (w < 0).any():
        raise ValueError("weights must be non-negative and not NaN; got negative or NaN values")
    return w


def solve_gram(
    g: np.ndarray,
    n_in: int,
    *,
    model: str = "linear",
    init: str = "least_squares",
) -> np.ndarray:
    """Solve packed statistics from :func:`gram` for a matrix.

    Parameters
    ----------
    g : ndarray, shape (..., p + 1, p)
        Statistics summed over all samples.
    n_in : int
        Number of input channels.
    model : {"linear", "affine"}
    init : {"least_squares", "white_balance"}

    Returns
    -------
    ndarray, shape (..., n_in, n_out) or (..., n_in + 1, n_out)
        A batch element with fewer valid samples than unknowns per column, or a singular
        system, is NaN, and an :class:`InsufficientSamplesWarning` says how many.

    Raises
    ------
    ValueError
        If no batch element can be fitted.

    Examples
    --------
    >>> s = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    >>> solve_gram(gram(s, s @ np.diag([2.0, 3.0, 4.0])), 3).round(12)
    array([[2., 0., 0.],
           [0., 3., 0.],
           [0., 0., 4.]])
    """
    p = g.shape[-1]
    n_out = p - n_in - 1
    stats, count = g[..., :p, :], g[..., p, 0]
    affine = model == "affine"
    k = n_in + 1 if affine else n_in
    if init == "white_balance":
        if n_in != n_out:
            raise ValueError(
                f"init='white_balance' needs as many output as input channels; "
                f"got {n_in} in and {n_out} out"
            )
        sum_s, sum_d = stats[..., n_in, :n_in], stats[..., n_in, n_in + 1 :]
        needed = 1
        with np.errstate(divide="ignore", invalid="ignore"):
            gains = sum_d / sum_s
        bad = (count < needed) | ~np.isfinite(gains).all(axis=-1)
        m = np.zeros((*g.shape[:-2], k, n_out))
        diag = np.arange(n_in)
        m[..., diag, diag] = np.where(bad[..., None], 0.0, gains)
    else:
        # The ones column sits right after the n_in input columns, so the first k rows and
        # columns of the statistics are S^T W S (linear) or S+^T W S+ (affine).
        a = stats[..., :k, :k]
        b = stats[..., :k, n_in + 1 :]
        needed = k
        bad = (count < needed) | singular_mask(a, MAX_GRAM_CONDITION)
        eye = np.broadcast_to(np.eye(k), a.shape)
        a = np.where(bad[..., None, None], eye, a)
        b = np.where(bad[..., None, None], 0.0, b)
        m = np.linalg.solve(a, b)
    if bad.any():
        n_bad, n_all = int(np.count_nonzero(bad)), bad.size
        if n_bad == n_all:
            raise ValueError(
                f"cannot fit a {model} matrix with init={init!r}: "
                + (
                    "there is no valid sample (every sample has a non-finite value or zero weight)"
                    if not count.any()
                    else f"it needs at least {needed} valid samples spanning the input channels "
                    f"(a non-singular system); found {int(count.max())} valid samples at most"
                )
            )
        warnings.warn(
            f"{n_bad} of {n_all} batch elements have fewer than {needed} valid samples or a "
            f"singular system; their {model} matrices are NaN",
            InsufficientSamplesWarning,
            stacklevel=2,
        )
        m[bad] = np.nan
    return m


def singular_mask(a: np.ndarray, max_condition: float) -> np.ndarray:
    """Flag the matrices in the square stack ``a`` that are singular or ill-conditioned.

    Matrices with a non-finite entry are not flagged (they propagate as NaN).
    """
    finite = np.isfinite(a).all(axis=(-1, -2))
    safe = np.where(finite[..., None, None], a, np.eye(a.shape[-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.linalg.cond(safe)
    return finite & ~(cond <= max_condition)


def invert_matrix(m: np.ndarray) -> np.ndarray:
    """Matrix of the inverse map, in the same shape family as ``m``.

    A square ``(..., n, n)`` matrix gives ``inv(M)``; an affine ``(..., n + 1, n)`` matrix
    ``[Up; Down]`` gives ``[inv(Up); -Down @ inv(Up)]``, so that
    ``apply_matrix(apply_matrix(x, m), invert_matrix(m)) == x`` up to rounding.

    Parameters
    ----------
    m : ndarray, shape (..., n, n) or (..., n + 1, n)

    Raises
    ------
    numpy.linalg.LinAlgError
        If ``m`` is neither square nor affine-square, or its square part is singular.

    Examples
    --------
    >>> invert_matrix(np.array([[2.0, 0], [0, 4], [1, 1]]))
    array([[ 0.5 ,  0.  ],
           [ 0.  ,  0.25],
           [-0.5 , -0.25]])
    """
    rows, cols = m.shape[-2:]
    if rows == cols:
        up, down = m, None
    elif rows == cols + 1:
        up, down = m[..., :-1, :], m[..., -1:, :]
    else:
        raise np.linalg.LinAlgError(
            f"only a square (n, n) or affine (n + 1, n) matrix can be inverted; got shape "
            f"({rows}, {cols}), which maps {rows if rows == cols else rows - 1} channels to "
            f"{cols}: it has no inverse"
        )
    singular = singular_mask(up, MAX_INVERT_CONDITION)
    if singular.any():
        where = np.argwhere(singular)
        first = tuple(int(i) for i in where[0]) if where.shape[1] else ()
        raise np.linalg.LinAlgError(
            f"the square part of the matrix ({cols}x{cols}) is singular or ill-conditioned "
            f"(condition number > {MAX_INVERT_CONDITION:g}) in {len(where)} batch element(s)"
            + (f", the first at index {first}" if first else "")
            + "; it has no inverse"
        )
    inv = np.linalg.inv(up)
    if down is None:
        return inv
    return np.concatenate([inv, -(down @ inv)], axis=-2)
