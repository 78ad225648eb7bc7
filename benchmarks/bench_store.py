"""Store-to-store benchmark: ``xccm.io.to_zarr(src.ccm.apply(m), ...)`` against a plain copy.

Run from the repository root::

    python benchmarks/bench_store.py            # 4 GiB store, both compressors: several minutes
    python benchmarks/bench_store.py --quick    # 0.5 GiB store, 2 repeats: about a minute

What it measures (the target of the issue): correcting a ~4 GiB zarr store of float32
``(time, y, x, channel)`` frames, chunked one frame per chunk, with Dask's threaded scheduler
on 2 workers, keeps the peak RSS increase <= 1 GiB, and takes <= 1.10x the wall time of a
plain Dask zarr -> zarr copy of the same store with the same chunks
(``xr.open_zarr(src).to_zarr(copy)``, xarray's own writer), the ratio measured in one run.

For each compressor setting (``none``: ``compressors=None`` on the source store and both
outputs; ``default``: no encoding anywhere, i.e. zarr 3's default zstd) it

1. synthesises the source store once, streaming random float32 frames through Dask (so the
   generation itself stays low-memory);
2. measures the peak RSS increase (``_timing.peak_rss``, sampled from ``/proc/self/statm``)
   of one untimed copy and one untimed correction, after a tiny untimed warm-up in which
   numba compiles;
3. times the copy, the correction and, for reference, ``xccm.io.to_zarr(src)`` without a
   correction (xccm's writer, which writes whole uncompressed chunks as files itself)
   alternately, ``--repeat`` times each, and keeps the best of each; every output store is
   deleted (and the page cache's dirty pages flushed with ``os.sync``) outside the timed
   region;
4. checks once that a few frames of the corrected store equal ``frame @ m``.

``--small`` instead times the cost of the progress records, where chunks are tiny and
the bookkeeping dominates: ``xccm.io.to_zarr`` against xarray's own ``to_zarr`` of the same
lazy Dataset (read from a zarr store, no correction), for 10 000 one-frame chunks of one
variable (``many-chunks``) and for 2000 variables of 2 chunks each (``many-variables``),
alternately, best of ``--repeat``, the ratio from the same run.

It prints a markdown table and writes ``benchmarks/results_store.json`` (machine, versions,
settings, the process's absolute peak RSS and one dict per compressor setting). Progress goes
to stderr. The source store is read from the page cache after it is written (the machine is
assumed to have several times the store size in RAM), so the times are CPU- and
write-bound, not read-bound. Random data hardly compresses, so ``default`` measures zstd's
cost without its savings.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from _timing import peak_rss

import xccm
import xccm.io

RESULTS = Path(__file__).with_name("results_store.json")
DIMS = ("time", "y", "x", "channel")
MB = 2**20
GIB = 2**30
RATIO_TARGET = 1.10
RSS_TARGET_MB = 1024
WORKERS = 2
M = np.array([[1.3, -0.2, 0.0], [-0.25, 1.2, -0.1], [0.0, -0.15, 1.25]], dtype=np.float32)

warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def encoding(compressor: str) -> dict | None:
    """Zarr encoding for the image variable: none -> uncompressed, default -> zarr's own."""
    return {"image": {"compressors": None}} if compressor == "none" else None


def matrix(n_frames: int, kind: str):
    """The 3x3 matrix, or a per-frame ``(time, channel_in, channel)`` DataArray of them."""
    if kind == "fixed":
        return M
    scale = np.linspace(0.9, 1.1, n_frames, dtype=np.float32)[:, None, None]
    return xr.DataArray(M * scale, dims=("time", "channel_in", "channel"))


def frame_matrix(m, t: int) -> np.ndarray:
    return np.asarray(m) if isinstance(m, np.ndarray) else m.isel(time=t).values


def synthesise(path: Path, n_frames: int, h: int, w: int, compressor: str) -> None:
    """Write ``n_frames`` random float32 frames to ``path``, one zarr chunk per frame."""
    data = da.random.RandomState(0).random_sample((n_frames, h, w, 3), chunks=(1, h, w, 3))
    ds = xr.Dataset({"image": (DIMS, data.astype(np.float32))})
    ds.to_zarr(path, mode="w", encoding=encoding(compressor))


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()  # flush dirty pages of earlier stores now, not inside the next timed run


