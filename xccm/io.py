"""Store to store: write corrected stacks to zarr chunk by chunk, resumable and marked complete.

:func:`to_zarr` writes a Dataset or DataArray whose data is Dask-backed into a zarr (v3) store
with one zarr chunk per Dask chunk. Each chunk, once written, is recorded in a small progress
array (``xccm_progress/<variable>`` in the store, one element per chunk in C order), so a run
that was interrupted (a crash, a killed job, a lost worker) is finished with ``mode="resume"``,
which writes only the chunks not yet recorded. The store's attribute ``xccm_complete`` is 0
from the moment the store is created and turns 1, and its metadata is consolidated, only after
every chunk is written; :func:`open_zarr` refuses a store that is not complete, so a
half-written store is never mistaken for a finished one. A store whose creation fails is
removed again, so a failed call leaves no store behind.

In a local store, whole chunks of uncompressed variables (and the progress records) are
written by xccm itself: their zarr encoding is the chunk's raw bytes, so each is written to a
temporary file and renamed into place, off zarr's event loop and atomically (a chunk file is
whole or absent). Compressed variables, partial edge chunks and remote stores go through zarr.

Reading needs nothing special: ``xr.open_zarr(path)`` for zarr, ``xr.open_dataset(path,
engine="h5netcdf", chunks={})`` for netCDF; both give Dask chunks aligned to the file's own.
Needs the ``io`` extra (zarr), imported with this module: ``import xccm.io``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import uuid
import warnings
from collections.abc import Hashable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

try:
    # Imported with the module, not inside the functions: a task unpickled on a fresh Dask
    # worker then finds zarr whole, instead of racing another thread's import of it.
    import zarr
except ImportError:  # pragma: no cover - the io extra is not installed
    zarr = None

__all__ = ["COMPLETE", "PROGRESS", "IncompleteStoreError", "is_complete", "open_zarr", "to_zarr"]

#: Root attribute: 0 while the store is being written, 1 once every chunk is written (an
#: integer, as netCDF has no booleans; stores from older versions of xccm hold false/true).
COMPLETE = "xccm_complete"
#: Group holding one boolean array per variable, one element per chunk written.
PROGRESS = "xccm_progress"
_TOKEN = "xccm_token"

Mode = Literal["w-", "w", "resume"]


class IncompleteStoreError(ValueError):
    """A store that xccm started writing but has not finished."""


def to_zarr(
    obj: xr.Dataset | xr.DataArray,
    store: str | os.PathLike,
    *,
    mode: Mode = "w-",
    compute: bool = True,
    progress: bool = False,
    attrs: Mapping[str, Any] | None = None,
    encoding: Mapping[Hashable, Mapping[str, Any]] | None = None,
) -> Any:
    """Write ``obj`` to a zarr store chunk by chunk, resumably, marking it complete at the end.

    Every Dask-backed variable is written with zarr chunks equal to its Dask chunks (so each
    task writes whole chunks of its own and no two tasks touch the same one). In-memory
    variables (coords, fitted matrices) are written at once when the store is created, with
    the attrs.

    The store is marked incomplete (``xccm_complete`` 0) before anything else is written, and
    complete (1) once every chunk is. If creating the store fails (``mode="w-"`` or ``"w"``, or
    ``"resume"`` with no store yet), what was created is removed before the error propagates,
    so no store is left behind; a store that ``mode="resume"`` found is left as it was.

    Parameters
    ----------
    obj : Dataset or DataArray
        What to write; a DataArray is written as a Dataset with one variable named after it
        (``"image"`` if unnamed). Dask chunks must be regular along each dim (all equal but
        the last), as zarr chunks are.
    store : str or path
        A path (or an fsspec URL) of the zarr store.
    mode : {"w-", "w", "resume"}, default "w-"
        ``"w-"`` creates the store and fails if it exists; ``"w"`` overwrites; ``"resume"``
        finishes an unfinished store written from the same computation, attrs and encoding
        (it writes only the chunks not yet recorded, and nothing if the store is complete) or
        creates it. One writer per store at a time.
    compute : bool, default True
        If False, create the store (metadata, in-memory variables) now and return a
        :class:`dask.delayed.Delayed` that writes the chunks and marks the store complete, to
        compute when you like (e.g. under one progress bar, or with ``distributed``).
    progress : bool, default False
        Show Dask's progress bar while computing (local schedulers; with a
        ``distributed.Client`` use its dashboard or ``distributed.progress``). Needs
        ``compute=True``: compute a deferred write under ``dask.diagnostics.ProgressBar()``.
    attrs : mapping, optional
        Extra attributes for the store, e.g. provenance (source store, model, loss). Values,
        like those of ``obj``'s own attrs, must be what zarr stores: numbers, strings, bools,
        None, NumPy scalars and arrays, and lists, tuples and dicts of these; convert anything
        else yourself (e.g. ``str(value)`` for a datetime64).
    encoding : mapping, optional
        Per-variable zarr encoding, as in :meth:`xarray.Dataset.to_zarr`. Dask-backed
        variables are written block by block as they are, so for them only codecs are
        accepted (``compressors``, ``filters``, ``serializer``); convert dtypes yourself
        (e.g. ``.astype("float16")``). Chunks are always the Dask chunks.

    Returns
    -------
    None or Delayed
        ``None`` once written (``compute=True``), else the Delayed write.

    Raises
    ------
    FileExistsError
        If the store exists and ``mode="w-"``.
    TypeError
        If an attribute of ``attrs`` or of ``obj`` (or of one of its variables) has a value
        zarr cannot store; raised before the store is created.
    ValueError
        If a variable's Dask chunks are irregular (the message says how to rechunk), or
        ``mode="resume"`` meets a store written from another computation, other variables,
        shapes or chunks, or one whose creation was interrupted; or ``progress=True`` with
        ``compute=False``.

    Examples
    --------
    >>> import tempfile, dask.array as da
    >>> img = xr.DataArray(da.ones((4, 2, 2, 3), chunks=(1, 2, 2, 3)),
    ...                    dims=("time", "y", "x", "channel"), name="image")
    >>> path = tempfile.mkdtemp() + "/out.zarr"
    >>> to_zarr(img, path)
    >>> is_complete(path), open_zarr(path).image.chunks[0]
    (True, (1, 1, 1, 1))
    """
    _require_zarr()
    if mode not in ("w-", "w", "resume"):
        raise ValueError(f"unknown mode {mode!r}; expected 'w-', 'w' or 'resume'")
    if progress and not compute:
        raise ValueError(
            "progress=True shows a bar while to_zarr computes, but compute=False returns "
            "the write to compute later: compute it under dask.diagnostics.ProgressBar()"
        )
    ds = _as_dataset(obj)
    # An empty Dask-backed variable has nothing to compute: write it as an empty array.
    ds = ds.assign(
        {
            k: v.copy(data=np.empty(v.shape, v.dtype))
            for k, v in ds.data_vars.items()
            if v.chunks is not None and v.size == 0
        }
    )
    store = os.fspath(store)
    lazy = {name: var for name, var in ds.variables.items() if var.chunks is not None}
    _check_encoding(encoding, lazy)
    _check_attrs(ds, attrs)
    chunks = {name: _regular_chunks(var, name) for name, var in lazy.items()}
    token = dask.base.tokenize(ds, attrs, encoding)
    existing = _open_group(store)

    if mode == "w-" and existing is not None:
        raise FileExistsError(
            f"store {store!r} exists; pass mode='resume' to finish writing it, or mode='w' to "
            "overwrite it"
        )
    if mode == "resume" and existing is not None:
        _check_resumable(existing, store, ds, chunks, token)
    else:
        _create(ds, store, chunks, token, attrs, encoding, overwrite=mode == "w")

    group = zarr.open_group(store, mode="r")
    sources, targets, regions = [], [], []
    for name, var in lazy.items():
        n_blocks = tuple(len(c) for c in var.chunks)
        done = np.asarray(group[f"{PROGRESS}/{name}"][...], dtype=bool).reshape(n_blocks)
        writer = _ChunkWriter(store, str(name), chunks[name], n_blocks, token)
        for region, blocks in _missing_runs(done, var.chunks):
            sources.append(var.data.blocks[blocks] if blocks else var.data)  # 0-d: no blocks
            targets.append(writer)
            regions.append(region)
    stored = da.store(sources, targets, regions=regions, lock=False, compute=False)
    final = dask.delayed(_mark_complete, pure=False)(store, [str(k) for k in lazy], stored)
    if not compute:
        return final
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            final.compute()
    else:
        final.compute()
    return None


def is_complete(store: str | os.PathLike) -> bool:
    """Whether ``store`` is a zarr store that xccm finished writing.

    A store that xccm did not write (no ``xccm_complete`` attribute) is taken as complete.

    Examples
    --------
    >>> is_complete("no/such/store.zarr")
    False
    """
    group = _open_group(os.fspath(store))
    return group is not None and _finished(group)


def open_zarr(
    store: str | os.PathLike, *, allow_incomplete: bool = False, **kwargs: Any
) -> xr.Dataset:
    """Open a zarr store with :func:`xarray.open_zarr`, refusing one that is half-written.

    Parameters
    ----------
    store : str or path
    allow_incomplete : bool, default False
        Open a store that :func:`to_zarr` has not finished (its unwritten chunks read as the
        fill value: NaN for floats, 0 for integers).
    **kwargs
        Passed to :func:`xarray.open_zarr`.

    Raises
    ------
    IncompleteStoreError
        If the store is unfinished and ``allow_incomplete`` is False.

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/m.zarr"
    >>> to_zarr(xr.DataArray(np.eye(3), dims=("channel_in", "channel"), name="ccm"), path)
    >>> open_zarr(path)["ccm"].values.trace()
    np.float64(3.0)
    """
    store = os.fspath(store)
    group = _open_group(store)
    if not allow_incomplete and group is not None and not _finished(group):
        raise IncompleteStoreError(
            f"store {store!r} is incomplete: xccm.io.to_zarr did not finish writing it. Run the "
            "same write again with mode='resume' to finish it, or pass allow_incomplete=True."
        )
    with _quiet_consolidated():
        return xr.open_zarr(store, **kwargs)


# ---------------------------------------------------------------------------------------------
# writing


class _ChunkWriter:
    """A Dask store target: writes a block into the zarr array, then records it as written.

    Holds only the store path, so it pickles small; the zarr arrays are opened once per
    process. The record is written after the data, so a recorded chunk is a written chunk.
    """

    def __init__(
        self,
        store: str,
        name: str,
        chunks: tuple[int, ...],
        n_blocks: tuple[int, ...],
        token: str,
    ) -> None:
        self.store, self.name, self.chunks, self.n_blocks = store, name, chunks, n_blocks
        self.token = token

    def __setitem__(self, index: tuple[slice, ...], block: np.ndarray) -> None:
        arr = _open_array(self.store, self.name, self.token)
        chunk = tuple((s.start or 0) // c for s, c in zip(index, self.chunks, strict=True))
        dtype = block.dtype
        whole = isinstance(block, np.ndarray) and block.shape == self.chunks
        if whole and dtype == arr.dtype and dtype.isnative and _raw_local(arr):
            _write_chunk_file(arr, chunk, np.ascontiguousarray(block))
        else:
            arr[index] = block
        flat = int(np.ravel_multi_index(chunk, self.n_blocks)) if chunk else 0
        _mark_written(_open_array(self.store, f"{PROGRESS}/{self.name}", self.token), flat)


def _mark_written(progress, flat: int) -> None:
    """Set element ``flat`` of the progress array to True.

    In a local store whose progress array is uncompressed (as :func:`to_zarr` creates it),
    the one-byte chunk file is written directly (:func:`_write_chunk_file`). Elsewhere (an
    fsspec URL, or a store from an older xccm with compressed markers) zarr writes it.
    """
    if _raw_local(progress):
        _write_chunk_file(progress, (flat,), np.ones(1, bool))
    else:
        progress[flat] = True


def _raw_local(arr) -> bool:
    """Whether ``arr``'s chunk files are the raw C-ordered bytes of its chunks, on local disk.

    True for a zarr v3 array in a local directory store whose only codec is the ``bytes``
    codec in this machine's byte order (no compressor, filter, transpose or sharding), of a
    plain numeric dtype: what :func:`to_zarr` creates for uncompressed variables and for its
    progress markers.
    """
    codecs = getattr(arr.metadata, "codecs", ())  # zarr v2 metadata has none: not raw
    if not (isinstance(arr.store, zarr.storage.LocalStore) and len(codecs) == 1):
        return False
    codec = codecs[0]
    return (
        isinstance(codec, zarr.codecs.BytesCodec)
        and (codec.endian is None or codec.endian.value == sys.byteorder)
        and arr.dtype.kind in "biufc"
    )


#: Suffix of the temporary files chunk files are written to before being renamed into place.
_TMP = ".xccm-tmp"


def _write_chunk_file(arr, chunk: tuple[int, ...], data: np.ndarray) -> None:
    """Write one whole chunk of ``arr`` (a :func:`_raw_local` array) as its file, atomically.

    The bytes go to a temporary file renamed into place, so the chunk file is either whole or
    absent, even if the process is killed mid-write; zarr reads it as any chunk. This keeps
    the write off zarr's event loop, where it queues behind the other threads' reads and
    writes (see ``benchmarks/bench_store.py``). ``data`` is C-contiguous with the chunk's
    shape and the array's dtype. As zarr does by default (``write_empty_chunks=False``), a
    chunk that is all fill value is not written, and any older file of it is removed.
    """
    key = arr.metadata.chunk_key_encoding.encode_chunk_key(chunk)
    target = os.path.join(_folder(arr), *key.split("/"))
    if not arr.config.write_empty_chunks and _all_fill(data, arr.fill_value):
        with contextlib.suppress(FileNotFoundError):
            os.remove(target)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.{uuid.uuid4().hex}{_TMP}"
    with open(tmp, "wb") as f:
        f.write(memoryview(data.reshape(-1)).cast("B"))
    os.replace(tmp, target)


def _folder(arr) -> Path:
    """Return the directory of ``arr`` in its local store."""
    return Path(arr.store.root, *arr.path.split("/"))


def _all_fill(data: np.ndarray, fill) -> bool:
    """Whether every value of ``data`` equals ``fill`` (NaN equal to NaN), as zarr tests it."""
    flat = data.reshape(-1)
    if flat.size and not _equal(flat[:1], fill)[0]:  # real data differs at once: no full pass
        return False
    return bool(_equal(flat, fill).all())


def _equal(x: np.ndarray, fill) -> np.ndarray:
    eq = x == fill
    if x.dtype.kind in "fc" and np.isnan(fill):
        eq |= np.isnan(x)
    return eq


_arrays: dict[tuple[str, str, str], Any] = {}
_arrays_lock = threading.Lock()


def _open_array(store: str, path: str, token: str):
    """Open a zarr array once per process and computation.

    The key includes the token of the computation that created the store, so a long-lived
    worker never writes through an array opened for an earlier store at the same path (one
    overwritten with ``mode="w"`` or deleted and written anew with another layout).
    """
    key = (store, path, token)
    with _arrays_lock:
        if key not in _arrays:
            for old in [k for k in _arrays if k[:2] == key[:2]]:
                del _arrays[old]
            _arrays[key] = zarr.open_array(store, path=path, mode="r+")
        return _arrays[key]


def _create(ds, store, chunks, token, attrs, encoding, *, overwrite: bool) -> None:
    """Create the store: metadata, in-memory variables and progress arrays, marked incomplete.

    The root group is created first with ``xccm_complete`` 0, so a store whose creation is cut
    short never reads as complete; if creating it fails, the store is removed again
    (:func:`_remove`) and the error propagates.
    """
    root = zarr.open_group(
        store, mode="w" if overwrite else "w-", attributes={COMPLETE: 0, _TOKEN: token}
    )
    try:
        _fill(ds, store, chunks, token, attrs, encoding)
    except BaseException:
        _remove(root, store)
        raise


#: In-memory variables up to this size are written as one zarr chunk.
_ONE_CHUNK_BYTES = 64 * 2**20


def _fill(ds, store, chunks, token, attrs, encoding) -> None:
    """Write the variables' metadata, the in-memory variables and the progress arrays."""
    ds = ds.copy(deep=False)
    for var in ds.variables.values():
        var.encoding = {}
    # Fixed-width strings have no stable zarr v3 encoding; variable-length ones do.
    fixed = {k: v.astype(object) for k, v in ds.variables.items() if v.dtype.kind == "U"}
    ds = ds.assign_coords({k: v for k, v in fixed.items() if k in ds.coords})
    ds = ds.assign({k: v for k, v in fixed.items() if k in ds.data_vars})
    ds.attrs = {**ds.attrs, **(attrs or {}), COMPLETE: 0, _TOKEN: token, **_version()}
    enc = {name: dict(e) for name, e in (encoding or {}).items()}
    for name, c in chunks.items():
        enc.setdefault(name, {})["chunks"] = c
    for name, var in ds.variables.items():
        # Small in-memory variables (matrices, coords) in one chunk, not zarr's automatic
        # chunks, which may split the channel dim that xccm needs whole.
        if name not in chunks and var.size and var.nbytes <= _ONE_CHUNK_BYTES:
            enc.setdefault(name, {}).setdefault("chunks", var.shape)
    # The group exists (_create made it, with only the xccm attrs): add the variables to it.
    ds.to_zarr(store, mode="a", compute=False, consolidated=False, encoding=enc)
    progress = zarr.open_group(store, mode="r+").require_group(PROGRESS)
    for name, var in ds.variables.items():
        if name in chunks:
            # One flat element (one small object) per chunk, C order: no nested directories.
            progress.create_array(
                str(name), shape=(math.prod(len(c) for c in var.chunks),), chunks=(1,),
                dtype=bool, fill_value=False, compressors=None,
            )  # fmt: skip


