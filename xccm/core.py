"""Fit, apply and invert colour-correction matrices on labelled arrays.

This layer knows about dims, coords and laziness; the arithmetic lives in
:mod:`xccm._kernels`. Every function takes :class:`xarray.DataArray` objects (and
:class:`xarray.Dataset` where that makes sense) and also plain arrays with the channel
axis last ("numpy in, numpy out").
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import xarray as xr

from . import _kernels, models
from ._labels import (
    align_by_label,
    as_dataarray,
    asarray,
    axis_names,
    borrow_labels,
    channel_order,
    check_choice,
    check_data,
    check_integer,
    check_scale,
    dim_names,
    index_values,
    is_dask,
    pair_by_label,
    permutation,
    require_one_chunk,
    require_real,
    sample_array,
    set_index,
    some,
    wrap,
)

__all__ = ["Init", "Model", "Robust", "apply", "fit", "inverse", "invert"]

Model = Literal["linear", "affine"]
Init = Literal["least_squares", "white_balance"]
Robust = Literal["huber", "tukey"]
T_Image = TypeVar("T_Image", xr.DataArray, xr.Dataset, np.ndarray)

#: Dim names used inside apply_ufunc so that input and output channel dims (which may differ
#: in size) never clash with each other or with the user's dims: a fit's measured colours have
#: ``IN_DIM``, its reference ``OUT_DIM`` (see :class:`FitProblem`).
IN_DIM = "__xccm_in__"
OUT_DIM = "__xccm_out__"
_ROWS = "__xccm_rows__"
_STAT_ROWS = "__xccm_stat_rows__"
_STAT_COLS = "__xccm_stat_cols__"
_SAMPLE = "sample"
OFFSET = "offset"


def matrix_in_dim(dim: Hashable) -> str:
    """Name of a matrix's row (input channel) dim for channel dim ``dim``: ``f"{dim}_in"``."""
    return f"{dim}_in"


# ---------------------------------------------------------------------------------------------
# fit


