"""NumPy kernels for term-expanded (polynomial and root-polynomial) matrices.

ndarrays only, channel axis last. A *term table* describes the expansion of a colour
``x = (x_0, ..., x_{n-1})`` into ``n_terms`` values: term ``j`` is

    t_j(x) = spow(prod_k x_k ** exponents[j, k], 1 / roots[j]),

with ``spow(a, p) = sign(a) * |a| ** p`` (colour-science's ``spow``: a root of a negative
product is negative, not NaN). A row of zero exponents is the constant term (``1``, the
offset row of an affine matrix). The expanded matrix ``m (n_terms, n_out)`` maps a colour to
``t(x) @ m``.

This is the fallback when numba is not installed (:mod:`xccm._poly_kernels` holds the fused
numba loops), and the reference the numba kernels are tested against. Work is split into
blocks of rows so the expanded temporaries stay a few MB whatever the image size.
"""

from __future__ import annotations

import numpy as np

__all__ = ["apply_rows", "expand", "expand_jacobian", "newton_rows", "newton_start"]

#: Rows per block of the NumPy fallbacks: bounds their temporaries to a few MB.
BLOCK_ROWS = 1 << 14


def _spow(a: np.ndarray, root: int) -> np.ndarray:
    if root == 1:
        return a
    if root == 2:
        return np.copysign(np.sqrt(np.abs(a)), a)
    if root == 3:
        return np.cbrt(a)
    return np.copysign(np.abs(a) ** (1.0 / root), a)


def _product(x: np.ndarray, powers) -> np.ndarray:
    """``prod_k x[..., k] ** powers[k]`` by repeated multiplication (small integer powers)."""
    out = None
    for k, e in enumerate(powers):
        for _ in range(int(e)):
            out = x[..., k] if out is None else out * x[..., k]
    return np.ones(x.shape[:-1], x.dtype) if out is None else out


