"""Patch extraction: boxes and label images, median and mean, lazily, against plain loops."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import raise_if_dask_computes
from xccm.patches import extract_patches, grid_boxes

BOXES = {"a": (1, 5, 2, 6), "b": (8, 12, 3, 9), "c": (0, 3, 12, 16)}


@pytest.fixture
def stack(rng) -> xr.DataArray:
    data = rng.random((5, 14, 16, 3))
    return xr.DataArray(
        data,
        dims=("time", "y", "x", "channel"),
        coords={"time": np.arange(5) * 10, "channel": ["R", "G", "B"]},
        name="image",
        attrs={"camera": "synthetic"},
    )


def _by_loop(data: np.ndarray, boxes: dict, func) -> np.ndarray:
    """Independent reference: one crop and one numpy reduction per frame and patch."""
    out = np.empty((data.shape[0], len(boxes), data.shape[-1]))
    for t in range(data.shape[0]):
        for p, (y0, y1, x0, x1) in enumerate(boxes.values()):
            out[t, p] = func(data[t, y0:y1, x0:x1].reshape(-1, data.shape[-1]), axis=0)
    return out


def _labels_for(boxes: dict, shape) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.int32)
    for k, (y0, y1, x0, x1) in enumerate(boxes.values(), start=1):
        lab[y0:y1, x0:x1] = k
    return lab


@pytest.mark.parametrize(("reduce", "func"), [("median", np.median), ("mean", np.mean)])
def test_boxes_match_loop(stack, reduce, func):
    p = extract_patches(stack, boxes=BOXES, reduce=reduce)
    assert p.dims == ("time", "patch", "channel")
    assert p.patch.values.tolist() == list(BOXES)
    assert p.channel.values.tolist() == ["R", "G", "B"]
    np.testing.assert_array_equal(p.time, stack.time)
    np.testing.assert_allclose(p.values, _by_loop(stack.values, BOXES, func), rtol=1e-14)
    assert p.attrs == {"camera": "synthetic", "patch_reduce": reduce}
    assert p.name == "image"


@pytest.mark.parametrize(("reduce", "func"), [("median", np.median), ("mean", np.mean)])
def test_labels_match_boxes(stack, reduce, func):
    lab = xr.DataArray(_labels_for(BOXES, (14, 16)), dims=("y", "x"))
    p = extract_patches(stack, labels=lab, names=list(BOXES), reduce=reduce)
    np.testing.assert_allclose(p.values, _by_loop(stack.values, BOXES, func), rtol=1e-14)
    assert p.patch.values.tolist() == list(BOXES)
    unnamed = extract_patches(stack, labels=lab, reduce=reduce)
    assert unnamed.patch.size == 3
    np.testing.assert_allclose(unnamed.values, p.values)


def test_irregular_labels_match_masks(stack, rng):
    lab = rng.integers(0, 5, size=(14, 16))
    p = extract_patches(stack, labels=xr.DataArray(lab, dims=("y", "x")), reduce="mean")
    for k in range(1, 5):
        expected = stack.values[:, lab == k].mean(axis=1)
        np.testing.assert_allclose(p.values[:, k - 1], expected, rtol=1e-13)


def test_median_is_robust_to_outlier_pixels(stack):
    flat = stack.copy()
    flat[:, 1:5, 2:6] = 0.25
    flat[:, 1, 2] = 100.0  # a glint
    flat[:, 4, 5] = np.nan  # a dead pixel
    p = extract_patches(flat, boxes=BOXES)
    np.testing.assert_allclose(p.sel(patch="a").values, 0.25)


def test_nan_pixels_are_skipped_and_all_nan_patch_is_nan(stack):
    holey = stack.copy()
    holey[0, 1:3] = np.nan
    holey[2, 8:12, 3:9] = np.nan
    p = extract_patches(holey, boxes=BOXES, reduce="mean")
    expected = np.nanmean(holey.values[0, 1:5, 2:6].reshape(-1, 3), axis=0)
    np.testing.assert_allclose(p.values[0, 0], expected)
    assert np.isnan(p.values[2, 1]).all()
    assert np.isfinite(p.values[3]).all()


def test_dask_is_lazy_and_chunked_per_frame(stack):
    lazy = stack.chunk(time=2)
    lab = xr.DataArray(_labels_for(BOXES, (14, 16)), dims=("y", "x"))
    with raise_if_dask_computes():
        by_box = extract_patches(lazy, boxes=BOXES)
        by_label = extract_patches(lazy, labels=lab, names=list(BOXES))
    for p in (by_box, by_label):
        assert p.chunks == ((2, 2, 1), (3,), (3,))
        xr.testing.assert_allclose(p.compute(), extract_patches(stack, boxes=BOXES))


def test_spatially_chunked_image_is_refused(stack):
    with pytest.raises(ValueError, match=r"image dim 'x' is split into 2 chunks.*chunk\("):
        extract_patches(stack.chunk(x=8), boxes=BOXES)


def test_boxes_varying_over_time(stack):
    base = xr.DataArray(np.array(list(BOXES.values())), dims=("patch", "bound"))
    shift = xr.DataArray(np.arange(5) % 2, dims="time", coords={"time": stack.time})
    moving = base + shift * xr.DataArray([1, 1, 0, 0], dims="bound")
    p = extract_patches(stack.chunk(time=2), boxes=moving, reduce="mean").compute()
    for t in range(5):
        frame_boxes = {k: tuple(v) for k, v in enumerate(moving.isel(time=t).values)}
        expected = _by_loop(stack.values[t : t + 1], frame_boxes, np.mean)[0]
        np.testing.assert_allclose(p.values[t], expected)


def test_labels_varying_over_time(stack):
    frames = [_labels_for(BOXES, (14, 16)) for _ in range(5)]
    frames[3] = np.roll(frames[3], 1, axis=0)
    lab = xr.DataArray(np.stack(frames), dims=("time", "y", "x"), coords={"time": stack.time})
    p = extract_patches(stack.chunk(time=2), labels=lab.chunk(time=2), names=list(BOXES))
    p = p.compute()
    for t in range(5):
        for k in range(1, 4):
            expected = np.median(stack.values[t][frames[t] == k], axis=0)
            np.testing.assert_allclose(p.values[t, k - 1], expected)


def _moving(stack) -> tuple[xr.DataArray, xr.DataArray]:
    """Boxes and a label image that differ in every frame, on the stack's time labels."""
    base = xr.DataArray(np.array(list(BOXES.values())), dims=("patch", "bound"))
    shift = xr.DataArray(np.arange(5) % 3, dims="time", coords={"time": stack.time})
    boxes = base + shift * xr.DataArray([1, 1, 0, 0], dims="bound")
    frames = [np.roll(_labels_for(BOXES, (14, 16)), t % 3, axis=0) for t in range(5)]
    lab = xr.DataArray(np.stack(frames), dims=("time", "y", "x"), coords={"time": stack.time})
    return boxes, lab


