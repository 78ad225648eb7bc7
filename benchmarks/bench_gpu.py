"""Benchmark ``xccm.apply`` on a CuPy-backed float32 stack against a device-to-device copy.

Needs CuPy and a CUDA device. Times are measured with CUDA events (best of ``--repeat``
after a warm-up call that compiles the kernel); the baseline is ``cupy.copyto`` of the same
array into a preallocated one, and the effective bandwidth counts one read and one write.
The target of the GPU path is apply at >= 70% of the device's own copy bandwidth.

Run from the repository root::

    python benchmarks/bench_gpu.py                 # ~4.8 GB stack (default 48 frames of 4K)
    python benchmarks/bench_gpu.py --frames 8      # smaller
"""

from __future__ import annotations

import argparse

import cupy as cp
import numpy as np
import xarray as xr

import xccm


def cuda_time(func, repeat: int) -> float:
    """Best wall time in seconds of ``func()`` over ``repeat`` calls, after one warm-up call."""
    func()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    best = np.inf
    for _ in range(repeat):
        start.record()
        func()
        stop.record()
        stop.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--height", type=int, default=2160)
    parser.add_argument("--width", type=int, default=3840)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    shape = (args.frames, args.height, args.width, 3)
    arr = cp.random.random(shape, dtype=cp.float32)
    dst = cp.empty_like(arr)
    m = (np.eye(3) + 0.1 * np.random.default_rng(0).standard_normal((3, 3))).astype(np.float32)
    m4 = np.vstack([m, np.full((1, 3), 0.01, np.float32)])
    img = xr.DataArray(arr, dims=("time", "y", "x", "channel"))
    planar = xr.DataArray(
        cp.ascontiguousarray(cp.moveaxis(arr, -1, 0)), dims=("channel", "time", "y", "x")
    )

    out = xccm.apply(img, m4)  # check once, untimed, against CuPy's matmul
    assert isinstance(out.data, cp.ndarray) and out.dtype == np.float32
    expected = arr[:1] @ cp.asarray(m) + cp.asarray(m4[3])
    assert cp.allclose(out.data[:1], expected, rtol=1e-5, atol=1e-6)
    del out, expected

    nbytes = arr.nbytes
    rows = [
        ("cupy.copyto (baseline)", lambda: cp.copyto(dst, arr)),
        ("xccm.apply(img, m) 3x3", lambda: xccm.apply(img, m)),
        ("xccm.apply(img, m4) affine", lambda: xccm.apply(img, m4)),
        ("xccm.apply(planar, m) channel-first", lambda: xccm.apply(planar, m)),
        ("arr @ m (CuPy matmul)", lambda: arr @ cp.asarray(m)),
    ]
    device = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"{device}; {shape} float32, {nbytes / 1e9:.2f} GB")
    print("| operation | time (ms) | GB/s (read + write) | ratio to copy |\n|---|---:|---:|---:|")
    base = None
    for name, func in rows:
        t = cuda_time(func, args.repeat)
        base = base or t
        print(f"| {name} | {t * 1e3:.2f} | {2 * nbytes / t / 1e9:.0f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
