"""Matrix files: exact round trips, provenance, malformed files, and OpenCV's ccm layout."""

from __future__ import annotations

import datetime
import json
import sys
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import xccm
from xccm.matrix_files import check_matrix_path

FORMATS = ["nc", "json"]


@pytest.fixture(scope="module")
def per_frame():
    """A per-frame ΔE fit over datetime64[ns] times, one frame rejected (NaN matrix)."""
    ref = xccm.chart()
    mix = np.array([[0.5, 0.05, 0.0], [0.02, 0.6, 0.03], [0.0, 0.04, 0.7]])
    linear = ref.drop_attrs().values @ mix
    times = np.datetime64("2024-05-01T12:00", "ns") + np.array([0, 1, 2, 3]) * np.timedelta64(
        1_000_000_007, "ns"
    )
    gains = np.array([1.0, 0.9, 1.1, 0.8])[:, None, None]
    measured = xr.DataArray(
        linear[None] * gains,
        dims=("time", "patch", "channel"),
        coords={"time": times, "patch": ref.patch, "channel": ["R", "G", "B"]},
        attrs={"linearization": "gamma 2.2"},
    )
    measured[2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xccm.InsufficientSamplesWarning)
        m = xccm.fit(measured, ref, model="affine", loss="ciede2000")
    return m


def bits(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).view(np.uint64)


def expected(m: xr.DataArray, loaded: xr.DataArray) -> xr.DataArray:
    """``m`` with the provenance attrs save_matrix adds."""
    return m.assign_attrs(xccm_version=loaded.attrs["xccm_version"], created=loaded.created)


def assert_same(loaded: xr.DataArray, m: xr.DataArray) -> None:
    xr.testing.assert_identical(loaded, m)
    assert loaded.dtype == m.dtype
    for name, coord in m.coords.items():
        assert loaded[name].dtype == coord.dtype, name
        assert loaded[name].dims == coord.dims, name
    assert list(loaded.attrs) == list(m.attrs)
    for key, value in m.attrs.items():  # types too, not only ==
        assert type(loaded.attrs[key]) is type(value), key


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("suffix", FORMATS)
def test_per_frame_fit_round_trips_exactly(per_frame, tmp_path, suffix):
    m = per_frame
    assert {"loss", "start_loss", "iterations", "converged"} <= set(m.coords)
    assert np.isnan(m.isel(time=2)).all() and not bool(m.converged[2])
    path = xccm.save_matrix(m, tmp_path / f"ccm.{suffix}")
    loaded = xccm.load_matrix(path)
    assert_same(loaded, expected(m, loaded))
    assert loaded.time.dtype == np.dtype("datetime64[ns]")
    finite = np.isfinite(m.values)
    np.testing.assert_array_equal(bits(loaded.values)[finite], bits(m.values)[finite])
    np.testing.assert_array_equal(np.isnan(loaded.values), np.isnan(m.values))
    np.testing.assert_array_equal(bits(loaded.loss), bits(m.loss))
    # the loaded matrices correct each frame as the fitted ones do
    image = xr.DataArray(
        np.random.default_rng(0).uniform(0, 1, (4, 2, 5, 3)),
        dims=("time", "y", "x", "channel"),
        coords={"time": m.time, "channel": ["R", "G", "B"]},
    )
    xr.testing.assert_identical(xccm.apply(image, loaded), xccm.apply(image, m))


SPECIAL = np.array(
    [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, np.inf, -np.inf]
)


