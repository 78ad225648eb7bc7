"""Store to store: write corrected stacks to zarr chunk by chunk, resumable and marked complete.

:func:`to_zarr` writes a Dataset or DataArray whose data is Dask-backed into a zarr (v3) store
with one zarr chunk per Dask chunk. Each chunk, once written, is recorded in a small progress
array (``xccm_progress/<variable>`` in the store, one uint64 per chunk in C order: written or
all fill value, and the CRC-32 of its values), so a run that was interrupted (a crash, a
killed job, a lost worker, a full disk) is finished with ``mode="resume"``, which writes only
the chunks not yet recorded (or failing ``verify``). The store's attribute ``xccm_complete``
is 0 from the moment the store is created and turns 1, and its metadata is consolidated, only
once every variable is there and every recorded chunk is checked (``verify``); the marker
lists the arrays it vouches for, so a store changed afterwards is no longer complete.
:func:`open_zarr` refuses a store that is not complete, so a half-written store is never
mistaken for a finished one. Every argument is checked before anything is created, and a
store whose creation fails is removed again, so a failed call leaves no store behind (and
``mode="w"`` leaves the old one). ``mode="append"`` grows a complete store along a dim.

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
import dataclasses
import functools
import json
import math
import os
import re
import shutil
import sys
import threading
import uuid
import warnings
import zlib
from collections.abc import Hashable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, cast

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask._task_spec import Task, TaskRef
from dask.core import flatten
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

try:
    # Imported with the module, not inside the functions: a task unpickled on a fresh Dask
    # worker then finds zarr whole, instead of racing another thread's import of it.
    import zarr
    import zarr.codecs
except ImportError:  # pragma: no cover - the io extra is not installed
    zarr = None  # type: ignore[assignment]

__all__ = [
    "COMPLETE",
    "PROGRESS",
    "DamagedStoreError",
    "IncompleteStoreError",
    "is_complete",
    "open_zarr",
    "to_zarr",
]

#: Root attribute: 0 while the store is being written, 1 once every chunk is written (an
#: integer, as netCDF has no booleans; stores from older versions of xccm hold false/true).
COMPLETE = "xccm_complete"
#: Group holding one boolean array per variable, one element per chunk written.
PROGRESS = "xccm_progress"
_TOKEN = "xccm_token"
#: Root attribute: the token of each part of the computation (variables, attrs, encoding), as
#: a JSON string (netCDF attributes cannot be dicts).
_TOKENS = "xccm_tokens"
#: Root attribute, set once the store's metadata, in-memory variables and records exist.
_CREATED = "xccm_created"
#: Root attribute written with ``xccm_complete = 1``: the arrays the marker vouches for (their
#: shapes, chunks and data types), as a JSON string.
_ARRAYS = "xccm_arrays"
#: Root attribute while frames are being appended: where from, and the appended data's tokens.
_APPEND = "xccm_append"

Mode = Literal["w-", "w", "resume", "append"]
Verify = Literal[False, "exists", "checksum"]
_VERIFY = (False, "exists", "checksum")


class IncompleteStoreError(ValueError):
    """A store that xccm started writing but has not finished, or that changed since."""


class DamagedStoreError(ValueError):
    """A store whose zarr metadata (a ``zarr.json``) cannot be read."""


def to_zarr(
    obj: xr.Dataset | xr.DataArray,
    store: str | os.PathLike,
    *,
    mode: Mode = "w-",
    compute: bool = True,
    progress: bool = False,
    attrs: Mapping[str, Any] | None = None,
    encoding: Mapping[Hashable, Mapping[str, Any]] | None = None,
    verify: Verify = "exists",
    append_dim: Hashable | None = None,
) -> Any:
    """Write ``obj`` to a zarr store chunk by chunk, resumably, marking it complete at the end.

    Every Dask-backed variable is written with zarr chunks equal to its Dask chunks (so each
    task writes whole chunks of its own and no two tasks touch the same one). In-memory
    variables (coords, fitted matrices) are written at once when the store is created, with
    the attrs.

    The store is marked incomplete (``xccm_complete`` 0) before anything else is written, and
    complete (1) only once every variable is there and every chunk is written and recorded
    (and checked, see ``verify``); the marker lists the arrays it vouches for (names, shapes,
    chunks, dtypes), so a store changed afterwards no longer reads as complete
    (:func:`is_complete`). Every argument is checked before anything is created or replaced.
    If creating the store fails (``mode="w-"`` or ``"w"``, or ``"resume"`` with no store yet),
    what was created is removed before the error propagates, so no store is left behind; with
    ``mode="w"`` in a local store the new store is created beside the old one and swapped in
    only once created, so a failed overwrite leaves the old store as it was.

    Parameters
    ----------
    obj : Dataset or DataArray
        What to write; a DataArray is written as a Dataset with one variable named after it
        (``"image"`` if unnamed). Dask chunks must be regular along each dim (all equal but
        the last), as zarr chunks are.
    store : str or path
        A path (or an fsspec URL) of the zarr store.
    mode : {"w-", "w", "resume", "append"}, default "w-"
        ``"w-"`` creates the store and fails if it exists; ``"w"`` overwrites; ``"resume"``
        finishes an unfinished store written from the same computation, attrs and encoding
        (it writes only the chunks not yet recorded, or whose record is damaged or whose
        chunk fails ``verify``, and nothing if the store is complete) or creates it (also
        when an earlier creation was cut short). ``"append"`` adds ``obj``'s frames along
        ``append_dim`` to a complete store (see ``append_dim``). One writer per store at a
        time.
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
        (e.g. ``.astype("float16")``). Chunks are always the Dask chunks. Codecs are zarr
        codec objects (e.g. ``zarr.codecs.ZstdCodec()``) or their dicts, not names.
    verify : {"exists", "checksum", False}, default "exists"
        What is checked before the store is marked complete, and which recorded chunks of an
        earlier run ``mode="resume"`` trusts. Each chunk's record holds the CRC-32 of its
        values. ``"exists"``: every recorded chunk's object is in the store (at completion,
        one listing of a local store; on resume, and in a remote store, one per variable);
        a missing one is written again on resume, and stops the marking.
        ``"checksum"``: also read every chunk back and compare it with its record (a chunk
        that differs is written again on resume); this reads the whole store once more.
        ``False``: trust the records.
    append_dim : hashable, optional
        With ``mode="append"`` (and only then): the dim to grow, e.g. ``"time"``. ``obj``
        holds only the new frames, with the store's variables; they must start a new chunk
        along the dim (the store's last chunk full) and come in the store's chunks, and the
        dim must be the first of each Dask-backed variable. The store is incomplete while
        they are appended; an append cut short is finished by appending the same frames
        again. The store keeps its attrs and encoding (pass neither).

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
        zarr cannot store, ``attrs`` is not a mapping with string keys, a variable's name is
        not a string or a codec is given as a string; raised before the store is created.
    ValueError
        If a variable's name cannot be a zarr array (empty, ``"."``, ``".."``, with a ``/``,
        starting with ``__`` or equal to ``"xccm_progress"``), ``encoding`` names an unknown
        variable, a variable's Dask chunks are irregular (the message says how to rechunk),
        or ``mode="resume"`` meets a store written from another computation (the message
        says which part differs: which variables, attrs or encoding), other variables,
        shapes or chunks; or ``progress=True`` with ``compute=False``.
    IncompleteStoreError
        If a chunk is missing or fails ``verify`` when the store would be marked complete
        (it is then not marked; ``mode="resume"`` writes the chunk again).
    DamagedStoreError
        If ``mode="resume"`` meets a store whose metadata cannot be read.

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
    if mode not in ("w-", "w", "resume", "append"):
        raise ValueError(f"unknown mode {mode!r}; expected 'w-', 'w', 'resume' or 'append'")
    if (mode == "append") != (append_dim is not None):
        raise ValueError(
            "mode='append' needs append_dim (the dim to grow, e.g. append_dim='time')"
            if mode == "append"
            else f"append_dim is for mode='append'; got mode={mode!r}"
        )
    _check_verify(verify)
    if progress and not compute:
        raise ValueError(
            "progress=True shows a bar while to_zarr computes, but compute=False returns "
            "the write to compute later: compute it under dask.diagnostics.ProgressBar()"
        )
    ds = _as_dataset(obj)
    _check_names(ds)
    # An empty Dask-backed variable has nothing to compute: write it as an empty array.
    # (Over variables, not data_vars: building a DataArray per variable is quadratic.)
    empty = {
        k: v.copy(data=np.empty(v.shape, v.dtype))
        for k, v in ds.variables.items()
        if v.chunks is not None and v.size == 0 and k in ds.data_vars
    }
    ds = ds.assign(empty) if empty else ds
    store = _normalize_store(store)
    lazy = {name: var for name, var in ds.variables.items() if var.chunks is not None}
    _check_encoding(encoding, ds, lazy)
    _check_attrs(ds, attrs)
    chunks = {name: _regular_chunks(var, name) for name, var in lazy.items()}
    tokens = _tokens(ds, lazy, attrs, encoding)
    token = dask.base.tokenize(tokens)
    existing = None if mode == "w" else _open_group(store)  # "w" replaces even a damaged one
    if mode == "append":
        final = _append(
            ds, store, existing, lazy, chunks, tokens, append_dim, attrs, encoding, verify
        )
        return _run(final, compute, progress, store)

    if mode == "w-" and existing is not None:
        raise FileExistsError(
            f"store {store!r} exists; pass mode='resume' to finish writing it, or mode='w' to "
            "overwrite it"
        )
    fresh = True
    if mode == "resume" and existing is not None and existing.attrs.get(_CREATED):
        _check_resumable(existing, store, ds, chunks, tokens)
        then = json.loads(existing.attrs[_TOKENS])
        fresh = False
    elif mode == "resume" and existing is not None:
        if _TOKEN not in existing.attrs:
            raise ValueError(
                f"store {store!r} was not written by xccm.io.to_zarr, so it cannot be resumed; "
                "use mode='w' to overwrite it"
            )
        # Its creation was cut short: no chunk was written yet, so create it again.
        _create(ds, store, chunks, tokens, token, attrs, encoding, replace=True)
    else:
        if mode == "resume":
            _clear_leftovers(store)  # e.g. only the partial root metadata of a killed creation
        _create(ds, store, chunks, tokens, token, attrs, encoding, replace=mode == "w")

    group = zarr.open_group(store, mode="r", use_consolidated=False)
    if not fresh:
        _clean_strays(store)
    sources: list[Any] = []
    targets: list[Any] = []  # _ChunkWriter: written to as arrays are
    regions: list[Any] = []
    layouts = _layouts(store, [p for k in lazy for p in (str(k), f"{PROGRESS}/{k}")])
    for name, var in lazy.items():
        grid = _grid(var)
        if fresh:
            done = np.zeros(grid, bool)
        else:
            done, records = _verified(group, store, str(name), var.chunks, verify)
            if then["variables"].get(str(name)) != tokens["variables"][str(name)]:
                _check_samples(store, str(name), var, records)
        writer = _ChunkWriter(
            store, str(name), chunks[name], grid, token,
            (layouts[str(name)], layouts[f"{PROGRESS}/{name}"]),
        )  # fmt: skip
        if fresh:  # every chunk: the variable whole, as xarray stores it
            sources.append(var.data)
            targets.append(writer)
            regions.append(tuple(slice(0, n) for n in var.shape))
            continue
        var_chunks = cast(tuple[tuple[int, ...], ...], var.chunks)  # Dask-backed here
        for region, blocks in _missing_runs(
            done.reshape(tuple(len(c) for c in var_chunks)), var_chunks
        ):
            sources.append(var.data.blocks[blocks] if blocks else var.data)  # 0-d: no blocks
            targets.append(writer)
            regions.append(region)
    stored = da.store(sources, targets, regions=regions, lock=False, compute=False)
    expected = {str(k): (v.shape, chunks.get(k)) for k, v in ds.variables.items()}
    final = _then(functools.partial(_mark_complete, store, expected, verify), stored)
    return _run(final, compute, progress, store)


