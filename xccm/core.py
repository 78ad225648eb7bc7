"""Apply and invert colour-correction matrices; solve fits in closed form; on labelled arrays.

This layer knows about dims, coords and laziness; the arithmetic lives in
:mod:`xccm._kernels`. The public :func:`xccm.fit` (:mod:`xccm.fitting`) checks its
arguments and builds a :class:`FitProblem` (:func:`fit_problem`) that :func:`solve` solves.
Every function takes :class:`xarray.DataArray` objects (and :class:`xarray.Dataset` where
that makes sense) and also plain arrays with the channel axis last ("numpy in, numpy out").
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal, cast, overload

import numpy as np
import xarray as xr

from . import _kernels, _solve, models
from ._labels import (
    align_by_label,
    asarray,
    axis_names,
    channel_order,
    check_data,
    check_scale,
    index_values,
    is_dask,
    pair_by_label,
    permutation,
    require_one_chunk,
    require_real,
    sample_array,
    set_index,
    some,
    wrap,
)

__all__ = [
    "FitProblem",
    "Init",
    "Model",
    "Ridge",
    "RidgeTarget",
    "Robust",
    "apply",
    "fit_problem",
    "inverse",
    "invert",
    "solve",
]

Model = Literal["linear", "affine", "root_polynomial", "polynomial"]
RidgeTarget = Literal["linear", "identity"]
Init = Literal["least_squares", "white_balance"]
Robust = Literal["huber", "tukey"]
Ridge = float | Literal["auto"] | None

#: Dim names used inside apply_ufunc so that input and output channel dims (which may differ
#: in size) never clash with each other or with the user's dims: a fit's measured colours have
#: ``IN_DIM``, its reference ``OUT_DIM`` (see :class:`FitProblem`).
IN_DIM = "__xccm_in__"
OUT_DIM = "__xccm_out__"
_ROWS = "__xccm_rows__"
_STAT_ROWS = "__xccm_stat_rows__"
_STAT_COLS = "__xccm_stat_cols__"
OFFSET = "offset"
#: The default name of a fitted matrix: not ``"ccm"``, which in a Dataset is the ``.ccm``
#: accessor (``ds.ccm``), so ``m.to_dataset()`` gives ``ds.ccm_matrix`` and ``ds.ccm`` both.
#: Older versions named it ``"ccm"``; their stored matrices load all the same.
MATRIX_NAME = "ccm_matrix"


def matrix_in_dim(dim: Hashable) -> str:
    """Name of a matrix's row (input channel) dim for channel dim ``dim``: ``f"{dim}_in"``."""
    return f"{dim}_in"


# ---------------------------------------------------------------------------------------------
# fit


@dataclasses.dataclass(frozen=True)
class FitProblem:
    """A fit's inputs, checked and paired: what :func:`solve` and the ΔE refinement take.

    :func:`xccm.fit` validates its arguments, prepares the colours (a loss, a Lab reference,
    masks) and builds one with :func:`fit_problem`. ``measured`` has dims
    ``(*batch_dims, *sample_dims, IN_DIM)``, ``reference`` ``(*batch_dims, *sample_dims,
    OUT_DIM)`` and ``weights`` (None: every sample weighs 1) ``(*batch_dims,
    *sample_dims)``: paired by label, broadcast against each other, in that dim order, and
    for Dask chunked alike (whole channels, small batch blocks grouped). ``rows`` and
    ``columns`` label the matrix (None: unlabelled); ``attrs`` go onto it. ``metric`` (a
    :class:`xccm.colorimetry.Metric`) and ``max_iter`` are the loss settings of a ΔE
    refinement; ``metric`` is None for a plain least-squares (or white-balance) fit.

    ``spec`` is the model (:func:`xccm.models.resolve_model`); for a term-expanded model
    (``root_polynomial``, ``polynomial``) ``measured`` holds the *expanded* samples, its
    ``IN_DIM`` the terms, so every solve sees a linear problem in them. ``ridge`` and
    ``ridge_target`` are the Tikhonov penalty (:mod:`xccm._solve`); ``white`` the colours
    ``(t_w (*batch, IN_DIM), d_w (*batch, OUT_DIM))`` the fit must map exactly (None: no
    constraint); ``ridge_matrix`` the ridge target :math:`M_0` once :func:`solve` has
    computed it (the ΔE refinement's penalty pulls toward it too).
    """

    measured: xr.DataArray
    reference: xr.DataArray
    weights: xr.DataArray | None
    dim: Hashable
    batch_dims: tuple[Hashable, ...]
    sample_dims: tuple[Hashable, ...]
    model: Model = "linear"
    init: Init = "least_squares"
    min_samples: int = 0
    robust: Robust | None = None
    robust_tuning: float | None = None
    rows: list | None = None
    columns: list | None = None
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    metric: Any = None
    max_iter: int = 200
    spec: models.ModelSpec | None = None
    ridge: float | None = None
    ridge_target: RidgeTarget = "linear"
    white: tuple[xr.DataArray, xr.DataArray] | None = None
    ridge_matrix: xr.DataArray | None = None

    @property
    def model_spec(self) -> models.ModelSpec:
        """The model; a plain ``linear`` / ``affine`` problem has none stored."""
        if self.spec is not None:
            return self.spec
        n_in = self.measured.sizes[IN_DIM]
        return models.resolve_model(self.model, n_channels=n_in)

    @property
    def unknowns(self) -> int:
        """Rows of the matrix (unknowns per column): the terms, plus the affine offset."""
        return self.measured.sizes[IN_DIM] + (self.model == "affine")

    @property
    def linear_rows(self) -> list[int]:
        """Rows of the channel terms (``R, G, B``) in the matrix."""
        spec = self.model_spec
        return [
            j
            for j, (e, r) in enumerate(zip(spec.exponents, spec.roots, strict=True))
            if r == 1 and sum(e) == 1
        ]

    @property
    def plain(self) -> bool:
        """A linear or affine fit without ridge or constraint: :func:`_kernels.solve_gram`."""
        return self.model in ("linear", "affine") and not self.ridge and self.white is None

    @property
    def arrays(self) -> list[xr.DataArray]:
        """``[measured, reference]``, and ``weights`` where given."""
        extra = [] if self.weights is None else [self.weights]
        return [self.measured, self.reference, *extra]


def fit_problem(
    measured: xr.DataArray,
    reference: xr.DataArray,
    weights: Any,
    *,
    dim: Hashable,
    sample_dims: tuple[Hashable, ...],
    **settings: Any,
) -> FitProblem:
    """Pair ``measured``, ``reference`` and ``weights`` by label into a :class:`FitProblem`.

    The inputs are checked already (:func:`xccm.fit`); ``weights`` may be a plain array of
    the sample dims' shape. ``settings`` are the other fields of :class:`FitProblem`.
    """
    samples = tuple(sample_dims)
    s = measured.rename({dim: IN_DIM})
    d = reference.rename({dim: OUT_DIM})
    arrays = [s, d]
    if weights is not None:
        arrays.append(_as_weights(weights, samples, measured, dim))
    arrays = align_by_label(arrays, samples, skip=(IN_DIM, OUT_DIM))
    if any(a.chunks is not None for a in arrays):
        # Broadcast in Dask, not NumPy: a NumPy view broadcast over many frames would be
        # materialised when the graph is serialised.
        arrays = [a if a.chunks is not None else a.chunk() for a in arrays]
    arrays = list(xr.broadcast(*arrays, exclude=[IN_DIM, OUT_DIM]))
    batch = tuple(x for x in arrays[0].dims if x not in (*samples, IN_DIM))
    order = (*batch, *samples)
    arrays = [a.transpose(*order, *[c for c in (IN_DIM, OUT_DIM) if c in a.dims]) for a in arrays]
    if arrays[0].chunks is not None:  # every input in measured's blocks: none finer
        sizes = grouped(arrays[0], batch, samples).chunksizes
        arrays = [a.chunk({x: sizes[x] for x in batch if x in a.dims}) for a in arrays]
    rows = index_values(measured, dim)
    spec = settings.get("spec")
    if spec is not None and not spec.is_linear:
        arrays[0] = _expand(arrays[0], spec)
        if rows is not None:
            rows = spec.labels(rows)
    if rows is not None and settings.get("model") == "affine":
        rows = [*rows, OFFSET]
    return FitProblem(
        measured=arrays[0],
        reference=arrays[1],
        weights=arrays[2] if len(arrays) > 2 else None,
        dim=dim,
        batch_dims=batch,
        sample_dims=samples,
        rows=rows,
        columns=index_values(reference, dim),
        **settings,
    )


