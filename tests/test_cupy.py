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
