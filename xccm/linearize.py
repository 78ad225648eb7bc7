"""Linearisation: camera (encoded) values to linear values, and back.

A colour-correction matrix maps *linear* camera RGB onto linear reference RGB, so camera
values that went through a transfer function ("gamma") are linearised first. This module
offers the linearisations of OpenCV's ccm module:

- fixed curves, which need no data: ``"identity"``, ``"gamma"`` (``sign(x) |x|**γ``, as
  OpenCV's ``gammaCorrection``) and ``"srgb"`` (the IEC 61966-2-1 decoding);
- curves fitted on a chart with :func:`fit_linearization`: a polynomial per channel
  (``"color_polyfit"``), or one for all channels fitted on the neutral patches only
  (``"gray_polyfit"``), each also in log-log form (``"color_logpolyfit"``,
  ``"gray_logpolyfit"``).

:func:`linearize` applies any of them and :func:`encode` inverts them. Both work on
DataArrays (lazily for Dask), Datasets and plain arrays, and keep the floating dtype. The
fixed curves are plain NumPy; only fitting on a reference given in Lab or XYZ, and the
neutral-patch rule of the gray methods, use colour-science (through
:mod:`xccm.colorimetry`).
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar, cast, get_args

import numpy as np
import xarray as xr

from . import colorimetry, core
from ._labels import (
    align_by_label,
    asarray,
    borrow_labels,
    channel_order,
    check_data,
    check_integer,
    check_scale,
    index_values,
    match_labels,
    require_one_chunk,
    require_real,
    sample_array,
    wrap,
)

__all__ = [
    "FIT_METHODS",
    "GRAY_WEIGHTS",
    "LINEARIZATIONS",
    "encode",
    "fit_linearization",
    "linearize",
    "neutral_mask",
]

Linearization = Literal["identity", "srgb", "gamma"]
FitMethod = Literal["color_polyfit", "color_logpolyfit", "gray_polyfit", "gray_logpolyfit"]
T_Values = TypeVar("T_Values", xr.DataArray, xr.Dataset, np.ndarray)

#: The fixed curves, accepted as ``method=`` by :func:`linearize` and :func:`encode`.
LINEARIZATIONS: tuple[str, ...] = get_args(Linearization)
#: The fitted curves, accepted as ``method=`` by :func:`fit_linearization`.
FIT_METHODS: tuple[str, ...] = get_args(FitMethod)
#: Weights of R, G, B in the gray value the gray methods fit (OpenCV's ``rgb2gray``).
GRAY_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])

POWER = "power"  #: dim of the polynomial coefficients, lowest power first
#: attrs :func:`linearize` sets: the curve's name, and its parameters (a flat list of
#: floats: the exponent of a gamma curve, or a fitted curve's coefficients, channel by
#: channel in the order of the linearised values' channels, lowest power first)
LINEARIZATION, LINEARIZATION_COEFFICIENTS = "linearization", "linearization_coefficients"
#: coords of fitted coefficients: the range of measured values each curve was fitted on
INPUT_MIN, INPUT_MAX = "input_min", "input_max"
_C = "__xccm_lin_channel__"  # private core-dim name inside apply_ufunc
_N_GRID = 4096  # points of the table a fitted curve is inverted on
_NEWTON_STEPS = 2  # refinements of the tabulated inverse
_MONOTONE_TOL = 1e-3  # largest dip, relative to its rise, of a fitted curve encode inverts
_NEUTRAL_DELTA_E = 2.0  # OpenCV's getGray: CIEDE2000 to the gray of the same L* below this


# ---------------------------------------------------------------------------------------------
# curves


@dataclass(frozen=True)
class _Curve:
    """A linearisation: a fixed curve, or polynomial coefficients from a fit."""

    name: str
    gamma: float = 2.2
    coeffs: Any = None  # ndarray of a fitted curve: (degree + 1,) gray, (n_channels, degree + 1)
    labels: tuple | None = None  # channel labels of a colour curve's rows
    log: bool = False
    input_range: Any = None  # ndarray of a fitted curve: (2,) gray, (n_channels, 2): x range

    @property
    def per_channel(self) -> bool:
        return self.coeffs is not None and self.coeffs.ndim == 2

    def describe(self) -> str:
        if self.name == "gamma":
            return f"gamma {self.gamma:g}"
        if self.coeffs is not None:
            return f"{self.name} degree {self.coeffs.shape[-1] - 1}"
        return self.name

    def attrs(self) -> dict[str, object]:
        """Return what :func:`linearize` records of the curve: enough to evaluate it again."""
        out: dict[str, object] = {LINEARIZATION: self.describe()}
        if self.name == "gamma":
            out[LINEARIZATION_COEFFICIENTS] = [float(self.gamma)]
        elif self.coeffs is not None:  # flat, row by row: netCDF attrs hold 1-D lists only
            out[LINEARIZATION_COEFFICIENTS] = [float(v) for v in self.coeffs.ravel()]
        return out


def _horner(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``sum_k c[..., k] x**k``; ``c[..., k]`` broadcasts against ``x`` (channel last)."""
    out = np.zeros_like(x) + c[..., -1]
    for k in range(c.shape[-1] - 2, -1, -1):
        out = out * x + c[..., k]
    return out


