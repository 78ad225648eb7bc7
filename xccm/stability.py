r"""Drift and change detection over a series of per-frame matrices.

:func:`drift` turns a series of matrices ``(time, channel_in, channel)`` into the colour
change it implies: a fixed set of camera colours is corrected by every frame's matrix and
compared, in CIEDE2000 (or another distance), with the same colours corrected by a
reference. Two robust statistics flag frames:

- **outliers** (bad frames: glare, occlusion, a failed fit): a frame's deviation from the
  frames around it, :math:`e_t = \min(\Delta E(c_t, \tilde c_{[t-h, t)}),\ \Delta E(c_t,
  \tilde c_{(t, t+h]}))`, with :math:`\tilde c` the median of the corrected colours over
  ``h = window`` frames before or after (the frame itself left out). Taking the nearer
  side keeps the frames next to a step from looking like outliers.
- **steps** (a change of white balance, exposure, lighting): the distance between the
  means of the ``h`` good frames before and from ``t`` on, :math:`s_t = \Delta E(\bar
  c_{[t-h, t)}, \bar c_{[t, t+h)})`, outliers left out. Its peak over a step is a triangle
  with its apex at the step's first frame; a step is flagged at local maxima only.

Each statistic is flagged where its robust z-score over the series, :math:`(x^{2/3} -
\mathrm{median}) / \hat s` with :math:`\hat s` the spread of the lower half
(:math:`(\mathrm{median} - q_{25}) / 0.6745`, a MAD that steps cannot inflate), exceeds
``threshold`` *and* the statistic exceeds its median by ``min_delta_e``. Why a robust
z-score on windowed statistics rather than a full change-point search (PELT, binary
segmentation): it is one pass, needs no penalty to tune beyond a z threshold (taken on
:math:`x^{2/3}`, where these positive, skewed ΔE statistics are near normal, as
Wilson–Hilferty's cube root makes a chi-square), is not thrown by the bad frames it
flags, and separates what a plain frame-to-frame ΔE confounds (a bad frame is two
jumps, a step one). A slow drift moves :math:`s_t` and :math:`e_t` by a near-constant
amount and is not flagged; it shows in ``delta_e``, the distance to the reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Literal

import numpy as np
import xarray as xr

from . import colorimetry
from .charts import chart
from .core import inverse, matrix_in_dim

__all__ = ["drift", "segments"]

_T = "__xccm_time__"
_C = "__xccm_colour__"
_IN = "__xccm_drift_in__"
_OUT = "__xccm_drift_out__"


def drift(
    matrix: xr.DataArray,
    colours: xr.DataArray | None = None,
    *,
    dim: Hashable = "channel",
    time_dim: Hashable | None = None,
    reference: int | Literal["median"] | xr.DataArray = 0,
    window: int = 10,
    threshold: float = 8.0,
    min_delta_e: float = 1.0,
    distance: str = "ciede2000",
    rgb_space: str | None = None,
    illuminant: str | tuple[float, ...] | None = None,
) -> xr.Dataset:
    r"""Colour change implied by a series of matrices, and the frames that jump.

    Parameters
    ----------
    matrix : DataArray
        Per-frame matrices ``(time, f"{dim}_in", dim)`` (other batch dims are kept: each
        series is judged on its own). Frames with a NaN matrix are flagged as outliers.
    colours : DataArray, optional
        Camera colours (with ``dim``, as the matrices' input) to correct. Default: the
        ColorChecker as the camera saw it at the reference, i.e. the chart's linear
        ``rgb_space`` colours mapped back through the reference matrix
        (:func:`xccm.inverse`), so that the reference frame reproduces the chart exactly and
        every ΔE reads as "how far this frame moves the chart". Needs an invertible
        (square, or affine with a square part) reference matrix; pass ``colours=`` (e.g.
        one frame's measured patches) otherwise.
    dim : hashable, default "channel"
    time_dim : hashable, optional
        The dim along the series; default the one batch dim (an error if several).
    reference : int, "median" or DataArray, default 0
        What ``delta_e`` compares against: a frame (position along ``time_dim``), the
        per-colour median over the series (``"median"``), or a matrix.
    window : int, default 10
        Frames on each side for the rolling medians and means (``h`` above). Steps less
        than ``window`` frames apart, or within 3 frames of either end of the series, are
        not separated.
    threshold : float, default 8.0
        Robust z-score above which a frame is flagged. On stable, noisy synthetic series
        of 1000 frames the largest is 4 to 6.5; a white-balance step of 8% scores 12 or
        more.
    min_delta_e : float, default 1.0
        Flag only statistics at least this much (ΔE units) above their median: with a
        very stable series a statistically clear but invisible change is not a jump.
    distance : str, default "ciede2000"
        A distance of :func:`xccm.delta_e`.
    rgb_space, illuminant : optional
        The linear RGB space the matrices map into and the Lab white: default
        ``matrix.attrs`` (``rgb_space``, ``lab_white_xy``), else sRGB under its own white.

    Returns
    -------
    Dataset
        Over the batch dims (and the colour dims for ``delta_e``):

        - ``delta_e`` ``(time, *colour dims)``: ΔE of each corrected colour from the
          reference; ``drift`` ``(time)``: its mean over the colours (the drift curve).
        - ``change`` ``(time)``: mean ΔE from the previous frame (NaN for the first).
        - ``deviation``, ``step_size`` ``(time)``: :math:`e_t` and :math:`s_t` above
          (mean ΔE over the colours); ``outlier_score``, ``step_score``: their robust
          z-scores.
        - ``outlier``, ``step`` (bool): the flags; ``flagged = outlier | step``, ready for
          :func:`xccm.plot.timeline`'s ``flags=``.

        Lazy for Dask-backed matrices: one task per series (the time dim is taken as one
        chunk; a series of matrices is small).

    Examples
    --------
    >>> import numpy as np, xarray as xr, xccm
    >>> rng = np.random.default_rng(0)
    >>> base = np.array([[1.2, -0.1, 0.0], [-0.1, 1.1, -0.1], [0.0, -0.1, 1.2]])
    >>> series = base + rng.normal(0, 0.002, (60, 3, 3))
    >>> series[30:] *= [1.1, 1.0, 0.9]  # a white-balance step at frame 30
    >>> series[12] += 0.2  # a bad frame
    >>> m = xr.DataArray(series, dims=("time", "channel_in", "channel"))
    >>> d = xccm.drift(m)
    >>> np.flatnonzero(d["step"].values), np.flatnonzero(d["outlier"].values)
    (array([30]), array([12]))
    >>> xccm.segments(d["step"]).values[[0, 29, 30, 59]]
    array([0, 0, 1, 1])
    """
    if not isinstance(matrix, xr.DataArray):
        raise TypeError(f"matrix must be a DataArray of per-frame matrices; got {type(matrix)}")
    in_dim = matrix_in_dim(dim)
    if in_dim not in matrix.dims or dim not in matrix.dims:
        raise ValueError(f"matrix must have dims {in_dim!r} and {dim!r}; got {matrix.dims}")
    batch = [x for x in matrix.dims if x not in (in_dim, dim)]
    if time_dim is None:
        if len(batch) != 1:
            raise ValueError(
                f"matrix has batch dims {tuple(batch)}; pass time_dim= to say which is the "
                "series (drift needs exactly one when time_dim is not given)"
            )
        time_dim = batch[0]
    elif time_dim not in batch:
        raise ValueError(f"time_dim {time_dim!r} is not a batch dim of matrix {tuple(batch)}")
    for name, value, low in (("window", window, 1), ("threshold", threshold, 0)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise TypeError(f"{name} must be a number; got {value!r}")
        if not value >= low:
            raise ValueError(f"{name} must be >= {low}; got {value!r}")
    if not min_delta_e >= 0:
        raise ValueError(f"min_delta_e must be >= 0; got {min_delta_e!r}")
    n_t = matrix.sizes[time_dim]
    rgb_space = rgb_space if rgb_space is not None else matrix.attrs.get("rgb_space", "sRGB")
    if illuminant is None and "lab_white_xy" in matrix.attrs:
        illuminant = tuple(float(v) for v in matrix.attrs["lab_white_xy"])
    measure = colorimetry.metric(distance, rgb_space, illuminant)

    if isinstance(reference, xr.DataArray):
        ref_matrix = reference
    elif isinstance(reference, str):
        if reference != "median":
            raise ValueError(f"reference must be a frame, 'median' or a matrix; got {reference!r}")
        ref_matrix = matrix.median([time_dim])
    elif isinstance(reference, int | np.integer) and not isinstance(reference, bool):
        if not -n_t <= reference < n_t:
            raise ValueError(f"reference frame {reference} is outside the {n_t} frames")
        ref_matrix = matrix.isel({time_dim: int(reference)})
    else:
        raise TypeError(f"reference must be an int, 'median' or a DataArray; got {reference!r}")
    if colours is None:
        checker = chart()
        source = colorimetry.space_of(
            checker, None, rgb_space="sRGB", argname="chart", dim="channel"
        )
        linear = xr.DataArray(
            colorimetry.convert_array(
                checker.values, source, colorimetry.Space("rgb", rgb_space=rgb_space)
            ),
            dims=("patch", dim),
            coords={"patch": checker["patch"].values},
        )
        ref_matrix = ref_matrix.drop_vars([dim], errors="ignore")
        wide = {x: ref_matrix.sizes[x] for x in ref_matrix.dims if x not in (in_dim, dim)}
        colours = inverse(linear.expand_dims(wide), ref_matrix, dim=dim)
    elif not isinstance(colours, xr.DataArray) or dim not in colours.dims:
        raise ValueError(f"colours must be a DataArray with dim {dim!r}; got {type(colours)}")
    if time_dim in colours.dims:
        raise ValueError(f"colours must not vary along {time_dim!r}: they are the fixed set")
    colour_dims = [x for x in colours.dims if x != dim and x not in batch]
    stacked = colours.stack({_C: colour_dims}) if colour_dims else colours.expand_dims(_C)
    stacked = stacked.rename({dim: _IN})
    if matrix.sizes[in_dim] not in (stacked.sizes[_IN], stacked.sizes[_IN] + 1):
        raise ValueError(
            f"colours have {stacked.sizes[_IN]} channels but the matrices take "
            f"{matrix.sizes[in_dim]} rows"
        )
    ref_matrix = ref_matrix.broadcast_like(matrix.isel({time_dim: 0}, drop=True))
    arrays = [matrix.rename({dim: _OUT}), ref_matrix.rename({dim: _OUT}), stacked]
    if any(a.chunks is not None for a in arrays):
        whole = dict.fromkeys((time_dim, in_dim, _OUT, _IN, _C), -1)
        arrays = [a.chunk({x: v for x, v in whole.items() if x in a.dims}) for a in arrays]
    outputs = xr.apply_ufunc(
        _drift_block,
        *arrays,
        input_core_dims=[[time_dim, in_dim, _OUT], [in_dim, _OUT], [_C, _IN]],
        output_core_dims=[[time_dim, _C]] + [[time_dim]] * 8,
        kwargs={
            "metric": measure,
            "h": int(window),
            "threshold": float(threshold),
            "min_delta_e": float(min_delta_e),
            "median_ref": isinstance(reference, str),
        },
        dask="parallelized",
        output_dtypes=[np.float64] * 7 + [bool] * 2,
    )
    names = (
        "delta_e",
        "change",
        "deviation",
        "step_size",
        "outlier_score",
        "step_score",
        "drift",
        "outlier",
        "step",
    )
    data = dict(zip(names, outputs, strict=True))
    de = data["delta_e"]
    if colour_dims:
        de = de.unstack(_C)
    else:
        de = de.isel({_C: 0}, drop=True)
    data["delta_e"] = de
    data["flagged"] = data["outlier"] | data["step"]
    out = xr.Dataset(data)
    out = out.assign_coords({time_dim: matrix[time_dim]} if time_dim in matrix.coords else {})
    out.attrs = {
        "distance": colorimetry.distance_name(distance),
        "window": int(window),
        "threshold": float(threshold),
        "min_delta_e": float(min_delta_e),
        "reference": reference if not isinstance(reference, xr.DataArray) else "matrix",
    }
    return out


def segments(step: xr.DataArray | xr.Dataset, name: str = "segment") -> xr.DataArray:
    """Return a segment id per frame: 0 up to the first flagged step, then 1, 2...

    Parameters
    ----------
    step : DataArray of bool, or the Dataset of :func:`drift`
        True at the first frame of each new segment (``drift(...)["step"]``).
    name : str, default "segment"

    Returns
    -------
    DataArray of int
        Over the same dims and coords, named ``name``: use it with ``groupby`` to refit
        per segment (see the README's recipe).

    Examples
    --------
    >>> import xarray as xr, xccm
    >>> steps = xr.DataArray([False, False, True, False, True], dims="time")
    >>> xccm.segments(steps).values
    array([0, 0, 1, 1, 2])
    """
    if isinstance(step, xr.Dataset):
        step = step["step"]
    if not isinstance(step, xr.DataArray) or step.dtype != bool or step.ndim != 1:
        raise TypeError(
            "step must be a one-dimensional boolean DataArray (drift(...)['step']) or the "
            f"Dataset drift returns; got {type(step).__name__}"
            + (f" of dtype {step.dtype} with dims {step.dims}" if hasattr(step, "dtype") else "")
        )
    seg = step.astype(np.int64).cumsum(step.dims[0])
    if step.size:  # a step flagged at the first frame starts segment 0, not 1
        seg = seg - step.isel({step.dims[0]: 0}, drop=True).astype(np.int64)
    return seg.rename(name)


# ---------------------------------------------------------------------------------------------
# numpy kernel


def _drift_block(m, m_ref, x, *, metric, h, threshold, min_delta_e, median_ref):
    """Per series: ``m (..., T, k, n)``, ``m_ref (..., k, n)``, ``x (..., C, n_in)``."""
    m = np.asarray(m, np.float64)
    m_ref = np.asarray(m_ref, np.float64)
    x = np.asarray(x, np.float64)
    if m.shape[-2] == x.shape[-1] + 1:  # affine: the offset row
        x = np.concatenate([x, np.ones((*x.shape[:-1], 1))], axis=-1)
    batch = np.broadcast_shapes(m.shape[:-3], np.shape(m_ref)[:-2], x.shape[:-2])
    m = np.broadcast_to(m, (*batch, *m.shape[-3:]))
    m_ref = np.broadcast_to(m_ref, (*batch, *np.shape(m_ref)[-2:]))
    x = np.broadcast_to(x, (*batch, *x.shape[-2:]))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN medians of failed frames
        c = np.einsum("...ci,...tij->...tcj", x, m)  # (..., T, C, n)
        lab = _lab(metric, c)
        if median_ref:
            ref_lab = _lab(metric, np.nanmedian(c, axis=-3))
        else:
            ref_lab = _lab(metric, np.einsum("...ci,...ij->...cj", x, m_ref))
        de = metric.distance(lab, ref_lab[..., None, :, :])
        bad = ~np.isfinite(c).all((-2, -1))  # (..., T)
        change = np.full(bad.shape, np.nan)
        change[..., 1:] = _mean_de(metric, lab[..., 1:, :, :], lab[..., :-1, :, :])
        before = _window(c, h, ahead=False, skip_self=True)
        after = _window(c, h, ahead=True, skip_self=True)
        dev = np.fmin(
            _mean_de(metric, lab, _lab(metric, np.nanmedian(before, axis=-1))),
            _mean_de(metric, lab, _lab(metric, np.nanmedian(after, axis=-1))),
        )
        outlier_score = _robust_z(dev)
        outlier = bad | _flag(dev, outlier_score, threshold, min_delta_e)
        good = np.where(outlier[..., None, None], np.nan, c)
        left = _window(good, h, ahead=False, skip_self=True)
        right = _window(good, h, ahead=True, skip_self=False)
        enough = (np.isfinite(left[..., 0, 0, :]).sum(-1) >= 3) & (
            np.isfinite(right[..., 0, 0, :]).sum(-1) >= 3
        )
        size = _mean_de(
            metric, _lab(metric, np.nanmean(left, axis=-1)), _lab(metric, np.nanmean(right, -1))
        )
        size = np.where(enough, size, np.nan)
        step_score = _robust_z(size)
        step = _flag(size, step_score, threshold, min_delta_e) & _local_max(size, h)
        drift_curve = np.nanmean(de, axis=-1)
    return (
        de,
        change,
        dev,
        size,
        outlier_score,
        step_score,
        drift_curve,
        outlier,
        step,
    )


def _lab(metric, rgb):
    return metric.transform(rgb)


def _mean_de(metric, a, b):
    return np.mean(metric.distance(a, b), axis=-1)


def _window(c: np.ndarray, h: int, *, ahead: bool, skip_self: bool) -> np.ndarray:
    """Return ``(..., T, C, n, h)``: the ``h`` frames before (or from, or after) each ``t``."""
    n_t = c.shape[-3]
    pad = np.full((*c.shape[:-3], h + 1, *c.shape[-2:]), np.nan)
    padded = np.concatenate([pad, c, pad], axis=-3)
    view = np.lib.stride_tricks.sliding_window_view(padded, h, axis=-3)
    # view[..., s, :, :, :] covers padded frames s .. s+h-1, i.e. frames s-h-1 .. s-2
    if ahead:
        start = h + 1 + (1 if skip_self else 0)
    else:
        start = 1 if skip_self else 2
    return view[..., start : start + n_t, :, :, :]


def _robust_z(x: np.ndarray) -> np.ndarray:
    """Robust z-score of ``x ** (2/3)`` along the last axis, NaN-aware; zero spread gives inf.

    ΔE statistics are positive and right-skewed (norms of noise, square roots of
    chi-square-like sums): ``x ** (2/3)``, Wilson–Hilferty's cube root of the square, is
    near normal. The spread is the lower half's, ``(median - q25) / 0.6745``
    (for normal data the same as ``1.4826 MAD``): steps and bad frames only ever add to the
    upper half, which in a short series they can fill a good part of.
    """
    x = x ** (2 / 3)
    med = np.nanmedian(x, axis=-1, keepdims=True)
    spread = (med - np.nanquantile(x, 0.25, axis=-1, keepdims=True)) / 0.6745
    excess = x - med
    z = np.where(spread > 0, excess / np.where(spread > 0, spread, 1.0), np.sign(excess) * np.inf)
    return np.where(np.isfinite(x), np.where(excess == 0, 0.0, z), np.nan)


def _flag(x, z, threshold, min_delta_e):
    med = np.nanmedian(x, axis=-1, keepdims=True)
    return (np.nan_to_num(z, nan=-np.inf) > threshold) & (np.nan_to_num(x - med) >= min_delta_e)


def _local_max(x: np.ndarray, h: int) -> np.ndarray:
    """Return where ``x`` is the largest within ``h - 1`` frames each side (first of ties)."""
    filled = np.where(np.isfinite(x), x, -np.inf)
    n_t = x.shape[-1]
    out = np.isfinite(x)
    for lag in range(1, h):
        if lag >= n_t:
            break
        earlier = np.full_like(filled, -np.inf)
        earlier[..., lag:] = filled[..., :-lag]
        later = np.full_like(filled, -np.inf)
        later[..., :-lag] = filled[..., lag:]
        out &= (filled > earlier) & (filled >= later)
    return out
