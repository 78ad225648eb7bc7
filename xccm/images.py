"""Image frames in and out: PNG, JPEG and TIFF files as a lazy ``(time, y, x, channel)`` stack.

:func:`open_images` reads a folder, a glob or a list of files lazily, one Dask chunk per frame,
with a ``time`` coord from the camera's EXIF time, the file names or the file order;
:func:`to_images` writes a stack back, one file per frame, encoded, clipped and written
atomically. Needs the ``images`` extra: Pillow (JPEG, 8-bit PNG, EXIF), tifffile (TIFF of any
depth, float included) and imagecodecs (16-bit PNG, which Pillow reads as 8-bit, and the
compressed TIFFs tifffile decodes with it).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import dask.array as dsa
import numpy as np
import pandas as pd
import xarray as xr

from . import _frames
from ._labels import check_choice
from .linearize import encode

__all__ = ["IMAGE_SUFFIXES", "open_images", "to_images"]

#: The file suffixes :func:`open_images` takes from a folder (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_EXIF_IFD, _DATETIME_ORIGINAL, _SUBSEC_ORIGINAL = 0x8769, 36867, 37521
_EXIF_NAME = "EXIF DateTimeOriginal"
_RGB = ("R", "G", "B")
_GRAY = ("gray",)


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"reading and writing images needs {module.split('.')[0]}: "
            'python -m pip install "xccm[images]"'
        ) from None


# ---------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class _Header:
    kind: str  # "png", "jpeg" or "tiff"
    shape: tuple[int, int, int]  # (y, x, channel) as read, alpha dropped
    dtype: np.dtype
    alpha: bool
    time: datetime | None


def _kind(path: str | Path) -> str:
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if magic.startswith(b"\xff\xd8"):
        return "jpeg"
    if magic[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    raise ValueError(f"{path} is not a PNG, JPEG or TIFF file (it starts with {magic[:4]!r})")


def _png_ihdr(path: str | Path) -> tuple[int, int, int, int]:
    """Height, width, bit depth and colour type from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is a malformed PNG file (no IHDR chunk first)")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return height, width, head[24], head[25]


def _exif_datetime(text: Any, subsec: Any) -> datetime | None:
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str):
        return None
    try:
        t = datetime.strptime(text.strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # e.g. "0000:00:00 00:00:00" from a camera whose clock was never set
    if isinstance(subsec, bytes):
        subsec = subsec.decode("ascii", "replace")
    digits = str(subsec).strip("\x00 ") if subsec is not None else ""
    if digits.isdigit():
        t = t.replace(microsecond=int(digits.ljust(6, "0")[:6]))
    return t


def _pillow_header(path: Path, kind: str) -> _Header:
    image_mod = _require("PIL.Image")
    with image_mod.open(path) as im:
        exif = im.getexif().get_ifd(_EXIF_IFD)
        time = _exif_datetime(exif.get(_DATETIME_ORIGINAL), exif.get(_SUBSEC_ORIGINAL))
        width, height = im.size
        mode = im.mode
    if kind == "png":
        _, _, depth, colour = _png_ihdr(path)
        channels = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}[colour]
        alpha = colour in (4, 6)
        dtype: np.dtype[Any] = np.dtype(np.uint16 if depth == 16 else np.uint8)
    else:
        if mode not in ("L", "RGB"):
            raise ValueError(f"{path} is a {mode} JPEG; open_images reads grey and RGB JPEGs")
        channels, alpha, dtype = (1 if mode == "L" else 3), False, np.dtype(np.uint8)
    return _Header(kind, (height, width, channels), dtype, alpha, time)