def _then(complete, stored) -> Any:
    """Return a Delayed that calls ``complete(None)`` once every block of ``stored`` is written.

    ``stored`` is what :func:`dask.array.store` returns (its arrays, optimized here as Dask
    optimizes arrays it computes, e.g. fusing a chunk's read, correction and write). The
    final task depends on their blocks' keys without gathering the blocks, and the graph is
    built at once, not by traversing the arrays as a Delayed argument (seconds for 2000).
    """
    stored = [stored] if isinstance(stored, da.Array) else list(stored)
    keys = list(flatten([a.__dask_keys__() for a in stored]))
    merged = HighLevelGraph.merge(*(a.__dask_graph__() for a in stored))
    graph = dict(da.Array.__dask_optimize__(merged, keys))
    name = f"xccm-complete-{uuid.uuid4().hex}"
    graph[name] = Task(name, _after, complete, *(TaskRef(k) for k in keys))
    return Delayed(name, graph)


def _after(complete, *_written) -> None:
    """Call ``complete(None)``: the final task, run after every chunk write (``_written``)."""
    complete(None)


def _append(ds, store, group, lazy, chunks, tokens, dim, attrs, encoding, verify):
    """Grow the complete store ``store`` by ``ds``'s frames along ``dim`` (``mode="append"``).

    The root is marked incomplete with a record of the append (where it starts, the tokens
    of the frames), the arrays and progress arrays are resized, the in-memory variables'
    new part written, and the new chunks written and recorded as any others; completion
    then checks every variable and chunk again and marks the store complete. An append cut
    short is finished by the same call (the same frames); until then the store is
    incomplete.
    """
    if group is None:
        raise FileNotFoundError(
            f"store {store!r} does not exist: create it first (mode='w-'), then append to it"
        )
    if _TOKENS not in group.attrs or not group.attrs.get(_CREATED):
        raise ValueError(
            f"store {store!r} was not written by this version of xccm.io.to_zarr (or its "
            "creation was cut short), so frames cannot be appended to it; write it with "
            "mode='w', or finish it with mode='resume'"
        )
    if attrs is not None or encoding is not None:
        raise ValueError(
            "mode='append' keeps the store's attrs and encoding: pass neither attrs nor encoding"
        )
    if dim not in ds.dims:
        raise ValueError(f"append_dim {dim!r} is not a dim of obj; its dims are {list(ds.dims)}")
    pending = json.loads(group.attrs[_APPEND]) if _APPEND in group.attrs else None
    if pending is None:
        why = _why_incomplete(group, store, False)
        if why is not None:
            raise IncompleteStoreError(
                f"store {store!r} is incomplete, so frames cannot be appended to it: {why}"
            )
    n_new = ds.sizes[dim]
    arrays = {str(k): _member(group, store, str(k)) for k in ds.variables}
    growing = {k: v for k, v in ds.variables.items() if dim in v.dims}
    start = None
    for name, var in ds.variables.items():
        arr = arrays[str(name)]
        if arr is None or not hasattr(arr, "shape"):
            raise ValueError(
                f"store {store!r} has no variable {name!r}; mode='append' adds frames to the "
                "variables the store has"
            )
        if arr.ndim != var.ndim or (np.dtype(arr.dtype) != var.dtype and var.dtype.kind != "U"):
            raise ValueError(
                f"variable {name!r} is {var.ndim}-d {var.dtype} in obj but {arr.ndim}-d "
                f"{arr.dtype} in store {store!r}"
            )
        if name not in growing:
            if name in lazy:
                raise ValueError(
                    f"Dask-backed variable {name!r} has no dim {dim!r}, so appending cannot "
                    "write it; drop it from obj"
                )
            same = arr.shape == var.shape and np.array_equal(
                np.asarray(arr[...]), var.values, equal_nan=var.dtype.kind in "fc"
            )
            if not same:
                raise ValueError(
                    f"variable {name!r} has no dim {dim!r} and differs from the store's; "
                    "appending keeps it as it is: drop it from obj or make it equal"
                )
            continue
        axis = var.dims.index(dim)
        if name in lazy and axis != 0:
            raise ValueError(
                f"Dask-backed variable {name!r} has {dim!r} as dim {axis}; mode='append' needs "
                f"it first: transpose first, e.g. obj.transpose({dim!r}, ...)"
            )
        n0 = pending["start"] if pending else arr.shape[axis]
        start = n0 if start is None else start
        other = [s for i, s in enumerate(var.shape) if i != axis]
        if n0 != start or other != [s for i, s in enumerate(arr.shape) if i != axis]:
            raise ValueError(
                f"variable {name!r} has shape {var.shape} in obj and {arr.shape} in store "
                f"{store!r}: only its length along {dim!r} may differ"
            )
        if name in lazy:
            c = arr.chunks[axis]
            along = var.chunks[axis]
            if (
                n0 % c
                or any(k != c for k in along[:-1])
                or along[-1] > c
                or tuple(chunks[name][1:]) != tuple(arr.chunks[1:])
            ):
                raise ValueError(
                    f"variable {name!r}: the store's chunks are {tuple(arr.chunks)} and it holds "
                    f"{n0} along {dim!r}; appended frames must start a new chunk (the store's "
                    f"last chunk full) and come in the same chunks, e.g. obj.chunk("
                    f"{dict(zip(var.dims, arr.chunks, strict=True))}). With one frame per "
                    "chunk any number of frames can be appended"
                )
    if start is None:
        raise ValueError(f"no variable of obj has the dim {dim!r} to append along")
    stop = start + n_new
    if pending is not None:
        if pending.get("dim") != str(dim) or pending.get("stop") != stop:
            raise ValueError(
                f"store {store!r}: an append of frames {pending.get('start')} to "
                f"{pending.get('stop')} along {pending.get('dim')!r} was cut short; finish it "
                "by appending the same frames again"
            )
        differ = _differences(pending["tokens"], tokens, {str(k) for k in lazy})
        if differ:
            raise ValueError(
                f"store {store!r}: an append of other frames was cut short ("
                + "; ".join(differ)
                + " differ); finish it by appending the same frames again"
            )
    else:
        root = zarr.open_group(store, mode="r+", use_consolidated=False)
        record = {"dim": str(dim), "start": start, "stop": stop, "tokens": tokens}
        root.attrs.update({COMPLETE: 0, _APPEND: json.dumps(record)})
    token = dask.base.tokenize(tokens, start, stop)
    for name, var in growing.items():  # resizing to the same shape again is harmless
        arr = zarr.open_array(store, path=str(name), mode="r+", use_consolidated=False)
        axis = var.dims.index(dim)
        shape = tuple(stop if i == axis else s for i, s in enumerate(arr.shape))
        if arr.shape != shape:
            arr.resize(shape)
        if name in lazy:
            grid = tuple(-(-s // c) for s, c in zip(shape, arr.chunks, strict=True))
            progress = zarr.open_array(store, path=f"{PROGRESS}/{name}", mode="r+")
            if progress.shape != (math.prod(grid),):
                progress.resize((math.prod(grid),))
        else:
            region = tuple(
                slice(start, stop) if i == axis else slice(None) for i in range(var.ndim)
            )
            values = var.values.astype(object) if var.dtype.kind == "U" else var.values
            arr[region] = values
    group = zarr.open_group(store, mode="r", use_consolidated=False)
    sources, targets, regions = [], [], []
    layouts = _layouts(store, [p for k in lazy for p in (str(k), f"{PROGRESS}/{k}")])
    for name, var in lazy.items():
        arr = group[str(name)]
        c = arr.chunks[0]
        store_chunks = tuple(
            tuple(min(k, s - i) for i in range(0, s, k))
            for s, k in zip(arr.shape, arr.chunks, strict=True)
        )
        done, records = _verified(group, store, str(name), store_chunks, verify)
        first = start // c
        done, records = done[first:], records[first:]
        if pending is not None and pending["tokens"]["variables"].get(str(name)) != tokens[
            "variables"
        ].get(str(name)):
            _check_samples(store, str(name), var, records)
        writer = _ChunkWriter(
            store, str(name), tuple(arr.chunks), tuple(len(k) for k in store_chunks), token,
            (layouts[str(name)], layouts[f"{PROGRESS}/{name}"]),
        )  # fmt: skip
        for region, blocks in _missing_runs(done, var.chunks):
            sources.append(var.data.blocks[blocks])
            targets.append(writer)
            regions.append((slice(region[0].start + start, region[0].stop + start), *region[1:]))
    stored = da.store(sources, targets, regions=regions, lock=False, compute=False)
    expected = {}
    for name, arr in group.arrays():
        has_records = _member(group, store, f"{PROGRESS}/{name}") is not None
        expected[name] = (arr.shape, tuple(arr.chunks) if has_records else None)
    return _then(functools.partial(_mark_complete, store, expected, verify), stored)


def _run(final, compute: bool, progress: bool, store: str) -> Any:
    """Return the Delayed write, or compute it (under a progress bar if asked).

    If the write fails (e.g. a full disk), the temporary files of the chunk writes it cut
    short, xccm's and zarr's, are removed, so they hold no space until a resume.
    """
    if not compute:
        return final
    try:
        if progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                final.compute()
        else:
            final.compute()
    except BaseException:
        _clean_strays(store)
        raise
    return None


def is_complete(store: str | os.PathLike, *, verify: Verify = False) -> bool:
    """Whether ``store`` is a zarr store that xccm finished writing and nobody changed since.

    Complete means: the root attribute ``xccm_complete`` is 1, and every array the marker
    vouches for (the variables :func:`to_zarr` wrote, with their shapes, chunks and dtypes,
    recorded with the marker) is there as written, and no other array was added. A store
    grown or changed by another writer after xccm finished it (e.g. ``xarray.Dataset.to_zarr``
    with ``append_dim``) is not complete. A store that xccm did not write (no
    ``xccm_complete`` attribute) is taken as complete.

    Parameters
    ----------
    store : str or path
    verify : {False, "exists", "checksum"}, default False
        Also check the chunks against the progress records written with them: ``"exists"``
        checks that every written chunk's object is in the store (one listing per
        variable), ``"checksum"`` also reads every chunk back and compares its CRC-32 with
        the record's. ``False`` checks the marker and the metadata only (fast).

    Raises
    ------
    DamagedStoreError
        If the store's metadata cannot be read (a truncated or garbage ``zarr.json``).

    Examples
    --------
    >>> is_complete("no/such/store.zarr")
    False
    """
    _check_verify(verify)
    store = _normalize_store(store)
    group = _open_group(store)
    return group is not None and _why_incomplete(group, store, verify) is None


def open_zarr(
    store: str | os.PathLike,
    *,
    allow_incomplete: bool = False,
    verify: Verify = False,
    **kwargs: Any,
) -> xr.Dataset:
    """Open a zarr store with :func:`xarray.open_zarr`, refusing one that is half-written.

    Parameters
    ----------
    store : str or path
    allow_incomplete : bool, default False
        Open a store that :func:`to_zarr` has not finished, or that was changed after (its
        unwritten chunks read as the fill value: NaN for floats, 0 for integers).
    verify : {False, "exists", "checksum"}, default False
        What to check besides the completion marker, as in :func:`is_complete`.
    **kwargs
        Passed to :func:`xarray.open_zarr`.

    Raises
    ------
    IncompleteStoreError
        If the store is unfinished or changed since xccm finished it (the message says what
        is missing or changed) and ``allow_incomplete`` is False.
    DamagedStoreError
        If the store's metadata cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/m.zarr"
    >>> m = xr.DataArray(np.eye(3), dims=("channel_in", "channel"), name="ccm_matrix")
    >>> to_zarr(m, path)
    >>> open_zarr(path)["ccm_matrix"].values.trace()
    np.float64(3.0)
    """
    _check_verify(verify)
    store = _normalize_store(store)
    group = _open_group(store)
    if not allow_incomplete and group is not None:
        why = _why_incomplete(group, store, verify)
        if why is not None:
            raise IncompleteStoreError(
                f"store {store!r} is incomplete: {why}. Pass allow_incomplete=True to open it "
                "as it is."
            )
    with _quiet_consolidated():
        ds = xr.open_zarr(store, **kwargs)
    return _small_coords_in_memory(ds)


def _small_coords_in_memory(ds: xr.Dataset) -> xr.Dataset:
    """Load the small non-index coords (per-frame diagnostics such as a fit's ``loss``).

    :func:`to_zarr` writes in-memory variables as one chunk; read back lazily, a per-frame
    coord in one chunk beside a variable chunked frame by frame makes the variable's own
    operations fail ("inconsistent chunks"). Coords are small: they are read at once, up to
    :data:`_ONE_CHUNK_BYTES` each, as xarray reads index coords.
    """
    small = [
        name
        for name, coord in ds.coords.items()
        if name not in ds.indexes and coord.chunks is not None and coord.nbytes <= _ONE_CHUNK_BYTES
    ]
    return ds.assign_coords({name: ds[name].compute() for name in small}) if small else ds


# ---------------------------------------------------------------------------------------------
# writing


class _ChunkWriter:
    """A Dask store target: writes a block into the zarr array, then records it as written.

    Holds only the store path and, for arrays whose chunk files xccm writes itself (a local
    store, uncompressed: :func:`_raw_local`), their :class:`_Layout`s, so it pickles small and
    a write opens nothing; other arrays are opened with zarr once per process. The record is
    written after the data, so a recorded chunk is a written chunk; it holds the CRC-32 of the
    block's values (see :func:`_record`).
    """

    def __init__(
        self,
        store: str,
        name: str,
        chunks: tuple[int, ...],
        grid: tuple[int, ...],
        token: str,
        layouts: tuple[_Layout | None, _Layout | None] = (None, None),
    ) -> None:
        self.store, self.name, self.chunks, self.grid = store, name, chunks, grid
        self.token = token
        self.layout, self.records = layouts

    def __setitem__(self, index: tuple[slice, ...], block: np.ndarray) -> None:
        chunk = tuple((s.start or 0) // c for s, c in zip(index, self.chunks, strict=True))
        block = np.asarray(block)
        arr: Any = self.layout
        if arr is None or not (block.shape == self.chunks and block.dtype == arr.dtype):
            arr = _open_array(self.store, self.name, self.token)
        empty = not arr.config.write_empty_chunks and _all_fill(block, arr.fill_value)
        record = _record(block, arr.dtype, empty)
        whole = block.shape == self.chunks
        if whole and block.dtype == arr.dtype and block.dtype.isnative and _raw_local(arr):
            _write_chunk_file(arr, chunk, np.ascontiguousarray(block))
        else:
            arr[index] = block
        progress = self.records
        if progress is None:
            progress = _open_array(self.store, f"{PROGRESS}/{self.name}", self.token)
        flat = int(np.ravel_multi_index(chunk, self.grid)) if chunk else 0
        _write_record(progress, flat, record)


@dataclasses.dataclass(frozen=True)
class _ArrayConfig:
    write_empty_chunks: bool


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What xccm needs to write the chunk files of a :func:`_raw_local` array without zarr.

    Quacks like the zarr array for :func:`_write_chunk_file` and :func:`_write_record`
    (``metadata``, ``store``, ``path``, ``dtype``, ``fill_value``, ``config``), read from its
    ``zarr.json`` with no zarr event loop: one per array, built in the process that builds the
    write, so a chunk write opens nothing.
    """

    store: Any  # a zarr LocalStore (pickles as its root)
    path: str
    metadata: Any
    config: _ArrayConfig

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.metadata.dtype.to_native_dtype())

    @property
    def fill_value(self) -> Any:
        return self.metadata.fill_value


def _layouts(store: str, paths) -> dict[str, _Layout | None]:
    """Return the :class:`_Layout` of each array ``paths`` of a local store (None: use zarr).

    Reads each ``zarr.json`` as JSON; arrays whose metadata differ only in their shape and
    attributes share one parsed zarr metadata object, so 2000 similar arrays cost 2000 small
    reads and a few parses.
    """
    local = _local_path(store)
    if local is None:
        return dict.fromkeys(paths)
    reader = _Reader(local)
    out: dict[str, _Layout | None] = {}
    for path in paths:
        try:
            meta = json.loads(Path(local, *path.split("/"), "zarr.json").read_bytes())
        except (OSError, ValueError):  # left to zarr, which says why
            out[path] = None
            continue
        out[path] = reader.layout(path, meta)
    return out


class _Reader:
    """Parses the ``zarr.json`` dicts of a local store's arrays into :class:`_Layout` s."""

    def __init__(self, local: Path) -> None:
        self.root = zarr.storage.LocalStore(str(local))
        self.config = _ArrayConfig(bool(zarr.config.get("array.write_empty_chunks")))
        self.parsed: dict[str, Any] = {}

    def metadata(self, meta: dict):
        """Return the zarr metadata of ``meta`` but its shape and attributes (None: not v3)."""
        from zarr.core.metadata.v3 import ArrayV3Metadata

        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
            return None
        common = {k: v for k, v in meta.items() if k not in ("shape", "attributes")}
        signature = json.dumps(common, sort_keys=True)
        if signature not in self.parsed:
            try:
                parsed = ArrayV3Metadata.from_dict({**common, "shape": meta.get("shape", [])})
            except (ValueError, TypeError, KeyError):
                parsed = None
            self.parsed[signature] = parsed
        return self.parsed[signature]

    def layout(self, path: str, meta: dict) -> _Layout | None:
        """Return the :class:`_Layout` of the array ``path`` (None: zarr must write it)."""
        metadata = self.metadata(meta)
        if metadata is None:
            return None
        layout = _Layout(self.root, path, metadata, self.config)
        return layout if _raw_local(layout) else None


#: A record's state (its high 32 bits): the chunk was written and its object is in the store,
#: or it was all fill value, so (as zarr does by default) no object was written.
_WRITTEN, _EMPTY = 1, 2


def _record(block: np.ndarray, dtype: np.dtype, empty: bool) -> int:
    """Return the progress record of a chunk: its state and the CRC-32 of its values."""
    return ((_EMPTY if empty else _WRITTEN) << 32) | _crc(block, dtype)


def _crc(values: np.ndarray, dtype: np.dtype) -> int:
    """CRC-32 of ``values`` as ``dtype`` in native byte order, C order (strings: as JSON)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OUST":
        return zlib.crc32(json.dumps(np.asarray(values).ravel().tolist(), default=str).encode())
    native = np.ascontiguousarray(values, dtype=dtype.newbyteorder("="))
    return zlib.crc32(native.reshape(-1).data.cast("B"))


def _write_record(progress, flat: int, record: int) -> None:
    """Write one chunk's record (element ``flat``, C order) into the progress array.

    In a local store (an uncompressed uint64 array, as :func:`to_zarr` creates it), the
    8-byte chunk file is written in place with one ``write``, without the temporary file and
    rename of a chunk: a record cut short (fewer than 8 bytes) reads as damaged, and its
    chunk is written again (:func:`_read_records`). Elsewhere (an fsspec URL) zarr writes it.
    """
    value = np.full(1, record, dtype=np.uint64)
    if _raw_local(progress):
        key = progress.metadata.chunk_key_encoding.encode_chunk_key((flat,))
        target = os.path.join(_folder(progress), *key.split("/"))
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(fd, value.tobytes())
        finally:
            os.close(fd)
    else:
        progress[flat : flat + 1] = value


def _raw_local(arr) -> bool:
    """Whether ``arr``'s chunk files are the raw C-ordered bytes of its chunks, on local disk.

    True for a zarr v3 array in a local directory store whose only codec is the ``bytes``
    codec in this machine's byte order (no compressor, filter, transpose or sharding), of a
    plain numeric dtype: what :func:`to_zarr` creates for uncompressed variables and for its
    progress markers.
    """
    codecs: Any = getattr(arr.metadata, "codecs", ())  # zarr v2 metadata has none: not raw
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
    try:
        for attempt in range(2):
            with open(tmp, "wb") as f:
                f.write(data.reshape(-1).data.cast("B"))
            try:
                os.replace(tmp, target)
                break
            except FileNotFoundError:  # a concurrent resume's completion removed it: again
                if attempt:
                    raise
    except BaseException:  # e.g. a full disk: do not leave the partial file holding space
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


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


#: The zarr arrays opened by this process: (store, path) -> (token, array).
_arrays: dict[tuple[str, str], tuple[str, Any]] = {}
_arrays_lock = threading.Lock()


def _open_array(store: str, path: str, token: str):
    """Open a zarr array once per process and computation.

    Each is kept with the token of the computation that created the store, so a long-lived
    worker never writes through an array opened for an earlier store at the same path (one
    overwritten with ``mode="w"`` or deleted and written anew with another layout).
    """
    with _arrays_lock:
        held = _arrays.get((store, path))
        if held is None or held[0] != token:
            held = _arrays[store, path] = (token, zarr.open_array(store, path=path, mode="r+"))
        return held[1]


def _create(ds, store, chunks, tokens, token, attrs, encoding, *, replace: bool) -> None:
    """Create the store, replacing what is at ``store`` if ``replace``.

    A local store that exists is replaced only once its successor is created: the new store
    is created beside it (``<name>.xccm-new-<hex>``) and swapped in by two renames, so a
    creation that fails leaves the old store as it was. Elsewhere (an fsspec URL) the old
    store is deleted first (every argument was checked before).
    """
    local = _local_path(store)
    if not (replace and local is not None and os.path.lexists(local)):
        _create_at(ds, store, chunks, tokens, token, attrs, encoding, overwrite=replace)
        return
    new = local.with_name(f"{local.name}.xccm-new-{uuid.uuid4().hex[:12]}")
    _create_at(ds, str(new), chunks, tokens, token, attrs, encoding, overwrite=False)
    old = local.with_name(f"{local.name}.xccm-old-{uuid.uuid4().hex[:12]}")
    os.rename(local, old)
    try:
        os.rename(new, local)
    except BaseException:
        os.rename(old, local)
        shutil.rmtree(new, ignore_errors=True)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def _create_at(ds, store, chunks, tokens, token, attrs, encoding, *, overwrite: bool) -> None:
    """Create the store: metadata, in-memory variables and progress arrays, marked incomplete.

    The root group is created first with ``xccm_complete`` 0, so a store whose creation is cut
    short never reads as complete, and ``xccm_created`` is set last, so a resume knows that
    creation finished; if creating it fails, the store is removed again (:func:`_remove`)
    and the error propagates.
    """
    root = zarr.open_group(
        store,
        mode="w" if overwrite else "w-",
        attributes={COMPLETE: 0, _TOKEN: token, _TOKENS: json.dumps(tokens)},
    )
    try:
        _fill(ds, store, chunks, tokens, token, attrs, encoding)
    except BaseException:
        _remove(root, store)
        raise


#: In-memory variables up to this size are written as one zarr chunk.
_ONE_CHUNK_BYTES = 64 * 2**20


#: Variable attributes that xarray's encoding reads or writes (CF conventions, coordinates,
#: masking, scaling, times). Dask-backed variables whose attrs differ only outside these are
#: encoded alike: xarray writes the metadata of one of them, the others are copies of it.
_ENCODED_ATTRS = frozenset(
    {
        "_FillValue", "missing_value", "scale_factor", "add_offset", "units", "calendar",
        "dtype", "_Unsigned", "_Encoding", "coordinates", "compression", "bounds",
        "grid_mapping", "climatology", "geometry", "node_coordinates", "node_count",
        "part_node_count", "interior_ring", "cell_measures", "formula_terms",
        "ancillary_variables", "flag_values", "flag_masks", "valid_range", "valid_min",
        "valid_max", "_ARRAY_DIMENSIONS",
    }
)  # fmt: skip


def _fill(ds, store, chunks, tokens, token, attrs, encoding) -> None:
    """Write the variables' metadata, the in-memory variables and the progress arrays.

    xarray writes the in-memory variables and the metadata of one Dask-backed variable of
    each kind (:func:`_kinds`); the metadata of the other Dask-backed variables, and of the
    progress arrays, are copies with their own shapes, chunks and attrs (:func:`_copies`),
    written in one pass, without xarray's writer or zarr's event loop per array.
    """
    ds = ds.copy(deep=False)
    for var in ds.variables.values():
        var.encoding = {}
    # Fixed-width strings have no stable zarr v3 encoding; variable-length ones do.
    fixed = {k: v.astype(object) for k, v in ds.variables.items() if v.dtype.kind == "U"}
    ds = ds.assign_coords({k: v for k, v in fixed.items() if k in ds.coords})
    ds = ds.assign({k: v for k, v in fixed.items() if k in ds.data_vars})
    ds.attrs = {
        **ds.attrs, **(attrs or {}), COMPLETE: 0, _TOKEN: token, _TOKENS: json.dumps(tokens),
        **_version(),
    }  # fmt: skip
    enc = {name: dict(e) for name, e in (encoding or {}).items()}
    for name, c in chunks.items():
        enc.setdefault(name, {})["chunks"] = c
    for name, var in ds.variables.items():
        # Small in-memory variables (matrices, coords) in one chunk, not zarr's automatic
        # chunks, which may split the channel dim that xccm needs whole.
        if name not in chunks and var.size and var.nbytes <= _ONE_CHUNK_BYTES:
            enc.setdefault(name, {}).setdefault("chunks", var.shape)
    grids = {k: _grid(ds.variables[k]) for k in chunks}
    kinds = _kinds(ds, chunks, enc)
    templates = set(kinds.values())
    copies = [k for k in chunks if k not in templates]
    # xarray builds a write of each Dask-backed variable that we never compute (to_zarr writes
    # the chunks itself): give it one-chunk placeholders of the same shape, dtype and attrs,
    # not the real graphs, so building that write costs one task per variable.
    placeholders: dict[tuple, da.Array] = {}  # one per shape and dtype: da.empty tokenizes
    for k in templates:
        v = ds.variables[k]
        key = (v.shape, v.dtype.str)
        if key not in placeholders:
            placeholders[key] = da.empty(v.shape, dtype=v.dtype, chunks=v.shape or ())
    blank = {
        k: ds.variables[k].copy(data=placeholders[ds.variables[k].shape, ds.variables[k].dtype.str])
        for k in templates
    }
    ds = ds.assign_coords({k: v for k, v in blank.items() if k in ds.coords})
    ds = ds.assign({k: v for k, v in blank.items() if k in ds.data_vars})
    written = ds.drop_vars(copies) if copies else ds
    # The group exists (_create made it, with only the xccm attrs): add the variables to it.
    written.to_zarr(
        store, mode="a", compute=False, consolidated=False,
        encoding={k: e for k, e in enc.items() if k in written.variables},
    )  # fmt: skip
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    progress = root.require_group(PROGRESS)
    metadata: dict[str, dict] = {}
    first = None
    for name in chunks:
        # One uint64 record per chunk (state and CRC-32), flat in C order over the chunk grid:
        # one small file per chunk, no nested folders.
        shape = (math.prod(grids[name]),)
        if first is None:
            first = progress.create_array(
                str(name), shape=shape, chunks=(1,), dtype=np.uint64, fill_value=0,
                compressors=None,
            )  # fmt: skip
            like = _read_metadata(store, f"{PROGRESS}/{name}")
        else:
            metadata[f"{PROGRESS}/{name}"] = {**like, "shape": list(shape)}
    if copies:
        read = {k: _read_metadata(store, str(k)) for k in templates}
        for name in copies:
            template = kinds[name]
            metadata[str(name)] = _copy_metadata(
                read[template], ds.variables[template], ds.variables[name], chunks[name]
            )
    _write_metadata(store, metadata)
    root.attrs[_CREATED] = 1


def _kinds(ds: xr.Dataset, chunks, enc) -> dict[Hashable, Hashable]:
    """Map each Dask-backed variable to the first of its kind: those xarray encodes alike.

    Alike: data variables with the same dims, dtype and encoding (but the chunks) and the
    same attributes that xarray's encoding reads (:data:`_ENCODED_ATTRS`). A coord (which
    xarray lists in the ``coordinates`` attribute of the variables it describes, so it must
    be in what xarray writes) and a variable with a ``serializer`` (e.g. sharding, whose
    metadata depends on the chunks) are each their own kind.
    """
    first: dict[str, Hashable] = {}
    kinds = {}
    for name in chunks:
        var = ds.variables[name]
        e = {k: v for k, v in enc.get(name, {}).items() if k != "chunks"}
        if "serializer" in e or name in ds.coords:
            kinds[name] = name
            continue
        encoded = {k: v for k, v in var.attrs.items() if k in _ENCODED_ATTRS}
        kind = dask.base.tokenize(var.dims, var.dtype.str, e, encoded)
        kinds[name] = first.setdefault(kind, name)
    return kinds


def _copy_metadata(template: dict, like: xr.Variable, var: xr.Variable, chunks) -> dict:
    """Return the ``zarr.json`` of ``var``, a copy of ``template`` (``like``'s, of its kind).

    With ``var``'s shape, chunks and own attributes, encoded as xarray encodes them.
    """
    # The template's attributes but its own plain ones (those that xarray's encoding added or
    # read are the same for the whole kind), then var's own, as xarray's zarr backend encodes.
    kept = {
        k: v
        for k, v in template.get("attributes", {}).items()
        if k not in like.attrs or k in _ENCODED_ATTRS
    }
    own = {
        k: v.tolist() if isinstance(v, np.ndarray | np.generic) else v
        for k, v in var.attrs.items()
        if k not in _ENCODED_ATTRS
    }
    return {
        **template,
        "shape": list(var.shape),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "attributes": {**own, **kept},
    }


def _read_metadata(store: str, path: str) -> dict:
    """Return the ``zarr.json`` of the array ``path`` in ``store``, as a dict."""
    local = _local_path(store)
    if local is not None:
        return json.loads(Path(local, *path.split("/"), "zarr.json").read_bytes())
    return zarr.open_array(store, path=path, mode="r").metadata.to_dict()


def _write_metadata(store: str, metadata: Mapping[str, dict]) -> None:
    """Write the ``zarr.json`` of each array path in ``metadata``, as zarr writes it.

    In a local store each is written as a file; elsewhere through the store, all at once,
    not once per array on zarr's event loop.
    """
    if not metadata:
        return
    indent = zarr.config.get("json_indent")
    blobs = {
        path: json.dumps(meta, allow_nan=True, indent=indent).encode()
        for path, meta in metadata.items()
    }
    local = _local_path(store)
    if local is not None:
        for path, blob in blobs.items():  # a creation cut short is made again: no renames
            folder = Path(local, *path.split("/"))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "zarr.json").write_bytes(blob)
        return
    import asyncio

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    target = zarr.open_group(store, mode="r+", use_consolidated=False).store
    buffer = default_buffer_prototype().buffer

    async def put():
        await asyncio.gather(
            *(target.set(f"{p}/zarr.json", buffer.from_bytes(b)) for p, b in blobs.items())
        )

    sync(put())


def _grid(var) -> tuple[int, ...]:
    """Return the shape of a Dask-backed variable's chunk grid (0-d: one chunk)."""
    return tuple(len(c) for c in var.chunks) or (1,)


def _remove(root, store: str) -> None:
    """Remove the store ``root`` whose creation failed; if that fails too, leave it incomplete.

    It is removed through zarr (a local directory, or the keys of a remote store). A store
    that cannot be removed keeps ``xccm_complete`` 0, so it is never taken as complete.
    """
    try:
        from zarr.core.sync import sync

        sync(root.store.delete_dir(root.path))
        local = _local_path(store)
        if local is not None and local.is_dir() and not any(local.iterdir()):
            local.rmdir()
    except Exception as e:  # e.g. a remote store that does not support deletes
        warnings.warn(
            f"could not remove store {store!r}, whose creation failed ({e!r}); it is marked "
            "incomplete. Delete it, or overwrite it with mode='w'",
            RuntimeWarning,
            stacklevel=4,
        )


#: Files a writer killed mid-write leaves: xccm's own temporary chunk files, and zarr's
#: (``<key>.<uuid4 hex>.partial``, e.g. ``zarr.<hex>.partial`` for a ``zarr.json``).
_STRAY = re.compile(rf"(\.[0-9a-f]+{re.escape(_TMP)}|\.[0-9a-f]{{32}}\.partial)$")


def _clean_strays(store: str) -> None:
    """Remove the temporary files of writers killed mid-write from a local store."""
    local = _local_path(store)
    if local is None:
        return  # remote stores write objects whole
    for folder, _, files in os.walk(local):
        for f in files:
            if _STRAY.search(f):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, f))


def _clear_leftovers(store: str) -> None:
    """Remove a local folder holding only the temporary files of a creation that was killed.

    (Killed while zarr wrote the root ``zarr.json``, it holds ``zarr.<hex>.partial``.) A
    folder holding anything else is left alone; creating the store then fails.
    """
    local = _local_path(store)
    if local is None or not local.is_dir():
        return
    files = [Path(d, f) for d, _, fs in os.walk(local) for f in fs]
    if all(_STRAY.search(f.name) for f in files):
        shutil.rmtree(local)


def _verified(group, store: str, name: str, chunks, verify) -> tuple[np.ndarray, np.ndarray]:
    """Return which chunks of ``name`` are written, and their records.

    Written means recorded, and passing ``verify``.
    A damaged record (not 8 bytes, or not a state xccm writes) is reported in a warning and
    counts as not written, as does a chunk that fails ``verify``; resume writes them again.
    """
    records, damaged = _read_records(group, store, name, tuple(len(c) for c in chunks) or (1,))
    if damaged:
        warnings.warn(
            f"store {store!r}: the progress records {damaged} are damaged; their chunks are "
            "written again",
            RuntimeWarning,
            stacklevel=3,
        )
    if verify:
        bad = _failing(group, store, name, chunks, records, verify)
        for chunk in bad:
            records[chunk] = 0
    return (records >> np.uint64(32)) > 0, records


def _check_samples(store: str, name: str, var, records: np.ndarray) -> None:
    """Refuse to resume if written chunks of ``var``, computed again, differ from their records.

    Used when the variable's Dask name differs from the first run's while its graph's
    structure is the same (e.g. its source opened through another spelling of its path): the
    first and last chunks written are computed again and their CRC-32s compared.
    """
    written = np.argwhere((records >> np.uint64(32)) > 0)
    if not len(written):
        return
    for chunk in {tuple(int(i) for i in written[0]), tuple(int(i) for i in written[-1])}:
        index = chunk[: var.ndim]
        block = np.asarray(var.data.blocks[index].compute() if index else var.data.compute())
        if _crc(block, block.dtype) != int(records[chunk]) & 0xFFFFFFFF:
            raise ValueError(
                f"store {store!r} was started from a different computation: variable "
                f"{name!r} (its source or the computation on it): chunk {list(chunk)} computed "
                "now differs from the one written, so finishing it would mix two results. Give "
                "the same inputs as the first run, or use mode='w' to start over"
            )


def _read_records(group, store: str, name: str, grid) -> tuple[np.ndarray, list[str]]:
    """Return the records of ``name`` on its chunk ``grid`` (0: unwritten), and damaged keys."""
    progress = group[f"{PROGRESS}/{name}"]
    if math.prod(progress.shape) != math.prod(grid):
        raise ValueError(
            f"store {store!r}: the progress records of {name!r} are for {progress.shape[0]} "
            f"chunks, but the variable has {math.prod(grid)}; use mode='w' to start over"
        )
    damaged: list[str] = []
    if _raw_local(progress):  # read the few files there are, not one lookup per chunk
        folder = _folder(progress)
        records, damaged = _local_records(folder, _local_keys(folder), progress.shape, name)
        return records.reshape(grid), damaged
    try:
        records = np.asarray(progress[...])
    except Exception:  # a damaged record: read them one by one
        records = np.zeros(progress.shape, np.uint64)
        for chunk in np.ndindex(progress.shape):
            try:
                records[chunk] = progress[chunk]
            except Exception:
                damaged.append(f"{PROGRESS}/{name}/c/{'/'.join(map(str, chunk))}")
    if records.dtype != np.uint64:  # bool markers of an older xccm: written, no checksum
        records = np.where(records.astype(bool), np.uint64(_WRITTEN << 32), np.uint64(0))
    state = records >> np.uint64(32)
    bad = (state != 0) & (state != _WRITTEN) & (state != _EMPTY)
    for chunk in zip(*np.nonzero(bad), strict=True):
        damaged.append(f"{PROGRESS}/{name}/c/{'/'.join(map(str, chunk))}")
    return np.where(bad, np.uint64(0), records).reshape(grid), damaged


def _local_records(folder, keys, shape, name: str) -> tuple[np.ndarray, list[str]]:
    """Read the records of ``name`` from the files ``keys`` (``c/<i>``) of its local folder."""
    records = np.zeros(shape, np.uint64)
    damaged: list[str] = []
    for key in keys:
        parts = key.split("/")
        path = os.path.join(folder, *parts)
        try:
            chunk = tuple(int(p) for p in parts[1:])
            data = Path(path).read_bytes()
            value = int(np.frombuffer(data, np.uint64)[0]) if len(data) == 8 else -1
            records[chunk] = value if (value >> 32) in (_WRITTEN, _EMPTY) else 0
            if (value >> 32) not in (_WRITTEN, _EMPTY):
                damaged.append(f"{PROGRESS}/{name}/{key}")
        except (ValueError, IndexError):  # a file that is no chunk of this array
            continue
        except FileNotFoundError:  # removed meanwhile
            continue
    return records, damaged


def _local_keys(folder) -> list[str]:
    """Return the keys (``c/0/1``) of the chunk files in a local array folder, no strays."""
    keys = []
    base = os.path.join(folder, "c")
    for d, _, files in os.walk(base):
        rel = os.path.relpath(d, folder).replace(os.sep, "/")
        keys += [f"{rel}/{f}" for f in files if not _STRAY.search(f)]
    if os.path.isfile(base):
        keys.append("c")
    return keys


def _stored_keys(arr) -> set[str]:
    """Return the keys of the chunk objects of ``arr`` in its store (a listing)."""
    if isinstance(arr.store, zarr.storage.LocalStore):
        return set(_local_keys(_folder(arr)))
    from zarr.core.sync import sync

    prefix = f"{arr.path}/" if arr.path else ""

    async def listing():
        return [k async for k in arr.store.list_prefix(prefix)]

    return {k[len(prefix) :] for k in sync(listing())} - {"zarr.json"}


def _failing(group, store, name, chunks, records, verify) -> list[tuple[int, ...]]:
    """Return the recorded chunks of ``name`` that fail ``verify`` (missing, or another CRC)."""
    arr = group[name]
    state = records >> np.uint64(32)
    grid_ndim = len(chunks)
    encode = arr.metadata.chunk_key_encoding.encode_chunk_key
    stored = _stored_keys(arr)
    written = [tuple(int(i) for i in c) for c in np.argwhere(state == _WRITTEN)]
    bad = [c for c in written if encode(c[:grid_ndim]) not in stored]
    if verify == "checksum":
        missing = set(bad)
        for recorded in np.argwhere(state != 0):
            chunk = tuple(int(i) for i in recorded)
            if chunk in missing:
                continue
            values = arr.blocks[chunk[:grid_ndim]] if grid_ndim else arr[...]
            if _crc(values, arr.dtype) != int(records[chunk]) & 0xFFFFFFFF:
                bad.append(chunk)
    return bad


def _mark_complete(store: str, expected: dict, verify, _stored: Any) -> None:
    """Mark the store complete, once every variable and recorded chunk is checked.

    Removes the temporary files of writers killed mid-write, checks that every variable is
    an array of the expected shape and chunks, that every chunk is recorded and passes
    ``verify``; a chunk that fails loses its record (so a resume writes it again) and the
    store is not marked. The marker lists the arrays it vouches for.

    In a local store (unless ``verify="checksum"``, which reads every chunk through zarr)
    this is one pass over the store's folders: one listing finds the stray files, the
    metadata, the records and the chunk files; the consolidated metadata and the marker are
    then written in one atomic write of the root ``zarr.json`` (:func:`_write_root`).
    """
    local = _local_path(store)
    if local is None or verify == "checksum":
        _mark_complete_zarr(store, expected, verify)
        return
    folders = _list_clean(local)
    metas = {}
    for folder, files in folders.items():
        if "zarr.json" in files:
            try:
                metas[folder] = json.loads(Path(local, folder, "zarr.json").read_bytes())
            except FileNotFoundError:
                continue
            except ValueError as e:
                raise _damaged(store, e) from e
    reader = _Reader(local)
    problems = []
    for name, (shape, chunks) in expected.items():
        meta = metas.get(name)
        metadata = reader.metadata(meta) if meta is not None else None
        if meta is None or metadata is None:
            problems.append(f"variable {name!r} is missing")
            continue
        now = (tuple(meta["shape"]), tuple(metadata.chunks))
        if now[0] != tuple(shape) or (chunks is not None and now[1] != tuple(chunks)):
            problems.append(f"variable {name!r} has shape {now[0]} and chunks {now[1]}")
            continue
        if chunks is None:
            continue
        grid = tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True)) or (1,)
        path = f"{PROGRESS}/{name}"
        progress = reader.layout(path, metas[path]) if path in metas else None
        if progress is None or _progress_keys(progress) is None:  # not as xccm makes them
            _mark_complete_zarr(store, expected, verify)
            return
        n = math.prod(grid)
        if math.prod(metas[path]["shape"]) != n:
            raise ValueError(
                f"store {store!r}: the progress records of {name!r} are for "
                f"{math.prod(metas[path]['shape'])} chunks, but the variable has {n}; use "
                "mode='w' to start over"
            )
        keys = [f"c/{f}" for f in folders.get(f"{path}/c", ())]
        records, _ = _local_records(_folder(progress), keys, (n,), name)
        records = records.reshape(grid)
        unwritten = int(((records >> np.uint64(32)) == 0).sum())
        if unwritten:
            problems.append(f"{unwritten} chunk(s) of {name!r} are not recorded as written")
        if verify:
            encode = metadata.chunk_key_encoding.encode_chunk_key
            bad = []
            for recorded in np.argwhere((records >> np.uint64(32)) == _WRITTEN):
                chunk = tuple(int(i) for i in recorded)
                folder, _, file = f"{name}/{encode(chunk[: len(shape)])}".rpartition("/")
                if file not in folders.get(folder, ()):
                    bad.append(chunk)
            for chunk in bad:  # not written, as far as a resume is concerned: no record
                flat = int(np.ravel_multi_index(chunk, grid))
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(_folder(progress), "c", str(flat)))
            if bad:
                problems.append(f"chunks {[list(c) for c in bad[:5]]} of {name!r} are missing")
    if problems:
        raise IncompleteStoreError(
            f"store {store!r} was not marked complete: {'; '.join(problems)}. Run the same "
            "write with mode='resume' to write what is missing."
        )
    _write_root(local, metas)


