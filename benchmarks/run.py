"""xccm benchmark suite: apply and fit against their baselines and peers, in one table.

Run from the repository root::

    python benchmarks/run.py            # ~800 MB stacks, 10^8-pixel fit: a few minutes
    python benchmarks/run.py --quick    # ~100 MB stacks, 10^7-pixel fit: under a minute

It prints a markdown table grouped by section and writes ``benchmarks/results.json``: a
header (machine, versions, date, mode, total runtime, peak RSS) and one dict per row. A full
run also writes the table to ``docs/performance_results.md``, which the documentation's
performance page includes (``--markdown PATH`` writes it elsewhere, and makes a quick run write
it too); ``--from-json FILE`` rewrites that page from a saved ``results.json`` without timing
anything::

    python benchmarks/run.py --from-json benchmarks/results.json
Progress goes to stderr. Peak memory is about 1 GB quick, 6 GB full (Dask's ``from_array``
copies the NumPy arrays it wraps, so each chunked array exists twice).

Sections:

1. in-memory ``xccm.apply`` on a float32 ``(time, y, x, channel)`` stack, channel-last and
   channel-first, against a parallel elementwise kernel (numba ``prange``, ``out = 2 * a``
   into a new output: one read and one write per value on every core, the limit for any
   kernel that computes; target ratio <= 1.2), a parallel copy, ``arr.copy()`` and NumPy /
   xarray / colour-science peers; expanded matrices (root-polynomial degree 2 and 3,
   polynomial degree 2, Cheung's 10 terms) against the 3x3 apply (targets 1.5x for degree 2,
   2x for the others) and, for the general term kernel, against the NumPy fallback;
2. uint8 input to float32 output, against the same elementwise kernel reading uint8 and
   writing float32 (target <= 1.2) and ``arr_u8.astype(np.float32)``;
3. Dask-backed stacks chunked per frame (threaded scheduler): frames of 12.6, 3.1 and
   0.8 MB, each against its "Dask floor" (``map_blocks(np.copy)`` on the same chunks; target
   <= 1.1 for per-frame chunks), with the number of tasks and the peak RSS increase of one
   untimed call;
4. OpenCV on one 2048 x 2048 float32 image: ``cv2.transform`` and
   ``cv2.ccm.ColorCorrectionModel.correctImage`` (if ``cv2`` imports);
5. fitting: 10 000 frames x 24 patches in one batch against a ``np.linalg.lstsq`` loop, and
   an affine fit from 10^8 Dask-chunked pixel pairs against one sum over the same data.

Each time is the best of N calls (``timeit.repeat`` with ``number=1``) after one untimed
warm-up call, in which numba compiles. N is at least ``--repeat`` (3 quick, 5 full); more
calls follow, up to 50, until they add up to 0.5 s (quick) or 1.5 s (full) per row: fast rows
get many samples, and a burst of slow calls (page-fault stalls on a VM) rarely covers them all.
A ratio is this row's time divided by its baseline's time, both measured in this run
(> 1: slower than the baseline). The rows a target compares (an apply and its baselines, a
Dask apply and its floor) are timed together, round-robin: one call of each in turn, so that
a change in the machine's load (other jobs on a shared 2-core VM) falls on all of them alike.
Every result is checked against a reference once, untimed, before it is timed.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import math
import os
import platform
import resource
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask
import numpy as np
import xarray as xr
from _timing import Timing, best_time, best_times, peak_rss

import xccm

RESULTS = Path(__file__).with_name("results.json")
DOCS_TABLE = Path(__file__).parents[1] / "docs" / "performance_results.md"
DOCS_NOTE = "% Written by benchmarks/run.py ({mode} run); do not edit by hand.\n\n"
DIMS = ("time", "y", "x", "channel")
MB = 1e6


# ---------------------------------------------------------------------------------------------
# rows and timing


@dataclass
class Row:
    """One line of the table (and one dict of ``results.json``)."""

    section: str
    operation: str
    size: str
    layout: str
    dtype: str
    time_s: float
    n: int
    baseline: str | None = None
    ratio: float | None = None
    other_ratios: dict[str, float] = field(default_factory=dict)
    target: str | None = None
    target_met: bool | None = None
    peak_rss_mb: float | None = None
    tasks: int | None = None
    notes: str = ""

    def compare(self, label: str, other: Row) -> None:
        """Add the ratio of this row's time to ``other``'s (besides the main baseline)."""
        self.other_ratios[label] = self.time_s / other.time_s

    def check(self, target: str, met: bool) -> None:
        self.target, self.target_met = target, bool(met)


class Bench:
    """Times callables into :class:`Row` objects; ``section`` labels the rows that follow."""

    def __init__(self, repeat: int, budget_s: float):
        self.repeat, self.budget_s = repeat, budget_s
        self.rows: list[Row] = []
        self.section = ""

    def time(
        self,
        operation: str,
        f,
        *,
        size: str,
        layout: str,
        dtype: str,
        baseline: Row | None = None,
        scale: float = 1.0,
        rss: bool = False,
        tasks: int | None = None,
        notes: str = "",
    ) -> Row:
        """Time ``f`` (its best time multiplied by ``scale``) and record a row."""
        t = best_time(f, self.repeat, budget_s=self.budget_s)
        kw = {"size": size, "layout": layout, "dtype": dtype, "baseline": baseline}
        kw.update(scale=scale, rss=rss, tasks=tasks, notes=notes)
        return self._record(operation, f, t, **kw)

    def time_together(
        self, items: list[tuple[str, object, dict]], *, baseline: Row | None = None, **kw
    ) -> list[Row]:
        """Time ``items`` (operation, callable, extra keywords) round-robin, one row each.

        Their calls take turns (:func:`best_times`), so their ratios hold on a machine whose
        load drifts. The first row is the baseline of the others (its own is ``baseline``).
        """
        timings = best_times(
            [f for _, f, _ in items], self.repeat, budget_s=self.budget_s * len(items)
        )
        rows: list[Row] = []
        for (operation, f, extra), t in zip(items, timings, strict=True):
            base = rows[0] if rows else baseline
            rows.append(self._record(operation, f, t, **{**kw, "baseline": base, **extra}))
        return rows

    def _record(
        self,
        operation: str,
        f,
        t: Timing,
        *,
        size: str,
        layout: str,
        dtype: str,
        baseline: Row | None = None,
        scale: float = 1.0,
        rss: bool = False,
        tasks: int | None = None,
        notes: str = "",
    ) -> Row:
        row = Row(
            self.section,
            operation,
            size,
            layout,
            dtype,
            t.best * scale,
            t.n,
            baseline=baseline.operation if baseline is not None else None,
            ratio=t.best * scale / baseline.time_s if baseline is not None else None,
            tasks=tasks,
            notes=notes,
        )
        if rss:  # one more, untimed call: the sampling thread must not disturb the timings
            peak = peak_rss(f)
            row.peak_rss_mb = None if peak is None else peak / MB
        self.rows.append(row)
        gc.collect()
        progress = f"{_fmt_ms(row.time_s):>8} ms (N={t.n}, warm-up {_fmt_ms(t.warmup)} ms)"
        print(f"  {progress}  {operation}", file=sys.stderr, flush=True)
        return row


def _fmt_ms(t: float) -> str:
    ms = t * 1e3
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _mb(nbytes: int) -> str:
    return f"{nbytes / MB:.0f} MB" if nbytes >= 10 * MB else f"{nbytes / MB:.1f} MB"


def _shape(shape) -> str:
    return "×".join(map(str, shape))


def _count(n: int) -> str:
    """``10^8`` for a power of ten, else ``123,456``."""
    exponent = round(math.log10(n))
    return f"10^{exponent}" if 10**exponent == n else f"{n:,}"


def _n_tasks(obj) -> int:
    """Tasks in the graph of a Dask-backed xarray object or Dask array."""
    return len(obj.__dask_graph__())


def _random_matrix(rng, n_rows: int = 3) -> np.ndarray:
    """A non-trivial float32 CCM: identity plus noise, and an offset row if ``n_rows == 4``."""
    m = np.eye(3) + 0.2 * rng.standard_normal((3, 3))
    if n_rows == 4:
        m = np.vstack([m, 0.05 * rng.standard_normal((1, 3))])
    return m.astype(np.float32)


def _check_frames(got, want_frame, n_frames: int, what: str, rtol=1e-5, atol=1e-5) -> None:
    """Assert ``got[i]`` matches ``want_frame(i)`` frame by frame (small temporaries)."""
    for i in range(n_frames):
        assert np.allclose(got[i], want_frame(i), rtol=rtol, atol=atol), f"{what}: frame {i}"


def _parallel_baselines():
    """numba ``prange`` kernels: a copy and ``out = 2 * a``, each into a new output array.

    They bound any kernel that reads every value once and writes a fresh result on every
    core (the fresh output's page faults and write-allocate traffic included): the copy moves
    the data, the elementwise kernel also computes (one multiply) and converts to the output
    dtype. ``None`` without numba.
    """
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(parallel=True, nogil=True)
    def copy(a, out):
        for i in numba.prange(a.shape[0]):
            out[i] = a[i]

    @numba.njit(parallel=True, nogil=True)
    def twice(a, two, out):
        for i in numba.prange(a.shape[0]):
            out[i] = two * a[i]

    def parallel_copy(a):
        out = np.empty_like(a)
        copy(a.reshape(-1), out.reshape(-1))
        return out

    def elementwise(a, dtype=np.float32):
        out = np.empty(a.shape, dtype)
        twice(a.reshape(-1), np.dtype(dtype).type(2), out.reshape(-1))
        return out

    return parallel_copy, elementwise


def _baseline_items(arr: np.ndarray, label: str = "arr") -> list[tuple[str, object, dict]]:
    """The parallel elementwise (and, for float32, copy) baselines of ``arr``, checked.

    Items for :meth:`Bench.time_together`, the elementwise kernel first; none without numba.
    """
    kernels = _parallel_baselines()
    if kernels is None:
        return []
    parallel_copy, elementwise = kernels
    want = np.float32(2) * arr.astype(np.float32)
    assert np.array_equal(elementwise(arr), want), "elementwise baseline"
    del want
    items = [
        (
            f"parallel `out = 2 * {label}` (numba `prange`)",
            functools.partial(elementwise, arr),
            {
                "notes": "baseline: one read and one write per value on every core, into a "
                "new `np.empty` output (page faults included)"
            },
        )
    ]
    if arr.dtype == np.float32:
        assert np.array_equal(parallel_copy(arr), arr)
        items.append(
            (
                f"parallel copy of `{label}` (numba `prange`)",
                functools.partial(parallel_copy, arr),
                {"notes": "into a new `np.empty_like` output"},
            )
        )
    return items


# ---------------------------------------------------------------------------------------------
# 1. in-memory apply


def bench_in_memory(bench: Bench, arr: np.ndarray, m: np.ndarray, m4: np.ndarray) -> dict:
    bench.section = "1. In-memory apply, float32"
    size = f"{_mb(arr.nbytes)} ({_shape(arr.shape)})"
    kw = {"size": size, "layout": "channel-last", "dtype": "float32"}
    img = xr.DataArray(arr, dims=DIMS)
    m_da = xr.DataArray(m, dims=("channel", "channel_out"))
    n_frames = arr.shape[0]

    out = xccm.apply(img, m)
    assert out.dtype == np.float32 and out.dims == DIMS
    _check_frames(out.values, lambda i: arr[i] @ m, n_frames, "xccm.apply vs arr @ m")
    out = xccm.apply(img, m4)
    _check_frames(out.values, lambda i: arr[i] @ m4[:3] + m4[3], n_frames, "affine apply")
    del out

    # Taking turns: the targets' ratios must not ride on a change of the machine's load.
    items = _baseline_items(arr)
    items += [
        ("`arr.copy()`", arr.copy, {"notes": "NumPy copies on one thread"}),
        ("`xccm.apply(img, m)` 3×3", lambda: xccm.apply(img, m), {}),
        ("`xccm.apply(img, m4)` affine 4×3", lambda: xccm.apply(img, m4), {}),
    ]
    rows = bench.time_together(items, **kw)
    *_, copy, apply, apply4 = rows
    base = rows[0]  # without numba, the single-threaded copy
    for row in (apply, apply4):
        if base is not copy:
            row.check("ratio ≤ 1.2", row.ratio <= 1.2)
            row.compare("`arr.copy()`", copy)
    # Root-polynomial degree 2 (Finlayson 2015): 6 terms, 3 square roots per pixel, expanded
    # inside the kernel; its target is the 3x3 apply of the same stack in this run.
    m_rp2 = xccm.models.matrix_dataarray(
        np.vstack([m, 0.05 * np.abs(_random_matrix(np.random.default_rng(1)))]).astype(np.float32),
        "root_polynomial",
        degree=2,
    )
    out = xccm.apply(img, m_rp2)
    rp2 = m_rp2.values.astype(np.float64)
    _check_frames(
        out.values,
        lambda i: xccm.models.expand(arr[i].astype(np.float64), "root_polynomial", degree=2) @ rp2,
        1,
        "root-polynomial apply",
        1e-4,
        1e-4,
    )
    del out
    row = bench.time(
        "`xccm.apply(img, m_rp2)` root-polynomial degree 2 (6×3)",
        lambda: xccm.apply(img, m_rp2),
        **kw,
        baseline=base,
        notes="terms expanded per pixel in the kernel",
    )
    row.compare("3×3 apply", apply)
    row.check("≤ 1.5× the 3×3 apply", row.time_s <= 1.5 * apply.time_s)
    # The general term kernel (numba): root-polynomial degree 3 (13 terms, 7 cube roots),
    # polynomial degree 2 (9 terms), Cheung's 10 terms. Targets: at most 2x the 3x3 apply,
    # and faster than the NumPy fallback (expansion by blocks + matmul), timed next to it.
    rng = np.random.default_rng(2)
    for label, model, opts in [
        ("root-polynomial degree 3", "root_polynomial", {"degree": 3}),
        ("polynomial degree 2", "polynomial", {"degree": 2}),
        ("Cheung 10 terms", "polynomial", {"terms": 10}),
    ]:
        spec = xccm.models.resolve_model(model, **opts)
        extra = 0.05 * np.abs(rng.standard_normal((spec.n_terms - 3, 3)))
        mx = xccm.models.matrix_dataarray(np.vstack([m, extra]).astype(np.float32), model, **opts)
        out = xccm.apply(img, mx)
        mv = mx.values.astype(np.float64)
        _check_frames(
            out.values,
            lambda i, spec=spec, mv=mv: spec.expand(arr[i].astype(np.float64)) @ mv,
            1,
            f"{label} apply",
            1e-4,
            1e-4,
        )
        del out
        fallback = bench.time(
            f"`ModelSpec.apply(arr, m, backend='numpy')` {label}",
            functools.partial(spec.apply, arr, mx.values, backend="numpy"),
            **kw,
            baseline=base,
            notes="the NumPy fallback: expanded by blocks of rows, then matmul",
        )
        row = bench.time(
            f"`xccm.apply(img, m)` {label} ({spec.n_terms}×3)",
            functools.partial(xccm.apply, img, mx),
            **kw,
            baseline=base,
            notes="numba: term by term over passes of rows held in cache",
        )
        row.compare("3×3 apply", apply)
        row.compare("NumPy fallback", fallback)
        row.check(
            "≤ 2× the 3×3 apply, < NumPy fallback",
            row.time_s <= 2 * apply.time_s and row.time_s < fallback.time_s,
        )
    bench.time("`arr @ m`", lambda: arr @ m, **kw, baseline=base)
    bench.time(
        "`np.matmul(arr, m, out=prealloc)`",
        functools.partial(np.matmul, arr, m, out=np.empty_like(arr)),
        **kw,
        baseline=base,
        notes="output preallocated once",
    )
    bench.time(
        "`np.einsum('...i,ij->...j', arr, m)`",
        lambda: np.einsum("...i,ij->...j", arr, m),
        **kw,
        baseline=base,
    )
    bench.time(
        "`np.einsum(..., optimize=True)`",
        lambda: np.einsum("...i,ij->...j", arr, m, optimize=True),
        **kw,
        baseline=base,
        notes="einsum hands the product to BLAS (tensordot)",
    )
    bench.time(
        "`xr.dot(img, m_da, dim='channel')`",
        lambda: xr.dot(img, m_da, dim="channel"),
        **kw,
        baseline=base,
    )
    _bench_colour(bench, arr, m, base, kw)

    # Channel-first: the same pixels stored as C-contiguous (channel, time, y, x) planes, on
    # the whole stack and on one frame fewer. Three planes a power of two apart (2^28 bytes for
    # 64 frames of 1024 x 1024) make three aliased streams each way, which the memory system
    # serves 1.6x (reads) to 2.1x (writes) slower than planes a little closer together
    # (benchmarks/bench_planes.py); the second stack shows the kernel where that does not.
    for frames in (n_frames, n_frames - 1):
        _bench_channel_first(bench, arr[:frames], m, dict(kw))
    return {"copy": copy, "apply": apply}


def _bench_channel_first(bench: Bench, arr: np.ndarray, m: np.ndarray, kw: dict) -> None:
    """Channel-first rows: ``xccm.apply`` on ``(channel, time, y, x)`` planes of ``arr``."""
    cf = np.ascontiguousarray(np.moveaxis(arr, -1, 0))
    n_frames = arr.shape[0]
    img_cf = xr.DataArray(cf, dims=("channel", "time", "y", "x"))
    out = xccm.apply(img_cf, m)
    assert out.dims == img_cf.dims and out.data.flags.c_contiguous
    _check_frames(
        out.data.transpose(1, 2, 3, 0), lambda i: arr[i] @ m, n_frames, "channel-first apply"
    )
    del out
    plane = cf[0].nbytes
    spacing = f"2^{plane.bit_length() - 1}" if plane & (plane - 1) == 0 else f"{plane:,}"
    kw.update(size=f"{_mb(cf.nbytes)} ({_shape(arr.shape)})", layout="channel-first")
    items = _baseline_items(cf, label="arr_cf")
    items += [
        ("`arr_cf.copy()`", cf.copy, {"notes": "NumPy, one thread"}),
        (
            "`xccm.apply(img_cf, m)` 3×3",
            lambda: xccm.apply(img_cf, m),
            {"notes": f"dims (channel, time, y, x); planes {spacing} bytes apart"},
        ),
    ]
    rows = bench.time_together(items, **kw)
    *_, copy_cf, apply_cf = rows
    base_cf = rows[0]
    if base_cf is not copy_cf:
        apply_cf.check("ratio ≤ 1.2", apply_cf.ratio <= 1.2)
        apply_cf.compare("`arr_cf.copy()`", copy_cf)
    flat = cf.reshape(3, -1)
    bench.time(
        "`(m.T @ arr_cf.reshape(3, -1)).reshape(arr_cf.shape)`",
        lambda: (m.T @ flat).reshape(cf.shape),
        **kw,
        baseline=base_cf,
        notes="one (3×3)·(3×N) BLAS sgemm",
    )


def _bench_colour(bench: Bench, arr, m, base: Row, kw: dict) -> None:
    """``colour.algebra.vecmul(m.T, arr)``: column-vector convention, so pass ``m.T``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # colour warns that matplotlib is missing
            from colour.algebra import vecmul
    except ImportError:
        return
    k = max(1, arr.shape[0] // 8)
    part = arr[:k]
    got = vecmul(m.T, part[0])
    assert np.allclose(got, part[0] @ m, rtol=1e-5, atol=1e-5), "vecmul(m.T, x) != x @ m"
    bench.time(
        "`colour.algebra.vecmul(m.T, arr)`",
        lambda: vecmul(m.T, part),
        **kw,
        baseline=base,
        scale=arr.shape[0] / k,
        notes=f"timed on {k} of {arr.shape[0]} frames, ×{arr.shape[0] / k:g}; casts to "
        "colour's default float (float64) and returns it; a batched (3×3)·(3×1) matmul",
    )


# ---------------------------------------------------------------------------------------------
# 2. uint8 in, float32 out


def bench_uint8(bench: Bench, shape, m: np.ndarray, rng) -> None:
    bench.section = "2. uint8 → float32 apply"
    u8 = rng.integers(0, 256, shape, dtype=np.uint8)
    img = xr.DataArray(u8, dims=DIMS)
    out = xccm.apply(img, m)
    assert out.dtype == np.float32
    _check_frames(out.values, lambda i: u8[i].astype(np.float32) @ m, 1, "uint8 apply", 1e-5, 1e-3)
    out = xccm.apply(img, m, scale=1 / 255)
    _check_frames(out.values, lambda i: (u8[i] / np.float32(255)) @ m, 1, "scaled uint8 apply")
    del out

    size = f"{_mb(u8.nbytes)} → {_mb(4 * u8.nbytes)} ({_shape(shape)})"
    kw = {"size": size, "layout": "channel-last", "dtype": "uint8 → float32"}
    items = _baseline_items(u8, label="arr_u8")
    items += [
        ("`arr_u8.astype(np.float32)`", lambda: u8.astype(np.float32), {"notes": "NumPy"}),
        ("`xccm.apply(img_u8, m)`", lambda: xccm.apply(img, m), {}),
        (
            "`xccm.apply(img_u8, m, scale=1/255)`",
            lambda: xccm.apply(img, m, scale=1 / 255),
            {"notes": "scale folded into the matrix"},
        ),
    ]
    rows = bench.time_together(items, **kw)
    base, astype = rows[0], rows[-3]
    for row in rows[-2:]:
        if base is not astype:
            row.check("ratio ≤ 1.2", row.ratio <= 1.2)
            row.compare("`arr_u8.astype(np.float32)`", astype)
    bench.time("`arr_u8 @ m`", lambda: u8 @ m, **kw, baseline=base)


# ---------------------------------------------------------------------------------------------
# 3. Dask-backed apply


def bench_dask(bench: Bench, arr: np.ndarray, m: np.ndarray, mem: dict) -> None:
    bench.section = "3. Dask apply, per-frame chunks, threaded scheduler"
    n_pix = math.prod(arr.shape[1:3])
    for side in (1024, 512, 256):
        frames = n_pix * arr.shape[0] // (side * side)
        if frames < 2:
            continue
        view = arr.reshape(frames, side, side, 3)  # the same memory, cut into smaller frames
        lazy = xr.DataArray(view, dims=DIMS).chunk({"time": 1})
        result = xccm.apply(lazy, m)
        if side == 1024:
            got = result.values
            _check_frames(got, lambda i: arr[i] @ m, arr.shape[0], "Dask apply vs arr @ m")
            del got
        floor = lazy.data.map_blocks(np.copy)
        chunk = f"{frames} × {_mb(view[0].nbytes)} chunks"
        kw = {
            "size": f"{_mb(arr.nbytes)}, {chunk} ({side}×{side}×3)",
            "layout": "channel-last",
            "dtype": "float32",
            "rss": True,
        }
        floor_row, row = bench.time_together(
            [
                (
                    "Dask floor: `lazy.data.map_blocks(np.copy).compute()`",
                    floor.compute,
                    {"tasks": _n_tasks(floor)},
                ),
                (
                    "`xccm.apply(lazy, m).compute()`",
                    lambda lazy=lazy: xccm.apply(lazy, m).compute(),
                    {"tasks": _n_tasks(result)},
                ),
            ],
            baseline=mem["copy"],
            **kw,
        )
        floor_row.baseline += " (§1)"
        if side == 1024:
            row.check("ratio ≤ 1.1", row.ratio <= 1.1)
        row.compare("in-memory apply (§1)", mem["apply"])
        row.compare("`arr.copy()`", mem["copy"])
        del lazy, result, floor, view
        gc.collect()


# ---------------------------------------------------------------------------------------------
# 4. OpenCV


def bench_opencv(bench: Bench, rng) -> None:
    try:
        import cv2
    except ImportError:
        return
    bench.section = "4. OpenCV, one 2048×2048 float32 image"
    img = rng.random((2048, 2048, 3), dtype=np.float32)
    m, m4 = _random_matrix(rng), _random_matrix(rng, 4)
    # cv2.transform computes dst = M · src per pixel (column vectors): pass m.T for D = S @ m.
    assert np.allclose(cv2.transform(img, m.T), xccm.apply(img, m), rtol=1e-5, atol=1e-5)
    assert np.allclose(cv2.transform(img, m4.T), xccm.apply(img, m4), rtol=1e-5, atol=1e-5)
    model = _cv2_ccm_model(cv2)

    kw = {"size": f"{_mb(img.nbytes)} ({_shape(img.shape)})", "layout": "channel-last"}
    kw["dtype"] = "float32"
    ours = bench.time("`xccm.apply(img, m)` 3×3", lambda: xccm.apply(img, m), **kw)
    ours.notes = "baseline; plain ndarray in and out"
    ours4 = bench.time("`xccm.apply(img, m4)` affine 4×3", lambda: xccm.apply(img, m4), **kw)
    ours4.notes = "baseline for the affine `cv2.transform`"
    row = bench.time(
        "`cv2.transform(img, m.T)`", lambda: cv2.transform(img, m.T), **kw, baseline=ours
    )
    row.check("ratio > 1 (xccm faster)", row.ratio > 1)
    row = bench.time(
        "`cv2.transform(img, m4.T)` affine",
        lambda: cv2.transform(img, m4.T),
        **kw,
        baseline=ours4,
    )
    row.check("ratio > 1 (xccm faster)", row.ratio > 1)
    row = bench.time(
        "`model.correctImage(img)`",
        lambda: model.correctImage(img),
        **kw,
        baseline=ours,
        notes="linearises (gamma 2.2), applies the 3×3, encodes to sRGB",
    )
    row.check("ratio ≥ 30", row.ratio >= 30)
    bench.time(
        "`model.correctImage(img, islinear=True)`",
        lambda: model.correctImage(img, islinear=True),
        **kw,
        baseline=ours,
        notes="skips the output encoding; still linearises",
    )


def _cv2_ccm_model(cv2):
    """A fitted ``cv2.ccm.ColorCorrectionModel`` (OpenCV 5 API) for a synthetic 24-patch chart."""
    ref = xccm.chart("colorchecker24").values  # linear sRGB, (24, 3)
    camera = np.array([[0.8, 0.1, 0.05], [0.15, 0.75, 0.1], [0.05, 0.15, 0.85]])
    src = np.clip(ref @ camera, 0, 1) ** (1 / 2.2)  # what a gamma-encoding camera records
    chart = getattr(cv2.ccm, "COLORCHECKER_MACBETH", None)
    if chart is None:  # older spelling
        chart = cv2.ccm.COLORCHECKER_Macbeth
    model = cv2.ccm.ColorCorrectionModel(src.reshape(24, 1, 3).astype(np.float64), chart)
    model.compute()
    assert model.getColorCorrectionMatrix().shape == (3, 3)
    return model


# ---------------------------------------------------------------------------------------------
# 5. fit


def bench_fit_batch(bench: Bench, rng, n_frames: int = 10_000, n_loop: int = 100) -> None:
    bench.section = "5. Fit"
    ref = xccm.chart("colorchecker24").values  # (24, 3) float64
    n_patch = ref.shape[0]
    # Each frame: the chart seen through its own camera matrix, plus noise.
    cams = np.eye(3) + 0.1 * rng.standard_normal((n_frames, 3, 3))
    meas = ref @ cams + 0.002 * rng.standard_normal((n_frames, n_patch, 3))
    measured = xr.DataArray(meas, dims=("time", "patch", "channel"))
    reference = xr.DataArray(ref, dims=("patch", "channel"))
    ones = np.ones((n_patch, 1))
    size = f"{n_frames}×{n_patch}×3 vs {n_patch}×3"
    kw = {"size": size, "layout": "(time, patch, channel)", "dtype": "float64"}

    for model in ("linear", "affine"):

        def design(s, model=model):
            return np.hstack([s, ones]) if model == "affine" else s

        got = xccm.fit(measured, reference, model=model).values
        for i in (0, n_frames - 1):
            want = np.linalg.lstsq(design(meas[i]), ref, rcond=None)[0]
            assert np.allclose(got[i], want, rtol=1e-8, atol=1e-10), f"{model} fit, frame {i}"

        def lstsq_loop(model=model, design=design):
            for i in range(n_loop):
                np.linalg.lstsq(design(meas[i]), ref, rcond=None)

        base = bench.time(
            f"`np.linalg.lstsq` loop, {model}",
            lstsq_loop,
            **kw,
            scale=n_frames / n_loop,
            notes=f"baseline; timed on {n_loop} frames, ×{n_frames // n_loop}",
        )
        row = bench.time(
            f"`xccm.fit(measured, reference, model='{model}')`",
            lambda model=model: xccm.fit(measured, reference, model=model),
            **kw,
            baseline=base,
            notes="one matrix per frame, in one call",
        )
        row.check("≤ 50 ms", row.time_s <= 0.05)
        s_all = np.concatenate([meas, np.ones((n_frames, n_patch, 1))], -1)
        if model == "linear":
            s_all = meas

        def normal_equations(s=s_all):
            st = np.swapaxes(s, -1, -2)
            return np.linalg.solve(st @ s, st @ ref)

        assert np.allclose(normal_equations(), got, rtol=1e-8, atol=1e-10)
        bench.time(
            "NumPy normal equations, batched",
            normal_equations,
            **kw,
            baseline=base,
            notes="`np.linalg.solve(S.T @ S, S.T @ ref)` over all frames at once: a peer",
        )


def bench_fit_pixels(bench: Bench, rng, n: int, chunk_rows: int = 1 << 20) -> None:
    bench.section = "5. Fit"
    measured = rng.random((n, 3), dtype=np.float32)
    m_true = _random_matrix(rng, 4)  # affine: rows 0-2 the matrix, row 3 the offset
    reference = np.empty_like(measured)
    for start in range(0, n, chunk_rows):  # reference = measured @ up + offset, no noise
        rows = slice(start, start + chunk_rows)
        np.matmul(measured[rows], m_true[:3], out=reference[rows])
        reference[rows] += m_true[3]
    dims = ("pixel", "channel")
    m_lazy = xr.DataArray(measured, dims=dims).chunk({"pixel": chunk_rows})
    r_lazy = xr.DataArray(reference, dims=dims).chunk({"pixel": chunk_rows})

    fit = xccm.fit(m_lazy, r_lazy, model="affine")
    got = fit.values
    err = float(np.abs(got - m_true).max())
    assert err < 1e-5, f"chunked affine fit is off by {err:.2e}"

    size = f"{_count(n)} pixel pairs, 2 × {_mb(measured.nbytes)}"
    size += f", {m_lazy.data.numblocks[0]} × {_mb(chunk_rows * 12)} chunks each"
    kw = {"size": size, "layout": "(pixel, channel)", "dtype": "float32", "rss": True}
    sum_ = m_lazy.sum() + r_lazy.sum()
    total = bench.time(
        "`(m_lazy.sum() + r_lazy.sum()).compute()`",
        sum_.compute,
        **kw,
        tasks=_n_tasks(sum_),
        notes="baseline: one pass over the same chunks",
    )
    row = bench.time(
        "`xccm.fit(m_lazy, r_lazy, model='affine').compute()`",
        lambda: xccm.fit(m_lazy, r_lazy, model="affine").compute(),
        **kw,
        baseline=total,
        tasks=_n_tasks(fit),
        notes=f"recovers the exact matrix to {err:.1e}",
    )
    row.check("ratio ≤ 1.5", row.ratio <= 1.5)
    m_mem = xr.DataArray(measured, dims=dims)
    r_mem = xr.DataArray(reference, dims=dims)
    kw["size"] = f"{_count(n)} pixel pairs, 2 × {_mb(measured.nbytes)}"
    kw["layout"] = "(pixel, channel), in memory"
    bench.time(
        "`xccm.fit(m_np, r_np, model='affine')`",
        lambda: xccm.fit(m_mem, r_mem, model="affine"),
        **kw,
        baseline=total,
        notes="NumPy-backed, for comparison: one parallel numba pass",
    )


# ---------------------------------------------------------------------------------------------
# report


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    versions = {"xccm": xccm.__version__, "numpy": np.__version__, "xarray": xr.__version__}
    versions["dask"] = dask.__version__
    for name, label in (("numba", "numba"), ("cv2", "opencv"), ("colour", "colour")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # colour warns that matplotlib is missing
                versions[label] = __import__(name).__version__
        except ImportError:
            versions[label] = None
    info["versions"] = versions
    try:
        import numba

        info["numba_threads"] = numba.get_num_threads()
        info["numba_threading_layer"] = numba.threading_layer()
    except (ImportError, ValueError):  # ValueError: no parallel kernel has run yet
        pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def markdown(rows: list[Row], info: dict, mode: str, total_s: float) -> str:
    v = info["versions"]
    lines = [
        f"**xccm benchmarks** ({mode}, total {total_s:.0f} s, peak RSS of the run "
        f"{info['peak_rss_mb'] / 1e3:.1f} GB) — {info['date']}",
        "",
        f"Machine: {info['processor']} ({info['machine']}), os.cpu_count()={info['cpu_count']}, "
        f"{info['platform']}; Python {info['python']}",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None),
        "",
        "Times are the best of N calls after a warm-up call; ratio = time / baseline time "
        "(same run). Peak RSS: increase during one extra untimed call.",
    ]
    header = (
        "| operation | size | layout | dtype | best (ms) | N | ratio | baseline | target | notes |"
    )
    section = None
    for r in rows:
        if r.section != section:
            section = r.section
            lines += [
                "",
                f"### {section}",
                "",
                header,
                "|---|---|---|---|---:|---:|---:|---|---|---|",
            ]
        ratio = "1 (baseline)" if r.ratio is None else f"{r.ratio:.2f}"
        notes = [r.notes] if r.notes else []
        notes += [f"{val:.2f}× vs {k}" for k, val in r.other_ratios.items()]
        if r.tasks is not None:
            notes.append(f"{r.tasks} tasks")
        if r.peak_rss_mb is not None:
            notes.append(f"peak RSS +{r.peak_rss_mb:.0f} MB")
        target = ""
        if r.target is not None:
            target = f"{r.target}: {'met' if r.target_met else '**missed**'}"
        cells = [r.operation, r.size, r.layout, r.dtype, _fmt_ms(r.time_s), str(r.n), ratio]
        cells += [r.baseline or "—", target, "; ".join(notes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_docs_table(path: Path, rows: list[Row], info: dict) -> None:
    """Write the table to ``path``, the page the documentation's performance page includes."""
    text = markdown(rows, info, info["mode"], info["total_s"])
    path.write_text(DOCS_NOTE.format(mode=info["mode"]) + text + "\n")
    print(f"wrote {path}", file=sys.stderr)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="~100 MB stacks, 10^7 pixels (<1 min)")
    p.add_argument("--repeat", type=int, default=None, help="least N per row (3 quick, 5 full)")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON file (default {RESULTS})")
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help=f"the table for the docs (default {DOCS_TABLE} for a full run, none for --quick)",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="FILE",
        help="time nothing: write the table of a saved results.json to --markdown",
    )
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        rows = [Row(**row) for row in saved["rows"]]
        write_docs_table(args.markdown or DOCS_TABLE, rows, saved["header"])
        return
    start = time.perf_counter()
    mode = "quick" if args.quick else "full"
    frames, n_pixels = (8, 10**7) if args.quick else (64, 10**8)
    repeat = args.repeat or (3 if args.quick else 5)
    bench = Bench(repeat, budget_s=0.5 if args.quick else 1.5)
    rng = np.random.default_rng(0)
    dask.config.set(scheduler="threads")

    shape = (frames, 1024, 1024, 3)
    arr = rng.random(shape, dtype=np.float32)
    m, m4 = _random_matrix(rng), _random_matrix(rng, 4)
    mem = bench_in_memory(bench, arr, m, m4)
    gc.collect()
    bench_dask(bench, arr, m, mem)  # reuses the stack and section 1's in-memory times
    del arr
    gc.collect()
    bench_uint8(bench, shape, m, rng)
    gc.collect()
    bench_opencv(bench, rng)
    gc.collect()
    bench_fit_batch(bench, rng)
    gc.collect()
    bench_fit_pixels(bench, rng, n_pixels)
    gc.collect()

    order = {name: i for i, name in enumerate(dict.fromkeys(sorted(r.section for r in bench.rows)))}
    rows = sorted(bench.rows, key=lambda r: order[r.section])  # stable: keeps order within
    total = time.perf_counter() - start
    info = machine_info()
    # ru_maxrss is in KiB on Linux: the high-water mark of this whole run.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    info.update(mode=mode, repeat=repeat, total_s=round(total, 1), peak_rss_mb=round(peak_mb))
    print(markdown(rows, info, mode, total))
    args.output.write_text(
        json.dumps({"header": info, "rows": [asdict(r) for r in rows]}, indent=1) + "\n"
    )
    print(f"\nwrote {args.output}", file=sys.stderr)
    markdown_path = args.markdown or (None if args.quick else DOCS_TABLE)
    if markdown_path is not None:
        write_docs_table(markdown_path, rows, info)


if __name__ == "__main__":
    main()
