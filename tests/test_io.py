"""Store to store: lazy zarr/netCDF in, chunk-aligned zarr out, resume, completeness, clusters."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import time
import warnings
import zlib
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from _workers import slow
from dask.delayed import Delayed

import xccm
from conftest import raise_if_dask_computes
from xccm.io import COMPLETE, IncompleteStoreError, is_complete, open_zarr, to_zarr

zarr = pytest.importorskip("zarr", minversion="3")

MATRIX = np.array([[1.3, -0.2, 0.0], [-0.25, 1.2, -0.1], [0.0, -0.15, 1.25]])


def _stack(n_time=12, chunk=2) -> xr.Dataset:
    rng = np.random.default_rng(1)
    image = xr.DataArray(
        rng.random((n_time, 16, 20, 3), dtype=np.float32),
        dims=("time", "y", "x", "channel"),
        coords={"time": np.arange(n_time) * 60.0, "channel": ["R", "G", "B"]},
        attrs={"units": "1"},
    )
    return xr.Dataset({"image": image}, attrs={"site": "greenhouse 3"}).chunk(time=chunk)


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "source.zarr"
    _stack().to_zarr(path)
    return path


def _per_frame_matrix(ds: xr.Dataset) -> xr.DataArray:
    gains = xr.DataArray(1 + 0.01 * np.arange(ds.sizes["time"]), dims="time", coords=ds.time.coords)
    return (gains * xr.DataArray(MATRIX, dims=("channel_in", "channel"))).rename("ccm")


def _pipeline(source: Path) -> xr.Dataset:
    """What a user runs: open lazily, correct with per-frame matrices, keep the matrices."""
    ds = xr.open_zarr(source)
    m = _per_frame_matrix(ds)
    return ds.ccm.apply(m).assign(ccm=m)


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_zarr_to_zarr_is_lazy_chunk_aligned_and_complete(source, tmp_path):
    out = tmp_path / "out.zarr"
    with raise_if_dask_computes():
        corrected = _pipeline(source)
        write = to_zarr(corrected, out, compute=False, attrs={"source": str(source)})
    assert isinstance(write, Delayed)
    assert not is_complete(out)
    with pytest.raises(IncompleteStoreError, match="mode='resume'"):
        open_zarr(out)
    assert open_zarr(out, allow_incomplete=True).image.isnull().all()

    write.compute()
    assert is_complete(out)
    result = open_zarr(out)
    expected = xccm.apply(_stack().compute(), _per_frame_matrix(_stack()))
    xr.testing.assert_allclose(result.image.compute(), expected.image, rtol=1e-6)
    assert result.image.chunks == xr.open_zarr(source).image.chunks
    assert result.image.dtype == np.float32
    assert result.image.attrs == {"units": "1"}
    np.testing.assert_allclose(
        result["ccm"].transpose("time", ...).values, _per_frame_matrix(_stack()).values
    )
    assert result.attrs["site"] == "greenhouse 3"
    assert result.attrs["source"] == str(source)
    assert result.attrs[COMPLETE] == 1 and type(result.attrs[COMPLETE]) is int  # not a bool
    assert "consolidated_metadata" in (out / "zarr.json").read_text()


def test_netcdf_source_gives_chunks_aligned_to_the_file(tmp_path):
    pytest.importorskip("h5netcdf")
    nc = tmp_path / "source.nc"
    _stack().compute().to_netcdf(
        nc, engine="h5netcdf", encoding={"image": {"chunksizes": (3, 16, 20, 3)}}
    )
    ds = xr.open_dataset(nc, engine="h5netcdf", chunks={})
    assert ds.image.chunks[0] == (3, 3, 3, 3)
    out = tmp_path / "out.zarr"
    to_zarr(ds.ccm.apply(MATRIX), out)
    assert zarr.open_array(out, path="image").chunks == (3, 16, 20, 3)
    xr.testing.assert_allclose(
        open_zarr(out).image.compute(), xccm.apply(_stack().compute(), MATRIX).image, rtol=1e-6
    )


class _Flaky:
    """Fails on one frame until told not to: an interrupted run, reproducibly."""

    fail_at: int | None = None
    seen: list[int] = []  # noqa: RUF012

    @classmethod
    def block(cls, x, block_info=None):
        if block_info is None:  # Dask probing the output type, not computing
            return x
        cls.seen.append(block_info[0]["chunk-location"][0])
        if cls.seen[-1] == cls.fail_at:
            raise RuntimeError("interrupted")
        return x


def _flaky_pipeline(source: Path) -> xr.Dataset:
    corrected = _pipeline(source)
    image = corrected.image.copy(
        data=corrected.image.data.map_blocks(_Flaky.block, dtype=np.float32)
    )
    return corrected.assign(image=image)


def test_interrupted_write_resumes_only_missing_chunks(source, tmp_path):
    reference = tmp_path / "reference.zarr"
    to_zarr(_pipeline(source), reference, attrs={"run": 1})

    out = tmp_path / "out.zarr"
    _Flaky.fail_at, _Flaky.seen = 3, []
    # synchronous, so that no task of the failed run is still writing when we look
    with pytest.raises(RuntimeError, match="interrupted"), dask.config.set(scheduler="sync"):
        to_zarr(_flaky_pipeline(source), out, attrs={"run": 1})
    assert not is_complete(out)
    done = zarr.open_array(out, path="xccm_progress/image")[...].ravel() != 0  # per time chunk
    assert 0 < done.sum() < done.size and not done[3]
    with pytest.raises(FileExistsError, match="mode='resume'"):
        to_zarr(_flaky_pipeline(source), out, attrs={"run": 1})

    # A fresh process would rebuild the same pipeline from the same source: that resumes.
    _Flaky.fail_at, _Flaky.seen = None, []
    to_zarr(_flaky_pipeline(source), out, mode="resume", attrs={"run": 1})
    assert sorted(_Flaky.seen) == np.flatnonzero(~done).tolist()  # only chunks not yet written
    assert is_complete(out)
    mine, theirs = open_zarr(out).compute(), open_zarr(reference).compute()
    assert mine.attrs.pop("xccm_token") != theirs.attrs.pop("xccm_token")  # not the same graph
    assert mine.attrs.pop("xccm_tokens") != theirs.attrs.pop("xccm_tokens")
    xr.testing.assert_identical(mine, theirs)
    mine, theirs = _files(out), _files(reference)
    assert mine.keys() == theirs.keys()
    assert all(mine[k] == theirs[k] for k in mine if not k.startswith("zarr.json"))

    _Flaky.seen = []  # a complete store: resuming writes nothing
    to_zarr(_flaky_pipeline(source), out, mode="resume", attrs={"run": 1})
    assert _Flaky.seen == []


def test_resume_refuses_another_computation(source, tmp_path):
    out = tmp_path / "out.zarr"
    to_zarr(_pipeline(source), out, compute=False)
    other = xr.open_zarr(source).ccm.apply(MATRIX * 2)
    with pytest.raises(ValueError, match="different computation"):
        to_zarr(other, out, mode="resume")
    with pytest.raises(ValueError, match=r"chunks \(2, 16, 20, 3\).*obj.chunk\(\{'time': 2"):
        to_zarr(_pipeline(source).chunk(time=4), out, mode="resume")
    plain = tmp_path / "plain.zarr"
    _stack().to_zarr(plain)
    with pytest.raises(ValueError, match="not written by xccm"):
        to_zarr(_pipeline(source), plain, mode="resume")
    to_zarr(other, out, mode="w")  # overwriting is explicit
    assert is_complete(out)


def test_irregular_chunks_say_how_to_rechunk(source, tmp_path):
    ds = _pipeline(source).chunk(time=(3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"irregular chunks \(3, 3, 2, 4\) along dim 'time'"):
        to_zarr(ds, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()  # nothing half-written


def test_graph_grows_by_a_small_task_per_chunk(tmp_path):
    def graph(n_time):
        _stack(n_time, chunk=1).to_zarr(tmp_path / f"source{n_time}.zarr")
        ds = xr.open_zarr(tmp_path / f"source{n_time}.zarr")
        m = xr.DataArray(
            np.tile(MATRIX, (n_time, 1, 1)), dims=("time", "channel_in", "channel")
        ).chunk(time=1)
        write = to_zarr(ds.ccm.apply(m), tmp_path / f"{n_time}.zarr", compute=False)
        (optimized,) = dask.optimize(write)  # what the scheduler runs
        g = dict(optimized.__dask_graph__())
        return len(g), len(pickle.dumps(g))

    (n1, b1), (n2, b2) = graph(20), graph(40)
    per_chunk = (n2 - n1) / 20
    assert per_chunk <= 6  # read, matrix slice (2), apply fused with the write, alias
    assert (b2 - b1) / 20 < 4000  # bytes per chunk: no frame data or matrix stack per task


def test_dataarray_and_bad_arguments(tmp_path):
    img = _stack().image
    to_zarr(img.rename(None), tmp_path / "a.zarr")
    assert list(open_zarr(tmp_path / "a.zarr").data_vars) == ["image"]
    with pytest.raises(ValueError, match="unknown mode 'a'"):
        to_zarr(img, tmp_path / "b.zarr", mode="a")
    with pytest.raises(TypeError, match="Dataset or DataArray"):
        to_zarr(img.values, tmp_path / "c.zarr")
    assert not is_complete(tmp_path / "missing.zarr")


# ---------------------------------------------------------------------------------------------
# a cluster that loses a worker mid-write


def test_killed_worker_still_gives_an_identical_store(source, tmp_path):
    distributed = pytest.importorskip("distributed")
    reference = tmp_path / "reference.zarr"
    lazy = _pipeline(source).chunk(time=1)
    lazy = lazy.assign(
        image=lazy.image.copy(data=lazy.image.data.map_blocks(slow, dtype=np.float32))
    )
    to_zarr(lazy, reference, attrs={"source": "s"})

    out = tmp_path / "out.zarr"
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        future = client.compute(to_zarr(lazy, out, attrs={"source": "s"}, compute=False))
        progress = zarr.open_array(out, path="xccm_progress/image")

        def written():
            try:
                return (progress[...] != 0).sum()
            except ValueError:  # a record being written in place (not yet its 8 bytes)
                return 0

        deadline = time.monotonic() + 30
        while written() < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not future.done()
        pid = next(iter(client.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)
        future.result(timeout=120)
    assert is_complete(out)
    assert _files(out) == _files(reference)


def test_resume_with_chunks_along_two_dims(source, tmp_path):
    ds = xr.open_zarr(source).chunk(time=2, y=8).ccm.apply(MATRIX)
    out = tmp_path / "out.zarr"
    to_zarr(ds, out, compute=False)
    progress = zarr.open_array(out, path="xccm_progress/image")
    assert progress.shape == (12,)  # (6, 2) chunks along (time, y), C order
    # pretend an earlier run wrote a scattered subset of chunks
    written = np.zeros((6, 2, 1, 1), dtype=bool)
    written[[0, 1, 1, 4, 5], [0, 0, 1, 1, 0]] = True
    image = zarr.open_array(out, path="image")
    for t, y in zip(*np.nonzero(written[..., 0, 0]), strict=True):
        region = (slice(2 * t, 2 * t + 2), slice(8 * y, 8 * y + 8))
        image[region] = -1.0  # marks what resume must not rewrite
        progress[2 * t + y] = 1 << 32  # "written", checksum unknown
    to_zarr(ds, out, mode="resume")
    result = open_zarr(out).image.values
    expected = xccm.apply(_stack().image.compute(), MATRIX).values
    for t in range(6):
        for y in range(2):
            block = (slice(2 * t, 2 * t + 2), slice(8 * y, 8 * y + 8))
            if written[t, y, 0, 0]:
                assert (result[block] == -1.0).all()
            else:
                np.testing.assert_allclose(result[block], expected[block], rtol=1e-6)
    assert (zarr.open_array(out, path="xccm_progress/image")[...] != 0).all()


def test_rewrite_with_another_layout_in_the_same_process(tmp_path):
    out = tmp_path / "out.zarr"
    to_zarr(_stack(chunk=2).image, out)
    again = (_stack(chunk=3).image * 2).astype(np.float64)  # other chunks, other dtype
    stale = dict(xccm.io._arrays)  # what a long-lived worker still holds from the first write
    write = to_zarr(again, out, mode="w", compute=False)
    xccm.io._arrays.update(stale)
    write.compute()  # arrays opened for the first store must not be written through
    assert zarr.open_array(out, path="image").chunks == (3, 16, 20, 3)
    xr.testing.assert_allclose(open_zarr(out).image.compute(), again.compute())


def test_encoding_of_lazy_variables_is_codecs_only(tmp_path):
    with pytest.raises(ValueError, match=r"may only set codecs.*\['dtype', 'scale_factor'\]"):
        to_zarr(
            _stack().image,
            tmp_path / "out.zarr",
            encoding={"image": {"dtype": "int16", "scale_factor": 0.001}},
        )
    assert not (tmp_path / "out.zarr").exists()
    to_zarr(_stack().image, tmp_path / "ok.zarr", encoding={"image": {"compressors": None}})
    xr.testing.assert_allclose(open_zarr(tmp_path / "ok.zarr").image.compute(), _stack().image)


def test_scalar_and_empty_dask_variables(tmp_path):
    import dask.array as da

    ds = xr.Dataset(
        {
            "scale": ((), da.from_array(np.float32(3.0))),
            "empty": (("u", "c"), da.ones((0, 3), chunks=(1, 3))),
            "image": (("t", "c"), da.ones((4, 3), chunks=(1, 3))),
        }
    )
    path = tmp_path / "s.zarr"
    to_zarr(ds, path)
    back = open_zarr(path)
    assert float(back["scale"]) == 3.0 and back["empty"].shape == (0, 3)
    assert is_complete(path)
    to_zarr(ds, path, mode="resume")  # nothing left to write
    assert is_complete(path)


def test_resume_after_an_interrupted_creation_says_so(tmp_path):
    import shutil

    img = xr.DataArray(np.ones((4, 3)), dims=("t", "c"), name="image").chunk(t=1)
    path = tmp_path / "c.zarr"
    to_zarr(img, path, compute=False)
    shutil.rmtree(path / "xccm_progress")  # as if killed while creating the store
    with pytest.raises(ValueError, match=r"no record of the chunks.*mode='w'"):
        to_zarr(img, path, mode="resume")


def test_progress_bar_needs_compute(tmp_path):
    img = xr.DataArray(np.ones((4, 3)), dims=("t", "c"), name="image").chunk(t=1)
    with pytest.raises(ValueError, match="ProgressBar"):
        to_zarr(img, tmp_path / "p.zarr", compute=False, progress=True)
    assert not (tmp_path / "p.zarr").exists()


def test_progress_markers_are_one_byte_chunk_files_zarr_reads(tmp_path):
    import zarr

    img = xr.DataArray(np.ones((4, 3)), dims=("t", "c"), name="image").chunk(t=1)
    out = tmp_path / "m.zarr"
    to_zarr(img, out)
    progress = zarr.open_array(out, path="xccm_progress/image")
    assert (progress[...] >> 32 == 1).all()  # written, and the chunk's CRC-32 below
    record = (out / "xccm_progress" / "image" / "c" / "2").read_bytes()
    assert record == np.uint64((1 << 32) | zlib.crc32(np.ones(3).tobytes())).tobytes()
    assert not list((out / "xccm_progress" / "image" / "c").rglob("*.xccm-tmp"))


def test_a_store_of_an_older_xccm_is_not_resumed_but_still_opens(tmp_path):
    img = xr.DataArray(np.arange(12.0).reshape(4, 3), dims=("t", "c"), name="image")
    img = img.chunk(t=1)
    out = tmp_path / "old.zarr"
    to_zarr(img, out)
    group = zarr.open_group(out, mode="r+", use_consolidated=False)
    for key in ("xccm_tokens", "xccm_arrays"):  # what an older xccm did not write
        del group.attrs[key]
    with pytest.raises(ValueError, match=r"older version of xccm.*mode='w'"):
        to_zarr(img, out, mode="resume")
    assert is_complete(out)
    np.testing.assert_array_equal(open_zarr(out)["image"].values, img.values)


def test_a_marker_left_half_written_is_cleared_at_completion(tmp_path):
    img = xr.DataArray(np.ones((4, 3)), dims=("t", "c"), name="image").chunk(t=1)
    out = tmp_path / "t.zarr"
    to_zarr(img, out, compute=False)
    stray = out / "xccm_progress" / "image" / "c" / "1.0123abcd.xccm-tmp"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"\x01")  # a worker killed between writing a marker and renaming it
    to_zarr(img, out, mode="resume")
    assert is_complete(out) and not stray.exists()


def _count_direct_writes(monkeypatch) -> dict[str, int]:
    """Count the chunk files :mod:`xccm.io` writes itself, by array path."""
    import threading

    import xccm.io

    calls: dict[str, int] = {}
    lock = threading.Lock()
    write = xccm.io._write_chunk_file

    def counted(arr, *args):
        with lock:
            calls[arr.path] = calls.get(arr.path, 0) + 1
        write(arr, *args)

    monkeypatch.setattr(xccm.io, "_write_chunk_file", counted)
    return calls


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "uint8", "complex64", "bool"])
def test_uncompressed_chunks_written_directly_equal_zarrs_own(tmp_path, monkeypatch, dtype):
    # Whole chunks of uncompressed variables skip zarr's writer; their files must be the
    # bytes zarr itself writes (the partial edge chunk still goes through zarr).
    # A chunk that is all fill value is not written, as zarr does by default.
    direct = _count_direct_writes(monkeypatch)
    rng = np.random.default_rng(2)
    data = (rng.random((7, 4, 3)) * 100 + 1).astype(dtype)
    data[2:4] = np.nan if data.dtype.kind == "f" else 0  # xarray's fill values
    ds = xr.Dataset({"v": (("t", "y", "c"), data)}).chunk(t=2)
    enc = {"v": {"compressors": None}}
    ours, theirs = tmp_path / "ours.zarr", tmp_path / "theirs.zarr"
    to_zarr(ds, ours, encoding=enc)
    ds.to_zarr(theirs, encoding=enc)
    chunk_files = _files(theirs / "v" / "c")
    assert sorted(chunk_files) == ["0/0/0", "2/0/0", "3/0/0"]
    assert _files(ours / "v" / "c") == chunk_files
    assert direct == {"v": 3}  # the records are written in place, not by this function
    np.testing.assert_array_equal(open_zarr(ours)["v"].values, data)


def test_blocks_zarr_must_convert_go_through_zarr(tmp_path, monkeypatch):
    # A big-endian block (zarr swaps its bytes) and a compressed variable take zarr's writer.
    direct = _count_direct_writes(monkeypatch)
    data = np.arange(24.0).reshape(4, 2, 3)
    ds = xr.Dataset(
        {"be": (("t", "y", "c"), data.astype(">f8")), "zstd": (("t", "y", "c"), data)}
    ).chunk(t=1)
    out = tmp_path / "o.zarr"
    to_zarr(ds, out, encoding={"be": {"compressors": None}})
    back = open_zarr(out)
    np.testing.assert_array_equal(back["be"].values, data)
    np.testing.assert_array_equal(back["zstd"].values, data)
    assert (out / "zstd" / "c" / "0" / "0" / "0").read_bytes() != data[0].tobytes()
    assert not direct


def test_a_chunk_file_left_half_written_is_cleared_at_completion(tmp_path):
    img = xr.DataArray(np.ones((4, 3)), dims=("t", "c"), name="image").chunk(t=1)
    out = tmp_path / "t.zarr"
    to_zarr(img, out, compute=False, encoding={"image": {"compressors": None}})
    stray = out / "image" / "c" / "1" / "0.0123abcd.xccm-tmp"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"\x00" * 5)  # a worker killed while writing a chunk file
    to_zarr(img, out, mode="resume", encoding={"image": {"compressors": None}})
    assert is_complete(out) and not stray.exists()
    np.testing.assert_array_equal(open_zarr(out)["image"].values, img.values)


def test_fsspec_urls_are_written_through_zarr(tmp_path, monkeypatch):
    # Also a chained URL without "://": zarr hands both to fsspec, and so must xccm.
    import fsspec

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fsspec.filesystem("memory"), "store", {})  # an empty filesystem
    direct = _count_direct_writes(monkeypatch)
    ds = xr.Dataset({"v": (("t", "c"), np.arange(12.0).reshape(4, 3))}).chunk(t=1)
    for url in ("memory::/b.zarr", "memory://xccm-test/a.zarr"):  # zarr roots the first at "/"
        to_zarr(ds, url, encoding={"v": {"compressors": None}})
        assert is_complete(url)
        np.testing.assert_array_equal(open_zarr(url)["v"].values, ds["v"].values)
    assert not direct and not list(tmp_path.iterdir())


def test_overwriting_with_other_codecs_in_one_process(tmp_path):
    ds = xr.Dataset({"v": (("t", "c"), np.arange(12.0).reshape(4, 3))}).chunk(t=1)
    out = tmp_path / "o.zarr"
    for enc in (None, {"v": {"compressors": None}}, None):
        to_zarr(ds, out, mode="w", encoding=enc)
        np.testing.assert_array_equal(open_zarr(out)["v"].values, ds["v"].values)


def test_completion_cleans_only_inside_the_store(tmp_path):
    # A name that would reach outside the store is refused before anything is written.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "x.0123abcd.xccm-tmp").write_bytes(b"keep")
    (victim / "y.tmp").write_bytes(b"keep")
    ds = xr.Dataset({f"/{victim}": (("t",), np.arange(4.0))}).chunk(t=2)
    with pytest.raises(ValueError, match="nested group"):
        to_zarr(ds, tmp_path / "o.zarr", encoding={f"/{victim}": {"compressors": None}})
    assert sorted(p.name for p in victim.iterdir()) == ["x.0123abcd.xccm-tmp", "y.tmp"]
    assert not (tmp_path / "o.zarr").exists()


# ---------------------------------------------------------------------------------------------
# a creation that fails, completeness as an integer, the resume message


def test_an_attr_zarr_cannot_store_is_refused_before_the_store_is_created(tmp_path):
    img = xr.DataArray(np.ones((4, 3)), dims=("t", "c"), name="image").chunk(t=1)
    path = tmp_path / "a.zarr"
    with pytest.raises(TypeError, match=r"attrs\['created'\] is a numpy.datetime64.*str\(value\)"):
        to_zarr(img, path, attrs={"created": np.datetime64("2026-06-01")})
    with pytest.raises(TypeError, match=r"obj.attrs\['tags'\] is a set"):
        to_zarr(img.to_dataset().assign_attrs(tags={"a"}), path)
    with pytest.raises(TypeError, match=r"attrs\['raw'\] of variable 'image' is a bytes"):
        to_zarr(img.assign_attrs(raw=b"\x00"), path)
    with pytest.raises(TypeError, match=r"attrs\['when'\] of variable 'c' is a numpy.ndarray"):
        to_zarr(img.assign_coords(c=("c", [1, 2, 3], {"when": np.zeros(2, "M8[s]")})), path)
    with pytest.raises(TypeError, match=r"attrs\['gains'\] is a list holding a numpy.float32"):
        to_zarr(img, path, attrs={"gains": [1.0, np.float32(2)]})
    assert not path.exists()

    # what xarray's zarr backend stores today is still accepted
    fine = {
        "n": 3, "x": 0.5, "nan": float("nan"), "flag": True, "none": None, "text": "a",
        "f32": np.float32(1.5), "i64": np.int64(2), "b": np.bool_(True), "s": np.str_("s"),
        "arr": np.arange(3), "strs": np.array(["a", "b"], object), "list": [1, "a", 2.0],
        "floats": [np.float64(1.0)], "tuple": (1, 2), "dict": {"a": [1, 2]},
    }  # fmt: skip
    to_zarr(img.assign_attrs(fine), path, attrs=fine)
    back = open_zarr(path)
    assert back.attrs["f32"] == 1.5 and back.attrs["arr"] == [0, 1, 2]
    assert back["image"].attrs["dict"] == {"a": [1, 2]} and np.isnan(back.attrs["nan"])


@pytest.mark.parametrize("mode", ["w-", "w", "resume"])
def test_a_failed_creation_leaves_no_store(tmp_path, monkeypatch, mode):
    img = xr.DataArray(np.ones((4, 3)), dims=("t", "c"), name="image").chunk(t=1)
    ds = img.to_dataset().assign(ccm=(("c",), np.ones(3)))
    path = tmp_path / "a.zarr"
    # xarray rejects this once the group and its attrs are written
    with pytest.raises(ValueError, match="unexpected encoding"):
        to_zarr(ds, path, mode=mode, encoding={"ccm": {"bogus": 1}})
    assert not path.exists()
    assert not is_complete(path)
    assert not list(tmp_path.iterdir())  # nor a store beside it

    # any failure: here the value the check above would refuse, as xarray meets it
    monkeypatch.setattr(xccm.io, "_check_attrs", lambda ds, attrs: None)
    with pytest.raises(TypeError, match="Invalid attribute"):
        to_zarr(img, path, mode=mode, attrs={"created": np.datetime64("2026-06-01")})
    assert not path.exists()


def test_a_failed_creation_in_a_remote_store_leaves_none(tmp_path, monkeypatch):
    import fsspec

    memory = fsspec.filesystem("memory")
    monkeypatch.setattr(memory, "store", {})
    monkeypatch.setattr(memory, "pseudo_dirs", [""])
    ds = xr.Dataset({"v": (("t", "c"), np.ones((4, 3)))}, coords={"c": ["R", "G", "B"]})
    ds = ds.chunk(t=1)
    url = "memory://xccm-test/f.zarr"
    with pytest.raises(ValueError, match="unexpected encoding"):
        to_zarr(ds, url, encoding={"v": {"compressors": None}, "c": {"bogus": 1}})
    assert not memory.store and not is_complete(url)
    to_zarr(ds, url)  # nothing left behind: "w-" creates it
    assert is_complete(url)


def test_a_store_that_cannot_be_removed_stays_incomplete(tmp_path, monkeypatch):
    async def refuse(self, prefix):
        raise NotImplementedError("no deletes here")

    monkeypatch.setattr(zarr.storage.LocalStore, "delete_dir", refuse)
    img = xr.DataArray(np.ones((4, 3)), dims=("t", "c"), coords={"c": [1, 2, 3]}, name="image")
    path = tmp_path / "a.zarr"
    with (
        pytest.raises(ValueError, match="unexpected encoding"),
        pytest.warns(RuntimeWarning, match=r"could not remove store .*marked incomplete"),
    ):
        to_zarr(img.chunk(t=1), path, encoding={"c": {"bogus": 1}})
    assert path.exists() and not is_complete(path)
    with pytest.raises(IncompleteStoreError):
        open_zarr(path)


def test_a_creation_cut_short_is_incomplete_from_the_start(tmp_path, monkeypatch):
    # A process killed while creating the store leaves it as created so far, never complete.
    img = xr.DataArray(np.ones((4, 3)), dims=("t", "c"), name="image").chunk(t=1)
    path = tmp_path / "k.zarr"

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(xccm.io, "_fill", killed)
    monkeypatch.setattr(xccm.io, "_remove", lambda root, store: None)  # no time to clean up
    with pytest.raises(KeyboardInterrupt):
        to_zarr(img, path)
    monkeypatch.undo()
    assert not is_complete(path)
    to_zarr(img, path, mode="resume")  # nothing was written yet: it creates the store again
    assert is_complete(path)


def test_stores_save_to_netcdf_with_h5netcdf(source, tmp_path):
    pytest.importorskip("h5netcdf")
    out, nc = tmp_path / "out.zarr", tmp_path / "out.nc"
    to_zarr(_pipeline(source), out, attrs={"source": str(source)})
    written = open_zarr(out)
    assert written.attrs[COMPLETE] == 1
    written.to_netcdf(nc, engine="h5netcdf")
    with xr.open_dataset(nc, engine="h5netcdf") as back:
        assert back.attrs[COMPLETE] == 1 and back.attrs["source"] == str(source)
        xr.testing.assert_allclose(back.image, written.image.compute())


@pytest.mark.parametrize("flag", [False, True])
def test_stores_of_earlier_versions_mark_completeness_with_a_bool(tmp_path, flag):
    img = xr.DataArray(np.ones((4, 3)), dims=("t", "c"), name="image").chunk(t=1)
    path = tmp_path / "old.zarr"
    to_zarr(img, path)
    zarr.open_group(path, mode="r+").attrs[COMPLETE] = flag
    assert is_complete(path) is flag
    if not flag:
        with pytest.raises(IncompleteStoreError):
            open_zarr(path)
    else:
        np.testing.assert_array_equal(open_zarr(path)["image"].values, img.values)


@pytest.mark.parametrize(
    "spelling",
    ["path", "dot", "slash", "relative", "dotdot"],
)
def test_resume_does_not_depend_on_how_the_source_path_is_spelled(
    source, tmp_path, monkeypatch, spelling
):
    reference, out = tmp_path / "reference.zarr", tmp_path / "out.zarr"
    to_zarr(_pipeline(str(source)), reference)
    with pytest.raises(RuntimeError, match="interrupted"), dask.config.set(scheduler="sync"):
        _Flaky.fail_at, _Flaky.seen = 3, []
        to_zarr(_flaky_pipeline(str(source)), out)
    _Flaky.fail_at = None
    monkeypatch.chdir(tmp_path)
    respelled = {
        "path": source,  # a Path, not a str: xarray then names the tasks without the mtime
        "dot": f"{source.parent}/./{source.name}",
        "slash": f"{source}/",
        "relative": source.name,
        "dotdot": f"../{tmp_path.name}/{source.name}",
    }[spelling]
    to_zarr(_flaky_pipeline(respelled), out, mode="resume")
    assert is_complete(out, verify="checksum")
    mine, theirs = _files(out), _files(reference)  # the root's tokens: another pipeline
    assert mine.keys() == theirs.keys()
    assert all(mine[k] == theirs[k] for k in mine if k != "zarr.json")


def test_a_refused_resume_says_which_part_differs(source, tmp_path):
    out = tmp_path / "out.zarr"
    first = _flaky_pipeline(source)
    with pytest.raises(RuntimeError, match="interrupted"), dask.config.set(scheduler="sync"):
        _Flaky.fail_at, _Flaky.seen = 3, []
        to_zarr(_flaky_pipeline(source), out, attrs={"run": 1})
    _Flaky.fail_at = None

    def refused(obj, match, **kwargs):
        kwargs = {"attrs": {"run": 1}, **kwargs}
        with pytest.raises(ValueError, match=match):
            to_zarr(obj, out, mode="resume", **kwargs)

    m = _per_frame_matrix(xr.open_zarr(source))
    refused(first.assign(image=first.image * 2, ccm=m * 2),
            r"different computation: variable 'image' \(its source or the computation on it\); "
            r"variable 'ccm' \(its values\) differ")  # fmt: skip
    refused(first.assign(ccm=m * 2), r"computation: variable 'ccm' \(its values\) differ")
    refused(first, r"computation: attrs differ", attrs={"run": 2})
    refused(first, r"computation: encoding differ", encoding={"image": {"compressors": None}})
    flaky = _flaky_pipeline(source)
    refused(flaky.assign(image=flaky.image * 2), r"computation: variable 'image' \(its source")
    to_zarr(_flaky_pipeline(f"{source}/"), out, mode="resume", attrs={"run": 1})
    assert is_complete(out)


def test_a_resume_whose_task_names_differ_recomputes_written_chunks(source, tmp_path):
    # Same source, same kinds of layers, another constant inside a layer: only the values
    # tell, so the first and last chunks written are computed again and compared.
    out = tmp_path / "out.zarr"
    first = _flaky_pipeline(source)
    with pytest.raises(RuntimeError, match="interrupted"), dask.config.set(scheduler="sync"):
        _Flaky.fail_at, _Flaky.seen = 3, []
        to_zarr(first.assign(image=first.image * 2), out)
    _Flaky.fail_at = None
    again = _flaky_pipeline(f"{source}/")  # another spelling: other Dask names
    with pytest.raises(ValueError, match=r"'image' .*: chunk \[\d, 0, 0, 0\] computed now differs"):
        to_zarr(again.assign(image=again.image * 3), out, mode="resume")
    to_zarr(again.assign(image=again.image * 2), out, mode="resume")
    expected = 2 * xccm.apply(_stack().compute(), _per_frame_matrix(_stack())).image
    xr.testing.assert_allclose(open_zarr(out).image.compute(), expected, rtol=1e-6)


def test_small_in_memory_variables_are_one_chunk(tmp_path):
    # 100 000 frames' matrices (9.6 MB): zarr's automatic chunks would split them.
    m = xr.DataArray(
        np.random.default_rng(0).random((100_000, 4, 3)), dims=("time", "channel_in", "channel")
    )
    img = xr.DataArray(np.ones((100_000, 2, 3), np.float32), dims=("time", "x", "channel"))
    ds = xr.Dataset({"image": img.chunk(time=50_000), "ccm": m})
    to_zarr(ds, tmp_path / "o.zarr")
    back = open_zarr(tmp_path / "o.zarr")
    assert back["ccm"].data.numblocks == (1, 1, 1)
    assert back["image"].chunks[0] == (50_000, 50_000)
    np.testing.assert_array_equal(back["ccm"].values, m.values)


# ---------------------------------------------------------------------------------------------
# arguments checked before anything is created or replaced (issue 12 §1.3, §1.5, §3)


def _small(name="image") -> xr.Dataset:
    img = xr.DataArray(np.arange(12.0).reshape(4, 3), dims=("t", "c"), name=name)
    return img.chunk(t=1).to_dataset().assign(ccm=(("c",), np.ones(3)))


def test_mode_w_checks_everything_before_replacing_the_old_store(tmp_path):
    path = tmp_path / "s.zarr"
    to_zarr(_small(), path)
    before = _files(path)

    def refused(exc, match, **kwargs):
        with pytest.raises(exc, match=match):
            to_zarr(_small() * 2, path, mode="w", **kwargs)
        assert _files(path) == before and is_complete(path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # nothing beside it

    refused(ValueError, r"encoding names variable 'imgae'.*\['ccm', 'image'\]",
            encoding={"imgae": {"compressors": None}})  # fmt: skip
    refused(TypeError, r"encoding\['image'\]\['compressors'\] holds the string 'zstd'",
            encoding={"image": {"compressors": "zstd"}})  # fmt: skip
    refused(TypeError, r"encoding\['image'\] must be a mapping", encoding={"image": None})
    refused(TypeError, "attrs must be a mapping", attrs=[("a", 1)])
    refused(TypeError, r"attrs\[1\]: attribute names must be strings", attrs={1: "a"})
    refused(TypeError, r"attrs\['t'\] is a numpy.datetime64", attrs={"t": np.datetime64(1, "s")})
    refused(ValueError, "unexpected encoding", encoding={"ccm": {"bogus": 1}})  # found by xarray
    np.testing.assert_array_equal(open_zarr(path)["image"].values, _small()["image"].values)
    to_zarr(_small() * 2, path, mode="w")  # a valid overwrite replaces it
    np.testing.assert_array_equal(open_zarr(path)["image"].values, 2 * _small()["image"].values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_a_codec_zarr_refuses_is_named_before_anything_is_written(tmp_path):
    bad = {"image": {"compressors": {"name": "no-such-codec"}}}
    with pytest.raises(ValueError, match=r"encoding\['image'\] is not a zarr encoding"):
        to_zarr(_small(), tmp_path / "s.zarr", encoding=bad)
    assert not (tmp_path / "s.zarr").exists()
    ok = {"image": {"compressors": {"name": "zstd", "configuration": {"level": 1}}}}
    to_zarr(_small(), tmp_path / "s.zarr", encoding=ok)
    assert is_complete(tmp_path / "s.zarr")


@pytest.mark.parametrize(
    ("name", "exc", "match"),
    [
        ("cam/image", ValueError, "nested group, invisible to open_zarr"),
        ("..", ValueError, "cannot name a zarr array"),
        (".", ValueError, "cannot name a zarr array"),
        ("", ValueError, "cannot name a zarr array"),
        ("__meta", ValueError, "reserved by zarr"),
        ("xccm_progress", ValueError, "where xccm records the chunks"),
        (0, TypeError, "variable name 0 is a int"),
        (("a", 1), TypeError, r"variable name \('a', 1\) is a tuple"),
    ],
)
def test_names_zarr_cannot_hold_are_refused_before_anything_is_created(tmp_path, name, exc, match):
    ds = xr.Dataset({name: (("t", "c"), np.ones((4, 3)))}).chunk(t=1)
    with pytest.raises(exc, match=match):
        to_zarr(ds, tmp_path / "s.zarr")
    coord = xr.Dataset({"v": (("t",), np.ones(4))}, coords={name: ("t", np.arange(4))})
    with pytest.raises(exc, match=match):  # a coordinate's name too
        to_zarr(coord.chunk(t=1), tmp_path / "s.zarr")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage", [b"", b'{"zarr_format": 3, "node_t', b"\x00\xff garbage"])
def test_damaged_metadata_is_named_not_a_json_error(tmp_path, damage):
    path = tmp_path / "s.zarr"
    to_zarr(_small(), path)
    (path / "zarr.json").write_bytes(damage)
    match = r"metadata of store .* is damaged \(.*zarr.json is not valid JSON\).*mode='w'"
    with pytest.raises(xccm.io.DamagedStoreError, match=match):
        open_zarr(path)
    with pytest.raises(xccm.io.DamagedStoreError, match=match):
        is_complete(path)
    with pytest.raises(xccm.io.DamagedStoreError, match=match):
        to_zarr(_small(), path, mode="resume")
    to_zarr(_small(), path, mode="w")  # what the message says to do
    assert is_complete(path)


def test_damaged_metadata_of_a_variable_is_named(tmp_path):
    path = tmp_path / "s.zarr"
    to_zarr(_small(), path)
    (path / "image" / "zarr.json").write_bytes(b'{"zarr_format": 3, "sha')
    match = r"damaged \(.*image/zarr.json is not valid JSON\)"
    with pytest.raises(xccm.io.DamagedStoreError, match=match):
        is_complete(path)
    with pytest.raises(xccm.io.DamagedStoreError, match=match):
        open_zarr(path)
    with pytest.raises(xccm.io.DamagedStoreError, match=match):
        to_zarr(_small(), path, mode="resume")
    assert issubclass(xccm.io.DamagedStoreError, ValueError)


# ---------------------------------------------------------------------------------------------
# completion verifies what it marks (issue 12 §1.1, §1.2, §1.4, §1.6)


def _chunk_file(path: Path, name: str, t: int) -> Path:
    return path / name / "c" / str(t) / "0"


def test_a_recorded_chunk_that_is_missing_is_written_again_on_resume(tmp_path):
    path = tmp_path / "s.zarr"
    to_zarr(_small(), path)
    reference = _files(path)
    _chunk_file(path, "image", 2).unlink()  # its record stays
    assert is_complete(path)  # the marker alone: fast
    assert not is_complete(path, verify="exists")
    with pytest.raises(IncompleteStoreError, match=r"chunks \[\[2, 0\]\] of 'image' are missing"):
        open_zarr(path, verify="exists")
    to_zarr(_small(), path, mode="resume")
    assert _files(path) == reference
    assert is_complete(path, verify="checksum")


def test_completion_is_refused_while_a_recorded_chunk_is_missing(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    listing = xccm.io._list_clean

    def lose_a_chunk(local):  # runs as completion starts, once every chunk is written
        _chunk_file(path, "image", 1).unlink(missing_ok=True)
        return listing(local)

    monkeypatch.setattr(xccm.io, "_list_clean", lose_a_chunk)
    with pytest.raises(IncompleteStoreError, match=r"not marked complete: chunks \[\[1, 0\]\]"):
        to_zarr(_small(), path)
    monkeypatch.undo()
    assert not is_complete(path)
    assert zarr.open_array(path, path="xccm_progress/image")[1] == 0  # record dropped
    to_zarr(_small(), path, mode="resume", verify=False)  # rewritten even when trusting records
    assert is_complete(path, verify="checksum")
    np.testing.assert_array_equal(open_zarr(path)["image"].values, _small()["image"].values)


def test_verify_checksum_finds_a_chunk_changed_in_place(tmp_path):
    path = tmp_path / "s.zarr"
    enc = {"image": {"compressors": None}}
    to_zarr(_small(), path, encoding=enc)
    chunk = _chunk_file(path, "image", 3)
    good = chunk.read_bytes()
    chunk.write_bytes(np.full(3, -1.0).tobytes())  # same size, other values
    assert is_complete(path, verify="exists")
    assert not is_complete(path, verify="checksum")
    with pytest.raises(IncompleteStoreError, match=r"\[\[3, 0\]\] of 'image' are missing or not"):
        open_zarr(path, verify="checksum")
    to_zarr(_small(), path, mode="resume", encoding=enc)  # "exists": the records are trusted
    assert chunk.read_bytes() != good
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    group.attrs[COMPLETE] = 0  # let resume look again, with checksums
    to_zarr(_small(), path, mode="resume", encoding=enc, verify="checksum")
    assert chunk.read_bytes() == good and is_complete(path, verify="checksum")


def test_verify_is_checked(tmp_path):
    for bad in (True, "crc", None, 1):
        with pytest.raises(ValueError, match="verify must be False, 'exists' or 'checksum'"):
            to_zarr(_small(), tmp_path / "s.zarr", verify=bad)
        with pytest.raises(ValueError, match="verify must be"):
            is_complete(tmp_path / "s.zarr", verify=bad)
    assert not (tmp_path / "s.zarr").exists()


def test_chunks_of_fill_values_are_recorded_and_verified_without_an_object(tmp_path):
    ds = _small()
    ds["image"] = ds["image"].where(ds.t != 1)  # chunk 1 all NaN: zarr writes no object
    path = tmp_path / "s.zarr"
    to_zarr(ds, path)
    assert not _chunk_file(path, "image", 1).exists()
    assert zarr.open_array(path, path="xccm_progress/image")[1] >> 32 == 2
    assert is_complete(path, verify="checksum")


def test_a_store_appended_to_by_another_writer_is_no_longer_complete(tmp_path):
    path = tmp_path / "s.zarr"
    to_zarr(_small(), path)
    more = _small().isel(t=slice(0, 2)).drop_vars("ccm")
    more.to_zarr(path, mode="a", append_dim="t")  # plain xarray: new frames, no record
    assert not is_complete(path)  # xarray replaced the root attrs, the marker with them
    with pytest.raises(IncompleteStoreError, match=r"progress records but not its completion"):
        open_zarr(path)
    assert open_zarr(path, allow_incomplete=True)["image"].shape == (6, 3)

    to_zarr(_small(), path, mode="w")  # frames carrying the store's own attrs, marker included
    more = open_zarr(path).isel(t=slice(0, 2)).drop_vars("ccm")
    more.to_zarr(path, mode="a", append_dim="t")
    assert not is_complete(path)
    with pytest.raises(
        IncompleteStoreError,
        match=r"changed after xccm.io.to_zarr completed it \(variable 'image' changed "
        r"\(shape \(4, 3\) -> \(6, 3\)\)\).*mode='append'",
    ):
        open_zarr(path)


def test_a_variable_added_or_removed_after_completion_is_a_change(tmp_path):
    path = tmp_path / "s.zarr"
    to_zarr(_small(), path)
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    group.create_array("extra", shape=(4,), dtype="f8")  # attrs kept, a variable more
    with pytest.raises(IncompleteStoreError, match="variable 'extra' was added"):
        open_zarr(path)
    to_zarr(_small(), path, mode="w")
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    del group["ccm"]
    assert not is_complete(path)
    with pytest.raises(IncompleteStoreError, match="variable 'ccm' was removed"):
        open_zarr(path)


def test_a_creation_killed_before_the_in_memory_variables_resumes_with_all_of_them(
    tmp_path, monkeypatch
):
    ds = _small().assign(loss=("t", np.arange(4.0)))
    path = tmp_path / "k.zarr"

    def killed(self, *args, **kwargs):  # after the root group, before any variable
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_zarr", killed)
    monkeypatch.setattr(xccm.io, "_remove", lambda root, store: None)  # no time to clean up
    with pytest.raises(KeyboardInterrupt):
        to_zarr(ds, path)
    monkeypatch.undo()
    assert (path / "zarr.json").exists() and not is_complete(path)
    to_zarr(ds, path, mode="resume")
    back = open_zarr(path)
    assert sorted(back.data_vars) == ["ccm", "image", "loss"]
    xr.testing.assert_identical(back.compute().drop_attrs(), ds.compute().drop_attrs())


def test_completion_accounts_for_every_variable(tmp_path):
    path = tmp_path / "s.zarr"
    write = to_zarr(_small(), path, compute=False)
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    del group["ccm"]  # an in-memory variable lost after creation
    with pytest.raises(IncompleteStoreError, match="variable 'ccm' is missing"):
        write.compute()
    assert not is_complete(path)


def test_leftover_partial_files_of_zarr_are_removed_on_resume(tmp_path):
    path, reference = tmp_path / "s.zarr", tmp_path / "r.zarr"
    to_zarr(_small(), reference)
    to_zarr(_small(), path, compute=False)
    strays = [
        path / "image" / "c" / "1" / f"0.{'a' * 32}.partial",  # a compressed chunk, cut short
        path / f"zarr.{'b' * 32}.partial",  # consolidating, cut short
        path / "ccm" / f"zarr.{'c' * 32}.partial",
    ]
    for stray in strays:
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"{")
    to_zarr(_small(), path, mode="resume")
    assert not any(s.exists() for s in strays)
    assert _files(path) == _files(reference)


def test_resume_creates_a_store_of_which_only_partial_root_metadata_exists(tmp_path):
    path = tmp_path / "s.zarr"
    path.mkdir()
    (path / f"zarr.{'d' * 32}.partial").write_bytes(b'{"zarr_')  # killed creating the root
    with pytest.raises(FileExistsError):  # "w-" does not touch what is there
        to_zarr(_small(), path)
    to_zarr(_small(), path, mode="resume")
    assert is_complete(path, verify="checksum")
    assert not list(path.glob("*.partial"))


def test_resume_leaves_a_folder_holding_other_files_alone(tmp_path):
    path = tmp_path / "s.zarr"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already contains data"):  # zarr's own error
        to_zarr(_small(), path, mode="resume")
    assert (path / "notes.txt").read_text() == "mine"


def test_a_garbage_progress_record_is_named_and_its_chunk_written_again(tmp_path):
    path = tmp_path / "s.zarr"
    to_zarr(_small(), path, compute=False)
    image = zarr.open_array(path, path="image")
    image[1:2] = -1.0  # what resume must write again
    record = path / "xccm_progress" / "image" / "c" / "1"
    record.parent.mkdir(parents=True)
    record.write_bytes(b"\x01\x02")  # not a record
    with pytest.warns(RuntimeWarning, match=r"records \['xccm_progress/image/c/1'\] are damaged"):
        to_zarr(_small(), path, mode="resume")
    np.testing.assert_array_equal(open_zarr(path)["image"].values, _small()["image"].values)
    assert is_complete(path, verify="checksum")


def test_a_failed_chunk_write_removes_its_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    enc = {"image": {"compressors": None}}
    to_zarr(_small(), path, compute=False, encoding=enc)

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xccm.io.os, "replace", full)
    with pytest.raises(OSError, match="No space left"), dask.config.set(scheduler="sync"):
        to_zarr(_small(), path, mode="resume", encoding=enc)
    monkeypatch.undo()
    assert not list(path.rglob("*.xccm-tmp"))
    to_zarr(_small(), path, mode="resume", encoding=enc)
    assert is_complete(path, verify="checksum")


# ---------------------------------------------------------------------------------------------
# a growing time series: mode="append" (issue 12 §1.7)


def test_appended_frames_give_the_store_written_at_once(source, tmp_path):
    whole, grown = tmp_path / "whole.zarr", tmp_path / "grown.zarr"
    to_zarr(_pipeline(source), whole)
    full = _pipeline(source)
    to_zarr(full.isel(time=slice(0, 6)), grown)
    to_zarr(full.isel(time=slice(6, 10)), grown, mode="append", append_dim="time")
    to_zarr(full.isel(time=slice(10, None)), grown, mode="append", append_dim="time")
    assert is_complete(grown, verify="checksum")
    a, b = open_zarr(grown).compute(), open_zarr(whole).compute()
    for key in ("xccm_token", "xccm_tokens", "xccm_arrays"):
        a.attrs.pop(key), b.attrs.pop(key)
    xr.testing.assert_identical(a, b)
    assert open_zarr(grown).image.chunks == open_zarr(whole).image.chunks
    # the same chunk files and records (in-memory variables keep the first write's chunks)
    mine, theirs = (
        {k: v for k, v in _files(p).items() if k.split("/")[0] in ("image", "xccm_progress")}
        for p in (grown, whole)
    )
    assert mine.keys() == theirs.keys()
    assert all(mine[k] == theirs[k] for k in mine if not k.endswith("zarr.json"))


def test_an_append_cut_short_is_finished_by_appending_the_same_frames(source, tmp_path):
    out = tmp_path / "out.zarr"
    to_zarr(_pipeline(source).isel(time=slice(0, 6)), out)
    more = _flaky_pipeline(source).isel(time=slice(6, None))
    _Flaky.fail_at, _Flaky.seen = 4, []  # the second new chunk (of the whole stack)
    with pytest.raises(RuntimeError, match="interrupted"), dask.config.set(scheduler="sync"):
        to_zarr(more, out, mode="append", append_dim="time")
    _Flaky.fail_at = None
    assert not is_complete(out)
    with pytest.raises(IncompleteStoreError, match="did not finish"):
        open_zarr(out)
    with pytest.raises(ValueError, match=r"frames 6 to 12 along 'time' was cut short"):
        to_zarr(more.isel(time=slice(0, 2)), out, mode="append", append_dim="time")
    with pytest.raises(ValueError, match=r"other frames was cut short \(variable 'image'"):
        to_zarr(more.assign(image=more.image * 0), out, mode="append", append_dim="time")
    _Flaky.seen = []
    respelled = _flaky_pipeline(f"{source}/").isel(time=slice(6, None))  # another spelling
    to_zarr(respelled, out, mode="append", append_dim="time")
    assert 4 in _Flaky.seen and len(_Flaky.seen) < 3 + 2  # not all three new chunks again
    assert is_complete(out, verify="checksum")
    expected = xccm.apply(_stack().compute(), _per_frame_matrix(_stack())).image
    xr.testing.assert_allclose(open_zarr(out).image.compute(), expected, rtol=1e-6)


def test_append_says_what_it_needs(source, tmp_path):
    out = tmp_path / "out.zarr"
    full = _pipeline(source)
    with pytest.raises(ValueError, match="needs append_dim"):
        to_zarr(full, out, mode="append")
    with pytest.raises(ValueError, match="append_dim is for mode='append'"):
        to_zarr(full, out, append_dim="time")
    with pytest.raises(FileNotFoundError, match="create it first"):
        to_zarr(full, out, mode="append", append_dim="time")
    to_zarr(full.isel(time=slice(0, 5)).chunk(time=2), out)  # 2 + 2 + 1: last chunk not full
    with pytest.raises(
        ValueError, match=r"holds 5 along 'time'; appended frames must start a new chunk"
    ):
        to_zarr(full.isel(time=slice(5, None)).chunk(time=2), out, mode="append", append_dim="time")
    to_zarr(full.isel(time=slice(0, 4)), out, mode="w")
    with pytest.raises(ValueError, match="append_dim 'frame' is not a dim of obj"):
        to_zarr(full.isel(time=slice(4, None)), out, mode="append", append_dim="frame")
    with pytest.raises(ValueError, match="keeps the store's attrs and encoding"):
        to_zarr(full.isel(time=slice(4, None)), out, mode="append", append_dim="time", attrs={})
    with pytest.raises(ValueError, match=r"'channel' has no dim 'time' and differs"):
        more = full.isel(time=slice(4, None)).assign_coords(channel=["X", "Y", "Z"])
        to_zarr(more, out, mode="append", append_dim="time")
    zarr.open_group(out, mode="r+", use_consolidated=False).attrs[COMPLETE] = 0
    with pytest.raises(IncompleteStoreError, match="cannot be appended"):
        to_zarr(full.isel(time=slice(4, None)), out, mode="append", append_dim="time")


def test_a_stored_per_frame_fit_with_diagnostics_reopens_usable(tmp_path):
    # A ΔE fit's matrix carries per-frame coords (loss, ...) in one chunk; the corrected
    # frames are chunked frame by frame. Reopened, the image must still work on its own.
    pytest.importorskip("colour")
    ref = xccm.chart()
    rng = np.random.default_rng(0)
    measured = xr.DataArray(
        ref.values.clip(0) * rng.uniform(0.7, 0.9, (4, 1, 1)) + 0.01,
        dims=("time", "patch", "channel"),
        coords={"time": np.arange(4), **ref.coords},
    )
    m = xccm.fit(measured, ref, loss="ciede2000")
    image = xr.DataArray(
        rng.uniform(0, 1, (4, 6, 5, 3)).astype(np.float32), dims=("time", "y", "x", "channel")
    ).chunk(time=1)
    out = image.ccm.apply(m).to_dataset(name="image").assign(ccm=m)
    xccm.io.to_zarr(out, tmp_path / "c.zarr")
    done = xccm.io.open_zarr(tmp_path / "c.zarr")
    assert done.image.chunks[0] == (1, 1, 1, 1)
    back = done.image.ccm.inverse(done["ccm"]).compute()
    np.testing.assert_allclose(back.values, image.values, atol=1e-4)
    np.testing.assert_array_equal(done["loss"].values, m["loss"].values)


def _many_kinds() -> xr.Dataset:
    """Dask-backed variables of several kinds: dtypes, dims, attrs (plain and encoded), a
    Dask-backed coord and a non-dim coord that xarray lists in each variable's attributes."""
    rng = np.random.default_rng(5)
    dims = ("time", "y", "channel")
    data = {}
    for i in range(7):
        attrs = {"index": i, "weights": np.arange(3.0) * i, "gain": np.float32(i / 4)}
        if i == 3:
            attrs = {"units": "1", "long_name": "three"}
        dtype = np.int16 if i == 5 else np.float32
        values = (rng.random((4, 5, 3)) * 100).astype(dtype)
        data[f"v{i}"] = (dims if i != 6 else ("time", "y", "c")), values, attrs
    ds = xr.Dataset(
        data,
        coords={
            "time": np.arange(4.0),
            "loss": ("time", rng.random(4)),
            "lazy_loss": ("time", rng.random(4), {"note": "lazy"}),
        },
        attrs={"site": "kinds"},
    )
    return ds.chunk(time=2)


