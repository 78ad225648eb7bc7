"""xccm.plot: the figures show the report's numbers, the right colours and the flagged frames."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("colour")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402

import xccm  # noqa: E402
import xccm.plot  # noqa: E402
from conftest import raise_if_dask_computes  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def srgb_encode(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 encoding, mirrored below 0 (written out, not xccm's)."""
    a = np.abs(x)
    return np.sign(x) * np.where(a <= 0.0031308, 12.92 * a, 1.055 * a ** (1 / 2.4) - 0.055)


@pytest.fixture(scope="module")
def chart_series():
    """A 24-patch chart seen by a camera with crosstalk over 6 frames; a ΔE-fitted matrix each."""
    ref = xccm.chart()  # linear sRGB
    mixing = np.array([[0.80, 0.15, 0.05], [0.20, 0.70, 0.10], [0.05, 0.25, 0.70]])
    gains = np.linspace(0.7, 0.9, 6)
    values = gains[:, None, None] * (ref.values @ mixing) + 0.01
    values = values + np.random.default_rng(7).normal(0, 0.003, values.shape)
    measured = xr.DataArray(
        values,
        dims=("time", "patch", "channel"),
        coords={"time": np.arange(10, 16), "patch": ref.patch.values, "channel": ["R", "G", "B"]},
    )
    m = measured.ccm.fit(ref, model="affine", loss="ciede2000")
    return measured, ref, m


def _bars(ax) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _texts(ax, prefix: str) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_text().startswith(prefix)]


# ---------------------------------------------------------------------------------------------
# swatches


def test_swatches_show_the_reports_delta_e_and_the_colours(chart_series):
    measured, ref, m = chart_series
    frame = 12
    fig = xccm.plot.swatches(measured, ref, m, time=frame)
    (ax,) = fig.axes
    rep = xccm.report(measured.sel(time=frame), ref, m.sel(time=frame))
    assert _texts(ax, "ΔE00 ") == [f"ΔE00 {v:.2f}" for v in rep["delta_e"].values]
    assert [t.get_text() for t in ax.texts if t.get_text() in ref.patch.values] == list(
        ref.patch.values
    )
    assert "12" in ax.get_title() and f"{float(rep['mean']):.2f}" in ax.get_title()
    rects = {k: [p for p in ax.patches if p.get_gid() == k] for k in ("reference", "corrected")}
    rects["measured"] = [p for p in ax.patches if p.get_gid() == "measured"]
    assert all(len(v) == 24 for v in rects.values())
    # Independently: the corrected colour is [S, 1] @ M, sRGB-encoded, clipped.
    s = measured.sel(time=frame).values
    corrected = np.concatenate([s, np.ones((24, 1))], axis=1) @ m.sel(time=frame).values
    for kind, linear in (("reference", ref.values), ("measured", s), ("corrected", corrected)):
        faces = np.array([p.get_facecolor()[:3] for p in rects[kind]])
        np.testing.assert_allclose(faces, np.clip(srgb_encode(linear), 0, 1), atol=1e-9)
    # the neutral patches are shown grey: R = G = B within the fit's small error
    neutral = np.array([p.get_facecolor()[:3] for p in rects["corrected"]])[18:]
    assert np.ptp(neutral, axis=1).max() < 0.03
    assert np.ptp(np.array([p.get_facecolor()[:3] for p in rects["measured"]])[18:], 1).max() > 0.05


def test_swatches_pair_patches_by_label_and_convert_a_lab_reference(chart_series):
    measured, ref, m = chart_series
    frame = measured.isel(time=0)
    lab = xccm.chart(space="lab-d50")
    fig = xccm.plot.swatches(frame.isel(patch=slice(None, None, -1)), lab, m.isel(time=0))
    ax = fig.axes[0]
    rep = xccm.report(frame, lab, m.isel(time=0))
    assert _texts(ax, "ΔE00 ") == [f"ΔE00 {v:.2f}" for v in rep["delta_e"].values]  # chart order
    faces = np.array([p.get_facecolor()[:3] for p in ax.patches if p.get_gid() == "reference"])
    np.testing.assert_allclose(faces, np.clip(srgb_encode(ref.values), 0, 1), atol=1e-6)


def test_swatches_need_a_frame_of_a_series(chart_series):
    measured, ref, m = chart_series
    with pytest.raises(ValueError, match=r"batch dims \['time'\].*time="):
        xccm.plot.swatches(measured, ref, m)
    with pytest.raises(ValueError, match="time=99 is not a label of measured's dim 'time'"):
        xccm.plot.swatches(measured, ref, m, time=99)
    with pytest.raises(TypeError, match="DataArrays"):
        xccm.plot.swatches(measured.values, ref, m)


