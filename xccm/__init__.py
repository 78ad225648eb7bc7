"""xccm: colour-correction matrices on xarray objects, lazily and at scale with Dask.

Importing xccm registers the ``.ccm`` accessor on :class:`xarray.DataArray` and
:class:`xarray.Dataset`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import accessor as _accessor  # noqa: F401  (registers .ccm)
from ._kernels import InsufficientSamplesWarning, NonConvergenceWarning
from .chartfit import report
from .charts import available_charts, chart, chart_from_table, sample_measurement
from .colorimetry import convert, delta_e
from .core import Init, Model, apply, inverse, invert
from .covariance import uncertainty
from .detection import detect_chart
from .fitting import fit
from .images import open_images, to_images
from .linearize import encode, fit_linearization, linearize, neutral_mask
from .matrix_files import from_opencv, load_matrix, save_matrix, to_opencv
from .patches import extract_patches, grid_boxes
from .raw import camera_matrix, open_raw
from .stability import drift, segments
from .validation import cross_validate
from .weights import lightness_weights, saturation_mask

try:
    __version__ = version("xccm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Init",
    "InsufficientSamplesWarning",
    "Model",
    "NonConvergenceWarning",
    "__version__",
    "apply",
    "available_charts",
    "camera_matrix",
    "chart",
    "chart_from_table",
    "convert",
    "cross_validate",
    "delta_e",
    "detect_chart",
    "drift",
    "encode",
    "extract_patches",
    "fit",
    "fit_linearization",
    "from_opencv",
    "grid_boxes",
    "inverse",
    "invert",
    "lightness_weights",
    "linearize",
    "load_matrix",
    "neutral_mask",
    "open_images",
    "open_raw",
    "report",
    "sample_measurement",
    "saturation_mask",
    "save_matrix",
    "segments",
    "to_images",
    "to_opencv",
    "uncertainty",
]
