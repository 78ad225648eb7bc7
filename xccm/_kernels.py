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

import functools
import importlib
import inspect
import itertools
import math
import os
import sys
import types
import warnings
from typing import Any, Literal

import numpy as np

from . import _terms

__all__ = [
    "Backend",
    "InsufficientSamplesWarning",
    "NonConvergenceWarning",
    "apply_matrix",
    "gram",
    "invert_matrix",
    "singular_mask",
    "solve_gram",
    "solve_terms",
]

#: Largest condition number of the normal matrix treated as solvable. The normal equations
#: square the condition number of the design matrix, so this admits design matrices with a
#: condition number up to ~1e6, beyond which float64 least squares loses most digits.
MAX_GRAM_CONDITION = 1e12

#: Largest condition number of a matrix that :func:`invert_matrix` inverts.
MAX_INVERT_CONDITION = 1e12


class InsufficientSamplesWarning(UserWarning):
    """Some batch elements had too few valid samples (or a singular system) to be fitted."""


class NonConvergenceWarning(UserWarning):
    """Newton's method did not converge for some pixels of a non-linear inverse; they are NaN."""


Backend = Literal["auto", "numba", "numpy"]

#: Integer and float dtypes the numba kernels read directly.
_NUMBA_DTYPES = frozenset(np.dtype(c) for c in "u1 u2 u4 u8 i1 i2 i4 i8 f4 f8".split())
#: Rows per np.matmul call in the NumPy fallback: bounds its temporaries to a few MB.
_NUMPY_BLOCK_ROWS = 1 << 16
#: Above this many distinct matrices in one call, each applied to fewer than
#: _MIN_ROWS_PER_MATRIX pixels (e.g. one matrix per pixel), apply them with one broadcast
#: matmul: a kernel call per matrix would cost more than its work. The same when there are
#: several matrices and fewer than _MIN_ROWS_PER_MATRIX pixels in all (patch colours of a
#: few frames): each kernel call costs microseconds of set-up, the whole matmul about as much.
_MAX_MATRIX_LOOP = 4096
_MIN_ROWS_PER_MATRIX = 16384


def _numba():
    """Return the numba kernels module, or None when numba is not installed (or disabled)."""
    global _NUMBA_MODULE
    if _NUMBA_MODULE is False:
        if os.environ.get("XCCM_DISABLE_NUMBA", "").strip() not in ("", "0"):
            _NUMBA_MODULE = None
        else:
            try:
                module = _optional_backend("_numba_kernels")
            except ImportError:
                module = None
            _NUMBA_MODULE = module
    return _NUMBA_MODULE


_NUMBA_MODULE: Any = False


def _optional_backend(name: str) -> types.ModuleType:
    """Import the kernel module ``name`` of an optional package (numba, CuPy) on first use.

    Those modules import their package at the top, which is slow (numba) or absent, so
    they are loaded by name when a kernel first needs them, not when xccm is imported.
    They sit beside this module (the kernels layer) and import nothing above it.
    """
    return importlib.import_module(f"{__package__}.{name}")


def _poly_numba():
    """Return the numba term-expansion kernels, or None without numba (as :func:`_numba`)."""
    if _numba() is None:
        return None
    return _optional_backend("_poly_kernels")  # imports numba: only once _numba() found it


def _use_numba(backend: Backend, *dtypes: np.dtype) -> bool:
    if backend == "numpy":
        return False
    fits = all(np.dtype(t) in _NUMBA_DTYPES for t in dtypes)
    if backend == "numba":
        if _numba() is None:
            raise ImportError("backend='numba' needs numba: pip install 'xccm[fast]'")
        if not fits:
            raise TypeError(f"the numba kernels do not take dtypes {dtypes}")
        return True
    return fits and _numba() is not None


def _is_cupy(x) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def _namespace(x):
    """Return the array module of ``x``: :mod:`cupy` for CuPy arrays, else :mod:`numpy`."""
    if _is_cupy(x):
        import cupy

        return cupy
    return np


