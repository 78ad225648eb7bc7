"""Chart detection on synthetic scenes: detection rate, orientation, and the ΔE of the fit.

Renders ``--scenes`` scenes with a ColorChecker Classic (``tests/_scenes.py``: cluttered
background, the chart turned by 0/90/180/270 degrees plus a random tilt, perspective,
blur, vignetting, white balance, noise, 8-bit sRGB) and ``--blank`` scenes without one,
then for each

* ``xccm.detect_chart`` (OpenCV ``mcc`` + xccm's orientation by colour): found or not,
  orientation right (every box mostly on its own patch), seconds per frame;
* the fit from the detected boxes against the fit from the true boxes (``grid_boxes`` on
  the true corners): mean CIEDE2000 of a linear 3x3 fit of sRGB-linearised patches;
* with ``--ccd-python PYTHON`` (a Python that has ``colour-checker-detection``, which pins
  ``opencv-python`` and so cannot share a venv with ``opencv-contrib-python-headless``):
  ``colour_checker_detection.detect_colour_checkers_segmentation`` on the same scenes,
  found (a quadrilateral on the chart) and orientation right (its swatch colours match
  the true patches).

and prints a table. Nothing here is timed against a threshold.

Run: ``python benchmarks/bench_detection.py [--scenes 50] [--ccd-python /path/to/python]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

import xccm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import _scenes

CCD_SCRIPT = r"""
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from colour_checker_detection import detect_colour_checkers_segmentation
scenes = np.load(sys.argv[1])
out = []
for key in sorted(scenes.files, key=int):
    img = scenes[key].astype(np.float32) / 255
    found = []
    try:
        for c in detect_colour_checkers_segmentation(img, additional_data=True):
            scale = img.shape[1] / 1440  # its quadrilateral is in its 1440-wide working image
            found.append({"quad": (np.asarray(c.quadrilateral) * scale).tolist(),
                          "swatches": np.asarray(c.swatch_colours).tolist()})
    except Exception as err:  # a failure on one scene is a miss, not the end of the run
        found = [{"error": repr(err)}]
    out.append(found)
json.dump(out, sys.stdout)
"""


def scene_params(seed: int) -> dict:
    rng = np.random.default_rng(1000 + seed)
    return {
        "rotation": seed % 4,
        "noise": rng.uniform(0.005, 0.03),
        "blur": rng.uniform(0.3, 2.0),
        "vignette": rng.uniform(0.0, 0.5),
        "perspective": rng.uniform(0.0, 0.04),
        "tilt": 12.0,
        "fill": (0.25, 0.6),
        "clutter": 30,
    }


def delta_e_of_fit(image: xr.DataArray, boxes) -> float:
    patches = xccm.extract_patches(image, boxes=boxes)
    lin = xccm.linearize(patches, "srgb", scale=1 / 255)
    ref = xccm.chart()
    m = xccm.fit(lin, ref)
    return float(xccm.report(lin, ref, m)["delta_e"].mean())


def on_patches(boxes: np.ndarray, labels: np.ndarray) -> tuple[bool, float]:
    """(every box mostly on its own patch, mean fraction of box pixels on it).

    ``labels`` marks each patch's inner part (0.15 pitch in from its edges).
    """
    fractions = np.array(
        [
            (labels[int(y0) : int(y1), int(x0) : int(x1)] == k + 1).mean()
            for k, (y0, y1, x0, x1) in enumerate(boxes)
        ]
    )
    return bool((fractions > 0.5).all()), float(fractions.mean())


def ccd_results(python: str, images: list[np.ndarray]) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenes.npz"
        np.savez(path, **{str(i): im for i, im in enumerate(images)})
        t0 = time.perf_counter()
        run = subprocess.run(
            [python, "-c", CCD_SCRIPT, str(path)], capture_output=True, text=True, check=True
        )
        elapsed = time.perf_counter() - t0
    return json.loads(run.stdout), elapsed


def ccd_verdict(found: list, scene: _scenes.Scene, true_colours: np.ndarray) -> tuple[bool, bool]:
    """(on the chart, orientation right) for colour-checker-detection's best candidate."""
    grid = scene.corners[:, ::-1]  # (x, y)
    area = abs(_area(grid))
    best = (False, False)
    for c in found:
        if "quad" not in c:
            continue
        quad = np.asarray(c["quad"])
        centre_in = _inside(quad.mean(axis=0), grid)
        on_chart = centre_in and 0.5 < abs(_area(quad)) / area < 2.0
        sw = np.asarray(c["swatches"])
        right = on_chart and sw.shape == true_colours.shape
        if right:
            rel = np.abs(sw - true_colours) / np.maximum(true_colours, 0.02)
            right = bool(np.median(rel) < 0.15)
        best = max(best, (on_chart, right))
    return best


