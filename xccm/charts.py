"""Reference data for colour-checker charts: built-in charts and charts from a table.

The data are the reference values a measured chart is fitted against (for example with
:func:`xccm.fit`). The built-in tables are embedded as literals (in ``xccm._chart_data``):
this module needs only NumPy and xarray (and pandas, which xarray depends on, to read CSV
files), and colour-science is never imported.

Charts
------
``colorchecker24``
    X-Rite ColorChecker Classic (24 patches, formerly the Macbeth ColorChecker). Editions:
    ``"2014"``, charts made after November 2014 (current, the default); ``"pre2014"``,
    charts made before November 2014; ``"opencv"``, the GretagMacbeth 2005 data OpenCV uses
    for ``cv2.ccm.COLORCHECKER_MACBETH`` (it differs from ``"pre2014"`` only in the b* of
    "blue sky", -21.925 instead of -21.905, and in its D50 white).
``colorchecker_sg``
    X-Rite ColorChecker Digital SG (140 patches, 14 columns A-N by 10 rows 1-10). Editions
    ``"2014"`` (current, the default) and ``"pre2014"``, as for the Classic.
``vinyl18``
    The 18-patch "Vinyl" chart of OpenCV (``cv2.ccm.COLORCHECKER_VINYL``, which OpenCV
    calls the DKK ColorChecker): patches ``"1"`` to ``"6"`` are neutrals from white to
    black, ``"7"`` to ``"18"`` colours. One edition, ``"opencv"``.

Spaces
------
``lab-d50``
    CIE L*a*b* (CIE 1931 2° observer), exactly as published. X-Rite's data are relative to
    the ICC D50 white (attrs ``illuminant = "ICC D50"``, xy = (0.345702914918791,
    0.358538596679933)); OpenCV's to the CIE D50 white as OpenCV rounds it (attrs
    ``illuminant = [0.34567, 0.3585]``, its xy chromaticity, which colour-science's "D50",
    (0.3457, 0.3585), is not).
``xyz-d50``
    CIE XYZ under the same white as the L*a*b* data, relative so that the perfect
    reflecting white has Y = 1. Computed once from the L*a*b* values with colour-science
    0.4.7 (``Lab_to_XYZ``).
``srgb-linear``
    Linear sRGB: IEC 61966-2-1 primaries, D65 white, no transfer function (no "gamma"),
    relative so that the perfect reflecting white has Y = 1. It was computed once from the
    L*a*b* values with colour-science 0.4.7 (``Lab_to_XYZ`` under the white of the L*a*b*
    data, Bradford adaptation from that white to D65, then the exact inverse of sRGB's
    RGB-to-XYZ matrix), exactly as :func:`xccm.convert` converts, so that the two spaces
    of a chart agree to rounding error. Values are not clipped: a few patches (the
    Classic's "cyan", for example) lie just outside the sRGB gamut.

Measurements
------------
:func:`sample_measurement` returns a real, published measurement of a chart to try fits
on: ``"opencv"``, the photographed ColorChecker Classic of OpenCV's own colour-correction
test (opencv_contrib ``modules/mcc/test/test_ccm.cpp``, Apache License 2.0).

User charts
-----------
:func:`chart_from_table` builds a chart of the same shape from a CSV file, a pandas
DataFrame, a DataArray or an (n, 3) array of L*a*b*, XYZ or linear RGB values.

References
----------
X-Rite. New color specifications for ColorChecker SG and Classic Charts (the November
2014 change of specification; cited by colour-science as X-Rite, 2016), retrieved via
http://xritephoto.com/ph_product_overview.aspx?ID=938&Action=Support&SupportID=5884

The X-Rite numbers were taken from colour-science 0.4.7,
``colour/characterisation/datasets/colour_checkers/chromaticity_coordinates.py``
(``DATA_COLORCHECKER24_BEFORE_NOV2014_CIE_LAB``, ``DATA_COLORCHECKER24_AFTER_NOV2014_CIE_LAB``,
``DATA_COLORCHECKERSG_BEFORE_NOV2014_CIE_LAB`` and ``DATA_COLORCHECKERSG_AFTER_NOV2014_CIE_LAB``,
from which colour-science derives ``CCS_COLOURCHECKERS["ColorChecker24 - Before November
2014"]``, ``["ColorChecker24 - After November 2014"]``, ``["ColorCheckerSG - Before November
2014"]`` and ``["ColorCheckerSG - After November 2014"]``), https://www.colour-science.org.

OpenCV, ``modules/photo/src/ccm/color.cpp`` (``ColorChecker2005_LAB_D50_2``, which OpenCV
cites as https://www.imatest.com/wp-content/uploads/2011/11/Lab-data-Iluminate-D65-D50-spectro.xls,
and ``Vinyl_LAB_D50_2``), https://github.com/opencv/opencv; OpenCV's D50 white is
``modules/photo/src/ccm/colorspace.cpp`` (XYZ = (0.9642119944211994, 1, 0.8251882845188288)).
The measurement ``"opencv"`` is ``s`` of opencv_contrib's ``modules/mcc/test/test_ccm.cpp``
(Apache License 2.0), https://github.com/opencv/opencv_contrib.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr

from . import _chart_data as _data

__all__ = ["available_charts", "chart", "chart_from_table", "sample_measurement"]

# ---------------------------------------------------------------------------------------------
# built-in charts


@dataclass(frozen=True)
class _Space:
    """A space of the built-in charts."""

    channels: tuple[str, str, str]
    #: how the table was derived from the published L*a*b* (appended to attrs["source"])
    derivation: str
    #: the white of the values; None: the white of the edition's L*a*b* data
    illuminant: str | None = None
    rgb_space: str | None = None


@dataclass(frozen=True)
class _Edition:
    """One edition of a built-in chart: its published L*a*b* and the tables derived from it."""

    #: white of the L*a*b* and XYZ tables: a name, or OpenCV's D50 chromaticity
    illuminant: str | tuple[float, float]
    #: citation of the L*a*b* table
    source: str
    #: space -> table, one row per patch
    tables: Mapping[str, _data.Table]


@dataclass(frozen=True)
class _Chart:
    """A built-in chart."""

    #: accepted lower-case names, the canonical one first
    aliases: tuple[str, ...]
    patches: tuple[str, ...]
    #: edition -> data; the first is the current edition, the default
    editions: Mapping[str, _Edition]


#: OpenCV's D50 white (xy), the white of its L*a*b* data (colour-science's "D50" differs).
_OPENCV_D50 = (0.34567, 0.3585)


def _attr(illuminant: str | tuple[float, float]) -> str | list[float]:
    """Return an illuminant as an attr value: its name, or its xy chromaticity as a list."""
    return illuminant if isinstance(illuminant, str) else list(illuminant)


_SPACES: dict[str, _Space] = {
    "srgb-linear": _Space(
        ("R", "G", "B"),
        "; converted to linear sRGB (IEC 61966-2-1, D65, no transfer function, white Y = 1) "
        "with Bradford adaptation {illuminant} -> D65 and the inverse of the sRGB RGB -> XYZ "
        "matrix, using colour-science 0.4.7",
        illuminant="D65",
        rgb_space="sRGB",
    ),
    "lab-d50": _Space(("L", "a", "b"), ""),
    "xyz-d50": _Space(
        ("X", "Y", "Z"),
        "; converted to CIE XYZ (white Y = 1) under {illuminant} using colour-science 0.4.7",
    ),
}


def _tables(lab: _data.Table, xyz: _data.Table, srgb: _data.Table) -> dict[str, _data.Table]:
    return {"lab-d50": lab, "xyz-d50": xyz, "srgb-linear": srgb}


def _xrite_source(product: str, edition: str) -> str:
    return (
        f"X-Rite, 'New color specifications for ColorChecker SG and Classic Charts' ({product}, "
        f"edition {edition} November 2014; CIE L*a*b*, ICC D50, 2° observer), as given in "
        "colour-science 0.4.7 colour/characterisation/datasets/colour_checkers/"
        "chromaticity_coordinates.py"
    )


def _opencv_source(table: str, origin: str) -> str:
    return (
        f"OpenCV modules/photo/src/ccm/color.cpp, {table} ({origin}; CIE L*a*b*, D50 "
        "xy = (0.34567, 0.35850), 2° observer)"
    )


_CHARTS: dict[str, _Chart] = {
    "colorchecker24": _Chart(
        aliases=("colorchecker24", "colorchecker classic", "colorchecker_classic"),
        patches=_data.CC24_PATCHES,
        editions={
            "2014": _Edition(
                "ICC D50",
                _xrite_source("ColorChecker Classic", "after"),
                _tables(_data.CC24_2014_LAB, _data.CC24_2014_XYZ_D50, _data.CC24_2014_SRGB_LINEAR),
            ),
            "pre2014": _Edition(
                "ICC D50",
                _xrite_source("ColorChecker Classic", "before"),
                _tables(
                    _data.CC24_PRE2014_LAB,
                    _data.CC24_PRE2014_XYZ_D50,
                    _data.CC24_PRE2014_SRGB_LINEAR,
                ),
            ),
            "opencv": _Edition(
                _OPENCV_D50,
                _opencv_source(
                    "ColorChecker2005_LAB_D50_2",
                    "GretagMacbeth ColorChecker 2005 data, cited by OpenCV as https://www."
                    "imatest.com/wp-content/uploads/2011/11/Lab-data-Iluminate-D65-D50-spectro.xls",
                ),
                _tables(
                    _data.CC24_OPENCV_LAB, _data.CC24_OPENCV_XYZ_D50, _data.CC24_OPENCV_SRGB_LINEAR
                ),
            ),
        },
    ),
    "colorchecker_sg": _Chart(
        aliases=(
            "colorchecker_sg",
            "colorchecker sg",
            "colorchecker digital sg",
            "sg140",
            "digital sg",
        ),
        patches=_data.SG_PATCHES,
        editions={
            "2014": _Edition(
                "ICC D50",
                _xrite_source("ColorChecker Digital SG", "after"),
                _tables(_data.SG_2014_LAB, _data.SG_2014_XYZ_D50, _data.SG_2014_SRGB_LINEAR),
            ),
            "pre2014": _Edition(
                "ICC D50",
                _xrite_source("ColorChecker Digital SG", "before"),
                _tables(
                    _data.SG_PRE2014_LAB, _data.SG_PRE2014_XYZ_D50, _data.SG_PRE2014_SRGB_LINEAR
                ),
            ),
        },
    ),
    "vinyl18": _Chart(
        aliases=("vinyl18", "vinyl"),
        patches=_data.VINYL18_PATCHES,
        editions={
            "opencv": _Edition(
                _OPENCV_D50,
                _opencv_source("Vinyl_LAB_D50_2", "the Vinyl/DKK ColorChecker"),
                _tables(
                    _data.VINYL18_OPENCV_LAB,
                    _data.VINYL18_OPENCV_XYZ_D50,
                    _data.VINYL18_OPENCV_SRGB_LINEAR,
                ),
            ),
        },
    ),
}


def available_charts() -> tuple[str, ...]:
    """Return the canonical names of the built-in charts.

    Returns
    -------
    tuple of str
        Names accepted by :func:`chart` (each chart also accepts the aliases listed there).

    Examples
    --------
    >>> from xccm.charts import available_charts
    >>> available_charts()
    ('colorchecker24', 'colorchecker_sg', 'vinyl18')
    """
    return tuple(_CHARTS)


def _resolve(
    kind: str, value: object, choices: Mapping[str, Sequence[str]], *, context: str = ""
) -> str:
    """Map a case-insensitive ``value`` onto its canonical key in ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{kind} must be a str, got {type(value).__name__}")
    wanted = value.strip().lower()
    for canonical, accepted in choices.items():
        if wanted in accepted:
            return canonical
    raise ValueError(f"unknown {kind} {value!r}{context}; choose one of {list(choices)}")


