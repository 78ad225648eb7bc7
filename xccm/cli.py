"""The ``xccm`` command line: camera files or stores in, matrices, reports and corrected images out.

Every command is a thin layer over the Python API (:func:`xccm.open_images`,
:func:`xccm.detect_chart`, :func:`xccm.extract_patches`, :func:`xccm.fit`,
:func:`xccm.save_matrix`, :func:`xccm.io.to_zarr`, :func:`xccm.to_images`...): what a command
does, five lines of Python do too. Exit codes: 0 done, 1 failed while working (the message says
why), 2 refused before starting (bad usage, an output that exists without ``--overwrite``).
One line per error; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import click
import dask
import numpy as np
import xarray as xr
from dask.diagnostics import ProgressBar

from . import io as store_io
from ._kernels import InsufficientSamplesWarning
from .chartfit import report as chart_report
from .charts import available_charts, chart
from .core import apply
from .detection import detect_chart
from .fitting import check_model_options, fit
from .images import open_images, to_images
from .linearize import linear_bounds, linearize
from .matrix_files import check_matrix_path, load_matrix, save_matrix
from .models import ModelSpec
from .patches import extract_patches, grid_boxes
from .raw import RAW_SUFFIXES, open_raw
from .validation import cross_validate, number_of_folds

#: Raised for refusals before any work (exit code 2), as click's own usage errors.
Refused = click.UsageError

_METHODS = ("ciede2000", "cie94", "cie76", "cmc", "rgb", "linear_rgb")
_LOSSES = (*_METHODS, "none")
_MODELS = ("linear", "affine", "root_polynomial", "polynomial")
_LINEARIZE = ("auto", "srgb", "gamma", "identity")


class _Failure(click.ClickException):
    """A failure while working: exit code 1, one line."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"xccm: error: {self.format_message()}", err=True)


# ---------------------------------------------------------------------------------------------
# reading sources


def _is_store(path: Path) -> bool:
    return path.is_dir() and ((path / "zarr.json").exists() or (path / ".zgroup").exists())


def read_frames(sources: Sequence[str], variable: str | None, time: str) -> xr.DataArray:
    """Open the frames ``(time, y, x, channel)`` in ``sources``: images, raw files or a store."""
    paths = [Path(s) for s in sources]
    missing = [s for s, p in zip(sources, paths, strict=True) if not p.exists() and not _glob(s)]
    if missing:
        raise Refused(f"no such file or folder: {missing[0]}")
    if len(paths) == 1 and (_is_store(paths[0]) or paths[0].suffix in (".nc", ".h5", ".nc4")):
        return _store_variable(paths[0], variable)
    if _all_raw(paths):
        return open_raw(_one_or_many(sources), time=time)
    return open_images(_one_or_many(sources), time=time)


def _glob(source: str) -> bool:
    return any(ch in source for ch in "*?[")


def _one_or_many(sources: Sequence[str]) -> str | list[str]:
    """One source (a folder or a glob) as it is; several as a list of files."""
    return sources[0] if len(sources) == 1 else list(sources)