@pytest.mark.parametrize("lazy", [False, True])
def test_moving_geometry_in_another_order_is_paired_by_label(stack, lazy):
    boxes, lab = _moving(stack)
    image, labels = (stack.chunk(time=2), lab.chunk(time=3)) if lazy else (stack, lab)
    order = [3, 0, 4, 2, 1]
    with raise_if_dask_computes():
        by_box = extract_patches(image, boxes=boxes.isel(time=order), reduce="mean")
        by_label = extract_patches(image, labels=labels.isel(time=order), names=list(BOXES))
    assert (by_box.chunks is not None) == lazy and (by_label.chunks is not None) == lazy
    np.testing.assert_array_equal(by_box.time, stack.time)
    np.testing.assert_array_equal(by_label.time, stack.time)
    xr.testing.assert_allclose(by_box, extract_patches(stack, boxes=boxes, reduce="mean"))
    xr.testing.assert_allclose(by_label, extract_patches(stack, labels=lab, names=list(BOXES)))


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("argname", ["boxes", "labels"])
def test_moving_geometry_with_other_time_labels_is_refused(stack, lazy, argname):
    boxes, lab = _moving(stack)
    geometry = {"boxes": boxes, "labels": lab}[argname]
    image = stack.chunk(time=2) if lazy else stack
    extra = {"names": list(BOXES)} if argname == "labels" else {}
    how = (
        rf"{argname} are paired with image frames by their 'time' label, not by position\. "
        rf"Give {argname} the image's labels, e\.g\. {argname}\.reindex\(time=image\.time, "
        r'method="nearest"\)'
    )
    with raise_if_dask_computes():
        # labels shifted by one step: one extra on each side
        shifted = geometry.assign_coords(time=geometry.time + 10)
        with pytest.raises(
            ValueError,
            match=rf"{argname} and image have different labels on dim 'time': {argname} has 5 "
            rf"time labels, 1 not in image \(e\.g\. 50\); image has 5, 1 not in {argname} "
            rf"\(e\.g\. 0\)\. {how}.*assign_coords\(time=image\.time\)",
        ):
            extract_patches(image, **{argname: shifted}, **extra)
        # a subset of the frames
        with pytest.raises(
            ValueError,
            match=rf"{argname} has 2 time labels, all in image; image has 5, 3 not in {argname} "
            rf"\(e\.g\. 0, 20, \.\.\.\)\. {how}",
        ):
            extract_patches(image, **{argname: geometry.isel(time=[1, 3])}, **extra)
        # without time labels on the image, paired by position: the sizes must agree
        with pytest.raises(ValueError, match=rf"{argname} has 2 entries on dim 'time' but image"):
            extract_patches(
                image.drop_vars("time"), **{argname: geometry.isel(time=[1, 3])}, **extra
            )


