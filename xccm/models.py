"""The colour-correction models: one registry entry per model.

A model expands a colour ``x = (R, G, B)`` into terms ``t(x)`` and maps it with a matrix
``M (n_terms, n_out)``: ``D = t(S) @ M`` (row vectors, channel last). Every model is linear in
its matrix, so it is fitted by (weighted) least squares on the expanded colours.

* ``linear``: ``R, G, B`` (any number of channels);
* ``affine``: ``R, G, B, offset`` (any number of channels);
* ``root_polynomial``, ``degree=1..4``: Finlayson, Mackiewicz & Hurlbert (2015), the roots
  ``(R^a G^b B^c)^(1/d)`` of the monomials of each degree ``d <= degree`` (3, 6, 13, 22
  terms); exposure-invariant;
* ``polynomial``, ``degree=1..4``: Finlayson et al. (2015) without the roots, every monomial
  of degree ``1..degree`` (3, 9, 19, 34 terms);
* ``polynomial``, ``terms=``: the Cheung et al. (2004) term sets as colour-science numbers
  them: 3, 4, 5, 7, 8, 10, 11, 14, 16, 17, 19, 20, 22, 35.

The terms are in colour-science's order (``polynomial_expansion_Finlayson2015`` and
``matrix_augmented_Cheung2004``), so a matrix here is colour-science's ``CCM`` transposed.
Models that are the same map are one model: ``root_polynomial`` and ``polynomial`` of degree
1 and ``polynomial`` with ``terms=3`` are ``linear``; ``terms=4`` (``R, G, B, 1``) is
``affine``. The constant term is labelled ``"offset"``, as the affine offset row is.

A fitted matrix is a DataArray whose ``f"{dim}_in"`` rows are labelled by their terms
(``R``, ``G``, ``B``, ``sqrt(R*G)``, ...) and whose ``attrs`` record ``model`` and ``degree``
or ``terms`` (:func:`matrix_dataarray`); :func:`model_of` reads them back, so a matrix
carries everything :func:`xccm.apply` needs.

References
----------
G. D. Finlayson, M. Mackiewicz and A. Hurlbert, "Color Correction Using Root-Polynomial
Regression", IEEE Trans. Image Process. 24(5), 1460-1470, 2015.
V. Cheung, S. Westland, D. Connah and C. Ripamonti, "A comparative study of the
characterisation of colour cameras by means of neural networks and polynomial
transforms", Coloration Technology 120(1), 19-25, 2004.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import xarray as xr

from . import _kernels, _terms
from ._labels import check_integer

__all__ = [
    "CHEUNG2004_TERMS",
    "MODELS",
    "ModelSpec",
    "expand",
    "matrix_dataarray",
    "model_of",
    "resolve_model",
]

#: Label of the constant term (the offset row of an affine matrix).
OFFSET = "offset"

#: Term sets of Cheung et al. (2004), numbered by their size as colour-science numbers
#: them. A term is a string of channel letters (``"RRG"`` is ``R^2 * G``); ``""`` is 1.
_C3 = ("R", "G", "B")
_C7 = (*_C3, "RG", "RB", "GB")
_C10 = (*_C7, "RR", "GG", "BB")
_C16 = (*_C10, "RGB", "RRG", "GGB", "BBR", "RRR", "GGG", "BBB")
_C19 = (*_C10, "RGB", "RRG", "GGB", "BBR", "RRB", "GGR", "BBG", "RRR", "GGG", "BBB")
CHEUNG2004_TERMS: Mapping[int, tuple[str, ...]] = {
    3: _C3,
    4: (*_C3, ""),
    5: (*_C3, "RGB", ""),
    7: (*_C7, ""),
    8: (*_C7, "RGB", ""),
    10: (*_C10, ""),
    11: (*_C10, "RGB", ""),
    14: (*_C10, "RGB", "RRR", "GGG", "BBB", ""),
    16: _C16,
    17: (*_C16, ""),
    19: _C19,
    20: (*_C19, ""),
    22: (*_C19, "RRGB", "RGGB", "RGBB"),
    35: (
        *_C19,
        *("RRRG", "RRRB", "GGGR", "GGGB", "BBBR", "BBBG", "RRGB", "RGGB", "RGBB"),
        *("RRGG", "RRBB", "GGBB", "RRRR", "GGGG", "BBBB", ""),
    ),
}

#: Root-polynomial terms of Finlayson et al. (2015) added at each degree (the root is the degree).
_ROOT_TERMS = {
    1: ("R", "G", "B"),
    2: ("RG", "GB", "RB"),
    3: ("RGG", "GBB", "RBB", "GRR", "BGG", "BRR", "RGB"),
    4: ("RRRG", "RRRB", "GGGR", "GGGB", "BBBR", "BBBG", "RRGB", "GGRB", "BBRG"),
}
#: Polynomial terms of Finlayson et al. (2015) (``root_polynomial_expansion=False``) added
#: at each degree.
_POLY_TERMS = {
    1: ("R", "G", "B"),
    2: ("RR", "GG", "BB", "RG", "GB", "RB"),
    3: ("RRR", "GGG", "BBB", "RGG", "GBB", "RBB", "GRR", "BGG", "BRR", "RGB"),
    4: (
        *("RRRR", "GGGG", "BBBB", "RRRG", "RRRB", "GGGR", "GGGB", "BBBR", "BBBG"),
        *("RRGG", "GGBB", "RRBB", "RRGB", "GGRB", "BBRG"),
    ),
}
_DEGREES = (1, 2, 3, 4)
_DEFAULT_NAMES = ("R", "G", "B")


@dataclass(frozen=True)
class ModelSpec:
    """One resolved model: its terms and what they imply.

    Build one with :func:`resolve_model` (or read one off a matrix with :func:`model_of`).

    Attributes
    ----------
    name : str
        ``"linear"``, ``"affine"``, ``"root_polynomial"`` or ``"polynomial"``.
    degree, terms : int or None
        The option that chose the term set (``terms``: a Cheung 2004 set).
    n_channels : int
        Input channels.
    exponents : tuple of tuple of int
        ``exponents[j][k]``: the power of channel ``k`` in term ``j``.
    roots : tuple of int
        ``roots[j]``: term ``j`` is the ``roots[j]``-th root of its monomial (1: none).
    """

    name: str
    degree: int | None
    terms: int | None
    n_channels: int
    exponents: tuple[tuple[int, ...], ...] = field(repr=False)
    roots: tuple[int, ...] = field(repr=False)

    @property
    def n_terms(self) -> int:
        """Rows of the matrix: the number of unknowns per output channel."""
        return len(self.roots)

    @property
    def unknowns(self) -> int:
        """Unknowns per output column of a fit (:attr:`n_terms`)."""
        return self.n_terms

    @property
    def is_linear(self) -> bool:
        """Whether the map is linear or affine in the input (``linear`` or ``affine``)."""
        return self.name in ("linear", "affine")

    @property
    def has_offset(self) -> bool:
        """Whether a term is the constant 1 (the offset row)."""
        return any(not any(e) for e in self.exponents)

    @property
    def row_degrees(self) -> tuple[float, ...]:
        """Each term's degree of homogeneity: ``t_j(k x) = k ** row_degrees[j] * t_j(x)``."""
        return tuple(sum(e) / r for e, r in zip(self.exponents, self.roots, strict=True))

    @property
    def exposure_invariant(self) -> bool:
        """Whether scaling the input by ``k > 0`` scales the output by ``k``.

        Every term has degree 1: ``linear`` and ``root_polynomial``.
        """
        return all(d == 1 for d in self.row_degrees)

    @property
    def attrs(self) -> dict[str, Any]:
        """The matrix attrs that record this model (``model`` and ``degree`` or ``terms``)."""
        out: dict[str, Any] = {"model": self.name}
        if self.degree is not None:
            out["degree"] = self.degree
        if self.terms is not None:
            out["terms"] = self.terms
        return out

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(exponents (n_terms, n_channels), roots (n_terms,))`` as int64 arrays."""
        return (
            np.array(self.exponents, dtype=np.int64).reshape(self.n_terms, self.n_channels),
            np.array(self.roots, dtype=np.int64),
        )

    def labels(self, in_labels: Sequence[Hashable] | None = None) -> list[Hashable]:
        """Row labels: the input labels for the channel terms, formulas for the others.

        ``in_labels`` are the input channels' labels (default ``R, G, B`` for 3 channels,
        else ``0, 1, ...``). A channel term keeps its label as it is (any hashable); other
        terms are strings: ``"R*G"``, ``"R^2"``, ``"sqrt(R*G)"``, ``"cbrt(R*G^2)"``,
        ``"(R^3*G)^(1/4)"`` and ``"offset"`` for the constant.

        Examples
        --------
        >>> resolve_model("root_polynomial", degree=2).labels(["R", "G", "B"])
        ['R', 'G', 'B', 'sqrt(R*G)', 'sqrt(G*B)', 'sqrt(R*B)']
        """
        if in_labels is None:
            in_labels = _DEFAULT_NAMES if self.n_channels == 3 else list(range(self.n_channels))
        in_labels = list(in_labels)
        if len(in_labels) != self.n_channels:
            raise ValueError(
                f"in_labels has {len(in_labels)} labels; the {self.name} model has "
                f"{self.n_channels} input channels"
            )
        return [_label(e, r, in_labels) for e, r in zip(self.exponents, self.roots, strict=True)]

    def expand(self, x: np.ndarray) -> np.ndarray:
        """Terms ``(..., n_terms)`` of colours ``x (..., n_channels)``, channel axis last.

        Integer input is expanded in float64; float input in its own dtype.

        Examples
        --------
        >>> resolve_model("root_polynomial", degree=2).expand(np.array([4.0, 1.0, 9.0]))
        array([4., 1., 9., 2., 3., 6.])
        """
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.n_channels:
            raise ValueError(
                f"x must have its {self.n_channels} channels on the last axis for the "
                f"{self.name} model; got shape {x.shape}"
            )
        return _terms.expand(x, *self.table())

    def apply(self, x, m, dtype=None, *, parallel: bool = True, backend="auto") -> np.ndarray:
        """``expand(x) @ m`` without the full-size expanded array (:mod:`xccm._kernels`).

        ``m`` is ``(..., n_terms, n_out)``, its leading axes broadcast against ``x``'s.
        """
        if self.is_linear:
            return _kernels.apply_matrix(x, m, dtype, parallel=parallel, backend=backend)
        return _kernels.apply_matrix(
            x, m, dtype, parallel=parallel, backend=backend, terms=self.table()
        )

    def inverse(self, d, m, dtype=None, *, parallel: bool = True, backend="auto") -> np.ndarray:
        """Colours ``s`` with ``expand(s) @ m == d``, per pixel.

        Linear and affine models invert the matrix; the others solve per pixel by Newton's
        method (:func:`xccm._kernels.solve_terms`), NaN where it does not converge (with a
        :class:`~xccm._kernels.NonConvergenceWarning`).
        """
        if self.is_linear:
            inv = _kernels.invert_matrix(np.asarray(m))
            return _kernels.apply_matrix(d, inv, dtype, parallel=parallel, backend=backend)
        return _kernels.solve_terms(
            d, m, dtype, terms=self.table(), parallel=parallel, backend=backend
        )


def _label(powers: Sequence[int], root: int, names: list) -> Hashable:
    if not any(powers):
        return OFFSET
    if root == 1 and sum(powers) == 1:
        return names[int(np.argmax(powers))]
    return _term_label(powers, root, names)


def _term_label(powers, root, names) -> str:
    product = "*".join(
        str(names[k]) + (f"^{e}" if e > 1 else "") for k, e in enumerate(powers) if e
    )
    if root == 1:
        return product
    if root == 2:
        return f"sqrt({product})"
    if root == 3:
        return f"cbrt({product})"
    return f"({product})^(1/{root})"


def _parse(term: str) -> tuple[int, ...]:
    """Exponents of a term written as channel letters: ``"RRG"`` is ``(2, 1, 0)``."""
    return tuple(term.count(c) for c in "RGB")


def _spec(name, degree, terms, strings: Sequence[str], roots: Sequence[int]) -> ModelSpec:
    return ModelSpec(
        name, degree, terms, 3, tuple(_parse(t) for t in strings), tuple(int(r) for r in roots)
    )


def _linear(n_channels: int = 3, **_) -> ModelSpec:
    eye = tuple(tuple(int(i == k) for k in range(n_channels)) for i in range(n_channels))
    return ModelSpec("linear", None, None, n_channels, eye, (1,) * n_channels)


def _affine(n_channels: int = 3, **_) -> ModelSpec:
    lin = _linear(n_channels)
    zero = (0,) * n_channels
    return ModelSpec(
        "affine", None, None, n_channels, (*lin.exponents, zero), (1,) * (n_channels + 1)
    )


def _root_polynomial(degree: int, **_) -> ModelSpec:
    if degree == 1:
        return _linear(3)
    strings = [t for d in range(1, degree + 1) for t in _ROOT_TERMS[d]]
    roots = [d for d in range(1, degree + 1) for _ in _ROOT_TERMS[d]]
    return _spec("root_polynomial", degree, None, strings, roots)


def _polynomial(degree: int | None = None, terms: int | None = None, **_) -> ModelSpec:
    if degree == 1 or terms == 3:
        return _linear(3)
    if terms == 4:
        return _affine(3)
    strings: Sequence[str]
    if terms is not None:
        strings = CHEUNG2004_TERMS[terms]
    else:
        strings = [t for d in range(1, cast(int, degree) + 1) for t in _POLY_TERMS[d]]
    return _spec("polynomial", degree, terms, strings, [1] * len(strings))


#: The models by name: each entry builds a :class:`ModelSpec` from its options (use
#: :func:`resolve_model`, which checks them). In the pattern of colour-science's
#: ``MATRIX_COLOUR_CORRECTION_METHODS``.
MODELS: Mapping[str, Callable[..., ModelSpec]] = {
    "linear": _linear,
    "affine": _affine,
    "root_polynomial": _root_polynomial,
    "polynomial": _polynomial,
}


def _check_int(value, name: str, model: str, choices: Sequence[int]) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} of model {model!r} must be an integer, one of {tuple(choices)}; got "
            f"{type(value).__name__} {value!r}"
        )
    if int(value) not in choices:
        raise ValueError(
            f"{name}={int(value)} is not defined for model {model!r}; expected one of "
            f"{tuple(choices)}"
            + (
                " (Cheung et al. 2004 term sets as colour-science numbers them)"
                if name == "terms"
                else ""
            )
        )
    return int(value)


def resolve_model(
    model: str | ModelSpec = "linear",
    *,
    degree: int | None = None,
    terms: int | None = None,
    n_channels: int = 3,
) -> ModelSpec:
    """Resolve a model name and its options to a :class:`ModelSpec`.

    Parameters
    ----------
    model : {"linear", "affine", "root_polynomial", "polynomial"} or ModelSpec
        A :class:`ModelSpec` is returned as it is (no options allowed with it).
    degree : int, optional
        ``root_polynomial``: 1 to 4 (required). ``polynomial``: 1 to 4 (Finlayson 2015's
        polynomial terms), or give ``terms`` instead.
    terms : int, optional
        ``polynomial`` only: a Cheung 2004 term set, one of :data:`CHEUNG2004_TERMS`.
    n_channels : int, default 3
        Input channels. ``linear`` and ``affine`` take any number; the others need 3.

    Returns
    -------
    ModelSpec
        Degree 1 and ``terms=3`` resolve to ``linear``, ``terms=4`` to ``affine``.

    Raises
    ------
    ValueError
        An unknown model (the message lists the known ones), a degree or term set that the
        model does not define, both ``degree`` and ``terms``, options for ``linear`` /
        ``affine``, or a non-linear model on other than 3 channels.
    TypeError
        If ``model`` is not a string, or ``degree`` / ``terms`` is not an integer.

    Examples
    --------
    >>> spec = resolve_model("root_polynomial", degree=2)
    >>> spec.n_terms, spec.exposure_invariant, spec.attrs
    (6, True, {'model': 'root_polynomial', 'degree': 2})
    >>> resolve_model("polynomial", terms=4).name
    'affine'
    """
    if isinstance(model, ModelSpec):
        if degree is not None or terms is not None:
            raise ValueError(
                f"model is already resolved ({model.name}); do not pass degree= or terms= with it"
            )
        return model
    if not isinstance(model, str):
        raise TypeError(
            f"model must be a model name, one of {tuple(MODELS)}; got {type(model).__name__}"
        )
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {tuple(MODELS)}")
    n_channels = check_integer(n_channels, "n_channels", minimum=1)
    if model in ("linear", "affine"):
        given = [f"{k}={v!r}" for k, v in (("degree", degree), ("terms", terms)) if v is not None]
        if given:
            raise ValueError(
                f"model {model!r} takes no {' or '.join(given)}; degree= is for "
                "'root_polynomial' and 'polynomial', terms= for 'polynomial'"
            )
        return MODELS[model](n_channels=int(n_channels))
    if n_channels != 3:
        raise ValueError(
            f"model {model!r} expands 3 channels (R, G, B); got {n_channels} channels. Use "
            "'linear' or 'affine' for other channel counts"
        )
    if model == "root_polynomial":
        if terms is not None:
            raise ValueError(
                f"model 'root_polynomial' takes degree= (1 to 4), not terms={terms!r}; "
                "terms= chooses a Cheung 2004 set of model 'polynomial'"
            )
        if degree is None:
            raise ValueError("model 'root_polynomial' needs degree=, one of (1, 2, 3, 4)")
        return _root_polynomial(degree=_check_int(degree, "degree", model, _DEGREES))
    if degree is not None and terms is not None:
        raise ValueError(
            f"model 'polynomial' takes degree= or terms=, not both; got degree={degree!r} "
            f"and terms={terms!r}"
        )
    if degree is None and terms is None:
        raise ValueError(
            "model 'polynomial' needs degree= (1 to 4, Finlayson 2015) or terms= (a Cheung "
            f"2004 set, one of {tuple(CHEUNG2004_TERMS)})"
        )
    if terms is not None:
        return _polynomial(terms=_check_int(terms, "terms", model, tuple(CHEUNG2004_TERMS)))
    return _polynomial(degree=_check_int(degree, "degree", model, _DEGREES))


def model_of(
    matrix: xr.DataArray | np.ndarray, *, dim: Hashable = "channel", n_in: int | None = None
) -> ModelSpec:
    """Return the model of a matrix, from its ``attrs`` and its number of rows.

    A DataArray with ``attrs["model"]`` is that model (with ``attrs["degree"]`` or
    ``attrs["terms"]``); its ``f"{dim}_in"`` rows must be as many as the model's terms.
    Without the attr (or for a plain array), the rows decide: as many as the input
    channels ``n_in`` (when given, else the columns) is linear, one more is affine.

    Parameters
    ----------
    matrix : DataArray or ndarray
        Dims ``(..., f"{dim}_in", dim)`` or shape ``(..., rows, n_out)``.
    dim : hashable, default "channel"
    n_in : int, optional
        The input channels, when known (the image's).

    Raises
    ------
    ValueError
        If the attrs name an unknown model or options, or the rows do not fit the model.

    Examples
    --------
    >>> model_of(np.eye(3)).name, model_of(np.ones((4, 3))).name
    ('linear', 'affine')
    """
    if isinstance(matrix, xr.DataArray):
        in_dim = f"{dim}_in"
        if in_dim not in matrix.dims or dim not in matrix.dims:
            raise ValueError(
                f"matrix must have dims ({in_dim!r}, {dim!r}); its dims are {tuple(matrix.dims)}"
            )
        rows, cols = matrix.sizes[in_dim], matrix.sizes[dim]
        attrs = matrix.attrs
        where = f"{rows} {in_dim!r} rows"
    else:
        shape = np.shape(matrix)
        if len(shape) < 2:
            raise ValueError(f"matrix must have at least 2 dims (rows, n_out); got shape {shape}")
        rows, cols = shape[-2:]
        attrs = {}
        where = f"{rows} rows"
    name = attrs.get("model")
    if name is None:
        n = cols if n_in is None else int(n_in)
        if rows == n:
            return _linear(n)
        if rows == n + 1:
            return _affine(n)
        raise ValueError(
            f"matrix has {where} and no attrs['model']: expected {n} rows (linear) or "
            f"{n + 1} (affine, offset last) for {n} input channels. A polynomial or "
            "root-polynomial matrix must be a DataArray with attrs['model'] and "
            "attrs['degree'] or attrs['terms'] (models.matrix_dataarray)"
        )
    options = {k: _attr_int(attrs[k], k) for k in ("degree", "terms") if attrs.get(k) is not None}
    if name in ("linear", "affine"):
        spec = resolve_model(name, n_channels=max(rows - (name == "affine"), 1))
    else:
        spec = resolve_model(str(name), **options)
    if rows != spec.n_terms:
        raise ValueError(
            f"matrix has {where} but attrs say model {name!r}"
            + "".join(f", {k}={v}" for k, v in options.items())
            + f", which has {spec.n_terms} terms ({', '.join(map(str, spec.labels()))})"
        )
    if n_in is not None and int(n_in) != spec.n_channels:
        raise ValueError(
            f"matrix has model {spec.name!r} on {spec.n_channels} input channels ({where}) but "
            f"the image has {n_in} channels"
        )
    return spec


def _attr_int(value, key: str) -> int:
    arr = np.asarray(value)
    if arr.ndim != 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"matrix attrs[{key!r}] must be an integer; got {value!r}")
    return int(arr)


def expand(
    x: np.ndarray,
    model: str | ModelSpec = "linear",
    *,
    degree: int | None = None,
    terms: int | None = None,
) -> np.ndarray:
    """Expand colours ``x (..., n_channels)`` into the terms of a model, channel axis last.

    ``lstsq(expand(S, model), D)`` fits the model's matrix (unweighted least squares).

    Examples
    --------
    >>> expand(np.array([1.0, 4.0, 9.0]), "root_polynomial", degree=2)
    array([1., 4., 9., 2., 6., 3.])
    >>> expand(np.array([1.0, 2.0, 3.0]), "polynomial", terms=5)
    array([1., 2., 3., 6., 1.])
    """
    x = np.asarray(x)
    n = x.shape[-1] if x.ndim else 0
    return resolve_model(model, degree=degree, terms=terms, n_channels=n).expand(x)


def matrix_dataarray(
    values: np.ndarray,
    model: str | ModelSpec = "linear",
    *,
    degree: int | None = None,
    terms: int | None = None,
    in_labels: Sequence[Hashable] | None = None,
    out_labels: Sequence[Hashable] | None = None,
    dim: Hashable = "channel",
    batch_dims: Sequence[Hashable] = (),
    coords: Mapping[Hashable, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Build a matrix DataArray of a model: rows labelled by term, ``attrs`` naming the model.

    Parameters
    ----------
    values : array, shape (*batch, n_terms, n_out)
        The matrix (NumPy or Dask), one per batch element.
    model, degree, terms
        As for :func:`resolve_model`; the input channels are ``values``' rows for
        ``linear`` (one fewer for ``affine``), else 3.
    in_labels : sequence, optional
        Labels of the input channels (e.g. ``["R", "G", "B"]``): the rows are labelled
        :meth:`ModelSpec.labels` of them. Without them the rows are not labelled (as a
        fit of unlabelled channels is).
    out_labels : sequence, optional
        Column labels (``dim`` coords).
    dim : hashable, default "channel"
        The channel dim; the rows are ``f"{dim}_in"``.
    batch_dims : sequence of hashable
        Names of the leading axes of ``values``.
    coords, attrs : mapping, optional
        More coords (e.g. of the batch dims) and attrs; the model attrs win.

    Returns
    -------
    DataArray
        Dims ``(*batch_dims, f"{dim}_in", dim)``, ``attrs["model"]`` (and ``degree`` or
        ``terms``) set, so :func:`xccm.apply` and :func:`xccm.inverse` need nothing else.

    Examples
    --------
    >>> m = matrix_dataarray(np.zeros((6, 3)), "root_polynomial", degree=2,
    ...                      in_labels=["R", "G", "B"], out_labels=["X", "Y", "Z"])
    >>> m.dims, m.attrs, m["channel_in"].values.tolist()[3:]
    (('channel_in', 'channel'), {'model': 'root_polynomial', 'degree': 2}, \
['sqrt(R*G)', 'sqrt(G*B)', 'sqrt(R*B)'])
    """
    shape = np.shape(values)
    batch_dims = tuple(batch_dims)
    if len(shape) != len(batch_dims) + 2:
        raise ValueError(
            f"values must have shape (*batch, n_terms, n_out) with {len(batch_dims)} batch "
            f"dims {batch_dims}; got shape {shape}"
        )
    rows = shape[-2]
    name = model.name if isinstance(model, ModelSpec) else model
    n_channels = {"linear": rows, "affine": rows - 1}.get(name, 3)
    spec = resolve_model(model, degree=degree, terms=terms, n_channels=max(n_channels, 1))
    if rows != spec.n_terms:
        raise ValueError(
            f"values has {rows} rows but model {spec.name!r} has {spec.n_terms} terms "
            f"({', '.join(map(str, spec.labels()))})"
        )
    in_dim = f"{dim}_in"
    all_coords: dict[Hashable, Any] = dict(coords or {})
    if in_labels is not None:
        all_coords[in_dim] = spec.labels(in_labels)
    if out_labels is not None:
        out_labels = list(out_labels)
        if len(out_labels) != shape[-1]:
            raise ValueError(
                f"out_labels has {len(out_labels)} labels but values has {shape[-1]} columns"
            )
        all_coords[dim] = out_labels
    return xr.DataArray(
        values,
        dims=(*batch_dims, in_dim, dim),
        coords=all_coords,
        attrs={**dict(attrs or {}), **spec.attrs},
    )


def row_order(spec: ModelSpec, permutation: Sequence[int]) -> np.ndarray | None:
    """Rows of ``spec``'s matrix for input channels taken in another order, or None.

    With the image's channel ``i`` being the matrix's channel ``permutation[i]``, row
    ``order[j]`` of the matrix multiplies term ``j`` of the image's expansion. None if the
    term set is not closed under that permutation (e.g. a Cheung set with ``R^2 G`` but
    not ``G^2 R``).

    Examples
    --------
    >>> row_order(resolve_model("root_polynomial", degree=2), [2, 1, 0]).tolist()
    [2, 1, 0, 4, 3, 5]
    """
    perm = list(permutation)
    index = {
        (tuple(e), r): j for j, (e, r) in enumerate(zip(spec.exponents, spec.roots, strict=True))
    }
    order = []
    for e, r in zip(spec.exponents, spec.roots, strict=True):
        # the image's term with exponents e is the matrix's term with e moved to perm
        mapped = [0] * len(e)
        for i, p in enumerate(e):
            mapped[perm[i]] = p
        j = index.get((tuple(mapped), r))
        if j is None:
            return None
        order.append(j)
    return np.array(order)