def _edition_hint(name: object) -> str:
    """For an unknown chart ``name`` that is an edition, how to ask for that edition."""
    if not isinstance(name, str):
        return ""
    wanted = name.strip().lower()
    calls = [
        f"chart({key!r}, edition={wanted!r})"
        for key, spec in _CHARTS.items()
        if wanted in spec.editions
    ]
    if not calls:
        return ""
    return f" (it is an edition, not a chart: {' or '.join(calls)})"


def _data_array(
    values: np.ndarray, patches: Sequence[str], channels: Sequence[str], attrs: dict[str, Any]
) -> xr.DataArray:
    """Wrap an (n, 3) float64 array as a chart: dims (patch, channel), coords and attrs."""
    return xr.DataArray(
        values,
        dims=("patch", "channel"),
        coords={"patch": list(patches), "channel": list(channels)},
        attrs=attrs,
    )


def chart(
    name: str = "colorchecker24", *, space: str = "srgb-linear", edition: str | None = None
) -> xr.DataArray:
    """Return the reference colours of a built-in chart.

    Parameters
    ----------
    name : str, default "colorchecker24"
        The chart, case-insensitive (see :func:`available_charts`):

        - ``"colorchecker24"`` (aliases ``"colorchecker classic"``,
          ``"colorchecker_classic"``): X-Rite ColorChecker Classic, 24 patches named as in
          colour-science (``"dark skin"``, ..., ``"black 2 (1.5 D)"``).
        - ``"colorchecker_sg"`` (aliases ``"colorchecker sg"``,
          ``"colorchecker digital sg"``, ``"sg140"``, ``"digital sg"``): X-Rite
          ColorChecker Digital SG, 140 patches ``"A1"``, ``"B1"``, ..., ``"N10"`` (column
          letter, row number).
        - ``"vinyl18"`` (alias ``"vinyl"``): OpenCV's 18-patch Vinyl (DKK) chart, patches
          ``"1"`` to ``"18"`` in OpenCV's order.
    space : {"srgb-linear", "lab-d50", "xyz-d50"}, default "srgb-linear"
        ``"srgb-linear"``: linear sRGB (IEC 61966-2-1 primaries, D65 white, no transfer
        function), relative so that the perfect white has Y = 1; values are not clipped to
        [0, 1]. ``"lab-d50"``: CIE L*a*b* (2° observer), as published. ``"xyz-d50"``: CIE
        XYZ under the white of the L*a*b* data, perfect white Y = 1. Case-insensitive.
    edition : str, optional
        Which published data, case-insensitive; ``None`` (the default) is the chart's
        current edition. ColorChecker Classic: ``"2014"`` (current; charts made after
        November 2014), ``"pre2014"`` (charts made before November 2014) or ``"opencv"``
        (the 2005 data of OpenCV's ``COLORCHECKER_MACBETH``). ColorChecker Digital SG:
        ``"2014"`` (current) or ``"pre2014"``. Vinyl: ``"opencv"`` only.

    Returns
    -------
    xarray.DataArray
        float64 array with dims ``("patch", "channel")``, coords ``patch`` (patch names in
        chart order, row by row from the top left) and ``channel`` (``["R", "G", "B"]``,
        ``["L", "a", "b"]`` or ``["X", "Y", "Z"]``), and attrs ``chart``, ``space``,
        ``illuminant``, ``rgb_space`` (``"sRGB"``, ``"srgb-linear"`` only), ``edition``
        and ``source`` (the citation). ``illuminant`` is ``"D65"`` for ``"srgb-linear"``;
        for ``"lab-d50"`` and ``"xyz-d50"`` it is the white of the published data:
        ``"ICC D50"`` for X-Rite's, ``[0.34567, 0.3585]`` (OpenCV's D50 xy) for OpenCV's. Each
        call returns a new, independent array.

    Raises
    ------
    ValueError
        If ``name``, ``space`` or ``edition`` is not one of the choices above (for
        ``edition``, of that chart's editions).
    TypeError
        If ``name`` or ``space`` is not a string, or ``edition`` neither a string nor
        ``None``.

    Notes
    -----
    The X-Rite L*a*b* values are X-Rite's "New color specifications for ColorChecker SG and
    Classic Charts", as given in colour-science 0.4.7; the OpenCV ones are copied from
    OpenCV's ``modules/photo/src/ccm/color.cpp``. The XYZ and linear sRGB values were
    computed from them once with colour-science 0.4.7 (Bradford adaptation to D65 for
    sRGB) and are embedded here. OpenCV's own linear sRGB reference
    (``ColorCorrectionModel.getRefLinearRGB``) differs from ``"srgb-linear"`` by up to
    about 2e-4, because OpenCV derives its sRGB matrix from the primaries instead of using
    the rounded IEC 61966-2-1 matrix. See the module docstring for the full references.

    Examples
    --------
    >>> from xccm.charts import chart
    >>> ref = chart()
    >>> ref.dims, ref.shape, ref.attrs["illuminant"], ref.attrs["rgb_space"]
    (('patch', 'channel'), (24, 3), 'D65', 'sRGB')
    >>> lab = chart("ColorChecker Classic", space="lab-d50", edition="2014")
    >>> lab.sel(patch="white 9.5 (.05 D)").values.tolist(), lab.attrs["illuminant"]
    ([95.19, -1.03, 2.93], 'ICC D50')
    >>> sg = chart("colorchecker_sg", space="xyz-d50")
    >>> sg.shape, sg["channel"].values.tolist()
    ((140, 3), ['X', 'Y', 'Z'])
    >>> chart("vinyl", space="lab-d50").attrs["edition"]
    'opencv'
    """
    canonical = _resolve(
        "chart",
        name,
        {key: spec.aliases for key, spec in _CHARTS.items()},
        context=_edition_hint(name),
    )
    spec = _CHARTS[canonical]
    space_key = _resolve("space", space, {key: (key,) for key in _SPACES})
    if edition is None:
        edition_key = next(iter(spec.editions))
    elif isinstance(edition, str):
        edition_key = _resolve(
            "edition",
            edition,
            {key: (key,) for key in spec.editions},
            context=f" for chart {canonical!r}",
        )
    else:
        raise TypeError(f"edition must be a str or None, got {type(edition).__name__}")
    data = spec.editions[edition_key]
    space_spec = _SPACES[space_key]
    attrs = {
        "chart": canonical,
        "space": space_key,
        "illuminant": _attr(space_spec.illuminant or data.illuminant),
    }
    if space_spec.rgb_space is not None:
        attrs["rgb_space"] = space_spec.rgb_space
    attrs["edition"] = edition_key
    attrs["source"] = data.source + space_spec.derivation.format(illuminant=_attr(data.illuminant))
    values = np.array(data.tables[space_key], dtype=np.float64)
    return _data_array(values, spec.patches, space_spec.channels, attrs)


