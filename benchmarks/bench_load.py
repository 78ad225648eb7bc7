"""Many small chunks: the graph ``xccm.apply`` builds with a per-frame matrix, vs Dask's floor.

For a float32 ``(time, y, x, channel)`` stack of small frames chunked one frame per chunk (what
a per-frame ``open_mfdataset`` or a zarr store of frames gives), with one matrix per frame,
this prints, for each number of chunks:

* **Dask floor**: ``img.data.map_blocks(np.copy)``, the least a blockwise operation costs on
  these chunks (the baseline of every ratio);
* ``xccm.apply(img, m)`` with an in-memory per-frame matrix ``m(time, channel_in, channel)``;
* the same with the matrix Dask-backed in one chunk (what a lazy :func:`xccm.fit` returns);
* the same with one 3x3 matrix for every frame,

each with the number of tasks in its graph (``len(obj.__dask_graph__())``), tasks per image
chunk, the time to build the graph and the time to compute it (threaded scheduler), and the
ratio of build + compute time to the floor's, all measured in this run. The image itself is
``da.from_array`` of an in-memory array: one task per chunk, counted in every row.

Each result is checked against ``frame @ m[frame]`` on a few frames before timing. With
``--repeat N`` the best of N calls is kept (1 by default: 100 000 chunks take minutes).

Run from the repository root::

    python benchmarks/bench_load.py                       # 10 000 and 100 000 chunks
    python benchmarks/bench_load.py --chunks 1000 10000   # quicker
    python benchmarks/bench_load.py --chunks 10000 --graph-only 100000  # 100 000: graphs only
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

import xccm

DIMS = ("time", "y", "x", "channel")


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        out = None
        gc.collect()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def case(n: int, side: int, repeat: int, compute: bool = True) -> list[dict]:
    rng = np.random.default_rng(0)
    arr = rng.random((n, side, side, 3), dtype=np.float32)
    time_coord = np.arange(n)
    img = xr.DataArray(
        da.from_array(arr, chunks=(1, side, side, 3)), dims=DIMS, coords={"time": time_coord}
    )
    mats = (np.eye(3) + 0.2 * rng.standard_normal((n, 3, 3))).astype(np.float32)
    m = xr.DataArray(mats, dims=("time", "channel_in", "channel"), coords={"time": time_coord})
    variants = {
        "Dask floor: `img.data.map_blocks(np.copy)`": lambda: img.data.map_blocks(np.copy),
        "`xccm.apply(img, m)`, per-frame `m` in memory": lambda: xccm.apply(img, m),
        "`xccm.apply(img, m.chunk())`, per-frame `m` lazy, one chunk": lambda: xccm.apply(
            img, m.chunk()
        ),
        "`xccm.apply(img, m[0])`, one matrix": lambda: xccm.apply(img, m.isel(time=0)),
    }
    rows, floor = [], None
    for name, build in variants.items():
        t_build, obj = timed(build, repeat)
        tasks = len(obj.__dask_graph__())
        # Check a few frames (a small compute of its own, untimed).
        if "floor" not in name:
            single = "one matrix" in name
            for i in (0, n // 2, n - 1) if compute else ():
                want = arr[i] @ (mats[0] if single else mats[i])
                np.testing.assert_allclose(obj[i].values, want, rtol=1e-5, atol=1e-5)
        del obj
        if not compute:
            print(f"  {n} chunks: {tasks} tasks, built in {t_build:.2f} s  {name}", flush=True)
            rows.append({"chunks": n, "operation": name, "tasks": tasks, "build_s": t_build})
            continue
        t_compute, _ = timed(lambda build=build: build().compute(), repeat)
        total = t_compute  # build() is inside the timed call: the whole user-visible cost
        row = {
            "chunks": n,
            "frame": f"{side}x{side}x3 float32",
            "operation": name,
            "tasks": tasks,
            "tasks_per_chunk": tasks / n,
            "build_s": t_build,
            "build_and_compute_s": total,
        }
        if floor is None:
            floor = row
        row["ratio_to_floor"] = total / floor["build_and_compute_s"]
        row["tasks_ratio_to_floor"] = tasks / floor["tasks"]
        rows.append(row)
        print(
            f"  {n} chunks: {total:7.2f} s, {tasks} tasks  {name}",
            flush=True,
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--side", type=int, default=8, help="frame height and width (8)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--graph-only",
        type=int,
        nargs="*",
        default=[],
        help="numbers of chunks for which only the graphs are built (tasks, build time)",
    )
    args = parser.parse_args(argv)
    # Warm up (numba compiles the kernels once).
    small = xr.DataArray(np.ones((2, 2, 2, 3), "f4"), dims=DIMS).chunk({"time": 1})
    xccm.apply(small, np.eye(3, dtype="f4")).compute()
    rows = []
    with dask.config.set(scheduler="threads"):
        for n in args.chunks:
            rows += case(n, args.side, args.repeat)
        for n in args.graph_only:
            rows += case(n, args.side, args.repeat, compute=False)
    print()
    print("| chunks | operation | tasks | tasks/chunk | build s | build+compute s | / floor |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "build_and_compute_s" not in r:
            print(
                f"| {r['chunks']:,} | {r['operation']} | {r['tasks']:,} | "
                f"{r['tasks'] / r['chunks']:.2f} | {r['build_s']:.2f} | not run | |"
            )
            continue
        print(
            f"| {r['chunks']:,} | {r['operation']} | {r['tasks']:,} | "
            f"{r['tasks_per_chunk']:.2f} | {r['build_s']:.2f} | "
            f"{r['build_and_compute_s']:.2f} | {r['ratio_to_floor']:.2f} |"
        )
    out = Path(__file__).with_name("results_load.json")
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