def _area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _inside(pt: np.ndarray, poly: np.ndarray) -> bool:
    def cross(a, b):
        return a[0] * b[1] - a[1] * b[0]

    signs = [cross(poly[(k + 1) % 4] - poly[k], pt - poly[k]) for k in range(4)]
    return all(s > 0 for s in signs) or all(s < 0 for s in signs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=50)
    parser.add_argument("--blank", type=int, default=10)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640))
    parser.add_argument("--ccd-python", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore", xccm.InsufficientSamplesWarning)

    rows = []
    images = []
    for seed in range(args.scenes):
        scene = _scenes.render(seed, shape=tuple(args.size), **scene_params(seed))
        images.append(scene.image)
        image = xr.DataArray(scene.image, dims=("y", "x", "channel"))
        t0 = time.perf_counter()
        boxes = xccm.detect_chart(image)
        seconds = time.perf_counter() - t0
        true_boxes = xccm.grid_boxes(corners=scene.corners, gap=_scenes.GAP, names=boxes.patch)
        found = bool(np.isfinite(boxes.values).all())
        right, inside = on_patches(boxes.values, scene.labels) if found else (False, np.nan)
        rows.append(
            {
                "scene": scene,
                "found": found,
                "right": right,
                "inside": inside,
                "score": float(boxes.score),
                "seconds": seconds,
                "de_true": delta_e_of_fit(image, true_boxes),
                "de_detected": delta_e_of_fit(image, boxes) if found else np.nan,
                "true_colours": xccm.extract_patches(image, boxes=true_boxes).values / 255,
            }
        )
    blank_scores, blank_found = [], 0
    for seed in range(args.blank):
        scene = _scenes.render(5000 + seed, shape=tuple(args.size), chart=False)
        images.append(scene.image)
        boxes = xccm.detect_chart(xr.DataArray(scene.image, dims=("y", "x", "channel")))
        blank_found += bool(np.isfinite(boxes.values).any())
        blank_scores.append(float(boxes.score))

    n = len(rows)
    found = [r for r in rows if r["found"]]
    print(f"{n} scenes {args.size[0]}x{args.size[1]} with a chart, {args.blank} without\n")
    print(f"{'detector':<34} {'found':>7} {'oriented':>9} {'false +':>8} {'s/frame':>8}")
    print(
        f"{'xccm.detect_chart (cv2.mcc)':<34} {len(found) / n:>7.0%} "
        f"{sum(r['right'] for r in rows) / n:>9.0%} {blank_found:>5}/{args.blank:<2} "
        f"{np.median([r['seconds'] for r in rows]):>8.3f}"
    )
    if args.ccd_python:
        results, elapsed = ccd_results(args.ccd_python, images)
        verdicts = [
            ccd_verdict(res, r["scene"], r["true_colours"])
            for res, r in zip(results[:n], rows, strict=True)
        ]
        ccd_blank = sum(any("quad" in c for c in res) for res in results[n:])
        print(
            f"{'colour-checker-detection segm.':<34} "
            f"{sum(v[0] for v in verdicts) / n:>7.0%} {sum(v[1] for v in verdicts) / n:>9.0%} "
            f"{ccd_blank:>5}/{args.blank:<2} {elapsed / len(images):>8.3f}"
            "  (incl. its import)"
        )
    by_rotation = {
        k: sum(r["right"] for r in rows if r["scene"].rotation == k)
        / max(1, sum(r["scene"].rotation == k for r in rows))
        for k in range(4)
    }
    print(
        "\nxccm found and oriented right, by rotation: "
        + ", ".join(f"{90 * k}°: {v:.0%}" for k, v in by_rotation.items())
    )
    print(
        "box pixels on the inner 70% of their patch (mean over found scenes): "
        f"{np.mean([r['inside'] for r in found]):.1%}"
    )
    print(
        f"score: chart found {np.min([r['score'] for r in found]):.3f} (min), blank scenes "
        f"{np.nanmax(blank_scores) if np.isfinite(blank_scores).any() else float('nan'):.3f}"
        " (max; NaN: detector found nothing)"
    )
    de_t = np.array([r["de_true"] for r in found])
    de_d = np.array([r["de_detected"] for r in found])
    print(
        f"\nmean ΔE00 of a linear 3x3 fit over the {len(found)} found scenes:\n"
        f"  true boxes {de_t.mean():.3f}, detected boxes {de_d.mean():.3f}, "
        f"ratio {de_d.mean() / de_t.mean():.3f}, max |difference| {np.abs(de_d - de_t).max():.3f}"
    )


if __name__ == "__main__":
    main()
