"""Robust per-frame fits: Huber and Tukey reweighting, with and without a ΔE loss."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import lstsq, raise_if_dask_computes
from xccm import _kernels

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pytest.importorskip("colour")

MIX = np.array([[0.7, 0.2, 0.1], [0.25, 0.6, 0.15], [0.05, 0.25, 0.7]])


def series(frames: int, seed: int = 0, corrupt: bool = True):
    """Linear camera colours of a chart over ``frames`` frames, and which patches are bad.

    A channel mix, an exposure per frame, flare and noise; in about 60 % of the frames 1-4
    patches are replaced by glare (near white) or an occluder (dark, leaf green).
    """
    rng = np.random.default_rng(seed)
    ref = xccm.chart()
    exposure = rng.uniform(0.6, 0.9, (frames, 1, 1))
    values = (ref.values.clip(0) @ MIX) * exposure + 0.01 + rng.normal(0, 0.004, (frames, 24, 3))
    clean = xr.DataArray(values, dims=("time", "patch", "channel"), coords=ref.coords)
    bad = np.zeros((frames, 24), dtype=bool)
    if corrupt:
        for t in range(frames):
            if rng.random() < 0.6:
                bad[t, rng.choice(24, rng.integers(1, 5), replace=False)] = True
        n = int(bad.sum())
        glare = rng.uniform(0.9, 0.97, (n, 3))
        leaf = rng.uniform(0.5, 1.0, (n, 1)) * np.array([0.03, 0.08, 0.02])
        values = values.copy()
        values[bad] = np.where(rng.random((n, 1)) < 0.5, glare, leaf)
    measured = clean.copy(data=values)
    flags = xr.DataArray(bad, dims=("time", "patch"), coords={"patch": ref.patch})
    return clean, measured, flags, ref


def clean_delta_e(clean, ref, matrix, flags) -> float:
    """Mean CIEDE2000 over the patches that were not corrupted, corrected from clean values."""
    rep = xccm.report(clean, ref, matrix)
    return float(rep.delta_e.where(~flags).mean())


# ---------------------------------------------------------------------------------------------
# the weight functions


def test_weight_functions_follow_their_closed_forms():
    r = np.array([[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 40.0]])
    valid = np.ones_like(r, dtype=bool)
    sigma = np.median(r) / 0.6744897501960817  # MAD about zero, normal-consistent
    u = r / sigma
    u[0, 0] = 1e-300  # a zero residual has weight 1 (avoid 1.345 / 0 in the check)
    w, scale = _kernels.robust_weights(r, valid, "huber")
    assert scale[0] == pytest.approx(sigma, rel=1e-14)
    np.testing.assert_allclose(w, np.where(u <= 1.345, 1.0, 1.345 / u), rtol=1e-14)
    w, _ = _kernels.robust_weights(r, valid, "tukey")
    np.testing.assert_allclose(w, np.where(u < 4.685, (1 - (u / 4.685) ** 2) ** 2, 0), rtol=1e-14)
    assert w[0, -1] == 0.0  # far out: rejected
    w, _ = _kernels.robust_weights(r, valid, "tukey", tuning=2.0)
    np.testing.assert_allclose(w, np.where(u < 2.0, (1 - (u / 2.0) ** 2) ** 2, 0), rtol=1e-14)
    # invalid samples: NaN weight, and not counted in the scale
    valid[0, -1] = False
    w, scale = _kernels.robust_weights(r, valid, "huber")
    assert np.isnan(w[0, -1]) and scale[0] == pytest.approx(np.median(r[0, :-1]) / 0.6745, 1e-4)


# ---------------------------------------------------------------------------------------------
# outliers


def test_tukey_least_squares_resists_glare_and_occluders():
    clean, measured, flags, ref = series(50)
    assert 50 <= int(flags.sum()) and int(flags.any("patch").sum()) < 50  # not every frame
    reference = xccm.fit(clean, ref, model="affine")
    plain = xccm.fit(measured, ref, model="affine")
    robust, weight = xccm.fit(measured, ref, model="affine", robust="tukey", return_weights=True)
    base = clean_delta_e(clean, ref, reference, flags)
    assert clean_delta_e(clean, ref, robust, flags) <= 1.1 * base
    assert clean_delta_e(clean, ref, plain, flags) > 1.5 * base
    # the outlier flags: Tukey rejects (weight 0) nearly every corrupted patch, few others
    rejected = weight == 0
    assert int((rejected & flags).sum()) >= 0.95 * int(flags.sum())
    assert int((rejected & ~flags).sum()) <= 0.02 * int((~flags).sum())
    assert weight.dims == ("time", "patch") and weight.name == "robust_weight"
    assert bool(robust.robust_converged.all()) and robust.attrs["robust"] == "tukey"
    assert robust.attrs["robust_tuning"] == 4.685


def test_huber_bounds_the_outliers_influence():
    clean, measured, flags, ref = series(50)
    reference = xccm.fit(clean, ref, model="affine")
    plain = xccm.fit(measured, ref, model="affine")
    robust = xccm.fit(measured, ref, model="affine", robust="huber")
    base = clean_delta_e(clean, ref, reference, flags)
    # better than the plain fit, but a bound influence is not a rejection: Tukey's is the
    # fit for glare (see the test above)
    assert clean_delta_e(clean, ref, robust, flags) < 0.8 * clean_delta_e(clean, ref, plain, flags)
    assert clean_delta_e(clean, ref, robust, flags) > base


@pytest.mark.parametrize("method", ["tukey", "huber"])
def test_robust_delta_e_fit_resists_glare_and_occluders(method):
    clean, measured, flags, ref = series(30, seed=1)
    reference = xccm.fit(clean, ref, loss="ciede2000")
    plain = xccm.fit(measured, ref, loss="ciede2000")
    robust, weight = xccm.fit(measured, ref, loss="ciede2000", robust=method, return_weights=True)
    base = clean_delta_e(clean, ref, reference, flags)
    assert clean_delta_e(clean, ref, robust, flags) <= 1.1 * base
    assert clean_delta_e(clean, ref, plain, flags) > 1.3 * base
    assert bool(robust.converged.all()) and bool(robust.robust_converged.all())
    # the loss reported is the weighted loss with the weights returned
    used = xccm.saturation_mask(measured)
    again = xccm.report(measured, ref, robust, weights=weight.fillna(0) * used)
    np.testing.assert_allclose(robust.loss, again["loss"], rtol=1e-9)
    # the weights are those of ΔE: a corrupted patch weighs less than the clean ones
    assert float(weight.where(flags).mean()) < 0.3 * float(weight.where(~flags).mean())


def test_no_outliers_gives_the_plain_fit():
    clean, _, _, ref = series(20, corrupt=False)
    for method in ("huber", "tukey"):
        plain = xccm.fit(clean, ref, model="affine")
        robust, weight = xccm.fit(clean, ref, model="affine", robust=method, return_weights=True)
        np.testing.assert_allclose(robust, plain, atol=0.03)
        assert float(weight.median()) > 0.95
        flags = xr.zeros_like(weight, dtype=bool)
        a, b = clean_delta_e(clean, ref, plain, flags), clean_delta_e(clean, ref, robust, flags)
        assert abs(a - b) < 0.03 * a
    # exact data: every weight is 1 and the matrix is the exact one
    rng = np.random.default_rng(3)
    s = rng.random((4, 24, 3))
    true = np.array([[1.2, -0.1, 0.0], [-0.2, 1.1, -0.1], [0.0, -0.1, 1.3]])
    measured = xr.DataArray(s, dims=("time", "patch", "channel"))
    reference = xr.DataArray(s[0] @ true, dims=("patch", "channel"))
    measured = measured.copy(data=np.broadcast_to(s[:1], s.shape).copy())
    m, weight = xccm.fit(measured, reference, robust="tukey", return_weights=True)
    np.testing.assert_allclose(m, np.broadcast_to(true, (4, 3, 3)), atol=1e-12)
    assert bool((weight > 1 - 1e-9).all())


# ---------------------------------------------------------------------------------------------
# the weights, the user's weights and min_samples


def test_fit_is_the_weighted_least_squares_with_the_weights_returned():
    _, measured, _, ref = series(8, seed=2)
    rng = np.random.default_rng(5)
    user = xr.DataArray(rng.uniform(0.5, 2.0, 24), dims="patch", coords={"patch": ref.patch})
    user[3] = 0.0  # left out by the user
    m, weight = xccm.fit(
        measured, ref, model="affine", robust="tukey", weights=user, return_weights=True
    )
    assert bool(weight.isel(patch=3).isnull().all())  # not part of the robust fit
    assert bool((weight.fillna(1) <= 1).all() and (weight.fillna(0) >= 0).all())
    for t in range(measured.sizes["time"]):
        w = (user * weight.isel(time=t).fillna(0)).values
        expected = lstsq(measured.values[t], ref.values, w, affine=True)
        np.testing.assert_allclose(m.isel(time=t), expected, atol=1e-10)
    # a weight the user gives counts: the same patch rejected by Tukey stays rejected, and
    # patches kept keep their user weight in the fit (not just their robust weight)
    unweighted = xccm.fit(measured, ref, model="affine", robust="tukey")
    assert not np.allclose(unweighted, m)


def test_a_mostly_covered_chart_gives_a_nan_matrix_and_a_warning():
    _, measured, _, ref = series(6, seed=4, corrupt=False)
    rng = np.random.default_rng(0)
    covered = measured.values.copy()
    hidden = rng.choice(24, 10, replace=False)
    covered[2, hidden] = rng.uniform(0.5, 1.0, (10, 1)) * np.array([0.03, 0.08, 0.02])
    covered[2, hidden] += rng.uniform(0, 0.03, (10, 3))  # leaves of many shades
    measured = measured.copy(data=covered)
    with pytest.warns(xccm.InsufficientSamplesWarning, match="1 of 6"):
        m, weight = xccm.fit(measured, ref, robust="tukey", min_samples=18, return_weights=True)
    assert bool(m.isel(time=2).isnull().all())
    assert int((weight.isel(time=2) > 0).sum()) < 18
    assert bool(m.drop_isel(time=2).notnull().all())
    with pytest.warns(xccm.InsufficientSamplesWarning, match="1 of 6"):
        m = xccm.fit(measured, ref, robust="tukey", min_samples=18, loss="ciede2000")
    assert bool(m.isel(time=2).isnull().all()) and bool(m.drop_isel(time=2).notnull().all())


# ---------------------------------------------------------------------------------------------
# batches, laziness, plain arrays


@pytest.mark.parametrize("loss", [None, "ciede2000"])
def test_batch_is_the_loop_over_frames(loss):
    _, measured, _, ref = series(5, seed=6)
    m, weight = xccm.fit(measured, ref, robust="tukey", loss=loss, return_weights=True)
    for t in range(5):
        one, w = xccm.fit(
            measured.isel(time=t), ref, robust="tukey", loss=loss, return_weights=True
        )
        np.testing.assert_allclose(m.isel(time=t), one, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(weight.isel(time=t), w, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    ("loss", "method", "rtol"), [(None, "huber", 1e-12), ("ciede2000", "tukey", 1e-5)]
)
def test_robust_fit_is_lazy_and_chunking_invariant(loss, method, rtol):
    # (ΔE: the patch chunks sum the start's statistics in another order, and the solver
    # stops at its tolerance, so the matrices agree to it, not to the last bit)
    _, measured, _, ref = series(6, seed=7)
    expected, weight = xccm.fit(measured, ref, robust=method, loss=loss, return_weights=True)
    for chunks in ({"time": 1}, {"time": 4, "patch": 5}):
        lazy_in = measured.chunk(chunks)
        with raise_if_dask_computes():
            m, w = xccm.fit(lazy_in, ref, robust=method, loss=loss, return_weights=True)
        assert m.chunks is not None and w.chunks is not None
        assert m.robust_scale.chunks is not None
        xr.testing.assert_allclose(m, expected, rtol=rtol, atol=rtol)
        xr.testing.assert_allclose(w, weight, rtol=rtol, atol=rtol)


def test_plain_arrays_in_plain_arrays_out():
    _, measured, _, ref = series(3, seed=8)
    m, w = xccm.fit(measured.values, ref.values, robust="tukey", return_weights=True)
    labelled, lw = xccm.fit(measured, ref, robust="tukey", return_weights=True)
    assert isinstance(m, np.ndarray) and m.shape == (3, 3, 3) and w.shape == (3, 24)
    np.testing.assert_allclose(m, labelled.values, rtol=1e-12)
    np.testing.assert_allclose(w, lw.values, rtol=1e-12)


def test_return_weights_of_a_plain_fit_marks_the_samples_used():
    _, measured, _, ref = series(2, corrupt=False)
    values = measured.values.copy()
    values[1, 4, 0] = np.nan
    m, used = xccm.fit(measured.copy(data=values), ref, return_weights=True)
    assert "robust" not in m.attrs and "robust_scale" not in m.coords
    assert int(used.isnull().sum()) == 1 and bool(np.isnan(used[1, 4]))
    assert bool((used.fillna(1) == 1).all())


def test_robust_matrix_applies_and_saves(tmp_path):
    _, measured, _, ref = series(3, seed=9)
    m = xccm.fit(measured, ref, robust="tukey")
    out = xccm.apply(measured, m)
    assert "robust_scale" not in out.coords
    xccm.save_matrix(m, tmp_path / "m.json")
    back = xccm.load_matrix(tmp_path / "m.json")
    xr.testing.assert_identical(back.robust_converged, m.robust_converged)
    assert back.attrs["robust"] == "tukey"


def test_bad_robust_arguments_are_clear_errors():
    _, measured, _, ref = series(2, corrupt=False)
    with pytest.raises(ValueError, match=r"unknown robust 'bisquare'.*'huber', 'tukey'"):
        xccm.fit(measured, ref, robust="bisquare")
    with pytest.raises(ValueError, match=r"unknown robust True"):
        xccm.fit(measured, ref, robust=True)
    with pytest.raises(ValueError, match=r"robust_tuning=2\.0 tunes a robust fit"):
        xccm.fit(measured, ref, robust_tuning=2.0)
    for bad in (0, -1.0, np.inf, "2", True):
        with pytest.raises(ValueError, match="robust_tuning must be a finite positive"):
            xccm.fit(measured, ref, robust="huber", robust_tuning=bad)
    with pytest.raises(TypeError, match="return_weights must be True or False"):
        xccm.fit(measured, ref, return_weights="yes")
    with pytest.raises(ValueError, match="unknown robust"):
        xccm.fit(measured.values, ref.values, robust="l1")
