"""Bad input gets a clear error naming the argument, the dim and what was expected."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import lstsq, raise_if_dask_computes


def test_missing_dim_in_measured(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"measured has no dim 'band'.*dims are"):
        measured.ccm.fit(reference, dim="band")


def test_missing_dim_in_image(image):
    with pytest.raises(ValueError, match=r"image has no dim 'rgb'"):
        image.ccm.apply(np.eye(3), dim="rgb")


def test_wrong_channel_count_for_matrix(image):
    with pytest.raises(ValueError, match=r"5 rows along 'channel_in' but image has 3 channels"):
        image.ccm.apply(np.ones((5, 3)))


def test_matrix_of_wrong_ndim(image):
    with pytest.raises(ValueError, match=r"plain-array matrix must be 2-D.*shape \(2, 3, 3\)"):
        image.ccm.apply(np.ones((2, 3, 3)))


def test_matrix_with_wrong_dims(image):
    m = xr.DataArray(np.eye(3), dims=("a", "b"))
    with pytest.raises(ValueError, match=r"matrix must have dims \('channel_in', 'channel'\)"):
        image.ccm.apply(m)


def test_plain_array_matrix_batch_axes_must_match_image(image):
    with pytest.raises(ValueError, match=r"batch axes \(2,\) that do not match"):
        xccm.apply(image.values, np.ones((2, 3, 3)))


def test_channel_dim_split_across_chunks(image):
    with pytest.raises(ValueError, match=r"split into 2 chunks.*image.chunk\(\{'channel': -1\}\)"):
        image.chunk({"channel": 2}).ccm.apply(np.eye(3))


def test_samples_are_paired_by_label(patches):
    measured, reference = patches
    shuffled = reference.isel(patch=np.roll(np.arange(24), 1))  # same labels, other order
    w = xr.DataArray(np.linspace(1, 2, 24), dims="patch", coords={"patch": measured.patch})
    expected = measured.ccm.fit(reference, weights=w)
    xr.testing.assert_allclose(measured.ccm.fit(shuffled, weights=w[::-1]), expected)
    renamed = reference.assign_coords(patch=[f"p{i}" for i in range(24)])
    with pytest.raises(
        ValueError,
        match=r"reference has other 'patch' labels than measured: 10 label\(s\) of measured",
    ):
        measured.ccm.fit(renamed)
    xr.testing.assert_allclose(
        measured.ccm.fit(renamed.assign_coords(patch=measured.patch)), measured.ccm.fit(reference)
    )


def test_mismatched_sample_sizes(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"sizes of dim 'patch' differ"):
        measured.ccm.fit(reference.isel(patch=slice(0, 20)).drop_vars("patch"))


def test_per_frame_matrix_with_other_frames(image):
    m = xr.DataArray(
        np.broadcast_to(np.eye(3), (4, 3, 3)),
        dims=("time", "channel_in", "channel"),
        coords={"time": np.arange(4) + 10},
    )
    with pytest.raises(
        ValueError, match=r"different 'time' coords \(4 labels: 10, 11, 12, 13 vs 4: 0, 1, 2, 3\)"
    ):
        image.ccm.apply(m)


def test_matrix_rows_labelled_with_other_channels(image):
    m = xr.DataArray(np.eye(3), dims=("channel_in", "channel"), coords={"channel_in": list("XYZ")})
    with pytest.raises(ValueError, match=r"labelled \['X', 'Y', 'Z'\] but image channels"):
        image.ccm.apply(m)


def test_negative_weights(patches):
    measured, reference = patches
    w = np.ones(24)
    w[4] = -0.5
    with pytest.raises(ValueError, match=r"weights must be non-negative \(NaN or 0 leaves"):
        measured.ccm.fit(reference, weights=w)


@pytest.mark.parametrize("loss", [None, "cie76"])
def test_nan_weights_leave_samples_out_as_zero_does(patches, loss):
    measured, reference = patches
    w = np.linspace(0.5, 2, 24)
    w[[4, 9]] = np.nan  # e.g. a cloud or an occluder in a weight map
    kw = {} if loss is None else {"loss": loss, "reference_space": "rgb", "saturation": None}
    reference = reference.assign_coords(channel=["R", "G", "B"])  # linear RGB, for the loss
    measured = measured.assign_coords(channel=["R", "G", "B"])
    got = measured.ccm.fit(reference, weights=w, **kw)
    xr.testing.assert_allclose(got, measured.ccm.fit(reference, weights=np.nan_to_num(w), **kw))


def test_negative_weights_lazily_raise_on_compute(patches):
    measured, reference = patches
    w = xr.DataArray(-np.ones(24), dims="patch").chunk()
    m = measured.ccm.fit(reference, weights=w)
    with pytest.raises(ValueError, match=r"weights must be non-negative"):
        m.compute()


def test_weights_with_the_channel_dim(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"weights must not have the channel dim 'channel'"):
        measured.ccm.fit(reference, weights=xr.ones_like(reference))


def test_weights_missing_a_sample_dim(patches):
    measured, reference = patches
    w = xr.DataArray(np.ones(4), dims="time")
    with pytest.raises(ValueError, match=r"weights must span the sample dims \('patch',\)"):
        measured.ccm.fit(reference, weights=w)


def test_plain_weights_of_the_wrong_shape(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"shape of the sample dims.*\(24,\); got shape \(23,\)"):
        measured.ccm.fit(reference, weights=np.ones(23))


def test_unknown_model(patches):
    with pytest.raises(ValueError, match=r"unknown model 'quadratic'; expected one of"):
        patches[0].ccm.fit(patches[1], model="quadratic")


def test_unknown_init(patches):
    with pytest.raises(ValueError, match=r"unknown init 'random'"):
        patches[0].ccm.fit(patches[1], init="random")


@pytest.mark.parametrize("dtype", [bool, complex, "U1"])
def test_non_numeric_dtype(image, dtype):
    with pytest.raises(TypeError, match=rf"image must hold real numbers.*{np.dtype(dtype)}"):
        image.astype(dtype).ccm.apply(np.eye(3))


def test_non_numeric_matrix(image):
    with pytest.raises(TypeError, match=r"matrix must hold real numbers"):
        image.ccm.apply(np.eye(3).astype(complex))


def test_empty_samples(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"measured is empty"):
        measured.isel(patch=[]).ccm.fit(reference.isel(patch=[]))


def test_no_channels(image):
    with pytest.raises(ValueError, match=r"image has no channels"):
        image.isel(channel=[]).ccm.apply(np.eye(3))


def test_no_valid_sample(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"no valid sample"):
        (measured * np.nan).ccm.fit(reference)


def test_too_few_samples_everywhere(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"at least 4 valid samples"):
        measured.isel(patch=slice(0, 3)).ccm.fit(reference.isel(patch=slice(0, 3)), model="affine")


def test_white_balance_needs_square(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"white_balance.*3 in and 2 out"):
        measured.ccm.fit(reference.isel(channel=[0, 1]), init="white_balance")


def test_singular_matrix_has_no_inverse(image):
    singular = np.array([[1.0, 2, 3], [2, 4, 6], [0, 0, 1]])
    with pytest.raises(np.linalg.LinAlgError, match=r"singular"):
        image.ccm.inverse(singular)


def test_non_square_matrix_has_no_inverse(patches):
    measured, reference = patches
    m = measured.ccm.fit(reference.isel(channel=[0, 1]))
    with pytest.raises(
        np.linalg.LinAlgError,
        match=r"3 'channel_in' rows and 2 'channel' columns and model 'linear'",
    ):
        xccm.invert(m)


def test_matrix_model_contradicts_image_channels(patches, image):
    measured, reference = patches
    m = measured.isel(channel=[0, 1]).ccm.fit(reference, model="affine")  # 2 channels in
    with pytest.raises(ValueError, match=r"fitted on 2 channels, but image has 3 channels"):
        image.ccm.apply(m)


def test_sample_dims_must_not_include_channel(patches):
    with pytest.raises(ValueError, match=r"must not include the channel dim"):
        patches[0].ccm.fit(patches[1], sample_dims=("patch", "channel"))


def test_sample_dim_missing_from_measured(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"measured has no sample dim 'patch'"):
        measured.isel(patch=0).ccm.fit(reference)


def test_reference_must_be_labelled_like_measured(patches):
    with pytest.raises(TypeError, match=r"reference must be a DataArray when measured is one"):
        patches[0].ccm.fit(patches[1].values)


def test_plain_arrays_need_a_sample_axis():
    with pytest.raises(ValueError, match=r"shape \(..., n_samples, n_channels\)"):
        xccm.fit(np.ones(3), np.ones(3))


def test_inputs_are_never_mutated(patches, image, rng):
    measured, reference = patches
    measured = measured.copy()
    measured[0, 0, 0] = np.nan
    w = xr.DataArray(rng.random(24), dims="patch")
    m_arr = np.array([[1.0, 0.1, 0], [0, 1, 0.1], [0.1, 0, 1], [0.01, 0.02, 0.03]])
    before = [x.copy(deep=True) for x in (measured, reference, w, image)]
    m_before = m_arr.copy()
    m = measured.ccm.fit(reference, weights=w, model="affine")
    xccm.inverse(image.ccm.apply(m.isel(time=0)), m.isel(time=0))
    xccm.apply(image.values, m_arr)
    xccm.inverse(image.values, m_arr)
    for old, new in zip(before, (measured, reference, w, image), strict=True):
        xr.testing.assert_identical(old, new)
    np.testing.assert_array_equal(m_arr, m_before)


@pytest.mark.parametrize("chunked", [False, True])
def test_matrix_batch_dim_the_image_lacks(image, chunked):
    m = xr.DataArray(np.stack([np.eye(3), 2 * np.eye(3)]), dims=("camera", "channel_in", "channel"))
    img = image.chunk() if chunked else image
    with pytest.raises(ValueError, match=r"batch dim 'camera' \(size 2\) but image has dims"):
        img.ccm.apply(m)  # was xarray's internal error, or a lazy result of the wrong shape
    frame = image.isel(time=1)
    per_frame = xr.DataArray(
        np.broadcast_to(np.eye(3), (image.sizes["time"], 3, 3)),
        dims=("time", "channel_in", "channel"),
        coords={"time": image.time},
    )
    with pytest.raises(ValueError, match=r"scalar coord time=1: .* matrix.sel\(time=image.time\)"):
        frame.ccm.apply(per_frame)
    xr.testing.assert_allclose(
        frame.ccm.apply(per_frame.sel(time=frame.time)), image.ccm.apply(per_frame).isel(time=1)
    )


@pytest.mark.parametrize("scale", [xr.DataArray([1.0, 2.0, 3.0], dims="time"), [0.5], True, "1"])
def test_scale_must_be_one_number(image, scale):
    with pytest.raises(TypeError, match=r"scale must be one real number .*\(image \* gain\)"):
        image.ccm.apply(np.eye(3), scale=scale)


def test_accessor_given_as_matrix_says_use_the_variable(image):
    ds = xr.Dataset({"image": image, "ccm": (("channel_in", "channel"), 2 * np.eye(3))})
    xr.testing.assert_allclose(ds.ccm.apply(ds["ccm"])["image"], 2 * image)
    with pytest.raises(TypeError, match=r"\.ccm accessor, not a matrix.*ds\['ccm'\]"):
        ds.ccm.apply(ds.ccm)
    with pytest.raises(TypeError, match=r"\.ccm accessor"):
        xccm.invert(ds.ccm)


def test_dataset_errors_name_the_variable(image):
    ds = xr.Dataset({"image": image, "names": ("channel", ["red", "green", "blue"])})
    with pytest.raises(TypeError, match=r"data variable 'names': image must hold real numbers"):
        ds.ccm.apply(np.eye(3))


def test_weights_lacking_a_labelled_sample_list_it(patches):
    measured, reference = patches
    w = xr.DataArray(np.ones(24), dims="patch", coords={"patch": measured.patch})
    with pytest.raises(ValueError, match=r"weights has other 'patch' labels than measured: 1 "):
        measured.ccm.fit(reference, weights=w[1:])


def test_reference_with_another_channel_dim_name_says_rename(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"reference.rename\(\{'rgb': 'channel'\}\)"):
        measured.ccm.fit(reference.rename(channel="rgb"))


def test_collinear_channels_say_so(patches):
    measured, reference = patches
    dependent = measured.copy(data=measured.values.copy())
    dependent[..., 2] = 2 * dependent[..., 0]  # one band a multiple of another
    with pytest.raises(ValueError, match=r"found 24 valid samples at most: enough samples, so"):
        dependent.ccm.fit(reference)


def test_insufficient_samples_warning_points_at_the_callers_line(patches):
    measured, reference = patches
    measured = measured.copy(data=measured.values.copy())
    measured[1, 3:] = np.nan  # frame 1 keeps 3 patches: too few for an affine fit
    with pytest.warns(xccm.InsufficientSamplesWarning) as caught:
        measured.ccm.fit(reference, model="affine")
    assert caught[0].filename == __file__


# ---------------------------------------------------------------------------------------------
# from a review of the label pairing


def test_labelled_weights_pair_with_unlabelled_measured_through_the_reference():
    # measured has no patch labels: it pairs with the reference by position, and labelled
    # weights pair with the reference by label; the saturation mask must land on the clipped
    # patch whatever the weights' order.
    ref = xccm.chart()
    values = ref.values / 2
    values[0] = [1.0, 0.0, 0.0]  # 'dark skin' clipped: must be left out
    measured = xr.DataArray(values, dims=("patch", "channel"), coords={"channel": list("RGB")})
    w = xr.DataArray(np.ones(24), dims="patch", coords={"patch": ref.patch.values})
    for weights in (w, w[::-1]):
        m = xccm.fit(measured, ref, weights=weights, loss="linear_rgb")
        np.testing.assert_allclose(m.values, 2 * np.eye(3), atol=1e-12)


def test_stacked_pixel_dims_in_another_order_are_reordered(patches):
    # Sample labels in a MultiIndex, e.g. pixels stacked from (y, x).
    measured, reference = patches

    def stacked(a):
        a = a.rename(patch="p").assign_coords(
            y=("p", np.arange(24) // 6), x=("p", np.arange(24) % 6)
        )
        return a.set_index(p=["y", "x"])

    perm = np.random.default_rng(3).permutation(24)
    expected = stacked(measured).ccm.fit(stacked(reference))
    xr.testing.assert_allclose(stacked(measured).ccm.fit(stacked(reference).isel(p=perm)), expected)
    xr.testing.assert_allclose(expected, measured.ccm.fit(reference))


@pytest.mark.parametrize("lazy", [False, True])
def test_scale_may_be_a_0d_array(image, lazy):
    scale = (1 / image.max()).chunk() if lazy else 1 / image.max()
    img = image.chunk() if lazy else image
    with raise_if_dask_computes():
        out = img.ccm.apply(np.eye(3), scale=scale)
    xr.testing.assert_allclose(out, image / image.max())


def test_invert_a_plain_dask_stack_lazily(rng):
    import dask.array as dsa

    m = rng.normal(size=(5, 4, 3)) + np.eye(4, 3)
    lazy = dsa.from_array(m, chunks=(2, 4, 3))
    with raise_if_dask_computes():
        inv = xccm.invert(lazy)
    np.testing.assert_allclose(inv.compute(), xccm.invert(m), rtol=1e-12)


def test_empty_batch_dim_against_labels_is_a_clear_error(image):
    m = xr.DataArray(
        np.broadcast_to(np.eye(3), (2, 3, 3)),
        dims=("time", "channel_in", "channel"),
        coords={"time": [1, 2]},
    )
    with pytest.raises(ValueError, match=r"different 'time' coords \(2 labels: 1, 2 vs 0: \)"):
        image.isel(time=slice(0, 0)).ccm.apply(m)


@pytest.mark.parametrize("lazy", [False, True])
def test_per_frame_matrix_in_another_frame_order_is_reordered(image, lazy):
    gains = xr.DataArray(1 + 0.1 * np.arange(4), dims="time", coords={"time": image.time})
    m = gains * xr.DataArray(np.eye(3), dims=("channel_in", "channel"))
    img = image.chunk(time=1) if lazy else image
    with raise_if_dask_computes():
        out = img.ccm.apply(m.isel(time=[2, 0, 3, 1]))
    xr.testing.assert_allclose(out, image * gains)
    # The suggested fix for other labels works: nearest frame's matrix.
    shifted = m.assign_coords(time=m.time + 0.2)
    with pytest.raises(ValueError, match=r"matrix.reindex\(time=image.time, method='nearest'\)"):
        img.ccm.apply(shifted)
    fixed = img.ccm.apply(shifted.reindex(time=image.time, method="nearest"))
    xr.testing.assert_allclose(fixed, image * gains)


def test_matrix_dim_that_is_a_coord_of_the_image_says_select(image):
    # frames along "frame", their times as a coord: the matrix's time dim is selected by it
    frames = image.rename(time="frame").assign_coords(time=("frame", [10, 20, 30, 40]))
    gains = xr.DataArray([1.0, 2.0, 3.0, 4.0], dims="time", coords={"time": [10, 20, 30, 40]})
    m = gains * xr.DataArray(np.eye(3), dims=("channel_in", "channel"))
    with pytest.raises(ValueError, match=r"'time' as a coord along \('frame',\).*matrix.sel"):
        frames.ccm.apply(m)
    out = frames.ccm.apply(m.sel(time=frames.time))
    np.testing.assert_allclose(out.values, image.values * np.arange(1, 5)[:, None, None, None])


def test_unlabelled_measured_takes_only_the_reference_labels(patches):
    # The reference's scalar and per-patch coords must not land on measured.
    measured, reference = patches
    names = [f"p{i}" for i in range(24)]
    ref = reference.assign_coords(patch=names, name=("patch", names))
    ref = ref.expand_dims(time=[5]).isel(time=0)  # a scalar coord time=5
    m = measured.drop_vars("patch", errors="ignore").assign_coords(chart="other")
    fitted = m.ccm.fit(ref)  # was "dimension 'time' already exists as a scalar variable"
    np.testing.assert_allclose(fitted.values, measured.ccm.fit(reference).values, rtol=1e-12)
    assert fitted.coords["chart"].item() == "other" and "name" not in fitted.coords
    rgb = {"channel": ["R", "G", "B"]}
    m, ref = m.assign_coords(rgb), ref.assign_coords(rgb)
    rep = xccm.report(m, ref, m.ccm.fit(ref), "linear_rgb")
    assert rep["delta_e"].coords["chart"].item() == "other"
    measured, reference = measured.assign_coords(rgb), reference.assign_coords(rgb)
    expected = xccm.report(measured, reference, measured.ccm.fit(reference), "linear_rgb")
    np.testing.assert_allclose(rep["max"].values, expected["max"].values, rtol=1e-12)


def test_repeated_frame_labels_are_not_reordered(image):
    m = xr.DataArray(
        np.broadcast_to(np.eye(3), (2, 3, 3)),
        dims=("time", "channel_in", "channel"),
        coords={"time": [10, 20]},
    )
    twice = image.isel(time=[0, 0]).assign_coords(time=[10, 10])
    with pytest.raises(ValueError, match=r"different 'time' coords"):
        twice.ccm.apply(m)


def test_invert_a_plain_dask_stack_checks_its_shape_now():
    import dask.array as dsa

    with pytest.raises(np.linalg.LinAlgError, match=r"got shape \(3, 5\)"):
        xccm.invert(dsa.ones((4, 3, 5), chunks=2))


# ---------------------------------------------------------------------------------------------
# issue 12 §2-3, issue 13 §5: wrong or silent results, internal errors


@pytest.mark.parametrize("where", ["one", "all"])
@pytest.mark.parametrize("lazy", [False, True])
def test_infinite_weights_are_an_error(patches, where, lazy):
    measured, reference = patches
    w = np.ones(24) if where == "one" else np.full(24, np.inf)
    w[0] = np.inf
    w = xr.DataArray(w, dims="patch", coords={"patch": measured.patch})
    if not lazy:
        with pytest.raises(ValueError, match=r"weights must be finite .*got an infinite"):
            measured.ccm.fit(reference, weights=w)
        return
    with raise_if_dask_computes():
        m = measured.chunk({"time": 1}).ccm.fit(reference, weights=w.chunk())
    with pytest.raises(ValueError, match=r"weights must be finite"):
        m.compute()


@pytest.mark.parametrize("lazy", [False, True])
def test_overflowing_sums_give_a_warned_nan_matrix(patches, lazy):
    measured, reference = patches
    big = measured.copy()
    big[1] = big[1] * 1e160  # one frame whose sums of squares overflow float64
    if lazy:
        with raise_if_dask_computes():
            m = big.chunk({"time": 1}).ccm.fit(reference)
    with pytest.warns(xccm.InsufficientSamplesWarning, match=r"1 of 4 .*overflow float64"):
        m = (m if lazy else big.ccm.fit(reference)).compute()
    assert np.isnan(m.sel(time=1)).all()
    expected = measured.ccm.fit(reference).drop_sel(time=1)
    xr.testing.assert_allclose(m.drop_sel(time=1), expected)


def test_overflowing_sums_everywhere_are_an_error(patches):
    measured, reference = patches
    with pytest.raises(ValueError, match=r"overflow float64 .*scale them"):
        (measured * 1e160).ccm.fit(reference)
    with pytest.raises(ValueError, match=r"overflow float64"):
        measured.ccm.fit(reference * 1e160, init="white_balance")


def test_sample_dim_the_reference_lacks_is_explained(patches):
    measured, reference = patches
    with pytest.raises(
        ValueError,
        match=r"reference has no sample dim 'time' .*\('patch',\) would be batch dims.*"
        r"sample_dims=\('time', 'patch'\)",
    ):
        measured.ccm.fit(reference, sample_dims="time")
    with pytest.raises(ValueError, match=r"reference has no sample dim 'time'.*one reference"):
        measured.ccm.fit(reference.isel(patch=0), sample_dims="time")
    # pooling frames against one chart is still a fit (the chart broadcast over time)
    pooled = measured.ccm.fit(reference, sample_dims=("time", "patch"))
    stacked = measured.stack(s=("time", "patch")).transpose("s", "channel")
    expected = lstsq(stacked.values, np.tile(reference.values, (4, 1)))
    np.testing.assert_allclose(pooled.values, expected, rtol=1e-9)


@pytest.mark.parametrize(
    ("sample_dims", "error", "match"),
    [
        (0, ValueError, r"measured has no sample dim 0"),
        (("patch", "patch"), ValueError, r"sample_dims names a dim more than once \('patch'\)"),
        ([["patch"]], TypeError, r"sample_dims must be a dim name or a sequence"),
        ((), ValueError, r"sample_dims is empty"),
    ],
)
def test_bad_sample_dims(patches, sample_dims, error, match):
    measured, reference = patches
    with pytest.raises(error, match=match):
        measured.ccm.fit(reference, sample_dims=sample_dims)
    if error is ValueError and sample_dims != 0:
        with pytest.raises(error, match=match):
            xccm.report(measured, reference, np.eye(3), "cie76", sample_dims=sample_dims)


def test_dataset_as_matrix_says_select_the_variable(image, patches):
    m = patches[0].ccm.fit(patches[1])
    with pytest.raises(
        TypeError, match=r"not a Dataset; select its matrix variable.*ds\['ccm_matrix'\]"
    ):
        image.ccm.apply(m.to_dataset())
    with pytest.raises(TypeError, match=r"not a Dataset"):
        xccm.invert(m.to_dataset())


@pytest.mark.parametrize("shape", [(0, 0), (1, 0)])
def test_invert_an_empty_matrix(shape):
    with pytest.raises(ValueError, match=r"matrix is empty .*n >= 1"):
        xccm.invert(np.zeros(shape))
    labelled = xr.DataArray(np.zeros(shape), dims=("channel_in", "channel"))
    with pytest.raises(ValueError, match=r"matrix is empty \(\d 'channel_in' rows"):
        xccm.invert(labelled)


@pytest.mark.parametrize("labelled", [False, True])
def test_invert_a_float16_matrix_in_float32(labelled):
    m = np.array([[2.0, 0.5, 0], [0, 1, 0], [0, 0, 4], [0.5, 0.25, 0]], np.float16)
    given = xr.DataArray(m, dims=("channel_in", "channel")) if labelled else m
    inv = xccm.invert(given)
    assert inv.dtype == np.float32
    x = np.array([[0.2, 0.4, 0.6]])
    np.testing.assert_allclose(
        xccm.apply(xccm.apply(x, m.astype(float)), np.asarray(inv)), x, rtol=1e-6
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_left": (0,)}, r"top_left must be a \(y, x\) pair of numbers; got \(0,\)"),
        ({"top_left": 5}, r"top_left must be a \(y, x\) pair"),
        ({"top_left": ("a", "b")}, r"top_left must be"),
        ({"patch_size": 0}, r"patch_size must be a positive number .*got 0"),
        ({"patch_size": (4, np.nan)}, r"patch_size must be .*finite"),
        ({"pitch": (1, 2, 3)}, r"pitch must be a number or a \(y, x\) pair"),
        ({"shape": (4,)}, r"shape must be \(rows, cols\), two positive integers; got \(4,\)"),
        ({"shape": (4, 0)}, r"shape must be \(rows, cols\)"),
        ({"shape": (4.0, 6)}, r"shape must be \(rows, cols\)"),
    ],
)
def test_grid_boxes_arguments(kwargs, match):
    args = {"top_left": (10, 20), "patch_size": 4, "pitch": 10, "shape": (2, 3)} | kwargs
    with pytest.raises(ValueError, match=match):
        xccm.grid_boxes(**args)


def test_integer_channels_against_string_matrix_rows(image):
    img = image.assign_coords(channel=[1, 2, 3])
    m = xr.DataArray(
        np.eye(3), dims=("channel_in", "channel"), coords={"channel_in": ["1", "2", "3"]}
    )
    with pytest.raises(
        ValueError, match=r"labelled \['1', '2', '3'\] .*\[1, 2, 3\].*str, image channels int"
    ):
        img.ccm.apply(m)


def test_loss_with_a_reference_of_unknown_space_refuses(patches):
    measured = xccm.chart().copy(data=xccm.chart().values * 0.8)
    for space in (None, "missing"):
        ref = xccm.chart()
        ref.attrs = {} if space == "missing" else {"space": None}
        with pytest.raises(
            ValueError, match=r"loss='cie76' .*does not say which space.*reference_space="
        ):
            xccm.fit(measured, ref, loss="cie76")
        m = xccm.fit(measured, ref, loss="cie76", reference_space="srgb-linear", saturation=None)
        assert m.attrs["reference_space"] == "srgb-linear"
        xccm.fit(measured, ref)  # without a loss no space is needed


SCALE_USERS = {
    "apply": lambda x, s: xccm.apply(x, np.eye(3), scale=s),
    "linearize": lambda x, s: xccm.linearize(x, "srgb", scale=s),
    "encode": lambda x, s: xccm.encode(x, "srgb", scale=s),
    "accessor": lambda x, s: x.ccm.apply(np.eye(3), scale=s),
}


@pytest.mark.parametrize("func", list(SCALE_USERS))
@pytest.mark.parametrize("scale", [0, -1, -0.5, np.nan, np.inf, -np.inf, np.float32(0)])
def test_scale_is_checked_the_same_everywhere(image, func, scale):
    with pytest.raises(
        ValueError, match=r"^scale must be a finite positive number \(e.g. 1 / 255\)"
    ):
        SCALE_USERS[func](image, scale)
    if func != "accessor":
        with pytest.raises(ValueError, match=r"^scale must be a finite positive number"):
            SCALE_USERS[func](image.values, scale)


@pytest.mark.parametrize("func", list(SCALE_USERS))
@pytest.mark.parametrize("scale", [True, "1", [0.5], np.ones(3)])
def test_scale_type_is_checked_the_same_everywhere(image, func, scale):
    with pytest.raises(TypeError, match=r"^scale must be one real number \(e.g. 1 / 255\)"):
        SCALE_USERS[func](image, scale)


@pytest.mark.parametrize("func", ["apply", "linearize", "encode"])
def test_lazy_scale_is_checked_on_compute(image, func):
    import dask.array as dsa

    good, bad = dsa.from_array(np.float64(0.5)), dsa.from_array(np.float64(-0.5))
    with raise_if_dask_computes():
        out = SCALE_USERS[func](image.chunk(), good)
        wrong = SCALE_USERS[func](image.chunk(), bad)
    xr.testing.assert_allclose(out, SCALE_USERS[func](image, 0.5))
    with pytest.raises(ValueError, match=r"scale must be a finite positive number .*-0.5"):
        wrong.compute()


@pytest.mark.parametrize("lazy", [False, True])
def test_inverse_returns_the_callers_channel_order(image, rng, lazy):
    m = xr.DataArray(
        np.eye(3) + rng.uniform(0, 0.2, (3, 3)),
        dims=("channel_in", "channel"),
        coords={"channel_in": ["G", "R", "B"], "channel": ["R", "G", "B"]},
    )
    x = image.chunk({"time": 2}) if lazy else image
    back = xccm.inverse(xccm.apply(x, m), m)
    assert back.channel.values.tolist() == ["R", "G", "B"]
    xr.testing.assert_allclose(back, image, rtol=1e-4)
    ds = xccm.inverse(xccm.apply(image.to_dataset(), m), m)
    assert ds.image.channel.values.tolist() == ["R", "G", "B"]
    # other names than the image's keep the matrix's row order
    xyz = m.assign_coords(channel=["X", "Y", "Z"])
    assert xccm.inverse(xccm.apply(image, xyz), xyz).channel.values.tolist() == ["G", "R", "B"]


@pytest.mark.parametrize("loss", [None, "cie76"])
def test_boolean_weights_count_as_one_and_zero(loss):
    ref = xccm.chart()
    measured = (ref * [0.8, 0.9, 1.1]).assign_coords(channel=["R", "G", "B"])
    measured = measured + 0.01 * np.sin(np.arange(72).reshape(24, 3))
    keep = np.arange(24) % 5 != 0
    kw = {"loss": loss, "saturation": None} if loss else {}
    got = xccm.fit(measured, ref, weights=keep, **kw)
    xr.testing.assert_allclose(got, xccm.fit(measured, ref, weights=keep.astype(float), **kw))
    assert not np.allclose(got, xccm.fit(measured, ref, **kw))
    plain = xccm.fit(measured.values, ref.values, weights=keep)
    np.testing.assert_allclose(plain, got.values if loss is None else plain)


def test_mask_works_in_every_fit():
    ref = xccm.chart()  # srgb-linear: no colour conversion without a loss
    measured = (ref * [0.8, 0.9, 1.1]).assign_coords(channel=["R", "G", "B"])
    measured = measured + 0.01 * np.cos(np.arange(72).reshape(24, 3))
    mask = xr.DataArray(np.arange(24) % 4 != 1, dims="patch", coords={"patch": ref.patch})
    got = xccm.fit(measured, ref, mask=mask)
    expected = xccm.fit(measured, ref, weights=mask.astype(float))
    xr.testing.assert_allclose(got, expected)
    lstsq_used = lstsq(measured.values[mask.values], ref.values[mask.values])
    np.testing.assert_allclose(got.values, lstsq_used, rtol=1e-10)
    # plain arrays, the saturation range, and a mask combined with weights
    np.testing.assert_allclose(
        xccm.fit(measured.values, ref.values, mask=mask.values), got.values, rtol=1e-12
    )
    sat = xccm.fit(measured, ref, saturation=(0, 0.5))
    inside = ((measured >= 0) & (measured <= 0.5)).all("channel")
    xr.testing.assert_allclose(sat, xccm.fit(measured, ref, weights=inside.astype(float)))
    assert sat.attrs["saturation"] == [0.0, 0.5]
    w = np.linspace(1, 2, 24)
    xr.testing.assert_allclose(
        xccm.fit(measured, ref, mask=mask, weights=w),
        xccm.fit(measured, ref, weights=w * mask.values),
    )
    with pytest.raises(TypeError, match=r"mask must be boolean"):
        xccm.fit(measured.values, ref.values, mask=np.ones(24))


@pytest.mark.parametrize("labels", [None, ["R", "G", "B", "A"], ["R", "G", "B", "alpha"]])
def test_rgba_against_a_three_channel_chart_says_drop_alpha(labels):
    ref = xccm.chart()
    rgba = xr.concat([ref, xr.ones_like(ref.isel(channel=[0]))], "channel")
    rgba = rgba.drop_vars("channel") if labels is None else rgba.assign_coords(channel=labels)
    for kw in ({}, {"loss": "cie76"}):
        with pytest.raises(
            ValueError,
            match=r"measured has 4 channels along 'channel' but reference has 3.*Drop alpha",
        ):
            xccm.fit(rgba, ref, **kw)
    if labels is None:
        with pytest.raises(ValueError, match=r"4 channels .*measured\[\.\.\., :3\]"):
            xccm.fit(rgba.values, ref.values)


def test_four_labelled_camera_channels_are_fitted(rng):
    ref = xccm.chart()
    rgbw = xr.DataArray(
        rng.uniform(0.05, 0.9, (24, 4)),
        dims=("patch", "channel"),
        coords={"patch": ref.patch, "channel": ["R", "G", "B", "W"]},
    )
    m = xccm.fit(rgbw, ref)
    assert m.sizes == {"channel_in": 4, "channel": 3}


def test_fit_refuses_a_dataset_as_measured(patches):
    measured, reference = patches
    # was numpy's "cannot directly convert an xarray.Dataset", naming no argument
    with pytest.raises(TypeError, match=r"measured must be a DataArray or an array, not a Dataset"):
        xccm.fit(measured.to_dataset(name="patches"), reference)


def test_lightness_power_must_be_a_number():
    ref = xccm.chart()
    measured = ref.copy()
    with pytest.raises(TypeError, match="lightness_power must be a real number"):
        xccm.fit(measured, ref, loss="cie76", lightness_power="x")
    with pytest.raises(TypeError, match="power must be a real number"):
        xccm.lightness_weights(ref, "2")
