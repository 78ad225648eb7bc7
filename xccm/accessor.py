"""The ``.ccm`` accessor on :class:`xarray.DataArray` and :class:`xarray.Dataset`.

Thin and stateless: every method forwards to the function of the same name, with the
accessed object as its first argument, and does nothing else:

============================  ==================================================================
``obj.ccm.fit``               :func:`xccm.fitting.fit` (``xccm.fit``): checks, then
                              :func:`xccm.core.solve` and, with ``loss=``,
                              :func:`xccm.chartfit.refine_matrix`
``obj.ccm.apply``             :func:`xccm.core.apply` (``xccm.apply``)
``obj.ccm.inverse``           :func:`xccm.core.inverse` (``xccm.inverse``)
``obj.ccm.invert``            :func:`xccm.core.invert` (``xccm.invert``)
``obj.ccm.extract_patches``   :func:`xccm.patches.extract_patches` (``xccm.extract_patches``)
``obj.ccm.report``            :func:`xccm.chartfit.report` (``xccm.report``)
``obj.ccm.delta_e``           :func:`xccm.colorimetry.delta_e` (``xccm.delta_e``)
============================  ==================================================================

A fitted matrix is named ``"ccm_matrix"`` (:data:`xccm.core.MATRIX_NAME`), not ``"ccm"``:
in a Dataset, ``ds.ccm`` is this accessor, and ``ds.ccm_matrix`` the matrix.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import xarray as xr

from . import chartfit, colorimetry, core, fitting, patches, validation

__all__ = ["CCMAccessor"]


@xr.register_dataarray_accessor("ccm")
@xr.register_dataset_accessor("ccm")
class CCMAccessor:
    """Colour-correction matrices: ``obj.ccm.fit``, ``.apply``, ``.inverse`` and friends.

    Examples
    --------
    >>> import numpy as np, xarray as xr, xccm
    >>> img = xr.DataArray(np.full((2, 3), 0.5), dims=("pixel", "channel"))
    >>> img.ccm.apply(np.diag([2.0, 1.0, 0.5])).values[0].tolist()
    [1.0, 0.5, 0.25]
    """

    def __init__(self, obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = obj

    def fit(
        self, reference: xr.DataArray, *, dim: Hashable = "channel", **kwargs: Any
    ) -> xr.DataArray:
        """Fit a matrix from these measured colours to ``reference``; see :func:`xccm.fit`."""
        if not isinstance(self._obj, xr.DataArray):
            raise TypeError(
                "fit needs the measured colours as a DataArray; select one variable, "
                "e.g. ds['patches'].ccm.fit(reference)"
            )
        return fitting.fit(self._obj, reference, dim=dim, **kwargs)

    def apply(self, matrix: xr.DataArray | Any, *, dim: Hashable = "channel", **kwargs: Any):
        """Apply ``matrix`` to this object; see :func:`xccm.apply`."""
        return core.apply(self._obj, matrix, dim=dim, **kwargs)

    def inverse(self, matrix: xr.DataArray | Any, *, dim: Hashable = "channel", **kwargs: Any):
        """Undo ``apply(·, matrix)`` on this object; see :func:`xccm.inverse`."""
        return core.inverse(self._obj, matrix, dim=dim, **kwargs)

    def invert(self, *, dim: Hashable = "channel") -> xr.DataArray:
        """Inverse of this matrix, same shape family; see :func:`xccm.invert`."""
        if not isinstance(self._obj, xr.DataArray):
            raise TypeError("invert needs a matrix DataArray, not a Dataset")
        return core.invert(self._obj, dim=dim)

    def extract_patches(self, **kwargs: Any) -> xr.DataArray:
        """Chart patch colours of these images; see :func:`xccm.extract_patches`."""
        if not isinstance(self._obj, xr.DataArray):
            raise TypeError("extract_patches needs an image DataArray, e.g. ds['image'].ccm...")
        return patches.extract_patches(self._obj, **kwargs)

    def report(
        self,
        reference: xr.DataArray,
        matrix: xr.DataArray | Any,
        method: str = "ciede2000",
        **kwargs: Any,
    ) -> xr.Dataset:
        """Per-patch ΔE of these colours corrected by ``matrix``; see :func:`xccm.report`."""
        if not isinstance(self._obj, xr.DataArray):
            raise TypeError("report needs the measured colours as a DataArray")
        return chartfit.report(self._obj, reference, matrix, method, **kwargs)

    def cross_validate(
        self, reference: xr.DataArray, *, dim: Hashable = "channel", **kwargs: Any
    ) -> xr.Dataset:
        """Held-out and in-sample errors of a fit; see :func:`xccm.cross_validate`."""
        if not isinstance(self._obj, xr.DataArray):
            raise TypeError(
                "cross_validate needs the measured colours as a DataArray; select one "
                "variable, e.g. ds['patches'].ccm.cross_validate(reference)"
            )
        return validation.cross_validate(self._obj, reference, dim=dim, **kwargs)

    def delta_e(self, reference: xr.DataArray, method: str = "ciede2000", **kwargs: Any):
        """Colour difference from these colours to ``reference``; see :func:`xccm.delta_e`."""
        if not isinstance(self._obj, xr.DataArray):
            raise TypeError("delta_e needs colours as a DataArray")
        return colorimetry.delta_e(self._obj, reference, method, **kwargs)
