"""The ``xccm`` command line, in process (``xccm.cli.run``) and as a subprocess."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("PIL")
pytest.importorskip("zarr", minversion="3")
pytest.importorskip("colour")

import xccm
import xccm.io
from xccm import cli

EXAMPLES = Path(__file__).parents[1] / "examples"
N_FRAMES, OCCLUDED = 5, 2


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Five JPEG frames (EXIF times) with a turned chart, a leaf over it in frame 2."""
    folder = tmp_path_factory.mktemp("demo")
    make = runpy.run_path(str(EXAMPLES / "camera_frames.py"))["main"]
    make(
        [
            str(folder),
            "--frames",
            str(N_FRAMES),
            "--height",
            "150",
            "--width",
            "200",
            "--occluded",
            str(OCCLUDED),
        ]
    )
    (folder / "frames" / "notes.txt").write_text("not a frame: open_images skips it")
    return folder


def xccm_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def python_patches(demo: Path) -> tuple[xr.DataArray, xr.DataArray]:
    """What the commands read, in the Python API: frames, linearised, boxes, patches."""
    frames = xccm.open_images(demo / "frames")
    lin = xccm.linearize(frames, frames.attrs["encoding"], scale=frames.attrs["scale"])
    ref = xccm.chart("colorchecker24")
    corners = json.loads((demo / "boxes.json").read_text())["corners"]
    boxes = xccm.grid_boxes(corners=corners, names=ref.patch.values)
    return xccm.extract_patches(lin, boxes=boxes, reduce="median").compute(), ref


def python_fit(demo: Path, **kwargs) -> xr.DataArray:
    """What the commands do, in the Python API: read, linearise, boxes, patches, fit."""
    return xccm.fit(*python_patches(demo), **kwargs)


def test_charts_lists_the_built_in_charts(capsys):
    code, out, _ = xccm_cli(capsys, "charts")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == list(xccm.available_charts())
    assert "24 patches" in out


def test_fit_writes_the_matrix_the_python_api_fits(demo, tmp_path, capsys):
    target = tmp_path / "ccm.json"
    args = ["fit", demo / "frames", "--boxes", demo / "boxes.json", "--per-frame"]
    code, out, err = xccm_cli(capsys, *args, "--model", "affine", "-o", target)
    assert code == 0, err
    m = xccm.load_matrix(target)
    expected = python_fit(demo, model="affine", loss="ciede2000")
    assert m.dims == ("time", "channel_in", "channel") and m.sizes["time"] == N_FRAMES
    np.testing.assert_allclose(m.values, expected.values, rtol=0, atol=1e-12)
    assert m.attrs["model"] == "affine" and m.attrs["loss"] == "ciede2000"
    lines = out.splitlines()
    assert lines[-1] == f"wrote {target}"
    errors = [float(line.split()[2]) for line in lines[1:-1]]  # the per-frame mean ΔE00
    assert len(errors) == N_FRAMES
    assert max(e for t, e in enumerate(errors) if t != OCCLUDED) < 1.5
    assert errors[OCCLUDED] > 5  # the leaf


def test_fit_pools_the_frames_by_default(demo, tmp_path, capsys):
    target = tmp_path / "ccm.nc"
    args = ["fit", demo / "frames", "--boxes", demo / "boxes.json", "--loss", "none"]
    code, _, err = xccm_cli(capsys, *args, "-o", target)
    assert code == 0, err
    m = xccm.load_matrix(target)
    assert m.dims == ("channel_in", "channel")
    frames = xccm.open_images(demo / "frames")
    lin = xccm.linearize(frames, "srgb", scale=1 / 255)
    corners = json.loads((demo / "boxes.json").read_text())["corners"]
    ref = xccm.chart()
    boxes = xccm.grid_boxes(corners=corners, names=ref.patch.values)
    measured = xccm.extract_patches(lin, boxes=boxes).compute()
    s = measured.values.reshape(-1, 3)
    d = np.broadcast_to(ref.values, measured.shape).reshape(-1, 3)
    np.testing.assert_allclose(m.values, np.linalg.lstsq(s, d, rcond=None)[0], atol=1e-10)