# ---------------------------------------------------------------------------------------------
# measured charts

_MEASUREMENTS = {
    "opencv": (
        "colorchecker24",
        "opencv",
        _data.OPENCV_CCM_TEST_MEASUREMENT,
        "OpenCV, opencv_contrib modules/mcc/test/test_ccm.cpp (Mat s, the measurement of "
        "its ColorCorrectionModel test; Apache License 2.0), "
        "https://github.com/opencv/opencv_contrib",
    ),
}


def sample_measurement(name: str = "opencv") -> xr.DataArray:
    """Return a real, published measurement of a chart: camera values of its patches.

    Parameters
    ----------
    name : {"opencv"}, default "opencv"
        ``"opencv"``: a photographed ColorChecker Classic, the 24 patch means of OpenCV's
        own colour-correction test (``s`` in opencv_contrib's
        ``modules/mcc/test/test_ccm.cpp``, Apache-2.0), published as 8-bit values (0-255),
        gamma-encoded. OpenCV's test linearises them with gamma 2.2 and fits them to the
        ``"opencv"`` edition of the chart in L*a*b* D50
        (``xccm.chart("colorchecker24", space="lab-d50", edition="opencv")``).

    Returns
    -------
    xarray.DataArray
        float64, dims ``("patch", "channel")``, the published values divided by 255 (so in
        [0, 1], still encoded: linearise with ``xccm.linearize(m, "gamma", gamma=2.2)``),
        with the patch coords of :func:`chart` for that chart (in chart order), channel
        coords ``["R", "G", "B"]`` and attrs ``chart``, ``chart_edition`` (the reference
        it was published with), ``encoding``, ``scale`` (what the published values were
        divided by) and ``source``. Each call returns a new array.

    Raises
    ------
    ValueError
        If ``name`` is not one of the measurements above.
    TypeError
        If ``name`` is not a string.

    Examples
    --------
    >>> import xccm
    >>> camera = xccm.linearize(sample_measurement("opencv"), "gamma", gamma=2.2)
    >>> ref = chart("colorchecker24", space="lab-d50", edition="opencv")
    >>> camera.dims, bool((camera.patch == ref.patch).all())
    (('patch', 'channel'), True)
    >>> round(float(camera[0, 0]), 6)  # OpenCV's test: src_rgbl[0] = 0.68078957, ...
    0.68079
    """
    key = _resolve("measurement", name, {k: (k,) for k in _MEASUREMENTS})
    chart_name, edition, table, source = _MEASUREMENTS[key]
    attrs = {
        "chart": chart_name,
        "chart_edition": edition,
        "encoding": "gamma 2.2 (as OpenCV's test linearises it)",
        "scale": "1/255 (published as 8-bit values)",
        "source": source,
    }
    values = np.array(table, dtype=np.float64) / 255.0
    return _data_array(values, _CHARTS[chart_name].patches, ("R", "G", "B"), attrs)