def test_moving_boxes_with_shifted_datetimes_say_how_to_select(stack):
    times = np.datetime64("2024-05-01T12:00:00") + np.arange(5) * np.timedelta64(1, "s")
    image = stack.assign_coords(time=times).chunk(time=2)
    boxes = _moving(stack)[0].assign_coords(time=times + np.timedelta64(1, "s"))
    with raise_if_dask_computes(), pytest.raises(ValueError) as info:
        extract_patches(image, boxes=boxes)
    message = str(info.value)
    assert "not in image (e.g. 2024-05-01 12:00:05)" in message
    assert "not in boxes (e.g. 2024-05-01 12:00:00)" in message
    nearest = 'boxes.reindex(time=image.time, method="nearest")'
    assert nearest in message and 'boxes.reindex(time=image.time, method="ffill")' in message
    with raise_if_dask_computes():  # the suggested fix works
        p = extract_patches(image, boxes=boxes.reindex(time=image.time, method="nearest"))
    np.testing.assert_array_equal(p.time, times)
    moved = _moving(stack)[0].isel(time=[0, 0, 1, 2, 3]).assign_coords(time=times)
    expected = extract_patches(image, boxes=moved)  # frame t takes the boxes labelled t
    xr.testing.assert_allclose(p, expected)
    # ffill leaves the first frame without boxes: its patches are NaN (as a frame where
    # detect_chart finds no chart), the others are read as before
    ffilled = boxes.reindex(time=image.time, method="ffill")
    p = extract_patches(image, boxes=ffilled)
    assert np.isnan(p.isel(time=0)).all()
    xr.testing.assert_allclose(p.isel(time=slice(1, None)), expected.isel(time=slice(1, None)))


def test_moving_geometry_with_repeated_time_labels_is_refused(stack):
    boxes = _moving(stack)[0]
    repeated = boxes.assign_coords(time=[0, 10, 20, 20, 40])
    with pytest.raises(
        ValueError,
        match=r"boxes has 5 time labels, all in image, 1 repeated \(e\.g\. 20\); image has 5, "
        r"1 not in boxes \(e\.g\. 30\)",
    ):
        extract_patches(stack, boxes=repeated)


def test_channel_first_and_integer_images(stack):
    as_uint8 = (stack * 255).round().astype(np.uint8)
    p = extract_patches(as_uint8.transpose("channel", "time", "x", "y"), boxes=BOXES)
    assert p.dtype == np.float64
    assert p.dims == ("time", "patch", "channel")
    expected = _by_loop(as_uint8.values.astype(float), BOXES, np.median)
    np.testing.assert_allclose(p.values, expected)
    assert extract_patches(stack.astype(np.float32), boxes=BOXES).dtype == np.float32


def test_input_not_mutated(stack):
    before = stack.copy(deep=True)
    extract_patches(stack, boxes=BOXES)
    xr.testing.assert_identical(stack, before)


def test_grid_boxes_cover_a_chart():
    names = xccm.chart("colorchecker24").patch.values
    b = grid_boxes((100.4, 50), (10, 12), (30, 31), names=names)
    assert b.dims == ("patch", "bound") and b.sizes["patch"] == 24
    assert b.patch.values.tolist() == names.tolist()
    last = b.isel(patch=-1).values.tolist()
    assert last == [100 + 3 * 30, 100 + 3 * 30 + 10, 50 + 5 * 31, 50 + 5 * 31 + 12]


