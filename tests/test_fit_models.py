"""fit of every model of the registry: closed forms, ridge, the white-point constraint."""

from __future__ import annotations

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import raise_if_dask_computes
from xccm import _refine, colorimetry, models
from xccm.fitting import DEFAULT_RIDGE, check_model_options

colour = pytest.importorskip("colour")

#: Every expansion of colour-science's ``matrix_colour_correction``: xccm's kwargs.
EXPANSIONS = [
    *({"model": "root_polynomial", "degree": g} for g in (2, 3, 4)),
    *({"model": "polynomial", "degree": g} for g in (2, 3, 4)),
    *({"model": "polynomial", "terms": t} for t in (5, 7, 8, 10, 11, 14, 16, 17, 19, 20, 22, 35)),
]
MIX = np.array([[0.9, 0.1, 0.0], [0.05, 0.8, 0.1], [0.0, 0.1, 1.1]])
ROOT2 = {"model": "root_polynomial", "degree": 2}
WHITE = "white 9.5 (.05 D)"


def _camera(n: int, seed: int = 0, frames: tuple[int, ...] = ()):
    """``n`` well-spread colours and a mildly non-linear camera response to them."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.05, 1.0, (*frames, n, 3))
    d = (s @ MIX) ** 1.1 + 0.03 * np.sqrt(s[..., [0]] * s[..., [1]])
    return s, d


def _labelled(s, d, frames: bool = False):
    dims = ("time", "patch", "channel") if frames else ("patch", "channel")
    coords = {"patch": [f"p{i}" for i in range(s.shape[-2])], "channel": ["R", "G", "B"]}
    return xr.DataArray(s, dims=dims, coords=coords), xr.DataArray(
        d[0] if frames and d.ndim == 3 and d.shape != s.shape else d,
        dims=dims[-2:] if d.ndim == 2 else dims,
        coords=coords,
    )


def _chart_problem(n_frames: int = 0):
    """ColorChecker-like: the built-in chart (Lab), a camera with crosstalk and a gamma."""
    ref = xccm.chart()
    rng = np.random.default_rng(3)
    lin = (ref.values.clip(0, None) @ MIX.T) * 0.8 + 0.01
    shape = (n_frames, *lin.shape) if n_frames else lin.shape
    values = lin**1.08 + rng.normal(0, 0.002, shape)
    dims = ("time", "patch", "channel") if n_frames else ("patch", "channel")
    meas = xr.DataArray(values, dims=dims, coords={"patch": ref.patch, "channel": ["R", "G", "B"]})
    return meas, ref


# ---------------------------------------------------------------------------------------------
# least squares


def _colour_science(kw: dict) -> tuple[str, dict]:
    """colour-science's method and kwargs for the model xccm's ``kw`` names."""
    if "terms" in kw:
        return "Cheung 2004", {"terms": kw["terms"]}
    root = kw["model"] == "root_polynomial"
    return "Finlayson 2015", {"degree": kw["degree"], "root_polynomial_expansion": root}


def _samples(n: int):
    """24: the ColorChecker-like chart problem (labelled); else ``n`` colours spanning [0, 1]."""
    if n == 24:
        return _chart_problem()
    rng = np.random.default_rng(1)
    s = rng.uniform(0.0, 1.0, (n, 3))
    d = (s @ MIX) ** 1.1 + 0.03 * np.sqrt(s[..., [0]] * s[..., [1]])
    return _labelled(s, d)


def _ls_cases():
    """(kw, n) of the least-squares comparisons: every expansion, on 24 and on 400 samples,
    less the unsolvable (as many terms as samples or more: polynomial degree 4, Cheung 35 on
    24; root-polynomial degree 4 on the chart, condition 6e9: xccm calls it singular and
    colour-science's pseudo-inverse is ill-determined) and root-polynomial degree 4 on 400
    (its own test below)."""
    out = []
    for kw in EXPANSIONS:
        k = models.resolve_model(**kw).n_terms
        for n in (24, 400):
            if k < n and not (kw == {"model": "root_polynomial", "degree": 4}):
                out.append(pytest.param(kw, n, id=f"{'-'.join(map(str, kw.values()))}-{n}"))
    return out


def _compare_with_colour_science(kw, n):
    """The fit, colour-science's, and both applied to the samples (colour-science's apply)."""
    meas, ref = _samples(n)
    name, ckw = _colour_science(kw)
    ccm = colour.matrix_colour_correction(meas.values, ref.values, method=name, **ckw)
    got = xccm.fit(meas, ref, ridge=None, **kw)
    values = colour.apply_matrix_colour_correction(meas.values, ccm, method=name, **ckw)
    return got, ccm.T, xccm.apply(meas, got), values


@pytest.mark.parametrize(("kw", "n"), _ls_cases())
def test_least_squares_equals_colour_science(kw, n):
    """1e-10, relative to the largest coefficient (up to ~140 for Cheung 22 on the chart),
    on the coefficients, and on the fitted values (each library's own apply): the refined
    normal equations (``eps * cond(T)``, design condition numbers up to 8e4 here) agree with
    colour-science's pseudo-inverse (SVD) to its own accuracy."""
    got, want, fitted, values = _compare_with_colour_science(kw, n)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got.values, want, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(fitted.values, values, rtol=0, atol=1e-10)


def test_root_polynomial_degree_four_equals_colour_science_on_fitted_values():
    """Root-polynomial degree 4 on 400 colours: the design's condition number is 6e5, past
    the ``eps**(-1/3) ~ 1e5`` up to which one step of refinement reaches ``eps * cond(T)``
    (it leaves ``(eps * cond(T)**2)**2``, 6e-9 relative; 4e-10 measured, and colour-science's
    SVD is itself 3e-11 from a long-double solution). The coefficients are ill-determined
    (largest ~330); the fitted values are not, and agree to 1e-10."""
    kw = {"model": "root_polynomial", "degree": 4}
    got, want, fitted, values = _compare_with_colour_science(kw, 400)
    np.testing.assert_allclose(fitted.values, values, rtol=0, atol=1e-10)
    cond = np.linalg.cond(models.expand(_samples(400)[0].values, **kw))
    assert 1e5 < cond < 1e6
    bound = max(1e-10, (1.1e-16 * cond**2) ** 2) * float(np.abs(want).max())
    np.testing.assert_allclose(got.values, want, rtol=0, atol=bound)


def test_weighted_least_squares_equals_lstsq_on_expanded_samples():
    s, d = _camera(40, seed=2)
    w = np.random.default_rng(4).uniform(0.0, 3.0, 40)
    w[[3, 7]] = 0.0
    for kw in ({"degree": 2}, {"degree": 3}, {"terms": 11}, {"terms": 22}):
        model = "root_polynomial" if "degree" in kw else "polynomial"
        t = models.expand(s, model, **kw)
        root = np.sqrt(w)[:, None]
        want = np.linalg.lstsq(t * root, d * root, rcond=None)[0]
        got = xccm.fit(s, d, model=model, weights=w, ridge=None, **kw)
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * scale)