def _fit_cli(demo, tmp_path, capsys, *options):
    target = tmp_path / "ccm.nc"
    args = ["fit", demo / "frames", "--boxes", demo / "boxes.json", "--per-frame"]
    code, _, err = xccm_cli(capsys, *args, "--loss", "none", *options, "-o", target, "--overwrite")
    assert code == 0, err
    return xccm.load_matrix(target)


def test_fit_degree(demo, tmp_path, capsys):
    m = _fit_cli(demo, tmp_path, capsys, "--model", "root_polynomial", "--degree", 2)
    expected = python_fit(demo, model="root_polynomial", degree=2)
    assert m.attrs["model"] == "root_polynomial" and m.attrs["degree"] == 2
    assert m.channel_in.values.tolist()[3:] == ["sqrt(R*G)", "sqrt(G*B)", "sqrt(R*B)"]
    np.testing.assert_allclose(m.values, expected.values, rtol=0, atol=1e-12)


def test_fit_terms(demo, tmp_path, capsys):
    m = _fit_cli(demo, tmp_path, capsys, "--model", "polynomial", "--terms", 10)
    expected = python_fit(demo, model="polynomial", terms=10)
    assert m.attrs["terms"] == 10 and m.sizes["channel_in"] == 10
    np.testing.assert_allclose(m.values, expected.values, rtol=0, atol=1e-12)


def test_fit_ridge(demo, tmp_path, capsys):
    options = ("--model", "root_polynomial", "--degree", 3, "--ridge")
    m = _fit_cli(demo, tmp_path, capsys, *options, "0.01")
    expected = python_fit(demo, model="root_polynomial", degree=3, ridge=0.01)
    assert m.attrs["ridge"] == 0.01
    np.testing.assert_allclose(m.values, expected.values, rtol=0, atol=1e-12)
    none = _fit_cli(
        demo, tmp_path, capsys, "--model", "root_polynomial", "--degree", 2, "--ridge", "none"
    )
    assert "ridge" not in none.attrs
    code, _, err = xccm_cli(
        capsys, "fit", demo / "frames", "--boxes", demo / "boxes.json", "--ridge", "lots",
        "-o", tmp_path / "x.nc",
    )  # fmt: skip
    assert code == 2 and "--ridge" in err


def test_run_white_point(demo, tmp_path, capsys):
    matrices = tmp_path / "m.nc"
    args = ["run", demo / "frames", "--boxes", demo / "boxes.json", "-o", tmp_path / "out.zarr"]
    options = ("--model", "root_polynomial", "--degree", 2, "--white-point", "preserve")
    code, _, err = xccm_cli(capsys, *args, *options, "--loss", "none", "--matrix-output", matrices)
    assert code == 0, err
    m = xccm.load_matrix(matrices)
    assert m.attrs["white_point"] == "preserve"
    expected = python_fit(demo, model="root_polynomial", degree=2, white_point="preserve")
    kept = [t for t in range(N_FRAMES) if t != OCCLUDED]  # no frame is rejected without
    np.testing.assert_allclose(m[kept], expected[kept], rtol=0, atol=1e-12)  # --max-error


def test_run_corrects_into_a_complete_store_and_fills_rejected_frames(demo, tmp_path, capsys):
    store, matrices = tmp_path / "corrected.zarr", tmp_path / "m.nc"
    args = ["run", demo / "frames", "--boxes", demo / "boxes.json", "-o", store]
    code, out, err = xccm_cli(capsys, *args, "--max-error", 5, "--matrix-output", matrices)
    assert code == 0, err
    assert xccm.io.is_complete(store)
    ds = xccm.io.open_zarr(store)
    assert ds.image.dims == ("time", "y", "x", "channel") and ds.image.dtype == np.float32
    assert ds.image.chunks[0] == (1,) * N_FRAMES
    m = xccm.load_matrix(matrices)
    xr.testing.assert_allclose(ds["ccm_matrix"].reset_coords(drop=True), m.reset_coords(drop=True))
    # the occluded frame's matrix is interpolated from its neighbours (equally spaced times)
    np.testing.assert_allclose(
        m[OCCLUDED], (m[OCCLUDED - 1] + m[OCCLUDED + 1]) / 2, rtol=1e-12, atol=1e-14
    )
    rows = [line for line in out.splitlines() if line.startswith("2026-")]
    assert len(rows) == N_FRAMES
    assert "rejected: mean ΔE00 above 5" in rows[OCCLUDED]
    assert sum("rejected" in row for row in rows) == 1
    assert "1 of 5 frames rejected and filled from their neighbours" in out
    # the stored frames are the linear frames corrected by the stored matrices
    frames = xccm.open_images(demo / "frames")
    lin = xccm.linearize(frames, "srgb", scale=1 / 255)
    expected = xccm.apply(lin.isel(time=[0, OCCLUDED]), m.isel(time=[0, OCCLUDED]))
    np.testing.assert_allclose(ds.image.isel(time=[0, OCCLUDED]), expected, atol=1e-6)