def test_swatches_say_how_many_values_were_clipped(chart_series):
    measured, ref, m = chart_series
    fig = xccm.plot.swatches(measured * 3, ref, m, time=10)  # overexposed
    ax = fig.axes[0]
    s = 3 * measured.sel(time=10).values
    n_measured = int((srgb_encode(s) > 1).sum())
    assert n_measured > 0
    (note,) = [t.get_text() for t in ax.texts if "clipped" in t.get_text()]
    assert f"measured {n_measured} of 72 values clipped" in note


def test_swatches_on_an_axes_and_a_plain_matrix(chart_series):
    measured, ref, _ = chart_series
    fig, (a, b) = plt.subplots(1, 2)
    out = xccm.plot.swatches(measured.isel(time=0), ref, np.eye(3), ax=b)
    assert out is fig and len(a.patches) == 0 and len(b.patches) == 4 * 24


# ---------------------------------------------------------------------------------------------
# ΔE bars


def test_delta_e_bars_heights_and_mean_line(chart_series):
    measured, ref, m = chart_series
    rep = xccm.report(measured.isel(time=2), ref, m.isel(time=2))
    fig = xccm.plot.delta_e_bars(rep)
    (ax,) = fig.axes
    (bars,) = _bars(ax)
    np.testing.assert_allclose([b.get_height() for b in bars], rep["delta_e"].values)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(ref.patch.values)
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), float(rep["mean"]))
    assert "12" in ax.get_title()  # the frame of the report


def test_delta_e_bars_held_out_beside_in_sample(chart_series):
    measured, ref, m = chart_series
    rep = xccm.report(measured.isel(time=0), ref, m.isel(time=0))
    # held out: 6 of the chart's patches and one the report does not have
    held = rep["delta_e"].isel(patch=slice(0, 6)) * 2
    extra = xr.DataArray([5.0], dims="patch", coords={"patch": ["extra"]})
    held = xr.concat([held, extra], dim="patch")
    fig = xccm.plot.delta_e_bars(rep, held)
    ax = fig.axes[0]
    ins, out = _bars(ax)
    assert len(ins) == len(out) == 25
    heights = np.array([b.get_height() for b in out])
    np.testing.assert_allclose(heights[:6], held.values[:6])
    assert heights[-1] == 5.0 and np.all(heights[6:24] == 0)  # no held-out bar there
    assert [b.get_height() for b in ins][-1] == 0
    assert ax.get_xticklabels()[-1].get_text() == "extra"
    means = sorted(float(np.asarray(line.get_ydata())[0]) for line in ax.get_lines())
    np.testing.assert_allclose(means, sorted([float(rep["mean"]), float(held.mean())]))


def test_delta_e_bars_over_frames_mean_and_percentiles(chart_series):
    measured, ref, m = chart_series
    rep = xccm.report(measured, ref, m)
    ax = xccm.plot.delta_e_bars(rep).axes[0]
    (bars,) = _bars(ax)
    np.testing.assert_allclose([b.get_height() for b in bars], rep["delta_e"].mean("time").values)
    (whiskers,) = ax.collections  # the error bars: from the 10th to the 90th percentile
    segments = whiskers.get_segments()
    lo_hi = np.percentile(rep["delta_e"].values, [10, 90], axis=0)
    np.testing.assert_allclose([s[:, 1] for s in segments], lo_hi.T)
    # one frame instead
    ax = xccm.plot.delta_e_bars(rep, time=13).axes[0]
    np.testing.assert_allclose(
        [b.get_height() for b in _bars(ax)[0]], rep["delta_e"].sel(time=13).values
    )


def test_delta_e_bars_bad_input():
    with pytest.raises(ValueError, match="'delta_e' variable"):
        xccm.plot.delta_e_bars(xr.Dataset({"x": ("patch", [1.0])}))
    with pytest.raises(TypeError, match="report Dataset or a ΔE DataArray"):
        xccm.plot.delta_e_bars(np.ones(3))


# ---------------------------------------------------------------------------------------------
# timeline


def _spans(ax, gid: str) -> list[tuple[float, float]]:
    out = []
    for p in ax.patches:
        if p.get_gid() == gid:
            x = p.get_x()
            out.append((x, x + p.get_width()))
    return out


