"""Numba kernels (the ``fast`` extra): fused, GIL-free loops over rows of colours.

Imported by :mod:`xccm._kernels` only when numba is installed. The kernels take 2-D views
``(rows, channels)`` (3-D ``(batch, rows, channels)`` for :func:`gram`) with any strides, so
channel-last, channel-first and sliced layouts are read in place, and write into
preallocated outputs: applying a matrix is one read of the input and one write of the output,
the memory-bandwidth limit. Integer input is read directly, never copied to float.

Each kernel is compiled once, as a plain serial loop, and cached (:func:`compile_kernel`).
A parallel call (a whole in-memory array) runs it on contiguous parts of the rows, one per
thread of a pool (:func:`xccm._threads.run_split`; the kernels release the GIL), so each
thread reads, computes and first-touches (page faults in) its own stretch of the fresh
output; a serial call (one Dask block per scheduler thread) runs it on the calling thread. numba's
``parallel=True`` would compile every kernel a second time, with its ``prange`` passes: about
0.7 s more per signature with a cold cache, which made a first ``apply`` 1.3-1.8 s
(docs/guide/performance.md, "The first call").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from ._threads import run_split

__all__ = ["NJIT_OPTIONS", "apply_rows", "compile_kernel", "gram_rows", "split_rows"]


def _cache_enabled() -> bool:
    """Whether numba's on-disk cache holds xccm's compiled kernels (``XCCM_NUMBA_CACHE``).

    On by default: a process loads the kernels instead of compiling them (0.2-0.4 s each) when
    any earlier process has compiled them on this machine. ``XCCM_NUMBA_CACHE=0`` turns it
    off, each process compiling what it uses. Where the cache lives is numba's rule:
    ``NUMBA_CACHE_DIR`` if set, else ``__pycache__`` beside this file if writable, else a
    per-user folder (docs/guide/performance.md, "The first call").
    """
    return os.environ.get("XCCM_NUMBA_CACHE", "1").strip().lower() not in _OFF


_OFF = frozenset({"0", "false", "no", "off"})

#: Options of every kernel (other kernel modules import them as ``NJIT_OPTIONS``).
_OPTS: dict[str, Any] = {
    "nogil": True,
    "cache": _cache_enabled(),
    "fastmath": {"contract"},
    "error_model": "numpy",
}
#: Options of every kernel, for other kernel modules (:mod:`xccm._poly_kernels`).
NJIT_OPTIONS = _OPTS


def compile_kernel(func: Callable) -> Any:
    """``func`` compiled by numba with xccm's options (cached, GIL released), serial."""
    return numba.njit(**_OPTS)(func)


def split_rows(
    kernel: Callable,
    x: np.ndarray,
    args: tuple,
    out: np.ndarray,
    parallel: bool,
    *,
    flat: bool = False,
    min_rows: int | None = None,
) -> list:
    """Run ``kernel(x[lo:hi], *args, out[lo:hi])`` on parts of the rows (:func:`run_split`).

    ``flat``: ``x (rows, c)`` and ``out (rows, c_out)`` are C-ordered and each part is passed
    as its flat run, ``(rows * c,)``, whose constant stride lets LLVM vectorise the
    (de)interleaving. Returns the kernel's results, part by part.
    """
    if flat:
        xf, of = x.reshape(-1), out.reshape(-1)
        c, c_out = x.shape[1], out.shape[1]
        return run_split(
            kernel,
            x.shape[0],
            lambda lo, hi: (xf[c * lo : c * hi], *args, of[c_out * lo : c_out * hi]),
            parallel,
            min_rows,
        )
    return run_split(
        kernel, x.shape[0], lambda lo, hi: (x[lo:hi], *args, out[lo:hi]), parallel, min_rows
    )


@numba.njit(inline="always", **_OPTS)
def _coeffs(up, off):
    """Return the 3x3 matrix and offset as 12 scalars, loaded once before the loops."""
    return (
        up[0, 0], up[0, 1], up[0, 2],
        up[1, 0], up[1, 1], up[1, 2],
        up[2, 0], up[2, 1], up[2, 2],
        off[0], off[1], off[2],
    )  # fmt: skip


@numba.njit(inline="always", **_OPTS)
def _mix3(a, b, c, k):
    """One pixel through the matrix and offset ``k`` (:func:`_coeffs`)."""
    return (
        k[9] + a * k[0] + b * k[3] + c * k[6],
        k[10] + a * k[1] + b * k[4] + c * k[7],
        k[11] + a * k[2] + b * k[5] + c * k[8],
    )