_TERMS = "__xccm_terms__"


def _expand(measured: xr.DataArray, spec: models.ModelSpec) -> xr.DataArray:
    """Expand ``measured``'s colours into the model's terms along ``IN_DIM`` (float64, lazy).

    Patch colours are small: the expanded copy is of the samples, never of an image.
    """
    out = xr.apply_ufunc(
        lambda x: spec.expand(np.asarray(x, dtype=np.float64)),
        measured,
        input_core_dims=[[IN_DIM]],
        output_core_dims=[[_TERMS]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {_TERMS: spec.n_terms}},
        keep_attrs=True,
    )
    return out.rename({_TERMS: IN_DIM}).drop_vars(IN_DIM, errors="ignore")


def white_colours(
    problem: FitProblem, white_patch: Any = None
) -> tuple[xr.DataArray, xr.DataArray]:
    """Return the colours ``(t_w, d_w)`` a ``white_point="preserve"`` fit maps exactly.

    ``white_patch`` names the sample: a label of the (single) sample dim, or a mapping
    ``{sample_dim: label}`` (a position where a dim has no coords). Without it, per batch
    element: the valid sample (finite, positive weight) whose reference is near neutral
    (its channels within 20 % of their mean) with the highest mean (the brightest grey),
    ties averaged; an element with none gets a NaN matrix. ``t_w`` is the measured colour
    expanded into the model's terms (with the affine ``1``), ``d_w`` the reference.
    """
    s, d, w = problem.measured, problem.reference, problem.weights
    samples = problem.sample_dims
    if white_patch is None:
        finite_s, finite_d = cast(xr.DataArray, np.isfinite(s)), cast(xr.DataArray, np.isfinite(d))
        valid = finite_s.all(IN_DIM) & finite_d.all(OUT_DIM)
        if w is not None:
            valid = valid & (w.fillna(0) > 0)
        mean = d.mean(OUT_DIM)
        spread = d.max(OUT_DIM) - d.min(OUT_DIM)
        neutral = valid & (mean > 0) & (spread <= 0.2 * mean)
        score = xr.where(neutral, mean, -np.inf)
        best = score.max(samples)
        chosen = (score == best) & (best > -np.inf)
    else:
        chosen = _named_sample(s, samples, white_patch)
    count = chosen.sum(samples)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_w = xr.where(chosen, s, 0.0).sum(samples) / count
        d_w = xr.where(chosen, d, 0.0).sum(samples) / count
    t_w = xr.where(count > 0, t_w, np.nan)
    if problem.model == "affine":  # the channels' coords (if any) have no "1" to join
        t_w = t_w.drop_vars([k for k, v in t_w.coords.items() if IN_DIM in v.dims])
        ones = xr.ones_like(t_w.isel({IN_DIM: 0}, drop=True)).expand_dims(IN_DIM, -1)
        t_w = xr.concat([t_w, ones], IN_DIM)
    batch = [x for x in problem.batch_dims if x in t_w.dims]
    t_w = t_w.transpose(*batch, IN_DIM)
    d_w = d_w.transpose(*[x for x in problem.batch_dims if x in d_w.dims], OUT_DIM)
    return t_w, d_w


def _named_sample(s: xr.DataArray, samples, white_patch) -> xr.DataArray:
    """Return a boolean over ``samples``: True at the sample ``white_patch`` names."""
    if isinstance(white_patch, dict):
        where = dict(white_patch)
    elif len(samples) == 1:
        where = {samples[0]: white_patch}
    else:
        raise ValueError(
            f"white_patch={white_patch!r} must name one label per sample dim when there are "
            f"several {samples}: pass a dict, e.g. white_patch={dict.fromkeys(samples, '...')}"
        )
    unknown = [x for x in where if x not in samples]
    missing = [x for x in samples if x not in where]
    if unknown or missing:
        raise ValueError(
            f"white_patch={white_patch!r} must name a label of each sample dim {samples}; "
            + (f"{tuple(unknown)} are not sample dims" if unknown else f"it lacks {missing}")
        )
    chosen = None
    for x, label in where.items():
        values = index_values(s, x)
        if values is None:
            values = list(range(s.sizes[x]))
        hits = [i for i, v in enumerate(values) if _same_label(v, label)]
        if len(hits) != 1:
            raise ValueError(
                f"white_patch: sample dim {x!r} has "
                + ("no" if not hits else f"{len(hits)}")
                + f" sample labelled {label!r}; its labels are {some(np.asarray(values))}"
                + ("" if index_values(s, x) is not None else " (no coords: positions)")
            )
        one = xr.DataArray(np.arange(s.sizes[x]) == hits[0], dims=x)
        chosen = one if chosen is None else chosen & one
    assert chosen is not None
    return chosen


def _same_label(value, label) -> bool:
    try:
        return bool(value == label)
    except (TypeError, ValueError):
        return False


def solve(problem: FitProblem) -> tuple[xr.DataArray, FitProblem, xr.DataArray | None]:
    """Solve ``problem`` in closed form: weighted least squares (robust) or white balance.

    Returns the matrix (labelled, with ``problem.attrs``; a robust fit's diagnostics as
    coords), the problem with the robust weights folded into its weights (what the closed
    form solved), and the robust weights ``(*batch, *samples)`` (None without ``robust``).
    """
    p = problem
    batch, samples = p.batch_dims, p.sample_dims
    weighted, robust_weight = p, None
    robust_coords: dict[str, xr.DataArray] = {}
    if p.robust is not None:
        robust_weight, robust_coords = _robust_weights(p)
        # A sample left out of the robust fit (NaN weight) is left to the gram's own rules:
        # non-finite colours are left out, a negative or infinite user weight is an error.
        factor = robust_weight.fillna(1.0)
        w_eff = factor if p.weights is None else p.weights * factor
        weighted = dataclasses.replace(p, weights=w_eff.transpose(*batch, *samples))
    stats = _gram(weighted.arrays, n_sample_axes=len(samples))
    stats = xr.DataArray(
        stats, dims=(*batch, _STAT_ROWS, _STAT_COLS), coords=_batch_coords(p.arrays, batch)
    )
    if stats.chunks is not None:  # the solve sees every batch element, so all-NaN is global
        stats = stats.chunk(dict.fromkeys(batch, -1))
    in_dim = matrix_in_dim(p.dim)
    n_in, n_out = p.measured.sizes[IN_DIM], p.reference.sizes[OUT_DIM]
    k = p.unknowns
    sizes = {in_dim: k, OUT_DIM: n_out}
    if p.plain:
        matrix = xr.apply_ufunc(
            _kernels.solve_gram,
            stats,
            input_core_dims=[[_STAT_ROWS, _STAT_COLS]],
            output_core_dims=[[in_dim, OUT_DIM]],
            kwargs={"n_in": n_in, "model": p.model, "init": p.init, "min_samples": p.min_samples},
            dask="parallelized",
            output_dtypes=[np.float64],
            dask_gufunc_kwargs={"output_sizes": sizes},
        )
    else:
        white = [] if p.white is None else [_one_chunk(a, batch) for a in p.white]
        matrix = xr.apply_ufunc(
            _solve_block,
            stats,
            *white,
            input_core_dims=[[_STAT_ROWS, _STAT_COLS]] + [[IN_DIM], [OUT_DIM]] * bool(white),
            output_core_dims=[[in_dim, OUT_DIM]],
            kwargs={"min_samples": p.min_samples, **_solve_kwargs(p)},
            dask="parallelized",
            output_dtypes=[np.float64],
            dask_gufunc_kwargs={"output_sizes": sizes},
        )
        if refines(p):
            matrix = _refined(weighted, stats, matrix, in_dim)
        if p.ridge and p.init != "white_balance":
            target = xr.apply_ufunc(
                _ridge_target_block,
                stats,
                input_core_dims=[[_STAT_ROWS, _STAT_COLS]],
                output_core_dims=[[in_dim, OUT_DIM]],
                kwargs=_solve_kwargs(p, target=True),
                dask="parallelized",
                output_dtypes=[np.float64],
                dask_gufunc_kwargs={"output_sizes": sizes},
            ).rename({OUT_DIM: p.dim})
            weighted = dataclasses.replace(weighted, ridge_matrix=target)
    matrix = matrix.rename({OUT_DIM: p.dim})
    matrix = set_index(matrix, in_dim, p.rows)
    matrix = set_index(matrix, p.dim, p.columns)
    matrix.name = MATRIX_NAME
    spec_attrs = p.spec.attrs if p.spec is not None else {}
    matrix.attrs = {"model": p.model, **spec_attrs, "init": p.init, **p.attrs}
    if p.ridge:
        matrix.attrs.update(ridge=float(p.ridge), ridge_target=p.ridge_target)
    if p.white is not None:
        matrix.attrs["white_point"] = "preserve"
    if p.robust is not None:
        matrix.attrs.update(robust=p.robust, robust_tuning=p.robust_tuning)
        matrix = matrix.assign_coords(robust_coords)
    return matrix, weighted, robust_weight


