"""Numba kernels for term-expanded matrices (the ``fast`` extra): apply and Newton inverse.

Imported by :mod:`xccm._kernels` only when numba is installed; :mod:`xccm._terms` is the
NumPy fallback and the definition of the terms (``spow(prod_k x_k ** e_k, 1 / r)``). Each
pixel's terms are computed in registers inside the loop and multiplied into the matrix
straight away: no expanded array is ever written, so applying a root-polynomial matrix is
one read of the image and one write of the result, like a 3x3 matrix. Three input channels.

The kernels are compiled and launched as :mod:`xccm._numba_kernels`' are (a ``prange`` and
a serial flavour of each, cached, parallel launches serialised): its policy, not a copy.
"""

from __future__ import annotations

import numba
import numpy as np

from ._numba_kernels import NJIT_OPTIONS, compile_kernels, launch

__all__ = ["apply_rows", "newton_rows"]

#: Rows per work item of the parallel kernels (~200 KB of float32 per item).
_BLOCK = 16384


@numba.njit(inline="always", **NJIT_OPTIONS)
def _root(p, r):
    """``spow(p, 1 / r)``: the ``r``-th root of ``|p|`` with the sign of ``p``."""
    if r == 1:
        return p
    q = np.abs(p)
    if r == 2:
        v = np.sqrt(q)
    elif r == 3:
        v = np.cbrt(q)
    elif r == 4:
        v = np.sqrt(np.sqrt(q))
    else:
        v = q ** (1.0 / r)
    return np.copysign(v, p)


@numba.njit(inline="always", **NJIT_OPTIONS)
def _ipow(v, e):
    out = v - v + 1
    for _ in range(e):
        out *= v
    return out


@numba.njit(inline="always", **NJIT_OPTIONS)
def _rp2(a, b, c, m):
    """One pixel through a degree-2 root-polynomial matrix ``m (6, 3)``."""
    ab, bc, ac = a * b, b * c, a * c
    t3 = np.copysign(np.sqrt(np.abs(ab)), ab)
    t4 = np.copysign(np.sqrt(np.abs(bc)), bc)
    t5 = np.copysign(np.sqrt(np.abs(ac)), ac)
    return (
        a * m[0, 0] + b * m[1, 0] + c * m[2, 0] + t3 * m[3, 0] + t4 * m[4, 0] + t5 * m[5, 0],
        a * m[0, 1] + b * m[1, 1] + c * m[2, 1] + t3 * m[3, 1] + t4 * m[4, 1] + t5 * m[5, 1],
        a * m[0, 2] + b * m[1, 2] + c * m[2, 2] + t3 * m[3, 2] + t4 * m[4, 2] + t5 * m[5, 2],
    )


