"""xccm.charts: built-in ColorChecker reference data."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import xarray as xr

from xccm.charts import available_charts, chart

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
EDITIONS = ["2014", "pre2014"]
SPACES = {"srgb-linear": (["R", "G", "B"], "D65"), "lab-d50": (["L", "a", "b"], "D50")}
COLOUR_KEYS = {
    "2014": "ColorChecker24 - After November 2014",
    "pre2014": "ColorChecker24 - Before November 2014",
}

# ---------------------------------------------------------------------------------------------
# structure


def test_available_charts():
    assert available_charts() == ("colorchecker24",)


def test_importing_charts_does_not_import_colour():
    # A fresh interpreter: other tests in this session may import colour themselves.
    import subprocess

    code = "import sys, xccm.charts; print('colour' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("space", list(SPACES))
def test_structure(space, edition):
    ref = chart("colorchecker24", space=space, edition=edition)
    channels, illuminant = SPACES[space]
    assert isinstance(ref, xr.DataArray)
    assert ref.dims == ("patch", "channel")
    assert ref.shape == (24, 3)
    assert ref.dtype == np.float64
    assert ref["patch"].values.tolist() == PATCHES
    assert ref["channel"].values.tolist() == channels
    assert np.isfinite(ref.values).all()
    assert ref.attrs["chart"] == "colorchecker24"
    assert ref.attrs["space"] == space
    assert ref.attrs["illuminant"] == illuminant
    assert ref.attrs["edition"] == edition
    assert "X-Rite" in ref.attrs["source"]
    assert "November 2014" in ref.attrs["source"]
    assert ("before" in ref.attrs["source"]) == (edition == "pre2014")


def test_defaults_are_current_edition_linear_srgb():
    default = chart()
    explicit = chart("colorchecker24", space="srgb-linear", edition="2014")
    xr.testing.assert_identical(default, explicit)


@pytest.mark.parametrize(
    "name", ["colorchecker24", "ColorChecker24", "colorchecker classic", "ColorChecker_Classic"]
)
def test_names_and_aliases_are_case_insensitive(name):
    got = chart(name, space="LAB-D50", edition="PRE2014")
    xr.testing.assert_identical(got, chart(space="lab-d50", edition="pre2014"))
    assert got.attrs["chart"] == "colorchecker24"


def test_editions_and_spaces_differ():
    a = chart(space="lab-d50", edition="2014")
    b = chart(space="lab-d50", edition="pre2014")
    assert not np.allclose(a.values, b.values)
    assert not np.allclose(chart(edition="2014").values, chart(edition="pre2014").values)


# Spot values straight from X-Rite's published tables (CIE L*a*b*, D50), independent of
# colour-science: catches swapped editions or misordered rows.
@pytest.mark.parametrize(
    ("edition", "patch", "lab"),
    [
        ("2014", "dark skin", [37.54, 14.37, 14.92]),
        ("2014", "cyan", [49.57, -29.71, -28.32]),
        ("2014", "white 9.5 (.05 D)", [95.19, -1.03, 2.93]),
        ("2014", "black 2 (1.5 D)", [20.64, 0.07, -0.46]),
        ("pre2014", "dark skin", [37.986, 13.555, 14.059]),
        ("pre2014", "cyan", [51.038, -28.631, -28.638]),
        ("pre2014", "white 9.5 (.05 D)", [96.539, -0.425, 1.186]),
        ("pre2014", "black 2 (1.5 D)", [20.461, -0.079, -0.973]),
    ],
)
def test_published_lab_spot_values(edition, patch, lab):
    got = chart(space="lab-d50", edition=edition).sel(patch=patch).values
    np.testing.assert_array_equal(got, lab)


# ---------------------------------------------------------------------------------------------
# plausibility of the linear sRGB values


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


def _bradford_lab_d50_to_linear_srgb(lab: np.ndarray) -> np.ndarray:
    """Reference conversion in plain NumPy (no colour-science), following the same recipe."""
    xy_d50 = np.array([0.345702914918791, 0.358538596679933])  # ICC D50
    xy_d65 = np.array([0.3127, 0.329])

    def xy_to_xyz(xy):
        return np.array([xy[0] / xy[1], 1.0, (1 - xy[0] - xy[1]) / xy[1]])

    w50, w65 = xy_to_xyz(xy_d50), xy_to_xyz(xy_d65)
    eps, kappa = 216 / 24389, 24389 / 27
    L, a, b = lab.T
    fy = (L + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def finv(f):
        return np.where(f**3 > eps, f**3, (116 * f - 16) / kappa)

    y = np.where(L > kappa * eps, fy**3, L / kappa)
    xyz = np.stack([finv(fx), y, finv(fz)], axis=-1) * [w50[0], 1.0, w50[2]]
    bradford = np.array(
        [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
    )
    gain = (bradford @ w65) / (bradford @ w50)
    cat = np.linalg.inv(bradford) @ np.diag(gain) @ bradford
    xyz_to_srgb = np.array(  # IEC 61966-2-1
        [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]
    )
    return xyz @ (xyz_to_srgb @ cat).T


@pytest.mark.parametrize("edition", EDITIONS)
def test_linear_srgb_matches_numpy_reference_conversion(edition):
    lab = chart(space="lab-d50", edition=edition).values
    expected = _bradford_lab_d50_to_linear_srgb(lab)
    np.testing.assert_allclose(chart(edition=edition).values, expected, rtol=0, atol=1e-12)


def test_numpy_reference_conversion_maps_perfect_white_to_one():
    # Relative scale: the perfect reflecting white (L* = 100) is R = G = B = 1 (up to the
    # 4-decimal rounding of the IEC 61966-2-1 matrix).
    white = _bradford_lab_d50_to_linear_srgb(np.array([[100.0, 0.0, 0.0]]))
    np.testing.assert_allclose(white, [[1.0, 1.0, 1.0]], rtol=0, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# errors


def test_unknown_chart():
    with pytest.raises(
        ValueError, match=r"unknown chart 'foo'; choose one of \['colorchecker24'\]"
    ):
        chart("foo")


def test_unknown_space():
    with pytest.raises(ValueError, match=r"unknown space 'srgb'.*'srgb-linear', 'lab-d50'"):
        chart(space="srgb")


def test_unknown_edition():
    with pytest.raises(ValueError, match=r"unknown edition '2005'.*'2014', 'pre2014'"):
        chart(edition="2005")


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


def _checker(colour, edition):
    return colour.CCS_COLOURCHECKERS[COLOUR_KEYS[edition]]


@pytest.mark.parametrize("edition", EDITIONS)
def test_lab_matches_colour_science(colour, edition):
    checker = _checker(colour, edition)
    assert list(checker.data) == PATCHES
    xyy = np.array(list(checker.data.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = colour.XYZ_to_Lab(colour.xyY_to_XYZ(xyy), checker.illuminant)
    np.testing.assert_allclose(
        chart(space="lab-d50", edition=edition).values, expected, rtol=0, atol=1e-9
    )


@pytest.mark.parametrize("edition", EDITIONS)
def test_lab_matches_colour_science_published_table(colour, edition):
    datasets = pytest.importorskip(
        "colour.characterisation.datasets.colour_checkers.chromaticity_coordinates"
    )
    table = {
        "2014": "DATA_COLORCHECKER24_AFTER_NOV2014_CIE_LAB",
        "pre2014": "DATA_COLORCHECKER24_BEFORE_NOV2014_CIE_LAB",
    }[edition]
    published = getattr(datasets, table, None)
    if published is None:
        pytest.skip(f"this colour-science has no {table}")
    assert list(published) == PATCHES
    np.testing.assert_array_equal(
        chart(space="lab-d50", edition=edition).values, np.array(list(published.values()))
    )


@pytest.mark.parametrize("edition", EDITIONS)
def test_linear_srgb_matches_colour_science(colour, edition):
    checker = _checker(colour, edition)
    xyy = np.array(list(checker.data.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xyz = colour.xyY_to_XYZ(xyy)
        expected = colour.XYZ_to_RGB(
            xyz,
            "sRGB",
            illuminant=checker.illuminant,
            chromatic_adaptation_transform="Bradford",
            apply_cctf_encoding=False,
        )
        expected_from_lab = colour.XYZ_to_RGB(
            colour.Lab_to_XYZ(chart(space="lab-d50", edition=edition).values, checker.illuminant),
            "sRGB",
            illuminant=checker.illuminant,
            chromatic_adaptation_transform="Bradford",
            apply_cctf_encoding=False,
        )
    got = chart(space="srgb-linear", edition=edition).values
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got, expected_from_lab, rtol=0, atol=1e-9)