def test_run_writes_a_folder_of_images(demo, tmp_path, capsys):
    folder = tmp_path / "corrected"
    args = ["run", demo / "frames", "--boxes", demo / "boxes.json", "-o", folder]
    code, out, err = xccm_cli(capsys, *args, "--bits", 16, "--loss", "none")
    assert code == 0, err
    files = sorted(folder.iterdir())
    assert files[0].name == "20260601T060000.png" and len(files) == N_FRAMES
    back = xccm.open_images(folder)
    assert back.dtype == np.uint16 and back.sizes["time"] == N_FRAMES
    assert "png, 16-bit, 5 files" in out.splitlines()[-1]


def test_outputs_are_never_replaced_without_overwrite(demo, tmp_path, capsys):
    target = tmp_path / "ccm.json"
    target.write_text("precious")
    args = ["fit", demo / "frames", "--boxes", demo / "boxes.json", "-o", target]
    code, out, err = xccm_cli(capsys, *args)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"xccm: error: {target} exists: pass --overwrite to replace it"
    ]
    assert target.read_text() == "precious"
    code, _, err = xccm_cli(capsys, *args, "--overwrite", "--loss", "none")
    assert code == 0, err
    assert xccm.load_matrix(target).dims == ("channel_in", "channel")


def test_apply_and_report_with_a_saved_matrix(demo, tmp_path, capsys):
    matrix = tmp_path / "ccm.json"
    xccm.save_matrix(python_fit(demo, loss="ciede2000"), matrix)
    store = tmp_path / "applied.zarr"
    code, out, err = xccm_cli(capsys, "apply", demo / "frames", "-m", matrix, "-o", store)
    assert code == 0, err
    assert xccm.io.is_complete(store)
    # apply --resume on a complete store leaves it complete and as it was
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    code, _, err = xccm_cli(capsys, "apply", demo / "frames", "-m", matrix, "-o", store, "--resume")
    assert code == 0, err
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    csv = tmp_path / "report.csv"
    args = ["report", demo / "frames", "--boxes", demo / "boxes.json", "-m", matrix]
    code, out, err = xccm_cli(capsys, *args, "--csv", csv)
    assert code == 0, err
    table = {line[:24].strip(): line[24:] for line in out.splitlines()[1:25]}
    assert list(table) == list(xccm.chart().patch.values)
    import pandas as pd

    frame = pd.read_csv(csv)
    assert len(frame) == N_FRAMES * 24
    per_patch = frame.groupby("patch", sort=False)["delta_e"].mean()
    for name, value in per_patch.items():
        assert float(table[name]) == pytest.approx(value, abs=5e-4)
    # the csv is replaced only with --overwrite, and refused before any work
    before = csv.read_bytes()
    code, out, err = xccm_cli(capsys, *args, "--csv", csv, "--method", "cie76")
    assert code == 2 and "--overwrite" in err and out == ""
    assert csv.read_bytes() == before
    code, _, err = xccm_cli(capsys, *args, "--csv", csv, "--method", "cie76", "--overwrite")
    assert code == 0, err
    assert csv.read_bytes() != before


def test_errors_are_one_line_and_exit_1_or_a_traceback_with_debug(demo, tmp_path, capsys):
    boxes = tmp_path / "b.json"
    boxes.write_text('{"dark skin": [0, 4, 0, 4000]}')  # outside the frame: found at work
    args = ["fit", demo / "frames", "--boxes", boxes, "-o", tmp_path / "m.json"]
    code, out, err = xccm_cli(capsys, *args)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("xccm: error: ")
    assert "dark skin" in err
    with pytest.raises(ValueError, match="dark skin"):
        cli.run([*map(str, args), "--debug"])  # global options may follow the subcommand
    assert not (tmp_path / "m.json").exists()


