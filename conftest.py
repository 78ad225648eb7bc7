"""Root pytest configuration, shared by the doctests in xccm/ and the tests in tests/."""

import importlib.util

import numpy as np
import pytest

# Doctest collection imports every module; skip those whose optional dependency is absent.
collect_ignore = [
    f"xccm/_{name}_kernels.py"
    for name in ("cupy", "numba")
    if importlib.util.find_spec(name) is None
]
if importlib.util.find_spec("matplotlib") is None:
    collect_ignore.append("xccm/plot.py")

_NUMPY_PRINT_DEFAULTS = np.get_printoptions()


@pytest.fixture(autouse=True)
def _numpy_print_defaults():
    """Run every test and doctest under NumPy's default print options.

    colour-science switches NumPy to legacy (1.13) printing on import, which would change
    what the doctests print depending on test order.
    """
    with np.printoptions(**_NUMPY_PRINT_DEFAULTS):
        yield
