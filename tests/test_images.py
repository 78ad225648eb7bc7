"""open_images and to_images on PNG, JPEG and TIFF files the tests write themselves."""

import os
import re

import dask
import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from dask.array.utils import assert_eq

import xccm
from conftest import raise_if_dask_computes

Image = pytest.importorskip("PIL.Image")
tifffile = pytest.importorskip("tifffile")
imagecodecs = pytest.importorskip("imagecodecs")


def _rgb(seed, shape=(6, 8, 3), dtype=np.uint8):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def _exif(when: str, subsec: str | None = None):
    exif = Image.Exif()
    tags = {36867: when}  # DateTimeOriginal
    if subsec is not None:
        tags[37521] = subsec  # SubSecTimeOriginal
    exif[0x8769] = tags  # the EXIF IFD
    return exif


def _save(path, pixels, exif=None, **kwargs):
    image = Image.fromarray(pixels if pixels.shape[-1] != 1 else pixels[..., 0])
    image.save(path, exif=exif, **kwargs) if exif is not None else image.save(path, **kwargs)
    return path


def _pillow_read(path):
    with Image.open(path) as image:
        return np.asarray(image)


def _sorted_times(da):
    return [str(t)[:19] for t in da.time.values]


def test_png_jpeg_tiff_frames_read_lazily_one_chunk_each(tmp_path):
    a, b, c = _rgb(0), _rgb(1), _rgb(2)
    _save(tmp_path / "a.png", a, _exif("2024:06:01 12:00:00"))
    _save(tmp_path / "b.jpg", b, _exif("2024:06:01 11:00:00"), quality=95)
    # DateTimeOriginal in IFD0, as TIFF/EP places it
    extratags = [(36867, "s", 0, "2024:06:01 13:00:00", True)]
    tifffile.imwrite(tmp_path / "c.tif", c, photometric="rgb", extratags=extratags)
    (tmp_path / "notes.txt").write_text("not an image")
    with dask.config.set(scheduler="sync"):
        frames = xccm.open_images(tmp_path)
    assert frames.dims == ("time", "y", "x", "channel") and frames.name == "image"
    assert isinstance(frames.data, dsa.Array) and frames.chunks == ((1, 1, 1), (6,), (8,), (3,))
    assert frames.dtype == np.uint8 and frames.channel.values.tolist() == ["R", "G", "B"]
    # EXIF DateTimeOriginal in all three formats, frames sorted by it
    assert frames.attrs["time_source"] == "EXIF DateTimeOriginal"
    assert _sorted_times(frames) == [
        "2024-06-01T11:00:00",
        "2024-06-01T12:00:00",
        "2024-06-01T13:00:00",
    ]
    names = [os.path.basename(p) for p in frames.attrs["source_files"]]
    assert names == ["b.jpg", "a.png", "c.tif"]
    assert frames.attrs["format"] == "jpeg, png, tiff" and frames.attrs["bit_depth"] == 8
    assert frames.attrs["encoding"] == "srgb" and frames.attrs["scale"] == 1 / 255
    # lossless formats give the pixels back; JPEG (4:2:0 chroma) only near them
    assert frames.sel(time="2024-06-01T12:00").values.tolist() == a.tolist()
    assert frames.sel(time="2024-06-01T13:00").values.tolist() == c.tolist()
    jpeg = frames.sel(time="2024-06-01T11:00").values.astype(int)
    assert _pillow_read(tmp_path / "b.jpg").tolist() == jpeg.tolist()


def test_opening_decodes_no_pixels(tmp_path, monkeypatch):
    for i in range(3):
        _save(tmp_path / f"f{i}.png", _rgb(i))
    calls = []
    original = xccm.images._read_image

    def counting(path):
        calls.append(os.path.basename(path))
        return original(path)

    monkeypatch.setattr(xccm.images, "_read_image", counting)
    frames = xccm.open_images(tmp_path)
    assert calls == []
    assert frames.attrs["time_source"] == "order" and frames.time.values.tolist() == [0, 1, 2]
    assert frames[2].values.tolist() == _rgb(2).tolist()
    assert calls == ["f2.png"]