def _remove(root, store: str) -> None:
    """Remove the store ``root`` whose creation failed; if that fails too, leave it incomplete.

    It is removed through zarr (a local directory, or the keys of a remote store). A store
    that cannot be removed keeps ``xccm_complete`` 0, so it is never taken as complete.
    """
    try:
        from zarr.core.sync import sync

        sync(root.store.delete_dir(root.path))
    except Exception as e:  # e.g. a remote store that does not support deletes
        warnings.warn(
            f"could not remove store {store!r}, whose creation failed ({e!r}); it is marked "
            "incomplete. Delete it, or overwrite it with mode='w'",
            RuntimeWarning,
            stacklevel=4,
        )


def _mark_complete(store: str, names: list[str], _stored: Any) -> None:
    group = zarr.open_group(store, mode="r+")
    for name in names:  # a worker killed between writing a chunk file and renaming it
        for arr in (group[name], group[f"{PROGRESS}/{name}"]):
            if _raw_local(arr):
                for stray in _folder(arr).rglob(f"*{_TMP}"):
                    if stray.is_file():
                        stray.unlink(missing_ok=True)
    group.attrs[COMPLETE] = 1
    with _quiet_consolidated():
        zarr.consolidate_metadata(store)


def _missing_runs(done: np.ndarray, chunks: tuple[tuple[int, ...], ...]):
    """Yield ``(region, block_slices)`` for runs of unwritten blocks along the first axis."""
    if done.all():
        return
    if done.ndim == 0:  # a 0-d variable: one block
        yield (), ()
        return
    offsets = [np.concatenate([[0], np.cumsum(c)]) for c in chunks]
    for rest in np.ndindex(done.shape[1:]):
        column = done[(slice(None), *rest)]
        missing = np.flatnonzero(~column)
        if missing.size == 0:
            continue
        breaks = np.flatnonzero(np.diff(missing) > 1) + 1
        for run in np.split(missing, breaks):
            first, last = int(run[0]), int(run[-1]) + 1
            blocks = (slice(first, last), *(slice(i, i + 1) for i in rest))
            region = tuple(
                slice(int(off[b.start]), int(off[b.stop]))
                for off, b in zip(offsets, blocks, strict=True)
            )
            yield region, blocks