def fit(
    measured: xr.DataArray | np.ndarray,
    reference: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = "channel",
    model: Model = "linear",
    init: Init = "least_squares",
    weights: xr.DataArray | np.ndarray | None = None,
    sample_dims: Hashable | Iterable[Hashable] | None = None,
    min_samples: int | None = None,
    loss: str | None = None,
    rgb_space: str = "sRGB",
    reference_space: str | None = None,
    illuminant: str | Iterable[float] | None = None,
    standard: Literal["reference", "sample"] = "reference",
    mask: xr.DataArray | None = None,
    saturation: tuple[float, float] | Literal["auto"] | None = "auto",
    lightness_power: float | None = None,
    max_iter: int = 200,
    robust: Robust | None = None,
    robust_tuning: float | None = None,
    return_weights: bool = False,
) -> xr.DataArray | np.ndarray | tuple[xr.DataArray, xr.DataArray] | tuple[np.ndarray, np.ndarray]:
    r"""Fit a colour-correction matrix mapping ``measured`` colours onto ``reference``.

    Solves, for every batch element, the weighted least-squares problem
    :math:`\min_M \sum_i w_i \lVert S^+_i M - D_i \rVert^2` with :math:`S^+ = S` (linear) or
    :math:`S^+ = [S, 1]` (affine), through the normal equations
    :math:`(S^{+T} W S^+) M = S^{+T} W D`, which are accumulated chunk by chunk so that
    Dask-backed samples of any size reduce in bounded memory. ``init="white_balance"`` gives
    instead :math:`\mathrm{diag}(\bar D / \bar S)` (weighted means) with a zero offset row.

    Parameters
    ----------
    measured : DataArray or ndarray
        Camera colours, with channel dim ``dim`` and the sample dims (patches or pixels).
        Dims that are neither ``dim`` nor sample dims are *batch* dims: each batch element
        (e.g. each frame of ``measured(time, patch, channel)``) gets its own matrix, all solved
        in one vectorised call. An ndarray has shape ``(*batch, n_samples, n_in)``.
    reference : DataArray or ndarray
        Target colours with the same sample dims (and coords) as ``measured``; its ``dim``
        may differ in size and coords (e.g. ``X, Y, Z``). An ndarray has shape
        ``(*batch, n_samples, n_out)``, its batch axes aligned from the right with
        ``measured``'s.
    dim : hashable, default "channel"
        The channel dim of ``measured`` and ``reference``.
    model : {"linear", "affine"}
        ``"linear"`` fits an ``(n_in, n_out)`` matrix; ``"affine"`` an ``(n_in + 1, n_out)``
        matrix whose last row is an offset.
    init : {"least_squares", "white_balance"}
        The closed-form solution to return (later refinements start from it).
    weights : DataArray or ndarray, optional
        Non-negative weight per sample (applied as :math:`\sqrt{w}` row scaling), over the
        sample dims and optionally batch dims. A DataArray is paired with the samples by
        label (the same labels in another order are reordered); an ndarray must have the
        shape of the sample dims and is paired by position. Samples with zero or NaN weight
        are left out; an infinite weight is an error. Boolean weights count as 1 (True)
        and 0 (False), as in :func:`xccm.report`. ``measured`` and ``reference`` are
        paired by label too.
    sample_dims : hashable or sequence of hashable, optional
        The dims summed over. Defaults to the dims of ``reference`` other than ``dim``.
        ``reference`` is broadcast over a sample dim it lacks (e.g.
        ``sample_dims=("time", "patch")`` pools every frame against one chart), but a
        reference with none of the sample dims, or lacking one while it varies over a batch
        dim (``sample_dims="time"`` with a ``(patch, channel)`` chart), is an error.
    min_samples : int, optional
        Fewest valid samples a batch element needs to be fitted; fewer gives a NaN matrix
        (with a warning). Use it to reject frames where the chart is partly occluded or many
        patches are masked, e.g. ``min_samples=18`` of 24 patches. The floor, and the default,
        is the number of unknowns per column.
    loss : str, optional
        Fit to a colour chart on a colour difference (needs colour-science and scipy, the
        ``colour`` extra): ``"ciede2000"``, ``"cie76"``, ``"cie94"``, ``"cie94_textiles"``,
        ``"cmc"``, ``"cmc_2to1"``, ``"rgb"`` (encoded RGB) or ``"linear_rgb"``. The
        reference is converted to linear ``rgb_space``; the ``init`` solution is the start,
        and the loss :math:`\sqrt{\sum_i w_i \Delta E_i^2 / N}` (OpenCV's ccm loss, weights
        rescaled to mean 1 over the ``N`` samples used) is minimised per batch element by
        Levenberg–Marquardt. ``"linear_rgb"`` is the closed-form weighted least squares.
        Without a loss, the plain least squares (or white balance) above.
    rgb_space : str, default "sRGB"
        The linear RGB space the matrix maps into (a short name such as ``"display-p3"``,
        a colour-science name or ``RGB_Colourspace``).
    reference_space : str, optional
        The reference's colour space if its ``attrs["space"]`` does not say (``"lab-d50"``,
        ``"xyz-d50"``, ``"srgb-linear"``...). A Lab reference is converted to linear
        ``rgb_space`` even without a loss.
    illuminant : str or (x, y), optional
        White of the Lab space ΔE is taken in: by default the RGB space's own (D65 for
        sRGB, as OpenCV does); ``"D50"`` for the ICC convention.
    standard : {"reference", "sample"}, default "reference"
        Which colour the asymmetric CIE94 and CMC weight by (OpenCV: ``"sample"``).
    mask : DataArray or ndarray of bool, optional
        Samples to use (True), with or without a loss, over the sample dims and optionally
        batch dims,
        e.g. :func:`xccm.saturation_mask`. A DataArray is paired with the samples by label;
        an ndarray, shaped like the sample dims, by position.
    saturation : (low, high) or None, default "auto"
        Samples with any ``measured`` channel outside ``[low, high]`` are left out (with
        or without a loss); ``"auto"`` is (0, 0.98), OpenCV's default, when a loss is
        given and no range otherwise. As in OpenCV, the range is on the camera values as
        encoded: for ``measured`` from :func:`xccm.linearize` it is mapped through the
        curve recorded in its attrs (``m.attrs["saturation_on"]`` says so).
    lightness_power : float, optional
        With a loss, weight each sample by the reference's ``L*`` to this power (OpenCV's
        ``weights_coeff``), times ``weights`` if given.
    max_iter : int, default 200
        Most Levenberg–Marquardt iterations per batch element (0: return the start, with
        its loss); with ``robust``, over all its reweighting rounds together.
    robust : {"huber", "tukey"}, optional
        Down-weight outlier samples per batch element (a glint, a leaf, a wet patch) by
        iteratively reweighted least squares. The residual of a sample is its colour error:
        the Euclidean norm :math:`\lVert S^+_i M - D_i \rVert` in the fit's output space for
        the least squares, its ΔE for a ``loss``. With :math:`u = r / \hat\sigma`, where
        :math:`\hat\sigma = \mathrm{median}_i\, r_i / 0.6745` (the MAD, re-estimated every
        round, per batch element), a sample weighs :math:`\min(1, c/u)` (``"huber"``,
        :math:`c = 1.345`) or :math:`(1 - (u/c)^2)^2` for :math:`u < c`, else 0 (``"tukey"``,
        the biweight, :math:`c = 4.685`): 95 % efficiency at normal errors. The least squares
        starts from a high-breakdown fit (least median of squares over 50 random subsets of
        the samples, then two least-trimmed-squares steps), so glare, the brightest colour
        on the chart, cannot pull the start onto itself; then at most 50 rounds reweight
        and refit, until no weight changes by more than 0.001. A ``loss`` fit starts from
        that robust least squares, and reweights on the ΔE between Levenberg–Marquardt
        solves (each solve a fixed weighted problem, from the last one's matrix). Tukey's
        weights reach 0, so it rejects gross outliers; Huber's never do: it bounds their
        influence, and a few far-out patches still move the fit. Use ``"tukey"`` for glare
        and occluders. ``weights``, ``mask`` and ``saturation`` multiply the robust
        weights, and ``min_samples`` counts the samples with a positive weight after
        reweighting: a frame whose chart is mostly covered gets a NaN matrix and the
        warning, not a wild fit. Each batch element's samples are taken in one block (a
        lazy fit regroups chunks of the sample dims). ``m.coords`` get, per batch element,
        ``robust_scale`` (:math:`\hat\sigma`), ``robust_rounds`` and ``robust_converged``;
        ``attrs`` the method and ``robust_tuning``.
    robust_tuning : float, optional
        The tuning constant :math:`c`, in units of :math:`\hat\sigma` (smaller rejects more).
    return_weights : bool, default False
        Return ``(matrix, weights)``: the final robust weight of every sample, dims
        ``(*batch_dims, *sample_dims)``, named ``"robust_weight"``, in [0, 1], NaN for a sample
        the fit left out (non-finite, masked, saturated or zero weight). The outlier flags
        are ``weights == 0`` for Tukey, ``weights < 0.5`` (say) for Huber. The fit is the one
        with ``weights`` times these (for the least squares, exactly:
        ``fit(..., weights=w * robust_weight.fillna(0))`` gives the same matrix). Without
        ``robust``, 1 for the samples used.

    Returns
    -------
    DataArray or ndarray
        The matrix, dims ``(*batch_dims, f"{dim}_in", dim)``, ``attrs["model"]`` and
        ``attrs["init"]`` set. Its column coords are ``reference``'s ``dim`` coords and its
        row coords ``measured``'s (plus ``"offset"`` for an affine model). Dask-backed input
        gives a Dask-backed matrix; nothing is computed. Small chunks of ``measured`` along
        the batch dims (one frame of patch colours a chunk) are grouped into blocks of about
        25 000 samples first, so the number of tasks does not grow with its chunks. An
        ndarray input gives an ndarray of shape ``(*batch, n_in[+1], n_out)``. With a loss,
        ``attrs`` also record how it was measured (``loss``, ``rgb_space``, ``lab_white_xy``,
        ``reference_space``, ``saturation``...) and coords over the batch dims hold, per
        matrix, the ``loss`` reached, the ``start_loss``, the ``iterations`` and whether it
        ``converged`` (coords, not attrs, because they are per batch element and lazy for Dask
        input). The provenance of the inputs is kept too: ``chart`` and ``chart_edition``
        from the reference's attrs (as :func:`xccm.chart` sets them), ``linearization`` from
        measured's (as :func:`xccm.linearize` sets it), where they are given. With
        ``return_weights=True``, a tuple ``(matrix, weights)`` (ndarrays for ndarray input).

    Warns
    -----
    InsufficientSamplesWarning
        If some, but not all, batch elements have fewer valid samples than unknowns per
        column (``n_in`` linear, ``n_in + 1`` affine, 1 for white balance) or than
        ``min_samples``, or a singular
        system: their matrices are NaN. A sample is valid when all its ``measured`` and
        ``reference`` channels are finite and its weight is positive.

    Raises
    ------
    ValueError
        If no batch element can be fitted, or on inconsistent dims, coords, shapes or
        weights. For Dask-backed input, errors that depend on values are raised on compute.
    TypeError
        If an input is not real numeric.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> true = np.array([[1.2, -0.1, 0.0], [-0.2, 1.1, -0.1], [0.0, -0.1, 1.3]])
    >>> s = rng.random((24, 3))
    >>> measured = xr.DataArray(s, dims=("patch", "channel"))
    >>> reference = xr.DataArray(s @ true, dims=("patch", "channel"))
    >>> m = fit(measured, reference)
    >>> m.dims, bool(np.allclose(m, true))
    (('channel_in', 'channel'), True)

    Fitting a chart on CIEDE2000 (needs colour-science):

    >>> import xccm
    >>> ref = xccm.chart(space="lab-d50")
    >>> camera = xccm.convert(ref, "rgb").clip(0, 1) @ xr.DataArray(
    ...     [[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.0, 0.1, 0.9]], dims=("channel", "out")
    ... )
    >>> camera = camera.rename(out="channel").assign_coords(channel=["R", "G", "B"])
    >>> m = fit(camera, ref, loss="ciede2000")
    >>> bool(m.loss < m.start_loss), bool(m.converged), m.attrs["loss"]
    (True, True, 'ciede2000')

    A robust fit, with a glint on one patch:

    >>> glare = camera.copy()
    >>> glare[5] = 0.97
    >>> m, w = fit(glare, ref, loss="ciede2000", robust="tukey", return_weights=True)
    >>> float(w[5]), bool(m.robust_converged)
    (0.0, True)
    """
    if isinstance(measured, xr.Dataset):
        raise TypeError(
            "measured must be a DataArray or an array, not a Dataset: fit one variable, "
            "e.g. fit(ds['patches'], reference)"
        )
    if not isinstance(measured, xr.DataArray):
        if loss is not None or lightness_power is not None:
            raise TypeError(
                "loss= and lightness_power= need DataArrays (the reference's colour "
                "space and the patches are read from labels); wrap measured and reference "
                "with xr.DataArray(..., dims=('patch', 'channel'))"
            )
        weights = _plain_mask_weights(measured, weights, mask, saturation)
        return _fit_arrays(
            measured,
            reference,
            dim,
            model,
            init,
            weights,
            min_samples,
            robust=robust,
            robust_tuning=robust_tuning,
            return_weights=return_weights,
        )
    check_choice("model", model, Model)
    robust_tuning = _check_robust(robust, robust_tuning, return_weights)
    check_choice("init", init, Init)
    if min_samples is not None:
        min_samples = check_integer(min_samples, "min_samples")
    check_data(measured, "measured", dim)
    reference = as_dataarray(reference, "reference", dim)
    other = [d for d in reference.dims if d not in measured.dims]
    if dim not in reference.dims and len(other) == 1:
        raise ValueError(
            f"reference has no dim {dim!r} but {other[0]!r}; measured, reference and the "
            f"matrix share one channel dim name (the output channels are labelled by "
            f"reference's coords): rename it, e.g. reference.rename({{{other[0]!r}: {dim!r}}})"
        )
    check_data(reference, "reference", dim)
    _check_alpha(measured, reference, dim)
    colour_attrs, measure = {}, None
    max_iter = check_integer(max_iter, "max_iter")
    from . import chartfit  # imports core: import here, not at the top

    provenance = _provenance(measured, reference)
    samples = _sample_dims(measured, reference, dim, sample_dims)  # a conversion keeps dims
    _check_reference_dims(reference, samples, dim, given=sample_dims is not None)
    measured = borrow_labels(measured, reference, samples)
    measured = _grouped(measured, [d for d in measured.dims if d not in (*samples, dim)], samples)
    if chartfit.wants_colour(reference, loss, reference_space):
        if saturation == "auto":
            saturation = (0.0, 0.98) if loss is not None else None
        reference, weights, measure, colour_attrs = chartfit.prepare(
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
    elif lightness_power is not None:
        raise ValueError(
            "lightness_power= weights the samples by the reference's L*, which needs its "
            "colour space: pass loss= (e.g. loss='linear_rgb' for least squares) and the "
            "reference's space (attrs['space'] or reference_space=)"
        )
    elif mask is not None or saturation not in ("auto", None):
        weights, colour_attrs = chartfit.masked_weights(
            measured,
            weights,
            samples=samples,
            dim=dim,
            mask=mask,
            saturation=None if saturation == "auto" else saturation,
        )

    n_in, n_out = measured.sizes[dim], reference.sizes[dim]
    s = measured.rename({dim: IN_DIM})
    d = reference.rename({dim: OUT_DIM})
    arrays = [s, d]
    if weights is not None:
        arrays.append(_as_weights(weights, samples, measured, dim))
    arrays = align_by_label(arrays, samples, skip=(IN_DIM, OUT_DIM))
    if any(a.chunks is not None for a in arrays):
        # Broadcast in Dask, not NumPy: a NumPy view broadcast over many frames would be
        # materialised when the graph is serialised.
        arrays = [a if a.chunks is not None else a.chunk() for a in arrays]
    arrays = xr.broadcast(*arrays, exclude=[IN_DIM, OUT_DIM])
    batch = tuple(x for x in arrays[0].dims if x not in (*samples, IN_DIM))
    order = (*batch, *samples)
    arrays = [a.transpose(*order, *[c for c in (IN_DIM, OUT_DIM) if c in a.dims]) for a in arrays]
    if arrays[0].chunks is not None:  # every input in measured's blocks: none finer
        sizes = _grouped(arrays[0], batch, samples).chunksizes
        arrays = [a.chunk({x: sizes[x] for x in batch if x in a.dims}) for a in arrays]

    fit_arrays, robust_weight, robust_coords = arrays, None, {}
    if robust is not None:
        robust_weight, robust_coords = _robust_weights(
            arrays,
            batch,
            samples,
            model=model,
            init=init,
            min_samples=int(min_samples or 0),
            method=robust,
            tuning=robust_tuning,
        )
        # A sample left out of the robust fit (NaN weight) is left to the gram's own rules:
        # non-finite colours are left out, a negative or infinite user weight is an error.
        factor = robust_weight.fillna(1.0)
        w_eff = factor if len(arrays) == 2 else arrays[2] * factor
        fit_arrays = [arrays[0], arrays[1], w_eff.transpose(*order)]
    elif return_weights:
        robust_weight = _used(arrays, samples)
    stats = _gram(fit_arrays, n_sample_axes=len(samples))
    stats = xr.DataArray(
        stats, dims=(*batch, _STAT_ROWS, _STAT_COLS), coords=_batch_coords(arrays, batch)
    )
    if stats.chunks is not None:  # the solve sees every batch element, so all-NaN is global
        stats = stats.chunk(dict.fromkeys(batch, -1))
    in_dim = matrix_in_dim(dim)
    k = n_in + 1 if model == "affine" else n_in
    matrix = xr.apply_ufunc(
        _kernels.solve_gram,
        stats,
        input_core_dims=[[_STAT_ROWS, _STAT_COLS]],
        output_core_dims=[[in_dim, OUT_DIM]],
        kwargs={"n_in": n_in, "model": model, "init": init, "min_samples": int(min_samples or 0)},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {in_dim: k, OUT_DIM: n_out}},
    ).rename({OUT_DIM: dim})
    rows = index_values(measured, dim)
    if rows is not None and model == "affine":
        rows = [*rows, OFFSET]
    matrix = set_index(matrix, in_dim, rows)
    matrix = set_index(matrix, dim, index_values(reference, dim))
    matrix.name = "ccm"
    matrix.attrs = {"model": model, "init": init, **colour_attrs, **provenance}
    if robust is not None:
        matrix.attrs.update(robust=robust, robust_tuning=robust_tuning)
        matrix = matrix.assign_coords(robust_coords)
    if loss is not None:
        closed_form = measure.method == "linear_rgb" and init != "white_balance"
        matrix, refined_weight = chartfit.refine_matrix(
            matrix,
            fit_arrays if closed_form else arrays,
            samples,
            measure,
            dim=dim,
            max_iter=int(max_iter),
            closed_form=closed_form,
            robust=None if closed_form else robust,
            robust_tuning=robust_tuning,
            min_samples=int(min_samples or 0),
        )
        if refined_weight is not None:
            robust_weight = refined_weight
    if return_weights:
        robust_weight.name = "robust_weight"
        return matrix, robust_weight
    return matrix