def _tiff_header(path: Path) -> _Header:
    tifffile = _require("tifffile")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        photometric = int(page.photometric)
        if photometric not in (0, 1, 2):  # MINISWHITE, MINISBLACK, RGB
            raise ValueError(
                f"{path} is a TIFF with photometric interpretation {page.photometric.name}; "
                "open_images reads grey and RGB TIFFs (use open_raw for DNG and raw files)"
            )
        samples = int(page.samplesperpixel)
        alpha = len(page.extrasamples) > 0 and samples in (2, 4)
        channels = samples - 1 if alpha else samples
        # DateTimeOriginal in the EXIF IFD, or in IFD0 as TIFF/EP places it
        exif = page.tags.get("ExifTag")
        exif = dict(exif.value) if exif is not None and isinstance(exif.value, dict) else {}
        for name in ("DateTimeOriginal", "SubsecTimeOriginal"):
            if name not in exif and name in page.tags:
                exif[name] = page.tags[name].value
        time = _exif_datetime(exif.get("DateTimeOriginal"), exif.get("SubsecTimeOriginal"))
        dtype = np.dtype(page.dtype)
        shape = (int(page.imagelength), int(page.imagewidth), channels)
    if dtype.kind not in "uif" or dtype == np.dtype(bool):
        raise ValueError(f"{path} holds {dtype} samples; open_images reads integer and float")
    return _Header("tiff", shape, dtype, alpha, time)


def _header(path: Path) -> _Header:
    kind = _kind(path)
    return _tiff_header(path) if kind == "tiff" else _pillow_header(path, kind)


def _read_image(path: str) -> np.ndarray:
    """Read one frame ``(y, x, channel)``: alpha dropped, grey as one channel."""
    kind = _kind(path)
    if kind == "tiff":
        tifffile = _require("tifffile")
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            data = page.asarray()
            if data.ndim == 3 and page.axes.startswith("S"):  # planar: samples first
                data = np.moveaxis(data, 0, -1)
            if int(page.photometric) == 0:  # MINISWHITE: 0 is white
                data = (np.iinfo(data.dtype).max if data.dtype.kind in "ui" else 1) - data
            alpha = len(page.extrasamples) > 0 and int(page.samplesperpixel) in (2, 4)
    elif kind == "png" and _png_ihdr(path)[2] == 16:
        imagecodecs = _require("imagecodecs")
        with open(path, "rb") as f:
            data = imagecodecs.png_decode(f.read())
        alpha = data.ndim == 3 and data.shape[-1] in (2, 4)
    else:
        image_mod = _require("PIL.Image")
        with image_mod.open(path) as im:
            if im.mode == "P":
                im = im.convert("RGB")
            elif im.mode == "1":
                im = im.convert("L")
            alpha = im.mode in ("LA", "RGBA")
            data = np.asarray(im)
    if data.ndim == 2:
        data = data[..., None]
    if alpha:
        data = data[..., :-1]
    return np.ascontiguousarray(data)


