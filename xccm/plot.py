"""Figures a person looks at: chart swatches, ΔE bars, per-frame time lines, before/after.

Every function returns the matplotlib :class:`~matplotlib.figure.Figure` it drew on (a new
one from :mod:`matplotlib.pyplot`, or the figure of the ``ax=`` / ``axes=`` given), so
``fig.savefig("x.png")`` or ``plt.show()`` follows. Colours are shown as a display shows
them: linear values are encoded with the sRGB curve (:func:`xccm.encode`) and clipped to
[0, 1]; each figure says how many values were clipped. Dask-backed input is computed, after
selecting the one frame a figure needs.

This module needs matplotlib (the ``plot`` extra, which brings the ``colour`` extra for ΔE):
``pip install "xccm[plot]"``. Importing :mod:`xccm` does not import it; use
``import xccm.plot``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import xarray as xr

try:
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'xccm.plot needs matplotlib; install it with `pip install "xccm[plot]"`'
    ) from err

from . import colorimetry
from .chartfit import report as _report
from .core import apply, matrix_in_dim
from .linearize import encode

__all__ = ["before_after", "delta_e_bars", "swatches", "timeline"]

#: How each distance of :func:`xccm.delta_e` is called on an axis.
_DE_LABELS = {
    "cie76": "ΔE*ab",
    "cie94": "ΔE94",
    "cie94_textiles": "ΔE94 (textiles)",
    "ciede2000": "ΔE00",
    "cmc": "ΔE CMC 1:1",
    "cmc_2to1": "ΔE CMC 2:1",
    "linear_rgb": "linear RGB distance",
    "rgb": "RGB distance",
}
_FLAG_COLOUR = "tab:orange"
_REJECTED_COLOUR = "0.6"


def _when(label: Any) -> str:
    """Format a frame label for a title: datetimes to the minute, without the ``T``."""
    if isinstance(label, np.datetime64 | pd.Timestamp):
        return np.datetime_as_string(np.datetime64(label), unit="m").replace("T", " ")
    return str(label)


def _de_label(method: Any) -> str:
    try:
        return _DE_LABELS[colorimetry.distance_name(str(method))]
    except ValueError:
        return "ΔE"


# ---------------------------------------------------------------------------------------------
# selecting a frame, display encoding


def _computed(x: Any) -> Any:
    """Return a DataArray computed (in memory), anything else as it is."""
    return x.compute() if isinstance(x, xr.DataArray) else x


def _select(
    obj: xr.DataArray | xr.Dataset,
    time: Any,
    time_dim: Hashable,
    core: Sequence[Hashable],
    argname: str,
) -> Any:
    """``obj`` at ``time`` (a label of ``time_dim``); error if batch dims remain."""
    if time is not None and time_dim in obj.dims:
        try:
            obj = obj.sel({time_dim: time})
        except KeyError:
            raise ValueError(
                f"time={time!r} is not a label of {argname}'s dim {time_dim!r}; its labels run "
                f"from {obj[time_dim].values[0]!r} to {obj[time_dim].values[-1]!r}"
            ) from None
        if time_dim in obj.dims:
            raise ValueError(
                f"time={time!r} selects {obj.sizes[time_dim]} frames of {argname}'s dim "
                f"{time_dim!r}; give one label"
            )
    extra = [d for d in obj.dims if d not in core and obj.sizes[d] != 1]
    if extra:
        how = (
            f"pick one frame with time=<a label of {time_dim!r}>"
            if extra == [time_dim]
            else f"select one element of {extra} first, e.g. {argname}.isel({extra[0]}=0)"
        )
        raise ValueError(
            f"{argname} has the batch dims {extra} (sizes "
            f"{[obj.sizes[d] for d in extra]}) but this figure shows one frame: {how}"
        )
    return obj.squeeze([d for d in obj.dims if d not in core], drop=False)


def _display(values: np.ndarray, method: str | None = "srgb") -> tuple[np.ndarray, int]:
    """Encode linear values for display and clip them to [0, 1]; return them and #clipped."""
    values = np.asarray(values, dtype=np.float64)
    if method is not None:
        values = encode(values, method)
    outside = ~((values >= 0) & (values <= 1))  # NaN counts as clipped
    return np.clip(np.nan_to_num(values, nan=0.0), 0, 1), int(outside.sum())


def _clip_note(clipped: int, total: int) -> str:
    return f"{clipped} of {total} values clipped to [0, 1]" if clipped else "nothing clipped"


