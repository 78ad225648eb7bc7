"""Which chart patches a fit uses, and how much each counts: saturation masks and L* weights.

Both return arrays over the patches (no channel dim) that line up with the patches by
label, so a mask and a weight can be combined and are never paired with the wrong patch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import xarray as xr

from . import colorimetry
from ._labels import check_data

__all__ = ["lightness_weights", "saturation_mask"]


def saturation_mask(
    values: xr.DataArray,
    low: float = 0.0,
    high: float = 0.98,
    *,
    dim: Hashable = "channel",
) -> xr.DataArray:
    """Mask of usable samples: every channel finite and within ``[low, high]``.

    OpenCV's ccm module leaves out patches outside (0, 0.98) by default; apply this to the
    linearised camera values (or, to reproduce OpenCV exactly, to the values before
    linearisation).

    Parameters
    ----------
    values : DataArray
        Camera colours with channel dim ``dim``.
    low, high : float, default 0 and 0.98
        Closed range a channel must lie in.
    dim : hashable, default "channel"

    Returns
    -------
    DataArray of bool
        ``values`` without ``dim``: True where the sample is usable. Lazy for Dask input.
        Pass it as ``mask=`` to :func:`xccm.fit`, or multiply it into ``weights``.

    Examples
    --------
    >>> v = xr.DataArray([[0.2, 0.5, 0.9], [0.3, 0.99, 0.1]], dims=("patch", "channel"))
    >>> saturation_mask(v).values.tolist()
    [True, False]
    """
    check_data(values, "values", dim, allow_empty=True)
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"saturation range must be finite with low <= high; got ({low}, {high})")
    inside = (values >= low) & (values <= high)  # NaN compares False: non-finite is out
    out = inside.all(dim)
    out.name = "mask"
    out.attrs = {"saturation_range": [float(low), float(high)]}
    return out


def lightness_weights(
    reference: xr.DataArray,
    power: float,
    *,
    dim: Hashable = "channel",
    reference_space: str | None = None,
    rgb_space: str = "sRGB",
    illuminant: str | Sequence[float] | None = None,
) -> xr.DataArray:
    """Weights ``L*^power`` from the reference colours' CIE lightness, as OpenCV's ccm does.

    Parameters
    ----------
    reference : DataArray
        Reference colours (e.g. :func:`xccm.chart`), in ``reference_space`` or the space
        of its attrs.
    power : float
        The exponent ``k`` in ``w = L*^k``; 0 gives equal weights.
    dim : hashable, default "channel"
    reference_space, rgb_space : str, optional
        As for :func:`xccm.delta_e`.
    illuminant : str or (x, y), optional
        White of the Lab space L* is taken in; default the RGB space's white (OpenCV's
        choice: D65 for sRGB).

    Returns
    -------
    DataArray
        ``reference`` without ``dim``: one weight per patch, labelled like the patches.
        Pass it as ``weights=`` to :func:`xccm.fit`; the fit rescales the weights of the
        patches it uses to mean 1.

    Examples
    --------
    >>> import xccm
    >>> w = lightness_weights(xccm.chart(), 2.0)
    >>> w.dims, bool(w.sel(patch="white 9.5 (.05 D)") > w.sel(patch="black 2 (1.5 D)"))
    (('patch',), True)
    """
    if isinstance(power, bool) or not isinstance(power, int | float | np.integer | np.floating):
        raise TypeError(f"power must be a real number; got {type(power).__name__} {power!r}")
    if not np.isfinite(power):
        raise ValueError(f"power must be a finite number; got {power!r}")
    space = colorimetry.space_of(
        reference, reference_space, rgb_space=rgb_space, argname="reference", dim=dim
    )
    white = colorimetry.lab_white(rgb_space, illuminant)
    target = colorimetry.Space("lab", illuminant=tuple(float(v) for v in white))
    lab = colorimetry.convert(reference, target, dim=dim, source=space)
    lightness = lab.sel({dim: "L"}, drop=True).clip(min=0)
    out = lightness**power
    out.name = "weights"
    out.attrs = {"lightness_power": float(power)}
    return out