def _progress_keys(layout: _Layout) -> str | None:
    """``"c"`` if the records' files are ``c/<i>`` (as xccm creates them), else None."""
    try:
        key = layout.metadata.chunk_key_encoding.encode_chunk_key((7,))
    except Exception:
        return None
    return "c" if key == "c/7" else None


def _list_clean(local: Path) -> dict[str, set[str]]:
    """List a local store's files by folder (``""``: the root), removing the stray ones."""
    folders: dict[str, set[str]] = {}
    for folder, _, files in os.walk(local):
        rel = os.path.relpath(folder, local).replace(os.sep, "/")
        kept = set()
        for f in files:
            if _STRAY.search(f):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, f))
            else:
                kept.add(f)
        folders["" if rel == "." else rel] = kept
    return folders


def _write_root(local: Path, metas: dict[str, dict]) -> None:
    """Consolidate the metadata ``metas`` (path -> ``zarr.json``) and mark the store complete.

    Writes the root ``zarr.json`` zarr's ``consolidate_metadata`` writes (the same members,
    order and layout), with ``xccm_complete`` 1 and the list of arrays vouched for, in one
    atomic write through zarr's local store.
    """
    import unicodedata

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    root = metas[""]
    members = {}
    order = sorted(
        (p for p in metas if p),
        key=lambda p: (p.count("/"), unicodedata.normalize("NFKC", p).casefold()),
    )
    empty = {"kind": "inline", "must_understand": False, "metadata": {}}
    for path in order:
        meta = metas[path]
        if meta.get("node_type") == "group":
            meta = {
                "attributes": meta.get("attributes", {}),
                "zarr_format": meta.get("zarr_format", 3),
                "consolidated_metadata": empty,
                "node_type": "group",
            }
        members[path] = meta
    described = {
        path: {
            "shape": list(meta["shape"]),
            "chunks": list(meta["chunk_grid"]["configuration"]["chunk_shape"]),
            "data_type": meta["data_type"],
        }
        for path, meta in sorted(members.items())
        if "/" not in path and meta.get("node_type") == "array"
    }
    attributes = {k: v for k, v in root.get("attributes", {}).items() if k != _APPEND}
    marked = {
        "attributes": {**attributes, COMPLETE: 1, _ARRAYS: json.dumps(described)},
        "zarr_format": 3,
        "consolidated_metadata": {**empty, "metadata": members},
        "node_type": "group",
    }
    blob = json.dumps(marked, allow_nan=True, indent=zarr.config.get("json_indent")).encode()
    store = zarr.storage.LocalStore(str(local))
    sync(store.set("zarr.json", default_buffer_prototype().buffer.from_bytes(blob)))


