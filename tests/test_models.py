"""Models: term expansions against colour-science, apply/inverse of expanded matrices."""

from __future__ import annotations

import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

import xccm
from conftest import raise_if_dask_computes
from xccm import _kernels, _terms, _threads, models

colour = pytest.importorskip("colour")
from colour.characterisation import (  # noqa: E402
    matrix_augmented_Cheung2004,
    polynomial_expansion_Finlayson2015,
)

ROOT = [("root_polynomial", {"degree": d}) for d in (1, 2, 3, 4)]
POLY = [("polynomial", {"degree": d}) for d in (1, 2, 3, 4)]
CHEUNG = [("polynomial", {"terms": t}) for t in models.CHEUNG2004_TERMS]
ALL = ROOT + POLY + CHEUNG
NONLINEAR = [
    ("root_polynomial", {"degree": 2}),
    ("root_polynomial", {"degree": 3}),
    ("root_polynomial", {"degree": 4}),
    ("polynomial", {"degree": 2}),
    ("polynomial", {"degree": 3}),
    ("polynomial", {"terms": 11}),
    ("polynomial", {"terms": 35}),
]


def _ids(cases):
    return [f"{m}-{next(iter(kw))}{next(iter(kw.values()))}" for m, kw in cases]


def _colour_expansion(x, name, kw):
    if "terms" in kw:
        return matrix_augmented_Cheung2004(x, kw["terms"])
    return polynomial_expansion_Finlayson2015(x, kw["degree"], name == "root_polynomial")


def _colour_method(name, kw):
    if "terms" in kw:
        return "Cheung 2004", {"terms": kw["terms"]}
    return "Finlayson 2015", {
        "degree": kw["degree"],
        "root_polynomial_expansion": name == "root_polynomial",
    }


@pytest.fixture(scope="module")
def chart():
    """96 patches (enough for a well-posed degree-4 fit) and a mildly non-linear camera."""
    rng = np.random.default_rng(7)
    s = rng.uniform(0.03, 1.0, (96, 3))
    m = np.array([[0.9, 0.1, 0.0], [0.05, 0.8, 0.1], [0.0, 0.1, 1.1]])
    d = s @ m + 0.05 * np.sqrt(s[:, [0]] * s[:, [1]]) - 0.02 * s[:, [2]] ** 2
    return s, d


# ---------------------------------------------------------------------------------------------
# expansions


@pytest.mark.parametrize(("name", "kw"), ALL, ids=_ids(ALL))
def test_expand_equals_colour_science(name, kw):
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 1.3, (40, 3))  # negative values: spow keeps the sign
    got = models.expand(x, name, **kw)
    want = _colour_expansion(x, name, kw)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    spec = models.resolve_model(name, **kw)
    assert spec.n_terms == spec.unknowns == want.shape[-1]
    assert len(spec.labels(["R", "G", "B"])) == len(set(spec.labels(["R", "G", "B"])))


@pytest.mark.parametrize(("name", "kw"), ALL, ids=_ids(ALL))
def test_lstsq_fit_applies_as_colour_science(chart, name, kw):
    s, d = chart
    method, ckw = _colour_method(name, kw)
    ccm = colour.matrix_colour_correction(s, d, method=method, **ckw)
    m = np.linalg.lstsq(models.expand(s, name, **kw), d, rcond=None)[0]
    # the coefficients of the high-degree fits (condition number ~1e7) agree to ~1e-9
    np.testing.assert_allclose(m, ccm.T, rtol=0, atol=1e-8 * max(1, np.abs(m).max()))
    rng = np.random.default_rng(1)
    img = rng.uniform(0.0, 1.0, (4, 5, 3))
    want = colour.apply_matrix_colour_correction(img, ccm, method=method, **ckw)
    matrix = models.matrix_dataarray(m, name, **kw, in_labels=["R", "G", "B"])
    da = xr.DataArray(img, dims=("y", "x", "channel"), coords={"channel": ["R", "G", "B"]})
    np.testing.assert_allclose(xccm.apply(da, matrix).values, want, rtol=0, atol=1e-10)


