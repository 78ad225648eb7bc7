"""The ndarray kernels against closed forms and numpy.linalg."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import lstsq
from xccm import _kernels, _threads

needs_numba = pytest.mark.skipif(_kernels._numba() is None, reason="numba is not installed")
BACKENDS = ["numpy", pytest.param("numba", marks=needs_numba)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def reference_apply(x, m):
    """Float64 row-vector product, written out independently of the kernels."""
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    out = np.einsum("...i,...ij->...j", x, m[..., : x.shape[-1], :])
    if m.shape[-2] == x.shape[-1] + 1:
        out += m[..., -1, :]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("parallel", [False, True])
def test_apply_matrix_is_the_row_vector_product(rng, backend, dtype, affine, parallel):
    x = rng.random((5, 7, 3)).astype(dtype)
    m = rng.normal(size=(4 if affine else 3, 3)).astype(dtype)
    out = _kernels.apply_matrix(x, m, parallel=parallel, backend=backend)
    assert out.dtype == dtype and out.shape == x.shape
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, reference_apply(x, m), rtol=rtol, atol=rtol)


@pytest.mark.parametrize(("n_in", "n_out"), [(3, 3), (4, 3), (3, 5), (1, 1)])
def test_apply_matrix_any_channel_counts(rng, backend, n_in, n_out):
    x = rng.random((6, 11, n_in))
    m = rng.normal(size=(n_in + 1, n_out))
    out = _kernels.apply_matrix(x, m, backend=backend)
    np.testing.assert_allclose(out, reference_apply(x, m), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "layout", ["channel_first", "sliced", "reversed", "fortran", "broadcast_frames"]
)
def test_apply_matrix_reads_any_strides_in_place(rng, backend, layout):
    base = rng.random((4, 3, 10, 12))  # (time, channel, y, x) in memory
    if layout == "channel_first":
        x = base.transpose(0, 2, 3, 1)  # seen channel-last, stored channel-first
    elif layout == "sliced":
        x = base.transpose(0, 2, 3, 1)[:, 1:9:2, ::3]
    elif layout == "reversed":
        x = base.transpose(0, 2, 3, 1)[::-1, :, ::-1]
    elif layout == "fortran":
        x = np.asfortranarray(base.transpose(0, 2, 3, 1))
    else:
        x = np.broadcast_to(base[:1].transpose(0, 2, 3, 1), (4, 10, 12, 3))
    m = rng.normal(size=(4, 3))
    out = _kernels.apply_matrix(x, m, backend=backend)
    np.testing.assert_allclose(out, reference_apply(x, m), rtol=1e-12, atol=1e-12)


def test_apply_matrix_writes_in_the_input_layout(rng, backend):
    x = rng.random((2, 3, 8, 9)).astype(np.float32).transpose(0, 2, 3, 1)
    out = _kernels.apply_matrix(x, np.eye(3, dtype=np.float32), backend=backend)
    # Same stride order as the input: channel-first memory stays channel-first.
    assert np.argsort(out.strides).tolist() == np.argsort(x.strides).tolist()
    np.testing.assert_array_equal(out, x)


def test_apply_matrix_broadcasts_batch_matrices(rng, backend):
    x = rng.random((4, 6, 5, 3))
    m = rng.normal(size=(4, 1, 1, 4, 3))  # one affine matrix per frame
    out = _kernels.apply_matrix(x, m, backend=backend)
    for t in range(4):
        np.testing.assert_allclose(
            out[t], reference_apply(x[t], m[t, 0, 0]), rtol=1e-12, atol=1e-12
        )


def test_apply_matrix_one_matrix_per_pixel(rng):
    x = rng.random((5, 1000, 3))
    m = rng.normal(size=(5, 1000, 3, 3))  # more matrices than the per-matrix loop takes
    out = _kernels.apply_matrix(x, m)
    np.testing.assert_allclose(out, reference_apply(x, m), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32])
def test_apply_matrix_reads_integers_as_float32(rng, backend, dtype):
    info = np.iinfo(dtype)
    x = rng.integers(max(info.min, -1000), min(info.max, 60000), (3, 17, 3)).astype(dtype)
    m = rng.normal(size=(4, 3)).astype(np.float32)
    out = _kernels.apply_matrix(x, m, dtype=np.float32, backend=backend)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference_apply(x, m), rtol=1e-5, atol=1e-2)


@needs_numba
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("layout", ["channel_last", "channel_first", "sliced"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_apply_matrix_across_thread_parts(rng, monkeypatch, parallel, layout, dtype):
    """A parallel call splits the rows into one contiguous part per thread: pixels on both
    sides of every part boundary are each computed from their own pixel only (a NaN stays in
    its pixel), whatever the layout."""
    nk = _kernels._numba()
    monkeypatch.setattr(_threads, "MIN_SPLIT_ROWS", 1000)
    monkeypatch.setattr(_threads, "_threads", lambda: 3)
    parts = []
    run_split = nk.run_split

    def spy(kernel, n, args_of, parallel, min_rows=None):
        results = run_split(kernel, n, args_of, parallel, min_rows)
        parts.append(len(results))
        return results

    monkeypatch.setattr(nk, "run_split", spy)
    n = 3 * 1000 + 7
    planes = rng.integers(0, 256, (3, n)) if dtype == np.uint8 else rng.random((3, n))
    if layout == "channel_first":
        x = planes.astype(dtype).T
    elif layout == "channel_last":
        x = np.ascontiguousarray(planes.astype(dtype).T)
    else:  # rows 4 apart, channels 1 apart: neither layout's fast path
        wide = np.zeros((n, 4), dtype)
        wide[:, :3] = planes.T
        x = wide[:, :3]
    nan_at = [0, n // 3 - 1, n // 3, 2 * n // 3 - 1, 2 * n // 3, n - 1]
    if dtype == np.float32:
        x[nan_at, 1] = np.nan
    m = rng.normal(size=(4, 3)).astype(np.float32)
    out = _kernels.apply_matrix(x, m, dtype=np.float32, parallel=parallel, backend="numba")
    assert parts == [3 if parallel else 1]
    want = reference_apply(x, m)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)
    if dtype == np.float32:
        assert np.isnan(out[nan_at]).all()
        assert np.isfinite(np.delete(out, nan_at, axis=0)).all()


def test_run_split_waits_for_every_part_and_raises_their_errors(monkeypatch):
    monkeypatch.setattr(_threads, "_threads", lambda: 4)
    seen = []

    def kernel(lo, hi):
        seen.append((lo, hi))
        if lo > 0:
            raise ValueError(f"part {lo}")
        return hi - lo

    with pytest.raises(ValueError, match="part"):
        _threads.run_split(kernel, 10, lambda lo, hi: (lo, hi), True, min_rows=2)
    assert sorted(seen) == [(0, 2), (2, 5), (5, 7), (7, 10)]

    def size(lo, hi):
        return hi - lo

    assert _threads.run_split(size, 10, lambda lo, hi: (lo, hi), True, min_rows=3) == [3, 3, 4]
    assert _threads.run_split(size, 10, lambda lo, hi: (lo, hi), False, min_rows=1) == [10]


def test_apply_matrix_never_promotes_float32(rng, backend):
    x = rng.random((3, 5, 3)).astype(np.float32)
    out = _kernels.apply_matrix(x, np.eye(3), dtype=np.float32, backend=backend)
    assert out.dtype == np.float32


def test_apply_matrix_handles_empty_input(backend):
    out = _kernels.apply_matrix(np.empty((0, 5, 3)), np.eye(3), backend=backend)
    assert out.shape == (0, 5, 3)


def test_apply_matrix_rejects_wrong_row_count(rng):
    with pytest.raises(ValueError, match="expected 3 \\(linear\\) or 4 \\(affine\\)"):
        _kernels.apply_matrix(rng.random((2, 3)), np.eye(5))


def test_gram_adds_up_over_blocks(rng, backend):
    s, d, w = rng.random((100, 3)), rng.random((100, 3)), rng.random(100)
    whole = _kernels.gram(s, d, w, backend=backend)
    parts = _kernels.gram(s[:37], d[:37], w[:37], backend=backend) + _kernels.gram(
        s[37:], d[37:], w[37:], backend=backend
    )
    np.testing.assert_allclose(parts, whole, rtol=1e-12)
    x = np.concatenate([s, np.ones((100, 1)), d], axis=1)
    np.testing.assert_allclose(whole[:7], x.T @ (w[:, None] * x), rtol=1e-12)
    assert whole[7, 0] == 100


def test_gram_leaves_out_non_finite_and_zero_weight_samples(rng, backend):
    s, d, w = rng.random((10, 3)), rng.random((10, 3)), np.ones(10)
    s[2, 1], d[5, 0], w[7] = np.nan, np.inf, 0.0
    keep = np.setdiff1d(np.arange(10), [2, 5, 7])
    g = _kernels.gram(s, d, w, backend=backend)
    np.testing.assert_allclose(g, _kernels.gram(s[keep], d[keep], backend=backend), rtol=1e-12)
    assert g[7, 0] == 7


def test_gram_rejects_negative_weights_and_takes_nan_as_zero(rng, backend):
    s, d, w = rng.random((5, 3)), rng.random((5, 3)), np.ones(5)
    w[3] = -1.0
    with pytest.raises(ValueError, match="weights must be non-negative"):
        _kernels.gram(s, d, w, backend=backend)
    w[3] = np.nan
    expected = _kernels.gram(s, d, np.where(np.isnan(w), 0, w), backend=backend)
    np.testing.assert_array_equal(_kernels.gram(s, d, w, backend=backend), expected)


@pytest.mark.parametrize("model", ["linear", "affine"])
@pytest.mark.parametrize("weighted", [False, True])
def test_solve_gram_matches_numpy_lstsq(rng, model, weighted):
    s, d = rng.random((24, 3)), rng.random((24, 3))
    w = rng.uniform(0.1, 3, 24) if weighted else None
    m = _kernels.solve_gram(_kernels.gram(s, d, w), 3, model=model)
    expected = lstsq(s, d, w, affine=model == "affine")
    np.testing.assert_allclose(m, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model", ["linear", "affine"])
def test_white_balance_is_ratio_of_means(rng, model):
    s, d = rng.random((24, 3)), rng.random((24, 3))
    m = _kernels.solve_gram(_kernels.gram(s, d), 3, model=model, init="white_balance")
    expected = np.diag(d.mean(axis=0) / s.mean(axis=0))
    if model == "affine":
        expected = np.vstack([expected, np.zeros(3)])
    np.testing.assert_allclose(m, expected, rtol=1e-12, atol=0)


def test_solve_gram_marks_underdetermined_batches_nan(rng):
    s, d = rng.random((2, 5, 3)), rng.random((2, 5, 3))
    s[1, :3] = np.nan  # two valid samples left: too few for 3 unknowns per column
    with pytest.warns(_kernels.InsufficientSamplesWarning, match="1 of 2 batch elements"):
        m = _kernels.solve_gram(_kernels.gram(s, d), 3)
    assert np.isnan(m[1]).all()
    np.testing.assert_allclose(m[0], lstsq(s[0], d[0]), rtol=1e-10)


@needs_numba
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize(("n_in", "n_out"), [(3, 3), (4, 3), (3, 2)])
def test_gram_backends_agree_on_batches_and_broadcasts(rng, parallel, n_in, n_out):
    s = rng.random((3, 40_000, n_in)).astype(np.float32)  # long enough to split across threads
    d, w = rng.random((40_000, n_out)), rng.random((3, 40_000))
    w[0, ::5] = 0.0
    s[1, ::7] = np.nan
    fast = _kernels.gram(s, d, w, parallel=parallel, backend="numba")
    slow = _kernels.gram(s, d, w, backend="numpy")
    np.testing.assert_allclose(fast, slow, rtol=1e-11)


def test_gram_over_several_sample_axes(rng, backend):
    s, d = rng.random((2, 5, 6, 3)), rng.random((2, 5, 6, 3))
    g = _kernels.gram(s, d, n_sample_axes=2, backend=backend)
    flat = _kernels.gram(s.reshape(2, 30, 3), d.reshape(2, 30, 3), backend=backend)
    np.testing.assert_allclose(g, flat, rtol=1e-12)


def test_solve_gram_flags_rank_deficient_systems(rng):
    grey = np.repeat(rng.random((10, 1)), 3, axis=1)  # every sample on the grey axis: rank 1
    s = np.stack([rng.random((10, 3)), grey])
    with pytest.warns(_kernels.InsufficientSamplesWarning):
        m = _kernels.solve_gram(_kernels.gram(s, rng.random((2, 10, 3))), 3)
    assert np.isfinite(m[0]).all() and np.isnan(m[1]).all()


def test_solve_gram_raises_when_nothing_can_be_fitted(rng):
    s = np.full((4, 3), np.nan)
    with pytest.raises(ValueError, match="no valid sample"):
        _kernels.solve_gram(_kernels.gram(s, rng.random((4, 3))), 3)
    with pytest.raises(ValueError, match="at least 4 valid samples"):
        _kernels.solve_gram(
            _kernels.gram(rng.random((3, 3)), rng.random((3, 3))), 3, model="affine"
        )


def test_invert_matrix_closed_forms(rng):
    up, down = rng.normal(size=(3, 3)) + 3 * np.eye(3), rng.normal(size=(1, 3))
    np.testing.assert_allclose(_kernels.invert_matrix(up), np.linalg.inv(up), rtol=1e-12)
    inv = _kernels.invert_matrix(np.vstack([up, down]))
    np.testing.assert_allclose(inv[:3], np.linalg.inv(up), rtol=1e-12)
    np.testing.assert_allclose(inv[3:], -down @ np.linalg.inv(up), rtol=1e-12)
    x = rng.random((10, 3))
    d = x @ up + down
    np.testing.assert_allclose(_kernels.apply_matrix(d, inv), x, rtol=1e-10)
    np.testing.assert_allclose((d - down) @ np.linalg.inv(up), x, rtol=1e-10)


def test_invert_matrix_rejects_singular_and_non_square():
    singular = np.array([[1.0, 2, 3], [2, 4, 6], [0, 0, 1]])
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        _kernels.invert_matrix(singular)
    with pytest.raises(np.linalg.LinAlgError, match="index \\(1,\\)"):
        _kernels.invert_matrix(np.stack([np.eye(3), singular]))
    with pytest.raises(np.linalg.LinAlgError, match="shape \\(3, 4\\)"):
        _kernels.invert_matrix(np.ones((3, 4)))


def test_singular_mask_of_gram_matrices_from_eigenvalues_matches_the_svd(rng):
    x = rng.random((200, 24, 4))
    x[5, :, 3] = 2 * x[5, :, 0]  # rank-deficient
    x[7, :, 2] = x[7, :, 1] + 1e-9 * rng.random(24)  # ill-conditioned
    x[9, :, 1] = np.nan  # non-finite: not flagged, propagates
    gram = np.einsum("bij,bik->bjk", x, x)
    flags = _kernels.singular_mask(gram, _kernels.MAX_GRAM_CONDITION, symmetric=True)
    np.testing.assert_array_equal(flags, _kernels.singular_mask(gram, _kernels.MAX_GRAM_CONDITION))
    assert np.flatnonzero(flags).tolist() == [5, 7]


def test_many_per_frame_matrices_of_large_frames_use_the_fused_kernel(rng, monkeypatch):
    # More matrices than _MAX_MATRIX_LOOP, each on a large frame: one kernel call a frame
    # (no broadcast-matmul temporaries); one matrix per pixel still takes the matmul.
    monkeypatch.setattr(_kernels, "_MAX_MATRIX_LOOP", 3)
    monkeypatch.setattr(_kernels, "_MIN_ROWS_PER_MATRIX", 64)
    calls = []
    block = _kernels._apply_block
    monkeypatch.setattr(_kernels, "_apply_block", lambda *a: calls.append(1) or block(*a))
    x = rng.random((5, 8, 8, 3)).astype(np.float32)
    m = rng.normal(size=(5, 1, 1, 3, 3)).astype(np.float32)
    out = _kernels.apply_matrix(x, m)
    assert len(calls) == 5 and out.dtype == np.float32
    np.testing.assert_allclose(out, (x[..., None, :] @ m)[..., 0, :], rtol=1e-5, atol=1e-6)
    per_pixel = rng.normal(size=(5, 8, 8, 3, 3)).astype(np.float32)
    calls.clear()
    out = _kernels.apply_matrix(x, per_pixel)
    assert not calls
    np.testing.assert_allclose(out, (x[..., None, :] @ per_pixel)[..., 0, :], rtol=1e-5, atol=1e-6)


def _threads_script(body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh process with xccm's ``_threads`` loaded alone as ``threads``.

    A deadlock then fails the test by the timeout instead of hanging the suite.
    """
    script = f"""{_THREADS_PREAMBLE}{body}"""
    run = [sys.executable, "-c", script, _threads.__file__]
    return subprocess.run(run, capture_output=True, text=True, timeout=60)


