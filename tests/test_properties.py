"""Property tests: the promises that hold for every input, checked on generated ones.

- Dask-chunking invariance: any chunking of the non-core dims gives numpy's result.
- apply and inverse undo each other (well-conditioned matrices, both models, both floats).
- Nothing is computed while a graph is built; inputs are never mutated.
- The error contract: generated bad input gets a ValueError, TypeError or LinAlgError (or an
  xccm subclass) whose message names the argument, never an internal error.

The suite runs a few examples per property (the "default" profile in conftest.py);
``HYPOTHESIS_PROFILE=attack python -m pytest tests/test_properties.py`` runs 500 each.
Values come from a drawn seed (fast); shapes, chunks, dtypes and options from hypothesis.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import xccm
from conftest import labelled_patches, raise_if_dask_computes
from xccm.colorimetry import DISTANCES

pytest.importorskip("colour")

ALLOWED = (ValueError, TypeError, np.linalg.LinAlgError)


#: A long profile (HYPOTHESIS_PROFILE=attack) runs its own count for every property.
LONG = settings.default.max_examples >= 100


def examples(n: int) -> settings:
    """``n`` examples in the fast default profile, the long profile's count otherwise."""
    return settings(max_examples=settings.default.max_examples if LONG else n)


#: The error-contract properties are cheap (most calls fail fast) and draw from many kinds of
#: bad input, so they run more examples than the profile's default.
errors_settings = examples(40)
METHODS = sorted(DISTANCES)

# ---------------------------------------------------------------------------------------------
# building blocks


seeds = st.integers(0, 2**32 - 1)


@st.composite
def chunks_of(draw, size: int) -> tuple[int, ...]:
    """A chunking of a dim of ``size`` into up to 5 chunks, irregular ones included."""
    if size <= 1:
        return (size,)
    cuts = draw(st.sets(st.integers(1, size - 1), max_size=min(size - 1, 4)))
    edges = [0, *sorted(cuts), size]
    return tuple(int(d) for d in np.diff(edges))


@st.composite
def chunking(draw, obj: xr.DataArray, dims) -> dict:
    """Chunks for ``dims`` of ``obj`` (the others whole)."""
    chunks = {}
    for d in obj.dims:
        chunks[d] = draw(chunks_of(obj.sizes[d])) if d in dims else -1
    return chunks


def lazy(obj: xr.DataArray, chunks: dict) -> xr.DataArray:
    return obj.chunk(chunks)


def is_lazy(obj) -> bool:
    data = obj.data if isinstance(obj, xr.DataArray) else obj
    return isinstance(data, da.Array)


def build(func: Callable, *args, **kwargs):
    """Call ``func`` (building a graph) under a scheduler that raises on any compute."""
    with raise_if_dask_computes():
        out = func(*args, **kwargs)
    assert is_lazy(out), f"{func.__name__} on Dask input returned {type(out)}"
    return out


def compute(obj):
    with dask.config.set(scheduler="sync"):
        return obj.compute()


def assert_close(actual, expected, rtol, atol=0.0):
    a = actual.values if isinstance(actual, xr.DataArray) else np.asarray(actual)
    e = expected.values if isinstance(expected, xr.DataArray) else np.asarray(expected)
    assert a.dtype == e.dtype
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)
    if isinstance(actual, xr.DataArray):
        assert actual.dims == expected.dims
        xr.testing.assert_identical(actual.coords.to_dataset(), expected.coords.to_dataset())
        assert actual.attrs == expected.attrs


def patch_data(seed: int, n_time: int, n_patch: int, nan: bool = False):
    """measured(time, patch, channel), reference(patch, channel): a linear map plus noise."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0.05, 0.95, (n_patch, 3))
    m = np.eye(3) + rng.uniform(-0.2, 0.2, (3, 3))
    meas = ref @ np.linalg.inv(m) * rng.uniform(0.8, 1.2, (n_time, 1, 1))
    meas = meas + rng.normal(0, 0.01, meas.shape)
    if nan:  # a few missing samples, which fit leaves out
        meas[rng.integers(0, n_time), rng.integers(0, n_patch), rng.integers(0, 3)] = np.nan
    patch = [f"p{i}" for i in range(n_patch)]
    return labelled_patches(meas, ref, patch)


def image_data(seed: int, shape, dtype) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    t, y, x = shape
    return xr.DataArray(
        rng.uniform(0, 1, (t, y, x, 3)).astype(dtype),
        dims=("time", "y", "x", "channel"),
        coords={"time": np.arange(t), "y": np.arange(y), "channel": ["R", "G", "B"]},
        attrs={"units": "1"},
        name="image",
    )


def well_conditioned(n: int, affine: bool, seed: int):
    """A random ``(n[+1], n)`` matrix whose square part has condition number below 20."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    s = rng.uniform(0.3, 3.0, n)
    up = (q * s) @ np.linalg.qr(rng.normal(size=(n, n)))[0]
    assume(np.linalg.cond(up) < 20)
    if affine:
        up = np.concatenate([up, rng.uniform(-0.2, 0.2, (1, n))])
    return up


# ---------------------------------------------------------------------------------------------
# Dask-chunking invariance (and: building each graph computes nothing)