def test_root_polynomial_terms_are_exposure_invariant():
    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 1.0, (50, 3))
    for degree in (1, 2, 3, 4):
        spec = models.resolve_model("root_polynomial", degree=degree)
        assert spec.exposure_invariant
        for k in (0.25, 3.0):
            np.testing.assert_allclose(spec.expand(k * x), k * spec.expand(x), rtol=1e-13)
    for name, kw in (("polynomial", {"degree": 2}), ("affine", {})):
        assert not models.resolve_model(name, **kw).exposure_invariant


def test_exposure_invariant_apply(chart):
    s, d = chart
    m = np.linalg.lstsq(models.expand(s, "root_polynomial", degree=3), d, rcond=None)[0]
    matrix = models.matrix_dataarray(m, "root_polynomial", degree=3)
    x = xr.DataArray(s, dims=("patch", "channel"))
    xr.testing.assert_allclose(xccm.apply(2.5 * x, matrix), 2.5 * xccm.apply(x, matrix))


def test_row_degrees_give_scale_of_each_term():
    spec = models.resolve_model("polynomial", terms=35)
    x = np.array([0.3, 0.7, 0.2])
    ratio = spec.expand(2.0 * x) / spec.expand(x)
    np.testing.assert_allclose(ratio, 2.0 ** np.array(spec.row_degrees))


# ---------------------------------------------------------------------------------------------
# registry, labels and attrs


def test_labels_and_canonical_models():
    assert models.resolve_model("root_polynomial", degree=2).labels(["X", "Y", "Z"]) == [
        *("X", "Y", "Z"),
        *("sqrt(X*Y)", "sqrt(Y*Z)", "sqrt(X*Z)"),
    ]
    rp3 = models.resolve_model("root_polynomial", degree=3).labels()
    assert rp3[6:] == [
        *("cbrt(R*G^2)", "cbrt(G*B^2)", "cbrt(R*B^2)", "cbrt(R^2*G)"),
        *("cbrt(G^2*B)", "cbrt(R^2*B)", "cbrt(R*G*B)"),
    ]
    assert models.resolve_model("root_polynomial", degree=4).labels()[13] == "(R^3*G)^(1/4)"
    assert models.resolve_model("polynomial", terms=5).labels() == [
        *("R", "G", "B", "R*G*B", "offset")
    ]
    assert models.resolve_model("polynomial", degree=2).labels()[3:6] == ["R^2", "G^2", "B^2"]
    assert models.resolve_model("affine", n_channels=4).labels(list("RGBW"))[-1] == "offset"
    for name, kw, canonical in (
        ("root_polynomial", {"degree": 1}, "linear"),
        ("polynomial", {"degree": 1}, "linear"),
        ("polynomial", {"terms": 3}, "linear"),
        ("polynomial", {"terms": 4}, "affine"),
    ):
        assert models.resolve_model(name, **kw) == models.resolve_model(canonical)
    assert set(models.MODELS) == {"linear", "affine", "root_polynomial", "polynomial"}


def test_matrix_dataarray_and_model_of_round_trip():
    m = models.matrix_dataarray(
        np.zeros((2, 10, 3)),
        "polynomial",
        terms=10,
        in_labels=["R", "G", "B"],
        out_labels=["X", "Y", "Z"],
        batch_dims=("time",),
        attrs={"note": "kept"},
    )
    assert m.dims == ("time", "channel_in", "channel")
    assert m.attrs == {"note": "kept", "model": "polynomial", "terms": 10}
    assert m["channel_in"].values.tolist()[-1] == "offset"
    assert models.model_of(m) == models.resolve_model("polynomial", terms=10)
    assert models.model_of(np.eye(3)).name == "linear"
    assert models.model_of(np.ones((4, 3))).name == "affine"
    assert models.model_of(np.ones((4, 3)), n_in=4).name == "linear"
    lazy = models.matrix_dataarray(dsa.zeros((6, 3)), "root_polynomial", degree=2)
    assert isinstance(lazy.data, dsa.Array)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": "cubic"}, ValueError, r"unknown model 'cubic'.*'root_polynomial'"),
        ({"model": 3}, TypeError, "model must be a model name"),
        ({"model": "root_polynomial", "degree": 5}, ValueError, r"degree=5.*\(1, 2, 3, 4\)"),
        ({"model": "root_polynomial"}, ValueError, "needs degree="),
        ({"model": "root_polynomial", "degree": 2.0}, TypeError, "must be an integer"),
        ({"model": "root_polynomial", "terms": 10}, ValueError, "not terms=10"),
        ({"model": "polynomial", "terms": 9}, ValueError, r"terms=9.*Cheung"),
        ({"model": "polynomial", "degree": 2, "terms": 10}, ValueError, "not both"),
        ({"model": "polynomial"}, ValueError, "needs degree="),
        ({"model": "linear", "degree": 2}, ValueError, "'linear' takes no degree=2"),
        ({"model": "affine", "terms": 4}, ValueError, "'affine' takes no terms=4"),
        ({"model": "polynomial", "degree": 2, "n_channels": 4}, ValueError, "expands 3 channels"),
    ],
)
def test_resolve_model_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        models.resolve_model(**kwargs)