def test_timeline_panels_lines_and_shaded_frames(chart_series):
    measured, ref, m = chart_series
    m = m.copy()
    m[3] = np.nan  # a rejected frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rep = xccm.report(measured, ref, m)
    flags = xr.DataArray([False, True, True, False, False, True], dims="time")
    fig = xccm.plot.timeline(m, flags, report=rep)
    assert len(fig.axes) == 3  # ΔE, loss, coefficients
    de_ax, loss_ax, coef_ax = fig.axes
    t = m.time.values.astype(float)
    for ax in fig.axes:
        flagged, rejected = _spans(ax, "flagged"), _spans(ax, "rejected")
        assert len(flagged) == 2 and len(rejected) == 1  # runs: frames 1-2 and 5; frame 3
        inside = [any(a < x < b for a, b in flagged) for x in t]
        assert inside == flags.values.tolist()
        assert [any(a < x < b for a, b in rejected) for x in t] == [i == 3 for i in range(6)]
    mean = next(line for line in de_ax.get_lines() if line.get_label() == "mean")
    np.testing.assert_allclose(mean.get_ydata(), rep["mean"].values)
    loss = next(line for line in loss_ax.get_lines() if line.get_label() == "loss")
    np.testing.assert_allclose(loss.get_ydata(), m.loss.values)
    lines = {line.get_label(): line for line in coef_ax.get_lines()}
    assert len(lines) == 12 and "offset→B" in lines
    np.testing.assert_allclose(lines["G→R"].get_ydata(), m.sel(channel_in="G", channel="R"))
    assert "3 flagged, 1 rejected of 6 frames" in de_ax.get_title()


def test_timeline_flags_by_label_and_not_converged_marks(chart_series):
    measured, ref, _ = chart_series
    m = measured.ccm.fit(ref, model="affine", loss="ciede2000", max_iter=1)
    assert not m.converged.values.all()
    flags = xr.DataArray(
        [True, False, False, False, False, False],
        dims="time",
        coords={"time": m.time.values[::-1]},  # labelled, in another order: frame 15 flagged
    )
    fig = xccm.plot.timeline(m, flags)
    assert len(fig.axes) == 2  # loss and coefficients
    ((a, b),) = _spans(fig.axes[0], "flagged")
    assert a < 15 < b and not a < 14 < b
    (marks,) = [line for line in fig.axes[0].get_lines() if line.get_gid() == "not_converged"]
    np.testing.assert_array_equal(marks.get_xdata(), m.time.values[~m.converged.values])


def test_timeline_of_a_report_over_datetimes():
    n = 50
    time = np.datetime64("2026-01-01") + np.arange(n) * np.timedelta64(1, "h")
    rng = np.random.default_rng(0)
    de = xr.DataArray(rng.uniform(0, 2, (n, 24)), dims=("time", "patch"), coords={"time": time})
    rep = xr.Dataset(
        {"delta_e": de, "mean": de.mean("patch"), "p90": de.max("patch"), "max": de.max("patch")}
    )
    flags = np.zeros(n, dtype=bool)
    flags[[10, 11, 12, 40]] = True
    fig = xccm.plot.timeline(rep, flags)
    (ax,) = fig.axes
    spans = _spans(ax, "flagged")
    assert len(spans) == 2
    x = matplotlib.dates.date2num(time)
    assert [any(a < v < b for a, b in spans) for v in x] == flags.tolist()


def test_timeline_bad_input(chart_series):
    measured, ref, m = chart_series
    with pytest.raises(TypeError, match="flags must be boolean"):
        xccm.plot.timeline(m, np.arange(6))
    with pytest.raises(ValueError, match=r"one value per frame of 'time', shape \(6,\)"):
        xccm.plot.timeline(m, np.zeros(5, dtype=bool))
    short = xr.DataArray([True] * 3, dims="time", coords={"time": m.time.values[:3]})
    with pytest.raises(ValueError, match="flags has no value for 3 frames"):
        xccm.plot.timeline(m, short)
    with pytest.raises(ValueError, match="one batch dim"):
        xccm.plot.timeline(m.isel(time=0))
    with pytest.raises(ValueError, match="nothing to draw"):
        xccm.plot.timeline(measured.ccm.fit(ref), coefficients=False)


# ---------------------------------------------------------------------------------------------
# before / after


