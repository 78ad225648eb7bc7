"""xccm quick-start: correct a drifting time-lapse stack with one CCM per frame.

A synthetic camera films an X-Rite ColorChecker Classic (xccm's built-in reference, linear
sRGB) for ten frames. The camera mixes its channels (crosstalk), adds a black level, drifts
in exposure from frame to frame and adds noise. We

1. render a ``(time, y, x, channel)`` float32 stack with the chart in view, chunked per frame;
2. measure the mean colour of each patch in each frame with ``xccm.extract_patches`` (lazily,
   then compute the small result);
3. fit one affine 4x3 matrix per frame, ``measured.ccm.fit(reference, model="affine")``
   (and, for comparison, a single 3x3 matrix for all frames, which cannot follow the drift);
4. correct the stack lazily with ``stack.ccm.apply(m)`` and undo it with ``.ccm.inverse(m)``;
5. print the error of every frame's patches before and after correction.

Run it from the repository root: ``python examples/quickstart.py`` (a few seconds, no
downloads).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import xccm

ROWS, COLS, PATCH, GAP = 4, 6, 24, 6  # chart layout: 4 x 6 patches of 24 px, 6 px apart
N_FRAMES = 10


def synthetic_camera(reference: xr.DataArray, rng: np.random.Generator) -> xr.DataArray:
    """Render the chart as a camera with crosstalk, black level, exposure drift and noise."""
    mixing = np.array([[0.80, 0.15, 0.05], [0.20, 0.70, 0.10], [0.05, 0.25, 0.70]])
    black = np.array([0.015, 0.012, 0.02])
    gains = 1 + 0.2 * np.sin(np.linspace(0, 2 * np.pi, N_FRAMES))  # exposure drift
    height, width = ROWS * (PATCH + GAP) + GAP, COLS * (PATCH + GAP) + GAP
    scene = np.full((height, width, 3), 0.18)  # a grey background
    for i, colour in enumerate(reference.values):
        y, x = GAP + (i // COLS) * (PATCH + GAP), GAP + (i % COLS) * (PATCH + GAP)
        scene[y : y + PATCH, x : x + PATCH] = colour
    frames = gains[:, None, None, None] * (scene @ mixing) + black
    frames += rng.normal(0, 0.002, frames.shape)
    return xr.DataArray(
        frames.astype(np.float32),
        dims=("time", "y", "x", "channel"),
        coords={
            "time": np.datetime64("2026-06-01T06:00")
            + np.arange(N_FRAMES) * np.timedelta64(10, "m"),
            "channel": ["R", "G", "B"],
            "gain": ("time", gains),
        },
        attrs={"camera": "synthetic", "units": "1"},
        name="image",
    )


def patch_means(stack: xr.DataArray, patches: xr.DataArray) -> xr.DataArray:
    """Mean colour of the central 12 x 12 pixels of every patch: ``(time, patch, channel)``."""
    boxes = xccm.grid_boxes((GAP + 6, GAP + 6), 12, PATCH + GAP, (ROWS, COLS), names=patches.patch)
    return xccm.extract_patches(stack, boxes=boxes, reduce="mean")


def rms(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    return np.sqrt(((a - b) ** 2).mean(("patch", "channel")))


def main() -> None:
    rng = np.random.default_rng(2026)
    reference = xccm.chart("colorchecker24")  # (patch, channel), linear sRGB, D65
    stack = synthetic_camera(reference, rng).chunk({"time": 1})  # Dask-backed, one frame a chunk

    measured = patch_means(stack, reference).compute()  # small: 10 x 24 x 3
    m = measured.ccm.fit(reference, model="affine")  # one 4x3 matrix per frame
    # For comparison: a single 3x3 matrix for all frames (time becomes a sample dim).
    m_one = measured.ccm.fit(reference, sample_dims=("time", "patch"))

    corrected = stack.ccm.apply(m)  # lazy: nothing is computed yet
    kind = type(corrected.data).__module__
    print(f"corrected: {kind}, {corrected.dtype}, {dict(corrected.sizes)}")
    before = rms(measured, reference)
    after = rms(patch_means(corrected, reference), reference).compute()
    after_linear = rms(patch_means(stack.ccm.apply(m_one), reference), reference).compute()

    print("\nRMS error of the 24 patch means against the reference (linear RGB):")
    header = ("frame", "time", "gain", "before", "one 3x3", "per-frame 4x3")
    print("{:>5}  {:>16}  {:>5}  {:>8}  {:>8}  {:>13}".format(*header))
    for i in range(N_FRAMES):
        when = str(stack.time.values[i])[:16].replace("T", " ")
        print(
            f"{i:>5}  {when:>16}  {stack.gain.values[i]:5.2f}  {before.values[i]:8.4f}  "
            f"{after_linear.values[i]:8.4f}  {after.values[i]:13.5f}"
        )
    back = corrected.ccm.inverse(m)  # lazy too
    error = float(abs(back - stack).max())
    print(f"\nmax |inverse(apply(stack)) - stack| = {error:.2e} (float32 rounding)")


if __name__ == "__main__":
    main()
