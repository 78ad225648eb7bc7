"""xccm.uncertainty: closed forms, Monte-Carlo validation, bootstrap, laziness, errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import raise_if_dask_computes

pytest.importorskip("colour")
scipy_optimize = pytest.importorskip("scipy.optimize")

CAMERA = np.array([[0.8, 0.1, 0.0], [0.1, 0.7, 0.1], [0.1, 0.2, 0.9]])


def _charts(n_rep: int, sigma: float, seed: int = 1):
    """Noise-free camera colours of the ColorChecker and ``n_rep`` noisy replicates."""
    ref = xccm.chart()
    clean = xr.DataArray(
        ref.values @ CAMERA,
        dims=("patch", "channel"),
        coords={"patch": ref["patch"].values, "channel": ["R", "G", "B"]},
    )
    noise = np.random.default_rng(seed).normal(0, sigma, (n_rep, *clean.shape))
    return ref, clean, clean + xr.DataArray(noise, dims=("rep", "patch", "channel"))


def _observed_delta_e(clean, fitted, true):
    """RMS over replicates of ΔE00 of noise-free colours corrected by each fit vs the truth."""
    de = xccm.delta_e(
        xccm.apply(clean.expand_dims(rep=fitted.sizes["rep"]), fitted),
        xccm.apply(clean, true),
        sample_space="srgb-linear",
        reference_space="srgb-linear",
    )
    return np.sqrt((de**2).mean("rep"))


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_least_squares_covariance_matches_curve_fit(rng, model):
    s = rng.uniform(0.05, 0.9, (30, 3))
    d = s @ CAMERA.T + rng.normal(0, 0.02, (30, 3))
    w = rng.uniform(0.5, 2.0, 30)
    measured = xr.DataArray(s, dims=("patch", "channel"))
    reference = xr.DataArray(d, dims=("patch", "channel"))
    weights = xr.DataArray(w, dims="patch")
    m = xccm.fit(measured, reference, model=model, weights=weights)
    u = xccm.uncertainty(measured, reference, m, weights=weights)
    x = s if model == "linear" else np.concatenate([s, np.ones((30, 1))], axis=1)
    k = x.shape[1]
    cov = u["covariance"].values.reshape(k, 3, k, 3)
    for j in range(3):  # one column at a time, as scipy's weighted curve_fit sees it
        beta, pcov = scipy_optimize.curve_fit(
            lambda xx, *b: xx @ np.array(b), x, d[:, j], p0=np.zeros(k), sigma=1 / np.sqrt(w)
        )
        np.testing.assert_allclose(m.values[:, j], beta, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(cov[:, j, :, j], pcov, rtol=1e-4)  # numerical Jacobian
        np.testing.assert_allclose(
            u["standard_error"].values[:, j], np.sqrt(np.diag(pcov)), rtol=1e-4
        )
    assert int(u["dof"]) == 30 - k
    assert list(u["param_in"].values[:4]) == [0, 0, 0, 1]
    assert list(u["param_out"].values[:4]) == [0, 1, 2, 0]


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_least_squares_monte_carlo(model):
    """Predicted vs observed spread over 400 noisy charts (noise on the measured patches)."""
    ref, clean, measured = _charts(400, 0.01)
    m = xccm.fit(measured, ref, model=model)
    u = xccm.uncertainty(measured, ref, m)
    predicted = np.sqrt((u["standard_error"] ** 2).mean("rep"))
    observed = m.std("rep", ddof=1)
    np.testing.assert_allclose(predicted / observed, 1, atol=0.2)
    de_pred = np.sqrt((u["delta_e"] ** 2).mean("rep"))
    de_obs = _observed_delta_e(clean, m, xccm.fit(clean, ref, model=model))
    np.testing.assert_allclose(de_pred / de_obs, 1, atol=0.2)
    assert u["delta_e"].dims == ("rep", "patch")


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_delta_e_fit_monte_carlo(model):
    """A CIEDE2000 fit: the Jacobian (sandwich) covariance against 200 noisy charts.

    Noise 0.001: the linearisation holds for small noise (at 0.002 one affine offset's
    standard error is 21% over).
    """
    ref, clean, measured = _charts(200, 0.001, seed=2)
    m = xccm.fit(measured, ref, model=model, loss="ciede2000")
    u = xccm.uncertainty(measured, ref, m)
    predicted = np.sqrt((u["standard_error"] ** 2).mean("rep"))
    observed = m.std("rep", ddof=1)
    np.testing.assert_allclose(predicted / observed, 1, atol=0.2)
    de_pred = np.sqrt((u["delta_e"] ** 2).mean("rep"))
    de_obs = _observed_delta_e(clean, m, xccm.fit(clean, ref, model=model, loss="ciede2000"))
    np.testing.assert_allclose(de_pred / de_obs, 1, atol=0.2)


def test_delta_e_fit_on_linear_rgb_is_least_squares():
    """The Jacobian path with the linear-RGB distance reduces to the normal equations."""
    ref, _, measured = _charts(3, 0.01)
    m = xccm.fit(measured, ref)
    ls = xccm.uncertainty(measured, ref, m)
    jac = xccm.uncertainty(measured, ref, m, loss="ciede2000")  # forces the Jacobian path
    rgb = xccm.uncertainty(measured, ref, m.assign_attrs(loss="linear_rgb"))
    xr.testing.assert_allclose(ls["covariance"], rgb["covariance"])
    # same data, another metric: same order of magnitude, not the same numbers
    ratio = (jac["standard_error"] / ls["standard_error"]).values
    assert np.all((ratio > 0.2) & (ratio < 5)) and not np.allclose(ratio, 1)


def test_bootstrap_monte_carlo_and_seed():
    ref, _, measured = _charts(100, 0.01, seed=3)
    m = xccm.fit(measured, ref)
    u = xccm.uncertainty(measured, ref, m, method="bootstrap", n=100, seed=5)
    predicted = np.sqrt((u["standard_error"] ** 2).mean("rep"))
    np.testing.assert_allclose(predicted / m.std("rep", ddof=1), 1, atol=0.2)
    linear = xccm.uncertainty(measured, ref, m)
    ratio = float((u["delta_e_rms"] / linear["delta_e_rms"]).median())
    assert 0.8 < ratio < 1.2
    few, m_few = measured.isel(rep=slice(0, 3)), m.isel(rep=slice(0, 3))
    once = xccm.uncertainty(few, ref, m_few, method="bootstrap", n=20, seed=5)
    again = xccm.uncertainty(few, ref, m_few, method="bootstrap", n=20, seed=5)
    xr.testing.assert_identical(once, again)
    other = xccm.uncertainty(few, ref, m_few, method="bootstrap", n=20, seed=6)
    assert not np.allclose(other["covariance"], once["covariance"])
    assert u.attrs["method"] == "bootstrap" and "dof" not in u


def test_bootstrap_white_balance_and_delta_e_fit():
    ref, _, measured = _charts(2, 0.005)
    wb = xccm.fit(measured, ref, init="white_balance")
    with pytest.raises(ValueError, match="bootstrap"):
        xccm.uncertainty(measured, ref, wb)
    u = xccm.uncertainty(measured, ref, wb, method="bootstrap", n=30)
    se = u["standard_error"].values
    off_diagonal = ~np.eye(3, dtype=bool)
    assert np.all(se[:, off_diagonal] == 0) and np.all(se[:, ~off_diagonal] > 0)
    de_fit = xccm.fit(measured, ref, loss="ciede2000")
    ub = xccm.uncertainty(measured, ref, de_fit, method="bootstrap", n=8)
    ul = xccm.uncertainty(measured, ref, de_fit)
    ratio = (ub["delta_e_rms"] / ul["delta_e_rms"]).values
    assert np.all((ratio > 0.3) & (ratio < 3))


def test_lazy_stays_lazy():
    ref, _, measured = _charts(8, 0.01)
    m = xccm.fit(measured, ref)
    eager = xccm.uncertainty(measured, ref, m)
    boot = xccm.uncertainty(measured, ref, m, method="bootstrap", n=10)
    lazy = measured.chunk(rep=3)
    with raise_if_dask_computes():
        ml = xccm.fit(lazy, ref)
        u = xccm.uncertainty(lazy, ref, ml)
        ub = xccm.uncertainty(lazy, ref, ml, method="bootstrap", n=10)
    for ds in (u, ub):
        assert all(v.chunks is not None for v in ds.data_vars.values())
    assert u["covariance"].chunks[0] == (3, 3, 2)
    xr.testing.assert_allclose(u.compute(), eager)
    xr.testing.assert_allclose(ub.compute(), boot)


def test_colours_grid_and_inputs_unchanged():
    ref, _, measured = _charts(2, 0.01)
    m = xccm.fit(measured, ref)
    grid = xr.DataArray(
        np.stack(np.meshgrid(*[np.linspace(0.1, 0.9, 3)] * 3), -1).reshape(-1, 3),
        dims=("colour", "channel"),
    )
    before = measured.copy(deep=True)
    u = xccm.uncertainty(measured, ref, m, colours=grid)
    xr.testing.assert_identical(measured, before)
    assert u["delta_e"].dims == ("rep", "colour") and u["delta_e"].shape == (2, 27)
    assert np.all(u["delta_e"] > 0)
    # Closed form of the linearised propagation: cov(c) = (x kron I)^T Cov (x kron I) in
    # linear RGB with the linear-RGB distance (L = -I), so delta_e = sqrt(trace cov(c)).
    lin = xccm.uncertainty(measured, ref, m, colours=grid, distance="linear_rgb")
    cov = lin["covariance"].values[0].reshape(3, 3, 3, 3)
    x = grid.values
    expected = np.sqrt(np.einsum("ci,ijkj,ck->c", x, cov, x))
    np.testing.assert_allclose(lin["delta_e"].values[0], expected, rtol=1e-6)


def test_too_few_samples_give_nan():
    ref, _, measured = _charts(1, 0.01)
    few = measured.isel(patch=slice(0, 3))
    m = xccm.fit(few, ref.isel(patch=slice(0, 3)))
    u = xccm.uncertainty(few, ref.isel(patch=slice(0, 3)), m)
    assert float(u["dof"].squeeze()) == 0 and np.isnan(u["covariance"]).all()


def test_bad_input():
    ref, _, measured = _charts(1, 0.01)
    m = xccm.fit(measured, ref)
    with pytest.raises(ValueError, match="method"):
        xccm.uncertainty(measured, ref, m, method="jackknife")
    with pytest.raises(ValueError, match="n "):
        xccm.uncertainty(measured, ref, m, method="bootstrap", n=1)
    with pytest.raises(TypeError, match="DataArrays"):
        xccm.uncertainty(measured.values, ref, m)
    with pytest.raises(ValueError, match="channel_in"):
        xccm.uncertainty(measured, ref, np.eye(5, 3))
    with pytest.raises(ValueError, match="colours"):
        xccm.uncertainty(measured, ref, m, colours=np.ones((2, 3)))
    with pytest.raises(ValueError, match="same labels"):
        xccm.uncertainty(measured, ref.assign_coords(patch=[f"p{i}" for i in range(24)]), m)


def _glare(measured):
    """Glare on patches 3 and 12 of every replicate: washed out towards white."""
    bad = np.zeros(measured.sizes["patch"], bool)
    bad[[3, 12]] = True
    flag = xr.DataArray(bad, dims="patch", coords={"patch": measured["patch"]})
    return xr.where(flag, 0.5 * measured + 0.45, measured).transpose(*measured.dims)


def test_robust_fit_takes_its_weights_and_monte_carlo():
    ref, _, clean = _charts(200, 0.01, seed=7)
    measured = _glare(clean)
    m, w = xccm.fit(measured, ref, robust="tukey", return_weights=True)
    with pytest.raises(ValueError, match=r"robust='tukey'.*robust_weights="):
        xccm.uncertainty(measured, ref, m)
    with pytest.raises(TypeError, match="robust_weights"):
        xccm.uncertainty(measured, ref, m, robust_weights=w.values)
    u = xccm.uncertainty(measured, ref, m, robust_weights=w)
    # Closed form: the covariance of the weighted least squares at the final weights (the
    # fit is exactly that weighted fit), which test_least_squares_* check against curve_fit.
    weighted = xccm.fit(measured, ref, weights=w.fillna(0))
    xr.testing.assert_allclose(
        m.drop_vars(["robust_scale", "robust_rounds", "robust_converged"]), weighted, rtol=1e-6
    )
    plain = xccm.uncertainty(measured, ref, weighted, weights=w.fillna(0))
    xr.testing.assert_allclose(u, plain)
    # The glare is rejected (weight 0) and does not count in the degrees of freedom.
    assert np.all(w.sel(patch=ref.patch[[3, 12]]) == 0)
    assert np.all(u["dof"] == 24 - 2 - 3)
    # Monte-Carlo: predicted vs observed spread of the coefficients over the replicates.
    predicted = np.sqrt((u["standard_error"] ** 2).mean("rep"))
    np.testing.assert_allclose(predicted / m.std("rep", ddof=1), 1, atol=0.2)
    # Treated as unweighted (the attrs stripped), the glare inflates the uncertainty.
    naive = xccm.uncertainty(measured, ref, m.drop_attrs())
    assert float((naive["delta_e_rms"] / u["delta_e_rms"]).median()) > 3


def test_robust_fit_bootstrap_and_lazy():
    ref, _, clean = _charts(4, 0.01, seed=8)
    measured = _glare(clean)
    m, w = xccm.fit(measured, ref, robust="tukey", return_weights=True)
    linear = xccm.uncertainty(measured, ref, m, robust_weights=w)
    boot = xccm.uncertainty(measured, ref, m, method="bootstrap", n=40, seed=1)  # refits robustly
    ratio = (boot["delta_e_rms"] / linear["delta_e_rms"]).values
    assert np.all((ratio > 0.5) & (ratio < 2))
    lazy = measured.chunk(rep=2)
    with raise_if_dask_computes():
        ml, wl = xccm.fit(lazy, ref, robust="tukey", return_weights=True)
        ul = xccm.uncertainty(lazy, ref, ml, robust_weights=wl)
    assert ul["covariance"].chunks is not None
    xr.testing.assert_allclose(ul.compute(), linear)
