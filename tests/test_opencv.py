"""The accuracy bar: xccm's ΔE-optimised fit against OpenCV's ``cv2.ccm`` on synthetic charts.

Needs opencv-contrib-python-headless (``pip install -e ".[test-opencv]"``); skipped without it.
Both fits see the same chart (OpenCV's ColorChecker Lab D50 values, passed to both), the same
gamma 2.2 linearisation of sRGB-encoded camera values in [0, 1], the same saturation mask
(0, 0.98) on the encoded values, and the same loss. OpenCV's sRGB is built from the primaries
with its own D65 and D50 chromaticities; ``CV_SRGB`` below is that space in colour-science,
so that both losses are computed in the same space. Matrices are compared through one
evaluator (xccm's report, itself checked against colour-science in test_colorimetry), and
against OpenCV's own reported loss up to the small differences of its colour constants.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import lstsq

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2, "ccm") or not hasattr(cv2.ccm, "ColorCorrectionModel"):
    pytest.skip("this OpenCV has no ccm module", allow_module_level=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    colour = pytest.importorskip("colour")

CV_D50 = (0.34567, 0.35850)
CV_SRGB = colour.RGB_Colourspace(
    "sRGB (OpenCV)",
    np.array([[0.64, 0.33], [0.30, 0.60], [0.15, 0.06]]),
    np.array([0.31271, 0.32902]),
    "D65",
    use_derived_matrix_RGB_to_XYZ=True,
    use_derived_matrix_XYZ_to_RGB=True,
)
DISTANCES = {
    "ciede2000": "DISTANCE_CIE2000",
    "cie76": "DISTANCE_CIE76",
    "cie94": "DISTANCE_CIE94_GRAPHIC_ARTS",
    "cie94_textiles": "DISTANCE_CIE94_TEXTILES",
    "cmc": "DISTANCE_CMC_1TO1",
    "cmc_2to1": "DISTANCE_CMC_2TO1",
}
MODELS = {"linear": "CCM_LINEAR", "affine": "CCM_AFFINE"}


@pytest.fixture(scope="module")
def chart():
    lab = xccm.chart("colorchecker24", space="lab-d50", edition="opencv")
    return lab.assign_attrs(space="lab", illuminant=CV_D50)


def camera(chart, seed: int):
    """sRGB-encoded camera values of the chart: channel mix, exposure, noise, gamma 1/2.2."""
    rng = np.random.default_rng(seed)
    linear = xccm.convert(chart, "rgb", rgb_space=CV_SRGB).values.clip(0)
    mix = np.eye(3) * 0.6 + rng.uniform(0, 0.2, (3, 3))
    cam = (linear @ mix) * rng.uniform(0.7, 1.1) + rng.normal(0, 0.004, (24, 3))
    if seed % 2:
        cam[18] = [1.0, 0.99, 1.0]  # a clipped white patch, left out by the saturation mask
    return cam.clip(0, 1) ** (1 / 2.2)


def opencv_fit(src, chart, loss, model):
    m = cv2.ccm.ColorCorrectionModel(
        src.reshape(24, 1, 3).astype(np.float64),
        chart.values.reshape(24, 1, 3).copy(),
        cv2.ccm.COLOR_SPACE_LAB_D50_2,
    )
    m.setRGB(True)
    m.setCcmType(getattr(cv2.ccm, MODELS[model]))
    m.setDistance(getattr(cv2.ccm, DISTANCES.get(loss, "DISTANCE_RGBL")))
    m.setLinearization(cv2.ccm.LINEARIZATION_GAMMA)
    m.setLinearizationGamma(2.2)
    m.setSaturatedThreshold(0, 0.98)
    m.compute()
    return m.getColorCorrectionMatrix(), m.getLoss()


def xccm_fit(src, chart, loss, model, **kwargs):
    encoded = xr.DataArray(src, dims=("patch", "channel"), coords={"channel": ["R", "G", "B"]})
    encoded = encoded.assign_coords(patch=chart.patch)
    linear = encoded**2.2
    mask = xccm.saturation_mask(encoded, 0, 0.98)  # OpenCV masks the values before gamma
    m = xccm.fit(
        linear,
        chart,
        model=model,
        loss=loss,
        mask=mask,
        saturation=None,
        rgb_space=CV_SRGB,
        standard="sample",  # OpenCV's CIE94 and CMC weight by the corrected colour
        **kwargs,
    )
    return linear, mask, m


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("model", ["linear", "affine"])
@pytest.mark.parametrize("loss", [*DISTANCES])
def test_delta_e_fit_is_at_least_as_good_as_opencv(chart, seed, model, loss):
    src = camera(chart, seed)
    m_cv, loss_cv = opencv_fit(src, chart, loss, model)
    linear, mask, m = xccm_fit(src, chart, loss, model)
    assert bool(m.converged)
    cv_matrix = xr.DataArray(m_cv, dims=("channel_in", "channel"))
    ours_eval = xccm.report(
        linear, chart, m, loss, weights=mask, rgb_space=CV_SRGB, standard="sample"
    )
    cv_eval = xccm.report(
        linear, chart, cv_matrix, loss, weights=mask, rgb_space=CV_SRGB, standard="sample"
    )
    # The same evaluator for both matrices: ours is no worse (to the last rounding).
    assert float(ours_eval["loss"]) == pytest.approx(float(m.loss), rel=1e-12)
    assert float(m.loss) <= float(cv_eval["loss"]) + 1e-9
    # Our evaluator reproduces OpenCV's own loss of its matrix to its colour constants...
    assert float(cv_eval["loss"]) == pytest.approx(loss_cv, rel=1e-4)
    # ...and so our loss is at most OpenCV's reported loss, to that precision.
    assert float(m.loss) <= loss_cv * (1 + 1e-4)


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_linear_rgb_fit_is_the_closed_form_and_beats_opencv(chart, model):
    src = camera(chart, 1)
    m_cv, loss_cv = opencv_fit(src, chart, "linear_rgb", model)
    linear, mask, m = xccm_fit(src, chart, "linear_rgb", model)
    keep = mask.values
    target = xccm.convert(chart, "rgb", rgb_space=CV_SRGB).values
    expected = lstsq(linear.values[keep], target[keep], affine=model == "affine")
    np.testing.assert_allclose(m.values, expected, rtol=0, atol=1e-12)
    assert float(m.loss) <= loss_cv
    resid = (
        np.c_[linear.values[keep], np.ones(keep.sum())]
        if model == "affine"
        else linear.values[keep]
    ) @ np.asarray(m_cv) - target[keep]
    assert float(m.loss) <= np.sqrt(np.sum(np.asarray(resid) ** 2) / keep.sum())


@pytest.mark.parametrize("seed", [1, 3])
def test_default_saturation_range_is_taken_before_linearisation_as_opencv(chart, seed):
    # No mask by hand: the default saturation range applies to the encoded values, which
    # xccm.linearize recorded, so the same patches are left out as OpenCV leaves out.
    src = camera(chart, seed)
    encoded = xr.DataArray(src, dims=("patch", "channel"), coords={"channel": ["R", "G", "B"]})
    encoded = encoded.assign_coords(patch=chart.patch)
    linear = xccm.linearize(encoded, "gamma", gamma=2.2)
    m = xccm.fit(linear, chart, loss="ciede2000", rgb_space=CV_SRGB, standard="sample")
    _, _, m_by_hand = xccm_fit(src, chart, "ciede2000", "linear")
    assert m.attrs["saturation_on"] == "encoded values (before gamma 2.2)"
    xr.testing.assert_allclose(m, m_by_hand, rtol=0, atol=0)
    _, loss_cv = opencv_fit(src, chart, "ciede2000", "linear")
    assert float(m.loss) <= loss_cv * (1 + 1e-4)
