"""A pool of threads that runs a function on contiguous parts of a range of rows.

Standard library only: the numba kernels (which release the GIL) and the batched solver of
:mod:`xccm._refine` (NumPy, which releases it in its array operations) use it to spread one
call over the cores, each thread on its own contiguous stretch of the rows.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["MIN_SPLIT_ROWS", "run_split"]

#: Rows (or work items) below which a parallel call runs on the calling thread alone: 32k
#: pixels take about as long as handing a part to a pool thread.
MIN_SPLIT_ROWS = 1 << 15
_POOL: dict = {}
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()


def run_split(
    kernel: Callable[..., Any],
    n: int,
    args_of: Callable[[int, int], tuple],
    parallel: bool,
    min_rows: int | None = None,
) -> list:
    """Run ``kernel(*args_of(lo, hi))`` on contiguous parts ``[lo, hi)`` of ``n`` rows.

    With ``parallel``, one part per thread (:func:`_threads`), at least ``min_rows`` rows
    each (default :data:`MIN_SPLIT_ROWS`): the first on the calling thread, the others on a
    pool of threads; else one part on the calling thread. A call made inside a part runs on
    its thread alone (no nested splitting, which could leave every pool thread waiting);
    once the interpreter shuts down (no new pool work), the calling thread runs every part.
    Returns the kernels' results, part by part, once every part has ended (the first error
    is raised after all have ended).

    Examples
    --------
    >>> run_split(lambda lo, hi: hi - lo, 10, lambda lo, hi: (lo, hi), False)
    [10]
    """
    least = MIN_SPLIT_ROWS if min_rows is None else max(1, min_rows)
    nested = getattr(_LOCAL, "in_part", False)
    threads = min(_threads() if parallel and not nested else 1, n // least)
    if threads <= 1:
        return [kernel(*args_of(0, n))]
    bounds = [n * k // threads for k in range(threads + 1)]
    parts = list(itertools.pairwise(bounds))
    submitted: list[concurrent.futures.Future | None] = []
    for lo, hi in parts[1:]:
        try:
            submitted.append(_pool().submit(_part, kernel, args_of(lo, hi)))
        except RuntimeError:  # the interpreter is shutting down: this part on this thread
            submitted.append(None)
    futures = [future for future in submitted if future is not None]
    mine = {}
    try:
        mine[0] = _part(kernel, args_of(*parts[0]))
        for i, ((lo, hi), future) in enumerate(zip(parts[1:], submitted, strict=True), 1):
            if future is None:
                mine[i] = _part(kernel, args_of(lo, hi))
    except BaseException:  # e.g. KeyboardInterrupt: the parts not started never start
        for future in futures:
            future.cancel()
        raise
    finally:
        concurrent.futures.wait(futures)
    return [mine[i] if f is None else f.result() for i, f in enumerate([None, *submitted])]


def _part(kernel: Callable[..., Any], args: tuple) -> Any:
    """Run one part, marked so that a :func:`run_split` inside it runs on its thread alone.

    A part that split again would queue work for the pool and wait for it: with every pool
    thread running such a part (several callers at once), nothing would run the queued work.
    """
    _LOCAL.in_part = True
    try:
        return kernel(*args)
    finally:
        _LOCAL.in_part = False


def _threads() -> int:
    """Threads of a parallel call.

    numba's where numba is loaded (``NUMBA_NUM_THREADS``; ``numba.set_num_threads`` holds for
    the thread that calls it), else the CPUs this process may run on.
    """
    numba = sys.modules.get("numba")
    if numba is not None:
        return int(numba.get_num_threads())
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """Return the threads of :func:`run_split`, started on first use (and in a forked child)."""
    with _POOL_LOCK:
        if "pool" not in _POOL:
            _POOL["pool"] = concurrent.futures.ThreadPoolExecutor(
                os.cpu_count(), thread_name_prefix="xccm"
            )
        return _POOL["pool"]


def _forget_pool() -> None:
    """In a forked child: the parent's threads are not there, and its lock may be held."""
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    _POOL.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
