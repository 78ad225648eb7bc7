"""Write a folder of camera frames with a ColorChecker in view, for trying ``xccm`` commands.

A synthetic greenhouse camera takes a JPEG every ten minutes (EXIF DateTimeOriginal set, as
a real camera does): a scene with an X-Rite ColorChecker Classic, turned by a few degrees,
seen through a camera that mixes its channels, adds a black level, drifts in exposure and
encodes to 8-bit sRGB. In one frame a leaf hides half the chart. Next to the frames it writes
``boxes.json``, the chart's four corners (``{"corners": [[y, x], ...]}``, top-left, top-right,
bottom-right, bottom-left of the chart as printed), which ``xccm fit/run --boxes`` takes.

Then, with the ``cli`` extra::

    python examples/camera_frames.py demo
    xccm run demo/frames --boxes demo/boxes.json -o demo/corrected.zarr

Options: ``--frames`` (default 12), ``--height``/``--width`` (default 360 x 480),
``--occluded`` (the frame with the leaf, default 5; -1 for none).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

import xccm
from xccm.patches import homography

MIXING = np.array([[0.80, 0.15, 0.05], [0.20, 0.70, 0.10], [0.05, 0.25, 0.70]])
BLACK = np.array([0.015, 0.012, 0.02])
ROWS, COLS, GAP = 4, 6, 0.1  # patches; gap between patches in pitches


def chart_corners(height: int, width: int, angle_deg: float = 8.0) -> np.ndarray:
    """The patch grid's outer corners (y, x): TL, TR, BR, BL, turned by ``angle_deg``."""
    pitch = min(height, width) / 11
    centre = np.array([height * 0.45, width * 0.5])
    half = np.array([(ROWS - GAP) / 2, (COLS - GAP) / 2]) * pitch
    square = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]) * half  # (y, x) offsets
    a = np.deg2rad(angle_deg)
    turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return centre + square @ turn.T


def render(height: int, width: int, corners: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Linear scene (y, x, channel): foliage-ish background, a black card, the 24 patches."""
    yy, xx = np.mgrid[0:height, 0:width]
    scene = np.empty((height, width, 3))
    scene[:] = np.linspace(0.05, 0.45, width)[None, :, None] * [0.6, 0.9, 0.4]
    scene *= 1 + 0.15 * rng.standard_normal((height, width, 1)).clip(-2, 2)
    # chart coordinates (u along a row, v down a column, in pitches) of every pixel
    grid = np.array([[0, 0], [COLS - GAP, 0], [COLS - GAP, ROWS - GAP], [0, ROWS - GAP]])
    to_chart = homography(corners[:, ::-1], grid)  # image (x, y) -> chart (u, v)
    pts = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)]).T @ to_chart.T
    u = (pts[:, 0] / pts[:, 2]).reshape(height, width)
    v = (pts[:, 1] / pts[:, 2]).reshape(height, width)
    card = (u > -0.3) & (u < COLS - GAP + 0.3) & (v > -0.3) & (v < ROWS - GAP + 0.3)
    scene[card] = 0.03
    colours = xccm.chart("colorchecker24").values.clip(0)
    col, row = np.floor(u).astype(int), np.floor(v).astype(int)
    inside = (u - col < 1 - GAP) & (v - row < 1 - GAP) & card
    inside &= (col >= 0) & (col < COLS) & (row >= 0) & (row < ROWS)
    scene[inside] = colours[(row * COLS + col)[inside]]
    return scene


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where frames/ and boxes.json go")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--occluded", type=int, default=5, help="the frame with a leaf (-1: none)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    frames = args.folder / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    corners = chart_corners(args.height, args.width)
    scene = render(args.height, args.width, corners, rng)
    gains = 1 + 0.2 * np.sin(np.linspace(0, np.pi, args.frames))  # the exposure drifts
    for t in range(args.frames):
        linear = gains[t] * (scene @ MIXING) + BLACK
        linear += rng.normal(0, 0.004, linear.shape)
        if t == args.occluded:  # a leaf in front of the chart's left half
            y0, x0 = corners.min(axis=0).astype(int)
            y1, x1 = corners.max(axis=0).astype(int)
            linear[y0 - 5 : y1 + 5, x0 - 5 : (x0 + x1) // 2] = [0.02, 0.06, 0.01]
        encoded = xccm.encode(linear.clip(0, 1), "srgb")
        pixels = np.round(encoded * 255).astype(np.uint8)
        exif = Image.Exif()
        exif[0x8769] = {0x9003: f"2026:06:01 {6 + t // 6:02d}:{(t % 6) * 10:02d}:00"}
        Image.fromarray(pixels).save(frames / f"frame_{t:04d}.jpg", quality=95, exif=exif)
    boxes = args.folder / "boxes.json"
    boxes.write_text(json.dumps({"corners": np.round(corners, 2).tolist()}, indent=1) + "\n")
    print(f"wrote {args.frames} frames to {frames} and the chart's corners to {boxes}")


if __name__ == "__main__":
    main()
