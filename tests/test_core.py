"""xccm.core: fit, apply, inverse and invert on labelled arrays, eager and lazy."""

from __future__ import annotations

import pickle

import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

import xccm
from conftest import lstsq, raise_if_dask_computes

# ---------------------------------------------------------------------------------------------
# fit


@pytest.mark.parametrize("model", ["linear", "affine"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fit_matches_numpy_lstsq_per_frame(patches, rng, model, weighted):
    measured, reference = patches
    w = xr.DataArray(rng.uniform(0.2, 2.0, 24), dims="patch") if weighted else None
    m = measured.ccm.fit(reference, model=model, weights=w)
    assert m.dims == ("time", "channel_in", "channel")
    for t in range(measured.sizes["time"]):
        expected = lstsq(
            measured.values[t],
            reference.values,
            None if w is None else w.values,
            affine=model == "affine",
        )
        np.testing.assert_allclose(m.values[t], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_fit_matches_colour_science(patches, model):
    colour = pytest.importorskip("colour")
    measured, reference = patches
    m = measured.ccm.fit(reference, model=model)
    for t in range(measured.sizes["time"]):
        if model == "linear":
            kwargs = {"method": "Cheung 2004", "terms": 3}
        else:  # Vandermonde of degree 1 expands to [R, G, B, 1]
            kwargs = {"method": "Vandermonde", "degree": 1}
        ccm = colour.characterisation.matrix_colour_correction(
            measured.values[t], reference.values, **kwargs
        )  # colour-science uses column vectors: its matrix is our transpose
        np.testing.assert_allclose(m.values[t], ccm.T, rtol=1e-10, atol=1e-12)


def test_fit_recovers_a_known_matrix_exactly(rng, true_matrix):
    s = rng.uniform(0.05, 0.9, (3, 30, 3))
    d = s @ true_matrix[:3] + true_matrix[3]
    m = xccm.fit(s, d, model="affine")
    assert m.shape == (3, 4, 3)
    np.testing.assert_allclose(m, np.broadcast_to(true_matrix, m.shape), rtol=1e-10, atol=1e-12)


def test_fit_labels_the_matrix(patches):
    measured, reference = patches
    m = measured.ccm.fit(reference, model="affine")
    assert m.name == "ccm_matrix"
    assert m.attrs == {"model": "affine", "init": "least_squares"}
    assert m.channel_in.values.tolist() == ["R", "G", "B", "offset"]
    assert m.channel.values.tolist() == ["X", "Y", "Z"]
    np.testing.assert_array_equal(m.time, measured.time)


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_white_balance_is_the_seed_formula(patches, model):
    measured, reference = patches
    m = measured.ccm.fit(reference, model=model, init="white_balance")
    for t in range(measured.sizes["time"]):
        gains = reference.values.mean(axis=0) / measured.values[t].mean(axis=0)
        expected = np.diag(gains)
        if model == "affine":
            expected = np.vstack([expected, np.zeros(3)])
        np.testing.assert_allclose(m.values[t], expected, rtol=1e-12)
    assert m.attrs["init"] == "white_balance"


def test_weighted_white_balance_uses_weighted_means(patches, rng):
    measured, reference = patches
    w = rng.uniform(0, 1, 24)
    m = measured.isel(time=0).ccm.fit(reference, init="white_balance", weights=w)
    gains = (w @ reference.values) / (w @ measured.values[0])
    np.testing.assert_allclose(np.diag(m.values), gains, rtol=1e-12)


def test_fit_leaves_out_non_finite_samples_per_frame(patches):
    measured, reference = patches
    dirty = measured.copy()
    dirty[1, 3, 0] = np.nan  # frame 1 loses patch 3
    dirty[2, 5:8, :] = np.inf  # frame 2 loses patches 5-7
    ref = reference.copy()
    ref[10, 2] = np.nan  # every frame loses patch 10
    m = dirty.ccm.fit(ref)
    for t, lost in enumerate([[], [3], [5, 6, 7], []]):
        keep = np.setdiff1d(np.arange(24), [*lost, 10])
        expected = lstsq(measured.values[t, keep], reference.values[keep])
        np.testing.assert_allclose(m.values[t], expected, rtol=1e-10, atol=1e-12)


def test_fit_gives_nan_matrices_for_frames_without_enough_samples(patches):
    measured, reference = patches
    dirty = measured.copy()
    dirty[2, 2:, :] = np.nan  # two valid patches left in frame 2
    with pytest.warns(xccm.InsufficientSamplesWarning, match="1 of 4"):
        m = dirty.ccm.fit(reference)
    assert np.isnan(m.sel(time=2)).all()
    assert np.isfinite(m.drop_sel(time=2)).all()


def test_fit_with_reference_per_frame(patches):
    measured, reference = patches
    per_frame = xr.concat([reference * (1 + 0.1 * t) for t in range(4)], dim="time")
    per_frame["time"] = measured.time
    m = measured.ccm.fit(per_frame, sample_dims="patch")
    assert m.dims == ("time", "channel_in", "channel")
    for t in range(4):
        expected = lstsq(measured.values[t], per_frame.values[t])
        np.testing.assert_allclose(m.values[t], expected, rtol=1e-10)


def test_fit_from_pixels_over_several_sample_dims(rng, true_matrix):
    s = rng.uniform(0.05, 0.9, (20, 30, 3))
    d = s @ true_matrix[:3] + true_matrix[3] + rng.normal(0, 0.01, s.shape)
    measured = xr.DataArray(s, dims=("y", "x", "channel"))
    reference = xr.DataArray(d, dims=("y", "x", "channel"))
    m = measured.ccm.fit(reference, model="affine")
    assert m.dims == ("channel_in", "channel")
    expected = lstsq(s.reshape(-1, 3), d.reshape(-1, 3), affine=True)
    np.testing.assert_allclose(m.values, expected, rtol=1e-10)


def test_fit_dim_order_does_not_matter(patches):
    measured, reference = patches
    m = measured.ccm.fit(reference)
    shuffled = measured.transpose("channel", "patch", "time").ccm.fit(
        reference.transpose("channel", "patch")
    )
    xr.testing.assert_allclose(shuffled.transpose(*m.dims), m, rtol=1e-12)


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_fit_on_arrays_returns_arrays(patches, model):
    measured, reference = patches
    m = xccm.fit(measured.values, reference.values, model=model, weights=np.ones(24))
    assert isinstance(m, np.ndarray)
    expected = measured.ccm.fit(reference, model=model)
    np.testing.assert_allclose(m, expected.values, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# fit, lazily


@pytest.mark.parametrize("chunks", [{"time": 1}, {"patch": 5}, {"time": 2, "patch": 7}])
def test_fit_is_lazy_and_matches_eager(patches, rng, chunks):
    measured, reference = patches
    w = xr.DataArray(rng.uniform(0.2, 2.0, 24), dims="patch")
    eager = measured.ccm.fit(reference, model="affine", weights=w)
    with raise_if_dask_computes():
        lazy = measured.chunk(chunks).ccm.fit(
            reference.chunk({k: v for k, v in chunks.items() if k in reference.dims}),
            model="affine",
            weights=w.chunk(),
        )
    assert isinstance(lazy.data, dsa.Array)
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=1e-10, atol=1e-12)


def test_fit_from_chunked_pixels_reduces_chunk_by_chunk(rng, true_matrix):
    n = 200_000
    s = rng.uniform(0.05, 0.9, (n, 3))
    d = s @ true_matrix[:3] + true_matrix[3] + rng.normal(0, 0.01, s.shape)
    s[::97] = np.nan
    measured = xr.DataArray(s, dims=("pixel", "channel")).chunk({"pixel": 16_384})
    reference = xr.DataArray(d, dims=("pixel", "channel")).chunk({"pixel": 16_384})
    with raise_if_dask_computes():
        m = measured.ccm.fit(reference, model="affine")
    graph = dict(m.data.__dask_graph__())
    assert len(graph) < 100  # a tree reduction over 13 chunks, not a per-pixel graph
    keep = np.isfinite(s).all(axis=1)
    expected = lstsq(s[keep], d[keep], affine=True)
    np.testing.assert_allclose(m.values, expected, rtol=1e-10)


def _patch_frames(n: int, rng, true_matrix) -> tuple[xr.DataArray, xr.DataArray]:
    """Patch colours of n frames (what extract_patches gives), and the reference chart."""
    ref = rng.uniform(0.03, 0.9, (24, 3))
    camera = (ref - true_matrix[3]) @ np.linalg.inv(true_matrix[:3])
    meas = rng.uniform(0.8, 1.2, (n, 1, 1)) * camera + rng.normal(0, 0.01, (n, 24, 3))
    coords = {"patch": [f"p{i}" for i in range(24)]}
    measured = xr.DataArray(meas, dims=("time", "patch", "channel"), coords=coords)
    return measured, xr.DataArray(ref, dims=("patch", "channel"), coords=coords)


def test_lazy_fit_groups_one_frame_chunks(rng, true_matrix, monkeypatch):
    # One-frame chunks of patch colours are grouped into blocks of ~_SAMPLES_PER_TASK
    # samples before the fit: the tasks beyond the input's own do not grow with its chunks.
    monkeypatch.setattr(xccm.core, "_SAMPLES_PER_TASK", 10 * 24)  # blocks of 10 frames
    measured, reference = _patch_frames(60, rng, true_matrix)
    w = xr.DataArray(rng.uniform(0.5, 2.0, (60, 24)), dims=("time", "patch"))
    eager = measured.ccm.fit(reference, model="affine", weights=w)

    def extra_tasks(chunks):
        m_in, w_in = measured.chunk(chunks), w.chunk(chunks)
        with raise_if_dask_computes():
            m = m_in.ccm.fit(reference, model="affine", weights=w_in)
        inputs = len(m_in.__dask_graph__()) + len(w_in.__dask_graph__())
        grams = [k for k in dict(m.data.__dask_graph__()) if k[0].startswith("block_gram-")]
        return len(m.__dask_graph__()) - inputs, len(grams), m

    per_frame, grams, lazy = extra_tasks({"time": 1})
    assert grams == 6  # a task per block of 10 frames, not per frame
    # Beyond what blocks of 10 frames cost: merging measured's and w's frames, a task a block.
    assert per_frame == extra_tasks({"time": 10})[0] + 2 * 6
    assert lazy.chunks == ((60,), (4,), (3,))
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=1e-10, atol=1e-12)


def test_lazy_fit_keeps_blocks_that_are_large_enough(rng, true_matrix, monkeypatch):
    # Frames of pixels chunked one a chunk are already a task's worth: never split or merged.
    monkeypatch.setattr(xccm.core, "_SAMPLES_PER_TASK", 100)
    s = rng.uniform(0.05, 0.9, (4, 16, 16, 3))
    d = s @ true_matrix[:3] + true_matrix[3]
    dims = ("time", "y", "x", "channel")
    measured = xr.DataArray(s, dims=dims).chunk({"time": 1, "y": 8})
    reference = xr.DataArray(d, dims=dims).chunk({"time": 1, "y": 8})
    with raise_if_dask_computes():
        m = measured.ccm.fit(reference, model="affine", sample_dims=("y", "x"))
    grams = [k for k in dict(m.data.__dask_graph__()) if k[0].startswith("block_gram-")]
    assert len(grams) == 8
    expected = [
        lstsq(f.reshape(-1, 3), g.reshape(-1, 3), affine=True) for f, g in zip(s, d, strict=True)
    ]
    np.testing.assert_allclose(m.values, np.stack(expected), rtol=1e-10, atol=1e-12)


def test_lazy_fit_warns_on_compute_for_frames_without_samples(patches):
    measured, reference = patches
    dirty = measured.copy()
    dirty[0, :, :] = np.nan
    with raise_if_dask_computes():
        lazy = dirty.chunk({"time": 1}).ccm.fit(reference)
    with pytest.warns(xccm.InsufficientSamplesWarning, match="1 of 4"):
        values = lazy.values
    assert np.isnan(values[0]).all() and np.isfinite(values[1:]).all()


# ---------------------------------------------------------------------------------------------
# apply


def test_apply_keeps_dims_coords_attrs_and_name(image, true_matrix):
    out = image.ccm.apply(true_matrix)
    assert out.dims == image.dims
    assert out.name == image.name
    assert out.attrs == image.attrs
    for name in image.coords:
        xr.testing.assert_identical(out[name], image[name])
    expected = image.values.astype(np.float64) @ true_matrix[:3] + true_matrix[3]
    np.testing.assert_allclose(out.values, expected, rtol=1e-5)


def test_apply_drop_attrs_on_request(image):
    assert image.ccm.apply(np.eye(3), keep_attrs=False).attrs == {}


def test_apply_takes_column_coords_from_a_fitted_matrix(image, patches):
    measured, reference = patches
    m = measured.isel(time=0).ccm.fit(reference)
    out = image.ccm.apply(m)
    assert out.channel.values.tolist() == ["X", "Y", "Z"]
    assert "channel_in" not in out.coords


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.uint8, np.float32),
        (np.uint16, np.float32),
        (np.int32, np.float32),
    ],
)
def test_apply_dtype(image, true_matrix, dtype, expected):
    img = (image * 200).astype(dtype)
    out = img.ccm.apply(true_matrix)
    assert out.dtype == expected
    ref = img.values.astype(np.float64) @ true_matrix[:3] + true_matrix[3]
    np.testing.assert_allclose(out.values, ref, rtol=1e-5, atol=1e-4)
    lazy = img.chunk({"time": 1}).ccm.apply(true_matrix)
    assert lazy.dtype == expected and lazy.compute().dtype == expected