@pytest.mark.parametrize("suffix", FORMATS)
def test_float_bits_survive_including_subnormals_and_infinities(tmp_path, suffix):
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 2**64, size=(5, 4, 3), dtype=np.uint64).view(np.float64).copy()
    raw[~np.isfinite(raw)] = 0.5
    raw.ravel()[: SPECIAL.size] = SPECIAL
    m = xr.DataArray(raw, dims=("frame", "channel_in", "channel"))
    loaded = xccm.load_matrix(xccm.save_matrix(m, tmp_path / f"m.{suffix}"))
    np.testing.assert_array_equal(bits(loaded.values), bits(raw))


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(2, 4), st.integers(1, 4)),
        elements=st.floats(width=64, allow_nan=False),
    )
)
def test_json_float64_bits_round_trip(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("bits") / "m.json"
    m = xr.DataArray(values, dims=("k", "c_in", "c"))
    loaded = xccm.load_matrix(xccm.save_matrix(m, path))
    np.testing.assert_array_equal(bits(loaded.values), bits(values))


@pytest.mark.parametrize("suffix", FORMATS)
def test_float32_matrix_stays_float32(tmp_path, suffix):
    m = xr.DataArray(
        np.float32([[1 / 3, 0.1, 0], [0, 1, 0], [0, 0, np.float32(1e-40)]]),
        dims=("channel_in", "channel"),
    )
    loaded = xccm.load_matrix(xccm.save_matrix(m, tmp_path / f"m.{suffix}"))
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded.values.view(np.uint32), m.values.view(np.uint32))


@pytest.mark.parametrize("suffix", FORMATS)
def test_attrs_of_every_kind_come_back_as_they_were(tmp_path, suffix):
    attrs = {
        "model": "linear",
        "an_int": 7,
        "a_float": 0.1,
        "a_nan": float("nan"),
        "an_inf": float("-inf"),
        "flag": True,
        "nothing": None,
        "one_element": [1.5],
        "ints": [1, 2, 3],
        "names": ["a", "b"],
        "nested": {"a": [1, "x", None], "b": {"c": False}},
        "empty": [],
        "unicode": "ΔE₀₀ 2°",
    }
    m = xr.DataArray(np.eye(3), dims=("channel_in", "channel"), attrs=attrs, name="mine")
    m.coords["channel"] = xr.Variable("channel", ["R", "G", "B"], attrs={"note": [True]})
    loaded = xccm.load_matrix(xccm.save_matrix(m, tmp_path / f"m.{suffix}"))
    assert loaded.name == "mine"
    for key, value in attrs.items():
        got = loaded.attrs[key]
        if isinstance(value, float) and np.isnan(value):
            assert isinstance(got, float) and np.isnan(got)
        else:
            assert got == value and type(got) is type(value), key
    assert loaded.channel.attrs == {"note": [True]}


@pytest.mark.parametrize("suffix", FORMATS)
def test_numpy_values_in_attrs_come_back_as_python_values(tmp_path, suffix):
    m = xr.DataArray(
        np.eye(3),
        dims=("channel_in", "channel"),
        attrs={"arr": np.array([0.25, 0.5]), "scalar": np.float32(0.5), "i": np.int16(3)},
    )
    loaded = xccm.load_matrix(xccm.save_matrix(m, tmp_path / f"m.{suffix}"))
    assert loaded.attrs["arr"] == [0.25, 0.5]
    assert loaded.attrs["scalar"] == 0.5 and isinstance(loaded.attrs["scalar"], float)
    assert loaded.attrs["i"] == 3 and isinstance(loaded.attrs["i"], int)


def test_unnamed_matrix_and_plain_array(tmp_path):
    m = xr.DataArray(np.eye(3), dims=("channel_in", "channel"))
    for suffix in FORMATS:
        assert xccm.load_matrix(xccm.save_matrix(m, tmp_path / f"u.{suffix}")).name is None
    affine = np.vstack([np.diag([2.0, 1.0, 0.5]), [[0.1, 0.0, -0.1]]])
    loaded = xccm.load_matrix(xccm.save_matrix(affine, tmp_path / "plain.json"))
    assert loaded.dims == ("channel_in", "channel") and loaded.attrs["model"] == "affine"
    np.testing.assert_array_equal(loaded.values, affine)


def test_timedelta_and_scalar_coords(tmp_path):
    m = xr.DataArray(
        np.ones((2, 3, 3)),
        dims=("lag", "c_in", "c"),
        coords={
            "lag": np.array([1500, "NaT"], dtype="timedelta64[ms]"),
            "when": np.datetime64("NaT", "s"),
            "frame": 3,
        },
    )
    for suffix in FORMATS:
        loaded = xccm.load_matrix(xccm.save_matrix(m, tmp_path / f"t.{suffix}"))
        assert_same(loaded, expected(m, loaded))