def test_refined_least_squares_is_batched_lazy_and_keeps_nan_and_mask_rules():
    """The refinement's second pass (the residual's statistics) leaves out what the first
    left out, per frame, chunk by chunk: NaN colours, masked patches, a frame with too few
    patches (NaN and the warning); a lazy fit chunked along frames and patches stays lazy."""
    meas, ref = _chart_problem(n_frames=3)
    meas = meas.copy()
    meas[1, [2, 9]] = np.nan
    meas[2, 12:] = np.nan  # 12 patches left: fewer than the 13 terms
    mask = xr.DataArray(np.ones(24, bool), dims="patch", coords={"patch": ref.patch})
    mask[[4, 20]] = False
    kw = {"model": "root_polynomial", "degree": 3, "ridge": None}
    with pytest.warns(xccm.InsufficientSamplesWarning, match="fewer than 13"):
        m = xccm.fit(meas, ref, mask=mask, **kw)
    assert np.isnan(m[2]).all()
    name, ckw = _colour_science(kw)
    for frame in (0, 1):
        keep = mask.values & np.isfinite(meas[frame].values).all(-1)
        want = colour.matrix_colour_correction(
            meas[frame].values[keep], ref.values[keep], method=name, **ckw
        ).T
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(m[frame], want, rtol=0, atol=1e-10 * scale)
        one = xccm.fit(meas[frame], ref, mask=mask, **kw)
        np.testing.assert_allclose(m[frame], one, rtol=0, atol=1e-10 * scale)
    with raise_if_dask_computes():
        lazy = xccm.fit(meas.chunk(time=1, patch=10), ref.chunk(patch=7), mask=mask, **kw)
    assert isinstance(lazy.data, dsa.Array)
    with pytest.warns(xccm.InsufficientSamplesWarning):
        lazy = lazy.compute()
    scale = float(np.abs(m[:2]).max())
    np.testing.assert_allclose(lazy, m, rtol=0, atol=1e-10 * scale)


