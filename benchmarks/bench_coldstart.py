"""Cold start: ``import xccm; xccm.apply(img, m)`` in a fresh process, first call vs warm.

Every measurement runs in a new Python process (``python bench_coldstart.py --child``), so
nothing is imported or compiled beforehand. Each child times, in order:

* ``deps`` -- importing numpy, xarray and dask.array (what xccm stands on; not xccm's cost:
  xarray imports dask.array itself the first time it wraps an array, when Dask is installed);
* ``import`` -- ``import xccm`` on top of those;
* ``first`` -- the first ``xccm.apply(img, m)`` on a 2048x2048x3 float32 image (it imports
  numba and compiles the kernel or loads it from numba's on-disk cache);
* ``warm`` -- the best of 5 further calls, the baseline the first call is divided by.

Scenarios (each repeated ``--repeat`` times; the table shows the best and the median):

* ``compile`` -- ``NUMBA_CACHE_DIR`` is a new, empty folder: numba compiles and writes it;
* ``cached`` -- a second process on that folder: numba loads the compiled kernel;
* ``numpy`` -- ``XCCM_DISABLE_NUMBA=1``: the NumPy path, nothing to compile;
* ``N workers, empty cache`` -- ``--workers`` processes started together on one empty cache
  folder (distributed workers sharing a cache), each checking its result against NumPy.

Run: ``python benchmarks/bench_coldstart.py [--repeat 3] [--workers 4]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

_SIZE = 2048
_spec = importlib.util.find_spec("xccm")
_XCCM_ROOT = os.path.dirname(os.path.dirname(_spec.origin)) if _spec and _spec.origin else ""


def _child() -> None:
    t0 = time.perf_counter()
    import dask.array  # noqa: F401
    import numpy as np
    import xarray  # noqa: F401

    t1 = time.perf_counter()
    import xccm

    t2 = time.perf_counter()
    img = np.random.default_rng(0).random((_SIZE, _SIZE, 3), dtype=np.float32)
    m = np.array([[1.2, -0.1, 0.0], [-0.1, 1.1, -0.05], [0.0, -0.1, 1.3]])
    t3 = time.perf_counter()
    out = xccm.apply(img, m)
    t4 = time.perf_counter()
    warm = []
    for _ in range(5):
        s = time.perf_counter()
        xccm.apply(img, m)
        warm.append(time.perf_counter() - s)
    ok = bool(np.allclose(out, img @ m.astype(np.float32), rtol=1e-5, atol=1e-5))
    print(
        json.dumps(
            {
                "deps": t1 - t0,
                "import": t2 - t1,
                "first": t4 - t3,
                "total": t2 - t1 + t4 - t3,
                "warm": min(warm),
                "ok": ok,
                "numba": "numba" in sys.modules,
            }
        )
    )


def _spawn(env_extra: dict[str, str]) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("XCCM_DISABLE_NUMBA", None)
    env.update(env_extra)
    # The children import the xccm this process would import (not whatever the script's
    # folder puts first on sys.path).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_XCCM_ROOT, env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, __file__, "--child"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed (exit {proc.returncode}):\n{err}")
    return json.loads(out.strip().splitlines()[-1])


def _run(env_extra: dict[str, str]) -> dict:
    return _collect(_spawn(env_extra))


def _row(name: str, runs: list[dict]) -> str:
    def stat(key: str) -> str:
        vals = [r[key] for r in runs]
        return f"{min(vals):.3f} / {statistics.median(vals):.3f}"

    ratios = [r["first"] / r["warm"] for r in runs]
    ok = all(r["ok"] for r in runs)
    return (
        f"| {name} | {stat('deps')} | {stat('import')} | {stat('first')} | {stat('total')} | "
        f"{min(r['warm'] for r in runs) * 1e3:.1f} ms | {min(ratios):.0f}x / "
        f"{statistics.median(ratios):.0f}x | {len(runs)} | {'yes' if ok else 'NO'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child()
        return

    rows = {"compile": [], "cached": [], "numpy": [], "workers": []}
    with tempfile.TemporaryDirectory(prefix="xccm-coldstart-") as root:
        for i in range(args.repeat):
            cache = os.path.join(root, f"cache{i}")
            os.mkdir(cache)
            rows["compile"].append(_run({"NUMBA_CACHE_DIR": cache}))
            rows["cached"].append(_run({"NUMBA_CACHE_DIR": cache}))
            rows["numpy"].append(_run({"XCCM_DISABLE_NUMBA": "1"}))
        for i in range(args.repeat):
            cache = os.path.join(root, f"shared{i}")
            os.mkdir(cache)
            procs = [_spawn({"NUMBA_CACHE_DIR": cache}) for _ in range(args.workers)]
            rows["workers"].extend(_collect(p) for p in procs)

    py = sys.version.split()[0]
    print(f"Cold start, {_SIZE}x{_SIZE}x3 float32, {os.cpu_count()} CPUs, python {py}")
    print("seconds, best / median of the runs; first/warm = first call / best warm call\n")
    print(
        "| scenario | import numpy+xarray+dask | import xccm | first apply"
        " | import xccm + first apply | warm apply | first/warm | runs | correct |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    print(_row("compile (empty NUMBA_CACHE_DIR)", rows["compile"]))
    print(_row("cached (second process, same dir)", rows["cached"]))
    print(_row("NumPy path (XCCM_DISABLE_NUMBA=1)", rows["numpy"]))
    print(_row(f"{args.workers} workers at once, one empty cache", rows["workers"]))


if __name__ == "__main__":
    main()