def _mark_complete_zarr(store: str, expected: dict, verify) -> None:
    """:func:`_mark_complete` through zarr: remote stores, ``verify="checksum"``."""
    _clean_strays(store)
    group = zarr.open_group(store, mode="r+", use_consolidated=False)
    problems = []
    for name, (shape, chunks) in expected.items():
        if name not in group:
            problems.append(f"variable {name!r} is missing")
            continue
        arr = cast("zarr.Array", group[name])
        if arr.shape != tuple(shape) or (chunks is not None and arr.chunks != tuple(chunks)):
            problems.append(f"variable {name!r} has shape {arr.shape} and chunks {arr.chunks}")
            continue
        if chunks is None:
            continue
        grid = tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True)) or (1,)
        records, _ = _read_records(group, store, name, grid)
        unwritten = int(((records >> np.uint64(32)) == 0).sum())
        if unwritten:
            problems.append(f"{unwritten} chunk(s) of {name!r} are not recorded as written")
        if verify:
            bad = _failing(group, store, name, arr.cdata_shape, records, verify)
            if bad:
                progress = cast("zarr.Array", group[f"{PROGRESS}/{name}"])
                for chunk in bad:  # not written, as far as a resume is concerned
                    flat = int(np.ravel_multi_index(chunk, grid))
                    progress[flat : flat + 1] = 0
                what = "missing" if verify == "exists" else "missing or not as recorded"
                problems.append(f"chunks {[list(c) for c in bad[:5]]} of {name!r} are {what}")
    if problems:
        raise IncompleteStoreError(
            f"store {store!r} was not marked complete: {'; '.join(problems)}. Run the same "
            "write with mode='resume' to write what is missing."
        )
    # Consolidate first, then mark the consolidated root: each array's metadata is read once.
    with _quiet_consolidated():
        consolidated = zarr.consolidate_metadata(store)
    marked = {k: v for k, v in consolidated.attrs.items() if k != _APPEND}
    consolidated.attrs.put({**marked, COMPLETE: 1, _ARRAYS: json.dumps(_describe(consolidated))})