def test_model_of_bad_matrices():
    bad_rows = xr.DataArray(np.zeros((5, 3)), dims=("channel_in", "channel"))
    with pytest.raises(ValueError, match=r"5 'channel_in' rows.*6 terms"):
        models.model_of(bad_rows.assign_attrs(model="root_polynomial", degree=2))
    with pytest.raises(ValueError, match="unknown model 'spline'"):
        models.model_of(bad_rows.assign_attrs(model="spline"))
    with pytest.raises(ValueError, match="attrs\\['model'\\]"):
        models.model_of(np.zeros((6, 3)))
    with pytest.raises(ValueError, match="6 terms"):
        models.matrix_dataarray(np.zeros((5, 3)), "root_polynomial", degree=2)
    with pytest.raises(ValueError, match="x must have its 3 channels"):
        models.resolve_model("root_polynomial", degree=2).expand(np.zeros((2, 4)))


# ---------------------------------------------------------------------------------------------
# apply


def _fitted(chart, name, kw, **extra):
    s, d = chart
    m = np.linalg.lstsq(models.expand(s, name, **kw), d, rcond=None)[0]
    return models.matrix_dataarray(m, name, **kw, **extra)


def _image(shape=(3, 4, 5, 3), seed=3):
    rng = np.random.default_rng(seed)
    return xr.DataArray(
        rng.uniform(0.05, 1.0, shape),
        dims=("time", "y", "x", "channel"),
        coords={"channel": ["R", "G", "B"], "time": [10, 20, 30]},
        attrs={"units": "1"},
    )


@pytest.mark.parametrize(("name", "kw"), NONLINEAR, ids=_ids(NONLINEAR))
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_kernel_apply_equals_expansion(name, kw, backend):
    spec = models.resolve_model(name, **kw)
    rng = np.random.default_rng(4)
    x = rng.uniform(-0.1, 1.0, (1000, 3))
    m = rng.normal(size=(spec.n_terms, 3))
    want = spec.expand(x) @ m
    # a parallel call in float64; serial calls for the other dtypes and layouts (each
    # dtype and layout is a signature of its own to compile, whichever the call)
    np.testing.assert_allclose(spec.apply(x, m, backend=backend), want, rtol=1e-12, atol=1e-12)
    got32 = spec.apply(x.astype(np.float32), m, np.float32, parallel=False, backend=backend)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-4)
    # channel-first memory (a transposed view)
    cf = np.ascontiguousarray(x.T).T
    got = spec.apply(cf, m, parallel=False, backend=backend)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # integer input, read as float
    u8 = rng.integers(0, 255, (64, 3), dtype=np.uint8)
    got = spec.apply(u8, m, np.float32, parallel=False, backend=backend)
    want = spec.expand(u8.astype(np.float64)) @ m
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_cube_root_is_within_one_ulp_over_the_whole_range(dtype):
    # the vectorisable cube root of the term kernel (a bit-level seed and Halley/Newton
    # steps) against NumPy's, through a one-term table: t = cbrt(R), one output
    pytest.importorskip("numba")
    poly = _kernels._poly_numba()
    fi = np.finfo(dtype)
    rng = np.random.default_rng(11)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, 8.0, -27.0, 0.001, -1e-3]
    edges = [fi.tiny, fi.tiny / 7, fi.smallest_subnormal, fi.max, fi.max / 3, fi.max / 1.5]
    lo, hi = np.log2(float(fi.smallest_subnormal)), np.log2(float(fi.max))
    with np.errstate(over="ignore"):
        wide = np.exp2(rng.uniform(lo, hi, 20000)).astype(dtype)
    r = np.concatenate([special, edges, np.negative(edges), wide, -wide, rng.uniform(0, 9, 5000)])
    x = np.zeros((r.size, 3), dtype)
    x[:, 0] = r
    out = np.empty((r.size, 1), dtype)
    poly.apply_rows(x, np.ones((1, 1)), np.array([[1, 0, 0]]), np.array([3]), out)
    got, want = out[:, 0], np.cbrt(x[:, 0])
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    nonzero = want != 0  # -0.0 + 0.0 (the accumulation) is 0.0
    assert np.array_equal(np.signbit(got[nonzero]), np.signbit(want[nonzero]))
    exact = np.cbrt(x[finite, 0].astype(np.longdouble))
    ulp = np.abs(got[finite] - exact) / np.spacing(np.abs(want[finite])).astype(np.longdouble)
    assert ulp.max() <= 1.0