def open_images(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    time: _frames.Time = "auto",
    encoding: str | None = None,
) -> xr.DataArray:
    r"""Open PNG, JPEG and TIFF frames as a lazy ``(time, y, x, channel)`` stack.

    Each file is one frame and one Dask chunk; nothing is decoded until the data are
    computed. Opening reads every file's header (size, channels, sample type, EXIF) but no
    pixels, so frames of different sizes or channel counts fail at once, naming the first
    file that differs from the first one.

    Parameters
    ----------
    paths : path, glob or sequence of paths
        A folder (its ``.png``, ``.jpg``, ``.jpeg``, ``.tif`` and ``.tiff`` files, sorted by
        name), a glob pattern (``"site/2024-*/*.jpg"``, sorted by name) or files (kept in
        the given order). The file contents decide the format, not the suffix.
    time : str, compiled regex or sequence, default "auto"
        Where the ``time`` coord comes from:

        - ``"auto"``: the EXIF DateTimeOriginal (with SubSecTimeOriginal) when every file
          has one; an error when only some have. When none has: the date-time in each file
          name if every name holds one, in the form :func:`to_images` writes
          (``20240601T120000``, optionally with fractional-second digits), ISO 8601's
          extended form with ``-`` or ``:`` in the time (``2024-06-01T12-00-00``, ``T``,
          ``_`` or a space between date and time) or ``20240601_120000`` (whole fields
          only, years 1900 to 2261: a frame number is never read as a time); else the file
          order ``0 .. n-1``.
        - ``"exif"``: the EXIF DateTimeOriginal, required of every file.
        - a :func:`~datetime.datetime.strptime` format with ``%`` directives, searched in
          each file name, e.g. ``"%Y_%m_%d_%H%M%S"`` for ``"site_2024_06_01_120005.jpg"``
          (zero-padded fields; ``%z`` offsets are converted to UTC).
        - a compiled regex with named groups ``year``, ``month``, ``day`` and optionally
          ``hour``, ``minute``, ``second``, ``microsecond``, searched in each file name.
        - ``"order"``: ``0 .. n-1`` in file order.
        - a sequence of one value per file, used as it is.

        With camera or file-name times the frames are sorted by time (stably); EXIF and
        file-name times are naive local times as the camera wrote them. Frames sharing a
        time get a warning, since per-frame matrices are matched to frames by time.
    encoding : str, optional
        How the values are encoded, stored as ``attrs["encoding"]`` for
        :func:`xccm.linearize`. Default ``"srgb"`` for integer images (8-bit and 16-bit
        JPEG, PNG and TIFF: ICC profiles are not read) and ``"identity"`` (linear) for
        float TIFF. Pass e.g. ``"identity"`` for linear 16-bit TIFFs from a raw converter.

    Returns
    -------
    DataArray
        Named ``"image"``, dims ``(time, y, x, channel)``, Dask-backed with one chunk per
        frame, in the files' sample type: 8-bit files give uint8, 16-bit uint16, float TIFF
        float32 or float64. ``channel`` coords ``["R", "G", "B"]``, or ``["gray"]`` for grey
        images (one channel, kept as it is: a grey image is not expanded to RGB). An alpha
        channel is dropped. Pixels are read as stored: EXIF orientation is not applied.
        ``attrs``: ``source_files`` (absolute paths, in frame order), ``format``
        (``"jpeg"``, ``"png"``, ``"tiff"``, comma-separated when mixed), ``bit_depth``,
        ``encoding``, ``scale`` (``1 / 255`` or ``1 / 65535`` for integer images: what
        :func:`xccm.linearize` multiplies by), ``time_source`` and, when any file had
        one, ``alpha = "dropped"``.

    Raises
    ------
    ValueError
        On no matching file, a file that is not PNG/JPEG/TIFF (or a CMYK JPEG, a palette
        or CFA TIFF), frames of different sizes, channel counts or sample types, or missing
        times.
    ImportError
        Without the ``images`` extra (Pillow, tifffile, imagecodecs).

    Warns
    -----
    UserWarning
        When an alpha channel is dropped, and when frames share a time.

    See Also
    --------
    to_images : write a stack as images.
    open_raw : raw camera files, linear.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> folder = tempfile.mkdtemp()
    >>> for hour in (12, 13):
    ...     pixels = np.full((4, 6, 3), 10 * hour, dtype=np.uint8)
    ...     Image.fromarray(pixels).save(f"{folder}/cam_2024-06-01_{hour}00.png")
    >>> frames = open_images(folder, time="%Y-%m-%d_%H%M")
    >>> frames.dims, frames.dtype, frames.chunks[0], frames.attrs["encoding"]
    (('time', 'y', 'x', 'channel'), dtype('uint8'), (1, 1), 'srgb')
    >>> [str(t)[:16] for t in frames.time.values]
    ['2024-06-01T12:00', '2024-06-01T13:00']
    >>> import xccm
    >>> linear = xccm.linearize(frames, "srgb", scale=frames.attrs["scale"])
    >>> round(float(linear[1, 0, 0, 0]), 4)  # sRGB-decoded 130 / 255
    0.2232
    """
    files = _frames.resolve_paths(paths, IMAGE_SUFFIXES, "image")
    headers = [_header(p) for p in files]
    first = headers[0]
    for path, h in zip(files, headers, strict=True):
        if h.shape != first.shape or h.dtype != first.dtype:
            raise ValueError(
                f"frames differ: {path} is {_describe(h)}, but {files[0]} (the first file) is "
                f"{_describe(first)}; open frames of one size, channel count and sample type"
            )
    times, source = _frames.frame_times(files, time, lambda i: headers[i].time, _EXIF_NAME)
    order = _frames.order_by_time(times, source)
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    times = times[order]
    _frames.warn_repeated(times, files)

    dtype, n_channels = first.dtype, first.shape[-1]
    if encoding is None:
        encoding = "identity" if dtype.kind == "f" else "srgb"
    attrs: dict[str, Any] = {
        "source_files": [str(p) for p in files],
        "format": ", ".join(sorted({h.kind for h in headers})),
        "bit_depth": dtype.itemsize * 8,
        "encoding": str(encoding),
    }
    if dtype.kind in "ui":
        attrs["scale"] = 1 / float(np.iinfo(dtype).max)
    attrs["time_source"] = source
    n_alpha = sum(h.alpha for h in headers)
    if n_alpha:
        attrs["alpha"] = "dropped"
        first_alpha = next(p for p, h in zip(files, headers, strict=True) if h.alpha)
        warnings.warn(
            f"{n_alpha} of {len(files)} images have an alpha channel, first {first_alpha}; "
            "it is dropped (attrs['alpha'] = 'dropped'), so the frames hold colour only",
            UserWarning,
            stacklevel=2,
        )
    channels = _RGB if n_channels == 3 else _GRAY if n_channels == 1 else range(n_channels)
    frames = _frames.LazyFrames(
        files, first.shape, dtype, _read_image, {}, _frames.file_token(files)
    )
    return _frames.stack(frames, times, channels, attrs, "open_images")


