"""Colour spaces and colour differences on labelled arrays, on top of colour-science.

Linear RGB of a named space (sRGB, Adobe RGB, Display P3, ProPhoto, Rec.2020, ...), CIE XYZ
and CIE L*a*b* under any illuminant (CIE 1931 2° observer), with chromatic adaptation
(Bradford by default) between whites; and colour differences ΔE (CIE76, CIE94, CIEDE2000,
CMC l:c) plus Euclidean distances in linear and in encoded RGB. The colorimetry itself is
colour-science's (``colour-science`` on PyPI, the ``colour`` extra); this module adds names,
dims, attrs and laziness.

Where a colour space is not given, it is read from ``attrs["space"]`` (as :func:`xccm.chart`
sets it): ``"lab"``, ``"lab-d50"``, ``"xyz"``, ``"xyz-d65"``, ``"rgb-linear"`` or
``"<rgb space>-linear"`` (e.g. ``"srgb-linear"``), with ``attrs["illuminant"]`` and
``attrs["rgb_space"]`` taking precedence over a suffix. XYZ is relative (white Y = 1); L* is in
[0, 100]. Linear RGB -> XYZ uses the RGB space's matrix as colour-science gives it, and
XYZ -> RGB its exact inverse, so that every conversion round-trips to rounding error.
"""

from __future__ import annotations

import difflib
import functools
import re
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr

from ._labels import asarray, check_data, require_one_chunk, wrap

__all__ = ["DISTANCES", "convert", "delta_e"]

Kind = Literal["rgb", "xyz", "lab"]
Standard = Literal["reference", "sample"]

#: Colour-difference methods (``method=`` of :func:`delta_e`, ``loss=`` of :func:`xccm.fit`):
#: name -> (colour-science method, keyword arguments). ``"linear_rgb"`` and ``"rgb"`` are
#: Euclidean distances in linear and in encoded RGB of the RGB space.
DISTANCES: dict[str, tuple[str, dict[str, Any]]] = {
    "cie76": ("CIE 1976", {}),
    "cie94": ("CIE 1994", {"textiles": False}),
    "cie94_textiles": ("CIE 1994", {"textiles": True}),
    "ciede2000": ("CIE 2000", {}),
    "cmc": ("CMC", {"l": 1, "c": 1}),
    "cmc_2to1": ("CMC", {"l": 2, "c": 1}),
    "linear_rgb": ("", {}),
    "rgb": ("", {}),
}
#: Short names of common RGB spaces -> colour-science names (any colour-science name works too).
RGB_SPACES = {
    "srgb": "sRGB",
    "adobe-rgb": "Adobe RGB (1998)",
    "display-p3": "Display P3",
    "dci-p3": "DCI-P3",
    "prophoto": "ProPhoto RGB",
    "rec2020": "ITU-R BT.2020",
    "rec709": "ITU-R BT.709",
    "apple-rgb": "Apple RGB",
    "wide-gamut-rgb": "Adobe Wide Gamut RGB",
    "acescg": "ACEScg",
}
_OBSERVER = "CIE 1931 2 Degree Standard Observer"
#: RGB_Colourspace objects passed as rgb_space, by lower-case name, so that the space names
#: written into attrs ("<name>-linear", rgb_space) can be read back within the session.
_CUSTOM_RGB_SPACES: dict[str, Any] = {}
_CHANNELS: dict[str, tuple[str, str, str]] = {
    "rgb": ("R", "G", "B"),
    "xyz": ("X", "Y", "Z"),
    "lab": ("L", "a", "b"),
}
_C = "__xccm_colour__"  # private core-dim name inside apply_ufunc
_C_REF = "__xccm_colour_ref__"


