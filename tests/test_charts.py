"""xccm.charts: built-in chart reference data and charts from user tables."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from xccm.charts import available_charts, chart, chart_from_table

PATCHES = [
    "dark skin",
    "light skin",
    "blue sky",
    "foliage",
    "blue flower",
    "bluish green",
    "orange",
    "purplish blue",
    "moderate red",
    "purple",
    "yellow green",
    "orange yellow",
    "blue",
    "green",
    "red",
    "yellow",
    "magenta",
    "cyan",
    "white 9.5 (.05 D)",
    "neutral 8 (.23 D)",
    "neutral 6.5 (.44 D)",
    "neutral 5 (.70 D)",
    "neutral 3.5 (1.05 D)",
    "black 2 (1.5 D)",
]
NEUTRALS = PATCHES[18:]
SG_PATCHES = [f"{column}{row}" for row in range(1, 11) for column in "ABCDEFGHIJKLMN"]
VINYL_PATCHES = [str(number) for number in range(1, 19)]
EDITIONS = ["2014", "pre2014"]  # X-Rite's, for both the Classic and the Digital SG
CHANNELS = {"srgb-linear": ["R", "G", "B"], "lab-d50": ["L", "a", "b"], "xyz-d50": ["X", "Y", "Z"]}
SPACES = list(CHANNELS)
# (chart, edition) -> (patch names, white of the L*a*b* and XYZ data)
BUILTIN = {
    ("colorchecker24", "2014"): (PATCHES, "ICC D50"),
    ("colorchecker24", "pre2014"): (PATCHES, "ICC D50"),
    ("colorchecker24", "opencv"): (PATCHES, "D50"),
    ("colorchecker_sg", "2014"): (SG_PATCHES, "ICC D50"),
    ("colorchecker_sg", "pre2014"): (SG_PATCHES, "ICC D50"),
    ("vinyl18", "opencv"): (VINYL_PATCHES, "D50"),
}
WHITE_XY = {
    "ICC D50": np.array([0.345702914918791, 0.358538596679933]),  # colour-science's ICC D50
    "D50": np.array([0.34567, 0.35850]),  # OpenCV's D50_2 (colorspace.cpp)
}
XRITE_COLOUR_KEYS = {
    ("colorchecker24", "2014"): "ColorChecker24 - After November 2014",
    ("colorchecker24", "pre2014"): "ColorChecker24 - Before November 2014",
    ("colorchecker_sg", "2014"): "ColorCheckerSG - After November 2014",
    ("colorchecker_sg", "pre2014"): "ColorCheckerSG - Before November 2014",
}

# ---------------------------------------------------------------------------------------------
# structure


def test_available_charts():
    assert available_charts() == ("colorchecker24", "colorchecker_sg", "vinyl18")


def test_importing_charts_does_not_import_colour():
    # A fresh interpreter: other tests in this session may import colour themselves.
    import subprocess

    code = "import sys, xccm.charts; print('colour' in sys.modules, 'cv2' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False False"


#: the illuminant attr: X-Rite's white by name, OpenCV's D50 by its chromaticity
ATTR_WHITE = {"ICC D50": "ICC D50", "D50": [0.34567, 0.3585]}


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize(("name", "edition"), list(BUILTIN))
def test_structure(name, edition, space):
    ref = chart(name, space=space, edition=edition)
    patches, white = BUILTIN[name, edition]
    assert isinstance(ref, xr.DataArray)
    assert ref.dims == ("patch", "channel")
    assert ref.shape == (len(patches), 3)
    assert ref.dtype == np.float64
    assert ref["patch"].values.tolist() == patches
    assert ref["channel"].values.tolist() == CHANNELS[space]
    assert np.isfinite(ref.values).all()
    expected_keys = ["chart", "space", "illuminant", "edition", "source"]
    if space == "srgb-linear":
        expected_keys.insert(3, "rgb_space")
        assert ref.attrs["rgb_space"] == "sRGB"
        assert ref.attrs["illuminant"] == "D65"
        assert f"Bradford adaptation {ATTR_WHITE[white]} -> D65" in ref.attrs["source"]
    else:
        assert ref.attrs["illuminant"] == ATTR_WHITE[white]
    assert list(ref.attrs) == expected_keys
    assert ref.attrs["chart"] == name
    assert ref.attrs["space"] == space
    assert ref.attrs["edition"] == edition
    source = ref.attrs["source"]
    if edition == "opencv":
        assert "OpenCV modules/photo/src/ccm/color.cpp" in source
        assert ("Vinyl_LAB_D50_2" in source) == (name == "vinyl18")
        assert ("ColorChecker2005_LAB_D50_2" in source) == (name == "colorchecker24")
    else:
        assert "X-Rite" in source
        assert "November 2014" in source
        assert ("before" in source) == (edition == "pre2014")
        assert ("Digital SG" in source) == (name == "colorchecker_sg")


def test_defaults_are_current_edition_linear_srgb():
    default = chart()
    explicit = chart("colorchecker24", space="srgb-linear", edition="2014")
    xr.testing.assert_identical(default, explicit)
    xr.testing.assert_identical(chart(edition=None), explicit)
    xr.testing.assert_identical(chart(edition="2014"), explicit)


@pytest.mark.parametrize(
    ("name", "current"),
    [("colorchecker24", "2014"), ("colorchecker_sg", "2014"), ("vinyl18", "opencv")],
)
def test_edition_none_is_the_current_edition(name, current):
    ref = chart(name, space="lab-d50")
    assert ref.attrs["edition"] == current
    xr.testing.assert_identical(ref, chart(name, space="lab-d50", edition=current.upper()))


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("colorchecker24", "colorchecker24"),
        ("ColorChecker24", "colorchecker24"),
        ("colorchecker classic", "colorchecker24"),
        ("ColorChecker_Classic", "colorchecker24"),
        ("colorchecker_sg", "colorchecker_sg"),
        ("ColorChecker SG", "colorchecker_sg"),
        ("colorchecker digital sg", "colorchecker_sg"),
        ("SG140", "colorchecker_sg"),
        (" Digital SG ", "colorchecker_sg"),
        ("vinyl18", "vinyl18"),
        ("Vinyl", "vinyl18"),
    ],
)
def test_names_and_aliases_are_case_insensitive(alias, name):
    got = chart(alias, space="XYZ-D50")
    xr.testing.assert_identical(got, chart(name, space="xyz-d50"))
    assert got.attrs["chart"] == name


def test_space_and_edition_are_case_insensitive():
    got = chart(space="LAB-D50", edition="PRE2014")
    xr.testing.assert_identical(got, chart(space="lab-d50", edition="pre2014"))


def test_editions_and_spaces_differ():
    for name in ["colorchecker24", "colorchecker_sg"]:
        for space in SPACES:
            a = chart(name, space=space, edition="2014")
            b = chart(name, space=space, edition="pre2014")
            assert not np.allclose(a.values, b.values)


def test_opencv_2005_differs_from_pre2014_only_in_blue_sky_b():
    # OpenCV's ColorChecker2005_LAB_D50_2 is X-Rite's pre-2014 data but for one value.
    opencv = chart(space="lab-d50", edition="opencv").values
    pre2014 = chart(space="lab-d50", edition="pre2014").values
    differs = np.argwhere(opencv != pre2014).tolist()
    assert differs == [[PATCHES.index("blue sky"), 2]]
    assert (opencv[2, 2], pre2014[2, 2]) == (-21.925, -21.905)


# Spot values straight from X-Rite's published tables (CIE L*a*b*, ICC D50) and from OpenCV's
# color.cpp, independent of colour-science: catches swapped editions or misordered rows.
@pytest.mark.parametrize(
    ("name", "edition", "patch", "lab"),
    [
        ("colorchecker24", "2014", "dark skin", [37.54, 14.37, 14.92]),
        ("colorchecker24", "2014", "cyan", [49.57, -29.71, -28.32]),
        ("colorchecker24", "2014", "white 9.5 (.05 D)", [95.19, -1.03, 2.93]),
        ("colorchecker24", "2014", "black 2 (1.5 D)", [20.64, 0.07, -0.46]),
        ("colorchecker24", "pre2014", "dark skin", [37.986, 13.555, 14.059]),
        ("colorchecker24", "pre2014", "cyan", [51.038, -28.631, -28.638]),
        ("colorchecker24", "pre2014", "white 9.5 (.05 D)", [96.539, -0.425, 1.186]),
        ("colorchecker24", "pre2014", "black 2 (1.5 D)", [20.461, -0.079, -0.973]),
        ("colorchecker24", "opencv", "dark skin", [37.986, 13.555, 14.059]),
        ("colorchecker24", "opencv", "blue sky", [49.927, -4.88, -21.925]),
        ("colorchecker24", "opencv", "black 2 (1.5 D)", [20.461, -0.079, -0.973]),
        ("colorchecker_sg", "pre2014", "A1", [96.55, -0.91, 0.57]),
        ("colorchecker_sg", "pre2014", "A2", [6.43, -0.06, -0.41]),
        ("colorchecker_sg", "pre2014", "B2", [32.6, 51.58, -10.85]),
        ("colorchecker_sg", "pre2014", "N10", [96.46, -0.89, 0.71]),
        ("colorchecker_sg", "2014", "N10", [96.55, -0.64, 2.02]),
        ("vinyl18", "opencv", "1", [100, 0.00520000001, -0.0104]),
        ("vinyl18", "opencv", "6", [0, 0, 0]),
        ("vinyl18", "opencv", "10", [66.61000060000001, -13.6789999, -43.1720009]),
        ("vinyl18", "opencv", "18", [63.6839981, 10.2930002, 16.7639999]),
    ],
)
def test_published_lab_spot_values(name, edition, patch, lab):
    got = chart(name, space="lab-d50", edition=edition).sel(patch=patch).values
    np.testing.assert_array_equal(got, lab)


# ---------------------------------------------------------------------------------------------
# plausibility, and a NumPy-only reference conversion


@pytest.mark.parametrize("edition", EDITIONS)
def test_white_patch_is_near_neutral(edition):
    white = chart(edition=edition).sel(patch="white 9.5 (.05 D)").values
    assert 0.8 < white.min() <= white.max() < 0.95
    # Within a few percent of grey (the 2014 white has b* = 2.9, a slightly warm white).
    assert (white.max() - white.min()) / white.mean() < 0.08


@pytest.mark.parametrize("edition", EDITIONS)
def test_neutral_row_is_grey_and_decreasing(edition):
    ref = chart(edition=edition).sel(patch=NEUTRALS).values
    assert (np.diff(ref, axis=0) < 0).all()  # white -> black, every channel
    spread = (ref.max(axis=1) - ref.min(axis=1)) / ref.mean(axis=1)
    assert (spread < 0.1).all()
    lab = chart(space="lab-d50", edition=edition).sel(patch=NEUTRALS).values
    assert (np.hypot(lab[:, 1], lab[:, 2]) < 3.5).all()  # chroma C*ab


@pytest.mark.parametrize("edition", EDITIONS)
def test_primary_patches_are_dominated_by_their_channel(edition):
    ref = chart(edition=edition)
    for patch, channel in [("red", "R"), ("green", "G"), ("blue", "B")]:
        row = ref.sel(patch=patch)
        assert row.idxmax("channel").item() == channel


def test_vinyl_neutrals_and_perfect_white():
    ref = chart("vinyl", space="srgb-linear").values
    assert (np.diff(ref[:6], axis=0) < 0).all()  # patches 1-6: white -> black
    np.testing.assert_array_equal(ref[5], [0.0, 0.0, 0.0])  # L* = 0
    np.testing.assert_allclose(ref[0], [1.0, 1.0, 1.0], rtol=0, atol=1e-3)  # L* = 100
    xyz = chart("vinyl", space="xyz-d50").values
    # patch 1 is L* = 100, a* = 0.0052, b* = -0.0104: nearly the D50 white
    np.testing.assert_allclose(xyz[0], [0.34567 / 0.3585, 1.0, 0.29583 / 0.3585], atol=2e-4)


BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)
# the inverse of IEC 61966-2-1's RGB -> XYZ matrix (4 decimals), as xccm.convert inverts it
XYZ_TO_SRGB_IEC = np.linalg.inv(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
)


def _xy_to_xyz(xy) -> np.ndarray:
    return np.array([xy[0] / xy[1], 1.0, (1 - xy[0] - xy[1]) / xy[1]])


def _lab_to_xyz(lab: np.ndarray, white_xyz: np.ndarray) -> np.ndarray:
    """CIE L*a*b* -> XYZ (white Y = 1) in plain NumPy, no colour-science."""
    eps, kappa = 216 / 24389, 24389 / 27
    L, a, b = np.asarray(lab, dtype=np.float64).T
    fy = (L + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def finv(f):
        return np.where(f**3 > eps, f**3, (116 * f - 16) / kappa)

    y = np.where(L > kappa * eps, fy**3, L / kappa)
    return np.stack([finv(fx), y, finv(fz)], axis=-1) * [white_xyz[0], 1.0, white_xyz[2]]


def _bradford(source_white: np.ndarray, target_white: np.ndarray) -> np.ndarray:
    gain = (BRADFORD @ target_white) / (BRADFORD @ source_white)
    return np.linalg.inv(BRADFORD) @ np.diag(gain) @ BRADFORD


def _lab_to_linear_srgb(lab: np.ndarray, white: str) -> np.ndarray:
    """The module's recipe in plain NumPy: Bradford to D65, then the IEC matrix."""
    source = _xy_to_xyz(WHITE_XY[white])
    cat = _bradford(source, _xy_to_xyz([0.3127, 0.3290]))
    return _lab_to_xyz(lab, source) @ (XYZ_TO_SRGB_IEC @ cat).T


