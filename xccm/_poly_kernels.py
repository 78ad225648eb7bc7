"""Numba kernels for term-expanded matrices (the ``fast`` extra): apply and Newton inverse.

Imported by :mod:`xccm._kernels` only when numba is installed; :mod:`xccm._terms` is the
NumPy fallback and the definition of the terms (``spow(prod_k x_k ** e_k, 1 / r)``). No
expanded array is ever written, so applying a root-polynomial matrix is one read of the
image and one write of the result, like a 3x3 matrix. Three input channels.

* Degree-2 root-polynomial matrices have a hand-unrolled kernel (``_rp2``): each pixel's
  six terms in registers.
* Any other term table goes through :func:`_terms_rows`, term-major over passes of a few
  hundred rows held in cache: each term is one plain loop over the pass (a product of
  powers, a root, three multiply-adds) that LLVM vectorises, cube roots included
  (:func:`_make_cbrt`: numba's ``np.cbrt`` is a scalar call, 30 times slower).
* Newton's method for the inverse, per pixel, in float64.

The kernels are compiled and launched as :mod:`xccm._numba_kernels`' are (one serial,
cached flavour each, run on parts of the rows by a pool of threads for a parallel call):
its policy, not a copy.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ._numba_kernels import NJIT_OPTIONS, compile_kernel, split_rows

__all__ = ["apply_rows", "newton_rows"]


@intrinsic
def _cbrt_seed(typingctx, a):
    """``cbrt(a)`` of a normal ``a > 0`` to 3.5 %: its bits divided by 3 plus a constant.

    The integer division of the bits thirds the exponent (and roughly the mantissa's
    logarithm); the constants (Kahan's for float32, its float64 analogue) re-bias it.
    """
    if a == types.float32:
        width, magic = 32, 0x2A514067
    elif a == types.float64:
        width, magic = 64, 0x2A9F7893782DA1CE
    else:
        return None

    def codegen(context, builder, signature, args):
        ity = ir.IntType(width)
        bits = builder.bitcast(args[0], ity)
        bits = builder.add(builder.udiv(bits, ity(3)), ity(magic))
        return builder.bitcast(bits, args[0].type)

    return a(a), codegen


def _make_cbrt(dtype, k):
    """Signed cube root in ``dtype`` arithmetic, branch-free so that loops of it vectorise.

    numba's ``np.cbrt`` is a scalar libm call (~20 ns); NumPy's is SIMD. This one is
    :func:`_cbrt_seed`, one Halley step for float32 and two for float64 (the error cubes:
    3.5 % -> 3e-5 -> 1e-14) and one Newton step: within 1 ulp of the true root (0.73 ulp at
    most, measured over the whole range of either type). Magnitudes below ``2**-(3k + 2)``
    (subnormals) or above ``2**(3k + 2)`` are scaled by ``2**(+-3k)`` first and the root
    back by ``2**(-+k)``, exactly; 0, inf and NaN are returned as they are. The sign is the
    argument's (colour-science's ``spow``).
    """
    t = np.dtype(dtype).type
    wide = t is np.float64
    lo, hi = t(2.0 ** -(3 * k + 2)), t(2.0 ** (3 * k + 2))
    up, down, root_up, root_down = t(2.0 ** (3 * k)), t(2.0 ** (-3 * k)), t(2.0**-k), t(2.0**k)
    zero, one, two, three, inf = t(0), t(1), t(2), t(3), t(np.inf)

    def cbrt(p):
        a = np.abs(p)
        small, big = a < lo, a > hi
        s = a * up if small else (a * down if big else a)
        y = _cbrt_seed(s)
        y3 = y * y * y
        y = y * ((y3 + two * s) / (two * y3 + s))
        if wide:
            y3 = y * y * y
            y = y * ((y3 + two * s) / (two * y3 + s))
        y = y - (y - s / (y * y)) / three
        y = y * (root_up if small else (root_down if big else one))
        return np.copysign(y if (a > zero and a < inf) else a, p)

    return cbrt


_CBRT32 = _make_cbrt(np.float32, 32)
_CBRT64 = _make_cbrt(np.float64, 333)


def _cbrt(p):
    """``spow(p, 1 / 3)`` in ``p``'s float type.

    From Python, NumPy's ``cbrt`` (odd, so a negative ``p`` keeps its sign); compiled code
    gets :func:`_make_cbrt`'s vectorisable root through the overload below.
    """
    return np.cbrt(p)


#: The kernels' options for the cube root too (the NumPy error model: no division checks).
_OVERLOAD_OPTIONS: Any = NJIT_OPTIONS


@overload(_cbrt, jit_options=_OVERLOAD_OPTIONS)
def _cbrt_impl(p):
    if p == types.float32:
        return _CBRT32
    if p == types.float64:
        return _CBRT64
    return None


@numba.njit(inline="always", **NJIT_OPTIONS)
def _root(p, r):
    """``spow(p, 1 / r)``: the ``r``-th root of ``|p|`` with the sign of ``p``."""
    if r == 1:
        return p
    if r == 3:
        return _cbrt(p)
    q = np.abs(p)
    if r == 2:
        v = np.sqrt(q)
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


@compile_kernel
def _rp2_flat(x, m, zero, out):
    """:func:`_rp2` over flat C-ordered ``(rows * 3,)`` data: constant strides vectorise."""
    for i in range(x.shape[0] // 3):
        j = 3 * i
        out[j], out[j + 1], out[j + 2] = _rp2(x[j] + zero, x[j + 1] + zero, x[j + 2] + zero, m)


@compile_kernel
def _rp2_rows(x, m, zero, out):
    for i in range(x.shape[0]):
        out[i, 0], out[i, 1], out[i, 2] = _rp2(x[i, 0] + zero, x[i, 1] + zero, x[i, 2] + zero, m)


#: Rows per pass of :func:`_terms_rows`: its scratch (the channels' roots and their powers,
#: the accumulated outputs) stays in the first or second level cache.
_PASS = 512


@compile_kernel
def _terms_rows(x, xf, m, exps, roots, zero, out, of):
    """``out[i] = t(x[i]) @ m[:, :n_out]`` for any term table, term by term over passes.

    A term is a product of roots of the channels: ``spow(prod_k x_k ** e_k, 1 / r) =
    prod_k spow(x_k, 1 / r) ** e_k`` (signs and magnitudes both factor), so a pass of
    :data:`_PASS` rows computes 3 roots per row for each root order ``r`` of the table, not
    one per term (root-polynomial degree 3: 3 cube roots instead of 7), and their powers:
    row ``((r - 1) * 3 + k) * (top + 1) + e`` of ``pw`` is ``spow(x_k, 1 / r) ** e``. Each
    term is then a product of three of those rows, in a plain loop that vectorises and
    accumulates ``term * m[j]`` into 3 outputs; ``m``'s columns are padded with zeros to a
    multiple of 3, done 3 at a time. ``xf`` and ``of`` are flat views of C-ordered ``x`` and
    ``out`` (else empty): their constant stride of 3 lets LLVM vectorise the
    (de)interleaving, which a 2-D view's stride, a run-time value even for a C-ordered
    array, does not.
    """
    n_rows, n_terms, n_out = x.shape[0], m.shape[0], out.shape[1]
    flat_in = xf.shape[0] == 3 * n_rows
    flat_out = of.shape[0] == 3 * n_rows and n_out == 3
    top, orders = 1, 1
    for j in range(n_terms):
        orders = max(orders, roots[j])
        for k in range(3):
            top = max(top, exps[j, k])
    used = np.zeros(orders + 1, np.bool_)
    for j in range(n_terms):
        used[roots[j]] = True
    used[1] = True  # the channels themselves, read first
    size, w = min(_PASS, n_rows), top + 1
    pw = np.empty((orders * 3 * w, size), out.dtype)
    acc = np.empty((3, size), out.dtype)
    a0, a1, a2 = acc[0], acc[1], acc[2]
    for q in range(orders * 3):
        for i in range(size):
            pw[q * w, i] = zero + 1
    for start in range(0, n_rows, _PASS):
        n = min(_PASS, n_rows - start)
        p0, p1, p2 = pw[1], pw[w + 1], pw[2 * w + 1]
        if flat_in:
            xs = xf[3 * start : 3 * (start + n)]
            for i in range(n):
                p0[i], p1[i], p2[i] = xs[3 * i] + zero, xs[3 * i + 1] + zero, xs[3 * i + 2] + zero
        else:
            for i in range(n):
                row = start + i
                p0[i], p1[i], p2[i] = x[row, 0] + zero, x[row, 1] + zero, x[row, 2] + zero
        for r in range(1, orders + 1):
            if not used[r]:
                continue
            for k in range(3):
                base, src = ((r - 1) * 3 + k) * w, pw[k * w + 1]
                dst = pw[base + 1]
                if r == 2:
                    for i in range(n):
                        dst[i] = np.copysign(np.sqrt(np.abs(src[i])), src[i])
                elif r == 3:
                    for i in range(n):
                        dst[i] = _cbrt(src[i])
                elif r == 4:
                    for i in range(n):
                        dst[i] = np.copysign(np.sqrt(np.sqrt(np.abs(src[i]))), src[i])
                elif r > 4:
                    for i in range(n):
                        dst[i] = _root(src[i], r)
                for e in range(2, top + 1):
                    pe, prev = pw[base + e], pw[base + e - 1]
                    for i in range(n):
                        pe[i] = prev[i] * dst[i]
        for g in range(0, m.shape[1], 3):
            for i in range(n):
                a0[i] = a1[i] = a2[i] = zero
            for j in range(n_terms):
                base = (roots[j] - 1) * 3 * w
                pa, pb, pc = (
                    pw[base + exps[j, 0]],
                    pw[base + w + exps[j, 1]],
                    pw[base + 2 * w + exps[j, 2]],
                )
                m0, m1, m2 = m[j, g], m[j, g + 1], m[j, g + 2]
                for i in range(n):
                    v = pa[i] * pb[i] * pc[i]
                    a0[i] += v * m0
                    a1[i] += v * m1
                    a2[i] += v * m2
            if flat_out:
                os = of[3 * start : 3 * (start + n)]
                for i in range(n):
                    os[3 * i], os[3 * i + 1], os[3 * i + 2] = a0[i], a1[i], a2[i]
            else:
                for o in range(min(3, n_out - g)):
                    ao = acc[o]
                    for i in range(n):
                        out[start + i, g + o] = ao[i]


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

    A function of its own (not inlined into the loop), so that its one signature (float64
    scalars, the fixed-dtype tables) is compiled once for every signature of :func:`_newton`.
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


@compile_kernel
def _newton(d, m, exps, roots, inv, off, tol, max_iter, out):
    """Newton's method per pixel for ``t(s) @ m = d``; see :func:`xccm._terms.newton_rows`.

    ``d`` and ``out`` are read and written in place, in any dtype and layout: a new signature
    compiles only this loop, :func:`_newton_pixel` is compiled once. Returns the number of
    rows that did not converge (NaN in ``out``).
    """
    failed = 0
    for i in range(d.shape[0]):
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
        split_rows(_rp2_flat, x, (m, zero), out, parallel, flat=True)
    elif rp2:
        split_rows(_rp2_rows, x, (m, zero), out, parallel)
    else:
        padded = np.zeros((m.shape[0], -(-m.shape[1] // 3) * 3), m.dtype)
        padded[:, : m.shape[1]] = m
        exps = np.ascontiguousarray(exponents, dtype=np.int64)
        args = (padded, exps, np.ascontiguousarray(roots, np.int64), zero)
        split_rows(_terms_part, x, args, out, parallel)


def _terms_part(x, m, exps, roots, zero, out) -> None:
    """:func:`_terms_rows` on ``x`` and ``out``, with flat views of those that are C-ordered.

    ``m`` is ``(n_terms, 3 * groups)``, padded with zero columns (:func:`apply_rows`).
    """
    xf = x.reshape(-1) if x.flags.c_contiguous else np.empty(0, x.dtype)
    of = out.reshape(-1) if out.flags.c_contiguous else np.empty(0, out.dtype)
    _terms_rows(x, xf, m, exps, roots, zero, out, of)


def newton_rows(d, m, exponents, roots, inv, off, out, *, tol, max_iter, parallel=True) -> int:
    """Newton's method per row of ``d (rows, 3)`` into ``out``; returns the failures."""
    args = (
        np.ascontiguousarray(m, dtype=np.float64),
        np.ascontiguousarray(exponents, dtype=np.int64),
        np.ascontiguousarray(roots, dtype=np.int64),
        np.ascontiguousarray(inv, dtype=np.float64),
        np.ascontiguousarray(off, dtype=np.float64),
        float(tol),
        int(max_iter),
    )
    # A Newton solve costs far more per row than an apply: split from fewer rows.
    failed = split_rows(_newton, d, args, out, parallel, min_rows=1024)
    return int(sum(failed))