def _describe(h: _Header) -> str:
    y, x, c = h.shape
    return f"{y} x {x} pixels, {c} channel{'s' if c != 1 else ''}, {h.dtype}"


# ---------------------------------------------------------------------------------------------
# writing

Clip = Literal["clip", "error"]
_SUFFIX = {"png": "png", "tiff": "tif"}
_BLOCK_DIMS = ("__xccm_frame__", "y", "x", "channel")


def to_images(
    da: xr.DataArray,
    folder: str | os.PathLike,
    *,
    format: Literal["png", "tiff"] = "png",
    bits: Literal[8, 16] = 8,
    encoding: str = "srgb",
    clip: Clip = "clip",
    dim: Hashable = "channel",
    spatial_dims: tuple[Hashable, Hashable] = ("y", "x"),
    name_format: str | None = None,
    prefix: str = "",
    overwrite: bool = False,
    compute: bool = True,
) -> xr.DataArray:
    r"""Write a stack as image files, one per frame, and count the clipped pixels.

    Each frame's linear values are encoded (:func:`xccm.encode`), clipped to [0, 1],
    scaled to the integer range and rounded: ``round(clip(encode(x), 0, 1) * (2**bits - 1))``.
    A file is written to a temporary name in ``folder`` and renamed when complete, so a
    crash never leaves a truncated image under a frame's name. With Dask, frames are
    written chunk by chunk, in parallel, as the result is computed.

    Parameters
    ----------
    da : DataArray
        Float values, dims ``(frame, y, x, channel)`` in any order, or ``(y, x, channel)``
        for one image; 1 (grey) or 3 channels. Linear unless ``encoding="identity"``.
    folder : path
        Created if missing.
    format : {"png", "tiff"}, default "png"
        PNG (written with imagecodecs) or zlib-compressed TIFF (tifffile); suffix ``.png``
        or ``.tif``.
    bits : {8, 16}, default 8
        Integer depth of the files.
    encoding : str, default "srgb"
        The curve :func:`xccm.encode` applies first: ``"srgb"``, ``"gamma"`` (2.2) or
        ``"identity"`` to write the values as they are (linear files).
    clip : {"clip", "error"}, default "clip"
        What to do with encoded values outside [0, 1] and NaN: ``"clip"`` clips them
        (NaN becomes 0) and counts the pixels affected; ``"error"`` raises a ValueError
        naming the frame before its file is written (frames written before stay).
    dim : hashable, default "channel"
    spatial_dims : (hashable, hashable), default ("y", "x")
        The image rows and columns.
    name_format : str, optional
        File names come from the frame dim's coords: for datetimes a
        :meth:`~datetime.datetime.strftime` format (default ``"%Y%m%dT%H%M%S"``, with
        ``"%Y%m%dT%H%M%S%f"`` used by default when two frames share a second; both read
        back as times by :func:`open_images`' ``time="auto"``), otherwise a
        :meth:`str.format` pattern (default ``"{}"``; e.g. ``"{:05d}"``). Without coords the
        frame positions ``0 .. n-1`` are used; a single image is named ``"image"``.
    prefix : str, default ""
        Put before every file name, e.g. ``"site_"``.
    overwrite : bool, default False
        Replace existing files; otherwise an existing file of the same name is an error,
        raised before anything is written.
    compute : bool, default True
        Write now and return the counts; with False, return them Dask-backed: computing
        them writes the files (as :meth:`xarray.Dataset.to_zarr` with ``compute=False``).

    Returns
    -------
    DataArray
        Named ``"clipped"``, int64, dims ``(frame,)`` (scalar for a single image): per
        frame, the number of pixels with at least one value clipped or NaN. Coords: the
        frame dim's, and ``file`` (the file names). ``attrs["pixels"]``: pixels per frame.

    Raises
    ------
    ValueError
        On missing dims, a channel count other than 1 or 3, a bad ``format``, ``bits`` or
        ``clip``, repeated or unsafe file names, or (``clip="error"``) values out of range.
    TypeError
        If ``da`` is not a float DataArray.
    FileExistsError
        If a file exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile
    >>> times = pd.date_range("2024-06-01 12:00", periods=2, freq="h")
    >>> linear = xr.DataArray(
    ...     np.full((2, 4, 6, 3), 0.2, dtype=np.float32), dims=("time", "y", "x", "channel"),
    ...     coords={"time": times, "channel": ["R", "G", "B"]},
    ... )
    >>> linear[1, 0, 0] = [1.5, 0.2, 0.2]  # one pixel too bright
    >>> folder = tempfile.mkdtemp()
    >>> clipped = to_images(linear.chunk(time=1), folder, prefix="site_")
    >>> clipped.values.tolist(), clipped.file.values.tolist()
    ([0, 1], ['site_20240601T120000.png', 'site_20240601T130000.png'])
    >>> back = open_images(folder, time="%Y%m%dT%H%M%S")
    >>> int(back[0, 0, 0, 0])  # round(255 * srgb_encode(0.2))
    124
    """
    if format not in _SUFFIX:
        raise ValueError(f"format must be 'png' or 'tiff'; got {format!r}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16; got {bits!r}")
    check_choice("clip", clip, Clip)
    if not isinstance(da, xr.DataArray):
        raise TypeError(f"da must be a DataArray; got {type(da).__name__}")
    if da.dtype.kind != "f":
        raise TypeError(
            f"da has dtype {da.dtype}; to_images writes float values in [0, 1] (linear "
            "unless encoding='identity'): scale integer images first, e.g. "
            "xccm.linearize(frames, frames.attrs['encoding'], scale=frames.attrs['scale'])"
        )
    frame_dim = _frame_dim(da, dim, spatial_dims)
    n_channels = da.sizes[dim]
    if n_channels not in (1, 3):
        raise ValueError(
            f"da has {n_channels} values along {dim!r}; image files take 1 (grey) or 3 (RGB)"
        )
    single = frame_dim is None
    if single:
        frame_dim = "__xccm_frame__"
        da = da.expand_dims(frame_dim)
    names = _file_names(da, frame_dim, name_format, prefix, single, _SUFFIX[format])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        existing = [n for n in names if (folder / n).exists()]
        if existing:
            raise FileExistsError(
                f"{len(existing)} of the {len(names)} files exist already, first "
                f"{folder / existing[0]}; pass overwrite=True to replace them"
            )
    encoded = encode(da, encoding, dim=dim)
    encoded = encoded.transpose(frame_dim, *spatial_dims, dim)
    data = encoded.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(data, chunks=(1, -1, -1, -1))
    data = data.rechunk({1: -1, 2: -1, 3: -1})
    name_array = dsa.from_array(np.array(names, dtype=object), chunks=(data.chunks[0],))
    counts = dsa.blockwise(
        _write_block,
        "t",
        data,
        "tyxc",
        name_array,
        "t",
        dtype=np.int64,
        concatenate=True,
        folder=str(folder),
        format=format,
        bits=bits,
        clip=clip,
        meta=np.empty((0,), np.int64),
    )
    coords: dict[Hashable, Any] = {"file": (frame_dim, names)}
    if frame_dim in da.coords:
        coords[frame_dim] = da[frame_dim].values
    out = xr.DataArray(
        counts,
        dims=(frame_dim,),
        coords=coords,
        name="clipped",
        attrs={"pixels": int(da.sizes[spatial_dims[0]] * da.sizes[spatial_dims[1]])},
    )
    if compute:
        out = out.compute()
    return out.isel({frame_dim: 0}) if single else out


