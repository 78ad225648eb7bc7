"""Finding a colour chart in images: patch boxes for :func:`xccm.extract_patches`, per frame.

:func:`detect_chart` finds a ColorChecker Classic in every frame of an image stack with
OpenCV's ``mcc`` detector (``opencv-contrib-python-headless``, the ``detect`` extra), then
decides the chart's orientation itself, by matching the colours it measures against the
reference chart under every rotation and mirror image, and returns boxes ready for
:func:`xccm.extract_patches`, labelled with the chart's patch names, with a per-frame
``score``. A frame without a chart gets NaN boxes, hence NaN patches and a NaN matrix from
:func:`xccm.fit` (with :class:`xccm.InsufficientSamplesWarning`), never an error that
stops a series. On a Dask-backed stack nothing is computed until asked for: one task per
chunk of frames.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable

import numpy as np
import xarray as xr

from ._labels import check_data, require_one_chunk
from .charts import chart as _reference_chart
from .patches import BOUND, BOUNDS, grid_boxes, homography

__all__ = ["detect_chart"]

#: Charts :func:`detect_chart` finds: name -> (rows, columns) as printed.
_GRIDS = {"colorchecker24": (4, 6)}

#: Frames larger than this (pixels, longer side) are shrunk for the detector (not for sampling).
_DETECT_SIZE = 1500


def detect_chart(
    image: xr.DataArray,
    chart: str = "colorchecker24",
    *,
    dim: Hashable = "channel",
    spatial_dims: tuple[Hashable, Hashable] = ("y", "x"),
    linear: bool = False,
    min_score: float = 0.6,
    margin: float = 0.25,
    mirrored: bool = True,
    patch_dim: Hashable = "patch",
) -> xr.DataArray:
    """Find the chart in every frame: patch boxes for :func:`xccm.extract_patches`.

    In each frame, OpenCV's ``mcc`` detector proposes where the chart's patches are. Their
    centres give the chart's four corners (a homography fitted to the 24 centres), and
    from each of the 8 ways to name those corners (4 rotations, and their mirror images
    unless ``mirrored=False``), :func:`xccm.grid_boxes` gives boxes whose colours are
    compared with the reference chart: the score of a naming is the mean over the three
    channels of the rank (Spearman) correlation between the measured patch colours and the
    reference's linear sRGB. It is 1 for patches in the reference's order whatever the
    exposure, white balance or tone curve, and near 0 or below for any other naming (the
    grey row alone tells a chart from its turned or mirrored self). The best-scoring naming
    wins; a frame whose best score is below ``min_score``, or where the detector finds
    nothing, gets NaN boxes.

    Parameters
    ----------
    image : DataArray
        Frames ``(..., y, x, channel)`` with 3 channels in R, G, B order, integer (8 or
        16 bit) or float, encoded (e.g. sRGB from a JPEG) or linear (see ``linear``). Any
        dims other than ``spatial_dims`` and ``dim`` (``time``, ``camera``...) are frames,
        each searched on its own. A Dask-backed image needs each frame in one chunk along
        ``spatial_dims`` and ``dim`` (chunk along time).
    chart : str, default "colorchecker24"
        The chart to find; ``"colorchecker24"`` (X-Rite ColorChecker Classic) only, for now.
    dim : hashable, default "channel"
    spatial_dims : (hashable, hashable), default ("y", "x")
    linear : bool, default False
        ``True`` for linear camera values (e.g. raw frames): the detector then sees them
        gamma-encoded (``x ** (1 / 2.2)``), as it sees an ordinary photo. The boxes and the
        score do not depend on it otherwise.
    min_score : float, default 0.6
        Frames whose best score is lower get NaN boxes. A ColorChecker in view scores
        about 0.95 to 1 (the score of each frame is returned).
    margin : float, default 0.25
        The part of each patch left out on every side (see :func:`xccm.grid_boxes`).
    mirrored : bool, default True
        Also consider the chart's mirror images (a chart seen in a mirror). ``False`` is
        for the usual camera, which never sees a mirrored chart.
    patch_dim : hashable, default "patch"

    Returns
    -------
    DataArray
        Boxes, dims ``(*frame_dims, patch_dim, "bound")``, float64 (whole pixels, or NaN
        where no chart was found; a patch that lies outside the frame is NaN too), the
        chart's patch names as ``patch_dim`` coords, the image's frame coords, and a
        ``score`` coord over the frame dims (NaN where the detector found nothing).
        ``attrs`` name the chart, the detector and ``min_score``. Dask-backed, computing
        nothing, for a Dask-backed image (boxes and score share one task per chunk).

    Raises
    ------
    ModuleNotFoundError
        If OpenCV's contrib modules are not installed (``pip install "xccm[detect]"``); for
        a Dask-backed image, when the boxes are computed.
    ValueError
        If the chart is not one that can be found, the image lacks a dim or has other than
        3 channels, a frame is split across chunks, or ``min_score`` or ``margin`` is out
        of range.

    Examples
    --------
    >>> import xccm
    >>> boxes = xccm.detect_chart(frames)  # doctest: +SKIP
    >>> patches = xccm.extract_patches(frames, boxes=boxes)  # doctest: +SKIP
    >>> m = xccm.fit(xccm.linearize(patches), xccm.chart())  # doctest: +SKIP

    On a frame without a chart the boxes are NaN and so is the score:

    >>> blank = xr.DataArray(np.zeros((1, 60, 80, 3)), dims=("time", "y", "x", "channel"))
    >>> boxes = detect_chart(blank)
    >>> bool(boxes.isnull().all()), boxes.score.values.tolist()
    (True, [nan])
    """
    key = str(chart).lower()
    if key not in _GRIDS:
        raise ValueError(
            f"detect_chart finds the charts {sorted(_GRIDS)}; got chart={chart!r}. For another "
            "chart, give its four corners to xccm.grid_boxes(corners=...)"
        )
    if not isinstance(image, xr.DataArray):
        raise TypeError(f"image must be a DataArray; got {type(image).__name__}")
    check_data(image, "image", dim)
    for d in spatial_dims:
        if d not in image.dims:
            raise ValueError(
                f"image has no spatial dim {d!r}; its dims are {tuple(image.dims)}. "
                "Use spatial_dims= to name its row and column dims."
            )
    if image.sizes[dim] != 3:
        raise ValueError(
            f"image has {image.sizes[dim]} channels on dim {dim!r}; detect_chart needs 3 "
            f"(R, G, B). Drop an alpha channel first, e.g. image.isel({dim}=slice(0, 3))"
        )
    for d in (*spatial_dims, dim):
        require_one_chunk(image, d, "image")
    if not 0 < min_score <= 1:
        raise ValueError(f"min_score must be in (0, 1]; got {min_score}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be a fraction of the patch in [0, 0.5); got {margin}")

    reference = _reference_chart(key)
    n = reference.sizes["patch"]
    boxes, score = xr.apply_ufunc(
        _detect_block,
        image,
        input_core_dims=[[*spatial_dims, dim]],
        output_core_dims=[["__patch", BOUND], []],
        kwargs={
            "reference": reference.values,
            "grid": _GRIDS[key],
            "linear": linear,
            "min_score": min_score,
            "margin": margin,
            "mirrored": mirrored,
        },
        dask="parallelized",
        output_dtypes=[np.float64, np.float64],
        dask_gufunc_kwargs={"output_sizes": {"__patch": n, BOUND: 4}},
        keep_attrs="drop",
    )
    boxes = boxes.rename({"__patch": patch_dim}).assign_coords(
        {patch_dim: reference.patch.values, BOUND: list(BOUNDS), "score": score}
    )
    boxes.name = "boxes"
    boxes.attrs = {"chart": key, "detector": "opencv mcc", "min_score": min_score}
    return boxes


def _detect_block(x: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Detect in every frame of a block ``(..., y, x, channel)``."""
    lead = x.shape[:-3]
    n = kwargs["reference"].shape[0]
    boxes = np.full((*lead, n, 4), np.nan)
    score = np.full(lead, np.nan)
    for idx in np.ndindex(lead):
        boxes[idx], score[idx] = _detect_frame(x[idx], **kwargs)
    return boxes, score