def test_outputs_never_replace_or_hide_a_source(demo, tmp_path, capsys):
    copy = tmp_path / "frames"
    copy.mkdir()
    for f in (demo / "frames").glob("*.jpg"):
        (copy / f.name).write_bytes(f.read_bytes())
    before = sorted(p.name for p in copy.iterdir())
    matrix = tmp_path / "ccm.json"
    xccm.save_matrix(np.eye(3), matrix)
    for target in (copy, copy / "out.zarr", tmp_path):
        code, _, err = xccm_cli(
            capsys, "apply", copy, "-m", matrix, "-o", target, "--format", "zarr", "--overwrite"
        )
        assert code == 2 and "the source would be lost" in err
    assert sorted(p.name for p in copy.iterdir()) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    code, _, err = xccm_cli(
        capsys, "apply", copy, "-m", matrix, "-o", other, "--format", "zarr", "--overwrite"
    )
    assert code == 2 and "is not a zarr store" in err
    assert (other / "keep.txt").read_text() == "mine"
    code, _, err = xccm_cli(capsys, "apply", copy, "-m", matrix, "-o", other, "--resume")
    assert code == 2 and "--resume finishes a zarr store" in err
    # an output in a folder that does not exist yet: the folder is made
    nested = tmp_path / "new" / "deeper" / "out.zarr"
    code, _, err = xccm_cli(capsys, "apply", copy, "-m", matrix, "-o", nested)
    assert code == 0, err
    assert xccm.io.is_complete(nested)


def test_usage_errors_exit_2(demo, tmp_path, capsys):
    frames, out = demo / "frames", tmp_path / "m.json"
    code, _, err = xccm_cli(capsys, "fit", tmp_path / "framez", "--detect", "-o", out)
    assert code == 2 and f"no such file or folder: {tmp_path / 'framez'}" in err
    code, _, err = xccm_cli(capsys, "fit", frames, "--detect", "--edition", "1999", "-o", out)
    assert code == 2 and "--chart/--edition" in err
    code, _, err = xccm_cli(capsys, "fit", frames, "-o", out)
    assert code == 2 and "--boxes FILE or --detect" in err
    code, _, err = xccm_cli(
        capsys, "fit", frames, "--detect", "--boxes", demo / "boxes.json", "-o", out
    )
    assert code == 2
    code, _, err = xccm_cli(capsys, "fit", frames, "--model", "cubic", "--detect", "-o", out)
    assert code == 2 and "cubic" in err
    code, _, err = xccm_cli(capsys, "fit", frames, "--detect")
    assert code == 2 and "--output" in err
    bad = tmp_path / "boxes.json"
    bad.write_text('{"dark skins": [0, 4, 0, 4]}')
    code, _, err = xccm_cli(capsys, "fit", frames, "--boxes", bad, "-o", out)
    assert code == 2 and "'dark skins'" in err
    assert not out.exists()


def test_progress_bar_on_request(demo, tmp_path, capsys):
    args = ["fit", demo / "frames", "--boxes", demo / "boxes.json", "-o", tmp_path / "m.json"]
    code, out, err = xccm_cli(capsys, "--progress", *args, "--loss", "none")
    assert code == 0, err
    assert "patches:" in out and "100%" in out


def test_detect_finds_the_chart(demo, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "mcc"):
        pytest.skip("this OpenCV has no mcc module")
    target = tmp_path / "ccm.json"
    code, _, err = xccm_cli(
        capsys, "fit", demo / "frames", "--detect", "--per-frame", "--loss", "none", "-o", target
    )
    assert code == 0, err
    detected = xccm.load_matrix(target)
    by_corners = python_fit(demo)
    keep = [t for t in range(N_FRAMES) if t != OCCLUDED]  # the leaf hides the chart there
    np.testing.assert_allclose(detected[keep], by_corners[keep], atol=0.05)