def test_sixteen_bit_png_and_tiff_stay_uint16(tmp_path):
    a, b = _rgb(3, dtype=np.uint16), _rgb(4, dtype=np.uint16)
    (tmp_path / "a.png").write_bytes(imagecodecs.png_encode(a))
    tifffile.imwrite(tmp_path / "b.tif", b, photometric="rgb", compression="lzw")
    frames = xccm.open_images([tmp_path / "a.png", tmp_path / "b.tif"])
    assert frames.dtype == np.uint16 and frames.attrs["bit_depth"] == 16
    assert frames.attrs["scale"] == 1 / 65535 and frames.attrs["encoding"] == "srgb"
    assert frames.values.tolist() == [a.tolist(), b.tolist()]
    # Pillow alone would have read the PNG as 8-bit
    with Image.open(tmp_path / "a.png") as image:
        assert image.mode == "RGB"


def test_float_tiff_stays_float_and_linear(tmp_path):
    a = _rgb(5, dtype=np.float32)
    tifffile.imwrite(tmp_path / "a.tiff", a, photometric="rgb")
    planar = _rgb(6, dtype=np.float32)
    tifffile.imwrite(tmp_path / "b.tiff", np.moveaxis(planar, -1, 0), photometric="rgb")
    frames = xccm.open_images(tmp_path)
    assert frames.dtype == np.float32 and frames.attrs["bit_depth"] == 32
    assert frames.attrs["encoding"] == "identity" and "scale" not in frames.attrs
    assert frames.values.tolist() == [a.tolist(), planar.tolist()]
    assert xccm.open_images(tmp_path, encoding="gamma").attrs["encoding"] == "gamma"


def test_alpha_is_dropped_with_a_warning(tmp_path):
    rgba = _rgb(7, shape=(6, 8, 4))
    _save(tmp_path / "a.png", rgba)
    tifffile.imwrite(tmp_path / "b.tif", rgba, photometric="rgb", extrasamples=[2])
    _save(tmp_path / "c.png", rgba[..., :3])
    with pytest.warns(UserWarning, match=r"2 of 3 images have an alpha channel, first .*a\.png"):
        frames = xccm.open_images(tmp_path)
    assert frames.sizes["channel"] == 3 and frames.attrs["alpha"] == "dropped"
    assert frames.values.tolist() == [rgba[..., :3].tolist()] * 3


def test_grey_images_have_one_channel(tmp_path):
    grey = _rgb(8, shape=(6, 8, 1))
    _save(tmp_path / "a.png", grey)
    _save(tmp_path / "b.png", np.concatenate([grey, grey], axis=-1), mode="LA")
    _save(tmp_path / "c.jpg", grey)
    with pytest.warns(UserWarning, match="alpha"):
        frames = xccm.open_images(sorted(tmp_path.glob("*.png")))
    assert frames.channel.values.tolist() == ["gray"] and frames.shape == (2, 6, 8, 1)
    assert frames.values.tolist() == [grey.tolist()] * 2
    assert xccm.open_images(tmp_path / "c.jpg").channel.values.tolist() == ["gray"]


def test_frames_that_differ_name_the_first_offending_file(tmp_path):
    _save(tmp_path / "a.png", _rgb(0))
    _save(tmp_path / "b.png", _rgb(1))
    _save(tmp_path / "c.png", _rgb(2, shape=(6, 9, 3)))
    _save(tmp_path / "d.png", _rgb(3, shape=(5, 8, 3)))
    with pytest.raises(
        ValueError, match=r"c\.png is 6 x 9 pixels, 3 channels, uint8, but .*a\.png"
    ):
        xccm.open_images(tmp_path)
    _save(tmp_path / "g.png", _rgb(0, shape=(6, 8, 1)))
    with pytest.raises(ValueError, match=r"g\.png is 6 x 8 pixels, 1 channel, uint8"):
        xccm.open_images([tmp_path / "a.png", tmp_path / "g.png"])
    (tmp_path / "h.png").write_bytes(imagecodecs.png_encode(_rgb(0, dtype=np.uint16)))
    with pytest.raises(ValueError, match=r"h\.png is 6 x 8 pixels, 3 channels, uint16"):
        xccm.open_images([tmp_path / "a.png", tmp_path / "h.png"])