def apply_matrix(
    x: np.ndarray,
    m: np.ndarray,
    dtype: np.dtype | None = None,
    *,
    parallel: bool = True,
    backend: Backend = "auto",
    terms: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Apply a linear or affine matrix to ``x`` along its last axis.

    One fused pass: each output value is computed from its pixel's input values and written
    once, with no full-size temporaries, in the memory layout of ``x`` (a channel-first
    array seen channel-last is read and written channel-first, without transposed copies).

    Parameters
    ----------
    x : ndarray, shape (..., n_in)
        Colours, channel axis last, any strides. Integer input is read directly as ``dtype``.
        A CuPy array is processed on its device by a fused CuPy kernel.
    m : ndarray, shape (..., n_in, n_out) or (..., n_in + 1, n_out)
        Matrix; its leading axes broadcast against the leading axes of ``x``.
    dtype : dtype, optional
        Floating dtype of the computation and the result. Defaults to ``m.dtype``.
    parallel : bool, default True
        Use every core (the rows split into one part per numba thread). Pass False when
        the caller already runs one call per thread, as Dask does.
    backend : {"auto", "numba", "numpy"}
        ``"auto"`` uses the numba kernels when numba is installed, else blocked
        ``np.matmul(..., out=)``.
    terms : (exponents, roots), optional
        A term table (:mod:`xccm._terms`): ``m`` is then ``(..., n_terms, n_out)`` and each
        pixel is expanded into its terms inside the loop (no expanded array) and mapped
        by ``m``. Three input channels; not on CuPy.

    Returns
    -------
    ndarray, shape (..., n_out)

    Examples
    --------
    >>> apply_matrix(np.array([[1.0, 2.0, 3.0]]), np.diag([1.0, 0.5, 2.0]))
    array([[1., 1., 6.]])
    """
    xp = _namespace(x)
    dtype = np.dtype(m.dtype if dtype is None else dtype)
    n_in = x.shape[-1]
    m = xp.asarray(m, dtype=dtype)  # a small matrix; moved to the device of a CuPy image
    if terms is not None:
        _check_terms(x, m, terms, xp)
        return _each_matrix(
            x,
            m,
            functools.partial(_apply_terms_block, terms=terms),
            dtype,
            m.shape[-1],
            parallel=parallel,
            backend=backend,
        )
    if m.shape[-2] == n_in:  # linear: a zero offset row makes it affine
        m = xp.concatenate([m, xp.zeros((*m.shape[:-2], 1, m.shape[-1]), dtype)], axis=-2)
    elif m.shape[-2] != n_in + 1:
        raise ValueError(
            f"matrix has {m.shape[-2]} rows; expected {n_in} (linear) or {n_in + 1} (affine) "
            f"for {n_in} input channels"
        )
    m, n_head = _broadcast_heads(x, m)
    head = x.shape[:n_head]
    rows = math.prod(x.shape[n_head:-1])  # pixels per matrix
    n_matrices = math.prod(head)
    if rows < _MIN_ROWS_PER_MATRIX and (
        n_matrices > _MAX_MATRIX_LOOP
        or (n_matrices > 1 and n_matrices * rows < _MIN_ROWS_PER_MATRIX)
    ):
        up, off = m[..., :-1, :], m[..., -1, :]
        return (x.astype(dtype, copy=False)[..., None, :] @ up)[..., 0, :] + off
    return _each_matrix(
        x, m, _apply_affine_block, dtype, m.shape[-1], parallel=parallel, backend=backend
    )


def _apply_affine_block(x, out, m, parallel, numba_ok) -> None:
    """:func:`_apply_block` of one affine matrix ``m (n_in + 1, n_out)``, offset row last."""
    _apply_block(x, out, m[:-1], m[-1], parallel, numba_ok)


def _check_terms(x, m, terms, xp) -> None:
    exponents, roots = terms
    if xp is not np:
        raise TypeError(
            "a polynomial or root-polynomial matrix is applied with NumPy or numba; move the "
            "image to the host first (CuPy kernels take linear and affine matrices)"
        )
    if x.shape[-1] != exponents.shape[1] or m.shape[-2] != len(roots):
        raise ValueError(
            f"matrix has {m.shape[-2]} rows and image {x.shape[-1]} channels; the model "
            f"expands {exponents.shape[1]} channels into {len(roots)} terms"
        )


def _each_matrix(x, m, block, dtype, n_out, *, parallel, backend):
    """Run ``block(x_part, out_part, m_part, parallel, numba_ok)`` once per distinct matrix.

    ``m (..., rows, cols)`` broadcasts against ``x (..., n_in)`` on the leading axes; the
    result ``(..., n_out)`` is allocated in ``x``'s memory layout.
    """
    xp = _namespace(x)
    m, n_head = _broadcast_heads(x, m)
    lead_m = m.shape[:-2]
    out = _empty_like_layout(x, n_out, dtype, xp)
    numba_ok = xp is np and _use_numba(backend, x.dtype, dtype)
    tail = (0,) * (len(lead_m) - n_head)
    for h in np.ndindex(*x.shape[:n_head]):
        hm = tuple(0 if n == 1 else i for i, n in zip(h, lead_m, strict=False))
        block(x[h], out[h], m[hm + tail], parallel, numba_ok)
    return out


def _broadcast_heads(x, m):
    """``m (..., rows, cols)`` with as many leading axes as ``x (..., n_in)``, and ``n_head``.

    The matrix varies over the first ``n_head`` leading axes and is constant over the rest.
    """
    lead_x, lead_m = x.shape[:-1], m.shape[:-2]
    if len(lead_m) > len(lead_x):
        raise ValueError(f"matrix has more batch axes {lead_m} than the image {lead_x}")
    lead_m = (1,) * (len(lead_x) - len(lead_m)) + lead_m
    n_head = len(lead_m)
    while n_head and lead_m[n_head - 1] == 1:
        n_head -= 1
    return m.reshape((*lead_m, *m.shape[-2:])), n_head


def _apply_terms_block(x, out, m, parallel, numba_ok, *, terms) -> None:
    """Apply one term-expanded matrix to every pixel of ``x``, writing ``out``."""
    x2, out2 = _rows_view(x), _rows_view(out)
    if x2 is None or out2 is None:  # strides that do not collapse: split the first axis
        for i in range(x.shape[0]):
            _apply_terms_block(x[i], out[i], m, parallel, numba_ok, terms=terms)
        return
    exponents, roots = terms
    if numba_ok:
        _poly_numba().apply_rows(x2, m, exponents, roots, out2, parallel)
    else:
        _terms.apply_rows(x2, m, exponents, roots, out2)


#: Newton's method of :func:`solve_terms` stops where ``max |t(s) @ m - d|`` is at most
#: this times ``max(1, max |d|)`` (in float64), or fails after ``NEWTON_MAX_ITER`` steps.
NEWTON_TOL = 1e-10
NEWTON_MAX_ITER = 50


def solve_terms(
    d: np.ndarray,
    m: np.ndarray,
    dtype: np.dtype | None = None,
    *,
    terms: tuple[np.ndarray, np.ndarray],
    parallel: bool = True,
    backend: Backend = "auto",
    tol: float = NEWTON_TOL,
    max_iter: int = NEWTON_MAX_ITER,
) -> np.ndarray:
    """Invert a term-expanded matrix per pixel: ``s`` with ``t(s) @ m == d``.

    Newton's method from the linear part's inverse (``(d - offset) @ inv(M_RGB)``), each
    step halved while it does not reduce the residual, in float64. Pixels that have not
    converged (:data:`NEWTON_TOL`) after :data:`NEWTON_MAX_ITER` steps are NaN, and one
    :class:`NonConvergenceWarning` per call says how many; a non-finite ``d`` gives NaN
    silently.

    Parameters
    ----------
    d : ndarray, shape (..., 3)
        Corrected colours, channel axis last.
    m : ndarray, shape (..., n_terms, 3)
        The matrix; its leading axes broadcast against ``d``'s.
    dtype : dtype, optional
        Floating dtype of the result (default ``m.dtype``).
    terms : (exponents, roots)
        The term table of ``m``'s model (:mod:`xccm._terms`).
    parallel, backend
        As for :func:`apply_matrix`.

    Returns
    -------
    ndarray, shape (..., 3)

    Examples
    --------
    >>> terms = (np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]), np.array([1, 1, 1, 2]))
    >>> m = np.vstack([np.eye(3), [[0.5, 0.0, 0.0]]])  # R' = R + sqrt(R * G) / 2
    >>> solve_terms(np.array([[6.0, 4.0, 1.0]]), m, terms=terms).round(12)
    array([[4., 4., 1.]])
    """
    dtype = np.dtype(m.dtype if dtype is None else dtype)
    m = np.asarray(m, dtype=np.float64)
    _check_terms(d, m, terms, _namespace(d))
    if m.shape[-1] != d.shape[-1] or d.shape[-1] != 3:
        raise ValueError(
            f"only a model mapping 3 channels onto 3 can be inverted; the matrix maps "
            f"{terms[0].shape[1]} channels onto {m.shape[-1]}"
        )
    failed = [0]

    def block(x, out, mm, parallel, numba_ok):
        x2, out2 = _rows_view(x), _rows_view(out)
        if x2 is None or out2 is None:
            x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
            out2 = np.empty(x2.shape, out.dtype)
            block_rows(x2, out2, mm, parallel, numba_ok)
            out[...] = out2.reshape(out.shape)
        else:
            block_rows(x2, out2, mm, parallel, numba_ok)

    def block_rows(x2, out2, mm, parallel, numba_ok):
        inv, off = _terms.newton_start(mm, *terms)
        kwargs = {"tol": tol, "max_iter": max_iter}
        if numba_ok:
            n = _poly_numba().newton_rows(
                x2, mm, *terms, inv, off, out2, parallel=parallel, **kwargs
            )
        else:
            n = _terms.newton_rows(x2, mm, *terms, out2, **kwargs)
        failed[0] += n

    out = _each_matrix(d, m, block, dtype, 3, parallel=parallel, backend=backend)
    if failed[0]:
        warnings.warn(
            f"Newton's method did not converge for {failed[0]} of {math.prod(d.shape[:-1])} "
            f"pixels (tolerance {tol:g} of the colour's size, {max_iter} steps); they are NaN. "
            "The model may not be invertible there (colours outside what it maps)",
            NonConvergenceWarning,
            stacklevel=outside_xccm(),
        )
    return out


def _apply_block(x, out, up, off, parallel, numba_ok) -> None:
    """Apply one matrix to every pixel of ``x``, writing ``out`` (same leading shape)."""
    x2, out2 = _rows_view(x), _rows_view(out)
    if x2 is None or out2 is None:  # strides that do not collapse: split the first axis
        for i in range(x.shape[0]):
            _apply_block(x[i], out[i], up, off, parallel, numba_ok)
        return
    if _is_cupy(x):
        _optional_backend("_cupy_kernels").apply_rows(x2, up, off, out2)
        return
    if numba_ok:
        _numba().apply_rows(x2, up, off, out2, parallel)
        return
    for start in range(0, x2.shape[0], _NUMPY_BLOCK_ROWS):
        rows = slice(start, start + _NUMPY_BLOCK_ROWS)
        np.matmul(x2[rows].astype(up.dtype, copy=False), up, out=out2[rows])
        out2[rows] += off


def _rows_view(a: np.ndarray) -> np.ndarray | None:
    """View ``a (..., c)`` as ``(rows, c)`` without copying, or None if its strides forbid it."""
    if a.flags.c_contiguous:
        return a.reshape(-1, a.shape[-1])
    shape, strides = a.shape[:-1], a.strides[:-1]
    n = math.prod(shape)
    kept = [(size, stride) for size, stride in zip(shape, strides, strict=True) if size != 1]
    for (_, outer), (size, inner) in itertools.pairwise(kept):
        if outer != inner * size:
            return None
    row_stride = kept[-1][1] if kept else a.itemsize * a.shape[-1]
    shape2, strides2 = (n, a.shape[-1]), (row_stride, a.strides[-1])
    if _is_cupy(a):
        return _namespace(a).lib.stride_tricks.as_strided(a, shape2, strides2)
    return np.lib.stride_tricks.as_strided(a, shape2, strides2, writeable=a.flags.writeable)


def _empty_like_layout(x, n_out: int, dtype: np.dtype, xp=np):
    """Allocate ``(*x.shape[:-1], n_out)`` with the axis order of ``x`` in memory."""
    shape = (*x.shape[:-1], n_out)
    order = sorted(range(x.ndim), key=lambda i: -abs(x.strides[i]) if x.shape[i] > 1 else 0)
    out = xp.empty([shape[i] for i in order], dtype=dtype)
    return out.transpose(tuple(np.argsort(order).tolist()))


def gram(
    s: np.ndarray,
    d: np.ndarray,
    w: np.ndarray | None = None,
    n_sample_axes: int = 1,
    *,
    parallel: bool = True,
    backend: Backend = "auto",
) -> np.ndarray:
    """Packed weighted normal-equation statistics of one block of samples.

    With ``X = [S, 1, D]`` (``p = n_in + 1 + n_out`` columns) and ``W`` the weights of the
    valid samples (zero for a sample with a non-finite value in ``s`` or ``d``), returns
    ``G = X^T W X`` and the number of samples with positive weight, packed as one array so a
    chunked reduction needs a single sum: ``out[..., :p, :]`` is ``G`` and
    ``out[..., p, 0]`` is the count. ``G`` holds everything a fit needs:
    ``S+^T W S+`` (the top-left ``n_in + 1`` square), ``S+^T W D`` (the block beside it), the
    weighted channel sums (the ones row) and ``D^T W D`` (for the residual). Statistics add up
    over disjoint blocks of samples. Accumulation is in float64.

    Parameters
    ----------
    s : ndarray, shape (..., *samples, n_in)
    d : ndarray, shape (..., *samples, n_out)
        Broadcastable against ``s`` on every axis but the last.
    w : ndarray, shape (..., *samples), optional
        Non-negative weights, broadcastable like ``d``; NaN counts as 0 (the sample is left
        out). ``None`` means all ones.
    n_sample_axes : int
        How many axes before the channel axis are sample axes (summed over).
    parallel, backend
        As for :func:`apply_matrix`. The numba kernel makes one pass with no temporaries.

    Returns
    -------
    ndarray, shape (..., p + 1, p), float64

    Raises
    ------
    ValueError
        If a weight is negative.

    Examples
    --------
    >>> s = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    >>> g = gram(s, 2 * s)
    >>> g.shape, int(g[7, 0])
    ((8, 7), 4)
    """
    xp = _namespace(s)
    n_in, n_out = s.shape[-1], d.shape[-1]
    batch = np.broadcast_shapes(s.shape[:-1], d.shape[:-1], () if w is None else w.shape)
    lead, samples = batch[: len(batch) - n_sample_axes], batch[len(batch) - n_sample_axes :]
    n_lead, n = math.prod(lead), math.prod(samples)
    s = xp.broadcast_to(s, (*batch, n_in)).reshape((n_lead, n, n_in))
    d = xp.broadcast_to(xp.asarray(d), (*batch, n_out)).reshape((n_lead, n, n_out))
    weight = None if w is None else _check_weights(w, batch, xp).reshape((n_lead, n))
    if xp is np and _use_numba(backend, s.dtype, d.dtype):
        out = _numba().gram_rows(s, d, weight, parallel)
    else:
        out = _gram_matmul(s, d, weight, xp)
    return out.reshape((*lead, *out.shape[-2:]))


def _gram_matmul(s, d, weight, xp=np):
    """:func:`gram` with array operations and one batched matmul (NumPy or CuPy)."""
    n_lead, n, n_in = s.shape
    n_out = d.shape[-1]
    if weight is None:
        weight = xp.ones((n_lead, n))
    valid = xp.isfinite(s).all(axis=-1) & xp.isfinite(d).all(axis=-1) & (weight > 0)
    root = xp.sqrt(xp.where(valid, weight, 0.0))[..., None]
    p = n_in + 1 + n_out
    x = xp.empty((n_lead, n, p))
    x[..., :n_in] = xp.where(valid[..., None], s, 0.0)
    x[..., n_in] = 1.0
    x[..., n_in + 1 :] = xp.where(valid[..., None], d, 0.0)
    x *= root
    out = xp.zeros((n_lead, p + 1, p))
    out[:, :p, :] = xp.matmul(xp.swapaxes(x, -1, -2), x)
    out[:, p, 0] = valid.sum(axis=-1)
    return out


def _check_weights(w: np.ndarray, shape: tuple[int, ...], xp=np) -> np.ndarray:
    """Weights broadcast to ``shape``; a NaN weight leaves its sample out, as a zero does."""
    w = xp.asarray(w, dtype=np.float64)
    if bool((w < 0).any()):
        raise ValueError(
            "weights must be non-negative (NaN or 0 leaves a sample out); got negative values"
        )
    if bool(xp.isinf(w).any()):
        raise ValueError(
            "weights must be finite (NaN or 0 leaves a sample out); got an infinite weight. "
            "To fit only some samples, give the others weight 0"
        )
    return xp.broadcast_to(xp.where(xp.isnan(w), 0.0, w), shape)


def _on_host(func):
    """Run a function of small matrices on the host: CuPy in, CuPy out.

    Fitted statistics and matrices are a few numbers per batch element; solving them with
    NumPy costs two tiny transfers and keeps one tested code path.
    """

    @functools.wraps(func)
    def wrapper(a, *args, **kwargs):
        if not _is_cupy(a):
            return func(a, *args, **kwargs)
        return _namespace(a).asarray(func(a.get(), *args, **kwargs))

    return wrapper


@_on_host
def solve_gram(
    g: np.ndarray,
    n_in: int,
    *,
    model: str = "linear",
    init: str = "least_squares",
    min_samples: int = 0,
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
    min_samples : int, default 0
        Batch elements with fewer valid samples than this (or than the unknowns per column)
        are not fitted.

    Returns
    -------
    ndarray, shape (..., n_in, n_out) or (..., n_in + 1, n_out)
        A batch element with fewer valid samples than unknowns per column (or than
        ``min_samples``), or a singular system, is NaN, and an
        :class:`InsufficientSamplesWarning` says how many.

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
    m, bad, needed, overflow, count = _solve_stats(
        g, n_in, model=model, init=init, min_samples=min_samples
    )
    report_unsolved(bad, overflow, count, needed, model=model, init=init)
    return m


def report_unsolved(bad, overflow, count, needed: int, *, model: str, init: str) -> None:
    """Warn of the batch elements a solve left NaN (``bad``); raise if that is all of them.

    ``overflow``: elements whose statistics overflowed; ``count``: their valid samples;
    ``needed``: the fewest valid samples a fit needs.
    """
    if not bad.any():
        return
    n_bad, n_all = int(np.count_nonzero(bad)), bad.size
    n_over = int(np.count_nonzero(overflow))
    too_large = (
        "the sums of squares of measured, reference and weights overflow float64 "
        "(values or weights beyond ~1e150); scale them to about [0, 1]"
    )
    if n_bad == n_all:
        raise ValueError(
            f"cannot fit a {model} matrix with init={init!r}: "
            + (
                too_large
                if n_over == n_all
                else "there is no valid sample (every sample has a non-finite value, zero "
                "weight or is masked)"
                if not count.any()
                else f"it needs at least {needed} valid samples spanning the input channels "
                f"(a non-singular system); found {int(count.max())} valid samples at most"
                + (
                    ": enough samples, so the input channels are linearly dependent (one "
                    "a multiple or sum of others) or the samples do not span them (e.g. "
                    "all grey)"
                    if count.max() >= needed and init != "white_balance"
                    else ""
                )
            )
        )
    warnings.warn(
        f"{n_bad} of {n_all} batch elements have fewer than {needed} valid samples or a "
        f"singular system; their {model} matrices are NaN"
        + (f" ({n_over} because {too_large})" if n_over else ""),
        InsufficientSamplesWarning,
        stacklevel=outside_xccm(),
    )


def _solve_stats(g: np.ndarray, n_in: int, *, model: str, init: str, min_samples: int):
    """:func:`solve_gram` without its warning: ``(m, bad, needed, overflow, count)``.

    ``m`` is NaN where ``bad`` (too few valid samples, a singular system or an overflow).
    """
    p = g.shape[-1]
    n_out = p - n_in - 1
    stats, count = g[..., :p, :], g[..., p, 0]
    # Statistics of finite samples are finite unless their sums overflow float64 (values
    # or weights beyond ~1e150): those elements get a NaN matrix, as too few samples do.
    overflow = ~np.isfinite(stats).all(axis=(-1, -2))
    stats = np.where(overflow[..., None, None], 0.0, stats)
    affine = model == "affine"
    k = n_in + 1 if affine else n_in
    if init == "white_balance":
        if n_in != n_out:
            raise ValueError(
                f"init='white_balance' needs as many output as input channels; "
                f"got {n_in} in and {n_out} out"
            )
        sum_s, sum_d = stats[..., n_in, :n_in], stats[..., n_in, n_in + 1 :]
        needed = max(1, min_samples)
        with np.errstate(divide="ignore", invalid="ignore"):
            gains = sum_d / sum_s
        bad = (count < needed) | ~np.isfinite(gains).all(axis=-1) | overflow
        m = np.zeros((*g.shape[:-2], k, n_out))
        diag = np.arange(n_in)
        m[..., diag, diag] = np.where(bad[..., None], 0.0, gains)
    else:
        # The ones column sits right after the n_in input columns, so the first k rows and
        # columns of the statistics are S^T W S (linear) or S+^T W S+ (affine).
        a = stats[..., :k, :k]
        b = stats[..., :k, n_in + 1 :]
        needed = max(k, min_samples)
        bad = (count < needed) | overflow | singular_mask(a, MAX_GRAM_CONDITION, symmetric=True)
        eye = np.broadcast_to(np.eye(k), a.shape)
        a = np.where(bad[..., None, None], eye, a)
        b = np.where(bad[..., None, None], 0.0, b)
        m = np.linalg.solve(a, b)
    m[bad] = np.nan
    return m, bad, needed, overflow, count


def outside_xccm() -> int:
    """Return the ``stacklevel`` of the innermost caller outside xccm and xarray.

    A warning then points at the user's line (or at Dask's, for a lazy computation), so it
    can be filtered by module and traced to the call, as pandas' ``find_stack_level`` does.
    """
    inside = [os.path.dirname(os.path.abspath(__file__)) + os.sep]
    xarray = sys.modules.get("xarray")  # loaded by whoever called us with a DataArray
    xarray_file = getattr(xarray, "__file__", None)
    if xarray_file:
        inside.append(os.path.dirname(os.path.abspath(xarray_file)) + os.sep)
    frame, level = inspect.currentframe(), 0
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(tuple(inside)):
        frame, level = frame.f_back, level + 1
    del frame
    return max(level, 1)


def singular_mask(a: np.ndarray, max_condition: float, *, symmetric: bool = False) -> np.ndarray:
    """Flag the matrices in the square stack ``a`` that are singular or ill-conditioned.

    Matrices with a non-finite entry are not flagged (they propagate as NaN). For a
    ``symmetric`` stack (Gram matrices) the condition number comes from the eigenvalues,
    whose moduli are the singular values: half the cost of an SVD.
    """
    finite = np.isfinite(a).all(axis=(-1, -2))
    safe = np.where(finite[..., None, None], a, np.eye(a.shape[-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        if symmetric:
            sv = np.abs(np.linalg.eigvalsh(safe))
            cond = sv.max(axis=-1) / sv.min(axis=-1)
        else:
            cond = np.linalg.cond(safe)
    return finite & ~(cond <= max_condition)


@_on_host
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


# ---------------------------------------------------------------------------------------------
# robust fits: iteratively reweighted least squares

#: Tuning constants of the robust weight functions, in units of the robust scale: 95 %
#: asymptotic efficiency at normal errors (Huber 1981, *Robust Statistics*; Holland & Welsch
#: 1977), the values of R's ``MASS::rlm`` and statsmodels' ``RLM``.
ROBUST_TUNING = {"huber": 1.345, "tukey": 4.685}
#: Samples per block of a batched ΔE fit (about 1000 frames of a 24-patch chart, ~0.5 s of
#: work): a Dask task's block (:func:`xccm.core.batch_chunks`) and an in-memory fit's block
#: (:func:`xccm._refine.in_blocks`), where it keeps the solver's arrays (a few MB) in cache.
SAMPLES_PER_BLOCK = 24_576
#: Most reweighting rounds per batch element.
ROBUST_MAX_ROUNDS = 50
#: Random subsets of the samples tried for the start of a robust fit (least median of
#: squares): with 4 of 24 patches bad, all 50 subsets of 4 are contaminated with
#: probability 0.54**50 < 1e-13.
ROBUST_SUBSETS = 50
#: The reweighting has converged when no weight of a batch element changes by more than this.
ROBUST_TOL = 1e-3
#: Median of the absolute value of a standard normal variable: MAD / this is the normal sigma.
_MAD_NORMAL = 0.6744897501960817
#: Smallest robust scale, relative to the size of the reference colours: residuals below
#: it are rounding (an exact fit), not a distribution to find outliers in.
_SCALE_FLOOR = 1e-9


def robust_weights(
    r: np.ndarray,
    valid: np.ndarray,
    method: str,
    tuning: float | None = None,
    floor: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Robust weights of residual norms ``r (..., N)`` and their scale ``(...)``.

    The scale is the median absolute residual over the ``valid`` samples divided by
    :math:`\Phi^{-1}(3/4) \approx 0.6745` (the MAD about zero, as for regression residuals,
    so that it estimates :math:`\sigma` of normal errors), at least ``floor``. With
    :math:`u = r / \mathrm{scale}` and tuning constant :math:`c`:
    Huber :math:`w = \min(1, c / u)`; Tukey's biweight :math:`w = (1 - (u/c)^2)^2` for
    :math:`u < c`, else 0. Samples that are not ``valid`` get NaN.

    Examples
    --------
    >>> r = np.array([[1.0, 1.0, 1.0, 1.0, 20.0]])
    >>> w, scale = robust_weights(r, np.ones_like(r, bool), "tukey")
    >>> w.round(3).tolist(), scale.round(3).tolist()
    ([[0.959, 0.959, 0.959, 0.959, 0.0]], [1.483])
    """
    c = ROBUST_TUNING[method] if tuning is None else float(tuning)
    med = _median_where(r, valid)
    with np.errstate(all="ignore"):
        scale = np.fmax(med / _MAD_NORMAL, np.maximum(floor, np.finfo(np.float64).tiny))
        u = np.where(valid, r, 0.0) / scale[..., None]
        if method == "huber":
            w = np.minimum(1.0, c / u)
        else:
            w = np.where(u < c, (1 - (u / c) ** 2) ** 2, 0.0)
    return np.where(valid, w, np.nan), scale


