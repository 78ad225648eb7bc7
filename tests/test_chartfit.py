"""Fitting to a chart with colour losses: the optimiser, masks and weights, report, laziness."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import lstsq, raise_if_dask_computes
from xccm import _refine, _threads, colorimetry

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    colour = pytest.importorskip("colour")
scipy_optimize = pytest.importorskip("scipy.optimize")

LOSSES = ["cie76", "cie94", "cie94_textiles", "ciede2000", "cmc", "cmc_2to1", "rgb"]
MIX = np.array([[0.7, 0.2, 0.1], [0.25, 0.6, 0.15], [0.05, 0.25, 0.7]])


def camera(seed: int = 0, frames: int | None = None) -> xr.DataArray:
    """Linear camera colours of the ColorChecker: a channel mix, exposure, flare, noise."""
    rng = np.random.default_rng(seed)
    ref = xccm.chart()
    shape = (24, 3) if frames is None else (frames, 24, 3)
    exposure = rng.uniform(0.6, 0.9, (*shape[:-2], 1, 1)) if frames else 0.8
    values = (ref.values.clip(0) @ MIX) * exposure + 0.01 + rng.normal(0, 0.004, shape)
    dims = ("patch", "channel") if frames is None else ("time", "patch", "channel")
    return xr.DataArray(values, dims=dims, coords=ref.coords)


def loss_of(measured, reference, matrix, method, w=None):
    """OpenCV's loss, computed independently with colour-science."""
    model_rows = np.asarray(matrix).shape[0]
    s = measured.values
    if model_rows == 4:
        s = np.concatenate([s, np.ones((len(s), 1))], axis=-1)
    pred = s @ np.asarray(matrix)
    cs = colour.RGB_COLOURSPACES["sRGB"]
    if method == "rgb":

        def enc(x):  # mirrored below 0, as OpenCV's sRGB (and extended sRGB) are
            return np.sign(x) * cs.cctf_encoding(np.abs(x))

        de = np.linalg.norm(enc(pred) - enc(reference.values), axis=-1)
    else:
        lab = colour.XYZ_to_Lab(colour.RGB_to_XYZ(pred, cs), cs.whitepoint)
        lab_ref = colour.XYZ_to_Lab(colour.RGB_to_XYZ(reference.values, cs), cs.whitepoint)
        name, kwargs = colorimetry.DISTANCES[method]
        de = colour.delta_E(lab_ref, lab, name, **kwargs)
    w = np.ones(len(de)) if w is None else w / w.mean()
    return float(np.sqrt(np.mean(w * de**2)))


# ---------------------------------------------------------------------------------------------
# the optimiser


@pytest.mark.parametrize("method", LOSSES)
@pytest.mark.parametrize("model", ["linear", "affine"])
def test_fit_minimises_the_loss_like_scipy(method, model):
    measured, ref = camera(), xccm.chart()
    m = xccm.fit(measured, ref, loss=method, model=model, saturation=None)
    assert bool(m.converged) and int(m.iterations) > 0
    # the loss it reports is the loss, computed independently
    assert float(m.loss) == pytest.approx(loss_of(measured, ref, m.values, method), rel=1e-10)
    start = xccm.fit(measured, ref, model=model)
    assert float(m.start_loss) == pytest.approx(
        loss_of(measured, ref, start.values, method), rel=1e-10
    )
    assert float(m.loss) < float(m.start_loss)
    # scipy.optimize.least_squares (trust-region reflective) from the same start gets no lower
    k = 4 if model == "affine" else 3
    res = scipy_optimize.least_squares(
        lambda p: _residuals(measured, ref, p.reshape(k, 3), method),
        start.values.ravel(),
        xtol=1e-12,
        ftol=1e-12,
        gtol=1e-12,
    )
    assert float(m.loss) <= loss_of(measured, ref, res.x.reshape(k, 3), method) * (1 + 1e-7)


def _residuals(measured, ref, matrix, method):
    s = measured.values
    if matrix.shape[0] == 4:
        s = np.concatenate([s, np.ones((len(s), 1))], axis=-1)
    metric = colorimetry.metric(method)  # smooth ΔE components: scipy converges in few steps
    return metric.components(metric.transform(s @ matrix), metric.transform(ref.values)).ravel()


def test_linear_rgb_loss_is_the_closed_form_weighted_least_squares(rng):
    measured, ref = camera(), xccm.chart()
    w = xr.DataArray(rng.uniform(0.2, 2.0, 24), dims="patch", coords={"patch": ref.patch})
    m = xccm.fit(measured, ref, loss="linear_rgb", weights=w, model="affine", saturation=None)
    expected = lstsq(measured.values, ref.values, w.values, affine=True)
    np.testing.assert_allclose(m.values, expected, rtol=0, atol=1e-12)
    assert int(m.iterations) == 0 and bool(m.converged)
    resid = np.c_[measured.values, np.ones(24)] @ expected - ref.values
    wn = w.values / w.values.mean()
    assert float(m.loss) == pytest.approx(np.sqrt(np.sum(wn[:, None] * resid**2) / 24))