@given(
    seed=seeds,
    n_time=st.integers(1, 4),
    n_patch=st.integers(8, 14),
    model=st.sampled_from(["linear", "affine"]),
    init=st.sampled_from(["least_squares", "white_balance"]),
    weighted=st.sampled_from([None, "patch", "time_patch"]),
    nan=st.booleans(),
    data=st.data(),
)
def test_fit_is_chunking_invariant(seed, n_time, n_patch, model, init, weighted, nan, data):
    measured, reference = patch_data(seed, n_time, n_patch, nan)
    kwargs = {"model": model, "init": init}
    if weighted is not None:
        w = np.random.default_rng(seed + 1).uniform(0.5, 2.0, (n_time, n_patch))
        weights = xr.DataArray(w, dims=("time", "patch"), coords={"patch": measured.patch})
        kwargs["weights"] = weights.isel(time=0) if weighted == "patch" else weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xccm.InsufficientSamplesWarning)
        expected = xccm.fit(measured, reference, **kwargs)
        lazy_kwargs = dict(kwargs)
        if "weights" in kwargs:
            w = kwargs["weights"]
            lazy_kwargs["weights"] = lazy(w, data.draw(chunking(w, w.dims)))
        m = lazy(measured, data.draw(chunking(measured, ("time", "patch"))))
        r = lazy(reference, data.draw(chunking(reference, ("patch",))))
        got = compute(build(xccm.fit, m, r, **lazy_kwargs))
    assert_close(got, expected, rtol=1e-8, atol=1e-10)


@given(
    seed=seeds,
    shape=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
    dtype=st.sampled_from([np.float32, np.float64, np.uint8]),
    affine=st.booleans(),
    per_frame=st.booleans(),
    lazy_matrix=st.booleans(),
    data=st.data(),
)
def test_apply_and_inverse_are_chunking_invariant(
    seed, shape, dtype, affine, per_frame, lazy_matrix, data
):
    img = image_data(seed, shape, np.float64)
    img = (img * 255).astype(dtype) if dtype == np.uint8 else img.astype(dtype)
    m = well_conditioned(3, affine, seed)
    matrix = xr.DataArray(m, dims=("channel_in", "channel"))
    if per_frame:
        gains = xr.DataArray(np.linspace(0.8, 1.2, shape[0]), dims="time")
        matrix = (matrix * gains).assign_coords(time=img.time).transpose("time", ...)
    lazy_m = matrix
    if lazy_matrix:  # chunked unlike the image
        lazy_m = lazy(matrix, data.draw(chunking(matrix, ("time",))))
    x = lazy(img, data.draw(chunking(img, ("time", "y", "x"))))
    rtol = 1e-5 if img.dtype != np.float64 else 1e-12
    for func in (xccm.apply, xccm.inverse):
        expected = func(img, matrix)
        got = compute(build(func, x, lazy_m))
        assert_close(got, expected, rtol=rtol, atol=rtol)
        assert got.chunks is None  # computed
        assert build(func, x, lazy_m).chunksizes["time"] == x.chunksizes["time"]