def test_times_from_file_names(tmp_path):
    for name in ("cam_2024_06_01_130005.png", "cam_2024_06_01_120005.png"):
        _save(tmp_path / name, _rgb(0))
    frames = xccm.open_images(tmp_path / "cam_*.png", time="%Y_%m_%d_%H%M%S")
    assert _sorted_times(frames) == ["2024-06-01T12:00:05", "2024-06-01T13:00:05"]
    assert frames.attrs["time_source"] == "file name %Y_%m_%d_%H%M%S"
    pattern = re.compile(r"(?P<year>\d{4})_(?P<month>\d\d)_(?P<day>\d\d)_(?P<hour>\d\d)")
    assert _sorted_times(xccm.open_images(tmp_path, time=pattern)) == [
        "2024-06-01T12:00:00",
        "2024-06-01T13:00:00",
    ]
    # the order keeps the file order, given times are used as they are
    assert xccm.open_images(tmp_path, time="order").time.values.tolist() == [0, 1]
    assert xccm.open_images(tmp_path, time=[5.0, 2.5]).time.values.tolist() == [5.0, 2.5]
    with pytest.raises(ValueError, match=r"the format '%Y-%m-%d' is not in the file name"):
        xccm.open_images(tmp_path, time="%Y-%m-%d")
    with pytest.raises(ValueError, match="holds %Q"):
        xccm.open_images(tmp_path, time="%Y%Q")
    with pytest.raises(ValueError, match="time must be 'auto', 'exif', 'order'"):
        xccm.open_images(tmp_path, time="filename")
    with pytest.raises(ValueError, match="3 values of shape"):
        xccm.open_images(tmp_path, time=[1, 2, 3])


def test_exif_times_auto_exif_and_partial(tmp_path):
    _save(tmp_path / "a.jpg", _rgb(0), _exif("2024:06:01 12:00:00", subsec="25"))
    _save(tmp_path / "b.jpg", _rgb(1), _exif("2024:06:01 12:00:00", subsec="5"))
    frames = xccm.open_images(tmp_path, time="exif")
    assert [str(t)[:22] for t in frames.time.values] == [
        "2024-06-01T12:00:00.25",
        "2024-06-01T12:00:00.50",
    ]
    _save(tmp_path / "c.jpg", _rgb(2))
    with pytest.raises(ValueError, match=r"c\.jpg has no EXIF DateTimeOriginal \(1 of 3"):
        xccm.open_images(tmp_path)
    assert xccm.open_images(tmp_path / "c.jpg").attrs["time_source"] == "order"
    with pytest.raises(ValueError, match=r"c\.jpg has no EXIF DateTimeOriginal"):
        xccm.open_images(tmp_path / "c.jpg", time="exif")
    # a camera whose clock was never set counts as none
    _save(tmp_path / "d.jpg", _rgb(2), _exif("0000:00:00 00:00:00"))
    assert xccm.open_images(tmp_path / "d.jpg").attrs["time_source"] == "order"


def test_auto_times_read_back_what_to_images_names(tmp_path):
    """to_images names files by time; time="auto" reads those times back (no EXIF there)."""
    linear = _linear_stack(n=12).clip(0, 1)
    times = pd.date_range("2026-06-01 06:00", periods=12, freq="10min")
    xccm.to_images(linear.assign_coords(time=times[::-1]), tmp_path / "a")  # written newest first
    back = xccm.open_images(tmp_path / "a")
    assert back.attrs["time_source"] == "file name %Y%m%dT%H%M%S"
    np.testing.assert_array_equal(back.time.values, times.values)  # sorted by time
    # frames sharing a second get microseconds in their names, and keep them
    sub = pd.to_datetime(["2026-06-01 06:00", "2026-06-01 06:00:00.25"], format="ISO8601")
    xccm.to_images(linear.isel(time=[0, 1]).assign_coords(time=sub), tmp_path / "b", prefix="s_")
    np.testing.assert_array_equal(xccm.open_images(tmp_path / "b").time.values, sub.values)


