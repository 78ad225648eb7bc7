"""xccm: colour-correction matrices on xarray objects, lazily and at scale with Dask.

Importing xccm registers the ``.ccm`` accessor on :class:`xarray.DataArray` and
:class:`xarray.Dataset`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import accessor as _accessor  # noqa: F401  (registers .ccm)
from ._kernels import InsufficientSamplesWarning
from .charts import available_charts, chart
from .core import Init, Model, apply, fit, inverse, invert
from .patches import extract_patches, grid_boxes

try:
    __version__ = version("xccm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Init",
    "InsufficientSamplesWarning",
    "Model",
    "__version__",
    "apply",
    "available_charts",
    "chart",
    "extract_patches",
    "fit",
    "grid_boxes",
    "inverse",
    "invert",
]
