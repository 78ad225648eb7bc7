"""What reading image and raw frames shares: finding the files, their times, a lazy stack.

numpy, xarray and dask only; :mod:`xccm.images` and :mod:`xccm.raw` bring the readers.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union, cast

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

#: What ``time=`` takes: a keyword, a strptime format, a regex with named groups, or values.
Time = Union[str, "re.Pattern[str]", Sequence[Any], np.ndarray]

_GLOB_CHARS = re.compile(r"[*?\[]")
# strptime directives a file-name format may hold, as the regex that finds them in a name
_DIRECTIVES = {
    "Y": r"\d{4}",
    "y": r"\d{2}",
    "m": r"\d{2}",
    "d": r"\d{2}",
    "H": r"\d{2}",
    "I": r"\d{2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
    "j": r"\d{3}",
    "f": r"\d{1,6}",
    "p": r"(?:[AaPp][Mm])",
    "b": r"[A-Za-z]{3}",
    "B": r"[A-Za-z]+",
    "z": r"(?:Z|[+-]\d{2}:?\d{2})",
    "%": "%",
}
_GROUPS = ("year", "month", "day", "hour", "minute", "second", "microsecond")
_DATE_TIME = (
    r"(?<!\d)(?P<year>\d{{4}}){d}(?P<month>\d{{2}}){d}(?P<day>\d{{2}}){t}"
    r"(?P<hour>\d{{2}}){c}(?P<minute>\d{{2}}){c}(?P<second>\d{{2}}){f}(?!\d)"
)
#: Date-times that ``time="auto"`` finds in file names, with how ``time_source`` spells them:
#: :func:`xccm.to_images`' own ``%Y%m%dT%H%M%S`` (``%f`` added when frames share a second),
#: ISO 8601's extended form with ``-`` (or ``:``) in the time, and ``%Y%m%d_%H%M%S``.
#: Whole fields only: a run of digits longer or shorter than a date-time never matches.
NAME_TIMES = (
    (
        re.compile(_DATE_TIME.format(d="", t="T", c="", f=r"(?P<microsecond>\d{1,6})?")),
        "%Y%m%dT%H%M%S",
    ),
    (
        re.compile(
            _DATE_TIME.format(d="-", t="[T_ ]", c="[-:]", f=r"(?:[.,](?P<microsecond>\d{1,6}))?")
        ),
        "%Y-%m-%dT%H-%M-%S",
    ),
    (re.compile(_DATE_TIME.format(d="", t="_", c="", f="")), "%Y%m%d_%H%M%S"),
)


def resolve_paths(paths: Any, suffixes: Sequence[str], what: str) -> list[Path]:
    """Find the files ``paths`` names: a folder (its files with ``suffixes``), a glob, or files.

    A folder and a glob give their files sorted by name; a sequence keeps its order.
    Returns absolute paths. Raises ValueError when nothing matches or a file is missing.
    """
    if isinstance(paths, (str, os.PathLike)):
        text = os.fspath(paths)
        if os.path.isdir(text):
            found = sorted(
                p for p in Path(text).iterdir() if p.is_file() and p.suffix.lower() in suffixes
            )
            if not found:
                raise ValueError(
                    f"paths: the folder {text!r} holds no {what} files (looked for "
                    f"{', '.join(suffixes)})"
                )
            return [p.absolute() for p in found]
        if _GLOB_CHARS.search(text) and not os.path.exists(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if os.path.isfile(p))
            if not found:
                raise ValueError(f"paths: the pattern {text!r} matches no file")
            return [p.absolute() for p in found]
        items: list[Any] = [text]
    elif isinstance(paths, Sequence):
        items = list(paths)
    else:
        raise TypeError(
            "paths must be a folder, a glob pattern, a file or a sequence of files; got "
            f"{type(paths).__name__}"
        )
    if not items:
        raise ValueError("paths: an empty sequence; give at least one file")
    out = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"paths must hold file names; got {type(item).__name__} {item!r}")
        path = Path(item)
        if not path.is_file():
            raise ValueError(f"paths: {os.fspath(item)!r} is not a file")
        out.append(path.absolute())
    return out


def _format_regex(fmt: str) -> re.Pattern[str]:
    """Build the regex that finds a strptime ``fmt`` in a file name."""
    parts, i = [], 0
    while i < len(fmt):
        if fmt[i] != "%":
            parts.append(re.escape(fmt[i]))
            i += 1
            continue
        code = fmt[i + 1 : i + 2]
        if code not in _DIRECTIVES:
            raise ValueError(
                f"time: the file-name format {fmt!r} holds %{code}, which file names are not "
                f"searched for; use %{', %'.join(sorted(set(_DIRECTIVES) - {'%'}))}, or a "
                "compiled regex with named groups year, month, day, hour, minute, second"
            )
        parts.append(f"({_DIRECTIVES[code]})")
        i += 2
    return re.compile("".join(parts))


def _naive_utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        return t
    return t.astimezone(timezone.utc).replace(tzinfo=None)


def _time_from_name(path: Path, time: str | re.Pattern[str]) -> datetime:
    name = path.name
    if isinstance(time, re.Pattern):
        match = time.search(name)
        if match is None:
            raise ValueError(f"time: the pattern {time.pattern!r} is not in the file name {name!r}")
        groups = match.groupdict()
        if not {"year", "month", "day"} <= {k for k, v in groups.items() if v is not None}:
            raise ValueError(
                f"time: the pattern {time.pattern!r} must have named groups year, month and "
                f"day (and optionally {', '.join(_GROUPS[3:])}); it has {sorted(groups)}"
            )
        values = {k: int(v) for k, v in groups.items() if k in _GROUPS and v is not None}
        if "microsecond" in groups and groups["microsecond"] is not None:
            values["microsecond"] = int(groups["microsecond"].ljust(6, "0")[:6])
        try:
            return datetime(**cast(dict[str, Any], values))
        except ValueError as err:
            raise ValueError(f"time: the file name {name!r} holds no valid date: {err}") from None
    match = _format_regex(time).search(name)
    if match is None:
        raise ValueError(f"time: the format {time!r} is not in the file name {name!r}")
    try:
        return _naive_utc(datetime.strptime(match.group(0), time))
    except ValueError as err:
        raise ValueError(f"time: the file name {name!r} holds no valid date: {err}") from None


def _iso_name_time(path: Path) -> tuple[datetime, str] | None:
    """Return the date-time in a file name in one of :data:`NAME_TIMES`' forms, and its form.

    Only valid date-times of the years 1900 to 2261 count (the range of ``datetime64[ns]``,
    and no frame counter such as ``00010203_040506``).
    """
    for pattern, spelled in NAME_TIMES:
        for match in pattern.finditer(path.name):
            groups = {k: v for k, v in match.groupdict().items() if v is not None}
            values = {k: int(v) for k, v in groups.items() if k != "microsecond"}
            if "microsecond" in groups:
                values["microsecond"] = int(groups["microsecond"].ljust(6, "0"))
            if not 1900 <= values["year"] <= 2261:
                continue
            try:
                return datetime(**cast(dict[str, Any], values)), spelled
            except ValueError:  # e.g. month 13: not a date-time
                continue
    return None


def _name_times(paths: Sequence[Path]) -> tuple[np.ndarray, str] | None:
    """Return the times in every file's name (:data:`NAME_TIMES`); None unless all have one."""
    found = [_iso_name_time(p) for p in paths]
    if any(f is None for f in found):
        return None
    forms = sorted({f[1] for f in found if f is not None})
    stamps = [f[0] for f in found if f is not None]
    return _datetimes(stamps), f"file name {' / '.join(forms)}"


