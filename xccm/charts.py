"""Built-in reference data for colour-checker charts.

The data are the reference values a measured chart is fitted against (for example with
:func:`xccm.fit`). They are embedded as literals: this module needs only NumPy and xarray,
and colour-science is never imported.

Charts
------
``colorchecker24``
    X-Rite ColorChecker Classic (24 patches, formerly the Macbeth ColorChecker), in two
    editions: ``"2014"``, charts made after November 2014 (current), and ``"pre2014"``,
    charts made before November 2014.

Spaces
------
``lab-d50``
    CIE L*a*b* relative to the ICC D50 white (CIE 1931 2° observer), exactly as published
    by X-Rite.
``srgb-linear``
    Linear sRGB: IEC 61966-2-1 primaries and its XYZ-to-RGB matrix, D65 white, no transfer
    function (no "gamma"), relative so that the perfect reflecting white has Y = 1. It was
    computed once from the L*a*b* values with colour-science 0.4.7 (``Lab_to_XYZ`` under
    ICC D50, then ``XYZ_to_RGB`` to "sRGB" with Bradford adaptation D50 -> D65). Values
    are not clipped: the "cyan" patch lies just outside the sRGB gamut (R < 0).

References
----------
X-Rite. New color specifications for ColorChecker SG and Classic Charts (the November
2014 change of specification; cited by colour-science as X-Rite, 2016), retrieved via
http://xritephoto.com/ph_product_overview.aspx?ID=938&Action=Support&SupportID=5884

The numbers were taken from colour-science 0.4.7,
``colour/characterisation/datasets/colour_checkers/chromaticity_coordinates.py``
(``DATA_COLORCHECKER24_BEFORE_NOV2014_CIE_LAB`` and
``DATA_COLORCHECKER24_AFTER_NOV2014_CIE_LAB``, from which colour-science derives
``CCS_COLOURCHECKERS["ColorChecker24 - Before November 2014"]`` and
``["ColorChecker24 - After November 2014"]``), https://www.colour-science.org.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["available_charts", "chart"]

#: Patch names of the ColorChecker Classic, in chart order (row by row from the top left),
#: spelled as colour-science spells them.
_CC24_PATCHES: tuple[str, ...] = (
    "dark skin",
    "light skin",
    "blue sky",
    "foliage",
    "blue flower",
    "bluish green",
    "orange",
    "purplish blue",
    "moderate red",
    "purple",
    "yellow green",
    "orange yellow",
    "blue",
    "green",
    "red",
    "yellow",
    "magenta",
    "cyan",
    "white 9.5 (.05 D)",
    "neutral 8 (.23 D)",
    "neutral 6.5 (.44 D)",
    "neutral 5 (.70 D)",
    "neutral 3.5 (1.05 D)",
    "black 2 (1.5 D)",
)

# ---------------------------------------------------------------------------------------------
# Reference values, one row per patch in _CC24_PATCHES order. The *_LAB tables are X-Rite's
# published CIE L*a*b* (D50, 2°); the *_SRGB_LINEAR tables were computed from them once, with
# colour-science 0.4.7 (see the module docstring), and are stored at full float64 precision.

_CC24_PRE2014_LAB: tuple[tuple[float, float, float], ...] = (
    (37.986, 13.555, 14.059),  # dark skin
    (65.711, 18.13, 17.81),  # light skin
    (49.927, -4.88, -21.905),  # blue sky
    (43.139, -13.095, 21.905),  # foliage
    (55.112, 8.844, -25.399),  # blue flower
    (70.719, -33.397, -0.199),  # bluish green
    (62.661, 36.067, 57.096),  # orange
    (40.02, 10.41, -45.964),  # purplish blue
    (51.124, 48.239, 16.248),  # moderate red
    (30.325, 22.976, -21.587),  # purple
    (72.532, -23.709, 57.255),  # yellow green
    (71.941, 19.363, 67.857),  # orange yellow
    (28.778, 14.179, -50.297),  # blue
    (55.261, -38.342, 31.37),  # green
    (42.101, 53.378, 28.19),  # red
    (81.733, 4.039, 79.819),  # yellow
    (51.935, 49.986, -14.574),  # magenta
    (51.038, -28.631, -28.638),  # cyan
    (96.539, -0.425, 1.186),  # white 9.5 (.05 D)
    (81.257, -0.638, -0.335),  # neutral 8 (.23 D)
    (66.766, -0.734, -0.504),  # neutral 6.5 (.44 D)
    (50.867, -0.153, -0.27),  # neutral 5 (.70 D)
    (35.656, -0.421, -1.231),  # neutral 3.5 (1.05 D)
    (20.461, -0.079, -0.973),  # black 2 (1.5 D)
)

_CC24_PRE2014_SRGB_LINEAR: tuple[tuple[float, float, float], ...] = (
    (0.1730117821306575, 0.08212963621269631, 0.056735141227023146),  # dark skin
    (0.5682530991181728, 0.29275757504052935, 0.21838372941990045),  # light skin
    (0.10368730313425659, 0.19588562690816808, 0.3312602019672104),  # blue sky
    (0.10157225505710442, 0.14893319979522643, 0.05188993348107072),  # foliage
    (0.2215716915008277, 0.21586227950467007, 0.43463409024018324),  # blue flower
    (0.10800534701993174, 0.5143777049527268, 0.412664931721365),  # bluish green
    (0.7472893441777785, 0.20071600318816463, 0.02810734521574885),  # orange
    (0.05757921165877352, 0.10516661785450851, 0.4029754265219551),  # purplish blue
    (0.5667188896957905, 0.08431192406398377, 0.11971697786850126),  # moderate red
    (0.11098843902555257, 0.04231807271215053, 0.14293354564362978),  # purple
    (0.3453794708725845, 0.5087609655253693, 0.04946244205494377),  # yellow green
    (0.7945134605990752, 0.3595180118686809, 0.02055098882285764),  # orange yellow
    (0.01710910065055076, 0.05021652269660388, 0.2922159466064392),  # blue
    (0.05593890936701566, 0.3002175911165534, 0.06872007707665889),  # green
    (0.4558223719617232, 0.0303896676485368, 0.040872441262313805),  # red
    (0.857243519661255, 0.5676750697812374, 0.0068865790629920156),  # yellow
    (0.5334524210875928, 0.08866757848196606, 0.3075309057537706),  # magenta
    (-0.03741941189012548, 0.24698312288358182, 0.4004257541881177),  # cyan
    (0.9124827822962358, 0.9150299814140938, 0.8937379523900051),  # white 9.5 (.05 D)
    (0.5797272428571811, 0.5920614260352379, 0.5933325259121297),  # neutral 8 (.23 D)
    (0.3548493235909497, 0.36548326959494076, 0.3675806767851451),  # neutral 6.5 (.44 D)
    (0.1900436717005412, 0.19188465694879767, 0.19309823294100426),  # neutral 5 (.70 D)
    (0.08527834885153172, 0.08888825484394565, 0.09258261099456734),  # neutral 3.5 (1.05 D)
    (0.030314545488795846, 0.03114114079555838, 0.03275078634725092),  # black 2 (1.5 D)
)

_CC24_2014_LAB: tuple[tuple[float, float, float], ...] = (
    (37.54, 14.37, 14.92),  # dark skin
    (64.66, 19.27, 17.5),  # light skin
    (49.32, -3.82, -22.54),  # blue sky
    (43.46, -12.74, 22.72),  # foliage
    (54.94, 9.61, -24.79),  # blue flower
    (70.48, -32.26, -0.37),  # bluish green
    (62.73, 35.83, 56.5),  # orange
    (39.43, 10.75, -45.17),  # purplish blue
    (50.57, 48.64, 16.67),  # moderate red
    (30.1, 22.54, -20.87),  # purple
    (71.77, -24.13, 58.19),  # yellow green
    (71.51, 18.24, 67.37),  # orange yellow
    (28.37, 15.42, -49.8),  # blue
    (54.38, -39.72, 32.27),  # green
    (42.43, 51.05, 28.62),  # red
    (81.8, 2.67, 80.41),  # yellow
    (50.63, 51.28, -14.12),  # magenta
    (49.57, -29.71, -28.32),  # cyan
    (95.19, -1.03, 2.93),  # white 9.5 (.05 D)
    (81.29, -0.57, 0.44),  # neutral 8 (.23 D)
    (66.89, -0.75, -0.06),  # neutral 6.5 (.44 D)
    (50.76, -0.13, 0.14),  # neutral 5 (.70 D)
    (35.63, -0.46, -0.48),  # neutral 3.5 (1.05 D)
    (20.64, 0.07, -0.46),  # black 2 (1.5 D)
)

_CC24_2014_SRGB_LINEAR: tuple[tuple[float, float, float], ...] = (
    (0.173683437602043, 0.07879314545074977, 0.052855827196141444),  # dark skin
    (0.5597836416925605, 0.27744724380672586, 0.21089160092626535),  # light skin
    (0.10420114799207267, 0.1889152046798655, 0.3289301284136272),  # blue sky
    (0.10574358004201767, 0.15075415960960964, 0.050837138166097966),  # foliage
    (0.22743860174084465, 0.212408084742437, 0.42644644297054),  # blue flower
    (0.11529258137899116, 0.5074414022850414, 0.4111285378715892),  # bluish green
    (0.7459025864160008, 0.2021429819671005, 0.029868153118422947),  # orange
    (0.05874183577872806, 0.1011816742735338, 0.38774802429031435),  # purplish blue
    (0.560130133165314, 0.08015322782612809, 0.11458605185933175),  # moderate red
    (0.10916727972022397, 0.042000471547201594, 0.13813721858611958),  # purple
    (0.3327503160134462, 0.4973855903605014, 0.042596237587589944),  # yellow green
    (0.7710367294573095, 0.357918390079481, 0.020449106988979247),  # orange yellow
    (0.020955510193018317, 0.047533648277743076, 0.28412910597323776),  # blue
    (0.046062230515330975, 0.2920479867936237, 0.06147858864921271),  # green
    (0.44617063972216353, 0.036405824962550064, 0.04055107798507081),  # red
    (0.841684296935464, 0.5744075551955385, 0.004662230492553403),  # yellow
    (0.5223415746518354, 0.07781689965442054, 0.28931306780966737),  # magenta
    (-0.04391766557048155, 0.23366164211603907, 0.37718957343456677),  # cyan
    (0.8795286441146748, 0.885027873764408, 0.8342472481089932),  # white 9.5 (.05 D)
    (0.5844934612356006, 0.5921684242771115, 0.5844783513656728),  # neutral 8 (.23 D)
    (0.3576935625912019, 0.36707715576202393, 0.3652662504705722),  # neutral 6.5 (.44 D)
    (0.19009391509371865, 0.19086626328062545, 0.18981350814924902),  # neutral 5 (.70 D)
    (0.0859293636713092, 0.08873531753608505, 0.08980398410905843),  # neutral 3.5 (1.05 D)
    (0.031354242077744066, 0.031495863312629185, 0.03232258128414785),  # black 2 (1.5 D)
)
_SOURCE_LAB = (
    "X-Rite, 'New color specifications for ColorChecker SG and Classic Charts' "
    "(ColorChecker Classic, {edition_text}; CIE L*a*b*, ICC D50, 2° observer), "
    "as given in colour-science 0.4.7 "
    "colour/characterisation/datasets/colour_checkers/chromaticity_coordinates.py"
)
_SOURCE_SRGB = (
    _SOURCE_LAB + "; converted to linear sRGB (IEC 61966-2-1, D65, no transfer function, "
    "white Y = 1) with Bradford adaptation D50 -> D65 using colour-science 0.4.7"
)

# canonical chart name -> accepted (lower-case) names
_CHART_ALIASES: dict[str, tuple[str, ...]] = {
    "colorchecker24": ("colorchecker24", "colorchecker classic", "colorchecker_classic"),
}
# canonical space -> (channel labels, illuminant, source template)
_SPACES: dict[str, tuple[tuple[str, str, str], str, str]] = {
    "srgb-linear": (("R", "G", "B"), "D65", _SOURCE_SRGB),
    "lab-d50": (("L", "a", "b"), "D50", _SOURCE_LAB),
}
# canonical edition -> human-readable description
_EDITIONS: dict[str, str] = {
    "2014": "edition after November 2014",
    "pre2014": "edition before November 2014",
}
_TABLES: dict[tuple[str, str, str], tuple[tuple[float, float, float], ...]] = {
    ("colorchecker24", "2014", "lab-d50"): _CC24_2014_LAB,
    ("colorchecker24", "2014", "srgb-linear"): _CC24_2014_SRGB_LINEAR,
    ("colorchecker24", "pre2014", "lab-d50"): _CC24_PRE2014_LAB,
    ("colorchecker24", "pre2014", "srgb-linear"): _CC24_PRE2014_SRGB_LINEAR,
}
_PATCHES: dict[str, tuple[str, ...]] = {"colorchecker24": _CC24_PATCHES}


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
    ('colorchecker24',)
    """
    return tuple(_CHART_ALIASES)