def _to_srgb_linear(x: xr.DataArray, rgb_space: str, dim: Hashable) -> xr.DataArray:
    """Linear ``rgb_space`` colours as linear sRGB (a copy of the values if the same)."""
    source = colorimetry.Space("rgb", rgb_space=rgb_space)
    return colorimetry.convert(x, "rgb", dim=dim, source=source, rgb_space="sRGB")


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None; got {type(ax).__name__}")
    return ax.figure, ax  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# swatches


def swatches(
    measured: xr.DataArray,
    reference: xr.DataArray,
    matrix: xr.DataArray | np.ndarray,
    *,
    time: Any = None,
    time_dim: Hashable = "time",
    method: str = "ciede2000",
    dim: Hashable = "channel",
    rgb_space: str = "sRGB",
    reference_space: str | None = None,
    illuminant: str | Sequence[float] | None = None,
    columns: int | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Draw reference | measured | corrected side by side for every patch, with its ΔE.

    Each patch is a cell of three swatches: the reference colour, the measured camera
    colour and the measured colour corrected with ``matrix``; under it, its ΔE (from
    :func:`xccm.report`, the same numbers), above it, its name. For display, the
    reference and the corrected colours are converted to linear sRGB, the measured camera
    colours are shown as if they were linear sRGB, and all are sRGB-encoded and clipped
    to [0, 1] (the subtitle says how many values were clipped).

    Parameters
    ----------
    measured : DataArray
        Linear camera colours ``(..., patch, channel)``, as for :func:`xccm.report`.
    reference : DataArray
        The chart ``(patch, channel)``, e.g. :func:`xccm.chart`.
    matrix : DataArray or ndarray
        The correction, one matrix or one per frame.
    time : label, optional
        For per-frame ``measured`` or ``matrix``: the frame to show, a label of
        ``time_dim`` (selected with ``.sel``). Required when either has more than one frame;
        other batch dims must be selected beforehand.
    time_dim : hashable, default "time"
    method : str, default "ciede2000"
        The ΔE written on the swatches (a distance of :func:`xccm.delta_e`).
    dim, rgb_space, reference_space, illuminant
        As for :func:`xccm.report`.
    columns : int, optional
        Patches per row: 6 for a 24-patch chart, else about 1.5 x as many as rows.
    ax : matplotlib Axes, optional
        Draw here instead of on a new figure.
    title : str, optional
        Default: what the three swatches are, the mean ΔE and the frame.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, xccm, xccm.plot
    >>> ref = xccm.chart()
    >>> measured = ref * [0.7, 0.8, 0.9] + 0.01  # a camera with a colour cast
    >>> m = measured.ccm.fit(ref, model="affine")
    >>> fig = xccm.plot.swatches(measured, ref, m)
    >>> sum(p.get_gid() == "corrected" for p in fig.axes[0].patches)  # one per patch
    24
    """
    in_dim = matrix_in_dim(dim)
    if not isinstance(measured, xr.DataArray) or not isinstance(reference, xr.DataArray):
        raise TypeError(
            "swatches needs measured and reference as DataArrays (patch, channel); got "
            f"{type(measured).__name__} and {type(reference).__name__}"
        )
    samples = [d for d in reference.dims if d != dim]
    if len(samples) != 1:
        raise ValueError(
            f"reference must have one patch dim besides {dim!r}; its dims are {reference.dims}"
        )
    patch = samples[0]
    measured = _select(measured, time, time_dim, (patch, dim), "measured")
    if isinstance(matrix, xr.DataArray):
        selected: xr.DataArray = _select(matrix, time, time_dim, (in_dim, dim), "matrix")
        matrix = selected.drop_vars(
            [c for c in selected.coords if c not in selected.dims and c in measured.coords]
        )
    measured, reference, matrix = (_computed(x) for x in (measured, reference, matrix))
    rep = _report(
        measured,
        reference,
        matrix,
        method,
        dim=dim,
        rgb_space=rgb_space,
        reference_space=reference_space,
        illuminant=illuminant,
    )
    corrected = apply(measured, matrix, dim=dim)
    space = colorimetry.space_of(
        reference, reference_space, rgb_space=rgb_space, argname="reference", dim=dim
    )
    ref_rgb = colorimetry.convert(reference, "rgb", dim=dim, source=space, rgb_space="sRGB")
    cor_rgb = _to_srgb_linear(corrected, rgb_space, dim)
    if patch in reference.coords:  # in the chart's order (report pairs them by label)
        rep = rep.sel({patch: reference[patch].values})
    order = rep["delta_e"][patch].values
    shown = [
        x.sel({patch: order}).transpose(patch, dim).values
        for x in (ref_rgb, measured.squeeze(drop=True), cor_rgb.squeeze(drop=True))
    ]
    colours, clipped = zip(*(_display(v) for v in shown), strict=True)
    de = rep["delta_e"].values.reshape(-1)
    n = len(order)
    ncols = columns or (6 if n == 24 else max(1, round(np.sqrt(1.5 * n))))
    nrows = -(-n // ncols)
    step_x, step_y = 3.4, 1.9  # a cell and the gaps around it, in swatch widths
    width = 1.75 * ncols + 0.4
    fig, ax = _new_axes(ax, (width, width * (nrows * step_y + 0.2) / (ncols * step_x) + 0.8))
    label = _de_label(rep.attrs.get("method", method))
    small = 8 if ncols <= 8 else 6
    for i in range(n):
        r, c = divmod(i, ncols)
        x0, y0 = c * step_x, -r * step_y
        for k in range(3):
            ax.add_patch(
                Rectangle(
                    (x0 + k, y0),
                    1,
                    1,
                    facecolor=colours[k][i],
                    edgecolor="none",
                    gid=("reference", "measured", "corrected")[k],
                )
            )
        ax.add_patch(
            Rectangle((x0, y0), 3, 1, fill=False, edgecolor="0.3", linewidth=0.5, gid="outline")
        )
        name = str(order[i])
        ax.text(
            x0 + 1.5,
            y0 + 1.08,
            name if len(name) <= 22 else name[:21] + "…",
            ha="center",
            va="bottom",
            fontsize=small,
            color="0.25",
        )
        ax.text(
            x0 + 1.5,
            y0 - 0.08,
            f"{label} {de[i]:.2f}",
            ha="center",
            va="top",
            fontsize=small + 1,
        )
    ax.set_xlim(-0.2, ncols * step_x - 0.2)
    ax.set_ylim(-(nrows - 1) * step_y - 0.55, 1.4)
    ax.set_aspect("equal")
    ax.set_axis_off()
    frame = f", {time_dim} {_when(time)}" if time is not None else ""
    mean = float(rep["mean"])
    ax.set_title(
        title or f"reference | measured | corrected — mean {label} {mean:.2f}{frame}",
        fontsize=11,
    )
    note = ", ".join(
        f"{what} {_clip_note(k, v.size)}"
        for what, k, v in zip(("reference", "measured", "corrected"), clipped, shown, strict=True)
    )
    ax.text(
        0.5,
        -0.01,
        f"sRGB-encoded for display (measured shown as if linear sRGB); {note}",
        transform=ax.transAxes,
        ha="center",
        va="top",
        fontsize=7,
        color="0.35",
    )
    return fig


# ---------------------------------------------------------------------------------------------
# ΔE bars


def _per_patch(
    rep: xr.Dataset | xr.DataArray, time: Any, time_dim: Hashable, argname: str
) -> tuple[xr.DataArray, xr.DataArray | None, Hashable]:
    """Per-patch ΔE of a report (or a ΔE DataArray): ``(values, spread or None, patch dim)``.

    With batch dims left after selecting ``time``, the values are the mean over them and
    the spread the 10th and 90th percentiles (dim ``"q"``).
    """
    if isinstance(rep, xr.Dataset):
        if "delta_e" not in rep:
            raise ValueError(
                f"{argname} must be a report of xccm.report (with a 'delta_e' variable) or a "
                f"ΔE DataArray; got a Dataset with {list(rep.data_vars)}"
            )
        de = rep["delta_e"]
        batch = list(rep["mean"].dims) if "mean" in rep else []
    elif isinstance(rep, xr.DataArray):
        de, batch = rep, [time_dim] if time_dim in rep.dims else []
    else:
        raise TypeError(
            f"{argname} must be a report Dataset or a ΔE DataArray; got {type(rep).__name__}"
        )
    samples = [d for d in de.dims if d not in batch]
    if len(samples) != 1:
        raise ValueError(
            f"{argname}'s ΔE must have one patch dim besides the batch dims {batch}; its dims "
            f"are {de.dims}"
        )
    if time is not None and time_dim in de.dims:
        de = _select(de, time, time_dim, samples, argname)
    de = de.compute()
    rest = [d for d in de.dims if d not in samples]
    if not rest:
        return de, None, samples[0]
    with np.errstate(all="ignore"):
        spread = de.quantile([0.1, 0.9], dim=rest, skipna=True).rename(quantile="q")
    return de.mean(rest, skipna=True), spread, samples[0]


def delta_e_bars(
    report: xr.Dataset | xr.DataArray,
    held_out: xr.Dataset | xr.DataArray | None = None,
    *,
    time: Any = None,
    time_dim: Hashable = "time",
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Draw ΔE per patch as bars: in-sample, and held-out where given, with their means.

    Parameters
    ----------
    report : Dataset or DataArray
        A report of :func:`xccm.report` (its ``delta_e`` per patch; its ``mean`` is the
        dashed line), or a ΔE DataArray over the patches.
    held_out : Dataset or DataArray, optional
        ΔE of the same matrix on patches it was not fitted on (a report, or a DataArray
        over a patch dim of the same name): a second bar beside each patch that has one
        (patches only here are appended), and its mean line.
    time : label, optional
        For a per-frame report: the frame to show (``.sel`` on ``time_dim``). Without it,
        each bar is the mean over the frames, with a whisker from the 10th to the 90th
        percentile.
    time_dim : hashable, default "time"
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import xccm, xccm.plot
    >>> ref = xccm.chart()
    >>> measured = ref * [0.7, 0.8, 0.9] + 0.01
    >>> rep = xccm.report(measured, ref, measured.ccm.fit(ref))
    >>> fig = xccm.plot.delta_e_bars(rep)
    >>> len(fig.axes[0].containers[0])  # one bar per patch
    24
    """
    de, spread, patch = _per_patch(report, time, time_dim, "report")
    method = report.attrs.get("method") if isinstance(report, xr.Dataset) else None
    sets = [("in-sample", de, spread, "tab:blue")]
    if held_out is not None:
        h_de, h_spread, h_patch = _per_patch(held_out, time, time_dim, "held_out")
        if h_patch != patch:
            raise ValueError(
                f"held_out's patch dim is {h_patch!r} but report's is {patch!r}; rename one"
            )
        sets.append(("held-out", h_de, h_spread, "tab:orange"))
        method = method or (
            held_out.attrs.get("method") if isinstance(held_out, xr.Dataset) else None
        )
    labels = pd.Index(de[patch].values)
    for _, values, _, _ in sets[1:]:
        labels = labels.append(pd.Index(values[patch].values).difference(labels, sort=False))
    n = len(labels)
    fig, ax = _new_axes(ax, (max(6.0, 0.38 * n + 1.5), 4.2))
    width = 0.8 / len(sets)
    x = np.arange(n)
    unit = _de_label(method) if method else "ΔE"
    for k, (name, values, q, colour) in enumerate(sets):
        full = values.reindex({patch: labels})
        heights = full.values.astype(float)
        yerr = None
        if q is not None:
            lo_hi = q.reindex({patch: labels}).transpose("q", patch).values
            yerr = np.abs(lo_hi - heights)
        offset = (k - (len(sets) - 1) / 2) * width
        ax.bar(
            x + offset,
            np.nan_to_num(heights),
            width,
            color=colour,
            label=name,
            yerr=yerr,
            error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.2"},
        )
        if name == "in-sample" and isinstance(report, xr.Dataset) and "mean" in report:
            mean_da = report["mean"]
            if time is not None and time_dim in mean_da.dims:
                mean_da = mean_da.sel({time_dim: time})
            mean = float(mean_da.mean(skipna=True))
        else:
            mean = float(np.nanmean(heights))
        ax.axhline(
            mean, color=colour, linestyle="--", linewidth=1.2, label=f"{name} mean {mean:.2f}"
        )
    ax.set_xticks(x, [str(v) for v in labels], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel(unit)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    frames = "" if spread is None else " (mean over frames, whiskers 10th-90th percentile)"
    if time is None and time_dim in de.coords and de[time_dim].ndim == 0:
        time = de[time_dim].values  # a report of one frame, selected beforehand
    at = f", {time_dim} {_when(time)}" if time is not None else ""
    ax.set_title(title or f"{unit} per patch{at}{frames}", fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------------
# timeline


def _frame_edges(t: np.ndarray) -> np.ndarray:
    """Edges between consecutive frames (midpoints), extended by half a step at the ends."""
    if t.size == 1:
        return np.array([t[0], t[0]])
    mid = t[:-1] + (t[1:] - t[:-1]) / 2
    return np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of every run of True in a 1-d boolean array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    change = np.flatnonzero(np.diff(padded))
    return list(zip(change[::2].tolist(), change[1::2].tolist(), strict=True))


def _shade(
    ax: Axes,
    edges: np.ndarray,
    mask: np.ndarray,
    colour: str,
    gid: str,
    label: str | None,
    mark: bool = False,
):
    """Shade every run of ``mask``; with ``mark``, put a marker above each narrow one.

    Narrow: under 1/200 of the time axis, too narrow to see, such as one flagged frame
    among thousands.
    """
    narrow = (edges[-1] - edges[0]) / 200
    for j, (start, stop) in enumerate(_runs(mask)):
        ax.axvspan(
            edges[start],
            edges[stop],
            color=colour,
            alpha=0.3,
            linewidth=0,
            gid=gid,
            label=label if j == 0 else None,
        )
        if mark and edges[stop] - edges[start] < narrow:
            ax.plot(
                [edges[start] + (edges[stop] - edges[start]) / 2],
                [1.0],
                marker="v",
                markersize=6,
                color=colour,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                gid=f"{gid}_marker",
            )


def _time_dim(batch: list[Hashable], time_dim: Hashable | None, argname: str) -> Hashable:
    if time_dim is not None:
        if time_dim not in batch:
            raise ValueError(
                f"time_dim={time_dim!r} is not a batch dim of {argname}; its batch dims are {batch}"
            )
        if len(batch) > 1:
            raise ValueError(
                f"{argname} has the batch dims {batch}; a timeline has one: select the others "
                "first, e.g. .isel(...)"
            )
        return time_dim
    if len(batch) != 1:
        raise ValueError(
            f"a timeline needs {argname} with one batch dim (e.g. time); it has {batch}"
        )
    return batch[0]


def _flags_over(flags, x: xr.DataArray, t_dim: Hashable) -> np.ndarray:
    """Return ``flags`` as a boolean array over the frames of ``x`` (by label if labelled)."""
    if isinstance(flags, xr.DataArray):
        if flags.dims != (t_dim,):
            raise ValueError(f"flags must have the one dim {t_dim!r}; its dims are {flags.dims}")
        if t_dim in flags.coords and t_dim in x.coords:
            missing = pd.Index(x[t_dim].values).difference(pd.Index(flags[t_dim].values))
            if len(missing):
                raise ValueError(
                    f"flags has no value for {len(missing)} frames of {t_dim!r}, e.g. "
                    f"{missing[0]!r}; give one per frame (True = flagged)"
                )
            flags = flags.sel({t_dim: x[t_dim].values})
        values = np.asarray(flags.values)
    else:
        values = np.asarray(flags)
    if values.dtype != np.bool_:
        raise TypeError(f"flags must be boolean (True = flagged frame); got dtype {values.dtype}")
    if values.shape != (x.sizes[t_dim],):
        raise ValueError(
            f"flags must have one value per frame of {t_dim!r}, shape ({x.sizes[t_dim]},); "
            f"got shape {values.shape}"
        )
    return values


def timeline(
    matrix_or_report: xr.DataArray | xr.Dataset,
    flags: xr.DataArray | np.ndarray | None = None,
    *,
    report: xr.Dataset | None = None,
    time_dim: Hashable | None = None,
    dim: Hashable = "channel",
    coefficients: bool = True,
    axes: Sequence[Axes] | None = None,
    title: str | None = None,
) -> Figure:
    """Draw per-frame ΔE, loss and matrix coefficients over time, bad frames shaded.

    Panels, top to bottom, each over the one batch dim (e.g. ``time``): the ΔE statistics
    of a report (mean, p90, max), the fit's ``loss`` and ``start_loss`` (a matrix's
    diagnostics coords from a fit with ``loss=``; frames that did not converge marked with
    a red x), and the matrix coefficients (colour: output channel, line style: input row;
    the offset row of an affine matrix dotted). Frames in ``flags`` are shaded orange;
    rejected frames (a NaN matrix, or NaN ΔE everywhere) grey, in every panel.

    Parameters
    ----------
    matrix_or_report : DataArray or Dataset
        Per-frame matrices ``(time, channel_in, channel)`` (from :func:`xccm.fit`) or a
        per-frame report of :func:`xccm.report`.
    flags : DataArray or ndarray of bool, optional
        True for frames to shade, e.g. frames a drift or outlier test flagged: over
        ``time_dim`` (paired by label) or one value per frame (by position).
    report : Dataset, optional
        With a matrix: its report too, for the ΔE panel.
    time_dim : hashable, optional
        The batch dim to draw along; default the one batch dim.
    dim : hashable, default "channel"
    coefficients : bool, default True
        Draw the matrix coefficients panel.
    axes : sequence of matplotlib Axes, optional
        One per panel (``len(fig.axes)`` of the default figure), to draw on instead.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, xarray as xr, xccm, xccm.plot
    >>> ref = xccm.chart()
    >>> gain = xr.DataArray(np.linspace(0.8, 1.2, 5), dims="time")
    >>> measured = ref * gain
    >>> m = measured.ccm.fit(ref)
    >>> flags = xr.DataArray([False, True, True, False, False], dims="time")
    >>> fig = xccm.plot.timeline(m, flags, report=xccm.report(measured, ref, m))
    >>> len(fig.axes)  # ΔE and coefficients (no loss: a least-squares fit)
    2
    """
    in_dim = matrix_in_dim(dim)
    matrix = None
    if isinstance(matrix_or_report, xr.Dataset):
        if report is not None:
            raise ValueError("give a report either as matrix_or_report or as report=, not both")
        report = matrix_or_report
    elif isinstance(matrix_or_report, xr.DataArray):
        matrix = matrix_or_report
    else:
        raise TypeError(
            "matrix_or_report must be per-frame matrices (DataArray) or a report (Dataset); "
            f"got {type(matrix_or_report).__name__}"
        )
    if report is not None and "mean" not in report:
        raise ValueError(
            f"report must be a report of xccm.report; got variables {list(report.data_vars)}"
        )
    base: xr.DataArray
    if matrix is not None:
        if in_dim not in matrix.dims or dim not in matrix.dims:
            raise ValueError(
                f"matrix must have the dims {in_dim!r} and {dim!r}; its dims are {matrix.dims}"
            )
        batch = [d for d in matrix.dims if d not in (in_dim, dim)]
        t_dim = _time_dim(batch, time_dim, "matrix")
        matrix = matrix.transpose(t_dim, in_dim, dim).compute()
        base = matrix
    else:
        assert report is not None
        t_dim = _time_dim(list(report["mean"].dims), time_dim, "report")
        base = report["mean"]
    if report is not None:
        report = report[["mean", "p90", "max"]].compute()
        if matrix is not None:
            report = report.sel({t_dim: matrix[t_dim].values}) if t_dim in matrix.coords else report
            if report.sizes.get(t_dim) != matrix.sizes[t_dim]:
                raise ValueError(
                    f"report has {report.sizes.get(t_dim)} frames of {t_dim!r}, matrix "
                    f"{matrix.sizes[t_dim]}; give them for the same frames"
                )
    t = base[t_dim].values if t_dim in base.coords else np.arange(base.sizes[t_dim])
    has_loss = matrix is not None and "loss" in matrix.coords
    panels = (["delta_e"] if report is not None else []) + (["loss"] if has_loss else [])
    if matrix is not None and coefficients:
        panels.append("coefficients")
    if not panels:
        raise ValueError(
            "nothing to draw: the matrix has no loss coord (a fit with loss=) and "
            "coefficients=False; pass report= or coefficients=True"
        )
    if axes is None:
        heights = [2.0 if p != "coefficients" else 2.8 for p in panels]
        fig, grid = plt.subplots(
            len(panels),
            1,
            sharex=True,
            figsize=(10, sum(heights) + 0.9),
            height_ratios=heights,
            layout="constrained",
            squeeze=False,
        )
        axs = list(grid[:, 0])
    else:
        axs = list(axes)
        if len(axs) != len(panels):
            raise ValueError(f"axes must hold {len(panels)} Axes ({panels}); got {len(axs)}")
        fig = axs[0].figure
    rejected = np.zeros(len(t), dtype=bool)
    if matrix is not None:
        rejected |= np.isnan(matrix.values).any(axis=(1, 2))
    if report is not None:
        rejected |= np.isnan(report["mean"].values)
    flagged = np.zeros(len(t), dtype=bool) if flags is None else _flags_over(flags, base, t_dim)
    edges = _frame_edges(t)
    marker = "." if len(t) <= 200 else None
    for k, (ax, panel) in enumerate(zip(axs, panels, strict=True)):
        if panel == "delta_e":
            assert report is not None
            unit = _de_label(report.attrs.get("method")) if report.attrs.get("method") else "ΔE"
            for var, style in (("mean", "-"), ("p90", "--"), ("max", ":")):
                ax.plot(
                    t,
                    report[var].values,
                    style,
                    marker=marker,
                    markersize=3,
                    label=var,
                    color="tab:blue" if var == "mean" else "0.3",
                )
            ax.set_ylabel(unit)
        elif panel == "loss":
            assert matrix is not None
            ax.plot(
                t,
                matrix["loss"].values,
                "-",
                marker=marker,
                markersize=3,
                color="tab:purple",
                label="loss",
            )
            if "start_loss" in matrix.coords:
                ax.plot(t, matrix["start_loss"].values, "--", color="0.5", label="start loss")
            if "converged" in matrix.coords:
                bad = ~np.asarray(matrix["converged"].values, dtype=bool) & ~rejected
                if bad.any():
                    ax.plot(
                        t[bad],
                        matrix["loss"].values[bad],
                        "x",
                        color="tab:red",
                        markersize=6,
                        label="not converged",
                        gid="not_converged",
                    )
            ax.set_ylabel(f"loss ({matrix.attrs.get('loss', 'fit')})")
        else:
            assert matrix is not None
            _coefficients(ax, t, matrix, in_dim, dim)
        top = k == 0  # the legend and the markers of narrow runs once, in the top panel
        _shade(ax, edges, flagged, _FLAG_COLOUR, "flagged", "flagged" if top else None, top)
        _shade(
            ax,
            edges,
            rejected,
            _REJECTED_COLOUR,
            "rejected",
            "rejected (NaN)" if top else None,
            top,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    axs[-1].set_xlabel(str(t_dim))
    axs[-1].set_xlim(edges[0], edges[-1])
    summary = f"{int(flagged.sum())} flagged, {int(rejected.sum())} rejected of {len(t)} frames"
    axs[0].set_title(title or f"per-frame correction over {t_dim}: {summary}", fontsize=11, pad=12)
    return fig


def _coefficients(ax: Axes, t: np.ndarray, matrix: xr.DataArray, in_dim, dim) -> None:
    rows = [str(v) for v in matrix[in_dim].values] if in_dim in matrix.coords else None
    cols = [str(v) for v in matrix[dim].values] if dim in matrix.coords else None
    n_in, n_out = matrix.sizes[in_dim], matrix.sizes[dim]
    rgb = {"R": "tab:red", "G": "tab:green", "B": "tab:blue"}
    palette = cast(Any, plt.get_cmap("tab10")).colors  # a ListedColormap
    styles = ["-", "--", "-.", (0, (5, 1, 1, 1, 1, 1))]
    values = matrix.values
    for i in range(n_in):
        row = rows[i] if rows else str(i)
        style = ":" if row == "offset" else styles[i % len(styles)]
        for j in range(n_out):
            col = cols[j] if cols else str(j)
            colour = rgb.get(col, palette[j % len(palette)]) if n_out == 3 else palette[j % 10]
            ax.plot(
                t,
                values[:, i, j],
                linestyle=style,
                color=colour,
                linewidth=1.2,
                label=f"{row}→{col}",
            )
    ax.set_ylabel("coefficient")


# ---------------------------------------------------------------------------------------------
# before / after


def _one_image(x, time, time_dim, dim, argname) -> tuple[xr.DataArray, Hashable, Hashable]:
    """One frame ``(y, x, channel)`` of ``x``, computed, integers scaled to [0, 1]."""
    if isinstance(x, np.ndarray):
        if x.ndim != 3:
            raise ValueError(
                f"{argname} as a plain array must be one image (height, width, channels); got "
                f"shape {x.shape}"
            )
        x = xr.DataArray(x, dims=("y", "x", dim))
    if not isinstance(x, xr.DataArray):
        raise TypeError(f"{argname} must be a DataArray or an ndarray; got {type(x).__name__}")
    if dim not in x.dims:
        raise ValueError(f"{argname} has no dim {dim!r}; its dims are {x.dims}")
    frame = x.sel({time_dim: time}) if time is not None and time_dim in x.dims else x
    spatial = [d for d in frame.dims if d != dim and frame.sizes[d] != 1]
    if len(spatial) != 2:
        what = (
            f"pick one frame with time=<a label of {time_dim!r}>"
            if time_dim in spatial
            else "select down to two spatial dims first"
        )
        raise ValueError(
            f"{argname} must be one image (two spatial dims besides {dim!r}); after "
            f"selecting it has the dims {spatial} besides {dim!r}: {what}"
        )
    frame = frame.squeeze([d for d in frame.dims if d not in (*spatial, dim)], drop=True)
    frame = frame.transpose(*spatial, dim).compute()
    if frame.sizes[dim] not in (1, 3, 4):
        raise ValueError(f"{argname} must have 1, 3 or 4 channels; got {frame.sizes[dim]}")
    if np.issubdtype(frame.dtype, np.integer):
        frame = frame / np.iinfo(frame.dtype).max
    return frame, spatial[0], spatial[1]


def before_after(
    image: xr.DataArray | np.ndarray,
    corrected: xr.DataArray | np.ndarray,
    time: Any = None,
    *,
    time_dim: Hashable = "time",
    dim: Hashable = "channel",
    encoding: str | tuple[str | None, str | None] | None = "srgb",
    axes: Sequence[Axes] | None = None,
    titles: tuple[str, str] = ("before", "after"),
) -> Figure:
    """Draw one frame before and after correction, side by side, encoded for display.

    Parameters
    ----------
    image : DataArray or ndarray
        The camera image or stack, e.g. ``(time, y, x, channel)``; a plain array is one
        image ``(height, width, channels)``.
    corrected : DataArray or ndarray
        The corrected image or stack (e.g. ``image.ccm.apply(m)``), or the matrix itself
        (a DataArray with the dim ``f"{dim}_in"``), which is applied to the one frame
        shown.
    time : label, optional
        The frame to show (``.sel`` on ``time_dim``); needed for a stack.
    time_dim : hashable, default "time"
    dim : hashable, default "channel"
    encoding : str, None or (str, str), default "srgb"
        How linear values are encoded for display (a method of :func:`xccm.encode`), for
        both images or as ``(before, after)``; ``None`` for values already encoded (e.g.
        the photo the camera wrote). Integer images are divided by their type's largest
        value first. Values are then clipped to [0, 1]; the titles say how many were.
    axes : two matplotlib Axes, optional
    titles : (str, str), default ("before", "after")

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, xccm, xccm.plot
    >>> image = np.random.default_rng(0).uniform(0, 0.5, (20, 30, 3))
    >>> m = np.diag([1.2, 1.0, 0.8])
    >>> fig = xccm.plot.before_after(image, xccm.apply(image, m))
    >>> [im.get_array().shape for ax in fig.axes for im in ax.images]
    [(20, 30, 3), (20, 30, 3)]
    """
    in_dim = matrix_in_dim(dim)
    frame, ydim, xdim = _one_image(image, time, time_dim, dim, "image")
    before = frame.values
    if isinstance(corrected, xr.DataArray) and in_dim in corrected.dims:
        m = corrected
        if time_dim in m.dims:
            if time is None and m.sizes[time_dim] != 1:
                raise ValueError(
                    f"corrected is a per-frame matrix over {time_dim!r}: pick the frame with "
                    f"time=<a label of {time_dim!r}>"
                )
            m = m.sel({time_dim: time}) if time is not None else m.isel({time_dim: 0})
        m = m.drop_vars([c for c in m.coords if c not in m.dims])  # rows paired by label
        after = apply(frame, m, dim=dim).values
    else:
        after = _one_image(corrected, time, time_dim, dim, "corrected")[0].values
    if after.shape[:2] != before.shape[:2]:
        raise ValueError(
            f"corrected's frame has {after.shape[:2]} pixels, image's {before.shape[:2]}; "
            "give the same frame"
        )
    pair = encoding if isinstance(encoding, tuple) else (encoding, encoding)
    if axes is None:
        h, w = before.shape[:2]
        fig, grid = plt.subplots(
            1, 2, figsize=(10, max(2.5, 5 * h / w + 0.7)), layout="constrained", squeeze=False
        )
        axs = list(grid[0])
    else:
        axs = list(axes)
        if len(axs) != 2:
            raise ValueError(f"axes must be two Axes (before, after); got {len(axs)}")
        fig = axs[0].figure
    for ax, values, enc, name in zip(axs, (before, after), pair, titles, strict=True):
        shown, clipped = _display(values, enc)
        if shown.shape[-1] == 1:
            ax.imshow(shown[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(shown, interpolation="nearest")
        how = (
            "as stored"
            if enc in (None, "identity")
            else "sRGB-encoded"
            if enc == "srgb"
            else f"{enc}-encoded"
        )
        ax.set_title(f"{name}\n({how}; {_clip_note(clipped, shown.size)})", fontsize=10)
        ax.set_xlabel(str(xdim))
        ax.set_ylabel(str(ydim))
        ax.set_xticks([])
        ax.set_yticks([])
    if time is not None:
        fig.suptitle(f"{time_dim} {_when(time)}", fontsize=11)
    return fig