def _detect_frame(
    frame: np.ndarray,
    *,
    reference: np.ndarray,
    grid: tuple[int, int],
    linear: bool,
    min_score: float,
    margin: float,
    mirrored: bool,
) -> tuple[np.ndarray, float]:
    """Boxes ``(n, 4)`` (NaN if no chart) and the best score of one ``(y, x, 3)`` frame."""
    cv2 = _cv2()
    n = reference.shape[0]
    best_boxes, best = np.full((n, 4), np.nan), -np.inf
    values = frame.astype(np.float64)
    bgr = _to_bgr8(frame, linear)
    longest = max(bgr.shape[:2])
    # very large frames are shrunk for the detector (searching at twice the size, for
    # small charts, found none more in the benchmark's scenes)
    scale = min(1.0, _DETECT_SIZE / longest)
    for centres in _mcc_centres(cv2, bgr, scale, grid):
        corners = _grid_corners(centres, grid)
        if corners is None:  # the centres do not make a grid: not a chart
            continue
        for order in _namings(corners, mirrored):
            boxes = grid_boxes(corners=corners[order], shape=grid, margin=margin).values
            boxes, measured = _sample(values, boxes)
            score = _rank_score(measured, reference)
            if score > best:
                best_boxes, best = boxes, score
    if best < min_score:
        best_boxes = np.full((n, 4), np.nan)
    return best_boxes, (best if np.isfinite(best) else np.nan)


def _cv2():
    try:
        import cv2
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "detect_chart needs OpenCV's contrib modules (cv2.mcc): "
            'pip install "xccm[detect]" (opencv-contrib-python-headless)'
        ) from err
    if not hasattr(cv2, "mcc"):  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "detect_chart needs cv2.mcc, which opencv-python lacks: install "
            'opencv-contrib-python-headless instead (pip install "xccm[detect]")'
        )
    return cv2