def test_never_worse_than_the_start_even_from_a_poor_start():
    measured, ref = camera(), xccm.chart()
    m = xccm.fit(measured, ref, loss="ciede2000", init="white_balance", saturation=None)
    assert float(m.loss) <= float(m.start_loss)
    assert m.attrs["init"] == "white_balance"
    stuck = xccm.fit(measured, ref, loss="ciede2000", saturation=None, max_iter=1)
    assert float(stuck.loss) <= float(stuck.start_loss) and int(stuck.iterations) == 1
    zero = xccm.fit(measured, ref, loss="ciede2000", saturation=None, max_iter=0)
    np.testing.assert_array_equal(zero.values, xccm.fit(measured, ref).values)


def test_batch_elements_are_independent_of_their_batch():
    frames = camera(seed=1, frames=6)
    ref = xccm.chart()
    together = xccm.fit(frames, ref, loss="ciede2000", saturation=None)
    assert together.dims == ("time", "channel_in", "channel")
    assert together.loss.dims == ("time",) and bool(together.converged.all())
    alone = xccm.fit(frames.isel(time=4), ref, loss="ciede2000", saturation=None)
    np.testing.assert_array_equal(together.isel(time=4).values, alone.values)
    assert float(together.loss[4]) == float(alone.loss)


@pytest.mark.parametrize("affine", [False, True])
def test_refine_kernel_element_alone_is_bit_for_bit_its_batch_result(affine):
    # A lone frame takes each trial point's Jacobian in the trial's call (computed ahead),
    # a batch computes it after the step is accepted: the same values either way.
    frames = camera(seed=5, frames=12)
    metric = colorimetry.metric("ciede2000")
    s = frames.values
    d = np.broadcast_to(xccm.chart().values, s.shape)
    m0 = np.stack([lstsq(x, y) for x, y in zip(s, d, strict=True)])
    if affine:
        m0 = np.concatenate([m0, np.zeros((12, 1, 3))], axis=1)
    limit = np.array([200] * 10 + [0, 3])
    batch = _refine.refine(s, d, None, m0, metric, max_iter=limit)
    assert batch.iterations[10] == 0 and batch.iterations[11] == 3
    assert batch.iterations[:10].min() > 3
    for b in range(12):
        alone = _refine.refine(
            s[b : b + 1], d[b : b + 1], None, m0[b : b + 1], metric, max_iter=limit[b]
        )
        for field in ("matrix", "loss", "start_loss", "iterations", "converged"):
            np.testing.assert_array_equal(getattr(alone, field)[0], getattr(batch, field)[b])


def test_refine_kernel_nan_start_and_masked_samples():
    measured, ref = camera(), xccm.chart()
    metric = colorimetry.metric("cie76")
    s = np.stack([measured.values, measured.values])
    d = np.stack([ref.values, ref.values])
    m0 = np.stack([np.full((3, 3), np.nan), lstsq(measured.values, ref.values)])
    w = np.ones((2, 24))
    w[1, :4] = 0
    s[1, 5] = np.nan
    out = _refine.refine(s, d, w, m0, metric)
    assert np.isnan(out.matrix[0]).all() and np.isnan(out.loss[0]) and not out.converged[0]
    keep = np.ones(24, bool)
    keep[:4] = keep[5] = False
    alone = _refine.refine(s[1:, keep], d[1:, keep], None, m0[1:], metric)
    np.testing.assert_allclose(out.matrix[1], alone.matrix[0], atol=1e-12)
    assert out.loss[1] == pytest.approx(alone.loss[0], rel=1e-12)


# ---------------------------------------------------------------------------------------------
# references in Lab and XYZ, spaces, attrs


def test_lab_reference_is_converted_and_recorded():
    measured = camera()
    lab = xccm.chart(space="lab-d50")
    m_lab = xccm.fit(measured, lab, loss="ciede2000", saturation=None)
    m_rgb = xccm.fit(measured, xccm.convert(lab, "rgb"), loss="ciede2000", saturation=None)
    np.testing.assert_allclose(m_lab.values, m_rgb.values, atol=1e-12)
    assert m_lab.attrs["reference_space"] == "lab-icc-d50"
    assert m_lab.attrs["loss"] == "ciede2000" and m_lab.attrs["rgb_space"] == "sRGB"
    assert m_lab.attrs["lab_white_xy"] == [0.3127, 0.329]
    # without a loss, a Lab reference is still converted (a linear map onto Lab is meaningless)
    plain = xccm.fit(measured, lab)
    np.testing.assert_allclose(plain.values, xccm.fit(measured, xccm.convert(lab, "rgb")).values)
    xyz = xccm.chart(space="xyz-d50")
    m_xyz = xccm.fit(measured, xyz, loss="ciede2000", saturation=None)
    np.testing.assert_allclose(m_xyz.values, m_lab.values, atol=1e-7)


