"""Fitting to a colour chart: colour-difference losses, masks and weights, and the report.

:func:`xccm.fit` (:mod:`xccm.fitting`) calls into this module when given ``loss=`` (or a
CIE L*a*b* reference): :func:`prepare` converts the reference and folds masks into the
weights, :func:`refine_matrix` minimises the loss from the closed-form matrix;
:func:`report` judges any matrix against a chart. The optimiser is in :mod:`xccm._refine`,
the colour maths in :mod:`xccm.colorimetry`.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any, cast

import numpy as np
import xarray as xr

from . import _refine, colorimetry, linearize
from ._kernels import InsufficientSamplesWarning, outside_xccm
from ._labels import (
    align_by_label,
    as_dataarray,
    asarray,
    borrow_labels,
    dim_names,
    match_labels,
    sample_array,
    wrap,
)
from .core import (
    IN_DIM,
    OUT_DIM,
    ROBUST_DIAGNOSTICS,
    FitProblem,
    apply,
    batch_chunks,
    matrix_in_dim,
)
from .weights import lightness_weights

__all__ = ["report"]

DIAGNOSTICS = ("loss", "start_loss", "iterations", "converged")


def wants_colour(reference: xr.DataArray, loss, reference_space) -> bool:
    """Whether :func:`xccm.fit` must convert ``reference``: a loss is given, or it is Lab."""
    if loss is not None:
        return True
    space = reference_space if reference_space is not None else reference.attrs.get("space")
    return colorimetry.space_kind(space) == "lab"


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
    mask: xr.DataArray | np.ndarray | None,
    saturation: tuple[float, float] | None,
    lightness_power: float | None,
    standard: colorimetry.Standard = "reference",
) -> tuple[xr.DataArray, Any, colorimetry.Metric, dict[str, Any]]:
    """Return the reference in linear ``rgb_space``, the weights, the metric and attrs.

    Masks and weights given as DataArrays are paired with the samples by label: the same
    labels in another order are put in ``measured``'s order (other labels are an error that
    lists them), and they are multiplied as DataArrays, so a weight never moves to another
    patch after masking. Plain arrays (shaped like the sample dims) have no labels and are
    paired by position. When the saturation range leaves too few samples of NumPy-backed
    data whose values reach well above 1 (0-255 or 0-65535 data), the error says so.
    """
    if loss is not None:
        loss = colorimetry.distance_name(loss, "loss")
        if reference_space is None and reference.attrs.get("space") is None:
            raise ValueError(
                f"loss={loss!r} compares colours, but reference does not say which space its "
                "values are in (attrs['space'] is missing or None); pass reference_space=, "
                "e.g. 'srgb-linear' (linear RGB of rgb_space), 'lab-d50' or 'xyz-d65', or use "
                "xccm.chart / xccm.chart_from_table, which set it. (Without loss=, fit maps "
                "onto the reference's own values and needs no space.)"
            )
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
    weights, factors, mask_attrs = _mask_factors(
        measured, weights, samples=samples, dim=dim, mask=mask, saturation=saturation
    )
    attrs.update(mask_attrs)
    if lightness_power is not None:
        if isinstance(lightness_power, bool) or not isinstance(
            lightness_power, int | float | np.integer | np.floating
        ):
            raise TypeError(
                f"lightness_power must be a real number (the k of w = L*^k); got "
                f"{type(lightness_power).__name__} {lightness_power!r}"
            )
        lightness = lightness_weights(
            converted, lightness_power, dim=dim, rgb_space=rgb_space, illuminant=illuminant
        )
        try:  # labelled like the reference: put in measured's order, as fit pairs them
            lightness = match_labels(lightness, measured, "reference")
        except ValueError:
            pass  # the reference has other labels than measured: fit itself says so
        factors.append(lightness)
        attrs["lightness_power"] = float(lightness_power)
    if factors:
        for f in factors:
            weights = f if weights is None else weights * f
        weights = weights.astype(np.float64)
    return converted, weights, measure, attrs


def masked_weights(
    measured: xr.DataArray,
    weights,
    *,
    samples: tuple[Hashable, ...],
    dim: Hashable,
    mask,
    saturation: tuple[float, float] | None,
) -> tuple[Any, dict[str, Any]]:
    """Fold ``mask=`` and ``saturation=`` into ``weights`` for any fit; return them and attrs.

    Masks and weights are paired with the samples as in :func:`prepare`.
    """
    weights, factors, attrs = _mask_factors(
        measured, weights, samples=samples, dim=dim, mask=mask, saturation=saturation
    )
    for f in factors:
        weights = f if weights is None else weights * f
    if factors:
        weights = weights.astype(np.float64)
    return weights, attrs


def _mask_factors(measured, weights, *, samples, dim, mask, saturation):
    """Weights paired with the samples, and the 0/1 factors of the saturation range and mask."""
    factors, attrs = [], {}
    if weights is not None:
        weights = _per_sample(weights, samples, measured, "weights")
    if saturation is not None:
        lo, hi = _saturation_range(saturation)
        low, high, curve = linearize.linear_bounds(measured, lo, hi, dim=dim)
        kept = ((measured >= low) & (measured <= high)).all(dim)
        _check_units(measured, kept, samples, (lo, hi), dim=dim)
        factors.append(kept)
        attrs["saturation"] = [float(lo), float(hi)]
        attrs["saturation_on"] = f"encoded values (before {curve})" if curve else "measured"
    if mask is not None:
        factors.append(_as_mask(mask, samples, measured, dim))
    return weights, factors, attrs


def _per_sample(values, samples, measured: xr.DataArray, argname: str) -> xr.DataArray:
    """Per-sample values as a DataArray: matched to ``measured`` by label, or by position."""
    if isinstance(values, xr.DataArray):
        return match_labels(values, measured, argname)
    return sample_array(values, samples, measured, argname)


def _as_mask(mask, samples, measured: xr.DataArray, dim: Hashable) -> xr.DataArray:
    """Check a ``mask=``: boolean, without the channel dim; return it paired with the samples."""
    dtype = getattr(mask, "dtype", None)
    if isinstance(mask, xr.DataArray | np.ndarray) and np.dtype(dtype) == np.bool_:
        mask = _per_sample(mask, samples, measured, "mask")
        if dim in mask.dims:
            raise ValueError(f"mask must not have the channel dim {dim!r}; dims {mask.dims}")
        return mask
    raise TypeError(
        "mask must be boolean (True = use the sample): a DataArray over the sample dims, "
        "paired with the samples by label, e.g. xccm.saturation_mask(measured), or an array "
        f"of the sample dims' shape, paired by position; got {type(mask).__name__}"
        + (f" of dtype {dtype}" if dtype is not None else "")
    )


def _saturation_range(saturation) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in saturation)
    except (TypeError, ValueError):
        raise ValueError(
            "saturation must be (low, high), None (keep every sample) or 'auto' ((0, 0.98) "
            f"with a loss); got {saturation!r}"
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"saturation range must be finite with low <= high; got ({lo}, {hi})")
    return lo, hi


#: Largest code values of integer images, with what to call them in messages.
_INTEGER_RANGES = ((255, "8-bit integers (0-255)"), (65535, "10- to 16-bit integers (0-65535)"))


def _check_units(
    measured: xr.DataArray,
    kept: xr.DataArray,
    samples: tuple[Hashable, ...],
    saturation: tuple[float, float],
    *,
    dim: Hashable,
) -> None:
    """Say so when the saturation range leaves too few samples because of measured's units.

    A range for [0, 1] data, such as the default (0, 0.98), leaves out every patch of
    0-255 or 0-65535 data. Checked for NumPy-backed input only: a Dask-backed ``measured``
    stays lazy (the fit then fails on compute for want of valid samples).
    """
    if measured.chunks is not None or kept.chunks is not None:
        return
    n_in = measured.sizes[dim]
    n_samples = int(np.prod([measured.sizes[d] for d in samples]))
    most = int(kept.sum([d for d in samples if d in kept.dims]).max()) if kept.size else 0
    if most > n_in:  # enough for any model (an affine one has n_in + 1 unknowns a column)
        return
    values = np.asarray(measured.values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = saturation
    peak = float(finite.max()) if finite.size else np.nan
    if not peak > max(2.0, 2 * hi):
        return
    scale, looks = next(
        ((s, f"look like {name}") for s, name in _INTEGER_RANGES if peak <= s),
        (None, "are not in [0, 1]"),
    )
    where = " in any batch element" if kept.ndim > len(samples) else ""
    fix = (
        f"divide measured by {scale} first (e.g. measured / {scale}, before linearising), "
        if scale == 255
        else "scale measured to [0, 1] first (divide by the largest code value, e.g. 65535 "
        "for 16-bit or 4095 for 12-bit data), "
        if scale is not None
        else "scale measured to [0, 1] first, "
    )
    raise ValueError(
        f"saturation=({lo:g}, {hi:g}) leaves {most} of the {n_samples} samples of measured"
        f"{where} to fit (too few), but measured's values reach {peak:g}: they {looks}. The "
        f"saturation range and the loss expect linear values in [0, 1]: {fix}or pass "
        "saturation=None, or a range in measured's units"
        + (f", e.g. saturation=(0, {hi * scale:g})" if scale is not None else "")
    )


def refine_matrix(
    start: xr.DataArray, problem: FitProblem, *, closed_form: bool
) -> tuple[xr.DataArray, xr.DataArray | None]:
    """Refine ``start`` on ``problem.metric``; return it with the diagnostics as coords.

    ``closed_form``: ``start`` already minimises the loss (least squares for ``"linear_rgb"``),
    so only its loss is evaluated, and it counts as converged. With ``problem.robust``, the
    loss is minimised with robust weights on the ΔE of each sample
    (:func:`_refine.refine_robust`): they are returned too (``(*batch, *samples)``, NaN for
    samples left out), with their per-batch diagnostics as coords; else the second item is
    None.
    """
    samples, dim, measure = problem.sample_dims, problem.dim, problem.metric
    in_dim = matrix_in_dim(dim)
    s, d, w = problem.measured, problem.reference, problem.weights
    extra, extra_core = [], []
    if problem.ridge and not closed_form:
        target = problem.ridge_matrix
        if target is None:
            target = xr.zeros_like(start)
        extra.append(target)
        extra_core.append([in_dim, dim])
    if problem.white is not None and not closed_form:
        t_w, d_w = problem.white
        extra += [t_w.rename({IN_DIM: in_dim}), d_w.rename({OUT_DIM: dim})]
        extra_core += [[in_dim], [dim]]
    lazy = any(a is not None and a.chunks is not None for a in (s, d, w, start, *extra))
    max_iter, robust = problem.max_iter, problem.robust
    iterations = 0 if closed_form else max_iter
    robust = None if closed_form else robust
    core_dims = [[*samples, IN_DIM], [*samples, OUT_DIM], list(samples), [in_dim, dim]]
    kwargs = {
        "metric": measure,
        "max_iter": iterations,
        "n_samples": len(samples),
        "closed_form": closed_form,
        "robust": robust,
        "robust_tuning": problem.robust_tuning,
        "min_samples": problem.min_samples,
        "ridge": problem.ridge if problem.ridge and not closed_form else None,
        "white": problem.white is not None and not closed_form,
        "parallel": not lazy,  # a Dask task keeps to its thread
    }
    batch = [x for x in s.dims if x not in (*samples, IN_DIM)]
    if (
        not lazy
        and not extra
        and robust is None
        and start.dims == (*batch, in_dim, dim)
        and all(
            a is None or [x for x in a.dims if x not in core] == batch
            for a, core in zip((d, w), core_dims[1:3], strict=True)
        )
    ):
        return _refine_in_memory(start, (s, d, w), core_dims, batch, kwargs), None
    if w is None:
        w = xr.ones_like(s.isel({IN_DIM: 0}, drop=True))
    if lazy:
        # Whole samples per block, and blocks of ~_SAMPLES_PER_TASK samples: patch
        # colours are tiny, and a task per frame would cost far more than its fit.
        per_element = np.prod([s.sizes[x] for x in samples], dtype=np.int64)
        sizes = batch_chunks(s, batch, int(per_element))
        chunks = {x: -1 for x in (*samples, IN_DIM, OUT_DIM, in_dim, dim)} | sizes
        s, d, w, start, *extra = (
            a.chunk({k: v for k, v in chunks.items() if k in a.dims})
            for a in (s, d, w, start, *extra)
        )
    extra_outputs = [list(samples), [], [], []] if robust is not None else []
    outputs = xr.apply_ufunc(
        _refine_block,
        s,
        d,
        w,
        start,
        *extra,
        input_core_dims=[*core_dims, *extra_core],
        output_core_dims=[[in_dim, dim], [], [], [], [], *extra_outputs],
        kwargs=kwargs,
        dask="parallelized",
        output_dtypes=[np.float64, np.float64, np.float64, np.int64, bool]
        + ([np.float64, np.float64, np.int64, bool] if robust is not None else []),
        keep_attrs=False,  # measured's attrs (its provenance) belong to no diagnostic
    )
    outputs, weight = list(outputs), None
    if robust is not None:
        weight = outputs.pop(5).transpose(*[x for x in s.dims if x != IN_DIM])
    if lazy:  # one chunk along the batch dims, as a least-squares fit gives (so that
        # m.interpolate_na("time") works): a few numbers per batch element
        outputs = [o.chunk(dict.fromkeys(o.dims, -1)) for o in outputs]
    matrix = outputs[0].assign_coords(start.coords)
    matrix = matrix.assign_coords(dict(zip(DIAGNOSTICS, outputs[1:5], strict=True)))
    if robust is not None:
        matrix = matrix.assign_coords(dict(zip(ROBUST_DIAGNOSTICS, outputs[5:], strict=True)))
    matrix.attrs = dict(start.attrs)
    matrix.name = start.name
    return matrix, weight


def _refine_in_memory(
    start: xr.DataArray,
    arrays: tuple[xr.DataArray | None, ...],
    core_dims: list[list[Hashable]],
    batch: list[Hashable],
    kwargs: dict[str, Any],
) -> xr.DataArray:
    """:func:`refine_matrix` on NumPy-backed inputs that share their batch dims, not robust.

    The same numbers and the same labelled result as through ``xr.apply_ufunc``, without
    its alignment and coordinate merging, which cost more than the fit of a frame or a few:
    the result takes ``start``'s dims and coords, which already hold every batch coord of
    the inputs (:func:`xccm.core.solve` collects them), as :func:`refine_matrix`'s
    ``assign_coords(start.coords)`` makes them win. No weights (None) weigh 1.
    """
    s, d, w, m0 = (
        None if a is None else a.variable.transpose(*batch, *core).values
        for a, core in zip((*arrays, start), core_dims, strict=True)
    )
    assert s is not None and d is not None and m0 is not None
    values = [s, d, np.ones(s.shape[:-1]) if w is None else w, m0]
    out = _refine_block(*values, **kwargs)
    coords: dict[Hashable, Any] = dict(start.coords)
    coords.update({k: (batch, v) for k, v in zip(DIAGNOSTICS, out[1:5], strict=True)})
    return xr.DataArray(
        out[0], dims=start.dims, coords=coords, name=start.name, attrs=dict(start.attrs)
    )


def _refine_block(
    s,
    d,
    w,
    m0,
    *extra,
    metric,
    max_iter,
    n_samples,
    closed_form,
    robust,
    robust_tuning,
    min_samples,
    ridge=None,
    white=False,
    parallel=False,
):
    batch = s.shape[: s.ndim - 1 - n_samples]
    n = int(np.prod(s.shape[len(batch) : -1], dtype=np.int64))
    rows = m0.shape[-2:]
    constraints: dict = {}
    if ridge:
        target, *extra = extra
        constraints["ridge"] = ridge
        constraints["ridge_target"] = np.broadcast_to(target, m0.shape).reshape(-1, *rows)
    if white:
        t_w, d_w = extra
        constraints["white"] = (
            np.broadcast_to(t_w, (*batch, rows[0])).reshape(-1, rows[0]),
            np.broadcast_to(d_w, (*batch, rows[1])).reshape(-1, rows[1]),
        )
    args = (
        s.reshape(-1, n, s.shape[-1]),
        d.reshape(-1, n, d.shape[-1]),
        w.reshape(-1, n),
        m0.reshape(-1, *m0.shape[-2:]),
        metric,
    )
    result: _refine.RefineResult
    if robust is None:
        result = _refine.in_blocks(
            _refine.refine, *args, parallel=parallel, max_iter=max_iter, **constraints
        )
    else:
        result = _refine.in_blocks(
            _refine.refine_robust,
            *args,
            parallel=parallel,
            method=robust,
            tuning=robust_tuning,
            max_iter=max_iter,
            min_samples=min_samples,
            **constraints,
        )
    converged = np.isfinite(result.loss) if closed_form else result.converged
    out = (
        result.matrix.reshape(m0.shape),
        result.loss.reshape(batch),
        result.start_loss.reshape(batch),
        result.iterations.reshape(batch),
        converged.reshape(batch),
    )
    if robust is None:
        return out
    n_few = int(np.count_nonzero(result.too_few))
    if n_few:
        needed = max(m0.shape[-2], min_samples)
        warnings.warn(
            f"{n_few} of {result.too_few.size} batch elements have fewer than {needed} "
            f"samples with a positive robust weight (robust={robust!r} rejected the "
            "others); their matrices are NaN",
            InsufficientSamplesWarning,
            stacklevel=outside_xccm(),
        )
    return (
        *out,
        result.weights.reshape(s.shape[:-1]),
        result.scale.reshape(batch),
        result.rounds.reshape(batch),
        result.robust_converged.reshape(batch),
    )


# ---------------------------------------------------------------------------------------------
# report


def report(
    measured: xr.DataArray | np.ndarray,
    reference: xr.DataArray | np.ndarray,
    matrix: xr.DataArray | np.ndarray,
    method: str = "ciede2000",
    *,
    dim: Hashable = "channel",
    sample_dims: Hashable | Sequence[Hashable] | None = None,
    weights: xr.DataArray | np.ndarray | None = None,
    rgb_space: str = "sRGB",
    reference_space: str | None = None,
    illuminant: str | Sequence[float] | None = None,
    standard: colorimetry.Standard = "reference",
    sample_space: str | None = None,
) -> xr.Dataset:
    r"""Judge a correction: per-patch colour differences and their summary statistics.

    The measured (linear) colours are corrected with ``matrix`` and compared with
    ``reference`` in ``method``, as :func:`xccm.fit` does with ``loss=method``. The report
    leaves out no sample by itself: to get a fitted matrix's ``m.loss`` back, pass the
    samples the fit used as ``weights`` (e.g. ``xccm.saturation_mask(measured)``, as
    ``fit`` leaves out saturated samples by default).

    Parameters
    ----------
    measured : DataArray or ndarray
        Linear camera colours ``(..., patch, channel)``, e.g. from :func:`xccm.linearize`.
        A plain array has its channel axis last, after the sample axes: it is labelled
        with the dims (and patch coords) of a DataArray ``reference``, else as
        ``(axis_0, ..., "patch", dim)``, and leading axes are batch axes (``axis_0``...).
    reference : DataArray or ndarray
        The chart, e.g. :func:`xccm.chart`; its space from ``reference_space`` or attrs.
        A plain array ``(..., n_patches, 3)`` (linear ``rgb_space`` unless
        ``reference_space`` says otherwise) needs a plain-array ``measured``.
    matrix : DataArray or ndarray
        Any matrix :func:`xccm.apply` accepts (per-frame matrices broadcast by name; with
        a plain-array ``measured``, leading axes match its leading batch axes).
    method : str, default "ciede2000"
        A distance of :func:`xccm.delta_e`.
    dim : hashable, default "channel"
    sample_dims : hashable or sequence, optional
        Dims the statistics reduce over; default the dims of ``reference`` besides ``dim``.
    weights : DataArray or ndarray, optional
        Per-sample weights for ``loss`` (rescaled to mean 1 over the samples used); zero
        or NaN weight leaves a sample out of every statistic (its ΔE is still reported).
        A DataArray is paired with the samples by label (the same labels in another order
        are reordered); a plain array, shaped like the sample dims, by position.
    rgb_space, reference_space, illuminant, standard : optional
        As for :func:`xccm.fit`.
    sample_space : str, optional
        The space ``matrix`` maps into; default linear ``rgb_space``, as :func:`xccm.fit`
        maps when it converts the reference (a ``loss``, or a Lab reference). A fit without
        a loss to an XYZ reference maps into XYZ: pass ``sample_space="xyz-d65"`` (say).

    Returns
    -------
    Dataset
        ``delta_e`` (batch dims and sample dims) and, over the batch dims, ``mean``,
        ``median``, ``p90`` (90th percentile), ``max`` and ``loss``
        (:math:`\sqrt{\sum_i w_i \Delta E_i^2 / N}`, OpenCV's ccm loss), with attrs
        recording the method, RGB space and Lab white. Lazy for Dask-backed input. Plain
        arrays give a Dataset too, over the dims they were labelled with.

    Raises
    ------
    TypeError
        If ``measured`` is a DataArray and ``reference`` is not.

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
    >>> rep = report(measured.values, ref, m.values)  # plain arrays, channel axis last
    >>> bool(rep["max"] < 1e-6), rep["delta_e"].dims
    (True, ('patch',))
    """
    if not isinstance(measured, xr.DataArray):
        measured, reference, matrix, weights, labelled_samples = _label_arrays(
            measured, reference, matrix, weights, dim=dim
        )
        if sample_dims is None:  # leading axes are batch axes, not samples
            sample_dims = labelled_samples
    reference = as_dataarray(reference, "reference", dim)
    if sample_dims is None:
        samples = tuple(x for x in reference.dims if x != dim)
    else:
        samples = dim_names(sample_dims, "sample_dims")
    # Paired by label, as fit pairs them: the same patches in another order are reordered.
    measured = borrow_labels(cast(xr.DataArray, measured), reference, samples)
    measured, reference = align_by_label([measured, reference], samples, skip=(dim,))
    corrected = apply(measured, matrix, dim=dim)
    corrected.attrs = {}
    space = colorimetry.space_of(
        reference, reference_space, rgb_space=rgb_space, argname="reference", dim=dim
    )
    found = colorimetry.delta_e(
        corrected,
        reference,
        method,
        dim=dim,
        sample_space=colorimetry.Space("rgb", rgb_space=rgb_space)
        if sample_space is None
        else sample_space,
        reference_space=space,
        rgb_space=rgb_space,
        illuminant=illuminant,
        standard=standard,
    )
    de = cast(xr.DataArray, found)  # DataArray in, DataArray out
    if weights is not None:
        weights = _per_sample(weights, samples, measured, "weights")
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


def _label_arrays(measured, reference, matrix, weights, *, dim: Hashable):
    """Label :func:`report`'s plain arrays (channel axis last) with dims, as fit does.

    The sample axes come just before the channel axis: a DataArray ``reference`` lends its
    dims and sample coords; else there is one, ``"patch"``. Leading axes are batch axes
    ``axis_0, ...``, aligned from the right between ``measured`` and ``reference``.
    """
    values = asarray(measured)
    if isinstance(reference, xr.DataArray):
        if dim not in reference.dims:
            raise ValueError(
                f"reference has no dim {dim!r}; its dims are {tuple(reference.dims)}. Use dim= "
                "to name the channel dim."
            )
        reference = reference.transpose(..., dim)
        samples = tuple(reference.dims[:-1])
        ref_batch = 0
    else:
        reference = asarray(reference)
        if reference.ndim < 2:
            raise ValueError(
                "reference as a plain array must have shape (..., n_patches, n_channels), "
                f"channel axis last; got shape {reference.shape}"
            )
        samples, ref_batch = ("patch",), reference.ndim - 2
    sample_shape = tuple(reference.shape[ref_batch : ref_batch + len(samples)])
    n_batch = values.ndim - 1 - len(samples)
    shown = ", ".join(str(n) for n in sample_shape)
    if n_batch < 0 or tuple(values.shape[n_batch:-1]) != sample_shape:
        raise ValueError(
            f"measured as a plain array must have shape (..., {shown}, n_channels): the "
            f"sample axes of reference {samples}, then the channel axis; got shape "
            f"{values.shape}"
        )
    n = max(n_batch, ref_batch)
    labelled = wrap(values, (*samples, dim), n)
    if isinstance(reference, xr.DataArray):
        coords = {k: c for k, c in reference.coords.items() if set(c.dims) <= set(samples)}
        labelled = labelled.assign_coords(coords)
    else:
        reference = wrap(reference, (*samples, dim), n)
    if not isinstance(matrix, xr.DataArray | type(None)):
        m = asarray(matrix)
        n_m = m.ndim - 2
        if 0 < n_m <= n_batch:  # leading batch axes, as xccm.apply takes them
            in_dim = matrix_in_dim(dim)
            matrix = xr.DataArray(m, dims=(*labelled.dims[:n_m], in_dim, dim))
    if weights is not None and not isinstance(weights, xr.DataArray):
        w = asarray(weights)
        lead = labelled.dims[:-1]
        if w.ndim > len(lead) or tuple(w.shape) != tuple(labelled.shape[-1 - w.ndim : -1]):
            raise ValueError(
                f"weights as a plain array must have the shape of measured's axes before the "
                f"channel axis, {sample_shape} or with batch axes (..., {shown}); got shape "
                f"{w.shape} for measured of shape {values.shape}"
            )
        weights = xr.DataArray(w, dims=lead[len(lead) - w.ndim :])
    return labelled, reference, matrix, weights, samples