def _all_raw(paths: Sequence[Path]) -> bool:
    """Whether the sources are raw files (or a folder holding only raw files)."""
    files = [f for p in paths for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
    files = [f for f in files if f.is_file() and not f.name.startswith(".")]
    return bool(files) and all(f.suffix.lower() in RAW_SUFFIXES for f in files)


def _store_variable(path: Path, variable: str | None) -> xr.DataArray:
    if _is_store(path):
        ds = xr.open_zarr(path, consolidated=None)
    else:
        ds = xr.open_dataset(path, engine="h5netcdf", chunks={})
    if variable is not None:
        if variable not in ds.data_vars:
            raise Refused(f"{path} has no variable {variable!r}; it has {list(ds.data_vars)}")
        return ds[variable]
    images = [name for name, v in ds.data_vars.items() if "channel" in v.dims and v.ndim >= 3]
    if len(images) != 1:
        raise Refused(
            f"{path} has {len(images)} image variables with a 'channel' dim "
            f"({images or list(ds.data_vars)}): name one with --variable"
        )
    return ds[images[0]]


def encoding_of(frames: xr.DataArray, how: str) -> str:
    """Return the frames' encoding curve: ``how``, or (``"auto"``) what their reader said.

    :func:`xccm.open_images` says ``"srgb"`` for integer files and ``"identity"`` for float
    TIFF, :func:`xccm.open_raw` ``"identity"``; a store's variable without ``encoding`` attrs
    is taken as linear.
    """
    return str(frames.attrs.get("encoding", "identity")) if how == "auto" else how


def linear(frames: xr.DataArray, how: str) -> xr.DataArray:
    """Linear camera RGB in [0, 1]: the frames decoded with :func:`encoding_of`'s curve."""
    scale = frames.attrs.get("scale")
    if scale is None and frames.dtype.kind in "ui":
        scale = 1 / float(np.iinfo(frames.dtype).max)
    return linearize(frames, encoding_of(frames, how), scale=scale)


# ---------------------------------------------------------------------------------------------
# where the chart is


def chart_boxes(
    frames: xr.DataArray,
    reference: xr.DataArray,
    chart_name: str,
    boxes: str | None,
    detect: bool,
    linear: bool,
) -> xr.DataArray:
    """Patch boxes from a ``--boxes`` file or from chart detection (one of them).

    Detection looks at the frames as read (``linear`` says whether they are linear).
    """
    if (boxes is None) == (not detect):
        raise Refused("say where the chart is: --boxes FILE or --detect (exactly one)")
    if detect:
        return detect_chart(frames, chart=chart_name, linear=linear)
    return read_boxes(Path(cast(str, boxes)), reference)  # given: checked above


def read_boxes(path: Path, reference: xr.DataArray) -> xr.DataArray:
    """Read a JSON boxes file: ``{"corners": [[y, x] x 4]}``, a grid, or ``{patch: box}``.

    ``corners`` are the chart's four corners (y, x), from its first patch round, as
    :func:`xccm.grid_boxes` takes them; a grid is ``grid_boxes``' own keywords
    (``top_left``, ``patch_size``, ``pitch``, ``shape``); otherwise each patch name of the
    chart maps to its box ``[y0, y1, x0, x1]``.
    """
    try:
        spec = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise Refused(f"--boxes: no file {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Refused(f"--boxes: {path} is not a JSON file ({err})") from None
    if not isinstance(spec, dict) or not spec:
        raise Refused(f"--boxes: {path} must hold a JSON object; see --boxes in `xccm fit --help`")
    names = [str(p) for p in reference.patch.values]
    if "corners" in spec or "top_left" in spec:
        rows, cols = _chart_shape(reference)
        spec = {"shape": (rows, cols), **spec}
        return grid_boxes(**spec, names=names)
    unknown = [k for k in spec if k not in names]
    if unknown:
        raise Refused(
            f"--boxes: {path} names patches the chart does not have: {unknown[:3]}; "
            f"the chart's are {names[:3]}..."
        )
    return extract_boxes_mapping(spec)


def extract_boxes_mapping(spec: dict) -> xr.DataArray:
    """Wrap a ``{name: box}`` mapping as a boxes DataArray ``(patch, bound)``."""
    return xr.DataArray(
        np.asarray(list(spec.values()), dtype=float),
        dims=("patch", "bound"),
        coords={"patch": list(spec), "bound": ["y0", "y1", "x0", "x1"]},
    )


def _chart_shape(reference: xr.DataArray) -> tuple[int, int]:
    shape = reference.attrs.get("grid") or reference.attrs.get("shape")
    if shape:
        return int(shape[0]), int(shape[1])
    n = reference.sizes["patch"]
    return {24: (4, 6), 140: (10, 14), 18: (3, 6)}.get(n, (1, n))


# ---------------------------------------------------------------------------------------------
# the steps


def patches_of(frames: xr.DataArray, boxes: xr.DataArray) -> xr.DataArray:
    """Median patch colours of every frame, computed (one pass over the frames)."""
    measured = extract_patches(frames, boxes=boxes, reduce="median")
    with progress("patches"):
        return measured.compute()


def model_options(
    model: str,
    degree: int | None,
    terms: int | None,
    ridge: str | float | None,
    white_point: str | None,
    what: str = "",
) -> ModelSpec:
    """Refuse (exit code 2) the model options :func:`xccm.fit` would reject; return the model.

    The rules are :func:`xccm.fitting.check_model_options`' (those of ``fit``), applied
    before any frame is read; ``what`` names where the options came from in the message.
    """
    given = [f"--model {model}"] + [
        f"{name} {value}"
        for name, value in (("--degree", degree), ("--terms", terms), ("--ridge", ridge))
        if value is not None and not (name == "--ridge" and value == "auto")
    ]
    try:
        spec, _ = check_model_options(
            model,
            degree=degree,
            terms=terms,
            ridge=_ridge_value(ridge),
            white_point=_white_point(white_point),
        )
    except (ValueError, TypeError) as err:
        raise Refused(f"{what or ' '.join(given)}: {err}") from None
    return spec


def matrix_path(path: Path, spec: ModelSpec, batch_dims: Sequence[str], option: str) -> None:
    """Refuse (exit code 2) a matrix file that cannot hold the matrix, before fitting it.

    :func:`xccm.matrix_files.check_matrix_path`: an OpenCV ``.yml`` holds one linear or
    affine matrix and needs OpenCV; ``.json`` and ``.nc`` hold every model.
    """
    try:
        check_matrix_path(path, spec, batch_dims=batch_dims)
    except (ValueError, ImportError) as err:
        raise Refused(f"{option}: {err}") from None


def fit_kwargs(
    *,
    model: str,
    loss: str,
    min_samples: int | None,
    robust: str | None,
    degree: int | None,
    terms: int | None,
    ridge: str | float | None,
    white_point: str | None,
) -> dict[str, Any]:
    """Return the keyword arguments of :func:`xccm.fit` that the fit options give."""
    kwargs: dict[str, Any] = {
        "model": model,
        "min_samples": min_samples,
        "degree": degree,
        "terms": terms,
        "ridge": _ridge_value(ridge),
        "white_point": _white_point(white_point),
    }
    if loss != "none":
        kwargs["loss"] = loss
    if robust is not None:
        kwargs["robust"] = robust
    return kwargs


@contextlib.contextmanager
def insufficient_samples_said() -> Iterator[None]:
    """Say each :class:`xccm.InsufficientSamplesWarning` on stderr as a one-line warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InsufficientSamplesWarning)
        yield
    for w in caught:
        if issubclass(w.category, InsufficientSamplesWarning):
            click.echo(f"xccm: warning: {w.message}", err=True)


def fit_matrices(
    measured: xr.DataArray,
    reference: xr.DataArray,
    *,
    model: str,
    loss: str,
    per_frame: bool,
    min_samples: int | None,
    robust: str | None = None,
    degree: int | None = None,
    terms: int | None = None,
    ridge: str | float | None = "auto",
    white_point: str | None = None,
) -> tuple[xr.DataArray, int, xr.DataArray | None]:
    """Fit (per frame, or pooled over the frames): the matrix, rejected count, robust weights."""
    kwargs = fit_kwargs(
        model=model,
        loss=loss,
        min_samples=min_samples,
        robust=robust,
        degree=degree,
        terms=terms,
        ridge=ridge,
        white_point=white_point,
    )
    if robust is not None:
        kwargs["return_weights"] = True
    if not per_frame and "time" in measured.dims:
        kwargs["sample_dims"] = ("time", "patch")
        ref = reference.expand_dims(time=measured.time)
    else:
        ref = reference
    with insufficient_samples_said():
        fitted = fit(measured, ref, **kwargs)
    m, weights = fitted if robust is not None else (fitted, None)
    batch = [d for d in m.dims if d not in ("channel_in", "channel")]
    rejected = (
        int(m.isnull().any(("channel_in", "channel")).sum()) if batch else int(m.isnull().any())
    )
    return m, rejected, weights


def _white_point(white_point: str | None) -> str | None:
    """``--white-point``: ``none`` is no constraint."""
    return None if white_point in (None, "none") else white_point


def _ridge_value(ridge: str | float | None) -> str | float | None:
    """``--ridge``: ``auto``, ``none`` or a number."""
    if ridge is None or not isinstance(ridge, str):
        return ridge
    if ridge.strip().lower() in ("auto", "none"):
        return None if ridge.strip().lower() == "none" else "auto"
    try:
        return float(ridge)
    except ValueError:
        raise click.BadParameter(
            f"expected a number >= 0, 'none' or 'auto'; got {ridge!r}", param_hint="--ridge"
        ) from None


def fill_rejected(m: xr.DataArray) -> xr.DataArray:
    """Fill NaN (rejected) frames from their neighbours in time: interpolated, then carried."""
    if "time" not in m.dims or not bool(m.isnull().any()):
        return m
    if bool(m.isnull().all()):
        raise _Failure("no frame had enough usable patches to fit a matrix")
    filled = m.interpolate_na("time").ffill("time").bfill("time")
    filled.attrs = m.attrs
    return filled


@contextlib.contextmanager
def progress(what: str) -> Iterator[None]:
    """Show a Dask progress bar while ``what`` runs, if stdout is a terminal (or ``--progress``)."""
    if _STATE.get("progress", sys.stdout.isatty()):
        click.echo(f"{what}:")
        with ProgressBar(out=sys.stdout):
            yield
    else:
        yield


_STATE: dict[str, Any] = {}


def summary(
    measured: xr.DataArray,
    reference: xr.DataArray,
    m: xr.DataArray,
    loss: str,
    robust_weights: xr.DataArray | None = None,
) -> xr.Dataset:
    """ΔE00 of every frame's patches after the correction: those the fit used.

    A fit with a loss leaves out the patches outside its saturation range (0, 0.98) of the
    encoded values (:func:`xccm.fit`), a robust fit those it gave weight 0; so does this.
    """
    used = xr.ones_like(measured.isel(channel=0), dtype=bool).drop_vars("channel", errors="ignore")
    if loss != "none":
        low, high, _ = linear_bounds(measured, 0.0, 0.98)
        used = used & ((measured >= low) & (measured <= high)).all("channel")
    if robust_weights is not None:
        used = used & (robust_weights.fillna(0) > 0)
    return chart_report(measured, reference, m, "ciede2000", weights=used)


def _hint_outliers(fitted: xr.Dataset) -> None:
    """Say which frames fit far worse than the series, when nothing rejects them."""
    mean = fitted["mean"]
    typical = float(mean.median())
    worse = mean > max(3 * typical, typical + 2)
    if bool(worse.any()):
        click.echo(
            f"xccm: note: {int(worse.sum())} frames fit far worse than the median frame "
            f"(mean ΔE00 {typical:.2f}), e.g. a hand or a leaf over the chart; --max-error "
            "rejects such frames and fills them from their neighbours",
            err=True,
        )


def rejections(m: xr.DataArray, fitted: xr.Dataset, max_error: float | None) -> xr.DataArray:
    """Say why each frame's matrix is rejected (``""``: kept): too few patches, or its error."""
    notes = xr.full_like(fitted["mean"], "", dtype=object)
    if max_error is not None:
        worse = fitted["mean"] > max_error
        notes = notes.where(~worse, f"rejected: mean ΔE00 above {max_error:g}")
    nan = m.isnull().any(("channel_in", "channel"))
    return notes.where(~nan, "rejected: too few usable patches")


def print_frames(
    rep: xr.Dataset,
    out: Callable[[str], None],
    notes: xr.DataArray | None = None,
    what: str = "ΔE00 of the fitted patches",
) -> None:
    """Print a line per frame (or one line): mean, median, p90 and max ΔE of the patches."""
    stats = ["mean", "median", "p90", "max"]
    out(f"{'frame':<22}" + "".join(f"{s:>9}" for s in stats) + f"  ({what})")
    if "time" in rep.dims:
        for t in range(rep.sizes["time"]):
            row = rep.isel(time=t)
            label = str(row.time.values)[:19].replace("T", " ")
            note = f"  {notes.values[t]}" if notes is not None and notes.values[t] else ""
            out(f"{label:<22}" + "".join(f"{float(row[s]):9.3f}" for s in stats) + note)
    else:
        out(f"{'all':<22}" + "".join(f"{float(rep[s]):9.3f}" for s in stats))


def plot_module() -> Any:
    """:mod:`xccm.plot`, or a refusal naming the ``plot`` extra (before any work)."""
    try:  # matplotlib is optional: xccm.plot is imported only when asked for
        return importlib.import_module("xccm.plot")
    except ImportError as err:
        raise Refused(f"--plot: {err}") from None


def draw_run(
    plotting: Any,
    folder: Path,
    measured: xr.DataArray,
    reference: xr.DataArray,
    m: xr.DataArray,
    fitted: xr.Dataset,
    notes: xr.DataArray,
) -> None:
    """Save ``timeline.png`` (rejected frames shaded) and the worst kept frame's swatches."""
    folder.mkdir(parents=True, exist_ok=True)
    flags = notes != ""
    figure = plotting.timeline(m, flags=flags, report=fitted)
    figure.savefig(folder / "timeline.png", dpi=100)
    kept = fitted["mean"].where(~flags)
    if bool(kept.notnull().any()):
        worst = kept.time.values[int(np.argmax(kept.fillna(-1).values))]
        figure = plotting.swatches(measured, reference, m, time=worst)
        figure.savefig(folder / "swatches.png", dpi=100)
    click.echo(f"drew {folder / 'timeline.png'} and the swatches of the worst kept frame")


def check_output(
    path: Path,
    overwrite: bool,
    resume: bool = False,
    *,
    sources: Sequence[str] = (),
    fmt: str | None = None,
) -> None:
    """Refuse an output that would lose data (exit code 2, nothing touched); make its folder.

    An output is never one of the sources, inside one or holding one; an existing one is
    replaced only with ``--overwrite`` (a store only if it is a zarr store, a folder of
    images only file by file), finished only with ``--resume`` (stores only).
    """
    target = path.resolve()
    for source in sources:
        if _glob(source):
            continue  # a glob: its files are checked by name below
        src = Path(source).resolve()
        if target == src or src.is_relative_to(target) or target.is_relative_to(src):
            raise Refused(
                f"the output {path} is, holds or lies inside the source {source}: write "
                "somewhere else (the source would be lost)"
            )
    if resume and fmt not in (None, "zarr"):
        raise Refused(f"--resume finishes a zarr store; {path} is a {fmt} folder")
    empty_folder = path.is_dir() and not any(path.iterdir())
    if path.exists() and not empty_folder:
        if not (overwrite or resume):
            hint = " or --resume to finish it" if fmt == "zarr" else ""
            raise Refused(f"{path} exists: pass --overwrite to replace it{hint}")
        if fmt == "zarr" and not _is_store(path):
            raise Refused(
                f"{path} exists and is not a zarr store: xccm replaces only a store it can "
                "recognise; remove it yourself or choose another output"
            )
    path.parent.mkdir(parents=True, exist_ok=True)


def write_output(
    corrected: xr.DataArray,
    m: xr.DataArray,
    target: Path,
    fmt: str,
    bits: int,
    *,
    overwrite: bool,
    resume: bool,
    attrs: dict[str, Any],
) -> str:
    """Write the corrected frames to a store or a folder of images; say what was written."""
    if fmt == "zarr":
        ds = corrected.to_dataset(name="image").assign(ccm_matrix=m.rename(None))
        mode: Literal["resume", "w", "w-"] = "resume" if resume else "w" if overwrite else "w-"
        write = store_io.to_zarr(ds, target, mode=mode, compute=False, attrs=attrs)
        with progress("writing"):
            dask.compute(write)
        return f"{target} (zarr, {corrected.sizes.get('time', 1)} frames, complete)"
    with progress("writing"):
        clipped = to_images(  # click has checked fmt and bits against to_images' choices
            corrected,
            target,
            format=cast(Literal["png", "tiff"], fmt),
            bits=cast(Literal[8, 16], bits),
            overwrite=overwrite,
        )
    total = int(clipped.sum())
    n = corrected.sizes.get("time", 1)
    return f"{target} ({fmt}, {bits}-bit, {n} files, {total} clipped pixels)"


# ---------------------------------------------------------------------------------------------
# the commands


_EPILOG_FIT = """\b
Examples:
  xccm fit chart.jpg --detect -o ccm.json
  xccm fit frames/ --boxes boxes.json --model affine --loss ciede2000 -o ccm.nc
  xccm fit raw/*.dng --detect --per-frame -o ccm.json
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xccm")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar on long work (default: when stdout is a terminal).",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, progress: bool | None) -> None:
    """Fit and apply colour-correction matrices to camera images and stores.

    \b
    A typical session:
      xccm charts                                   # the built-in charts
      xccm fit chart.jpg --detect -o ccm.json       # a matrix from a photo of the chart
      xccm apply frames/ -m ccm.json -o out.zarr    # correct a folder of frames into a store
      xccm run frames/ --detect -o out.zarr         # per-frame matrices, filled, corrected
      xccm report frames/ --detect -m ccm.json      # per-patch ΔE00 of a matrix
      xccm validate chart.jpg --detect --models linear,affine,root_polynomial:2
    """
    ctx.obj = {"debug": debug}
    if progress is not None:
        _STATE["progress"] = progress


def _source_options(f: Callable) -> Callable:
    for option in reversed(
        [
            click.argument("sources", nargs=-1, required=True),
            click.option("--variable", help="The image variable of a zarr/netCDF source."),
            click.option(
                "--time",
                "time_from",
                default="auto",
                show_default=True,
                help="Frame times: auto (EXIF if every file has it, else an error unless none "
                "has: then the date-times in the file names, as xccm writes them "
                "(20240601T120000) or ISO-like, if every name has one, else the file order), "
                "exif, order, or a file-name pattern such as %Y%m%d_%H%M%S.",
            ),
            click.option(
                "--linearize",
                type=click.Choice(_LINEARIZE),
                default="auto",
                show_default=True,
                help="How to decode the frames to linear RGB (auto: from how they were read).",
            ),
        ]
    ):
        f = option(f)
    return f


def _chart_options(f: Callable) -> Callable:
    for option in reversed(
        [
            click.option(
                "--chart",
                "chart_name",
                type=click.Choice(available_charts(), case_sensitive=False),
                default="colorchecker24",
                show_default=True,
            ),
            click.option("--edition", help="The chart's published data (default: current)."),
            click.option(
                "--boxes",
                type=click.Path(dir_okay=False),
                help='Where the patches are, a JSON file: {"corners": [[y, x] x 4]} (the '
                "chart's corners: top-left, top-right, bottom-right, bottom-left of the chart "
                "as printed), grid_boxes keywords (top_left, patch_size, pitch), or "
                "{patch name: [y0, y1, x0, x1]}.",
            ),
            click.option("--detect", is_flag=True, help="Find the chart in every frame."),
        ]
    ):
        f = option(f)
    return f


def _fit_options(f: Callable) -> Callable:
    for option in reversed(
        [
            click.option(
                "--model", type=click.Choice(_MODELS), default="linear", show_default=True
            ),
            click.option(
                "--degree",
                type=click.IntRange(1, 4),
                default=None,
                help="Degree of a root_polynomial or polynomial model (1 to 4).",
            ),
            click.option(
                "--terms",
                type=int,
                default=None,
                help="A Cheung 2004 term set of a polynomial model (e.g. 10), instead of --degree.",
            ),
            click.option(
                "--ridge",
                default="auto",
                show_default=True,
                help="Tikhonov weight toward the least-squares 3x3 (scale-free, >= 0), 'none', "
                "or 'auto' (xccm's measured default for polynomial models, none for "
                "linear/affine).",
            ),
            click.option(
                "--white-point",
                type=click.Choice(["none", "preserve"]),
                default="none",
                show_default=True,
                help="'preserve': map the chart's white patch exactly onto its reference.",
            ),
            click.option(
                "--loss",
                type=click.Choice(_LOSSES),
                default="ciede2000",
                show_default=True,
                help="What the fit minimises ('none': least squares in linear RGB).",
            ),
            click.option(
                "--min-samples",
                type=click.IntRange(1),
                default=None,
                help="Frames with fewer usable patches get no matrix (filled by `run`).",
            ),
            click.option(
                "--robust",
                type=click.Choice(["tukey", "huber"]),
                default=None,
                help="Down-weight outlier patches in each frame (glare, a leaf): tukey drops "
                "them, huber limits them.",
            ),
        ]
    ):
        f = option(f)
    return f


def chart_reference(chart_name: str, edition: str | None) -> xr.DataArray:
    """Return the chart's reference colours (``--chart``, ``--edition``), or refuse."""
    try:
        return chart(chart_name, edition=edition)
    except ValueError as err:
        raise Refused(f"--chart/--edition: {err}") from None


def _frames_and_patches(
    sources, variable, time_from, linearize_how, chart_name, edition, boxes, detect, reference=None
):
    """Return the linear frames, the chart's reference colours and the measured patches."""
    if reference is None:
        reference = chart_reference(chart_name, edition)
    read = read_frames(sources, variable, time_from)
    frames = linear(read, linearize_how)
    is_linear = encoding_of(read, linearize_how) == "identity"
    where = chart_boxes(read, reference, chart_name, boxes, detect, is_linear)
    return frames, reference, patches_of(frames, where)


@main.command(epilog=_EPILOG_FIT)
@_source_options
@_chart_options
@_fit_options
@click.option("--per-frame", is_flag=True, help="One matrix per frame (default: one for all).")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    help="Matrix file: .json or .nc (every model), or OpenCV .yml (one linear or affine "
    "matrix, not --per-frame; needs the detect extra).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def fit_cmd(
    sources,
    variable,
    time_from,
    linearize,
    chart_name,
    edition,
    boxes,
    detect,
    model,
    degree,
    terms,
    ridge,
    white_point,
    loss,
    min_samples,
    robust,
    per_frame,
    output,
    overwrite,
) -> None:
    """Fit a colour-correction matrix to a chart in SOURCES (images, raw files or a store)."""
    spec = model_options(model, degree, terms, ridge, white_point)
    target = Path(output)
    check_output(target, overwrite, sources=sources)
    matrix_path(target, spec, ("time",) if per_frame else (), "--output")
    _, reference, measured = _frames_and_patches(
        sources, variable, time_from, linearize, chart_name, edition, boxes, detect
    )
    m, rejected, weights = fit_matrices(
        measured,
        reference,
        model=model,
        loss=loss,
        per_frame=per_frame,
        min_samples=min_samples,
        robust=robust,
        degree=degree,
        terms=terms,
        ridge=ridge,
        white_point=white_point,
    )
    save_matrix(m, target, overwrite=overwrite)
    print_frames(summary(measured, reference, m, loss, weights), click.echo)
    click.echo(f"wrote {target}" + (f" ({rejected} frames rejected: NaN)" if rejected else ""))


fit_cmd.name = "fit"


@main.command(name="apply")
@_source_options
@click.option("-m", "--matrix", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(), help="A .zarr store or a folder.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["zarr", "png", "tiff"]),
    default=None,
    help="Output format (default: zarr for a .zarr output, else png).",
)
@click.option("--bits", type=click.Choice(["8", "16"]), default="8", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--resume", is_flag=True, help="Finish an interrupted store.")
def apply_cmd(
    sources, variable, time_from, linearize, matrix, output, fmt, bits, overwrite, resume
) -> None:
    """Correct SOURCES with a matrix file into a zarr store or a folder of images.

    \b
    Examples:
      xccm apply frames/ -m ccm.json -o corrected.zarr
      xccm apply camera.zarr -m ccm.nc -o corrected/ --format png --bits 16
    """
    target = Path(output)
    fmt = fmt or ("zarr" if target.suffix == ".zarr" else "png")
    check_output(target, overwrite, resume, sources=sources, fmt=fmt)
    m = load_matrix(matrix)
    frames = linear(read_frames(sources, variable, time_from), linearize)
    corrected = apply(frames, m)
    _STATE["resumable"] = target if fmt == "zarr" else None
    click.echo(
        "wrote "
        + write_output(
            corrected,
            m,
            target,
            fmt,
            int(bits),
            overwrite=overwrite,
            resume=resume,
            attrs={
                "xccm_command": "apply",
                "source": [str(s) for s in sources],
                "matrix": str(matrix),
            },
        )
    )


@main.command(name="run")
@_source_options
@_chart_options
@_fit_options
@click.option("-o", "--output", required=True, type=click.Path(), help="A .zarr store or a folder.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["zarr", "png", "tiff"]),
    default=None,
    help="Output format (default: zarr for a .zarr output, else png).",
)
@click.option("--bits", type=click.Choice(["8", "16"]), default="8", show_default=True)
@click.option(
    "--matrix-output",
    type=click.Path(),
    help="Also save the per-frame matrices here: .json or .nc (an OpenCV .yml holds one "
    "linear or affine matrix only).",
)
@click.option(
    "--max-error",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Reject (and fill) frames whose fit leaves a mean ΔE00 above this (e.g. 5).",
)
@click.option(
    "--plot",
    type=click.Path(file_okay=False),
    default=None,
    help="Draw the per-frame timeline and the worst kept frame's swatches into this folder "
    "(the plot extra).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--resume", is_flag=True, help="Finish an interrupted store.")
def run_cmd(
    sources,
    variable,
    time_from,
    linearize,
    chart_name,
    edition,
    boxes,
    detect,
    model,
    degree,
    terms,
    ridge,
    white_point,
    loss,
    min_samples,
    robust,
    output,
    fmt,
    bits,
    matrix_output,
    max_error,
    plot,
    overwrite,
    resume,
) -> None:
    """Fit a matrix in every frame, fill rejected frames, correct them all into OUTPUT.

    The README's time-series workflow as one command: patches per frame (boxes or detection),
    one matrix per frame (frames with too few usable patches are filled from their neighbours
    in time), the corrected frames written to a zarr store (with the matrices) or a folder,
    and a per-frame ΔE00 report.

    \b
    Examples:
      xccm run frames/ --detect -o corrected.zarr
      xccm run "site1/*.jpg" --boxes boxes.json --model affine -o corrected/ --format png
    """
    spec = model_options(model, degree, terms, ridge, white_point)
    target = Path(output)
    fmt = fmt or ("zarr" if target.suffix == ".zarr" else "png")
    check_output(target, overwrite, resume, sources=sources, fmt=fmt)
    if matrix_output:
        check_output(Path(matrix_output), overwrite, sources=sources)
        matrix_path(Path(matrix_output), spec, ("time",), "--matrix-output")
    plotting = plot_module() if plot else None
    frames, reference, measured = _frames_and_patches(
        sources, variable, time_from, linearize, chart_name, edition, boxes, detect
    )
    m, _, weights = fit_matrices(
        measured,
        reference,
        model=model,
        loss=loss,
        per_frame=True,
        min_samples=min_samples,
        robust=robust,
        degree=degree,
        terms=terms,
        ridge=ridge,
        white_point=white_point,
    )
    fitted = summary(measured, reference, m, loss, weights)
    notes = rejections(m, fitted, max_error)
    print_frames(fitted, click.echo, notes)
    n_bad = int((notes != "").sum())
    click.echo(f"{n_bad} of {m.sizes['time']} frames rejected and filled from their neighbours")
    if max_error is None:
        _hint_outliers(fitted)
    if plot:
        draw_run(plotting, Path(plot), measured, reference, m, fitted, notes)
    m = fill_rejected(m.where(notes == ""))
    if matrix_output:
        save_matrix(m, Path(matrix_output), overwrite=overwrite)
    corrected = apply(frames, m)
    _STATE["resumable"] = target if fmt == "zarr" else None
    written = write_output(
        corrected,
        m,
        target,
        fmt,
        int(bits),
        overwrite=overwrite,
        resume=resume,
        attrs={
            "xccm_command": "run",
            "source": [str(s) for s in sources],
            "model": model,
            "loss": loss,
            "chart": chart_name,
        },
    )
    click.echo("wrote " + written)


@main.command(name="report")
@_source_options
@_chart_options
@click.option("-m", "--matrix", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--method",
    type=click.Choice(_METHODS),
    default="ciede2000",
    show_default=True,
)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the table.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --csv file.")
def report_cmd(
    sources,
    variable,
    time_from,
    linearize,
    chart_name,
    edition,
    boxes,
    detect,
    matrix,
    method,
    csv_path,
    overwrite,
) -> None:
    """Per-patch colour differences of a matrix on the chart in SOURCES.

    \b
    Examples:
      xccm report chart.jpg --detect -m ccm.json
      xccm report frames/ --boxes boxes.json -m ccm.nc --csv report.csv
    """
    if csv_path:
        check_output(Path(csv_path), overwrite, sources=sources)
    _, reference, measured = _frames_and_patches(
        sources, variable, time_from, linearize, chart_name, edition, boxes, detect
    )
    m = load_matrix(matrix)
    rep = chart_report(measured, reference, m, method)
    table = rep["delta_e"]
    if csv_path:
        table.to_dataframe().to_csv(csv_path)
    per_patch = table.mean([d for d in table.dims if d != "patch"]) if table.ndim > 1 else table
    click.echo(f"{'patch':<24}{method:>10}")
    for name, value in zip(per_patch.patch.values, per_patch.values, strict=True):
        click.echo(f"{name!s:<24}{value:10.3f}")
    print_frames(rep, click.echo, what=f"{method} of every patch")
    if csv_path:
        click.echo(f"wrote {csv_path}")


def parse_models(text: str) -> list[tuple[str, str, int | None, int | None]]:
    """Parse ``--models``: ``NAME``, ``NAME:DEGREE``, ``NAME:degree=N`` or ``NAME:terms=N``.

    Returns ``(label, name, degree, terms)`` per model, as given (checked by
    :func:`model_options`).
    """
    out: list[tuple[str, str, int | None, int | None]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, option = item.partition(":")
        key, eq, value = option.partition("=")
        if not eq:
            key, value = "degree", key
        options: dict[str, int | None] = {"degree": None, "terms": None}
        if option:
            if key.strip() not in options or not value.strip().isdigit():
                raise Refused(
                    f"--models: {item!r} is not NAME, NAME:DEGREE or NAME:terms=N (e.g. "
                    "linear, root_polynomial:2, polynomial:terms=10)"
                )
            options[key.strip()] = int(value)
        out.append((item, name.strip(), options["degree"], options["terms"]))
    if not out:
        raise Refused(f"--models: no model in {text!r}; e.g. --models linear,affine")
    return out


def parse_folds(text: str, n_patches: int) -> Literal["leave_one_out"] | int:
    """``--folds``: ``loo`` (leave one patch out) or a number of folds, checked for the chart."""
    folds: Literal["leave_one_out"] | int
    if text.strip().lower() in ("loo", "leave_one_out", "leave-one-out"):
        folds = "leave_one_out"
    else:
        try:
            folds = int(text)
        except ValueError:
            raise Refused(f"--folds: expected 'loo' or a number of folds; got {text!r}") from None
    try:
        number_of_folds(folds, n_patches)
    except (ValueError, TypeError) as err:
        raise Refused(f"--folds: {err} (the chart has {n_patches} patches)") from None
    return folds


_STATS = ("mean", "median", "p90", "max")


def validate_models(
    measured: xr.DataArray,
    reference: xr.DataArray,
    candidates: Sequence[tuple[str, ModelSpec, dict[str, Any]]],
    folds: Literal["leave_one_out"] | int,
    seed: int,
) -> list[tuple[str, ModelSpec, xr.Dataset]]:
    """Cross-validate each candidate ``(label, spec, fit kwargs)`` on every frame's patches."""
    out = []
    for label, spec, kwargs in candidates:
        with insufficient_samples_said():
            cv = cross_validate(measured, reference, folds=folds, seed=seed, **kwargs)
        out.append((label, spec, cv[list(_STATS)].compute().assign_attrs(cv.attrs)))
    return out


def print_validation(
    results: Sequence[tuple[str, ModelSpec, xr.Dataset]], out: Callable[[str], None]
) -> None:
    """Print a line per model: its terms, in-sample and held-out mean error (frames: median)."""
    first = results[0][2]
    metric = {"ciede2000": "ΔE00", "cie76": "ΔE76", "cie94": "ΔE94"}.get(
        first.attrs["metric"], first.attrs["metric"]
    )
    how = (
        "leave-one-out"
        if first.attrs["folds"] == "leave_one_out"
        else (f"{first.attrs['n_folds']} folds, seed {first.attrs['seed']}")
    )
    n = first.sizes.get("time", 1)
    over = f"; median of {n} frames" if n > 1 else ""
    out(
        f"{'model':<26}{'terms':>6}{'in-sample':>11}{'held-out':>10}"
        f"  (mean {metric} of the patches, {how}{over})"
    )
    held = []
    for label, spec, cv in results:
        mean = cv["mean"].median("time") if "time" in cv.dims else cv["mean"]
        inside, outside = (float(mean.sel(validation=v)) for v in ("in_sample", "held_out"))
        held.append(outside)
        out(f"{label:<26}{spec.n_terms:>6}{inside:11.3f}{outside:10.3f}")
    if len(results) > 1 and not all(np.isnan(held)):
        out(f"lowest held-out error: {results[int(np.nanargmin(held))][0]}")


def write_validation(results: Sequence[tuple[str, ModelSpec, xr.Dataset]], path: Path) -> None:
    """Write a CSV row per model and frame: in-sample and held-out mean, median, p90, max."""
    columns = [f"{v}_{stat}" for stat in _STATS for v in ("in_sample", "held_out")]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "n_terms", "time", *columns])
        for label, spec, cv in results:
            frames = cv.time.values if "time" in cv.dims else [None]
            for t in frames:
                row = cv.sel(time=t) if t is not None else cv
                values = [
                    float(row[stat].sel(validation=v))
                    for stat in _STATS
                    for v in ("in_sample", "held_out")
                ]
                stamp = "" if t is None else str(t)
                writer.writerow([label, spec.n_terms, stamp, *(f"{x:.6g}" for x in values)])


@main.command(name="validate")
@_source_options
@_chart_options
@_fit_options
@click.option(
    "--models",
    "model_list",
    default=None,
    help="Compare several models, comma-separated: NAME, NAME:DEGREE or polynomial:terms=N "
    "(e.g. linear,affine,root_polynomial:2,polynomial:terms=10), each with the other fit "
    "options; instead of --model/--degree/--terms.",
)
@click.option(
    "--folds",
    default="loo",
    show_default=True,
    help="loo: leave one patch out; or a number k of folds (the patches dealt at random).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the k folds.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the table.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --csv file.")
def validate_cmd(
    sources,
    variable,
    time_from,
    linearize,
    chart_name,
    edition,
    boxes,
    detect,
    model,
    degree,
    terms,
    ridge,
    white_point,
    loss,
    min_samples,
    robust,
    model_list,
    folds,
    seed,
    csv_path,
    overwrite,
) -> None:
    """Compare models by their error on chart patches left out of the fit (cross-validation).

    Each frame's patches are cross-validated on their own (xccm.cross_validate): every patch
    is judged by a matrix fitted without it (or without its fold), the held-out error, next
    to the in-sample error of the matrix fitted on all of them. The table gives each model's
    mean error over the patches (the median over the frames); choose by the held-out column.

    \b
    Examples:
      xccm validate chart.jpg --detect --models linear,affine,root_polynomial:2
      xccm validate frames/ --boxes boxes.json --model affine --folds 6 --csv cv.csv
    """
    if model_list is not None:
        ctx = click.get_current_context()
        given = [
            f"--{name}"
            for name in ("model", "degree", "terms")
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise Refused(f"--models replaces {', '.join(given)}: give one or the other")
        entries = parse_models(model_list)
    else:
        entries = [(model_label(model, degree, terms), model, degree, terms)]
    candidates = []
    for label, name, deg, n_terms in entries:
        what = f"--models {label}" if model_list is not None else ""
        spec = model_options(name, deg, n_terms, ridge, white_point, what=what)
        kwargs = fit_kwargs(
            model=name,
            loss=loss,
            min_samples=min_samples,
            robust=robust,
            degree=deg,
            terms=n_terms,
            ridge=ridge,
            white_point=white_point,
        )
        candidates.append((label, spec, kwargs))
    reference = chart_reference(chart_name, edition)
    folds_value = parse_folds(folds, reference.sizes["patch"])
    if csv_path:
        check_output(Path(csv_path), overwrite, sources=sources)
    _, reference, measured = _frames_and_patches(
        sources, variable, time_from, linearize, chart_name, edition, boxes, detect, reference
    )
    results = validate_models(measured, reference, candidates, folds_value, seed)
    print_validation(results, click.echo)
    if csv_path:
        write_validation(results, Path(csv_path))
        click.echo(f"wrote {csv_path}")


def model_label(model: str, degree: int | None, terms: int | None) -> str:
    """Spell a model as ``--models`` does: ``root_polynomial:2``, ``polynomial:terms=10``."""
    if terms is not None:
        return f"{model}:terms={terms}"
    return f"{model}:{degree}" if degree is not None else model


@main.command(name="charts")
def charts_cmd() -> None:
    """List the built-in charts and their patches."""
    for name in available_charts():
        ref = chart(name)
        first = ", ".join(str(p) for p in ref.patch.values[:3])
        click.echo(f"{name:<18}{ref.sizes['patch']:>4} patches  ({first}, ...)")


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit code (0, 1 or 2). The console script calls this."""
    args = _global_options_first(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    _STATE.clear()
    try:
        main.main(args=args, prog_name="xccm", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except (click.Abort, KeyboardInterrupt):
        store = _STATE.get("resumable")
        hint = f"; rerun the same command with --resume to finish {store}" if store else ""
        click.echo(f"xccm: interrupted{hint}", err=True)
        return 1
    except click.ClickException as err:
        if debug:
            raise
        if isinstance(err, click.UsageError) and err.ctx is not None and "Missing" in err.message:
            err.show()
        else:
            click.echo(f"xccm: error: {err.format_message()}", err=True)
        return err.exit_code
    except (ValueError, TypeError, OSError, np.linalg.LinAlgError, ImportError) as err:
        if debug:
            raise
        click.echo(f"xccm: error: {err}", err=True)
        return 1
    except Exception as err:  # a bug: still one line, and how to see and report it
        if debug:
            raise
        click.echo(
            f"xccm: internal error: {type(err).__name__}: {err} (run with --debug for the "
            "traceback, and please report it)",
            err=True,
        )
        return 1
    return 0


#: Options of the whole command that may also be given after the subcommand.
_GLOBAL_FLAGS = ("--debug", "--progress", "--no-progress")


def _global_options_first(args: list[str]) -> list[str]:
    """Move ``--debug`` and ``--progress``/``--no-progress`` before the subcommand."""
    if "--" in args:
        return args
    flags = [a for a in args if a in _GLOBAL_FLAGS]
    return flags + [a for a in args if a not in _GLOBAL_FLAGS]


def console() -> None:  # pragma: no cover - the console script
    """Entry point of the ``xccm`` console script."""
    sys.exit(run())