@functools.cache
def _colour():
    """Import colour-science once, quietly (it warns about optional plotting packages)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import colour
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "this needs colour-science; install it with `pip install xccm[colour]`"
        ) from err
    return colour


# ---------------------------------------------------------------------------------------------
# names: distances, RGB spaces, illuminants, spaces


def distance_name(method: str, argname: str = "method") -> str:
    """Canonical name of a distance (``"ciede2000"``, ...); ValueError if unknown.

    Names are those of :data:`DISTANCES`, case-insensitive, with ``-`` or a space for
    ``_`` (``"CIEDE2000"``, ``"cie94-textiles"``). There are no other aliases: a near miss
    such as ``"cie2000"`` is an error that names the closest valid method.
    """
    key = None
    if isinstance(method, str):
        key = method.strip().lower().replace(" ", "_").replace("-", "_")
        if key in DISTANCES:
            return key
    close = difflib.get_close_matches(key, list(DISTANCES), n=1, cutoff=0.6) if key else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown {argname} {method!r}{hint}; expected one of {list(DISTANCES)}")


def rgb_colourspace(name):
    """Return the colour-science ``RGB_Colourspace`` called ``name`` (or colour's name).

    An ``RGB_Colourspace`` object is returned as it is: a space colour-science does not
    name (e.g. sRGB with OpenCV's rounding of the D65 white) can be passed wherever an
    ``rgb_space`` is.
    """
    colour = _colour()
    if isinstance(name, colour.RGB_Colourspace):
        _CUSTOM_RGB_SPACES.setdefault(name.name.lower(), name)
        return name
    if not isinstance(name, str):
        raise TypeError(f"rgb_space must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    key = RGB_SPACES.get(key.replace("_", "-").replace(" ", "-"), key)
    space = _named_rgb_colourspace(key.lower(), len(colour.RGB_COLOURSPACES))
    if space is not None:
        return space
    if key.lower() in _CUSTOM_RGB_SPACES:
        return _CUSTOM_RGB_SPACES[key.lower()]
    raise ValueError(
        f"unknown rgb_space {name!r}; use one of {list(RGB_SPACES)} or a colour-science name "
        "(colour.RGB_COLOURSPACES), e.g. 'Display P3'"
    )


@functools.lru_cache(maxsize=64)
def _named_rgb_colourspace(key: str, _n_spaces: int):
    """colour-science's RGB space whose lower-case name is ``key``, or None.

    Cached (a fit looks its space up several times); ``_n_spaces``, the number of spaces
    colour-science knows, keys the cache so that a space registered later is found.
    """
    for candidate, space in _colour().RGB_COLOURSPACES.items():
        if candidate.lower() == key:
            return space
    return None


def illuminant_xy(illuminant: str | Sequence[float] | None) -> np.ndarray:
    """CIE xy chromaticity (2° observer) of a named illuminant (``"D65"``, ``"ICC D50"``...).

    An (x, y) pair is checked and returned; anything else (None too) is a ValueError.
    """
    table = _colour().CCS_ILLUMINANTS[_OBSERVER]
    if isinstance(illuminant, str):
        for name, xy in table.items():
            if name.lower() == illuminant.strip().lower():
                return np.asarray(xy, dtype=np.float64)
        raise ValueError(
            f"unknown illuminant {illuminant!r}; use a name of colour.CCS_ILLUMINANTS"
            f"[{_OBSERVER!r}] such as 'D50', 'ICC D50', 'D65', 'A', 'E', or an (x, y) pair"
        )
    try:
        xy = np.asarray(illuminant, dtype=np.float64)
    except (TypeError, ValueError):
        xy = None
    if xy is None or xy.shape != (2,) or not np.all(np.isfinite(xy)) or xy[1] <= 0:
        raise ValueError(f"an illuminant given as chromaticity must be (x, y); got {illuminant!r}")
    return xy


@dataclass(frozen=True)
class Space:
    """A colour space: linear RGB of ``rgb_space``, or XYZ / Lab under ``illuminant``."""

    kind: Kind
    illuminant: str | tuple[float, ...] | None = None
    rgb_space: Any = None  # a name (str) or an RGB_Colourspace

    @property
    def white(self) -> np.ndarray:
        """Chromaticity (x, y) of the space's white."""
        if self.kind == "rgb":
            return np.asarray(rgb_colourspace(self.rgb_space).whitepoint, dtype=np.float64)
        return illuminant_xy(self.illuminant)

    def attrs(self) -> dict[str, Any]:
        """Return the attrs that describe this space (see the module docstring)."""
        if self.kind == "rgb":
            name = rgb_colourspace(self.rgb_space).name
            short = {v: k for k, v in RGB_SPACES.items()}.get(name, name)
            return {"space": f"{short}-linear", "rgb_space": name}
        ill = self.illuminant
        label = ill.lower().replace(" ", "-") if isinstance(ill, str) else _xy_label(ill)
        return {"space": f"{self.kind}-{label}", "illuminant": ill}


def _xy_label(xy) -> str:
    """``"xy(0.3127,0.329)"``: a chromaticity in a space name, parsed back by _parse_space."""
    x, y = (float(v) for v in xy)
    return f"xy({x:.6g},{y:.6g})"


def space_of(
    obj: xr.DataArray | None,
    space: str | Space | None,
    *,
    rgb_space: str,
    argname: str,
    dim: Hashable,
) -> Space:
    """Return the space of ``obj``: ``space`` if given, else its attrs, else ``rgb_space``.

    Channel coords, where present, must be the ones of that space (L, a, b for Lab...).
    """
    attrs = obj.attrs if obj is not None else {}
    if isinstance(space, Space):
        parsed = space
    else:
        parsed = _parse_space(
            space or attrs.get("space"), attrs, rgb_space, argname, from_attrs=space is None
        )
    if obj is not None and dim in obj.indexes:
        labels = [str(c) for c in obj.indexes[dim]]
        expected = list(_CHANNELS[parsed.kind])
        if [c.rstrip("*").lower() for c in labels] != [c.lower() for c in expected]:
            raise ValueError(
                f"{argname} is in {parsed.kind.upper() if parsed.kind != 'lab' else 'Lab'} "
                f"(space {_space_name(space, attrs)!r}) so its {dim!r} coords must be "
                f"{expected}; got {labels}. Pass {argname}_space= (or set attrs['space']) if "
                "the space is wrong, or relabel the channels"
            )
    return parsed


def _space_name(space, attrs) -> str:
    """Return the space as the user gave it, for messages."""
    if isinstance(space, Space):
        return space.attrs()["space"]
    return str(space if space is not None else attrs.get("space", "linear RGB (default)"))


#: How people and colour-science spell CIE L*a*b* and CIE XYZ ("CIE Lab", "CIELAB",
#: "L*a*b*", "CIE XYZ", "XYZ"...), optionally followed by an illuminant ("lab-d50").
_KIND_NAMES = {
    "lab": r"(?:cie[\s_-]*)?(?:1976[\s_-]*)?l\*?a\*?b\*?",
    "xyz": r"(?:cie[\s_-]*)?(?:1931[\s_-]*)?xyz",
}
_SEP = r"[\s_-]+"
#: Names of linear RGB of ``rgb_space``: "rgb", "linear", "rgb-linear", "linear rgb".
_LINEAR_RGB = re.compile(rf"rgb|linear|rgb{_SEP}linear|linear{_SEP}rgb", re.IGNORECASE)


def space_kind(given: object) -> Kind | None:
    """Whether a space name is Lab, XYZ or (linear) RGB, without colour-science; None if unknown."""
    if not isinstance(given, str):
        return None
    for kind, pattern in _KIND_NAMES.items():
        if re.fullmatch(rf"{pattern}(?:{_SEP}.+)?", given.strip(), re.IGNORECASE):
            return kind  # type: ignore[return-value]
    return "rgb" if _linear_rgb_name(given) is not None else None


def _linear_rgb_name(given: str) -> str | None:
    """Return the RGB space of a linear-RGB name ("" for plain "rgb-linear"), else None."""
    text = given.strip()
    if _LINEAR_RGB.fullmatch(text):
        return ""
    match = re.fullmatch(rf"(.+?){_SEP}linear|linear{_SEP}(.+)", text, re.IGNORECASE)
    if match:
        return (match.group(1) or match.group(2)).strip()
    return None


def _parse_space(given, attrs: dict, rgb_space, argname: str, from_attrs: bool = True) -> Space:
    """Parse a space string; ``attrs`` fill in (or, for a space from attrs, refine) it.

    Lab and XYZ are accepted as colour-science and most people spell them (``"CIE Lab"``,
    ``"CIELAB"``, ``"L*a*b*"``, ``"CIE XYZ"``, ``"XYZ"``), with an illuminant suffix
    (``"lab-d50"``, ``"CIE Lab D65"``). Linear RGB is ``"rgb"``, ``"linear"``,
    ``"rgb-linear"`` or ``"<rgb space>-linear"`` (also ``"linear <rgb space>"``). A bare
    RGB space name (``"sRGB"``) is an error: it does not say encoded or linear.
    """
    if given is not None and not isinstance(given, str):
        raise TypeError(f"{argname} space must be a str; got {type(given).__name__}")
    text = "rgb" if given is None else given.strip()
    for kind, pattern in _KIND_NAMES.items():
        match = re.fullmatch(rf"{pattern}(?:{_SEP}(.+))?", text, re.IGNORECASE)
        if not match:
            continue
        suffix = match.group(1) or ""
        xy = re.fullmatch(r"xy\(([^,]+),([^)]+)\)", suffix.strip().lower())
        if xy:  # a chromaticity, as Space.attrs writes it
            suffix = tuple(float(v) for v in xy.groups())
        else:
            suffix = suffix.replace("-", " ").replace("_", " ").upper() or None
        # attrs["illuminant"] is exact where a space name is a family ("lab-d50" for
        # ICC D50 data); a space the caller names explicitly wins over attrs.
        if from_attrs:
            illuminant = attrs.get("illuminant") or suffix
        else:
            illuminant = suffix or attrs.get("illuminant")
        if illuminant is None:
            raise ValueError(
                f"{argname} is in {kind!r} (space {given!r}) but its illuminant is unknown; "
                f"set attrs['illuminant'] or give the space as e.g. '{kind}-d50'"
            )
        try:
            illuminant_xy(illuminant)  # validate now
        except ValueError as err:
            raise ValueError(f"{argname} space {given!r}: {err}") from None
        return Space(kind, illuminant=illuminant)  # type: ignore[arg-type]
    name = _linear_rgb_name(text)
    if name == "":
        return Space("rgb", rgb_space=attrs.get("rgb_space") or rgb_space)
    expected = (
        "'lab[-<illuminant>]' (or 'CIE Lab', 'CIELAB'), 'xyz[-<illuminant>]' (or 'CIE XYZ'), "
        "'rgb-linear' or '<rgb space>-linear' (e.g. 'srgb-linear')"
    )
    if name is None:
        try:
            cs = rgb_colourspace(text)
        except ValueError:
            raise ValueError(f"unknown {argname} space {given!r}; expected {expected}") from None
        linear = Space("rgb", rgb_space=cs.name).attrs()["space"]
        decode = (
            f"xccm.linearize({argname}, 'srgb')"
            if cs.name == "sRGB"
            else f"the space's decoding, colour.RGB_COLOURSPACES[{cs.name!r}].cctf_decoding"
        )
        raise ValueError(
            f"{argname} space {given!r} names an RGB space but not whether the values are "
            f"encoded (as stored in an image file) or linear; xccm compares linear values. "
            f"If they are linear, say {linear!r}; if encoded, decode them first with "
            f"{decode} and say {linear!r}"
        )
    try:
        rgb_colourspace(name)
    except ValueError:
        raise ValueError(f"unknown {argname} space {given!r}; expected {expected}") from None
    return Space("rgb", rgb_space=name)


# ---------------------------------------------------------------------------------------------
# array kernels (channel axis last, float64)


def _adaptation(src_xy: np.ndarray, dst_xy: np.ndarray, adaptation: str) -> np.ndarray:
    """3x3 chromatic-adaptation matrix (column-vector convention) from one white to another."""
    colour = _colour()
    if np.allclose(src_xy, dst_xy, rtol=0, atol=1e-15):
        return np.eye(3)
    if adaptation not in colour.CHROMATIC_ADAPTATION_TRANSFORMS:
        raise ValueError(
            f"unknown adaptation {adaptation!r}; expected one of "
            f"{sorted(colour.CHROMATIC_ADAPTATION_TRANSFORMS)}"
        )
    return colour.adaptation.matrix_chromatic_adaptation_VonKries(
        colour.xy_to_XYZ(src_xy), colour.xy_to_XYZ(dst_xy), transform=adaptation
    )


def to_xyz_matrix(rgb_space: str, white_xy: np.ndarray, adaptation: str) -> np.ndarray:
    """Matrix ``A`` with ``XYZ = RGB @ A.T``: linear ``rgb_space`` to XYZ under ``white_xy``."""
    cs = rgb_colourspace(rgb_space)
    cat = _adaptation(np.asarray(cs.whitepoint, dtype=np.float64), white_xy, adaptation)
    return cat @ np.asarray(cs.matrix_RGB_to_XYZ, dtype=np.float64)


def _to_xyz(values: np.ndarray, space: Space, white_xy: np.ndarray, adaptation: str):
    colour = _colour()
    if space.kind == "rgb":
        return values @ to_xyz_matrix(space.rgb_space, white_xy, adaptation).T
    own = space.white
    xyz = colour.Lab_to_XYZ(values, own) if space.kind == "lab" else values
    return xyz @ _adaptation(own, white_xy, adaptation).T


def _from_xyz(xyz: np.ndarray, space: Space, white_xy: np.ndarray, adaptation: str):
    """Inverse of :func:`_to_xyz`: XYZ under ``white_xy`` into ``space``."""
    if space.kind == "rgb":
        # The exact inverse of the RGB -> XYZ path, so that conversions round-trip exactly
        # and a fit's target is the reference itself. (colour.XYZ_to_RGB uses the space's
        # published XYZ -> RGB matrix instead, which for sRGB is rounded separately from
        # the RGB -> XYZ one: the two differ by up to 1e-4.)
        return xyz @ np.linalg.inv(to_xyz_matrix(space.rgb_space, white_xy, adaptation)).T
    own = space.white
    xyz = xyz @ _adaptation(white_xy, own, adaptation).T
    return xyz_to_lab(xyz, own) if space.kind == "lab" else xyz


def convert_array(values, source: Space, target: Space, adaptation: str = "Bradford"):
    """Convert ``values (..., 3)`` from ``source`` to ``target``; float64."""
    values = np.asarray(values, dtype=np.float64)
    if _same_space(source, target):
        return values.copy()
    white = target.white
    return _from_xyz(_to_xyz(values, source, white, adaptation), target, white, adaptation)


def _same_space(a: Space, b: Space) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "rgb":
        return rgb_colourspace(a.rgb_space) is rgb_colourspace(b.rgb_space)
    return bool(np.array_equal(a.white, b.white))


#: CIE 1976 L*a*b*: the cube root applies above :math:`(24/116)^3`, a line below.
_LAB_EPSILON = (24 / 116) ** 3


def xyz_to_lab(xyz: np.ndarray, white_xy: np.ndarray) -> np.ndarray:
    """CIE L*a*b* of ``xyz (..., 3)`` (relative, Y = 1 white) under ``white_xy``.

    The CIE formula in closed form, as colour-science's ``XYZ_to_Lab`` computes it (the same
    operations, so the same values): a fit evaluates it at every step, where colour-science's
    argument handling would cost more than the arithmetic on a 24-patch chart.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    x, y = float(white_xy[0]), float(white_xy[1])
    white = np.array([x * (1 / y), 1.0, (1 - (x + y)) * (1 / y)])
    t = xyz / white
    f = np.where(t > _LAB_EPSILON, np.abs(t) ** (1 / 3), (841 / 108) * t + 16 / 116)
    f_x, f_y, f_z = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116 * f_y - 16, 500 * (f_x - f_y), 200 * (f_y - f_z)], axis=-1)


def lab_delta_e(lab: np.ndarray, lab_reference: np.ndarray, method: str) -> np.ndarray:
    """ΔE between Lab arrays; for CIE94 and CMC the *reference* is the standard (colour's Lab_1).

    CIEDE2000 is :func:`ciede2000` (colour-science's formula, with a hue difference of
    180° decided as the CIE does, not by rounding); the others are colour-science's.
    """
    if method == "ciede2000":
        return ciede2000(lab_reference, lab)
    name, kwargs = DISTANCES[method]
    return _colour().delta_E(lab_reference, lab, method=name, **kwargs)


#: Hue differences within this many degrees of 180° count as exactly 180°. Two hues 180°
#: apart (Sharma et al.'s pairs 13-14) differ by 180 ± 1e-13° after arctan2, which would
#: pick the mean hue of either branch by rounding; real differences near 180° are far
#: coarser (pair 15 is 0.002° past it).
_HUE_TIE = 1e-9


def ciede2000(lab_1: np.ndarray, lab_2: np.ndarray) -> np.ndarray:
    r"""CIEDE2000 colour difference :math:`\Delta E_{00}` between Lab arrays ``(..., 3)``.

    The CIE formula as Sharma, Wu and Dalal (2005) give it (:math:`k_L = k_C = k_H = 1`),
    reproducing all 34 of their test pairs to 1e-4, the 180° hue difference of pairs 13
    and 14 included (see ``_HUE_TIE``).

    Examples
    --------
    >>> round(float(ciede2000(np.array([50, 2.6772, -79.7751]), np.array([50, 0, -82.7485]))), 4)
    2.0425
    """
    ell, c, h, r_t = _ciede2000_terms(np.asarray(lab_1, float), np.asarray(lab_2, float))
    return np.sqrt(ell**2 + c**2 + h**2 + r_t * c * h)


def _ciede2000_terms(lab_1: np.ndarray, lab_2: np.ndarray):
    """``ΔL'/S_L, ΔC'/S_C, ΔH'/S_H`` and ``R_T`` of CIEDE2000 (signs: 2 minus 1)."""
    l_1, a_1, b_1 = lab_1[..., 0], lab_1[..., 1], lab_1[..., 2]
    l_2, a_2, b_2 = lab_2[..., 0], lab_2[..., 1], lab_2[..., 2]
    c_bar_7 = ((np.hypot(a_1, b_1) + np.hypot(a_2, b_2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar_7 / (c_bar_7 + 25**7)))
    a_p_1, a_p_2 = (1 + g) * a_1, (1 + g) * a_2
    c_p_1, c_p_2 = np.hypot(a_p_1, b_1), np.hypot(a_p_2, b_2)
    h_p_1 = np.degrees(np.arctan2(b_1, a_p_1)) % 360  # arctan2(0, 0) = 0, as the CIE says
    h_p_2 = np.degrees(np.arctan2(b_2, a_p_2)) % 360
    chromatic = c_p_1 * c_p_2 != 0
    diff = h_p_2 - h_p_1
    within = np.fabs(diff) <= 180 + _HUE_TIE
    delta_h_p = np.where(within, diff, np.where(diff > 0, diff - 360, diff + 360))
    delta_h_p = np.where(chromatic, delta_h_p, 0.0)
    delta_big_h = 2 * np.sqrt(c_p_1 * c_p_2) * np.sin(np.deg2rad(delta_h_p / 2))
    total = h_p_1 + h_p_2
    h_bar = np.where(within, total / 2, np.where(total < 360, total + 360, total - 360) / 2)
    h_bar = np.where(chromatic, h_bar, total)
    t = (
        1
        - 0.17 * np.cos(np.deg2rad(h_bar - 30))
        + 0.24 * np.cos(np.deg2rad(2 * h_bar))
        + 0.32 * np.cos(np.deg2rad(3 * h_bar + 6))
        - 0.20 * np.cos(np.deg2rad(4 * h_bar - 63))
    )
    delta_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    c_bar_p = (c_p_1 + c_p_2) / 2
    r_c = 2 * np.sqrt(c_bar_p**7 / (c_bar_p**7 + 25**7))
    l_bar_2 = ((l_1 + l_2) / 2 - 50) ** 2
    s_l = 1 + 0.015 * l_bar_2 / np.sqrt(20 + l_bar_2)
    s_c = 1 + 0.045 * c_bar_p
    s_h = 1 + 0.015 * c_bar_p * t
    r_t = -np.sin(np.deg2rad(2 * delta_theta)) * r_c
    return (l_2 - l_1) / s_l, (c_p_2 - c_p_1) / s_c, delta_big_h / s_h, r_t


def lab_components(lab: np.ndarray, lab_reference: np.ndarray, method: str) -> np.ndarray:
    r"""Vectors ``(..., 3)`` whose Euclidean norm is the ΔE of :func:`lab_delta_e`.

    The squared norm is the same sum of squared lightness, chroma and hue terms, written
    so that each component is smooth where ΔE is small (ΔE itself, as a norm, has a kink at
    0): this is the residual a least-squares fit should see. The hue term is the signed
    :math:`\Delta H = 2\sqrt{C_1 C_2}\sin(\Delta h / 2)`, whose square equals the
    :math:`\Delta a^2 + \Delta b^2 - \Delta C^2` of CIE94 and CMC; CIEDE2000's rotation term
    :math:`R_T` is folded in as :math:`[\ell, c + R_T h / 2, h\sqrt{1 - R_T^2 / 4}]`.
    """
    if method == "cie76":
        return lab_reference - lab
    if method == "ciede2000":
        ell, c, h, r_t = _ciede2000_terms(lab_reference, lab)
        return np.stack([ell, c + r_t * h / 2, h * np.sqrt(1 - r_t**2 / 4)], axis=-1)
    l1, a1, b1 = np.moveaxis(lab_reference, -1, 0)
    l2, a2, b2 = np.moveaxis(lab, -1, 0)
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    dh = np.arctan2(b1, a1) - np.arctan2(b2, a2)
    dh = (dh + np.pi) % (2 * np.pi) - np.pi
    delta_h = 2 * np.sqrt(c1 * c2) * np.sin(dh / 2)
    if method in ("cie94", "cie94_textiles"):  # as colour.difference.delta_E_CIE1994
        textiles = DISTANCES[method][1]["textiles"]
        k1, k2, kl = (0.048, 0.014, 2) if textiles else (0.045, 0.015, 1)
        return np.stack(
            [(l1 - l2) / kl, (c1 - c2) / (1 + k1 * c1), delta_h / (1 + k2 * c1)], axis=-1
        )
    # CMC l:c, as colour.difference.delta_E_CMC
    kw = DISTANCES[method][1]
    s_l = np.where(l1 < 16, 0.511, (0.040975 * l1) / (1 + 0.01765 * l1))
    s_c = 0.0638 * c1 / (1 + 0.0131 * c1) + 0.638
    h1 = np.degrees(np.arctan2(b1, a1)) % 360
    t = np.where(
        (h1 >= 164) & (h1 <= 345),
        0.56 + np.fabs(0.2 * np.cos(np.deg2rad(h1 + 168))),
        0.36 + np.fabs(0.4 * np.cos(np.deg2rad(h1 + 35))),
    )
    f = np.sqrt(c1**4 / (c1**4 + 1900))
    s_h = s_c * (f * t + 1 - f)
    return np.stack(
        [(l1 - l2) / (kw["l"] * s_l), (c1 - c2) / (kw["c"] * s_c), delta_h / s_h], axis=-1
    )


def encode_rgb(rgb: np.ndarray, rgb_space: str) -> np.ndarray:
    """Apply the encoding transfer function (e.g. sRGB's) of ``rgb_space`` to linear values.

    Mirrored for negative values (``sign(x) f(|x|)``), as OpenCV's encodings and extended
    sRGB are (colour-science continues sRGB's linear segment below 0 instead, and gives NaN
    for a pure power law such as Adobe RGB's).
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    encoded = rgb_colourspace(rgb_space).cctf_encoding(np.abs(rgb))
    return np.copysign(np.asarray(encoded, dtype=np.float64), rgb)


@dataclass(frozen=True)
class Metric:
    """How to measure a colour difference between linear RGB colours of one space.

    ``transform`` maps linear RGB ``(..., 3)`` to the space the distance is taken in (Lab
    under ``white`` for ΔE, encoded or linear RGB otherwise); ``distance`` compares two such
    arrays. Build one with :func:`metric`.
    """

    method: str
    rgb_space: Any  # a colour-science RGB_Colourspace
    white: np.ndarray | None
    to_xyz: np.ndarray | None
    standard: Standard = "reference"

    def _pair(self, a: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(colour, standard)``: which of the two the asymmetric CIE94 and CMC weight by."""
        return (a, reference) if self.standard == "reference" else (reference, a)

    def transform(self, rgb: np.ndarray) -> np.ndarray:
        """Linear RGB to the comparison space."""
        if self.method == "linear_rgb":
            return rgb
        if self.method == "rgb":
            return encode_rgb(rgb, self.rgb_space)
        assert self.to_xyz is not None and self.white is not None  # set for a Lab method
        return xyz_to_lab(rgb @ self.to_xyz.T, self.white)

    def transform_from(self, values: np.ndarray, space: Space, adaptation: str) -> np.ndarray:
        """Colours in ``space`` to the comparison space.

        For ΔE straight into Lab under :attr:`white` (Lab already under that white is used
        as it is, with no round trip through RGB); for the RGB distances via linear RGB.
        """
        if self.white is None:
            rgb = Space("rgb", rgb_space=self.rgb_space)
            return self.transform(convert_array(values, space, rgb, adaptation))
        lab = Space("lab", illuminant=tuple(float(v) for v in self.white))
        return convert_array(values, space, lab, adaptation)

    def distance(self, a: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Distance between transformed colours (``reference`` is the standard)."""
        if self.method in ("linear_rgb", "rgb"):
            return np.sqrt(np.sum((a - reference) ** 2, axis=-1))
        return lab_delta_e(*self._pair(a, reference), self.method)

    def components(self, a: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Residual vectors ``(..., 3)`` whose norms are :meth:`distance` (smooth near 0)."""
        if self.method in ("linear_rgb", "rgb"):
            return reference - a
        return lab_components(*self._pair(a, reference), self.method)


def metric(
    method: str,
    rgb_space: str = "sRGB",
    illuminant=None,
    adaptation: str = "Bradford",
    standard: Standard = "reference",
) -> Metric:
    """Return the :class:`Metric` of ``method`` on linear ``rgb_space``, ΔE under ``illuminant``.

    ``illuminant=None`` takes Lab under the RGB space's own white (D65 for sRGB), as OpenCV's
    ccm module does; ``"D50"`` gives the ICC convention. ``standard`` is the colour CIE94
    and CMC weight by: ``"reference"`` (the CIE definition, colour-science's) or
    ``"sample"`` (what OpenCV's ccm module does).
    """
    method = distance_name(method)
    if standard not in ("reference", "sample"):
        raise ValueError(f"standard must be 'reference' or 'sample'; got {standard!r}")
    cs = rgb_colourspace(rgb_space)
    if method in ("linear_rgb", "rgb"):
        return Metric(method, cs, None, None, standard)
    white = lab_white(cs, illuminant)
    return Metric(method, cs, white, to_xyz_matrix(cs, white, adaptation), standard)


def lab_white(rgb_space, illuminant=None) -> np.ndarray:
    """Return the xy white ΔE and L* are taken under: ``illuminant``, else ``rgb_space``'s own."""
    if illuminant is None:
        return np.asarray(rgb_colourspace(rgb_space).whitepoint, dtype=np.float64)
    return illuminant_xy(illuminant)


# ---------------------------------------------------------------------------------------------
# DataArray API


def convert(
    obj: xr.DataArray,
    to: Literal["lab", "xyz", "rgb"] | str | Space,
    *,
    dim: Hashable = "channel",
    source: str | Space | None = None,
    illuminant: str | Sequence[float] | None = None,
    rgb_space: str = "sRGB",
    adaptation: str = "Bradford",
) -> xr.DataArray:
    """Convert colours between linear RGB, CIE XYZ and CIE L*a*b*, lazily.

    Parameters
    ----------
    obj : DataArray
        Colours along ``dim`` (3 channels), in the space ``source`` or, if not given,
        ``obj.attrs["space"]`` (linear ``rgb_space`` if neither says).
    to : {"lab", "xyz", "rgb"} or str
        Target: ``"lab"``, ``"xyz"``, ``"rgb"`` (linear ``rgb_space``), or a full space
        name such as ``"lab-d65"`` or ``"display-p3-linear"``.
    dim : hashable, default "channel"
    source : str, optional
        The source space, overriding ``obj.attrs["space"]``.
    illuminant : str or (x, y), optional
        White of a Lab or XYZ target (CIE 1931 2° observer), e.g. ``"D50"``, ``"ICC D50"``,
        ``"D65"``. Default: the source's own white (its illuminant, or its RGB space's white).
    rgb_space : str, default "sRGB"
        The RGB space of an RGB source without ``attrs["rgb_space"]`` and of an RGB target:
        short names ``"srgb"``, ``"adobe-rgb"``, ``"display-p3"``, ``"prophoto"``,
        ``"rec2020"``... or any name in ``colour.RGB_COLOURSPACES``.
    adaptation : str, default "Bradford"
        Chromatic adaptation transform between whites (a colour-science name).

    Returns
    -------
    DataArray
        Same dims, coords (with ``dim`` relabelled, e.g. ``L, a, b``) and chunks; attrs
        updated with the new ``space`` (and ``illuminant`` or ``rgb_space``). float32 input
        stays float32, other input becomes float64. Dask-backed input stays lazy.

    Examples
    --------
    >>> import xccm
    >>> lab = xccm.chart(space="lab-d50")
    >>> rgb = convert(lab, "rgb", rgb_space="sRGB")
    >>> rgb.attrs["space"], [str(c) for c in rgb.channel.values]
    ('srgb-linear', ['R', 'G', 'B'])
    >>> back = convert(rgb, "lab", illuminant="ICC D50")
    >>> bool(abs(back - lab).max() < 1e-10)
    True
    """
    if not isinstance(obj, xr.DataArray):
        raise TypeError(
            f"obj must be a DataArray with a {dim!r} dim (its space in attrs['space'] or "
            f"source=); got {type(obj).__name__}"
        )
    if not isinstance(to, str | Space):
        raise TypeError(f"to must be a space name such as 'lab'; got {to!r}")
    src = space_of(obj, source, rgb_space=rgb_space, argname="obj", dim=dim)
    target = _target_space(to, src, illuminant, rgb_space)
    _check_three(obj, dim, "obj")
    dtype = obj.dtype if obj.dtype == np.float32 else np.dtype(np.float64)
    if isinstance(obj.data, np.ndarray):  # at once, without apply_ufunc's cost (a chart's)
        axis = obj.get_axis_num(dim)
        values = convert_array(np.moveaxis(obj.data, axis, -1), src, target, adaptation)
        coords = dict(obj.coords) | {dim: list(_CHANNELS[target.kind])}
        data = np.moveaxis(values.astype(dtype, copy=False), -1, axis)
        out = xr.DataArray(data, dims=obj.dims, coords=coords, name=obj.name, attrs=obj.attrs)
    else:
        out = xr.apply_ufunc(
            lambda v: convert_array(v, src, target, adaptation).astype(dtype, copy=False),
            obj.rename({dim: _C}),
            input_core_dims=[[_C]],
            output_core_dims=[[_C]],
            dask="parallelized",
            output_dtypes=[dtype],
            keep_attrs=True,
        )
        out = out.rename({_C: dim}).transpose(*obj.dims)
        out = out.assign_coords({dim: list(_CHANNELS[target.kind])})
    for key in ("space", "illuminant", "rgb_space"):
        out.attrs.pop(key, None)
    out.attrs.update(target.attrs())
    return out


def _target_space(to, src: Space, illuminant, rgb_space: str) -> Space:
    if isinstance(to, Space):
        return to
    if illuminant is not None:
        illuminant_xy(illuminant)  # now, not on compute
    text = str(to).strip().lower()
    if text in ("lab", "xyz"):
        if illuminant is None:
            illuminant = src.illuminant if src.kind != "rgb" else _white_name(src)
        return Space(text, illuminant=illuminant)  # type: ignore[arg-type]
    if text == "rgb":
        return Space("rgb", rgb_space=rgb_space)
    target = _parse_space(to, {}, rgb_space, "to")
    if illuminant is not None and target.kind != "rgb":
        target = Space(target.kind, illuminant=illuminant)
    return target


def _white_name(space: Space) -> str | tuple[float, ...]:
    """Name the RGB space's white if colour-science knows it by that name, else its xy."""
    cs = rgb_colourspace(space.rgb_space)
    known = _colour().CCS_ILLUMINANTS[_OBSERVER].get(cs.whitepoint_name)
    if known is not None and np.allclose(known, cs.whitepoint, rtol=0, atol=1e-12):
        return cs.whitepoint_name
    return tuple(float(v) for v in cs.whitepoint)


def _check_three(obj: xr.DataArray, dim: Hashable, argname: str) -> None:
    check_data(obj, argname, dim, allow_empty=True)
    if obj.sizes[dim] != 3:
        raise ValueError(f"{argname} must have 3 channels along {dim!r}; got {obj.sizes[dim]}")
    require_one_chunk(obj, dim, argname)


def delta_e(
    sample: xr.DataArray | np.ndarray,
    reference: xr.DataArray | np.ndarray,
    method: str = "ciede2000",
    *,
    dim: Hashable = "channel",
    sample_space: str | Space | None = None,
    reference_space: str | Space | None = None,
    rgb_space: str = "sRGB",
    illuminant: str | Sequence[float] | None = None,
    adaptation: str = "Bradford",
    standard: Standard = "reference",
) -> xr.DataArray | np.ndarray:
    """Colour difference between ``sample`` and ``reference``, lazily and broadcast by name.

    Both are converted to CIE L*a*b* under ``illuminant`` (by default the RGB space's own
    white: D65 for sRGB, as OpenCV's ccm module does; pass ``"D50"`` for the ICC
    convention), with chromatic adaptation where their whites differ, then compared (Lab
    already under that white is compared as it is). The
    distances ``"linear_rgb"`` and ``"rgb"`` are Euclidean in linear and in encoded (e.g.
    sRGB-curve) ``rgb_space`` instead.

    Parameters
    ----------
    sample, reference : DataArray or ndarray
        Colours along ``dim``; other dims broadcast against each other by name (e.g. a
        corrected ``(time, patch, channel)`` against a chart ``(patch, channel)``). Their
        spaces come from ``sample_space`` / ``reference_space`` or their
        ``attrs["space"]``, else linear ``rgb_space``. A plain-array ``sample`` has its
        channel axis last and broadcasts against ``reference`` as NumPy does; a DataArray
        ``reference`` then has ``dim`` moved last (its space still read from its attrs).
        A DataArray ``sample`` needs a DataArray ``reference``.
    method : str, default "ciede2000"
        ``"cie76"``, ``"cie94"`` (graphic arts), ``"cie94_textiles"``, ``"ciede2000"``,
        ``"cmc"`` (l:c = 1:1), ``"cmc_2to1"``, ``"linear_rgb"`` or ``"rgb"``. For the
        asymmetric CIE94 and CMC the reference is the standard, as the CIE defines them and
        colour-science computes them; ``standard="sample"`` weights by the sample instead,
        as OpenCV's ccm module does.
    dim : hashable, default "channel"
    sample_space, reference_space : str, optional
        Override the spaces read from attrs (``"lab-d50"``, ``"xyz-d65"``, ``"srgb-linear"``...).
    rgb_space : str, default "sRGB"
        RGB space of RGB inputs without ``attrs["rgb_space"]``, and of the RGB distances.
    illuminant : str or (x, y), optional
        White of the Lab space the ΔE is taken in; default the RGB space's white.
    adaptation : str, default "Bradford"
    standard : {"reference", "sample"}, default "reference"
        Which colour CIE94 and CMC weight by (see ``method``).

    Returns
    -------
    DataArray or ndarray
        The differences, without ``dim``, named ``"delta_e"``, with ``attrs`` recording the
        method, RGB space and Lab white. Computed in float64, returned in the inputs'
        floating result type: float32 where both are float32, float64 where either is
        float64 or integer (so a float32 stack against a float64 chart gives float64; cast
        the chart with ``.astype("float32")`` to keep float32). Dask-backed input stays
        lazy, with that dtype. A plain-array ``sample`` gives a plain array of the broadcast
        shape without the channel axis.

    Raises
    ------
    TypeError
        If ``sample`` is a DataArray and ``reference`` is not.

    Examples
    --------
    >>> import xccm
    >>> ref = xccm.chart()
    >>> de = delta_e(ref * 1.05, ref, "ciede2000")
    >>> de.dims, bool(0 < de.max() < 3)
    (('patch',), True)
    >>> delta_e(np.array([[0.5, 0.5, 0.5], [0.2, 0.3, 0.4]]), [0.5, 0.5, 0.5], "cie76").round(3)
    array([ 0.   , 21.245])
    """
    if not isinstance(sample, xr.DataArray) or not isinstance(reference, xr.DataArray):
        return _delta_e_arrays(
            sample,
            reference,
            method,
            dim=dim,
            sample_space=sample_space,
            reference_space=reference_space,
            rgb_space=rgb_space,
            illuminant=illuminant,
            adaptation=adaptation,
            standard=standard,
        )
    measure = metric(method, rgb_space, illuminant, adaptation, standard)
    s_space = space_of(sample, sample_space, rgb_space=rgb_space, argname="sample", dim=dim)
    r_space = space_of(
        reference, reference_space, rgb_space=rgb_space, argname="reference", dim=dim
    )
    _check_three(sample, dim, "sample")
    _check_three(reference, dim, "reference")

    dtype = _result_float(sample.dtype, reference.dtype)

    def kernel(s, r):
        s = measure.transform_from(s, s_space, adaptation)
        r = measure.transform_from(r, r_space, adaptation)
        return measure.distance(s, r).astype(dtype, copy=False)  # computed in float64

    out = xr.apply_ufunc(
        kernel,
        sample.rename({dim: _C}),
        reference.rename({dim: _C_REF}),
        input_core_dims=[[_C], [_C_REF]],
        dask="parallelized",
        output_dtypes=[dtype],
        keep_attrs=False,
    )
    out.name = "delta_e"
    out.attrs = metric_attrs(measure)
    return out


def _result_float(*dtypes: np.dtype) -> np.dtype:
    """float32 where all inputs are floats promoting to float32, else float64.

    As :func:`convert` keeps float32 and makes integers float64: a uint8 image against a
    float32 chart gives float64 (NumPy would say float32), float16 alone gives float64.
    """
    if all(np.dtype(d).kind == "f" for d in dtypes) and np.result_type(*dtypes) == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _delta_e_arrays(sample, reference, method, *, dim, sample_space, reference_space, **kwargs):
    """:func:`delta_e` on plain arrays (channel axis last), broadcast as NumPy does."""
    if isinstance(sample, xr.DataArray):
        raise TypeError(
            f"reference must be a DataArray when sample is one (got {type(reference).__name__});"
            f" wrap it with xr.DataArray(..., dims=...) naming its dims and {dim!r}, or pass "
            "sample as a plain array (channel axis last)"
        )
    spaces, arrays = [], []
    for argname, obj, space in (
        ("sample", sample, sample_space),
        ("reference", reference, reference_space),
    ):
        if isinstance(obj, xr.Dataset):
            raise TypeError(
                f"{argname} must be a DataArray or an array, not a Dataset: pick a variable, "
                "e.g. ds['image']"
            )
        if isinstance(obj, xr.DataArray):  # a chart, say: its space is in its attrs
            space = space_of(obj, space, rgb_space=kwargs["rgb_space"], argname=argname, dim=dim)
            _check_three(obj, dim, argname)
            obj = obj.transpose(..., dim).data
        arr = asarray(obj)
        if arr.ndim < 1 or arr.shape[-1] != 3:
            raise ValueError(
                f"{argname} as a plain array must have 3 channels on its last axis; got shape "
                f"{arr.shape}"
            )
        spaces.append(space)
        arrays.append(arr)
    try:
        shape = np.broadcast_shapes(arrays[0].shape[:-1], arrays[1].shape[:-1])
    except ValueError:
        raise ValueError(
            f"sample of shape {arrays[0].shape} and reference of shape {arrays[1].shape} do not "
            "broadcast (as NumPy does, channel axis last, other axes aligned from the right)"
        ) from None
    labelled = [wrap(np.broadcast_to(a, (*shape, 3)), (dim,)) for a in arrays]
    out = delta_e(
        *labelled,
        method,
        dim=dim,
        sample_space=spaces[0],
        reference_space=spaces[1],
        **kwargs,
    )
    return out.data


def metric_attrs(measure: Metric) -> dict[str, Any]:
    """Attrs describing how a distance was measured."""
    attrs: dict[str, Any] = {
        "method": measure.method,
        "rgb_space": rgb_colourspace(measure.rgb_space).name,
    }
    if measure.white is not None:
        attrs["lab_white_xy"] = [float(v) for v in measure.white]
    if measure.method in ("cie94", "cie94_textiles", "cmc", "cmc_2to1"):
        attrs["standard"] = measure.standard
    return attrs
