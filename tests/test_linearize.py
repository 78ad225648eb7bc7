from __future__ import annotations

import warnings

import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import raise_if_dask_computes
from xccm import colorimetry
from xccm.linearize import (
    GRAY_WEIGHTS,
    encode,
    fit_linearization,
    linearize,
    neutral_mask,
)
from xccm.weights import saturation_mask

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # colour-science warns about optional plotting packages
    import colour


RGB = ["R", "G", "B"]
PATCHES = list(xccm.chart().patch.values)


def camera_values(rng, n=24, low=0.02, high=0.95):
    return xr.DataArray(
        rng.uniform(low, high, (n, 3)),
        dims=("patch", "channel"),
        coords={"patch": [f"p{i:02d}" for i in range(n)], "channel": RGB},
    )


def as_reference(values, like, space="srgb-linear"):
    return xr.DataArray(values, dims=like.dims, coords=like.coords, attrs={"space": space})


@pytest.fixture
def image(rng):
    data = rng.uniform(-0.1, 1.2, (4, 5, 3))
    return xr.DataArray(
        data,
        dims=("y", "x", "channel"),
        coords={"y": np.arange(4), "x": np.arange(5) * 0.5, "channel": RGB},
        attrs={"units": "1"},
        name="img",
    )


@pytest.fixture
def color_coeffs(rng):
    x = camera_values(rng)
    return fit_linearization(x, as_reference(x.values**2.2, x), "color_polyfit", degree=3)


# ---------------------------------------------------------------------------------------------
# fixed curves


