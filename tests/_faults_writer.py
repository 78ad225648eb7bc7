"""A writer that ``tests/test_io_faults.py`` runs in a child process and kills at an exact point.

:func:`run` (or ``python tests/_faults_writer.py STORE MODE FAULT [FSIZE]``) writes
:func:`dataset` to STORE with ``xccm.io.to_zarr(..., mode=MODE)`` and, by FAULT, SIGKILLs
itself:

- ``none``: not at all;
- ``chunk:N``: as the N-th chunk write starts (N-1 chunks written and recorded);
- ``record:N``: after the N-th chunk's data is written, before its record;
- ``rename:N``: after xccm wrote the N-th chunk file's temporary file, before renaming it;
- ``zarr-partial``: while zarr writes the first compressed chunk, once its ``.partial`` file
  is written (zarr's own atomic write, cut short);
- ``consolidate``: while the consolidated, marked root ``zarr.json`` is written, once its
  ``.partial`` is written;
- ``mark``: once every chunk is checked, before the consolidated, marked root is written;
- ``create``: after the root group is created, before any variable.

FSIZE, if given, is an ``RLIMIT_FSIZE`` in bytes (SIGXFSZ ignored, so a write past it fails
with EFBIG, as on a full disk). The hooks patch xccm and zarr in the child process only. An
exception is written to ``STORE.err`` and the child exits with status 1.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading

import dask
import numpy as np
import xarray as xr

import xccm.io

#: Chunks along time of each variable; "image" uncompressed (xccm writes its files), "zstd"
#: compressed (zarr writes them), an in-memory matrix per frame.
N_TIME = 8


def dataset() -> xr.Dataset:
    rng = np.random.default_rng(7)
    image = rng.random((N_TIME, 32, 32, 3), dtype=np.float32)
    ds = xr.Dataset(
        {
            "image": (("time", "y", "x", "channel"), image),
            "zstd": (("time", "y", "x", "channel"), image * 2),
            "ccm": (("time", "channel_in", "channel"), np.tile(np.eye(3), (N_TIME, 1, 1))),
        },
        coords={"time": np.arange(N_TIME) * 60.0, "channel": ["R", "G", "B"]},
        attrs={"site": "test"},
    )
    lazy = ds[["image", "zstd"]].chunk(time=1)
    return ds.assign(image=lazy.image, zstd=lazy.zstd)


ENCODING = {"image": {"compressors": None}}

#: The many-variable dataset: its Dask-backed variables in a few kinds (see ``xccm.io._kinds``),
#: so most of their metadata are copies of one xarray wrote.
N_MANY = 24


def many() -> xr.Dataset:
    rng = np.random.default_rng(11)
    data = {
        f"v{i}": (
            ("time", "y", "channel"),
            rng.random((2, 4, 3), dtype=np.float32 if i % 3 else np.float64),
            {"index": i, "scale": np.float32(i / 2)} if i % 2 else {"units": "1"},
        )
        for i in range(N_MANY)
    }
    ds = xr.Dataset(data, coords={"time": [0.0, 60.0]}, attrs={"site": "many"})
    return ds.chunk(time=1)


MANY_ENCODING = {f"v{i}": {"compressors": None} for i in range(0, N_MANY, 2)}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(fault: str) -> None:
    kind, _, n = fault.partition(":")
    count = {"n": 0}
    lock = threading.Lock()

    def nth() -> bool:
        with lock:
            count["n"] += 1
            return count["n"] == int(n)

    if kind == "chunk":
        setitem = xccm.io._ChunkWriter.__setitem__

        def killing_setitem(self, index, block):
            if nth():
                _die()
            setitem(self, index, block)

        xccm.io._ChunkWriter.__setitem__ = killing_setitem
    elif kind == "record":
        write_record = xccm.io._write_record

        def killing_record(progress, flat, record):
            if nth():
                _die()
            write_record(progress, flat, record)

        xccm.io._write_record = killing_record
    elif kind == "rename":
        replace = os.replace

        def killing_replace(src, dst):
            if str(src).endswith(xccm.io._TMP) and "xccm_progress" not in str(src) and nth():
                _die()
            replace(src, dst)

        xccm.io.os.replace = killing_replace
    elif kind in ("zarr-partial", "consolidate"):
        import zarr.storage._local as local

        atomic = local._atomic_write
        armed = {"on": kind == "zarr-partial"}

        def killing_atomic(path, mode, exclusive=False):
            wanted = path.name == "zarr.json" if kind == "consolidate" else "zstd" in str(path)
            if armed["on"] and wanted:
                tmp = path.with_suffix(f".{'e' * 32}.partial")
                tmp.write_bytes(b"{ cut short")
                _die()
            return atomic(path, mode, exclusive)

        local._atomic_write = killing_atomic
        if kind == "consolidate":
            write_root = xccm.io._write_root

            def armed_write_root(*args, **kwargs):
                armed["on"] = True
                return write_root(*args, **kwargs)

            xccm.io._write_root = armed_write_root
    elif kind == "mark":
        xccm.io._write_root = lambda *args, **kwargs: _die()
    elif kind == "create":
        xr.Dataset.to_zarr = lambda *args, **kwargs: _die()
    elif kind != "none":
        raise ValueError(f"unknown fault {fault!r}")


def run(
    store: str, mode: str, fault: str = "none", fsize: int | None = None, which: str = "one"
) -> None:
    """Write :func:`dataset` (or, ``which="many"``, :func:`many`) to ``store`` in this (child)
    process, with ``fault`` installed."""
    if fsize is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))
    _install(fault)
    try:
        with dask.config.set(scheduler="threads", num_workers=2):
            if which == "many":
                xccm.io.to_zarr(many(), store, mode=mode, encoding=MANY_ENCODING)
            else:
                xccm.io.to_zarr(dataset(), store, mode=mode, encoding=ENCODING)
    except Exception as e:
        if fsize is not None:  # room to report it
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)  # soft
        with open(f"{store}.err", "w") as f:
            f.write(f"{type(e).__name__}: {e}")
        os._exit(1)


if __name__ == "__main__":
    run(*sys.argv[1:4], *(int(a) for a in sys.argv[4:]))