#: Steps of iterative refinement of an expanded model's least-squares solve (:func:`_refined`).
REFINEMENT_STEPS = 1


def refines(p: FitProblem) -> bool:
    r"""Whether :func:`solve` refines ``p``'s least squares: an expanded model, unregularised.

    A plain 3x3 / 4x3 is well conditioned and keeps its single solve. With ``ridge`` the
    system :math:`A + λ\,\mathrm{diag}(A)` is well conditioned (its condition number is at
    most about :math:`1/λ` relative to the diagonal), so the normal equations are accurate
    already; with the white-point constraint the solve is in the constraint's null space;
    white balance solves nothing. Those are left as they are.
    """
    return not p.plain and not p.ridge and p.white is None and p.init == "least_squares"


def _refined(p: FitProblem, stats: xr.DataArray, matrix: xr.DataArray, in_dim: str) -> xr.DataArray:
    """Refine the least-squares ``matrix`` of ``p`` (:func:`_solve.correct`), lazily.

    The normal equations square the design's condition number; each step computes the
    residual ``R = D - T M`` of the (expanded) samples per batch element, reduces ``T^T W R``
    chunk by chunk as :func:`_gram` reduces the statistics (a second pass over the samples),
    and solves with the same ``A``. The same samples count: ``R`` is finite where the colours
    are, and the weights are ``p``'s. On Dask the samples' chunks are held from the first
    pass until the first solve is done (patch colours: small; a pixel-level fit of an
    expanded model without ridge holds its samples).
    """
    batch, samples = p.batch_dims, p.sample_dims
    n_in = p.measured.sizes[IN_DIM]
    for _ in range(REFINEMENT_STEPS):
        m = matrix.rename({in_dim: _ROWS})
        if p.measured.chunks is not None and m.chunks is None:
            m = m.chunk()
        r = xr.apply_ufunc(
            _solve.residual,
            p.measured,
            p.reference,
            m,
            input_core_dims=[[IN_DIM], [OUT_DIM], [_ROWS, OUT_DIM]],
            output_core_dims=[[OUT_DIM]],
            dask="parallelized",
            output_dtypes=[np.float64],
        ).transpose(*p.reference.dims)
        extra = [] if p.weights is None else [p.weights]
        stats_r = _gram([p.measured, r, *extra], n_sample_axes=len(samples))
        stats_r = xr.DataArray(stats_r, dims=stats.dims, coords=stats.coords)
        if stats_r.chunks is not None:
            stats_r = stats_r.chunk(dict.fromkeys(batch, -1))
        matrix = xr.apply_ufunc(
            _solve.correct,
            stats,
            stats_r,
            matrix,
            input_core_dims=[[_STAT_ROWS, _STAT_COLS], [_STAT_ROWS, _STAT_COLS], [in_dim, OUT_DIM]],
            output_core_dims=[[in_dim, OUT_DIM]],
            kwargs={"n_in": n_in, "k": p.unknowns},
            dask="parallelized",
            output_dtypes=[np.float64],
        )
    return matrix


def _one_chunk(a: xr.DataArray, batch) -> xr.DataArray:
    """Return ``a`` in one chunk along every dim (the solve sees every batch element at once)."""
    return a if a.chunks is None else a.chunk(dict.fromkeys(a.dims, -1))


def _solve_kwargs(p: FitProblem, target: bool = False) -> dict[str, Any]:
    """Return the settings of :func:`_solve.solve_model_gram` (``target``: of the ridge target)."""
    out = {
        "n_in": p.measured.sizes[IN_DIM],
        "k": p.unknowns,
        "linear_rows": p.linear_rows,
    }
    if target:
        return {**out, "target": p.ridge_target}
    return {
        **out,
        "init": p.init,
        "ridge": p.ridge,
        "target": p.ridge_target,
        "model": p.model,
    }


def _solve_block(g, t_w=None, d_w=None, **kwargs):
    return _solve.solve_model_gram(g, white_t=t_w, white_d=d_w, **kwargs)


def _ridge_target_block(g, *, n_in, k, linear_rows, target):
    p = g.shape[-1]
    a, b = g[..., :k, :k], g[..., :k, n_in + 1 : p]
    return _solve.ridge_target(a, b, linear_rows, target)


def _robust_solver(kwargs: dict[str, Any], t_w=None, d_w=None):
    """Return the closed form the robust reweighting refits with: ridge and constraint included."""
    kwargs = {k: v for k, v in kwargs.items() if k != "model"}
    return functools.partial(_solve_stats_block, t_w=t_w, d_w=d_w, **kwargs)


def _solve_stats_block(g, min_samples, idx=None, *, t_w, d_w, **kwargs):
    if t_w is not None and idx is not None:
        t_w, d_w = t_w[idx], d_w[idx]
    return _solve.solve_model_stats(g, min_samples=min_samples, white_t=t_w, white_d=d_w, **kwargs)


#: Per-batch diagnostics of a robust fit, as coords of the matrix.
ROBUST_DIAGNOSTICS = ("robust_scale", "robust_rounds", "robust_converged")


def _robust_weights(problem: FitProblem) -> tuple[xr.DataArray, dict[str, xr.DataArray]]:
    """Robust weights ``(*batch, *samples)`` of the least-squares fit, and per-batch coords.

    Every batch element needs all its samples at once (each round reweights them all), so a
    lazy fit works on blocks holding whole elements, grouped along the batch dims as a ΔE
    fit's are (:func:`batch_chunks`).
    """
    batch, samples = problem.batch_dims, problem.sample_dims
    arrays = problem.arrays
    s, d = arrays[0], arrays[1]
    others = arrays[2:]
    if any(a.chunks is not None for a in arrays):
        per_element = np.prod([s.sizes[x] for x in samples], dtype=np.int64)
        sizes = batch_chunks(s, batch, int(per_element))
        chunks = dict.fromkeys((*samples, IN_DIM, OUT_DIM), -1) | sizes
        s, d, *others = (
            a.chunk({k: v for k, v in chunks.items() if k in a.dims}) for a in (s, d, *others)
        )
    core = [[*samples, IN_DIM], [*samples, OUT_DIM]] + [list(samples)] * len(others)
    white = []
    if problem.white is not None:
        white = [problem.white[0].rename({IN_DIM: _ROWS}), problem.white[1]]
        if s.chunks is not None:
            white = [
                a.chunk({x: v for x, v in (chunks | sizes).items() if x in a.dims}) for a in white
            ]
        core += [[_ROWS], [OUT_DIM]]
    outputs = xr.apply_ufunc(
        _robust_block,
        s,
        d,
        *others,
        *white,
        input_core_dims=core,
        output_core_dims=[list(samples), [], [], []],
        kwargs={
            "n_samples": len(samples),
            "n_weights": len(others),
            "solver": None if problem.plain else _solve_kwargs(problem),
            "model": "affine" if problem.model == "affine" else "linear",
            "init": problem.init,
            "min_samples": problem.min_samples,
            "method": problem.robust,
            "tuning": problem.robust_tuning,
        },
        dask="parallelized",
        output_dtypes=[np.float64, np.float64, np.int64, bool],
    )
    weight, *diagnostics = outputs
    if weight.chunks is not None:  # like the matrix: one chunk along the batch dims
        diagnostics = [o.chunk(dict.fromkeys(o.dims, -1)) for o in diagnostics]
    weight = weight.transpose(*batch, *samples)
    return weight, dict(zip(ROBUST_DIAGNOSTICS, diagnostics, strict=True))