def _describe(group) -> dict[str, dict[str, Any]]:
    """Return what the completion marker vouches for: each array's shape, chunks, dtype."""
    return {
        name: {
            "shape": list(arr.shape),
            "chunks": list(arr.chunks),
            "data_type": arr.metadata.to_dict()["data_type"],
        }
        for name, arr in sorted(group.arrays())
    }


def _missing_runs(done: np.ndarray, chunks: tuple[tuple[int, ...], ...]):
    """Yield ``(region, block_slices)`` for runs of unwritten blocks along the first axis."""
    if done.all():
        return
    if done.ndim == 0:  # a 0-d variable: one block
        yield (), ()
        return
    offsets = [np.concatenate([[0], np.cumsum(c)]) for c in chunks]
    for rest in np.ndindex(done.shape[1:]):
        index = (slice(None), *rest)
        column = done[index]
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
    for dim, c in zip(var.dims, cast(tuple[tuple[int, ...], ...], var.chunks), strict=True):
        if len(c) > 1 and (len(set(c[:-1])) > 1 or c[-1] > c[0]):
            raise ValueError(
                f"variable {name!r} has irregular chunks {c} along dim {dim!r}; zarr needs "
                f"equal chunks (the last may be smaller). Rechunk first, e.g. "
                f"obj.chunk({{{dim!r}: {c[0]}}})"
            )
        sizes.append(c[0] if c else 0)
    return tuple(sizes)


