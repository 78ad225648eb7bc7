"""Channel-first stacks whose planes lie a large power of two apart: what the memory costs.

A channel-first ``(channel, time, y, x)`` float32 stack is three planes; ``apply`` reads the
three at the same offset and writes three output planes at the same offset. When a plane is
a large power of two in bytes (64 frames of 1024 x 1024: 2^28 bytes), the six streams map
onto the same parts of the memory system and contend. This script shows that the cost is the
memory's, not the kernel's: on one thread (no parallel scheduling involved) it times

* ``read 1 plane`` -- a sum over one contiguous run as long as the three planes together
  (the baseline: one stream);
* ``read 3 planes`` -- a sum over the three planes at the same offset;
* ``write 3 planes`` -- filling the three planes at the same offset;
* ``apply_rows`` -- xccm's planar 3x3 kernel (three reads and three writes);

on planes 2^k bytes apart and on planes one frame (4 MiB) shorter, round-robin, and prints the
ratios. Run: ``python benchmarks/bench_planes.py [--frames 64] [--repeat 5]``. Needs numba.
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
from _timing import best_times

from xccm import _numba_kernels


@numba.njit(nogil=True, fastmath=True)
def _read1(a):
    acc = np.float32(0)
    for i in range(a.shape[0]):
        acc += a[i]
    return acc


@numba.njit(nogil=True, fastmath=True)
def _read3(a, b, c):
    acc = np.float32(0)
    for i in range(a.shape[0]):
        acc += a[i] + b[i] + c[i]
    return acc


@numba.njit(nogil=True)
def _write3(a, b, c):
    for i in range(a.shape[0]):
        a[i] = 1.0
        b[i] = 2.0
        c[i] = 3.0


def _cases(frames: int, rng: np.random.Generator) -> dict:
    n = frames * 1024 * 1024
    x = rng.random((3, n), dtype=np.float32)
    out = np.empty_like(x)
    out.fill(0)  # paged in: the writes below measure the streams, not page faults
    up = rng.random((3, 3)).astype(np.float32)
    off = np.zeros(3, np.float32)
    x0, x1, x2 = x
    o0, o1, o2 = out
    return {
        "read 1 plane": lambda: _read1(x.reshape(-1)),
        "read 3 planes": lambda: _read3(x0, x1, x2),
        "write 3 planes": lambda: _write3(o0, o1, o2),
        "apply_rows (planar 3x3)": lambda: _numba_kernels.apply_rows(
            x.T, up, off, out.T, parallel=False
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=64, help="frames of 1024 x 1024 (default 64)")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows = {}
    for frames in (args.frames, args.frames - 1):
        cases = _cases(frames, rng)
        times = best_times(list(cases.values()), args.repeat)
        rows[frames] = {name: t.best for name, t in zip(cases, times, strict=True)}
        del cases
    a, b = args.frames, args.frames - 1
    plane = a * 1024 * 1024 * 4
    print(f"one thread, float32, planes of {a} frames ({plane:,} bytes) vs {b} frames")
    print(f"| operation | {a} frames (ms) | {b} frames (ms) | ratio {a} / {b} per byte |")
    print("|---|---:|---:|---:|")
    for name in rows[a]:
        ta, tb = rows[a][name], rows[b][name]
        print(f"| {name} | {ta * 1e3:.1f} | {tb * 1e3:.1f} | {(ta / a) / (tb / b):.2f} |")


if __name__ == "__main__":
    main()
