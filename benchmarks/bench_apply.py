"""Benchmark ``xccm.apply`` against plain NumPy and ``xr.dot`` on a large float32 stack.

Measures the best-of-N wall time of applying a random (non-identity) 3x3 float32
colour-correction matrix to a float32 ``(time, y, x, channel)`` stack (default 64 x 1024 x
1024 x 3, ~805 MB), for:

* ``arr.copy()`` -- a memory-bandwidth baseline, the denominator of every ratio;
* ``xccm.apply`` on the NumPy-backed DataArray (in memory);
* ``xccm.apply`` of a root-polynomial degree 2 matrix (Finlayson 2015, 6 terms) to the same
  DataArray, whose ratio to the 3x3 apply is printed too (target: at most 1.5);
* the same for root-polynomial degree 3 (13 terms, 7 cube roots), polynomial degree 2 (9
  terms) and Cheung's 10 terms (the general term kernel; target: at most 2x the 3x3 apply),
  and each of the four through the NumPy fallback (``ModelSpec.apply(..., backend="numpy")``,
  what runs without numba), which the numba kernels must beat;
* ``xccm.apply(...).compute()`` on the same data Dask-chunked per frame (threaded scheduler);
* ``np.matmul(arr, m)`` and ``arr @ m``;
* ``xr.dot(img, m_da)`` in memory and Dask-chunked per frame.

Before timing, the script asserts that ``xccm.apply`` agrees with ``arr @ m`` to float32
tolerance. Results are freed between rows, so peak memory stays around 3x the array.

Run from the repository root::

    python benchmarks/bench_apply.py            # ~800 MB, a minute or two
    python benchmarks/bench_apply.py --quick    # ~100 MB
    python benchmarks/bench_apply.py --frames 32 --height 2048 --width 2048 --repeat 5
"""

from __future__ import annotations

import argparse
import functools
import gc
import os

import dask
import numpy as np
import xarray as xr
from _timing import best_time

import xccm


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=64, help="time steps (default 64)")
    p.add_argument("--height", type=int, default=1024, help="rows per frame (default 1024)")
    p.add_argument("--width", type=int, default=1024, help="columns per frame (default 1024)")
    p.add_argument("--repeat", type=int, default=3, help="timings per row, best kept (default 3)")
    p.add_argument("--quick", action="store_true", help="8 x 1024 x 1024 x 3 (~100 MB)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.quick:
        args.frames, args.height, args.width = 8, 1024, 1024
    shape = (args.frames, args.height, args.width, 3)

    rng = np.random.default_rng(0)
    arr = rng.random(shape, dtype=np.float32)
    m = (np.eye(3) + 0.2 * rng.standard_normal((3, 3))).astype(np.float32)
    dims = ("time", "y", "x", "channel")
    img = xr.DataArray(arr, dims=dims)
    lazy = img.chunk({"time": 1})
    m_da = xr.DataArray(m, dims=("channel", "channel_out"))
    m_rp2 = xccm.models.matrix_dataarray(
        np.vstack([m, 0.05 * rng.random((3, 3))]).astype(np.float32), "root_polynomial", degree=2
    )

    # Correctness check, outside timing: xccm.apply must equal arr @ m to float32 tolerance.
    # Compared frame by frame: np.allclose's temporaries on the whole stack would be ~3x it.
    out = xccm.apply(img, m)
    assert out.dtype == np.float32 and out.dims == dims, (out.dtype, out.dims)
    for i in range(shape[0]):
        ok = np.allclose(out.values[i], arr[i] @ m, rtol=1e-5, atol=1e-6)
        assert ok, f"xccm.apply != arr @ m in frame {i}"
    expanded = {"root-polynomial degree 2": m_rp2}
    for label, model, kw in [
        ("root-polynomial degree 3", "root_polynomial", {"degree": 3}),
        ("polynomial degree 2", "polynomial", {"degree": 2}),
        ("Cheung 10 terms", "polynomial", {"terms": 10}),
    ]:
        n_terms = xccm.models.resolve_model(model, **kw).n_terms
        extra = 0.05 * rng.random((n_terms - 3, 3))
        expanded[label] = xccm.models.matrix_dataarray(
            np.vstack([m, extra]).astype(np.float32), model, **kw
        )
    for label, matrix in expanded.items():
        out = xccm.apply(img, matrix)
        spec = xccm.models.model_of(matrix)
        want = spec.expand(arr[0].astype(np.float64)) @ matrix.values.astype(np.float64)
        assert np.allclose(out.values[0], want, rtol=1e-4, atol=1e-4), label
        del out
    gc.collect()

    n_tasks = len(xccm.apply(lazy, m).__dask_graph__())

    rows = [
        ("`arr.copy()` (baseline)", lambda: arr.copy()),
        ("`xccm.apply(img, m)` (numpy)", lambda: xccm.apply(img, m)),
        ("`xccm.apply(img, m_rp2)` root-polynomial degree 2", lambda: xccm.apply(img, m_rp2)),
        *_expanded_rows(arr, img, expanded),
        (
            f"`xccm.apply(img_dask, m).compute()` (chunks time=1, {n_tasks} tasks)",
            lambda: xccm.apply(lazy, m).compute(),
        ),
        ("`np.matmul(arr, m)`", lambda: np.matmul(arr, m)),
        ("`arr @ m`", lambda: arr @ m),
        ("`xr.dot(img, m_da)` (numpy)", lambda: xr.dot(img, m_da, dim="channel")),
        (
            "`xr.dot(img_dask, m_da).compute()` (chunks time=1)",
            lambda: xr.dot(lazy, m_da, dim="channel").compute(),
        ),
    ]
    # Results are discarded by timeit, so at most one output (plus a warm-up's) is alive.
    times = []
    for name, f in rows:
        times.append((name, best_time(f, args.repeat).best))  # after a warm-up call
        gc.collect()

    base = times[0][1]
    print(
        f"shape {shape}, {arr.dtype}, {arr.nbytes / 1e6:.0f} MB; numpy {np.__version__}, "
        f"xarray {xr.__version__}, dask {dask.__version__}; os.cpu_count()={os.cpu_count()}; "
        f"best of {args.repeat}; xccm dask graph: {n_tasks} tasks"
    )
    print()
    print("| operation | time (s) | ratio to arr.copy() |")
    print("|---|---:|---:|")
    for name, t in times:
        print(f"| {name} | {t:.3f} | {t / base:.2f} |")
    print()
    print(f"root-polynomial degree 2 / 3x3 apply: {times[2][1] / times[1][1]:.2f} (target <= 1.5)")
    by_name = dict(times)
    for label in expanded:
        numba_t = by_name.get(f"`xccm.apply(img, m)` {label}", times[2][1])
        numpy_t = by_name[f"NumPy fallback, {label}"]
        print(
            f"{label}: {numba_t / times[1][1]:.2f}x the 3x3 apply (target <= 2), "
            f"{numba_t / numpy_t:.2f}x the NumPy fallback (target < 1)"
        )


def _expanded_rows(arr, img, expanded):
    """Timed rows of the expanded models: ``xccm.apply`` and the NumPy fallback kernel."""
    rows = []
    for label, matrix in expanded.items():
        spec, mv = xccm.models.model_of(matrix), matrix.values
        if label != "root-polynomial degree 2":  # timed above, as before
            rows.append(
                (f"`xccm.apply(img, m)` {label}", functools.partial(xccm.apply, img, matrix))
            )
        rows.append(
            (f"NumPy fallback, {label}", functools.partial(spec.apply, arr, mv, backend="numpy"))
        )
    return rows


if __name__ == "__main__":
    main()