@numba.njit(**NJIT_OPTIONS)
def _rp2_flat(x, m, zero, out):
    """:func:`_rp2` over flat C-ordered ``(rows * 3,)`` data: constant strides vectorise."""
    for i in range(x.shape[0] // 3):
        j = 3 * i
        out[j], out[j + 1], out[j + 2] = _rp2(x[j] + zero, x[j + 1] + zero, x[j + 2] + zero, m)


@numba.njit(**NJIT_OPTIONS)
def _rp2_rows(x, m, zero, out):
    for i in range(x.shape[0]):
        out[i, 0], out[i, 1], out[i, 2] = _rp2(x[i, 0] + zero, x[i, 1] + zero, x[i, 2] + zero, m)


@numba.njit(**NJIT_OPTIONS)
def _terms_rows(x, m, exps, roots, zero, out):
    """``out[i] = t(x[i]) @ m`` for any term table (exponents up to 4)."""
    n_terms, n_out = m.shape
    pa, pb, pc = np.empty(5, out.dtype), np.empty(5, out.dtype), np.empty(5, out.dtype)
    acc = np.empty(n_out, out.dtype)
    for i in range(x.shape[0]):
        pa[0] = pb[0] = pc[0] = zero + 1
        for e in range(1, 5):
            pa[e] = pa[e - 1] * (x[i, 0] + zero)
            pb[e] = pb[e - 1] * (x[i, 1] + zero)
            pc[e] = pc[e - 1] * (x[i, 2] + zero)
        acc[:] = zero
        for j in range(n_terms):
            t = _root(pa[exps[j, 0]] * pb[exps[j, 1]] * pc[exps[j, 2]], roots[j])
            for o in range(n_out):
                acc[o] += t * m[j, o]
        for o in range(n_out):
            out[i, o] = acc[o]


# The parallel flavours split the rows into blocks and run a serial loop on each: LLVM
# vectorises a plain loop in its own function (the square roots too), not a prange body.


def _apply_rp2_interleaved(x, m, zero, out):
    """Degree-2 root-polynomial apply on flat C-ordered ``(rows * 3,)`` data."""
    step = 3 * _BLOCK
    for b in numba.prange((x.shape[0] + step - 1) // step):
        _rp2_flat(x[b * step : (b + 1) * step], m, zero, out[b * step : (b + 1) * step])


def _apply_rp2(x, m, zero, out):
    """Degree-2 root-polynomial apply on 2-D ``(rows, 3)`` views with any strides."""
    for b in numba.prange((x.shape[0] + _BLOCK - 1) // _BLOCK):
        rows = slice(b * _BLOCK, (b + 1) * _BLOCK)
        _rp2_rows(x[rows], m, zero, out[rows])


def _apply_terms(x, m, exps, roots, zero, out):
    """``out[i] = t(x[i]) @ m`` for any term table, block by block."""
    for b in numba.prange((x.shape[0] + _BLOCK - 1) // _BLOCK):
        rows = slice(b * _BLOCK, (b + 1) * _BLOCK)
        _terms_rows(x[rows], m, exps, roots, zero, out[rows])


@numba.njit(inline="always", **NJIT_OPTIONS)
def _residual(s0, s1, s2, d0, d1, d2, m, exps, roots):
    """``t(s) @ m - d`` (3 outputs) and its largest absolute value, in float64."""
    f0, f1, f2 = -d0, -d1, -d2
    for j in range(m.shape[0]):
        t = _root(_ipow(s0, exps[j, 0]) * _ipow(s1, exps[j, 1]) * _ipow(s2, exps[j, 2]), roots[j])
        f0 += t * m[j, 0]
        f1 += t * m[j, 1]
        f2 += t * m[j, 2]
    return f0, f1, f2, max(abs(f0), abs(f1), abs(f2))


@numba.njit(inline="always", **NJIT_OPTIONS)
def _grad(s0, s1, s2, e0, e1, e2, r):
    """Differentiate one term ``spow(s0^e0 s1^e1 s2^e2, 1/r)`` by ``s0, s1, s2``."""
    p0, p1, p2 = _ipow(s0, e0), _ipow(s1, e1), _ipow(s2, e2)
    g0 = e0 * _ipow(s0, e0 - 1) * p1 * p2 if e0 > 0 else 0.0
    g1 = e1 * _ipow(s1, e1 - 1) * p0 * p2 if e1 > 0 else 0.0
    g2 = e2 * _ipow(s2, e2 - 1) * p0 * p1 if e2 > 0 else 0.0
    if r == 1:
        return g0, g1, g2
    q = max(abs(p0 * p1 * p2), 2.2250738585072014e-308)
    scale = _root(q, r) / (r * q)
    return scale * g0, scale * g1, scale * g2


@numba.njit(**NJIT_OPTIONS)
def _newton_pixel(d0, d1, d2, m, exps, roots, inv, off, tol, max_iter):
    """Newton's method for one finite colour ``d``: ``(s0, s1, s2, converged)``.

    A function of its own (not inlined into the loops), so that its one signature (float64
    scalars, the fixed-dtype tables) is compiled once for both flavours of :func:`_newton`.
    """
    target = tol * max(1.0, abs(d0), abs(d1), abs(d2))
    e0, e1, e2 = d0 - off[0], d1 - off[1], d2 - off[2]
    s0 = e0 * inv[0, 0] + e1 * inv[1, 0] + e2 * inv[2, 0]
    s1 = e0 * inv[0, 1] + e1 * inv[1, 1] + e2 * inv[2, 1]
    s2 = e0 * inv[0, 2] + e1 * inv[1, 2] + e2 * inv[2, 2]
    f0, f1, f2, err = _residual(s0, s1, s2, d0, d1, d2, m, exps, roots)
    it = 0
    while err > target and it < max_iter:
        it += 1
        # J[o, k] = dF_o / ds_k
        j00 = j01 = j02 = j10 = j11 = j12 = j20 = j21 = j22 = 0.0
        for j in range(m.shape[0]):
            g0, g1, g2 = _grad(s0, s1, s2, exps[j, 0], exps[j, 1], exps[j, 2], roots[j])
            j00 += g0 * m[j, 0]
            j01 += g1 * m[j, 0]
            j02 += g2 * m[j, 0]
            j10 += g0 * m[j, 1]
            j11 += g1 * m[j, 1]
            j12 += g2 * m[j, 1]
            j20 += g0 * m[j, 2]
            j21 += g1 * m[j, 2]
            j22 += g2 * m[j, 2]
        c00, c01, c02 = j11 * j22 - j12 * j21, j12 * j20 - j10 * j22, j10 * j21 - j11 * j20
        det = j00 * c00 + j01 * c01 + j02 * c02
        if not (np.isfinite(det) and det != 0.0):
            break
        # Cramer's rule: step = J^-1 f
        st0 = (f0 * c00 + f1 * (j02 * j21 - j01 * j22) + f2 * (j01 * j12 - j02 * j11)) / det
        st1 = (f0 * c01 + f1 * (j00 * j22 - j02 * j20) + f2 * (j02 * j10 - j00 * j12)) / det
        st2 = (f0 * c02 + f1 * (j01 * j20 - j00 * j21) + f2 * (j00 * j11 - j01 * j10)) / det
        lam = 1.0
        improved = False
        for _ in range(30):  # halve the step while it does not reduce the residual
            n0, n1, n2 = s0 - lam * st0, s1 - lam * st1, s2 - lam * st2
            g0, g1, g2, gerr = _residual(n0, n1, n2, d0, d1, d2, m, exps, roots)
            if gerr < err:
                s0, s1, s2, f0, f1, f2, err = n0, n1, n2, g0, g1, g2, gerr
                improved = True
                break
            lam *= 0.5
        if not improved:
            break
    return s0, s1, s2, err <= target


def _newton(d, m, exps, roots, inv, off, tol, max_iter, out):
    """Newton's method per pixel for ``t(s) @ m = d``; see :func:`xccm._terms.newton_rows`.

    ``d`` and ``out`` are read and written in place, in any dtype and layout: a new signature
    compiles only this loop, :func:`_newton_pixel` is compiled once. Returns the number of
    rows that did not converge (NaN in ``out``).
    """
    failed = 0
    for i in numba.prange(d.shape[0]):
        d0, d1, d2 = np.float64(d[i, 0]), np.float64(d[i, 1]), np.float64(d[i, 2])
        if not np.isfinite(d0 + d1 + d2):
            out[i, 0] = out[i, 1] = out[i, 2] = np.nan
            continue
        s0, s1, s2, ok = _newton_pixel(d0, d1, d2, m, exps, roots, inv, off, tol, max_iter)
        if ok:
            out[i, 0], out[i, 1], out[i, 2] = s0, s1, s2
        else:
            out[i, 0] = out[i, 1] = out[i, 2] = np.nan
            failed += 1
    return failed


_APPLY_RP2 = compile_kernels(_apply_rp2)
_APPLY_RP2_INTERLEAVED = compile_kernels(_apply_rp2_interleaved)
_APPLY_TERMS = compile_kernels(_apply_terms)
_NEWTON = compile_kernels(_newton)

#: The term table of a degree-2 root-polynomial model, which has its own unrolled kernel.
_RP2_EXPONENTS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]])
_RP2_ROOTS = np.array([1, 1, 1, 2, 2, 2])


def apply_rows(x, m, exponents, roots, out, parallel=True) -> None:
    """``out[i] = t(x[i]) @ m`` for 2-D ``x (rows, 3)`` and ``out (rows, n_out)``."""
    zero = out.dtype.type(0)
    m = np.ascontiguousarray(m, dtype=out.dtype)
    rp2 = (
        m.shape == (6, 3)
        and np.array_equal(exponents, _RP2_EXPONENTS)
        and np.array_equal(roots, _RP2_ROOTS)
    )
    if rp2 and x.flags.c_contiguous and out.flags.c_contiguous:  # interleaved RGB
        launch(_APPLY_RP2_INTERLEAVED, parallel, x.reshape(-1), m, zero, out.reshape(-1))
    elif rp2:
        launch(_APPLY_RP2, parallel, x, m, zero, out)
    else:
        exps = np.ascontiguousarray(exponents, dtype=np.int64)
        launch(_APPLY_TERMS, parallel, x, m, exps, np.ascontiguousarray(roots, np.int64), zero, out)


def newton_rows(d, m, exponents, roots, inv, off, out, *, tol, max_iter, parallel=True) -> int:
    """Newton's method per row of ``d (rows, 3)`` into ``out``; returns the failures."""
    args = (
        d,
        np.ascontiguousarray(m, dtype=np.float64),
        np.ascontiguousarray(exponents, dtype=np.int64),
        np.ascontiguousarray(roots, dtype=np.int64),
        np.ascontiguousarray(inv, dtype=np.float64),
        np.ascontiguousarray(off, dtype=np.float64),
        float(tol),
        int(max_iter),
        out,
    )
    return int(launch(_NEWTON, parallel, *args))