def test_lab_under_d50_and_another_rgb_space():
    measured, lab = camera(), xccm.chart(space="lab-d50")
    m = xccm.fit(measured, lab, loss="cie76", illuminant="D50", saturation=None)
    d50 = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D50"]
    assert m.attrs["lab_white_xy"] == pytest.approx(list(d50))
    p3 = xccm.fit(measured, lab, loss="cie76", rgb_space="display-p3", saturation=None)
    assert p3.attrs["rgb_space"] == "Display P3"
    de = xccm.report(measured, lab, p3, "cie76", rgb_space="display-p3")
    assert float(de["loss"]) == pytest.approx(float(p3.loss), rel=1e-9)


def test_diagnostic_coords_do_not_follow_the_matrix_into_images():
    measured, ref = camera(), xccm.chart()
    m = xccm.fit(measured, ref, loss="cie76", saturation=None)
    out = xccm.apply(measured, m)
    assert not {"loss", "start_loss", "iterations", "converged"} & set(out.coords)
    assert not {"loss", "converged"} & set(xccm.invert(m).coords)


# ---------------------------------------------------------------------------------------------
# masks and weights


def test_saturated_patches_are_left_out():
    measured, ref = camera(), xccm.chart()
    hot = measured.copy()
    hot[18] = [0.99, 0.995, 0.97]  # the white patch clips
    m = xccm.fit(hot, ref, loss="cie76")  # default saturation (0, 0.98) with a loss
    keep = np.arange(24) != 18
    expected = xccm.fit(hot[keep], ref[keep], loss="cie76", saturation=None)
    np.testing.assert_allclose(m.values, expected.values, atol=1e-10)
    assert m.attrs["saturation"] == [0.0, 0.98]
    mask = xccm.saturation_mask(hot, 0.0, 0.98)
    assert mask.dims == ("patch",) and int(mask.sum()) == 23


def test_mask_and_lightness_weights_stay_paired_with_their_patch():
    measured, ref = camera(), xccm.chart()
    mask = xr.ones_like(measured.isel(channel=0), dtype=bool).drop_vars("channel")
    mask[[2, 7, 11]] = False
    m = xccm.fit(measured, ref, loss="linear_rgb", mask=mask, lightness_power=2.0)
    lightness = colour.XYZ_to_Lab(
        colour.RGB_to_XYZ(ref.values, "sRGB"), colour.RGB_COLOURSPACES["sRGB"].whitepoint
    )[:, 0]
    w = lightness**2 * mask.values
    keep = mask.values
    expected = lstsq(measured.values[keep], ref.values[keep], w[keep])
    np.testing.assert_allclose(m.values, expected, atol=1e-12)
    wn = w[keep] / w[keep].mean()
    resid = measured.values[keep] @ expected - ref.values[keep]
    assert float(m.loss) == pytest.approx(np.sqrt(np.sum(wn[:, None] * resid**2) / keep.sum()))
    # Shuffled patch order in the mask: still paired by label, not position.
    shuffled = mask.isel(patch=np.random.default_rng(0).permutation(24))
    again = xccm.fit(measured, ref, loss="linear_rgb", mask=shuffled, lightness_power=2.0)
    xr.testing.assert_identical(again, m)
    lw = xccm.lightness_weights(ref, 2.0)
    np.testing.assert_allclose(lw.values, lightness**2, rtol=1e-12)


def test_masks_and_weights_in_another_patch_order_are_matched_by_label(rng):
    measured, ref = camera(), xccm.chart()
    hot = measured.copy()
    hot[18] = [0.99, 0.995, 0.97]  # left out by the default saturation mask
    w = xr.DataArray(rng.uniform(0.2, 1, 24), dims="patch", coords={"patch": ref.patch})
    mask = xr.DataArray(np.arange(24) % 5 != 0, dims="patch", coords={"patch": ref.patch})
    order = rng.permutation(24)
    for loss in ("linear_rgb", "cie76"):
        m = xccm.fit(hot, ref, loss=loss, weights=w, mask=mask)
        shuffled = xccm.fit(
            hot, ref, loss=loss, weights=w.isel(patch=order), mask=mask.isel(patch=order)
        )
        xr.testing.assert_allclose(shuffled, m, rtol=0, atol=1e-12)
        # Plain arrays have no labels: paired by position, like measured.
        plain = xccm.fit(hot, ref, loss=loss, weights=w.values, mask=mask.values)
        xr.testing.assert_allclose(plain, m, rtol=0, atol=1e-12)
    keep = (np.arange(24) % 5 != 0) & (np.arange(24) != 18)
    expected = lstsq(hot.values[keep], ref.values[keep], w.values[keep])
    m = xccm.fit(hot, ref, loss="linear_rgb", weights=w.isel(patch=order), mask=mask)
    np.testing.assert_allclose(m.values, expected, atol=1e-12)
    # Weights alone (no mask, no saturation) are matched by label too.
    m = xccm.fit(hot, ref, loss="linear_rgb", weights=w.isel(patch=order), saturation=None)
    np.testing.assert_allclose(m.values, lstsq(hot.values, ref.values, w.values), atol=1e-12)