def frame_times(
    paths: Sequence[Path],
    time: Any,
    exif_time: Callable[[int], datetime | None],
    exif_name: str,
) -> tuple[np.ndarray, str]:
    """Find the time coord of the frames and how it was found (``attrs["time_source"]``).

    ``exif_time(i)`` gives file ``i``'s camera time, or None where it has none.
    """
    n = len(paths)
    if isinstance(time, str) and time in ("auto", "exif"):
        stamps = [exif_time(i) for i in range(n)]
        missing = [i for i, t in enumerate(stamps) if t is None]
        if time == "auto" and len(missing) == n:
            named = _name_times(paths)
            return named if named is not None else (np.arange(n), "order")
        if missing:
            first = paths[missing[0]]
            raise ValueError(
                f"time={time!r}: {first} has no {exif_name} ({len(missing)} of {n} files "
                "have none); pass time='order' to number the frames, or a file-name format "
                "such as time='%Y%m%d_%H%M%S'"
            )
        return _datetimes(stamps), exif_name
    if isinstance(time, str) and time == "order":
        return np.arange(n), "order"
    if isinstance(time, re.Pattern) or (isinstance(time, str) and "%" in time):
        stamps = [_time_from_name(p, time) for p in paths]
        spelled = time.pattern if isinstance(time, re.Pattern) else time
        return _datetimes(stamps), f"file name {spelled}"
    if isinstance(time, str):
        raise ValueError(
            f"time must be 'auto', 'exif', 'order', a file-name format with % directives "
            f"(e.g. '%Y%m%d_%H%M%S') or a compiled regex; got {time!r}"
        )
    values = np.asarray(time)
    if values.ndim != 1 or values.size != n:
        raise ValueError(
            f"time: {values.size} values of shape {values.shape} for {n} files; give one per file"
        )
    return values, "given"


