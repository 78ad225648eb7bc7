"""Chart patch colours from image stacks: boxes or a label image, one value per patch.

:func:`extract_patches` reduces an image ``(..., y, x, channel)`` to patch colours
``(..., patch, channel)`` (the mean or the median of each patch's pixels), ready for
:func:`xccm.fit`. It runs once per chunk of whole frames, so a Dask-backed stack is read once,
lazily; :func:`grid_boxes` builds the boxes of a regular chart grid.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from ._labels import check_choice, check_data, pair_by_label, require_one_chunk

__all__ = ["BOUND", "BOUNDS", "Reduce", "extract_patches", "grid_boxes", "homography"]

Reduce = Literal["median", "mean"]

#: The dim of a boxes array holding the half-open pixel ranges ``y0, y1, x0, x1``.
BOUND = "bound"
BOUNDS = ("y0", "y1", "x0", "x1")


def grid_boxes(
    top_left: tuple[float, float] | None = None,
    patch_size: float | tuple[float, float] | None = None,
    pitch: float | tuple[float, float] | None = None,
    shape: tuple[int, int] = (4, 6),
    *,
    corners: Sequence[tuple[float, float]] | np.ndarray | None = None,
    gap: float = 0.0,
    margin: float = 0.25,
    names: Sequence[Hashable] | None = None,
    patch_dim: Hashable = "patch",
) -> xr.DataArray:
    """Boxes of a regular grid of patches, row by row, as :func:`extract_patches` takes them.

    Give the grid either axis-aligned, as ``top_left``, ``patch_size`` and ``pitch``, or as
    the four ``corners`` of the chart in the image, for a chart that is tilted, turned or
    seen in perspective. From the corners, a homography (the perspective map from the
    chart's plane to the image) places every patch; the box of a patch is the largest
    axis-aligned box, centred on the patch, that fits inside the middle of the patch (its
    central ``1 - 2 * margin``), so it never reaches a neighbour or the chart's border.

    Parameters
    ----------
    top_left : (float, float)
        Pixel ``(y, x)`` of the top-left corner of the first patch.
    patch_size : float or (float, float)
        Height and width of the box sampled in each patch, in pixels (keep it inside the
        patch, away from its edges).
    pitch : float or (float, float)
        Distance between the top-left corners of neighbouring patches, ``(dy, dx)``.
    shape : (int, int), default (4, 6)
        Rows and columns of the grid (a ColorChecker Classic is 4 x 6), as printed.
    corners : (4, 2) array-like, optional
        Instead of ``top_left``, ``patch_size`` and ``pitch``: the pixel ``(y, x)`` of the
        outer corners of the patch grid, in the order top-left, top-right, bottom-right,
        bottom-left *of the chart as printed* (wherever they are in the image): the first
        corner is the outer corner of the first patch (a ColorChecker's "dark skin"), the
        second that of the last patch of the first row ("bluish green"), the third that of
        the last patch ("black 2 (1.5 D)"), the fourth that of the first patch of the last
        row ("white 9.5 (.05 D)"). A chart turned by 90 degrees or seen at an angle needs
        no other change. Pixel ``(y, x)`` is centred on integer coordinates, as in OpenCV
        and matplotlib's ``imshow``.
    gap : float, default 0.0
        With ``corners``: the gap between neighbouring patches as a fraction of the pitch
        (a ColorChecker Classic has about 0.1); it moves each box towards its patch's
        centre by at most ``gap / 2`` pitches.
    margin : float, default 0.25
        With ``corners``: the part of each patch left out on every side, as a fraction of
        the patch's width (0 to 0.5): 0.25 samples the middle half.
    names : sequence, optional
        Patch names, row by row (e.g. ``xccm.chart("colorchecker24").patch.values``);
        default ``0 .. n - 1``.
    patch_dim : hashable, default "patch"

    Returns
    -------
    DataArray
        Integer boxes, dims ``(patch_dim, "bound")``, ``bound`` coords ``y0, y1, x0, x1``
        (half-open: rows ``y0 <= y < y1``).

    Raises
    ------
    ValueError
        If both or neither of ``corners`` and ``top_left``/``patch_size``/``pitch`` are
        given, the corners are not four finite ``(y, x)`` pairs making a convex
        quadrilateral in order around it, ``gap`` or ``margin`` are out of range, or
        ``names`` has another length than the grid.

    Examples
    --------
    >>> b = grid_boxes((10, 20), 4, 10, shape=(2, 3))
    >>> b.sizes["patch"], b.sel(bound=["y0", "y1", "x0", "x1"]).values[4].tolist()
    (6, [20, 24, 30, 34])

    A chart turned by 90 degrees clockwise: its top-left corner is now at the image's top
    right, so its first patch is there too.

    >>> b = grid_boxes(corners=[(0, 20), (30, 20), (30, 0), (0, 0)], shape=(2, 3))
    >>> b.values[0].tolist(), b.values[2].tolist()  # the first row runs down the image
    ([3, 8, 13, 18], [23, 28, 13, 18])
    """
    rows, cols = _grid_shape(shape)
    n = rows * cols
    if names is not None and len(names) != n:
        raise ValueError(f"names has {len(names)} entries but the {rows}x{cols} grid has {n}")
    if patch_dim == BOUND:
        raise ValueError(f"patch_dim must not be {BOUND!r}, the dim of the box bounds")
    if corners is not None:
        if top_left is not None or patch_size is not None or pitch is not None:
            raise ValueError(
                "give the grid as corners= or as top_left, patch_size and pitch, not both"
            )
        data = _quad_boxes(_check_corners(corners), (rows, cols), gap, margin)
    else:
        missing = [
            name
            for name, v in (("top_left", top_left), ("patch_size", patch_size), ("pitch", pitch))
            if v is None
        ]
        if missing:
            raise ValueError(
                f"grid_boxes needs top_left, patch_size and pitch, or corners=; "
                f"{' and '.join(missing)} not given"
            )
        y, x = _number_pair(top_left, "top_left", scalar=False)
        h, w = _number_pair(patch_size, "patch_size", positive=True)
        dy, dx = _number_pair(pitch, "pitch")
        i, j = np.divmod(np.arange(n), cols)
        y0 = np.rint(y + i * dy).astype(np.int64)
        x0 = np.rint(x + j * dx).astype(np.int64)
        data = np.stack([y0, y0 + round(h), x0, x0 + round(w)], axis=-1)
    return xr.DataArray(
        data,
        dims=(patch_dim, BOUND),
        coords={
            patch_dim: np.asarray(names) if names is not None else np.arange(n),
            BOUND: list(BOUNDS),
        },
        name="boxes",
    )


def extract_patches(
    image: xr.DataArray,
    *,
    boxes: xr.DataArray | Mapping[Hashable, Sequence[int]] | np.ndarray | None = None,
    labels: xr.DataArray | None = None,
    names: Sequence[Hashable] | None = None,
    dim: Hashable = "channel",
    spatial_dims: tuple[Hashable, Hashable] = ("y", "x"),
    reduce: Reduce = "median",
    patch_dim: Hashable = "patch",
) -> xr.DataArray:
    """Colour of each chart patch in every frame: the median or mean of its pixels.

    Give the patch geometry as ``boxes`` or as ``labels`` (exactly one):

    - ``boxes``: half-open pixel ranges ``y0, y1, x0, x1`` per patch, a DataArray with dims
      ``(..., patch_dim, "bound")`` (``bound`` coords name the four values; without coords
      they are in that order), a mapping ``{name: (y0, y1, x0, x1)}`` or an ``(n, 4)`` array.
      Extra dims (e.g. ``time``) give boxes that move from frame to frame. A box that is
      all NaN (a frame where :func:`xccm.detect_chart` found no chart) gives a NaN patch.
      Boxes may be Dask-backed (as :func:`xccm.detect_chart` returns them for a Dask-backed
      stack): they are then read, and checked, frame by frame as the patches are computed.
    - ``labels``: an integer image over ``spatial_dims`` (plus e.g. ``time`` if it varies),
      ``k`` for the pixels of patch ``k`` (1 to n) and 0 (or negative) for background.

    Boxes or labels that vary along a dim of the image (e.g. ``time``) are paired with its
    frames by their labels on that dim (in whatever order; without coords, by position), so
    they need the image's labels: select them first, e.g.
    ``boxes.reindex(time=image.time, method="nearest")``.

    Non-finite pixels are left out; a patch with none left is NaN, which :func:`xccm.fit`
    skips (see its ``min_samples`` to reject frames with too few patches).

    Parameters
    ----------
    image : DataArray
        Images with ``spatial_dims`` and channel dim ``dim``; any other dims (``time``,
        ``camera``...) are kept. A Dask-backed image needs each frame in one chunk along
        ``spatial_dims`` (chunk along time); the result is then Dask-backed, one task per
        chunk, and nothing is computed.
    boxes, labels : see above
    names : sequence, optional
        The patch names. With ``labels``: the name of patch ``k`` is ``names[k - 1]``; the
        number of patches is ``len(names)``, else the largest label (which needs in-memory
        labels). With ``boxes`` that carry no names (an ``(n, 4)`` array, or a DataArray without
        ``patch_dim`` coords): the name of each box, in order. Boxes that have names already
        (a mapping, :func:`grid_boxes` with ``names=``) must not be renamed: that is an error.
    dim : hashable, default "channel"
    spatial_dims : (hashable, hashable), default ("y", "x")
        The row and column dims of the images.
    reduce : {"median", "mean"}
        ``"median"`` (default) is robust to a few outlier pixels (dust, a specular glint);
        ``"mean"`` is faster.
    patch_dim : hashable, default "patch"
        The name of the patch dim of the result (with boxes, taken from the boxes' dims).

    Returns
    -------
    DataArray
        Dims ``(*other_dims, patch_dim, dim)``, the image's coords (minus spatial ones), its
        name and attrs plus ``attrs["patch_reduce"]``; dtype the image's float dtype
        (float64 for integer images).

    Raises
    ------
    ValueError
        If boxes are empty or outside the frame, labels name a patch that has no pixel (for
        fixed in-memory labels) or one beyond ``names``, a spatial dim is split across chunks,
        both or neither of ``boxes`` and ``labels`` are given, or boxes or labels that vary
        along a dim of the image have other labels (or another size) on it.

    Examples
    --------
    >>> img = xr.DataArray(np.zeros((1, 8, 8, 3)), dims=("time", "y", "x", "channel"))
    >>> img[0, 4:, 4:] = [0.2, 0.4, 0.6]
    >>> boxes = {"dark": (0, 4, 0, 4), "grey": (5, 8, 5, 8)}
    >>> p = extract_patches(img, boxes=boxes)
    >>> p.dims, p.sel(patch="grey").values.round(3).tolist()
    (('time', 'patch', 'channel'), [[0.2, 0.4, 0.6]])
    """
    check_choice("reduce", reduce, Reduce)
    if (boxes is None) == (labels is None):
        raise ValueError("give the patch geometry as exactly one of boxes= or labels=")
    if not isinstance(image, xr.DataArray):
        raise TypeError(f"image must be a DataArray; got {type(image).__name__}")
    check_data(image, "image", dim)
    ydim, xdim = spatial_dims
    for d in spatial_dims:
        if d not in image.dims:
            raise ValueError(
                f"image has no spatial dim {d!r}; its dims are {tuple(image.dims)}. "
                "Use spatial_dims= to name its row and column dims."
            )
        require_one_chunk(image, d, "image")
    frame = (image.sizes[ydim], image.sizes[xdim])
    out_dtype = image.dtype if image.dtype.kind == "f" else np.dtype(np.float64)

    kernel: Callable[..., Any]
    geometry: xr.DataArray | None
    if boxes is not None:
        geometry = _as_boxes(boxes, patch_dim)
        patch_dim = geometry.dims[-2]
        if geometry.chunks is None:  # Dask-backed boxes are checked as each frame is read
            _check_boxes(geometry, frame, patch_dim)
        geometry_core = [patch_dim, BOUND]
        kernel, names_out = _reduce_boxes, geometry.indexes.get(patch_dim)
        n = geometry.sizes[patch_dim]
        if names is not None:
            names_out = _box_names(names, names_out, n, patch_dim)
    else:
        geometry = labels
        if not isinstance(geometry, xr.DataArray):
            raise TypeError(f"labels must be a DataArray over {spatial_dims}")
        n = _n_labels(geometry, names, spatial_dims)
        geometry_core = list(spatial_dims)
        kernel, names_out = _reduce_labels, names
    if patch_dim in image.dims:
        source = "the patch dim of boxes" if boxes is not None else "patch_dim"
        raise ValueError(
            f"{source} {patch_dim!r} is already a dim of image {tuple(image.dims)}; the "
            "result needs a new dim for its patches, e.g. patch_dim='patch'"
        )
    geometry = _pair_frames(geometry, image, "boxes" if boxes is not None else "labels")

    out = xr.apply_ufunc(
        kernel,
        image,
        geometry,
        input_core_dims=[[ydim, xdim, dim], geometry_core],
        output_core_dims=[["__patch", dim]],
        kwargs={"n": n, "reduce": reduce, "dtype": out_dtype},
        dask="parallelized",
        output_dtypes=[out_dtype],
        dask_gufunc_kwargs={"output_sizes": {"__patch": n}},
        keep_attrs="drop",
    ).rename({"__patch": patch_dim})
    if names_out is not None:
        out = out.assign_coords({patch_dim: list(names_out)})
    out.name = image.name
    out.attrs = {**image.attrs, "patch_reduce": reduce}
    return out


def homography(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Return the 3x3 perspective map taking points ``source`` to ``target`` (least squares).

    Both are ``(n, 2)`` arrays of points (``n >= 4``, no three of the first four on a
    line); the result ``H`` maps ``(a, b)`` to ``(p / r, q / r)`` where
    ``(p, q, r) = H @ (a, b, 1)``, with ``H[2, 2] = 1``. Solved by the normalised direct
    linear transform (Hartley and Zisserman, *Multiple View Geometry*, algorithm 4.2):
    exact for four points, least squares in the algebraic error for more.

    Examples
    --------
    >>> h = homography([(0, 0), (1, 0), (1, 1), (0, 1)], [(0, 0), (2, 0), (2, 3), (0, 3)])
    >>> np.allclose(h, [[2, 0, 0], [0, 3, 0], [0, 0, 1]])
    True
    """
    src, dst = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    ts, tt = _normaliser(src), _normaliser(dst)
    a, b = _apply_h(ts, src), _apply_h(tt, dst)
    zero, one = np.zeros(len(a)), np.ones(len(a))
    x, y, u, v = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    rows = np.concatenate(
        [
            np.stack([-x, -y, -one, zero, zero, zero, u * x, u * y, u], axis=1),
            np.stack([zero, zero, zero, -x, -y, -one, v * x, v * y, v], axis=1),
        ]
    )
    h = np.linalg.svd(rows)[2][-1].reshape(3, 3)
    h = np.linalg.solve(tt, h @ ts)
    return h / h[2, 2]


def _normaliser(p: np.ndarray) -> np.ndarray:
    """Similarity moving points to the origin, mean distance sqrt(2) (Hartley)."""
    centre = p.mean(axis=0)
    spread = np.sqrt(((p - centre) ** 2).sum(axis=1)).mean()
    s = np.sqrt(2) / spread if spread > 0 else 1.0
    return np.array([[s, 0, -s * centre[0]], [0, s, -s * centre[1]], [0, 0, 1.0]])


def _apply_h(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = p @ h[:, :2].T + h[:, 2]
    return q[..., :2] / q[..., 2:]


def _check_corners(corners) -> np.ndarray:
    c = np.asarray(corners, dtype=np.float64) if not isinstance(corners, str) else None
    if c is None or c.shape != (4, 2):
        shape = "a string" if c is None else f"shape {c.shape}"
        raise ValueError(
            f"corners must be four (y, x) pixel positions (top-left, top-right, "
            f"bottom-right, bottom-left of the chart as printed); got {shape}"
        )
    if not np.isfinite(c).all():
        raise ValueError(f"corners must be finite; got {c.tolist()}")
    edges = np.roll(c, -1, axis=0) - c
    turns = (
        edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1]
        - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    )
    if not (np.all(turns > 0) or np.all(turns < 0)):
        raise ValueError(
            f"corners {c.tolist()} do not make a convex quadrilateral in order around it "
            "(top-left, top-right, bottom-right, bottom-left of the chart as printed): "
            "are two corners swapped, or three on a line?"
        )
    return c


def _quad_boxes(corners: np.ndarray, shape: tuple[int, int], gap: float, margin: float):
    """Integer boxes ``(n, 4)`` of the patches of a grid whose corners are ``(y, x)``."""
    if not 0 <= gap < 1:
        raise ValueError(f"gap must be a fraction of the pitch in [0, 1); got {gap}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be a fraction of the patch in [0, 0.5); got {margin}")
    rows, cols = shape
    width, height = cols - gap, rows - gap  # the grid in the chart's plane, in pitches
    chart = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    h = homography(chart, corners[:, ::-1])  # chart (u, v) -> image (x, y)
    i, j = np.divmod(np.arange(rows * cols), cols)
    centre = np.stack([j, i], axis=-1) + (1 - gap) / 2  # (n, 2) patch centres (u, v)
    half = (1 - gap) * (0.5 - margin)
    square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    quad = _apply_h(h, centre[:, None, :] + square)  # (n, 4, 2) sampled region (x, y)
    c = _apply_h(h, centre)  # (n, 2): a projective map sends the centre to the centre
    extent = np.abs(quad - c[:, None]).max(axis=1)  # (n, 2) half width, half height
    # largest box c +- t * extent inside the (convex) quad: for each edge with outward
    # normal n, n.c + t (|n_x| e_x + |n_y| e_y) <= n.p
    edge = np.roll(quad, -1, axis=1) - quad
    normal = np.stack([edge[..., 1], -edge[..., 0]], axis=-1)
    room = np.einsum("nkd,nkd->nk", normal, quad - c[:, None])
    normal = np.where(room[..., None] < 0, -normal, normal)  # point outwards
    room = np.abs(room)
    reach = np.einsum("nkd,nd->nk", np.abs(normal), extent)
    t = np.min(room / np.maximum(reach, 1e-12), axis=1, keepdims=True)
    lo, hi = c - t * extent, c + t * extent
    # pixels whose centres lie in [lo, hi]; at least the pixel at the centre
    start, stop = np.ceil(lo - 1e-9), np.floor(hi + 1e-9) + 1
    empty = stop <= start
    start = np.where(empty, np.rint(c), start)
    stop = np.where(empty, start + 1, stop)
    x0, y0 = start.T.astype(np.int64)
    x1, y1 = stop.T.astype(np.int64)
    return np.stack([y0, y1, x0, x1], axis=-1)


# ---------------------------------------------------------------------------------------------
# geometry checks


def _box_names(names, own, n: int, patch_dim: Hashable) -> list:
    """``names=`` for boxes: names the unnamed boxes; never silently renames named ones."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise TypeError(f"names must be a sequence of patch names; got {type(names).__name__}")
    names = list(names)
    if len(names) != n:
        raise ValueError(
            f"names has {len(names)} entries but boxes has {n} patches along {patch_dim!r}"
        )
    if own is not None and list(own) != names:
        raise ValueError(
            f"boxes already name their patches along {patch_dim!r} ({_shown(list(own))}) and "
            f"names= gives others ({_shown(names)}); drop names= or relabel the boxes: "
            f"boxes.assign_coords({patch_dim}=names)"
        )
    return names


def _pair(v) -> tuple[float, float]:
    return (v, v) if np.ndim(v) == 0 else (v[0], v[1])


def _number_pair(
    value, argname: str, *, scalar: bool = True, positive: bool = False
) -> tuple[float, float]:
    """``(y, x)`` from one number (if ``scalar``) or a pair; finite (and > 0 if ``positive``)."""
    expected = ("a number or " if scalar else "") + "a (y, x) pair of numbers"
    if positive:
        expected = "a positive number or a (height, width) pair of positive numbers"
    try:
        arr = np.asarray(value)
        ok = arr.dtype.kind in "iuf" and (arr.shape == (2,) or (scalar and arr.ndim == 0))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{argname} must be {expected}; got {value!r}")
    pair = _pair(arr.astype(np.float64).tolist())
    if not all(np.isfinite(pair)) or (positive and not min(pair) > 0):
        raise ValueError(f"{argname} must be {expected}, finite; got {value!r}")
    return pair


def _grid_shape(shape) -> tuple[int, int]:
    """``(rows, cols)`` of a grid: two positive integers."""
    try:
        rows, cols = shape
        ok = all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0
            for v in (rows, cols)
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be (rows, cols), two positive integers; got {shape!r}")
    return int(rows), int(cols)


def _as_boxes(boxes, patch_dim: Hashable) -> xr.DataArray:
    if isinstance(boxes, Mapping):
        boxes = xr.DataArray(
            _box_rows(list(boxes.values()), list(boxes)),
            dims=(patch_dim, BOUND),
            coords={patch_dim: list(boxes)},
        )
    elif not isinstance(boxes, xr.DataArray):
        if isinstance(boxes, list | tuple) and any(np.ndim(b) == 1 for b in boxes):
            boxes = _box_rows(list(boxes), range(len(boxes)))  # a list of (y0, y1, x0, x1)
        boxes = np.asarray(boxes)
        if boxes.size == 0:
            raise ValueError(f"boxes holds no patch (shape {boxes.shape})")
        if boxes.ndim == 1 and boxes.size == 4:
            raise ValueError(
                f"boxes {boxes.tolist()} is one box; give a box per patch, e.g. "
                f"[{boxes.tolist()}] or {{'patch name': {boxes.tolist()}}}"
            )
        if boxes.ndim > 2:
            raise ValueError(
                f"boxes of shape {boxes.shape}: an array gives one (patch, 4) set of boxes; "
                f"for boxes that move over time pass a DataArray with dims "
                f"('time', {patch_dim!r}, {BOUND!r})"
            )
        boxes = xr.DataArray(boxes, dims=(patch_dim, BOUND)[-boxes.ndim :])
    if boxes.ndim < 2 or BOUND not in boxes.dims:
        raise ValueError(
            f"boxes must have dims (..., patch, {BOUND!r}) holding y0, y1, x0, x1; "
            f"got dims {tuple(boxes.dims)}"
        )
    if boxes.size == 0:
        raise ValueError(f"boxes holds no patch (shape {boxes.shape})")
    if patch_dim not in boxes.dims:
        if boxes.ndim != 2:
            raise ValueError(
                f"boxes has no patch dim {patch_dim!r}; its dims are {tuple(boxes.dims)}. "
                "Use patch_dim= to name it."
            )
        patch_dim = next(d for d in boxes.dims if d != BOUND)
    others = [d for d in boxes.dims if d not in (BOUND, patch_dim)]
    boxes = boxes.transpose(*others, patch_dim, BOUND)
    if boxes.sizes[BOUND] != 4:
        raise ValueError(
            f"boxes dim {BOUND!r} must have 4 entries y0, y1, x0, x1; got {boxes.sizes[BOUND]}"
        )
    if BOUND in boxes.coords:
        if sorted(map(str, boxes[BOUND].values)) != sorted(BOUNDS):
            raise ValueError(
                f"boxes coords {BOUND!r} must be {list(BOUNDS)}; got {boxes[BOUND].values.tolist()}"
            )
        boxes = boxes.sel({BOUND: list(BOUNDS)})
    if boxes.dtype.kind not in "iuf":
        raise TypeError(f"boxes must hold integer pixel indices; got dtype {boxes.dtype}")
    if boxes.chunks is not None:  # e.g. from detect_chart: checked frame by frame, lazily
        return boxes.astype(np.float64)
    values = boxes.values
    if boxes.dtype.kind == "f":
        nan = np.isnan(values)
        partial = nan.any(axis=-1) & ~nan.all(axis=-1)
        if partial.any():
            where = np.argwhere(partial)[0]
            raise ValueError(
                f"boxes patch {boxes[patch_dim].values[where[-1]].item()!r} has NaN in some of its "
                f"bounds {values[tuple(where)].tolist()}; a box is either four integers or "
                "all NaN (no box: that patch is NaN)"
            )
        finite = values[~nan]
        if not np.array_equal(finite, np.round(finite)):
            raise TypeError(f"boxes must hold integer pixel indices; got dtype {boxes.dtype}")
        if nan.any():  # patches without a box (no chart found in a frame) are NaN
            return boxes.astype(np.float64)
    return boxes.astype(np.int64)


def _box_rows(rows: list, names) -> np.ndarray:
    """Stack boxes given one per patch, saying which one is not 4 numbers."""
    for name, row in zip(names, rows, strict=True):
        if np.ndim(row) != 1 or len(row) != 4:
            raise ValueError(
                f"boxes must give 4 numbers y0, y1, x0, x1 per patch; patch {name!r} has {row!r}"
            )
    return np.array(rows).reshape(len(rows), 4)


def _check_boxes(boxes: xr.DataArray, frame: tuple[int, int], patch_dim: Hashable) -> None:
    b = boxes.values.reshape(-1, boxes.sizes[patch_dim], 4)
    names = boxes.indexes[patch_dim] if patch_dim in boxes.indexes else range(b.shape[1])
    for label, lo, hi, size in (("y", 0, 1, frame[0]), ("x", 2, 3, frame[1])):
        start, stop = b[..., lo], b[..., hi]
        empty = np.argwhere(stop <= start)
        if empty.size:
            p = empty[0][1]
            raise ValueError(
                f"boxes patch {names[p]!r} is empty: {label}1={stop[tuple(empty[0])]} <= "
                f"{label}0={start[tuple(empty[0])]}"
            )
        out = np.argwhere((start < 0) | (stop > size))
        if out.size:
            p = out[0][1]
            raise ValueError(
                f"boxes patch {names[p]!r} spans {label} = {start[tuple(out[0])]} to "
                f"{stop[tuple(out[0])]}, outside the frame (0 to {size})"
            )


def _pair_frames(geometry: xr.DataArray, image: xr.DataArray, argname: str) -> xr.DataArray:
    """Put ``geometry``'s frames in the image's order along the dims they share, by label.

    Boxes or labels that vary over e.g. ``time`` are paired with the image's frames by their
    labels on that dim: the same labels in another order are reordered to the image's order;
    other labels, or another number of frames, raise a ValueError saying how to select them.
    Only the (in-memory) indexes are read, so Dask-backed inputs stay lazy.
    """
    for d in geometry.dims:
        geometry = pair_by_label(
            geometry,
            image,
            [d],
            name=argname,
            target_name="image",
            mismatch=_mismatch_message,
            advice=f"; {argname} that vary along {d!r} need one entry per image frame (or drop "
            f"dim {d!r} to use the same {argname} for every frame)",
        )
    return geometry


def _mismatch_message(d: Hashable, argname: str, mine, target: str, theirs) -> str:
    """Say how frames labelled ``mine`` differ from the image's (for ``pair_by_label``)."""
    what = (
        f"{argname} has {len(mine)} {d} labels, {_not_in(mine.difference(theirs), 'image')}"
        f"{_repeats(mine)}; image has {len(theirs)}, "
        f"{_not_in(theirs.difference(mine), argname)}{_repeats(theirs)}"
    )
    by_position = (
        f", or {argname}.assign_coords({d}=image.{d}) to pair them by position"
        if len(mine) == len(theirs)
        else ""
    )
    return (
        f"{argname} and image have different labels on dim {d!r}: {what}. {argname} are paired "
        f"with image frames by their {d!r} label, not by position. Give {argname} the image's "
        f'labels, e.g. {argname}.reindex({d}=image.{d}, method="nearest") (each frame takes '
        f'the nearest label\'s) or {argname}.reindex({d}=image.{d}, method="ffill") (the last '
        f"one's before it; NaN before the first){by_position}."
    )


def _repeats(index) -> str:
    if index.is_unique:
        return ""
    repeated = index[index.duplicated()].unique()
    return f", {len(repeated)} repeated (e.g. {_shown(repeated)})"


def _not_in(extra, other: str) -> str:
    """``"all in image"`` or ``"3 not in image (e.g. 4, 5, ...)"``."""
    if len(extra) == 0:
        return f"all in {other}"
    return f"{len(extra)} not in {other} (e.g. {_shown(extra)})"


def _shown(values, n: int = 2) -> str:
    """Show the first ``n`` labels: ``"4, 5, ..."``."""
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:n])
    return shown + (", ..." if len(values) > n else "")


def _n_labels(labels: xr.DataArray, names, spatial_dims) -> int:
    missing = [d for d in spatial_dims if d not in labels.dims]
    if missing:
        raise ValueError(
            f"labels must have the image's spatial dims {spatial_dims}; got {labels.dims}"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer image; got dtype {labels.dtype}")
    if labels.chunks is not None:
        if names is None:
            raise ValueError(
                "Dask-backed labels need names= (one per patch, label k -> names[k-1])"
            )
        return len(names)
    values = labels.values
    n = len(names) if names is not None else int(values.max(initial=0))
    if n == 0:
        raise ValueError("labels has no patch: every pixel is background (<= 0)")
    if values.max(initial=0) > n:
        raise ValueError(
            f"labels holds label {int(values.max())} but names has only {n} patches (1 to {n})"
        )
    present = np.zeros(n + 1, dtype=bool)
    present[values[values > 0]] = True
    absent = np.flatnonzero(~present[1:]) + 1
    if absent.size:
        k = int(absent[0])
        name = f" ({names[k - 1]!r})" if names is not None else ""
        raise ValueError(
            f"labels has no pixel for patch {k}{name}; {absent.size} of {n} patches are missing. "
            "Every label from 1 to the number of patches must mark at least one pixel."
        )
    return n


# ---------------------------------------------------------------------------------------------
# per-block kernels: x (..., y, x, channel)


def _reduce_pixels(values: np.ndarray, reduce: str) -> np.ndarray:
    """Reduce ``(..., n_pixels, channel)`` over pixels, ignoring non-finite values."""
    values = np.where(np.isfinite(values), values, np.nan)  # +-inf are left out like NaN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN / empty patches give NaN
        if reduce == "median":
            return np.nanmedian(values, axis=-2)
        return np.nanmean(values, axis=-2)


def _frames(geometry: np.ndarray, lead: tuple[int, ...]):
    """Pair the image's frames (index into the leading axes) with their 2-D geometry.

    Geometry without leading axes (or all of size 1) serves every frame at once, as one
    ``(..., geometry)`` pair; geometry that varies is broadcast and paired frame by frame.
    """
    core = geometry.shape[-2:]
    if all(s == 1 for s in geometry.shape[:-2]):
        return [(..., geometry.reshape(core))]
    per_frame = np.broadcast_to(geometry, (*lead, *core))
    return [(idx, per_frame[idx]) for idx in np.ndindex(lead)]


def _reduce_boxes(x: np.ndarray, boxes: np.ndarray, *, n: int, reduce: str, dtype) -> np.ndarray:
    lead, c = x.shape[:-3], x.shape[-1]
    out = np.empty((*lead, n, c), dtype=dtype)
    for idx, bb in _frames(boxes, lead):
        for p, box in enumerate(bb):
            if np.isnan(box).any():  # no box for this patch in this frame
                out[idx][..., p, :] = np.nan
                continue
            y0, y1, x0, x1 = (int(v) for v in box)
            if not (0 <= y0 < y1 <= x.shape[-3] and 0 <= x0 < x1 <= x.shape[-2]):
                raise ValueError(  # only Dask-backed boxes get here: in memory, checked before
                    f"boxes patch {p} is ({y0}, {y1}, {x0}, {x1}) = (y0, y1, x0, x1), empty or "
                    f"outside the frame ({x.shape[-3]} x {x.shape[-2]})"
                )
            crop = x[idx][..., y0:y1, x0:x1, :].astype(dtype, copy=False)
            out[idx][..., p, :] = _reduce_pixels(crop.reshape(*crop.shape[:-3], -1, c), reduce)
    return out


def _reduce_labels(x: np.ndarray, labels: np.ndarray, *, n: int, reduce: str, dtype):
    lead, c = x.shape[:-3], x.shape[-1]
    flat = x.reshape(*lead, -1, c)
    out = np.empty((*lead, n, c), dtype=dtype)
    for idx, lab in _frames(labels, lead):
        ravel = lab.ravel()
        if ravel.max(initial=0) > n:
            raise ValueError(f"labels holds label {int(ravel.max())} but there are {n} patches")
        inside = np.flatnonzero(ravel > 0)  # sort only the patch pixels, not the frame
        order = inside[np.argsort(ravel[inside], kind="stable")]
        edges = np.searchsorted(ravel[order], np.arange(1, n + 2))
        for p in range(n):
            pixels = flat[idx][..., order[edges[p] : edges[p + 1]], :].astype(dtype, copy=False)
            out[idx][..., p, :] = _reduce_pixels(pixels, reduce)
    return out
