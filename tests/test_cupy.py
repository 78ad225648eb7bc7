"""CuPy-backed arrays stay on the device (skipped without CuPy and a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xccm

cp = pytest.importorskip("cupy")
try:
    cp.cuda.runtime.getDeviceCount()
except cp.cuda.runtime.CUDARuntimeError:  # pragma: no cover - CuPy without a device
    pytest.skip("no CUDA device", allow_module_level=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("rows", [3, 4])
def test_apply_on_device_matches_numpy(rng, dtype, rows):
    host = (rng.random((3, 16, 20, 3)) * (200 if dtype == np.uint8 else 1)).astype(dtype)
    m = rng.normal(size=(rows, 3)) + np.eye(rows, 3)
    img = xr.DataArray(cp.asarray(host), dims=("time", "y", "x", "channel"))
    out = img.ccm.apply(m)
    assert isinstance(out.data, cp.ndarray)
    assert out.dtype == (np.float32 if dtype == np.uint8 else dtype)
    expected = xccm.apply(host, m)
    np.testing.assert_allclose(out.data.get(), expected, rtol=1e-5, atol=1e-5)


def test_apply_channel_first_on_device(rng):
    host = rng.random((3, 4, 8, 9)).astype(np.float32)  # (channel, time, y, x)
    img = xr.DataArray(cp.asarray(host), dims=("channel", "time", "y", "x"))
    m = rng.normal(size=(4, 3)).astype(np.float32)
    out = img.ccm.apply(m)
    assert isinstance(out.data, cp.ndarray) and out.dims == img.dims
    expected = xr.DataArray(host, dims=img.dims).ccm.apply(m)
    np.testing.assert_allclose(out.data.get(), expected.values, rtol=1e-5, atol=1e-6)


def test_fit_and_inverse_on_device(patches):
    measured, reference = patches
    on_device = measured.copy(data=cp.asarray(measured.values))
    m = on_device.ccm.fit(reference.copy(data=cp.asarray(reference.values)), model="affine")
    assert isinstance(m.data, cp.ndarray)
    expected = measured.ccm.fit(reference, model="affine")
    np.testing.assert_allclose(m.data.get(), expected.values, rtol=1e-10)
    back = on_device.ccm.apply(m).ccm.inverse(m)
    assert isinstance(back.data, cp.ndarray)
    np.testing.assert_allclose(back.data.get(), measured.values, rtol=1e-10, atol=1e-12)


def test_dask_with_cupy_chunks_stays_lazy_and_on_device(rng):
    dsa = pytest.importorskip("dask.array")
    from conftest import raise_if_dask_computes

    host = rng.random((4, 8, 9, 3)).astype(np.float32)
    lazy = dsa.from_array(cp.asarray(host), chunks=(1, 8, 9, 3), asarray=False)
    img = xr.DataArray(lazy, dims=("time", "y", "x", "channel"))
    m = (np.eye(4, 3) + 0.1 * rng.normal(size=(4, 3))).astype(np.float32)
    with raise_if_dask_computes():
        out = img.ccm.apply(m)
    assert isinstance(out.data._meta, cp.ndarray) and out.chunks == img.chunks
    got = out.data.compute()
    assert isinstance(got, cp.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got.get(), xccm.apply(host, m), rtol=1e-5, atol=1e-6)


def test_fit_from_dask_cupy_pixel_pairs(rng):
    dsa = pytest.importorskip("dask.array")
    s = rng.random((4000, 3))
    truth = np.vstack([np.eye(3) + 0.1 * rng.normal(size=(3, 3)), [[0.01, 0.02, 0.03]]])
    d = s @ truth[:3] + truth[3]
    chunked = [dsa.from_array(cp.asarray(a), chunks=(1000, 3), asarray=False) for a in (s, d)]
    measured, reference = (xr.DataArray(a, dims=("pixel", "channel")) for a in chunked)
    m = measured.ccm.fit(reference, model="affine").compute()
    assert isinstance(m.data, cp.ndarray)
    np.testing.assert_allclose(m.data.get(), truth, rtol=1e-10, atol=1e-12)