# ---------------------------------------------------------------------------------------------
# provenance, laziness, writing


def test_provenance_from_fit_and_save(tmp_path):
    ref = xccm.chart()
    encoded = xccm.encode((ref * [0.5, 0.6, 0.7]).drop_attrs().clip(0, 1), "srgb")
    linear = xccm.linearize(encoded, "gamma", gamma=2.2)
    m = xccm.fit(linear, ref, loss="cie76")
    assert m.attrs["chart"] == "colorchecker24"
    assert m.attrs["chart_edition"] == ref.attrs["edition"]
    assert m.attrs["linearization"] == "gamma 2.2"
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    loaded = xccm.load_matrix(xccm.save_matrix(m, tmp_path / "m.json"))
    after = datetime.datetime.now(datetime.timezone.utc)
    assert loaded.attrs["model"] == "linear" and loaded.attrs["loss"] == "cie76"
    assert float(loaded.loss) == float(m.loss)  # the loss value, as a coord
    assert loaded.attrs["xccm_version"] == xccm.__version__
    created = datetime.datetime.fromisoformat(loaded.attrs["created"].replace("Z", "+00:00"))
    assert before <= created <= after
    assert "created" not in m.attrs  # the input is not changed


def test_users_provenance_attrs_are_kept(tmp_path):
    m = xr.DataArray(
        np.eye(3),
        dims=("channel_in", "channel"),
        attrs={"created": "2020-01-01T00:00:00Z", "xccm_version": "0.0.1"},
    )
    loaded = xccm.load_matrix(xccm.save_matrix(m, tmp_path / "m.nc"))
    assert loaded.attrs["created"] == "2020-01-01T00:00:00Z"
    assert loaded.attrs["xccm_version"] == "0.0.1"


def test_dask_backed_matrix_is_saved_without_changing_it(tmp_path):
    values = np.random.default_rng(2).normal(size=(6, 3, 3))
    m = xr.DataArray(
        da.from_array(values, chunks=(2, 3, 3)),
        dims=("time", "channel_in", "channel"),
        attrs={"model": "linear"},
    )
    for suffix in FORMATS:
        loaded = xccm.load_matrix(xccm.save_matrix(m, tmp_path / f"m.{suffix}"))
        np.testing.assert_array_equal(loaded.values, values)
        assert loaded.chunks is None
    assert m.chunks is not None and m.attrs == {"model": "linear"}