def _frame_dim(da: xr.DataArray, dim, spatial_dims) -> Hashable | None:
    need = (*spatial_dims, dim)
    missing = [d for d in need if d not in da.dims]
    if missing:
        raise ValueError(
            f"da must have dims {need} plus at most one frame dim; it has {da.dims} "
            f"(missing {missing}); pass dim= or spatial_dims= for other names"
        )
    others = [d for d in da.dims if d not in need]
    if len(others) > 1:
        raise ValueError(
            f"da has dims {others} besides {need}; to_images writes one file per frame "
            "along one frame dim: select or stack the others first"
        )
    return others[0] if others else None


def _file_names(da, frame_dim, name_format, prefix, single, suffix) -> list[str]:
    n = da.sizes[frame_dim]
    if single:
        stems = ["image"]
    elif frame_dim not in da.coords:
        stems = [(name_format or "{}").format(i) for i in range(n)]
    else:
        values = da[frame_dim].values
        if np.issubdtype(values.dtype, np.datetime64):
            stamps = pd.DatetimeIndex(values)
            fmt = name_format or "%Y%m%dT%H%M%S"
            if name_format is None and len(set(stamps.strftime(fmt))) < n:
                fmt = "%Y%m%dT%H%M%S%f"
            stems = list(stamps.strftime(fmt))
        else:
            stems = [(name_format or "{}").format(v) for v in values.tolist()]
    names = [f"{prefix}{stem}.{suffix}" for stem in stems]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if os.sep in name or (os.altsep and os.altsep in name) or name.startswith("."):
            raise ValueError(f"the file name {name!r} of frame {i} is not a plain file name")
        if name in seen:
            raise ValueError(
                f"frames {seen[name]} and {i} would both be written to {name!r}; pass a "
                "name_format that tells them apart"
            )
        seen[name] = i
    return names


