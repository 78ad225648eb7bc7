"""Matrices in files: netCDF and JSON with provenance, and OpenCV's ``cv2.ccm`` layout.

:func:`save_matrix` writes a matrix (one, or one per frame) with its coords, the per-frame
diagnostics of a ΔE fit and its attrs; :func:`load_matrix` reads it back bit for bit, and
says clearly what is wrong with a file that is not a matrix. :func:`to_opencv` and
:func:`from_opencv` convert between xccm's matrices and the matrix OpenCV's
``cv2.ccm.ColorCorrectionModel`` fits and applies. Never pickle: a matrix file holds only
numbers, strings and JSON values.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import tempfile
from collections.abc import Hashable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import xarray as xr

from . import models
from .core import MATRIX_NAME, OFFSET, matrix_in_dim

__all__ = ["from_opencv", "load_matrix", "save_matrix", "to_opencv"]

Format = Literal["netcdf", "json", "opencv"]

#: ``"format"`` of a JSON matrix file and ``xccm_format`` of a netCDF one.
FORMAT_NAME = "xccm-matrix"
#: The schema version this xccm writes and reads.
FORMAT_VERSION = 1

_SUFFIXES: dict[str, Format] = {
    ".nc": "netcdf",
    ".nc4": "netcdf",
    ".netcdf": "netcdf",
    ".h5": "netcdf",
    ".json": "json",
    ".yml": "opencv",
    ".yaml": "opencv",
    ".xml": "opencv",
}
_NETCDF_VARIABLE = "matrix"
_ATTR_TYPES = "xccm_attr_types"  # per netCDF variable: how to restore non-native attrs
_DTYPE = "xccm_dtype"  # per netCDF time variable: its numpy dtype
_KEYS = ("format", "version", "name", "dims", "dtype", "data")


def _xccm_version() -> str:
    try:
        return version("xccm")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


# ---------------------------------------------------------------------------------------------
# save / load


def save_matrix(
    matrix: xr.DataArray | np.ndarray,
    path: str | os.PathLike,
    format: Format | None = None,
    *,
    overwrite: bool = True,
) -> Path:
    """Write a colour-correction matrix to a netCDF, JSON or OpenCV file.

    Everything comes back from :func:`load_matrix` exactly: the float64 (or float32) bits,
    NaN matrices of rejected frames, batch dims (one matrix per frame, with datetime
    coords), every coord (including the per-frame ``loss``, ``start_loss``,
    ``iterations`` and ``converged`` of a fit with ``loss=``), the name and the attrs.
    Before writing, ``attrs`` get ``xccm_version`` and ``created`` (UTC, ISO 8601) where
    they are missing; what the matrix already has is kept (a re-saved matrix keeps its
    first creation time). A fit records its own provenance: ``model``, ``init``, ``loss``
    (the distance; its value per frame is the ``loss`` coord), ``reference_space``,
    ``rgb_space``, the chart's ``chart`` and ``chart_edition`` and the measured colours'
    ``linearization``. The file is written to a temporary name and renamed, so a reader
    never sees half a file.

    Parameters
    ----------
    matrix : DataArray or ndarray
        A matrix with dims ``(*batch_dims, f"{dim}_in", dim)`` as :func:`xccm.fit` gives, or
        a 2-D array ``(n_in, n_out)`` / ``(n_in + 1, n_out)`` (saved with dims
        ``("channel_in", "channel")``). A Dask-backed matrix is computed (it is small).
    path : str or path-like
        The file to write.
    format : {"netcdf", "json", "opencv"}, optional
        Default from the suffix: ``.nc``, ``.nc4``, ``.netcdf``, ``.h5`` → ``"netcdf"``
        (netCDF4/HDF5 through h5netcdf, the ``io`` extra); ``.json`` → ``"json"`` (plain
        text, schema below, no extra needed); ``.yml``, ``.yaml``, ``.xml`` →
        ``"opencv"`` (an OpenCV ``FileStorage`` with the matrix as node ``ccm`` in
        ``cv2.ccm``'s layout, see :func:`to_opencv`; needs OpenCV, the ``detect`` extra;
        one ``linear`` or ``affine`` matrix, no batch dims, and only the matrix, its
        ``loss`` and a few attrs are kept). :func:`check_matrix_path` checks a path
        before a fit.
    overwrite : bool, default True
        If False, an existing ``path`` is an error (:class:`FileExistsError`).

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    TypeError
        If the matrix is not real floating point, its name is not a string, or an attr
        cannot be stored (keys must be strings; values numbers, strings, booleans, None,
        or lists/dicts of them, or numpy scalars/arrays).
    ValueError
        If the matrix has no ``(f"{dim}_in", dim)`` pair of dims, or the format is unknown.

    Notes
    -----
    The JSON schema (version 1) is one object::

        {"format": "xccm-matrix", "version": 1,
         "name": "ccm_matrix",                # or null
         "dims": ["time", "channel_in", "channel"],
         "shape": [2, 3, 3],
         "dtype": "float64",                  # or "float32"
         "attrs": {"model": "linear", ...},   # JSON values
         "coords": {"time": {"dims": ["time"], "dtype": "datetime64[ns]",
                             "data": ["2024-05-01T12:00:00.000000000", ...]}, ...},
         "data": [[[1.25, -0.5, 0.0], ...], ...]}   # nested lists, C order

    Numbers are written as Python's ``repr`` of the float64 value, the shortest decimal
    that reads back to the same bits in any correctly rounding parser; NaN is ``null``
    and infinities ``"inf"`` / ``"-inf"`` (so the file stays standard JSON). Coords have
    ``dims``, ``dtype`` (``float64``, ``int64``, ``bool``, ``str``, ``datetime64[unit]``,
    ``timedelta64[unit]``...), ``data`` and optional ``attrs``; datetimes are ISO 8601
    strings at their own unit, NaT is ``null``; timedeltas are integer counts of their unit.
    A non-finite float in ``attrs`` is ``{"float": "nan"}`` (or ``"inf"``, ``"-inf"``).

    In netCDF the matrix is the variable ``matrix``; the global attrs ``xccm_format`` and
    ``xccm_format_version`` mark the file, ``xccm_name`` holds the name. Attrs netCDF can
    hold (strings, numbers, lists of numbers) are written as they are; the rest (booleans,
    None, dicts, lists of strings) as JSON text, listed in the variable's
    ``xccm_attr_types`` so that they come back as they were.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, xccm
    >>> ref = xccm.chart()
    >>> m = xccm.fit(ref * [0.5, 0.6, 0.7], ref)
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> path = xccm.save_matrix(m, folder / "ccm.json")
    >>> back = xccm.load_matrix(path)
    >>> bool((back == m).all()), back.dims, back.attrs["model"]
    (True, ('channel_in', 'channel'), 'linear')
    >>> sorted(set(back.attrs) - set(m.attrs))
    ['created', 'xccm_version']
    """
    path = Path(path)
    fmt = _format_of(path, format)
    matrix = _as_saved_matrix(matrix)
    matrix.attrs = _with_provenance(matrix.attrs)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    writer = {"netcdf": _write_netcdf, "json": _write_json, "opencv": _write_opencv}[fmt]
    _atomic_write(path, lambda tmp: writer(matrix, tmp))
    return path


def check_matrix_path(
    path: str | os.PathLike,
    model: str | models.ModelSpec = "linear",
    *,
    batch_dims: Sequence[Hashable] = (),
    format: Format | None = None,
) -> Format:
    """Check, before fitting, that :func:`save_matrix` can write such a matrix to ``path``.

    JSON and netCDF hold every model and any batch dims. An OpenCV file (``.yml``,
    ``.yaml``, ``.xml``) holds one ``linear`` (3x3) or ``affine`` (4x3) matrix, and needs
    OpenCV. Nothing is written.

    Parameters
    ----------
    path : str or path-like
        The matrix file to be written.
    model : str or ModelSpec, default "linear"
        The model the matrix will have (a name, or :func:`xccm.models.resolve_model`'s spec).
    batch_dims : sequence of hashable, default ()
        The matrix's batch dims (e.g. ``("time",)`` for one matrix per frame).
    format : {"netcdf", "json", "opencv"}, optional
        As for :func:`save_matrix`; default from the suffix.

    Returns
    -------
    str
        The format ``save_matrix`` will write.

    Raises
    ------
    ValueError
        On a suffix of no known format, or an OpenCV file for a model other than linear or
        affine, or with batch dims.
    ImportError
        For an OpenCV file without OpenCV.

    Examples
    --------
    >>> check_matrix_path("ccm.json", "root_polynomial", batch_dims=("time",))
    'json'
    >>> check_matrix_path("ccm.yml", "root_polynomial")
    Traceback (most recent call last):
    ...
    ValueError: ccm.yml: an OpenCV file holds a linear (3x3) or affine (4x3) matrix; ...
    """
    path = Path(path)
    fmt = _format_of(path, format)
    if fmt == "opencv":
        name = model.name if isinstance(model, models.ModelSpec) else str(model)
        if name not in ("linear", "affine"):
            raise ValueError(
                f"{path}: an OpenCV file holds a linear (3x3) or affine (4x3) matrix; a "
                f"{name} matrix needs a .json or .nc file (they hold every model)"
            )
        if batch_dims:
            raise ValueError(
                f"{path}: an OpenCV file holds one matrix, not one per "
                f"{', '.join(map(repr, batch_dims))}: use a .json or .nc file"
            )
        _require_cv2()
    return fmt


def load_matrix(path: str | os.PathLike) -> xr.DataArray:
    """Read a matrix written by :func:`save_matrix` (netCDF, JSON or OpenCV).

    The format is recognised from the file's first bytes, not its name. A netCDF file
    written by ``DataArray.to_netcdf`` from a matrix (one variable with a
    ``(f"{dim}_in", dim)`` pair of dims) loads too, and so does an OpenCV ``FileStorage``
    (YAML, XML or JSON) with a ``ccm`` matrix node, such as
    ``cv2.ccm.ColorCorrectionModel.write`` writes (then the channels are labelled R, G, B,
    see :func:`from_opencv`).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    DataArray
        NumPy-backed, as it was saved: dims, dtype, coords (string coords as fixed-width
        unicode), name and attrs (numpy arrays in attrs come back as lists).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a matrix file, or is truncated or tampered with: not JSON or
        netCDF, another schema version, missing keys, data that do not have the stated
        shape, non-numeric values, a matrix without a ``(f"{dim}_in", dim)`` pair of dims,
        or rows that do not fit its ``model``. The message names the file and the problem.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, xccm
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ccm.nc"
    >>> _ = xccm.save_matrix(np.diag([2.0, 1.0, 0.5]), path)
    >>> m = xccm.load_matrix(path)
    >>> m.dims, m.attrs["model"], m.values.diagonal().tolist()
    (('channel_in', 'channel'), 'linear', [2.0, 1.0, 0.5])
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith((b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02")):
        matrix = _read_netcdf(path)
    elif stripped.startswith((b"%YAML", b"<?xml", b"<opencv_storage")) or (
        stripped.startswith(b"{") and b'"format"' not in head and b"opencv" in head.lower()
    ):
        matrix = _read_opencv(path)
    elif stripped.startswith(b"{"):
        matrix = _read_json(path)
    else:
        raise ValueError(
            f"{path}: not a matrix file (neither netCDF nor JSON nor an OpenCV FileStorage); "
            f"it starts with {head[:16]!r}"
        )
    _check_loaded(matrix, path)
    return matrix


def _format_of(path: Path, format: str | None) -> Format:
    if format is not None:
        if format not in ("netcdf", "json", "opencv"):
            raise ValueError(
                f"format must be 'netcdf', 'json' or 'opencv' (or None: from the suffix); "
                f"got {format!r}"
            )
        return format  # type: ignore[return-value]
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"cannot tell the format of {path} from its suffix {path.suffix!r}: use one of "
            f"{', '.join(_SUFFIXES)}, or pass format='netcdf', 'json' or 'opencv'"
        ) from None


def _as_saved_matrix(matrix) -> xr.DataArray:
    """Check what :func:`save_matrix` was given; return an in-memory copy to write."""
    if not isinstance(matrix, xr.DataArray):
        if type(matrix).__module__ == "xccm.accessor" or isinstance(matrix, xr.Dataset):
            names = [
                k for k, v in getattr(matrix, "data_vars", {}).items() if len(v.dims) >= 2
            ] or [MATRIX_NAME]
            raise TypeError(
                f"matrix must be a DataArray or an array, not a {type(matrix).__name__}; "
                f"pick the matrix variable, e.g. ds[{names[0]!r}]"
            )
        arr = np.asarray(matrix)
        if arr.ndim != 2:
            raise ValueError(
                "matrix as a plain array must be 2-D, (n_in, n_out) or (n_in + 1, n_out); got "
                f"shape {arr.shape}. For per-frame matrices pass a DataArray with named batch "
                "dims."
            )
        matrix = xr.DataArray(arr, dims=("channel_in", "channel"))
        rows, cols = arr.shape
        if rows in (cols, cols + 1):
            matrix.attrs["model"] = "linear" if rows == cols else "affine"
    if matrix.dtype.kind != "f":
        raise TypeError(
            f"matrix must hold real floating-point numbers (float64 or float32); got dtype "
            f"{matrix.dtype}"
        )
    if matrix.name is not None and not isinstance(matrix.name, str):
        raise TypeError(f"matrix.name must be a string or None; got {matrix.name!r}")
    matrix = matrix.copy(deep=True).compute()
    for name in [*matrix.dims, *matrix.coords]:
        if not isinstance(name, str):
            raise TypeError(f"dim and coord names must be strings to be saved; got {name!r}")
    _channel_dims(matrix, "matrix")
    _check_model(matrix, "matrix")
    return matrix


def _with_provenance(attrs: dict) -> dict:
    out = dict(attrs)
    out.setdefault("xccm_version", _xccm_version())
    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    out.setdefault("created", created.isoformat().replace("+00:00", "Z"))
    return out


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` to a temporary file next to ``path``, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _channel_dims(matrix: xr.DataArray, where: str) -> tuple[Hashable, str]:
    """Return ``(dim, f"{dim}_in")`` of a matrix; exactly one such pair of dims is expected."""
    pairs = [d for d in matrix.dims if matrix_in_dim(d) in matrix.dims]
    if len(pairs) != 1:
        found = "none" if not pairs else f"{len(pairs)}: {pairs}"
        raise ValueError(
            f"{where}: a matrix must have one pair of dims (f'{{dim}}_in', dim), e.g. "
            f"('channel_in', 'channel'), rows the input channels and columns the output "
            f"channels; its dims are {tuple(matrix.dims)} (pairs found: {found})"
        )
    return pairs[0], matrix_in_dim(pairs[0])


def _check_model(matrix: xr.DataArray, where: str) -> None:
    """Check that ``attrs["model"]`` fits the rows: an affine matrix has the offset row last."""
    dim, in_dim = _channel_dims(matrix, where)
    if matrix.sizes[in_dim] == 0 or matrix.sizes[dim] == 0:
        raise ValueError(f"{where}: the matrix is empty; its sizes are {dict(matrix.sizes)}")
    model = matrix.attrs.get("model")
    if model is None:
        return
    if model in models.MODELS and model not in ("linear", "affine"):
        try:  # a term-expanded model: its degree or terms must give the rows
            models.model_of(matrix, dim=dim)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
        return
    if model not in ("linear", "affine"):
        raise ValueError(
            f"{where}: attrs['model'] must be one of {tuple(models.MODELS)}; got {model!r}"
        )
    rows = list(matrix[in_dim].values) if in_dim in matrix.coords else None
    if model == "affine" and (matrix.sizes[in_dim] < 2 or (rows and rows[-1] != OFFSET)):
        raise ValueError(
            f"{where}: an affine matrix has its offset row last (label {OFFSET!r}) after at "
            f"least one channel row; rows along {in_dim!r} are "
            f"{rows if rows is not None else matrix.sizes[in_dim]}"
        )
    if model == "linear" and rows is not None and OFFSET in rows:
        raise ValueError(
            f"{where}: attrs['model'] is 'linear' but a row along {in_dim!r} is labelled "
            f"{OFFSET!r} (rows {rows}); an offset row belongs to an affine matrix"
        )


def _check_loaded(matrix: xr.DataArray, path: Path) -> None:
    where = str(path)
    if matrix.dtype.kind != "f":
        raise ValueError(f"{where}: the matrix values must be floating point; got {matrix.dtype}")
    _check_model(matrix, where)


# ---------------------------------------------------------------------------------------------
# JSON


def _write_json(matrix: xr.DataArray, tmp: str) -> None:
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": matrix.name,
        "dims": [str(d) for d in matrix.dims],
        "shape": list(matrix.shape),
        "dtype": matrix.dtype.name,
        "attrs": _json_attrs(matrix.attrs, "matrix.attrs"),
        "coords": {
            name: _json_variable(coord.variable, f"coord {name!r}")
            for name, coord in matrix.coords.items()
        },
        "data": _json_values(matrix.values),
    }
    Path(tmp).write_text(_dumps(doc) + "\n", encoding="utf-8")


def _dumps(value, indent: str = "") -> str:
    """JSON text with objects and lists of lists indented, and flat lists on one line."""
    flat = not isinstance(value, dict | list) or (
        isinstance(value, list) and not any(isinstance(v, dict | list) for v in value)
    )
    if flat or not value:
        return json.dumps(value, allow_nan=False, ensure_ascii=False)
    inner = indent + "  "
    if isinstance(value, dict):
        items = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dumps(v, inner)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    items = [f"{inner}{_dumps(v, inner)}" for v in value]
    return "[\n" + ",\n".join(items) + f"\n{indent}]"


def _json_variable(var: xr.Variable, where: str) -> dict:
    out: dict[str, Any] = {
        "dims": [str(d) for d in var.dims],
        "dtype": _dtype_name(var.values, where),
        "data": _json_values(var.values),
    }
    if var.attrs:
        out["attrs"] = _json_attrs(var.attrs, f"{where} attrs")
    return out


def _dtype_name(values: np.ndarray, where: str) -> str:
    kind = values.dtype.kind
    if kind in "fiub":
        return values.dtype.name
    if kind in "Mm":
        return str(values.dtype)
    if kind == "U" or (kind == "O" and all(isinstance(v, str) for v in values.ravel())):
        return "str"
    raise TypeError(
        f"{where} has dtype {values.dtype}, which a matrix file cannot hold (numbers, "
        "booleans, strings, datetime64 and timedelta64 only)"
    )


def _json_values(values: np.ndarray):
    kind = values.dtype.kind
    if kind == "f":
        return _map_nested(values.tolist(), _json_float)
    if kind == "M":
        unit = np.datetime_data(values.dtype)[0]
        text = np.datetime_as_string(values, unit=cast(Any, unit))
        return _map_nested(text.tolist(), lambda s: None if s == "NaT" else s)
    if kind == "m":
        nat = np.isnat(values)
        counts = values.astype(np.int64).astype(object)
        counts[nat] = None
        return counts.tolist()
    if kind == "O":
        return values.astype(str).tolist()
    return values.tolist()


def _map_nested(x, f):
    return [_map_nested(v, f) for v in x] if isinstance(x, list) else f(x)


def _json_float(v: float):
    if math.isfinite(v):
        return v
    return None if math.isnan(v) else ("inf" if v > 0 else "-inf")


def _json_attrs(attrs: dict, where: str) -> dict:
    out = {}
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: attr names must be strings to be saved; got {key!r}")
        out[key] = _json_attr(value, f"{where}[{key!r}]")
    return out


def _json_attr(value, where: str):
    """Return an attr value as JSON: numpy values as Python ones, non-finite floats tagged."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, list | tuple):
        return [_json_attr(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_attr(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(
        f"{where} is a {type(value).__name__}, which a matrix file cannot hold: attrs must be "
        "numbers, strings, booleans, None, or lists/dicts (string keys) of them"
    )


def _from_json_attr(value, where: str):
    if isinstance(value, list):
        return [_from_json_attr(v, where) for v in value]
    if isinstance(value, dict):
        if set(value) == {"float"} and value["float"] in ("nan", "inf", "-inf"):
            return float(value["float"])
        return {k: _from_json_attr(v, where) for k, v in value.items()}
    return value


def _read_json(path: Path) -> xr.DataArray:
    where = str(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not a JSON matrix file (not UTF-8 text: {e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{where}: not valid JSON (truncated or edited?): {e.msg} at line {e.lineno} "
            f"column {e.colno}"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(
            f"{where}: not an xccm matrix file: expected a JSON object with "
            f"'format': {FORMAT_NAME!r}; got {got!r}"
        )
    ver = doc.get("version")
    if ver != FORMAT_VERSION:
        newer = isinstance(ver, int) and ver > FORMAT_VERSION
        raise ValueError(
            f"{where}: matrix file schema version {ver!r} is not supported; this xccm "
            f"({_xccm_version()}) reads version {FORMAT_VERSION}"
            + ("; a newer xccm wrote it: upgrade xccm" if newer else "")
        )
    missing = [k for k in _KEYS if k not in doc]
    if missing:
        raise ValueError(f"{where}: missing keys {missing} (a matrix file has {list(_KEYS)})")
    dims = doc["dims"]
    if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
        raise ValueError(f"{where}: 'dims' must be a list of strings; got {dims!r}")
    if len(set(dims)) != len(dims):
        raise ValueError(f"{where}: 'dims' repeats a name: {dims}")
    dtype = doc["dtype"]
    if dtype not in ("float64", "float32", "float16"):
        raise ValueError(
            f"{where}: 'dtype' of the matrix must be 'float64' or 'float32'; got {dtype!r}"
        )
    if doc["name"] is not None and not isinstance(doc["name"], str):
        raise ValueError(f"{where}: 'name' must be a string or null; got {doc['name']!r}")
    shape = _nested_shape(doc["data"], len(dims), f"{where}: 'data'")
    if "shape" in doc and doc["shape"] != list(shape):
        raise ValueError(
            f"{where}: 'data' has shape {list(shape)} but 'shape' says {doc['shape']!r}"
        )
    data = _decode(doc["data"], dtype, shape, f"{where}: 'data'")
    sizes = dict(zip(dims, shape, strict=True))
    coords_doc = doc.get("coords", {})
    if not isinstance(coords_doc, dict):
        raise ValueError(f"{where}: 'coords' must be an object; got {type(coords_doc).__name__}")
    coords = {}
    for name, spec in coords_doc.items():
        coords[name] = _read_coord(spec, sizes, f"{where}: coord {name!r}")
    attrs = doc.get("attrs", {})
    if not isinstance(attrs, dict):
        raise ValueError(f"{where}: 'attrs' must be an object; got {type(attrs).__name__}")
    return xr.DataArray(
        data,
        dims=dims,
        coords=coords,
        name=doc["name"],
        attrs=_from_json_attr(attrs, where),
    )


def _read_coord(spec, sizes: dict[str, int], where: str) -> xr.Variable:
    if not isinstance(spec, dict) or any(k not in spec for k in ("dims", "dtype", "data")):
        raise ValueError(f"{where}: must be an object with 'dims', 'dtype' and 'data'")
    dims = spec["dims"]
    if not isinstance(dims, list) or any(d not in sizes for d in dims):
        raise ValueError(
            f"{where}: 'dims' must be a list of the matrix's dims {list(sizes)}; got {dims!r}"
        )
    shape = tuple(sizes[d] for d in dims)
    found = _nested_shape(spec["data"], len(dims), f"{where} 'data'")
    if found != shape:
        raise ValueError(
            f"{where}: 'data' has shape {list(found)} but its dims {dims} have sizes "
            f"{list(shape)} in the matrix"
        )
    values = _decode(spec["data"], spec["dtype"], shape, f"{where} 'data'")
    attrs = spec.get("attrs", {})
    if not isinstance(attrs, dict):
        raise ValueError(f"{where}: 'attrs' must be an object")
    return xr.Variable(dims, values, attrs=_from_json_attr(attrs, where))


def _nested_shape(data, ndim: int, where: str) -> tuple[int, ...]:
    """Return the shape of nested lists ``ndim`` deep; ragged or shallow data is an error."""
    shape: list[int] = []
    level = [data]
    for depth in range(ndim):
        lengths = {len(x) if isinstance(x, list) else -1 for x in level}
        if -1 in lengths:
            raise ValueError(
                f"{where} must be nested lists {ndim} deep (one level a dim); level {depth} "
                "holds a value that is not a list"
            )
        if len(lengths) > 1:
            raise ValueError(
                f"{where} is ragged: lists at level {depth} have lengths {sorted(lengths)}"
            )
        shape.append(lengths.pop() if lengths else 0)
        level = [v for x in level for v in x]
    if any(isinstance(v, list | dict) for v in level):
        raise ValueError(f"{where} is nested deeper than its {ndim} dims")
    return tuple(shape)


def _decode(data, dtype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    flat = [data]
    for _ in shape:
        flat = [v for x in flat for v in x]
    if not isinstance(dtype, str):
        raise ValueError(f"{where}: 'dtype' must be a string; got {dtype!r}")
    try:
        np_dtype = np.dtype(dtype) if dtype != "str" else np.dtype(str)
    except TypeError:
        raise ValueError(f"{where}: unknown dtype {dtype!r}") from None
    kind = np_dtype.kind
    if kind == "f":
        values = [_float_value(v, where) for v in flat]
    elif kind in "iu":
        _require_all(
            flat, lambda v: isinstance(v, int) and not isinstance(v, bool), "integer", dtype, where
        )
        values = flat
    elif kind == "b":
        _require_all(flat, lambda v: isinstance(v, bool), "boolean", dtype, where)
        values = flat
    elif kind == "U":
        _require_all(flat, lambda v: isinstance(v, str), "string", dtype, where)
        values = flat
    elif kind == "M":
        _require_all(
            flat, lambda v: v is None or isinstance(v, str), "ISO 8601 string", dtype, where
        )
        unit: Any = np.datetime_data(cast(Any, np_dtype))[0]
        try:
            values = [np.datetime64("NaT" if v is None else v, unit) for v in flat]
        except ValueError as e:
            raise ValueError(f"{where}: not an ISO 8601 date-time: {e}") from None
    elif kind == "m":
        _require_all(
            flat,
            lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
            "integer",
            dtype,
            where,
        )
        unit = np.datetime_data(cast(Any, np_dtype))[0]
        values = [np.timedelta64("NaT") if v is None else np.timedelta64(v, unit) for v in flat]
    else:
        raise ValueError(f"{where}: unsupported dtype {dtype!r}")
    try:
        arr = np.array(values, dtype=np_dtype)
    except OverflowError as e:
        raise ValueError(f"{where}: a value does not fit dtype {dtype}: {e}") from None
    return arr.reshape(shape)


def _float_value(v, where: str) -> float:
    if v is None:
        return math.nan
    if isinstance(v, float | int) and not isinstance(v, bool):
        return float(v)
    if v in ("inf", "-inf", "nan"):
        return float(v)
    raise ValueError(f"{where}: non-numeric value {v!r} (numbers, null for NaN, 'inf', '-inf')")


def _require_all(values: list, ok, what: str, dtype: str, where: str) -> None:
    for v in values:
        if not ok(v):
            raise ValueError(f"{where}: {v!r} is not a {what} value (dtype {dtype})")


# ---------------------------------------------------------------------------------------------
# netCDF


def _require_h5netcdf() -> None:
    try:
        import h5netcdf  # noqa: F401
    except ImportError:
        raise ImportError(
            "netCDF matrix files need h5netcdf: pip install 'xccm[io]' (or save as .json, "
            "which needs nothing)"
        ) from None


def _write_netcdf(matrix: xr.DataArray, tmp: str) -> None:
    _require_h5netcdf()
    if _NETCDF_VARIABLE in matrix.coords:
        raise ValueError(
            f"matrix has a coord named {_NETCDF_VARIABLE!r}, the name of the matrix variable "
            f"in a netCDF matrix file; rename it, or save as .json"
        )
    ds = matrix.to_dataset(name=_NETCDF_VARIABLE)
    for name, var in ds.variables.items():
        var.attrs = _netcdf_attrs(var.attrs, f"{'matrix' if name == _NETCDF_VARIABLE else name}")
        if _dtype_name(var.values, f"coord {name!r}").startswith(("datetime", "timedelta")):
            var.attrs[_DTYPE] = str(var.dtype)  # netCDF readers may decode at another unit
    ds.attrs = {"xccm_format": FORMAT_NAME, "xccm_format_version": np.int64(FORMAT_VERSION)}
    if matrix.name is not None:
        ds.attrs["xccm_name"] = matrix.name
    encoding = {
        name: {"_FillValue": None} for name, var in ds.variables.items() if var.dtype.kind in "fiub"
    }
    ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)


def _netcdf_attrs(attrs: dict, where: str) -> dict:
    """Attrs for netCDF: numbers, strings and lists of numbers as they are, the rest as JSON."""
    out: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key, value in _json_attrs(attrs, f"{where}.attrs").items():
        original = attrs[key]
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = np.float64(value) if isinstance(value, float) else np.int64(value)
        elif isinstance(original, float | np.floating) and isinstance(value, dict):
            out[key] = np.float64(original)  # NaN or an infinity: netCDF holds it
        elif (
            isinstance(value, list)
            and value
            and (
                all(isinstance(v, float) for v in value)
                or all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            )
        ):
            out[key] = np.asarray(
                value, dtype=np.float64 if isinstance(value[0], float) else np.int64
            )
            types[key] = "list"
        else:
            out[key] = json.dumps(value, allow_nan=False, ensure_ascii=False)
            types[key] = "json"
    if types:
        out[_ATTR_TYPES] = json.dumps(types)
    return out


def _from_netcdf_attrs(attrs: dict, where: str) -> dict:
    attrs = dict(attrs)
    try:
        types = json.loads(attrs.pop(_ATTR_TYPES, "{}"))
        if not isinstance(types, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise ValueError(f"{where}: attr {_ATTR_TYPES!r} is not valid: {e}") from None
    out = {}
    for key, value in attrs.items():
        kind = types.get(key)
        if kind == "json":
            try:
                out[key] = _from_json_attr(json.loads(value), where)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: attr {key!r} is not valid JSON: {e}") from None
        elif kind == "list":
            out[key] = np.atleast_1d(value).tolist()
        elif isinstance(value, np.ndarray):
            out[key] = value.tolist()
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            out[key] = value
    return out


def _read_netcdf(path: Path) -> xr.DataArray:
    where = str(path)
    try:
        with xr.open_dataset(path, decode_timedelta=True) as ds:
            ds = ds.load()
    except ImportError:
        raise
    except Exception as e:  # h5py/netCDF errors on truncated or damaged files vary
        if "h5netcdf" in str(e) or "dependencies" in str(e):
            _require_h5netcdf()
        raise ValueError(
            f"{where}: cannot be read as netCDF (truncated or damaged?): {type(e).__name__}: {e}"
        ) from None
    marker = ds.attrs.get("xccm_format")
    if marker is not None:
        ver = ds.attrs.get("xccm_format_version")
        ver = ver.item() if isinstance(ver, np.generic) else ver
        if marker != FORMAT_NAME or ver != FORMAT_VERSION:
            newer = isinstance(ver, int | np.integer) and ver > FORMAT_VERSION
            raise ValueError(
                f"{where}: xccm_format {marker!r} version {ver!r} is not supported; this xccm "
                f"({_xccm_version()}) reads {FORMAT_NAME!r} version {FORMAT_VERSION}"
                + ("; a newer xccm wrote it: upgrade xccm" if newer else "")
            )
        if _NETCDF_VARIABLE not in ds.data_vars:
            raise ValueError(
                f"{where}: an xccm matrix file holds the variable {_NETCDF_VARIABLE!r}; this one "
                f"has {list(ds.data_vars)}"
            )
        matrix = ds[_NETCDF_VARIABLE]
        name = ds.attrs.get("xccm_name")
    else:  # a matrix written by DataArray.to_netcdf
        if len(ds.data_vars) != 1:
            raise ValueError(
                f"{where}: not a matrix file: it has {len(ds.data_vars)} variables "
                f"{list(ds.data_vars)[:5]} and no xccm_format attr (save_matrix writes one)"
            )
        (name,) = ds.data_vars
        matrix = ds[name]
        if name == "__xarray_dataarray_variable__":
            name = None
    coords = {}
    for key, coord in matrix.coords.items():
        var = coord.variable.copy()
        dtype = var.attrs.pop(_DTYPE, None)
        var.attrs = _from_netcdf_attrs(var.attrs, f"{where}: coord {key!r}")
        if isinstance(dtype, str) and dtype.startswith(("datetime64[", "timedelta64[")):
            var = var.astype(dtype)
        var.encoding = {}
        if var.dtype.kind == "O" and all(isinstance(v, str) for v in var.values.ravel()):
            var = var.astype(str)
        coords[key] = var
    out = xr.DataArray(
        matrix.variable.copy(),
        coords=coords,
        name=name if isinstance(name, str | type(None)) else str(name),
    )
    out.attrs = _from_netcdf_attrs(matrix.attrs, where)
    out.encoding = {}
    out.variable.encoding = {}
    return out


# ---------------------------------------------------------------------------------------------
# OpenCV


def to_opencv(matrix: xr.DataArray | np.ndarray, *, dim: Hashable = "channel") -> np.ndarray:
    """Return a matrix in the layout of OpenCV's ``cv2.ccm`` (``getColorCorrectionMatrix``).

    OpenCV's ``ColorCorrectionModel`` (module ``ccm``, in ``opencv-contrib-python`` 4.x and
    in ``opencv-python`` 5) holds a float64 ``3x3`` (``CCM_LINEAR``) or ``4x3``
    (``CCM_AFFINE``) matrix and applies it to **row vectors** of linearised colours:
    ``D = S @ M`` or ``D = [S, 1] @ M``, the offset in the last row — the layout xccm uses
    too, so no transpose is involved. The rows are the input channels in the order of the
    colours given to ``ColorCorrectionModel`` (R, G, B: its documentation asks for RGB in
    [0, 1]), after OpenCV's linearisation of them (``setLinearization``; gamma 2.2 by
    default); the columns are R, G, B of the linear form of the model's RGB space
    (``setColorSpace``, default sRGB). OpenCV's ``correctImage`` then encodes the result
    with that space's transfer function. So a matrix moves between xccm and OpenCV as is,
    provided both sides linearise the camera values the same way.

    Parameters
    ----------
    matrix : DataArray or ndarray
        One matrix, dims ``(f"{dim}_in", dim)`` (no batch dims: select a frame first,
        e.g. ``m.sel(time=t)``), with 3 output channels and 3 input rows, plus the offset
        row for an affine one. Rows and columns labelled as a permutation of ``R``, ``G``,
        ``B`` are put in R, G, B order; otherwise they are taken in their order.
    dim : hashable, default "channel"

    Returns
    -------
    ndarray
        float64, C-contiguous, shape ``(3, 3)`` or ``(4, 3)``, ready for OpenCV.

    Raises
    ------
    ValueError
        If the matrix has batch dims, or is not 3x3 or 4x3.

    Examples
    --------
    >>> import numpy as np, xccm
    >>> ref = xccm.chart()
    >>> m = xccm.fit(ref * [0.5, 0.6, 0.7], ref, model="affine")
    >>> cv = xccm.to_opencv(m)
    >>> cv.shape, cv.dtype, np.allclose(np.diag(cv[:3]), [2, 1 / 0.6, 1 / 0.7])
    ((4, 3), dtype('float64'), True)
    """
    in_dim = matrix_in_dim(dim)
    if not isinstance(matrix, xr.DataArray):
        matrix = xr.DataArray(np.asarray(matrix), dims=(in_dim, dim)[: np.ndim(matrix)])
    if set(matrix.dims) != {in_dim, dim}:
        extra = [d for d in matrix.dims if d not in (in_dim, dim)]
        raise ValueError(
            f"OpenCV holds one matrix with dims ({in_dim!r}, {dim!r}); this one has dims "
            f"{tuple(matrix.dims)}"
            + (f": select one along {extra}, e.g. matrix.isel({extra[0]}=0)" if extra else "")
        )
    oriented: xr.DataArray = matrix.transpose(in_dim, dim)
    rows, cols = oriented.shape
    if cols != 3 or rows not in (3, 4):
        raise ValueError(
            f"OpenCV's ccm matrices are 3x3 (linear) or 4x3 (affine); this one is {rows}x{cols}"
        )
    rgb = ["R", "G", "B"]
    if dim in oriented.indexes and sorted(map(str, oriented.indexes[dim])) == sorted(rgb):
        oriented = oriented.sel({dim: rgb})
    if in_dim in oriented.indexes:
        labels = [str(v) for v in oriented.indexes[in_dim]]
        want = rgb + ([OFFSET] if rows == 4 else [])
        if sorted(labels) == sorted(want):
            oriented = oriented.sel({in_dim: want})
    return np.ascontiguousarray(np.asarray(oriented.values, dtype=np.float64))


def from_opencv(
    ccm,
    *,
    dim: str = "channel",
    channels: Sequence[str] = ("R", "G", "B"),
    attrs: dict | None = None,
) -> xr.DataArray:
    """Wrap OpenCV's ``cv2.ccm`` matrix (or a fitted model) as an xccm matrix.

    The layout is the same on both sides (see :func:`to_opencv`): the result applies with
    :func:`xccm.apply` to linear colours exactly as OpenCV applies it to the colours it
    has linearised.

    Parameters
    ----------
    ccm : array-like or cv2.ccm.ColorCorrectionModel
        A ``(3, 3)`` or ``(4, 3)`` matrix, e.g. ``model.getColorCorrectionMatrix()``, or
        the fitted model itself (then its ``getLoss()`` becomes the ``loss`` coord).
    dim : str, default "channel"
        The channel dim; the rows are along ``f"{dim}_in"``.
    channels : sequence of 3 str, default ("R", "G", "B")
        Labels of the input rows and output columns (OpenCV works in RGB order).
    attrs : dict, optional
        Extra attrs, e.g. ``{"linearization": "gamma 2.2", "rgb_space": "sRGB"}``.

    Returns
    -------
    DataArray
        dims ``(f"{dim}_in", dim)``, float64, coords ``channels`` (plus ``"offset"`` for
        the affine row), attrs ``model`` and ``source``.

    Examples
    --------
    >>> import numpy as np, xccm
    >>> m = xccm.from_opencv(np.vstack([np.eye(3), [[0.1, 0.0, 0.0]]]))
    >>> m.dims, m.attrs["model"], m.channel_in.values.tolist()
    (('channel_in', 'channel'), 'affine', ['R', 'G', 'B', 'offset'])
    """
    coords: dict[str, Any] = {}
    if hasattr(ccm, "getColorCorrectionMatrix") or hasattr(ccm, "getCCM"):
        get = getattr(ccm, "getColorCorrectionMatrix", None) or ccm.getCCM
        loss = float(ccm.getLoss()) if hasattr(ccm, "getLoss") else None
        if loss is not None:
            coords["loss"] = loss
        ccm = get()
    arr = np.asarray(ccm, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] not in (3, 4):
        raise ValueError(
            f"ccm must be OpenCV's 3x3 (linear) or 4x3 (affine) matrix; got shape {arr.shape}"
        )
    channels = list(channels)
    if len(channels) != 3:
        raise ValueError(f"channels must name 3 channels; got {channels!r}")
    rows = channels + ([OFFSET] if arr.shape[0] == 4 else [])
    in_dim = matrix_in_dim(dim)
    coords.update({in_dim: rows, dim: channels})
    out = xr.DataArray(arr.copy(), dims=(in_dim, dim), coords=coords, name=MATRIX_NAME)
    out.attrs = {
        "model": "affine" if arr.shape[0] == 4 else "linear",
        "source": "OpenCV cv2.ccm",
        **(attrs or {}),
    }
    return out


#: The string attrs an OpenCV FileStorage file keeps (as ``xccm_<name>``, or the name itself
#: for those starting with ``xccm_``).
_OPENCV_ATTRS = ("model", "loss", "linearization", "rgb_space", "chart", "xccm_version", "created")


def _write_opencv(matrix: xr.DataArray, tmp: str) -> None:
    cv2 = _require_cv2()
    dim, _ = _channel_dims(matrix, "matrix")
    batch = [d for d in matrix.dims if d not in (dim, matrix_in_dim(dim))]
    if batch:
        raise ValueError(
            f"an OpenCV file holds one matrix; this one has batch dims {batch}: select one "
            f"(e.g. matrix.isel({batch[0]}=0)) or save as .nc or .json"
        )
    arr = to_opencv(matrix, dim=dim)
    # FileStorage picks YAML/XML/JSON from the name: write to a name with the right suffix
    suffix = Path(tmp).suffix if Path(tmp).suffix in (".yml", ".yaml", ".xml") else ".yml"
    target = tmp if Path(tmp).suffix == suffix else tmp + suffix
    fs = cv2.FileStorage(target, cv2.FILE_STORAGE_WRITE)
    try:
        fs.write("ccm", arr)
        if "loss" in matrix.coords and matrix["loss"].ndim == 0:
            fs.write("loss", float(matrix["loss"]))
        for key in _OPENCV_ATTRS:
            value = matrix.attrs.get(key)
            if isinstance(value, str):
                fs.write(key if key.startswith("xccm_") else f"xccm_{key}", value)
    finally:
        fs.release()
    if target != tmp:
        os.replace(target, tmp)


def _read_opencv(path: Path) -> xr.DataArray:
    where = str(path)
    cv2 = _require_cv2()
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_FORMAT_AUTO)
    except cv2.error as e:
        raise ValueError(f"{where}: cannot be read as an OpenCV FileStorage: {e}") from None
    try:
        node = fs.getNode("ccm")
        if node.empty():
            node = fs.getNode("ColorCorrectionModel").getNode("ccm")
        if node.empty():
            raise ValueError(f"{where}: an OpenCV FileStorage without a 'ccm' matrix node")
        arr = node.mat()
        if arr is None:
            raise ValueError(f"{where}: its 'ccm' node is not a matrix")
        loss_node = fs.getNode("loss")
        if loss_node.empty():
            loss_node = fs.getNode("ColorCorrectionModel").getNode("loss")
        loss = loss_node.real() if not loss_node.empty() and loss_node.isReal() else None
        attrs = {}
        for key in _OPENCV_ATTRS:
            n = fs.getNode(key if key.startswith("xccm_") else f"xccm_{key}")
            if not n.empty() and n.isString():
                attrs[key] = n.string()
    finally:
        fs.release()
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 1:  # a single row comes back 1-D
        arr = arr[None, :]
    try:
        out = from_opencv(arr, attrs={"source": f"OpenCV FileStorage {path.name}", **attrs})
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if loss is not None:
        out = out.assign_coords(loss=float(loss))
    return out


def _require_cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError(
            'OpenCV matrix files need OpenCV: pip install "xccm[detect]" (it installs '
            "opencv-contrib-python-headless; keep any other OpenCV wheel out of the same "
            "environment), or save as .json or .nc, or use xccm.to_opencv / from_opencv on "
            "arrays"
        ) from None
    return cv2
