"""Shared fixtures: synthetic patch colours, a known matrix, images, and a compute counter."""

from __future__ import annotations

import os

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, settings

import xccm  # noqa: F401  (registers .ccm)

# Hypothesis profiles (tests/test_properties.py): "default" keeps the suite fast and
# reproducible; "attack" (HYPOTHESIS_PROFILE=attack) runs >= 500 random examples per property,
# for the benchmark/CI run.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "default", max_examples=8, deadline=None, derandomize=True, suppress_health_check=_SLOW_OK
)
settings.register_profile(
    "attack", max_examples=500, deadline=None, suppress_health_check=_SLOW_OK, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


class CountingScheduler:
    """A Dask scheduler that raises once more than ``max_computes`` computes happen."""

    def __init__(self, max_computes: int = 0) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"too many dask computations: {self.total_computes} > {self.max_computes}"
            )
        return dask.get(dsk, keys, **kwargs)


def raise_if_dask_computes(max_computes: int = 0):
    """Context manager under which any Dask compute (beyond ``max_computes``) raises."""
    return dask.config.set(scheduler=CountingScheduler(max_computes))


def lstsq(s: np.ndarray, d: np.ndarray, w: np.ndarray | None = None, affine: bool = False):
    """Reference solution: numpy.linalg.lstsq on sqrt(w)-scaled rows, as the seed states."""
    if affine:
        s = np.concatenate([s, np.ones((*s.shape[:-1], 1))], axis=-1)
    if w is not None:
        root = np.sqrt(w)[:, None]
        s, d = s * root, d * root
    return np.linalg.lstsq(s, d, rcond=None)[0]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)


@pytest.fixture
def true_matrix() -> np.ndarray:
    """A plausible camera-to-sRGB affine matrix (3 rows of mixing, one offset row)."""
    return np.array(
        [
            [1.45, -0.30, 0.05],
            [-0.35, 1.40, -0.25],
            [-0.10, -0.10, 1.20],
            [0.01, -0.02, 0.015],
        ]
    )


def labelled_patches(meas, ref, patch):
    """Label as measured (time, patch, channel) RGB and reference (patch, channel) XYZ."""
    measured = xr.DataArray(
        meas,
        dims=("time", "patch", "channel"),
        coords={"time": np.arange(len(meas)), "patch": patch, "channel": ["R", "G", "B"]},
        attrs={"camera": "synthetic"},
    )
    reference = xr.DataArray(
        ref,
        dims=("patch", "channel"),
        coords={"patch": patch, "channel": ["X", "Y", "Z"]},
    )
    return measured, reference


@pytest.fixture
def patches(rng, true_matrix):
    """measured(time, patch, channel) and reference(patch, channel) with per-frame gains."""
    n_time, n_patch = 4, 24
    ref = rng.uniform(0.03, 0.9, size=(n_patch, 3))
    gains = np.linspace(0.8, 1.2, n_time)
    up, down = true_matrix[:3], true_matrix[3]
    camera = (ref - down) @ np.linalg.inv(up)  # so that camera @ up + down == ref
    meas = gains[:, None, None] * camera[None] + rng.normal(0, 0.01, (n_time, n_patch, 3))
    patch = [f"p{i:02d}" for i in range(n_patch)]
    return labelled_patches(meas, ref, patch)


@pytest.fixture
def image(rng) -> xr.DataArray:
    """A float32 (time, y, x, channel) stack with coords and attrs."""
    data = rng.uniform(0, 1, size=(4, 6, 5, 3)).astype(np.float32)
    return xr.DataArray(
        data,
        dims=("time", "y", "x", "channel"),
        coords={
            "time": np.arange(4),
            "y": np.arange(6) * 0.5,
            "x": np.arange(5) * 0.5,
            "channel": ["R", "G", "B"],
            "label": ("time", list("abcd")),
        },
        attrs={"units": "1", "source": "test"},
        name="image",
    )