@compile_kernel
def _apply33(x, up, off, out):
    """``out[i] = x[i] @ up + off`` on ``(rows, 3)`` views with any strides."""
    k = _coeffs(up, off)
    for i in range(x.shape[0]):
        out[i, 0], out[i, 1], out[i, 2] = _mix3(x[i, 0], x[i, 1], x[i, 2], k)


@compile_kernel
def _apply33_interleaved(x, up, off, out):
    """:func:`_apply33` on flat C-ordered ``(rows * 3,)`` data: constant strides vectorise."""
    k = _coeffs(up, off)
    for i in range(x.shape[0] // 3):
        j = 3 * i
        out[j], out[j + 1], out[j + 2] = _mix3(x[j], x[j + 1], x[j + 2], k)


@compile_kernel
def _apply33_planar(x0, x1, x2, up, off, o0, o1, o2):
    """:func:`_apply33` on channel planes (channel-first data), each a contiguous run."""
    k = _coeffs(up, off)
    for i in range(x0.shape[0]):
        o0[i], o1[i], o2[i] = _mix3(x0[i], x1[i], x2[i], k)


@compile_kernel
def _apply_any(x, up, off, out):
    n_in, n_out = up.shape
    for i in range(x.shape[0]):
        for j in range(n_out):
            acc = off[j]
            for k in range(n_in):
                acc += x[i, k] * up[k, j]
            out[i, j] = acc


@compile_kernel
def _gram(s, d, w, parts, t0, t1):
    """Accumulate ``X^T W X`` (upper triangle) and the valid count into ``parts``.

    ``parts`` has shape ``(batch, n_parts, p + 1, p)``: part ``c`` of batch element ``b``
    sums rows ``[c * n // n_parts, (c + 1) * n // n_parts)``. Fills the parts
    ``t = b * n_parts + c`` of ``[t0, t1)``.
    """
    n, n_in = s.shape[1:]
    n_out = d.shape[2]
    n_parts = parts.shape[1]
    p = n_in + 1 + n_out
    weighted = w.shape[1] == n
    for t in range(t0, t1):
        bi, ci = t // n_parts, t % n_parts
        g = parts[bi, ci]
        row = np.empty(p)
        for i in range(ci * n // n_parts, (ci + 1) * n // n_parts):
            wi = w[bi, i] if weighted else 1.0
            if not wi > 0:
                continue
            ok = True
            for k in range(n_in):
                row[k] = s[bi, i, k]
                ok &= np.isfinite(row[k])
            row[n_in] = 1.0
            for k in range(n_out):
                row[n_in + 1 + k] = d[bi, i, k]
                ok &= np.isfinite(row[n_in + 1 + k])
            if not ok:
                continue
            for a in range(p):
                ra = wi * row[a]
                for b in range(a, p):
                    g[a, b] += ra * row[b]
            g[p, 0] += 1.0


@compile_kernel
def _gram33(s, d, w, parts, t0, t1):
    """:func:`_gram` for 3 input and 3 output channels, with the 28 sums in registers.

    Columns of ``X``: ``x0 x1 x2`` (``s``), ``1``, ``x4 x5 x6`` (``d``); ``aJK`` sums
    ``w * xJ * xK``. About 10x faster than the generic loop.
    """
    n = s.shape[1]
    n_parts = parts.shape[1]
    weighted = w.shape[1] == n
    for t in range(t0, t1):
        bi, ci = t // n_parts, t % n_parts
        a00 = a01 = a02 = a03 = a04 = a05 = a06 = 0.0
        a11 = a12 = a13 = a14 = a15 = a16 = 0.0
        a22 = a23 = a24 = a25 = a26 = 0.0
        a33 = a34 = a35 = a36 = 0.0
        a44 = a45 = a46 = a55 = a56 = a66 = count = 0.0
        for i in range(ci * n // n_parts, (ci + 1) * n // n_parts):
            x0, x1, x2 = np.float64(s[bi, i, 0]), np.float64(s[bi, i, 1]), np.float64(s[bi, i, 2])
            x4, x5, x6 = np.float64(d[bi, i, 0]), np.float64(d[bi, i, 1]), np.float64(d[bi, i, 2])
            wi = w[bi, i] if weighted else 1.0
            ok = np.isfinite(x0 + x1 + x2 + x4 + x5 + x6) and wi > 0
            wi = wi if ok else 0.0
            x0, x1, x2 = (x0, x1, x2) if ok else (0.0, 0.0, 0.0)
            x4, x5, x6 = (x4, x5, x6) if ok else (0.0, 0.0, 0.0)
            u0, u1, u2, u4, u5, u6 = wi * x0, wi * x1, wi * x2, wi * x4, wi * x5, wi * x6
            a00 += u0 * x0
            a01 += u0 * x1
            a02 += u0 * x2
            a03 += u0
            a04 += u0 * x4
            a05 += u0 * x5
            a06 += u0 * x6
            a11 += u1 * x1
            a12 += u1 * x2
            a13 += u1
            a14 += u1 * x4
            a15 += u1 * x5
            a16 += u1 * x6
            a22 += u2 * x2
            a23 += u2
            a24 += u2 * x4
            a25 += u2 * x5
            a26 += u2 * x6
            a33 += wi
            a34 += u4
            a35 += u5
            a36 += u6
            a44 += u4 * x4
            a45 += u4 * x5
            a46 += u4 * x6
            a55 += u5 * x5
            a56 += u5 * x6
            a66 += u6 * x6
            count += 1.0 if ok else 0.0
        g = parts[bi, ci]
        g[0, 0], g[0, 1], g[0, 2], g[0, 3], g[0, 4], g[0, 5], g[0, 6] = (
            a00,
            a01,
            a02,
            a03,
            a04,
            a05,
            a06,
        )
        g[1, 1], g[1, 2], g[1, 3], g[1, 4], g[1, 5], g[1, 6] = a11, a12, a13, a14, a15, a16
        g[2, 2], g[2, 3], g[2, 4], g[2, 5], g[2, 6] = a22, a23, a24, a25, a26
        g[3, 3], g[3, 4], g[3, 5], g[3, 6] = a33, a34, a35, a36
        g[4, 4], g[4, 5], g[4, 6], g[5, 5], g[5, 6], g[6, 6] = a44, a45, a46, a55, a56, a66
        g[7, 0] = count


def apply_rows(x, up, off, out, parallel=True) -> None:
    """``out[i] = x[i] @ up + off`` for 2-D ``x (rows, n_in)`` and ``out (rows, n_out)``."""
    if up.shape == (3, 3) and x.flags.c_contiguous and out.flags.c_contiguous:  # interleaved
        split_rows(_apply33_interleaved, x, (up, off), out, parallel, flat=True)
    elif up.shape == (3, 3) and x.T.flags.c_contiguous and out.T.flags.c_contiguous:  # planar
        xs, os_ = tuple(x.T), tuple(out.T)
        run_split(
            _apply33_planar,
            x.shape[0],
            lambda lo, hi: (*(p[lo:hi] for p in xs), up, off, *(p[lo:hi] for p in os_)),
            parallel,
        )
    else:
        split_rows(_apply33 if up.shape == (3, 3) else _apply_any, x, (up, off), out, parallel)


def _read_only(a: np.ndarray) -> np.ndarray:
    """Return a read-only view of ``a``.

    numba types read-only and writable arrays apart: passing every input read-only (broadcast
    samples are, their copies are not) compiles one signature for both, not one each.
    """
    view = a.view()
    view.flags.writeable = False
    return view


#: Rows (all batch elements together) below which :func:`gram_rows` runs on one thread.
_GRAM_MIN_ROWS = 4096


def gram_rows(s, d, w, parallel=True) -> np.ndarray:
    """Packed statistics (:func:`xccm._kernels.gram`) of ``s (B, n, n_in)``, ``d (B, n, n_out)``.

    ``w`` is ``(B, n)`` weights, or ``None``.
    """
    n_batch, n = s.shape[:2]
    p = s.shape[2] + 1 + d.shape[2]
    # A few thousand rows take microseconds: waking the thread pool would cost more (the
    # sums are the same, one part either way).
    parallel = parallel and n_batch * n >= _GRAM_MIN_ROWS
    # Enough parts to keep every thread busy, each long enough to amortise its setup.
    n_parts = 1 if (not parallel or n_batch >= 64) else max(1, min(64, n // 16384))
    parts = np.zeros((n_batch, n_parts, p + 1, p))
    weights = np.empty((n_batch, 0)) if w is None else w
    kernel = _gram33 if s.shape[2] == d.shape[2] == 3 else _gram
    args = (_read_only(s), _read_only(d), _read_only(weights), parts)
    run_split(kernel, n_batch * n_parts, lambda lo, hi: (*args, lo, hi), parallel, min_rows=1)
    g = parts.sum(axis=1)
    upper = g[:, :p, :]
    lower = np.swapaxes(np.triu(upper, 1), -1, -2)
    g[:, :p, :] = upper + lower
    return g