_CODEC_KEYS = frozenset({"compressors", "filters", "serializer"})


def _check_verify(verify) -> None:
    if not any(verify is v or (isinstance(verify, str) and verify == v) for v in _VERIFY):
        raise ValueError(f"verify must be False, 'exists' or 'checksum'; got {verify!r}")


def _check_names(ds: xr.Dataset) -> None:
    """Refuse variable names that cannot be a zarr array in the store's root group."""
    for name in ds.variables:
        if not isinstance(name, str):
            raise TypeError(
                f"variable name {name!r} is a {type(name).__name__}; zarr names arrays with "
                "strings: rename it, e.g. ds.rename({" + repr(name) + ": 'image'})"
            )
        if name in ("", ".", "..") or "/" in name or name.startswith("__") or name == PROGRESS:
            why = (
                "is where xccm records the chunks written"
                if name == PROGRESS
                else "would be written into a nested group, invisible to open_zarr"
                if "/" in name
                else "is reserved by zarr"
                if name.startswith("__")
                else "cannot name a zarr array"
            )
            raise ValueError(
                f"variable name {name!r} {why}; rename it (names without '/', not empty, "
                f"'.' or '..', not starting with '__' and not {PROGRESS!r})"
            )


def _normalize_store(store) -> str:
    """Return ``store`` as a string; a local path without a trailing separator."""
    if not isinstance(store, str | os.PathLike):
        raise TypeError(f"store must be a path or a URL string; got {type(store).__name__}")
    store = os.fspath(store)
    if _local_path(store) is not None and len(store) > 1:
        store = store.rstrip("/" + os.sep) or store[:1]
    return store


