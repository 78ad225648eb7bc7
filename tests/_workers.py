"""Functions that tests send to ``distributed`` worker processes.

Kept apart from the test modules so that a worker can import them by name without importing
pytest's conftest (the worker's ``sys.path`` may find the repository's root conftest first).
"""

from __future__ import annotations

import time


def slow(x):
    """Return ``x`` after 50 ms: a block slow enough to kill a worker in mid-write."""
    time.sleep(0.05)
    return x