@pytest.mark.parametrize("n_out", [1, 4])
def test_numba_kernel_apply_any_number_of_outputs(n_out):
    # outputs are accumulated three at a time (the matrix padded with zero columns) and
    # written through the flat view (C-ordered) or column by column (channel-first)
    pytest.importorskip("numba")
    spec = models.resolve_model("root_polynomial", degree=3)
    rng = np.random.default_rng(12)
    x = rng.uniform(-0.1, 1.0, (700, 3))
    m = rng.normal(size=(spec.n_terms, n_out))
    want = spec.expand(x) @ m
    got = spec.apply(x, m, backend="numba")
    assert got.shape == (700, n_out)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    got = spec.apply(np.asfortranarray(x), m, parallel=False, backend="numba")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_numba_kernel_apply_splits_rows_across_threads(monkeypatch):
    # a parallel apply runs the kernel on one contiguous part of the rows per thread
    pytest.importorskip("numba")
    poly = _kernels._poly_numba()
    parts = []
    kernel = poly._terms_part

    def spy(x, *args):
        parts.append(x.shape[0])
        kernel(x, *args)

    monkeypatch.setattr(_threads, "MIN_SPLIT_ROWS", 100)
    monkeypatch.setattr(_threads, "_threads", lambda: 3)
    monkeypatch.setattr(poly, "_terms_part", spy)
    spec = models.resolve_model("polynomial", degree=3)
    rng = np.random.default_rng(13)
    x = rng.uniform(0.0, 1.0, (1001, 3))
    m = rng.normal(size=(spec.n_terms, 3))
    got = spec.apply(x, m, backend="numba")
    assert sorted(parts) == [333, 334, 334]
    np.testing.assert_allclose(got, spec.expand(x) @ m, rtol=1e-12, atol=1e-12)
    parts.clear()
    spec.apply(x, m, parallel=False, backend="numba")
    assert parts == [1001]


def test_numpy_fallback_blocks_rows(monkeypatch):
    monkeypatch.setattr(_terms, "BLOCK_ROWS", 7)
    spec = models.resolve_model("root_polynomial", degree=2)
    x = np.random.default_rng(5).uniform(0, 1, (50, 3))
    m = np.random.default_rng(6).normal(size=(6, 3))
    np.testing.assert_allclose(spec.apply(x, m, backend="numpy"), spec.expand(x) @ m)