@given(
    seed=seeds,
    n_time=st.integers(1, 3),
    n_patch=st.integers(1, 6),
    method=st.sampled_from(METHODS),
    ref_space=st.sampled_from(["srgb-linear", "lab-d50", "xyz-d65"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    data=st.data(),
)
def test_delta_e_is_chunking_invariant(seed, n_time, n_patch, method, ref_space, dtype, data):
    measured, reference = patch_data(seed, n_time, n_patch)
    sample = measured.astype(dtype)
    reference = xccm.convert(reference.assign_coords(channel=["R", "G", "B"]), ref_space)
    reference = reference.astype(dtype)
    expected = xccm.delta_e(sample, reference, method)
    s = lazy(sample, data.draw(chunking(sample, ("time", "patch"))))
    r = lazy(reference, data.draw(chunking(reference, ("patch",))))
    got = compute(build(xccm.delta_e, s, r, method))
    assert_close(got, expected, rtol=1e-6 if dtype == np.float32 else 1e-12)


@st.composite
def box_sets(draw, frame, n_time: int | None):
    """Boxes inside a frame: fixed ``(patch, bound)`` or moving ``(time, patch, bound)``."""
    h, w = frame
    n = draw(st.integers(1, 4))

    def one():
        y0, y1 = sorted(draw(st.lists(st.integers(0, h), min_size=2, max_size=2, unique=True)))
        x0, x1 = sorted(draw(st.lists(st.integers(0, w), min_size=2, max_size=2, unique=True)))
        return [y0, y1, x0, x1]

    if n_time is None:
        data = [one() for _ in range(n)]
        return xr.DataArray(
            data, dims=("patch", "bound"), coords={"bound": list(xccm.patches.BOUNDS)}
        )
    data = [[one() for _ in range(n)] for _ in range(n_time)]
    return xr.DataArray(
        data,
        dims=("time", "patch", "bound"),
        coords={"time": np.arange(n_time), "bound": list(xccm.patches.BOUNDS)},
    )


@given(
    seed=seeds,
    shape=st.tuples(st.integers(1, 4), st.integers(2, 6), st.integers(2, 6)),
    dtype=st.sampled_from([np.float32, np.float64, np.uint16]),
    reduce=st.sampled_from(["mean", "median"]),
    moving=st.booleans(),
    use_labels=st.booleans(),
    nan=st.booleans(),
    data=st.data(),
)
def test_extract_patches_is_chunking_invariant(
    seed, shape, dtype, reduce, moving, use_labels, nan, data
):
    img = image_data(seed, shape, np.float64)
    if nan:
        img[0, 0, 0, 0] = np.nan
    img = (img * 1000).fillna(0).astype(dtype) if dtype == np.uint16 else img.astype(dtype)
    img = img.expand_dims(camera=["a", "b"]).copy()  # a second non-spatial dim to chunk
    frame = shape[1:]
    if use_labels:
        rng = np.random.default_rng(seed)
        labels = xr.DataArray(rng.integers(0, 4, frame), dims=("y", "x"))
        n = int(labels.max())
        assume(n > 0 and set(np.unique(labels.values[labels.values > 0])) == set(range(1, n + 1)))
        kwargs = {"labels": labels}
    else:
        kwargs = {"boxes": data.draw(box_sets(frame, shape[0] if moving else None))}
    kwargs["reduce"] = reduce
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = xccm.extract_patches(img, **kwargs)
        x = lazy(img, data.draw(chunking(img, ("time", "camera"))))
        got = compute(build(xccm.extract_patches, x, **kwargs))
    assert_close(got, expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# apply and inverse undo each other


@given(
    seed=seeds,
    n=st.integers(1, 4),
    affine=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    kind=st.sampled_from(["dataarray", "ndarray", "dask"]),
    labelled=st.booleans(),
    data=st.data(),
)
def test_apply_inverse_round_trip(seed, n, affine, dtype, kind, labelled, data):
    m = well_conditioned(n, affine, seed)
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1, 1, (5, 4, n)).astype(dtype)
    if kind == "ndarray":
        x, matrix = values, m
    else:
        x = xr.DataArray(values, dims=("y", "x", "c"), attrs={"a": 1})
        matrix = xr.DataArray(m, dims=("c_in", "c"))
        if labelled:
            # Row labels in the image's channel order: a matrix whose rows come in another
            # order is issue 12 §2.7 (inverse returns the matrix's row order), fixed elsewhere.
            names = [f"k{i}" for i in range(n)]
            x = x.assign_coords(c=names)
            rows = [*names, "offset"] if affine else names
            matrix = matrix.assign_coords(c_in=rows, c=[f"o{i}" for i in range(n)])
        if kind == "dask":
            x = x.chunk({"y": 2})
    # y: colours in the matrix's output space (its column labels, if any)
    y = x if kind == "ndarray" or not labelled else x.assign_coords(c=matrix.c.values)
    back = xccm.inverse(xccm.apply(x, matrix, dim="c"), matrix, dim="c")
    forward = xccm.apply(xccm.inverse(y, matrix, dim="c"), matrix, dim="c")
    again = xccm.apply(y, xccm.invert(matrix, dim="c"), dim="c")
    tol = 1e-4 if dtype == np.float32 else 1e-11
    for got, expected in ((back, x), (forward, y)):
        assert got.dtype == dtype
        assert_close(got, expected, rtol=0, atol=tol)
    assert_close(again, xccm.inverse(y, matrix, dim="c"), rtol=0, atol=tol)


# ---------------------------------------------------------------------------------------------
# no compute while building graphs, for every lazy function


@examples(3)  # each builds a dozen graphs, a ΔE fit's included
@given(seed=seeds, data=st.data())
def test_no_function_computes_while_building_its_graph(seed, data):
    measured, reference = patch_data(seed, 3, 8)
    m = lazy(measured, data.draw(chunking(measured, ("time", "patch"))))
    r = lazy(reference, data.draw(chunking(reference, ("patch",))))
    rgb = r.assign_coords(channel=["R", "G", "B"]).clip(0, 1)
    matrix = build(xccm.fit, m, r, model=data.draw(st.sampled_from(["linear", "affine"])))
    build(xccm.apply, m, matrix)
    build(xccm.inverse, build(xccm.apply, m, matrix), matrix)
    build(xccm.invert, matrix)
    build(xccm.delta_e, rgb, rgb * 1.1, data.draw(st.sampled_from(METHODS)))
    build(xccm.convert, rgb, data.draw(st.sampled_from(["lab", "xyz", "display-p3-linear"])))
    method = data.draw(st.sampled_from(["gamma", "srgb", "identity"]))
    build(xccm.linearize, rgb, method)
    build(xccm.encode, rgb, method)
    build(xccm.saturation_mask, m)
    img = lazy(image_data(seed, (3, 4, 4), np.float32), {"time": 1})
    build(xccm.extract_patches, img, boxes={"a": (0, 2, 0, 2), "b": (1, 4, 2, 3)})
    # a colour loss: the refinement is part of the graph too (a few iterations suffice here)
    chart = xccm.chart()
    camera = lazy(xccm.convert(chart, "rgb").clip(0, 1).expand_dims(time=2), {"time": 1})
    build(xccm.fit, camera, chart, loss=data.draw(st.sampled_from(METHODS)), max_iter=2)


# ---------------------------------------------------------------------------------------------
# inputs are never mutated


def snapshot(obj):
    """A deep copy to compare with after the call (values, dims, coords, attrs, name)."""
    if isinstance(obj, xr.DataArray):
        return obj.copy(deep=True).compute(), copy.deepcopy(obj.attrs)
    return copy.deepcopy(obj), None


def assert_unchanged(obj, snap) -> None:
    before, attrs = snap
    if isinstance(obj, xr.DataArray):
        xr.testing.assert_identical(obj.compute(), before)
        assert obj.attrs == attrs
        for name, c in obj.coords.items():
            assert c.attrs == before[name].attrs
    else:
        np.testing.assert_array_equal(obj, before)


MUTATION_CALLS = [
    "fit",
    "fit_loss",
    "apply",
    "inverse",
    "invert",
    "delta_e",
    "convert",
    "linearize",
    "encode",
    "extract_patches",
    "saturation_mask",
    "lightness_weights",
]


def mutation_call(name: str, seed: int):
    """``(func, args, kwargs)`` of a valid call with attrs and coords (with attrs) on inputs."""
    measured, reference = patch_data(seed, 2, 8, nan=True)
    measured.attrs["nested"] = {"list": [1, 2]}
    measured.coords["time"].attrs["units"] = "s"
    rgb = reference.assign_coords(channel=["R", "G", "B"]).assign_attrs(space="srgb-linear")
    weights = xr.DataArray(np.linspace(0, 2, 8), dims="patch", coords={"patch": measured.patch})
    matrix = xccm.fit(measured, reference, model="affine")
    img = image_data(seed, (2, 3, 3), np.float32)
    boxes = xr.DataArray([[0, 2, 0, 2]], dims=("patch", "bound"))
    return {
        "fit": (xccm.fit, (measured, reference), {"weights": weights}),
        "fit_loss": (
            xccm.fit,
            (measured, rgb),
            {"loss": "cie76", "max_iter": 3, "saturation": None},
        ),
        "apply": (xccm.apply, (img, matrix), {"scale": 0.5}),
        "inverse": (xccm.inverse, (img.assign_coords(channel=list("XYZ")), matrix), {}),
        "invert": (xccm.invert, (matrix,), {}),
        "delta_e": (xccm.delta_e, (rgb, rgb * 1.1, "ciede2000"), {}),
        "convert": (xccm.convert, (rgb, "lab"), {}),
        "linearize": (xccm.linearize, (img, "srgb"), {}),
        "encode": (xccm.encode, (img, "gamma"), {}),
        "extract_patches": (xccm.extract_patches, (img,), {"boxes": boxes}),
        "saturation_mask": (xccm.saturation_mask, (measured,), {}),
        "lightness_weights": (xccm.lightness_weights, (rgb, 0.5), {}),
    }[name]


@pytest.mark.parametrize("name", MUTATION_CALLS)
@examples(3)
@given(seed=seeds, lazy_inputs=st.booleans(), plain=st.booleans())
def test_inputs_are_never_mutated(name, seed, lazy_inputs, plain):
    func, args, kwargs = mutation_call(name, seed)
    if lazy_inputs:
        args = tuple(a.chunk() if isinstance(a, xr.DataArray) else a for a in args)
    if plain and name in ("apply", "inverse", "linearize"):  # numpy in, numpy out
        args = tuple(np.asarray(a) if isinstance(a, xr.DataArray) else a for a in args)
    inputs = [*args, *kwargs.values()]
    snaps = [snapshot(a) for a in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = func(*args, **kwargs)
        out = compute(out) if is_lazy(out) else out
    for a, snap in zip(inputs, snaps, strict=True):
        assert_unchanged(a, snap)
    # nor is the result a view of an input: writing into it leaves the inputs alone
    result = out.values if isinstance(out, xr.DataArray) else out
    if isinstance(result, np.ndarray) and result.flags.writeable:
        result[...] = 0
        for a, snap in zip(inputs, snaps, strict=True):
            assert_unchanged(a, snap)


# ---------------------------------------------------------------------------------------------
# the error contract


@dataclass
class Case:
    """A bad call: what it is, the call, the words its error may name, must it raise."""

    what: str
    call: Callable[[], object]
    names: tuple[str, ...]
    must_raise: bool = True
    also: tuple[type[BaseException], ...] = ()  # other documented errors (a missing file)


def check_contract(case: Case) -> None:
    """The call raises an allowed error naming the argument (or, if allowed, succeeds)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = case.call()
            if is_lazy(out):
                compute(out)  # errors that depend on values are raised on compute
    except (*ALLOWED, *case.also) as err:
        module = type(err).__module__
        assert module in ("builtins", "numpy.linalg") or module.startswith("xccm"), (
            f"{case.what}: an internal {module}.{type(err).__name__}: {err}"
        )
        assert not isinstance(err, UnicodeError), f"{case.what}: {err!r}"
        message = str(err)
        named = [n for n in case.names if re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", message)]
        assert named, f"{case.what}: message names none of {case.names}: {message!r}"
        return
    assert not case.must_raise, f"{case.what}: accepted"


def bad_value(draw, kind: str):
    """A value of the wrong type or dtype for an array argument."""
    return draw(
        st.sampled_from(
            {
                "array": [None, "abc", 3.5, {"a": 1}, ["x", "y", "z"]],
                "dtype": ["U3", object, bool, np.complex128, "datetime64[ns]", "m8[s]"],
            }[kind]
        )
    )


def with_dtype(obj, dtype):
    """``obj`` with its values cast to a bad dtype (Dask-backed stays Dask-backed)."""
    values = np.asarray(obj).astype(dtype) if np.dtype(dtype).kind != "M" else None
    if values is None:
        values = np.full(np.shape(obj), np.datetime64("2024-01-01"), dtype=dtype)
    if isinstance(obj, xr.DataArray):
        out = obj.copy(data=values)
        return out.chunk() if obj.chunks is not None else out
    return values


#: Unknown names, some a typo of a valid one (issue 12 §2.3: no undocumented aliases).
bad_names = st.sampled_from(
    ["bogus", "", "  ", "lab2", "nope-nope", "cie2000", "de2000", "linear!", "afine"]
) | st.integers(-1, 3)


@st.composite
def fit_cases(draw) -> Case:
    measured, reference = patch_data(draw(seeds), draw(st.integers(1, 3)), 8)
    as_dask = draw(st.booleans())
    if as_dask:
        measured, reference = measured.chunk({"time": 1}), reference.chunk()
    kwargs: dict = {}
    args = [measured, reference]
    kind = draw(
        st.sampled_from(
            [
                "measured_dtype",
                "reference_dtype",
                "measured_type",
                "reference_type",
                "dim",
                "no_channel",
                "sizes",
                "empty",
                "all_nan",
                "weights",
                "model",
                "init",
                "min_samples",
                "max_iter",
                "sample_dims",
                "loss",
                "loss_args",
                "plain",
                "dataset",
            ]
        )
    )
    names: tuple[str, ...]
    if kind == "measured_dtype":
        args[0], names = with_dtype(measured, bad_value(draw, "dtype")), ("measured",)
    elif kind == "reference_dtype":
        args[1], names = with_dtype(reference, bad_value(draw, "dtype")), ("reference",)
    elif kind == "measured_type":
        args[0], names = bad_value(draw, "array"), ("measured",)
    elif kind == "reference_type":
        args[1] = draw(st.sampled_from([None, "abc", reference.values, reference.values.tolist()]))
        names = ("reference",)
    elif kind == "dim":
        kwargs["dim"] = draw(st.sampled_from(["band", 0, None, ("channel",)]))
        names = ("dim", "measured")
    elif kind == "no_channel":
        which = draw(st.integers(0, 1))
        args[which] = args[which].isel(channel=0)
        names = (("measured", "reference")[which],)
    elif kind == "sizes":
        args[1] = reference.isel(patch=slice(0, 5)).drop_vars("patch")
        names = ("patch",)
    elif kind == "empty":
        which, d = draw(st.sampled_from([(0, "patch"), (0, "channel"), (1, "channel")]))
        args[which] = args[which].isel({d: slice(0, 0)})
        names = (("measured", "reference")[which],)
    elif kind == "all_nan":
        args[0] = measured * np.nan
        names = ("sample", "samples", "measured")
    elif kind == "weights":
        kwargs["weights"] = draw(
            st.sampled_from(
                [
                    np.full(8, np.inf),  # issue 12 §2.1
                    np.r_[np.inf, np.ones(7)],
                    np.ones(5),
                    -np.ones(8),
                    np.ones((8, 3)),
                    xr.DataArray(np.ones((8, 3)), dims=("patch", "channel")),
                    xr.DataArray(np.ones(3), dims="time"),
                    xr.DataArray(np.array(list("abcdefgh")), dims="patch"),
                    xr.DataArray(-np.ones(8), dims="patch").chunk(),
                ]
            )
        )
        names = ("weights",)
    elif kind == "model":
        kwargs["model"], names = draw(bad_names | st.just("Affine")), ("model",)
    elif kind == "init":
        kwargs["init"], names = draw(bad_names | st.none()), ("init",)
    elif kind == "min_samples":
        kwargs["min_samples"] = draw(st.sampled_from([-1, 1.5, "3", True, np.nan]))
        names = ("min_samples",)
    elif kind == "max_iter":
        kwargs["max_iter"] = draw(st.sampled_from([-1, 1.5, "3", True, None]))
        names = ("max_iter",)
    elif kind == "sample_dims":
        # the last four are issue 12 §3 (0, repeats) and §2.2 (a dim the reference lacks)
        kwargs["sample_dims"] = draw(
            st.sampled_from(
                [(), ("nope",), ("channel",), "nope", 0, ("patch", "patch"), "time", [1.5]]
            )
        )
        names = ("sample_dims", "sample dim", "nope")
    elif kind == "loss":
        kwargs["loss"], names = draw(bad_names), ("loss",)
    elif kind == "loss_args":
        kwargs["loss"] = "cie76"
        kwargs["max_iter"] = 1
        args[1] = reference.assign_coords(channel=["R", "G", "B"]).assign_attrs(space="srgb-linear")
        arg, value = draw(
            st.sampled_from(
                [
                    ("rgb_space", "nope"),
                    ("rgb_space", 3),
                    ("reference_space", "nope"),
                    ("reference_space", "lab-d99"),
                    ("illuminant", "D99"),
                    ("illuminant", (0.3,)),
                    ("standard", "nope"),
                    ("mask", np.ones(5, bool)),
                    ("mask", xr.DataArray(np.array(list("abcdefgh")), dims="patch")),
                    ("saturation", (1.0,)),
                    ("saturation", "nope"),
                    ("lightness_power", "x"),
                    ("reference_space", None),  # with attrs["space"] None: issue 12 §2.4
                ]
            )
        )
        kwargs[arg] = value
        names = (arg, arg.removesuffix("_space"))
    elif kind == "plain":
        args = draw(
            st.sampled_from(
                [
                    [np.ones(3), np.ones(3)],
                    [np.ones((5, 3)), np.ones((4, 3))],
                    [np.ones((5, 3)), np.ones((5, 3), "U1")],
                    [np.ones((2, 5, 3)), np.ones((3, 5, 3))],
                ]
            )
        )
        names = ("measured", "reference", "sample", "axis_0")
    else:  # a Dataset where a DataArray belongs
        which = draw(st.integers(0, 1))
        args[which] = args[which].to_dataset(name="v")
        names = (("measured", "reference")[which],)
    return Case(f"fit {kind} {kwargs}", lambda: xccm.fit(*args, **kwargs), names)


@st.composite
def apply_cases(draw) -> Case:
    func = draw(st.sampled_from([xccm.apply, xccm.inverse]))
    img = image_data(draw(seeds), (2, 3, 3), draw(st.sampled_from([np.float32, np.float64])))
    if draw(st.booleans()):
        img = img.chunk({"time": 1})
    matrix = xr.DataArray(np.eye(3) * 2, dims=("channel_in", "channel"))
    args, kwargs = [img, matrix], {}
    kind = draw(
        st.sampled_from(
            [
                "image_dtype",
                "matrix_dtype",
                "image_type",
                "matrix_type",
                "matrix_shape",
                "matrix_dims",
                "rows",
                "batch",
                "dim",
                "split",
                "scale",
                "singular",
                "nan",
                "model",
            ]
        )
    )
    must_raise = True
    if kind == "image_dtype":
        args[0], names = with_dtype(img, bad_value(draw, "dtype")), ("image", "corrected")
    elif kind == "matrix_dtype":
        args[1], names = with_dtype(matrix, bad_value(draw, "dtype")), ("matrix",)
    elif kind == "image_type":
        args[0], names = bad_value(draw, "array"), ("image", "corrected")
    elif kind == "matrix_type":
        bad = [None, "abc", {"a": 1}, [["a"]], matrix.to_dataset(name="ccm")]  # Dataset: §3
        args[1], names = draw(st.sampled_from(bad)), ("matrix",)
    elif kind == "matrix_shape":
        shapes = [(5, 3), (3,), (2, 3, 3), (), (0, 3), (2, 2), (0, 0)]
        shape = draw(st.sampled_from(shapes if func is xccm.apply else [*shapes, (3, 5)]))
        kind = f"{kind} {shape}"
        args[1], names = np.ones(shape), ("matrix",)
    elif kind == "matrix_dims":
        args[1] = matrix.rename(channel_in=draw(st.sampled_from(["a", "channel_out"])))
        names = ("matrix",)
    elif kind == "rows":
        labels = draw(st.sampled_from([list("XYZ"), list("RGR"), [0, 1, 2]]))  # ints: §3
        labelled = "channel_in" if func is xccm.apply else "channel"  # what meets the image
        args[1] = matrix.assign_coords({labelled: labels})
        names = ("matrix", labelled)
    elif kind == "batch":
        frames = draw(st.sampled_from([("time", 3), ("camera", 2)]))
        args[1] = matrix.expand_dims({frames[0]: frames[1]}).copy()
        names = ("matrix",)
    elif kind == "dim":
        kwargs["dim"], names = draw(st.sampled_from(["band", 0, None])), ("dim", "image", "matrix")
    elif kind == "split":
        args[0], names = img.chunk({"channel": 2}), ("image", "corrected")
    elif kind == "scale":
        bad = ["a", [1.0, 2.0], np.ones(3), True, {"a": 1}, 0, -1.0, np.nan, np.inf]  # §2.5
        kwargs["scale"] = draw(st.sampled_from(bad))
        names = ("scale",)
        func = xccm.apply
    elif kind == "singular":
        args[1] = draw(st.sampled_from([np.zeros((3, 3)), np.ones((4, 3))]))
        names, func = ("matrix", "singular"), xccm.inverse
    elif kind == "nan":  # NaN matrices give NaN colours: allowed, as is an error
        args[1] = matrix * np.nan
        names, must_raise = ("matrix",), False
    else:
        args[1] = matrix.assign_attrs(model="affine")
        names = ("matrix", "model")
    return Case(f"{func.__name__} {kind}", lambda: func(*args, **kwargs), names, must_raise)


@st.composite
def invert_cases(draw) -> Case:
    value = draw(
        st.sampled_from(
            [
                np.ones((0, 0)),  # issue 12 §3
                np.ones(3),
                np.ones((3, 5)),
                np.ones((5, 3)),
                np.zeros((3, 3)),
                np.ones((4, 3)),
                np.eye(3).astype("U3"),
                np.eye(3).astype(object),
                np.eye(3).astype(bool),
                np.eye(3).astype(complex),
                None,
                "abc",
                xr.DataArray(np.eye(3), dims=("a", "b")),
                xr.DataArray(np.eye(3), dims=("channel_in", "channel"), attrs={"model": "affine"}),
                xr.DataArray(np.ones((4, 3)), dims=("channel_in", "channel")),
            ]
        )
    )
    must_raise = True
    if draw(st.integers(0, 4)) == 0:  # NaN or inf: a NaN inverse or an error, nothing else
        value, must_raise = (
            np.where(np.eye(3) > 0, draw(st.sampled_from([np.nan, np.inf])), 0),
            False,
        )
    if draw(st.booleans()):
        value = value.chunk() if isinstance(value, xr.DataArray) else value
    return Case(f"invert {value!r}", lambda: xccm.invert(value), ("matrix",), must_raise)


@st.composite
def colour_cases(draw) -> Case:
    """delta_e and convert."""
    _, reference = patch_data(draw(seeds), 1, 4)
    rgb = reference.assign_coords(channel=["R", "G", "B"])
    if draw(st.booleans()):
        rgb = rgb.chunk({"patch": 2})
    func = draw(st.sampled_from(["delta_e", "convert"]))
    args = [rgb, rgb * 1.1] if func == "delta_e" else [rgb, "lab"]
    kwargs: dict = {}
    kind = draw(
        st.sampled_from(
            [
                *("dtype", "channels", "type", "dim", "labels", "option", "method", "to"),
                *("broadcast", "empty", "nonfinite"),
            ]
        )
    )
    first = "sample" if func == "delta_e" else "obj"
    if kind == "dtype":
        args[0], names = with_dtype(rgb, bad_value(draw, "dtype")), (first,)
    elif kind == "channels":
        args[0], names = rgb.isel(channel=slice(0, 2)).drop_vars("channel"), (first,)
    elif kind in ("empty", "nonfinite"):  # a result (empty, or NaN where a value is), or an error
        bad = (
            rgb.isel(patch=slice(0, 0)) if kind == "empty" else rgb.where(rgb.patch != "p0", np.inf)
        )
        args[0] = bad
        if func == "delta_e":
            args[1] = args[1].isel(patch=slice(0, 0)) if kind == "empty" else args[1]
        return Case(f"{func} {kind}", lambda: getattr(xccm, func)(*args), (first,), False)
    elif kind == "type":
        args[0] = draw(st.sampled_from([None, "abc", rgb.values, rgb.to_dataset(name="v")]))
        if func == "delta_e":
            args[1] = rgb  # a plain sample with a DataArray reference is allowed
        names = (first,)
        must_raise = not (func == "delta_e" and isinstance(args[0], np.ndarray))
        return Case(f"{func} {kind}", lambda: getattr(xccm, func)(*args), names, must_raise)
    elif kind == "dim":
        kwargs["dim"], names = draw(st.sampled_from(["band", 0])), ("dim", first, "band", "0")
    elif kind == "labels":
        args[0], names = rgb.assign_coords(channel=["L", "a", "b"]), (first,)
    elif kind == "option":
        arg, value = draw(
            st.sampled_from(
                [
                    ("rgb_space", "nope"),
                    ("rgb_space", 3),
                    ("illuminant", "D99"),
                    ("illuminant", (0.3,)),
                    ("illuminant", (0.3, -0.1)),
                    ("illuminant", 5),
                    ("adaptation", "nope"),
                    ("source" if func == "convert" else "sample_space", "nope"),
                    ("source" if func == "convert" else "reference_space", "lab"),
                    ("source" if func == "convert" else "sample_space", 3),
                ]
            )
        )
        if arg == "adaptation":
            kwargs["illuminant"] = "A"  # adaptation is used where the whites differ
        kwargs[arg] = value
        names = (arg, arg.removesuffix("_space"), "obj")
    elif kind == "method":
        if func == "delta_e":
            args.append(draw(bad_names))
            names = ("method",)
        else:
            kwargs["standard"] = "nope"
            return Case(
                "delta_e standard",
                lambda: xccm.delta_e(rgb, rgb, **kwargs),
                ("standard",),
            )
    elif kind == "to":
        args = [rgb, draw(bad_names | st.just("luv") | st.none())]
        func, names = "convert", ("to",)
    else:
        return Case(
            "delta_e broadcast",
            lambda: xccm.delta_e(np.ones((2, 3)), np.ones((3, 3))),
            ("sample", "reference"),
        )
    return Case(
        f"{func} {kind} {args[1:]} {kwargs}", lambda: getattr(xccm, func)(*args, **kwargs), names
    )


@st.composite
def linearize_cases(draw) -> Case:
    func = draw(st.sampled_from([xccm.linearize, xccm.encode]))
    x = image_data(draw(seeds), (1, 2, 2), np.float64)
    if draw(st.booleans()):
        x = x.chunk()
    kind = draw(st.sampled_from(["method", "gamma", "scale", "integer", "dtype", "type"]))
    args, kwargs = [x, "gamma"], {}
    if kind == "method":
        coeffs = xr.DataArray(np.ones((2, 2)), dims=("a", "b"))
        args[1], names = draw(bad_names | st.none() | st.just(coeffs)), ("method",)
    elif kind == "gamma":
        kwargs["gamma"] = draw(st.sampled_from([0, -1.0, np.nan, np.inf, "2", None, [2.0]]))
        names = ("gamma",)
    elif kind == "scale":
        kwargs["scale"] = draw(st.sampled_from([0, -1.0, np.nan, np.inf, "a", [1.0, 2.0]]))
        names = ("scale",)
    elif kind == "integer":
        args[0], names = (x * 255).astype(np.uint8), ("x", "scale")
    elif kind == "dtype":
        args[0], names = with_dtype(x, bad_value(draw, "dtype")), ("x",)
    else:  # a scalar number is fine
        args[0] = draw(st.sampled_from([None, "abc", {"a": 1}, ["x", "y", "z"]]))
        names = ("x",)
    return Case(
        f"{func.__name__} {kind} {args[0]!r:.20} {kwargs}", lambda: func(*args, **kwargs), names
    )


@st.composite
def patches_cases(draw) -> Case:
    img = image_data(draw(seeds), (2, 6, 6), np.float32)
    if draw(st.booleans()):
        img = img.chunk({"time": 1})
    kwargs: dict = {"boxes": [[0, 2, 0, 2], [2, 4, 2, 4]]}
    kind = draw(
        st.sampled_from(
            [
                "boxes",
                "labels",
                "both",
                "spatial",
                "reduce",
                "image",
                "split",
                "frames",
                "patch_dim",
            ]
        )
    )
    args = [img]
    if kind == "boxes":
        kwargs["boxes"] = draw(
            st.sampled_from(
                [
                    [[0, 2, 0, 9]],
                    [[2, 2, 0, 1]],
                    [[-1, 2, 0, 1]],
                    [[0, 2, 0, np.nan]],
                    [[0, 2, 0, 1.5]],
                    [[0, 2, 0]],
                    [0, 2, 0, 2],
                    np.ones((1, 2, 4), int),
                    {"a": (0, 2), "b": (0, 1, 0, 1)},
                    [["a", "b", "c", "d"]],
                    [],
                    xr.DataArray([[0, 2, 0, 2]], dims=("patch", "corner")),
                    xr.DataArray(
                        [[0, 2, 0, 2]], dims=("patch", "bound"), coords={"bound": list("abcd")}
                    ),
                ]
            )
        )
        names = ("boxes",)
    elif kind == "labels":
        del kwargs["boxes"]
        lab = draw(
            st.sampled_from(
                [
                    np.ones((6, 6)),
                    np.zeros((6, 6), int),
                    np.full((6, 6), 3),
                    np.ones((6, 5), int),
                ]
            )
        )
        dims = draw(st.sampled_from([("y", "x"), ("y", "z")]))
        kwargs["labels"] = xr.DataArray(lab, dims=dims)
        if draw(st.booleans()):
            kwargs["names"] = ["only"]
        names = ("labels", "names")
    elif kind == "both":
        if draw(st.booleans()):
            del kwargs["boxes"]
        else:
            kwargs["labels"] = xr.DataArray(np.ones((6, 6), int), dims=("y", "x"))
        names = ("boxes", "labels")
    elif kind == "spatial":
        kwargs["spatial_dims"] = draw(st.sampled_from([("y", "z"), ("time", "x")]))
        names = ("spatial_dims", "spatial dim", "image", "z", "boxes")
    elif kind == "reduce":
        kwargs["reduce"], names = draw(bad_names | st.just("max")), ("reduce",)
    elif kind == "image":
        args[0] = draw(st.sampled_from([img.values, None, "abc", with_dtype(img, "U3")]))
        names = ("image",)
    elif kind == "split":
        args[0], names = img.chunk({"y": 3}), ("image",)
    elif kind == "frames":
        kwargs["boxes"] = xr.DataArray(
            np.tile([[0, 2, 0, 2]], (3, 1, 1)), dims=("time", "patch", "bound")
        )
        names = ("boxes",)
    else:
        del kwargs["boxes"]
        kwargs["labels"] = xr.DataArray(np.ones((6, 6), int), dims=("y", "x"))
        kwargs["patch_dim"] = draw(st.sampled_from(["channel", "time", "y"]))
        names = ("patch_dim",)
    return Case(
        f"extract_patches {kind} {kwargs}",
        lambda: xccm.extract_patches(*args, **kwargs),
        names,
    )


@st.composite
def grid_cases(draw) -> Case:
    kwargs = {"top_left": (1, 2), "patch_size": 3, "pitch": 5, "shape": (4, 6)}
    arg, value = draw(
        st.sampled_from(
            [
                ("top_left", (0,)),  # issue 12 §3: was an IndexError
                ("top_left", (np.nan, 1)),
                ("top_left", "ab"),
                ("patch_size", "a"),
                ("patch_size", np.nan),
                ("patch_size", -3),
                ("patch_size", 0),
                ("patch_size", (1, 2, 3)),
                ("patch_size", None),
                ("pitch", "a"),
                ("pitch", np.inf),
                ("pitch", (1, 2, 3)),
                ("shape", (4,)),
                ("shape", (0, 6)),
                ("shape", (-1, 6)),
                ("shape", (4.5, 6)),
                ("shape", "ab"),
                ("shape", None),
                ("names", ["a"]),
                ("patch_dim", "bound"),
            ]
        )
    )
    kwargs[arg] = value
    return Case(f"grid_boxes {arg}={value!r}", lambda: xccm.grid_boxes(**kwargs), (arg,))


@st.composite
def chart_cases(draw, tmp) -> Case:
    if draw(st.booleans()):
        arg, value = draw(
            st.sampled_from(
                [
                    ("name", 3),
                    ("name", "nope"),
                    ("name", None),
                    ("space", "nope"),
                    ("space", 3),
                    ("edition", 2014),
                    ("edition", "1999"),
                ]
            )
        )
        names = (arg, "chart") if arg == "name" else (arg,)
        return Case(f"chart {arg}={value!r}", lambda: xccm.chart(**{arg: value}), names)
    kwargs: dict = {"space": "lab"}
    good = pd.DataFrame({"patch": ["a", "b"], "L": [50.0, 60], "a": [1.0, 2], "b": [3.0, 4]})
    kind = draw(st.sampled_from(["array", "frame", "csv", "option"]))
    if kind == "array":
        table = draw(
            st.sampled_from(
                [
                    np.ones((0, 3)),
                    np.ones((2, 2)),
                    np.ones(3),
                    np.ones((2, 3, 1)),
                    [[np.nan, 1, 2]],
                    [[1, 2, "x"]],
                    None,
                    xr.DataArray(np.ones((2, 4)), dims=("patch", "channel")),
                    xr.DataArray(
                        np.ones((2, 3)), dims=("patch", "channel"), coords={"channel": list("RGB")}
                    ),
                ]
            )
        )
        names = ("table", "DataArray")
    elif kind == "frame":
        table = draw(
            st.sampled_from(
                [
                    good.drop(columns="b"),
                    good.rename(columns={"L": "X"}),
                    good.assign(L=["x", "y"]),
                    good.assign(L=[np.nan, 1.0]),
                    good.assign(patch=["a", "a"]),
                    good.iloc[:0],
                    good.assign(extra=[1.0, 2.0]),
                ]
            )
        )
        names = ("table", "DataFrame")
    elif kind == "csv":
        text = draw(
            st.sampled_from(
                [
                    "patch,L,a,b\n",
                    "patch,L,a\nw,1,2\n",
                    "patch,L,a,b\nw,1,2,x\n",
                    "patch,L,a,b\nw,1,,3\n",
                    "patch,L,a,b\nw,1,2,3\nw,1,2,3\n",
                    "L,a,b,c\n1,2,3,4\n",
                    # issue 12 §3: empty, ragged, an unterminated quote, binary garbage
                    "",
                    "patch,L,a,b\nw,1,2,3,4,5\n",
                    'patch,L,a,b\n"w,1,2,3\n',
                    "\x00\x01\x02\xff\xfe binary",
                ]
            )
        )
        path = tmp / f"t{abs(hash(text))}.csv"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        table, names = path, ("table", "CSV", str(path))
    else:
        table = good
        arg, value = draw(
            st.sampled_from(
                [
                    ("space", "nope"),
                    ("space", 3),
                    ("illuminant", 3),
                    ("rgb_space", 3),
                    ("name", 3),
                    ("patch_column", 3),
                    ("patch_column", "nope"),
                ]
            )
        )
        kwargs[arg] = value
        names = (arg,)
    return Case(
        f"chart_from_table {kind} {table!r:.200} {kwargs}",
        lambda: xccm.chart_from_table(table, **kwargs),
        names,
    )


@errors_settings
@given(case=fit_cases())
def test_fit_errors_name_the_argument(case):
    check_contract(case)


@errors_settings
@given(case=apply_cases() | invert_cases())
def test_apply_inverse_invert_errors_name_the_argument(case):
    check_contract(case)


@errors_settings
@given(case=colour_cases() | linearize_cases())
def test_colour_errors_name_the_argument(case):
    check_contract(case)


@errors_settings
@given(case=patches_cases() | grid_cases())
def test_patch_errors_name_the_argument(case):
    check_contract(case)


def test_chart_errors_name_the_argument(tmp_path):
    @errors_settings
    @given(case=chart_cases(tmp_path))
    def check(case):
        check_contract(case)

    check()