def test_overwrite_and_no_temporary_files_left(tmp_path):
    path = tmp_path / "m.json"
    xccm.save_matrix(np.eye(3), path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        xccm.save_matrix(2 * np.eye(3), path, overwrite=False)
    assert xccm.load_matrix(path).values[0, 0] == 1.0
    xccm.save_matrix(2 * np.eye(3), path)
    assert xccm.load_matrix(path).values[0, 0] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_format_from_suffix_or_argument(tmp_path):
    path = xccm.save_matrix(np.eye(3), tmp_path / "m.ccm", format="json")
    assert json.loads(path.read_text())["format"] == "xccm-matrix"
    nc = xccm.save_matrix(np.eye(3), tmp_path / "other.bin", format="netcdf")
    assert nc.read_bytes().startswith(b"\x89HDF")
    assert xccm.load_matrix(nc).values.tolist() == np.eye(3).tolist()  # read by content
    with pytest.raises(ValueError, match=r"suffix '\.txt'"):
        xccm.save_matrix(np.eye(3), tmp_path / "m.txt")
    with pytest.raises(ValueError, match="format must be"):
        xccm.save_matrix(np.eye(3), tmp_path / "m.json", format="pickle")


def test_netcdf_file_is_plain_netcdf_and_plain_netcdf_matrices_load(per_frame, tmp_path):
    path = xccm.save_matrix(per_frame, tmp_path / "m.nc")
    with xr.open_dataset(path, engine="h5netcdf") as ds:  # any netCDF tool can read it
        assert ds.attrs["xccm_format"] == "xccm-matrix"
        np.testing.assert_array_equal(ds["matrix"].values, per_frame.values)
        np.testing.assert_array_equal(ds["iterations"].values, per_frame.iterations.values)
    plain = tmp_path / "plain.nc"
    per_frame.to_netcdf(plain, engine="h5netcdf")
    loaded = xccm.load_matrix(plain)
    xr.testing.assert_identical(loaded, per_frame)


def test_unsupported_values_are_refused_on_save(tmp_path):
    m = xr.DataArray(np.eye(3), dims=("channel_in", "channel"))
    with pytest.raises(TypeError, match=r"matrix\.attrs\['when'\] is a date"):
        xccm.save_matrix(m.assign_attrs(when=datetime.date(2024, 1, 1)), tmp_path / "a.json")
    with pytest.raises(TypeError, match="floating-point"):
        xccm.save_matrix(m.astype(int), tmp_path / "a.json")
    with pytest.raises(ValueError, match=r"pair of dims.*\('a', 'b'\)"):
        xccm.save_matrix(xr.DataArray(np.eye(3), dims=("a", "b")), tmp_path / "a.json")
    with pytest.raises(ValueError, match="offset row last"):
        labelled = m.assign_coords(channel_in=["R", "G", "B"], channel=["R", "G", "B"])
        xccm.save_matrix(labelled.assign_attrs(model="affine"), tmp_path / "a.json")
    assert not list(tmp_path.iterdir())


def test_netcdf_without_h5netcdf_says_which_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5netcdf", None)
    with pytest.raises(ImportError, match=r"xccm\[io\].*\.json"):
        xccm.save_matrix(np.eye(3), tmp_path / "m.nc")
    with pytest.raises(TypeError, match=r"Dataset.*ds\['ccm'\]"):
        xccm.save_matrix(xr.Dataset({"ccm": (("channel_in", "channel"), np.eye(3))}), "x.nc")


# ---------------------------------------------------------------------------------------------
# malformed and tampered files


@pytest.fixture
def good_json(per_frame, tmp_path):
    path = xccm.save_matrix(per_frame, tmp_path / "m.json")
    return path, json.loads(path.read_text())


def tamper(path, doc, change):
    change(doc)
    path.write_text(json.dumps(doc))
    return path


def _set(key, value):
    return lambda doc: doc.__setitem__(key, value)


TAMPERED = {
    "version 2": (_set("version", 2), r"schema version 2 is not supported.*upgrade xccm"),
    "no marker": (lambda d: d.pop("format"), "not an xccm matrix file"),
    "missing data": (lambda d: d.pop("data"), r"missing keys \['data'\]"),
    "ragged": (lambda d: d["data"][0].pop(), "ragged"),
    "shape": (_set("shape", [4, 3, 3]), r"'data' has shape \[4, 4, 3\] but 'shape' says"),
    "too shallow": (_set("data", [1.0, 2.0]), "nested lists 3 deep"),
    "text value": (lambda d: d["data"][0][1].__setitem__(2, "abc"), "non-numeric value 'abc'"),
    "bool value": (lambda d: d["data"][0][1].__setitem__(2, True), "non-numeric value True"),
    "coord length": (
        lambda d: d["coords"]["loss"]["data"].pop(),
        r"coord 'loss': 'data' has shape \[3\] but its dims \['time'\] have sizes \[4\]",
    ),
    "coord dim": (
        lambda d: d["coords"]["loss"].__setitem__("dims", ["frame"]),
        "coord 'loss': 'dims' must be a list of the matrix's dims",
    ),
    "bad time": (
        lambda d: d["coords"]["time"]["data"].__setitem__(0, "yesterday"),
        "not an ISO 8601 date-time",
    ),
    "int coord": (
        lambda d: d["coords"]["iterations"]["data"].__setitem__(0, 1.5),
        r"1\.5 is not a integer value",
    ),
    "dtype": (_set("dtype", "int64"), "'dtype' of the matrix must be"),
    "no pair": (
        lambda d: (
            d.__setitem__("dims", ["time", "channel_in", "colour"]),
            d["coords"].pop("channel"),
        ),
        r"one pair of dims .* its dims are \('time', 'channel_in', 'colour'\)",
    ),
    "model": (
        lambda d: d["attrs"].__setitem__("model", "linear"),
        "'linear' but a row along 'channel_in' is labelled 'offset'",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_json_is_a_clear_error(good_json, case):
    path, doc = good_json
    change, message = TAMPERED[case]
    tamper(path, doc, change)
    with pytest.raises(ValueError, match=message) as err:
        xccm.load_matrix(path)
    assert str(path) in str(err.value)


def test_truncated_files_are_a_clear_error(per_frame, tmp_path):
    for suffix in FORMATS:
        path = xccm.save_matrix(per_frame, tmp_path / f"m.{suffix}")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match="truncated") as err:
            xccm.load_matrix(path)
        assert str(path) in str(err.value)


def test_files_that_are_not_matrices(tmp_path):
    other = tmp_path / "image.nc"
    xr.Dataset(
        {"image": (("y", "x"), np.zeros((2, 2))), "mask": (("y", "x"), np.ones((2, 2)))}
    ).to_netcdf(other, engine="h5netcdf")
    with pytest.raises(ValueError, match=r"image\.nc: not a matrix file: it has 2 variables"):
        xccm.load_matrix(other)
    one = tmp_path / "one.nc"
    xr.DataArray(np.zeros((2, 2)), dims=("y", "x"), name="image").to_netcdf(one)
    with pytest.raises(ValueError, match=r"one\.nc: a matrix must have one pair of dims"):
        xccm.load_matrix(one)
    newer = tmp_path / "newer.nc"
    xccm.save_matrix(np.eye(3), newer)
    with xr.open_dataset(newer, engine="h5netcdf") as ds:
        ds = ds.load()
    ds.attrs["xccm_format_version"] = 99
    ds.to_netcdf(newer, engine="h5netcdf")
    with pytest.raises(ValueError, match=r"version 99 is not supported.*upgrade xccm"):
        xccm.load_matrix(newer)
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"\x00\x01pickle?")
    with pytest.raises(ValueError, match=r"junk\.json: not a matrix file"):
        xccm.load_matrix(junk)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="not a matrix file"):
        xccm.load_matrix(listing)
    with pytest.raises(FileNotFoundError):
        xccm.load_matrix(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------------
# OpenCV layout (closed form; OpenCV itself below)


def test_to_opencv_is_xccm_layout_in_rgb_order():
    up = np.array([[1.2, -0.1, 0.0], [0.05, 0.9, 0.02], [-0.03, 0.1, 1.4]])
    down = np.array([0.01, -0.02, 0.03])
    m = xr.DataArray(
        np.vstack([up, down]),
        dims=("channel_in", "channel"),
        coords={"channel_in": ["R", "G", "B", "offset"], "channel": ["R", "G", "B"]},
    )
    cv = xccm.to_opencv(m)
    np.testing.assert_array_equal(cv, np.vstack([up, down]))
    assert cv.dtype == np.float64 and cv.flags.c_contiguous
    # D = [S, 1] @ M, as OpenCV computes it
    s = np.array([[0.2, 0.4, 0.6]])
    np.testing.assert_allclose(np.hstack([s, [[1.0]]]) @ cv, s @ up + down, rtol=1e-15)
    # a matrix labelled in BGR order is put in OpenCV's RGB order, rows and columns
    bgr = m.sel(channel_in=["B", "G", "R", "offset"], channel=["B", "G", "R"])
    np.testing.assert_array_equal(xccm.to_opencv(bgr.transpose()), cv)
    back = xccm.from_opencv(cv)
    xr.testing.assert_equal(back, m)
    assert back.attrs["model"] == "affine"
    np.testing.assert_array_equal(xccm.to_opencv(back), cv)


def test_opencv_layout_errors():
    m = xr.DataArray(np.ones((2, 3, 3)), dims=("time", "channel_in", "channel"))
    with pytest.raises(ValueError, match=r"select one along \['time'\]"):
        xccm.to_opencv(m)
    with pytest.raises(ValueError, match=r"3x3 .* or 4x3"):
        xccm.to_opencv(np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"got shape \(3, 4\)"):
        xccm.from_opencv(np.ones((3, 4)))


# ---------------------------------------------------------------------------------------------
# against OpenCV


def _cv2_ccm():
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "ccm") or not hasattr(cv2.ccm, "ColorCorrectionModel"):
        pytest.skip("this OpenCV has no ccm module")
    return cv2


