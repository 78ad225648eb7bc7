r"""Raw camera frames in, linear: LibRaw (through rawpy) and the camera's own colour matrix.

:func:`open_raw` reads raw files (DNG, CR2, NEF, ARW, ...) as a lazy ``(time, y, x, channel)``
stack of linear camera RGB in [0, 1]; :func:`camera_matrix` turns the camera's own XYZ matrix
and white balance into an xccm matrix, the baseline a chart fit can be compared with. Needs the
``raw`` extra (rawpy, which ships LibRaw).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from . import _frames

__all__ = ["RAW_SUFFIXES", "SRGB_TO_XYZ", "camera_matrix", "open_raw"]

#: The file suffixes :func:`open_raw` takes from a folder (case-insensitive).
RAW_SUFFIXES = (
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf",
    ".rw2", ".pef", ".srw", ".x3f", ".3fr", ".fff", ".iiq", ".erf", ".mef", ".mos", ".mrw",
    ".kdc", ".dcr", ".rwl", ".raw",
)  # fmt: skip
#: Linear sRGB (D65) to XYZ, as dcraw and LibRaw write it (``xyz_rgb``).
SRGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_RGB = ("R", "G", "B")
_OUTPUT_MAX = 65535.0  # LibRaw's 16-bit output


def _rawpy():
    try:
        import rawpy
    except ImportError:
        raise ImportError(
            'reading raw files needs rawpy: python -m pip install "xccm[raw]"'
        ) from None
    return rawpy


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, int, int]
    black: tuple[float, ...]
    white: float
    as_shot: tuple[float, float, float]  # G = 1; NaN where the file has none
    daylight: tuple[float, float, float]
    rgb_xyz: np.ndarray  # (3, 3) XYZ -> camera, LibRaw's cam_xyz
    color_matrix: np.ndarray  # (3, 3) white-balanced camera -> linear sRGB, LibRaw's
    time: datetime | None


def _normalised(multipliers: Sequence[float]) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in list(multipliers)[:3])
    if not (np.isfinite([r, g, b]).all() and g > 0 and r > 0 and b > 0):
        return (np.nan, np.nan, np.nan)
    return (r / g, 1.0, b / g)


def _header(path: Path, half_size: bool) -> _Header:
    rawpy = _rawpy()
    try:
        raw = rawpy.imread(str(path))
    except rawpy.LibRawError as err:
        raise ValueError(f"LibRaw cannot read {path}: {err}") from None
    with raw:
        desc = raw.color_desc.decode("ascii", "replace")
        if raw.num_colors != 3 or set(desc) - set("RGB"):
            raise ValueError(
                f"{path} has a {raw.num_colors}-colour {desc} sensor; open_raw reads RGB "
                "(Bayer or X-Trans) sensors"
            )
        sizes = raw.sizes
        height, width = sizes.height, sizes.width
        if half_size:
            height, width = (height + 1) // 2, (width + 1) // 2
        if sizes.flip & 4:
            height, width = width, height
        stamp = raw.other.timestamp
        time = stamp if isinstance(stamp, datetime) and stamp.year > 1970 else None
        return _Header(
            shape=(height, width, 3),
            black=tuple(float(v) for v in raw.black_level_per_channel),
            white=float(raw.white_level),
            as_shot=_normalised(raw.camera_whitebalance),
            daylight=_normalised(raw.daylight_whitebalance),
            rgb_xyz=np.array(raw.rgb_xyz_matrix, dtype=np.float64)[:3, :3],
            color_matrix=np.array(raw.color_matrix, dtype=np.float64)[:3, :3],
            time=time,
        )


def _read_raw(path: str, *, demosaic: str, half_size: bool) -> np.ndarray:
    """Decode one raw file: linear camera RGB in [0, 1], float32, ``(y, x, 3)``."""
    rawpy = _rawpy()
    with rawpy.imread(path) as raw:
        rgb = raw.postprocess(
            demosaic_algorithm=rawpy.DemosaicAlgorithm[demosaic.upper()],
            half_size=half_size,
            use_camera_wb=False,
            use_auto_wb=False,
            user_wb=[1.0, 1.0, 1.0, 1.0],
            output_color=rawpy.ColorSpace.raw,
            output_bps=16,
            gamma=(1.0, 1.0),
            no_auto_bright=True,
            adjust_maximum_thr=0.0,
            highlight_mode=rawpy.HighlightMode.Clip,
        )
    return rgb.astype(np.float32) / np.float32(_OUTPUT_MAX)


def open_raw(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    time: _frames.Time = "auto",
    demosaic: str = "ahd",
    half_size: bool = False,
) -> xr.DataArray:
    r"""Open raw camera files as a lazy stack of linear camera RGB in [0, 1].

    Each file is decoded by LibRaw (through rawpy) when its chunk is computed, with
    ``postprocess(user_wb=[1, 1, 1, 1], output_color=raw, gamma=(1, 1), no_auto_bright=True,
    adjust_maximum_thr=0, output_bps=16)``: the black level is subtracted, the white level
    scaled to 1, the colour filter array demosaiced, and nothing else is done: no white
    balance, no camera matrix, no gamma, no brightening. Values are LibRaw's 16-bit output
    divided by 65535, so a pixel at the white level is 1 and clipped highlights stay at 1.
    Pixels are oriented as the camera says (LibRaw's flip).

    Parameters
    ----------
    paths : path, glob or sequence of paths
        A folder (its raw files, by suffix: ``.dng``, ``.cr2``, ``.nef``, ``.arw``...),
        a glob pattern, or files; as :func:`xccm.open_images`.
    time : str, compiled regex or sequence, default "auto"
        As :func:`xccm.open_images`; the camera time is the one LibRaw reads (EXIF
        DateTimeOriginal, or the TIFF DateTime of a DNG), to the second.
    demosaic : str, default "ahd"
        LibRaw's demosaicing: ``"linear"`` (bilinear), ``"vng"``, ``"ppg"``, ``"ahd"``,
        ``"dcb"``, ``"dht"`` or ``"aahd"``.
    half_size : bool, default False
        Take each 2 x 2 block of the colour filter array as one pixel instead of
        demosaicing: half the width and height, no interpolated values (good for charts).

    Returns
    -------
    DataArray
        Named ``"image"``, float32, dims ``(time, y, x, channel)`` with ``channel`` coords
        ``["R", "G", "B"]`` (camera RGB, not sRGB), Dask-backed with one chunk per file.
        ``attrs``: ``source_files``, ``format = "raw"``, ``bit_depth = 16``,
        ``encoding = "identity"`` (already linear), ``time_source``, ``demosaic``,
        ``half_size``; per frame ``as_shot_white_balance`` (the camera's multipliers
        ``[R, G, B]`` with G = 1, NaN where a file has none); and from the first file
        ``black_level`` (per CFA channel R, G, B, G2), ``white_level``,
        ``daylight_white_balance``, ``rgb_xyz_matrix`` (LibRaw's XYZ → camera matrix,
        rows R, G, B: its table entry for the camera; zeros for DNG files, whose own
        ColorMatrix LibRaw turns into ``color_matrix`` directly) and ``color_matrix``
        (LibRaw's white-balanced camera RGB → linear sRGB matrix, column vectors).

    Raises
    ------
    ValueError
        On no matching file, a file LibRaw cannot read, a sensor that is not RGB,
        frames of different sizes, files whose colour matrices differ (different camera
        models), an unknown ``demosaic``, or missing times.
    ImportError
        Without the ``raw`` extra (rawpy).

    See Also
    --------
    camera_matrix : the camera's own colour, as an xccm matrix.
    open_images : PNG, JPEG and TIFF frames.

    Examples
    --------
    >>> raw = open_raw("garden/*.dng", half_size=True)  # doctest: +SKIP
    >>> patches = xccm.extract_patches(raw, boxes)  # doctest: +SKIP
    >>> fitted = xccm.fit(patches, xccm.chart("colorchecker24"))  # doctest: +SKIP
    >>> camera = xccm.camera_matrix(raw)  # doctest: +SKIP
    """
    rawpy = _rawpy()
    names = [a.name.lower() for a in rawpy.DemosaicAlgorithm if a.isSupported]
    if demosaic not in names:
        raise ValueError(f"demosaic must be one of {names} (LibRaw's); got {demosaic!r}")
    files = _frames.resolve_paths(paths, RAW_SUFFIXES, "raw")
    headers = [_header(p, bool(half_size)) for p in files]
    first = headers[0]
    for path, h in zip(files, headers, strict=True):
        if h.shape != first.shape:
            raise ValueError(
                f"frames differ: {path} is {h.shape[0]} x {h.shape[1]} pixels, but "
                f"{files[0]} (the first file) is {first.shape[0]} x {first.shape[1]}; open "
                "frames of one size"
            )
        if not (
            np.array_equal(h.rgb_xyz, first.rgb_xyz)
            and np.array_equal(h.color_matrix, first.color_matrix)
        ):
            raise ValueError(
                f"{path} has other colour matrices than {files[0]} (the first file): open "
                "the files of one camera model at a time"
            )
    times, source = _frames.frame_times(files, time, lambda i: headers[i].time, "camera time")
    order = _frames.order_by_time(times, source)
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    times = times[order]
    _frames.warn_repeated(times, files)
    attrs: dict[str, Any] = {
        "source_files": [str(p) for p in files],
        "format": "raw",
        "bit_depth": 16,
        "encoding": "identity",
        "time_source": source,
        "demosaic": demosaic,
        "half_size": int(bool(half_size)),
        "as_shot_white_balance": [list(h.as_shot) for h in headers],
        "black_level": list(first.black),
        "white_level": first.white,
        "daylight_white_balance": list(first.daylight),
        "rgb_xyz_matrix": first.rgb_xyz.tolist(),
        "color_matrix": first.color_matrix.tolist(),
    }
    frames = _frames.LazyFrames(
        files,
        first.shape,
        np.float32,
        _read_raw,
        {"demosaic": demosaic, "half_size": bool(half_size)},
        (_frames.file_token(files), demosaic, bool(half_size)),
    )
    return _frames.stack(frames, times, _RGB, attrs, "open_raw")


def _rgb_cam(rgb_xyz: np.ndarray) -> np.ndarray:
    """Invert an XYZ → camera matrix into camera → linear sRGB, as dcraw's cam_xyz_coeff."""
    cam_rgb = rgb_xyz @ SRGB_TO_XYZ
    cam_rgb = cam_rgb / cam_rgb.sum(axis=1, keepdims=True)
    return np.linalg.inv(cam_rgb)


def camera_matrix(
    raw: xr.DataArray,
    *,
    white_balance: Literal["as_shot", "daylight"] | Sequence[float] = "as_shot",
    dim: Hashable = "channel",
) -> xr.DataArray:
    r"""Build the camera's own colour matrix, camera RGB → linear sRGB, as dcraw does.

    This is what dcraw and LibRaw do to a raw file (``dcraw -w -o 1``, LibRaw's
    ``cam_xyz_coeff`` and ``convert_to_rgb``), as an xccm matrix for the values of
    :func:`open_raw`, so that "the camera's colour" can go through :func:`xccm.apply` and
    :func:`xccm.report` beside a chart fit. With :math:`C` the camera's XYZ → camera matrix
    (``attrs["rgb_xyz_matrix"]``) and :math:`X` linear sRGB → XYZ (:data:`SRGB_TO_XYZ`):

    .. math::

        A = C X, \quad A'_{ij} = A_{ij} / \textstyle\sum_k A_{ik}, \quad
        R = A'^{-1}, \quad M = \operatorname{diag}(w) R^\top

    Normalising the rows of :math:`A` makes the sRGB white (1, 1, 1) give camera
    (1, 1, 1) after white balance; :math:`w` are the white-balance multipliers with green
    = 1, so a grey the camera saw as neutral comes out with R = G = B equal to its green
    camera value. For a row vector of camera RGB :math:`c`, :math:`c M` is linear sRGB.
    Where LibRaw gives no :math:`C` (DNG files) its ``color_matrix`` is :math:`R`, which it
    computes the same way from the DNG's ColorMatrix (times CameraCalibration and
    AnalogBalance).

    Parameters
    ----------
    raw : DataArray
        From :func:`open_raw` (its attrs hold the matrices and white balance).
    white_balance : "as_shot", "daylight" or 3 floats, default "as_shot"
        ``"as_shot"``: each frame's own multipliers (one matrix per frame; a frame without
        them gets a NaN matrix and a warning); ``"daylight"``: LibRaw's daylight
        multipliers for the camera (one matrix); or multipliers ``[R, G, B]``.
    dim : hashable, default "channel"

    Returns
    -------
    DataArray
        float64, dims ``("time", f"{dim}_in", dim)`` for ``"as_shot"`` (coords from
        ``raw.time``), ``(f"{dim}_in", dim)`` otherwise; rows ``R, G, B`` (camera),
        columns ``R, G, B`` (linear sRGB); ``attrs["model"] = "linear"``,
        ``attrs["init"] = "camera"`` and ``attrs["white_balance"]``.

    Raises
    ------
    ValueError
        If ``raw`` lacks the attrs of :func:`open_raw`, the file had no colour matrix,
        or ``white_balance`` is malformed.

    Examples
    --------
    >>> raw = xr.DataArray(
    ...     np.zeros((1, 2, 2, 3), np.float32), dims=("time", "y", "x", "channel"),
    ...     coords={"time": [0], "channel": ["R", "G", "B"]},
    ...     attrs={"rgb_xyz_matrix": np.linalg.inv(SRGB_TO_XYZ).tolist(),
    ...            "color_matrix": np.zeros((3, 3)).tolist(),
    ...            "as_shot_white_balance": [[2.0, 1.0, 1.5]]},
    ... )  # a camera that sees sRGB: R is the identity
    >>> m = camera_matrix(raw)
    >>> m.dims, (np.round(m.sel(time=0).values, 6) + 0).tolist()
    (('time', 'channel_in', 'channel'), [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.5]])
    """
    if not isinstance(raw, xr.DataArray):
        raise TypeError(f"raw must be a DataArray from open_raw; got {type(raw).__name__}")
    needed = ("rgb_xyz_matrix", "color_matrix", "as_shot_white_balance")
    missing = [k for k in needed if k not in raw.attrs]
    if missing:
        raise ValueError(
            f"raw lacks attrs {missing}: camera_matrix takes the DataArray open_raw returns"
        )
    rgb_xyz = np.asarray(raw.attrs["rgb_xyz_matrix"], dtype=np.float64)
    if rgb_xyz.shape != (3, 3):
        raise ValueError(f"raw.attrs['rgb_xyz_matrix'] must be 3 x 3; got {rgb_xyz.shape}")
    if np.any(rgb_xyz):
        rgb_cam = _rgb_cam(rgb_xyz)
    else:
        rgb_cam = np.asarray(raw.attrs["color_matrix"], dtype=np.float64)
        if rgb_cam.shape != (3, 3) or not np.any(rgb_cam):
            raise ValueError(
                "the raw files carry no colour matrix LibRaw knows (attrs['rgb_xyz_matrix'] "
                "and attrs['color_matrix'] are zero): there is no camera colour to compare"
            )
    rows = [str(c) for c in raw[dim].values] if dim in raw.coords else list(_RGB)
    if isinstance(white_balance, str) and white_balance == "as_shot":
        wb = np.asarray(raw.attrs["as_shot_white_balance"], dtype=np.float64)
        if "time" not in raw.dims or wb.shape != (raw.sizes["time"], 3):
            raise ValueError(
                "raw.attrs['as_shot_white_balance'] must hold 3 multipliers per frame along "
                f"'time'; got shape {wb.shape} for dims {raw.dims}"
            )
        bad = ~np.isfinite(wb).all(axis=1)
        if bad.any():
            warnings.warn(
                f"{int(bad.sum())} frames have no as-shot white balance (first at time "
                f"{raw.time.values[np.argmax(bad)]}); their camera matrices are NaN",
                UserWarning,
                stacklevel=2,
            )
        values = wb[:, :, None] * rgb_cam.T[None]
        dims: tuple[Hashable, ...] = ("time", f"{dim}_in", dim)
        coords: dict[Hashable, Any] = {"time": raw.time.values}
    else:
        if isinstance(white_balance, str) and white_balance == "daylight":
            wb = np.asarray(raw.attrs.get("daylight_white_balance", [np.nan] * 3), float)
        elif isinstance(white_balance, str):
            raise ValueError(
                f"white_balance must be 'as_shot', 'daylight' or 3 multipliers; got "
                f"{white_balance!r}"
            )
        else:
            wb = np.asarray(white_balance, dtype=np.float64)
        if wb.shape != (3,) or not (np.isfinite(wb).all() and (wb > 0).all()):
            raise ValueError(
                f"white_balance must be 3 positive multipliers [R, G, B]; got {wb.tolist()}"
            )
        values = wb[:, None] * rgb_cam.T
        dims = (f"{dim}_in", dim)
        coords = {}
    coords[f"{dim}_in"] = rows
    coords[dim] = list(_RGB)
    label = white_balance if isinstance(white_balance, str) else [float(v) for v in wb]
    return xr.DataArray(
        values,
        dims=dims,
        coords=coords,
        name="camera_matrix",
        attrs={"model": "linear", "init": "camera", "white_balance": label},
    )