@pytest.fixture
def stack(rng):
    values = rng.uniform(-0.05, 1.1, (3, 8, 10, 3)).astype(np.float32)
    return xr.DataArray(
        values,
        dims=("time", "y", "x", "channel"),
        coords={"time": [1, 2, 3], "channel": ["R", "G", "B"]},
    )


def test_before_after_shows_one_frame_encoded_and_clipped(stack):
    m = xr.DataArray(
        np.stack([np.diag([1.0, 0.9, 0.8]) * g for g in (1, 1.5, 2)]),
        dims=("time", "channel_in", "channel"),
        coords={"time": [1, 2, 3]},
    )
    corrected = stack.ccm.apply(m)
    for after in (corrected, m):  # the corrected stack, or the matrix applied to the frame
        fig = xccm.plot.before_after(stack, after, time=2)
        left, right = fig.axes
        frame = stack.sel(time=2).values.astype(float)
        for ax, linear in ((left, frame), (right, frame @ m.sel(time=2).values)):
            (image,) = ax.images
            np.testing.assert_allclose(
                image.get_array(), np.clip(srgb_encode(linear), 0, 1), atol=1e-6
            )
        n_clipped = int(((srgb_encode(frame) > 1) | (srgb_encode(frame) < 0)).sum())
        assert f"{n_clipped} of 240 values clipped" in left.get_title()
    assert "time 2" in fig.texts[0].get_text() if fig.texts else fig._suptitle.get_text()


def test_before_after_encodings_integers_and_plain_arrays(rng):
    photo = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    lin = xccm.linearize(photo, "srgb", scale=1 / 255)
    fig = xccm.plot.before_after(photo, lin, encoding=(None, "srgb"))
    left, right = fig.axes
    np.testing.assert_allclose(left.images[0].get_array(), photo / 255)
    np.testing.assert_allclose(right.images[0].get_array(), photo / 255, atol=1e-6)
    assert "as stored" in left.get_title() and "sRGB-encoded" in right.get_title()


def test_before_after_computes_only_what_it_shows(stack):
    lazy = stack.chunk({"time": 1})
    corrected = lazy.ccm.apply(np.diag([1.1, 1.0, 0.9]))
    with raise_if_dask_computes(max_computes=2):  # one frame of each
        xccm.plot.before_after(lazy, corrected, time=3)
    assert lazy.chunks is not None and corrected.chunks is not None


def test_before_after_needs_a_frame(stack):
    with pytest.raises(ValueError, match="pick one frame with time="):
        xccm.plot.before_after(stack, stack)
    m = xr.DataArray(np.stack([np.eye(3)] * 3), dims=("time", "channel_in", "channel"))
    with pytest.raises(ValueError, match="per-frame matrix"):
        xccm.plot.before_after(stack.isel(time=0), m)
    with pytest.raises(ValueError, match="same frame"):
        xccm.plot.before_after(stack.isel(time=0), stack.isel(time=0, x=slice(0, 4)))


# ---------------------------------------------------------------------------------------------
# the optional dependency


def test_import_without_matplotlib_says_what_to_install(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "xccm.plot")
    with pytest.raises(ImportError, match=r'pip install "xccm\[plot\]"'):
        importlib.import_module("xccm.plot")


def test_import_xccm_does_not_import_matplotlib():
    code = "import sys, xccm; print('matplotlib' in sys.modules, 'xccm.plot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_timeline_marks_flagged_frames_too_narrow_to_see():
    n = 400
    m = xr.DataArray(
        np.tile(np.eye(3), (n, 1, 1)) + np.random.default_rng(0).normal(0, 0.01, (n, 3, 3)),
        dims=("time", "channel_in", "channel"),
        coords={"time": np.arange(n)},
    )
    flags = xr.DataArray(np.isin(np.arange(n), [50, 300]), dims="time")
    m[120] = np.nan  # a rejected frame
    fig = xccm.plot.timeline(m, flags)
    top, *rest = fig.axes

    def markers(ax, gid):
        return [line for line in ax.get_lines() if line.get_gid() == gid]

    xs = sorted(float(line.get_xdata()[0]) for line in markers(top, "flagged_marker"))
    np.testing.assert_allclose(xs, [50, 300], atol=0.51)
    assert len(markers(top, "rejected_marker")) == 1
    assert all(not markers(ax, "flagged_marker") for ax in rest)
    wide = xccm.plot.timeline(m, xr.DataArray(np.arange(n) < 100, dims="time"))
    assert not markers(wide.axes[0], "flagged_marker")  # a run a quarter of the axis wide