@pytest.mark.parametrize("rows", [3, 4])
def test_apply_scale_reads_integers_as_fractions(image, true_matrix, rows):
    img8 = (image * 255).round().astype(np.uint8)
    out = img8.ccm.apply(true_matrix[:rows], scale=1 / 255)
    expected = (img8.astype(np.float64) / 255).ccm.apply(true_matrix[:rows])
    assert out.dtype == np.float32
    xr.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xccm.apply(img8.values, true_matrix[:rows], scale=1 / 255), out)


def test_apply_channel_first(image, true_matrix):
    channel_first = image.transpose("channel", "time", "y", "x")
    out = channel_first.ccm.apply(true_matrix)
    assert out.dims == channel_first.dims
    xr.testing.assert_allclose(out.transpose(*image.dims), image.ccm.apply(true_matrix))


def test_apply_per_frame_matrices_broadcast_by_name(image, rng):
    mats = rng.normal(size=(4, 4, 3)) + np.vstack([np.eye(3), np.zeros(3)])
    m = xr.DataArray(mats, dims=("time", "channel_in", "channel"), coords={"time": image.time})
    out = image.ccm.apply(m)
    assert out.dims == image.dims
    for t in range(4):
        frame = image.isel(time=t).ccm.apply(mats[t])
        xr.testing.assert_allclose(out.isel(time=t).drop_vars("time"), frame.drop_vars("time"))


