"""Which model? In-sample and held-out (leave-one-out) mean ΔE00 of each model on four charts.

For every chart measurement below and every model, ``xccm.cross_validate`` (leave-one-patch-
out) measures the mean CIEDE2000 error of the fit on the 24 patches it was fitted on (in
sample) and of each patch under the matrix fitted without it (held out), for a least-squares
fit (no loss) and a CIEDE2000 fit (``loss="ciede2000"``). The held-out error is the one a
scene's colours, which are not on the chart, will see.

Measurements:

* ``opencv``: the real photographed ColorChecker of OpenCV's own ccm test
  (``xccm.sample_measurement("opencv")``, gamma 2.2 linearised) against the ColorChecker 2005
  L*a*b* D50 data OpenCV fits it to.
* ``nikon-d5100``, ``sigma-sd-merrill``: simulated cameras with real spectral sensitivities
  (colour-science's ``MSDS_CAMERA_SENSITIVITIES``, NPL measurements) photographing the
  BabelColor average ColorChecker reflectances under D65; the reference is the same
  reflectances' CIE XYZ under D65. Exposure puts the white patch's largest channel at 0.85;
  then a mild shoulder (``x ** 1.04``), and noise (sigma 0.002), 5 noise draws, each a frame.
* ``crosstalk``: the built-in chart in linear sRGB through the channel mixing, black level
  and noise of ``examples/_synthetic.py`` plus a mild gamma (``x ** 1.06``), 5 frames.

The numbers are means over the frames. Models: ``linear`` (3x3), ``affine`` (4x3),
``root_polynomial`` degree 2 and 3, ``polynomial`` degree 2, ``polynomial`` with Cheung's
10-term set, each without a ridge and with the default ``ridge`` (``xccm.fitting.
DEFAULT_RIDGE``, toward the least-squares 3x3), and the 3x3 and root-polynomial 2 with
``white_point="preserve"`` (the white patch mapped exactly: what the constraint costs). A
model :func:`xccm.fit` refuses (detected by trying) is skipped with a note; a fold whose fit
is singular (root-polynomial 3 without a ridge on 23 patches of a Foveon camera) counts as
NaN and its mean as NaN.

Prints the tables and writes them (markdown) to ``docs/models_table.md``, which the user
guide's "Which model?" page includes.

Run: ``python benchmarks/bench_models.py [--frames 5] [--out docs/models_table.md]``
(a few minutes: each CIEDE2000 cross-validation is 25 optimisations per frame).
``--ridge-scan`` instead measures how the held-out error of root-polynomial degree 2 and 3
moves with ``ridge`` (relative to the 3x3's, averaged over the four measurements: how the
default ridge was chosen) and writes ``docs/ridge_scan.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

import xccm
from xccm.fitting import DEFAULT_RIDGE

ROOT = Path(__file__).resolve().parents[1]
MIXING = np.array([[0.80, 0.15, 0.05], [0.20, 0.70, 0.10], [0.05, 0.25, 0.70]])  # as _synthetic
BLACK = np.array([0.015, 0.012, 0.02])
RIDGE = DEFAULT_RIDGE

MODELS: list[tuple[str, dict]] = [
    ("linear (3x3)", {"model": "linear"}),
    ("affine (4x3)", {"model": "affine"}),
    ("root-polynomial, degree 2", {"model": "root_polynomial", "degree": 2, "ridge": None}),
    ("root-polynomial, degree 3", {"model": "root_polynomial", "degree": 3, "ridge": None}),
    ("polynomial, degree 2", {"model": "polynomial", "degree": 2, "ridge": None}),
    ("polynomial, Cheung 10 terms", {"model": "polynomial", "terms": 10, "ridge": None}),
    (
        f"root-polynomial, degree 2, ridge={RIDGE:g} (default)",
        {"model": "root_polynomial", "degree": 2, "ridge": RIDGE},
    ),
    (
        f"root-polynomial, degree 3, ridge={RIDGE:g} (default)",
        {"model": "root_polynomial", "degree": 3, "ridge": RIDGE},
    ),
    (
        f"polynomial, degree 2, ridge={RIDGE:g} (default)",
        {"model": "polynomial", "degree": 2, "ridge": RIDGE},
    ),
    (
        f"polynomial, Cheung 10 terms, ridge={RIDGE:g} (default)",
        {"model": "polynomial", "terms": 10, "ridge": RIDGE},
    ),
    ("linear (3x3), white point preserved", {"model": "linear", "white_point": "preserve"}),
    (
        f"root-polynomial, degree 2, ridge={RIDGE:g}, white point preserved",
        {"model": "root_polynomial", "degree": 2, "ridge": RIDGE, "white_point": "preserve"},
    ),
]
FITS = [("least squares", {}), ("CIEDE2000", {"loss": "ciede2000"})]


def _colour():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import colour
    return colour


def opencv_measurement() -> tuple[xr.DataArray, xr.DataArray]:
    measured = xccm.linearize(xccm.sample_measurement("opencv"), "gamma", gamma=2.2)
    return measured, xccm.chart("colorchecker24", space="lab-d50", edition="opencv")


def spectral_camera(name: str, frames: int, seed: int) -> tuple[xr.DataArray, xr.DataArray]:
    """A camera with measured spectral sensitivities photographing ColorChecker spectra."""
    colour = _colour()
    shape = colour.SpectralShape(400, 700, 10)
    sens = colour.characterisation.MSDS_CAMERA_SENSITIVITIES[name].copy().align(shape)
    illuminant = colour.SDS_ILLUMINANTS["D65"].copy().align(shape)
    cmfs = colour.MSDS_CMFS["CIE 1931 2 Degree Standard Observer"].copy().align(shape)
    sds = colour.SDS_COLOURCHECKERS["BabelColor Average"]
    patches = list(sds)  # BabelColor's names are colour-science's, in chart order
    if patches != list(xccm.chart().patch.values):
        raise RuntimeError(f"BabelColor patches are not the chart's: {patches}")
    refl = np.array([sds[p].copy().align(shape).values for p in patches])
    raw = (refl * illuminant.values) @ sens.values  # (24, 3)
    k = (illuminant.values * cmfs.values[:, 1]).sum()
    xyz = (refl * illuminant.values) @ cmfs.values / k  # perfect white: Y = 1
    rng = np.random.default_rng(seed)
    linear = raw / raw[18].max() * 0.85
    values = linear**1.04 + rng.normal(0, 0.002, (frames, *linear.shape))
    coords = {"patch": patches}
    measured = xr.DataArray(
        values, dims=("time", "patch", "channel"), coords={**coords, "channel": ["R", "G", "B"]}
    )
    reference = xr.DataArray(
        xyz,
        dims=("patch", "channel"),
        coords={**coords, "channel": ["X", "Y", "Z"]},
        attrs={"space": "xyz-d65"},
    )
    return measured, reference


def crosstalk_camera(frames: int, seed: int) -> tuple[xr.DataArray, xr.DataArray]:
    ref = xccm.chart()
    rng = np.random.default_rng(seed)
    linear = (ref.values.clip(0, None) @ MIXING) * 0.9 + BLACK
    values = linear**1.06 + rng.normal(0, 0.002, (frames, *linear.shape))
    measured = xr.DataArray(
        values,
        dims=("time", "patch", "channel"),
        coords={"patch": ref.patch, "channel": ["R", "G", "B"]},
    )
    return measured, ref


def supported(kwargs: dict, measured: xr.DataArray, reference: xr.DataArray) -> str | None:
    """None if fit takes these keyword arguments, else why not (its error's first line)."""
    one = measured.isel(time=0) if "time" in measured.dims else measured
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xccm.fit(one, reference, **kwargs)
    except (TypeError, ValueError) as err:
        return str(err).splitlines()[0]
    return None


def measure(measured, reference, kwargs) -> tuple[float, float, float]:
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cv = xccm.cross_validate(measured, reference, **kwargs)
        except ValueError:  # every fold singular (an unregularised fit on too few patches)
            return float("nan"), float("nan"), time.perf_counter() - t
    mean = cv["mean"].mean([d for d in cv["mean"].dims if d != "validation"])
    return (
        float(mean.sel(validation="in_sample")),
        float(mean.sel(validation="held_out")),
        time.perf_counter() - t,
    )


#: The ridge values of ``--ridge-scan`` (None: no penalty).
SCAN_RIDGES = (None, 1e-5, 1e-4, 1e-3, 1e-2)
SCAN_MODELS = (
    ("root-polynomial, degree 2", {"model": "root_polynomial", "degree": 2}),
    ("root-polynomial, degree 3", {"model": "root_polynomial", "degree": 3}),
)


def ridge_scan(datasets: dict, out: Path) -> None:
    """How the held-out error of root-polynomial 2 and 3 moves with ``ridge``.

    For every ridge of :data:`SCAN_RIDGES`, fit and measure: the held-out mean ΔE00 of
    each measurement divided by the 3x3's held-out error (the same fit: least squares or
    CIEDE2000), averaged over the four measurements (so that OpenCV's large errors do not
    outweigh the others). The default ridge is the one with the lowest mean ratio.
    """
    base = {}
    for key, (_, (measured, reference)) in datasets.items():
        for fit_name, fit_kwargs in FITS:
            base[key, fit_name] = measure(measured, reference, fit_kwargs)[1]
    lines = [
        "<!-- Written by benchmarks/bench_models.py --ridge-scan; rerun it to update. -->",
        "",
        "| model | ridge | least squares, out / 3x3 | CIEDE2000 fit, out / 3x3 |",
        "|---|---|---:|---:|",
    ]
    for label, model_kwargs in SCAN_MODELS:
        for ridge in SCAN_RIDGES:
            ratios = []
            for fit_name, fit_kwargs in FITS:
                r = []
                for key, (_, (measured, reference)) in datasets.items():
                    kwargs = {**model_kwargs, "ridge": ridge, **fit_kwargs}
                    r.append(measure(measured, reference, kwargs)[1] / base[key, fit_name])
                ratios.append(float(np.mean(r)))
            line = f"| {label} | {ridge!s} | {ratios[0]:.3f} | {ratios[1]:.3f} |"
            print(line, file=sys.stderr)
            lines.append(line)
    text = "\n".join([*lines, ""])
    print(text)
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5, help="noise draws of the simulations")
    parser.add_argument("--out", default=str(ROOT / "docs" / "models_table.md"))
    parser.add_argument(
        "--ridge-scan",
        action="store_true",
        help="instead: the held-out error of root-polynomial 2/3 against the ridge, "
        "written to docs/ridge_scan.md",
    )
    args = parser.parse_args(argv)

    datasets = {
        "opencv": ("OpenCV's photographed ColorChecker (real)", opencv_measurement()),
        "nikon-d5100": (
            "Nikon D5100 sensitivities, BabelColor spectra, D65 (simulated)",
            spectral_camera("Nikon 5100 (NPL)", args.frames, 1),
        ),
        "sigma-sd-merrill": (
            "Sigma SD Merrill (Foveon) sensitivities, BabelColor spectra, D65 (simulated)",
            spectral_camera("Sigma SDMerill (NPL)", args.frames, 2),
        ),
        "crosstalk": (
            "channel crosstalk, black level, gamma 1.06 (simulated)",
            crosstalk_camera(args.frames, 3),
        ),
    }
    if args.ridge_scan:
        ridge_scan(datasets, ROOT / "docs" / "ridge_scan.md")
        return 0
    notes: list[str] = []
    rows: dict[str, list[tuple[str, list[float]]]] = {key: [] for key in datasets}
    measured_models: list[str] = []
    probe_m, probe_r = datasets["opencv"][1]
    for label, model_kwargs in MODELS:
        why = supported(model_kwargs, probe_m, probe_r)
        if why is not None:
            given = ", ".join(f"{k}={v!r}" for k, v in model_kwargs.items())
            notes.append(f"- {label} (`{given}`): `xccm.fit` says: {why}")
            print(f"skipped {label}: {why}", file=sys.stderr)
            continue
        measured_models.append(label)
        for key, (_, (measured, reference)) in datasets.items():
            values = []
            for fit_name, fit_kwargs in FITS:
                ins, held, seconds = measure(measured, reference, {**model_kwargs, **fit_kwargs})
                values += [ins, held]
                print(
                    f"{key:17s} {label:45s} {fit_name:13s} in-sample {ins:6.3f} "
                    f"held-out {held:6.3f} ({seconds:.1f} s)",
                    file=sys.stderr,
                )
            rows[key].append((label, values))

    lines = [
        "<!-- Written by benchmarks/bench_models.py; rerun it to update. -->",
        "",
        f"Measured {datetime.date.today().isoformat()} with xccm {xccm.__version__}, Python "
        f"{platform.python_version()}; {args.frames} noise draws (frames) per simulated camera. "
        "Mean CIEDE2000 over the 24 patches (and frames): *in* = in-sample (the matrix fitted on "
        "all 24 patches), *out* = held-out (each patch under the matrix fitted on the other 23).",
        "",
    ]
    for key, (title, _) in datasets.items():
        lines += [
            f"**{key}**: {title}",
            "",
            "| model | least squares, in | least squares, out | CIEDE2000 fit, in "
            "| CIEDE2000 fit, out |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, values in rows[key]:
            lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
        lines.append("")
    if notes:
        lines += ["Not measured (the fit does not support them yet):", "", *notes, ""]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