@pytest.mark.parametrize(
    ("names", "expected", "source"),
    [
        (
            ["2026-06-01T06-10-00.png", "2026-06-01T06-00-00.5.png"],
            ["2026-06-01T06:00:00.500", "2026-06-01T06:10:00.000"],
            "file name %Y-%m-%dT%H-%M-%S",
        ),
        (
            ["cam 2026-06-01 06:00:00.png", "cam_2026-06-01_07:00:00.png"],
            ["2026-06-01T06:00:00.000", "2026-06-01T07:00:00.000"],
            "file name %Y-%m-%dT%H-%M-%S",
        ),
        (
            ["IMG_20260601_070000.png", "IMG_20260601_060000.png"],
            ["2026-06-01T06:00:00.000", "2026-06-01T07:00:00.000"],
            "file name %Y%m%d_%H%M%S",
        ),
        (
            ["20260601T070000.png", "IMG_20260601_060000.png"],
            ["2026-06-01T06:00:00.000", "2026-06-01T07:00:00.000"],
            "file name %Y%m%dT%H%M%S / %Y%m%d_%H%M%S",
        ),
    ],
)
def test_auto_times_from_iso_like_names(tmp_path, names, expected, source):
    for i, name in enumerate(names):
        _save(tmp_path / name, _rgb(i))
    frames = xccm.open_images(tmp_path)
    assert [str(t)[:23] for t in frames.time.values] == expected
    assert frames.attrs["time_source"] == source


@pytest.mark.parametrize(
    "names",
    [
        ["frame_0000.png", "frame_0001.png"],  # frame numbers
        ["00010203_040506.png", "00010203_040507.png"],  # a counter shaped like a date-time
        ["20260601.png", "20260602.png"],  # a date alone
        ["120260601T060000.png", "120260601T070000.png"],  # more digits than a date-time
        ["20261301T060000.png", "20261301T070000.png"],  # month 13
        ["1780000000.png", "1780000600.png"],  # Unix times are not read
        ["20260601T060000.png", "calibration.png"],  # not every name has one
    ],
)
def test_auto_times_never_read_frame_numbers(tmp_path, names):
    for i, name in enumerate(names):
        _save(tmp_path / name, _rgb(i))
    frames = xccm.open_images(tmp_path)
    assert frames.attrs["time_source"] == "order" and frames.time.values.tolist() == [0, 1]


def test_auto_times_prefer_exif_to_names(tmp_path):
    _save(tmp_path / "20260601T060000.jpg", _rgb(0), _exif("2024:06:01 12:00:00"))
    frames = xccm.open_images(tmp_path)
    assert frames.attrs["time_source"] == "EXIF DateTimeOriginal"
    assert _sorted_times(frames) == ["2024-06-01T12:00:00"]


def test_frames_sharing_a_time_warn(tmp_path):
    _save(tmp_path / "a.png", _rgb(0), _exif("2024:06:01 12:00:00"))
    _save(tmp_path / "b.png", _rgb(1), _exif("2024:06:01 12:00:00"))
    with pytest.warns(UserWarning, match=r"2 frames share their time .* a\.png and b\.png"):
        xccm.open_images(tmp_path)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="holds no image files"):
        xccm.open_images(tmp_path)
    with pytest.raises(ValueError, match="matches no file"):
        xccm.open_images(tmp_path / "*.png")
    with pytest.raises(ValueError, match=r"missing\.png' is not a file"):
        xccm.open_images([tmp_path / "missing.png"])
    (tmp_path / "x.png").write_bytes(b"GIF89a not really")
    with pytest.raises(ValueError, match=r"x\.png is not a PNG, JPEG or TIFF"):
        xccm.open_images(tmp_path / "x.png")
    Image.fromarray(_rgb(0, shape=(6, 8, 4))).convert("CMYK").save(tmp_path / "k.jpg")
    with pytest.raises(ValueError, match="CMYK JPEG"):
        xccm.open_images(tmp_path / "k.jpg")
    with pytest.raises(TypeError, match="paths must be a folder"):
        xccm.open_images(3)