def test_accessor_forwards(stack):
    xr.testing.assert_identical(
        stack.ccm.extract_patches(boxes=BOXES), extract_patches(stack, boxes=BOXES)
    )


# ---------------------------------------------------------------------------------------------
# the per-frame workflow on top: fit per frame, reject bad frames, fill and smooth


def test_per_frame_fit_rejects_occluded_frames_and_fills_them():
    true_matrix = np.array([[1.3, -0.2, 0.0], [-0.25, 1.2, -0.1], [0.0, -0.15, 1.25]])
    ref = xccm.chart("colorchecker24")
    measured = ref.values @ np.linalg.inv(true_matrix)
    times = np.arange(6)
    gains = 1 + 0.05 * times  # exposure drifts over time
    patches = xr.DataArray(
        measured[None] * gains[:, None, None],
        dims=("time", "patch", "channel"),
        coords={"time": times, "patch": ref.patch, "channel": ref.channel},
    ).copy()
    patches[2, :10] = np.nan  # a person in front of the chart
    with pytest.warns(xccm.InsufficientSamplesWarning, match="1 of 6"):
        m = patches.ccm.fit(ref, min_samples=18)
    assert np.isnan(m.sel(time=2)).all() and np.isfinite(m.drop_sel(time=2)).all()
    np.testing.assert_allclose(m.sel(time=4), true_matrix / gains[4], atol=1e-10)

    filled = m.interpolate_na("time")  # the documented one-liner
    np.testing.assert_allclose(filled.sel(time=2), (m.sel(time=1) + m.sel(time=3)) / 2)
    assert np.isfinite(m.ffill("time")).all()
    smooth = filled.rolling(time=3, center=True, min_periods=1).mean()
    assert smooth.dims == m.dims and np.isfinite(smooth).all()


# ---------------------------------------------------------------------------------------------
# bad geometry


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"boxes": {"a": (10, 15, 0, 4)}}, ValueError, r"patch 'a' spans y = 10 to 15, outside"),
        ({"boxes": {"a": (0, 4, -1, 4)}}, ValueError, r"patch 'a' spans x = -1 to 4, outside"),
        ({"boxes": {"a": (0, 4, 0, 4), "b": (3, 3, 0, 4)}}, ValueError, r"'b' is empty: y1=3"),
        ({"boxes": np.zeros((2, 3), int)}, ValueError, r"'bound' must have 4 entries"),
        ({"boxes": np.full((1, 4), 1.5)}, TypeError, r"integer pixel indices"),
        ({"boxes": [[0, 4, 0, 4], [0, 4]]}, ValueError, r"4 numbers .* patch 1 has \[0, 4\]"),
        ({"boxes": {"a": (0, 4, 0, 4), "b": 3}}, ValueError, r"patch 'b' has 3"),
        ({"boxes": [0, 4, 0, 4]}, ValueError, r"one box; give a box per patch, e.g. \[\[0, 4"),
        ({"boxes": []}, ValueError, r"boxes holds no patch"),
        ({"boxes": [0, [0, 4, 0, 4]]}, ValueError, r"patch 0 has 0"),
        ({"boxes": np.zeros((2, 3, 4), int)}, ValueError, r"pass a DataArray with dims \('time'"),
        ({"boxes": {}}, ValueError, r"boxes holds no patch"),
        ({}, ValueError, r"exactly one of boxes= or labels="),
        ({"boxes": BOXES, "labels": np.ones((14, 16))}, ValueError, r"exactly one"),
        ({"boxes": BOXES, "reduce": "mode"}, ValueError, r"unknown reduce 'mode'"),
        ({"boxes": BOXES, "spatial_dims": ("row", "col")}, ValueError, r"no spatial dim 'row'"),
    ],
)
def test_bad_boxes(stack, kwargs, error, match):
    with pytest.raises(error, match=match):
        extract_patches(stack, **kwargs)


def test_bad_bound_coords(stack):
    boxes = xr.DataArray([[0, 1, 0, 1]], dims=("patch", "bound"), coords={"bound": list("abcd")})
    with pytest.raises(ValueError, match=r"coords 'bound' must be \['y0', 'y1', 'x0', 'x1'\]"):
        extract_patches(stack, boxes=boxes)