def test_apply_is_lazy_and_keeps_chunks(image, true_matrix):
    lazy = image.chunk({"time": 1, "y": 3})
    with raise_if_dask_computes():
        out = lazy.ccm.apply(true_matrix)
    assert isinstance(out.data, dsa.Array)
    assert out.chunksizes == lazy.chunksizes
    xr.testing.assert_allclose(out.compute(), image.ccm.apply(true_matrix))


def test_apply_lazy_with_lazy_per_frame_matrix(image, patches):
    measured, reference = patches
    with raise_if_dask_computes():
        m = measured.chunk({"time": 1}).ccm.fit(reference)
        out = image.chunk({"time": 1}).ccm.apply(m)
    assert out.chunksizes == image.chunk({"time": 1}).chunksizes
    xr.testing.assert_allclose(out.compute(), image.ccm.apply(m.compute()))


def _frames(n: int, rng) -> tuple[xr.DataArray, xr.DataArray]:
    """n small frames, one per chunk, and one affine matrix per frame, labelled by time."""
    arr = rng.random((n, 2, 3, 3)).astype(np.float32)
    img = xr.DataArray(
        dsa.from_array(arr, chunks=(1, 2, 3, 3)),
        dims=("time", "y", "x", "channel"),
        coords={"time": np.arange(n) * 10},
    )
    mats = rng.normal(0, 0.1, (n, 4, 3)) + np.vstack([np.eye(3), np.zeros(3)])
    m = xr.DataArray(mats, dims=("time", "channel_in", "channel"), coords={"time": img.time})
    return img, m


