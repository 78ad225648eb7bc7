"""xccm.cross_validate: held-out errors against explicit loops of fits, folds, stacks, laziness."""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import lstsq, raise_if_dask_computes

MIX = np.array([[0.80, 0.12, 0.05], [0.15, 0.70, 0.12], [0.03, 0.20, 0.78]])


def _camera(seed: int = 0, frames: int | None = None) -> tuple[xr.DataArray, xr.DataArray]:
    """A chart (linear sRGB) and what a camera with crosstalk, a mild curve and noise records."""
    ref = xccm.chart()
    rng = np.random.default_rng(seed)
    shape = (24, 3) if frames is None else (frames, 24, 3)
    linear = ref.values.clip(0, None) @ MIX
    values = 0.9 * linear**1.08 + 0.01 + rng.normal(0, 0.004, shape)
    dims = ("patch", "channel") if frames is None else ("time", "patch", "channel")
    cam = xr.DataArray(values, dims=dims, coords={"patch": ref.patch, "channel": ["R", "G", "B"]})
    return cam, ref


def _euclidean(s: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """|S+ M - D| per row, in the fit's space (the "linear_rgb" distance)."""
    if m.shape[0] == s.shape[-1] + 1:
        s = np.concatenate([s, np.ones((*s.shape[:-1], 1))], axis=-1)
    return np.linalg.norm(s @ m - d, axis=-1)


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_leave_one_out_least_squares_is_a_loop_of_lstsq(model):
    cam, ref = _camera()
    cv = xccm.cross_validate(cam, ref, model=model, metric="linear_rgb")
    s, d = cam.values, ref.values
    held, in_sample = np.empty(24), _euclidean(s, lstsq(s, d, affine=model == "affine"), d)
    for i in range(24):
        keep = np.arange(24) != i
        m = lstsq(s[keep], d[keep], affine=model == "affine")
        np.testing.assert_allclose(cv["fold_matrix"].sel(fold=i).values, m, atol=1e-10)
        held[i] = _euclidean(s[i], m, d[i])
    np.testing.assert_allclose(cv["delta_e"].sel(validation="held_out").values, held, atol=1e-10)
    np.testing.assert_allclose(
        cv["delta_e"].sel(validation="in_sample").values, in_sample, atol=1e-10
    )
    for name, stat in (("mean", np.mean), ("median", np.median), ("max", np.max)):
        np.testing.assert_allclose(cv[name].values, [stat(in_sample), stat(held)], atol=1e-12)
    np.testing.assert_allclose(
        cv["loss"].values, [np.sqrt(np.mean(in_sample**2)), np.sqrt(np.mean(held**2))]
    )
    # Every patch judged without itself is worse on average than judged with itself.
    assert cv["mean"].sel(validation="held_out") > cv["mean"].sel(validation="in_sample")
    assert cv["held_out_fold"].values.tolist() == list(range(24))
    assert cv.attrs["folds"] == "leave_one_out" and cv.attrs["n_folds"] == 24
    assert cv.attrs["metric"] == "linear_rgb" and cv.attrs["model"] == model
    assert cv.attrs["fit_kwargs"] == f"model={model!r}"


def test_ciede2000_of_leave_one_out_matches_a_loop_of_masked_fits():
    cam, ref = _camera(1)
    cv = xccm.cross_validate(cam, ref)
    assert cv.attrs["metric"] == "ciede2000"
    held = []
    for i in range(24):
        m = xccm.fit(cam, ref, mask=np.arange(24) != i)
        held.append(float(xccm.report(cam.isel(patch=[i]), ref.isel(patch=[i]), m)["delta_e"][0]))
    np.testing.assert_allclose(cv["delta_e"].sel(validation="held_out").values, held, atol=1e-10)
    rep = xccm.report(cam, ref, xccm.fit(cam, ref))
    xr.testing.assert_allclose(
        cv["delta_e"].sel(validation="in_sample", drop=True).drop_vars("held_out_fold"),
        rep["delta_e"],
        atol=1e-10,
    )
    for name in ("mean", "median", "p90", "max", "loss"):
        assert float(cv[name].sel(validation="in_sample")) == pytest.approx(float(rep[name]))


def test_delta_e_loss_folds_match_loop_of_loss_fits():
    """Each fold's ΔE fit is the fit with that fold masked (LM, so to a looser tolerance)."""
    cam, ref = _camera(2)
    lab = xccm.convert(ref, "lab-d50")
    cv = xccm.cross_validate(cam, lab, folds=3, loss="cie76", seed=5)
    assert cv.attrs["metric"] == "cie76" and cv.attrs["seed"] == 5
    fold = cv["held_out_fold"].values
    held = np.empty(24)
    for k in range(3):
        m = xccm.fit(cam, lab, loss="cie76", mask=fold != k)
        np.testing.assert_allclose(cv["fold_matrix"].sel(fold=k).values, m.values, atol=1e-6)
        assert float(cv["fold_fit_loss"].sel(fold=k)) == pytest.approx(float(m.loss), rel=1e-8)
        held[fold == k] = xccm.report(cam, lab, m, "cie76")["delta_e"].values[fold == k]
    np.testing.assert_allclose(cv["delta_e"].sel(validation="held_out").values, held, atol=1e-5)
    m_all = xccm.fit(cam, lab, loss="cie76")
    assert float(cv["fit_loss"]) == pytest.approx(float(m_all.loss), rel=1e-8)
    # the in-sample loss is the fit's own (every patch used: nothing saturated here)
    assert float(cv["loss"].sel(validation="in_sample")) == pytest.approx(float(m_all.loss))


@pytest.mark.parametrize("folds", [2, 5, 7, 24])
def test_k_folds_partition_the_samples(folds):
    cam, ref = _camera()
    cv = xccm.cross_validate(cam, ref, folds=folds, metric="linear_rgb", seed=3)
    fold = cv["held_out_fold"].values
    counts = np.bincount(fold, minlength=folds)
    assert counts.sum() == 24 and len(counts) == folds  # each patch in exactly one fold
    assert counts.max() - counts.min() <= 1  # near-equal folds
    assert cv.sizes["fold"] == folds
    # the same seed gives the same folds; the held-out matrices are fits without each fold
    again = xccm.cross_validate(cam, ref, folds=folds, metric="linear_rgb", seed=3)
    assert (again["held_out_fold"].values == fold).all()
    s, d = cam.values, ref.values
    for k in range(folds):
        m = lstsq(s[fold != k], d[fold != k])
        np.testing.assert_allclose(cv["fold_matrix"].sel(fold=k).values, m, atol=1e-10)
        np.testing.assert_allclose(
            cv["delta_e"].sel(validation="held_out").values[fold == k],
            _euclidean(s[fold == k], m, d[fold == k]),
            atol=1e-10,
        )


def test_seed_changes_the_folds():
    cam, ref = _camera()
    a = xccm.cross_validate(cam, ref, folds=4, metric="linear_rgb", seed=0)
    b = xccm.cross_validate(cam, ref, folds=4, metric="linear_rgb", seed=1)
    assert (a["held_out_fold"].values != b["held_out_fold"].values).any()


@pytest.mark.parametrize("kwargs", [{}, {"folds": 4, "model": "affine"}])
def test_stack_is_a_loop_over_frames(kwargs):
    cam, ref = _camera(4, frames=3)
    cv = xccm.cross_validate(cam, ref, **kwargs)
    assert cv["delta_e"].dims == ("validation", "time", "patch")
    assert cv["mean"].dims == ("validation", "time")
    assert cv["fold_matrix"].dims[:2] == ("fold", "time")
    for t in range(3):
        one = xccm.cross_validate(cam.isel(time=t), ref, **kwargs)
        for name in ("delta_e", "mean", "median", "p90", "max", "loss", "matrix", "fold_matrix"):
            xr.testing.assert_allclose(cv[name].isel(time=t), one[name], atol=1e-10)


def test_dask_input_stays_lazy_and_equals_numpy():
    cam, ref = _camera(5, frames=4)
    lazy = cam.chunk({"time": 2})
    with raise_if_dask_computes():
        cv = xccm.cross_validate(lazy, ref, folds=3)
    for name in ("delta_e", "mean", "loss", "matrix", "fold_matrix"):
        assert isinstance(cv[name].data, da.Array), name
    expected = xccm.cross_validate(cam, ref, folds=3)
    xr.testing.assert_allclose(cv.compute(), expected, atol=1e-10)


def test_mask_and_saturation_leave_samples_out_of_every_fold_and_the_statistics():
    cam, ref = _camera(6)
    mask = xr.DataArray(np.arange(24) != 7, dims="patch", coords={"patch": ref.patch})
    cv = xccm.cross_validate(cam, ref, mask=mask.isel(patch=slice(None, None, -1)))
    s, d = cam.values, ref.values
    rep = xccm.report(cam, ref, xccm.fit(cam, ref, mask=mask), weights=mask)
    held = np.empty(24)
    for i in range(24):
        keep = (np.arange(24) != i) & mask.values
        held[i] = xccm.report(cam, ref, lstsq(s[keep], d[keep]))["delta_e"].values[i]
    np.testing.assert_allclose(cv["delta_e"].sel(validation="held_out").values, held, atol=1e-9)
    # patch 7 is reported but in no statistic
    np.testing.assert_allclose(
        float(cv["mean"].sel(validation="held_out")), np.delete(held, 7).mean(), atol=1e-10
    )
    assert float(cv["mean"].sel(validation="in_sample")) == pytest.approx(float(rep["mean"]))
    # a saturation range drops the patches outside it the same way
    bright = cam.max("channel") > 0.75
    sat = xccm.cross_validate(cam, ref, saturation=(0, 0.75))
    kept = xccm.cross_validate(cam, ref, mask=~bright)
    xr.testing.assert_allclose(sat[["delta_e", "mean", "loss"]], kept[["delta_e", "mean", "loss"]])


def test_weights_enter_the_fits_and_the_loss():
    cam, ref = _camera(7)
    w = np.linspace(0.5, 2.0, 24)
    cv = xccm.cross_validate(cam, ref, weights=w, metric="linear_rgb")
    s, d = cam.values, ref.values
    held = np.array(
        [
            _euclidean(
                s[i],
                lstsq(s[np.arange(24) != i], d[np.arange(24) != i], w[np.arange(24) != i]),
                d[i],
            )
            for i in range(24)
        ]
    )
    np.testing.assert_allclose(cv["delta_e"].sel(validation="held_out").values, held, atol=1e-10)
    expected = np.sqrt(np.sum(w / w.mean() * held**2) / 24)
    assert float(cv["loss"].sel(validation="held_out")) == pytest.approx(expected)


def test_fold_with_too_few_samples_gives_nan_and_the_warning():
    cam, ref = _camera(8)
    few, few_ref = cam.isel(patch=slice(0, 4)), ref.isel(patch=slice(0, 4))
    with pytest.warns(xccm.InsufficientSamplesWarning):
        cv = xccm.cross_validate(few, few_ref, model="affine", metric="linear_rgb")
    assert np.isnan(cv["delta_e"].sel(validation="held_out")).all()
    assert np.isfinite(cv["delta_e"].sel(validation="in_sample")).all()  # 4 fit 4 unknowns
    with pytest.warns(xccm.InsufficientSamplesWarning):
        cv = xccm.cross_validate(cam, ref, min_samples=24)
    assert np.isnan(cv["delta_e"].sel(validation="held_out")).all()
    assert np.isnan(cv["mean"].sel(validation="held_out"))
    assert np.isfinite(cv["mean"].sel(validation="in_sample"))


def test_robust_fit_is_cross_validated_fold_by_fold():
    cam, ref = _camera(9)
    cam = cam.copy()
    cam[5] = 0.97  # a glint
    cv = xccm.cross_validate(cam, ref, folds=3, robust="tukey")
    fold = cv["held_out_fold"].values
    for k in range(3):
        m = xccm.fit(cam, ref, robust="tukey", mask=fold != k)
        np.testing.assert_allclose(cv["fold_matrix"].sel(fold=k).values, m.values, atol=1e-8)
    assert cv.attrs["fit_kwargs"] == "robust='tukey'"


def test_metric_follows_a_colour_difference_loss_else_ciede2000():
    cam, ref = _camera()
    lab = xccm.convert(ref, "lab-d50")
    assert xccm.cross_validate(cam, lab, folds=2, loss="CMC", max_iter=0).attrs["metric"] == "cmc"
    plain = xccm.cross_validate(cam, ref, folds=2, loss="linear_rgb")
    assert plain.attrs["metric"] == "ciede2000"
    assert xccm.cross_validate(cam, ref, folds=2, metric="cie94").attrs["metric"] == "cie94"


def test_plain_arrays_and_accessor_give_the_same_dataset():
    cam, ref = _camera(10)
    cv = xccm.cross_validate(cam, ref, folds=4, metric="linear_rgb")
    plain = xccm.cross_validate(cam.values, ref.values, folds=4, metric="linear_rgb")
    np.testing.assert_allclose(plain["delta_e"].values, cv["delta_e"].values, atol=1e-12)
    half = xccm.cross_validate(cam.values, ref, folds=4, metric="linear_rgb")
    assert (half.patch == ref.patch).all()
    via = cam.ccm.cross_validate(ref, folds=4, metric="linear_rgb")
    xr.testing.assert_identical(via, cv)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"folds": 1}, ValueError, r"folds must be between 2 and the number of samples \(24\)"),
        ({"folds": 25}, ValueError, r"between 2 and the number of samples \(24\).*folds=25"),
        ({"folds": "x"}, ValueError, r"folds must be 'leave_one_out' or an int.*'x'"),
        ({"folds": 2.5}, TypeError, r"folds must be 'leave_one_out' or an int; got float"),
        ({"folds": True}, TypeError, r"folds must be .* got bool"),
        ({"seed": "a"}, TypeError, r"seed must be an int; got str"),
        ({"metric": "cie2000"}, ValueError, r"unknown metric 'cie2000'"),
        ({"return_weights": True}, ValueError, r"no return_weights="),
        ({"sample_dims": "frame"}, ValueError, r"sample_dims must name dims of measured"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, error, match):
    cam, ref = _camera()
    with pytest.raises(error, match=match):
        xccm.cross_validate(cam, ref, **kwargs)


