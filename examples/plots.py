"""xccm's figures on a synthetic time-lapse: swatches, ΔE bars, a timeline, before/after.

A synthetic camera films a ColorChecker Classic every 30 minutes for 48 frames: its channels
mix (crosstalk), it adds a black level, its exposure drifts slowly, its white balance steps
at frame 30, glare hits a few patches in frames 8 and 21, a leaf covers the first row of
patches in frames 14 and 15, and in frame 40 a hand hides most of the chart (the patches a
detector would mark as hidden are NaN). We measure the patches, fit one affine matrix per
frame with a CIEDE2000 loss, and draw:

- ``swatches.png``: reference | measured | corrected for every patch of one frame, with ΔE;
- ``delta_e_bars.png``: ΔE per patch in-sample and held out (leave one patch out: 24 fits,
  each without one patch, batched in one call with a weight of 0 on the patch left out);
- ``timeline.png``: ΔE, loss and matrix coefficients over time, flagged frames shaded (here
  a plain threshold: mean ΔE above three times the series' median) and the rejected frame;
- ``before_after.png``: one frame before and after correction.

Needs the ``plot`` extra (matplotlib, colour-science): ``pip install -e ".[plot]"``, then
``python examples/plots.py --out docs/images`` (a few seconds; default folder docs/images).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import _synthetic  # the synthetic camera, next to this file
import numpy as np
import xarray as xr

import xccm
import xccm.plot

N_FRAMES = 48
GLARE, LEAF, HAND, WB_STEP = (8, 21), (14, 15), 40, 30


def synthetic_series(reference: xr.DataArray, rng: np.random.Generator) -> xr.DataArray:
    """Render ``(time, y, x, channel)`` frames of the chart with drift, a step and mishaps."""
    t = np.arange(N_FRAMES)
    gains = 0.85 + 0.12 * np.sin(2 * np.pi * t / N_FRAMES)  # slow exposure drift
    balance = np.where(t[:, None] >= WB_STEP, [1.12, 1.0, 0.85], [1.0, 1.0, 1.0])
    colours = np.broadcast_to(reference.values, (N_FRAMES, *reference.shape)).copy()
    for frame in GLARE:  # glare: three patches washed out towards white
        colours[frame, [7, 13, 14]] = 0.6 * colours[frame, [7, 13, 14]] + 0.35
    for frame in LEAF:  # a leaf over the first row
        colours[frame, : _synthetic.COLS] = _synthetic.LEAF
    frames = _synthetic.camera(_synthetic.render(colours), gains, balance, rng)
    return xr.DataArray(
        frames.astype(np.float32),
        dims=("time", "y", "x", "channel"),
        coords={
            "time": np.datetime64("2026-06-01T06:00") + t * np.timedelta64(30, "m"),
            "channel": ["R", "G", "B"],
        },
        name="image",
    )


def leave_one_out(measured: xr.DataArray, reference: xr.DataArray) -> xr.DataArray:
    """Held-out ΔE of every patch: fitted without it (one batched fit), judged on it."""
    patch = reference.patch
    keep = xr.DataArray(
        1.0 - np.eye(patch.size), dims=("left_out", "patch"), coords={"patch": patch.values}
    )
    folds = measured.ccm.fit(reference, model="affine", loss="ciede2000", weights=keep)
    every = measured.expand_dims(left_out=patch.size)  # each fold judged on every patch
    de = xccm.report(every, reference, folds)["delta_e"]  # (left_out, patch)
    return xr.DataArray(
        np.diagonal(de.values), dims="patch", coords={"patch": patch.values}, name="delta_e"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(2026)
    reference = xccm.chart("colorchecker24")  # linear sRGB, D65
    stack = synthetic_series(reference, rng).chunk({"time": 8})
    boxes = _synthetic.boxes(reference)
    measured = xccm.extract_patches(stack, boxes=boxes, reduce="mean").compute()
    measured[HAND, 2:] = np.nan  # a hand: the detector marks 22 of 24 patches as hidden

    m = measured.ccm.fit(reference, model="affine", loss="ciede2000", min_samples=12)
    m = m.compute()
    with warnings.catch_warnings():  # the rejected frame's statistics are NaN, as they should
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        rep = xccm.report(measured, reference, m).compute()
    flags = rep["mean"] > 3 * float(rep["mean"].median())  # a plain threshold, for the figure
    rejected = m.isnull().any(("channel_in", "channel"))
    print(f"frames: {N_FRAMES}")
    print(f"flagged frames: {np.flatnonzero(flags.values).tolist()}")
    print(f"rejected frames: {np.flatnonzero(rejected.values).tolist()}")

    frame = m.time.values[5]
    written = []
    fig = xccm.plot.swatches(measured, reference, m, time=frame)
    written.append(_synthetic.save(fig, args.out / "swatches.png"))

    held_out = leave_one_out(measured.sel(time=frame), reference)
    fig = xccm.plot.delta_e_bars(rep.sel(time=frame), held_out)
    written.append(_synthetic.save(fig, args.out / "delta_e_bars.png"))

    fig = xccm.plot.timeline(m, flags, report=rep)
    written.append(_synthetic.save(fig, args.out / "timeline.png"))

    fig = xccm.plot.before_after(stack, m, time=m.time.values[WB_STEP + 2])
    written.append(_synthetic.save(fig, args.out / "before_after.png"))
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