def _poly_curve(x: np.ndarray, c: np.ndarray, log: bool) -> np.ndarray:
    """Evaluate a fitted curve: ``poly(x)``, or ``exp(poly(log x))`` for ``x > 0``, else 0."""
    if not log:
        return _horner(x, c)
    positive = x > 0
    with np.errstate(over="ignore"):
        y = np.exp(_horner(np.log(np.where(positive, x, 1)), c))
    return np.where(positive, y, np.where(np.isnan(x), x, 0))


def _poly_slope(x: np.ndarray, c: np.ndarray, log: bool) -> np.ndarray:
    """Evaluate the derivative of :func:`_poly_curve` (0 where a log curve is undefined)."""
    dc = c[..., 1:] * np.arange(1, c.shape[-1], dtype=c.dtype)
    if not log:
        return _horner(x, dc)
    positive = x > 0
    safe = np.where(positive, x, 1)
    lx = np.log(safe)
    with np.errstate(over="ignore", invalid="ignore"):
        slope = np.exp(_horner(lx, c)) * _horner(lx, dc) / safe
    return np.where(positive, slope, 0)


def _srgb_decode(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return np.copysign(np.where(a <= 0.04045, a / 12.92, ((a + 0.055) / 1.055) ** 2.4), x)


def _srgb_encode(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return np.copysign(np.where(a <= 0.0031308, a * 12.92, 1.055 * a ** (1 / 2.4) - 0.055), x)


def _invert_table(y: np.ndarray, grid: np.ndarray, table: np.ndarray, c, log) -> np.ndarray:
    """Invert an increasing tabulated curve at ``y``: linear interpolation, Newton steps.

    Values below ``table[0]`` or above ``table[-1]`` give ``grid[0]`` or ``grid[-1]``.
    Each Newton step is kept within the grid cell the interpolation found.
    """
    n = table.shape[-1]
    i = np.clip(np.searchsorted(table, y, side="right"), 1, n - 1)
    y0, y1, x0, x1 = table[i - 1], table[i], grid[i - 1], grid[i]
    rise = y1 - y0
    t = np.clip((y - y0) / np.where(rise > 0, rise, 1), 0, 1)
    x = x0 + t * (x1 - x0)
    for _ in range(_NEWTON_STEPS):
        slope = _poly_slope(x, c, log)
        ok = slope > 0
        with np.errstate(invalid="ignore", over="ignore"):
            step = np.where(ok, (_poly_curve(x, c, log) - y) / np.where(ok, slope, 1), 0)
        x = np.clip(x - step, x0, x1)
    return x


def _kernel(
    x: np.ndarray,
    *,
    curve: _Curve,
    inverse: bool,
    dtype: np.dtype,
    scale: float | None,
    tables: tuple[tuple[np.ndarray, np.ndarray], ...] = (),
) -> np.ndarray:
    """Apply ``curve`` (or its inverse) to a block; channel axis last for colour curves."""
    original = x
    x = x.astype(dtype, copy=False)
    if scale is not None:
        x = x * dtype.type(scale)
    if curve.name == "identity":
        return x.copy() if x is original else x  # never a view of the input
    if curve.name == "gamma":
        power = 1 / curve.gamma if inverse else curve.gamma
        return np.copysign(np.abs(x) ** dtype.type(power), x)
    if curve.name == "srgb":
        return _srgb_encode(x) if inverse else _srgb_decode(x)
    c = curve.coeffs.astype(dtype)
    if not inverse:
        return _poly_curve(x, c, curve.log)
    tables = tuple((g.astype(dtype), t.astype(dtype)) for g, t in tables)
    if not curve.per_channel:
        return _invert_table(x, *tables[0], c, curve.log)
    out = np.empty_like(x)
    for k in range(x.shape[-1]):
        out[..., k] = _invert_table(x[..., k], *tables[k], c[k], curve.log)
    return out


def _inverse_tables(curve: _Curve) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Tabulate each fitted curve where it can be inverted: ``(grid, values)`` per curve.

    The curve is evaluated on ``linspace(0, 1, 4096)``. Over the measured values it was
    fitted on it must increase, up to dips of at most 0.1% of its rise there, which are
    flattened (ValueError otherwise); the table extends beyond them for as long as the
    curve keeps rising.
    """
    grid = np.linspace(0, 1, _N_GRID)
    coeffs = curve.coeffs if curve.per_channel else curve.coeffs[None]
    ranges = curve.input_range if curve.per_channel else curve.input_range[None]
    out = []
    for k, (c, (low, high)) in enumerate(zip(coeffs, ranges, strict=True)):
        table = _poly_curve(grid, c, curve.log)
        first = int(np.clip(np.searchsorted(grid, low, side="right") - 1, 0, _N_GRID - 2))
        last = int(np.clip(np.searchsorted(grid, high, side="left"), first + 1, _N_GRID - 1))
        fitted = table[first : last + 1]
        drop = np.maximum.accumulate(fitted) - fitted
        rise = fitted[-1] - fitted[0]
        if not np.all(np.isfinite(fitted)) or rise <= 0 or drop.max() > _MONOTONE_TOL * rise:
            which = (
                f"for channel {curve.labels[k] if curve.labels else k!r} "
                if curve.per_channel
                else ""
            )
            falls = drop > _MONOTONE_TOL * rise if rise > 0 else np.diff(fitted, append=0) <= 0
            where = first + int(np.argmax(falls))
            raise ValueError(
                f"the fitted {curve.name} curve {which}does not increase over the measured "
                f"values it was fitted on, [{low:.4g}, {high:.4g}] (it falls near x = "
                f"{grid[where]:.4g}), so it cannot be inverted; fit a lower degree=, use "
                "another method, or mask the patches that bend it"
            )
        # the fitted range extended while the curve keeps rising, with small dips flattened
        # so that the table never decreases
        rising = np.diff(table) > 0  # rising[i]: table[i] < table[i + 1]
        stops = np.flatnonzero(~rising[:first])
        start = int(stops[-1]) + 1 if stops.size else 0
        stops = np.flatnonzero(~rising[last:])
        stop = last + int(stops[0]) if stops.size else _N_GRID - 1
        table = np.maximum.accumulate(table[start : stop + 1])
        out.append((grid[start : stop + 1], table))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# linearize / encode


def linearize(
    x: T_Values,
    method: Linearization | str | xr.DataArray = "gamma",
    *,
    gamma: float = 2.2,
    dim: Hashable = "channel",
    scale: float | None = None,
) -> T_Values:
    r"""Linearise camera values: map encoded (e.g. gamma-corrected) values to linear ones.

    Parameters
    ----------
    x : DataArray, Dataset or ndarray
        Camera values, any dims. Only a per-channel fitted curve needs the channel dim
        ``dim`` (which must then be one chunk for Dask). For a Dataset every data variable
        with ``dim`` is linearised and the others are copied. An ndarray has its channel
        axis last.
    method : {"identity", "srgb", "gamma"} or DataArray, default "gamma"
        ``"identity"``: no change. ``"gamma"``: :math:`\operatorname{sign}(x)|x|^\gamma`
        (OpenCV's ``gammaCorrection``). ``"srgb"``: the IEC 61966-2-1 decoding,
        :math:`x / 12.92` for :math:`x \le 0.04045`, else
        :math:`((x + 0.055) / 1.055)^{2.4}`, odd-symmetric for negative values. Or the
        coefficients returned by :func:`fit_linearization`: a per-channel curve is matched
        to ``x``'s channels by label where both have labels (by position otherwise); a gray
        curve is applied to every value.
    gamma : float, default 2.2
        The exponent of ``"gamma"`` (OpenCV's default), positive.
    dim : hashable, default "channel"
        The channel dim.
    scale : float, optional
        Multiply ``x`` by ``scale`` first, e.g. ``1 / 255`` or ``1 / 65535`` for integer
        images. Integer input needs it (except with ``"identity"``). One finite positive
        number (or a 0-d array of one, lazy too), as for :func:`xccm.apply`.

    Returns
    -------
    DataArray, Dataset or ndarray
        Same type, dims, coords, chunks, name and attrs, with ``attrs["linearization"]``
        recording the curve (e.g. ``"gamma 2.2"``). Floating input keeps its dtype
        (float32 is computed in float32); scaled integer input becomes float32; integer
        input with ``"identity"`` and no ``scale`` is returned as it is. Dask-backed input
        stays lazy.

    Raises
    ------
    ValueError
        On an unknown method, a non-positive ``gamma``, a ``scale`` that is not finite and
        positive (for a lazy 0-d ``scale``, on compute), malformed
        coefficients, or a per-channel curve that does not match ``x``'s channels.
    TypeError
        If ``x`` is not real numeric, or is integer without ``scale``, or ``scale`` is not
        one real number.

    See Also
    --------
    encode : the inverse.
    fit_linearization : fit a curve on a chart.

    Examples
    --------
    >>> v = xr.DataArray([[0.5, 0.25, 1.0]], dims=("patch", "channel"))
    >>> lin = linearize(v, "gamma", gamma=2.0)
    >>> lin.values.tolist(), lin.attrs["linearization"]
    ([[0.25, 0.0625, 1.0]], 'gamma 2')
    >>> linearize(np.array([0, 128, 255], dtype=np.uint8), "srgb", scale=1 / 255).dtype
    dtype('float32')
    """
    return _transform(x, method, gamma=gamma, dim=dim, scale=scale, inverse=False)


def encode(
    x: T_Values,
    method: Linearization | str | xr.DataArray = "gamma",
    *,
    gamma: float = 2.2,
    dim: Hashable = "channel",
    scale: float | None = None,
) -> T_Values:
    r"""Encode linear values: the inverse of :func:`linearize`.

    ``"gamma"`` gives :math:`\operatorname{sign}(x)|x|^{1/\gamma}`, ``"srgb"`` the
    IEC 61966-2-1 encoding (:math:`12.92 x` for :math:`x \le 0.0031308`, else
    :math:`1.055 x^{1/2.4} - 0.055`, odd-symmetric), ``"identity"`` nothing. A curve from
    :func:`fit_linearization` is inverted numerically: it is tabulated on 4096 points of
    the input range [0, 1], interpolated the other way and refined by Newton steps, so
    ``encode(linearize(x, c), c)`` equals ``x`` to about 1e-12 in float64 wherever the
    curve increases. Over the measured values it was fitted on (coords ``input_min`` and
    ``input_max`` of the coefficients; [0, 1] if absent) the curve must increase, up to
    dips of 0.1% of its rise (a cubic fitted to a gamma curve often dips slightly near 0).
    It is inverted over that range, extended within [0, 1] for as long as the curve keeps
    rising; linear values beyond the curve's values there are clamped to its ends.

    Parameters
    ----------
    x : DataArray, Dataset or ndarray
        Linear values; see :func:`linearize`.
    method, gamma, dim, scale
        As for :func:`linearize` (``scale`` multiplies the linear values first).

    Returns
    -------
    DataArray, Dataset or ndarray
        Same type, dims, coords, chunks, name and floating dtype, as :func:`linearize`;
        ``attrs["linearization"]`` is removed (the values are no longer linear).

    Raises
    ------
    ValueError
        As :func:`linearize`; also if a fitted curve does not increase over the measured
        values it was fitted on, and so cannot be inverted.
    TypeError
        As :func:`linearize`.

    Examples
    --------
    >>> lin = xr.DataArray([0.25, 0.0625, 1.0], dims="pixel")
    >>> encode(lin, "gamma", gamma=2.0).values.tolist()
    [0.5, 0.25, 1.0]
    >>> v = np.array([[0.1, 0.5, 0.9]])
    >>> bool(np.allclose(encode(linearize(v, "srgb"), "srgb"), v, rtol=0, atol=1e-12))
    True
    """
    return _transform(x, method, gamma=gamma, dim=dim, scale=scale, inverse=True)


def _transform(x, method, *, gamma, dim, scale, inverse: bool):
    if isinstance(x, xr.Dataset):
        func = encode if inverse else linearize
        return core.map_dataset(func, x, method, gamma=gamma, scale=scale, dim=dim)
    if not isinstance(x, xr.DataArray):
        return _transform_array(x, method, gamma=gamma, dim=dim, scale=scale, inverse=inverse)
    curve = _as_curve(method, gamma, dim)
    scale = check_scale(scale)
    require_real(x, "x")
    if x.dtype.kind == "f":
        dtype = x.dtype
    elif scale is not None:
        dtype = np.dtype(np.float32)
    elif curve.name == "identity":
        dtype = x.dtype
    else:
        raise TypeError(
            f"x has integer dtype {x.dtype}, but {curve.describe()!r} works on values in "
            "[0, 1]; pass scale= to map the integer range there, e.g. scale=1/255 for 8-bit "
            "or scale=1/65535 for 16-bit images"
        )
    if curve.per_channel:
        curve = _match_channels(x, curve, dim)
    source = x
    if scale is not None and not isinstance(scale, numbers.Real):  # a 0-d array, maybe lazy
        value = scale if isinstance(scale, xr.DataArray) else xr.DataArray(scale)
        x = x.astype(dtype) * value.reset_coords(drop=True).astype(dtype)
        scale = None
    kwargs = {"curve": curve, "inverse": inverse, "dtype": dtype, "scale": scale}
    if inverse and curve.coeffs is not None:
        kwargs["tables"] = _inverse_tables(curve)
    if curve.per_channel:
        out = xr.apply_ufunc(
            _kernel,
            x.rename({dim: _C}),
            input_core_dims=[[_C]],
            output_core_dims=[[_C]],
            kwargs=kwargs,
            dask="parallelized",
            output_dtypes=[dtype],
            keep_attrs=True,
        )
        out = out.rename({_C: dim}).transpose(*x.dims)
    else:
        out = xr.apply_ufunc(
            _kernel,
            x,
            kwargs=kwargs,
            dask="parallelized",
            output_dtypes=[dtype],
            keep_attrs=True,
        )
    attrs = dict(source.attrs)
    attrs.pop(LINEARIZATION, None)
    attrs.pop(LINEARIZATION_COEFFICIENTS, None)
    if not inverse:
        attrs.update(curve.attrs())
    out.attrs = attrs
    out.name = source.name
    return out


def _transform_array(x, method, *, gamma, dim, scale, inverse: bool):
    """:func:`linearize` / :func:`encode` on a plain (NumPy or Dask) array, channel last."""
    arr = asarray(x)
    labelled = wrap(arr, (dim,)) if arr.ndim else xr.DataArray(arr)
    out = _transform(labelled, method, gamma=gamma, dim=dim, scale=scale, inverse=inverse)
    return out.data


def _as_curve(method, gamma, dim: Hashable) -> _Curve:
    if isinstance(method, xr.DataArray):
        return _curve_from_coeffs(method, dim)
    if not isinstance(method, str) or method not in LINEARIZATIONS:
        raise ValueError(
            f"unknown method {method!r}; expected one of {LINEARIZATIONS}, or the "
            "coefficients DataArray returned by fit_linearization"
        )
    if method == "gamma":
        if isinstance(gamma, bool) or not isinstance(gamma, int | float | np.integer | np.floating):
            raise TypeError(f"gamma must be a number; got {type(gamma).__name__}")
        if not (np.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a finite positive number; got {gamma!r}")
        return _Curve("gamma", gamma=float(gamma))
    return _Curve(method)


def _curve_from_coeffs(coeffs: xr.DataArray, dim: Hashable) -> _Curve:
    """Validate coefficients from :func:`fit_linearization`."""
    kind = coeffs.attrs.get("method")
    if kind not in FIT_METHODS:
        raise ValueError(
            f"coefficients must come from fit_linearization: attrs['method'] must be one of "
            f"{FIT_METHODS}; got {kind!r}"
        )
    gray = kind.startswith("gray")
    expected = (POWER,) if gray else (dim, POWER)
    if set(coeffs.dims) != set(expected):
        raise ValueError(
            f"{kind} coefficients must have dims {expected}; got {tuple(coeffs.dims)}"
            + ("" if gray else ". Were they fitted with another dim=?")
        )
    require_real(coeffs, "coefficients")
    n = coeffs.sizes[POWER]
    if n < 2:
        raise ValueError(f"coefficients need at least 2 powers (degree >= 1); got {n}")
    if POWER in coeffs.indexes and coeffs.indexes[POWER].tolist() != list(range(n)):
        raise ValueError(
            f"coefficients' {POWER!r} coords must be 0..{n - 1}, lowest power first; "
            f"got {coeffs.indexes[POWER].tolist()}"
        )
    values = np.asarray(coeffs.transpose(*expected).values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("coefficients must be finite")
    labels = None if gray else index_values(coeffs, dim)
    shape = values.shape[:-1]
    if INPUT_MIN in coeffs.coords and INPUT_MAX in coeffs.coords:
        bounds = [coeffs.coords[k].transpose(*expected[:-1]).values for k in (INPUT_MIN, INPUT_MAX)]
        ranges = np.stack(np.broadcast_arrays(*bounds), axis=-1).astype(np.float64)
        if ranges.shape != (*shape, 2) or not np.all(ranges[..., 0] <= ranges[..., 1]):
            raise ValueError(
                f"coefficients' {INPUT_MIN!r} and {INPUT_MAX!r} coords must give, per curve, "
                f"the range of measured values fitted, low <= high; got {ranges.tolist()}"
            )
    else:  # curves not from fit_linearization: the whole input range [0, 1]
        ranges = np.broadcast_to([0.0, 1.0], (*shape, 2))
    return _Curve(
        kind,
        coeffs=values,
        labels=tuple(labels) if labels else None,
        log="log" in kind,
        input_range=ranges,
    )


def linear_bounds(
    values: xr.DataArray, low: float, high: float, *, dim: Hashable = "channel"
) -> tuple[xr.DataArray | float, xr.DataArray | float, str | None]:
    """Where encoded values in ``[low, high]`` lie in ``values``, linearised by :func:`linearize`.

    OpenCV's ccm module takes its saturation range on the camera values as encoded (before
    linearisation). For values that :func:`linearize` produced, this maps that range through
    the curve it recorded in ``values.attrs``: the bounds are the lowest and highest values
    of the curve over ``[low, high]``. For an increasing curve a value was encoded in
    ``[low, high]`` exactly when it lies between them; a fitted curve that dips a little
    near black keeps every value encoded in the range.

    Returns
    -------
    (low, high, curve)
        The bounds in ``values``' units (per channel for a per-channel curve, as DataArrays
        over ``dim``; floats otherwise) and the curve's name; or ``low``, ``high`` and None
        when ``values`` records no linearisation (or ``"identity"``): they are then taken as
        they are.

    Raises
    ------
    ValueError
        If the recorded curve is malformed, or does not rise to its top at ``high``.
    """
    name = values.attrs.get(LINEARIZATION)
    if not isinstance(name, str) or name == "identity":
        return low, high, None
    curve = _curve_from_attrs(values, name, dim)
    grid = np.linspace(low, high, 1025)
    rows = range(len(curve.coeffs)) if curve.per_channel else [None]
    on_grid = np.stack([_evaluate(grid, curve, k) for k in rows])
    # Fitted curves may dip a little near black; what counts is that values encoded in the
    # range land between the curve's lowest and highest values there, and that the curve
    # rises to its top at ``high`` (so that brighter, saturated values land above it).
    mapped = np.stack([on_grid.min(axis=-1), on_grid.max(axis=-1)], axis=-1)
    rise = mapped[:, 1] - mapped[:, 0]
    if not (np.all(np.isfinite(mapped)) and np.all(on_grid[:, -1] >= mapped[:, 1] - 1e-3 * rise)):
        raise ValueError(
            f"the linearisation measured records ({name}) does not rise to its highest value "
            f"at the top of the saturation range [{low:g}, {high:g}], so the range cannot be "
            "mapped through it; pass saturation=None and a mask= of the encoded values, e.g. "
            "mask=xccm.saturation_mask(encoded)"
        )
    if curve.per_channel:
        return (
            xr.DataArray(mapped[:, 0], dims=(dim,)),
            xr.DataArray(mapped[:, 1], dims=(dim,)),
            name,
        )
    return float(mapped[0, 0]), float(mapped[0, 1]), name


def _evaluate(x: np.ndarray, curve: _Curve, row: int | None) -> np.ndarray:
    """Evaluate the curve (row ``row`` of a per-channel one) at ``x``, in float64."""
    if row is not None:
        curve = replace(curve, coeffs=curve.coeffs[row])
    return _kernel(x, curve=curve, inverse=False, dtype=np.dtype(np.float64), scale=None)


def _curve_from_attrs(values: xr.DataArray, name: str, dim: Hashable) -> _Curve:
    """Rebuild the curve :func:`linearize` recorded in ``values.attrs``."""
    params = values.attrs.get(LINEARIZATION_COEFFICIENTS)
    try:
        curve = _parse_curve(name, params, values.sizes.get(dim))
    except (TypeError, ValueError, IndexError):
        curve = None
    if curve is None:
        raise ValueError(
            f"measured.attrs record the linearisation {name!r} with parameters {params!r}, "
            "which do not describe a curve that linearize makes; fix or remove "
            f"attrs[{LINEARIZATION!r}] and attrs[{LINEARIZATION_COEFFICIENTS!r}]"
        )
    return curve


def _parse_curve(name: str, params, n_channels: int | None) -> _Curve | None:
    """Return the curve ``name`` with parameters ``params`` (as :meth:`_Curve.attrs`), or None."""
    kind, _, rest = name.partition(" ")
    flat: np.ndarray | None = None if params is None else np.asarray(params, np.float64).ravel()
    if kind == "srgb" and not rest:
        return _Curve("srgb")
    if kind == "gamma":
        return _Curve("gamma", gamma=float(flat[0]) if flat is not None else float(rest))
    if kind not in FIT_METHODS or flat is None or not rest.startswith("degree "):
        return None
    powers = int(rest.split()[-1]) + 1
    if kind.startswith("color"):
        flat = flat.reshape(cast(int, n_channels), powers)  # given for a colour curve
    elif flat.size != powers:
        return None
    return _Curve(kind, coeffs=flat, log="log" in kind)


def _match_channels(x: xr.DataArray, curve: _Curve, dim: Hashable) -> _Curve:
    """Reorder a per-channel curve to ``x``'s channels; same number and labels required."""
    n = curve.coeffs.shape[0]
    if dim not in x.dims:
        raise ValueError(
            f"x has no dim {dim!r} (its dims are {tuple(x.dims)}), but {curve.name} "
            f"coefficients hold one curve per channel; use dim= to name the channel dim"
        )
    if x.sizes[dim] != n:
        raise ValueError(
            f"{curve.name} coefficients hold {n} channel curves but x has {x.sizes[dim]} "
            f"channels along {dim!r}"
        )
    channels = index_values(x, dim)
    labels = None if curve.labels is None else list(curve.labels)
    order = channel_order(labels, channels, name="coefficients", target="x", dim=dim)
    if order is not None:
        curve = replace(
            curve,
            coeffs=curve.coeffs[order],
            labels=tuple(channels or ()),
            input_range=curve.input_range[order],
        )
    require_one_chunk(x, dim, "x")
    return curve


# ---------------------------------------------------------------------------------------------
# fitting


def neutral_mask(
    reference: xr.DataArray,
    threshold: float = _NEUTRAL_DELTA_E,
    *,
    dim: Hashable = "channel",
    reference_space: str | colorimetry.Space | None = None,
    rgb_space: str = "sRGB",
) -> xr.DataArray:
    """Which reference colours are neutral (gray), by OpenCV's ``getGray`` rule.

    A colour is neutral when its CIEDE2000 difference from the gray of the same lightness,
    ``(L*, 0, 0)``, is below ``threshold``, in CIE L*a*b* under D65. The gray methods of
    :func:`fit_linearization` fit on these patches only.

    Parameters
    ----------
    reference : DataArray
        Reference colours (e.g. :func:`xccm.chart`), in ``reference_space`` or the space
        of its attrs (linear ``rgb_space`` if neither says).
    threshold : float, default 2
        The CIEDE2000 limit (OpenCV's ``JDN``).
    dim : hashable, default "channel"
    reference_space, rgb_space : str, optional
        As for :func:`xccm.colorimetry.convert` (``source`` and ``rgb_space``).

    Returns
    -------
    DataArray of bool
        ``reference`` without ``dim``, named ``"neutral"``. Lazy for Dask input.

    Examples
    --------
    >>> import xccm
    >>> neutral = neutral_mask(xccm.chart(edition="opencv"))
    >>> [str(p) for p in neutral.patch[neutral].values]  # doctest: +NORMALIZE_WHITESPACE
    ['white 9.5 (.05 D)', 'neutral 8 (.23 D)', 'neutral 6.5 (.44 D)', 'neutral 5 (.70 D)',
     'neutral 3.5 (1.05 D)', 'black 2 (1.5 D)']

    The white of the current (2014) ColorChecker data is too yellow for this rule
    (b* = 2.93, ΔE00 = 3.25), so only the five others pass; OpenCV's built-in charts carry
    their own list of gray patches instead (pass it as ``neutral=`` to
    :func:`fit_linearization`):

    >>> int(neutral_mask(xccm.chart(edition="2014")).sum())
    5
    """
    if not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a finite positive ΔE; got {threshold!r}")
    lab = colorimetry.convert(
        reference,
        colorimetry.Space("lab", illuminant="D65"),
        dim=dim,
        source=reference_space,
        rgb_space=rgb_space,
    )

    def distance_to_gray(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        gray = values * np.array([1.0, 0.0, 0.0])
        return colorimetry.lab_delta_e(values, gray, "ciede2000")

    de = xr.apply_ufunc(
        distance_to_gray,
        lab.rename({dim: _C}),
        input_core_dims=[[_C]],
        dask="parallelized",
        output_dtypes=[np.float64],
    )
    out = de < threshold
    out.name = "neutral"
    out.attrs = {"delta_e": "ciede2000", "threshold": float(threshold), "lab_white": "D65"}
    return out


def fit_linearization(
    measured: xr.DataArray,
    reference: xr.DataArray,
    method: FitMethod | str = "color_polyfit",
    *,
    degree: int = 3,
    dim: Hashable = "channel",
    rgb_space: str = "sRGB",
    reference_space: str | None = None,
    mask: xr.DataArray | np.ndarray | None = None,
    neutral: xr.DataArray | np.ndarray | None = None,
) -> xr.DataArray:
    r"""Fit a linearisation curve on a chart, as OpenCV's ccm module does.

    The reference is converted to linear ``rgb_space`` and a polynomial of degree
    ``degree`` is fitted by least squares from the measured (encoded) camera values:

    - ``"color_polyfit"``: per channel, ``measured[..., c]`` to the linear reference
      ``[..., c]``;
    - ``"color_logpolyfit"``: the same in log-log, on the pairs with both values > 0;
      the curve is ``exp(poly(log x))`` for ``x > 0`` and 0 otherwise;
    - ``"gray_polyfit"``, ``"gray_logpolyfit"``: one curve for all channels, fitted on the
      neutral patches only (see :func:`neutral_mask`), from the measured gray
      ``0.2126 R + 0.7152 G + 0.0722 B`` (OpenCV's ``rgb2gray``) to the reference
      luminance Y (CIE XYZ under ``rgb_space``'s white).

    Parameters
    ----------
    measured : DataArray
        Camera values of one chart: the patch dim(s) of ``reference`` and ``dim`` (3
        channels, R, G, B), nothing else. Compute it (it is small) if Dask-backed: it is
        read eagerly.
    reference : DataArray
        Reference colours of the same patches (same coords, paired by label), e.g.
        :func:`xccm.chart`, in ``reference_space`` or the space of its attrs
        (linear ``rgb_space`` if neither says).
    method : {"color_polyfit", "color_logpolyfit", "gray_polyfit", "gray_logpolyfit"}
    degree : int, default 3
        Degree of the polynomial, at least 1 (OpenCV's default is 3).
    dim : hashable, default "channel"
    rgb_space : str, default "sRGB"
        The linear RGB space the curve maps into (a :mod:`xccm.colorimetry` name).
    reference_space : str, optional
        Overrides ``reference.attrs["space"]`` (``"lab-d50"``, ``"srgb-linear"``...).
    mask : DataArray or ndarray of bool, optional
        True for the patches to use, over the patch dims (e.g.
        ``xccm.weights.saturation_mask(measured)``, as OpenCV leaves out patches outside
        [0, 0.98]). Patches with a non-finite value are always left out.
    neutral : DataArray or ndarray of bool, optional
        The neutral patches the gray methods fit on, over the patch dims. Default:
        :func:`neutral_mask` of ``reference`` (OpenCV's rule for charts without a list of
        gray patches). OpenCV's built-in charts list theirs; for the ColorChecker Classic
        that is the bottom row, ``neutral=ref.patch.isin(ref.patch[-6:])``, whose white the
        rule leaves out for the 2014 data. Ignored by the colour methods.

    Returns
    -------
    DataArray
        float64 coefficients, lowest power first: dims ``(dim, "power")`` for the colour
        methods (with ``measured``'s channel coords) and ``("power",)`` for the gray ones,
        ``"power"`` coords ``0..degree``, attrs ``method``, ``degree`` and ``rgb_space``, and
        coords ``input_min`` and ``input_max`` (per channel, or scalar for the gray methods):
        the range of measured values fitted, over which :func:`encode` inverts the curve.
        Pass it as ``method=`` to :func:`linearize` or :func:`encode`.

    Raises
    ------
    ValueError
        On an unknown method, ``degree < 1``, dims other than the patch dims and ``dim``,
        unpaired patches, or too few usable patches: a fit of degree ``n`` needs ``n + 1``
        distinct measured values (for the gray methods, among the neutral patches; for the
        log methods, among the pairs with both values > 0).
    TypeError
        If ``measured`` or ``reference`` is not a DataArray, ``measured`` is not floating
        (scale integer values to [0, 1] first), ``degree`` is not an integer, or ``mask`` or
        ``neutral`` is not boolean.

    Examples
    --------
    >>> import xccm
    >>> ref = xccm.chart()
    >>> camera = linearize(ref.clip(0, 1), "gamma", gamma=1 / 2.2)  # a 2.2-gamma camera
    >>> c = fit_linearization(camera, ref, "color_logpolyfit", degree=1)
    >>> c.dims, (c.sel(channel="G").round(3) + 0.0).values.tolist()
    (('channel', 'power'), [0.0, 2.2])
    >>> bool(abs(linearize(camera, c) - ref.clip(0, 1)).max() < 1e-9)
    True
    """
    if not isinstance(method, str) or method not in FIT_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {FIT_METHODS}")
    degree = check_integer(degree, "degree", minimum=1)
    for name, obj in (("measured", measured), ("reference", reference)):
        if not isinstance(obj, xr.DataArray):
            raise TypeError(
                f"{name} must be a DataArray, got {type(obj).__name__}; wrap it with "
                f"xr.DataArray(values, dims=('patch', {dim!r}))"
            )
        check_data(obj, name, dim)
        if obj.sizes[dim] != 3:
            raise ValueError(
                f"{name} must have 3 channels (R, G, B) along {dim!r}; got {obj.sizes[dim]}"
            )
    if measured.dtype.kind != "f":
        raise TypeError(
            f"measured has dtype {measured.dtype}; fitted curves work on values in [0, 1], so "
            "scale integer values there first, e.g. measured / 255"
        )
    samples = _patch_dims(measured, reference, dim)
    measured = borrow_labels(measured, reference, samples)
    measured, reference = align_by_label([measured, reference], samples, skip=(dim,))
    cs = colorimetry.rgb_colourspace(rgb_space)
    source = colorimetry.space_of(
        reference, reference_space, rgb_space=cs.name, argname="reference", dim=dim
    )
    ref_rgb = colorimetry.convert(reference, "rgb", dim=dim, source=source, rgb_space=cs.name)
    order = (*samples, dim)
    s = np.asarray(measured.transpose(*order).values, dtype=np.float64).reshape(-1, 3)
    r = np.asarray(ref_rgb.transpose(*order).values, dtype=np.float64).reshape(-1, 3)
    n_total = s.shape[0]
    valid = np.all(np.isfinite(s), axis=-1) & np.all(np.isfinite(r), axis=-1)
    if mask is not None:
        valid &= _mask_values(mask, measured, samples, "mask")
    if not valid.any():
        raise ValueError(
            f"no usable patch: all {n_total} patches are masked or have a non-finite "
            "measured or reference value"
        )
    log = "log" in method
    if method.startswith("gray"):
        if neutral is None:
            rule = f"CIEDE2000 < {_NEUTRAL_DELTA_E:g} from gray in Lab D65"
            neutral = neutral_mask(reference, dim=dim, reference_space=source, rgb_space=cs.name)
        else:
            rule = "given as neutral="
        grays = _mask_values(neutral, measured, samples, "neutral")
        use = valid & grays
        context = (
            f"gray methods fit on the neutral patches only: {int(grays.sum())} of {n_total} are "
            f"neutral ({rule}), {int(use.sum())} of them usable (finite and unmasked)"
        )
        luminance = colorimetry.to_xyz_matrix(cs.name, np.asarray(cs.whitepoint), "Bradford")[1]
        coeffs, ranges = _polyfit(
            s[use] @ GRAY_WEIGHTS, r[use] @ luminance, degree, log, method, context
        )
        dims: tuple[Hashable, ...] = (POWER,)
        coords: dict[Hashable, Any] = {INPUT_MIN: ranges[0], INPUT_MAX: ranges[1]}
    else:
        labels = index_values(measured, dim) or [0, 1, 2]
        rows = []
        for k in range(3):
            context = (
                f"channel {labels[k]!r}: {int(valid.sum())} of {n_total} patches are usable "
                "(finite and unmasked)"
            )
            rows.append(_polyfit(s[valid, k], r[valid, k], degree, log, method, context))
        coeffs = np.stack([c for c, _ in rows])
        ranges = np.stack([lim for _, lim in rows])
        dims = (dim, POWER)
        coords = {dim: measured.coords[dim].values} if dim in measured.indexes else {}
        coords[INPUT_MIN] = (dim, ranges[:, 0])
        coords[INPUT_MAX] = (dim, ranges[:, 1])
    coords[POWER] = np.arange(degree + 1)
    return xr.DataArray(
        coeffs,
        dims=dims,
        coords=coords,
        name="linearization",
        attrs={"method": method, "degree": degree, "rgb_space": cs.name},
    )


def _polyfit(x, y, degree: int, log: bool, method: str, context: str):
    """Least-squares polynomial (lowest power first), in log-log for ``log``.

    Returns the coefficients and the (min, max) of the measured values fitted.
    """
    if log:
        positive = (x > 0) & (y > 0)
        if not positive.any():
            raise ValueError(
                f"{method} fits in log-log, but no usable patch has measured and reference "
                f"both > 0 ({context}); use the non-log method"
            )
        context += f", {int(positive.sum())} with measured and reference both > 0"
        x, y = x[positive], y[positive]
    distinct = np.unique(x).size
    if distinct < degree + 1:
        raise ValueError(
            f"{method} of degree {degree} needs at least {degree + 1} usable patches with "
            f"distinct measured values; {context}, with {distinct} distinct values. "
            "Lower degree= or use more patches"
        )
    if log:
        coeffs = np.polynomial.polynomial.polyfit(np.log(x), np.log(y), degree)
    else:
        coeffs = np.polynomial.polynomial.polyfit(x, y, degree)
    return coeffs, np.array([x.min(), x.max()])


def _patch_dims(measured: xr.DataArray, reference: xr.DataArray, dim: Hashable) -> tuple:
    """Return the patch dims (reference's dims but ``dim``); measured must have just them."""
    samples = tuple(d for d in reference.dims if d != dim)
    if not samples:
        raise ValueError(
            f"reference has no dim besides {dim!r} (its dims are {tuple(reference.dims)}); "
            "it needs a patch dim"
        )
    extra = [d for d in measured.dims if d not in reference.dims]
    if extra:
        raise ValueError(
            f"measured has dims {tuple(extra)} that reference lacks; fit_linearization fits "
            f"one curve per chart, so measured must have only the patch dims {samples} and "
            f"{dim!r}. Select or average one chart first, e.g. "
            f"measured.isel({extra[0]}=0) or measured.mean({extra[0]!r})"
        )
    missing = [d for d in samples if d not in measured.dims]
    if missing:
        raise ValueError(
            f"measured lacks the patch dims {tuple(missing)} of reference; its dims are "
            f"{tuple(measured.dims)}"
        )
    return samples


def _mask_values(mask, measured: xr.DataArray, samples: tuple, argname: str) -> np.ndarray:
    """Return ``mask`` as a flat bool array over the patches, in ``samples`` order."""
    mask = sample_array(mask, samples, measured, argname)
    if mask.dtype != bool:
        raise TypeError(
            f"{argname} must be boolean (True for the patches to use); got dtype {mask.dtype}"
        )
    extra = [d for d in mask.dims if d not in samples]
    if extra:
        raise ValueError(
            f"{argname} must span only the patch dims {samples}; it has {tuple(extra)} "
            f"(its dims are {tuple(mask.dims)})"
        )
    mask = match_labels(mask, measured, argname, check_sizes=True)  # by label, in any order
    mask = mask.drop_vars(list(mask.coords))
    template = xr.DataArray(np.zeros(tuple(measured.sizes[d] for d in samples)), dims=samples)
    full = mask.broadcast_like(template)
    return np.asarray(full.transpose(*samples).values, dtype=bool).reshape(-1)
