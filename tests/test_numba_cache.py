"""numba's on-disk cache of xccm's kernels: where it goes, and the switch that turns it off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xccm import _kernels

ROOT = Path(__file__).parents[1]

#: A fresh process imports the kernel module alone (the package's ``__init__`` would import
#: xarray and Dask, a second of CPU) and runs its smallest kernel, the serial any-shape apply.
_APPLY_IN_A_FRESH_PROCESS = """
import sys, types
package = types.ModuleType("xccm")
package.__path__ = [sys.argv[1]]
sys.modules["xccm"] = package
import numpy as np
from xccm import _numba_kernels
out = np.empty((4, 3))
_numba_kernels.apply_rows(np.ones((4, 2)), np.ones((2, 3)), np.zeros(3), out, parallel=False)
assert (out == 2).all(), out
"""


def _start_apply(cache_dir: Path, **env: str) -> subprocess.Popen:
    """Start a fresh process that applies a matrix with numba caching under ``cache_dir``."""
    full_env = dict(os.environ)
    full_env.pop("XCCM_DISABLE_NUMBA", None)
    full_env.pop("XCCM_NUMBA_CACHE", None)
    full_env.update(NUMBA_CACHE_DIR=str(cache_dir), **env)
    return subprocess.Popen(
        [sys.executable, "-c", _APPLY_IN_A_FRESH_PROCESS, str(ROOT / "xccm")],
        cwd=ROOT,
        env=full_env,
        stderr=subprocess.PIPE,
        text=True,
    )


def _files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.rglob("*") if p.is_file())


@pytest.mark.skipif(_kernels._numba() is None, reason="numba is not installed")
def test_kernel_cache_goes_to_numba_cache_dir_unless_turned_off(tmp_path):
    # the two processes run side by side: each spends its second importing numba and compiling
    on, off = tmp_path / "on", tmp_path / "off"
    runs = [_start_apply(on), _start_apply(off, XCCM_NUMBA_CACHE="0")]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-3000:]
    assert any(name.startswith("_numba_kernels._apply_any") for name in _files(on))
    assert _files(off) == []