def _check_robust(robust, tuning, return_weights) -> float | None:
    """Validate ``robust=``, ``robust_tuning=`` and ``return_weights=``; return the tuning."""
    if robust is not None and robust not in get_args(Robust):
        raise ValueError(
            f"unknown robust {robust!r}; expected None (plain least squares) or one of "
            f"{get_args(Robust)}"
        )
    if not isinstance(return_weights, bool | np.bool_):
        raise TypeError(f"return_weights must be True or False; got {return_weights!r}")
    if tuning is None:
        return None if robust is None else _kernels.ROBUST_TUNING[robust]
    if robust is None:
        raise ValueError(
            f"robust_tuning={tuning!r} tunes a robust fit, but robust is None; pass "
            "robust='huber' or robust='tukey' too"
        )
    if (
        isinstance(tuning, bool | np.bool_)
        or not isinstance(tuning, numbers.Real)
        or not (np.isfinite(tuning) and tuning > 0)
    ):
        raise ValueError(
            f"robust_tuning must be a finite positive number (in units of the robust scale; "
            f"the default for {robust!r} is {_kernels.ROBUST_TUNING[robust]}); got {tuning!r}"
        )
    return float(tuning)


#: Per-batch diagnostics of a robust fit, as coords of the matrix.
ROBUST_DIAGNOSTICS = ("robust_scale", "robust_rounds", "robust_converged")


def _robust_weights(arrays, batch, samples, *, model, init, min_samples, method, tuning):
    """Robust weights ``(*batch, *samples)`` of the least-squares fit, and per-batch coords.

    Every batch element needs all its samples at once (each round reweights them all), so a
    lazy fit works on blocks holding whole elements, grouped along the batch dims as a ΔE
    fit's are (:func:`batch_chunks`).
    """
    s, d = arrays[0], arrays[1]
    others = arrays[2:]
    if any(a.chunks is not None for a in arrays):
        per_element = np.prod([s.sizes[x] for x in samples], dtype=np.int64)
        sizes = batch_chunks(s, batch, int(per_element))
        chunks = dict.fromkeys((*samples, IN_DIM, OUT_DIM), -1) | sizes
        s, d, *others = (
            a.chunk({k: v for k, v in chunks.items() if k in a.dims}) for a in (s, d, *others)
        )
    core = [[*samples, IN_DIM], [*samples, OUT_DIM]] + [list(samples)] * len(others)
    outputs = xr.apply_ufunc(
        _robust_block,
        s,
        d,
        *others,
        input_core_dims=core,
        output_core_dims=[list(samples), [], [], []],
        kwargs={
            "n_samples": len(samples),
            "model": model,
            "init": init,
            "min_samples": min_samples,
            "method": method,
            "tuning": tuning,
        },
        dask="parallelized",
        output_dtypes=[np.float64, np.float64, np.int64, bool],
    )
    weight, *diagnostics = outputs
    if weight.chunks is not None:  # like the matrix: one chunk along the batch dims
        diagnostics = [o.chunk(dict.fromkeys(o.dims, -1)) for o in diagnostics]
    weight = weight.transpose(*batch, *samples)
    return weight, dict(zip(ROBUST_DIAGNOSTICS, diagnostics, strict=True))


def _robust_block(s, d, w=None, *, n_samples, **kwargs):
    batch = s.shape[: s.ndim - 1 - n_samples]
    lead = s.shape[: s.ndim - 1]
    n = int(np.prod(lead[len(batch) :], dtype=np.int64))
    weights, scale, rounds, converged = _kernels.irls(
        s.reshape(-1, n, s.shape[-1]),
        d.reshape(-1, n, d.shape[-1]),
        None if w is None else w.reshape(-1, n),
        **kwargs,
    )
    return (
        weights.reshape(lead),
        scale.reshape(batch),
        rounds.reshape(batch),
        converged.reshape(batch),
    )


def _used(arrays, samples) -> xr.DataArray:
    """1 for the samples a plain fit uses, NaN for those it leaves out (``return_weights``)."""
    s, d = arrays[0], arrays[1]
    used = np.isfinite(s).all(IN_DIM) & np.isfinite(d).all(OUT_DIM)
    if len(arrays) > 2:
        used = used & (arrays[2].fillna(0) > 0)
    return xr.where(used, 1.0, np.nan).transpose(*[x for x in s.dims if x != IN_DIM])