def test_apply_per_frame_matrix_adds_one_task_per_chunk(rng):
    # The per-frame matrices travel with the apply tasks: no task per chunk to cut them out.
    # The tasks beyond Dask's floor (image + one per chunk) are the matrix's own (one for an
    # in-memory stack) and do not grow with the number of image chunks.
    n = 60
    img, m = _frames(n, rng)
    whole = img.chunk({"time": -1})
    matrices = {
        "in memory": m,
        "lazy, one chunk": m.chunk(),
        "lazy, other chunks": m.chunk({"time": 7}),
        "frames in another order": m.isel(time=slice(None, None, -1)),
        "scale": m,
    }

    def extra(image, mat, name):
        floor = len(image.data.map_blocks(np.copy).__dask_graph__())
        out = image.ccm.apply(mat, scale=0.5 if name == "scale" else None)
        return len(out.__dask_graph__()) - floor, out

    with raise_if_dask_computes():
        outs = {}
        for name, mat in matrices.items():
            added, outs[name] = extra(img, mat, name)
            assert added == extra(whole, mat, name)[0], name
            # In memory: one task holds the matrices. Lazy: the matrix's own tasks, a
            # getitem per matrix chunk (apply_ufunc's broadcasting), one merge.
            assert added <= (1 if mat.chunks is None else 2 * len(mat.__dask_graph__()) + 1)
    assert len(outs["in memory"].__dask_graph__()) == 2 * n + 1  # from_array, apply; matrix
    for name, out in outs.items():
        assert out.chunksizes == img.chunksizes and out.dtype == np.float32, name
    arr, mats = img.values, m.values
    for name, out in outs.items():
        x = 0.5 * arr if name == "scale" else arr
        want = np.einsum("tyxc,tcd->tyxd", x, mats[:, :3]) + mats[:, None, None, 3]
        np.testing.assert_allclose(out.values, want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_apply_per_frame_matrix_over_several_chunked_dims(rng):
    # A matrix per (time, y), the image chunked along time, y and x; and one per y only,
    # broadcast over time.
    img, _ = _frames(4, rng)
    img = img.compute().chunk({"time": 3, "y": 1, "x": 2})
    mats = rng.normal(0, 0.1, (4, 2, 3, 3)) + np.eye(3)
    m = xr.DataArray(mats, dims=("time", "y", "channel_in", "channel"))
    with raise_if_dask_computes():
        out = img.ccm.apply(m)
        per_y = img.ccm.apply(m.isel(time=0))
    assert out.chunksizes == img.chunksizes and per_y.chunksizes == img.chunksizes
    np.testing.assert_allclose(
        out.values, np.einsum("tyxc,tycd->tyxd", img.values, mats), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        per_y.values, np.einsum("tyxc,ycd->tyxd", img.values, mats[0]), rtol=1e-5, atol=1e-6
    )


def test_apply_per_frame_matrix_larger_than_a_chunk_is_cut_like_the_image(rng):
    # A matrix stack over Dask's chunk size is cut into the image's chunks (never the image
    # into the matrix's), with the same result.
    img, m = _frames(12, rng)
    img = img.chunk({"time": 5})
    with dask.config.set({"array.chunk-size": "100B"}):
        out = img.ccm.apply(m.chunk({"time": 4}))
    assert out.chunksizes == img.chunksizes
    xr.testing.assert_allclose(out.compute(), img.ccm.apply(m).compute(), rtol=1e-6)


def test_apply_with_more_output_than_input_channels(image, rng):
    m = rng.normal(size=(3, 5))
    out = image.chunk({"time": 2}).ccm.apply(m)
    assert out.sizes["channel"] == 5 and "channel" not in out.coords
    assert out.chunksizes["channel"] == (5,)
    np.testing.assert_allclose(out.values, image.values @ m.astype(np.float32), rtol=1e-5)


def test_apply_matches_matrix_rows_to_channels_by_label(image, patches):
    measured, reference = patches
    m = measured.isel(time=0).ccm.fit(reference, model="affine")
    reordered = m.isel(channel_in=[2, 0, 1, 3])
    xr.testing.assert_identical(image.ccm.apply(reordered), image.ccm.apply(m))


def test_apply_on_arrays_returns_arrays(image, true_matrix, rng):
    out = xccm.apply(image.values, true_matrix)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, image.ccm.apply(true_matrix).values)
    per_frame = rng.normal(size=(4, 3, 3))  # batch axes match the image's leading axes
    out = xccm.apply(image.values, per_frame)
    np.testing.assert_allclose(out[2], image.values[2] @ per_frame[2].astype(np.float32), rtol=1e-5)
    lazy = xccm.apply(dsa.from_array(image.values, chunks=(1, 6, 5, 3)), true_matrix)
    assert isinstance(lazy, dsa.Array)
    np.testing.assert_allclose(lazy.compute(), image.ccm.apply(true_matrix).values)