# ---------------------------------------------------------------------------------------------
# checks


def _as_dataset(obj) -> xr.Dataset:
    if isinstance(obj, xr.DataArray):
        return obj.to_dataset(name=obj.name if obj.name is not None else "image")
    if isinstance(obj, xr.Dataset):
        return obj
    raise TypeError(f"obj must be an xarray Dataset or DataArray; got {type(obj).__name__}")


def _regular_chunks(var: xr.Variable, name: Hashable) -> tuple[int, ...]:
    """Return the zarr chunk shape for ``var``: its Dask chunks, which must be regular."""
    sizes = []
    for dim, c in zip(var.dims, var.chunks, strict=True):
        if len(c) > 1 and (len(set(c[:-1])) > 1 or c[-1] > c[0]):
            raise ValueError(
                f"variable {name!r} has irregular chunks {c} along dim {dim!r}; zarr needs "
                f"equal chunks (the last may be smaller). Rechunk first, e.g. "
                f"obj.chunk({{{dim!r}: {c[0]}}})"
            )
        sizes.append(c[0] if c else 0)
    return tuple(sizes)


_CODEC_KEYS = frozenset({"compressors", "filters", "serializer"})


def _check_encoding(encoding, lazy) -> None:
    for name, enc in (encoding or {}).items():
        extra = set(enc) - _CODEC_KEYS
        if name in lazy and extra:
            raise ValueError(
                f"encoding for Dask-backed variable {name!r} may only set codecs "
                f"{sorted(_CODEC_KEYS)}; got {sorted(extra)}. Its blocks are written as they "
                "are, so convert first (e.g. .astype(...)); chunks are always the Dask chunks."
            )


