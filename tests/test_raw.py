"""open_raw and camera_matrix on DNG files the tests write themselves with tifffile."""

import datetime as dt
import pickle
import warnings

import numpy as np
import pytest
import xarray as xr
from dask.array.utils import assert_eq

import xccm
from xccm.raw import SRGB_TO_XYZ

rawpy = pytest.importorskip("rawpy")
tifffile = pytest.importorskip("tifffile")

BLACK, WHITE = 512, 4095
# XYZ -> camera of a real camera (dcraw's adobe_coeff table entry for the Canon EOS 5D)
CAMERA_XYZ = np.array([[6347, -479, -972], [-8297, 15954, 2480], [-1968, 2131, 7649]]) / 1e4
# RGGB: colour of CFA site (y % 2, x % 2)
RGGB = np.array([[0, 1], [1, 2]])


def _rational(values, den=10000):
    out = []
    for v in values:
        out += [round(v * den), den]
    return out


def write_dng(path, cfa, *, color_matrix=CAMERA_XYZ, neutral=(0.5, 1.0, 0.7), when=None):
    """A minimal Bayer (RGGB) DNG: 16-bit CFA samples and the colour tags LibRaw reads."""
    extratags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "xccm test camera", True),  # UniqueCameraModel
        (271, "s", 0, "xccm", True),  # Make
        (272, "s", 0, "test camera", True),  # Model
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: R G / G B
        (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor
        (50711, "H", 1, 1, True),  # CFALayout: rectangular
        (50714, "H", 1, BLACK, True),  # BlackLevel
        (50717, "H", 1, WHITE, True),  # WhiteLevel
        (50721, "2i", 9, _rational(np.ravel(color_matrix)), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
    ]
    if neutral is not None:
        extratags.append((50728, "2I", 3, _rational(neutral), True))  # AsShotNeutral
    tifffile.imwrite(
        path,
        np.asarray(cfa, dtype=np.uint16),
        photometric=32803,  # CFA
        subfiletype=0,
        datetime=when,
        extratags=extratags,
    )
    return path


def mosaic(camera_rgb):
    """Raw samples of a camera RGB image (values in [0, 1]) through an RGGB filter array."""
    h, w, _ = camera_rgb.shape
    yy, xx = np.mgrid[:h, :w]
    colour = RGGB[yy % 2, xx % 2]
    linear = np.take_along_axis(camera_rgb, colour[..., None], axis=-1)[..., 0]
    return np.rint(BLACK + (WHITE - BLACK) * linear).astype(np.uint16), colour


@pytest.fixture
def noise_dng(tmp_path):
    rng = np.random.default_rng(1)
    cfa = rng.integers(BLACK, WHITE + 1, size=(32, 48)).astype(np.uint16)
    return write_dng(tmp_path / "noise.dng", cfa), cfa


def test_libraw_reads_tifffile_dng(noise_dng):
    path, cfa = noise_dng
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_image_visible.tolist() == cfa.tolist()
        assert raw.black_level_per_channel == [BLACK] * 4
        assert raw.white_level == WHITE


def test_open_raw_is_black_subtracted_and_white_scaled(noise_dng):
    path, cfa = noise_dng
    with xr.set_options(keep_attrs=True):
        raw = xccm.open_raw(path, demosaic="linear")
    assert raw.dims == ("time", "y", "x", "channel")
    assert raw.dtype == np.float32 and raw.shape == (1, 32, 48, 3)
    assert raw.chunks == ((1,), (32,), (48,), (3,))
    assert raw.channel.values.tolist() == ["R", "G", "B"]
    values = raw.values[0]
    expected = (cfa.astype(float) - BLACK) / (WHITE - BLACK)
    yy, xx = np.mgrid[:32, :48]
    colour = RGGB[yy % 2, xx % 2]
    # at each CFA site the demosaiced value of the site's own colour is the sample itself
    site = np.take_along_axis(values, colour[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(site, expected, rtol=0, atol=1 / 65535 + 1e-7)
    assert raw.attrs["black_level"] == [BLACK] * 4 and raw.attrs["white_level"] == WHITE
    assert raw.attrs["encoding"] == "identity" and raw.attrs["time_source"] == "order"
    # AsShotNeutral (0.5, 1, 0.7): the camera's multipliers are its inverse, green = 1
    np.testing.assert_allclose(raw.attrs["as_shot_white_balance"], [[2.0, 1.0, 1 / 0.7]], 1e-6)
    assert raw.attrs["source_files"] == [str(path)]


def test_open_raw_half_size_averages_nothing_away(noise_dng):
    path, cfa = noise_dng
    raw = xccm.open_raw(path, half_size=True)
    assert raw.shape == (1, 16, 24, 3)
    expected = (cfa.astype(float) - BLACK) / (WHITE - BLACK)
    np.testing.assert_allclose(raw.values[0, ..., 0], expected[0::2, 0::2], atol=2e-5)
    np.testing.assert_allclose(raw.values[0, ..., 2], expected[1::2, 1::2], atol=2e-5)


def test_open_raw_is_lazy_one_chunk_per_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    for i in range(3):
        cfa = rng.integers(BLACK, WHITE, size=(24, 32))
        write_dng(tmp_path / f"f{i}.dng", cfa, when=dt.datetime(2024, 6, 1, 12 - i, 0, 0))
    calls = []
    original = xccm.raw._read_raw

    def counting(path, **kw):
        calls.append(path)
        return original(path, **kw)

    monkeypatch.setattr(xccm.raw, "_read_raw", counting)
    raw = xccm.open_raw(tmp_path, demosaic="linear")
    assert calls == []  # opening decodes nothing
    assert raw.chunks[0] == (1, 1, 1)
    # the camera times sort the frames: f2 was taken first
    assert raw.attrs["time_source"] == "camera time"
    assert [str(t)[:19] for t in raw.time.values] == [
        "2024-06-01T10:00:00",
        "2024-06-01T11:00:00",
        "2024-06-01T12:00:00",
    ]
    assert [p[-6:] for p in raw.attrs["source_files"]] == ["f2.dng", "f1.dng", "f0.dng"]
    one = raw.isel(time=1).values
    assert calls == [str(tmp_path / "f1.dng")]
    monkeypatch.undo()
    # the graph pickles (for distributed schedulers)
    graph = pickle.loads(pickle.dumps(xccm.open_raw(tmp_path, demosaic="linear").data))
    assert_eq(graph[1], one)
    # the same files give the same graph name (tasks cache and resume), a changed one not
    before = xccm.open_raw(tmp_path).data.name
    assert xccm.open_raw(tmp_path).data.name == before
    write_dng(tmp_path / "f0.dng", np.full((24, 32), 600), when=dt.datetime(2024, 6, 1, 13))
    assert xccm.open_raw(tmp_path).data.name != before


def test_camera_matrix_renders_the_scene_back(tmp_path):
    """A camera that sees sRGB patches through CAMERA_XYZ: the camera matrix undoes it."""
    srgb = np.array(
        [[0.4, 0.2, 0.1], [0.1, 0.3, 0.5], [0.2, 0.5, 0.2], [0.6, 0.6, 0.6], [0.5, 0.1, 0.4],
         [0.05, 0.05, 0.05]]
    )  # fmt: skip
    to_camera = CAMERA_XYZ @ SRGB_TO_XYZ  # column vectors: camera = to_camera @ srgb
    white = to_camera @ np.ones(3)  # the camera's response to the sRGB white
    neutral = white / white[1]
    gain = 0.9 / (srgb @ to_camera.T).max()  # exposure: the brightest value at 0.9
    camera = srgb @ to_camera.T * gain
    image = np.repeat(np.repeat(camera.reshape(2, 3, 3), 16, axis=0), 16, axis=1)
    cfa, _ = mosaic(image)
    write_dng(tmp_path / "scene.dng", cfa, neutral=neutral)
    raw = xccm.open_raw(tmp_path / "scene.dng", demosaic="linear")
    m = xccm.camera_matrix(raw)
    assert m.dims == ("time", "channel_in", "channel") and m.attrs["model"] == "linear"
    out = xccm.apply(raw, m)
    assert out.chunks == raw.chunks  # lazy, per frame
    centres = out.values[0, 8::16, 8::16].reshape(6, 3)
    # neutral multipliers make a neutral grey R = G = B at its green camera value:
    # the scene comes back scaled by the green response to white
    np.testing.assert_allclose(centres, srgb * gain * white[1], rtol=0, atol=2e-3)
    # the same matrix in closed form, from the XYZ matrix in the file, independently
    cam_rgb = to_camera / white[:, None]
    expected = np.diag(1 / neutral) @ np.linalg.inv(cam_rgb).T
    np.testing.assert_allclose(m.values[0], expected, rtol=1e-3, atol=1e-4)


def test_camera_matrix_in_a_report(tmp_path):
    srgb = np.array([[0.4, 0.2, 0.1], [0.1, 0.3, 0.5], [0.2, 0.5, 0.2], [0.6, 0.6, 0.6]])
    to_camera = CAMERA_XYZ @ SRGB_TO_XYZ
    white = to_camera @ np.ones(3)
    camera = srgb @ to_camera.T * 0.5
    image = np.repeat(np.repeat(camera.reshape(2, 2, 3), 16, axis=0), 16, axis=1)
    write_dng(tmp_path / "chart.dng", mosaic(image)[0], neutral=white / white[1])
    raw = xccm.open_raw(tmp_path / "chart.dng", demosaic="linear")
    boxes = xccm.grid_boxes((4, 4), 8, 16, shape=(2, 2))
    patches = xccm.extract_patches(raw, boxes=boxes)
    reference = xr.DataArray(
        srgb * 0.5 * white[1],
        dims=("patch", "channel"),
        coords={"patch": patches.patch.values, "channel": ["R", "G", "B"]},
        attrs={"space": "srgb-linear"},
    )
    rep = xccm.report(patches, reference, xccm.camera_matrix(raw))
    assert float(rep.delta_e.max()) < 0.2


def test_camera_matrix_white_balance_choices(noise_dng):
    path, _ = noise_dng
    raw = xccm.open_raw(path)
    rgb_cam = np.array(raw.attrs["color_matrix"])
    fixed = xccm.camera_matrix(raw, white_balance=[2.0, 1.0, 1.5])
    assert fixed.dims == ("channel_in", "channel")
    np.testing.assert_allclose(fixed.values, np.diag([2.0, 1.0, 1.5]) @ rgb_cam.T)
    daylight = xccm.camera_matrix(raw, white_balance="daylight")
    wb = np.array(raw.attrs["daylight_white_balance"])
    np.testing.assert_allclose(daylight.values, np.diag(wb) @ rgb_cam.T)
    with pytest.raises(ValueError, match="white_balance must be 'as_shot'"):
        xccm.camera_matrix(raw, white_balance="cloudy")
    with pytest.raises(ValueError, match="3 positive multipliers"):
        xccm.camera_matrix(raw, white_balance=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="lacks attrs"):
        xccm.camera_matrix(raw.copy(data=raw.data).drop_attrs())


def test_camera_matrix_without_as_shot_white_balance_is_nan(tmp_path):
    write_dng(tmp_path / "a.dng", np.full((24, 24), 1000), neutral=None)
    raw = xccm.open_raw(tmp_path / "a.dng")
    if np.isfinite(raw.attrs["as_shot_white_balance"]).all():
        pytest.skip("this LibRaw invents an as-shot white balance for a DNG without one")
    with pytest.warns(UserWarning, match="no as-shot white balance"):
        m = xccm.camera_matrix(raw)
    assert np.isnan(m.values).all()


def test_open_raw_bad_input(tmp_path, noise_dng):
    path, _ = noise_dng
    write_dng(tmp_path / "small.dng", np.full((24, 24), 1000))
    with pytest.raises(ValueError, match=r"small\.dng is 24 x 24 pixels, but .*noise\.dng"):
        xccm.open_raw([path, tmp_path / "small.dng"])
    (tmp_path / "fake.dng").write_bytes(b"not a raw file at all")
    with pytest.raises(ValueError, match=r"LibRaw cannot read .*fake\.dng"):
        xccm.open_raw(tmp_path / "fake.dng")
    with pytest.raises(ValueError, match="demosaic must be one of"):
        xccm.open_raw(path, demosaic="magic")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no raw files"):
        xccm.open_raw(tmp_path / "empty")
    with pytest.raises(ValueError, match="has no camera time"):
        xccm.open_raw(path, time="exif")
    given = np.array(["2024-06-01T12:00"], dtype="datetime64[ns]")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert xccm.open_raw(path, time=given).time.values.tolist() == given.tolist()