# ---------------------------------------------------------------------------------------------
# user charts


@dataclass(frozen=True)
class _UserSpace:
    """A space :func:`chart_from_table` accepts."""

    #: the ``space`` argument
    key: str
    #: attrs["space"] of the result
    name: str
    channels: tuple[str, str, str]
    #: accepted column headers / channel coords (lower case) -> canonical channel
    headers: Mapping[str, str]
    #: the accepted headers, for error messages
    expected: str


_USER_SPACES: dict[str, _UserSpace] = {
    "lab": _UserSpace(
        "lab",
        "lab",
        ("L", "a", "b"),
        {"l": "L", "l*": "L", "a": "a", "a*": "a", "b": "b", "b*": "b"},
        "L, a, b or L*, a*, b*",
    ),
    "xyz": _UserSpace("xyz", "xyz", ("X", "Y", "Z"), {"x": "X", "y": "Y", "z": "Z"}, "X, Y, Z"),
    "rgb": _UserSpace(
        "rgb", "rgb-linear", ("R", "G", "B"), {"r": "R", "g": "G", "b": "B"}, "R, G, B"
    ),
}


#: The space names of the built-in charts (:func:`chart`), accepted by
#: :func:`chart_from_table` too: name -> (its space, the white or RGB space it implies).
_USER_SPACE_ALIASES: dict[str, tuple[str, str | None]] = {
    "lab-d50": ("lab", "D50"),
    "xyz-d50": ("xyz", "D50"),
    "srgb-linear": ("rgb", "sRGB"),
    "rgb-linear": ("rgb", None),  # the attrs["space"] chart_from_table gives RGB tables
}
#: Names of a D50 white a ``"lab-d50"`` or ``"xyz-d50"`` table may give as ``illuminant``.
_D50_WHITES = ("d50", "icc d50")


