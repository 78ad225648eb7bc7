"""numba's on-disk cache of xccm's kernels: where it goes, and the switch that turns it off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xccm import _kernels

ROOT = Path(__file__).parents[1]


def _cache_files_after_apply(cache_dir: Path, **env: str) -> list[str]:
    """Files numba writes under ``cache_dir`` while a fresh process applies a matrix."""
    code = (
        "import numpy as np; from xccm import _kernels; "
        "_kernels.apply_matrix(np.ones((4, 3), 'f4'), np.eye(3, dtype='f4'), "
        "parallel=False, backend='numba')"
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