def bench_one(args, scratch: Path, compressor: str, n_frames: int, h: int, w: int) -> dict:
    src_path = scratch / f"src_{compressor}.zarr"
    copy_path = scratch / f"copy_{compressor}.zarr"
    out_path = scratch / f"corrected_{compressor}.zarr"
    enc = encoding(compressor)
    chunk_mb = h * w * 3 * 4 / MB

    log(f"[{compressor}] synthesising {n_frames} frames of {h}x{w}x3 float32 at {src_path}")
    t0 = time.perf_counter()
    synthesise(src_path, n_frames, h, w, compressor)
    gen_s = time.perf_counter() - t0
    src_bytes = sum(f.stat().st_size for f in src_path.rglob("*") if f.is_file())
    log(f"[{compressor}] source written in {gen_s:.1f} s, {src_bytes / MB:.0f} MB on disk")

    src = xr.open_zarr(src_path)
    assert src.image.chunks[0] == (1,) * n_frames, src.image.chunks
    m = matrix(n_frames, args.matrix)

    def copy() -> None:
        src.to_zarr(copy_path, mode="w", encoding=enc)

    def correct() -> None:
        xccm.io.to_zarr(src.ccm.apply(m), out_path, mode="w", encoding=enc)

    def copy_xccm() -> None:  # xccm's writer without the correction: where the time goes
        xccm.io.to_zarr(src, out_path, mode="w", encoding=enc)

    # Warm-up (numba compiles the serial kernel here), outside every measurement.
    src.isel(time=slice(0, 1)).ccm.apply(m).image.compute()

    log(f"[{compressor}] peak RSS of one copy")
    copy_rss = peak_rss(copy)
    rmtree(copy_path)
    log(f"[{compressor}] peak RSS of one correction")
    correct_rss = peak_rss(correct)

    log(f"[{compressor}] checking the corrected store")
    check_frames = sorted({0, n_frames // 2, n_frames - 1})
    out = xccm.io.open_zarr(out_path)
    max_err = 0.0
    for t in check_frames:
        frame = src.image.isel(time=t).values.astype(np.float64)
        ref = frame @ frame_matrix(m, t).astype(np.float64)
        got = out.image.isel(time=t).values
        assert got.dtype == np.float32, got.dtype
        assert np.allclose(got, ref, rtol=1e-5, atol=1e-6), f"frame {t} differs"
        max_err = max(max_err, float(np.abs(got - ref).max()))
    del out
    rmtree(out_path)

    times: dict[str, list[float]] = {"copy": [], "correct": [], "copy_xccm": []}
    runs = (("copy", copy, copy_path), ("correct", correct, out_path))
    runs += (("copy_xccm", copy_xccm, out_path),)
    for i in range(args.repeat):
        for name, f, path in runs:
            gc.collect()
            t0 = time.perf_counter()
            f()
            dt = time.perf_counter() - t0
            times[name].append(dt)
            rmtree(path)
            log(f"[{compressor}] run {i + 1}/{args.repeat} {name}: {dt:.2f} s")

    copy_best, correct_best = min(times["copy"]), min(times["correct"])
    ratio = correct_best / copy_best
    copy_mb = None if copy_rss is None else copy_rss / MB
    correct_mb = None if correct_rss is None else correct_rss / MB
    rmtree(src_path)
    return {
        "compressor": compressor,
        "size_gib": n_frames * h * w * 3 * 4 / GIB,
        "source_on_disk_mb": round(src_bytes / MB, 1),
        "n_frames": n_frames,
        "frame": f"{h}x{w}",
        "chunk_mb": chunk_mb,
        "matrix": args.matrix,
        "generate_s": round(gen_s, 2),
        "copy_times_s": [round(t, 3) for t in times["copy"]],
        "correct_times_s": [round(t, 3) for t in times["correct"]],
        "copy_xccm_times_s": [round(t, 3) for t in times["copy_xccm"]],
        "copy_xccm_best_s": min(times["copy_xccm"]),
        "copy_best_s": copy_best,
        "correct_best_s": correct_best,
        "ratio": ratio,
        "copy_mb_per_s": n_frames * chunk_mb / copy_best,
        "correct_mb_per_s": n_frames * chunk_mb / correct_best,
        "copy_peak_rss_mb": copy_mb,
        "correct_peak_rss_mb": correct_mb,
        "checked_frames": check_frames,
        "max_abs_error": max_err,
        "ratio_target_met": ratio <= RATIO_TARGET,
        "rss_target_met": correct_mb is not None and correct_mb <= RSS_TARGET_MB,
    }


SMALL_CASES = {
    # name: (n_variables, n_frames per variable, frame shape)
    "many-chunks": (1, 10_000, (8, 8)),
    "many-variables": (2000, 2, (8, 8)),
}


def bench_small(args, scratch: Path) -> list[dict]:
    """Time xccm's writer against xarray's on many tiny chunks: the records' own cost."""
    rows = []
    for case, (n_vars, n_frames, (h, w)) in SMALL_CASES.items():
        if args.case and case not in args.case:
            continue
        src_path, out_path, copy_path = (scratch / f"{case}_{k}.zarr" for k in ("src", "o", "c"))
        rng = np.random.default_rng(0)
        ds = xr.Dataset(
            {
                f"v{i}": (DIMS, rng.random((n_frames, h, w, 3), dtype=np.float32))
                for i in range(n_vars)
            }
        ).chunk(time=1)
        enc = {f"v{i}": {"compressors": None} for i in range(n_vars)}
        ds.to_zarr(src_path, mode="w", encoding=enc)
        src = xr.open_zarr(src_path)

        def copy(src=src, enc=enc, copy_path=copy_path) -> None:
            src.to_zarr(copy_path, mode="w", encoding=enc)

        def write(src=src, enc=enc, out_path=out_path) -> None:
            xccm.io.to_zarr(src, out_path, mode="w", encoding=enc)

        times: dict[str, list[float]] = {"copy": [], "xccm": []}
        for i in range(args.repeat):
            for name, f, path in (("copy", copy, copy_path), ("xccm", write, out_path)):
                gc.collect()
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
                rmtree(path)
                log(f"[{case}] run {i + 1}/{args.repeat} {name}: {times[name][-1]:.2f} s")
        rmtree(src_path)
        rows.append(
            {
                "case": case,
                "n_variables": n_vars,
                "n_chunks": n_vars * n_frames,
                "copy_times_s": [round(t, 3) for t in times["copy"]],
                "xccm_times_s": [round(t, 3) for t in times["xccm"]],
                "copy_best_s": min(times["copy"]),
                "xccm_best_s": min(times["xccm"]),
                "ratio": min(times["xccm"]) / min(times["copy"]),
            }
        )
    return rows


def markdown_small(rows: list[dict], info: dict) -> str:
    lines = [
        f"**xccm store benchmark, tiny chunks** ({info['repeat']} runs each, best of N, "
        f"threaded scheduler with {WORKERS} workers) — {info['date']}",
        "",
        "| case | variables | chunks | xarray to_zarr best (s) | xccm to_zarr best (s) | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['n_variables']} | {r['n_chunks']} | {r['copy_best_s']:.2f} "
            f"| {r['xccm_best_s']:.2f} | {r['ratio']:.2f} |"
        )
    lines += [
        "",
        "All runs (s): "
        + "; ".join(
            f"{r['case']}: xarray {r['copy_times_s']}, xccm {r['xccm_times_s']}" for r in rows
        ),
    ]
    return "\n".join(lines)


def machine_info() -> dict:
    import numba
    import zarr

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": {
            "xccm": xccm.__version__,
            "numpy": np.__version__,
            "dask": dask.__version__,
            "xarray": xr.__version__,
            "zarr": zarr.__version__,
            "numba": numba.__version__,
        },
    }


