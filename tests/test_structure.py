"""xccm's imports run one way (DESIGN.md, "Layout"): each module pulls in only modules below it.

One subprocess imports every module of the package in turn, each time with no xccm module
loaded (not even the package's ``__init__``, which imports everything), and reports which
xccm modules the import pulled in. Third-party packages stay loaded between modules, so the
whole check takes a few seconds.
"""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import xccm

#: The layers, bottom first. A module may pull in modules of lower layers, and modules of
#: its own layer as long as no two of them pull in each other (no cycle). Names that are not
#: (yet) in the package are skipped; a module missing from this table fails the test.
LAYERS: tuple[tuple[str, ...], ...] = (
    # the bottom toolkit: pair by label, wrap plain arrays, argument checks
    ("_labels",),
    # ndarray kernels (numpy / numba / CuPy), never xarray
    (
        "_threads",
        "_kernels",
        "_numba_kernels",
        "_cupy_kernels",
        "_poly_kernels",
        "_terms",
        "_solve",
    ),
    # apply / inverse / invert, the closed-form solve; the model registry
    ("core", "models"),
    # colour modules; patches and detection; files and io
    (
        "_chart_data",
        "charts",
        "colorimetry",
        "linearize",
        "weights",
        "_refine",
        "chartfit",
        "stability",
        "patches",
        "detection",
        "_frames",
        "images",
        "raw",
        "io",
        "matrix_files",
    ),
    # the fit dispatcher
    ("fitting",),
    # what uses fit: the uncertainty of a fit and cross-validation refit
    ("covariance", "validation"),
    # what people look at and type; nothing below imports them
    ("accessor", "plot", "cli"),
)

#: Layers whose modules must not import xarray (DESIGN.md: kernels never see xarray).
NO_XARRAY = LAYERS[1]

#: Not imported here: ``python -m xccm`` runs the command line when imported.
NOT_IMPORTED = ("__init__", "__main__")

_PROBE = r"""
import importlib, json, sys, types

package_dir, first, rest = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])


def fresh_import(name):
    for key in [k for k in sys.modules if k == "xccm" or k.startswith("xccm.")]:
        del sys.modules[key]
    package = types.ModuleType("xccm")  # the package without its __init__
    package.__path__ = [package_dir]
    sys.modules["xccm"] = package
    try:
        importlib.import_module("xccm." + name)
    except ModuleNotFoundError as err:  # an optional package it needs (CuPy, say)
        if (err.name or "xccm").split(".")[0] == "xccm":
            raise
        return None
    return sorted(k[5:] for k in sys.modules if k.startswith("xccm.") and k != "xccm." + name)


report = {}
import numpy  # noqa: E401  (the kernels may use it; xarray is not imported yet)
for name in first:
    report[name] = {"pulls": fresh_import(name), "xarray": "xarray" in sys.modules}
import xarray, dask.array  # noqa: E401,F401  (loaded once for the others)
for name in rest:
    report[name] = {"pulls": fresh_import(name), "xarray": True}
print(json.dumps(report))
"""


def _layer_of() -> dict[str, int]:
    return {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> list[str]:
    root = pathlib.Path(xccm.__file__).parent
    return sorted(p.stem for p in root.glob("*.py") if p.stem not in NOT_IMPORTED)


def test_every_module_has_a_layer():
    layer = _layer_of()
    unplaced = [m for m in _modules() if m not in layer]
    assert not unplaced, f"add these modules to LAYERS in tests/test_structure.py: {unplaced}"


def test_imports_run_one_way():
    layer = _layer_of()
    modules = [m for m in _modules() if m in layer]
    first = [m for m in modules if m in NO_XARRAY]
    rest = [m for m in modules if m not in NO_XARRAY]
    package_dir = str(pathlib.Path(xccm.__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, package_dir, json.dumps(first), json.dumps(rest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    pulls = {m: set(r["pulls"]) for m, r in report.items() if r["pulls"] is not None}
    assert {"_labels", "core", "fitting", "accessor"} <= set(pulls)  # the probe imported them
    upward, cycles = [], []
    for module, pulled in pulls.items():
        for other in sorted(pulled):
            if other not in layer:  # a module of the package missing from LAYERS
                upward.append(f"{module} -> {other} (not in LAYERS)")
            elif layer[other] > layer[module]:
                upward.append(f"{module} (layer {layer[module]}) -> {other} ({layer[other]})")
            elif layer[other] == layer[module] and module in pulls.get(other, ()):
                cycles.append(f"{module} <-> {other}")
    assert not upward, "imports that run upwards:\n" + "\n".join(upward)
    assert not cycles, "import cycles within a layer:\n" + "\n".join(cycles)
    assert pulls["_labels"] == set(), "the bottom toolkit imports no xccm module"
    with_xarray = [m for m in first if report[m]["xarray"]]
    assert not with_xarray, f"kernel modules that import xarray: {with_xarray}"


def test_no_private_names_across_modules():
    """No module imports another's private names, nor reaches them as ``module._name``.

    Private modules (``from . import _kernels``) are fine: their public names are the
    package's internal interface.
    """
    root = pathlib.Path(xccm.__file__).parent
    found = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        modules = set()  # names bound to xccm modules in this file
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                if node.module is None:  # from . import core, _kernels as k
                    modules |= {a.asname or a.name for a in node.names}
                else:
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    if private:
                        found.append(f"{path.name}:{node.lineno}: from .{node.module} {private}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, "private names used across modules:\n" + "\n".join(found)