def test_graph_name_follows_the_files(tmp_path):
    _save(tmp_path / "a.png", _rgb(0))
    name = xccm.open_images(tmp_path).data.name
    assert xccm.open_images(str(tmp_path) + "/").data.name == name
    os.utime(tmp_path / "a.png", ns=(1, 1))
    assert xccm.open_images(tmp_path).data.name != name


# ---------------------------------------------------------------------------------------------
# to_images


def _srgb_encode(x):
    """IEC 61966-2-1, written out here independently of xccm."""
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.abs(x) ** (1 / 2.4) - 0.055)


def _linear_stack(n=3, shape=(5, 7)):
    rng = np.random.default_rng(9)
    values = rng.uniform(-0.1, 1.2, size=(n, *shape, 3)).astype(np.float32)
    values[0] = np.clip(values[0], 0, 1)  # frame 0: nothing to clip
    values[1, 0, 0, 2] = np.nan
    return xr.DataArray(
        values,
        dims=("time", "y", "x", "channel"),
        coords={
            "time": pd.date_range("2024-06-01 12:00", periods=n, freq="h"),
            "channel": ["R", "G", "B"],
        },
    )


@pytest.mark.parametrize(("fmt", "bits"), [("png", 8), ("png", 16), ("tiff", 8), ("tiff", 16)])
def test_to_images_writes_encoded_clipped_values(tmp_path, fmt, bits):
    linear = _linear_stack()
    counts = xccm.to_images(linear.chunk(time=2), tmp_path, format=fmt, bits=bits)
    suffix = "png" if fmt == "png" else "tif"
    names = [f"20240601T{h}0000.{suffix}" for h in (12, 13, 14)]
    assert counts.file.values.tolist() == names
    assert sorted(os.listdir(tmp_path)) == names  # no temporary file left
    x = linear.values.astype(np.float64)
    bad = ~((x >= 0) & (x <= 1))
    assert counts.values.tolist() == bad.any(axis=-1).sum(axis=(1, 2)).tolist()
    assert counts.values[0] == 0 and counts.values[1] > 0 and counts.attrs["pixels"] == 35
    top = 2**bits - 1
    expected = np.rint(np.clip(_srgb_encode(np.nan_to_num(np.clip(x, 0, None))), 0, 1) * top)
    back = xccm.open_images(tmp_path, time=f"%Y%m%dT%H%M%S.{suffix}")
    assert back.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert np.abs(back.values.astype(np.int64) - expected).max() <= 1  # float32 rounding
    assert (back.time.values == linear.time.values).all()
    if bits == 8 and fmt == "png":  # an independent reader agrees
        assert _pillow_read(tmp_path / names[2]).tolist() == back.values[2].tolist()


def test_to_images_is_lazy_with_compute_false(tmp_path):
    linear = _linear_stack().chunk(time=1)
    with dask.config.set(scheduler="sync"):
        with raise_if_dask_computes():
            counts = xccm.to_images(linear, tmp_path, compute=False)
        assert isinstance(counts.data, dsa.Array) and os.listdir(tmp_path) == []
        assert counts.chunks == ((1, 1, 1),)
        assert (
            counts.compute().values.tolist()
            == xccm.to_images(linear, tmp_path / "now").values.tolist()
        )
    assert len(os.listdir(tmp_path)) == 4  # three images and the folder "now"


def test_to_images_identity_gray_single_and_names(tmp_path):
    grey = xr.DataArray(np.full((2, 3, 4, 1), 0.5), dims=("frame", "y", "x", "channel"))
    counts = xccm.to_images(grey, tmp_path, encoding="identity", name_format="{:03d}")
    assert counts.file.values.tolist() == ["000.png", "001.png"]
    assert _pillow_read(tmp_path / "000.png").tolist() == np.full((3, 4), 128).tolist()
    one = xccm.to_images(
        grey.isel(frame=0), tmp_path, prefix="chart_", format="tiff", encoding="identity"
    )
    assert one.ndim == 0 and int(one) == 0 and str(one.file.values) == "chart_image.tif"
    assert tifffile.imread(tmp_path / "chart_image.tif").tolist() == np.full((3, 4), 128).tolist()


