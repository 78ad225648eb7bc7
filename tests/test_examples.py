"""The examples run and show what they claim."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

import xccm.io

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_quickstart_corrects_every_frame(capsys):
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 10
    for row in rows:
        before, single, per_frame = map(float, row[-3:])
        assert before > 0.03  # the camera's crosstalk, black level and drift
        assert per_frame < 0.001  # per-frame affine fit: down to the noise
        assert per_frame < single < before  # one matrix for all frames cannot follow the drift
    assert "max |inverse(apply(stack)) - stack| = " in lines[-1]
    assert float(lines[-1].split("= ")[1].split()[0]) < 1e-5


def test_timeseries_zarr_corrects_out_of_core(tmp_path, capsys):
    pytest.importorskip("zarr", minversion="3")
    module = runpy.run_path(str(EXAMPLES / "timeseries_zarr.py"))
    # 31 frames: frames 10, 20 and 30 are occluded, the last one too (filled from its neighbour)
    module["main"](["--frames", "31", "--height", "140", "--width", "210", "--dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert any("complete=True" in line for line in lines)
    assert any("3 of 31 batch elements" in line for line in lines)  # the occluded frames
    rows = [line.split() for line in lines if " 2026-06-" in line]
    assert len(rows) == 31 and "occluded" in " ".join(rows[-1])
    for i, row in enumerate(rows):
        before, after = float(row[5]), float(row[6])
        assert before > 0.04  # crosstalk, black level and drifting exposure
        filled = "occluded" in " ".join(row)
        # Interpolated matrices follow the drifting exposure; the last frame's is carried over.
        assert after < (0.002 if not filled else 0.02 if i < len(rows) - 1 else 0.05)
        assert after < before
    assert xccm.io.is_complete(tmp_path / "corrected.zarr")
    stored = xccm.io.open_zarr(tmp_path / "corrected.zarr")
    assert stored["ccm_matrix"].sizes["time"] == 31 and stored.attrs["model"] == "affine"


def test_chart_fit_delta_e_beats_least_squares(capsys):
    pytest.importorskip("colour")
    runpy.run_path(str(EXAMPLES / "chart_fit.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("patches used: 23 of 24 (saturated: white 9.5")
    stats = {line[:14].strip(): list(map(float, line[14:].split())) for line in lines[2:4]}
    ls, de = stats["least squares"], stats["CIEDE2000"]
    assert de[-1] < ls[-1]  # the loss it minimises
    assert de[0] < ls[0] and de[1] < ls[1]  # mean and median ΔE00 too
    assert "converged=True" in lines[4]


def test_guide_chart_fitting_snippet_runs(capsys):
    pytest.importorskip("colour")
    page = (Path(__file__).parents[1] / "docs" / "guide" / "chart_fit.md").read_text()
    code = page[page.index("```python") + len("```python") : page.index("```\n", 10)]
    namespace: dict = {}
    exec(compile(code, "docs/guide/chart_fit.md", "exec"), namespace)
    m = namespace["m"]
    assert float(m.loss) < float(m.start_loss) and bool(m.converged)
    assert namespace["de"].dims == ("patch",)
    assert "p90" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::xccm.InsufficientSamplesWarning")  # the hidden chart
def test_plots_example_draws_four_figures_and_flags_the_bad_frames(tmp_path, capsys, monkeypatch):
    pytest.importorskip("colour")
    image = pytest.importorskip("matplotlib.image")
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the examples import _synthetic.py
    module = runpy.run_path(str(EXAMPLES / "plots.py"))
    module["main"](["--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    glare_and_leaf = sorted([*module["GLARE"], *module["LEAF"]])
    assert f"flagged frames: {glare_and_leaf}" in lines  # and not the white-balance step
    assert f"rejected frames: {[module['HAND']]}" in lines
    for name in ("swatches", "delta_e_bars", "timeline", "before_after"):
        path = tmp_path / f"{name}.png"
        assert 10_000 < path.stat().st_size < 200_000
        assert image.imread(path).shape[2] == 4  # an RGBA image


def test_trusted_series_flags_the_bad_frames_and_the_step(tmp_path, capsys, monkeypatch):
    pytest.importorskip("colour")
    image = pytest.importorskip("matplotlib.image")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    module = runpy.run_path(str(EXAMPLES / "trusted_series.py"))
    module["main"](["--frames", "300", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)

    def number(key: str) -> float:
        return float(lines[key].split()[0].rstrip(","))

    assert lines["step found at frame"] == "[180] (true: 180)"  # 0.6 of 300 frames
    injected = number("injected bad frames")
    assert injected == 14  # 9 glare, 3 leaf, 2 hand
    flagged = lines["flagged frames"].replace(",", "").split()
    assert int(flagged[4]) == injected  # every injected bad frame is flagged
    assert int(flagged[6]) <= 3  # and few others
    hand = [int(v) for v in lines["outlier frames (drift)"].strip("[]").split(", ")]
    assert len(hand) == 2  # the hidden charts: NaN matrices, outliers of the drift
    assert lines["segments"] == "2"
    before, after = number("median dE00 before"), number("median dE00 after (robust per frame)")
    assert before > 5 and after < 0.2 and after < before
    assert number("median dE00 of the outlier frames corrected by their segment's matrix") < 2
    assert 0 < number("median predicted dE00 uncertainty") < 0.2
    for name in ("timeline", "swatches", "delta_e_bars", "before_after"):
        path = tmp_path / f"trusted_{name}.png"
        assert 10_000 < path.stat().st_size < 400_000
        assert image.imread(path).shape[2] == 4