def test_labelled_matrix_applies_with_nothing_else():
    s, d = _camera(30)
    meas, ref = _labelled(s, d)
    m = xccm.fit(meas, ref, model="root_polynomial", degree=2, ridge=None)
    assert m.dims == ("channel_in", "channel")
    assert m["channel_in"].values.tolist() == [
        "R", "G", "B", "sqrt(R*G)", "sqrt(G*B)", "sqrt(R*B)",
    ]  # fmt: skip
    assert m.attrs["model"] == "root_polynomial" and m.attrs["degree"] == 2
    cheung = xccm.fit(meas, ref, model="polynomial", terms=10)
    assert cheung.attrs["terms"] == 10 and cheung.sizes["channel_in"] == 10
    corrected = xccm.apply(meas, m)
    want = models.expand(s, "root_polynomial", degree=2) @ m.values
    np.testing.assert_allclose(corrected.values, want, rtol=0, atol=1e-12)


def test_root_polynomial_fit_is_exposure_invariant():
    s, d = _camera(30, seed=5)
    for degree, ridge in ((2, None), (2, 0.1), (3, "auto")):
        m = xccm.fit(s, d, model="root_polynomial", degree=degree, ridge=ridge)
        scaled = xccm.fit(7.5 * s, 7.5 * d, model="root_polynomial", degree=degree, ridge=ridge)
        np.testing.assert_allclose(scaled, m, rtol=0, atol=1e-10)
    poly = xccm.fit(s, d, model="polynomial", degree=2, ridge=None)  # not invariant
    assert not np.allclose(xccm.fit(2 * s, 2 * d, model="polynomial", degree=2), poly)


def test_too_few_patches_is_nan_with_a_warning_and_min_samples_floor():
    s, d = _camera(8, frames=(3,))
    s[1, 3:] = np.nan  # frame 1 keeps 3 patches: fewer than the 6 terms
    with pytest.warns(xccm.InsufficientSamplesWarning, match="fewer than 6"):
        m = xccm.fit(s, d, model="root_polynomial", degree=2, ridge=None)
    assert np.isnan(m[1]).all() and np.isfinite(m[[0, 2]]).all()
    with pytest.warns(xccm.InsufficientSamplesWarning, match="fewer than 6"):  # floor: 6, not 2
        m = xccm.fit(s, d, model="root_polynomial", degree=2, min_samples=2)
    assert np.isnan(m[1]).all()
    with pytest.raises(ValueError, match="at least 6 valid samples"):
        xccm.fit(s[1], d[1], model="root_polynomial", degree=2)