def test_masks_and_weights_with_other_labels_are_an_error_that_lists_them():
    measured, ref = camera(), xccm.chart()
    mask = xr.ones_like(measured.isel(channel=0), dtype=bool).drop_vars("channel")
    renamed = mask.assign_coords(patch=[*mask.patch.values[:-1], "white 2"])
    with pytest.raises(
        ValueError,
        match=r"mask has other 'patch' labels than measured: 1 label\(s\) of measured are "
        r"not in mask \('black 2 \(1.5 D\)'\); 1 label\(s\) of mask are not in "
        r"measured \('white 2'\)\..*mask.reindex\(patch=measured.patch, fill_value=False\)",
    ):
        xccm.fit(measured, ref, loss="cie76", mask=renamed)
    w = xr.DataArray(np.ones(20), dims="patch", coords={"patch": ref.patch.values[4:]})
    with pytest.raises(
        ValueError,
        match=r"weights has other 'patch' labels than measured: 4 label\(s\) of measured are "
        r"not in weights \('dark skin', 'light skin', 'blue sky', 'foliage'\)\. "
        r".*fill_value=0\)",
    ):
        xccm.fit(measured, ref, loss="cie76", weights=w)
    # The suggested fix works: the missing patches are left out.
    m = xccm.fit(
        measured, ref, loss="linear_rgb", weights=w.reindex(patch=measured.patch, fill_value=0)
    )
    expected = lstsq(measured.values[4:], ref.values[4:])
    np.testing.assert_allclose(m.values, expected, atol=1e-12)


def test_masks_and_weights_are_matched_by_label_lazily():
    frames = camera(seed=3, frames=4)
    ref = xccm.chart()
    mask = xr.DataArray(np.arange(24) % 4 != 1, dims="patch", coords={"patch": ref.patch})
    order = np.random.default_rng(1).permutation(24)
    lazy = frames.chunk({"time": 2})
    with raise_if_dask_computes():
        m = xccm.fit(lazy, ref, loss="cie76", mask=mask.isel(patch=order).chunk())
    eager = xccm.fit(frames, ref, loss="cie76", mask=mask)
    xr.testing.assert_allclose(m.compute(), eager, rtol=0, atol=1e-12)


def test_all_patches_masked_is_a_clear_error():
    measured, ref = camera(), xccm.chart()
    with pytest.raises(ValueError, match=r"no valid sample.*masked"):
        xccm.fit(measured + 1, ref, loss="ciede2000")  # everything saturated


@pytest.mark.parametrize(
    ("scale", "says"),
    [
        (
            255,
            r"look like 8-bit integers \(0-255\).*divide measured by 255.*saturation=\(0, 249.9\)",
        ),
        (65535, r"look like 10- to 16-bit integers \(0-65535\).*65535 for 16-bit"),
        (1e6, r"are not in \[0, 1\].*scale measured to \[0, 1\] first"),
    ],
)
def test_integer_valued_data_with_a_loss_says_to_scale_it(scale, says):
    measured, ref = camera(), xccm.chart()
    frames = camera(seed=1, frames=3)
    for data in (measured, frames):
        counts = (data.clip(0, 1) * scale).round()
        with pytest.raises(ValueError, match=r"saturation=\(0, 0.98\) leaves 0 of the 24 samples"):
            xccm.fit(counts, ref, loss="ciede2000")
        with pytest.raises(ValueError, match=says):
            xccm.fit(counts, ref, loss="ciede2000", model="affine")
    counts = (measured.clip(0, 1) * 255).round()
    with pytest.raises(ValueError, match="in any batch element"):
        xccm.fit((frames.clip(0, 1) * 255).round(), ref, loss="cie76")
    # Each suggested fix works.
    scaled = xccm.fit(counts / 255, ref, loss="ciede2000")
    in_units = xccm.fit(counts, ref, loss="ciede2000", saturation=(0, 0.98 * 255))
    np.testing.assert_allclose(in_units.values * 255, scaled.values, atol=1e-4)
    assert float(in_units.loss) == pytest.approx(float(scaled.loss), rel=1e-6)
    assert bool(xccm.fit(counts, ref, loss="ciede2000", saturation=None).converged)
    # Overexposed [0, 1] data (peak not well above 1) is no unit problem: the usual error.
    hot = measured.copy()
    hot[:22] = 1.5
    with pytest.raises(ValueError, match="at least 3 valid samples") as info:
        xccm.fit(hot, ref, loss="cie76")
    assert "integers" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# laziness and per-frame fits on Dask