def _check_attrs(ds: xr.Dataset, attrs: Mapping[str, Any] | None) -> None:
    """Raise a TypeError naming any attribute whose value zarr cannot store.

    Checked before anything is written. A value is storable if it is JSON once NumPy arrays and
    scalars are turned into lists and Python scalars, as xarray's zarr backend does.
    """
    places = [("attrs[{}]", attrs or {}), ("obj.attrs[{}]", ds.attrs)]
    places += [(f"attrs[{{}}] of variable {k!r}", v.attrs) for k, v in ds.variables.items()]
    for where, mapping in places:
        for key, value in mapping.items():
            if not _storable(value):
                inner = _first_unstorable(value)
                holding = "" if inner is value else f" holding a {_type_name(inner)}"
                raise TypeError(
                    f"{where.format(repr(key))} is a {_type_name(value)}{holding}, which zarr "
                    "cannot store as an attribute (it takes numbers, strings, bools, None, "
                    "NumPy scalars and arrays, and lists and dicts of Python numbers, strings "
                    "and bools). Convert it first, e.g. to str(value) or float(value)"
                )


def _storable(value: Any) -> bool:
    """Whether zarr can store ``value`` as an attribute (what xarray's zarr backend writes)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _first_unstorable(value: Any) -> Any:
    """Return the innermost part of ``value`` (a list, tuple or dict) zarr cannot store."""
    parts = value.values() if isinstance(value, dict) else value
    if isinstance(value, list | tuple | dict):
        for part in parts:
            if not _storable(part) or not _storable([part]):
                return _first_unstorable(part)
    return value


def _type_name(value: Any) -> str:
    """Return the type of ``value`` as written in code, e.g. ``numpy.datetime64`` or ``set``."""
    t = type(value)
    if isinstance(value, np.ndarray):
        return f"numpy.ndarray of {value.dtype}"
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _require_zarr() -> None:
    if zarr is None:  # pragma: no cover - the io extra is not installed
        raise ImportError("xccm.io needs zarr>=3: python -m pip install 'xccm[io]'")


def _open_group(store: str):
    """Return the zarr group at ``store`` (read-only), or None if there is none."""
    _require_zarr()
    try:
        return zarr.open_group(store, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None


def _finished(group) -> bool:
    """Whether xccm finished writing ``group`` (a store xccm did not write counts as finished)."""
    return bool(group.attrs.get(COMPLETE, True))


@contextlib.contextmanager
def _quiet_consolidated():
    """Silence zarr's note that consolidated metadata is not yet in the zarr v3 spec."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


