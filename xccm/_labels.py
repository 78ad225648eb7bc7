"""The bottom toolkit: pair by label, wrap plain arrays, check arguments.

NumPy and xarray only; it imports no other xccm module, and every xccm module that pairs
labelled inputs, labels a plain array or checks an argument does it here, so that there is
one rule (and one message) for each:

- pairing by label: :func:`pair_by_label` (one input against another along some dims),
  :func:`align_by_label` (several inputs of one computation), :func:`match_labels`,
  :func:`channel_order` (channel labels, e.g. a matrix's rows against an image's channels);
- wrapping plain arrays: :func:`axis_names`, :func:`wrap`, :func:`sample_array`;
- argument checks: :func:`check_choice`, :func:`check_integer`, :func:`check_scale`,
  :func:`require_real`, :func:`check_data`, :func:`require_one_chunk`, :func:`dim_names`,
  :func:`as_dataarray`.

The names are public to xccm's modules (this module itself is private to the package).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, get_args

import numpy as np
import pandas as pd
import xarray as xr

# ---------------------------------------------------------------------------------------------
# arrays


def is_dask(x: Any) -> bool:
    """Whether ``x`` is a Dask collection (without importing Dask)."""
    return type(x).__module__.startswith("dask.")


def asarray(x: Any) -> Any:
    """Return ``x`` as an array: Dask and array-API arrays as they are, others via NumPy."""
    return x if is_dask(x) or hasattr(x, "__array_namespace__") else np.asarray(x)


def axis_names(n: int) -> tuple[str, ...]:
    """Dim names given to the ``n`` unnamed leading axes of a plain array: ``axis_0``..."""
    return tuple(f"axis_{i}" for i in range(n))


def wrap(arr: Any, core_dims: Sequence[Hashable], n_lead: int | None = None) -> xr.DataArray:
    """Label a plain array: its last axes ``core_dims``, the leading ones ``axis_{i}``.

    ``n_lead`` is the number of leading axes of the widest array of a call: the leading
    axes are aligned from the right, as NumPy broadcasts, so an array with fewer of them
    gets the last names (``axis_1`` of ``axis_0, axis_1``). Nothing is copied or computed.

    Examples
    --------
    >>> wrap(np.zeros((4, 24, 3)), ("patch", "channel"), n_lead=2).dims
    ('axis_1', 'patch', 'channel')
    """
    lead = np.ndim(arr) - len(core_dims)
    n = lead if n_lead is None else n_lead
    return xr.DataArray(arr, dims=(*axis_names(n)[n - lead :], *core_dims))


def index_values(obj: xr.DataArray, dim: Hashable) -> list | None:
    """Return the labels of ``dim`` as a list, or None where ``dim`` has no index."""
    return obj.indexes[dim].tolist() if dim in obj.indexes else None


def set_index(obj: xr.DataArray, dim: Hashable, values: list | None) -> xr.DataArray:
    """Label ``dim`` with ``values``; None drops its labels."""
    if values is None:
        return obj.drop_vars([dim], errors="ignore")
    return obj.assign_coords({dim: values})


# ---------------------------------------------------------------------------------------------
# argument checks


def check_choice(name: str, value: Any, choices: Any) -> None:
    """Refuse ``value`` unless it is one of ``choices`` (a ``Literal`` or a sequence)."""
    options = get_args(choices) or tuple(choices)
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {options}")


def check_integer(value: Any, argname: str, minimum: int = 0) -> int:
    """Return ``value`` as an int: TypeError if it is no integer, ValueError if too small.

    Booleans are not integers here; NumPy integers are.

    Examples
    --------
    >>> check_integer(np.int64(3), "degree", minimum=1)
    3
    """
    what = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argname} must be {what}; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{argname} must be {what}; got {value!r}")
    return int(value)


def require_real(obj: Any, argname: str) -> None:
    """Refuse data that is not real numbers (integer or float)."""
    dtype = obj.dtype
    if dtype.kind not in "iuf":
        raise TypeError(f"{argname} must hold real numbers (integer or float); got dtype {dtype}")


def check_data(obj: xr.DataArray, argname: str, dim: Hashable, allow_empty: bool = False) -> None:
    """Check that ``obj`` has the channel dim ``dim``, channels, real numbers and data."""
    if dim not in obj.dims:
        raise ValueError(
            f"{argname} has no dim {dim!r}; its dims are {tuple(obj.dims)}. "
            "Use dim= to name the channel dim."
        )
    require_real(obj, argname)
    if obj.sizes[dim] == 0:
        raise ValueError(f"{argname} has no channels: dim {dim!r} has size 0")
    if not allow_empty and obj.size == 0:
        raise ValueError(f"{argname} is empty: sizes {dict(obj.sizes)}")


def require_one_chunk(obj: xr.DataArray, dim: Hashable, argname: str) -> None:
    """Refuse a Dask-backed ``obj`` whose ``dim`` is split across chunks."""
    chunks = obj.chunksizes.get(dim, ()) if obj.chunks is not None else ()
    if len(chunks) > 1:
        raise ValueError(
            f"{argname} dim {dim!r} is split into {len(chunks)} chunks {chunks}; it must be one "
            f"chunk. Rechunk first, e.g. {argname}.chunk({{{dim!r}: -1}}) (cheap for a few "
            "channels if the other chunks stay small)."
        )


def check_scale(scale: Any) -> Any:
    """Validate ``scale=`` (of :func:`xccm.apply`, :func:`xccm.linearize`, :func:`xccm.encode`).

    One real number, or a 0-d array of one (NumPy, Dask or a DataArray), finite and
    positive. Returns it as given, a lazy one wrapped so that a bad value raises the same
    ``ValueError`` on compute (checking it now would compute it).
    """
    if scale is None:
        return None
    number = isinstance(scale, numbers.Real) and not isinstance(scale, bool | np.bool_)
    dtype = getattr(scale, "dtype", None)  # a 0-d array: NumPy, Dask, a DataArray
    scalar_array = dtype is not None and np.ndim(scale) == 0 and np.dtype(dtype).kind in "iuf"
    if not (number or scalar_array):
        got = f"shape {np.shape(scale)}" if np.ndim(scale) else repr(scale)
        raise TypeError(
            f"scale must be one real number (e.g. 1 / 255); got {type(scale).__name__} {got}. "
            "For a factor per frame or channel, multiply the image first (image * gain): "
            "apply broadcasts its matrix, not scale."
        )
    data = scale.data if isinstance(scale, xr.DataArray) else scale
    if is_dask(data):
        checked = data.map_blocks(_checked_scale_value, dtype=data.dtype)
        return scale.copy(data=checked) if isinstance(scale, xr.DataArray) else checked
    _checked_scale_value(np.asarray(data))
    return scale


def _checked_scale_value(value):
    if not (np.isfinite(value) and value > 0):
        raise ValueError(
            f"scale must be a finite positive number (e.g. 1 / 255); got {value.item()!r}"
        )
    return value


def dim_names(value: Any, argname: str) -> tuple[Hashable, ...]:
    """Dim names given as one name (a str or another non-iterable hashable) or a sequence.

    An empty sequence, a repeated name or an unhashable entry is a ValueError/TypeError.
    """
    if isinstance(value, str) or not isinstance(value, Iterable):
        names: tuple = (value,)
    else:
        names = tuple(value)
    if not names:
        raise ValueError(f"{argname} is empty; name at least one dim to fit over")
    for name in names:
        if not isinstance(name, Hashable):
            raise TypeError(
                f"{argname} must be a dim name or a sequence of dim names; got {value!r}, "
                f"holding a {type(name).__name__}"
            )
    repeated = sorted({repr(d) for d in names if names.count(d) > 1})
    if repeated:
        raise ValueError(
            f"{argname} names a dim more than once ({', '.join(repeated)}); got {value!r}"
        )
    return names


def as_dataarray(obj: Any, argname: str, dim: Hashable) -> xr.DataArray:
    """Refuse a plain array where the other input is labelled (it would be a guess)."""
    if isinstance(obj, xr.DataArray):
        return obj
    raise TypeError(
        f"{argname} must be a DataArray when measured is one (got {type(obj).__name__}); "
        f"wrap it with xr.DataArray(..., dims=...) naming its sample dims and {dim!r}"
    )


# ---------------------------------------------------------------------------------------------
# pairing by label

#: How many labels an error about mismatched labels lists on each side.
SHOWN = 5


def some(labels: Any) -> str:
    """Return a few labels of an index, for messages."""
    shown = ", ".join(repr(x) for x in labels[:SHOWN].tolist())
    return shown + (", ..." if len(labels) > SHOWN else "")


def permutation(mine: pd.Index, labels: pd.Index) -> np.ndarray | None:
    """Return the positions in ``mine`` of ``labels`` if both hold the same unique labels.

    Else None. Taking them (``isel``) puts what ``mine`` labels in the order of ``labels``.
    """
    if not (mine.is_unique and labels.is_unique) or len(mine) != len(labels):
        return None
    order = mine.get_indexer(labels)
    return order if (order >= 0).all() else None


#: Builds the message of a label mismatch: ``(dim, name, its labels, target, its labels)``.
Mismatch = Callable[[Hashable, str, pd.Index, str, pd.Index], str]


def labels_differ(
    d: Hashable, name: str, mine: pd.Index, target: str, theirs: pd.Index, fill: str = ""
) -> str:
    """Say that ``name`` and ``target`` label dim ``d`` differently.

    It lists a few labels each side lacks, or says which labels repeat, and how to pair
    them: by label with ``reindex`` (``fill``, e.g. ``", fill_value=0"``, for what is
    lacking), or by position with ``assign_coords``.
    """
    lacking = theirs.difference(mine, sort=False)
    extra = mine.difference(theirs, sort=False)
    if len(lacking) or len(extra):
        parts = [
            f"{len(idx)} label(s) of {x} are not in {y} ({some(idx)})"
            for idx, x, y in ((lacking, target, name), (extra, name, target))
            if len(idx)
        ]
        return (
            f"{name} has other {d!r} labels than {target}: {'; '.join(parts)}. They are "
            f"paired by label (the same labels, in any order): to leave out what {name} "
            f"lacks, pass {name}.reindex({d}={target}.{d}{fill}); if they are the same "
            f"entries in the same order under other names, relabel: "
            f"{name}.assign_coords({d}={target}.{d})"
        )
    return (
        f"{name} has its {d!r} labels in another order than {target}, and the labels of "
        f"{name if not mine.is_unique else target} repeat, so they cannot be matched; "
        f"make the labels unique or give {name} in {target}'s order"
    )


def sizes_differ(d: Hashable, name: str, n: int, target: str, m: int) -> str:
    """Say that ``name`` and ``target`` differ in size along an unlabelled dim ``d``."""
    return (
        f"sizes of dim {d!r} differ: {name} has {n} entries on dim {d!r} but {target} has "
        f"{m}; without labels on both, they are paired by position, so they must be equal"
    )


def pair_by_label(
    values: xr.DataArray,
    target: xr.DataArray,
    dims: Iterable[Hashable],
    *,
    name: str,
    target_name: str,
    check_sizes: bool = True,
    mismatch: Mismatch | None = None,
    advice: str = "",
) -> xr.DataArray:
    """Return ``values`` paired with ``target`` along ``dims``: the one pairing rule of xccm.

    Along each of ``dims`` that both have: where both label it, the same labels in another
    order are put in ``target``'s order (lazily for Dask; a MultiIndex too), and other (or
    repeated) labels are a ValueError (``mismatch`` builds its message, by default
    :func:`labels_differ`); where either does not label it, they are paired by position,
    so their sizes must agree (unless ``check_sizes`` is False: left to the caller).
    ``advice`` is appended to the size message. Only the (in-memory) indexes are read.

    Examples
    --------
    >>> target = xr.DataArray(np.zeros(3), dims="patch", coords={"patch": ["a", "b", "c"]})
    >>> w = xr.DataArray([3.0, 1.0, 2.0], dims="patch", coords={"patch": ["c", "a", "b"]})
    >>> pair_by_label(w, target, ["patch"], name="weights", target_name="measured").values
    array([1., 2., 3.])
    """
    for d in dims:
        if d not in values.dims or d not in target.dims:
            continue
        mine, theirs = values.indexes.get(d), target.indexes.get(d)
        if mine is None or theirs is None:
            if check_sizes and values.sizes[d] != target.sizes[d]:
                message = sizes_differ(d, name, values.sizes[d], target_name, target.sizes[d])
                raise ValueError(message + advice)
            continue
        if mine.equals(theirs):
            continue
        order = permutation(mine, theirs)
        if order is not None:
            values = values.isel({d: order})
            continue
        raise ValueError((mismatch or labels_differ)(d, name, mine, target_name, theirs))
    return values


def _fill(values: xr.DataArray, name: str) -> str:
    """Return the ``fill_value`` a ``reindex`` of ``values`` needs to leave out what it lacks."""
    if name == "weights":
        return ", fill_value=0"
    return ", fill_value=False" if values.dtype.kind == "b" else ""


def _default_mismatch(values: xr.DataArray) -> Mismatch:
    def build(d, name, mine, target, theirs):
        return labels_differ(d, name, mine, target, theirs, fill=_fill(values, name))

    return build


def match_labels(
    values: xr.DataArray, measured: xr.DataArray, argname: str, check_sizes: bool = False
) -> xr.DataArray:
    """Put ``values`` (a mask or weights) in ``measured``'s label order on every shared index.

    Dims that either does not index are paired by position: left to the caller, or with
    ``check_sizes``, checked to be of the same size here.

    Examples
    --------
    >>> measured = xr.DataArray(np.zeros((3, 3)), dims=("patch", "channel"),
    ...                         coords={"patch": ["a", "b", "c"]})
    >>> w = xr.DataArray([3.0, 1.0, 2.0], dims="patch", coords={"patch": ["c", "a", "b"]})
    >>> match_labels(w, measured, "weights").values.tolist()
    [1.0, 2.0, 3.0]
    """
    return pair_by_label(
        values,
        measured,
        list(values.dims),
        name=argname,
        target_name="measured",
        check_sizes=check_sizes,
        mismatch=_default_mismatch(values),
    )


def align_by_label(
    arrays: Sequence[xr.DataArray],
    samples: Sequence[Hashable],
    skip: tuple = (),
    names: tuple[str, ...] = ("measured", "reference", "weights"),
) -> list[xr.DataArray]:
    """Pair the inputs of one computation by label, never silently dropping or padding any.

    Along every dim but those in ``skip`` (the channel dims), each input is paired with the
    first that labels it (:func:`pair_by_label`); unlabelled dims are paired by position, so
    their sizes must agree.
    """
    arrays = list(arrays)
    for d in sorted({d for a in arrays for d in a.dims} - set(skip), key=str):
        have = [i for i, a in enumerate(arrays) if d in a.dims]
        labelled = [i for i in have if d in arrays[i].indexes]
        first = labelled[0] if labelled else have[0]
        for i in have:
            if i != first:
                arrays[i] = pair_by_label(
                    arrays[i],
                    arrays[first],
                    [d],
                    name=names[i],
                    target_name=names[first],
                    mismatch=_default_mismatch(arrays[i]),
                )
    return arrays


def borrow_labels(
    measured: xr.DataArray, reference: xr.DataArray, samples: Iterable[Hashable]
) -> xr.DataArray:
    """Give ``measured`` the reference's labels on sample dims it does not label itself.

    Unlabelled samples are paired with the reference's by position; labelling them so makes
    masks and weights given with labels pair with the right ones.
    """
    for d in samples:
        if (
            d not in measured.indexes
            and d in reference.indexes
            and d in measured.dims
            and measured.sizes[d] == reference.sizes[d]
        ):
            # Only the index (with a MultiIndex's levels), none of reference's other coords.
            labels = reference[d].reset_coords(drop=True).coords
            measured = measured.assign_coords(labels)
    return measured


def sample_array(
    values: Any, samples: Sequence[Hashable], measured: xr.DataArray, argname: str
) -> xr.DataArray:
    """Return per-sample values as a DataArray: plain arrays get the sample dims."""
    if isinstance(values, xr.DataArray):
        return values
    values = np.asarray(values)
    expected = tuple(measured.sizes[d] for d in samples)
    if values.shape != expected:
        raise ValueError(
            f"{argname} as a plain array must have the shape of the sample dims "
            f"{tuple(samples)}, {expected}; got shape {values.shape}. Pass a DataArray to "
            "give other dims"
        )
    return xr.DataArray(values, dims=tuple(samples))


def channel_order(
    labels: list | None,
    channels: list | None,
    *,
    name: str,
    target: str,
    dim: Hashable,
    hint: str = "",
) -> list[int] | None:
    """Positions in ``labels`` of ``channels``: the order that pairs channels by label.

    ``labels`` are what ``name`` holds per channel (e.g. a matrix's rows), ``channels``
    ``target``'s channel labels along ``dim``. None if either is unlabelled (paired by
    position) or they are in the same order. Other labels, or repeated ones, are an error;
    labels that differ only in type (``'1'`` against ``1``) are pointed out, with ``hint``
    (e.g. ``", e.g. matrix.assign_coords(...)"``) saying how to relabel.
    """
    if labels is None or channels is None or list(labels) == list(channels):
        return None
    labels, channels = list(labels), list(channels)
    if set(labels) != set(channels) or len(set(labels)) != len(channels):
        note = ""
        if sorted(map(str, labels)) == sorted(map(str, channels)):
            types = {type(x).__name__ for x in labels}, {type(x).__name__ for x in channels}
            note = (
                f" ({name} are {'/'.join(sorted(types[0]))}, {target} channels "
                f"{'/'.join(sorted(types[1]))}: relabel one{hint})"
            )
        raise ValueError(
            f"{name} are labelled {labels} but {target} channels {dim!r} are {channels}; they "
            f"must be the same labels (in any order){note}"
        )
    return [labels.index(c) for c in channels]