def test_fit_with_loss_is_lazy_and_chunked_by_frame():
    frames = camera(seed=2, frames=8)
    ref = xccm.chart(space="lab-d50")
    lazy = frames.chunk({"time": 3})
    with raise_if_dask_computes():
        m = xccm.fit(lazy, ref, loss="ciede2000")
        rep = xccm.report(lazy, ref, m)
    assert m.chunks is not None and m.loss.chunks is not None
    assert rep["delta_e"].chunks is not None
    eager = xccm.fit(frames, ref, loss="ciede2000")
    xr.testing.assert_allclose(m.compute(), eager, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rep["loss"].values, eager.loss.values, rtol=1e-9)


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_in_memory_fit_is_the_lazy_fit_computed(model):
    # NumPy-backed input skips apply_ufunc (chartfit._refine_in_memory): the same numbers,
    # dims, coords (batch coords, scalar and non-index ones too), name and attrs.
    rng = np.random.default_rng(3)
    frames = camera(seed=3, frames=6).expand_dims(cam=["a", "b"], axis=1).copy()
    frames = frames * rng.uniform(0.9, 1.1, (1, 2, 1, 1))
    frames = frames.assign_coords(
        time=np.arange(6), exposure=("time", rng.uniform(1, 2, 6)), site="roof"
    ).assign_attrs(note="kept out")
    weights = xr.DataArray(rng.uniform(0.5, 2, (6, 24)), dims=("time", "patch"))
    kw = {"loss": "ciede2000", "model": model, "weights": weights}
    eager = xccm.fit(frames, xccm.chart(space="lab-d50"), **kw)
    lazy = xccm.fit(frames.chunk({"time": 2}), xccm.chart(space="lab-d50"), **kw)
    assert lazy.chunks is not None and eager.chunks is None
    xr.testing.assert_identical(lazy.compute(), eager)
    assert eager.dims == ("time", "cam", "channel_in", "channel")
    assert {"exposure", "site", "loss", "iterations"} <= set(eager.coords)


# ---------------------------------------------------------------------------------------------
# report


def test_report_statistics(rng):
    measured, ref = camera(), xccm.chart()
    m = xccm.fit(measured, ref, loss="ciede2000", saturation=None)
    rep = measured.ccm.report(ref, m)
    de = rep["delta_e"].values
    lab = colour.XYZ_to_Lab(
        colour.RGB_to_XYZ(measured.values @ m.values, "sRGB"),
        colour.RGB_COLOURSPACES["sRGB"].whitepoint,
    )
    lab_ref = colour.XYZ_to_Lab(
        colour.RGB_to_XYZ(ref.values, "sRGB"), colour.RGB_COLOURSPACES["sRGB"].whitepoint
    )
    np.testing.assert_allclose(de, colour.delta_E(lab_ref, lab, "CIE 2000"), atol=1e-10)
    assert float(rep["mean"]) == pytest.approx(de.mean())
    assert float(rep["median"]) == pytest.approx(np.median(de))
    assert float(rep["p90"]) == pytest.approx(np.quantile(de, 0.9))
    assert float(rep["max"]) == pytest.approx(de.max())
    assert float(rep["loss"]) == pytest.approx(float(m.loss), rel=1e-10)
    assert rep.attrs["method"] == "ciede2000"
    w = xr.DataArray(rng.uniform(0, 1, 24), dims="patch", coords={"patch": ref.patch})
    w[0] = 0
    weighted = xccm.report(measured, ref, m, weights=w)
    wn = w.values[1:] / w.values[1:].mean()
    assert float(weighted["loss"]) == pytest.approx(np.sqrt(np.mean(wn * de[1:] ** 2)))
    assert float(weighted["max"]) == pytest.approx(de[1:].max())


def test_report_of_plain_arrays():
    measured, ref = camera(), xccm.chart(space="lab-d50")
    m = xccm.fit(measured, ref, loss="ciede2000", saturation=None)
    w = np.linspace(0, 2, 24)
    expected = xccm.report(measured, ref, m, weights=w)
    # A plain measured takes the chart's dims and patch names.
    rep = xccm.report(measured.values, ref, m.values, weights=w)
    xr.testing.assert_allclose(rep, expected, rtol=0, atol=1e-12)
    assert float(rep["loss"]) == pytest.approx(loss_of(measured, xccm.chart(), m, "ciede2000", w))
    # Both plain: dims ("patch",), the reference's space given (or linear sRGB).
    rgb = xccm.chart()
    rep = xccm.report(measured.values, rgb.values, m.values, "ciede2000", weights=w)
    assert rep["delta_e"].dims == ("patch",) and isinstance(rep, xr.Dataset)
    np.testing.assert_allclose(rep["delta_e"].values, expected["delta_e"].values, atol=1e-9)
    # Frames: leading batch axes, with per-frame plain matrices.
    frames = camera(seed=4, frames=3)
    mf = xccm.fit(frames, ref, loss="cie76", saturation=None)
    rep = xccm.report(frames.values, ref, mf.values, "cie76")
    assert rep["delta_e"].dims == ("axis_0", "patch")
    np.testing.assert_allclose(rep["loss"].values, mf.loss.values, rtol=1e-9)
    with pytest.raises(TypeError, match="reference must be a DataArray when measured is one"):
        xccm.report(measured, ref.values, m)
    with pytest.raises(ValueError, match=r"must have shape \(\.\.\., 24, n_channels\).*\(20, 3\)"):
        xccm.report(measured.values[:20], ref, m.values)
    with pytest.raises(ValueError, match=r"weights as a plain array .* got shape \(20,\)"):
        xccm.report(measured.values, ref, m.values, weights=w[:20])


