"""Fit a colour-correction matrix to a ColorChecker photo with a ΔE loss, and judge it.

A synthetic camera photographs the ColorChecker Classic: its sensor mixes the channels, adds a
little flare and noise, clips the white patch, and stores sRGB-encoded values in [0, 1]. We
linearise (gamma 2.2), fit a 3x3 matrix by least squares and by CIEDE2000, and print the per-patch
ΔE report of both. Needs the ``colour`` extra (colour-science and scipy).

Run: ``python examples/chart_fit.py``
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import xccm


def photograph(reference: xr.DataArray, seed: int = 0) -> xr.DataArray:
    """What the camera records of ``reference`` (linear sRGB): sRGB-encoded, in [0, 1]."""
    rng = np.random.default_rng(seed)
    crosstalk = np.array([[0.70, 0.20, 0.05], [0.25, 0.65, 0.20], [0.05, 0.15, 0.75]])
    linear = reference.values.clip(0) @ crosstalk * 1.15 + 0.004
    linear = linear * rng.normal(1, 0.01, linear.shape)  # shot noise
    encoded = linear.clip(0, 1) ** (1 / 2.2)
    return reference.copy(data=encoded).assign_attrs(space="camera")


def main() -> None:
    ref = xccm.chart("colorchecker24", space="lab-d50")  # X-Rite's L*a*b*, ICC D50
    measured = photograph(xccm.convert(ref, "rgb"))  # e.g. xccm.extract_patches(...) of a photo

    lin = xccm.linearize(measured, "gamma", gamma=2.2)
    mask = xccm.saturation_mask(lin)  # clipped patches (outside [0, 0.98]) are left out
    fits = {
        "least squares": lin.ccm.fit(ref, loss="linear_rgb", mask=mask),
        "CIEDE2000": lin.ccm.fit(ref, loss="ciede2000", mask=mask),
    }
    print(
        f"patches used: {int(mask.sum())} of {mask.size} (saturated: "
        f"{', '.join(mask.patch.values[~mask.values]) or 'none'})"
    )
    print(f"{'fit':<14} {'mean':>6} {'median':>6} {'p90':>6} {'max':>6} {'loss':>6}")
    for name, m in fits.items():
        rep = lin.ccm.report(ref, m, "ciede2000", weights=mask)
        stats = [float(rep[k]) for k in ("mean", "median", "p90", "max", "loss")]
        print(f"{name:<14} " + " ".join(f"{v:6.3f}" for v in stats))
    m = fits["CIEDE2000"]
    print(
        f"CIEDE2000 fit: loss {float(m.start_loss):.3f} -> {float(m.loss):.3f} in "
        f"{int(m.iterations)} iterations, converged={bool(m.converged)}, "
        f"Lab white xy={m.attrs['lab_white_xy']}"
    )
    worst = lin.ccm.report(ref, m)["delta_e"].sortby(lambda d: -d).isel(patch=slice(0, 3))
    for patch, de in zip(worst.patch.values, worst.values, strict=True):
        print(f"  worst: {patch:<22} ΔE00 {de:.2f}")


if __name__ == "__main__":
    main()