def _resolve(kind: str, value: object, choices: dict[str, tuple[str, ...]]) -> str:
    """Map a case-insensitive ``value`` onto its canonical key in ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{kind} must be a str, got {type(value).__name__}")
    wanted = value.strip().lower()
    for canonical, accepted in choices.items():
        if wanted in accepted:
            return canonical
    raise ValueError(f"unknown {kind} {value!r}; choose one of {list(choices)}")


def chart(
    name: str = "colorchecker24", *, space: str = "srgb-linear", edition: str = "2014"
) -> xr.DataArray:
    """Return the reference colours of a built-in chart.

    Parameters
    ----------
    name : str, default "colorchecker24"
        The chart, case-insensitive. ``"colorchecker24"`` (aliases ``"colorchecker classic"``
        and ``"colorchecker_classic"``) is the X-Rite ColorChecker Classic with 24 patches.
        See :func:`available_charts`.
    space : {"srgb-linear", "lab-d50"}, default "srgb-linear"
        ``"srgb-linear"``: linear sRGB (IEC 61966-2-1 primaries, D65 white, no transfer
        function), relative so that the perfect white has Y = 1; values are not clipped to
        [0, 1]. ``"lab-d50"``: CIE L*a*b* under D50 (2° observer), as published.
        Case-insensitive.
    edition : {"2014", "pre2014"}, default "2014"
        ``"2014"``: charts made after November 2014 (the current specification);
        ``"pre2014"``: charts made before November 2014. Case-insensitive.

    Returns
    -------
    xarray.DataArray
        float64 array with dims ``("patch", "channel")``, coords ``patch`` (patch names in
        chart order, row by row from the top left) and ``channel`` (``["R", "G", "B"]`` or
        ``["L", "a", "b"]``), and attrs ``chart``, ``space``, ``illuminant`` (``"D65"`` or
        ``"D50"``), ``edition`` and ``source``. Each call returns a new, independent array.

    Raises
    ------
    ValueError
        If ``name``, ``space`` or ``edition`` is not one of the choices above.
    TypeError
        If any of them is not a string.

    Notes
    -----
    The L*a*b* values are X-Rite's "New color specifications for ColorChecker SG and
    Classic Charts", as given in colour-science; the linear sRGB values were computed from
    them once with colour-science (Bradford adaptation D50 -> D65) and are embedded here.

    Examples
    --------
    >>> from xccm.charts import chart
    >>> ref = chart()
    >>> ref.dims, ref.shape, ref.attrs["illuminant"]
    (('patch', 'channel'), (24, 3), 'D65')
    >>> lab = chart("ColorChecker Classic", space="lab-d50", edition="2014")
    >>> lab.sel(patch="white 9.5 (.05 D)").values.tolist()
    [95.19, -1.03, 2.93]
    """
    canonical = _resolve("chart", name, _CHART_ALIASES)
    space_key = _resolve("space", space, {s: (s,) for s in _SPACES})
    edition_key = _resolve("edition", edition, {e: (e,) for e in _EDITIONS})
    channels, illuminant, source = _SPACES[space_key]
    values = np.array(_TABLES[canonical, edition_key, space_key], dtype=np.float64)
    return xr.DataArray(
        values,
        dims=("patch", "channel"),
        coords={"patch": list(_PATCHES[canonical]), "channel": list(channels)},
        attrs={
            "chart": canonical,
            "space": space_key,
            "illuminant": illuminant,
            "edition": edition_key,
            "source": source.format(edition_text=_EDITIONS[edition_key]),
        },
    )