def _datetimes(stamps: Sequence[datetime | None]) -> np.ndarray:
    """Return the stamps as datetime64[ns] (a None, which callers have refused, as NaT)."""
    return np.array([np.datetime64(t, "ns") for t in stamps], dtype="datetime64[ns]")


def order_by_time(times: np.ndarray, source: str) -> np.ndarray:
    """Order the frames by time, stably (file order for ``"order"`` and given times)."""
    if source in ("order", "given"):
        return np.arange(times.size)
    return np.argsort(times, kind="stable")


def warn_repeated(times: np.ndarray, paths: Sequence[Path]) -> None:
    """Warn when frames share a time: per-frame matrices are matched to frames by time."""
    values, counts = np.unique(times, return_counts=True)
    if not (counts > 1).any():
        return
    first = values[np.argmax(counts > 1)]
    files = [paths[i].name for i in np.flatnonzero(times == first)[:2]]
    warnings.warn(
        f"{int((counts[counts > 1]).sum())} frames share their time with another frame, "
        f"first {files[0]} and {files[1]} at {first}; per-frame matrices are matched to "
        "frames by time, so give distinct times (time='order', or a file-name format with "
        "seconds)",
        stacklevel=3,
    )


def file_token(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """Identify the files' contents cheaply: path, size and modification time."""
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return out


class LazyFrames:
    """An array-like of frames read one file at a time, for :func:`dask.array.from_array`.

    ``read(path, **options)`` returns one frame; it must be a picklable module-level function.
    """

    ndim = 4

    def __init__(self, paths, frame_shape, dtype, read, options, token):
        self.paths = tuple(str(p) for p in paths)
        self.frame_shape = tuple(frame_shape)
        self.shape = (len(self.paths), *self.frame_shape)
        self.dtype = np.dtype(dtype)
        self.read = read
        self.options = dict(options)
        self.token = token

    def __dask_tokenize__(self):
        return ("xccm-frames", self.read.__module__, self.read.__name__, self.token)

    def frame(self, i: int) -> np.ndarray:
        """Read frame ``i``, checked against the shape and dtype found when opening."""
        path = self.paths[i]
        out = self.read(path, **self.options)
        if out.shape != self.frame_shape or out.dtype != self.dtype:
            raise ValueError(
                f"{path} now reads as {out.shape} {out.dtype}, not {self.frame_shape} "
                f"{self.dtype} as when the frames were opened; was it changed since?"
            )
        return out

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            return self.frame(int(first))[rest]
        indices = range(self.shape[0])[first]
        out = np.empty((len(indices), *self.frame_shape), self.dtype)
        for j, i in enumerate(indices):
            out[j] = self.frame(i)
        index = (slice(None), *rest)
        return out[index]


def stack(
    frames: LazyFrames,
    times: np.ndarray,
    channels: Sequence[Hashable],
    attrs: dict[str, Any],
    name: str,
) -> xr.DataArray:
    """Wrap the frames as a lazy ``(time, y, x, channel)`` DataArray, one chunk per frame."""
    token = dask.base.tokenize(frames)
    data = dsa.from_array(
        frames,
        chunks=(1, -1, -1, -1),
        name=f"{name}-{token}",
        meta=np.empty((0, 0, 0, 0), frames.dtype),
        asarray=False,
        fancy=False,
        lock=False,
    )
    return xr.DataArray(
        data,
        dims=("time", "y", "x", "channel"),
        coords={"time": times, "channel": list(channels)},
        attrs=attrs,
        name="image",
    )