@pytest.mark.parametrize(("name", "edition"), list(BUILTIN))
def test_xyz_and_linear_srgb_match_numpy_reference_conversion(name, edition):
    white = BUILTIN[name, edition][1]
    lab = chart(name, space="lab-d50", edition=edition).values
    expected_xyz = _lab_to_xyz(lab, _xy_to_xyz(WHITE_XY[white]))
    got_xyz = chart(name, space="xyz-d50", edition=edition).values
    np.testing.assert_allclose(got_xyz, expected_xyz, rtol=0, atol=1e-12)
    expected_rgb = _lab_to_linear_srgb(lab, white)
    got_rgb = chart(name, space="srgb-linear", edition=edition).values
    np.testing.assert_allclose(got_rgb, expected_rgb, rtol=0, atol=1e-12)


def test_numpy_reference_conversion_maps_perfect_white_to_one():
    # Relative scale: the perfect reflecting white (L* = 100) is R = G = B = 1 (up to the
    # 4-decimal rounding of the IEC 61966-2-1 matrix), and Y = 1.
    for white in WHITE_XY:
        rgb = _lab_to_linear_srgb(np.array([[100.0, 0.0, 0.0]]), white)
        np.testing.assert_allclose(rgb, [[1.0, 1.0, 1.0]], rtol=0, atol=1e-3)
        xyz = _lab_to_xyz(np.array([[100.0, 0.0, 0.0]]), _xy_to_xyz(WHITE_XY[white]))
        np.testing.assert_allclose(xyz, [_xy_to_xyz(WHITE_XY[white])], rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# errors


def test_unknown_chart():
    with pytest.raises(
        ValueError,
        match=r"unknown chart 'foo'; choose one of \['colorchecker24', 'colorchecker_sg', "
        r"'vinyl18'\]",
    ):
        chart("foo")


@pytest.mark.parametrize(
    ("name", "charts"),
    [
        ("opencv", ["colorchecker24", "vinyl18"]),
        ("2014", ["colorchecker24", "colorchecker_sg"]),
        (" PRE2014", ["colorchecker24", "colorchecker_sg"]),
    ],
)
def test_an_edition_given_as_the_chart_says_how_to_ask_for_it(name, charts):
    edition = name.strip().lower()
    calls = " or ".join(rf"chart\('{c}', edition='{edition}'\)" for c in charts)
    with pytest.raises(
        ValueError, match=rf"unknown chart '{name}' \(it is an edition, not a chart: {calls}\)"
    ):
        chart(name)
    assert chart("colorchecker24", edition="opencv").attrs["edition"] == "opencv"


def test_unknown_space():
    with pytest.raises(
        ValueError, match=r"unknown space 'srgb'.*'srgb-linear', 'lab-d50', 'xyz-d50'"
    ):
        chart(space="srgb")


def test_unknown_edition():
    with pytest.raises(
        ValueError,
        match=r"unknown edition '2005' for chart 'colorchecker24'; "
        r"choose one of \['2014', 'pre2014', 'opencv'\]",
    ):
        chart(edition="2005")


@pytest.mark.parametrize(
    ("name", "edition", "editions"),
    [
        ("vinyl18", "2014", r"\['opencv'\]"),
        ("colorchecker_sg", "opencv", r"\['2014', 'pre2014'\]"),
    ],
)
def test_edition_the_chart_does_not_have(name, edition, editions):
    with pytest.raises(ValueError, match=rf"edition '{edition}' for chart '{name}'.*{editions}"):
        chart(name, edition=edition)


@pytest.mark.parametrize(
    "kwargs", [{"name": 24}, {"space": None}, {"edition": 2014}], ids=["name", "space", "edition"]
)
def test_non_string_arguments(kwargs):
    with pytest.raises(TypeError, match="must be a str"):
        chart(**kwargs)


# ---------------------------------------------------------------------------------------------
# copies


def test_returned_chart_is_an_independent_copy():
    first = chart(space="lab-d50")
    expected = chart(space="lab-d50")
    first.values[:] = -1.0
    first.attrs["edition"] = "tampered"
    first.attrs["extra"] = 1
    second = chart(space="lab-d50")
    xr.testing.assert_identical(second, expected)
    assert second.values[0, 0] == 37.54
    assert not np.shares_memory(first.values, second.values)


# ---------------------------------------------------------------------------------------------
# against colour-science, recomputed live


@pytest.fixture(scope="module")
def colour():
    colour = pytest.importorskip("colour")
    # colour-science switches NumPy to legacy printing on import; the root conftest resets it.
    return colour


def _colour_white(colour, white: str) -> np.ndarray:
    if white == "ICC D50":
        return colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["ICC D50"]
    return WHITE_XY[white]  # OpenCV's D50 (colour-science's "D50" is (0.3457, 0.3585))


def test_whites_match_colour_science(colour):
    icc = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["ICC D50"]
    np.testing.assert_allclose(icc, WHITE_XY["ICC D50"], rtol=0, atol=1e-15)


@pytest.mark.parametrize(("name", "edition"), list(XRITE_COLOUR_KEYS))
def test_lab_matches_colour_science(colour, name, edition):
    checker = colour.CCS_COLOURCHECKERS[XRITE_COLOUR_KEYS[name, edition]]
    assert list(checker.data) == BUILTIN[name, edition][0]
    xyy = np.array(list(checker.data.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = colour.XYZ_to_Lab(colour.xyY_to_XYZ(xyy), checker.illuminant)
    got = chart(name, space="lab-d50", edition=edition).values
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("name", "edition"), list(XRITE_COLOUR_KEYS))
def test_lab_matches_colour_science_published_table(colour, name, edition):
    datasets = pytest.importorskip(
        "colour.characterisation.datasets.colour_checkers.chromaticity_coordinates"
    )
    product = {"colorchecker24": "COLORCHECKER24", "colorchecker_sg": "COLORCHECKERSG"}[name]
    when = {"2014": "AFTER", "pre2014": "BEFORE"}[edition]
    table = f"DATA_{product}_{when}_NOV2014_CIE_LAB"
    published = getattr(datasets, table, None)
    if published is None:
        pytest.skip(f"this colour-science has no {table}")
    patches = BUILTIN[name, edition][0]
    assert sorted(published) == sorted(patches)
    np.testing.assert_array_equal(
        chart(name, space="lab-d50", edition=edition).values,
        np.array([published[patch] for patch in patches]),
    )


@pytest.mark.parametrize(("name", "edition"), list(BUILTIN))
def test_xyz_and_linear_srgb_match_colour_science(colour, name, edition):
    white = _colour_white(colour, BUILTIN[name, edition][1])
    lab = chart(name, space="lab-d50", edition=edition).values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xyz = colour.Lab_to_XYZ(lab, white)
        rgb = _colour_xyz_to_srgb(colour, xyz, white)
    got_xyz = chart(name, space="xyz-d50", edition=edition).values
    np.testing.assert_allclose(got_xyz, xyz, rtol=0, atol=1e-12)
    got_rgb = chart(name, space="srgb-linear", edition=edition).values
    np.testing.assert_allclose(got_rgb, rgb, rtol=0, atol=1e-12)


def _colour_xyz_to_srgb(colour, xyz, white):
    """Bradford-adapt to D65 with colour-science, then invert sRGB's RGB -> XYZ matrix exactly.

    (colour.XYZ_to_RGB would use the published XYZ -> RGB matrix, rounded on its own.)
    """
    srgb = colour.RGB_COLOURSPACES["sRGB"]
    adapted = colour.chromatic_adaptation(
        xyz,
        colour.xy_to_XYZ(white),
        colour.xy_to_XYZ(srgb.whitepoint),
        method="Von Kries",
        transform="Bradford",
    )
    return adapted @ np.linalg.inv(srgb.matrix_RGB_to_XYZ).T


@pytest.mark.parametrize("edition", EDITIONS)
def test_linear_srgb_matches_colour_science_from_xyy(colour, edition):
    checker = colour.CCS_COLOURCHECKERS[XRITE_COLOUR_KEYS["colorchecker24", edition]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _colour_xyz_to_srgb(
            colour, colour.xyY_to_XYZ(np.array(list(checker.data.values()))), checker.illuminant
        )
    got = chart(space="srgb-linear", edition=edition).values
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# against OpenCV (cv2.ccm), live


def _opencv_reference_linear_rgb(cv2, checker: int, n: int) -> np.ndarray:
    src = np.full((n, 1, 3), 0.5)
    model = cv2.ccm.ColorCorrectionModel(src, checker)
    model.setSaturatedThreshold(0, 1)  # mask nothing
    model.compute()
    return np.asarray(model.getRefLinearRGB(), dtype=np.float64).reshape(n, 3)


def _opencv_recipe(lab: np.ndarray) -> np.ndarray:
    """OpenCV's own Lab D50 -> linear sRGB: its D50 and D65 whites, matrix from primaries."""
    d50 = np.array([0.9642119944211994, 1, 0.8251882845188288])
    d65 = np.array([0.95047, 1.0, 1.08883])
    primaries = np.stack([_xy_to_xyz(xy) for xy in [(0.64, 0.33), (0.3, 0.6), (0.15, 0.06)]], 1)
    srgb_to_xyz = primaries * np.linalg.solve(primaries, d65)
    return _lab_to_xyz(lab, d50) @ (np.linalg.inv(srgb_to_xyz) @ _bradford(d50, d65)).T


@pytest.mark.parametrize(
    ("name", "checker"),
    [("vinyl18", "COLORCHECKER_VINYL"), ("colorchecker24", "COLORCHECKER_MACBETH")],
)
def test_opencv_data_match_cv2_ccm(name, checker):
    cv2 = pytest.importorskip("cv2")
    ccm = getattr(cv2, "ccm", None)
    if ccm is None or not hasattr(ccm, checker):
        pytest.skip("this OpenCV has no cv2.ccm." + checker)
    lab = chart(name, space="lab-d50", edition="opencv").values
    try:
        reference = _opencv_reference_linear_rgb(cv2, getattr(ccm, checker), len(lab))
    except (AttributeError, TypeError, cv2.error) as error:  # an older/newer API
        pytest.skip(f"cv2.ccm API differs: {error}")
    # Exactly OpenCV's L*a*b* numbers: OpenCV's own recipe reproduces its reference.
    np.testing.assert_allclose(_opencv_recipe(lab), reference, rtol=0, atol=1e-12)
    # Our table (IEC matrix, colour-science's D65) agrees to the rounding of the matrices.
    got = chart(name, space="srgb-linear", edition="opencv").values
    np.testing.assert_allclose(got, reference, rtol=0, atol=2.5e-4)


# ---------------------------------------------------------------------------------------------
# chart_from_table


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("space", "builtin", "user_space"),
    [("lab", "lab-d50", "lab"), ("xyz", "xyz-d50", "xyz"), ("rgb", "srgb-linear", "rgb-linear")],
)
def test_csv_round_trip(tmp_path, space, builtin, user_space):
    ref = chart("colorchecker_sg", space=builtin)
    path = tmp_path / "chart.csv"
    ref.to_pandas().rename_axis("patch").reset_index().to_csv(path, index=False)
    got = chart_from_table(path, space=space)
    np.testing.assert_array_equal(got.values, ref.values)  # repr floats: exact
    assert got.dtype == np.float64
    assert got.dims == ("patch", "channel")
    assert got["patch"].values.tolist() == SG_PATCHES
    assert got["channel"].values.tolist() == ref["channel"].values.tolist()
    assert got.attrs["space"] == user_space
    assert got.attrs["source"] == str(path)
    assert got.attrs["chart"] == "custom"
    # a str path too
    xr.testing.assert_identical(chart_from_table(str(path), space=space.upper()), got)


def test_csv_attrs(tmp_path):
    path = _write(tmp_path / "c.csv", "X,Y,Z\n0.1,0.2,0.3\n")
    got = chart_from_table(path, space="xyz", illuminant="D65", name="mine")
    assert got.attrs == {"chart": "mine", "space": "xyz", "illuminant": "D65", "source": str(path)}
    path = _write(tmp_path / "r.csv", "R,G,B\n0.1,0.2,0.3\n")
    got = chart_from_table(path, space="RGB", rgb_space="Display P3")
    assert got.attrs == {
        "chart": "custom",
        "space": "rgb-linear",
        "rgb_space": "Display P3",
        "source": str(path),
    }
    assert chart_from_table(path, space="rgb").attrs["rgb_space"] == "sRGB"
    assert chart_from_table([[50, 0, 0]], space="lab").attrs["illuminant"] == "D50"


@pytest.mark.parametrize(
    "text",
    [
        "patch,L,a,b\nwhite,95.2,-1.0,2.9\nblack,20.6,0.1,-0.5\n",
        "Patch,L*,a*,b*\nwhite,95.2,-1.0,2.9\nblack,20.6,0.1,-0.5\n",
        "name, b , l , A\nwhite, 2.9, 95.2, -1.0\nblack, -0.5, 20.6, 0.1\n",  # order, case
        "\ufeffpatch,L,a,b,\nwhite,95.2,-1.0,2.9,\nblack,20.6,0.1,-0.5,\n",  # BOM, trailing ,
        "patch,note,L,a,b\nwhite,matte,95.2,-1.0,2.9\n\nblack,,20.6,0.1,-0.5\n",  # extra text
        "L,patch,a,b\n95.2,white,-1.0,2.9\n20.6,black,0.1,-0.5\n",  # names not first
    ],
    ids=["plain", "stars", "reordered", "bom-trailing-comma", "extra-column", "names-second"],
)
def test_csv_header_variants(tmp_path, text):
    got = chart_from_table(_write(tmp_path / "t.csv", text), space="lab")
    assert got["patch"].values.tolist() == ["white", "black"]
    assert got["channel"].values.tolist() == ["L", "a", "b"]
    np.testing.assert_array_equal(got.values, [[95.2, -1.0, 2.9], [20.6, 0.1, -0.5]])


def test_csv_without_name_column_numbers_the_patches(tmp_path):
    got = chart_from_table(_write(tmp_path / "t.csv", "R,G,B\n0.1,0.2,0.3\n1,1,1\n"), space="rgb")
    assert got["patch"].values.tolist() == ["1", "2"]


def test_csv_patch_column_keeps_the_names_as_written(tmp_path):
    path = _write(tmp_path / "t.csv", "id,L,a,b\n001,50,0,0\nNA,60,1,1\n")
    got = chart_from_table(path, space="lab", patch_column="id")
    assert got["patch"].values.tolist() == ["001", "NA"]
    np.testing.assert_array_equal(got.values, [[50, 0, 0], [60, 1, 1]])


def test_dataframe_input_is_not_mutated():
    frame = pd.DataFrame(
        {"b*": [2.9, -0.5], "patch": ["white", "black"], "L*": [95.2, 20.6], "a*": [-1.0, 0.1]}
    )
    before = frame.copy()
    got = chart_from_table(frame, space="lab")
    pd.testing.assert_frame_equal(frame, before)
    np.testing.assert_array_equal(got.values, [[95.2, -1.0, 2.9], [20.6, 0.1, -0.5]])
    assert got.attrs["source"] == "user table"
    # the index, when it is not the default one, is read as a column
    indexed = frame.set_index("patch")
    xr.testing.assert_identical(chart_from_table(indexed, space="lab"), got)
    # numeric names need patch_column
    numbered = frame.assign(patch=[10, 20])
    got = chart_from_table(numbered, space="lab", patch_column="patch")
    assert got["patch"].values.tolist() == ["10", "20"]


def test_dataarray_input():
    ref = chart("vinyl", space="xyz-d50")
    shuffled = ref.isel(channel=[2, 0, 1]).transpose("channel", "patch")
    before = shuffled.copy(deep=True)
    got = chart_from_table(shuffled, space="xyz")
    xr.testing.assert_identical(shuffled, before)
    np.testing.assert_array_equal(got.values, ref.values)
    assert got["patch"].values.tolist() == VINYL_PATCHES
    assert got["channel"].values.tolist() == ["X", "Y", "Z"]
    assert not np.shares_memory(got.values, shuffled.values)
    bare = xr.DataArray(ref.values, dims=("patch", "channel"))  # no coords
    got = chart_from_table(bare, space="xyz")
    assert got["patch"].values.tolist() == VINYL_PATCHES
    lower = ref.assign_coords(channel=["x", "y", "z"])
    np.testing.assert_array_equal(chart_from_table(lower, space="xyz").values, ref.values)


def test_array_input():
    rows = [[0.5, 0.4, 0.3], [0.2, 0.1, 0.0]]
    got = chart_from_table(rows, space="rgb", name="two")
    assert rows == [[0.5, 0.4, 0.3], [0.2, 0.1, 0.0]]
    np.testing.assert_array_equal(got.values, rows)
    assert got["patch"].values.tolist() == ["1", "2"]
    assert got.attrs == {
        "chart": "two",
        "space": "rgb-linear",
        "rgb_space": "sRGB",
        "source": "user table",
    }
    array = np.array(rows, dtype=np.float32)
    got = chart_from_table(array, space="rgb")
    assert got.dtype == np.float64
    got.values[:] = 9
    assert array[0, 0] == np.float32(0.5)


@pytest.mark.parametrize(
    ("builtin", "kwargs", "plain"),
    [
        ("lab-d50", {}, {"space": "lab"}),
        ("xyz-d50", {}, {"space": "xyz"}),
        ("srgb-linear", {}, {"space": "rgb"}),
        ("rgb-linear", {"rgb_space": "Display P3"}, {"space": "rgb", "rgb_space": "Display P3"}),
        ("LAB-D50", {"illuminant": "ICC D50"}, {"space": "lab", "illuminant": "ICC D50"}),
        ("xyz-d50", {"illuminant": "d50"}, {"space": "xyz", "illuminant": "d50"}),
        ("sRGB-linear", {"rgb_space": "srgb"}, {"space": "rgb", "rgb_space": "srgb"}),
    ],
)
def test_chart_space_names_are_aliases_in_chart_from_table(tmp_path, builtin, kwargs, plain):
    ref = chart(space=builtin.lower() if builtin.lower() != "rgb-linear" else "srgb-linear")
    got = chart_from_table(ref, space=builtin, **kwargs)
    xr.testing.assert_identical(got, chart_from_table(ref, **plain))
    np.testing.assert_array_equal(got.values, ref.values)
    path = tmp_path / "chart.csv"
    ref.to_pandas().rename_axis("patch").reset_index().to_csv(path, index=False)
    xr.testing.assert_identical(
        chart_from_table(path, space=builtin, **kwargs), chart_from_table(path, **plain)
    )


def test_chart_space_names_that_contradict_the_other_arguments():
    with pytest.raises(
        ValueError,
        match=r"space 'lab-d50' is under a D50 white, but illuminant='D65'; for another white "
        r"pass space='lab', illuminant='D65'",
    ):
        chart_from_table([[50.0, 1.0, 2.0]], space="lab-d50", illuminant="D65")
    with pytest.raises(
        ValueError,
        match=r"space 'srgb-linear' is linear sRGB, but rgb_space='display-p3'; for linear RGB "
        r"of another space pass space='rgb', rgb_space='display-p3'",
    ):
        chart_from_table([[0.1, 0.2, 0.3]], space="srgb-linear", rgb_space="display-p3")
    with pytest.raises(ValueError, match=r"illuminant applies to space 'lab' or 'xyz' only"):
        chart_from_table([[0.1, 0.2, 0.3]], space="srgb-linear", illuminant="D65")
    with pytest.raises(
        ValueError,
        match=r"unknown space 'lab-d65'; choose one of \['lab', 'xyz', 'rgb'\] \(or the built-in "
        r"charts' names \['lab-d50', 'xyz-d50', 'srgb-linear'\]\)",
    ):
        chart_from_table([[50.0, 1.0, 2.0]], space="lab-d65")


def test_builtin_chart_round_trips_through_chart_from_table():
    ref = chart(space="lab-d50")
    got = chart_from_table(ref, space="lab", name="colorchecker24")
    xr.testing.assert_equal(got, ref)


# errors


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        (
            "patch,L,a,c\nx,1,2,3\n",
            {"space": "lab"},
            r"CSV file '.*t\.csv': expected 3 numeric value columns named L, a, b or L\*, a\*, "
            r"b\* \(case-insensitive\) for space 'lab'; found numeric columns \['L', 'a', 'c'\]",
        ),
        (
            "patch,L,a,b\nx,1,2,3\n",
            {"space": "xyz"},
            r"columns named X, Y, Z .* for space 'xyz'; found numeric columns \['L', 'a', 'b'\]",
        ),
        (
            "patch,R,G,B\nx,1,2,oops\n",
            {"space": "rgb"},
            r"found numeric columns \['R', 'G'\] and non-numeric columns \['B'\]",
        ),
        (
            "id,L,a,b\n1,1,2,3\n",
            {"space": "lab"},
            r"found numeric columns \['id', 'L', 'a', 'b'\]; .*pass patch_column",
        ),
        (
            "white,95,1,2\nblack,20,0,0\n",
            {"space": "lab"},
            r"found numeric columns \['95', '1', '2'\].*header row missing",
        ),
        ("patch,L,a,b\nx,1,2,3\n", {"space": "lab", "patch_column": "name"}, r"'name' not found"),
        ("patch,L,a,b\nx,1,2,3\nx,4,5,6\n", {"space": "lab"}, r"duplicated patch names \['x'\]"),
        ("patch,L,a,b\nx,1,2,3\n,4,5,6\n", {"space": "lab"}, r"data row 2 has no patch name"),
        (
            "patch,L,a,b\nx,1,2,3\ny,4,,6\n",
            {"space": "lab"},
            r"non-finite value nan in patch 'y', channel 'a'",
        ),
        ("patch,L,a,b\nx,1,2,inf\n", {"space": "lab"}, r"non-finite value inf in patch 'x'"),
        ("patch,L,a,b\n", {"space": "lab"}, r"CSV file '.*t\.csv' has no patches"),
        ("patch,L,a,b\nx,1,2,3\n", {"space": "luv"}, r"unknown space 'luv'.*'lab', 'xyz', 'rgb'"),
    ],
    ids=[
        "wrong-header",
        "wrong-space",
        "non-numeric-value",
        "numeric-names",
        "no-header",
        "missing-patch-column",
        "duplicates",
        "missing-name",
        "blank-value",
        "infinite-value",
        "empty",
        "unknown-space",
    ],
)
def test_csv_errors(tmp_path, text, kwargs, match):
    with pytest.raises(ValueError, match=match):
        chart_from_table(_write(tmp_path / "t.csv", text), **kwargs)