def test_bad_labels(stack):
    lab = _labels_for(BOXES, (14, 16))
    missing = np.where(lab == 2, 0, lab)
    with pytest.raises(ValueError, match=r"no pixel for patch 2 \('b'\); 1 of 3 patches"):
        extract_patches(stack, labels=xr.DataArray(missing, dims=("y", "x")), names=list(BOXES))
    with pytest.raises(ValueError, match=r"label 3 but names has only 2 patches"):
        extract_patches(stack, labels=xr.DataArray(lab, dims=("y", "x")), names=["a", "b"])
    with pytest.raises(ValueError, match=r"every pixel is background"):
        extract_patches(stack, labels=xr.DataArray(lab * 0, dims=("y", "x")))
    with pytest.raises(TypeError, match=r"labels must be an integer image; got dtype float64"):
        extract_patches(stack, labels=xr.DataArray(lab * 1.0, dims=("y", "x")))
    with pytest.raises(ValueError, match=r"Dask-backed labels need names="):
        extract_patches(stack, labels=xr.DataArray(lab, dims=("y", "x")).chunk())
    with pytest.raises(ValueError, match=r"labels must have the image's spatial dims"):
        extract_patches(stack, labels=xr.DataArray(lab, dims=("row", "x")))


@pytest.mark.parametrize("reduce", ["median", "mean"])
def test_infinite_pixels_are_left_out(stack, reduce):
    flat = stack.copy()
    flat[:, 1:5, 2:6] = 0.25
    flat[:, 2, 3] = np.inf
    flat[:, 3, 3] = -np.inf
    np.testing.assert_allclose(extract_patches(flat, boxes=BOXES, reduce=reduce)[:, 0], 0.25)


def test_names_label_unnamed_boxes_and_never_silently_rename():
    img = xr.DataArray(np.zeros((6, 6, 3)), dims=("y", "x", "channel"))
    img[3:, 3:] = [0.2, 0.4, 0.6]
    plain = np.array([[0, 3, 0, 3], [3, 6, 3, 6]])
    out = xccm.extract_patches(img, boxes=plain, names=["black", "grey"])
    assert out.patch.values.tolist() == ["black", "grey"]
    np.testing.assert_allclose(out.sel(patch="grey"), [0.2, 0.4, 0.6])
    named = {"a": (0, 3, 0, 3), "b": (3, 6, 3, 6)}
    assert xccm.extract_patches(img, boxes=named, names=["a", "b"]).patch.values.tolist() == [
        "a",
        "b",
    ]
    with pytest.raises(ValueError, match=r"already name their patches.*'a', 'b'.*'x', 'y'"):
        xccm.extract_patches(img, boxes=named, names=["x", "y"])
    with pytest.raises(ValueError, match="names has 3 entries but boxes has 2 patches"):
        xccm.extract_patches(img, boxes=plain, names=["a", "b", "c"])
    with pytest.raises(TypeError, match="names must be a sequence"):
        xccm.extract_patches(img, boxes=plain, names="ab")


# found by tests/test_properties.py (the error contract)


def test_grid_boxes_refuses_the_bound_dim_as_patch_dim():
    # was a DataArray with the dim 'bound' twice
    with pytest.raises(ValueError, match=r"patch_dim must not be 'bound'"):
        grid_boxes((1, 2), 3, 5, patch_dim="bound")


@pytest.mark.parametrize("patch_dim", ["channel", "time", "y"])
def test_a_patch_dim_the_image_has_is_refused(patch_dim):
    image = xr.DataArray(np.ones((2, 4, 4, 3)), dims=("time", "y", "x", "channel"))
    labels = xr.DataArray(np.ones((4, 4), int), dims=("y", "x"))
    # was a result with the dim twice (and a warning)
    with pytest.raises(ValueError, match=rf"patch_dim '{patch_dim}' is already a dim of image"):
        extract_patches(image, labels=labels, patch_dim=patch_dim)
    boxes = xr.DataArray([[0, 2, 0, 2]], dims=("time", "bound"))  # its patch dim is time
    with pytest.raises(ValueError, match=r"the patch dim of boxes 'time' is already a dim"):
        extract_patches(image, boxes=boxes)
