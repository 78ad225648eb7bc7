"""xccm out of core: correct a time-lapse zarr store with a colour chart in view, frame by frame.

A synthetic greenhouse camera films a scene with an X-Rite ColorChecker Classic in view, one
frame every ten minutes. The camera mixes its channels, adds a black level, and its exposure
drifts; now and then a dark object (a person, a leaf) covers part of the chart. We

1. write the stack to a zarr store, one frame a chunk (``--frames``, ``--height``, ``--width``
   set its size; the default is ~580 MB and runs in well under a minute on 2 cores);
2. open it lazily and extract the median colour of each chart patch in every frame (one pass
   over the store), masking patches too dark to trust;
3. fit one affine matrix per frame; frames with fewer than 18 usable patches get NaN matrices
   (with a warning), which we fill from their neighbours in time (interpolated, and carried
   to the first and last frames);
4. correct the store into a new zarr store, chunk for chunk, with the matrices and provenance
   stored next to the images, under one progress bar (``xccm.io.to_zarr``; rerunning with
   ``mode="resume"`` would finish an interrupted run);
5. check the store is complete, and print each frame's patch error before and after.

Run from the repository root (needs the ``io`` extra): ``python examples/timeseries_zarr.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.diagnostics import ProgressBar

import xccm
import xccm.io

MIXING = np.array([[0.80, 0.15, 0.05], [0.20, 0.70, 0.10], [0.05, 0.25, 0.70]])
BLACK = np.array([0.015, 0.012, 0.02])


def chart_geometry(height: int, width: int) -> dict:
    """Where the chart sits: a 4 x 6 grid in the upper-left quarter of the frame."""
    pitch = min(height, width) // 14
    return {"top_left": (pitch, pitch), "pitch": pitch, "size": pitch - pitch // 4}


def render_frame(
    t: int, height: int, width: int, reference: np.ndarray, gains: np.ndarray, occluded
) -> np.ndarray:
    """One camera frame (y, x, channel), float32: scene -> crosstalk, gain, black, noise."""
    rng = np.random.default_rng(t)
    geo = chart_geometry(height, width)
    scene = np.empty((height, width, 3))
    scene[:] = np.linspace(0.05, 0.5, width)[None, :, None] * [0.6, 0.9, 0.4]  # foliage-ish
    y0, x0 = geo["top_left"]
    for i, colour in enumerate(reference):
        y, x = y0 + (i // 6) * geo["pitch"], x0 + (i % 6) * geo["pitch"]
        scene[y : y + geo["size"], x : x + geo["size"]] = colour
    if occluded[t]:  # a dark object in front of the chart's left half
        scene[y0 - 2 : y0 + 4 * geo["pitch"], x0 - 2 : x0 + 3 * geo["pitch"]] = 0.0
    frame = gains[t] * (scene @ MIXING) + BLACK * (scene.max(-1, keepdims=True) > 0)
    frame += rng.normal(0, 0.002, frame.shape)
    return frame.astype(np.float32)


def write_source(path: Path, n_frames: int, height: int, width: int) -> xr.DataArray:
    """Write the synthetic stack to zarr, frame by frame (lazily, so memory stays small)."""
    reference = xccm.chart("colorchecker24").values
    gains = 1 + 0.25 * np.sin(np.linspace(0, 4 * np.pi, n_frames))
    occluded = np.zeros(n_frames, dtype=bool)
    occluded[n_frames // 3 :: max(n_frames // 3, 1)] = True

    def block(block_info=None):
        t = block_info[None]["chunk-location"][0]
        return render_frame(t, height, width, reference, gains, occluded)[None]

    data = da.map_blocks(
        block, chunks=((1,) * n_frames, (height,), (width,), (3,)), dtype=np.float32
    )
    times = np.datetime64("2026-06-01T00:00") + np.arange(n_frames) * np.timedelta64(10, "m")
    image = xr.DataArray(
        data,
        dims=("time", "y", "x", "channel"),
        coords={"time": times, "channel": np.array(["R", "G", "B"], dtype=object)},
        attrs={"camera": "synthetic greenhouse camera"},
    )
    xr.Dataset({"image": image, "gain": ("time", gains), "occluded": ("time", occluded)}).to_zarr(
        path, mode="w", consolidated=False
    )
    return image


def rms(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    return np.sqrt(((a - b) ** 2).mean(("patch", "channel")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--height", type=int, default=400)
    parser.add_argument("--width", type=int, default=600)
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the stores go (kept); default: a temporary folder, removed at the end",
    )
    args = parser.parse_args(argv)
    if args.dir is not None:
        run(args, args.dir)
        return
    with tempfile.TemporaryDirectory(prefix="xccm-example-") as tmp:
        run(args, Path(tmp))
    print(f"(removed the temporary folder {tmp}; pass --dir to keep the stores)")


def run(args: argparse.Namespace, workdir: Path) -> None:
    """Steps 1-5 with the stores in ``workdir``."""
    source, target = workdir / "camera.zarr", workdir / "corrected.zarr"
    size_mb = args.frames * args.height * args.width * 3 * 4 / 1e6
    print(f"1. writing {args.frames} frames ({size_mb:.0f} MB) to {source}")
    with ProgressBar(minimum=5):
        write_source(source, args.frames, args.height, args.width)

    ref = xccm.chart("colorchecker24")  # (patch, channel), linear sRGB
    src = xr.open_zarr(source, consolidated=False)  # lazy, one frame a chunk
    geo = chart_geometry(args.height, args.width)
    margin = geo["size"] // 4  # sample the middle of each patch, away from its edges
    boxes = xccm.grid_boxes(
        (geo["top_left"][0] + margin, geo["top_left"][1] + margin),
        geo["size"] - 2 * margin,
        geo["pitch"],
        names=ref.patch.values,
    )
    print("2. extracting the chart's patches from every frame")
    with ProgressBar(minimum=5):
        measured = xccm.extract_patches(src.image, boxes=boxes, reduce="median").compute()
    usable = measured.max("channel") > 0.03  # occluded patches are too dark to trust
    measured = measured.where(usable)

    print("3. fitting one affine matrix per frame")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", xccm.InsufficientSamplesWarning)
        m = measured.ccm.fit(ref, model="affine", min_samples=18)
    for w in caught:
        print(f"   warning: {w.message}")
    rejected = m.isnull().any(("channel_in", "channel"))
    m = m.interpolate_na("time").ffill("time").bfill("time")  # fill rejected frames

    print(f"4. correcting out of core into {target}")
    corrected = src[["image"]].ccm.apply(m).assign(ccm_matrix=m)
    provenance = {"source": str(source), "model": "affine", "loss": "least squares (linear RGB)"}
    write = xccm.io.to_zarr(corrected, target, mode="w", compute=False, attrs=provenance)
    with ProgressBar(), dask.config.set(scheduler="threads"):
        write.compute()

    out = xccm.io.open_zarr(target)  # refuses a half-written store
    complete = xccm.io.is_complete(target)
    print(f"5. {target.name}: complete={complete}, time chunks {out.image.chunks[0][:3]}...")
    after = xccm.extract_patches(out.image, boxes=boxes).compute().where(usable)
    before_err = rms(measured, ref).values
    after_err = rms(after, ref).values
    print("\nRMS error of the usable patches (linear RGB), every frame:")
    print(f"{'frame':>5}  {'time':>16}  {'gain':>5}  {'patches':>7}  {'before':>7}  {'after':>8}")
    for t in range(out.sizes["time"]):
        note = "  (occluded: matrix filled from neighbours)" if rejected.values[t] else ""
        when = str(out.time.values[t])[:16].replace("T", " ")
        print(
            f"{t:>5}  {when:>16}  {src.gain.values[t]:5.2f}  {int(usable[t].sum()):>7}  "
            f"{before_err[t]:7.4f}  {after_err[t]:8.5f}{note}"
        )
    print(f"\nmedian error before {np.median(before_err):.4f}, after {np.median(after_err):.5f}")


if __name__ == "__main__":
    main()