def _check_resumable(group, store, ds, chunks, token) -> None:
    if _TOKEN not in group.attrs:
        raise ValueError(
            f"store {store!r} was not written by xccm.io.to_zarr, so it cannot be resumed; "
            "use mode='w' to overwrite it"
        )
    for name, c in chunks.items():
        key = str(name)
        if key not in group and PROGRESS in group:
            raise ValueError(f"store {store!r} has no variable {key!r} to resume")
        if f"{PROGRESS}/{key}" not in group:
            raise ValueError(
                f"store {store!r} has no record of the chunks of variable {key!r} written: "
                "its creation was interrupted before any chunk was written. Start over with "
                "mode='w'"
            )
        arr = group[key]
        if arr.shape != ds[name].shape or tuple(arr.chunks) != c:
            raise ValueError(
                f"variable {key!r} in store {store!r} has shape {arr.shape} and chunks "
                f"{tuple(arr.chunks)}, but the data to write has shape {ds[name].shape} and "
                f"chunks {c}. Rechunk to the store's chunks, e.g. obj.chunk("
                f"{dict(zip(ds[name].dims, arr.chunks, strict=True))}), or use mode='w'."
            )
    if group.attrs[_TOKEN] != token:
        raise ValueError(
            f"store {store!r} was started from a different computation (other inputs, matrix, "
            "attrs or encoding), so finishing it would mix two results; use mode='w' to start "
            "over. The same source opened through another spelling of its path (e.g. "
            "xr.open_zarr('./camera.zarr') and xr.open_zarr('camera.zarr')) counts as a "
            "different computation, as Dask names the source's tasks from its path: open it "
            "exactly as in the first run"
        )


def _version() -> dict[str, str]:
    try:
        return {"xccm_version": version("xccm")}
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return {}
