"""Timing and memory helpers shared by the benchmark scripts (no dependencies beyond NumPy).

* :func:`best_time` -- best-of-N wall time: one untimed warm-up call (numba compiles there),
  then the minimum of ``timeit.repeat(f, number=1, repeat=N)``;
* :func:`best_times` -- the same for several callables called in turn (round-robin), so that
  a change in the machine's load falls on all of them alike and their ratios hold;
* :class:`PeakRSS` -- peak resident-memory increase while a block runs, sampled from
  ``/proc/self/statm`` by a background thread (Linux; elsewhere it reports ``None``).
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = "/proc/self/statm"


@dataclass(frozen=True)
class Timing:
    """Best wall time of ``n`` timed calls, and the untimed warm-up call's time."""

    best: float
    n: int
    warmup: float


def best_time(
    f: Callable[[], object],
    repeat: int = 3,
    *,
    budget_s: float = 0.0,
    max_repeat: int = 50,
) -> Timing:
    """Best-of-N wall time of ``f()`` after one untimed warm-up call.

    ``N`` is at least ``repeat``; calls go on (up to ``max_repeat``) until the timed calls
    have taken ``budget_s`` seconds in all, so fast operations get more samples and a short
    burst of slow calls (e.g. page-fault stalls on a VM) is unlikely to cover them all.
    Garbage is collected before timing; the results of ``f`` are discarded at once.
    """
    start = time.perf_counter()
    f()
    warmup = time.perf_counter() - start
    gc.collect()
    times = timeit.repeat(f, number=1, repeat=repeat)
    while len(times) < max_repeat and sum(times) < budget_s:
        times += timeit.repeat(f, number=1, repeat=1)
    return Timing(min(times), len(times), warmup)


def best_times(
    fs: list[Callable[[], object]],
    repeat: int = 3,
    *,
    budget_s: float = 0.0,
    max_repeat: int = 50,
) -> list[Timing]:
    """:func:`best_time` of each of ``fs``, timed round-robin: one call of each in turn.

    On a shared machine the load drifts over seconds; timing one callable after the other
    lets the drift land on one and not the other, while taking turns exposes them alike, so
    the ratio of their best times is the one to trust. Each gets one untimed warm-up call,
    then ``N`` timed calls (at least ``repeat``; more, up to ``max_repeat``, until all the
    timed calls together have taken ``budget_s``). The garbage collector is off during each
    timed call, as in :mod:`timeit`; results are discarded at once.
    """
    warmups = []
    for f in fs:
        start = time.perf_counter()
        f()
        warmups.append(time.perf_counter() - start)
    gc.collect()
    times: list[list[float]] = [[] for _ in fs]
    while True:
        for f, ts in zip(fs, times, strict=True):
            gc.disable()
            try:
                start = time.perf_counter()
                f()
                ts.append(time.perf_counter() - start)
            finally:
                gc.enable()
        n = len(times[0])
        if n >= max_repeat or (n >= repeat and sum(map(sum, times)) >= budget_s):
            break
    return [Timing(min(ts), len(ts), w) for ts, w in zip(times, warmups, strict=True)]


def rss_bytes() -> int | None:
    """Resident set size of this process in bytes, or None where ``/proc`` is missing."""
    try:
        with open(_STATM, "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return None


class PeakRSS:
    """Context manager: ``peak`` is the largest RSS increase (bytes) seen inside the block.

    A daemon thread samples :func:`rss_bytes` every ``interval_s`` seconds (it holds the
    GIL only for the read). Garbage is collected, and glibc's free heap memory trimmed,
    before the starting RSS is taken.
    """

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.peak: int | None = None
        self._start: int | None = None
        self._max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._max = max(self._max, rss_bytes() or 0)

    def __enter__(self) -> PeakRSS:
        gc.collect()
        _malloc_trim()
        self._start = rss_bytes()
        if self._start is not None:
            self._max = self._start
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._start is None:
            return
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, rss_bytes() or 0)
        self.peak = self._max - self._start


def _malloc_trim() -> None:
    """Hand freed heap memory back to the OS (glibc), so RSS starts from what is in use.

    Without it, memory freed by earlier work stays resident and is reused silently, and a
    block's RSS increase understates what it allocates.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: ctypes.CDLL | bool | None = None


def peak_rss(f: Callable[[], object], interval_s: float = 0.005) -> int | None:
    """Peak RSS increase (bytes) during one call of ``f``, its result freed at once."""
    with PeakRSS(interval_s) as p:
        f()
    return p.peak