def _local_path(store: str) -> Path | None:
    """Return the local path of ``store``, or None for an fsspec URL (as zarr tells)."""
    return None if "://" in store or "::" in store else Path(store)


def _check_encoding(encoding, ds: xr.Dataset, lazy) -> None:
    """Check ``encoding`` before anything is written: names, keys and codecs."""
    if encoding is None:
        return
    if not isinstance(encoding, Mapping):
        raise TypeError(
            f"encoding must be a mapping of variable names to mappings; got "
            f"{type(encoding).__name__}"
        )
    for name, enc in encoding.items():
        if name not in ds.variables:
            raise ValueError(
                f"encoding names variable {name!r}, which obj does not have; its variables "
                f"are {sorted(map(str, ds.variables))}"
            )
        if not isinstance(enc, Mapping):
            raise TypeError(
                f"encoding[{name!r}] must be a mapping (e.g. {{'compressors': None}}); got "
                f"{type(enc).__name__}"
            )
        extra = set(enc) - _CODEC_KEYS
        if name in lazy and extra:
            raise ValueError(
                f"encoding for Dask-backed variable {name!r} may only set codecs "
                f"{sorted(_CODEC_KEYS)}; got {sorted(extra)}. Its blocks are written as they "
                "are, so convert first (e.g. .astype(...)); chunks are always the Dask chunks."
            )
        codecs = {k: enc[k] for k in _CODEC_KEYS & set(enc) if enc[k] not in (None, (), [])}
        for key, value in codecs.items():
            values = value if isinstance(value, list | tuple) else [value]
            for v in values:
                if isinstance(v, str) and not (key == "compressors" and v == "auto"):
                    raise TypeError(
                        f"encoding[{name!r}][{key!r}] holds the string {v!r}; give zarr codec "
                        "objects (e.g. zarr.codecs.ZstdCodec()) or their dicts (e.g. "
                        "{'name': 'zstd', 'configuration': {'level': 3}})"
                    )
        if codecs:  # let zarr judge them, on a throwaway array in memory
            var = ds.variables[name]
            try:
                zarr.create_array(
                    zarr.storage.MemoryStore(), shape=var.shape, dtype=var.dtype, **codecs
                )
            except Exception as e:
                raise ValueError(
                    f"encoding[{name!r}] is not a zarr encoding for a {var.dtype} variable: {e}"
                ) from e


def _tokens(ds: xr.Dataset, lazy, attrs, encoding) -> dict[str, Any]:
    """Tokens of the parts of the computation, to tell which part differs on resume.

    ``variables`` holds Dask's token of each variable (for a Dask-backed one, its name, which
    Dask derives from the source's path as spelled and, for xarray's readers, its mtime);
    ``structure`` holds, for each Dask-backed variable, a token of its graph's layers in which
    a source read by xarray counts by its resolved path (:func:`_structure`).
    """
    return {
        "variables": {str(k): dask.base.tokenize(v.dims, v.data) for k, v in ds.variables.items()},
        "structure": {str(k): _structure(v.data) for k, v in lazy.items()},
        "attrs": dask.base.tokenize(
            ds.attrs, {str(k): v.attrs for k, v in ds.variables.items()}, attrs
        ),
        "encoding": dask.base.tokenize(encoding),
    }