# ---------------------------------------------------------------------------------------------
# inverse and invert


@pytest.mark.parametrize("rows", [3, 4])
@pytest.mark.parametrize("chunked", [False, True])
def test_inverse_round_trip(image, true_matrix, rows, chunked):
    img = image.astype(np.float64)
    img = img.chunk({"time": 1}) if chunked else img
    m = true_matrix[:rows]
    with raise_if_dask_computes():
        back = img.ccm.apply(m).ccm.inverse(m)
    xr.testing.assert_allclose(back.compute(), img.compute(), rtol=1e-12, atol=1e-12)
    assert back.channel.values.tolist() == ["R", "G", "B"]


def test_inverse_of_float32_stays_float32(image, true_matrix):
    back = image.ccm.apply(true_matrix).ccm.inverse(true_matrix)
    assert back.dtype == np.float32
    xr.testing.assert_allclose(back, image, rtol=1e-5, atol=1e-5)


def test_invert_closed_form_and_equivalence(image, true_matrix):
    inv = xccm.invert(true_matrix)
    up_inv = np.linalg.inv(true_matrix[:3])
    np.testing.assert_allclose(inv[:3], up_inv, rtol=1e-12)
    np.testing.assert_allclose(inv[3], -true_matrix[3] @ up_inv, rtol=1e-12)
    out = image.astype(np.float64).ccm.apply(true_matrix)
    xr.testing.assert_allclose(out.ccm.apply(inv), out.ccm.inverse(true_matrix))


