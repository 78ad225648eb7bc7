"""The ndarray kernels against closed forms and numpy.linalg."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import lstsq

from xccm import _kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [False, True])
def test_apply_matrix_is_the_row_vector_product(rng, dtype, affine):
    x = rng.random((5, 7, 3)).astype(dtype)
    m = rng.normal(size=(4 if affine else 3, 3)).astype(dtype)
    expected = x.astype(np.float64) @ m[:3].astype(np.float64)
    if affine:
        expected += m[3]
    out = _kernels.apply_matrix(x, m)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_apply_matrix_broadcasts_batch_matrices(rng):
    x = rng.random((4, 6, 5, 3))
    m = rng.normal(size=(4, 1, 1, 4, 3))  # one affine matrix per frame
    out = _kernels.apply_matrix(x, m)
    for t in range(4):
        expected = x[t] @ m[t, 0, 0, :3] + m[t, 0, 0, 3]
        np.testing.assert_allclose(out[t], expected, rtol=1e-12)


def test_apply_matrix_reads_integers_as_requested_dtype():
    x = np.array([[0, 128, 255]], dtype=np.uint8)
    out = _kernels.apply_matrix(x, np.eye(3), dtype=np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.0, 128.0, 255.0]])


def test_apply_matrix_rejects_wrong_row_count(rng):
    with pytest.raises(ValueError, match="expected 3 \\(linear\\) or 4 \\(affine\\)"):
        _kernels.apply_matrix(rng.random((2, 3)), np.eye(5))


def test_gram_adds_up_over_blocks(rng):
    s, d, w = rng.random((100, 3)), rng.random((100, 3)), rng.random(100)
    whole = _kernels.gram(s, d, w)
    parts = _kernels.gram(s[:37], d[:37], w[:37]) + _kernels.gram(s[37:], d[37:], w[37:])
    np.testing.assert_allclose(parts, whole, rtol=1e-12)
    x = np.concatenate([s, np.ones((100, 1)), d], axis=1)
    np.testing.assert_allclose(whole[:7], x.T @ (w[:, None] * x), rtol=1e-12)
    assert whole[7, 0] == 100


def test_gram_leaves_out_non_finite_and_zero_weight_samples(rng):
    s, d, w = rng.random((10, 3)), rng.random((10, 3)), np.ones(10)
    s[2, 1], d[5, 0], w[7] = np.nan, np.inf, 0.0
    keep = np.setdiff1d(np.arange(10), [2, 5, 7])
    g = _kernels.gram(s, d, w)
    np.testing.assert_allclose(g, _kernels.gram(s[keep], d[keep]), rtol=1e-12)
    assert g[7, 0] == 7


@pytest.mark.parametrize("bad", [-1.0, np.nan])
def test_gram_rejects_negative_or_nan_weights(rng, bad):
    w = np.ones(5)
    w[3] = bad
    with pytest.raises(ValueError, match="weights must be non-negative"):
        _kernels.gram(rng.random((5, 3)), rng.random((5, 3)), w)


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