def test_missing_csv_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        chart_from_table(tmp_path / "nope.csv", space="lab")


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (np.zeros((3, 4)), r"shape \(n, 3\), got \(3, 4\)"),
        (np.zeros(3), r"shape \(n, 3\), got \(3,\)"),
        (np.zeros((0, 3)), r"table has no patches"),
        ([[1.0, np.nan, 0.0]], r"non-finite value nan in patch '1', channel 'a'"),
        (
            xr.DataArray(np.zeros((2, 3)), dims=("sample", "channel")),
            r"DataArray table must have dims \('patch', 'channel'\), got \('sample', 'channel'\)",
        ),
        (xr.DataArray(np.zeros((2, 4)), dims=("patch", "channel")), r"3 channels, got 4"),
        (
            xr.DataArray(
                np.zeros((2, 3)), dims=("patch", "channel"), coords={"channel": list("RGB")}
            ),
            r"channel coords \['R', 'G', 'B'\] do not match space 'lab': expected L, a, b",
        ),
        (
            xr.DataArray(
                np.zeros((2, 3)),
                dims=("patch", "channel"),
                coords={"patch": ["p", "p"], "channel": list("Lab")},
            ),
            r"DataArray table: duplicated patch names \['p'\]",
        ),
        (
            pd.DataFrame({"L": [1.0], "a": [2.0]}),
            r"^DataFrame table: expected 3 numeric value columns .* found numeric columns "
            r"\['L', 'a'\]$",
        ),
    ],
    ids=[
        "four-columns",
        "1-d",
        "empty",
        "nan",
        "dataarray-dims",
        "dataarray-channels",
        "dataarray-coords",
        "dataarray-duplicates",
        "dataframe-columns",
    ],
)
def test_table_errors(table, match):
    with pytest.raises(ValueError, match=match):
        chart_from_table(table, space="lab")


