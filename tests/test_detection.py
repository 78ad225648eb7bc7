"""Chart geometry from four corners (grid_boxes), NaN/Dask boxes, and detect_chart."""

from __future__ import annotations

import warnings

import _scenes
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import raise_if_dask_computes
from xccm import InsufficientSamplesWarning, detect_chart, extract_patches, grid_boxes
from xccm.patches import homography

NAMES = xccm.chart().patch.values


def _labels_in(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The fraction of each box's pixels that carry its own patch's label (1..n).

    Scene labels mark each patch's inner part (0.15 pitch in from its edges); a detected
    box reaches 0.25 pitch from the patch's centre, so a little of it may lie outside.
    """
    return np.array(
        [
            (labels[int(y0) : int(y1), int(x0) : int(x1)] == k + 1).mean()
            for k, (y0, y1, x0, x1) in enumerate(boxes)
        ]
    )


# ---------------------------------------------------------------------------------------------
# homography and grid_boxes(corners=...)


def test_homography_is_exact_for_four_points_and_fits_many():
    h = np.array([[1.3, 0.2, 40.0], [-0.1, 0.9, 25.0], [1e-3, -2e-3, 1.0]])
    src = np.array([[0, 0], [6, 0], [6, 4], [0, 4]], dtype=float)
    dst_h = np.c_[src, np.ones(4)] @ h.T
    dst = dst_h[:, :2] / dst_h[:, 2:]
    np.testing.assert_allclose(homography(src, dst), h, rtol=1e-9, atol=1e-12)
    grid = np.stack(np.meshgrid(np.arange(7.0), np.arange(5.0)), -1).reshape(-1, 2)
    many = np.c_[grid, np.ones(len(grid))] @ h.T
    np.testing.assert_allclose(homography(grid, many[:, :2] / many[:, 2:]), h, rtol=1e-9)


def test_axis_aligned_corners_give_the_closed_form_boxes():
    # a 4 x 6 grid of 10-pixel cells from (y, x) = (20, 30): patch (i, j) spans
    # y in [20 + 10 i, 30 + 10 i], sampled middle half [22.5 + 10 i, 27.5 + 10 i]
    corners = [(20, 30), (20, 90), (60, 90), (60, 30)]
    b = grid_boxes(corners=corners, names=NAMES)
    i, j = np.divmod(np.arange(24), 6)
    expected = np.stack([23 + 10 * i, 28 + 10 * i, 33 + 10 * j, 38 + 10 * j], axis=-1)
    np.testing.assert_array_equal(b.values, expected)
    assert b.dims == ("patch", "bound") and list(b.patch.values) == list(NAMES)
    assert b.dtype == np.int64
    # with a gap of 0.2 pitch the grid is 5.8 pitches wide and patch j spans
    # x in [30 + j p, 30 + (j + 0.8) p]; margin 0 samples all of it (pixel centres inside)
    g = grid_boxes(corners=corners, gap=0.2, margin=0.0)
    pitch = 60 / 5.8
    left, right = 30 + j * pitch, 30 + (j + 0.8) * pitch
    np.testing.assert_array_equal(g.values[:, 2], np.ceil(np.round(left, 9)))
    np.testing.assert_array_equal(g.values[:, 3], np.floor(np.round(right, 9)) + 1)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_corners_of_a_turned_chart_name_its_patches(turns):
    # a label image of a 4 x 6 chart (12-pixel cells), turned by np.rot90; the corners of
    # the chart as printed are turned with it
    labels = np.kron(np.arange(1, 25).reshape(4, 6), np.ones((12, 12), dtype=int))
    labels = np.pad(labels, 5)
    h, w = labels.shape
    # the outer edges of the chart's pixels (rows 5 to 52, columns 5 to 76; pixel centres
    # on integers)
    corners = np.array([(4.5, 4.5), (4.5, 76.5), (52.5, 76.5), (52.5, 4.5)])
    for _ in range(turns):  # np.rot90 (counter-clockwise): (y, x) -> (w - 1 - x, y)
        labels = np.rot90(labels)
        corners = np.stack([w - 1 - corners[:, 1], corners[:, 0]], axis=-1)
        h, w = w, h
    b = grid_boxes(corners=corners)
    assert (_labels_in(b.values, labels) == 1).all()
    assert (b.values[:, 1] - b.values[:, 0] >= 5).all()  # the middle half of 12 pixels


def test_corners_of_a_chart_in_perspective_keep_boxes_inside_their_patches():
    for seed in range(3):
        scene = _scenes.render(seed, perspective=0.05, tilt=20)
        b = grid_boxes(corners=scene.corners, gap=_scenes.GAP, margin=0.2)
        # scene.labels marks each patch less 0.15 pitch on every side
        assert (_labels_in(b.values, scene.labels) == 1).all(), seed


def test_corner_errors_say_what_is_wrong():
    square = [(0, 0), (0, 60), (40, 60), (40, 0)]
    with pytest.raises(ValueError, match="corners= or as top_left, patch_size and pitch"):
        grid_boxes((0, 0), 4, 10, corners=square)
    with pytest.raises(ValueError, match="patch_size and pitch not given"):
        grid_boxes((0, 0))
    with pytest.raises(ValueError, match=r"four \(y, x\) pixel positions.*shape \(3, 2\)"):
        grid_boxes(corners=square[:3])
    with pytest.raises(ValueError, match="convex quadrilateral in order around it"):
        grid_boxes(corners=[square[0], square[2], square[1], square[3]])
    with pytest.raises(ValueError, match="corners must be finite"):
        grid_boxes(corners=[(np.nan, 0), *square[1:]])
    with pytest.raises(ValueError, match=r"margin must be .* \[0, 0.5\); got 0.5"):
        grid_boxes(corners=square, margin=0.5)
    with pytest.raises(ValueError, match=r"gap must be .* got -0.1"):
        grid_boxes(corners=square, gap=-0.1)


# ---------------------------------------------------------------------------------------------
# NaN and Dask-backed boxes in extract_patches


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    data = rng.uniform(0.05, 0.95, (3, 40, 60, 3))
    return xr.DataArray(data, dims=("time", "y", "x", "channel"), coords={"time": [0, 1, 2]})


def _boxes_over_time(frames):
    b = grid_boxes(corners=[(0, 0), (0, 60), (40, 60), (40, 0)], names=NAMES)
    return xr.concat([b.astype(float)] * frames.sizes["time"], dim="time").assign_coords(
        time=frames.time
    )


def test_nan_boxes_give_nan_patches_and_a_nan_matrix_with_the_warning(frames):
    boxes = _boxes_over_time(frames)
    boxes[1] = np.nan  # no chart in frame 1
    p = extract_patches(frames, boxes=boxes)
    assert np.isnan(p.isel(time=1)).all() and np.isfinite(p.drop_sel(time=1)).all()
    expected = extract_patches(frames.isel(time=[0, 2]), boxes=boxes.isel(time=0, drop=True))
    xr.testing.assert_allclose(p.drop_sel(time=1), expected)
    with pytest.warns(InsufficientSamplesWarning):
        m = xccm.fit(p, xccm.chart())
    assert np.isnan(m.sel(time=1)).all() and np.isfinite(m.drop_sel(time=1)).all()
    one = boxes.isel(time=0, drop=True).copy()
    one[3] = np.nan  # one patch without a box: NaN, the others read
    q = extract_patches(frames, boxes=one)
    assert np.isnan(q.isel(patch=3)).all() and np.isfinite(q.drop_isel(patch=3)).all()


def test_a_box_with_some_nan_bounds_is_refused(frames):
    boxes = _boxes_over_time(frames).isel(time=0, drop=True).copy()
    boxes[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"boxes patch 'blue sky' has NaN in some of its bounds"):
        extract_patches(frames, boxes=boxes)


def test_dask_backed_boxes_stay_lazy_and_read_like_in_memory_ones(frames):
    boxes = _boxes_over_time(frames)
    boxes[2, 5] = np.nan
    image = frames.chunk(time=1)
    lazy = boxes.chunk(time=1)
    with raise_if_dask_computes():
        p = extract_patches(image, boxes=lazy)
    assert isinstance(p.data, da.Array)
    xr.testing.assert_allclose(p.compute(), extract_patches(frames, boxes=boxes))
    outside = boxes.copy()
    outside[1, 0] = [30, 50, 0, 10]  # beyond the 40 rows of the frame
    with raise_if_dask_computes():
        q = extract_patches(image, boxes=outside.chunk(time=1))
    with pytest.raises(ValueError, match=r"boxes patch 0 is \(30, 50, 0, 10\).*outside the frame"):
        q.compute()


# ---------------------------------------------------------------------------------------------
# detect_chart


def _mcc_available() -> bool:
    try:
        import cv2
    except ModuleNotFoundError:
        return False
    return hasattr(cv2, "mcc")


needs_mcc = pytest.mark.skipif(not _mcc_available(), reason="needs cv2.mcc (the detect extra)")


@pytest.fixture(scope="module")
def scenes():
    return [_scenes.render(10 + k, rotation=k) for k in range(4)]


def _image(scene: _scenes.Scene) -> xr.DataArray:
    return xr.DataArray(scene.image, dims=("y", "x", "channel"))


@needs_mcc
def test_finds_the_chart_in_every_orientation(scenes):
    for scene in scenes:
        b = detect_chart(_image(scene))
        assert b.dims == ("patch", "bound") and list(b.patch.values) == list(NAMES)
        assert float(b.score) > 0.95
        # every box lies on its own patch: the orientation is right
        assert (_labels_in(b.values, scene.labels) > 0.75).all(), scene.rotation
        assert b.attrs["chart"] == "colorchecker24"


@needs_mcc
def test_a_stack_is_searched_lazily_frame_by_frame_and_a_frame_without_chart_is_nan(scenes):
    blank = _scenes.render(99, chart=False).image
    stack = np.stack([scenes[0].image, blank, scenes[2].image])
    image = xr.DataArray(
        stack, dims=("time", "y", "x", "channel"), coords={"time": [10, 20, 30]}
    ).chunk(time=1)
    with raise_if_dask_computes():
        boxes = detect_chart(image)
        patches = extract_patches(image, boxes=boxes)
    assert isinstance(boxes.data, da.Array) and isinstance(boxes.score.data, da.Array)
    assert boxes.data.numblocks[0] == 3  # one task per frame
    boxes = boxes.compute()
    assert np.isnan(boxes.sel(time=20)).all()
    assert np.isfinite(boxes.sel(time=[10, 30])).all()
    assert (boxes.score.sel(time=[10, 30]) > 0.95).all()
    assert not boxes.score.sel(time=20) >= 0.6  # NaN (nothing found) or too low
    lin = xccm.linearize(patches, "srgb", scale=1 / 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsufficientSamplesWarning)
        with pytest.raises(InsufficientSamplesWarning):
            xccm.fit(lin, xccm.chart()).compute()
    with pytest.warns(InsufficientSamplesWarning):
        m = xccm.fit(lin, xccm.chart(), model="affine").compute()
    assert np.isnan(m.sel(time=20)).all() and np.isfinite(m.sel(time=[10, 30])).all()


@needs_mcc
def test_a_mirrored_chart_is_named_as_printed_only_when_allowed(scenes):
    scene = scenes[1]
    mirrored = _image(scene).isel(x=slice(None, None, -1))
    b = detect_chart(mirrored)
    assert float(b.score) > 0.95
    assert (_labels_in(b.values, scene.labels[:, ::-1]) > 0.75).all()
    none = detect_chart(mirrored, mirrored=False)
    assert np.isnan(none.values).all() and float(none.score) < 0.6


@needs_mcc
def test_linear_float_frames_are_found(scenes):
    scene = scenes[3]
    lin = xccm.linearize(_image(scene), "srgb", scale=1 / 255) * 0.3  # dim, linear, float
    b = detect_chart(lin, linear=True)
    assert isinstance(b.data, np.ndarray) and float(b.score) > 0.95
    assert (_labels_in(b.values, scene.labels) > 0.75).all()


@needs_mcc
def test_a_large_frame_is_shrunk_for_the_detector_but_sampled_in_full(scenes):
    scene = scenes[2]
    big = np.repeat(np.repeat(scene.image, 4, axis=0), 4, axis=1)  # 1440 x 1920
    labels = np.repeat(np.repeat(scene.labels, 4, axis=0), 4, axis=1)
    b = detect_chart(xr.DataArray(big, dims=("y", "x", "channel")))
    assert float(b.score) > 0.95
    assert (_labels_in(b.values, labels) > 0.75).all()
    assert (b.values[:, 1] - b.values[:, 0] > 20).all()  # boxes in the full-size frame


def test_detect_chart_errors_name_the_argument():
    img = xr.DataArray(np.zeros((20, 30, 4)), dims=("y", "x", "channel"))
    with pytest.raises(ValueError, match=r"4 channels on dim 'channel'; .* needs 3"):
        detect_chart(img)
    with pytest.raises(ValueError, match=r"finds the charts \['colorchecker24'\]; got chart="):
        detect_chart(img.isel(channel=slice(3)), chart="vinyl18")
    with pytest.raises(ValueError, match="no spatial dim 'y'"):
        detect_chart(img.isel(channel=slice(3)).rename(y="row"))
    with pytest.raises(ValueError, match=r"dim 'y' is split into 2 chunks"):
        detect_chart(img.isel(channel=slice(3)).chunk(y=10))
    with pytest.raises(ValueError, match="min_score must be in"):
        detect_chart(img.isel(channel=slice(3)), min_score=0)
