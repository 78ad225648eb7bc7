"""xccm.colorimetry: colour spaces and ΔE against colour-science, names, laziness, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import raise_if_dask_computes
from xccm import colorimetry

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    colour = pytest.importorskip("colour")

RGB = ["R", "G", "B"]
COLOUR_METHODS = {
    "cie76": ("CIE 1976", {}),
    "cie94": ("CIE 1994", {}),
    "cie94_textiles": ("CIE 1994", {"textiles": True}),
    "ciede2000": ("CIE 2000", {}),
    "cmc": ("CMC", {"l": 1, "c": 1}),
    "cmc_2to1": ("CMC", {"l": 2, "c": 1}),
}


@pytest.fixture
def rgb(rng):
    values = rng.uniform(-0.05, 1.0, (5, 7, 3))
    return xr.DataArray(
        values,
        dims=("time", "patch", "channel"),
        coords={"channel": RGB},
        attrs={"space": "srgb-linear", "note": "kept"},
    )


def _lab(values, rgb_space="sRGB", white=None):
    cs = colour.RGB_COLOURSPACES[rgb_space]
    white = cs.whitepoint if white is None else white
    xyz = colour.RGB_to_XYZ(values, cs, white, chromatic_adaptation_transform="Bradford")
    return colour.XYZ_to_Lab(xyz, white)


# ---------------------------------------------------------------------------------------------
# conversions against colour-science


@pytest.mark.parametrize("rgb_space", ["sRGB", "Display P3", "ProPhoto RGB", "ITU-R BT.2020"])
@pytest.mark.parametrize("illuminant", ["D50", "D65", "A"])
def test_rgb_to_xyz_and_lab_match_colour(rgb, rgb_space, illuminant):
    rgb = rgb.assign_attrs(space=None, rgb_space=rgb_space)
    del rgb.attrs["space"]
    white = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"][illuminant]
    cs = colour.RGB_COLOURSPACES[rgb_space]
    xyz = colour.RGB_to_XYZ(rgb.values, cs, white, chromatic_adaptation_transform="Bradford")
    got = xccm.convert(rgb, "xyz", illuminant=illuminant)
    np.testing.assert_allclose(got.values, xyz, rtol=0, atol=1e-12)
    assert got.attrs["illuminant"] == illuminant and got.attrs["note"] == "kept"
    assert list(got.channel.values) == ["X", "Y", "Z"]
    lab = xccm.convert(rgb, "lab", illuminant=illuminant)
    np.testing.assert_allclose(lab.values, colour.XYZ_to_Lab(xyz, white), rtol=0, atol=1e-10)
    assert list(lab.channel.values) == ["L", "a", "b"]


@pytest.mark.parametrize("target", ["sRGB", "Adobe RGB (1998)", "display-p3", "prophoto"])
def test_lab_to_rgb_matches_colour(target):
    lab = xccm.chart(space="lab-d50")
    ill = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["ICC D50"]
    cs = colorimetry.rgb_colourspace(target)
    expected = colour.XYZ_to_RGB(
        colour.Lab_to_XYZ(lab.values, ill), cs, ill, chromatic_adaptation_transform="Bradford"
    )
    got = xccm.convert(lab, "rgb", rgb_space=target)
    # xccm inverts the RGB -> XYZ matrix exactly; colour uses the space's published XYZ -> RGB
    # matrix, rounded on its own for sRGB, Adobe RGB and ProPhoto (up to 1e-4 apart).
    np.testing.assert_allclose(got.values, expected, rtol=0, atol=2e-4)
    assert got.attrs["rgb_space"] == cs.name
    back = xccm.convert(got, "lab", illuminant="ICC D50")
    np.testing.assert_allclose(back.values, lab.values, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["colorchecker24", "colorchecker_sg", "vinyl18"])
def test_built_in_chart_spaces_agree(name):
    lab, rgb = xccm.chart(name, space="lab-d50"), xccm.chart(name, space="srgb-linear")
    np.testing.assert_allclose(xccm.convert(lab, "rgb").values, rgb.values, atol=1e-14)
    back = xccm.convert(rgb, "lab", illuminant=lab.attrs["illuminant"])
    np.testing.assert_allclose(back.values, lab.values, atol=1e-11)
    assert float(xccm.delta_e(rgb, lab).max()) < 1e-10


def test_round_trip_any_illuminant_and_adaptation(rgb):
    for adaptation in ("Bradford", "CAT02", "Von Kries"):
        lab = xccm.convert(rgb, "lab", illuminant="D50", adaptation=adaptation)
        back = xccm.convert(lab, "rgb", adaptation=adaptation)
        np.testing.assert_allclose(back.values, rgb.values, atol=1e-12)


def test_illuminant_as_chromaticity_and_space_strings(rgb):
    xy = (0.3457, 0.3585)
    a = xccm.convert(rgb, "lab", illuminant=xy)
    b = xccm.convert(rgb, "lab-d50")
    np.testing.assert_allclose(a.values, b.values, atol=1e-12)
    assert b.attrs["space"] == "lab-d50"
    again = xccm.convert(b, "xyz")  # illuminant read back from attrs
    np.testing.assert_allclose(
        again.values, xccm.convert(rgb, "xyz", illuminant="D50").values, atol=1e-12
    )


def test_convert_keeps_float32_dims_and_is_lazy(rgb):
    x = rgb.astype(np.float32).transpose("channel", "time", "patch").chunk({"time": 2})
    with raise_if_dask_computes():
        out = xccm.convert(x, "lab")
    assert out.dtype == np.float32 and out.dims == x.dims
    assert out.chunks == x.chunks
    np.testing.assert_allclose(
        out.transpose("time", "patch", "channel").values,
        _lab(rgb.values.astype(np.float32)),
        atol=1e-3,
    )


# ---------------------------------------------------------------------------------------------
# colour differences


@pytest.mark.parametrize("method", [*COLOUR_METHODS])
def test_delta_e_matches_colour(rgb, method):
    ref = xccm.chart()
    sample = ref * 1.07 + 0.01
    name, kwargs = COLOUR_METHODS[method]
    expected = colour.delta_E(_lab(ref.values), _lab(sample.values), name, **kwargs)
    got = xccm.delta_e(sample, ref, method)
    np.testing.assert_allclose(got.values, expected, rtol=0, atol=1e-10)
    assert got.dims == ("patch",) and got.attrs["method"] == method
    # standard="sample" swaps which colour CIE94 and CMC weight by (OpenCV's convention)
    swapped = colour.delta_E(_lab(sample.values), _lab(ref.values), name, **kwargs)
    got = xccm.delta_e(sample, ref, method, standard="sample")
    np.testing.assert_allclose(got.values, swapped, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", [*COLOUR_METHODS])
def test_components_norm_is_delta_e(rng, method):
    lab_ref = colour.XYZ_to_Lab(rng.uniform(0.01, 1, (200, 3)))
    lab = lab_ref + rng.normal(0, 3, lab_ref.shape)
    lab[:5] = lab_ref[:5]  # exact matches: ΔE 0
    name, kwargs = COLOUR_METHODS[method]
    norms = np.linalg.norm(colorimetry.lab_components(lab, lab_ref, method), axis=-1)
    np.testing.assert_allclose(norms, colour.delta_E(lab_ref, lab, name, **kwargs), atol=1e-10)


def test_delta_e_under_d50_and_from_lab(rgb):
    ref = xccm.chart(space="lab-d50")
    sample = xccm.chart() * 0.95
    white = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D50"]
    expected = colour.delta_E(
        colour.XYZ_to_Lab(
            colour.Lab_to_XYZ(ref.values, ref.attrs["illuminant"] and _icc_d50())
            @ colour.adaptation.matrix_chromatic_adaptation_VonKries(
                colour.xy_to_XYZ(_icc_d50()), colour.xy_to_XYZ(white), "Bradford"
            ).T,
            white,
        ),
        _lab(sample.values, white=white),
        "CIE 2000",
    )
    got = xccm.delta_e(sample, ref, illuminant="D50")
    np.testing.assert_allclose(got.values, expected, atol=1e-9)


def _icc_d50():
    return colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["ICC D50"]


def test_rgb_distances(rgb):
    ref = xccm.chart()
    sample = ref * 0.9
    lin = xccm.delta_e(sample, ref, "linear_rgb")
    np.testing.assert_allclose(lin.values, np.linalg.norm(0.1 * ref.values, axis=-1))
    enc = xccm.delta_e(sample, ref, "rgb")
    cs = colour.RGB_COLOURSPACES["sRGB"]

    def mirrored(x):  # OpenCV's sRGB encoding: odd-symmetric below 0 (the cyan patch's R)
        return np.sign(x) * cs.cctf_encoding(np.abs(x))

    expected = np.linalg.norm(mirrored(sample.values) - mirrored(ref.values), axis=-1)
    np.testing.assert_allclose(enc.values, expected, atol=1e-12)
    # a pure power law (Adobe RGB) stays finite for negative values
    adobe = xccm.delta_e(sample, ref, "rgb", rgb_space="adobe-rgb")
    assert np.isfinite(adobe.values).all()


def test_delta_e_broadcasts_by_name_and_is_lazy(rgb):
    ref = xccm.chart().isel(patch=slice(0, 7)).drop_vars("patch")
    sample = rgb.chunk({"time": 2})
    with raise_if_dask_computes():
        de = xccm.delta_e(sample, ref)
    assert de.dims == ("time", "patch") and de.chunks[0] == (2, 2, 1)
    expected = xccm.delta_e(rgb.isel(time=3), ref)
    np.testing.assert_allclose(de.isel(time=3).values, expected.values)
    via_accessor = rgb.ccm.delta_e(ref, "cie76")
    assert via_accessor.attrs["method"] == "cie76"


def test_delta_e_of_plain_arrays_is_numpy_in_numpy_out(rgb):
    ref = xccm.chart(space="lab-d50").isel(patch=slice(0, 7))
    labelled = xccm.delta_e(rgb, ref.drop_vars("patch"), "ciede2000")
    # A plain sample against a DataArray chart: the chart's space from its attrs.
    de = xccm.delta_e(rgb.values, ref, "ciede2000")
    assert isinstance(de, np.ndarray) and de.shape == (5, 7)
    np.testing.assert_allclose(de, labelled.values, rtol=0, atol=1e-12)
    # Both plain: spaces from sample_space / reference_space, else linear rgb_space.
    lab = ref.values
    de = xccm.delta_e(
        rgb.values, lab, "ciede2000", reference_space=colorimetry.Space("lab", illuminant="ICC D50")
    )
    np.testing.assert_allclose(de, labelled.values, rtol=0, atol=1e-12)
    one = xccm.delta_e(rgb.values[0, 0], rgb.values[1, 0].tolist(), "cie76")  # a list too
    assert np.ndim(one) == 0
    assert float(one) == pytest.approx(
        colour.delta_E(_lab(rgb.values[1, 0]), _lab(rgb.values[0, 0]), "CIE 1976")
    )
    # A channel-first DataArray reference has its channel dim moved last.
    de = xccm.delta_e(rgb.values, ref.transpose("channel", "patch"), "cie76")
    np.testing.assert_allclose(de, xccm.delta_e(rgb, ref.drop_vars("patch"), "cie76").values)
    # Dask arrays stay lazy.
    dsa = pytest.importorskip("dask.array")
    with raise_if_dask_computes():
        lazy = xccm.delta_e(dsa.from_array(rgb.values, chunks=(2, 7, 3)), ref, "ciede2000")
    assert isinstance(lazy, dsa.Array)
    np.testing.assert_allclose(lazy.compute(), labelled.values, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("sample_dtype", "reference_dtype", "expected"),
    [
        ("float32", "float32", "float32"),
        ("float32", "float64", "float64"),
        ("float64", "float32", "float64"),
        ("int32", "int64", "float64"),
        ("uint8", "float32", "float64"),
    ],
)
@pytest.mark.parametrize("kind", ["dataarray", "ndarray"])
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("method", ["ciede2000", "rgb"])
def test_delta_e_dtype_is_the_inputs_float_type(
    rgb, sample_dtype, reference_dtype, expected, kind, lazy, method
):
    ref = xccm.chart().isel(patch=slice(0, 7)).drop_vars("patch")
    scale = 1 if np.dtype(sample_dtype).kind == "f" else 200  # integers: 0-200 linear RGB
    sample = (abs(rgb) * scale).astype(sample_dtype)
    reference = (ref * scale).astype(reference_dtype)
    # ΔE of the very same values, in float64 throughout
    exact = xccm.delta_e(sample.astype(np.float64), reference.astype(np.float64), method).values
    if lazy:
        sample = sample.chunk({"time": 2})
    if kind == "ndarray":
        sample, reference = sample.data, reference.values
    with raise_if_dask_computes():
        de = xccm.delta_e(sample, reference, method)
        assert de.dtype == np.dtype(expected)
        if lazy:  # the Dask meta says so too, before any compute
            dask_array = de.data if kind == "dataarray" else de
            assert dask_array._meta.dtype == np.dtype(expected)
            assert de.chunks is not None
    computed = de.compute() if lazy else de
    values = computed.values if kind == "dataarray" else np.asarray(computed)
    assert values.dtype == np.dtype(expected)
    # computed in float64, rounded once to the result's dtype (half an ulp; one more for luck)
    np.testing.assert_allclose(values, exact, rtol=np.finfo(expected).eps, atol=0)


def test_delta_e_of_plain_arrays_bad_input(rgb):
    with pytest.raises(TypeError, match="reference must be a DataArray when sample is one"):
        xccm.delta_e(rgb, rgb.values)
    with pytest.raises(
        ValueError, match=r"shape \(5, 7, 3\) and reference of shape \(6, 3\) do not"
    ):
        xccm.delta_e(rgb.values, np.ones((6, 3)))
    with pytest.raises(
        ValueError, match=r"sample as a plain array must have 3 channels .* \(7, 4\)"
    ):
        xccm.delta_e(np.ones((7, 4)), np.ones((7, 3)))
    with pytest.raises(ValueError, match="reference must have 3 channels"):
        xccm.delta_e(np.ones((7, 3)), rgb.isel(channel=[0, 1]).drop_vars("channel"))


# ---------------------------------------------------------------------------------------------
# bad input


def test_unknown_names():
    ref = xccm.chart()
    with pytest.raises(ValueError, match=r"unknown method 'cie3000'.*ciede2000"):
        xccm.delta_e(ref, ref, "cie3000")
    with pytest.raises(ValueError, match="unknown rgb_space 'sRBG'"):
        xccm.convert(ref.assign_attrs(space="rgb", rgb_space=None), "lab", rgb_space="sRBG")
    with pytest.raises(ValueError, match="unknown illuminant 'D66'"):
        xccm.convert(ref, "lab", illuminant="D66")
    with pytest.raises(ValueError, match="unknown obj space 'hsv'"):
        xccm.convert(ref, "lab", source="hsv")
    with pytest.raises(ValueError, match="unknown adaptation 'Bradfrod'"):
        xccm.convert(ref, "lab", illuminant="D50", adaptation="Bradfrod")
    with pytest.raises(ValueError, match="standard must be"):
        xccm.delta_e(ref, ref, "cie94", standard="both")


def test_wrong_channel_coords_for_the_space():
    lab = xccm.chart(space="lab-d50")
    wrong = lab.assign_coords(channel=["R", "G", "B"])
    with pytest.raises(ValueError, match=r"reference is in Lab.*coords must be \['L', 'a', 'b'\]"):
        xccm.delta_e(xccm.chart(), wrong)
    with pytest.raises(ValueError, match="3 channels"):
        xccm.convert(xccm.chart().isel(channel=[0, 1]).drop_vars("channel"), "lab")
    no_illuminant = lab.drop_attrs() if hasattr(lab, "drop_attrs") else lab.copy()
    no_illuminant.attrs = {"space": "lab"}
    with pytest.raises(ValueError, match="illuminant is unknown"):
        xccm.convert(no_illuminant, "rgb")


def test_inputs_not_mutated(rgb):
    before = rgb.copy(deep=True)
    xccm.convert(rgb, "lab")
    xccm.delta_e(rgb, rgb * 1.1)
    xr.testing.assert_identical(rgb, before)


def test_an_explicit_space_wins_over_attrs():
    lab = xccm.chart(space="lab-d50")  # attrs: illuminant "ICC D50"
    from_attrs = xccm.convert(lab, "xyz")
    assert from_attrs.attrs["illuminant"] == "ICC D50"
    d65 = xccm.convert(lab, "xyz", source="lab-d65")
    assert d65.attrs["illuminant"] == "D65"
    expected = colour.Lab_to_XYZ(lab.values, colour.RGB_COLOURSPACES["sRGB"].whitepoint)
    np.testing.assert_allclose(d65.values, expected, atol=1e-12)


def test_a_chromaticity_illuminant_space_name_reads_back():
    ref = xccm.chart()
    lab = xccm.convert(ref, "lab", illuminant=(0.3127, 0.329))
    assert lab.attrs["space"] == "lab-xy(0.3127,0.329)"  # was "lab-xy(0.3127,-0.329)"
    bare = xr.DataArray(lab.values, dims=lab.dims, coords=lab.coords)  # no attrs
    back = xccm.convert(bare, "xyz", source=lab.attrs["space"])
    expected = xccm.convert(ref, "xyz", illuminant=(0.3127, 0.329))
    np.testing.assert_allclose(back.values, expected.values, atol=1e-12)
