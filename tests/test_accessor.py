"""The .ccm accessor forwards to xccm.core; Dataset behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import raise_if_dask_computes


def test_accessor_is_the_function(patches, image, true_matrix):
    measured, reference = patches
    xr.testing.assert_identical(
        measured.ccm.fit(reference, model="affine"),
        xccm.fit(measured, reference, model="affine"),
    )
    xr.testing.assert_identical(image.ccm.apply(true_matrix), xccm.apply(image, true_matrix))
    xr.testing.assert_identical(image.ccm.inverse(true_matrix), xccm.inverse(image, true_matrix))
    m = measured.ccm.fit(reference)
    xr.testing.assert_identical(m.ccm.invert(), xccm.invert(m))


def test_accessor_forwards_dim(image, true_matrix):
    bands = image.rename(channel="band")
    out = bands.ccm.apply(true_matrix, dim="band")
    np.testing.assert_array_equal(out.values, image.ccm.apply(true_matrix).values)


@pytest.fixture
def dataset(image):
    return xr.Dataset(
        {
            "image": image,
            "other": image * 2,
            "mask": image.isel(channel=0, drop=True) > 0.5,
            "exposure": ("time", [1.0, 1.1, 0.9, 1.0]),
        },
        attrs={"title": "stack"},
    )


def test_dataset_applies_to_every_variable_with_dim(dataset, true_matrix):
    out = dataset.ccm.apply(true_matrix)
    assert list(out.data_vars) == list(dataset.data_vars)
    xr.testing.assert_identical(out["image"], dataset["image"].ccm.apply(true_matrix))
    xr.testing.assert_identical(out["other"], dataset["other"].ccm.apply(true_matrix))
    xr.testing.assert_identical(out["mask"], dataset["mask"])
    xr.testing.assert_identical(out["exposure"], dataset["exposure"])
    assert out.attrs == dataset.attrs


def test_dataset_variable_through_its_own_accessor(dataset, true_matrix):
    xr.testing.assert_identical(
        dataset.image.ccm.apply(true_matrix), dataset["image"].ccm.apply(true_matrix)
    )


def test_dataset_takes_new_channel_coords(dataset, patches):
    measured, reference = patches
    m = measured.isel(time=0).ccm.fit(reference)
    out = dataset.ccm.apply(m)
    assert out.channel.values.tolist() == ["X", "Y", "Z"]
    back = out.ccm.inverse(m)
    assert back.channel.values.tolist() == ["R", "G", "B"]
    xr.testing.assert_allclose(back["image"], dataset["image"], rtol=1e-4, atol=1e-5)


def test_dataset_is_lazy(dataset, true_matrix):
    lazy = dataset.chunk({"time": 1})
    with raise_if_dask_computes():
        out = lazy.ccm.apply(true_matrix)
    assert out["image"].chunks == lazy["image"].chunks
    xr.testing.assert_allclose(out.compute(), dataset.ccm.apply(true_matrix))


def test_dataset_cannot_be_fitted(dataset, patches):
    with pytest.raises(TypeError, match="select one variable"):
        dataset.ccm.fit(patches[1])


def test_matrix_name_does_not_hide_the_accessor(tmp_path):
    """A fitted matrix in a Dataset is ds.ccm_matrix; ds.ccm stays the accessor."""
    rng = np.random.default_rng(1)
    s = xr.DataArray(rng.random((24, 3)), dims=("patch", "channel"))
    gains = xr.DataArray(np.diag([2.0, 1.0, 0.5]), dims=("channel", "c"))
    m = xccm.fit(s, (s @ gains).rename(c="channel"))
    assert m.name == "ccm_matrix"
    ds = m.to_dataset().assign(image=s)
    assert isinstance(ds.ccm, xccm.accessor.CCMAccessor)
    xr.testing.assert_identical(ds.ccm_matrix, m)
    xr.testing.assert_allclose(ds.ccm.apply(ds.ccm_matrix)["image"], xccm.apply(s, m))
    # A matrix stored by an older version, named "ccm", loads and applies as before.
    path = xccm.save_matrix(m.rename("ccm"), tmp_path / "old.nc")
    old = xccm.load_matrix(path)
    assert old.name == "ccm"
    xr.testing.assert_allclose(xccm.apply(s, old), xccm.apply(s, m))
