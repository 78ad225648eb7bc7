"""Synthetic scenes with a ColorChecker Classic in them, for the chart-detection tests.

A scene is a cluttered background (random rectangles and discs, noise texture) with a 4 x 6
ColorChecker card (black card, patches from ``xccm.chart("colorchecker24")`` in linear sRGB)
placed by a homography built from explicit parts (scale, rotation by a multiple of 90 degrees
plus a small tilt, a projective term, a shift), then blurred, vignetted, given a per-channel
gain, noise, and sRGB-encoded to 8 bits. The homography is composed here, never solved from
points, so it is independent of the homography :func:`xccm.grid_boxes` solves from corners.

Chart coordinates: ``(u, v)``, ``u`` along a row (left to right as printed), ``v`` down the
columns, in units of the patch pitch; the patch grid spans ``u`` in ``[0, COLS - GAP]``,
``v`` in ``[0, ROWS - GAP]``; the card adds ``BORDER`` on every side.

Used by tests/test_detection.py and benchmarks/bench_detection.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

import xccm

ROWS, COLS = 4, 6
GAP = 0.1  # gap between patches, in pitches (a real Classic: ~0.1)
BORDER = 0.35  # card border around the patch grid, in pitches


@dataclass
class Scene:
    image: np.ndarray  # (h, w, 3) uint8, sRGB-encoded
    homography: np.ndarray  # chart (u, v, 1) -> image (x, y, w), 3x3
    corners: np.ndarray  # (4, 2) (y, x) outer corners of the patch grid: TL, TR, BR, BL
    labels: np.ndarray  # (h, w) int: 1..24 for pixels well inside patch k, 0 elsewhere
    rotation: int  # multiple of 90 degrees the chart is turned by


def _srgb_encode(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def chart_homography(
    rng: np.random.Generator,
    shape: tuple[int, int],
    rotation: int,
    *,
    tilt: float = 8.0,
    perspective: float = 0.02,
    fill: tuple[float, float] = (0.35, 0.6),
) -> np.ndarray:
    """A random chart-to-image homography: the card fills ``fill`` of the frame's width."""
    h, w = shape
    card_w = COLS - GAP + 2 * BORDER
    card_h = ROWS - GAP + 2 * BORDER
    # centre the card on the origin
    t0 = np.array([[1, 0, -(COLS - GAP) / 2], [0, 1, -(ROWS - GAP) / 2], [0, 0, 1.0]])
    long_side = min(h, w) if rotation % 2 else w
    scale = rng.uniform(*fill) * long_side / card_w
    angle = np.deg2rad(90 * rotation + rng.uniform(-tilt, tilt))
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c * scale, -s * scale, 0], [s * scale, c * scale, 0], [0, 0, 1.0]])
    proj = np.eye(3)
    proj[2, :2] = rng.uniform(-perspective, perspective, 2)
    m = rot @ proj @ t0
    # shift so the card lies inside the frame, at a random place
    lo_u, hi_u, lo_v, hi_v = -BORDER, card_w - BORDER, -BORDER, card_h - BORDER
    uv = np.array([[lo_u, lo_v], [hi_u, lo_v], [hi_u, hi_v], [lo_u, hi_v]])
    xy = _project(m, uv)
    lo, hi = xy.min(0), xy.max(0)
    span = hi - lo
    free = np.maximum(np.array([w, h]) - span - 8, 0)
    shift = -lo + 4 + rng.uniform(0, 1, 2) * free
    t1 = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1.0]])
    return t1 @ m


def _project(m: np.ndarray, uv: np.ndarray) -> np.ndarray:
    p = np.c_[uv, np.ones(len(uv))] @ m.T
    return p[:, :2] / p[:, 2:]


def render(
    seed: int,
    *,
    shape: tuple[int, int] = (360, 480),
    rotation: int | None = None,
    noise: float = 0.01,
    blur: float = 0.8,
    vignette: float = 0.3,
    clutter: int = 25,
    chart: bool = True,
    **homography_kwargs,
) -> Scene:
    """Render one scene; ``rotation`` (0..3) is random unless given."""
    rng = np.random.default_rng(seed)
    h, w = shape
    if rotation is None:
        rotation = int(rng.integers(4))
    # background: grey-ish noise texture plus coloured rectangles and discs
    base = rng.uniform(0.05, 0.4, 3)
    img = base * (1 + 0.3 * ndimage.gaussian_filter(rng.standard_normal((h, w, 1)), (6, 6, 0)))
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(clutter):
        colour = rng.uniform(0, 0.9, 3) ** 1.5
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        if rng.uniform() < 0.5:
            hh, ww = rng.integers(5, h // 3), rng.integers(5, w // 3)
            img[y0 : y0 + hh, x0 : x0 + ww] = colour
        else:
            r = rng.integers(4, h // 6)
            img[(yy - y0) ** 2 + (xx - x0) ** 2 < r * r] = colour
    m = chart_homography(rng, shape, rotation, **homography_kwargs)
    labels = np.zeros(shape, dtype=np.int64)
    if chart:
        colours = xccm.chart("colorchecker24").values  # linear sRGB, row by row
        # inverse-map every pixel centre (supersampled 3x3 for anti-aliasing) to the chart
        inv = np.linalg.inv(m)
        acc = np.zeros((h, w, 3))
        offsets = (np.arange(3) - 1) / 3
        for dy in offsets:
            for dx in offsets:
                u, v = _uv(inv, xx + dx, yy + dy)
                acc += _paint(u, v, colours, img)
        img = acc / 9
        u, v = _uv(inv, xx, yy)
        labels = _patch_labels(u, v, inner=0.15)
    # optics and sensor: blur, vignetting, white balance/exposure, noise
    img = ndimage.gaussian_filter(img, (blur, blur, 0)) if blur else img
    r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    img = img * (1 - vignette * r2)[..., None]
    img = img * rng.uniform(0.8, 1.2, 3) * rng.uniform(0.8, 1.1)
    img = img + noise * rng.standard_normal(img.shape)
    encoded = np.round(_srgb_encode(img) * 255).astype(np.uint8)
    grid = np.array([[0, 0], [COLS - GAP, 0], [COLS - GAP, ROWS - GAP], [0, ROWS - GAP]])
    corners = _project(m, grid)[:, ::-1]  # (y, x)
    return Scene(encoded, m, corners, labels, rotation)


def _uv(inv: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    den = inv[2, 0] * x + inv[2, 1] * y + inv[2, 2]
    u = (inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]) / den
    v = (inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]) / den
    return u, v


def _paint(u, v, colours, background) -> np.ndarray:
    out = background.copy()
    card = (u >= -BORDER) & (u <= COLS - GAP + BORDER) & (v >= -BORDER) & (v <= ROWS - GAP + BORDER)
    out[card] = 0.03  # the black card
    k = _patch_labels(u, v, inner=0.0)
    inside = k > 0
    out[inside] = colours[k[inside] - 1]
    return out


def _patch_labels(u, v, inner: float) -> np.ndarray:
    """1..24 where (u, v) lies in a patch, ``inner`` pitches away from its edges; else 0."""
    col, row = np.floor(u), np.floor(v)
    fu, fv = u - col, v - row
    inside = (
        (col >= 0) & (col < COLS) & (row >= 0) & (row < ROWS)
        & (fu >= inner) & (fu <= 1 - GAP - inner) & (fv >= inner) & (fv <= 1 - GAP - inner)
    )  # fmt: skip
    k = np.zeros(u.shape, dtype=np.int64)
    k[inside] = (row[inside] * COLS + col[inside] + 1).astype(np.int64)
    return k
