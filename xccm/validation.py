"""Cross-validation of a fit: how well a matrix corrects the patches it was not fitted on.

A 3x3 matrix fitted on a 24-patch chart always looks better on those 24 patches than on the
colours of the scene it will correct: every extra unknown (an offset row, polynomial terms)
lowers the in-sample error whether or not it generalises. :func:`cross_validate` measures
both the in-sample error and the held-out error (each patch judged by a matrix fitted without
it), so that models can be compared on the error that counts.

All folds are solved in one batched :func:`xccm.fit`: ``measured`` gets a ``fold`` batch dim
in which each fold's held-out samples are NaN (and a fit leaves non-finite samples out), so
frames, folds and the in-sample fit are one vectorised solve, lazy for Dask-backed input.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable
from typing import Any, Literal

import numpy as np
import xarray as xr

from . import colorimetry
from .chartfit import report
from .fitting import fit

__all__ = ["cross_validate"]

FOLD = "fold"
VALIDATION = "validation"
HELD_OUT_FOLD = "held_out_fold"
#: Losses that are colour differences: the default metric of a fit with one of them.
_COLOUR_DIFFERENCES = ("cie76", "cie94", "cie94_textiles", "ciede2000", "cmc", "cmc_2to1")
#: What :func:`report` needs to measure a colour difference as the fit measured it.
_REPORT_KWARGS = ("rgb_space", "reference_space", "illuminant", "standard")


def cross_validate(
    measured: xr.DataArray | np.ndarray,
    reference: xr.DataArray | np.ndarray,
    *,
    folds: Literal["leave_one_out"] | int = "leave_one_out",
    dim: Hashable = "channel",
    sample_dims: Hashable | Iterable[Hashable] | None = None,
    metric: str | None = None,
    seed: int = 0,
    **fit_kwargs: Any,
) -> xr.Dataset:
    r"""Held-out and in-sample colour errors of a fit, per sample and per batch element.

    The samples (patches) are split into folds; for each fold a matrix is fitted on the
    other samples (with :func:`xccm.fit` and ``fit_kwargs``) and the fold's samples are
    corrected by it and compared with ``reference``: each sample's *held-out* error. The
    matrix fitted on every sample gives the *in-sample* error. The in-sample error is what
    a fit reports about itself and shrinks with every unknown a model adds; the held-out
    error estimates the error on colours the chart does not contain, and is the one to
    choose a model by.

    Every fold, every batch element (frame) and the in-sample fit are solved in one batched
    fit (each fold a batch element whose held-out samples are left out), then each fold's
    matrix is applied to its own held-out samples. Nothing is computed for Dask-backed input.

    Parameters
    ----------
    measured, reference : DataArray or ndarray
        As for :func:`xccm.fit`. Plain arrays have the channel axis last, the samples on the
        axis before it (``"patch"``) and leading batch axes (``axis_0``...); a plain
        ``reference`` is linear ``rgb_space`` unless ``reference_space=`` says otherwise.
    folds : "leave_one_out" or int, default "leave_one_out"
        ``"leave_one_out"``: one fold per sample (each sample's matrix is fitted on all the
        others; one fit per sample and batch element). An int ``k`` (2 to the number of
        samples): the samples are shuffled with ``seed`` and dealt into ``k`` folds of
        near-equal size; each sample is in exactly one fold.
    dim : hashable, default "channel"
        The channel dim.
    sample_dims : hashable or sequence of hashable, optional
        The dims the fit sums over, as for :func:`xccm.fit` (default: the dims of
        ``reference`` besides ``dim``). Folds are drawn over all of them together.
    metric : str, optional
        The colour difference to judge by (a method of :func:`xccm.delta_e`). Default: the
        fit's ``loss`` if it is a colour difference (``"ciede2000"``, ``"cie76"``,
        ``"cie94"``, ``"cie94_textiles"``, ``"cmc"``, ``"cmc_2to1"``), else
        ``"ciede2000"``, which needs colour-science (``pip install xccm[colour]``) and the
        reference's colour space (its ``attrs["space"]``, as :func:`xccm.chart` sets it,
        or ``reference_space=``; without either, linear ``rgb_space``). It is measured as the
        fit measures its loss, with the ``rgb_space``, ``reference_space``, ``illuminant``
        and ``standard`` given in ``fit_kwargs``.
    seed : int, default 0
        Seed of the shuffle that deals the samples into ``k`` folds (unused for
        leave-one-out). The same seed gives the same folds.
    **fit_kwargs
        Passed to :func:`xccm.fit`: ``model``, ``loss``, ``weights``, ``mask``,
        ``saturation``, ``min_samples``, ``robust``... (not ``return_weights``). Each fold
        follows the fit's rules: a fold that leaves a batch element fewer valid samples than
        it needs (or than ``min_samples``) gets a NaN matrix, with the fit's
        :class:`xccm.InsufficientSamplesWarning`, and so NaN held-out errors.

    Returns
    -------
    Dataset
        :func:`xccm.report`'s layout with a leading dim ``validation``
        (``["in_sample", "held_out"]``): ``delta_e`` (``validation``, batch dims, sample
        dims), and over ``validation`` and the batch dims ``mean``, ``median``, ``p90``,
        ``max`` and ``loss`` (:math:`\sqrt{\sum_i w_i \Delta E_i^2 / N}`, with ``weights``
        if given). ``cv.sel(validation="held_out")`` is a report of the held-out errors.
        The statistics are over the samples the fit could use (finite, unmasked,
        unsaturated, positive weight; robust weights do not enter them); ``delta_e`` is
        given for every sample. Also ``matrix`` (the in-sample fit, as :func:`xccm.fit`
        returns it) and ``fold_matrix`` (dim ``fold`` first: the matrix fitted without each
        fold), and the coord ``held_out_fold`` (over the sample dims: the fold each sample
        is held out in). ``attrs``: ``folds``, ``n_folds``, ``seed`` (k folds only),
        ``metric``, ``model``, ``fit_kwargs`` (the keyword arguments as text) and the
        report's attrs. Dask-backed input gives Dask-backed variables.

    Raises
    ------
    ValueError
        On a bad ``folds`` (not ``"leave_one_out"``, an int below 2 or above the number of
        samples), a bad ``metric``, an input that already has a ``fold`` or ``validation``
        dim, ``return_weights=``, or anything :func:`xccm.fit` rejects.
    TypeError
        If ``folds`` or ``seed`` is of the wrong type, or ``measured`` is a Dataset.

    Examples
    --------
    >>> import numpy as np, xarray as xr, xccm
    >>> ref = xccm.chart()
    >>> rng = np.random.default_rng(0)
    >>> mix = xr.DataArray([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.0, 0.1, 0.9]],
    ...                    dims=("channel", "out"))
    >>> camera = (ref @ mix).rename(out="channel").assign_coords(channel=["R", "G", "B"])
    >>> camera = camera + rng.normal(0, 0.005, camera.shape)
    >>> cv = xccm.cross_validate(camera, ref, model="affine")
    >>> cv["mean"].dims, cv["delta_e"].dims
    (('validation',), ('validation', 'patch'))
    >>> bool(cv["mean"].sel(validation="held_out") > cv["mean"].sel(validation="in_sample"))
    True
    """
    if isinstance(measured, xr.Dataset):
        raise TypeError(
            "measured must be a DataArray or an array, not a Dataset: cross-validate one "
            "variable, e.g. cross_validate(ds['patches'], reference)"
        )
    if "return_weights" in fit_kwargs:
        raise ValueError(
            "cross_validate takes no return_weights=: it returns a Dataset of errors (and the "
            "matrices); call xccm.fit(..., return_weights=True) for the weights"
        )
    if not isinstance(measured, xr.DataArray):
        measured, reference = _label_arrays(measured, reference, dim)
    elif not isinstance(reference, xr.DataArray):
        raise TypeError(
            "reference must be a DataArray when measured is one (its sample dims pair them); "
            f"got {type(reference).__name__}"
        )
    for argname, value in (("measured", measured), ("reference", reference)):
        _check_free_dims(argname, value)
    for argname in ("weights", "mask"):
        given = fit_kwargs.get(argname)
        if isinstance(given, xr.DataArray):
            _check_free_dims(argname, given)
    samples = _samples(measured, reference, dim, sample_dims)
    shape = tuple(measured.sizes[d] for d in samples)
    n_samples = math.prod(shape)
    n_folds = number_of_folds(folds, n_samples)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int; got {type(seed).__name__} {seed!r}")
    metric = _metric(metric, fit_kwargs.get("loss"))

    # Which fold each sample is held out in, over the sample dims (C order).
    assignment: np.ndarray
    if folds == "leave_one_out":
        assignment = np.arange(n_samples)
    else:
        order = np.random.default_rng(int(seed)).permutation(n_samples)
        assignment = np.empty(n_samples, dtype=np.int64)
        assignment[order] = np.arange(n_samples) % n_folds
    assignment = assignment.reshape(shape)
    sample_coords = {
        name: coord
        for name, coord in measured.coords.items()
        if coord.dims and set(coord.dims) <= set(samples)
    }
    held_out_fold = xr.DataArray(assignment, dims=samples, coords=sample_coords)

    # One batch element per fold (its held-out samples NaN) plus one with every sample.
    folds_axis = np.arange(n_folds + 1).reshape(-1, *(1,) * len(shape))
    keep = xr.DataArray(folds_axis != assignment, dims=(FOLD, *samples), coords=sample_coords)
    folded = measured.expand_dims({FOLD: n_folds + 1}).where(keep)
    if measured.chunks is not None:
        folded = folded.chunk({FOLD: -1})
    folded.attrs = measured.attrs
    matrices, used = fit(
        folded,
        reference,
        dim=dim,
        sample_dims=sample_dims,
        return_weights=True,
        **fit_kwargs,
    )
    matrices = matrices.assign_coords({FOLD: np.arange(n_folds + 1)})
    in_sample = matrices.isel({FOLD: n_folds}).drop_vars(FOLD)
    fold_matrix = matrices.isel({FOLD: slice(0, n_folds)})
    # Each sample's held-out matrix: its fold's, gathered over the sample dims.
    per_sample = fold_matrix.isel({FOLD: held_out_fold}).drop_vars(FOLD, errors="ignore")
    both = xr.concat(
        [in_sample.expand_dims({VALIDATION: 1}), per_sample.expand_dims({VALIDATION: 1})],
        dim=VALIDATION,
        coords="minimal",
        compat="override",
    )
    both = both.assign_coords({VALIDATION: ["in_sample", "held_out"]})

    # The statistics count the samples the (in-sample) fit could use, with the user's weights.
    usable = used.isel({FOLD: n_folds}, drop=True).notnull()
    summary_weights = usable.astype(np.float64)
    weights = fit_kwargs.get("weights")
    if weights is not None:
        summary_weights = summary_weights * _sample_weights(weights, measured, samples)
    report_kwargs = {k: fit_kwargs[k] for k in _REPORT_KWARGS if k in fit_kwargs}
    if "reference_space" not in in_sample.attrs:  # not converted: the matrix maps into its space
        report_kwargs["sample_space"] = fit_kwargs.get("reference_space") or reference.attrs.get(
            "space"
        )
    with warnings.catch_warnings():
        # A batch element with no usable sample has NaN statistics, as documented.
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        result = report(
            measured.expand_dims({VALIDATION: 2}),
            reference,
            both,
            metric,
            dim=dim,
            sample_dims=samples,
            weights=summary_weights,
            **report_kwargs,
        )
    result = result.assign_coords({VALIDATION: ["in_sample", "held_out"]})
    batch = [d for d in measured.dims if d not in (*samples, dim)]
    result["delta_e"] = result["delta_e"].transpose(VALIDATION, *batch, *samples)
    for name in ("mean", "median", "p90", "max", "loss"):
        result[name] = result[name].transpose(VALIDATION, *batch)
    result["matrix"] = _prefixed(in_sample, "fit_")
    result["fold_matrix"] = _prefixed(fold_matrix, "fold_fit_")
    result = result.assign_coords({HELD_OUT_FOLD: held_out_fold})
    result.attrs.update(
        folds=folds if folds == "leave_one_out" else int(n_folds),
        n_folds=int(n_folds),
        metric=metric,
        model=in_sample.attrs.get("model", fit_kwargs.get("model", "linear")),
        fit_kwargs=_describe(fit_kwargs),
    )
    if folds != "leave_one_out":
        result.attrs["seed"] = int(seed)
    return result


def _check_free_dims(argname: str, value: xr.DataArray) -> None:
    """Refuse an input that already has a dim cross_validate adds."""
    for taken in (FOLD, VALIDATION):
        if taken in value.dims:
            raise ValueError(
                f"{argname} already has a dim {taken!r} (size {value.sizes[taken]}), which "
                f"cross_validate adds (one batch element per fold; in-sample vs held-out): "
                f"rename it, e.g. {argname}.rename({taken}='{taken}_')"
            )


def _samples(measured: xr.DataArray, reference: xr.DataArray, dim, sample_dims) -> tuple:
    """Return the sample dims, as :func:`xccm.fit` takes them (fit checks the details)."""
    if sample_dims is None:
        names = tuple(d for d in reference.dims if d != dim)
    elif isinstance(sample_dims, str) or not isinstance(sample_dims, Iterable):
        names = (sample_dims,)
    else:
        names = tuple(sample_dims)
    missing = [d for d in names if d not in measured.dims]
    if not names or missing:
        raise ValueError(
            f"sample_dims must name dims of measured besides {dim!r}; got {names or 'none'} "
            f"for measured with dims {tuple(measured.dims)}"
        )
    return names


def number_of_folds(folds: Any, n_samples: int) -> int:
    """Check :func:`cross_validate`'s ``folds`` for ``n_samples`` samples; return the count.

    Examples
    --------
    >>> number_of_folds("leave_one_out", 24), number_of_folds(5, 24)
    (24, 5)
    """
    if isinstance(folds, str):
        if folds != "leave_one_out":
            raise ValueError(
                f"folds must be 'leave_one_out' or an int number of folds (2 to the number of "
                f"samples, {n_samples}); got {folds!r}"
            )
        if n_samples < 2:
            raise ValueError(
                f"folds='leave_one_out' needs at least 2 samples to hold one out; got {n_samples}"
            )
        return n_samples
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer):
        raise TypeError(
            f"folds must be 'leave_one_out' or an int; got {type(folds).__name__} {folds!r}"
        )
    if not 2 <= folds <= n_samples:
        raise ValueError(
            f"folds must be between 2 and the number of samples ({n_samples}) to hold each "
            f"fold out of a fit on the others; got folds={int(folds)}"
        )
    return int(folds)


def _metric(metric: str | None, loss: str | None) -> str:
    if metric is not None:
        return colorimetry.distance_name(metric, "metric")
    if loss is not None:
        name = colorimetry.distance_name(loss, "loss")
        if name in _COLOUR_DIFFERENCES:
            return name
    return "ciede2000"


def _sample_weights(weights, measured: xr.DataArray, samples: tuple) -> xr.DataArray:
    """Return the user's weights as a DataArray: labelled as given, arrays by position."""
    if isinstance(weights, xr.DataArray):
        return weights.fillna(0).astype(np.float64)
    values = np.asarray(weights, dtype=np.float64)
    coords = {
        name: c for name, c in measured.coords.items() if c.dims and set(c.dims) <= set(samples)
    }
    return xr.DataArray(np.nan_to_num(values), dims=samples, coords=coords)


