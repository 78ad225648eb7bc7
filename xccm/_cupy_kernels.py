"""CuPy kernel: apply a matrix on the GPU in one fused pass.

Imported by :mod:`xccm._kernels` only for CuPy arrays. One thread per pixel reads its
``n_in`` values (any row and channel strides, so interleaved and planar layouts alike) and
writes its ``n_out`` results: one read and one write of the image, in its own dtype
(float32 stays float32; integer input is converted in registers).
"""

from __future__ import annotations

import cupy

__all__ = ["apply_rows"]

_APPLY = cupy.ElementwiseKernel(
    "raw X x, raw T up, raw T off, int64 x_row, int64 x_ch, int64 o_row, int64 o_ch, "
    "int32 n_in, int32 n_out",
    "raw T out",
    """
    const long long xi = i * x_row;
    const long long oi = i * o_row;
    for (int j = 0; j < n_out; ++j) {
        T acc = off[j];
        for (int k = 0; k < n_in; ++k) {
            acc += (T)x[xi + k * x_ch] * up[k * n_out + j];
        }
        out[oi + j * o_ch] = acc;
    }
    """,
    "xccm_apply_rows",
)


def apply_rows(x, up, off, out) -> None:
    """``out[i] = x[i] @ up + off`` for 2-D CuPy views ``x (rows, n_in)``, ``out (rows, n_out)``."""
    n_in, n_out = up.shape
    up = cupy.ascontiguousarray(up, dtype=out.dtype)
    off = cupy.ascontiguousarray(off, dtype=out.dtype)
    xs, os_ = (s // x.itemsize for s in x.strides), (s // out.itemsize for s in out.strides)
    _APPLY(x, up, off, *xs, *os_, n_in, n_out, out, size=x.shape[0])