def irls(
    s: np.ndarray,
    d: np.ndarray,
    w: np.ndarray | None,
    *,
    model: str = "linear",
    init: str = "least_squares",
    method: str = "huber",
    tuning: float | None = None,
    min_samples: int = 0,
    max_rounds: int = ROBUST_MAX_ROUNDS,
    tol: float = ROBUST_TOL,
    solver=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""Robust weights of a least-squares fit per batch element, by iterative reweighting.

    The residual of a sample is its error norm :math:`\lVert S^+_i M - D_i \rVert`
    (Euclidean over the output channels). The start is high-breakdown, so that a few bad
    patches far out in colour (glare: the brightest "patch" of the chart) cannot pull the
    fit onto themselves before they are weighed, as they do a start from the plain least
    squares: the least median of squares over :data:`ROBUST_SUBSETS` random subsets of
    ``k`` valid samples (the unknowns per column), improved by two concentration steps
    (refits on the half of the samples with the smallest residuals, as in FAST-LTS,
    Rousseeuw & Van Driessen 2006). The subsets are drawn from a fixed seed for each element
    on its own, so an element's result does not depend on its batch. Then every round
    weighs the residuals of the current fit with :func:`robust_weights` (the scale
    re-estimated) and solves the weighted least squares (:func:`gram`, :func:`solve_gram`)
    for all elements not yet converged at once. An element stops when no weight changed by
    more than ``tol``, after ``max_rounds`` rounds, or when its weights leave it too few
    samples (``min_samples``) or a singular system.

    Parameters
    ----------
    s : ndarray, (B, N, n_in)
    d : ndarray, (B, N, n_out)
    w : ndarray (B, N) or None
        User weights; samples with a non-finite value or a weight that is not positive and
        finite are left out. The robust weights multiply them.
    model, init, min_samples
        As for :func:`solve_gram`.
    method : {"huber", "tukey"}
    tuning : float, optional
        The tuning constant (default :data:`ROBUST_TUNING`).
    solver : callable, optional
        ``solver(g, min_samples, idx) -> (m, bad, ...)`` solves statistics of :func:`gram`
        of the batch elements ``idx`` (e.g.
        with a ridge or a constraint, :func:`xccm._solve.solve_model_stats`); by default
        the plain least squares of ``model`` and ``init``.

    Returns
    -------
    weights : ndarray (B, N)
        Robust weights in [0, 1] (NaN for samples left out). The fit is the weighted least
        squares with weights ``w * weights``.
    scale : ndarray (B,)
        The robust scale the weights were computed with.
    rounds : ndarray (B,) of int
        Reweighting rounds taken.
    converged : ndarray (B,) of bool

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.random((1, 24, 3))
    >>> d = s @ np.diag([2.0, 1.0, 0.5]) + rng.normal(0, 0.01, (1, 24, 3))
    >>> d[0, 5] = 5.0  # a glint
    >>> weights, scale, rounds, converged = irls(s, d, None, method="tukey")
    >>> float(weights[0, 5]), bool(weights[0, :5].min() > 0.5), bool(converged[0])
    (0.0, True, True)
    """
    s, d = np.asarray(s, dtype=np.float64), np.asarray(d, dtype=np.float64)
    n_batch, n, n_in = s.shape
    base = np.ones((n_batch, n)) if w is None else np.asarray(w, dtype=np.float64)
    valid = np.isfinite(s).all(-1) & np.isfinite(d).all(-1) & np.isfinite(base) & (base > 0)
    base = np.where(valid, base, 0.0)
    s, d = np.where(valid[..., None], s, 0.0), np.where(valid[..., None], d, 0.0)
    count = valid.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        size = np.sqrt((d**2).sum((-1, -2)) / (count * d.shape[-1]))
    floor = _SCALE_FLOOR * np.where(np.isfinite(size), size, 0.0)
    if solver is None:
        solver = functools.partial(_solve_stats_of, n_in=n_in, model=model, init=init)
    solve = functools.partial(solver, min_samples=0)

    weights = np.where(valid, 1.0, np.nan)
    scale = np.full(n_batch, np.nan)
    rounds = np.zeros(n_batch, dtype=np.int64)
    converged = np.zeros(n_batch, dtype=bool)
    k = n_in + 1 if model == "affine" and init != "white_balance" else n_in
    if init == "white_balance":
        k = 1
    active = np.flatnonzero(count > 0)
    residuals = functools.partial(_local_residuals, s, d)
    m = _robust_start(s, d, base, valid, active, k, solve)
    r = residuals(active, m)
    while active.size:
        idx = active
        new, sc = robust_weights(r, valid[idx], method, tuning, floor[idx])
        with np.errstate(invalid="ignore"):
            change = np.nanmax(np.abs(new - weights[idx]), axis=-1, initial=0.0)
        weights[idx], scale[idx] = new, sc
        done = change <= tol
        converged[idx[done]] = True
        g = gram(s[idx], d[idx], base[idx] * np.nan_to_num(new), parallel=False)
        m, bad, *_ = solver(g, min_samples=min_samples, idx=idx)
        rounds[idx] += 1
        keep = ~(done | bad | (rounds[idx] >= max_rounds))
        active = idx[keep]
        r = residuals(active, m[keep])
    return weights, scale, rounds, converged


def _solve_stats_of(g, min_samples, idx=None, *, n_in, model, init):
    return _solve_stats(g, n_in, model=model, init=init, min_samples=min_samples)


def _robust_start(s, d, base, valid, active, k, solve):
    """High-breakdown start of :func:`irls` for elements ``active``: LMedS, two C-steps.

    Falls back to the plain weighted least squares for an element with too few samples or
    no non-singular subset.
    """
    n = s.shape[1]
    s, d, base, valid = s[active], d[active], base[active], valid[active]
    idx = np.arange(len(active))
    solve = functools.partial(solve, idx=active)
    plain, _, *_ = solve(gram(s, d, base, parallel=False))
    best = plain
    best_med = np.full(len(active), np.inf)
    count = valid.sum(-1)
    rng = np.random.default_rng(0)
    local = functools.partial(_local_residuals, s, d)
    if n > k:
        for _ in range(ROBUST_SUBSETS):
            keys = np.where(valid, rng.random(n), np.inf)  # the same draw for every element
            rank = np.argsort(np.argsort(keys, axis=-1), axis=-1)
            subset = (rank < k) & valid
            m, bad, *_ = solve(gram(s, d, subset.astype(np.float64), parallel=False))
            med = _valid_median(local(idx, m), valid)
            better = ~bad & (med < best_med) & (count > k)
            best[better], best_med[better] = m[better], med[better]
        for _ in range(2):  # concentration steps: refit on the best half
            r = np.where(valid, local(idx, best), np.inf)
            rank = np.argsort(np.argsort(r, axis=-1), axis=-1)
            half = (rank < np.maximum((count + k + 1) // 2, k)[:, None]) & valid
            m, bad, *_ = solve(gram(s, d, base * half, parallel=False))
            ok = ~bad & np.isfinite(best_med)
            best[ok] = m[ok]
    return best


def _local_residuals(s, d, idx, m):
    """Error norms ``(len(idx), N)`` of elements ``idx`` fitted by ``m (len(idx), k, n_out)``."""
    n_in = s.shape[-1]
    pred = s[idx] @ m[:, :n_in]  # a few patches per matrix: one batched matmul
    if m.shape[-2] > n_in:
        pred += m[:, n_in:]
    return np.sqrt(((pred - d[idx]) ** 2).sum(-1))


def _valid_median(r, valid):
    med = _median_where(r, valid)
    return np.where(np.isfinite(med), med, np.inf)


def _median_where(r: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Median over the last axis of the finite ``r`` where ``valid``; NaN where there is none.

    Without warnings and without ``warnings.catch_warnings`` (which is not thread-safe: the
    robust fits run it on several threads at once): a row with nothing to take a median of
    is filled with zeros first, so ``np.nanmedian`` never meets an all-NaN slice.
    """
    use = valid & np.isfinite(r)
    none = ~use.any(-1)
    med = np.nanmedian(np.where(use | none[..., None], np.where(use, r, 0.0), np.nan), axis=-1)
    return np.where(none, np.nan, med)