def test_metadata_of_many_variables_equals_xarrays(tmp_path):
    # Most Dask-backed variables' zarr.json are copies of the first of their kind: each must
    # equal what xarray writes for that variable itself.
    ds = _many_kinds()
    enc = {"v1": {"compressors": None}, "v2": {"compressors": None}}
    ours, theirs = tmp_path / "ours.zarr", tmp_path / "theirs.zarr"
    to_zarr(ds, ours, encoding=enc)
    ds.to_zarr(theirs, encoding=enc, consolidated=False)
    for name in ds.variables:
        mine = json.loads((ours / str(name) / "zarr.json").read_bytes())
        xarrays = json.loads((theirs / str(name) / "zarr.json").read_bytes())
        assert mine == xarrays, name
    mine = xr.open_zarr(ours).compute()  # plain xarray reads it, consolidated
    mine.attrs = {k: v for k, v in mine.attrs.items() if not k.startswith("xccm_")}
    xr.testing.assert_identical(mine, xr.open_zarr(theirs, consolidated=False).compute())


def test_consolidated_metadata_equals_zarrs(tmp_path):
    # Completion consolidates the metadata itself, in one write with the marker: it must be
    # what zarr's consolidate_metadata writes, members, order and all.
    path, again = tmp_path / "s.zarr", tmp_path / "again.zarr"
    to_zarr(_many_kinds(), path, encoding={"v1": {"compressors": None}})
    shutil.copytree(path, again)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(again))
    mine = json.loads((path / "zarr.json").read_bytes())
    zarrs = json.loads((again / "zarr.json").read_bytes())
    assert list(mine["consolidated_metadata"]["metadata"]) == list(
        zarrs["consolidated_metadata"]["metadata"]
    )
    assert mine["consolidated_metadata"] == zarrs["consolidated_metadata"]
    assert mine["attributes"] == zarrs["attributes"]
    assert mine["attributes"][COMPLETE] == 1
    assert is_complete(path, verify="checksum")


def test_many_variables_resume_after_a_failed_write(tmp_path, monkeypatch):
    # A write of 7 variables cut short after a few chunks resumes to the files of an
    # uninterrupted write; what was written is not written again.
    ds = _many_kinds()
    reference, out = tmp_path / "reference.zarr", tmp_path / "out.zarr"
    to_zarr(ds, reference)
    setitem = xccm.io._ChunkWriter.__setitem__
    count = {"n": 0}

    def failing(self, index, block):
        count["n"] += 1
        if count["n"] > 5:
            raise OSError("disk gone")
        setitem(self, index, block)

    monkeypatch.setattr(xccm.io._ChunkWriter, "__setitem__", failing)
    with dask.config.set(scheduler="sync"), pytest.raises(OSError, match="disk gone"):
        to_zarr(ds, out)
    assert not is_complete(out)
    rewritten = []

    def counted(self, index, block):
        rewritten.append((self.name, index))
        setitem(self, index, block)

    monkeypatch.setattr(xccm.io._ChunkWriter, "__setitem__", counted)
    to_zarr(ds, out, mode="resume")
    assert len(rewritten) == 9 * 2 - 5  # 7 variables and 2 coords, 2 chunks each
    assert _files(out) == _files(reference)
