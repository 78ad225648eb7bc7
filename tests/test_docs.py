"""The documentation: the Sphinx build (warnings as errors), the README front page and its tour,
and the benchmark table that benchmarks/run.py writes into the docs."""

import importlib.util
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xccm

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

needs_sphinx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("sphinx", "myst_parser", "furo")),
    reason="the docs extra (sphinx, myst-parser, furo) is not installed",
)


@needs_sphinx
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("matplotlib")  # the API reference imports xccm.plot
    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    # Every public name has its API page, generated from its docstring.
    public = [n for n in xccm.__all__ if callable(getattr(xccm, n)) and n not in ("Init", "Model")]
    assert len(public) > 20
    for name in public:
        page = out / "api" / "generated" / f"xccm.{name}.html"
        assert page.is_file(), name
    fit = (out / "api" / "generated" / "xccm.fit.html").read_text()
    assert "min_samples" in fit and "Examples" in fit  # the numpy-style sections rendered
    for name in ("swatches", "timeline", "before_after", "delta_e_bars"):
        assert (out / "api" / "generated" / f"xccm.plot.{name}.html").is_file()
        assert (out / "_images" / f"{name}.png").is_file()  # the gallery's figures
    perf = (out / "guide" / "performance.html").read_text()
    assert "In-memory apply, float32" in perf  # the included benchmark table


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_first_block_is_the_two_commands():
    lang, body = _fenced_blocks(README.read_text())[0]
    assert lang == "bash"
    assert body.splitlines() == [
        "python -m pip install -e . && python examples/quickstart.py",
        'python -m pip install -e ".[test,test-opencv]" && python -m pytest',
    ]


def test_readme_and_docs_links_point_to_files():
    """Relative links (README, and the pages as GitHub shows them) name files that exist."""
    pages = [README, *DOCS.rglob("*.md")]
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to missing {target}"
            checked += 1
    assert checked > 20


def test_every_guide_page_is_in_the_guide_toctree():
    index = (DOCS / "guide" / "index.md").read_text()
    for page in (DOCS / "guide").glob("*.md"):
        if page.name != "index.md":
            assert f"\n{page.stem}\n" in index, page.name


@pytest.mark.filterwarnings("ignore:.*(tight_layout|non-interactive).*:UserWarning")
def test_readme_tour_runs(tmp_path, monkeypatch, capsys):
    """The README's tour, on PNG frames written from the quick-start's synthetic camera."""
    pytest.importorskip("colour")
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    import matplotlib

    matplotlib.use("Agg")
    quickstart = runpy.run_path(str(ROOT / "examples" / "quickstart.py"))
    stack = quickstart["synthetic_camera"](xccm.chart(), np.random.default_rng(0))
    xccm.to_images(stack * 0.8, tmp_path / "site")  # sRGB-encoded 8-bit PNGs, none clipped
    code = _fenced_blocks(README.read_text())[1][1]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    m, measured, ref = namespace["m"], namespace["measured"], namespace["ref"]
    assert m.sizes["time"] == stack.sizes["time"] and m.sizes["channel_in"] == 4
    after = namespace["report"]["mean"]
    before = xccm.report(measured, ref, np.eye(3))["mean"]
    assert float(after.max()) < 1.0 < 5.0 < float(before.min())  # ΔE00, 8-bit quantised
    assert str(after.values.round(2)) in capsys.readouterr().out
    assert len(list((tmp_path / "corrected").glob("*.png"))) == stack.sizes["time"]
    assert namespace["fig"].axes  # the figure was drawn
    matplotlib.pyplot.close("all")


def test_benchmark_table_written_from_json(tmp_path):
    """run.py --from-json writes the docs table from a saved results.json, timing nothing."""
    header = {
        "processor": "Test CPU",
        "machine": "x86_64",
        "cpu_count": 2,
        "platform": "Linux",
        "python": "3.11.7",
        "date": "2026-12-01T00:00:00+00:00",
        "versions": {"xccm": "0.1.0", "numpy": "2.0", "numba": None},
        "mode": "full",
        "total_s": 123.4,
        "peak_rss_mb": 2500,
    }
    base = {"size": "8 MB", "layout": "channel-last", "dtype": "float32", "n": 5}
    rows = [
        {**base, "section": "1. In-memory apply", "operation": "`arr.copy()`", "time_s": 0.2},
        {
            **base,
            "section": "1. In-memory apply",
            "operation": "`xccm.apply(img, m)`",
            "time_s": 0.1,
            "baseline": "`arr.copy()`",
            "ratio": 0.5,
            "target": "ratio ≤ 1",
            "target_met": True,
            "tasks": 7,
        },
    ]
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({"header": header, "rows": rows}))
    out = tmp_path / "table.md"
    cmd = [sys.executable, "benchmarks/run.py", "--from-json", str(saved), "--markdown", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "% Written by benchmarks/run.py (full run); do not edit by hand."
    assert lines[2].startswith(
        "**xccm benchmarks** (full, total 123 s, peak RSS of the run 2.5 GB)"
    )
    assert "Versions: xccm 0.1.0, numpy 2.0" in lines  # numba None is left out
    assert "### 1. In-memory apply" in lines
    assert (
        "| `arr.copy()` | 8 MB | channel-last | float32 | 200 | 5 | 1 (baseline) |"
        in out.read_text()
    )
    row = next(line for line in lines if line.startswith("| `xccm.apply"))
    assert "| 100 | 5 | 0.50 | `arr.copy()` | ratio ≤ 1: met | 7 tasks |" in row


def test_docs_chart_fit_tables_are_what_bench_chartfit_writes():
    """The chart-fit guide includes the tables bench_chartfit.py writes, with its header."""
    lines = (DOCS / "chartfit_results.md").read_text().splitlines()
    assert lines[0] == "% Written by benchmarks/bench_chartfit.py; do not edit by hand."
    assert lines[2].startswith("Run of ") and " CPUs, Python " in lines[2]
    tables = [line for line in lines if line.startswith("|---")]
    assert len(tables) == 4  # one frame, per frame, chunking, models
    assert "{include} ../chartfit_results.md" in (DOCS / "guide" / "chart_fit.md").read_text()


def test_docs_benchmark_table_is_what_run_py_writes():
    """The committed table has the layout run.py writes: its note, header and section tables."""
    lines = (DOCS / "performance_results.md").read_text().splitlines()
    assert re.fullmatch(
        r"% Written by benchmarks/run.py \(full run\); do not edit by hand.", lines[0]
    )
    assert lines[2].startswith("**xccm benchmarks** (full, total ")
    sections = [line for line in lines if line.startswith("### ")]
    assert len(sections) >= 5
    header = "| operation | size | layout | dtype | best (ms) | N | ratio | baseline | target |"
    header += " notes |"
    assert lines.count(header) == len(sections)