@pytest.mark.parametrize(
    ("table", "kwargs", "error", "match"),
    [
        ([["a", "b", "c"]], {}, TypeError, r"table must be a path to a CSV file, a pandas"),
        ([[1, 2, 3]], {"space": 3}, TypeError, r"space must be a str"),
        ([[1, 2, 3]], {"name": None}, TypeError, r"name must be a str"),
        ([[1, 2, 3]], {"illuminant": 50}, TypeError, r"illuminant must be a str or None"),
        ([[1, 2, 3]], {"rgb_space": 1}, TypeError, r"rgb_space must be a str"),
        ([[1, 2, 3]], {"space": "rgb", "illuminant": "D65"}, ValueError, r"illuminant applies"),
        ([[1, 2, 3]], {"patch_column": "x"}, ValueError, r"patch_column applies only to a CSV"),
        (pd.DataFrame({"L": [1]}), {"patch_column": 0}, TypeError, r"patch_column must be a str"),
        (
            xr.DataArray([["a", "b", "c"]], dims=("patch", "channel")),
            {},
            TypeError,
            r"DataArray table must hold numbers, got dtype <U1",
        ),
    ],
)
def test_argument_errors(table, kwargs, error, match):
    with pytest.raises(error, match=match):
        chart_from_table(table, **{"space": "lab", **kwargs})


