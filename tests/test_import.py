"""What ``import xccm`` loads, and the names it serves lazily."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import xccm
from xccm import _kernels

ROOT = Path(__file__).parents[1]


def test_import_loads_neither_dask_array_nor_numba():
    # A fresh interpreter: this one has imported everything the other tests need.
    code = "import sys, xccm; print(sorted({'dask.array', 'numba'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_lazy_public_names_are_the_submodules_functions():
    from xccm import images, raw

    assert xccm.open_images is images.open_images
    assert xccm.to_images is images.to_images
    assert xccm.open_raw is raw.open_raw
    assert xccm.camera_matrix is raw.camera_matrix
    assert xccm.images is images
    assert {"open_images", "open_raw", "to_images", "camera_matrix"} <= set(dir(xccm))
    for name in xccm.__all__:
        assert getattr(xccm, name) is not None, name


def test_unknown_attribute_raises_attribute_error():
    try:
        xccm.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("xccm.no_such_name did not raise")


def _cache_files_after_apply(cache_dir: Path, **env: str) -> list[str]:
    """Files numba writes under ``cache_dir`` while a fresh process applies a matrix."""
    code = (
        "import numpy as np; from xccm import _kernels; "
        "_kernels.apply_matrix(np.ones((4, 3), 'f4'), np.eye(3, dtype='f4'), parallel=False)"
    )
    full_env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), **env}
    full_env.pop("XCCM_DISABLE_NUMBA", None)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, check=True)
    return sorted(p.name for p in cache_dir.rglob("*") if p.is_file())


@pytest.mark.skipif(_kernels._numba() is None, reason="numba is not installed")
def test_kernel_cache_goes_to_numba_cache_dir_unless_turned_off(tmp_path):
    on = _cache_files_after_apply(tmp_path / "on")
    assert any(name.startswith("_numba_kernels._apply33_interleaved_serial") for name in on)
    assert _cache_files_after_apply(tmp_path / "off", XCCM_NUMBA_CACHE="0") == []
