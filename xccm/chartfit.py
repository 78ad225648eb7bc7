"""Fitting to a colour chart: colour-difference losses, masks and weights, and the report.

:func:`xccm.fit` calls into this module when given ``loss=`` (or a CIE L*a*b* reference);
:func:`report` judges any matrix against a chart. The optimiser is in :mod:`xccm._refine`,
the colour maths in :mod:`xccm.colorimetry`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from . import _refine, colorimetry
from .core import _IN, _OUT, apply, matrix_in_dim

__all__ = ["report"]

DIAGNOSTICS = ("loss", "start_loss", "iterations", "converged")


def wants_colour(reference: xr.DataArray, loss, reference_space) -> bool:
    """Whether :func:`xccm.fit` must convert ``reference``: a loss is given, or it is Lab."""
    if loss is not None:
        return True
    space = reference_space if reference_space is not None else reference.attrs.get("space")
    return isinstance(space, str) and space.strip().lower().startswith("lab")


def prepare(
    measured: xr.DataArray,
    reference: xr.DataArray,
    weights,
    *,
    dim: Hashable,
    samples: tuple[Hashable, ...],
    loss: str | None,
    rgb_space: str,
    reference_space: str | None,
    illuminant,
    mask: xr.DataArray | None,
    saturation: tuple[float, float] | None,
    lightness_power: float | None,
    standard: colorimetry.Standard = "reference",
) -> tuple[xr.DataArray, Any, colorimetry.Metric, dict[str, Any]]:
    """Return the reference in linear ``rgb_space``, the weights, the metric and attrs.

    Masks and weights are multiplied as DataArrays, so each stays paired with its patch by
    label (never by position after masking).
    """
    if loss is not None:
        loss = colorimetry.distance_name(loss, "loss")
    measure = colorimetry.metric(loss or "linear_rgb", rgb_space, illuminant, standard=standard)
    space = colorimetry.space_of(
        reference, reference_space, rgb_space=rgb_space, argname="reference", dim=dim
    )
    rgb = colorimetry.Space("rgb", rgb_space=measure.rgb_space)
    converted = colorimetry.convert(reference, rgb, dim=dim, source=space)
    attrs: dict[str, Any] = {"reference_space": space.attrs()["space"]}
    if loss is not None:
        attrs.update(colorimetry.metric_attrs(measure))
        attrs["loss"] = attrs.pop("method")
    factors = []
    if weights is not None and not isinstance(weights, xr.DataArray):
        from .core import _sample_array

        weights = _sample_array(weights, samples, measured, "weights")
    if saturation is not None:
        from .weights import saturation_mask

        lo, hi = _saturation_range(saturation)
        factors.append(saturation_mask(measured, lo, hi, dim=dim))
        attrs["saturation"] = [float(lo), float(hi)]
    if mask is not None:
        if not isinstance(mask, xr.DataArray) or mask.dtype != bool:
            raise TypeError(
                "mask must be a boolean DataArray over the sample dims (True = use the "
                f"sample), e.g. xccm.saturation_mask(measured); got {type(mask).__name__}"
                + (f" of dtype {mask.dtype}" if hasattr(mask, "dtype") else "")
            )
        if dim in mask.dims:
            raise ValueError(f"mask must not have the channel dim {dim!r}; dims {mask.dims}")
        factors.append(mask)
    if lightness_power is not None:
        from .weights import lightness_weights

        factors.append(
            lightness_weights(
                converted, lightness_power, dim=dim, rgb_space=rgb_space, illuminant=illuminant
            )
        )
        attrs["lightness_power"] = float(lightness_power)
    if factors:
        for f in factors:
            _check_labels(f, measured)
            weights = f if weights is None else weights * f
        weights = weights.astype(np.float64)
    return converted, weights, measure, attrs


def _saturation_range(saturation) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in saturation)
    except (TypeError, ValueError):
        raise ValueError(
            "saturation must be (low, high), None (keep every sample) or 'auto' ((0, 0.98) "
            f"with a loss); got {saturation!r}"
        ) from None
    return lo, hi


def _check_labels(factor: xr.DataArray, measured: xr.DataArray) -> None:
    for d in factor.dims:
        if d in measured.indexes and d in factor.indexes:
            if not factor.indexes[d].equals(measured.indexes[d]):
                raise ValueError(
                    f"a mask or weight has other {d!r} labels than measured: "
                    f"{list(factor.indexes[d][:5])}... vs {list(measured.indexes[d][:5])}...; "
                    "patches are paired by label, so they must be the same"
                )


def refine_matrix(
    start: xr.DataArray,
    arrays: list[xr.DataArray],
    samples: tuple[Hashable, ...],
    measure: colorimetry.Metric,
    *,
    dim: Hashable,
    max_iter: int,
    closed_form: bool,
) -> xr.DataArray:
    """Refine ``start`` on the metric; return it with the diagnostics as coords.

    ``closed_form``: ``start`` already minimises the loss (least squares for ``"linear_rgb"``),
    so only its loss is evaluated, and it counts as converged.
    """
    in_dim = matrix_in_dim(dim)
    s, d = arrays[0], arrays[1]
    w = arrays[2] if len(arrays) > 2 else xr.ones_like(s.isel({_IN: 0}, drop=True))
    if any(a.chunks is not None for a in (s, d, w, start)):
        one = {x: -1 for x in (*samples, _IN, _OUT, in_dim, dim)}
        s, d, w, start = (
            a.chunk({k: v for k, v in one.items() if k in a.dims}) for a in (s, d, w, start)
        )
    iterations = 0 if closed_form else max_iter
    outputs = xr.apply_ufunc(
        _refine_block,
        s,
        d,
        w,
        start,
        input_core_dims=[[*samples, _IN], [*samples, _OUT], list(samples), [in_dim, dim]],
        output_core_dims=[[in_dim, dim], [], [], [], []],
        kwargs={
            "metric": measure,
            "max_iter": iterations,
            "n_samples": len(samples),
            "closed_form": closed_form,
        },
        dask="parallelized",
        output_dtypes=[np.float64, np.float64, np.float64, np.int64, bool],
    )
    matrix = outputs[0].assign_coords(start.coords)
    matrix = matrix.assign_coords(dict(zip(DIAGNOSTICS, outputs[1:], strict=True)))
    matrix.attrs = dict(start.attrs)
    matrix.name = start.name
    return matrix


def _refine_block(s, d, w, m0, *, metric, max_iter, n_samples, closed_form):
    batch = s.shape[: s.ndim - 1 - n_samples]
    n = int(np.prod(s.shape[len(batch) : -1], dtype=np.int64))
    result = _refine.refine(
        s.reshape(-1, n, s.shape[-1]),
        d.reshape(-1, n, d.shape[-1]),
        w.reshape(-1, n),
        m0.reshape(-1, *m0.shape[-2:]),
        metric,
        max_iter=max_iter,
    )
    converged = np.isfinite(result.loss) if closed_form else result.converged
    return (
        result.matrix.reshape(m0.shape),
        result.loss.reshape(batch),
        result.start_loss.reshape(batch),
        result.iterations.reshape(batch),
        converged.reshape(batch),
    )


# ---------------------------------------------------------------------------------------------
# report


def report(
    measured: xr.DataArray,
    reference: xr.DataArray,
    matrix: xr.DataArray | np.ndarray,
    method: str = "ciede2000",
    *,
    dim: Hashable = "channel",
    sample_dims: Hashable | Sequence[Hashable] | None = None,
    weights: xr.DataArray | None = None,
    rgb_space: str = "sRGB",
    reference_space: str | None = None,
    illuminant: str | Sequence[float] | None = None,
    standard: colorimetry.Standard = "reference",
) -> xr.Dataset:
    r"""Judge a correction: per-patch colour differences and their summary statistics.

    The measured (linear) colours are corrected with ``matrix`` and compared with
    ``reference`` in ``method``, as :func:`xccm.fit` does with ``loss=method``. The report
    leaves out no sample by itself: to get a fitted matrix's ``m.loss`` back, pass the
    samples the fit used as ``weights`` (e.g. ``xccm.saturation_mask(measured)``, as
    ``fit`` leaves out saturated samples by default).

    Parameters
    ----------
    measured : DataArray
        Linear camera colours ``(..., patch, channel)``, e.g. from :func:`xccm.linearize`.
    reference : DataArray
        The chart, e.g. :func:`xccm.chart`; its space from ``reference_space`` or attrs.
    matrix : DataArray or ndarray
        Any matrix :func:`xccm.apply` accepts (per-frame matrices broadcast by name).
    method : str, default "ciede2000"
        A distance of :func:`xccm.delta_e`.
    dim : hashable, default "channel"
    sample_dims : hashable or sequence, optional
        Dims the statistics reduce over; default the dims of ``reference`` besides ``dim``.
    weights : DataArray, optional
        Per-sample weights for ``loss`` (rescaled to mean 1 over the samples used); zero
        or NaN weight leaves a sample out of every statistic (its ΔE is still reported).
    rgb_space, reference_space, illuminant, standard : optional
        As for :func:`xccm.fit`.

    Returns
    -------
    Dataset
        ``delta_e`` (batch dims and sample dims) and, over the batch dims, ``mean``,
        ``median``, ``p90`` (90th percentile), ``max`` and ``loss``
        (:math:`\sqrt{\sum_i w_i \Delta E_i^2 / N}`, OpenCV's ccm loss), with attrs
        recording the method, RGB space and Lab white. Lazy for Dask-backed input.

    Examples
    --------
    >>> import numpy as np, xccm
    >>> ref = xccm.chart()
    >>> measured = ref @ xr.DataArray(np.diag([0.5, 0.6, 0.7]), dims=("channel", "c"))
    >>> measured = measured.rename(c="channel").assign_coords(channel=["R", "G", "B"])
    >>> m = xccm.fit(measured, ref)
    >>> rep = report(measured, ref, m)
    >>> bool(rep["max"] < 1e-6), rep["delta_e"].dims
    (True, ('patch',))
    """
    corrected = apply(measured, matrix, dim=dim)
    corrected.attrs = {}
    space = colorimetry.space_of(
        reference, reference_space, rgb_space=rgb_space, argname="reference", dim=dim
    )
    de = colorimetry.delta_e(
        corrected,
        reference,
        method,
        dim=dim,
        sample_space=colorimetry.Space("rgb", rgb_space=rgb_space),
        reference_space=space,
        rgb_space=rgb_space,
        illuminant=illuminant,
        standard=standard,
    )
    if sample_dims is None:
        samples = tuple(x for x in reference.dims if x != dim)
    else:
        samples = (sample_dims,) if isinstance(sample_dims, str) else tuple(sample_dims)
    w = xr.ones_like(de) if weights is None else weights.fillna(0).broadcast_like(de)
    used = (w > 0) & np.isfinite(de)
    w = w.where(used)
    w = w / w.mean(samples)
    kept = de.where(used)
    if kept.chunks is not None:
        kept = kept.chunk(dict.fromkeys(samples, -1))
    out = xr.Dataset(
        {
            "delta_e": de,
            "mean": kept.mean(samples),
            "median": kept.median(samples),
            "p90": kept.quantile(0.9, dim=samples).drop_vars("quantile"),
            "max": kept.max(samples),
            "loss": np.sqrt((w * kept**2).sum(samples) / used.sum(samples)),
        },
        attrs=de.attrs,
    )
    return out