def _user_space(space: object, illuminant: str | None, rgb_space: str) -> tuple[str, str | None]:
    """Resolve ``space`` of :func:`chart_from_table`; return its key and its illuminant.

    The built-in charts' names (``"lab-d50"``, ``"xyz-d50"``, ``"srgb-linear"``) are aliases
    of ``"lab"``, ``"xyz"`` and ``"rgb"`` that also fix the white (a D50 one) or the RGB space
    (sRGB): a conflicting ``illuminant`` or ``rgb_space`` is an error.
    """
    choices = {
        key: (key, *[a for a, (k, _) in _USER_SPACE_ALIASES.items() if k == key])
        for key in _USER_SPACES
    }
    if not isinstance(space, str):
        raise TypeError(f"space must be a str, got {type(space).__name__}")
    wanted = space.strip().lower()
    if not any(wanted in accepted for accepted in choices.values()):
        raise ValueError(
            f"unknown space {space!r}; choose one of {list(_USER_SPACES)} (or the built-in "
            f"charts' names {[a for a in _USER_SPACE_ALIASES if a != 'rgb-linear']})"
        )
    key, implied = _USER_SPACE_ALIASES.get(wanted, (wanted, None))
    if implied is None:
        return key, illuminant
    if key == "rgb":
        if rgb_space.strip().lower() != implied.lower():
            raise ValueError(
                f"space {space!r} is linear {implied}, but rgb_space={rgb_space!r}; for linear "
                f"RGB of another space pass space='rgb', rgb_space={rgb_space!r}"
            )
        return key, illuminant
    if illuminant is None:
        return key, implied
    if illuminant.strip().lower() not in _D50_WHITES:
        raise ValueError(
            f"space {space!r} is under a D50 white, but illuminant={illuminant!r}; for another "
            f"white pass space={key!r}, illuminant={illuminant!r}"
        )
    return key, illuminant