def _robust_block(s, d, *rest, n_samples, n_weights, solver, **kwargs):
    batch = s.shape[: s.ndim - 1 - n_samples]
    lead = s.shape[: s.ndim - 1]
    n = int(np.prod(lead[len(batch) :], dtype=np.int64))
    w = rest[0] if n_weights else None
    if solver is not None:  # its model's closed form, ridge and constraint
        white = rest[n_weights:]
        t_w, d_w = (
            (np.broadcast_to(a, (*batch, a.shape[-1])).reshape(-1, a.shape[-1]) for a in white)
            if white
            else (None, None)
        )
        solver = _robust_solver(solver, t_w, d_w)
    weights, scale, rounds, converged = _kernels.irls(
        s.reshape(-1, n, s.shape[-1]),
        d.reshape(-1, n, d.shape[-1]),
        None if w is None else w.reshape(-1, n),
        solver=solver,
        **kwargs,
    )
    return (
        weights.reshape(lead),
        scale.reshape(batch),
        rounds.reshape(batch),
        converged.reshape(batch),
    )


def used_samples(problem: FitProblem) -> xr.DataArray:
    """1 for the samples a plain fit uses, NaN for those it leaves out (``return_weights``)."""
    s, d, w = problem.measured, problem.reference, problem.weights
    finite_s, finite_d = cast(xr.DataArray, np.isfinite(s)), cast(xr.DataArray, np.isfinite(d))
    used = finite_s.all(IN_DIM) & finite_d.all(OUT_DIM)
    if w is not None:
        used = used & (w.fillna(0) > 0)
    return xr.where(used, 1.0, np.nan).transpose(*[x for x in s.dims if x != IN_DIM])


def _as_weights(weights, samples, measured, dim) -> xr.DataArray:
    weights = sample_array(weights, samples, measured, "weights")
    if weights.dtype == bool:  # a mask: True counts 1, False leaves the sample out
        weights = weights.astype(np.float64)
    require_real(weights, "weights")
    if dim in weights.dims:
        raise ValueError(
            f"weights must not have the channel dim {dim!r}: a weight applies to a whole "
            f"sample; its dims are {weights.dims}"
        )
    missing = [d for d in samples if d not in weights.dims]
    if missing:
        raise ValueError(
            f"weights must span the sample dims {samples}; it lacks {tuple(missing)} "
            f"(its dims are {weights.dims})"
        )
    return weights


#: Samples per task of a lazy fit (:data:`xccm._kernels.SAMPLES_PER_BLOCK`). Smaller blocks
#: (patch colours come one frame a chunk from extract_patches) are grouped into blocks of
#: about this many samples: a task per frame costs far more than its fit.
_SAMPLES_PER_TASK = _kernels.SAMPLES_PER_BLOCK


