r"""How well determined is a fitted matrix: parameter covariance and ΔE uncertainty.

:func:`uncertainty` estimates, for every batch element (frame) of a fitted matrix, the
covariance of its coefficients and propagates it to the colours it corrects:

- **least squares** (a fit without ``loss=``, or ``loss="linear_rgb"``): the classical
  covariance of multivariate weighted least squares,
  :math:`\mathrm{Cov}(\mathrm{vec}\,M) = (X^T W X)^{-1} \otimes \hat\Sigma` with
  :math:`X = S^+` and :math:`\hat\Sigma = R^T W R / (N - k)` the residual covariance of the
  output columns (its diagonal is the per-column residual variance), :math:`N` the samples
  used and :math:`k` the unknowns per column (``n_in``, or ``n_in + 1`` affine). The
  weights count as relative (known up to a common factor), so their scale does not matter.
- **colour-difference fits** (``loss="ciede2000"`` and the others): the Gauss–Newton
  covariance at the optimum, :math:`\hat\sigma^2 (J^T J)^{-1}`, with :math:`J` the Jacobian
  of the fit's residuals (the ΔE component vectors of :mod:`xccm._refine`, times
  :math:`\sqrt{w}`) with respect to the coefficients (central differences) and
  :math:`\hat\sigma^2 = \sum r^2 / (3N - P)`, :math:`P` the number of coefficients.
- **bootstrap** (``method="bootstrap"``, any fit): the matrix is refitted ``n`` times with
  the samples resampled with replacement (multinomial counts used as weights, one seeded
  set of resamples shared by every frame) and the covariance is that of the refits.

The covariance is propagated to the corrected colours :math:`c = x^+ M` of a colour set
(by default the measured patches; any colours with ``colours=``), then to a colour
difference by linearisation: with :math:`L` the Jacobian of the ΔE component vector at
:math:`c`, the predicted RMS colour error is :math:`\sqrt{\mathrm{tr}(L\,\mathrm{Cov}(c)\,L^T)}`.
For the bootstrap it is the RMS ΔE between the colours corrected by the refits and by the
fitted matrix.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterable
from typing import Any, Literal, cast

import numpy as np
import xarray as xr

from . import chartfit, colorimetry
from ._kernels import InsufficientSamplesWarning
from ._labels import check_integer, pair_by_label
from .core import apply, matrix_in_dim
from .fitting import fit

__all__ = ["uncertainty"]

Method = Literal["linear", "bootstrap"]

# Private core dims inside apply_ufunc.
_IN = "__xccm_unc_in__"
_OUT = "__xccm_unc_out__"
_P = "__xccm_unc_p__"
_Q = "__xccm_unc_q__"
PARAM, PARAM2 = "param", "param2"


def uncertainty(
    measured: xr.DataArray,
    reference: xr.DataArray,
    matrix: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = "channel",
    method: Method = "linear",
    n: int = 200,
    seed: int | None = 0,
    colours: xr.DataArray | None = None,
    distance: str = "ciede2000",
    sample_dims: Hashable | Iterable[Hashable] | None = None,
    weights: xr.DataArray | np.ndarray | None = None,
    robust_weights: xr.DataArray | None = None,
    mask: xr.DataArray | np.ndarray | None = None,
    saturation: tuple[float, float] | Literal["auto"] | None = "auto",
    loss: str | Literal["auto"] | None = "auto",
    rgb_space: str | None = None,
    reference_space: str | None = None,
    illuminant: str | Iterable[float] | None = None,
    standard: Literal["reference", "sample"] | None = None,
) -> xr.Dataset:
    r"""Estimate the uncertainty of fitted matrices and of the colours they correct.

    Pass the data the matrix was fitted on and the fit's options (most are read back from
    ``matrix.attrs``, which :func:`xccm.fit` fills in). See the module docstring for the
    formulas: least-squares covariance from the normal equations, the Gauss–Newton
    covariance from the Jacobian at the optimum for colour-difference fits, or a bootstrap
    over the samples.

    Parameters
    ----------
    measured, reference : DataArray
        As given to :func:`xccm.fit` (samples paired by label). Batch dims of ``measured``
        (e.g. ``time``) get one covariance each.
    matrix : DataArray or ndarray
        The fitted matrix, dims ``(*batch, f"{dim}_in", dim)``; a plain ``(k, n_out)``
        array for an unbatched fit.
    dim : hashable, default "channel"
    method : {"linear", "bootstrap"}, default "linear"
        ``"linear"``: the closed-form covariance (least squares) or the Jacobian at the
        optimum (ΔE fits). ``"bootstrap"``: ``n`` refits on resampled samples (any fit,
        also ``init="white_balance"``; slower, ``n`` times the work of the fit).
    n : int, default 200
        Bootstrap replicates.
    seed : int or None, default 0
        Seed of the bootstrap resampling.
    colours : DataArray, optional
        Camera colours (with ``dim``, ``n_in`` channels, as ``measured``) whose corrected
        colours' ΔE uncertainty to predict, e.g. a grid of colours; default ``measured``
        (the chart's patches, per frame).
    distance : str, default "ciede2000"
        The colour difference of ``delta_e`` (a distance of :func:`xccm.delta_e`).
    sample_dims, weights, mask : optional
        As for :func:`xccm.fit`.
    robust_weights : DataArray, optional
        For a robust fit (``matrix.attrs["robust"]`` set, ``fit(..., robust=...)``): the
        final per-sample robust weights, the second value of
        ``fit(..., robust=..., return_weights=True)``, dims ``(*batch, *samples)``
        (NaN: left out). The linear method then takes the covariance of the weighted fit
        at these weights (``weights`` times them): outliers a Tukey fit rejected (weight 0)
        do not count, neither in the residual variance nor in the degrees of freedom. This
        is the usual approximation of an M-estimator's covariance (IRLS at convergence),
        without Huber's small-sample correction. Required by the linear method for a
        robust fit: without it the rejected outliers would inflate the uncertainty. The
        bootstrap does not need it: it refits every resample robustly, with the matrix's
        ``robust`` and ``robust_tuning``, and does not use it.
    saturation : (low, high), None or "auto"
        The saturation range of the fit; ``"auto"``: the one in ``matrix.attrs``, if any.
    loss : str, None or "auto"
        The fit's loss; ``"auto"``: ``matrix.attrs["loss"]`` (None if absent).
    rgb_space, reference_space, illuminant, standard : optional
        As for :func:`xccm.fit`; default the matrix's attrs (``rgb_space``,
        ``lab_white_xy``, ``standard``), else fit's defaults.

    Returns
    -------
    Dataset
        - ``covariance`` ``(*batch, param, param2)``: covariance of the coefficients,
          ``param`` running over ``matrix.stack(param=(f"{dim}_in", dim))`` (row-major);
          non-index coords ``param_in``/``param_out`` (``param2_in``/``param2_out``) name
          each coefficient's row and column.
        - ``standard_error`` ``(*batch, f"{dim}_in", dim)``: square roots of the diagonal,
          shaped like the matrix.
        - ``delta_e`` ``(*batch, *colour dims)``: predicted RMS colour difference
          (``distance``) between each colour corrected by the fitted matrix and by the
          true one.
        - ``delta_e_rms`` ``(*batch)``: its RMS over the colours.
        - ``dof`` ``(*batch)`` (linear method): residual degrees of freedom (``N - k``
          least squares, ``3N - P`` ΔE fits); NaN covariance where it is not positive.

        Lazy for Dask-backed input (the sample dims are taken as one chunk each: patch
        colours are small).

    Raises
    ------
    ValueError
        On an unknown ``method``, ``n < 2``, a matrix whose rows fit neither a linear nor
        an affine model, ``method="linear"`` for a white-balance fit without a loss
        (it has no normal equations: use the bootstrap), or ``method="linear"`` for a
        robust fit without ``robust_weights``.
    TypeError
        If ``robust_weights`` is not a DataArray.

    Examples
    --------
    >>> import numpy as np, xarray as xr, xccm
    >>> ref = xccm.chart()  # linear sRGB ColorChecker
    >>> rng = np.random.default_rng(1)
    >>> camera = xr.DataArray([[0.8, 0.1, 0.0], [0.1, 0.7, 0.1], [0.1, 0.2, 0.9]],
    ...                       dims=("channel", "c"))
    >>> measured = (ref @ camera).rename(c="channel").assign_coords(channel=["R", "G", "B"])
    >>> measured = measured + rng.normal(0, 0.005, measured.shape)
    >>> m = xccm.fit(measured, ref)
    >>> u = xccm.uncertainty(measured, ref, m)
    >>> u["standard_error"].dims, u["covariance"].shape, bool(u["delta_e_rms"] < 1)
    (('channel_in', 'channel'), (9, 9), True)

    A robust fit, with glare on one patch: pass its weights.

    >>> glare = measured.copy()
    >>> glare[5] = 0.95
    >>> m, w = xccm.fit(glare, ref, robust="tukey", return_weights=True)
    >>> u = xccm.uncertainty(glare, ref, m, robust_weights=w)
    >>> float(w[5]), int(u["dof"]), bool(u["delta_e_rms"] < 1)
    (0.0, 20, True)
    """
    if not isinstance(measured, xr.DataArray) or not isinstance(reference, xr.DataArray):
        raise TypeError(
            "uncertainty needs measured and reference as DataArrays (the samples are "
            f"paired by label); got {type(measured).__name__} and {type(reference).__name__}"
        )
    if method not in ("linear", "bootstrap"):
        raise ValueError(f"method must be 'linear' or 'bootstrap'; got {method!r}")
    if method == "bootstrap":
        n = check_integer(n, "n (bootstrap replicates)", minimum=2)
    for name, obj in (("measured", measured), ("reference", reference)):
        if dim not in obj.dims:
            raise ValueError(f"{name} has no dim {dim!r}; its dims are {tuple(obj.dims)}")
    in_dim = matrix_in_dim(dim)
    matrix = _as_matrix(matrix, measured, reference, dim)
    n_in, n_out = measured.sizes[dim], reference.sizes[dim]
    k = matrix.sizes[in_dim]
    if k not in (n_in, n_in + 1) or matrix.sizes[dim] != n_out:
        raise ValueError(
            f"matrix must have dims ({in_dim!r}: {n_in} or {n_in + 1}, {dim!r}: {n_out}) for "
            f"{n_in} measured and {n_out} reference channels; got sizes {dict(matrix.sizes)}"
        )
    attrs = matrix.attrs
    robust = attrs.get("robust")
    if robust_weights is not None and not isinstance(robust_weights, xr.DataArray):
        raise TypeError(
            "robust_weights must be the DataArray of robust weights that "
            f"fit(..., return_weights=True) returns; got {type(robust_weights).__name__}"
        )
    if method == "linear" and robust is not None and robust_weights is None:
        raise ValueError(
            f"matrix was fitted with robust={robust!r} (matrix.attrs['robust']): pass "
            "robust_weights=, the per-sample weights of "
            f"fit(..., robust={robust!r}, return_weights=True), so that the samples the fit "
            "down-weighted count as it counted them, or use method='bootstrap' (which "
            "refits robustly)"
        )
    model = "affine" if k == n_in + 1 else "linear"
    init = attrs.get("init", "least_squares")
    loss = attrs.get("loss") if loss == "auto" else loss
    rgb_space = rgb_space if rgb_space is not None else attrs.get("rgb_space", "sRGB")
    if illuminant is None and "lab_white_xy" in attrs:
        illuminant = tuple(float(v) for v in attrs["lab_white_xy"])
    standard = standard if standard is not None else attrs.get("standard", "reference")
    if saturation == "auto":
        saturation = tuple(attrs["saturation"]) if "saturation" in attrs else None
    lightness_power = attrs.get("lightness_power") if loss is not None else None
    if sample_dims is None:
        samples = tuple(d for d in reference.dims if d != dim)
    else:
        samples = (
            (sample_dims,)
            if isinstance(sample_dims, str)
            else tuple(cast(Iterable[Hashable], sample_dims))
        )
    missing = [d for d in samples if d not in measured.dims]
    if not samples or missing:
        raise ValueError(
            f"the sample dims {samples} must be dims of measured {tuple(measured.dims)}"
            + (f"; it lacks {tuple(missing)}" if missing else "")
        )
    reference = pair_by_label(
        reference, measured, samples, name="reference", target_name="measured"
    )
    if robust_weights is not None and method == "linear":
        lacking = [d for d in samples if d not in robust_weights.dims]
        if lacking:
            raise ValueError(
                f"robust_weights must have the sample dims {samples}; it lacks "
                f"{tuple(lacking)} (dims {tuple(robust_weights.dims)})"
            )
        robust_weights = pair_by_label(
            robust_weights, measured, samples, name="robust_weights", target_name="measured"
        )
        factor = robust_weights.fillna(0.0).astype(np.float64)
        if weights is None:
            weights = factor
        elif isinstance(weights, xr.DataArray):
            weights = weights * factor
        else:
            weights = xr.DataArray(np.asarray(weights, np.float64), dims=samples) * factor
    if colours is None:
        colours = measured
    elif not isinstance(colours, xr.DataArray) or colours.sizes.get(dim) != n_in:
        raise ValueError(
            f"colours must be a DataArray with dim {dim!r} of size {n_in} (camera colours, as "
            f"measured); got {type(colours).__name__}"
            + (f" with sizes {dict(colours.sizes)}" if isinstance(colours, xr.DataArray) else "")
        )

    if chartfit.wants_colour(reference, loss, reference_space):
        target, w, measure, _ = chartfit.prepare(
            measured,
            reference,
            weights,
            dim=dim,
            samples=samples,
            loss=loss,
            rgb_space=rgb_space,
            reference_space=reference_space,
            illuminant=illuminant,
            mask=mask,
            saturation=saturation,
            lightness_power=lightness_power,
            standard=standard,
        )
        out_space = colorimetry.Space("rgb", rgb_space=rgb_space)
    else:
        target, measure = reference, None
        w, _ = chartfit.masked_weights(
            measured, weights, samples=samples, dim=dim, mask=mask, saturation=saturation
        )
        has_space = reference_space is not None or reference.attrs.get("space") is not None
        out_space = colorimetry.space_of(
            reference if has_space else None,
            reference_space,
            rgb_space=rgb_space,
            argname="reference",
            dim=dim,
        )
    de_metric = colorimetry.metric(distance, rgb_space, illuminant, standard=standard)

    if method == "bootstrap":
        return _bootstrap(
            measured,
            reference,
            matrix,
            colours,
            weights=w,
            samples=samples,
            dim=dim,
            n=int(n),
            seed=seed,
            fit_kwargs={
                "model": model,
                "init": init,
                "loss": loss,
                "rgb_space": rgb_space,
                "reference_space": reference_space,
                "illuminant": illuminant,
                "standard": standard,
                "robust": robust,
                "robust_tuning": attrs.get("robust_tuning") if robust is not None else None,
                "saturation": None,  # already folded into w
                "lightness_power": None,  # likewise
            },
            out_space=out_space,
            distance=distance,
            colour_kwargs={"rgb_space": rgb_space, "illuminant": illuminant, "standard": standard},
        )

    if init == "white_balance" and loss is None:
        raise ValueError(
            "a white-balance matrix (matrix.attrs['init'] == 'white_balance', no loss) has "
            "no normal equations to take a covariance from: use method='bootstrap'"
        )
    closed_form = measure is None or measure.method == "linear_rgb"
    s = measured.rename({dim: _IN})
    d = target.rename({dim: _OUT})
    w = xr.ones_like(s.isel({_IN: 0}, drop=True), dtype=np.float64) if w is None else w
    if not isinstance(w, xr.DataArray):
        w = xr.DataArray(np.asarray(w, dtype=np.float64), dims=samples)
    m = matrix.rename({dim: _OUT})
    arrays = [s, d, w.astype(np.float64), m]
    if any(a.chunks is not None for a in arrays):
        whole = dict.fromkeys((*samples, _IN, _OUT, in_dim), -1)
        arrays = [a.chunk({x: v for x, v in whole.items() if x in a.dims}) for a in arrays]
    cov, dof = xr.apply_ufunc(
        _covariance_block,
        *arrays,
        input_core_dims=[[*samples, _IN], [*samples, _OUT], list(samples), [in_dim, _OUT]],
        output_core_dims=[[_P, _Q], []],
        kwargs={
            "n_samples": len(samples),
            "metric": None if closed_form else measure,
        },
        dask="parallelized",
        output_dtypes=[np.float64, np.float64],
        dask_gufunc_kwargs={"output_sizes": {_P: k * n_out, _Q: k * n_out}},
    )
    de = _propagate(cov, m, colours.rename({dim: _IN}), in_dim, de_metric, out_space)
    return _result(cov, de, matrix, dim, method="linear", distance=distance, dof=dof)


def _as_matrix(matrix, measured, reference, dim) -> xr.DataArray:
    in_dim = matrix_in_dim(dim)
    if isinstance(matrix, xr.Dataset):
        raise TypeError("matrix must be a DataArray or an ndarray, not a Dataset")
    if not isinstance(matrix, xr.DataArray):
        values = np.asarray(matrix, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(
                f"matrix as a plain array must have shape (k, n_out); got shape {values.shape}"
            )
        matrix = xr.DataArray(values, dims=(in_dim, dim))
    if in_dim not in matrix.dims or dim not in matrix.dims:
        raise ValueError(f"matrix must have dims {in_dim!r} and {dim!r}; got {tuple(matrix.dims)}")
    # Only the dims' own coords and the batch coords: fit's diagnostics are not needed.
    drop = [c for c in matrix.coords if c not in matrix.dims]
    return matrix.drop_vars(drop)


def _flat(a: np.ndarray, n_core: int, batch: tuple[int, ...]) -> np.ndarray:
    """Broadcast the leading (loop) axes to ``batch`` and flatten them."""
    core = a.shape[a.ndim - n_core :]
    return np.broadcast_to(a, (*batch, *core)).reshape(-1, *core)


def _covariance_block(s, d, w, m, *, n_samples: int, metric):
    """Covariance ``(..., P, P)`` and residual degrees of freedom ``(...)`` per element."""
    batch = np.broadcast_shapes(
        s.shape[: s.ndim - n_samples - 1],
        d.shape[: d.ndim - n_samples - 1],
        w.shape[: w.ndim - n_samples],
        m.shape[:-2],
    )
    s = _flat(np.asarray(s, np.float64), n_samples + 1, batch)
    d = _flat(np.asarray(d, np.float64), n_samples + 1, batch)
    w = _flat(np.asarray(w, np.float64), n_samples, batch)
    m = _flat(np.asarray(m, np.float64), 2, batch)
    n_el = s.shape[0]
    s, d, w = (
        s.reshape(n_el, -1, s.shape[-1]),
        d.reshape(n_el, -1, d.shape[-1]),
        w.reshape(n_el, -1),
    )
    k, n_out = m.shape[-2:]
    valid = np.isfinite(s).all(-1) & np.isfinite(d).all(-1) & np.isfinite(w) & (w > 0)
    w = np.where(valid, w, 0.0)
    x = np.where(valid[..., None], s, 0.0)
    if k == s.shape[-1] + 1:
        x = np.concatenate([x, np.ones((*x.shape[:2], 1))], axis=-1)
    d = np.where(valid[..., None], d, 0.0)
    n_used = valid.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric is None:
            cov, dof = _ls_covariance(x, d, w, m, n_used)
        else:
            cov, dof = _jacobian_covariance(x, d, w, m, n_used, valid, metric)
    bad = ~(dof > 0) | ~np.isfinite(m).all((-2, -1))
    cov[bad] = np.nan
    return cov.reshape(*batch, k * n_out, k * n_out), dof.reshape(batch).astype(np.float64)


def _ls_covariance(x, d, w, m, n_used):
    r"""``(X^T W X)^{-1} \otimes R^T W R / (N - k)``, coefficients in row-major order."""
    k, n_out = m.shape[-2:]
    a = np.einsum("bni,bn,bnj->bij", x, w, x)
    a_inv = _inv(a)
    r = d - x @ np.where(np.isfinite(m), m, 0.0)
    dof = n_used - k
    sigma = np.einsum("bni,bn,bnj->bij", r, w, r) / np.where(dof > 0, dof, np.nan)[:, None, None]
    cov = np.einsum("bik,bjl->bijkl", a_inv, sigma)
    return cov.reshape(-1, k * n_out, k * n_out), dof


def _jacobian_covariance(x, d, w, m, n_used, valid, metric):
    r"""Sandwich covariance of a colour-difference fit at its optimum ``m``.

    The fit's residuals are :math:`r_i = \sqrt{w_i}\,e(T(c_i), T(d_i))` (the ΔE component
    vectors of :mod:`xccm._refine`), :math:`c_i = x_i^+ M`. With :math:`J` their Jacobian
    in the coefficients and :math:`L_i = \partial e / \partial c_i`, a linear-RGB error
    :math:`\varepsilon_i` of covariance :math:`\Sigma / w_i` moves the optimum by
    :math:`-(J^TJ)^{-1} J^T r`, so
    :math:`\mathrm{Cov} = (J^TJ)^{-1} \big(\sum_i J_i^T L_i \Sigma L_i^T J_i\big) (J^TJ)^{-1}`,
    :math:`\hat\Sigma = \sum_i w_i (c_i - d_i)(c_i - d_i)^T / (N - k)`. For the linear-RGB
    distance (:math:`L_i = -I`) this is exactly the least-squares covariance.
    """
    k, n_out = m.shape[-2:]
    n_par = k * n_out
    n_el, n_smp = x.shape[:2]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = w / (w.sum(-1, keepdims=True) / np.maximum(n_used, 1)[:, None])
    sqrt_w = np.sqrt(w)
    target = metric.transform(d)
    p = np.where(np.isfinite(m), m, 0.0).reshape(-1, n_par)
    pred = x @ p.reshape(-1, k, n_out)

    def components(c):
        with np.errstate(invalid="ignore", divide="ignore"):
            e = metric.components(metric.transform(c), target)
        return np.where(valid[..., None], e, 0.0)

    # L_i = d e_i / d c_i by one-sided differences, per sample the side with the smaller
    # change: the hue term of CIE94/CMC/CIEDE2000 flips sign where the two hues are opposite
    # (its square does not), and a difference across that flip is no derivative.
    # The step is the residuals' RMS (the noise scale, at least 1e-6): a secant over the
    # noise rather than a tangent, as ΔE's hue term is not smooth next to neutral colours
    # (its gradient grows as 1/sqrt(chroma)), where a tangent overstates the sensitivity.
    lin = np.empty((n_el, n_smp, 3, n_out))
    base = components(pred)
    resid = np.where(valid[..., None], pred - d, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt((resid**2).sum(1) / np.maximum(n_used, 1)[:, None])
    scale = np.where(np.isfinite(scale), np.maximum(scale, 1e-6), 1e-6)[:, None, :]
    for j in range(n_out):
        step = np.zeros((n_el, 1, n_out))
        step[..., j] = scale[..., j]
        ahead = (components(pred + step) - base) / step[..., j : j + 1]
        behind = (base - components(pred - step)) / step[..., j : j + 1]
        smaller = np.linalg.norm(ahead, axis=-1) <= np.linalg.norm(behind, axis=-1)
        lin[..., j] = np.where(smaller[..., None], ahead, behind)
    # J_i = sqrt(w_i) L_i (x_i kron I): d r_i / d M[a, j] = sqrt(w_i) x_ia L_i[:, j]
    jac = np.einsum("bn,bna,bncj->bncaj", sqrt_w, x, lin).reshape(n_el, n_smp, 3, n_par)
    flat = jac.reshape(n_el, n_smp * 3, n_par)
    bread = _inv(np.einsum("bnp,bnq->bpq", flat, flat))
    observed = np.einsum("bni,bn,bnj->bij", resid, w, resid)
    # E[observed] = T(Sigma), linear in Sigma: the residuals are the noise minus its
    # projection onto the fit (orthogonal in the ΔE metric, oblique in linear RGB), so
    # solve for Sigma instead of dividing by N - k (which only holds for least squares).
    x_op = np.einsum("bna,jl->bnjal", x, np.eye(n_out)).reshape(n_el, n_smp, n_out, n_par)
    gain = np.einsum("bpq,bnkq,bn,bnkj->bnpj", bread, jac, sqrt_w, lin)  # K_i (P x n_out)
    y = np.einsum("bnap,bnpc->bac", x_op, gain)  # sum_i X_i K_i
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_w = np.where(valid, 1 / w, 0.0)
    outer_x = np.einsum("zn,znap,zneq->zapeq", w, x_op, x_op)
    outer_k = np.einsum("zn,znpc,znqd->zpcqd", inv_w, gain, gain)
    eye = np.eye(n_out)
    t_map = (
        n_used[:, None, None, None, None] * np.einsum("ac,bd->abcd", eye, eye)[None]
        - np.einsum("xac,bd->xabcd", y, eye)
        - np.einsum("ac,xbd->xabcd", eye, y)
        + np.einsum("zapeq,zpcqd->zaecd", outer_x, outer_k)
    ).reshape(n_el, n_out**2, n_out**2)
    dof = np.trace(t_map, axis1=1, axis2=2) / n_out**2
    ok = (n_used > k) & np.isfinite(t_map).all((1, 2))
    sigma = np.full((n_el, n_out, n_out), np.nan)
    if ok.any():
        solved = np.linalg.solve(t_map[ok], observed[ok].reshape(-1, n_out**2, 1))
        sigma[ok] = solved.reshape(-1, n_out, n_out)
    sigma = (sigma + np.swapaxes(sigma, 1, 2)) / 2
    good = np.isfinite(sigma).all((1, 2))
    if good.any():  # the solve is unconstrained: keep the positive semi-definite part
        vals, vecs = np.linalg.eigh(sigma[good])
        sigma[good] = np.einsum("zij,zj,zkj->zik", vecs, np.maximum(vals, 0.0), vecs)
    proj = np.einsum("bncp,bncj->bnpj", jac, lin)  # J_i^T L_i
    meat = np.einsum("bnpi,bij,bnqj->bpq", proj, sigma, proj)
    return bread @ meat @ bread, np.where(ok, dof, np.nan)


def _inv(a: np.ndarray) -> np.ndarray:
    """Batched inverse; singular elements give NaN instead of an error."""
    out = np.full_like(a, np.nan)
    ok = np.isfinite(a).all((-2, -1))
    if ok.any():
        cond = np.full(a.shape[0], np.inf)
        cond[ok] = np.linalg.cond(a[ok])
        ok &= cond < 1 / np.finfo(np.float64).eps
        out[ok] = np.linalg.inv(a[ok])
    return out


def _propagate(cov, m, colours, in_dim, metric, space):
    """Predicted RMS ΔE of ``colours`` corrected by ``m`` under coefficient covariance ``cov``."""
    arrays = [cov, m, colours]
    if any(a.chunks is not None for a in arrays):
        whole = dict.fromkeys((_P, _Q, in_dim, _OUT, _IN), -1)
        arrays = [a.chunk({x: v for x, v in whole.items() if x in a.dims}) for a in arrays]
    return xr.apply_ufunc(
        _propagate_block,
        *arrays,
        input_core_dims=[[_P, _Q], [in_dim, _OUT], [_IN]],
        output_core_dims=[[]],
        kwargs={"metric": metric, "space": space},
        dask="parallelized",
        output_dtypes=[np.float64],
    )


def _propagate_block(cov, m, x, *, metric, space):
    k, n_out = m.shape[-2:]
    x = np.asarray(x, np.float64)
    if k == x.shape[-1] + 1:
        x = np.concatenate([x, np.ones((*x.shape[:-1], 1))], axis=-1)
    cov5 = cov.reshape(*cov.shape[:-2], k, n_out, k, n_out)
    c = np.einsum("...i,...ij->...j", x, m)
    cov_c = np.einsum("...i,...ijkl,...k->...jl", x, cov5, x)
    c, cov_c = np.broadcast_arrays(c[..., None], cov_c)
    c = c[..., 0]
    lab = _transform(metric, space, c)
    jac = np.empty((*c.shape, 3))
    for j in range(c.shape[-1]):
        step = np.zeros(c.shape[-1])
        step[j] = 1e-6
        up = metric.components(_transform(metric, space, c + step), lab)
        down = metric.components(_transform(metric, space, c - step), lab)
        jac[..., j] = (up - down) / 2e-6
    return np.sqrt(np.einsum("...ij,...jk,...ik->...", jac, cov_c, jac))


def _transform(metric, space, values):
    with np.errstate(invalid="ignore", divide="ignore"):
        return metric.transform_from(values, space, "Bradford")


def _param_coords(matrix: xr.DataArray, dim) -> tuple[np.ndarray, np.ndarray]:
    in_dim = matrix_in_dim(dim)
    rows = matrix[in_dim].values if in_dim in matrix.indexes else np.arange(matrix.sizes[in_dim])
    cols = matrix[dim].values if dim in matrix.indexes else np.arange(matrix.sizes[dim])
    return np.repeat(rows, len(cols)), np.tile(cols, len(rows))


def _result(cov, de, matrix, dim, *, method, distance, dof=None) -> xr.Dataset:
    in_dim = matrix_in_dim(dim)
    k, n_out = matrix.sizes[in_dim], matrix.sizes[dim]
    rows, cols = _param_coords(matrix, dim)
    cov = cov.rename({_P: PARAM, _Q: PARAM2}).assign_coords(
        param_in=(PARAM, rows),
        param_out=(PARAM, cols),
        param2_in=(PARAM2, rows),
        param2_out=(PARAM2, cols),
    )
    diag = xr.apply_ufunc(
        lambda a: np.sqrt(np.diagonal(a, axis1=-2, axis2=-1)).reshape(*a.shape[:-2], k, n_out),
        cov.drop_vars(["param_in", "param_out", "param2_in", "param2_out"]),
        input_core_dims=[[PARAM, PARAM2]],
        output_core_dims=[[in_dim, dim]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {in_dim: k, dim: n_out}},
    )
    diag = diag.assign_coords({c: matrix[c] for c in (in_dim, dim) if c in matrix.coords})
    colour_dims = [x for x in de.dims if x not in cov.dims]
    data: dict[str, Any] = {
        "covariance": cov,
        "standard_error": diag,
        "delta_e": de,
        "delta_e_rms": np.sqrt((de**2).mean(colour_dims)),
    }
    if dof is not None:
        data["dof"] = dof
    out = xr.Dataset(data)
    out.attrs = {"method": method, "distance": colorimetry.distance_name(distance)}
    return out


def _bootstrap(
    measured,
    reference,
    matrix,
    colours,
    *,
    weights,
    samples,
    dim,
    n,
    seed,
    fit_kwargs,
    out_space,
    distance,
    colour_kwargs,
):
    in_dim = matrix_in_dim(dim)
    shape = tuple(measured.sizes[d] for d in samples)
    total = int(np.prod(shape))
    counts = np.random.default_rng(seed).multinomial(total, np.full(total, 1 / total), size=n)
    coords = {d: measured[d].values for d in samples if d in measured.indexes}
    counts = xr.DataArray(
        counts.reshape(n, *shape).astype(np.float64), dims=("bootstrap", *samples), coords=coords
    )
    if weights is not None and not isinstance(weights, xr.DataArray):
        weights = xr.DataArray(np.asarray(weights, dtype=np.float64), dims=samples, coords=coords)
    w = counts if weights is None else weights * counts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientSamplesWarning)
        refits = fit(measured, reference, dim=dim, weights=w, sample_dims=samples, **fit_kwargs)
    refits = refits.drop_vars([c for c in refits.coords if c not in refits.dims])
    flat = refits.rename({dim: _OUT}).stack({_P: (in_dim, _OUT)}, create_index=False)
    flat = flat.transpose(..., "bootstrap", _P)
    ok = flat.notnull().all(_P)
    dev = (flat - flat.where(ok).mean("bootstrap")).where(ok, 0.0)
    count = ok.sum("bootstrap")
    cov = xr.dot(dev, dev.rename({_P: _Q}), dim="bootstrap") / (count - 1).where(count > 1)
    cov = cov.drop_vars([c for c in cov.coords if c not in cov.dims])
    # apply wants the image to have every batch dim of the matrix
    extra = {x: refits.sizes[x] for x in refits.dims if x not in (*colours.dims, in_dim)}
    wide = colours.expand_dims(extra)
    corrected = apply(wide, refits, dim=dim)
    fitted = apply(wide.isel(bootstrap=0, drop=True), matrix, dim=dim)
    de = colorimetry.delta_e(
        corrected,
        fitted,
        distance,
        dim=dim,
        sample_space=out_space,
        reference_space=out_space,
        **colour_kwargs,
    )
    de = np.sqrt((de**2).where(ok).mean("bootstrap"))
    return _result(cov, de, matrix, dim, method="bootstrap", distance=distance)