def _opencv_srgb_encode(x):
    """OpenCV's sRGB transfer function (ccm/colorspace.cpp, sRGBBase_), with its constants."""
    a, g = 0.055, 2.4
    alpha, k0 = a + 1, a / (g - 1)
    phi = (alpha**g * (g - 1) ** (g - 1)) / (a ** (g - 1) * g**g)
    beta = k0 / phi
    curve = alpha * np.abs(x) ** (1 / g) - (alpha - 1)
    return np.where(x > beta, curve, np.where(x >= -beta, x * phi, -curve))


@pytest.mark.parametrize("ccm_type", ["CCM_LINEAR", "CCM_AFFINE"])
def test_opencv_fit_applies_the_same_in_xccm(tmp_path, ccm_type):
    cv2 = _cv2_ccm()
    rng = np.random.default_rng(3)
    lab = xccm.chart("colorchecker24", space="lab-d50", edition="opencv")
    src = rng.uniform(0.05, 0.9, (24, 3))  # camera RGB in [0, 1], gamma-encoded
    model = cv2.ccm.ColorCorrectionModel(
        src.reshape(24, 1, 3), lab.values.reshape(24, 1, 3).copy(), cv2.ccm.COLOR_SPACE_LAB_D50_2
    )
    model.setCcmType(getattr(cv2.ccm, ccm_type))
    model.setLinearization(cv2.ccm.LINEARIZATION_GAMMA)
    model.setLinearizationGamma(2.2)
    model.compute()
    m = xccm.from_opencv(model)
    assert m.shape == ((4, 3) if ccm_type == "CCM_AFFINE" else (3, 3))
    assert float(m.loss) == model.getLoss()
    np.testing.assert_array_equal(xccm.to_opencv(m), model.getColorCorrectionMatrix())

    image = rng.uniform(0, 1, (6, 5, 3)).astype(np.float32)  # RGB
    # OpenCV: linearise (gamma 2.2), matrix, sRGB-encode. correctImage takes and returns
    # BGR with OpenCV 5's default setRGB(True); the matrix itself works in RGB.
    theirs = model.correctImage(np.ascontiguousarray(image[..., ::-1]))[..., ::-1]
    linear = xr.DataArray(
        image.astype(np.float64) ** 2.2,
        dims=("y", "x", "channel"),
        coords={"channel": ["R", "G", "B"]},
    )
    ours = _opencv_srgb_encode(xccm.apply(linear, m).values)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)

    # the same through a file: xccm's OpenCV file, and OpenCV's own serialisation
    loaded = xccm.load_matrix(xccm.save_matrix(m, tmp_path / "m.yml"))
    np.testing.assert_array_equal(bits(loaded.values), bits(m.values))
    fs = cv2.FileStorage(str(tmp_path / "m.yml"), cv2.FILE_STORAGE_READ)
    np.testing.assert_array_equal(bits(fs.getNode("ccm").mat()), bits(m.values))
    fs.release()
    own = str(tmp_path / "opencv.yml")
    fs = cv2.FileStorage(own, cv2.FILE_STORAGE_WRITE)
    model.write(fs)
    fs.release()
    theirs_file = xccm.load_matrix(own)
    np.testing.assert_array_equal(bits(theirs_file.values), bits(m.values))
    assert float(theirs_file.loss) == model.getLoss()


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_xccm_matrix_applies_the_same_in_opencv(model):
    cv2 = _cv2_ccm()
    ref = xccm.chart()
    rng = np.random.default_rng(4)
    measured = (
        ref @ xr.DataArray(rng.uniform(0, 0.3, (3, 3)) + np.eye(3) * 0.5, dims=("channel", "c"))
    ).rename(c="channel")
    measured = (measured + 0.01).assign_coords(channel=["R", "G", "B"])
    m = xccm.fit(measured, ref, model=model)
    linear = rng.uniform(0, 1, (7, 4, 3))
    ours = xccm.apply(xr.DataArray(linear, dims=("y", "x", "channel")), m).values
    # cv2.transform multiplies column vectors: M.T is (3x3) or (3x4, offset last column)
    theirs = cv2.transform(linear, xccm.to_opencv(m).T)
    np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=1e-14)