def test_user_xyz_table_must_be_relative():
    with pytest.raises(ValueError, match=r"XYZ must be relative.*divide a 0-100 table by 100"):
        chart_from_table([[95.0, 100.0, 108.9], [20.0, 21.0, 22.0]], space="xyz")


# ---------------------------------------------------------------------------------------------
# chart_from_table: files as spreadsheets save them, and broken ones

_TABLE = "patch,L,a,b\nWeiß,95.2,-1.0,2.9\nbräun,20.6,0.1,-0.5\n"


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("utf-8", _TABLE),
        ("utf-8-sig", _TABLE),  # Excel's "CSV UTF-8"
        ("utf-16", _TABLE.replace(",", "\t")),  # Excel's "Unicode text": BOM, tabs
        ("utf-16", _TABLE),
        ("latin-1", _TABLE),
        ("cp1252", _TABLE.replace("Weiß", "Weiß – €")),  # Excel's plain "CSV" on Windows
        ("utf-8", _TABLE.replace(",", ";")),
    ],
)
def test_chart_from_table_reads_common_encodings(tmp_path, encoding, text):
    path = tmp_path / "chart.csv"
    path.write_bytes(text.encode(encoding))
    ref = chart_from_table(path, space="lab")
    sep = text[len("patch")]  # the delimiter after the first header
    names = [line.split(sep)[0] for line in text.splitlines()[1:]]
    assert ref.patch.values.tolist() == names
    np.testing.assert_array_equal(ref.values, [[95.2, -1.0, 2.9], [20.6, 0.1, -0.5]])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"CSV file '.*bad.csv' is empty"),
        (b"  \n\n", r"is empty"),
        (
            b"patch,L,a,b\nx,1,2,3\ny,1,2,3,4\n",
            r"bad.csv', line 3: 5 fields, but the header row has 4",
        ),
        (
            b'patch,L,a,b\nx,1,2,3\n"y,1,2,3\nz,1,2,3\n',
            r"bad.csv', line 3: .*quote opened here is never closed",
        ),
        (bytes(range(256)) * 3, r"bad.csv', line 1: character '\\x00' is not text"),
        (b"patch,L,a,b\nx,1,2,3\n\x89PNG\x1a\n", r"line 3: character '\\x1a' is not text"),
    ],
)
def test_chart_from_table_bad_files_name_file_and_line(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        chart_from_table(path, space="lab")


# ---------------------------------------------------------------------------------------------
# sample_measurement: OpenCV's real photographed chart

# OpenCV's published linearisation of its measurement (gamma 2.2 of s / 255), src_rgbl of
# opencv_contrib modules/mcc/test/test_ccm.cpp.
OPENCV_SRC_RGBL = [
    [0.68078957, 0.12382801, 0.01514889],
    [0.81177942, 0.32550452, 0.089818],
    [0.61259378, 0.2831933, 0.07478902],
    [0.52696493, 0.20105976, 0.00958657],
    [0.80402284, 0.30419523, 0.12989841],
    [0.78658646, 0.63184111, 0.12062068],
    [0.78999637, 0.25520249, 0.03462853],
    [0.51866697, 0.16114393, 0.1078387],
    [0.74820768, 0.11770076, 0.06862177],
    [0.59776825, 0.05765816, 0.02886627],
    [0.8793145, 0.56346033, 0.0403954],
    [0.84124847, 0.42120746, 0.03287592],
    [0.23333214, 0.06780408, 0.05612276],
    [0.5176423, 0.41210976, 0.01896255],
    [0.73888613, 0.06575388, 0.06181293],
    [0.88326036, 0.58018751, 0.04321991],
    [0.75922531, 0.13149072, 0.1282041],
    [0.4345097, 0.32331019, 0.10494139],
    [0.94110142, 0.77941419, 0.26946323],
    [0.88438952, 0.5949049, 0.17536928],
    [0.84722687, 0.44160449, 0.09834799],
    [0.66743106, 0.24076803, 0.03394333],
    [0.47141286, 0.13592419, 0.01362205],
    [0.17377101, 0.03256864, 0.00203026],
]
# OpenCV's published CIEDE2000 3x3 matrix for it (CCM_3x3, sRGB, GAMMA 2.2, ColorChecker2005).
OPENCV_CCM = [
    [0.37408717, 0.02066172, 0.05796725],
    [0.12684056, 0.77364991, -0.01566532],
    [-0.27464866, 0.00652140, 2.74593262],
]


def test_opencv_measurement_is_labelled_like_the_chart():
    from xccm.charts import sample_measurement

    m = sample_measurement()
    assert m.dims == ("patch", "channel") and m.dtype == np.float64
    assert m.patch.values.tolist() == PATCHES
    assert m.channel.values.tolist() == ["R", "G", "B"]
    assert m.attrs["chart"] == "colorchecker24" and m.attrs["chart_edition"] == "opencv"
    assert "opencv_contrib" in m.attrs["source"] and "Apache" in m.attrs["source"]
    np.testing.assert_allclose(
        m.values[[0, -1]] * 255, [[214.11, 98.67, 37.97], [115.1, 53.77, 15.23]]
    )
    assert 0 < m.min() and m.max() < 0.98  # encoded [0, 1], nothing at OpenCV's saturation
    m[0] = 0  # a new array each call
    assert sample_measurement().values[0, 0] > 0


def test_opencv_measurement_linearises_as_opencv_does():
    import xccm

    linear = xccm.linearize(xccm.sample_measurement("OpenCV"), "gamma", gamma=2.2)
    np.testing.assert_allclose(linear.values, OPENCV_SRC_RGBL, rtol=0, atol=1e-4)


def test_unknown_measurement_names_the_choices():
    from xccm.charts import sample_measurement

    with pytest.raises(
        ValueError, match=r"unknown measurement 'macbeth'; choose one of \['opencv'\]"
    ):
        sample_measurement("macbeth")
    with pytest.raises(TypeError, match="measurement must be a str"):
        sample_measurement(1)


def test_ciede2000_fit_on_opencv_measurement_is_at_least_as_good_as_opencvs():
    pytest.importorskip("colour")
    import xccm

    linear = xccm.linearize(xccm.sample_measurement("opencv"), "gamma", gamma=2.2)
    ref = chart("colorchecker24", space="lab-d50", edition="opencv")
    m = xccm.fit(linear, ref, loss="ciede2000")
    ours, theirs = xccm.report(linear, ref, m), xccm.report(linear, ref, np.array(OPENCV_CCM))
    assert bool(m.converged)
    assert float(ours["loss"]) == pytest.approx(float(m.loss), rel=1e-12)
    assert float(m.loss) <= float(theirs["loss"])
    # the same optimum, up to OpenCV's and colour-science's colour constants
    np.testing.assert_allclose(m.values, OPENCV_CCM, atol=5e-3)