def batch_chunks(
    obj: xr.DataArray, batch: Sequence[Hashable], per_element: int
) -> dict[Hashable, int]:
    """Chunk sizes along ``batch`` for blocks of about ``_SAMPLES_PER_TASK`` samples.

    ``per_element`` is the number of samples of one batch element in a block. The batch dims
    are taken from the last: each is one chunk while the block stays within the budget; the
    first that does not fit gets as many elements as the budget allows, never fewer than a
    chunk of ``obj`` has now (a frame of pixels is already a block's worth), and the dims
    before it keep their chunks.
    """
    sizes: dict[Hashable, int] = {}
    volume = max(int(per_element), 1)
    for d in reversed(batch):
        n = obj.sizes[d]
        if volume * n <= _SAMPLES_PER_TASK:
            sizes[d] = -1
            volume *= max(n, 1)
            continue
        now = max(obj.chunksizes[d]) if obj.chunks is not None else 1
        sizes[d] = max(_SAMPLES_PER_TASK // volume, now, 1)
        break
    return sizes


def grouped(obj: xr.DataArray, batch: Sequence[Hashable], samples) -> xr.DataArray:
    """Group the small blocks of a Dask-backed ``obj`` along ``batch`` (:func:`batch_chunks`).

    Its chunks along the sample dims are kept. A NumPy-backed ``obj`` is returned as it is.
    """
    if obj.chunks is None or not batch:
        return obj
    chunks = obj.chunksizes
    per_element = np.prod([max(chunks[d], default=1) for d in samples], dtype=np.int64)
    return obj.chunk(batch_chunks(obj, batch, int(per_element)))


def _gram(arrays: list[xr.DataArray], n_sample_axes: int):
    """Sum :func:`_kernels.gram` over all samples, chunk by chunk for Dask."""
    data = [a.data for a in arrays]
    if not any(is_dask(x) for x in data):
        weights = data[2] if len(data) > 2 else None
        return _kernels.gram(data[0], data[1], weights, n_sample_axes=n_sample_axes)
    import dask.array as dsa

    data = [dsa.asarray(x) for x in data]
    if data[0].numblocks[-1] > 1 or data[1].numblocks[-1] > 1:
        data[0], data[1] = data[0].rechunk({-1: -1}), data[1].rechunk({-1: -1})
    ndim = data[0].ndim - 1  # batch + sample axes, shared by every input
    lead = tuple(f"a{i}" for i in range(ndim))
    samples = lead[ndim - n_sample_axes :]
    p = data[0].shape[-1] + 1 + data[1].shape[-1]
    args = [data[0], (*lead, "c_in"), data[1], (*lead, "c_out")]
    if len(data) == 3:
        args += [data[2], lead]
    partial = dsa.blockwise(
        _block_gram,
        (*lead, "r", "c"),
        *args,
        new_axes={"r": p + 1, "c": p},
        adjust_chunks=dict.fromkeys(samples, 1),
        dtype=np.float64,
        n_sample_axes=n_sample_axes,
        concatenate=True,
    )
    return partial.sum(axis=tuple(range(ndim - n_sample_axes, ndim)))


def _block_gram(s, d, w=None, *, n_sample_axes):
    g = _kernels.gram(s, d, w, n_sample_axes=n_sample_axes, parallel=False)
    return np.expand_dims(g, tuple(range(g.ndim - 2, g.ndim - 2 + n_sample_axes)))


def _batch_coords(arrays, batch) -> dict:
    coords = {}
    for a in arrays:
        for name, c in a.coords.items():
            if name not in coords and set(c.dims) <= set(batch):
                coords[name] = c.variable
    return coords


# ---------------------------------------------------------------------------------------------
# apply, inverse, invert


@overload
def apply(
    image: xr.DataArray,
    matrix: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = ...,
    scale: Any = ...,
    keep_attrs: bool = ...,
) -> xr.DataArray: ...


@overload
def apply(
    image: xr.Dataset,
    matrix: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = ...,
    scale: Any = ...,
    keep_attrs: bool = ...,
) -> xr.Dataset: ...


@overload
def apply(
    image: np.ndarray,
    matrix: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = ...,
    scale: Any = ...,
    keep_attrs: bool = ...,
) -> np.ndarray: ...


def apply(
    image: Any,
    matrix: Any,
    *,
    dim: Hashable = "channel",
    scale: Any = None,
    keep_attrs: bool = True,
) -> Any:
    """Apply a colour-correction matrix: ``D = S @ M`` or ``D = [S, 1] @ M``.

    Parameters
    ----------
    image : DataArray, Dataset or ndarray
        Colours with channel dim ``dim`` (anywhere: channel-last and channel-first stacks
        both work). For a Dataset every data variable with ``dim`` is corrected and the
        others (including matrices stored alongside, which have ``f"{dim}_in"``) are copied.
        An ndarray has its channel axis last.
    matrix : DataArray or ndarray
        A matrix from :func:`xccm.fit`: dims ``(*batch, f"{dim}_in", dim)``, its batch dims
        matched to the image's by name (a per-frame matrix corrects each frame). A plain
        ``(n_in, n_out)`` (linear) or ``(n_in + 1, n_out)`` (affine) array also works; with an
        ndarray image, a plain matrix may have leading batch axes matching the image's
        leading axes. Row labels (if both have coords) are matched to the image's channels.
    dim : hashable, default "channel"
        The channel dim. It must be a single chunk for Dask-backed input.
    scale : float, optional
        Multiply the image by ``scale`` before the matrix, e.g. ``1 / 255`` to read 8-bit
        images as [0, 1]. Folded into the matrix, so it costs nothing. One finite positive
        number, or a 0-d array of one (a lazy one is checked on compute), as for
        :func:`xccm.linearize`.
    keep_attrs : bool, default True
        Keep the image's attrs.

    Returns
    -------
    DataArray, Dataset or ndarray
        The corrected image: same dims in the same order, coords, attrs and chunks, with
        ``dim`` of size ``n_out`` (and the matrix's column coords, if any). Floating input
        keeps its dtype (float32 stays float32); integer input becomes float32. Dask-backed
        input stays lazy, with one task per image chunk: a per-frame matrix is not cut into
        the image's chunks by tasks of its own; each task slices its frames' matrices.

    Raises
    ------
    ValueError
        If ``dim`` is missing or split across chunks, the matrix does not fit the image,
        or ``scale`` is not finite and positive.
    TypeError
        If the image or matrix is not real numeric (or the matrix is a Dataset), or
        ``scale`` is not one real number.

    Examples
    --------
    >>> img = xr.DataArray(np.ones((2, 2, 3), "f4"), dims=("y", "x", "channel"))
    >>> out = apply(img, np.diag([1.0, 2.0, 3.0]))
    >>> out.dtype, out.isel(y=0, x=0).values.tolist()
    (dtype('float32'), [1.0, 2.0, 3.0])
    """
    if isinstance(image, xr.Dataset):
        return map_dataset(apply, image, matrix, dim=dim, scale=scale, keep_attrs=keep_attrs)
    if not isinstance(image, xr.DataArray):
        return _apply_arrays(image, matrix, dim, scale)
    matrix, dtype, spec = _prepare_apply(image, matrix, dim, scale)
    in_dim = matrix_in_dim(dim)
    n_out = matrix.sizes[dim]
    result = xr.apply_ufunc(
        _apply_blocks,
        image.rename({dim: IN_DIM}),
        matrix.rename({dim: OUT_DIM}),
        input_core_dims=[[IN_DIM], [in_dim, OUT_DIM]],
        output_core_dims=[[OUT_DIM]],
        kwargs={"dtype": dtype, "kernel": _kernel_of(spec)},
        dask="allowed",
        keep_attrs=keep_attrs,
        join="exact",
    )
    result = result.rename({OUT_DIM: dim}).transpose(*image.dims, ...)
    if dim not in result.coords and n_out == image.sizes[dim]:
        # A matrix without column labels keeps the image's channel coords.
        result = result.assign_coords(
            {
                k: c
                for k, c in image.coords.items()
                if dim in c.dims and set(c.dims) <= set(result.dims)
            }
        )
    result.name = image.name
    return result


def _kernel_of(spec: models.ModelSpec, inverse: bool = False) -> Callable:
    """Return the ndarray kernel ``f(x, m, dtype, *, parallel)`` of a model's apply or inverse."""
    if spec.is_linear and not inverse:
        return _kernels.apply_matrix
    method = _kernels.solve_terms if inverse else _kernels.apply_matrix
    return functools.partial(method, terms=spec.table())


def _apply_blocks(x, m, *, dtype, kernel: Callable = _kernels.apply_matrix):
    """Apply ``m (..., k, n_out)`` to ``x (..., n_in)``: eagerly, or block by block for Dask.

    For Dask this is one ``blockwise`` layer with one task per image block, in which each
    task gets its image block as it is (``apply_gufunc`` would copy every block to merge the
    single-chunk channel dim) and runs the serial kernel, one block per scheduler thread.
    A matrix with batch axes (one per frame, say) is never cut into the image's chunks by
    tasks of its own, which would add two tasks per chunk: chunked like the image (a lazy
    per-frame matrix), block goes with block; otherwise (in memory, or a lazy fit's one
    chunk) it is one block that every task depends on, and each task slices its frames'
    matrices out of it (:func:`_apply_slice`). Only a matrix stack too large for one chunk
    (``array.chunk-size``) is cut like the image (never the image like the matrix).
    """
    if not is_dask(x) and not is_dask(m):
        return kernel(x, m, dtype, parallel=True)
    import dask.array as dsa

    x = dsa.asarray(x)
    lead = tuple(f"a{i}" for i in range(x.ndim - 1))
    n_batch = m.ndim - 2
    m_lead = lead[len(lead) - n_batch :]  # apply_ufunc aligned m's batch axes with x's
    blocks = x.chunks[len(lead) - n_batch : len(lead)]  # the image's chunks along them
    varying = [i for i in range(n_batch) if m.shape[i] > 1]  # the others are broadcast
    block_kernel = functools.partial(kernel, dtype=dtype, parallel=False)
    kwargs = {
        "adjust_chunks": {"channel": m.shape[-1]},
        "concatenate": True,  # only the small matrix's core axes are merged
        "meta": x._meta.astype(dtype),
    }
    if not is_dask(m):
        one = not varying or _fits_one_chunk(m)
        cut = tuple(blocks[i] if i in varying else -1 for i in range(n_batch))
        m = dsa.from_array(m, chunks=-1 if one else (*cut, -1, -1))
    if any(m.chunks[i] != blocks[i] for i in varying):
        if _fits_one_chunk(m):
            from dask.layers import ArraySliceDep

            return dsa.blockwise(
                functools.partial(_apply_slice, dtype=dtype, kernel=kernel),
                (*lead, "channel"),
                x,
                (*lead, "channel"),
                m.rechunk(-1),
                (*(f"m{i}" for i in range(n_batch)), "rows", "cols"),  # one block for all
                ArraySliceDep(blocks),
                m_lead,
                align_arrays=False,  # the slices follow the image's chunks
                **kwargs,
            )
        m = m.rechunk({i: blocks[i] for i in varying})  # never the image like the matrix
    return dsa.blockwise(
        block_kernel,
        (*lead, "channel"),
        x,
        (*lead, "channel"),
        m,
        (*m_lead, "rows", "cols"),
        **kwargs,
    )


def _fits_one_chunk(m) -> bool:
    """Whether a matrix stack is small enough to be one Dask chunk (``array.chunk-size``)."""
    import dask
    from dask.utils import parse_bytes

    limit = dask.config.get("array.chunk-size")
    return m.nbytes <= (parse_bytes(limit) if isinstance(limit, str) else int(limit))


def _apply_slice(x, m, where, *, dtype, kernel: Callable = _kernels.apply_matrix):
    """Apply the matrices of one image block: ``where`` slices its frames out of ``m``.

    ``where`` has a slice per batch axis of ``m`` (aligned with the image's from the right);
    an axis of size 1 is broadcast, so it is kept whole.
    """
    index = tuple(s if n > 1 else slice(None) for s, n in zip(where, m.shape, strict=False))
    return kernel(x, m[index], dtype, parallel=False)


@overload
def inverse(
    corrected: xr.DataArray,
    matrix: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = ...,
    keep_attrs: bool = ...,
) -> xr.DataArray: ...


@overload
def inverse(
    corrected: xr.Dataset,
    matrix: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = ...,
    keep_attrs: bool = ...,
) -> xr.Dataset: ...


@overload
def inverse(
    corrected: np.ndarray,
    matrix: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = ...,
    keep_attrs: bool = ...,
) -> np.ndarray: ...


def inverse(
    corrected: Any,
    matrix: Any,
    *,
    dim: Hashable = "channel",
    keep_attrs: bool = True,
) -> Any:
    """Undo :func:`apply`, returning ``S`` such that ``apply(S, matrix)`` equals ``corrected``.

    Linear: ``S = D @ inv(M)``. Affine, with ``M = [Up; Down]``: ``S = (D - Down) @ inv(Up)``.
    Same as ``apply(corrected, invert(matrix))``; see :func:`apply` for the parameters.
    The channels come back labelled by the matrix's rows; where those are the same labels
    as ``corrected``'s channels (e.g. ``R, G, B`` both), in ``corrected``'s order, so
    ``inverse(apply(x, m), m)`` has ``x``'s channel order whatever ``m``'s row order.

    Raises
    ------
    numpy.linalg.LinAlgError
        If the matrix is not square (linear) or ``(n + 1, n)`` (affine), or its square part
        is singular (for a Dask-backed matrix, on compute).

    Examples
    --------
    >>> x = xr.DataArray([[0.2, 0.4, 0.6]], dims=("pixel", "channel"))
    >>> m = np.array([[2.0, 0, 0], [0, 1, 0], [0, 0, 0.5], [0.1, 0.1, 0.1]])
    >>> xr.testing.assert_allclose(inverse(apply(x, m), m), x)

    A polynomial or root-polynomial matrix (``attrs["model"]``) has no inverse matrix: each
    pixel is solved by Newton's method from the inverse of the matrix's linear part (its
    ``R, G, B`` and offset rows), in float64. Pixels where it does not converge (the model
    need not be invertible everywhere) are NaN, and a
    :class:`~xccm._kernels.NonConvergenceWarning` says how many (for Dask, per chunk, on
    compute).
    """
    if _is_expanded(matrix):
        if isinstance(corrected, xr.Dataset):
            return map_dataset(inverse, corrected, matrix, dim=dim, keep_attrs=keep_attrs)
        if not isinstance(corrected, xr.DataArray):
            return _inverse_arrays(corrected, matrix, dim)
        return _inverse_expanded(corrected, matrix, dim, keep_attrs)
    inverted = invert(matrix, dim=dim)
    if isinstance(inverted, xr.DataArray) and isinstance(corrected, xr.DataArray | xr.Dataset):
        inverted = _columns_in_order_of(inverted, corrected, dim)
    return apply(corrected, inverted, dim=dim, keep_attrs=keep_attrs)


def _is_expanded(matrix) -> bool:
    """Whether ``matrix`` is a DataArray of a model other than linear and affine."""
    return isinstance(matrix, xr.DataArray) and matrix.attrs.get("model") not in (
        None,
        "linear",
        "affine",
    )


def _inverse_expanded(
    corrected: xr.DataArray, matrix: xr.DataArray, dim: Hashable, keep_attrs: bool
) -> xr.DataArray:
    """:func:`inverse` of a term-expanded matrix: Newton's method per pixel."""
    check_data(corrected, "corrected", dim, allow_empty=True)
    require_one_chunk(corrected, dim, "corrected")
    spec = models.model_of(matrix, dim=dim)
    matrix = _checked_matrix(matrix, dim)
    in_dim = matrix_in_dim(dim)
    n_out = matrix.sizes[dim]
    if corrected.sizes[dim] != n_out:
        raise ValueError(
            f"matrix maps onto {n_out} channels along {dim!r} but corrected has "
            f"{corrected.sizes[dim]}"
        )
    matrix = _check_batch_dims(matrix, corrected, dim)
    order = channel_order(
        index_values(matrix, dim),
        index_values(corrected, dim),
        name=f"matrix columns {dim!r}",
        target="corrected",
        dim=dim,
    )
    if order is not None:
        matrix = matrix.isel({dim: order})
    rows = index_values(matrix, in_dim)
    matrix = matrix.drop_vars([in_dim, dim], errors="ignore")
    dtype = corrected.dtype if corrected.dtype.kind == "f" else np.dtype(np.float32)
    result = xr.apply_ufunc(
        _apply_blocks,
        corrected.rename({dim: IN_DIM}),
        matrix.rename({dim: IN_DIM}),
        input_core_dims=[[IN_DIM], [in_dim, IN_DIM]],
        output_core_dims=[[OUT_DIM]],
        kwargs={"dtype": dtype, "kernel": _kernel_of(spec, inverse=True)},
        dask="allowed",
        keep_attrs=keep_attrs,
        join="exact",
    )
    result = result.rename({OUT_DIM: dim}).transpose(*corrected.dims, ...)
    if rows is not None:
        result = result.assign_coords({dim: rows[: spec.n_channels]})
    else:  # unlabelled rows: the channels keep corrected's coords, as apply does
        result = result.assign_coords(
            {
                k: c
                for k, c in corrected.coords.items()
                if dim in c.dims and set(c.dims) <= set(result.dims)
            }
        )
    result.name = corrected.name
    return result


def _inverse_arrays(corrected, matrix: xr.DataArray, dim: Hashable):
    """:func:`inverse` of a term-expanded matrix on a plain array (channel axis last)."""
    extra = [d for d in matrix.dims if d not in (matrix_in_dim(dim), dim)]
    if extra:
        raise ValueError(
            f"a plain-array image has no named dims, so a matrix with batch dims "
            f"{tuple(extra)} cannot be matched to it; wrap the image in a DataArray"
        )
    corrected = asarray(corrected)
    if corrected.ndim < 1:
        raise ValueError(f"corrected must have a channel axis (last); got shape {corrected.shape}")
    labelled = wrap(corrected, (dim,))
    matrix = matrix.drop_vars([matrix_in_dim(dim), dim], errors="ignore")
    return _inverse_expanded(labelled, matrix, dim, keep_attrs=False).data


def _columns_in_order_of(inverted: xr.DataArray, corrected, dim: Hashable) -> xr.DataArray:
    """Put the inverted matrix's columns (the source channels) in ``corrected``'s order.

    Where the matrix maps channels onto the same names (rows ``G, R, B``, columns
    ``R, G, B``), the caller's image is in ``corrected``'s order, so :func:`inverse` gives
    it back in that order rather than the matrix's row order. Other names keep the rows'.
    """
    if dim not in inverted.indexes or dim not in corrected.indexes:
        return inverted
    order = permutation(inverted.indexes[dim], corrected.indexes[dim])
    return inverted if order is None else inverted.isel({dim: order})


@overload
def invert(matrix: xr.DataArray, *, dim: Hashable = ...) -> xr.DataArray: ...


@overload
def invert(matrix: np.ndarray, *, dim: Hashable = ...) -> np.ndarray: ...


def invert(matrix: Any, *, dim: Hashable = "channel") -> Any:
    """Matrix of the inverse map, in the same shape family: 3x3 -> 3x3, 4x3 -> 4x3.

    For ``M = [Up; Down]`` (affine) the result is ``[inv(Up); -Down @ inv(Up)]``, so
    ``apply(x, invert(m))`` equals ``inverse(x, m)``. Row and column coords swap roles.

    Parameters
    ----------
    matrix : DataArray or ndarray
        Dims ``(*batch, f"{dim}_in", dim)``, or an array ``(..., n, n)`` or ``(..., n + 1, n)``.
    dim : hashable, default "channel"

    Returns
    -------
    DataArray or ndarray
        Same type, dims and attrs as ``matrix``; lazy if ``matrix`` is Dask-backed.

    Raises
    ------
    numpy.linalg.LinAlgError
        If the matrix is neither square nor affine-square, or its square part is singular.
    ValueError
        If the matrix is empty (no channels).

    Notes
    -----
    A float16 matrix is inverted in float32 (LAPACK has no float16); the result is float32.

    Examples
    --------
    >>> invert(np.diag([2.0, 4.0, 0.5]))
    array([[0.5 , 0.  , 0.  ],
           [0.  , 0.25, 0.  ],
           [0.  , 0.  , 2.  ]])
    """
    if not isinstance(matrix, xr.DataArray):
        arr = _plain_matrix(matrix)
        if arr.ndim < 2:
            raise ValueError(
                f"matrix must have at least 2 dims (n_in, n_out); got shape {arr.shape}"
            )
        rows, cols = arr.shape[-2:]
        _check_invertible_shape(rows, cols, f"shape {arr.shape[-2:]}")
        # float16 (which LAPACK lacks) is inverted in float32, as its result dtype says
        arr = arr.astype(np.result_type(arr, np.float32), copy=False)
        if is_dask(arr):  # lazily, each block of whole matrices
            if rows not in (cols, cols + 1):  # checked now, as for an in-memory matrix
                raise np.linalg.LinAlgError(
                    f"only a square (n, n) linear or (n + 1, n) affine matrix can be inverted; "
                    f"got shape {arr.shape[-2:]}"
                )
            whole = arr.rechunk({-2: -1, -1: -1})
            return whole.map_blocks(_kernels.invert_matrix, dtype=np.result_type(arr, np.float32))
        return _kernels.invert_matrix(arr)
    in_dim = matrix_in_dim(dim)
    if _is_expanded(matrix):
        raise ValueError(
            f"matrix has model {matrix.attrs['model']!r}, which is not linear in the colours: "
            "it has no inverse matrix. Use xccm.inverse(corrected, matrix) instead, which "
            "solves each pixel (Newton's method)"
        )
    matrix = _checked_matrix(matrix, dim)
    rows, cols = matrix.sizes[in_dim], matrix.sizes[dim]
    _check_invertible_shape(rows, cols, f"{rows} {in_dim!r} rows and {cols} {dim!r} columns")
    matrix = matrix.astype(np.result_type(matrix.dtype, np.float32), copy=False)
    allowed = {"linear": (cols,), "affine": (cols + 1,)}.get(
        matrix.attrs.get("model"), (cols, cols + 1)
    )
    if rows not in allowed:
        raise np.linalg.LinAlgError(
            f"only a square (n, n) linear or (n + 1, n) affine matrix can be inverted; matrix "
            f"has {rows} {in_dim!r} rows and {cols} {dim!r} columns"
            + (f" and model {matrix.attrs['model']!r}" if "model" in matrix.attrs else "")
        )
    result = xr.apply_ufunc(
        _kernels.invert_matrix,
        matrix,
        input_core_dims=[[in_dim, dim]],
        output_core_dims=[[_ROWS, OUT_DIM]],
        dask="parallelized",
        output_dtypes=[np.result_type(matrix.dtype, np.float32)],
        dask_gufunc_kwargs={"output_sizes": {_ROWS: rows, OUT_DIM: cols}},
        keep_attrs=True,
    ).rename({_ROWS: in_dim, OUT_DIM: dim})
    col_labels, row_labels = index_values(matrix, dim), index_values(matrix, in_dim)
    if col_labels is not None and rows == cols + 1:
        col_labels = [*col_labels, OFFSET]
    if row_labels is not None:
        row_labels = row_labels[:cols]
    result = set_index(result, in_dim, col_labels)
    result = set_index(result, dim, row_labels)
    result.name = matrix.name
    return result


def _check_invertible_shape(rows: int, cols: int, given: str) -> None:
    if cols == 0 or rows == 0:
        raise ValueError(
            f"matrix is empty ({given}): there is no channel to invert; expected a square "
            "(n, n) linear or (n + 1, n) affine matrix with n >= 1"
        )


def _prepare_apply(image: xr.DataArray, matrix, dim: Hashable, scale: float | None):
    """Validate ``image`` and ``matrix``; return the matrix (scale folded in), dtype, model."""
    check_data(image, "image", dim, allow_empty=True)
    require_one_chunk(image, dim, "image")
    matrix = _as_matrix(matrix, dim, image)
    spec = _model_of(matrix, dim, image)
    if not spec.is_linear:
        matrix = _match_term_rows(matrix, image, dim, spec)
    scale = check_scale(scale)
    if scale is not None:
        # Row j is multiplied by scale ** (its term's degree): 1 for a channel, 0 for the
        # offset row, 1/2 for sqrt(R*G)... so that t(scale * x) @ M == t(x) @ M'.
        degrees = xr.DataArray(np.array(spec.row_degrees), dims=matrix_in_dim(dim))
        value = scale.reset_coords(drop=True) if isinstance(scale, xr.DataArray) else scale
        matrix = matrix * value**degrees
    dtype = image.dtype if image.dtype.kind == "f" else np.dtype(np.float32)
    return matrix, dtype, spec


def _model_of(matrix: xr.DataArray, dim: Hashable, image: xr.DataArray) -> models.ModelSpec:
    """Return the model of a checked ``matrix`` (its attrs; else linear or affine by rows)."""
    model = matrix.attrs.get("model")
    if model is not None and model not in ("linear", "affine"):
        return models.model_of(matrix, dim=dim, n_in=image.sizes[dim])
    n_in = image.sizes[dim]
    affine = matrix.sizes[matrix_in_dim(dim)] == n_in + 1
    return models.resolve_model("affine" if affine else "linear", n_channels=n_in)


def _match_term_rows(
    matrix: xr.DataArray, image: xr.DataArray, dim: Hashable, spec: models.ModelSpec
) -> xr.DataArray:
    """Put a term-expanded matrix's rows in the order of the image's channel order.

    The first rows are the channels (``R, G, B``); where the image has them in another
    order, the rows are permuted so that each multiplies the same term of the image's
    channels, which needs the term set to hold the permuted terms too.
    """
    in_dim = matrix_in_dim(dim)
    channels, rows = index_values(image, dim), index_values(matrix, in_dim)
    if channels is None or rows is None:
        return matrix.drop_vars(in_dim, errors="ignore")
    labels = rows[: spec.n_channels]
    channel_rows = channel_order(
        labels, channels, name=f"matrix rows {in_dim!r} (its channels)", target="image", dim=dim
    )
    if channel_rows is None:
        return matrix.drop_vars(in_dim)
    order = models.row_order(spec, channel_rows)
    if order is None:
        raise ValueError(
            f"matrix of model {spec.name!r} ({spec.attrs}) expands channels {labels} but image "
            f"channels {dim!r} are {channels}, and its terms do not allow another order; "
            f"reorder the image first: image.sel({dim}={labels!r})"
        )
    return matrix.isel({in_dim: order}).drop_vars(in_dim)


def _apply_arrays(image, matrix, dim: Hashable, scale: float | None):
    """:func:`apply` on a plain array with the channel axis last, straight to the kernel."""
    if isinstance(matrix, xr.DataArray):
        extra = [d for d in matrix.dims if d not in (matrix_in_dim(dim), dim)]
        if extra:
            raise ValueError(
                f"a plain-array image has no named dims, so a matrix with batch dims "
                f"{tuple(extra)} cannot be matched to it; wrap the image in a DataArray"
            )
        attrs, matrix = matrix.attrs, matrix.data
    else:
        attrs = {}
    image, matrix = asarray(image), asarray(matrix)
    if image.ndim < 1:
        raise ValueError(f"image must have a channel axis (last); got shape {image.shape}")
    names = axis_names(image.ndim - 1)
    n_batch = matrix.ndim - 2
    if n_batch > 0:
        if n_batch > len(names) or matrix.shape[:n_batch] != image.shape[:n_batch]:
            raise ValueError(
                f"matrix of shape {matrix.shape} has batch axes {matrix.shape[:n_batch]} that "
                f"do not match the leading axes of image {image.shape}"
            )
    if n_batch > 0 or (attrs and matrix.ndim >= 2):  # a named model (attrs) stays with it
        matrix = xr.DataArray(matrix, dims=(*names[:n_batch], matrix_in_dim(dim), dim), attrs=attrs)
    labelled = xr.DataArray(image, dims=(*names, dim))
    matrix, dtype, spec = _prepare_apply(labelled, matrix, dim, scale)
    m = matrix.data  # batch axes lead; pad them to the image's leading axes
    m = m.reshape((*m.shape[:-2], *(1,) * (image.ndim - 1 - (m.ndim - 2)), *m.shape[-2:]))
    return _apply_blocks(image, m, dtype=dtype, kernel=_kernel_of(spec))


def map_dataset(func: Callable, ds: xr.Dataset, *args, dim: Hashable, **kwargs) -> xr.Dataset:
    """Apply ``func`` to every data variable with ``dim``; copy the others.

    Matrices stored next to the images (variables with ``f"{dim}_in"``) are copied, not mapped.
    """
    in_dim = matrix_in_dim(dim)
    names = [k for k, v in ds.data_vars.items() if dim in v.dims and in_dim not in v.dims]
    if not names:
        raise ValueError(
            f"no data variable has the channel dim {dim!r}; variables and their dims: "
            f"{ {k: v.dims for k, v in ds.data_vars.items()} }"
        )
    done = {}
    for k in names:
        try:
            done[k] = func(ds[k], *args, dim=dim, **kwargs)
        except (ValueError, TypeError) as err:
            try:
                named = type(err)(f"data variable {k!r}: {err}")
            except Exception:  # an error type that takes other arguments: keep it as is
                raise err from None
            raise named from err
    # Coords along dim may change (n_out, column labels): drop them from what is copied.
    rest = ds.drop_vars(names).drop_vars([k for k, c in ds.coords.items() if dim in c.dims])
    out = rest.assign(done)
    return out[list(ds.data_vars)]


# ---------------------------------------------------------------------------------------------
# validation and small helpers


def _checked_matrix(matrix: xr.DataArray, dim: Hashable) -> xr.DataArray:
    """Check a matrix's dims and dtype; return it with its (small) core dims in one chunk."""
    in_dim = matrix_in_dim(dim)
    if in_dim not in matrix.dims or dim not in matrix.dims:
        raise ValueError(
            f"matrix must have dims ({in_dim!r}, {dim!r}) (rows: input channels, columns: "
            f"output channels); its dims are {tuple(matrix.dims)}. Was it fitted with another dim=?"
        )
    require_real(matrix, "matrix")
    # Non-index coords (a fit's per-frame loss, iterations...) describe the matrix, not what
    # it is applied to or inverted into: drop them.
    matrix = matrix.reset_coords(drop=True)
    return matrix.chunk({in_dim: -1, dim: -1}) if matrix.chunks is not None else matrix


def _as_matrix(matrix, dim: Hashable, image: xr.DataArray) -> xr.DataArray:
    """Validate ``matrix`` against ``image`` and return it as a labelled DataArray."""
    in_dim = matrix_in_dim(dim)
    if not isinstance(matrix, xr.DataArray):
        arr = _plain_matrix(matrix)
        if arr.ndim != 2:
            raise ValueError(
                f"a plain-array matrix must be 2-D, (n_in, n_out) or (n_in + 1, n_out); got shape "
                f"{arr.shape}. For per-frame matrices pass a DataArray with named batch dims."
            )
        matrix = xr.DataArray(arr, dims=(in_dim, dim))
    matrix = _checked_matrix(matrix, dim)
    n_in, rows = image.sizes[dim], matrix.sizes[in_dim]
    if matrix.attrs.get("model") not in (None, "linear", "affine"):
        # an expanded model (checked by models.model_of): rows are matched by _match_term_rows
        return _check_batch_dims(matrix, image, dim)
    if rows not in (n_in, n_in + 1):
        raise ValueError(
            f"matrix has {rows} rows along {in_dim!r} but image has {n_in} channels along "
            f"{dim!r}: expected {n_in} rows (linear) or {n_in + 1} (affine, offset last)"
        )
    model = matrix.attrs.get("model")
    if model is not None and model != ("affine" if rows == n_in + 1 else "linear"):
        raise ValueError(
            f"matrix has model {model!r} and {rows} rows along {in_dim!r}, so it was fitted on "
            f"{rows - (model == 'affine')} channels, but image has {n_in} channels along {dim!r}"
        )
    matrix = _check_batch_dims(matrix, image, dim)
    return _match_rows(matrix, image, dim)


def _check_batch_dims(matrix: xr.DataArray, image: xr.DataArray, dim: Hashable) -> xr.DataArray:
    """Pair the matrix's batch dims with the image's by label; return the matrix reordered.

    Batch dims the image lacks, or other labels, are an error that says how to pair them.
    """
    batch = [d for d in matrix.dims if d not in (matrix_in_dim(dim), dim)]
    for d in batch:
        if d not in image.dims:
            if d in image.coords and image[d].ndim == 0:
                hint = (
                    f"image has the scalar coord {d}={image[d].values}: select its matrix, "
                    f"e.g. matrix.sel({d}=image.{d})"
                )
            elif d in image.coords:  # e.g. a time coord along a frame dim
                hint = (
                    f"image has {d!r} as a coord along {image[d].dims}: select the matrices "
                    f"for it, e.g. matrix.sel({d}=image.{d})"
                )
            else:
                hint = f"select one, e.g. matrix.isel({d}=0), or give the image that dim"
            raise ValueError(
                f"matrix has batch dim {d!r} (size {matrix.sizes[d]}) but image has dims "
                f"{tuple(image.dims)}: each matrix must correct its own part of the image; {hint}"
            )
    return pair_by_label(
        matrix, image, batch, name="matrix", target_name="image", mismatch=_frames_differ
    )


def _frames_differ(d: Hashable, name: str, mine, target: str, theirs) -> str:
    """Say that a matrix labels a batch dim unlike the image (for ``pair_by_label``)."""
    return (
        f"{name} and {target} have different {d!r} coords ({len(mine)} labels: "
        f"{some(mine)} vs {len(theirs)}: {some(theirs)}); a matrix is paired with "
        f"the image by label. Give the image's labels to the matrix, e.g. "
        f"matrix.reindex({d}=image.{d}, method='nearest') or "
        f"matrix.interp({d}=image.{d})"
    )


def _plain_matrix(matrix) -> Any:
    """Return a matrix given as an array (or array-like) of real numbers, as an array."""
    if type(matrix).__module__ == "xccm.accessor":
        raise TypeError(
            "matrix is a .ccm accessor, not a matrix: in a Dataset, ds.ccm is the accessor "
            f"even if a variable is named 'ccm'; use ds[{MATRIX_NAME!r}] (or ds['ccm'])"
        )
    if isinstance(matrix, xr.Dataset):
        matrices = [k for k, v in matrix.data_vars.items() if len(v.dims) >= 2]
        raise TypeError(
            "matrix must be a DataArray or an array, not a Dataset; select its matrix "
            f"variable, e.g. ds[{(matrices or [MATRIX_NAME])[0]!r}] (data variables: "
            f"{list(matrix.data_vars)})"
        )
    arr = asarray(matrix)
    require_real(arr, "matrix")
    return arr


def _match_rows(matrix: xr.DataArray, image: xr.DataArray, dim: Hashable) -> xr.DataArray:
    """Reorder labelled matrix rows to the image's channel order; refuse a mismatch."""
    in_dim = matrix_in_dim(dim)
    channels, rows = index_values(image, dim), index_values(matrix, in_dim)
    if channels is None or rows is None:
        return matrix
    n_in = len(channels)
    labels, extra = rows[:n_in], rows[n_in:]
    order = channel_order(
        labels,
        channels,
        name=f"matrix rows {in_dim!r}",
        target="image",
        dim=dim,
        hint=f", e.g. matrix.assign_coords({in_dim}=[str(c) for c in matrix.{in_dim}.values])",
    )
    if order is None:
        return matrix.drop_vars(in_dim)
    order += list(range(n_in, n_in + len(extra)))
    return matrix.isel({in_dim: order}).drop_vars(in_dim)