def test_lazy_fit_matrix_saves(tmp_path):
    ref = xccm.chart()
    measured = (ref * [0.5, 0.6, 0.7]).drop_attrs().expand_dims(time=3).chunk(time=1)
    m = xccm.fit(measured, ref)
    with dask.config.set(scheduler="synchronous"):
        loaded = xccm.load_matrix(xccm.save_matrix(m, tmp_path / "m.nc"))
    xr.testing.assert_identical(loaded, expected(m.compute(), loaded))


def test_guide_saving_snippet_runs(per_frame, tmp_path, monkeypatch):
    cv2 = _cv2_ccm()
    page = (Path(__file__).parents[1] / "docs" / "guide" / "matrices.md").read_text()
    code = page[page.index("```python") + len("```python") : page.index("```\n", 10)]
    lab = xccm.chart("colorchecker24", space="lab-d50", edition="opencv")
    src = np.random.default_rng(5).uniform(0.05, 0.9, (24, 1, 3))
    model = cv2.ccm.ColorCorrectionModel(
        src, lab.values.reshape(24, 1, 3).copy(), cv2.ccm.COLOR_SPACE_LAB_D50_2
    )
    model.compute()
    namespace = {"xccm": xccm, "m": per_frame, "model": model}
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/guide/matrices.md", "exec"), namespace)
    xr.testing.assert_identical(namespace["m"], expected(per_frame, namespace["m"]))
    np.testing.assert_array_equal(namespace["cv"], per_frame.isel(time=0).values)
    np.testing.assert_array_equal(namespace["m0"].values, model.getColorCorrectionMatrix())