def _write_block(block, names, *, folder, format, bits, clip) -> np.ndarray:
    """Write the frames of one chunk; return each frame's count of clipped pixels."""
    top = float(2**bits - 1)
    dtype = np.uint8 if bits == 8 else np.uint16
    counts = np.empty(block.shape[0], np.int64)
    for i, (frame, name) in enumerate(zip(block, names, strict=True)):
        with np.errstate(invalid="ignore"):
            bad = ~((frame >= 0) & (frame <= 1))  # NaN too
        counts[i] = int(bad.any(axis=-1).sum())
        if counts[i] and clip == "error":
            raise ValueError(
                f"frame {name}: {counts[i]} pixels have values outside [0, 1] or NaN after "
                "encoding; pass clip='clip' to clip them"
            )
        values = np.rint(np.clip(np.nan_to_num(frame, nan=0.0), 0, 1) * top).astype(dtype)
        _write_atomic(Path(folder) / name, values, format)
    return counts


def _write_atomic(path: Path, values: np.ndarray, format: str) -> None:
    """Write to a temporary file beside ``path``, then rename it: never a partial image."""
    pixels = values[..., 0] if values.shape[-1] == 1 else values
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if format == "png":
            imagecodecs = _require("imagecodecs")
            with os.fdopen(fd, "wb") as f:
                f.write(imagecodecs.png_encode(pixels))
        else:
            os.close(fd)
            tifffile = _require("tifffile")
            photometric = "minisblack" if values.shape[-1] == 1 else "rgb"
            tifffile.imwrite(tmp, pixels, photometric=photometric, compression="zlib")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