def test_report_weights_are_matched_by_label():
    measured, ref = camera(), xccm.chart()
    m = xccm.fit(measured, ref, loss="cie76", saturation=None)
    w = xr.DataArray(np.linspace(0, 2, 24), dims="patch", coords={"patch": ref.patch})
    expected = xccm.report(measured, ref, m, "cie76", weights=w)
    shuffled = xccm.report(measured, ref, m, "cie76", weights=w.isel(patch=slice(None, None, -1)))
    xr.testing.assert_allclose(shuffled, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"weights has other 'patch' labels .* \('dark skin'\)"):
        xccm.report(measured, ref, m, weights=w.isel(patch=slice(1, None)))


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_chart_fit_input():
    measured, ref = camera(), xccm.chart()
    with pytest.raises(ValueError, match="unknown loss 'de2001'"):
        xccm.fit(measured, ref, loss="de2001")
    wrong = xccm.chart(space="lab-d50").assign_coords(channel=["X", "Y", "Z"])
    with pytest.raises(ValueError, match=r"coords must be \['L', 'a', 'b'\]"):
        xccm.fit(measured, wrong, loss="ciede2000")
    with pytest.raises(ValueError, match=r"lightness_power= weights .* pass loss="):
        xccm.fit(measured, ref, lightness_power=2.0)
    with pytest.raises(TypeError, match=r"mask must be boolean .* got ndarray of dtype float64"):
        xccm.fit(measured, ref, loss="cie76", mask=np.ones(24))
    with pytest.raises(TypeError, match=r"mask must be boolean .* got DataArray of dtype int64"):
        xccm.fit(measured, ref, loss="cie76", mask=xr.ones_like(measured.isel(channel=0), int))
    with pytest.raises(ValueError, match=r"mask as a plain array must have the shape .* \(24,\)"):
        xccm.fit(measured, ref, loss="cie76", mask=np.ones(23, bool))
    with pytest.raises(ValueError, match="mask must not have the channel dim"):
        xccm.fit(measured, ref, loss="cie76", mask=measured > 0)
    with pytest.raises(TypeError, match="need DataArrays"):
        xccm.fit(measured.values, ref.values, loss="cie76")
    with pytest.raises(ValueError, match="max_iter must be a non-negative integer"):
        xccm.fit(measured, ref, loss="cie76", max_iter=-1)
    with pytest.raises(ValueError, match="saturation range"):
        xccm.fit(measured, ref, loss="cie76", saturation=(1.0, 0.0))


# ---------------------------------------------------------------------------------------------
# found in review


def test_linear_rgb_from_white_balance_reaches_least_squares():
    measured, ref = camera(), xccm.chart()
    for model in ("linear", "affine"):
        wb = xccm.fit(measured, ref, loss="linear_rgb", init="white_balance", model=model)
        ls = xccm.fit(measured, ref, loss="linear_rgb", model=model, saturation=None)
        np.testing.assert_allclose(wb.values, ls.values, atol=1e-8)
        assert int(wb.iterations) > 0 and bool(wb.converged)
        assert float(wb.loss) < float(wb.start_loss)


def test_plain_array_weights_with_a_loss():
    measured, ref = camera(), xccm.chart()
    w = np.linspace(0.5, 2.0, 24)
    a = xccm.fit(measured, ref, loss="cie76", weights=w)
    b = xccm.fit(measured, ref, loss="cie76", weights=xr.DataArray(w, dims="patch"))
    np.testing.assert_array_equal(a.values, b.values)


def test_max_iter_zero_is_not_converged():
    measured, ref = camera(), xccm.chart()
    m = xccm.fit(measured, ref, loss="ciede2000", max_iter=0)
    assert float(m.loss) == float(m.start_loss) and not bool(m.converged)


def test_custom_rgb_colourspace_round_trips_through_attrs():
    measured, lab = camera(), xccm.chart(space="lab-d50")
    srgb = colour.RGB_COLOURSPACES["sRGB"]
    custom = colour.RGB_Colourspace(
        "sRGB (rounded white)",
        srgb.primaries,
        np.array([0.31271, 0.32902]),
        "D65",
        use_derived_matrix_RGB_to_XYZ=True,
        use_derived_matrix_XYZ_to_RGB=True,
    )
    rgb = xccm.convert(lab, "rgb", rgb_space=custom)
    assert rgb.attrs["rgb_space"] == "sRGB (rounded white)"
    assert float(xccm.delta_e(rgb, lab).max()) < 1e-10  # its attrs are read back
    m = xccm.fit(measured, lab, loss="ciede2000", rgb_space=custom, lightness_power=1.0)
    assert bool(m.converged) and m.attrs["rgb_space"] == "sRGB (rounded white)"


def test_encoded_rgb_loss_in_a_pure_power_law_space():
    measured, lab = camera(), xccm.chart(space="lab-d50")
    m = xccm.fit(measured, lab, loss="rgb", rgb_space="adobe-rgb")
    assert np.isfinite(float(m.loss)) and float(m.loss) <= float(m.start_loss)


def test_saturation_must_be_a_range():
    measured, ref = camera(), xccm.chart()
    with pytest.raises(ValueError, match=r"saturation must be \(low, high\), None"):
        xccm.fit(measured, ref, loss="cie76", saturation="none")