def _fmt(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def markdown(rows: list[dict], info: dict) -> str:
    v = info["versions"]
    lines = [
        f"**xccm store benchmark** ({info['mode']}, {info['repeat']} runs each, best of N, "
        f"threaded scheduler with {WORKERS} workers, matrix {info['matrix']}) — {info['date']}",
        "",
        f"Machine: {info['platform']}, os.cpu_count()={info['cpu_count']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items()),
        "",
        "| compressor | size (GiB) | n_frames | chunk MB | copy best (s) | correct best (s) "
        f"| ratio (≤ {RATIO_TARGET:.2f}) | xccm copy best (s) | copy peak RSS +MB "
        f"| correct peak RSS +MB (≤ {RSS_TARGET_MB}) | ratio target | RSS target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        cells = [
            r["compressor"],
            f"{r['size_gib']:.2f}",
            str(r["n_frames"]),
            f"{r['chunk_mb']:.1f}",
            f"{r['copy_best_s']:.2f}",
            f"{r['correct_best_s']:.2f}",
            f"{r['ratio']:.3f}",
            f"{r['copy_xccm_best_s']:.2f}",
            _fmt(r["copy_peak_rss_mb"], ".0f"),
            _fmt(r["correct_peak_rss_mb"], ".0f"),
            "met" if r["ratio_target_met"] else "**missed**",
            "met" if r["rss_target_met"] else "**missed**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "All runs (s): "
        + "; ".join(
            f"{r['compressor']}: copy {r['copy_times_s']}, correct {r['correct_times_s']}, "
            f"xccm copy {r['copy_xccm_times_s']}"
            for r in rows
        ),
        "",
        f"Absolute peak RSS of the whole process (ru_maxrss): {info['peak_rss_mb']:.0f} MB; "
        f"total {info['total_s']:.0f} s.",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=4.0, help="store size in GiB (default 4)")
    p.add_argument("--frame", default="1024x1365", help="frame H x W (default 1024x1365)")
    p.add_argument("--dir", type=Path, default=None, help="scratch dir (default: a temp dir)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each (default 3)")
    p.add_argument("--quick", action="store_true", help="0.5 GiB store, 2 repeats")
    p.add_argument("--small", action="store_true", help="tiny chunks: the records' cost")
    p.add_argument("--case", action="append", choices=tuple(SMALL_CASES),
                   help="with --small: only this case (repeatable)")  # fmt: skip
    p.add_argument("--compressor", choices=("none", "default", "both"), default="both")
    p.add_argument("--matrix", choices=("fixed", "per-frame"), default="fixed",
                   help="one 3x3 matrix, or one per frame (a (time, 3, 3) DataArray)")  # fmt: skip
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON file (default {RESULTS})")
    args = p.parse_args()
    if args.quick:
        args.size_gb, args.repeat = 0.5, 2
    return args


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    h, w = (int(s) for s in args.frame.lower().split("x"))
    n_frames = max(1, round(args.size_gb * GIB / (h * w * 3 * 4)))
    compressors = ("none", "default") if args.compressor == "both" else (args.compressor,)
    own_dir = args.dir is None
    scratch = Path(tempfile.mkdtemp(prefix="xccm_bench_store_")) if own_dir else args.dir
    scratch.mkdir(parents=True, exist_ok=True)
    dask.config.set(scheduler="threads", num_workers=WORKERS)

    if args.small:
        try:
            rows = bench_small(args, scratch)
        finally:
            if own_dir:
                shutil.rmtree(scratch, ignore_errors=True)
        info = machine_info()
        info.update(mode="small", repeat=args.repeat, workers=WORKERS)
        print(markdown_small(rows, info))
        output = args.output.with_name("results_store_small.json")
        output.write_text(json.dumps({"header": info, "rows": rows}, indent=1) + "\n")
        log(f"wrote {output}")
        return

    rows = []
    try:
        for compressor in compressors:
            rows.append(bench_one(args, scratch, compressor, n_frames, h, w))
            gc.collect()
    finally:
        for c in compressors:
            for name in ("src", "copy", "corrected"):
                shutil.rmtree(scratch / f"{name}_{c}.zarr", ignore_errors=True)
        if own_dir:
            shutil.rmtree(scratch, ignore_errors=True)

    info = machine_info()
    # ru_maxrss is in KiB on Linux: the high-water mark of the whole process.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    info.update(
        mode="quick" if args.quick else "full",
        size_gb=args.size_gb,
        frame=args.frame,
        repeat=args.repeat,
        workers=WORKERS,
        matrix=args.matrix,
        targets={"ratio": RATIO_TARGET, "peak_rss_mb": RSS_TARGET_MB},
        total_s=round(time.perf_counter() - start, 1),
        peak_rss_mb=round(peak_mb),
    )
    print(markdown(rows, info))
    args.output.write_text(json.dumps({"header": info, "rows": rows}, indent=1) + "\n")
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
