"""xccm.drift and xccm.segments: steps, bad frames, slow drift, laziness, the refit recipe."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import raise_if_dask_computes

pytest.importorskip("colour")

BASE = np.array([[1.25, -0.15, 0.02], [-0.2, 1.3, -0.2], [-0.05, -0.15, 1.18]])


def _series(n=300, noise=0.003, step=None, drift=0.0, bad=(), seed=0):
    rng = np.random.default_rng(seed)
    m = np.broadcast_to(BASE, (n, 3, 3)).copy()
    m *= 1 + drift * np.arange(n)[:, None, None] / n  # a slow gain drift over the series
    if step is not None:
        m[step:] *= [1.08, 1.0, 0.92]  # a white-balance change
    m += rng.normal(0, noise, m.shape)
    for t in bad:  # glare or a hand over the chart: a wrong fit
        m[t] += rng.normal(0, 0.15, (3, 3))
    return xr.DataArray(
        m, dims=("time", "channel_in", "channel"), coords={"time": np.arange(n) * 10.0}
    )


def test_step_drift_and_bad_frames():
    bad = (17, 60, 61, 150, 233, 299)
    m = _series(step=120, drift=0.15, bad=bad)
    d = xccm.drift(m)
    assert np.flatnonzero(d["step"]).tolist() == [120]
    assert np.flatnonzero(d["outlier"]).tolist() == list(bad)
    # the slow drift is no step but shows in the distance to the reference frame
    curve = d["drift"].where(~d["outlier"])
    early, late = (
        float(curve.isel(time=slice(1, 20)).mean()),
        float(curve.isel(time=slice(-30, -1)).mean()),
    )
    assert late > early + 3
    assert d["delta_e"].dims == ("time", "patch") and d["flagged"].dtype == bool
    np.testing.assert_array_equal(d["time"], m["time"])


def test_reference_frame_reproduces_the_chart():
    m = _series(n=40)
    d = xccm.drift(m, reference=5)
    assert float(d["delta_e"].isel(time=5).max()) < 1e-6
    med = xccm.drift(m, reference="median")
    assert float(med["drift"].max()) < 2 and float(med["drift"].min()) > 0


@pytest.mark.parametrize("seed", range(5))
def test_stable_noisy_series_has_no_flags(seed):
    d = xccm.drift(_series(n=500, noise=0.006, seed=seed))
    assert not bool(d["flagged"].any())
    assert float(d["deviation"].median()) > 0.1  # the noise is visible, but not a flag


def test_slow_drift_alone_is_not_a_step():
    d = xccm.drift(_series(n=400, drift=0.3))
    assert not bool(d["flagged"].any())
    assert float(d["drift"][-1]) > 5


def test_step_sizes_and_change():
    m = _series(step=100, noise=0.0005)
    d = xccm.drift(m)
    expected = xccm.delta_e(
        xccm.apply(
            xccm.inverse(xccm.chart(), m.isel(time=0)).expand_dims(time=200),
            m.isel(time=slice(100, None)),
        ),
        xccm.chart(),
    ).mean("patch")
    # the step's size in ΔE is the colour change of the chart across it
    np.testing.assert_allclose(float(d["step_size"][100]), float(expected.median()), rtol=0.1)
    assert float(d["change"][100]) > 5 * float(d["change"].median())
    assert np.isnan(float(d["change"][0]))


def test_lazy_and_other_batch_dims():
    a, b = _series(n=80, step=40, seed=1), _series(n=80, step=25, seed=2)
    both = xr.concat([a, b], "camera")
    eager = xccm.drift(both, time_dim="time")
    lazy = both.chunk(time=20)
    with raise_if_dask_computes():
        d = xccm.drift(lazy, time_dim="time")
    assert all(v.chunks is not None for v in d.data_vars.values())
    xr.testing.assert_allclose(d.compute(), eager)
    assert np.flatnonzero(eager["step"].sel(camera=0)).tolist() == [40]
    assert np.flatnonzero(eager["step"].sel(camera=1)).tolist() == [25]


def test_nan_frames_are_outliers_and_colours_given():
    m = _series(n=60)
    m[10] = np.nan
    grid = xr.DataArray(np.full((2, 2, 3), 0.4), dims=("u", "v", "channel"))
    d = xccm.drift(m, grid)
    assert bool(d["outlier"][10]) and int(d["outlier"].sum()) == 1
    assert d["delta_e"].dims == ("time", "u", "v")


def test_segments_and_refit_recipe():
    ref = xccm.chart()
    gains = np.where(np.arange(30) < 18, 1.0, 0.8)[:, None] * np.array([1.0, 0.9, 1.1])
    measured = (ref * xr.DataArray(gains, dims=("time", "channel"))).transpose(
        "time", "patch", "channel"
    )
    measured = measured + np.random.default_rng(0).normal(0, 0.002, measured.shape)
    m = xccm.fit(measured, ref)
    d = xccm.drift(m, window=5)
    seg = xccm.segments(d)
    assert np.flatnonzero(d["step"]).tolist() == [18]
    assert seg.values.tolist() == [0] * 18 + [1] * 12 and seg.name == "segment"
    # the recipe of docs/guide/trust.md: pool each segment's good frames into one fit
    good = measured.where(~d["outlier"])
    per_segment = good.groupby(seg).map(lambda g: xccm.fit(g, ref, sample_dims=("time", "patch")))
    for s, g in ((0, 1.0), (1, 0.8)):
        expected = np.diag(1 / (g * np.array([1.0, 0.9, 1.1])))
        np.testing.assert_allclose(per_segment.sel(segment=s), expected, atol=0.01)
    per_frame = per_segment.sel(segment=seg)
    assert per_frame.dims[0] == "time" and per_frame.sizes["time"] == 30
    steps = xr.DataArray([True, False, True], dims="t")
    assert xccm.segments(steps).values.tolist() == [0, 0, 1]


def test_timeline_takes_the_flags(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import xccm.plot

    m = _series(n=60, step=30, bad=(10,))
    d = xccm.drift(m)
    fig = xccm.plot.timeline(m, d["flagged"])
    shaded = [p for ax in fig.axes for p in ax.patches if p.get_gid() == "flagged"]
    assert shaded, [p.get_gid() for ax in fig.axes for p in ax.patches]


def test_bad_input():
    m = _series(n=30)
    with pytest.raises(ValueError, match="time_dim"):
        xccm.drift(m.expand_dims(camera=2))
    with pytest.raises(ValueError, match="outside"):
        xccm.drift(m, reference=30)
    with pytest.raises(ValueError, match="reference"):
        xccm.drift(m, reference="mean")
    with pytest.raises(ValueError, match="window"):
        xccm.drift(m, window=0)
    with pytest.raises(TypeError, match="DataArray"):
        xccm.drift(m.values)
    with pytest.raises(ValueError, match="channels"):
        xccm.drift(m, xr.DataArray(np.ones((2, 4)), dims=("c", "channel")))
    with pytest.raises(TypeError, match="boolean"):
        xccm.segments(xr.DataArray([0, 1], dims="t"))