_THREADS_PREAMBLE = """
import concurrent.futures, importlib.util, sys, threading, time
spec = importlib.util.spec_from_file_location("threads", sys.argv[1])
threads = importlib.util.module_from_spec(spec)
spec.loader.exec_module(threads)
"""

_NESTED_SPLITS = """
threads._threads = lambda: 4
inner_parts = []

def inner(lo, hi):
    return hi - lo

def outer(lo, hi):
    got = threads.run_split(inner, 100, lambda a, b: (a, b), True, min_rows=1)
    inner_parts.append(len(got))
    return sum(got) + hi - lo

def caller(_):
    return threads.run_split(outer, 8, lambda lo, hi: (lo, hi), True, min_rows=1)

with concurrent.futures.ThreadPoolExecutor(8) as users:
    results = list(users.map(caller, range(16)))
assert results == [[102, 102, 102, 102]] * 16, results
assert set(inner_parts) == {1}, inner_parts
assert len(threads.run_split(inner, 100, lambda a, b: (a, b), True, min_rows=1)) == 4
"""


def test_run_split_inside_a_part_runs_on_its_thread():
    # Nested splitting could leave every pool thread waiting for work queued behind it: many
    # callers at once, each part splitting again, all finish (the inner calls serially).
    run = _threads_script(_NESTED_SPLITS)
    assert run.returncode == 0, run.stderr[-2000:]