def test_check_matrix_path_says_before_a_fit_what_a_file_can_hold(tmp_path, monkeypatch):
    rp2 = xccm.models.resolve_model("root_polynomial", degree=2)
    for suffix, fmt in ((".json", "json"), (".nc", "netcdf")):
        assert check_matrix_path(tmp_path / f"m{suffix}", rp2, batch_dims=("time",)) == fmt
    with pytest.raises(ValueError, match=r"linear \(3x3\) or affine \(4x3\).*root_polynomial"):
        check_matrix_path(tmp_path / "m.yml", rp2)
    with pytest.raises(ValueError, match="not one per 'time'"):
        check_matrix_path(tmp_path / "m.yml", "affine", batch_dims=("time",))
    with pytest.raises(ValueError, match="cannot tell the format"):
        check_matrix_path(tmp_path / "m.txt")
    assert not list(tmp_path.iterdir())  # nothing written
    # what it refuses, save_matrix refuses too
    m = xccm.models.matrix_dataarray(np.vstack([np.eye(3), np.zeros((3, 3))]), rp2)
    with pytest.raises(ValueError, match="3x3"):
        xccm.save_matrix(m, tmp_path / "m.yml")
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r'pip install "xccm\[detect\]"'):
        check_matrix_path(tmp_path / "m.yml", "linear")
    with pytest.raises(ImportError, match=r'pip install "xccm\[detect\]"'):
        xccm.save_matrix(np.eye(3), tmp_path / "m.yml")