def _channel_order(labels: Sequence[object], space: _UserSpace) -> list[int] | None:
    """Positions of the canonical channels among ``labels``, or None if they do not match."""
    found = [space.headers.get(str(label).strip().lower()) for label in labels]
    if len(found) != 3 or set(found) != set(space.channels):
        return None
    return [found.index(channel) for channel in space.channels]


#: Byte-order marks and the encodings they announce (UTF-32's before UTF-16's, its prefix).
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _decode_table(data: bytes, where: str) -> str:
    """Text of a CSV file: UTF-8 (with or without BOM), UTF-16/32 with BOM, else Latin-1.

    Excel saves "CSV UTF-8" with a BOM, "Unicode text" as UTF-16 with a BOM, and plain
    "CSV" in the system's code page (Windows-1252, a superset of Latin-1's printable
    characters). A file with control characters other than tabs and line breaks after
    decoding is not a text table.
    """
    if not data.strip():
        raise ValueError(f"{where} is empty: expected a header row, then one line per patch")
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    candidates = [encoding] if encoding else ["utf-8", "cp1252", "latin-1"]
    for enc in candidates:
        try:
            text = data.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ValueError(f"{where} is not valid {encoding} text although it starts with its BOM")
    bad = re.search(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]", text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise ValueError(
            f"{where}, line {line}: character {bad.group()!r} is not text; is it a CSV file? "
            "Save the table as CSV (UTF-8, UTF-16 or Latin-1)"
        )
    return text


def _delimiter(text: str) -> str:
    """Return the header row's delimiter: a comma, else a tab (Excel's "Unicode text"), else ";"."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    return next((d for d in (",", "\t", ";") if d in header), ",")


def _csv_problem(text: str, sep: str) -> tuple[int, str] | None:
    """Line and description of the first malformed row of a CSV text, as Python's csv sees it."""
    reader = csv.reader(io.StringIO(text), delimiter=sep, strict=True)
    width = None
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return None
        except csv.Error as error:
            return start, f"{error}: a quote opened here is never closed"
        if not row:
            continue
        if width is None:
            width = len(row)
        elif len(row) > width:
            return start, f"{len(row)} fields, but the header row has {width}"


def _read_csv(path: str | os.PathLike[str], text_column: str | None) -> pd.DataFrame:
    """Read a CSV file as text; columns but ``text_column`` become numbers if all cells are."""
    where = f"CSV file {os.fspath(path)!r}"
    with open(path, "rb") as file:
        text = _decode_table(file.read(), where)
    sep = _delimiter(text)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        problem = _csv_problem(text, sep)
        if problem is None:
            raise ValueError(f"{where} cannot be read as CSV: {error}") from None
        line, what = problem
        raise ValueError(f"{where}, line {line}: {what}") from None
    columns = {}
    for label, texts in frame.items():
        stripped = texts.str.strip()
        if str(label).startswith("Unnamed: ") and (stripped == "").all():
            continue  # an empty column with no header, from trailing commas
        if str(label).strip() == text_column:
            columns[label] = stripped
            continue
        try:
            columns[label] = stripped.replace("", "nan").astype(np.float64)
        except ValueError:
            columns[label] = stripped
    return pd.DataFrame(columns)