def test_lazy_chart_fit_of_per_frame_chunks_gives_one_chunk_the_fill_works_on(monkeypatch):
    # Patch colours per frame come one frame a chunk from extract_patches; the fit groups
    # frames into large blocks and returns one chunk along time, as a least-squares fit does.
    monkeypatch.setattr(xccm.core, "_SAMPLES_PER_TASK", 4 * 24)  # blocks of 4 frames
    frames = camera(seed=5, frames=10)
    frames[9, :12] = np.nan  # the last frame occluded: a NaN matrix
    lazy = frames.chunk({"time": 1})
    with raise_if_dask_computes():
        m = xccm.fit(lazy, xccm.chart(), loss="cie76", min_samples=18)
        filled = m.interpolate_na("time").ffill("time").bfill("time")
    assert m.chunks[0] == (10,) and m.loss.chunks == ((10,),)
    refine = [k for k in dict(m.data.__dask_graph__()) if k[0].startswith("refine_block-")]
    assert len(refine) == 3  # a fit task per block of 4 frames, not per frame
    with pytest.warns(xccm.InsufficientSamplesWarning):
        eager = xccm.fit(frames, xccm.chart(), loss="cie76", min_samples=18)
        got, filled = m.compute(), filled.compute()
    xr.testing.assert_allclose(got, eager, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(filled.isel(time=9).values, eager.isel(time=8).values)


def test_lazy_chart_fit_groups_one_frame_chunks_before_anything_else(monkeypatch):
    # The saturation mask, the least-squares start and the ΔE fit all run on blocks of
    # ~_SAMPLES_PER_TASK samples: one-frame chunks cost one task a block to merge, no more.
    monkeypatch.setattr(xccm.core, "_SAMPLES_PER_TASK", 10 * 24)  # blocks of 10 frames
    frames = camera(seed=3, frames=40)
    eager = xccm.fit(frames, xccm.chart(), loss="ciede2000")

    def extra_tasks(chunks):
        lazy = frames.chunk(chunks)
        with raise_if_dask_computes():
            m = xccm.fit(lazy, xccm.chart(), loss="ciede2000")
        return len(m.__dask_graph__()) - len(lazy.__dask_graph__()), m

    per_frame, m = extra_tasks({"time": 1})
    assert per_frame == extra_tasks({"time": 10})[0] + 4  # a merge task per block of 10
    assert m.chunks == ((40,), (3,), (3,))
    got = m.compute()
    xr.testing.assert_allclose(got, eager, rtol=0, atol=1e-10)
    xr.testing.assert_allclose(got.loss, eager.loss, rtol=0, atol=1e-10)


def test_report_of_plain_arrays_keeps_leading_axes_as_batches():
    ref = xccm.chart("colorchecker24", space="srgb-linear")
    frames = np.stack([ref.values, ref.values * 1.05])  # frame 0 exact, frame 1 off
    for reference in (ref.values, np.stack([ref.values, ref.values])):
        rep = xccm.report(frames, reference, np.eye(3))
        assert rep["mean"].dims == ("axis_0",)
        assert float(rep["mean"][0]) < 1e-9 < float(rep["mean"][1])


def test_report_pairs_patches_by_label():
    measured, ref = camera(), xccm.chart()
    m = xccm.fit(measured, ref, loss="cie76")
    perm = np.random.default_rng(2).permutation(24)
    shuffled = xccm.report(measured, ref.isel(patch=perm), m, "cie76")
    xr.testing.assert_allclose(shuffled["mean"], xccm.report(measured, ref, m, "cie76")["mean"])


@pytest.mark.parametrize("curve", ["gamma", "srgb", "color_polyfit", "gray_polyfit"])
def test_saturation_range_applies_to_the_values_before_linearisation(curve):
    # OpenCV masks the encoded camera values; xccm maps the range through the curve that
    # linearize recorded, so the fit leaves out exactly the patches a mask of the encoded
    # values leaves out, whatever the curve does above 0.98.
    ref = xccm.chart()
    rng = np.random.default_rng(3)
    linear_camera = ref.clip(0) * 0.85 + 0.01 + rng.normal(0, 0.002, ref.shape)
    encoded = linear_camera.clip(0, 1) ** (1 / 2.2)
    encoded[18] = [0.93, 0.92, 0.94]  # white: out of (0, 0.9) encoded, inside once linear
    if curve.endswith("polyfit"):
        method = xccm.fit_linearization(encoded, ref, curve, degree=3)
    else:
        method = curve
    linear = xccm.linearize(encoded, method)
    by_encoded = xccm.saturation_mask(encoded, 0, 0.9)
    by_linear = xccm.saturation_mask(linear, 0, 0.9)
    assert not bool((by_encoded == by_linear).all())  # the two ranges differ on this chart
    m = xccm.fit(linear, ref, loss="ciede2000", saturation=(0, 0.9))
    by_hand = xccm.fit(linear, ref, loss="ciede2000", saturation=None, mask=by_encoded)
    xr.testing.assert_allclose(m, by_hand, rtol=0, atol=0)
    assert m.attrs["saturation"] == [0.0, 0.9]
    assert m.attrs["saturation_on"].startswith("encoded values (before ")
    # values not from linearize are taken as they are, and the attrs say so
    plain = linear.copy()
    plain.attrs = {}
    m_plain = xccm.fit(plain, ref, loss="ciede2000", saturation=(0, 0.9))
    assert m_plain.attrs["saturation_on"] == "measured"
    assert not np.allclose(m_plain, m)


def test_saturation_range_refuses_a_tampered_or_bending_linearisation_record():
    linear = xccm.linearize(camera().clip(0) ** (1 / 2.2), "gamma")
    linear.attrs["linearization"] = "color_polyfit degree 3"
    with pytest.raises(ValueError, match="do not describe a curve that linearize makes"):
        xccm.fit(linear, xccm.chart(), loss="ciede2000")
    # a fitted curve that bends back inside the range cannot carry the range over
    linear.attrs["linearization"] = "gray_polyfit degree 2"
    linear.attrs["linearization_coefficients"] = [0.0, 2.0, -2.0]  # peaks at 0.5
    with pytest.raises(ValueError, match="does not rise to its highest value"):
        xccm.fit(linear, xccm.chart(), loss="ciede2000")


@pytest.mark.parametrize("robust", [None, "tukey"])
def test_diagnostics_coords_do_not_carry_measured_attrs(robust):
    measured = camera().assign_attrs(source_files=["a.jpg"], encoding="srgb")
    m = xccm.fit(measured, xccm.chart(), loss="cie76", robust=robust)
    for name in m.coords:
        if name not in m.dims:
            assert m[name].attrs == {}, name


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"robust": "huber"},
        {"model": "root_polynomial", "degree": 2},
        {"model": "affine", "white_point": "preserve"},
    ],
)
def test_in_memory_fits_run_in_blocks_on_threads_with_the_same_result(monkeypatch, kwargs):
    # A large batch is refined in blocks of ~BLOCK_SAMPLES samples, shared out among threads:
    # the elements are independent, so every matrix and diagnostic is the one-batch result.
    rng = np.random.default_rng(21)
    ref = xccm.chart()
    mix = np.eye(3) * 0.6 + rng.uniform(0, 0.2, (23, 3, 3))
    lin = np.einsum("pc,bcd->bpd", ref.values.clip(0), mix) + rng.normal(0, 0.004, (23, 24, 3))
    lin[5, 3] = 0.9  # an outlier for the robust fit
    measured = xr.DataArray(lin, dims=("time", "patch", "channel"), coords=ref.coords)
    fit_kwargs = {"loss": "ciede2000", **kwargs}
    monkeypatch.setattr(_refine, "BLOCK_SAMPLES", 10**9)
    one = xccm.fit(measured, ref, **fit_kwargs)
    calls = []
    solve = _refine.refine

    def spy(s, *args, **kw):
        calls.append(s.shape[0])
        return solve(s, *args, **kw)

    monkeypatch.setattr(_refine, "BLOCK_SAMPLES", 4 * 24)  # blocks of 4 frames
    monkeypatch.setattr(_threads, "_threads", lambda: 3)
    monkeypatch.setattr(_refine, "refine", spy)
    blocked = xccm.fit(measured, ref, **fit_kwargs)
    if "robust" not in kwargs:  # the robust solver calls refine once per round and block
        assert sorted(calls) == [3, 4, 4, 4, 4, 4]  # 3 threads: 7 + 8 + 8 frames
    else:
        assert calls and max(calls) <= 4
    xr.testing.assert_identical(blocked, one)