@pytest.mark.parametrize("taken", ["fold", "validation"])
def test_inputs_with_a_fold_or_validation_dim_are_refused(taken):
    cam, ref = _camera(frames=2)
    with pytest.raises(ValueError, match=rf"measured already has a dim '{taken}'.*rename it"):
        xccm.cross_validate(cam.rename(time=taken), ref)
    cam, ref = _camera()
    w = xr.DataArray(np.ones((2, 24)), dims=(taken, "patch"), coords={"patch": ref.patch})
    with pytest.raises(ValueError, match=rf"weights already has a dim '{taken}'"):
        xccm.cross_validate(cam, ref, weights=w)


def test_dataset_and_mismatched_reference_are_type_errors():
    cam, ref = _camera()
    with pytest.raises(TypeError, match="not a Dataset"):
        xccm.cross_validate(cam.to_dataset(name="patches"), ref)
    with pytest.raises(TypeError, match="reference must be a DataArray when measured is one"):
        xccm.cross_validate(cam, ref.values)
    with pytest.raises(ValueError, match="folds='leave_one_out' needs at least 2 samples"):
        xccm.cross_validate(cam.isel(patch=[0]), ref.isel(patch=[0]))


def test_fit_errors_pass_through():
    cam, ref = _camera()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="model"):
            xccm.cross_validate(cam, ref, model="cubic")