def test_apply_keeps_contract_and_stays_lazy(chart):
    matrix = _fitted(chart, "root_polynomial", {"degree": 2}, in_labels=["R", "G", "B"])
    img = _image().astype(np.float32)
    want = models.expand(img.values.astype(np.float64), "root_polynomial", degree=2)
    want = want @ matrix.values
    out = xccm.apply(img, matrix)
    assert out.dims == img.dims and out.dtype == np.float32 and out.attrs == img.attrs
    assert out["channel"].values.tolist() == ["R", "G", "B"]
    np.testing.assert_allclose(out.values, want, rtol=1e-5, atol=1e-6)
    lazy = img.chunk({"time": 1, "y": 2})
    with raise_if_dask_computes():
        out_lazy = xccm.apply(lazy, matrix)
    assert out_lazy.chunks == lazy.chunks and out_lazy.dtype == np.float32
    with dask.config.set(scheduler="sync"):
        np.testing.assert_allclose(out_lazy.values, want, rtol=1e-5, atol=1e-6)
    # numpy in, numpy out, with the matrix's attrs naming its model
    np.testing.assert_allclose(xccm.apply(img.values, matrix), want, rtol=1e-5, atol=1e-6)
    # a plain (6, 3) array has no model: refused with a pointer to the attrs
    with pytest.raises(ValueError, match="6 rows along 'channel_in'"):
        xccm.apply(img, matrix.values)


def test_apply_per_frame_matrices(chart):
    s, d = chart
    spec = models.resolve_model("root_polynomial", degree=2)
    ms = np.stack([np.linalg.lstsq(spec.expand(s), d * g, rcond=None)[0] for g in (1, 2, 3)])
    matrix = models.matrix_dataarray(
        ms, spec, batch_dims=("time",), coords={"time": [30, 10, 20]}, in_labels="RGB"
    )
    img = _image()
    want = np.stack([spec.expand(img.values[i]) @ ms[[1, 2, 0][i]] for i in range(3)])
    np.testing.assert_allclose(xccm.apply(img, matrix).values, want, rtol=1e-12)
    lazy = xccm.apply(img.chunk({"time": 1}), matrix.chunk({"time": 1}))
    np.testing.assert_allclose(lazy.values, want, rtol=1e-12)
    np.testing.assert_allclose(xccm.apply(img.chunk({"y": 2}), matrix).values, want, rtol=1e-12)


def test_apply_scale_and_channel_order(chart):
    for name, kw in (("polynomial", {"degree": 3}), ("root_polynomial", {"degree": 3})):
        matrix = _fitted(chart, name, kw, in_labels=["R", "G", "B"])
        img = _image()
        want = xccm.apply(img, matrix)
        xr.testing.assert_allclose(xccm.apply(img * 255, matrix, scale=1 / 255), want)
        bgr = img.isel(channel=[2, 1, 0])  # same pixels, other channel order
        np.testing.assert_allclose(xccm.apply(bgr, matrix).values, want.values, rtol=1e-12)
    # a Cheung set with R^2 G but not G^2 R cannot be reordered
    matrix = _fitted(chart, "polynomial", {"terms": 16}, in_labels=["R", "G", "B"])
    with pytest.raises(ValueError, match=r"image.sel\(channel=\['R', 'G', 'B'\]\)"):
        xccm.apply(_image().isel(channel=[1, 0, 2]), matrix)
    with pytest.raises(ValueError, match="same labels"):
        xccm.apply(_image().assign_coords(channel=["X", "Y", "Z"]), matrix)


def test_apply_wrong_channel_count(chart):
    matrix = _fitted(chart, "root_polynomial", {"degree": 2})
    img = xr.DataArray(np.zeros((2, 4)), dims=("pixel", "channel"))
    with pytest.raises(ValueError, match=r"3 input channels.*4 channels"):
        xccm.apply(img, matrix)


# ---------------------------------------------------------------------------------------------
# inverse


@pytest.mark.parametrize(("name", "kw"), NONLINEAR, ids=_ids(NONLINEAR))
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_newton_inverse_recovers_input(name, kw, backend):
    spec = models.resolve_model(name, **kw)
    rng = np.random.default_rng(8)
    # a colour matrix plus small non-linear terms: one-to-one on the unit cube
    m = rng.normal(0.0, 0.02, (spec.n_terms, 3))
    m[:3] += np.array([[0.9, 0.1, 0.0], [0.05, 0.8, 0.1], [0.0, 0.1, 1.1]])
    x = rng.uniform(0.05, 1.0, (200, 3))
    d = spec.apply(x, m)
    got = spec.inverse(d, m, backend=backend)
    np.testing.assert_allclose(got, x, rtol=0, atol=1e-9)
    tol = _kernels.NEWTON_TOL * 1.5  # converged, up to the rounding of the check itself
    np.testing.assert_allclose(spec.apply(got, m), d, rtol=0, atol=tol)