def test_in_blocks_cuts_only_the_keywords_that_have_the_batch_axis(monkeypatch):
    # one white for every element, (k,) and (3,): with 3 elements of 3 channels, a guess by
    # length would cut it; per-element max_iter (B,) is cut
    rng = np.random.default_rng(0)
    s = rng.uniform(0.05, 0.9, (3, 40, 3))
    m_true = np.eye(3) * 0.8 + 0.05
    d = s @ m_true + rng.normal(0, 0.002, s.shape)
    m0 = np.tile(np.eye(3), (3, 1, 1))
    white = (np.array([0.9, 0.8, 0.7]), np.array([0.9, 0.8, 0.7]) @ m_true)
    metric = colorimetry.metric("cie76")
    kw = {"max_iter": np.array([1, 5, 9]), "white": white}
    one = _refine.refine(s, d, None, m0, metric, **kw)
    monkeypatch.setattr(_refine, "BLOCK_SAMPLES", 40)  # one element a block
    blocked = _refine.in_blocks(_refine.refine, s, d, None, m0, metric, parallel=True, **kw)
    for name in ("matrix", "loss", "iterations", "converged"):
        np.testing.assert_array_equal(getattr(blocked, name), getattr(one, name))
    np.testing.assert_allclose(white[0] @ blocked.matrix, np.broadcast_to(white[1], (3, 3)))
    assert one.iterations[0] <= 1 < one.iterations[2]
    with pytest.raises(ValueError, match="batch of 3 elements"):
        _refine.in_blocks(_refine.refine, s, d[:2], None, m0, metric)