def _label_arrays(measured, reference, dim: Hashable) -> tuple[xr.DataArray, xr.DataArray]:
    """Label plain arrays (channel axis last, samples before it, batch axes leading)."""
    values = np.asarray(measured)
    if isinstance(reference, xr.DataArray):
        reference = reference.transpose(..., dim)
        samples = tuple(reference.dims[:-1])
        coords = {k: c for k, c in reference.coords.items() if set(c.dims) <= set(samples)}
    else:
        reference = np.asarray(reference)
        samples, coords = ("patch",), {}
    n_batch = values.ndim - 1 - len(samples)
    if n_batch < 0:
        raise ValueError(
            f"measured as a plain array must have shape (..., n_samples, n_channels), channel "
            f"axis last; got shape {values.shape}"
        )
    names = tuple(f"axis_{i}" for i in range(n_batch))
    labelled = xr.DataArray(values, dims=(*names, *samples, dim), coords=coords)
    if not isinstance(reference, xr.DataArray):
        if reference.ndim < 2 or reference.ndim > labelled.ndim:
            raise ValueError(
                "reference as a plain array must have shape (..., n_samples, n_channels), "
                f"channel axis last; got shape {reference.shape}"
            )
        reference = xr.DataArray(reference, dims=labelled.dims[labelled.ndim - reference.ndim :])
    return labelled, reference


def _prefixed(matrix: xr.DataArray, prefix: str) -> xr.DataArray:
    """Return the matrix with its diagnostics (``loss``, ``converged``...) renamed."""
    names = [c for c in matrix.coords if c not in matrix.dims]
    return matrix.rename({c: f"{prefix}{c}" for c in names})


def _describe(kwargs: dict[str, Any]) -> str:
    """Return the fit's keyword arguments as text (arrays by their shape), for attrs."""
    parts = []
    for key in sorted(kwargs):
        value = kwargs[key]
        if isinstance(value, xr.DataArray):
            text = f"<DataArray {dict(value.sizes)}>"
        elif isinstance(value, np.ndarray):
            text = f"<array shape {value.shape}>"
        else:
            text = repr(value)
        parts.append(f"{key}={text}")
    return ", ".join(parts)