def test_to_images_refuses_to_overwrite_and_clip_error_is_atomic(tmp_path):
    linear = _linear_stack()
    xccm.to_images(linear, tmp_path)
    before = (tmp_path / "20240601T120000.png").read_bytes()
    with pytest.raises(FileExistsError, match=r"3 of the 3 files exist already.*overwrite=True"):
        xccm.to_images(linear * 0.5, tmp_path)
    assert (tmp_path / "20240601T120000.png").read_bytes() == before
    xccm.to_images(linear * 0.5, tmp_path, overwrite=True)
    assert (tmp_path / "20240601T120000.png").read_bytes() != before
    fresh = tmp_path / "fresh"
    linear[2] = linear[2].clip(0, 1)  # only frame 1 (13:00) is out of range
    with (
        dask.config.set(scheduler="sync"),
        pytest.raises(ValueError, match=r"frame 20240601T130000\.png: \d+ pixels have values"),
    ):
        xccm.to_images(linear.chunk(time=1), fresh, clip="error")
    assert sorted(os.listdir(fresh)) in ([], ["20240601T120000.png"], ["20240601T140000.png"])
    assert "20240601T130000.png" not in os.listdir(fresh)
    assert not [n for n in os.listdir(fresh) if n.endswith(".tmp")]


def test_to_images_bad_input(tmp_path):
    linear = _linear_stack()
    with pytest.raises(TypeError, match="dtype uint8; to_images writes float values"):
        xccm.to_images(xr.zeros_like(linear, dtype=np.uint8), tmp_path)
    with pytest.raises(ValueError, match="format must be 'png' or 'tiff'"):
        xccm.to_images(linear, tmp_path, format="gif")
    with pytest.raises(ValueError, match="bits must be 8 or 16"):
        xccm.to_images(linear, tmp_path, bits=12)
    with pytest.raises(ValueError, match="unknown clip"):
        xccm.to_images(linear, tmp_path, clip="wrap")
    with pytest.raises(ValueError, match=r"image files take 1 \(grey\) or 3"):
        xccm.to_images(linear.isel(channel=[0, 1]), tmp_path)
    with pytest.raises(ValueError, match=r"besides .*select or stack"):
        xccm.to_images(linear.expand_dims(site=2), tmp_path)
    with pytest.raises(ValueError, match=r"missing \['x'\]"):
        xccm.to_images(linear.rename(x="col"), tmp_path)
    same_second = linear.assign_coords(time=linear.time.values[:1].repeat(3))
    with pytest.raises(ValueError, match="frames 0 and 1 would both be written"):
        xccm.to_images(same_second, tmp_path)
    with pytest.raises(ValueError, match="not a plain file name"):
        xccm.to_images(linear, tmp_path, prefix="../")
    assert os.listdir(tmp_path) == []


def test_to_images_subsecond_times_get_microseconds(tmp_path):
    linear = _linear_stack(n=2)
    linear = linear.assign_coords(
        time=pd.to_datetime(["2024-06-01 12:00", "2024-06-01 12:00:00.5"], format="ISO8601")
    )
    counts = xccm.to_images(linear, tmp_path)
    assert counts.file.values.tolist() == [
        "20240601T120000000000.png",
        "20240601T120000500000.png",
    ]


def test_open_apply_write_round_trip_stays_lazy(tmp_path):
    for hour in (12, 13):
        _save(tmp_path / f"in_{hour}.png", _rgb(hour))
    frames = xccm.open_images(tmp_path, time="in_%H")
    with raise_if_dask_computes():
        linear = xccm.linearize(frames, frames.attrs["encoding"], scale=frames.attrs["scale"])
        corrected = xccm.apply(linear, np.eye(3) * 0.5)
        counts = xccm.to_images(corrected, tmp_path / "out", compute=False)
    assert counts.compute().values.tolist() == [0, 0]
    back = xccm.open_images(tmp_path / "out", time="order")
    lin = linear.values.astype(np.float64) * 0.5
    assert_eq(back.values.astype(int), np.rint(_srgb_encode(lin) * 255).astype(int), atol=1)