def _provenance(measured: xr.DataArray, reference: xr.DataArray) -> dict[str, Any]:
    """Return what a fit records of its inputs: the chart, its edition, the linearisation."""
    out = {}
    for key, source, attr in (
        ("chart", reference, "chart"),
        ("chart_edition", reference, "edition"),
        ("linearization", measured, "linearization"),
    ):
        if isinstance(source.attrs.get(attr), str):
            out[key] = source.attrs[attr]
    return out


def _plain_mask_weights(measured, weights, mask, saturation):
    """Fold a plain-array fit's ``mask=`` and ``saturation=`` into its weights (0/1 factors)."""
    factors = []
    if mask is not None:
        mask = asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(
                "mask must be boolean (True = use the sample), shaped like measured without "
                f"its channel axis; got dtype {mask.dtype}"
            )
        factors.append(mask)
    if saturation not in ("auto", None):
        try:
            lo, hi = (float(v) for v in saturation)
        except (TypeError, ValueError):
            raise ValueError(
                f"saturation must be (low, high) or None; got {saturation!r}"
            ) from None
        values = asarray(measured)
        factors.append(((values >= lo) & (values <= hi)).all(axis=-1))
    if not factors:
        return weights
    if weights is not None:
        factors.append(asarray(weights))
    out = factors[0]
    for f in factors[1:]:
        out = out * f
    return out.astype(np.float64)


def _fit_arrays(
    measured,
    reference,
    dim,
    model,
    init,
    weights,
    min_samples,
    *,
    robust=None,
    robust_tuning=None,
    return_weights=False,
):
    """Fit on plain arrays: ``(*batch, n_samples, n_channels)``, batch aligned from the right."""
    measured, reference = np.asarray(measured), np.asarray(reference)
    for name, arr in (("measured", measured), ("reference", reference)):
        if arr.ndim < 2:
            raise ValueError(
                f"{name} as a plain array must have shape (..., n_samples, n_channels), "
                f"channel axis last; got shape {arr.shape}"
            )
    n_batch = max(measured.ndim, reference.ndim) - 2
    if weights is not None and not isinstance(weights, xr.DataArray):
        weights = np.asarray(weights)
        n_w = weights.ndim - 1
        if n_w < 0 or n_w > n_batch:
            raise ValueError(
                f"weights as a plain array must have shape (..., n_samples) like measured "
                f"{measured.shape[:-1]}; got shape {weights.shape}"
            )
        weights = wrap(weights, (_SAMPLE,), n_batch)
    result = fit(
        wrap(measured, (_SAMPLE, dim), n_batch),
        wrap(reference, (_SAMPLE, dim), n_batch),
        dim=dim,
        model=model,
        init=init,
        weights=weights,
        sample_dims=(_SAMPLE,),
        min_samples=min_samples,
        robust=robust,
        robust_tuning=robust_tuning,
        return_weights=return_weights,
    )
    if return_weights:
        return result[0].data, result[1].data
    return result.data


def _sample_dims(measured, reference, dim, sample_dims) -> tuple[Hashable, ...]:
    if sample_dims is None:
        samples = tuple(d for d in reference.dims if d != dim)
        if not samples:
            raise ValueError(
                f"reference has no dim besides {dim!r} (its dims are {reference.dims}), so "
                "there are no sample dims to fit over; pass sample_dims= or give reference a "
                "patch/pixel dim"
            )
    else:
        samples = dim_names(sample_dims, "sample_dims")
    if dim in samples:
        raise ValueError(f"sample_dims {samples} must not include the channel dim {dim!r}")
    for d in samples:
        if d not in measured.dims:
            raise ValueError(
                f"measured has no sample dim {d!r}; its dims are {measured.dims}. "
                f"Sample dims are {samples}"
                + (" (the dims of reference)" if sample_dims is None else "")
            )
        if measured.sizes[d] == 0:
            raise ValueError(f"measured is empty along sample dim {d!r}: nothing to fit")
    return samples


def _check_reference_dims(reference: xr.DataArray, samples, dim: Hashable, given: bool) -> None:
    """Refuse sample dims the reference lacks where the fit would be a guess.

    A reference is broadcast over a sample dim it lacks (the same chart for every frame
    pooled into one fit). That is a guess when the reference has none of the sample dims
    (every sample of a fit would be compared with one colour), or when it varies over a
    batch dim instead (e.g. ``sample_dims="time"`` with a ``(patch, channel)`` chart: a
    matrix per patch, each fitted to one colour).
    """
    if not given:
        return
    lacking = [d for d in samples if d not in reference.dims]
    if not lacking:
        return
    batch = [d for d in reference.dims if d != dim and d not in samples]
    if len(lacking) < len(samples) and not batch:
        return  # pooled: the same reference for each entry of the lacking dims
    dims = tuple(reference.dims)
    what = (
        f"its dims {tuple(batch)} would be batch dims, a matrix for each of their entries "
        "fitted to one reference colour,"
        if batch
        else "every sample of a fit would be compared with one reference colour,"
    )
    pooled = tuple(dict.fromkeys([*samples, *batch]))
    raise ValueError(
        f"reference has no sample dim {', '.join(map(repr, lacking))} (sample_dims="
        f"{samples}, reference dims {dims}): {what} which is not a colour fit. Sample dims "
        f"are the dims summed over (patches, pixels, and frames to pool): to fit one matrix "
        f"over all frames pass sample_dims={pooled}; to fit a matrix per frame, leave "
        f"sample_dims out (the reference's dims {tuple(d for d in dims if d != dim)} are "
        "the sample dims by default)"
    )


def _check_alpha(measured: xr.DataArray, reference: xr.DataArray, dim: Hashable) -> None:
    """Refuse a 4-channel ``measured`` against a 3-channel reference that may be RGBA.

    Its fourth channel would be fitted as a colour (an alpha of 1 acts as an offset). An
    alpha-like label (``"A"``, ``"alpha"``) or no labels at all is asked about; other
    labels (``R, G, B, W``) are a 4-channel camera and fitted.
    """
    n_in, n_out = measured.sizes[dim], reference.sizes[dim]
    if (n_in, n_out) != (4, 3):
        return
    labels = index_values(measured, dim)
    if labels is not None:
        targets = set(index_values(reference, dim) or ())
        alpha = [c for c in labels if str(c).strip().lower() in ("a", "alpha") and c not in targets]
        if not alpha:
            return
        keep = [c for c in labels if c != alpha[0]]
        drop = f"measured.sel({dim}={keep!r})"
        which = f"channel {alpha[0]!r} looks like alpha"
    else:
        drop = f"measured.isel({dim}=slice(0, 3)) (or measured[..., :3] for an array)"
        which = "its channels are not labelled, so the fourth may be alpha (an RGBA image)"
    raise ValueError(
        f"measured has 4 channels along {dim!r} but reference has 3, and {which}: a fit "
        f"would treat it as a colour channel. Drop alpha first: {drop}; for a camera with "
        f"4 colour channels, label them, e.g. measured.assign_coords({dim}=['R', 'G', 'B', "
        "'W']) (a DataArray), to fit a 4x3 matrix"
    )


def _as_weights(weights, samples, measured, dim) -> xr.DataArray:
    weights = sample_array(weights, samples, measured, "weights")
    if weights.dtype == bool:  # a mask: True counts 1, False leaves the sample out
        weights = weights.astype(np.float64)
    require_real(weights, "weights")
    if dim in weights.dims:
        raise ValueError(
            f"weights must not have the channel dim {dim!r}: a weight applies to a whole "
            f"sample; its dims are {weights.dims}"
        )
    missing = [d for d in samples if d not in weights.dims]
    if missing:
        raise ValueError(
            f"weights must span the sample dims {samples}; it lacks {tuple(missing)} "
            f"(its dims are {weights.dims})"
        )
    return weights


#: Samples per task of a lazy fit (~1000 frames of a 24-patch chart: ~0.5 s of work for a
#: ΔE fit). Smaller blocks (patch colours come one frame a chunk from extract_patches) are
#: grouped into blocks of about this many samples: a task per frame costs far more than its fit.
_SAMPLES_PER_TASK = 24_576