def test_nan_mask_and_saturation_leave_samples_out():
    s, d = _camera(30, seed=6)
    mask = np.ones(30, bool)
    mask[[2, 5]] = False
    s_nan = s.copy()
    s_nan[9] = np.nan
    s_sat = s_nan.copy()
    s_sat[11] = 1.5
    keep = mask.copy()
    keep[[9, 11]] = False
    want = xccm.fit(s[keep], d[keep], **ROOT2)
    got = xccm.fit(s_sat, d, mask=mask, saturation=(0.0, 1.2), **ROOT2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_batch_equals_loop_over_frames_and_dask_is_lazy():
    s, d = _camera(24, seed=7, frames=(4,))
    meas = xr.DataArray(s, dims=("time", "patch", "channel"))
    ref = xr.DataArray(d, dims=("time", "patch", "channel"))
    batch = xccm.fit(meas, ref, **ROOT2, sample_dims="patch")
    assert batch.dims == ("time", "channel_in", "channel")
    for t in range(4):
        one = xccm.fit(meas.isel(time=t), ref.isel(time=t), **ROOT2)
        np.testing.assert_allclose(batch.isel(time=t), one, rtol=0, atol=1e-12)
    with raise_if_dask_computes():
        lazy = xccm.fit(meas.chunk(time=1), ref.chunk(time=2), **ROOT2, sample_dims="patch")
    assert isinstance(lazy.data, dsa.Array)
    xr.testing.assert_allclose(lazy.compute(), batch, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# ΔE fits


def test_ciede2000_fit_of_a_model_lowers_its_start_batched_and_lazily():
    meas, ref = _chart_problem(n_frames=2)
    kw = {**ROOT2, "loss": "ciede2000", "white_point": "preserve", "max_iter": 40}
    m = xccm.fit(meas, ref, **kw)
    assert (m.loss < m.start_loss).all() and m.attrs["loss"] == "ciede2000"
    one = xccm.fit(meas.isel(time=1), ref, **kw)
    np.testing.assert_allclose(m.isel(time=1), one, rtol=0, atol=1e-12)
    with raise_if_dask_computes():
        lazy = xccm.fit(meas.chunk(time=1), ref, **kw)
    np.testing.assert_allclose(lazy.values, m.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lazy.loss.values, m.loss.values, rtol=0, atol=1e-12)


def test_robust_fit_of_a_model_rejects_a_glint():
    meas, ref = _chart_problem()
    glare = meas.copy()
    glare[5] = 0.97
    _, w = xccm.fit(glare, ref, **ROOT2, robust="tukey", return_weights=True)
    assert float(w[5]) == 0.0 and int((w > 0.5).sum()) >= 21


def test_fitted_degree_two_matrix_round_trips():
    meas, ref = _chart_problem()
    m = xccm.fit(meas, ref, **ROOT2)
    rng = np.random.default_rng(8)
    img = xr.DataArray(
        rng.uniform(0.05, 0.9, (6, 5, 3)),
        dims=("y", "x", "channel"),
        coords={"channel": ["R", "G", "B"]},
    )
    back = xccm.inverse(xccm.apply(img, m), m)
    xr.testing.assert_allclose(back, img, rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# ridge


def _ridge_by_augmented_rows(t, d, w, lam, target):
    """Tikhonov by lstsq on the samples and sqrt(lam * A_jj) rows toward ``target``."""
    a_diag = (w[:, None] * t * t).sum(0)
    rows = np.diag(np.sqrt(lam * a_diag))
    root = np.sqrt(w)[:, None]
    big_t = np.concatenate([t * root, rows])
    big_d = np.concatenate([d * root, rows @ target])
    return np.linalg.lstsq(big_t, big_d, rcond=None)[0]


@pytest.mark.parametrize("target", ["linear", "identity"])
def test_ridge_closed_form_equals_augmented_lstsq(target):
    s, d = _camera(24, seed=9)
    w = np.random.default_rng(10).uniform(0.5, 2.0, 24)
    t = models.expand(s, "root_polynomial", degree=3)
    m0 = np.zeros((13, 3))
    if target == "linear":
        root = np.sqrt(w)[:, None]
        m0[:3] = np.linalg.lstsq(s * root, d * root, rcond=None)[0]
    else:
        m0[:3] = np.eye(3)
    for lam in (1e-3, 0.5):
        want = _ridge_by_augmented_rows(t, d, w, lam, m0)
        got = xccm.fit(
            s, d, model="root_polynomial", degree=3, weights=w, ridge=lam, ridge_target=target
        )
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    big = xccm.fit(
        s, d, model="root_polynomial", degree=3, weights=w, ridge=1e9, ridge_target=target
    )
    np.testing.assert_allclose(big, m0, rtol=0, atol=1e-6)  # a huge ridge: the target


def test_ridge_does_not_depend_on_patch_count_or_weight_scale():
    s, d = _camera(24, seed=11)
    m = xccm.fit(s, d, **ROOT2, ridge=0.05)
    twice = xccm.fit(np.concatenate([s, s]), np.concatenate([d, d]), **ROOT2, ridge=0.05)
    heavy = xccm.fit(s, d, **ROOT2, ridge=0.05, weights=np.full(24, 9.0))
    np.testing.assert_allclose(twice, m, rtol=0, atol=1e-12)
    np.testing.assert_allclose(heavy, m, rtol=0, atol=1e-12)
    assert not np.allclose(m, xccm.fit(s, d, **ROOT2, ridge=None), atol=1e-6)


def test_ridge_rescues_an_underdetermined_degree_four_fit():
    meas, ref = _chart_problem()  # 22 terms, 24 patches: numerically singular
    with pytest.raises(ValueError, match="at least 22"):
        xccm.fit(meas, ref, model="root_polynomial", degree=4, ridge=None)
    m = xccm.fit(meas, ref, model="root_polynomial", degree=4)  # the default ridge
    assert np.isfinite(m).all() and m.attrs["ridge"] > 0


def test_linear_ridge_toward_the_least_squares_is_the_least_squares():
    s, d = _camera(24, seed=13)
    np.testing.assert_allclose(
        xccm.fit(s, d, ridge=0.3), xccm.fit(s, d), rtol=0, atol=1e-12
    )  # the penalty's minimum is the least squares itself


def test_refine_penalty_residuals_minimise_the_ridge_objective():
    """On the "linear_rgb" loss the LM with the penalty residuals finds the closed form."""
    s, d = _camera(24, seed=14)
    t = models.expand(s, "root_polynomial", degree=2)
    metric = colorimetry.metric("linear_rgb", "sRGB")
    m0 = np.zeros((6, 3))
    m0[:3] = np.linalg.lstsq(s, d, rcond=None)[0]
    start = np.linalg.lstsq(t, d, rcond=None)[0]
    res = _refine.refine(
        t[None], d[None], None, start[None], metric, ridge=0.2, ridge_target=m0[None]
    )
    want = _ridge_by_augmented_rows(t, d, np.ones(24), 0.2, m0)
    np.testing.assert_allclose(res.matrix[0], want, rtol=0, atol=1e-7)
    assert res.loss[0] > res.start_loss[0]  # loss: the colour error alone, which ridge raises


# ---------------------------------------------------------------------------------------------
# white point


def _kkt(t, d, c, dw):
    """Equality-constrained least squares ``min |T M - D|^2, c M = dw`` by its KKT system."""
    k = t.shape[1]
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = t.T @ t
    kkt[:k, k] = kkt[k, :k] = c
    rhs = np.concatenate([t.T @ d, dw[None]])
    return np.linalg.solve(kkt, rhs)[:k]


@pytest.mark.parametrize(
    "kw", [{"model": "linear"}, {"model": "affine"}, ROOT2], ids=["linear", "affine", "root2"]
)
def test_white_point_is_mapped_exactly_and_equals_kkt(kw):
    s, d = _camera(24, seed=15)
    d[17] = [0.9, 0.9, 0.9]  # the brightest neutral reference
    d[4] = [0.5, 0.5, 0.52]
    m = xccm.fit(s, d, ridge=None, white_point="preserve", **kw)
    t = models.expand(s, kw["model"], **{k: v for k, v in kw.items() if k != "model"})
    np.testing.assert_allclose(t[17] @ m, d[17], rtol=0, atol=1e-10)
    np.testing.assert_allclose(m, _kkt(t, d, t[17], d[17]), rtol=0, atol=1e-10)
    named = xccm.fit(s, d, ridge=None, white_point="preserve", white_patch=4, **kw)
    np.testing.assert_allclose(t[4] @ named, d[4], rtol=0, atol=1e-10)


def test_white_point_kept_by_the_delta_e_fit_and_named_patch():
    meas, ref = _chart_problem()
    m = xccm.fit(meas, ref, **ROOT2, loss="ciede2000", white_point="preserve", white_patch=WHITE)
    assert m.attrs["white_point"] == "preserve" and bool(m.loss < m.start_loss)
    rgb = colorimetry.convert(ref, "srgb-linear", dim="channel")
    got = xccm.apply(meas.sel(patch=WHITE), m)
    np.testing.assert_allclose(got, rgb.sel(patch=WHITE), rtol=0, atol=1e-10)
    neutral = xccm.fit(meas, ref, **ROOT2, white_point="preserve")  # the default: the same
    np.testing.assert_allclose(
        xccm.apply(meas.sel(patch=WHITE), neutral), rgb.sel(patch=WHITE), rtol=0, atol=1e-10
    )
    with pytest.raises(ValueError, match="no sample labelled 'snow'"):
        xccm.fit(meas, ref, **ROOT2, white_point="preserve", white_patch="snow")


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_white_point_per_frame_with_labelled_channels(model):
    # frames of a chart whose channels have labels and another coord: the affine "1" has
    # neither (this raised "coordinate ... not present in all datasets")
    frames, ref = _chart_problem(n_frames=2)
    frames = frames.assign_coords(wavelength=("channel", [610.0, 540.0, 460.0]))
    m = xccm.fit(frames, ref, model=model, loss="ciede2000", white_point="preserve")
    assert m.dims[0] == "time" and bool((m.loss < m.start_loss).all())
    rgb = colorimetry.convert(ref, "srgb-linear", dim="channel")
    got = xccm.apply(frames.sel(patch=WHITE), m)
    np.testing.assert_allclose(got, rgb.sel(patch=WHITE).broadcast_like(got), atol=1e-10)


def test_white_balance_with_white_point_is_the_white_gains():
    s, d = _camera(24, seed=16)
    d[17] = [0.9, 0.9, 0.9]
    m = xccm.fit(s, d, **ROOT2, init="white_balance", white_point="preserve")
    want = np.zeros((6, 3))
    want[[0, 1, 2], [0, 1, 2]] = d[17] / s[17]
    np.testing.assert_allclose(m, want, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": "cubic"}, ValueError, "model"),
        ({"model": "root_polynomial"}, ValueError, "degree"),
        ({"model": "root_polynomial", "degree": 5}, ValueError, "degree=5"),
        ({"model": "polynomial", "terms": 6}, ValueError, "terms=6"),
        ({"model": "linear", "degree": 2}, ValueError, "linear"),
        ({"model": "root_polynomial", "degree": 2.0}, TypeError, "integer"),
        ({"ridge": -1.0}, ValueError, "ridge must be a finite number >= 0"),
        ({"ridge": "big"}, ValueError, "ridge must be"),
        ({"ridge_target": "zero"}, ValueError, "ridge_target must be"),
        ({"white_point": "keep"}, ValueError, "white_point must be"),
        ({"white_patch": 3}, ValueError, "white_point='preserve' too"),
        ({"init": "white_balance", "ridge": 0.1}, ValueError, "nothing to regularise"),
    ],
)
def test_bad_input(kwargs, error, match):
    s, d = _camera(30)
    with pytest.raises(error, match=match):
        xccm.fit(s, d, **kwargs)


def test_nonlinear_model_needs_three_channels_and_identity_target_square():
    s, d = _camera(30)
    four = np.concatenate([s, s[:, :1]], axis=-1)
    with pytest.raises(ValueError, match="3"):
        xccm.fit(four, d, **ROOT2)
    with pytest.raises(ValueError, match="ridge_target='identity' needs"):
        xccm.fit(s, d[:, :2], **ROOT2, ridge=0.1, ridge_target="identity")


@pytest.mark.parametrize(
    "options",
    [
        {"model": "root_polynomial"},
        {"model": "linear", "degree": 3},
        {"model": "polynomial", "degree": 2, "terms": 10},
        {"model": "polynomial", "terms": 6},
        {"model": "affine", "ridge": -1.0},
        {"model": "linear", "white_point": "keep"},
        {"model": "linear", "white_patch": "white 9.5 (.05 D)"},
    ],
)
def test_check_model_options_refuses_what_fit_refuses(options):
    """The checks without data are fit's own: the same error, the same message."""
    ref = xccm.chart()
    with pytest.raises((ValueError, TypeError)) as by_fit:
        xccm.fit(ref, ref, **options)
    with pytest.raises(type(by_fit.value)) as by_check:
        check_model_options(**options)
    assert str(by_check.value) == str(by_fit.value)


def test_check_model_options_resolves_the_model_and_the_ridge():
    spec, ridge = check_model_options("polynomial", terms=10)
    assert (spec.name, spec.n_terms, ridge) == ("polynomial", 10, DEFAULT_RIDGE)
    assert check_model_options("affine")[1] is None  # "auto": no penalty for affine
    assert check_model_options("linear", ridge=0.5)[1] == 0.5
    assert check_model_options("root_polynomial", degree=2, ridge=None)[1] is None