def test_newton_kernel_reads_and_writes_float32_channel_first_in_place():
    # the other Newton tests run float64 (the solver's own dtype): here the kernel's loop
    # reads float32 channel-first colours and writes a float32 channel-first result
    spec = models.resolve_model("root_polynomial", degree=3)
    rng = np.random.default_rng(9)
    m = rng.normal(0.0, 0.02, (spec.n_terms, 3))
    m[:3] += np.eye(3)
    x = rng.uniform(0.05, 1.0, (50, 3))
    d = np.asfortranarray(spec.apply(x, m).astype(np.float32))
    d[4] = np.nan
    got = spec.inverse(d, m, np.float32, parallel=False, backend="numba")
    assert got.dtype == np.float32 and got.flags.f_contiguous
    want = spec.inverse(d, m, backend="numpy")  # float64 from the same float32 colours
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=0)
    assert np.isnan(got[4]).all() and np.isfinite(np.delete(got, 4, axis=0)).all()


def test_newton_inverse_of_a_fitted_matrix(chart):
    matrix = _fitted(chart, "root_polynomial", {"degree": 2})
    s, _ = chart
    d = xccm.apply(s, matrix)
    np.testing.assert_allclose(xccm.inverse(d, matrix), s, rtol=0, atol=1e-9)


def test_inverse_dataarray_dask_and_labels(chart):
    matrix = _fitted(
        chart, "root_polynomial", {"degree": 2}, in_labels=["R", "G", "B"], out_labels="XYZ"
    )
    img = _image()
    out = xccm.apply(img, matrix)
    assert out["channel"].values.tolist() == ["X", "Y", "Z"]
    back = xccm.inverse(out, matrix)
    assert back["channel"].values.tolist() == ["R", "G", "B"]
    xr.testing.assert_allclose(back, img, atol=1e-9)
    # corrected channels in another order are paired by label
    xr.testing.assert_allclose(xccm.inverse(out.isel(channel=[2, 0, 1]), matrix), img, atol=1e-9)
    lazy = out.chunk({"time": 1})
    with raise_if_dask_computes():
        back_lazy = xccm.inverse(lazy, matrix)
    assert back_lazy.chunks == lazy.chunks
    xr.testing.assert_allclose(back_lazy.compute(), img, atol=1e-9)
    np.testing.assert_allclose(xccm.inverse(out.values, matrix), img.values, atol=1e-9)
    ds = xr.Dataset({"a": out, "m": matrix})
    xr.testing.assert_allclose(xccm.inverse(ds, matrix)["a"], img, atol=1e-9)


def test_inverse_not_converging_is_nan_and_warns():
    # R' = R - R^2 has no preimage above 1/4: those pixels cannot converge
    matrix = models.matrix_dataarray(
        np.vstack([np.eye(3), np.zeros((6, 3))]), "polynomial", degree=2
    )
    matrix[3, 0] = -1.0
    d = xr.DataArray([[0.1, 0.5, 0.5], [0.5, 0.5, 0.5], [np.nan, 0.5, 0.5]], dims=("p", "channel"))
    for backend in ("numba", "numpy"):
        with pytest.warns(xccm.NonConvergenceWarning, match="1 of 3 pixels"):
            got = models.model_of(matrix).inverse(d.values, matrix.values, backend=backend)
        np.testing.assert_allclose(got[0], [0.5 - np.sqrt(0.25 - 0.1), 0.5, 0.5], atol=1e-9)
        assert np.isnan(got[1:]).all()
    with pytest.warns(xccm.NonConvergenceWarning):
        xccm.inverse(d, matrix)


def test_invert_refuses_nonlinear(chart):
    matrix = _fitted(chart, "root_polynomial", {"degree": 2})
    with pytest.raises(ValueError, match=r"Use xccm\.inverse"):
        xccm.invert(matrix)
