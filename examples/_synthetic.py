"""The synthetic camera and chart renderer shared by the examples (not an example itself).

A camera that mixes its channels (crosstalk), adds a black level and noise, with a per-frame
exposure gain and white balance; and a renderer that paints a ColorChecker's patch colours
as a grid of squares on a grey card, for the examples that need whole images.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import xccm

ROWS, COLS, PATCH, GAP = 4, 6, 24, 6
MIXING = np.array([[0.80, 0.15, 0.05], [0.20, 0.70, 0.10], [0.05, 0.25, 0.70]])
BLACK = np.array([0.015, 0.012, 0.02])
LEAF = np.array([0.05, 0.14, 0.03])  # linear sRGB of a leaf over the chart


def camera(
    scene: np.ndarray,
    gains: np.ndarray,
    balance: np.ndarray,
    rng: np.random.Generator,
    noise: float = 0.002,
) -> np.ndarray:
    """What the camera records of linear ``scene (time, ..., 3)``: crosstalk, gain, balance.

    ``gains (time,)`` is the exposure of each frame, ``balance (time, 3)`` its white balance.
    """
    ones = (1,) * (scene.ndim - 2)
    out = (gains.reshape(-1, *ones, 1) * (scene @ MIXING)) * balance.reshape(-1, *ones, 3)
    out = out + BLACK
    return out + rng.normal(0, noise, out.shape)


def render(colours: np.ndarray) -> np.ndarray:
    """Paint ``colours (time, 24, 3)`` as a 4 x 6 chart on grey: ``(time, y, x, 3)``."""
    height, width = ROWS * (PATCH + GAP) + GAP, COLS * (PATCH + GAP) + GAP
    scene = np.full((colours.shape[0], height, width, 3), 0.18)
    for i in range(ROWS * COLS):
        y, x = GAP + (i // COLS) * (PATCH + GAP), GAP + (i % COLS) * (PATCH + GAP)
        scene[:, y : y + PATCH, x : x + PATCH] = colours[:, i, None, None, :]
    return scene


def boxes(reference: xr.DataArray) -> xr.DataArray:
    """The patch boxes of :func:`render`'s chart (12-pixel squares inside each patch)."""
    return xccm.grid_boxes((GAP + 6, GAP + 6), 12, PATCH + GAP, (ROWS, COLS), names=reference.patch)


def save(fig, path):
    """Write a figure (as the gallery shows it) and close it; return the path."""
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt  # only the plotting examples get here

    plt.close(fig)
    return path