def _check_attrs(ds: xr.Dataset, attrs: Mapping[str, Any] | None) -> None:
    """Raise a TypeError naming any attribute whose value zarr cannot store.

    Checked before anything is written. A value is storable if it is JSON once NumPy arrays and
    scalars are turned into lists and Python scalars, as xarray's zarr backend does.
    """
    if attrs is not None and not isinstance(attrs, Mapping):
        raise TypeError(
            f"attrs must be a mapping of attribute names to values; got {type(attrs).__name__}"
        )
    places = [("attrs[{}]", attrs or {}), ("obj.attrs[{}]", ds.attrs)]
    places += [(f"attrs[{{}}] of variable {k!r}", v.attrs) for k, v in ds.variables.items()]
    for where, mapping in places:
        for key, value in mapping.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where.format(repr(key))}: attribute names must be strings, as zarr "
                    f"stores them; got a {type(key).__name__}"
                )
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
    """Return the zarr group at ``store`` (read-only, not consolidated), or None if none.

    Raises :class:`DamagedStoreError` if its metadata cannot be read.
    """
    _require_zarr()
    try:
        return zarr.open_group(store, mode="r", use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None
    except OSError:
        raise
    except Exception as e:
        raise _damaged(store, e) from e


def _damaged(store: str, error: Exception) -> DamagedStoreError:
    """Return the error for a store whose metadata cannot be read, naming the file."""
    where = ""
    local = _local_path(store)
    if local is not None and local.is_dir():
        for d, _, files in os.walk(local):
            if "zarr.json" in files:
                path = Path(d, "zarr.json")
                try:
                    json.loads(path.read_bytes())
                except ValueError:
                    where = f" ({path} is not valid JSON)"
                    break
    return DamagedStoreError(
        f"the zarr metadata of store {store!r} is damaged{where}: {type(error).__name__}: "
        f"{error}. xccm cannot tell what it holds or whether it is complete. Write it again "
        "with xccm.io.to_zarr(..., mode='w'); or, to rescue its chunks, restore that file "
        "(e.g. from a backup or another store written the same way)"
    )


def _member(group, store: str, name: str):
    """``group[name]``, or None if there is none; a damaged metadata file is an error."""
    try:
        return group[name]
    except KeyError:
        return None
    except OSError:
        raise
    except Exception as e:
        raise _damaged(store, e) from e


def _why_incomplete(group, store: str, verify) -> str | None:
    """Why ``group`` is not a complete store of xccm, or None if it is.

    A store xccm did not write (no marker) counts as complete. Checks the marker, then that
    the arrays are those it vouches for, then (``verify``) the chunks against their records.
    """
    if COMPLETE not in group.attrs:
        if _member(group, store, PROGRESS) is None:
            return None  # not written by xccm
        return (
            "it holds xccm's progress records but not its completion marker: another writer "
            "replaced its attributes (as xarray's to_zarr(mode='a') does), so what it changed "
            "is not vouched for. Grow a store with xccm.io.to_zarr(..., mode='append') instead"
        )
    if not group.attrs[COMPLETE]:
        return (
            "xccm.io.to_zarr did not finish writing it. Run the same write again with "
            "mode='resume' to finish it"
        )
    described = group.attrs.get(_ARRAYS)
    if described is None:  # not written by xccm, or by an older version
        return None
    try:
        described = json.loads(described)
    except (TypeError, ValueError):
        return f"its attribute {_ARRAYS!r}, the list of arrays it vouches for, is damaged"
    try:
        now = _describe(group)
    except OSError:
        raise
    except Exception as e:
        raise _damaged(store, e) from e
    changes = []
    for name in sorted(set(described) | set(now)):
        was, is_ = described.get(name), now.get(name)
        if was == is_:
            continue
        if is_ is None:
            changes.append(f"variable {name!r} was removed")
        elif was is None:
            changes.append(f"variable {name!r} was added")
        else:
            diff = [
                f"{k} {tuple(was[k]) if isinstance(was[k], list) else was[k]} -> "
                f"{tuple(is_[k]) if isinstance(is_[k], list) else is_[k]}"
                for k in was
                if was[k] != is_.get(k)
            ]
            changes.append(f"variable {name!r} changed ({', '.join(diff)})")
    if changes:
        return (
            "it was changed after xccm.io.to_zarr completed it (" + "; ".join(changes) + "), so "
            "the marker no longer vouches for it (e.g. frames appended by another writer read "
            "as fill values). Grow it with xccm.io.to_zarr(..., mode='append') instead"
        )
    if verify:
        for name in sorted(described):
            if _member(group, store, f"{PROGRESS}/{name}") is None:
                continue
            arr = group[name]
            records, damaged = _read_records(group, store, name, arr.cdata_shape or (1,))
            if damaged:
                return f"its progress records {damaged} are damaged"
            bad = _failing(group, store, name, arr.cdata_shape, records, verify)
            if bad:
                what = "missing" if verify == "exists" else "missing or not as written"
                return (
                    f"chunks {[list(c) for c in bad[:5]]} of {name!r} are {what}. Run the same "
                    "write again with mode='resume' and verify='" + str(verify) + "' to "
                    "write them again"
                )
    return None


@contextlib.contextmanager
def _quiet_consolidated():
    """Silence zarr's note that consolidated metadata is not yet in the zarr v3 spec."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


def _structure(array) -> str:
    """Return a token of a Dask array's graph, the same for a source however it is spelled.

    Each layer counts by its kind (its name without the token) and its dependencies; a layer
    with none counts by its name (Dask names in-memory data by its values), except a source
    read by xarray, which counts by its file's resolved path, the variable in it and the
    selection. Literal arguments inside a layer (``x * 2``) do not show here: a resume whose
    Dask names differ also recomputes written chunks and compares their checksums
    (:func:`_check_samples`).
    """
    graph = array.__dask_graph__()
    layers = getattr(graph, "layers", None)
    if layers is None:  # a plain dict graph: no layers to go by
        return dask.base.tokenize(array)
    canonical: dict[str, str] = {}
    stack = [(array.name, False)]
    while stack:  # dependencies before dependents, without recursion
        name, ready = stack.pop()
        if name in canonical:
            continue
        deps = graph.dependencies.get(name, set())
        if not ready:
            stack.append((name, True))
            stack.extend((d, False) for d in deps if d not in canonical)
            continue
        if deps:
            kind = dask.utils.key_split(name)
            canonical[name] = dask.base.tokenize(kind, sorted(canonical[d] for d in deps))
        else:
            source = _source(layers[name])
            canonical[name] = name if source is None else dask.base.tokenize(source)
    return canonical[array.name]


def _source(layer) -> tuple | None:
    """Return (resolved path, variable, selection) of a layer that reads a file via xarray."""
    try:
        if len(layer) != 1:
            return None
        value = next(iter(dict(layer).values()))
    except Exception:  # a layer that does not materialize simply: not a source
        return None
    key = None
    for _ in range(8):  # xarray's lazy indexing adapters wrap the backend array
        key = getattr(value, "key", key)
        inner = getattr(value, "array", None)
        if inner is None:
            break
        value = inner
    zarr_array = getattr(value, "_array", None)
    if zarr_array is not None and hasattr(zarr_array, "store"):
        root = getattr(zarr_array.store, "root", None)
        if root is None:
            return None
        return (os.path.realpath(root), zarr_array.path, repr(key))
    datastore = getattr(value, "datastore", None)
    filename = getattr(datastore, "_filename", None) or getattr(datastore, "filename", None)
    if isinstance(filename, str) and "://" not in filename:
        return (os.path.realpath(filename), getattr(value, "variable_name", None), repr(key))
    return None


def _check_resumable(group, store, ds, chunks, tokens) -> None:
    """Refuse to resume a store written from another computation, saying which part differs."""
    if _TOKEN not in group.attrs:
        raise ValueError(
            f"store {store!r} was not written by xccm.io.to_zarr, so it cannot be resumed; "
            "use mode='w' to overwrite it"
        )
    if _TOKENS not in group.attrs:
        raise ValueError(
            f"store {store!r} was started by an older version of xccm, whose progress records "
            "this version cannot resume; use mode='w' to start over"
        )
    for name, var in ds.variables.items():
        key = str(name)
        arr = _member(group, store, key)
        if arr is None or not hasattr(arr, "shape"):
            raise ValueError(f"store {store!r} has no variable {key!r} to resume; use mode='w'")
        if name in chunks and _member(group, store, f"{PROGRESS}/{key}") is None:
            raise ValueError(
                f"store {store!r} has no record of the chunks of variable {key!r} written; "
                "use mode='w' to start over"
            )
        c = chunks.get(name)
        if arr.shape != var.shape or (c is not None and tuple(arr.chunks) != c):
            raise ValueError(
                f"variable {key!r} in store {store!r} has shape {arr.shape} and chunks "
                f"{tuple(arr.chunks)}, but the data to write has shape {var.shape} and "
                f"chunks {c}. Rechunk to the store's chunks, e.g. obj.chunk("
                f"{dict(zip(var.dims, arr.chunks, strict=True))}), or use mode='w'."
            )
    try:
        then = json.loads(group.attrs[_TOKENS])
    except (TypeError, ValueError):
        then = {}
    differ = _differences(then, tokens, {str(k) for k in chunks})
    if differ:
        raise ValueError(
            f"store {store!r} was started from a different computation: "
            + "; ".join(differ)
            + " differ from the first run's, so finishing it would mix two results. Give "
            "the same inputs, attrs and encoding as the first run, or use mode='w' to start over"
        )


def _differences(then: dict, tokens: dict, lazy: set[str]) -> list[str]:
    """Say which parts of the computation differ between the tokens ``then`` and ``tokens``.

    A Dask-backed variable whose Dask name differs but whose structure does not is not
    listed here: its written chunks are recomputed instead (:func:`_check_samples`).
    """
    before = then.get("variables", {})
    differ = [
        f"variable {name!r} ("
        + ("its source or the computation on it" if name in lazy else "its values")
        + ")"
        for name, t in tokens["variables"].items()
        if before.get(name) != t
        and not (name in lazy and then.get("structure", {}).get(name) == tokens["structure"][name])
    ]
    gone = set(before) - set(tokens["variables"])
    differ += [f"variables {sorted(gone)} (not in obj)"] if gone else []
    return differ + [part for part in ("attrs", "encoding") if then.get(part) != tokens[part]]


def _version() -> dict[str, str]:
    try:
        return {"xccm_version": version("xccm")}
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return {}