def test_console_script_and_module_run_as_subprocesses(demo, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "xccm", "charts"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("colorchecker24")
    done = subprocess.run(
        [sys.executable, "-m", "xccm", "fit", str(demo / "frames"), "-o", str(tmp_path / "m.nc")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "--boxes FILE or --detect" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_has_examples(capsys):
    code, out, _ = xccm_cli(capsys, "run", "--help")
    assert code == 0 and "Examples:" in out and "--max-error" in out
    code, out, _ = xccm_cli(capsys, "--help")
    assert code == 0 and "xccm run frames/ --detect -o out.zarr" in out


def test_run_robust_with_plots(demo, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plots = tmp_path / "plots"
    args = ["run", demo / "frames", "--boxes", demo / "boxes.json", "-o", tmp_path / "c.zarr"]
    code, out, err = xccm_cli(
        capsys, *args, "--robust", "tukey", "--loss", "none", "--max-error", 5, "--plot", plots
    )
    assert code == 0, err
    assert sorted(p.name for p in plots.iterdir()) == ["swatches.png", "timeline.png"]
    assert "1 of 5 frames rejected" in out
    m = xccm.io.open_zarr(tmp_path / "c.zarr")["ccm_matrix"]
    assert m.attrs["robust"] == "tukey"


def test_model_options_are_refused_before_starting(demo, tmp_path, capsys):
    """Bad --model/--degree/--terms/--ridge combinations exit 2, with fit's own message."""
    frames, boxes = demo / "frames", demo / "boxes.json"
    store = tmp_path / "out.zarr"
    cases = [
        (("--model", "root_polynomial"), "needs degree="),
        (("--model", "linear", "--degree", 3), "takes no degree=3"),
        (("--model", "polynomial", "--degree", 2, "--terms", 10), "not both"),
        (("--model", "polynomial", "--terms", 6), "terms=6 is not defined"),
        (("--model", "root_polynomial", "--terms", 10), "not terms=10"),
        (("--model", "affine", "--ridge", "-1"), "ridge must be a finite number >= 0"),
    ]
    for options, message in cases:
        for command in ("run", "fit", "validate"):
            args = [command, frames, "--boxes", boxes, *options]
            if command != "validate":
                args += ["-o", store if command == "run" else tmp_path / "m.json"]
            code, out, err = xccm_cli(capsys, *args)
            assert code == 2, (command, options, err)
            assert message in err and "--model" in err, (command, options, err)
            assert len(err.strip().splitlines()) == 1 and out == ""
    assert not store.exists() and not (tmp_path / "m.json").exists()
    # the message is xccm.fit's own
    with pytest.raises(ValueError) as raised:
        python_fit(demo, model="root_polynomial")
    code, _, err = xccm_cli(capsys, "fit", frames, "--boxes", boxes, "--model", "root_polynomial",
                            "-o", tmp_path / "m.json")  # fmt: skip
    assert err.strip().endswith(str(raised.value))


def test_matrix_files_are_checked_before_fitting(demo, tmp_path, capsys, monkeypatch):
    """A .yml matrix output that cannot hold the matrix is refused (exit 2) before any work."""
    frames, boxes = demo / "frames", demo / "boxes.json"
    fitted = []

    def patches_of(*args):
        fitted.append(args)
        raise ValueError("reached the patches")

    monkeypatch.setattr(cli, "patches_of", patches_of)
    yml = tmp_path / "m.yml"
    for args, message in [
        (("fit", "--model", "root_polynomial", "--degree", 2, "-o", yml), "linear (3x3) or affine"),
        (("fit", "--per-frame", "-o", yml), "not one per 'time'"),
        (("run", "-o", tmp_path / "o.zarr", "--matrix-output", yml), "not one per 'time'"),
        (("fit", "-o", tmp_path / "m"), "cannot tell the format of"),
    ]:
        code, _, err = xccm_cli(capsys, args[0], frames, "--boxes", boxes, *args[1:])
        assert code == 2 and message in err and ".json" in err, err
    assert not fitted and not yml.exists() and not (tmp_path / "o.zarr").exists()
    # without OpenCV: the extra that brings it is named, before any work
    monkeypatch.setitem(sys.modules, "cv2", None)
    code, _, err = xccm_cli(capsys, "fit", frames, "--boxes", boxes, "-o", yml)
    assert code == 2 and 'pip install "xccm[detect]"' in err and not fitted
    # json and nc hold every model (the fit itself is tested above)
    for suffix in (".json", ".nc"):
        code, _, err = xccm_cli(
            capsys, "fit", frames, "--boxes", boxes, "--model", "polynomial", "--terms", 10,
            "-o", tmp_path / f"m{suffix}",
        )  # fmt: skip
        assert code == 1 and "reached the patches" in err and len(fitted) == 1, err
        fitted.clear()


def test_fit_writes_an_opencv_matrix(demo, tmp_path, capsys):
    pytest.importorskip("cv2")
    target = tmp_path / "ccm.yml"
    args = ["fit", demo / "frames", "--boxes", demo / "boxes.json", "--loss", "none"]
    code, _, err = xccm_cli(capsys, *args, "--model", "affine", "-o", target)
    assert code == 0, err
    expected = python_fit(demo, model="affine", sample_dims=("time", "patch"))
    np.testing.assert_allclose(xccm.load_matrix(target).values, expected.values, atol=1e-12)


def _python_cross_validate(demo, **kwargs) -> xr.Dataset:
    return xccm.cross_validate(*python_patches(demo), **kwargs)


def test_validate_compares_models_as_cross_validate_does(demo, tmp_path, capsys):
    table = tmp_path / "cv.csv"
    args = ["validate", demo / "frames", "--boxes", demo / "boxes.json", "--loss", "none"]
    models = "linear,affine,root_polynomial:2,polynomial:terms=10"
    code, out, err = xccm_cli(capsys, *args, "--models", models, "--folds", 4, "--csv", table)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["model", "terms", "in-sample", "held-out"]
    assert "mean ΔE00" in lines[0] and "4 folds, seed 0" in lines[0] and "5 frames" in lines[0]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:5]}
    assert list(rows) == models.split(",")
    kwargs = {
        "linear": {"model": "linear"},
        "affine": {"model": "affine"},
        "root_polynomial:2": {"model": "root_polynomial", "degree": 2},
        "polynomial:terms=10": {"model": "polynomial", "terms": 10},
    }
    held = {}
    for label, fit_kwargs in kwargs.items():
        cv = _python_cross_validate(demo, folds=4, **fit_kwargs)
        mean = cv["mean"].median("time")  # median over the frames of each frame's mean
        n_terms, inside, outside = rows[label]
        assert int(n_terms) == cv["matrix"].sizes["channel_in"]
        assert float(inside) == pytest.approx(float(mean.sel(validation="in_sample")), abs=5e-4)
        assert float(outside) == pytest.approx(float(mean.sel(validation="held_out")), abs=5e-4)
        held[label] = float(mean.sel(validation="held_out"))
    assert lines[5] == f"lowest held-out error: {min(held, key=held.get)}"
    assert lines[-1] == f"wrote {table}"
    import pandas as pd

    frame = pd.read_csv(table)
    assert len(frame) == 4 * N_FRAMES and frame["model"].unique().tolist() == models.split(",")
    cv = _python_cross_validate(demo, folds=4, model="affine")
    got = frame[frame["model"] == "affine"]["held_out_max"].to_numpy()
    np.testing.assert_allclose(got, cv["max"].sel(validation="held_out").values, rtol=1e-5)
    # the csv is never replaced without --overwrite
    code, _, err = xccm_cli(capsys, *args, "--csv", table)
    assert code == 2 and "--overwrite" in err


def test_validate_one_model_and_its_refusals(demo, tmp_path, capsys):
    args = ["validate", demo / "frames", "--boxes", demo / "boxes.json", "--loss", "none"]
    code, out, err = xccm_cli(capsys, *args, "--model", "affine", "--seed", 3, "--folds", 3)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[1].split()[:2] == ["affine", "4"]
    assert "3 folds, seed 3" in lines[0]
    for options, message in [
        (("--models", "linear,cubic"), "unknown model 'cubic'"),
        (("--models", "root_polynomial"), "--models root_polynomial: model 'root_polynomial'"),
        (("--models", "polynomial:x=3"), "is not NAME, NAME:DEGREE"),
        (("--models", " , "), "no model"),
        (("--models", "linear", "--model", "affine"), "--models replaces --model"),
        (("--folds", 1), "--folds: folds must be between 2 and"),
        (("--folds", 25), "the chart has 24 patches"),
        (("--folds", "some"), "expected 'loo' or a number"),
    ]:
        code, out, err = xccm_cli(capsys, *args, *options)
        assert code == 2 and message in err and out == "", (options, err)