def _from_frame(
    frame: pd.DataFrame, space: _UserSpace, patch_column: str | None, where: str, *, csv: bool
) -> tuple[np.ndarray, list[str] | None]:
    """Values (in canonical channel order) and patch names (None: unnamed) of a table."""
    labels = [str(label).strip() for label in frame.columns]
    if len(frame) == 0:
        raise ValueError(f"{where} has no patches")
    if patch_column is not None:
        if patch_column not in labels:
            raise ValueError(f"{where}: patch_column {patch_column!r} not found; columns: {labels}")
        patch_at: int | None = labels.index(patch_column)
    else:
        patch_at = next(
            (i for i, (_, column) in enumerate(frame.items()) if not _is_numeric(column)), None
        )
    numeric = [
        i for i, (_, column) in enumerate(frame.items()) if i != patch_at and _is_numeric(column)
    ]
    order = _channel_order([labels[i] for i in numeric], space)
    if order is None:
        others = [labels[i] for i in range(len(labels)) if i != patch_at and i not in numeric]
        message = (
            f"{where}: expected 3 numeric value columns named {space.expected} "
            f"(case-insensitive) for space {space.key!r}; found numeric "
            f"columns {[labels[i] for i in numeric]}"
        )
        if others:
            message += f" and non-numeric columns {others}"
        if patch_at is not None:
            message += f", patch names in column {labels[patch_at]!r}"
        if len(numeric) > 3 and patch_column is None:
            message += "; if a numeric column holds the patch names, pass patch_column"
        if csv and any(_is_number(label) for label in labels):
            message += "; is the header row missing? The first row must name the columns"
        raise ValueError(message)
    values = frame.iloc[:, [numeric[i] for i in order]].to_numpy(dtype=np.float64, copy=True)
    if patch_at is None:
        return values, None
    patches = []
    for row, patch in enumerate(frame.iloc[:, patch_at], start=1):
        if pd.isna(patch) or str(patch).strip() == "":
            raise ValueError(
                f"{where}: data row {row} has no patch name (column {labels[patch_at]!r})"
            )
        patches.append(str(patch).strip())
    return values, patches


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _from_data_array(table: xr.DataArray, space: _UserSpace) -> tuple[np.ndarray, list[str] | None]:
    """Values (in canonical channel order) and patch names (None: unnamed) of a DataArray."""
    if set(table.dims) != {"patch", "channel"} or table.ndim != 2:
        raise ValueError(f"a DataArray table must have dims ('patch', 'channel'), got {table.dims}")
    table = table.transpose("patch", "channel")
    if table.sizes["channel"] != 3:
        raise ValueError(f"a DataArray table must have 3 channels, got {table.sizes['channel']}")
    order = [0, 1, 2]
    if "channel" in table.coords:
        labels = table["channel"].values.tolist()
        found = _channel_order(labels, space)
        if found is None:
            raise ValueError(
                f"the DataArray's channel coords {labels} do not match space "
                f"{space.key!r}: expected {space.expected} (case-insensitive)"
            )
        order = found
    try:
        values = np.array(table.values, dtype=np.float64)[:, order]
    except (TypeError, ValueError) as error:
        raise TypeError(f"a DataArray table must hold numbers, got dtype {table.dtype}") from error
    patches = [str(p) for p in table["patch"].values] if "patch" in table.coords else None
    return values, patches