def _lo_hi(lo, hi):
    return lo, hi


def _size(lo, hi):
    return hi - lo


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # Python 3.12's threads note
def test_run_split_in_a_forked_child_starts_its_own_threads(monkeypatch):
    # the parent's pool threads exist; the child gets its own (the patch is inherited)
    monkeypatch.setattr(_threads, "_threads", lambda: 2)
    assert _threads.run_split(_size, 10, _lo_hi, True, min_rows=1) == [5, 5]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as child:
        got = child.apply_async(_threads.run_split, (_size, 10, _lo_hi, True, 1)).get(timeout=60)
    assert got == [5, 5]


_SPLIT_AT_SHUTDOWN = """
threads._threads = lambda: 2
done = []

def add(lo, hi):
    done.append((lo, hi))
    return hi - lo

def worker():
    time.sleep(0.5)  # the main thread has ended: concurrent.futures takes no new work
    print(threads.run_split(add, 10, lambda lo, hi: (lo, hi), True, min_rows=1), sorted(done))

threading.Thread(target=worker).start()
"""


def test_run_split_after_the_main_thread_ended_runs_every_part_itself():
    run = _threads_script(_SPLIT_AT_SHUTDOWN)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[5, 5] [(0, 5), (5, 10)]", run.stderr[-2000:]