def test_srgb_matches_colour_science(rng):
    x = np.concatenate([rng.uniform(0, 1.2, 1000), [0, 0.0031308, 0.04, 0.041, 1.0]])
    np.testing.assert_allclose(linearize(x, "srgb"), colour.models.eotf_sRGB(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        encode(x, "srgb"), colour.models.eotf_inverse_sRGB(x), rtol=0, atol=1e-12
    )
    # the knot as IEC 61966-2-1 writes it (colour-science uses 12.92 * 0.0031308 instead)
    assert linearize(np.array(0.04045), "srgb") == 0.04045 / 12.92


def test_srgb_and_gamma_are_odd_symmetric(rng):
    x = rng.uniform(0, 1.5, 100)
    for method in ("srgb", "gamma"):
        np.testing.assert_array_equal(linearize(-x, method), -linearize(x, method))
        np.testing.assert_array_equal(encode(-x, method), -encode(x, method))


def test_gamma_matches_opencv_and_numpy(rng):
    cv2 = pytest.importorskip("cv2")
    x = rng.uniform(-0.5, 1.5, (24, 3))
    positive = np.abs(x)
    for g in (2.2, 1.8, 1 / 2.4):
        expected = np.sign(x) * np.abs(x) ** g
        np.testing.assert_allclose(linearize(x, gamma=g), expected, rtol=1e-14, atol=0)
        # OpenCV 5.0.0's gammaCorrection gives NaN below 0 (its source mirrors negatives)
        np.testing.assert_allclose(
            linearize(positive, "gamma", gamma=g),
            cv2.ccm.gammaCorrection(positive, g),
            rtol=1e-14,
            atol=0,
        )
    np.testing.assert_allclose(encode(x, gamma=2.2), np.sign(x) * np.abs(x) ** (1 / 2.2))


@pytest.mark.parametrize("method", ["identity", "srgb", "gamma"])
def test_round_trip_closed_forms(image, method):
    out = encode(linearize(image, method, gamma=2.4), method, gamma=2.4)
    xr.testing.assert_allclose(out, image, rtol=0, atol=1e-12)
    assert out.attrs == image.attrs


@pytest.mark.parametrize("method", ["identity", "srgb", "gamma"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_dtype_kept(image, method, dtype):
    x = image.astype(dtype)
    for func in (linearize, encode):
        out = func(x, method)
        assert out.dtype == dtype
        assert func(x.values, method).dtype == dtype
    if dtype == np.float32:
        expected = linearize(image, method).astype(np.float32)
        np.testing.assert_allclose(linearize(x, method), expected, rtol=1e-5, atol=1e-6)


def test_float32_stays_float32_inside_the_kernel(image, color_coeffs):
    x = image.astype(np.float32).chunk({"y": 2})
    for method in ("srgb", "gamma", color_coeffs):
        for func in (linearize, encode):
            out = func(x, method)
            assert out.dtype == np.float32
            assert out.data._meta.dtype == np.float32
            blocks = dask.compute(*out.data.to_delayed().ravel())
            assert all(b.dtype == np.float32 for b in blocks)


def test_integer_input_needs_scale():
    x = xr.DataArray(np.array([[0, 128, 255]], dtype=np.uint8), dims=("pixel", "channel"))
    for method in ("srgb", "gamma"):
        with pytest.raises(TypeError, match=r"scale=1/255"):
            linearize(x, method)
    out = linearize(x, "srgb", scale=1 / 255)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, colour.models.eotf_sRGB(x.values / 255), rtol=1e-6)
    np.testing.assert_allclose(encode(out, "srgb") * 255, x, atol=1e-3)
    same = linearize(x, "identity")
    assert same.dtype == np.uint8
    xr.testing.assert_equal(same, x)
    assert linearize(x, "identity", scale=1 / 255).dtype == np.float32


def test_scale_multiplies_first(image):
    xr.testing.assert_allclose(
        linearize(image * 255, "srgb", scale=1 / 255), linearize(image, "srgb"), atol=1e-14
    )


def test_lazy_keeps_chunks_coords_attrs(image, color_coeffs):
    gray = fit_linearization(
        xr.DataArray(np.repeat(np.linspace(0.1, 0.9, 24)[:, None], 3, 1), dims=("patch", "c")),
        xr.DataArray(np.repeat(np.linspace(0.1, 0.9, 24)[:, None] ** 2, 3, 1), dims=("patch", "c")),
        "gray_polyfit",
        dim="c",
        degree=2,
        neutral=np.ones(24, bool),
    )
    x = image.transpose("channel", "y", "x").chunk({"y": 2, "x": 3})
    for method in ("identity", "srgb", "gamma", color_coeffs, gray):
        for func in (linearize, encode):
            with raise_if_dask_computes():
                out = func(x, method)
            assert isinstance(out.data, dsa.Array)
            assert out.dims == x.dims
            assert out.chunks == x.chunks
            assert out.name == "img"
            assert out.attrs["units"] == "1"
            assert ("linearization" in out.attrs) == (func is linearize)
            xr.testing.assert_identical(out.coords.to_dataset(), x.coords.to_dataset())
            xr.testing.assert_allclose(out.compute(), func(image, method).transpose(*x.dims))


def test_attrs_recorded_and_input_untouched(image, color_coeffs):
    assert linearize(image).attrs == {
        "units": "1",
        "linearization": "gamma 2.2",
        "linearization_coefficients": [2.2],
    }
    assert linearize(image, "srgb").attrs["linearization"] == "srgb"
    assert linearize(image, color_coeffs).attrs["linearization"] == "color_polyfit degree 3"
    lin = linearize(image, "gamma", gamma=1.8)
    assert lin.attrs["linearization"] == "gamma 1.8"
    assert "linearization" not in encode(lin, "gamma", gamma=1.8).attrs
    assert image.attrs == {"units": "1"}


def test_closed_forms_need_no_channel_dim_and_allow_split_channels(image):
    mono = image.isel(channel=0, drop=True)
    xr.testing.assert_allclose(
        linearize(mono, "srgb"), linearize(image, "srgb").isel(channel=0, drop=True)
    )
    split = image.chunk({"channel": 1})
    assert linearize(split, "srgb").chunks == split.chunks


def test_dataset(image):
    ds = xr.Dataset({"img": image, "mask": image.isel(channel=0, drop=True) > 0.5})
    out = linearize(ds, "srgb")
    xr.testing.assert_identical(out["img"], linearize(image, "srgb"))
    xr.testing.assert_identical(out["mask"], ds["mask"])
    xr.testing.assert_allclose(encode(out, "srgb"), ds, atol=1e-12)


def test_ndarray_and_dask_array_in_same_type_out(image):
    arr = image.values
    out = linearize(arr, "srgb")
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, linearize(image, "srgb").values)
    lazy = dsa.from_array(arr, chunks=(2, 5, 3))
    with raise_if_dask_computes():
        out_lazy = linearize(lazy, "srgb")
    assert isinstance(out_lazy, dsa.Array) and out_lazy.chunks == lazy.chunks
    np.testing.assert_allclose(out_lazy.compute(), out)
    assert np.asarray(linearize(0.5, gamma=2.0)) == 0.25


# ---------------------------------------------------------------------------------------------
# fitted curves


def test_color_polyfit_matches_numpy(rng):
    x = camera_values(rng)
    ref = as_reference(rng.uniform(0, 1, (24, 3)), x)
    c = fit_linearization(x, ref, "color_polyfit", degree=3)
    assert c.dims == ("channel", "power") and c.dtype == np.float64
    assert c.channel.values.tolist() == RGB and c.power.values.tolist() == [0, 1, 2, 3]
    assert c.attrs == {"method": "color_polyfit", "degree": 3, "rgb_space": "sRGB"}
    np.testing.assert_array_equal(c.input_min, x.min("patch"))
    np.testing.assert_array_equal(c.input_max, x.max("patch"))
    lazy = fit_linearization(x.chunk({"patch": 5}), ref.chunk())  # small: read eagerly
    xr.testing.assert_identical(lazy, c)
    for k in range(3):
        expected = np.polynomial.polynomial.polyfit(x.values[:, k], ref.values[:, k], 3)
        np.testing.assert_allclose(c.values[k], expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            linearize(x, c).values[:, k],
            np.polynomial.polynomial.polyval(x.values[:, k], expected),
            atol=1e-12,
        )


def test_color_polyfit_recovers_a_cubic(rng):
    true = np.array([[0.01, 0.2, 0.3, 0.5], [0.0, 0.1, 0.9, 0.0], [-0.02, 0.5, -0.2, 0.7]])
    x = camera_values(rng)
    ref = np.stack([np.polynomial.polynomial.polyval(x.values[:, k], true[k]) for k in range(3)], 1)
    reference = xr.DataArray(ref, dims=x.dims, coords=x.coords)  # no attrs: linear sRGB
    c = fit_linearization(x, reference, degree=3)
    np.testing.assert_allclose(c.values, true, atol=1e-10)
    xr.testing.assert_allclose(linearize(x, c), reference.assign_attrs(), atol=1e-12)


@pytest.mark.parametrize("degree", [1, 3])
def test_color_logpolyfit_recovers_a_power_law(rng, degree):
    x = camera_values(rng)
    gains, gammas = np.array([0.9, 1.0, 1.1]), np.array([2.2, 2.0, 2.4])
    ref = as_reference(gains * x.values**gammas, x)
    c = fit_linearization(x, ref, "color_logpolyfit", degree=degree)
    expected = np.zeros((3, degree + 1))
    expected[:, 0], expected[:, 1] = np.log(gains), gammas
    np.testing.assert_allclose(c.values, expected, atol=1e-9)
    np.testing.assert_allclose(linearize(x, c), ref, rtol=1e-9)
    # x <= 0 gives 0, NaN stays NaN, as exp(poly(log x)) is defined for x > 0 only
    edge = xr.DataArray([[0.0, -0.5, np.nan]], dims=("p", "channel"), coords={"channel": RGB})
    np.testing.assert_array_equal(linearize(edge, c).values, [[0.0, 0.0, np.nan]])


def test_log_fit_uses_positive_pairs_only(rng):
    x = camera_values(rng)
    ref = as_reference(x.values**2.2, x)
    ref[:3, 0] = [0.0, -0.01, -0.2]  # e.g. an out-of-gamut reference patch
    c = fit_linearization(x, ref, "color_logpolyfit", degree=1)
    np.testing.assert_allclose(c.values[:, 1], 2.2, atol=1e-9)


def test_mask_and_non_finite_patches_are_left_out(rng):
    x = camera_values(rng)
    ref = as_reference(rng.uniform(0, 1, (24, 3)), x)
    keep = np.ones(24, bool)
    keep[[2, 7, 11]] = False
    mask = xr.DataArray(keep, dims="patch", coords={"patch": x.patch})
    expected = fit_linearization(x[keep], ref[keep])
    xr.testing.assert_allclose(fit_linearization(x, ref, mask=mask), expected)
    xr.testing.assert_allclose(fit_linearization(x, ref, mask=keep), expected)  # ndarray mask
    broken = x.copy()
    broken[[2, 7], 1] = np.nan
    ref_broken = ref.copy()
    ref_broken[11, 0] = np.inf
    xr.testing.assert_allclose(fit_linearization(broken, ref_broken), expected)


def test_reference_in_lab_is_converted():
    lab = xccm.chart(space="lab-d50")
    rgb = colorimetry.convert(lab, "rgb", rgb_space="sRGB")
    camera = encode(rgb.clip(0, 1), "gamma", gamma=2.2)
    b = fit_linearization(camera, rgb, "color_polyfit")
    xr.testing.assert_allclose(fit_linearization(camera, lab, "color_polyfit"), b, atol=1e-12)
    c = fit_linearization(camera, lab.assign_attrs(space="xyz"), reference_space="lab-icc-d50")
    xr.testing.assert_allclose(c, b, atol=1e-12)
    # into another RGB space: the reference is converted to linear Display P3
    p3 = fit_linearization(camera, lab, "color_polyfit", rgb_space="display-p3")
    assert p3.attrs["rgb_space"] == "Display P3"
    target = colorimetry.convert(lab, "rgb", rgb_space="display-p3")
    expected = np.polynomial.polynomial.polyfit(camera.values[:, 1], target.values[:, 1], 3)
    np.testing.assert_allclose(p3.sel(channel="G").values, expected, atol=1e-12)


def test_neutral_patches():
    for edition in ("opencv", "pre2014"):
        neutral = neutral_mask(xccm.chart(edition=edition))
        assert neutral.dims == ("patch",) and neutral.dtype == bool
        assert neutral.patch[neutral].values.tolist() == PATCHES[-6:]
    neutral = neutral_mask(xccm.chart(space="lab-d50", edition="opencv"))
    assert neutral.values.tolist() == [False] * 18 + [True] * 6
    # the 2014 white (b* = 2.93) is 3.25 CIEDE2000 from gray: OpenCV's rule leaves it out
    neutral = neutral_mask(xccm.chart())
    assert neutral.patch[neutral].values.tolist() == PATCHES[-5:]
    assert int(neutral_mask(xccm.chart(), threshold=3.5).sum()) == 6
    lazy = neutral_mask(xccm.chart().chunk())
    assert isinstance(lazy.data, dsa.Array)


@pytest.mark.parametrize("method", ["gray_polyfit", "gray_logpolyfit"])
def test_gray_methods_fit_neutral_patches_only(rng, method):
    ref = xccm.chart(edition="opencv")  # its 6 neutrals pass the CIEDE2000 < 2 rule
    camera = encode(ref.clip(0.001, 1) * [0.95, 1.0, 1.1], "gamma", gamma=2.2)
    camera[:18] += rng.uniform(0, 0.3, (18, 3))  # colours off the curve must not matter
    c = fit_linearization(camera, ref, method, degree=2)
    assert c.dims == ("power",) and c.attrs["method"] == method
    # independently: gray = 0.2126 R + 0.7152 G + 0.0722 B; Y of linear sRGB (colour-science)
    gray = camera.values[-6:] @ np.array([0.2126, 0.7152, 0.0722])
    y = ref.values[-6:] @ colour.RGB_COLOURSPACES["sRGB"].matrix_RGB_to_XYZ[1]
    if method == "gray_polyfit":
        expected = np.polynomial.polynomial.polyfit(gray, y, 2)
    else:
        expected = np.polynomial.polynomial.polyfit(np.log(gray), np.log(y), 2)
    np.testing.assert_allclose(c.values, expected, rtol=1e-10, atol=1e-12)
    # one curve for every channel
    out = linearize(camera, c)
    single = linearize(camera.isel(channel=[1]).rename(channel="c"), c, dim="c")
    np.testing.assert_allclose(out.values[:, 1], single.values[:, 0])


def test_gray_fit_with_given_neutrals():
    ref = xccm.chart()  # 2014: the rule finds 5 neutrals, the chart has 6
    camera = encode(ref.clip(0, 1), "gamma", gamma=2.2)
    with pytest.raises(ValueError, match=r"degree 5 needs at least 6.*5 of 24 are neutral"):
        fit_linearization(camera, ref, "gray_polyfit", degree=5)
    bottom = ref.patch.isin(ref.patch[-6:])
    c = fit_linearization(camera, ref, "gray_polyfit", degree=5, neutral=bottom)
    gray = camera.values[-6:] @ GRAY_WEIGHTS
    y = ref.values[-6:] @ colour.RGB_COLOURSPACES["sRGB"].matrix_RGB_to_XYZ[1]
    np.testing.assert_allclose(c.values, np.polynomial.polynomial.polyfit(gray, y, 5))


def test_coefficients_match_channels_by_label(image, color_coeffs):
    reordered = image.sel(channel=["B", "R", "G"])
    xr.testing.assert_allclose(
        linearize(reordered, color_coeffs), linearize(image, color_coeffs).sel(channel=list("BRG"))
    )
    unlabelled = image.drop_vars("channel")
    np.testing.assert_allclose(linearize(unlabelled, color_coeffs), linearize(image, color_coeffs))
    np.testing.assert_allclose(
        linearize(image.values, color_coeffs), linearize(image, color_coeffs)
    )


@pytest.mark.parametrize("method", ["color_polyfit", "color_logpolyfit", "gray_polyfit"])
def test_polynomial_round_trip(rng, method):
    ref = xccm.chart(edition="opencv").clip(0.001, 1)
    camera = encode(ref, "srgb")
    c = fit_linearization(camera, ref, method, degree=3)
    x = xr.DataArray(
        rng.uniform(0.02, 1, (50, 3)), dims=("pixel", "channel"), coords={"channel": RGB}
    )
    back = encode(linearize(x, c), c)
    xr.testing.assert_allclose(back, x, rtol=0, atol=1e-9)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(encode(linearize(x32, c), c), x32, rtol=0, atol=1e-5)
    lin = linearize(x, c)
    xr.testing.assert_allclose(linearize(encode(lin, c), c), lin, rtol=0, atol=1e-9)


def test_encode_polynomial_clamps_outside_the_curve_range():
    c = xr.DataArray([0.1, 0.5, 0.4], dims="power", attrs={"method": "gray_polyfit"})
    y = np.array([-1.0, 0.05, 0.1, 1.0, 3.0, np.nan])
    np.testing.assert_allclose(encode(y, c), [0, 0, 0, 1, 1, np.nan], atol=1e-12)


def test_encode_handles_a_small_dip_near_zero(color_coeffs):
    # a cubic fitted to x**2.2 dips just above 0, within the fitted values: it is flattened
    grid = np.linspace(0, 1, 100001)
    curve = np.polynomial.polynomial.polyval(grid, color_coeffs.sel(channel="R").values)
    low_x = float(color_coeffs.input_min.sel(channel="R"))
    assert low_x < grid[curve.argmin()] < 0.05
    low = xr.DataArray([[-1.0, 0.5, 0.5]], dims=("p", "channel"), coords={"channel": RGB})
    start = encode(low, color_coeffs).values[0, 0]
    assert low_x - 1 / 4095 <= start <= low_x  # clamped to where the fitted values begin
    x = xr.DataArray(np.linspace(0.06, 1, 20)[:, None].repeat(3, 1), dims=("p", "channel"))
    xr.testing.assert_allclose(encode(linearize(x, color_coeffs), color_coeffs), x, atol=1e-12)


def test_encode_refuses_a_non_monotone_curve(rng):
    x = camera_values(rng)
    bump = as_reference(np.sin(3 * np.pi * x.values), x)
    c = fit_linearization(x, bump, degree=3)
    with pytest.raises(
        ValueError, match=r"does not increase over the measured values.*cannot be inverted"
    ):
        encode(x, c)


# ---------------------------------------------------------------------------------------------
# OpenCV


@pytest.fixture(scope="module")
def opencv_chart():
    """OpenCV's Macbeth reference (linear sRGB) and a synthetic camera: channel mix, 1/2.2."""
    cv2 = pytest.importorskip("cv2")
    model = cv2.ccm.ColorCorrectionModel(np.full((24, 1, 3), 0.5), cv2.ccm.COLORCHECKER_MACBETH)
    model.setLinearization(cv2.ccm.LINEARIZATION_IDENTITY)
    model.compute()
    ref = model.getRefLinearRGB().reshape(24, 3)
    mix = np.array([[0.9, 0.08, 0.02], [0.05, 0.85, 0.1], [0.03, 0.12, 0.85]])
    src = (1.05 * ref.clip(1e-4) @ mix) ** (1 / 2.2)  # the white patch saturates (> 0.98)
    coords = {"patch": PATCHES, "channel": RGB}
    reference = xr.DataArray(
        ref, dims=("patch", "channel"), coords=coords, attrs={"space": "srgb-linear"}
    )
    measured = xr.DataArray(src, dims=("patch", "channel"), coords=coords)
    return cv2, measured, reference


def _opencv_linear(cv2, src, linearization, rgb=True):
    model = cv2.ccm.ColorCorrectionModel(src.reshape(24, 1, 3), cv2.ccm.COLORCHECKER_MACBETH)
    model.setRGB(rgb)
    model.setLinearization(linearization)
    model.setLinearizationDegree(3)
    model.compute()
    return model.getSrcLinearRGB().reshape(-1, 3), model.getMask().ravel().astype(bool)


@pytest.mark.parametrize("method", ["color_polyfit", "color_logpolyfit"])
def test_matches_opencv_color_methods(opencv_chart, method):
    cv2, measured, reference = opencv_chart
    flag = getattr(cv2.ccm, "LINEARIZATION_" + method.replace("_", "").upper())
    expected, used = _opencv_linear(cv2, measured.values, flag)
    mask = saturation_mask(measured)
    assert mask.values.tolist() == used.tolist() and not used[18]
    c = fit_linearization(measured, reference, method, degree=3, mask=mask)
    np.testing.assert_allclose(linearize(measured, c).values[used], expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        xccm.chart(edition="opencv").values, reference.values, rtol=0, atol=5e-4
    )


def test_opencv_gray_methods(opencv_chart):
    """OpenCV 5.0.0 cannot run its gray methods on CV_64F input (cvtColor rejects it)."""
    cv2, measured, reference = opencv_chart
    try:
        expected, used = _opencv_linear(cv2, measured.values, cv2.ccm.LINEARIZATION_GRAYPOLYFIT)
    except cv2.error:
        pytest.skip("this OpenCV's LINEARIZATION_GRAYPOLYFIT fails on float64 input")
    c = fit_linearization(measured, reference, "gray_polyfit", degree=3, mask=used)
    np.testing.assert_allclose(linearize(measured, c).values[used], expected, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_linearize_arguments(image, color_coeffs):
    with pytest.raises(ValueError, match=r"unknown method 'rec709'.*'identity', 'srgb', 'gamma'"):
        linearize(image, "rec709")
    for g in (0, -2.2, np.nan, np.inf):
        with pytest.raises(ValueError, match="gamma must be a finite positive"):
            linearize(image, "gamma", gamma=g)
    with pytest.raises(TypeError, match="gamma must be a number"):
        encode(image, "gamma", gamma="2.2")
    for s in (0, -1, np.nan):
        with pytest.raises(ValueError, match="scale must be a finite positive"):
            linearize(image, "srgb", scale=s)
    for dtype in (bool, complex):
        with pytest.raises(TypeError, match="x must hold real numbers"):
            linearize(image.astype(dtype), "srgb")


def test_bad_coefficients(image, color_coeffs):
    with pytest.raises(ValueError, match=r"x has no dim 'channel'"):
        linearize(image.isel(channel=0, drop=True), color_coeffs)
    with pytest.raises(ValueError, match="hold 3 channel curves but x has 2"):
        linearize(image.isel(channel=[0, 1]), color_coeffs)
    with pytest.raises(ValueError, match=r"labelled \['R', 'G', 'B'\].*\['X', 'Y', 'Z'\]"):
        linearize(image.assign_coords(channel=list("XYZ")), color_coeffs)
    with pytest.raises(ValueError, match="split into 3 chunks"):
        linearize(image.chunk({"channel": 1}), color_coeffs)
    with pytest.raises(ValueError, match="attrs\\['method'\\] must be one of"):
        linearize(image, color_coeffs.assign_attrs(method=None))
    with pytest.raises(ValueError, match=r"must have dims \('c', 'power'\)"):
        linearize(image.rename(channel="c"), color_coeffs, dim="c")
    with pytest.raises(ValueError, match=r"'power' coords must be 0\.\.3"):
        linearize(image, color_coeffs.assign_coords(power=[3, 2, 1, 0]))
    with pytest.raises(ValueError, match="coefficients must be finite"):
        linearize(image, color_coeffs.where(color_coeffs.power < 3))


def test_bad_fit_arguments(rng):
    x = camera_values(rng)
    ref = as_reference(x.values**2.2, x)
    with pytest.raises(ValueError, match=r"unknown method 'spline'.*'color_polyfit'"):
        fit_linearization(x, ref, "spline")
    for degree in (0, -1):
        with pytest.raises(ValueError, match="degree must be an integer >= 1"):
            fit_linearization(x, ref, degree=degree)
    for degree in (2.0, True, "3"):
        with pytest.raises(TypeError, match="degree must be an integer"):
            fit_linearization(x, ref, degree=degree)
    with pytest.raises(ValueError, match=r"degree 24 needs at least 25 usable.*24 of 24"):
        fit_linearization(x, ref, degree=24)
    with pytest.raises(ValueError, match=r"channel 'R': 3 of 24 patches are usable"):
        fit_linearization(x, ref, degree=3, mask=np.arange(24) < 3)
    with pytest.raises(ValueError, match="no usable patch: all 24 patches are masked"):
        fit_linearization(x, ref, mask=np.zeros(24, bool))
    with pytest.raises(ValueError, match="no usable patch has measured and reference both > 0"):
        fit_linearization(-x, ref, "color_logpolyfit")
    with pytest.raises(ValueError, match=r"degree 6 needs at least 7.*6 of 24 are neutral"):
        fit_linearization(
            x, xccm.chart(edition="opencv").assign_coords(patch=x.patch), "gray_polyfit", degree=6
        )


def test_bad_fit_inputs(rng):
    x = camera_values(rng)
    ref = as_reference(x.values**2.2, x)
    frames = xr.concat([x, x], dim="time")
    with pytest.raises(ValueError, match=r"dims \('time',\) that reference lacks.*one curve per"):
        fit_linearization(frames, ref)
    with pytest.raises(
        ValueError, match=r"reference has other 'patch' labels than measured: .*assign_coords"
    ):
        fit_linearization(x, ref.assign_coords(patch=[f"q{i}" for i in range(ref.sizes["patch"])]))
    with pytest.raises(ValueError, match=r"sizes of dim 'patch' differ"):
        fit_linearization(x.isel(patch=slice(20)).drop_vars("patch"), ref.drop_vars("patch"))
    with pytest.raises(ValueError, match="reference has no dim besides 'channel'"):
        fit_linearization(x.isel(patch=0), ref.isel(patch=0))
    with pytest.raises(TypeError, match="measured must be a DataArray"):
        fit_linearization(x.values, ref)
    with pytest.raises(TypeError, match=r"measured has dtype int64.*measured / 255"):
        fit_linearization((x * 255).astype(np.int64), ref)
    with pytest.raises(ValueError, match="measured must have 3 channels"):
        fit_linearization(x.isel(channel=[0, 1]), ref)
    with pytest.raises(ValueError, match="measured has no dim 'c'"):
        fit_linearization(x, ref, dim="c")
    with pytest.raises(TypeError, match="mask must be boolean"):
        fit_linearization(x, ref, mask=np.ones(24))
    with pytest.raises(ValueError, match="mask as a plain array must have the shape"):
        fit_linearization(x, ref, mask=np.ones(23, bool))
    with pytest.raises(ValueError, match=r"mask must span only the patch dims.*'channel'"):
        fit_linearization(x, ref, mask=x > 0)
    with pytest.raises(
        ValueError, match=r"mask has other 'patch' labels than measured: 24 label\(s\)"
    ):
        fit_linearization(
            x,
            ref,
            mask=xr.DataArray(np.ones(24, bool), dims="patch", coords={"patch": np.arange(24)}),
        )
    with pytest.raises(ValueError, match="unknown rgb_space"):
        fit_linearization(x, ref, rgb_space="nope")
    with pytest.raises(ValueError, match="coords must be"):
        fit_linearization(x, ref.assign_attrs(space="lab-d50"))


def test_identity_never_returns_a_view_of_the_input():
    x = np.full((2, 3), 0.5)
    y = linearize(x, "identity")
    y[0, 0] = 5.0
    assert x[0, 0] == 0.5
    da = xr.DataArray(np.full((2, 3), 0.5), dims=("patch", "channel"))
    out = linearize(da, "identity")
    out[0, 0] = 5.0
    assert float(da[0, 0]) == 0.5


def test_fit_pairs_patches_by_label(rng):
    x = camera_values(rng)
    ref = as_reference(x.values**2.2, x)
    assert "patch" in ref.indexes
    shuffled = ref.isel(patch=rng.permutation(ref.sizes["patch"]))
    xr.testing.assert_allclose(fit_linearization(x, shuffled), fit_linearization(x, ref))