def batch_chunks(
    obj: xr.DataArray, batch: Sequence[Hashable], per_element: int
) -> dict[Hashable, int]:
    """Chunk sizes along ``batch`` for blocks of about ``_SAMPLES_PER_TASK`` samples.

    ``per_element`` is the number of samples of one batch element in a block. The batch dims
    are taken from the last: each is one chunk while the block stays within the budget; the
    first that does not fit gets as many elements as the budget allows, never fewer than a
    chunk of ``obj`` has now (a frame of pixels is already a block's worth), and the dims
    before it keep their chunks.
    """
    sizes: dict[Hashable, int] = {}
    volume = max(int(per_element), 1)
    for d in reversed(batch):
        n = obj.sizes[d]
        if volume * n <= _SAMPLES_PER_TASK:
            sizes[d] = -1
            volume *= max(n, 1)
            continue
        now = max(obj.chunksizes[d]) if obj.chunks is not None else 1
        sizes[d] = max(_SAMPLES_PER_TASK // volume, now, 1)
        break
    return sizes


def _grouped(obj: xr.DataArray, batch: Sequence[Hashable], samples) -> xr.DataArray:
    """Group the small blocks of a Dask-backed ``obj`` along ``batch`` (:func:`batch_chunks`).

    Its chunks along the sample dims are kept. A NumPy-backed ``obj`` is returned as it is.
    """
    if obj.chunks is None or not batch:
        return obj
    chunks = obj.chunksizes
    per_element = np.prod([max(chunks[d], default=1) for d in samples], dtype=np.int64)
    return obj.chunk(batch_chunks(obj, batch, int(per_element)))


def _gram(arrays: list[xr.DataArray], n_sample_axes: int):
    """Sum :func:`_kernels.gram` over all samples, chunk by chunk for Dask."""
    data = [a.data for a in arrays]
    if not any(is_dask(x) for x in data):
        return _kernels.gram(*data, n_sample_axes=n_sample_axes)
    import dask.array as dsa

    data = [dsa.asarray(x) for x in data]
    if data[0].numblocks[-1] > 1 or data[1].numblocks[-1] > 1:
        data[0], data[1] = data[0].rechunk({-1: -1}), data[1].rechunk({-1: -1})
    ndim = data[0].ndim - 1  # batch + sample axes, shared by every input
    lead = tuple(f"a{i}" for i in range(ndim))
    samples = lead[ndim - n_sample_axes :]
    p = data[0].shape[-1] + 1 + data[1].shape[-1]
    args = [data[0], (*lead, "c_in"), data[1], (*lead, "c_out")]
    if len(data) == 3:
        args += [data[2], lead]
    partial = dsa.blockwise(
        _block_gram,
        (*lead, "r", "c"),
        *args,
        new_axes={"r": p + 1, "c": p},
        adjust_chunks=dict.fromkeys(samples, 1),
        dtype=np.float64,
        n_sample_axes=n_sample_axes,
        concatenate=True,
    )
    return partial.sum(axis=tuple(range(ndim - n_sample_axes, ndim)))


def _block_gram(s, d, w=None, *, n_sample_axes):
    g = _kernels.gram(s, d, w, n_sample_axes=n_sample_axes, parallel=False)
    return np.expand_dims(g, tuple(range(g.ndim - 2, g.ndim - 2 + n_sample_axes)))


def _batch_coords(arrays, batch) -> dict:
    coords = {}
    for a in arrays:
        for name, c in a.coords.items():
            if name not in coords and set(c.dims) <= set(batch):
                coords[name] = c.variable
    return coords


# ---------------------------------------------------------------------------------------------
# apply, inverse, invert


def apply(
    image: T_Image,
    matrix: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = "channel",
    scale: float | None = None,
    keep_attrs: bool = True,
) -> T_Image:
    """Apply a colour-correction matrix: ``D = S @ M`` or ``D = [S, 1] @ M``.

    Parameters
    ----------
    image : DataArray, Dataset or ndarray
        Colours with channel dim ``dim`` (anywhere: channel-last and channel-first stacks
        both work). For a Dataset every data variable with ``dim`` is corrected and the
        others (including matrices stored alongside, which have ``f"{dim}_in"``) are copied.
        An ndarray has its channel axis last.
    matrix : DataArray or ndarray
        A matrix from :func:`fit`: dims ``(*batch, f"{dim}_in", dim)``, its batch dims
        matched to the image's by name (a per-frame matrix corrects each frame). A plain
        ``(n_in, n_out)`` (linear) or ``(n_in + 1, n_out)`` (affine) array also works; with an
        ndarray image, a plain matrix may have leading batch axes matching the image's
        leading axes. Row labels (if both have coords) are matched to the image's channels.
    dim : hashable, default "channel"
        The channel dim. It must be a single chunk for Dask-backed input.
    scale : float, optional
        Multiply the image by ``scale`` before the matrix, e.g. ``1 / 255`` to read 8-bit
        images as [0, 1]. Folded into the matrix, so it costs nothing. One finite positive
        number, or a 0-d array of one (a lazy one is checked on compute), as for
        :func:`xccm.linearize`.
    keep_attrs : bool, default True
        Keep the image's attrs.

    Returns
    -------
    DataArray, Dataset or ndarray
        The corrected image: same dims in the same order, coords, attrs and chunks, with
        ``dim`` of size ``n_out`` (and the matrix's column coords, if any). Floating input
        keeps its dtype (float32 stays float32); integer input becomes float32. Dask-backed
        input stays lazy, with one task per image chunk: a per-frame matrix is not cut into
        the image's chunks by tasks of its own; each task slices its frames' matrices.

    Raises
    ------
    ValueError
        If ``dim`` is missing or split across chunks, the matrix does not fit the image,
        or ``scale`` is not finite and positive.
    TypeError
        If the image or matrix is not real numeric (or the matrix is a Dataset), or
        ``scale`` is not one real number.

    Examples
    --------
    >>> img = xr.DataArray(np.ones((2, 2, 3), "f4"), dims=("y", "x", "channel"))
    >>> out = apply(img, np.diag([1.0, 2.0, 3.0]))
    >>> out.dtype, out.isel(y=0, x=0).values.tolist()
    (dtype('float32'), [1.0, 2.0, 3.0])
    """
    if isinstance(image, xr.Dataset):
        return map_dataset(apply, image, matrix, dim=dim, scale=scale, keep_attrs=keep_attrs)
    if not isinstance(image, xr.DataArray):
        return _apply_arrays(image, matrix, dim, scale)
    matrix, dtype, spec = _prepare_apply(image, matrix, dim, scale)
    in_dim = matrix_in_dim(dim)
    n_out = matrix.sizes[dim]
    result = xr.apply_ufunc(
        _apply_blocks,
        image.rename({dim: IN_DIM}),
        matrix.rename({dim: OUT_DIM}),
        input_core_dims=[[IN_DIM], [in_dim, OUT_DIM]],
        output_core_dims=[[OUT_DIM]],
        kwargs={"dtype": dtype, "kernel": _kernel_of(spec)},
        dask="allowed",
        keep_attrs=keep_attrs,
        join="exact",
    )
    result = result.rename({OUT_DIM: dim}).transpose(*image.dims, ...)
    if dim not in result.coords and n_out == image.sizes[dim]:
        # A matrix without column labels keeps the image's channel coords.
        result = result.assign_coords(
            {
                k: c
                for k, c in image.coords.items()
                if dim in c.dims and set(c.dims) <= set(result.dims)
            }
        )
    result.name = image.name
    return result


def _kernel_of(spec: models.ModelSpec, inverse: bool = False) -> Callable:
    """Return the ndarray kernel ``f(x, m, dtype, *, parallel)`` of a model's apply or inverse."""
    if spec.is_linear and not inverse:
        return _kernels.apply_matrix
    method = _kernels.solve_terms if inverse else _kernels.apply_matrix
    return functools.partial(method, terms=spec.table())


def _apply_blocks(x, m, *, dtype, kernel: Callable = _kernels.apply_matrix):
    """Apply ``m (..., k, n_out)`` to ``x (..., n_in)``: eagerly, or block by block for Dask.

    For Dask this is one ``blockwise`` layer with one task per image block, in which each
    task gets its image block as it is (``apply_gufunc`` would copy every block to merge the
    single-chunk channel dim) and runs the serial kernel, one block per scheduler thread.
    A matrix with batch axes (one per frame, say) is never cut into the image's chunks by
    tasks of its own, which would add two tasks per chunk: chunked like the image (a lazy
    per-frame matrix), block goes with block; otherwise (in memory, or a lazy fit's one
    chunk) it is one block that every task depends on, and each task slices its frames'
    matrices out of it (:func:`_apply_slice`). Only a matrix stack too large for one chunk
    (``array.chunk-size``) is cut like the image (never the image like the matrix).
    """
    if not is_dask(x) and not is_dask(m):
        return kernel(x, m, dtype, parallel=True)
    import dask.array as dsa

    x = dsa.asarray(x)
    lead = tuple(f"a{i}" for i in range(x.ndim - 1))
    n_batch = m.ndim - 2
    m_lead = lead[len(lead) - n_batch :]  # apply_ufunc aligned m's batch axes with x's
    blocks = x.chunks[len(lead) - n_batch : len(lead)]  # the image's chunks along them
    varying = [i for i in range(n_batch) if m.shape[i] > 1]  # the others are broadcast
    block_kernel = functools.partial(kernel, dtype=dtype, parallel=False)
    kwargs = {
        "adjust_chunks": {"channel": m.shape[-1]},
        "concatenate": True,  # only the small matrix's core axes are merged
        "meta": x._meta.astype(dtype),
    }
    if not is_dask(m):
        one = not varying or _fits_one_chunk(m)
        cut = tuple(blocks[i] if i in varying else -1 for i in range(n_batch))
        m = dsa.from_array(m, chunks=-1 if one else (*cut, -1, -1))
    if any(m.chunks[i] != blocks[i] for i in varying):
        if _fits_one_chunk(m):
            from dask.layers import ArraySliceDep

            return dsa.blockwise(
                functools.partial(_apply_slice, dtype=dtype, kernel=kernel),
                (*lead, "channel"),
                x,
                (*lead, "channel"),
                m.rechunk(-1),
                (*(f"m{i}" for i in range(n_batch)), "rows", "cols"),  # one block for all
                ArraySliceDep(blocks),
                m_lead,
                align_arrays=False,  # the slices follow the image's chunks
                **kwargs,
            )
        m = m.rechunk({i: blocks[i] for i in varying})  # never the image like the matrix
    return dsa.blockwise(
        block_kernel,
        (*lead, "channel"),
        x,
        (*lead, "channel"),
        m,
        (*m_lead, "rows", "cols"),
        **kwargs,
    )


def _fits_one_chunk(m) -> bool:
    """Whether a matrix stack is small enough to be one Dask chunk (``array.chunk-size``)."""
    import dask
    from dask.utils import parse_bytes

    limit = dask.config.get("array.chunk-size")
    return m.nbytes <= (parse_bytes(limit) if isinstance(limit, str) else int(limit))


def _apply_slice(x, m, where, *, dtype, kernel: Callable = _kernels.apply_matrix):
    """Apply the matrices of one image block: ``where`` slices its frames out of ``m``.

    ``where`` has a slice per batch axis of ``m`` (aligned with the image's from the right);
    an axis of size 1 is broadcast, so it is kept whole.
    """
    index = tuple(s if n > 1 else slice(None) for s, n in zip(where, m.shape, strict=False))
    return kernel(x, m[index], dtype, parallel=False)


def inverse(
    corrected: T_Image,
    matrix: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = "channel",
    keep_attrs: bool = True,
) -> T_Image:
    """Undo :func:`apply`, returning ``S`` such that ``apply(S, matrix)`` equals ``corrected``.

    Linear: ``S = D @ inv(M)``. Affine, with ``M = [Up; Down]``: ``S = (D - Down) @ inv(Up)``.
    Same as ``apply(corrected, invert(matrix))``; see :func:`apply` for the parameters.
    The channels come back labelled by the matrix's rows; where those are the same labels
    as ``corrected``'s channels (e.g. ``R, G, B`` both), in ``corrected``'s order, so
    ``inverse(apply(x, m), m)`` has ``x``'s channel order whatever ``m``'s row order.

    Raises
    ------
    numpy.linalg.LinAlgError
        If the matrix is not square (linear) or ``(n + 1, n)`` (affine), or its square part
        is singular (for a Dask-backed matrix, on compute).

    Examples
    --------
    >>> x = xr.DataArray([[0.2, 0.4, 0.6]], dims=("pixel", "channel"))
    >>> m = np.array([[2.0, 0, 0], [0, 1, 0], [0, 0, 0.5], [0.1, 0.1, 0.1]])
    >>> xr.testing.assert_allclose(inverse(apply(x, m), m), x)

    A polynomial or root-polynomial matrix (``attrs["model"]``) has no inverse matrix: each
    pixel is solved by Newton's method from the inverse of the matrix's linear part (its
    ``R, G, B`` and offset rows), in float64. Pixels where it does not converge (the model
    need not be invertible everywhere) are NaN, and a
    :class:`~xccm._kernels.NonConvergenceWarning` says how many (for Dask, per chunk, on
    compute).
    """
    if _is_expanded(matrix):
        if isinstance(corrected, xr.Dataset):
            return map_dataset(inverse, corrected, matrix, dim=dim, keep_attrs=keep_attrs)
        if not isinstance(corrected, xr.DataArray):
            return _inverse_arrays(corrected, matrix, dim)
        return _inverse_expanded(corrected, matrix, dim, keep_attrs)
    inverted = invert(matrix, dim=dim)
    if isinstance(inverted, xr.DataArray) and isinstance(corrected, xr.DataArray | xr.Dataset):
        inverted = _columns_in_order_of(inverted, corrected, dim)
    return apply(corrected, inverted, dim=dim, keep_attrs=keep_attrs)


def _is_expanded(matrix) -> bool:
    """Whether ``matrix`` is a DataArray of a model other than linear and affine."""
    return isinstance(matrix, xr.DataArray) and matrix.attrs.get("model") not in (
        None,
        "linear",
        "affine",
    )


def _inverse_expanded(
    corrected: xr.DataArray, matrix: xr.DataArray, dim: Hashable, keep_attrs: bool
) -> xr.DataArray:
    """:func:`inverse` of a term-expanded matrix: Newton's method per pixel."""
    check_data(corrected, "corrected", dim, allow_empty=True)
    require_one_chunk(corrected, dim, "corrected")
    spec = models.model_of(matrix, dim=dim)
    matrix = _checked_matrix(matrix, dim)
    in_dim = matrix_in_dim(dim)
    n_out = matrix.sizes[dim]
    if corrected.sizes[dim] != n_out:
        raise ValueError(
            f"matrix maps onto {n_out} channels along {dim!r} but corrected has "
            f"{corrected.sizes[dim]}"
        )
    matrix = _check_batch_dims(matrix, corrected, dim)
    order = channel_order(
        index_values(matrix, dim),
        index_values(corrected, dim),
        name=f"matrix columns {dim!r}",
        target="corrected",
        dim=dim,
    )
    if order is not None:
        matrix = matrix.isel({dim: order})
    rows = index_values(matrix, in_dim)
    matrix = matrix.drop_vars([in_dim, dim], errors="ignore")
    dtype = corrected.dtype if corrected.dtype.kind == "f" else np.dtype(np.float32)
    result = xr.apply_ufunc(
        _apply_blocks,
        corrected.rename({dim: IN_DIM}),
        matrix.rename({dim: IN_DIM}),
        input_core_dims=[[IN_DIM], [in_dim, IN_DIM]],
        output_core_dims=[[OUT_DIM]],
        kwargs={"dtype": dtype, "kernel": _kernel_of(spec, inverse=True)},
        dask="allowed",
        keep_attrs=keep_attrs,
        join="exact",
    )
    result = result.rename({OUT_DIM: dim}).transpose(*corrected.dims, ...)
    if rows is not None:
        result = result.assign_coords({dim: rows[: spec.n_channels]})
    else:  # unlabelled rows: the channels keep corrected's coords, as apply does
        result = result.assign_coords(
            {
                k: c
                for k, c in corrected.coords.items()
                if dim in c.dims and set(c.dims) <= set(result.dims)
            }
        )
    result.name = corrected.name
    return result


def _inverse_arrays(corrected, matrix: xr.DataArray, dim: Hashable):
    """:func:`inverse` of a term-expanded matrix on a plain array (channel axis last)."""
    extra = [d for d in matrix.dims if d not in (matrix_in_dim(dim), dim)]
    if extra:
        raise ValueError(
            f"a plain-array image has no named dims, so a matrix with batch dims "
            f"{tuple(extra)} cannot be matched to it; wrap the image in a DataArray"
        )
    corrected = asarray(corrected)
    if corrected.ndim < 1:
        raise ValueError(f"corrected must have a channel axis (last); got shape {corrected.shape}")
    labelled = wrap(corrected, (dim,))
    matrix = matrix.drop_vars([matrix_in_dim(dim), dim], errors="ignore")
    return _inverse_expanded(labelled, matrix, dim, keep_attrs=False).data


def _columns_in_order_of(inverted: xr.DataArray, corrected, dim: Hashable) -> xr.DataArray:
    """Put the inverted matrix's columns (the source channels) in ``corrected``'s order.

    Where the matrix maps channels onto the same names (rows ``G, R, B``, columns
    ``R, G, B``), the caller's image is in ``corrected``'s order, so :func:`inverse` gives
    it back in that order rather than the matrix's row order. Other names keep the rows'.
    """
    if dim not in inverted.indexes or dim not in corrected.indexes:
        return inverted
    order = permutation(inverted.indexes[dim], corrected.indexes[dim])
    return inverted if order is None else inverted.isel({dim: order})


def invert(
    matrix: xr.DataArray | np.ndarray, *, dim: Hashable = "channel"
) -> xr.DataArray | np.ndarray:
    """Matrix of the inverse map, in the same shape family: 3x3 -> 3x3, 4x3 -> 4x3.

    For ``M = [Up; Down]`` (affine) the result is ``[inv(Up); -Down @ inv(Up)]``, so
    ``apply(x, invert(m))`` equals ``inverse(x, m)``. Row and column coords swap roles.

    Parameters
    ----------
    matrix : DataArray or ndarray
        Dims ``(*batch, f"{dim}_in", dim)``, or an array ``(..., n, n)`` or ``(..., n + 1, n)``.
    dim : hashable, default "channel"

    Returns
    -------
    DataArray or ndarray
        Same type, dims and attrs as ``matrix``; lazy if ``matrix`` is Dask-backed.

    Raises
    ------
    numpy.linalg.LinAlgError
        If the matrix is neither square nor affine-square, or its square part is singular.
    ValueError
        If the matrix is empty (no channels).

    Notes
    -----
    A float16 matrix is inverted in float32 (LAPACK has no float16); the result is float32.

    Examples
    --------
    >>> invert(np.diag([2.0, 4.0, 0.5]))
    array([[0.5 , 0.  , 0.  ],
           [0.  , 0.25, 0.  ],
           [0.  , 0.  , 2.  ]])
    """
    if not isinstance(matrix, xr.DataArray):
        arr = _plain_matrix(matrix)
        if arr.ndim < 2:
            raise ValueError(
                f"matrix must have at least 2 dims (n_in, n_out); got shape {arr.shape}"
            )
        rows, cols = arr.shape[-2:]
        _check_invertible_shape(rows, cols, f"shape {arr.shape[-2:]}")
        # float16 (which LAPACK lacks) is inverted in float32, as its result dtype says
        arr = arr.astype(np.result_type(arr, np.float32), copy=False)
        if is_dask(arr):  # lazily, each block of whole matrices
            if rows not in (cols, cols + 1):  # checked now, as for an in-memory matrix
                raise np.linalg.LinAlgError(
                    f"only a square (n, n) linear or (n + 1, n) affine matrix can be inverted; "
                    f"got shape {arr.shape[-2:]}"
                )
            whole = arr.rechunk({-2: -1, -1: -1})
            return whole.map_blocks(_kernels.invert_matrix, dtype=np.result_type(arr, np.float32))
        return _kernels.invert_matrix(arr)
    in_dim = matrix_in_dim(dim)
    if _is_expanded(matrix):
        raise ValueError(
            f"matrix has model {matrix.attrs['model']!r}, which is not linear in the colours: "
            "it has no inverse matrix. Use xccm.inverse(corrected, matrix) instead, which "
            "solves each pixel (Newton's method)"
        )
    matrix = _checked_matrix(matrix, dim)
    rows, cols = matrix.sizes[in_dim], matrix.sizes[dim]
    _check_invertible_shape(rows, cols, f"{rows} {in_dim!r} rows and {cols} {dim!r} columns")
    matrix = matrix.astype(np.result_type(matrix.dtype, np.float32), copy=False)
    allowed = {"linear": (cols,), "affine": (cols + 1,)}.get(
        matrix.attrs.get("model"), (cols, cols + 1)
    )
    if rows not in allowed:
        raise np.linalg.LinAlgError(
            f"only a square (n, n) linear or (n + 1, n) affine matrix can be inverted; matrix "
            f"has {rows} {in_dim!r} rows and {cols} {dim!r} columns"
            + (f" and model {matrix.attrs['model']!r}" if "model" in matrix.attrs else "")
        )
    result = xr.apply_ufunc(
        _kernels.invert_matrix,
        matrix,
        input_core_dims=[[in_dim, dim]],
        output_core_dims=[[_ROWS, OUT_DIM]],
        dask="parallelized",
        output_dtypes=[np.result_type(matrix.dtype, np.float32)],
        dask_gufunc_kwargs={"output_sizes": {_ROWS: rows, OUT_DIM: cols}},
        keep_attrs=True,
    ).rename({_ROWS: in_dim, OUT_DIM: dim})
    col_labels, row_labels = index_values(matrix, dim), index_values(matrix, in_dim)
    if col_labels is not None and rows == cols + 1:
        col_labels = [*col_labels, OFFSET]
    if row_labels is not None:
        row_labels = row_labels[:cols]
    result = set_index(result, in_dim, col_labels)
    result = set_index(result, dim, row_labels)
    result.name = matrix.name
    return result


def _check_invertible_shape(rows: int, cols: int, given: str) -> None:
    if cols == 0 or rows == 0:
        raise ValueError(
            f"matrix is empty ({given}): there is no channel to invert; expected a square "
            "(n, n) linear or (n + 1, n) affine matrix with n >= 1"
        )


def _prepare_apply(image: xr.DataArray, matrix, dim: Hashable, scale: float | None):
    """Validate ``image`` and ``matrix``; return the matrix (scale folded in), dtype, model."""
    check_data(image, "image", dim, allow_empty=True)
    require_one_chunk(image, dim, "image")
    matrix = _as_matrix(matrix, dim, image)
    spec = _model_of(matrix, dim, image)
    if not spec.is_linear:
        matrix = _match_term_rows(matrix, image, dim, spec)
    scale = check_scale(scale)
    if scale is not None:
        # Row j is multiplied by scale ** (its term's degree): 1 for a channel, 0 for the
        # offset row, 1/2 for sqrt(R*G)... so that t(scale * x) @ M == t(x) @ M'.
        degrees = xr.DataArray(np.array(spec.row_degrees), dims=matrix_in_dim(dim))
        value = scale.reset_coords(drop=True) if isinstance(scale, xr.DataArray) else scale
        matrix = matrix * value**degrees
    dtype = image.dtype if image.dtype.kind == "f" else np.dtype(np.float32)
    return matrix, dtype, spec


def _model_of(matrix: xr.DataArray, dim: Hashable, image: xr.DataArray) -> models.ModelSpec:
    """Return the model of a checked ``matrix`` (its attrs; else linear or affine by rows)."""
    model = matrix.attrs.get("model")
    if model is not None and model not in ("linear", "affine"):
        return models.model_of(matrix, dim=dim, n_in=image.sizes[dim])
    n_in = image.sizes[dim]
    affine = matrix.sizes[matrix_in_dim(dim)] == n_in + 1
    return models.resolve_model("affine" if affine else "linear", n_channels=n_in)


def _match_term_rows(
    matrix: xr.DataArray, image: xr.DataArray, dim: Hashable, spec: models.ModelSpec
) -> xr.DataArray:
    """Put a term-expanded matrix's rows in the order of the image's channel order.

    The first rows are the channels (``R, G, B``); where the image has them in another
    order, the rows are permuted so that each multiplies the same term of the image's
    channels, which needs the term set to hold the permuted terms too.
    """
    in_dim = matrix_in_dim(dim)
    channels, rows = index_values(image, dim), index_values(matrix, in_dim)
    if channels is None or rows is None:
        return matrix.drop_vars(in_dim, errors="ignore")
    n_in = spec.n_channels
    labels = rows[:n_in]
    if labels == channels:
        return matrix.drop_vars(in_dim)
    if set(labels) != set(channels) or len(set(labels)) != n_in:
        raise ValueError(
            f"matrix rows {in_dim!r} start with the channels {labels} but image channels "
            f"{dim!r} are {channels}; they must be the same labels (in any order)"
        )
    order = models.row_order(spec, [labels.index(c) for c in channels])
    if order is None:
        raise ValueError(
            f"matrix of model {spec.name!r} ({spec.attrs}) expands channels {labels} but image "
            f"channels {dim!r} are {channels}, and its terms do not allow another order; "
            f"reorder the image first: image.sel({dim}={labels!r})"
        )
    return matrix.isel({in_dim: order}).drop_vars(in_dim)


def _apply_arrays(image, matrix, dim: Hashable, scale: float | None):
    """:func:`apply` on a plain array with the channel axis last, straight to the kernel."""
    if isinstance(matrix, xr.DataArray):
        extra = [d for d in matrix.dims if d not in (matrix_in_dim(dim), dim)]
        if extra:
            raise ValueError(
                f"a plain-array image has no named dims, so a matrix with batch dims "
                f"{tuple(extra)} cannot be matched to it; wrap the image in a DataArray"
            )
        attrs, matrix = matrix.attrs, matrix.data
    else:
        attrs = {}
    image, matrix = asarray(image), asarray(matrix)
    if image.ndim < 1:
        raise ValueError(f"image must have a channel axis (last); got shape {image.shape}")
    names = axis_names(image.ndim - 1)
    n_batch = matrix.ndim - 2
    if n_batch > 0:
        if n_batch > len(names) or matrix.shape[:n_batch] != image.shape[:n_batch]:
            raise ValueError(
                f"matrix of shape {matrix.shape} has batch axes {matrix.shape[:n_batch]} that "
                f"do not match the leading axes of image {image.shape}"
            )
    if n_batch > 0 or (attrs and matrix.ndim >= 2):  # a named model (attrs) stays with it
        matrix = xr.DataArray(matrix, dims=(*names[:n_batch], matrix_in_dim(dim), dim), attrs=attrs)
    labelled = xr.DataArray(image, dims=(*names, dim))
    matrix, dtype, spec = _prepare_apply(labelled, matrix, dim, scale)
    m = matrix.data  # batch axes lead; pad them to the image's leading axes
    m = m.reshape((*m.shape[:-2], *(1,) * (image.ndim - 1 - (m.ndim - 2)), *m.shape[-2:]))
    return _apply_blocks(image, m, dtype=dtype, kernel=_kernel_of(spec))


def map_dataset(func: Callable, ds: xr.Dataset, *args, dim: Hashable, **kwargs) -> xr.Dataset:
    """Apply ``func`` to every data variable with ``dim``; copy the others.

    Matrices stored next to the images (variables with ``f"{dim}_in"``) are copied, not mapped.
    """
    in_dim = matrix_in_dim(dim)
    names = [k for k, v in ds.data_vars.items() if dim in v.dims and in_dim not in v.dims]
    if not names:
        raise ValueError(
            f"no data variable has the channel dim {dim!r}; variables and their dims: "
            f"{ {k: v.dims for k, v in ds.data_vars.items()} }"
        )
    done = {}
    for k in names:
        try:
            done[k] = func(ds[k], *args, dim=dim, **kwargs)
        except (ValueError, TypeError) as err:
            try:
                named = type(err)(f"data variable {k!r}: {err}")
            except Exception:  # an error type that takes other arguments: keep it as is
                raise err from None
            raise named from err
    # Coords along dim may change (n_out, column labels): drop them from what is copied.
    rest = ds.drop_vars(names).drop_vars([k for k, c in ds.coords.items() if dim in c.dims])
    out = rest.assign(done)
    return out[list(ds.data_vars)]


# ---------------------------------------------------------------------------------------------
# validation and small helpers


def _checked_matrix(matrix: xr.DataArray, dim: Hashable) -> xr.DataArray:
    """Check a matrix's dims and dtype; return it with its (small) core dims in one chunk."""
    in_dim = matrix_in_dim(dim)
    if in_dim not in matrix.dims or dim not in matrix.dims:
        raise ValueError(
            f"matrix must have dims ({in_dim!r}, {dim!r}) (rows: input channels, columns: "
            f"output channels); its dims are {tuple(matrix.dims)}. Was it fitted with another dim=?"
        )
    require_real(matrix, "matrix")
    # Non-index coords (a fit's per-frame loss, iterations...) describe the matrix, not what
    # it is applied to or inverted into: drop them.
    matrix = matrix.reset_coords(drop=True)
    return matrix.chunk({in_dim: -1, dim: -1}) if matrix.chunks is not None else matrix


def _as_matrix(matrix, dim: Hashable, image: xr.DataArray) -> xr.DataArray:
    """Validate ``matrix`` against ``image`` and return it as a labelled DataArray."""
    in_dim = matrix_in_dim(dim)
    if not isinstance(matrix, xr.DataArray):
        arr = _plain_matrix(matrix)
        if arr.ndim != 2:
            raise ValueError(
                f"a plain-array matrix must be 2-D, (n_in, n_out) or (n_in + 1, n_out); got shape "
                f"{arr.shape}. For per-frame matrices pass a DataArray with named batch dims."
            )
        matrix = xr.DataArray(arr, dims=(in_dim, dim))
    matrix = _checked_matrix(matrix, dim)
    n_in, rows = image.sizes[dim], matrix.sizes[in_dim]
    if matrix.attrs.get("model") not in (None, "linear", "affine"):
        # an expanded model (checked by models.model_of): rows are matched by _match_term_rows
        return _check_batch_dims(matrix, image, dim)
    if rows not in (n_in, n_in + 1):
        raise ValueError(
            f"matrix has {rows} rows along {in_dim!r} but image has {n_in} channels along "
            f"{dim!r}: expected {n_in} rows (linear) or {n_in + 1} (affine, offset last)"
        )
    model = matrix.attrs.get("model")
    if model is not None and model != ("affine" if rows == n_in + 1 else "linear"):
        raise ValueError(
            f"matrix has model {model!r} and {rows} rows along {in_dim!r}, so it was fitted on "
            f"{rows - (model == 'affine')} channels, but image has {n_in} channels along {dim!r}"
        )
    matrix = _check_batch_dims(matrix, image, dim)
    return _match_rows(matrix, image, dim)


def _check_batch_dims(matrix: xr.DataArray, image: xr.DataArray, dim: Hashable) -> xr.DataArray:
    """Pair the matrix's batch dims with the image's by label; return the matrix reordered.

    Batch dims the image lacks, or other labels, are an error that says how to pair them.
    """
    batch = [d for d in matrix.dims if d not in (matrix_in_dim(dim), dim)]
    for d in batch:
        if d not in image.dims:
            if d in image.coords and image[d].ndim == 0:
                hint = (
                    f"image has the scalar coord {d}={image[d].values}: select its matrix, "
                    f"e.g. matrix.sel({d}=image.{d})"
                )
            elif d in image.coords:  # e.g. a time coord along a frame dim
                hint = (
                    f"image has {d!r} as a coord along {image[d].dims}: select the matrices "
                    f"for it, e.g. matrix.sel({d}=image.{d})"
                )
            else:
                hint = f"select one, e.g. matrix.isel({d}=0), or give the image that dim"
            raise ValueError(
                f"matrix has batch dim {d!r} (size {matrix.sizes[d]}) but image has dims "
                f"{tuple(image.dims)}: each matrix must correct its own part of the image; {hint}"
            )
    return pair_by_label(
        matrix, image, batch, name="matrix", target_name="image", mismatch=_frames_differ
    )


def _frames_differ(d: Hashable, name: str, mine, target: str, theirs) -> str:
    """Say that a matrix labels a batch dim unlike the image (for ``pair_by_label``)."""
    return (
        f"{name} and {target} have different {d!r} coords ({len(mine)} labels: "
        f"{some(mine)} vs {len(theirs)}: {some(theirs)}); a matrix is paired with "
        f"the image by label. Give the image's labels to the matrix, e.g. "
        f"matrix.reindex({d}=image.{d}, method='nearest') or "
        f"matrix.interp({d}=image.{d})"
    )


def _plain_matrix(matrix) -> Any:
    """Return a matrix given as an array (or array-like) of real numbers, as an array."""
    if type(matrix).__module__ == "xccm.accessor":
        raise TypeError(
            "matrix is a .ccm accessor, not a matrix: in a Dataset, ds.ccm is the accessor "
            "even if a variable is named 'ccm'; use ds['ccm']"
        )
    if isinstance(matrix, xr.Dataset):
        matrices = [k for k, v in matrix.data_vars.items() if len(v.dims) >= 2]
        raise TypeError(
            "matrix must be a DataArray or an array, not a Dataset; select its matrix "
            f"variable, e.g. ds[{(matrices or ['ccm'])[0]!r}] (data variables: "
            f"{list(matrix.data_vars)})"
        )
    arr = asarray(matrix)
    require_real(arr, "matrix")
    return arr


def _match_rows(matrix: xr.DataArray, image: xr.DataArray, dim: Hashable) -> xr.DataArray:
    """Reorder labelled matrix rows to the image's channel order; refuse a mismatch."""
    in_dim = matrix_in_dim(dim)
    channels, rows = index_values(image, dim), index_values(matrix, in_dim)
    if channels is None or rows is None:
        return matrix
    n_in = len(channels)
    labels, extra = rows[:n_in], rows[n_in:]
    order = channel_order(
        labels,
        channels,
        name=f"matrix rows {in_dim!r}",
        target="image",
        dim=dim,
        hint=f", e.g. matrix.assign_coords({in_dim}=[str(c) for c in matrix.{in_dim}.values])",
    )
    if order is None:
        return matrix.drop_vars(in_dim)
    order += list(range(n_in, n_in + len(extra)))
    return matrix.isel({in_dim: order}).drop_vars(in_dim)
