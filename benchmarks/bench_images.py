"""open_images and to_images against plain reader/writer loops over the same files.

Run from the repository root::

    python benchmarks/bench_images.py            # 40 frames of 1024 x 1536 RGB
    python benchmarks/bench_images.py --quick    # 12 frames of 512 x 768

Rows, each the best of N calls (benchmarks/_timing.py), with its ratio to the baseline of its
group measured in the same run:

1. opening (headers only, nothing decoded) vs decoding every file with Pillow in a loop;
2. ``open_images(...).values`` (Dask, threads) vs the same Pillow loop into one array;
3. ``to_images`` of a float32 stack to 8-bit sRGB PNG (Dask, threads) vs a loop of
   sRGB encode + ``imagecodecs.png_encode`` + file write.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import imagecodecs
import numpy as np
from _timing import best_time
from PIL import Image

import xccm


def _srgb(x):
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.abs(x) ** (1 / 2.4) - 0.055)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, h, w = (12, 512, 768) if args.quick else (40, 1024, 1536)
    work = Path(tempfile.mkdtemp(prefix="xccm-bench-images-"))
    try:
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        for i in range(n):
            Image.fromarray(np.roll(base, i, axis=1)).save(work / f"frame_{i:04d}.jpg", quality=90)
        files = sorted(work.glob("*.jpg"))

        def pillow_loop():
            out = np.empty((n, h, w, 3), np.uint8)
            for i, f in enumerate(files):
                with Image.open(f) as im:
                    out[i] = np.asarray(im)
            return out

        rows = []
        loop = best_time(pillow_loop, 3).best
        rows.append(("decode: Pillow loop (baseline)", loop, 1.0))
        opening = best_time(lambda: xccm.open_images(work), 3).best
        rows.append(("open_images: open (headers only)", opening, opening / loop))
        reading = best_time(lambda: xccm.open_images(work).values, 3).best
        rows.append(("open_images: .values (threads)", reading, reading / loop))

        linear = xccm.linearize(xccm.open_images(work), "srgb", scale=1 / 255).persist()
        values = linear.values

        def write_loop(folder=work / "loop"):
            folder.mkdir(exist_ok=True)
            for i in range(n):
                q = np.rint(np.clip(_srgb(values[i]), 0, 1) * 255).astype(np.uint8)
                (folder / f"{i}.png").write_bytes(imagecodecs.png_encode(q))

        written = best_time(write_loop, 3).best
        rows.append(("write: encode + png_encode loop (baseline)", written, 1.0))
        to = best_time(lambda: xccm.to_images(linear, work / "out", overwrite=True), 3).best
        rows.append(("to_images: 8-bit PNG (threads)", to, to / written))
        print(f"{n} frames of {h} x {w} RGB\n")
        print("| operation | time (s) | ratio |\n|---|---|---|")
        for name, t, r in rows:
            print(f"| {name} | {t:.3f} | {r:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