def chart_from_table(
    table: str | os.PathLike[str] | pd.DataFrame | xr.DataArray | npt.ArrayLike,
    *,
    space: str,
    illuminant: str | None = None,
    rgb_space: str = "sRGB",
    name: str = "custom",
    patch_column: str | None = None,
) -> xr.DataArray:
    r"""Build a chart from a table of reference colours (your own chart or measurements).

    Parameters
    ----------
    table : str, os.PathLike, pandas.DataFrame, xarray.DataArray or array-like
        The reference colours, one row per patch:

        - a path to a CSV file, or a DataFrame, with a header row. The file may be UTF-8
          (with or without a byte-order mark), UTF-16 with one (Excel's "Unicode text",
          tab-separated), or Latin-1/Windows-1252 (Excel's plain "CSV"); its delimiter is
          the header row's comma, else tab, else semicolon. The patch names are in
          column ``patch_column`` or else the first non-numeric column (if there is none,
          the patches are numbered ``"1"`` to ``"n"``); the three value columns are the
          remaining numeric columns, named after the channels of ``space`` in any order
          (case-insensitive: ``L, a, b`` or ``L*, a*, b*``; ``X, Y, Z``; ``R, G, B``).
          Other non-numeric columns are ignored. A DataFrame whose index is not the default
          ``RangeIndex`` has its index read as a column (so ``df.set_index("patch")`` works).
        - a DataArray with dims ``("patch", "channel")`` and 3 channels; its ``channel``
          coords, if any, must name the channels of ``space`` (in any order), and its
          ``patch`` coords, if any, are the patch names.
        - a 2-D array-like of shape (n, 3), channels in canonical order; patches are
          numbered ``"1"`` to ``"n"``.
    space : {"lab", "xyz", "rgb", "lab-d50", "xyz-d50", "srgb-linear", "rgb-linear"}
        What the values are, case-insensitive: CIE L*a*b* (L* in 0-100), CIE XYZ (relative:
        the perfect white has Y = 1; a 0-100 table is an error), or linear RGB (no transfer
        function) of ``rgb_space``. The names :func:`chart` uses are aliases that also fix
        the white or RGB space: ``"lab-d50"`` and ``"xyz-d50"`` are ``"lab"`` and ``"xyz"``
        under a D50 white (``illuminant`` ``"D50"``, the default, or ``"ICC D50"``),
        ``"srgb-linear"`` is ``"rgb"`` with ``rgb_space="sRGB"``, and ``"rgb-linear"`` (the
        ``attrs["space"]`` of an RGB result) is ``"rgb"``. An alias gives the same chart as
        the plain name.
    illuminant : str, optional
        The white of L*a*b* or XYZ values, recorded in attrs (default ``"D50"``). Only for
        ``space="lab"`` or ``"xyz"``.
    rgb_space : str, default "sRGB"
        The RGB space of ``space="rgb"`` values, recorded in attrs; ignored otherwise.
    name : str, default "custom"
        The chart's name (attrs ``chart``).
    patch_column : str, optional
        The column holding the patch names (CSV file or DataFrame only); needed when the
        names are numbers.

    Returns
    -------
    xarray.DataArray
        float64 array with dims ``("patch", "channel")``, coords ``patch`` (str) and
        ``channel`` (``["L", "a", "b"]``, ``["X", "Y", "Z"]`` or ``["R", "G", "B"]``, in
        that order whatever the input's), and attrs ``chart``, ``space`` (``"lab"``,
        ``"xyz"`` or ``"rgb-linear"``), ``illuminant`` (lab, xyz) or ``rgb_space`` (rgb),
        and ``source`` (the path, or ``"user table"``). The input is never modified.

    Raises
    ------
    ValueError
        If a CSV file is empty, not text, or malformed (a row with more fields than the
        header, an unterminated quote: the message names the file and line); if
        ``space`` is unknown, or an alias that ``illuminant`` or ``rgb_space``
        contradicts (``"lab-d50"`` with ``illuminant="D65"``); if the columns or channel
        coords do not match ``space`` or ``patch_column`` is missing; if the table is
        empty or not (n, 3); if a patch name is missing or duplicated; if a value is not
        finite; if ``illuminant`` is given with ``space="rgb"``, or ``patch_column`` with a
        DataArray or array.
    TypeError
        If an argument that must be a string is not.

    Examples
    --------
    >>> from xccm.charts import chart_from_table
    >>> ref = chart_from_table([[95.0, 0.1, 1.2], [20.5, 0.0, -0.4]], space="Lab")
    >>> ref["patch"].values.tolist(), ref["channel"].values.tolist()
    (['1', '2'], ['L', 'a', 'b'])
    >>> ref.attrs
    {'chart': 'custom', 'space': 'lab', 'illuminant': 'D50', 'source': 'user table'}

    A CSV file with a header row, then one line per patch:

    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = pathlib.Path(folder) / "chart.csv"
    ...     _ = path.write_text("patch,L*,a*,b*\nwhite,95.2,-1.0,2.9\nblack,20.6,0.1,-0.5")
    ...     ref = chart_from_table(path, space="lab")
    >>> ref.sel(patch="black").values.tolist()
    [20.6, 0.1, -0.5]
    """
    for argument, value in [("name", name), ("rgb_space", rgb_space)]:
        if not isinstance(value, str):
            raise TypeError(f"{argument} must be a str, got {type(value).__name__}")
    if patch_column is not None and not isinstance(patch_column, str):
        raise TypeError(f"patch_column must be a str or None, got {type(patch_column).__name__}")
    if illuminant is not None and not isinstance(illuminant, str):
        raise TypeError(f"illuminant must be a str or None, got {type(illuminant).__name__}")
    space_key, illuminant = _user_space(space, illuminant, rgb_space)
    user_space = _USER_SPACES[space_key]
    if illuminant is not None and space_key == "rgb":
        raise ValueError(
            "illuminant applies to space 'lab' or 'xyz' only; RGB values take the white of "
            "rgb_space"
        )
    is_frame = isinstance(table, (str, os.PathLike, pd.DataFrame))
    if patch_column is not None and not is_frame:
        raise ValueError("patch_column applies only to a CSV file or a DataFrame table")

    if isinstance(table, (str, os.PathLike)):
        source = os.fspath(table)
        where = f"CSV file {source!r}"
        frame = _read_csv(table, patch_column)
        values, patches = _from_frame(frame, user_space, patch_column, where, csv=True)
    elif isinstance(table, pd.DataFrame):
        source, where = "user table", "DataFrame table"
        frame = table if isinstance(table.index, pd.RangeIndex) else table.reset_index()
        values, patches = _from_frame(frame, user_space, patch_column, where, csv=False)
    elif isinstance(table, xr.DataArray):
        source, where = "user table", "DataArray table"
        values, patches = _from_data_array(table, user_space)
    else:
        source, where = "user table", "table"
        try:
            values = np.array(table, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(
                "table must be a path to a CSV file, a pandas DataFrame, an xarray DataArray "
                f"or a 2-D array-like of numbers, got {type(table).__name__}"
            ) from error
        if values.ndim != 2 or values.shape[1] != 3:
            raise ValueError(
                f"table must have shape (n, 3), got {values.shape} ({type(table).__name__})"
            )
        patches = None

    if len(values) == 0:
        raise ValueError(f"{where} has no patches")
    if patches is None:
        patches = [str(number) for number in range(1, len(values) + 1)]
    duplicated = sorted(patch for patch, count in Counter(patches).items() if count > 1)
    if duplicated:
        raise ValueError(f"{where}: duplicated patch names {duplicated}")
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(
            f"{where}: non-finite value {values[row, column]} in patch {patches[row]!r}, "
            f"channel {user_space.channels[column]!r}"
        )

    if space_key == "xyz" and values[:, 1].max() > 2:
        raise ValueError(
            f"{where}: XYZ must be relative, the perfect white at Y = 1, but Y reaches "
            f"{values[:, 1].max():g}; divide a 0-100 table by 100"
        )
    attrs = {"chart": name, "space": user_space.name}
    if space_key == "rgb":
        attrs["rgb_space"] = rgb_space
    else:
        attrs["illuminant"] = "D50" if illuminant is None else illuminant
    attrs["source"] = source
    return _data_array(values, patches, user_space.channels, attrs)
