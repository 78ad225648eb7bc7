"""ΔE-optimised fits per frame: how the cost grows with the number of frames.

For a batch of B synthetic ColorChecker frames (24 patches, CIEDE2000 loss, 3x3), times

* ``xccm.fit(..., loss="ciede2000")`` on the whole batch (one vectorised optimisation),
* the same on a Dask-backed batch, in one chunk of frames per core, threaded scheduler,
* a Python loop of ``scipy.optimize.least_squares`` per frame (same residuals, same start),
* a Python loop of OpenCV's ``cv2.ccm`` per frame (Nelder–Mead), where installed,

and prints milliseconds per frame and the ratio to the vectorised xccm fit, all measured in one
run, best of ``--repeat``. A first table compares one frame alone: ``xccm.fit`` on a
``(patch, channel)`` array (24x3, CIEDE2000, 3x3) against one ``cv2.ccm`` fit of the same
frame, the two timed alternately, best of ``--single-repeat``. The loops run on a subset of
the frames (``--loop-frames``) and are reported per frame.

A second table shows what the chunking of the patch colours costs: the same CIEDE2000 fit of
``--chunked-frames`` frames (10 000 by default; 0 skips it) in memory, from chunks of 5000
frames, and from one-frame chunks (what :func:`xccm.extract_patches` returns for a stack
chunked per frame), lazily built and computed (threaded scheduler), with the number of tasks
in each graph and the ratio of its time to the in-memory fit's; and the same for the
least-squares fit (no loss). A third table times the models: the per-frame CIEDE2000 fit of
``--model-frames`` frames (1000 by default; 0 skips it) with a root-polynomial of degree 2 (6x3,
with its default ridge, and without) and degree 3, against the 3x3 in the same run. Writes
``benchmarks/results_chartfit.json`` and prints the tables in markdown; ``--markdown PATH``
also writes them to a file (``docs/chartfit_results.md``, which the chart-fit guide includes),
and ``--from-json FILE`` rewrites them from a saved run without timing anything.

Run: ``python benchmarks/bench_chartfit.py [--frames 1 10 100 1000 5000] [--chunked-frames N]
[--model-frames N] [--markdown docs/chartfit_results.md]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

import xccm
from xccm import colorimetry

warnings.simplefilter("ignore")

RESULTS = Path(__file__).with_name("results_chartfit.json")
DOCS = Path(__file__).parents[1] / "docs" / "chartfit_results.md"


def frames_of(n: int, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    ref = xccm.chart()
    mix = np.eye(3) * 0.6 + rng.uniform(0, 0.2, (n, 3, 3))
    lin = np.einsum("pc,bcd->bpd", ref.values.clip(0), mix) * rng.uniform(0.6, 0.9, (n, 1, 1))
    lin = lin + rng.normal(0, 0.004, lin.shape)
    return xr.DataArray(lin, dims=("time", "patch", "channel"), coords=ref.coords)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def scipy_loop(frames: xr.DataArray, ref: xr.DataArray) -> None:
    from scipy.optimize import least_squares

    metric = colorimetry.metric("ciede2000")
    target = metric.transform(ref.values)
    start = xccm.fit(frames, ref).values
    for s, m0 in zip(frames.values, start, strict=True):
        least_squares(
            lambda p, s=s: metric.components(metric.transform(s @ p.reshape(3, 3)), target).ravel(),
            m0.ravel(),
        )


def opencv_loop(frames: xr.DataArray) -> None:
    import cv2

    lab = xccm.chart(space="lab-d50").values.reshape(24, 1, 3)
    for s in frames.values:
        m = cv2.ccm.ColorCorrectionModel(
            (s.clip(0, 1) ** (1 / 2.2)).reshape(24, 1, 3), lab.copy(), cv2.ccm.COLOR_SPACE_LAB_D50_2
        )
        m.setRGB(True)
        m.setSaturatedThreshold(0, 1)
        m.compute()


def single_frame_row(repeat: int) -> dict:
    """One 24-patch frame: ``xccm.fit`` (CIEDE2000, 3x3) vs one ``cv2.ccm`` fit, alternated."""
    ref = xccm.chart()
    frames = frames_of(1, seed=4)
    one = frames.isel(time=0)
    kw = {"loss": "ciede2000", "saturation": None}
    fits = {"xccm": lambda: xccm.fit(one, ref, **kw), "cv2": lambda: opencv_loop(frames)}
    try:
        fits["cv2"]()
    except ImportError:
        del fits["cv2"]
    times = {k: [] for k in fits}
    for f in fits.values():
        f()  # warm-up
    for _ in range(repeat):
        for k, f in fits.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    best_ = {k: min(v) for k, v in times.items()}
    med = {k: float(np.median(v)) for k, v in times.items()}
    row = {"xccm_ms": 1e3 * best_["xccm"], "xccm_median_ms": 1e3 * med["xccm"]}
    if "cv2" in best_:
        row |= {
            "cv2_ms": 1e3 * best_["cv2"],
            "cv2_median_ms": 1e3 * med["cv2"],
            "xccm_over_cv2": best_["xccm"] / best_["cv2"],
        }
    return row


def chunking_rows(n: int, repeat: int) -> list[dict]:
    """A fit of ``n`` frames in memory, from 5000-frame chunks and from one-frame chunks."""
    ref = xccm.chart()
    frames = frames_of(n, seed=2)
    rows = []
    for loss in ("ciede2000", None):
        kw = {"loss": loss} if loss else {}
        eager = xccm.fit(frames, ref, **kw)
        base = None
        big = min(5000, n)
        for label, chunks in (("in memory", None), (f"{big}-frame chunks", big), ("1-frame", 1)):
            data = frames if chunks is None else frames.chunk({"time": chunks})
            m = xccm.fit(data, ref, **kw)
            tasks = len(m.__dask_graph__()) if chunks else 0
            got = m.compute()
            assert np.allclose(got, eager, rtol=0, atol=1e-8), label
            t = best(lambda d=data, kw=kw: xccm.fit(d, ref, **kw).compute(), repeat)
            base = base or t
            rows.append(
                {
                    "frames": n,
                    "fit": loss or "least squares",
                    "input": label,
                    "tasks": tasks,
                    "seconds": t,
                    "ratio_to_in_memory": t / base,
                }
            )
            print(f"  {n} frames, {loss or 'least squares'}, {label}: {t:.2f} s, {tasks} tasks")
    return rows


#: The models of the third table: (label, fit keywords).
MODEL_ROWS = [
    ("linear (3x3)", {"model": "linear"}),
    ("root-polynomial 2 (6x3), default ridge", {"model": "root_polynomial", "degree": 2}),
    ("root-polynomial 2 (6x3), no ridge", {"model": "root_polynomial", "degree": 2, "ridge": None}),
    ("root-polynomial 3 (13x3), default ridge", {"model": "root_polynomial", "degree": 3}),
]


def model_rows(n: int, repeat: int) -> list[dict]:
    """The per-frame CIEDE2000 fit of ``n`` frames for each of :data:`MODEL_ROWS`."""
    ref = xccm.chart()
    frames = frames_of(n, seed=5)
    kw = {"loss": "ciede2000", "saturation": None}
    rows = []
    for label, model in MODEL_ROWS:
        t = best(lambda m=model: xccm.fit(frames, ref, **kw, **m), repeat)
        fitted = xccm.fit(frames, ref, **kw, **model)
        rows.append(
            {
                "model": label,
                "frames": n,
                "seconds": t,
                "mean_iterations": float(fitted.iterations.mean()),
                "mean_loss": float(fitted.loss.mean()),
            }
        )
    for r in rows:
        r["ratio_to_3x3"] = r["seconds"] / rows[0]["seconds"]
        print(f"  {r['model']}: {r['seconds']:.2f} s ({r['ratio_to_3x3']:.2f}x the 3x3)")
    return rows


def machine() -> dict:
    """Where and with what the run was made."""
    versions = {"xccm": xccm.__version__, "numpy": np.__version__, "xarray": xr.__version__}
    try:
        import cv2

        versions["opencv"] = cv2.__version__
    except ImportError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def markdown(results: dict) -> str:
    """The tables of a run (``results``, as in ``results_chartfit.json``) as markdown."""
    lines = ["% Written by benchmarks/bench_chartfit.py; do not edit by hand.", ""]
    info = results.get("machine")
    if info:
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        lines += [
            f"Run of {info['date']} on {info['platform']}, {info['cpus']} CPUs, Python "
            f"{info['python']}; {versions}.",
            "",
        ]
    single = results["single_frame"]
    nan = float("nan")
    lines += [
        "| one frame, 24x3, CIEDE2000 | xccm.fit ms | cv2.ccm ms | xccm / cv2.ccm |",
        "|---|---|---|---|",
        f"| best (median) of {single.get('repeat', '?')} | {single['xccm_ms']:.2f} "
        f"({single['xccm_median_ms']:.2f}) | {single.get('cv2_ms', nan):.2f} "
        f"({single.get('cv2_median_ms', nan):.2f}) | {single.get('xccm_over_cv2', nan):.2f}x |",
        "",
        "| frames | xccm ms/frame | xccm on Dask, a chunk of frames per core | scipy "
        "`least_squares` loop / xccm | `cv2.ccm` loop / xccm | max iterations |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["per_frame"]:
        x = r["xccm_ms_per_frame"]
        lines.append(
            f"| {r['frames']} | {x:.2f} | {r['xccm_dask_ms_per_frame']:.2f} | "
            f"{r['scipy_loop_ms_per_frame'] / x:.1f}x | {r['opencv_loop_ms_per_frame'] / x:.1f}x "
            f"| {r['max_iterations']} |"
        )
    if results["chunking"]:
        lines += [
            "",
            "| frames | fit | patch colours | tasks | seconds | / in memory |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['frames']:,} | {r['fit']} | {r['input']} | {r['tasks']:,} | "
            f"{r['seconds']:.2f} | {r['ratio_to_in_memory']:.2f} |"
            for r in results["chunking"]
        ]
    if results["models"]:
        n = results["models"][0]["frames"]
        lines += [
            "",
            f"| model, {n} frames, CIEDE2000 per frame | seconds | / 3x3 | mean iterations "
            "| mean loss |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['model']} | {r['seconds']:.2f} | {r['ratio_to_3x3']:.2f}x | "
            f"{r['mean_iterations']:.1f} | {r['mean_loss']:.3f} |"
            for r in results["models"]
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 10, 100, 1000, 5000])
    parser.add_argument("--loop-frames", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunked-frames", type=int, default=10_000)
    parser.add_argument("--single-repeat", type=int, default=30)
    parser.add_argument("--model-frames", type=int, default=1000)
    parser.add_argument(
        "--markdown", type=Path, default=None, help=f"also write the tables here (e.g. {DOCS})"
    )
    parser.add_argument(
        "--from-json", type=Path, default=None, help="rewrite the tables of a saved run, untimed"
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
    else:
        results = run(args)
        RESULTS.write_text(json.dumps(results, indent=2))
    text = markdown(results)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text)
        print(f"wrote {args.markdown}")


def run(args) -> dict:
    """Time everything; return the results (the JSON file's content)."""
    by_model = model_rows(args.model_frames, args.repeat) if args.model_frames else []
    single = single_frame_row(args.single_repeat) | {"repeat": args.single_repeat}
    chunked = chunking_rows(args.chunked_frames, 1) if args.chunked_frames else []
    ref = xccm.chart()
    kw = {"loss": "ciede2000", "saturation": None}
    rows = []
    loop = frames_of(args.loop_frames, seed=1)
    per_scipy = best(lambda: scipy_loop(loop, ref), 1) / args.loop_frames
    try:
        per_cv = best(lambda: opencv_loop(loop), 1) / args.loop_frames
    except ImportError:
        per_cv = float("nan")
    for n in args.frames:
        frames = frames_of(n)
        t = best(lambda f=frames: xccm.fit(f, ref, **kw), args.repeat)
        lazy = frames.chunk({"time": -(-n // (os.cpu_count() or 1))})  # a chunk per core
        t_dask = best(lambda f=lazy: xccm.fit(f, ref, **kw).compute(), args.repeat)
        m = xccm.fit(frames, ref, **kw)
        rows.append(
            {
                "frames": n,
                "xccm_ms_per_frame": 1e3 * t / n,
                "xccm_dask_ms_per_frame": 1e3 * t_dask / n,
                "scipy_loop_ms_per_frame": 1e3 * per_scipy,
                "opencv_loop_ms_per_frame": 1e3 * per_cv,
                "max_iterations": int(m.iterations.max()),
                "all_converged": bool(m.converged.all()),
            }
        )
    return {
        "machine": machine(),
        "single_frame": single,
        "per_frame": rows,
        "chunking": chunked,
        "models": by_model,
    }


if __name__ == "__main__":
    main()