def _to_bgr8(frame: np.ndarray, linear: bool) -> np.ndarray:
    """Make the frame 8-bit BGR for the detector (contiguous)."""
    if frame.dtype == np.uint8:
        f = frame / 255.0
    else:  # any other range: scale by a robust maximum
        f = np.nan_to_num(frame.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = np.percentile(f, 99.5)
        f = f / top if top > 0 else f
    f = np.clip(f, 0, 1)
    if linear:
        f = f ** (1 / 2.2)
    return np.ascontiguousarray(np.rint(f[..., ::-1] * 255).astype(np.uint8))


def _mcc_centres(cv2, bgr: np.ndarray, scale: float, grid: tuple[int, int]) -> list[np.ndarray]:
    """Patch centres ``(n, 2)`` as ``(x, y)`` in frame pixels, one array per candidate."""
    if scale != 1:
        method = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=method)
    detector = cv2.mcc.CCheckerDetector_create()
    detector.setColorChartType(cv2.mcc.MCC24)
    detector.setUseDnnModel(False)
    if not detector.process(bgr, 2):
        return []
    n = grid[0] * grid[1]
    out = []
    for checker in detector.getListColorChecker():
        quads = np.asarray(checker.getColorCharts(), dtype=np.float64)
        if quads.shape != (4 * n, 2):
            continue
        centres = quads.reshape(n, 4, 2).mean(axis=1)  # row by row, as the detector names them
        out.append((centres + 0.5) / scale - 0.5)  # back to the frame's pixels
    return out


def _grid_corners(centres: np.ndarray, grid: tuple[int, int]) -> np.ndarray | None:
    """Outer corners ``(4, 2)`` as ``(y, x)`` of the grid whose patch centres are given.

    A homography from the chart's plane (one unit per patch pitch, centres at half units)
    fitted to all the centres, so that one misplaced centre moves the corners little.
    ``None`` if the centres are not on a grid (median misfit over a quarter of a pitch)
    or the corners do not make a convex quadrilateral.
    """
    rows, cols = grid
    i, j = np.divmod(np.arange(rows * cols), cols)
    plane = np.stack([j + 0.5, i + 0.5], axis=-1)
    h = homography(plane, centres)
    outer = np.array([[0, 0], [cols, 0], [cols, rows], [0, rows]], dtype=np.float64)
    p = np.c_[np.vstack([outer, plane]), np.ones(4 + len(plane))] @ h.T
    xy = p[:, :2] / p[:, 2:]
    corners, fitted = xy[:4], xy[4:]
    pitch = np.sqrt(abs(_signed_area(corners[:, ::-1])) / 2 / (rows * cols))
    misfit = np.median(np.linalg.norm(fitted - centres, axis=1))
    turns = [
        _signed_area(corners[[k, (k + 1) % 4, (k + 2) % 4]][:, ::-1]) for k in range(4)
    ]  # a convex quadrilateral turns the same way at every corner
    if not (misfit < 0.25 * pitch and (all(t > 0 for t in turns) or all(t < 0 for t in turns))):
        return None
    return corners[:, ::-1]


def _namings(corners: np.ndarray, mirrored: bool) -> list[list[int]]:
    """List the ways to name four corners in order around a quadrilateral TL, TR, BR, BL.

    A chart seen from the front has TL, TR, BR, BL clockwise on the screen (a positive
    signed area in ``(x, y)`` with ``y`` down); its mirror image counter-clockwise.
    """
    namings = [[(k + i) % 4 for i in range(4)] for k in range(4)]
    namings += [[(k - i) % 4 for i in range(4)] for k in range(4)]
    if mirrored:
        return namings
    return [order for order in namings if _signed_area(corners[order]) > 0]


def _signed_area(corners: np.ndarray) -> float:
    """Twice the signed area of a polygon of ``(y, x)`` points, positive if clockwise."""
    y, x = corners[:, 0], corners[:, 1]
    return float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _sample(values: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float boxes (NaN where a box leaves the frame) and the median colour in each."""
    h, w = values.shape[:2]
    boxes = boxes.astype(np.float64)
    out = np.full((boxes.shape[0], values.shape[-1]), np.nan)
    for p, (y0, y1, x0, x1) in enumerate(boxes.astype(np.int64)):
        if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
            boxes[p] = np.nan  # the patch lies (partly) outside the frame
            continue
        crop = values[y0:y1, x0:x1].reshape(-1, values.shape[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN box gives NaN
            out[p] = np.nanmedian(crop, axis=0)
    return boxes, out


def _rank_score(measured: np.ndarray, reference: np.ndarray) -> float:
    """Mean over channels of the Spearman correlation of the patches' colours."""
    ok = np.isfinite(measured).all(axis=1)
    if ok.sum() < max(6, reference.shape[0] // 2):
        return -np.inf
    m, r = measured[ok], reference[ok]
    corr = [_spearman(m[:, c], r[:, c]) for c in range(m.shape[1])]
    return float(np.mean(corr))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks with ties given their mean rank."""
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a), dtype=np.float64)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]