def expand(x: np.ndarray, exponents: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """Terms ``(..., n_terms)`` of colours ``x (..., n_in)``, in ``x``'s float dtype.

    Examples
    --------
    >>> expand(np.array([4.0, 9.0, 1.0]), np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]]),
    ...        np.array([1, 2, 1]))
    array([4., 6., 1.])
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    out = np.empty((*x.shape[:-1], len(roots)), x.dtype)
    for j, (powers, root) in enumerate(zip(exponents, roots, strict=True)):
        out[..., j] = _spow(_product(x, powers), int(root))
    return out


def expand_jacobian(x: np.ndarray, exponents: np.ndarray, roots: np.ndarray):
    """Terms ``t (..., n_terms)`` and their derivatives ``dt/dx (..., n_terms, n_in)``.

    ``d spow(p, 1/r) / dx_k = |p| ** (1/r - 1) / r * dp/dx_k``; where ``p`` is 0 and
    ``r > 1`` the derivative is infinite, and ``|p|`` is floored at the smallest normal
    float so that it stays finite (and huge), which a Newton step then all but ignores.
    """
    x = np.asarray(x, dtype=np.float64)
    n_in = x.shape[-1]
    t = expand(x, exponents, roots)
    jac = np.zeros((*t.shape, n_in))
    tiny = np.finfo(np.float64).tiny
    for j, (powers, root) in enumerate(zip(exponents, roots, strict=True)):
        p = _product(x, powers)
        scale = 1.0 if root == 1 else np.maximum(np.abs(p), tiny) ** (1.0 / root - 1.0) / root
        for k in range(n_in):
            if powers[k] == 0:
                continue
            lowered = np.array(powers)
            lowered[k] -= 1
            jac[..., j, k] = scale * powers[k] * _product(x, lowered)
    return t, jac


def apply_rows(
    x: np.ndarray, m: np.ndarray, exponents: np.ndarray, roots: np.ndarray, out: np.ndarray
) -> None:
    """``out[i] = expand(x[i]) @ m`` for 2-D ``x (rows, n_in)``, block by block."""
    for start in range(0, x.shape[0], BLOCK_ROWS):
        rows = slice(start, start + BLOCK_ROWS)
        block = x[rows].astype(out.dtype, copy=False)
        np.matmul(expand(block, exponents, roots), m.astype(out.dtype, copy=False), out=out[rows])


def newton_start(m: np.ndarray, exponents: np.ndarray, roots: np.ndarray):
    """Return the start of Newton's method: ``(inverse, offset)`` of ``m``'s linear part.

    The linear part is the rows of the terms ``x_k`` (exponent ``e_k``, root 1) and the
    constant row (zero if there is none). A singular linear part starts from ``d`` itself.
    """
    n_in = exponents.shape[1]
    up = np.zeros((n_in, m.shape[1]))
    off = np.zeros(m.shape[1])
    for j, (powers, root) in enumerate(zip(exponents, roots, strict=True)):
        if not np.any(powers):
            off = off + m[j]
        elif root == 1 and powers.sum() == 1:
            up[int(np.argmax(powers))] += m[j]
    if up.shape[0] == up.shape[1] and np.isfinite(up).all():
        with np.errstate(all="ignore"):
            cond = np.linalg.cond(up)
        if cond < 1e12:
            return np.linalg.inv(up), off
    return np.eye(n_in, m.shape[1]).T, np.zeros(m.shape[1])


def newton_rows(
    d: np.ndarray,
    m: np.ndarray,
    exponents: np.ndarray,
    roots: np.ndarray,
    out: np.ndarray,
    *,
    tol: float,
    max_iter: int,
) -> int:
    """Solve ``expand(s) @ m = d`` for ``s`` row by row (Newton); return the failures.

    Starts from the linear part's inverse (:func:`newton_start`); each step solves the 3x3
    (``n_in x n_in``) Jacobian system and is halved (up to 30 times) while it does not
    reduce the residual. A row has converged when ``max |expand(s) @ m - d| <= tol *
    max(1, max |d|)``; rows that have not after ``max_iter`` steps get NaN and are counted.
    Rows with a non-finite ``d`` get NaN and are not counted. Computes in float64.
    """
    m = np.asarray(m, dtype=np.float64)
    inv, off = newton_start(m, exponents, roots)
    failed = 0
    for start in range(0, d.shape[0], BLOCK_ROWS):
        rows = slice(start, start + BLOCK_ROWS)
        s, bad = _newton_block(
            np.asarray(d[rows], dtype=np.float64), m, exponents, roots, inv, off, tol, max_iter
        )
        out[rows] = s
        failed += int(bad)
    return failed


def _residual(s, d, m, exponents, roots):
    f = expand(s, exponents, roots) @ m - d
    return f, np.abs(f).max(axis=-1)


def _newton_block(d, m, exponents, roots, inv, off, tol, max_iter):
    finite = np.isfinite(d).all(axis=-1)
    d = np.where(finite[:, None], d, 0.0)
    target = tol * np.maximum(1.0, np.abs(d).max(axis=-1))
    s = (d - off) @ inv
    f, err = _residual(s, d, m, exponents, roots)
    active = np.flatnonzero(err > target)
    for _ in range(max_iter):
        if not active.size:
            break
        sa, fa, ea = s[active], f[active], err[active]
        _, jac = expand_jacobian(sa, exponents, roots)
        jf = np.einsum("ntk,to->nok", jac, m)  # dF_o / ds_k
        with np.errstate(all="ignore"):
            ok = np.isfinite(jf).all(axis=(-1, -2)) & (np.abs(np.linalg.det(jf)) > 0)
            safe = np.where(ok[:, None, None], jf, np.eye(jf.shape[-1]))
            step = np.linalg.solve(safe, fa[..., None])[..., 0]
        step[~ok] = 0.0
        lam = np.ones(len(active))
        new_s, new_f, new_e = sa - step, fa, ea
        pending = ok.copy()
        for _ in range(30):  # halve the step while it does not reduce the residual
            if not pending.any():
                break
            idx = np.flatnonzero(pending)
            cand = sa[idx] - lam[idx, None] * step[idx]
            cf, ce = _residual(cand, d[active[idx]], m, exponents, roots)
            better = ce < ea[idx]
            good = idx[better]
            new_s[good], new_f[good], new_e[good] = cand[better], cf[better], ce[better]
            pending[good] = False
            lam[idx[~better]] *= 0.5
        moved = ~pending & ok
        s[active[moved]], f[active[moved]], err[active[moved]] = (
            new_s[moved],
            new_f[moved],
            new_e[moved],
        )
        done = err[active] <= target[active]
        active = active[~done & moved]
    bad = ~(err <= target) & finite
    s[bad | ~finite] = np.nan
    return s, np.count_nonzero(bad)