def test_least_squares_to_an_xyz_reference_is_judged_in_xyz():
    """A fit without a loss maps into the reference's own space; the errors are taken there."""
    cam, ref = _camera(11)
    xyz = xccm.convert(ref, "xyz-d65")
    cv = xccm.cross_validate(cam, xyz, folds=4, metric="cie76")
    fold = cv["held_out_fold"].values
    s, d = cam.values, xyz.values
    held = np.empty(24)
    for k in range(4):
        m = xr.DataArray(lstsq(s[fold != k], d[fold != k]), dims=("channel_in", "channel"))
        corrected = cam @ m.rename(channel_in="channel", channel="out")
        corrected = corrected.rename(out="channel").assign_coords(channel=["X", "Y", "Z"])
        de = xccm.delta_e(corrected, xyz, "cie76", sample_space="xyz-d65")
        held[fold == k] = de.values[fold == k]
    np.testing.assert_allclose(cv["delta_e"].sel(validation="held_out").values, held, atol=1e-9)
    rep = xccm.report(cam, xyz, cv["matrix"], "cie76", sample_space="xyz-d65")
    np.testing.assert_allclose(
        cv["delta_e"].sel(validation="in_sample").values, rep["delta_e"].values, atol=1e-12
    )


def test_the_which_model_guide_example_runs():
    """The code of docs/guide/models.md runs as printed (on the real OpenCV measurement)."""
    pytest.importorskip("colour")
    text = (Path(__file__).parents[1] / "docs" / "guide" / "models.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "docs/guide/models.md", "exec"), namespace)
    cv = namespace["cv"]
    assert cv.attrs["model"] == "affine" and cv.attrs["metric"] == "ciede2000"
    assert str(namespace["worst"].values) in cv.patch.values
    # held out is worse than in sample on this real chart, for every statistic shown
    for name in ("mean", "median", "max"):
        assert cv[name].sel(validation="held_out") > cv[name].sel(validation="in_sample")