def test_invert_swaps_labels_and_is_lazy(patches):
    measured, reference = patches
    m = measured.chunk({"time": 1}).ccm.fit(reference, model="affine")
    with raise_if_dask_computes():
        inv = m.ccm.invert()
    assert isinstance(inv.data, dsa.Array)
    assert inv.channel_in.values.tolist() == ["X", "Y", "Z", "offset"]
    assert inv.channel.values.tolist() == ["R", "G", "B"]
    assert inv.attrs == m.attrs
    np.testing.assert_allclose(xccm.invert(inv.values), m.values, rtol=1e-10)


def test_inverse_recovers_measured_from_reference(patches):
    measured, reference = patches
    m = measured.isel(time=0).ccm.fit(reference, model="affine")
    corrected = measured.isel(time=0).ccm.apply(m)
    back = corrected.ccm.inverse(m)
    assert back.channel.values.tolist() == ["R", "G", "B"]
    xr.testing.assert_allclose(back, measured.isel(time=0), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# properties: results do not depend on chunking or dim order (as many examples as the
# hypothesis profile runs: a few by default, hundreds with HYPOTHESIS_PROFILE=attack)


@given(
    t_chunk=st.integers(1, 4),
    p_chunk=st.integers(1, 24),
    order=st.permutations(["time", "patch", "channel"]),
    model=st.sampled_from(["linear", "affine"]),
)
def test_fit_independent_of_chunks_and_order(t_chunk, p_chunk, order, model):
    rng = np.random.default_rng(7)
    measured = xr.DataArray(rng.random((4, 24, 3)), dims=("time", "patch", "channel"))
    reference = xr.DataArray(rng.random((24, 3)), dims=("patch", "channel"))
    eager = measured.ccm.fit(reference, model=model)
    lazy = measured.transpose(*order).chunk({"time": t_chunk, "patch": p_chunk})
    out = lazy.ccm.fit(reference.chunk({"patch": p_chunk}), model=model)
    xr.testing.assert_allclose(out.compute().transpose(*eager.dims), eager, rtol=1e-9, atol=1e-12)


@given(
    chunks=st.fixed_dictionaries(
        {"time": st.integers(1, 3), "y": st.integers(1, 4), "x": st.integers(1, 5)}
    ),
    order=st.permutations(["time", "y", "x", "channel"]),
    rows=st.sampled_from([3, 4]),
)
def test_apply_independent_of_chunks_and_order(chunks, order, rows):
    rng = np.random.default_rng(11)
    img = xr.DataArray(rng.random((3, 4, 5, 3)), dims=("time", "y", "x", "channel"))
    m = rng.normal(size=(rows, 3)) + np.eye(rows, 3)
    eager = img.ccm.apply(m)
    lazy = img.transpose(*order).chunk(chunks).ccm.apply(m)
    assert lazy.dims == tuple(order)
    assert lazy.chunksizes == img.transpose(*order).chunk(chunks).chunksizes
    xr.testing.assert_allclose(lazy.compute().transpose(*eager.dims), eager, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# clusters and serialisation


def test_fit_and_apply_on_a_distributed_client(patches, image):
    distributed = pytest.importorskip("distributed")
    measured, reference = patches
    with distributed.Client(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
    ):
        m = measured.chunk({"time": 1}).ccm.fit(reference, model="affine")
        out = image.chunk({"time": 1}).ccm.apply(m)
        back = out.ccm.inverse(m)
        m_c, out_c, back_c = dask.compute(m, out, back)
    xr.testing.assert_allclose(m_c, measured.ccm.fit(reference, model="affine"))
    xr.testing.assert_allclose(out_c, image.ccm.apply(m_c))
    xr.testing.assert_allclose(back_c, image, rtol=1e-4, atol=1e-5)


def test_results_pickle(patches, image):
    measured, reference = patches
    m = measured.ccm.fit(reference, model="affine")
    out = image.chunk({"time": 1}).ccm.apply(m)
    for obj in (m, out, out.compute()):
        xr.testing.assert_identical(pickle.loads(pickle.dumps(obj)), obj)


def test_a_per_frame_matrix_chunked_otherwise_keeps_the_images_chunks(image):
    # found by tests/test_properties.py: the result took the matrix's finer time chunks
    m = xr.DataArray(
        np.broadcast_to(np.eye(3) * 2, (4, 3, 3)).copy(),
        dims=("time", "channel_in", "channel"),
        coords={"time": image.time},
    )
    x = image.chunk({"time": 2})
    for func in (xccm.apply, xccm.inverse):
        with raise_if_dask_computes():
            out = func(x, m.chunk({"time": 1}))
        assert out.chunks == x.chunks
        xr.testing.assert_allclose(out.compute(), func(image, m))
