"""The public :func:`fit`: a dispatcher above the closed-form solver and the ΔE refinement.

``fit`` checks its arguments, prepares the colours (a ``loss``, a Lab reference, masks and
saturation, in :mod:`xccm.chartfit`), pairs the inputs into a :class:`xccm.core.FitProblem`
(:func:`xccm.core.fit_problem`), solves it in closed form (:func:`xccm.core.solve`: least
squares, robust or not, or white balance) and, when a loss is given, refines the matrix on
it (:func:`xccm.chartfit.refine_matrix`, robust reweighting included). Plain arrays are
labelled and fitted the same way.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Hashable, Iterable
from typing import Any, Literal, get_args, overload

import numpy as np
import xarray as xr

from . import _kernels, chartfit, core, models
from ._labels import (
    as_dataarray,
    asarray,
    borrow_labels,
    check_choice,
    check_data,
    check_integer,
    dim_names,
    index_values,
    wrap,
)
from .core import Init, Model, Ridge, RidgeTarget, Robust

__all__ = ["fit"]

_SAMPLE = "sample"


@overload
def fit(
    measured: xr.DataArray,
    reference: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = ...,
    model: Model = ...,
    degree: int | None = ...,
    terms: int | None = ...,
    init: Init = ...,
    weights: xr.DataArray | np.ndarray | None = ...,
    sample_dims: Hashable | Iterable[Hashable] | None = ...,
    min_samples: int | None = ...,
    loss: str | None = ...,
    rgb_space: str = ...,
    reference_space: str | None = ...,
    illuminant: str | Iterable[float] | None = ...,
    standard: Literal["reference", "sample"] = ...,
    mask: xr.DataArray | np.ndarray | None = ...,
    saturation: tuple[float, float] | Literal["auto"] | None = ...,
    lightness_power: float | None = ...,
    max_iter: int = ...,
    robust: Robust | None = ...,
    robust_tuning: float | None = ...,
    ridge: Ridge = ...,
    ridge_target: RidgeTarget = ...,
    white_point: Literal["preserve"] | None = ...,
    white_patch: Any = ...,
    return_weights: Literal[False] = ...,
) -> xr.DataArray: ...


@overload
def fit(
    measured: xr.DataArray,
    reference: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = ...,
    model: Model = ...,
    degree: int | None = ...,
    terms: int | None = ...,
    init: Init = ...,
    weights: xr.DataArray | np.ndarray | None = ...,
    sample_dims: Hashable | Iterable[Hashable] | None = ...,
    min_samples: int | None = ...,
    loss: str | None = ...,
    rgb_space: str = ...,
    reference_space: str | None = ...,
    illuminant: str | Iterable[float] | None = ...,
    standard: Literal["reference", "sample"] = ...,
    mask: xr.DataArray | np.ndarray | None = ...,
    saturation: tuple[float, float] | Literal["auto"] | None = ...,
    lightness_power: float | None = ...,
    max_iter: int = ...,
    robust: Robust | None = ...,
    robust_tuning: float | None = ...,
    ridge: Ridge = ...,
    ridge_target: RidgeTarget = ...,
    white_point: Literal["preserve"] | None = ...,
    white_patch: Any = ...,
    return_weights: Literal[True],
) -> tuple[xr.DataArray, xr.DataArray]: ...


@overload
def fit(
    measured: np.ndarray,
    reference: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = ...,
    model: Model = ...,
    degree: int | None = ...,
    terms: int | None = ...,
    init: Init = ...,
    weights: xr.DataArray | np.ndarray | None = ...,
    sample_dims: Hashable | Iterable[Hashable] | None = ...,
    min_samples: int | None = ...,
    loss: str | None = ...,
    rgb_space: str = ...,
    reference_space: str | None = ...,
    illuminant: str | Iterable[float] | None = ...,
    standard: Literal["reference", "sample"] = ...,
    mask: xr.DataArray | np.ndarray | None = ...,
    saturation: tuple[float, float] | Literal["auto"] | None = ...,
    lightness_power: float | None = ...,
    max_iter: int = ...,
    robust: Robust | None = ...,
    robust_tuning: float | None = ...,
    ridge: Ridge = ...,
    ridge_target: RidgeTarget = ...,
    white_point: Literal["preserve"] | None = ...,
    white_patch: Any = ...,
    return_weights: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def fit(
    measured: np.ndarray,
    reference: xr.DataArray | np.ndarray,
    *,
    dim: Hashable = ...,
    model: Model = ...,
    degree: int | None = ...,
    terms: int | None = ...,
    init: Init = ...,
    weights: xr.DataArray | np.ndarray | None = ...,
    sample_dims: Hashable | Iterable[Hashable] | None = ...,
    min_samples: int | None = ...,
    loss: str | None = ...,
    rgb_space: str = ...,
    reference_space: str | None = ...,
    illuminant: str | Iterable[float] | None = ...,
    standard: Literal["reference", "sample"] = ...,
    mask: xr.DataArray | np.ndarray | None = ...,
    saturation: tuple[float, float] | Literal["auto"] | None = ...,
    lightness_power: float | None = ...,
    max_iter: int = ...,
    robust: Robust | None = ...,
    robust_tuning: float | None = ...,
    ridge: Ridge = ...,
    ridge_target: RidgeTarget = ...,
    white_point: Literal["preserve"] | None = ...,
    white_patch: Any = ...,
    return_weights: Literal[True],
) -> tuple[np.ndarray, np.ndarray]: ...


def fit(
    measured: Any,
    reference: Any,
    *,
    dim: Hashable = "channel",
    model: Model = "linear",
    degree: int | None = None,
    terms: int | None = None,
    init: Init = "least_squares",
    weights: xr.DataArray | np.ndarray | None = None,
    sample_dims: Hashable | Iterable[Hashable] | None = None,
    min_samples: int | None = None,
    loss: str | None = None,
    rgb_space: str = "sRGB",
    reference_space: str | None = None,
    illuminant: str | Iterable[float] | None = None,
    standard: Literal["reference", "sample"] = "reference",
    mask: xr.DataArray | np.ndarray | None = None,
    saturation: tuple[float, float] | Literal["auto"] | None = "auto",
    lightness_power: float | None = None,
    max_iter: int = 200,
    robust: Robust | None = None,
    robust_tuning: float | None = None,
    ridge: Ridge = "auto",
    ridge_target: RidgeTarget = "linear",
    white_point: Literal["preserve"] | None = None,
    white_patch: Any = None,
    return_weights: bool = False,
) -> Any:
    r"""Fit a colour-correction matrix mapping ``measured`` colours onto ``reference``.

    Solves, for every batch element, the weighted least-squares problem
    :math:`\min_M \sum_i w_i \lVert S^+_i M - D_i \rVert^2` with :math:`S^+ = S` (linear) or
    :math:`S^+ = [S, 1]` (affine), through the normal equations
    :math:`(S^{+T} W S^+) M = S^{+T} W D`, which are accumulated chunk by chunk so that
    Dask-backed samples of any size reduce in bounded memory. ``init="white_balance"`` gives
    instead :math:`\mathrm{diag}(\bar D / \bar S)` (weighted means) with a zero offset row.

    Every model of :mod:`xccm.models` is fitted the same way: a ``root_polynomial`` or
    ``polynomial`` model expands the measured colours into its terms :math:`t(S)` (``R, G,
    B, sqrt(R*G), ...``) first, and :math:`t(S)` takes the place of :math:`S^+` above (the
    patch colours are expanded, never an image). With ``ridge=λ`` the least squares becomes
    the Tikhonov problem

    .. math:: \min_M \sum_i w_i \lVert t_i M - D_i \rVert^2
              + λ \sum_{j,o} A_{jj} (M_{jo} - M_{0,jo})^2,
              \qquad A = t(S)^T W t(S),

    solved in closed form as :math:`(A + λ\,\mathrm{diag}(A)) M = B + λ\,\mathrm{diag}(A)
    M_0`. Each row is penalised relative to its own term's weighted sum of squares, so ``λ``
    is scale-free: it does not change with the number of patches, their weights, the
    exposure or a term's units. :math:`M_0` (``ridge_target``) is the least-squares 3x3 of
    the same samples in the ``R, G, B`` rows and zero elsewhere (``"linear"``: a large ``λ``
    tends to the 3x3 fit, and a linear model is unchanged by it), or the identity in those
    rows (``"identity"``: a large ``λ`` tends to no correction). ``white_point="preserve"``
    adds the constraint :math:`t(s_w) M = d_w` (the white patch mapped exactly), solved in
    its null space (equality-constrained least squares). A ``loss`` refines under the same
    penalty and constraint (see ``ridge``, ``white_point``).

    Parameters
    ----------
    measured : DataArray or ndarray
        Camera colours, with channel dim ``dim`` and the sample dims (patches or pixels).
        Dims that are neither ``dim`` nor sample dims are *batch* dims: each batch element
        (e.g. each frame of ``measured(time, patch, channel)``) gets its own matrix, all solved
        in one vectorised call. An ndarray has shape ``(*batch, n_samples, n_in)``.
    reference : DataArray or ndarray
        Target colours with the same sample dims (and coords) as ``measured``; its ``dim``
        may differ in size and coords (e.g. ``X, Y, Z``). An ndarray has shape
        ``(*batch, n_samples, n_out)``, its batch axes aligned from the right with
        ``measured``'s.
    dim : hashable, default "channel"
        The channel dim of ``measured`` and ``reference``.
    model : {"linear", "affine", "root_polynomial", "polynomial"}
        ``"linear"`` fits an ``(n_in, n_out)`` matrix; ``"affine"`` an ``(n_in + 1, n_out)``
        matrix whose last row is an offset. ``"root_polynomial"`` (Finlayson 2015, with
        ``degree``; exposure-invariant) and ``"polynomial"`` (with ``degree``, or Cheung
        2004's ``terms``) fit an ``(n_terms, n_out)`` matrix on 3 input channels, its rows
        labelled by their terms (:func:`xccm.models.resolve_model` checks the options;
        degree 1 and ``terms=3`` are ``"linear"``, ``terms=4`` is ``"affine"``).
    degree : int, optional
        1 to 4, for ``"root_polynomial"`` (required) and ``"polynomial"``.
    terms : int, optional
        A Cheung et al. (2004) term set for ``"polynomial"`` (3, 4, 5, 7, 8, 10, 11, 14,
        16, 17, 19, 20, 22 or 35, as colour-science numbers them).
    init : {"least_squares", "white_balance"}
        The closed-form solution to return (later refinements start from it). White
        balance is the diagonal gain in the linear ``R, G, B`` rows, zero in every other
        row (an offset, a cross term): for any model the same map as the 3x3 white
        balance. With ``white_point="preserve"`` the gains are the white patch's,
        :math:`d_w / s_w`.
    weights : DataArray or ndarray, optional
        Non-negative weight per sample (applied as :math:`\sqrt{w}` row scaling), over the
        sample dims and optionally batch dims. A DataArray is paired with the samples by
        label (the same labels in another order are reordered); an ndarray must have the
        shape of the sample dims and is paired by position. Samples with zero or NaN weight
        are left out; an infinite weight is an error. Boolean weights count as 1 (True)
        and 0 (False), as in :func:`xccm.report`. ``measured`` and ``reference`` are
        paired by label too.
    sample_dims : hashable or sequence of hashable, optional
        The dims summed over. Defaults to the dims of ``reference`` other than ``dim``.
        ``reference`` is broadcast over a sample dim it lacks (e.g.
        ``sample_dims=("time", "patch")`` pools every frame against one chart), but a
        reference with none of the sample dims, or lacking one while it varies over a batch
        dim (``sample_dims="time"`` with a ``(patch, channel)`` chart), is an error.
    min_samples : int, optional
        Fewest valid samples a batch element needs to be fitted; fewer gives a NaN matrix
        (with a warning). Use it to reject frames where the chart is partly occluded or many
        patches are masked, e.g. ``min_samples=18`` of 24 patches. The floor, and the default,
        is the number of unknowns per column.
    loss : str, optional
        Fit to a colour chart on a colour difference (needs colour-science and scipy, the
        ``colour`` extra): ``"ciede2000"``, ``"cie76"``, ``"cie94"``, ``"cie94_textiles"``,
        ``"cmc"``, ``"cmc_2to1"``, ``"rgb"`` (encoded RGB) or ``"linear_rgb"``. The
        reference is converted to linear ``rgb_space``; the ``init`` solution is the start,
        and the loss :math:`\sqrt{\sum_i w_i \Delta E_i^2 / N}` (OpenCV's ccm loss, weights
        rescaled to mean 1 over the ``N`` samples used) is minimised per batch element by
        Levenberg–Marquardt. ``"linear_rgb"`` is the closed-form weighted least squares.
        Without a loss, the plain least squares (or white balance) above. In memory, a
        large batch is refined in blocks of about a thousand chart frames on every core
        (numba's thread count where numba is loaded); on Dask, a task per block.
    mask : DataArray or ndarray of bool, optional
        Samples to use (True), with or without a loss, over the sample dims and optionally
        batch dims,
        e.g. :func:`xccm.saturation_mask`. A DataArray is paired with the samples by label;
        an ndarray, shaped like the sample dims, by position.
    saturation : (low, high) or None, default "auto"
        Samples with any ``measured`` channel outside ``[low, high]`` are left out (with
        or without a loss); ``"auto"`` is (0, 0.98), OpenCV's default, when a loss is
        given and no range otherwise. As in OpenCV, the range is on the camera values as
        encoded: for ``measured`` from :func:`xccm.linearize` it is mapped through the
        curve recorded in its attrs (``m.attrs["saturation_on"]`` says so).
    robust : {"huber", "tukey"}, optional
        Down-weight outlier samples per batch element (a glint, a leaf, a wet patch) by
        iteratively reweighted least squares. The residual of a sample is its colour error:
        the Euclidean norm :math:`\lVert S^+_i M - D_i \rVert` in the fit's output space for
        the least squares, its ΔE for a ``loss``. With :math:`u = r / \hat\sigma`, where
        :math:`\hat\sigma = \mathrm{median}_i\, r_i / 0.6745` (the MAD, re-estimated every
        round, per batch element), a sample weighs :math:`\min(1, c/u)` (``"huber"``,
        :math:`c = 1.345`) or :math:`(1 - (u/c)^2)^2` for :math:`u < c`, else 0 (``"tukey"``,
        the biweight, :math:`c = 4.685`): 95 % efficiency at normal errors. The least squares
        starts from a high-breakdown fit (least median of squares over 50 random subsets of
        the samples, then two least-trimmed-squares steps), so glare, the brightest colour
        on the chart, cannot pull the start onto itself; then at most 50 rounds reweight
        and refit, until no weight changes by more than 0.001. A ``loss`` fit starts from
        that robust least squares, and reweights on the ΔE between Levenberg–Marquardt
        solves (each solve a fixed weighted problem, from the last one's matrix). Tukey's
        weights reach 0, so it rejects gross outliers; Huber's never do: it bounds their
        influence, and a few far-out patches still move the fit. Use ``"tukey"`` for glare
        and occluders. ``weights``, ``mask`` and ``saturation`` multiply the robust
        weights, and ``min_samples`` counts the samples with a positive weight after
        reweighting: a frame whose chart is mostly covered gets a NaN matrix and the
        warning, not a wild fit. Each batch element's samples are taken in one block (a
        lazy fit regroups chunks of the sample dims). ``m.coords`` get, per batch element,
        ``robust_scale`` (:math:`\hat\sigma`), ``robust_rounds`` and ``robust_converged``;
        ``attrs`` the method and ``robust_tuning``.
    robust_tuning : float, optional
        The tuning constant :math:`c`, in units of :math:`\hat\sigma` (smaller rejects more).
    ridge : float, None or "auto", default "auto"
        The Tikhonov weight :math:`λ \ge 0` above. ``"auto"``: :data:`DEFAULT_RIDGE` for a
        ``root_polynomial`` or ``polynomial`` model (chosen by held-out error on 24-patch
        charts, docs/guide/models.md) and None (no penalty) for ``linear`` and ``affine``.
        With a ``loss``, the penalty is added to the loss's sum of squares as the residuals
        :math:`\sqrt{λ h_{jo}}(M_{jo} - M_{0,jo})`, with :math:`h` the loss's own curvature
        along each coefficient at the start (the diagonal of :math:`J^T J`, which for the
        least squares is :math:`A_{jj}`): the same scale-free weighting. The ``loss`` coord
        reports the colour difference alone. ``attrs`` record ``ridge`` and ``ridge_target``.
    ridge_target : {"linear", "identity"}, default "linear"
        :math:`M_0` of the penalty: the least-squares 3x3 (with the same weights) or the
        identity, in the ``R, G, B`` rows, zero in the others.
    white_point : {None, "preserve"}
        ``"preserve"``: the fit maps the white patch's measured colour exactly onto its
        reference (as Imatest and dcamprof offer), for the least squares (equality-
        constrained, via the null space of the constraint) and for a ``loss`` (the
        Levenberg–Marquardt moves in that null space, so the constraint holds at every
        step). Costs some mean ΔE elsewhere (docs/guide/models.md gives the measured cost).
    white_patch : label or dict, optional
        The patch ``white_point`` keeps: a label of the sample dim (a position if it has no
        coords), or ``{sample_dim: label}`` for several sample dims. Default: per batch
        element, the valid sample whose reference is the most luminous of the near-neutral
        ones (reference channels within 20 % of their mean, in the fit's output space,
        i.e. linear RGB for a colour fit); a batch element with none gets a NaN matrix. A
        named patch constrains the fit even where it is masked or saturated (it is then
        left out of the sums only); a non-finite one gives a NaN matrix.
    return_weights : bool, default False
        Return ``(matrix, weights)``: the final robust weight of every sample, dims
        ``(*batch_dims, *sample_dims)``, named ``"robust_weight"``, in [0, 1], NaN for a sample
        the fit left out (non-finite, masked, saturated or zero weight). The outlier flags
        are ``weights == 0`` for Tukey, ``weights < 0.5`` (say) for Huber. The fit is the one
        with ``weights`` times these (for the least squares, exactly:
        ``fit(..., weights=w * robust_weight.fillna(0))`` gives the same matrix). Without
        ``robust``, 1 for the samples used.

    Returns
    -------
    DataArray or ndarray
        The matrix, dims ``(*batch_dims, f"{dim}_in", dim)``, ``attrs["model"]`` (and
        ``degree`` or ``terms``) and ``attrs["init"]`` set, so :func:`xccm.apply` needs
        nothing else. Its column coords are ``reference``'s ``dim`` coords and its
        row coords ``measured``'s (plus ``"offset"`` for an affine model). Dask-backed input
        gives a Dask-backed matrix; nothing is computed. Small chunks of ``measured`` along
        the batch dims (one frame of patch colours a chunk) are grouped into blocks of about
        25 000 samples first, so the number of tasks does not grow with its chunks. An
        ndarray input gives an ndarray of shape ``(*batch, n_in[+1], n_out)``. With a loss,
        ``attrs`` also record how it was measured (``loss``, ``rgb_space``, ``lab_white_xy``,
        ``reference_space``, ``saturation``...) and coords over the batch dims hold, per
        matrix, the ``loss`` reached, the ``start_loss``, the ``iterations`` and whether it
        ``converged`` (coords, not attrs, because they are per batch element and lazy for Dask
        input). The provenance of the inputs is kept too: ``chart`` and ``chart_edition``
        from the reference's attrs (as :func:`xccm.chart` sets them), ``linearization`` from
        measured's (as :func:`xccm.linearize` sets it), where they are given. With
        ``return_weights=True``, a tuple ``(matrix, weights)`` (ndarrays for ndarray input).

    Other Parameters
    ----------------
    rgb_space : str, default "sRGB"
        The linear RGB space the matrix maps into (a short name such as ``"display-p3"``,
        a colour-science name or ``RGB_Colourspace``).
    reference_space : str, optional
        The reference's colour space if its ``attrs["space"]`` does not say (``"lab-d50"``,
        ``"xyz-d50"``, ``"srgb-linear"``...). A Lab reference is converted to linear
        ``rgb_space`` even without a loss.
    illuminant : str or (x, y), optional
        White of the Lab space ΔE is taken in: by default the RGB space's own (D65 for
        sRGB, as OpenCV does); ``"D50"`` for the ICC convention.
    standard : {"reference", "sample"}, default "reference"
        Which colour the asymmetric CIE94 and CMC weight by (OpenCV: ``"sample"``).
    lightness_power : float, optional
        With a loss, weight each sample by the reference's ``L*`` to this power (OpenCV's
        ``weights_coeff``), times ``weights`` if given.
    max_iter : int, default 200
        Most Levenberg–Marquardt iterations per batch element (0: return the start, with
        its loss); with ``robust``, over all its reweighting rounds together.

    Warns
    -----
    InsufficientSamplesWarning
        If some, but not all, batch elements have fewer valid samples than unknowns per
        column (``n_in`` linear, ``n_in + 1`` affine, 1 for white balance) or than
        ``min_samples``, or a singular
        system: their matrices are NaN. A sample is valid when all its ``measured`` and
        ``reference`` channels are finite and its weight is positive.

    Raises
    ------
    ValueError
        If no batch element can be fitted, or on inconsistent dims, coords, shapes or
        weights. For Dask-backed input, errors that depend on values are raised on compute.
    TypeError
        If an input is not real numeric.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> true = np.array([[1.2, -0.1, 0.0], [-0.2, 1.1, -0.1], [0.0, -0.1, 1.3]])
    >>> s = rng.random((24, 3))
    >>> measured = xr.DataArray(s, dims=("patch", "channel"))
    >>> reference = xr.DataArray(s @ true, dims=("patch", "channel"))
    >>> m = fit(measured, reference)
    >>> m.dims, bool(np.allclose(m, true))
    (('channel_in', 'channel'), True)

    Fitting a chart on CIEDE2000 (needs colour-science):

    >>> import xccm
    >>> ref = xccm.chart(space="lab-d50")
    >>> camera = xccm.convert(ref, "rgb").clip(0, 1) @ xr.DataArray(
    ...     [[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.0, 0.1, 0.9]], dims=("channel", "out")
    ... )
    >>> camera = camera.rename(out="channel").assign_coords(channel=["R", "G", "B"])
    >>> m = fit(camera, ref, loss="ciede2000")
    >>> bool(m.loss < m.start_loss), bool(m.converged), m.attrs["loss"]
    (True, True, 'ciede2000')

    A robust fit, with a glint on one patch:

    >>> glare = camera.copy()
    >>> glare[5] = 0.97
    >>> m, w = fit(glare, ref, loss="ciede2000", robust="tukey", return_weights=True)
    >>> float(w[5]), bool(m.robust_converged)
    (0.0, True)
    """
    if isinstance(measured, xr.Dataset):
        raise TypeError(
            "measured must be a DataArray or an array, not a Dataset: fit one variable, "
            "e.g. fit(ds['patches'], reference)"
        )
    if not isinstance(measured, xr.DataArray):
        if loss is not None or lightness_power is not None:
            raise TypeError(
                "loss= and lightness_power= need DataArrays (the reference's colour "
                "space and the patches are read from labels); wrap measured and reference "
                "with xr.DataArray(..., dims=('patch', 'channel'))"
            )
        weights = _plain_mask_weights(measured, weights, mask, saturation)
        return _fit_arrays(
            measured,
            reference,
            dim,
            model,
            init,
            weights,
            min_samples,
            robust=robust,
            robust_tuning=robust_tuning,
            return_weights=return_weights,
            degree=degree,
            terms=terms,
            ridge=ridge,
            ridge_target=ridge_target,
            white_point=white_point,
            white_patch=white_patch,
        )
    problem = _problem(
        measured,
        reference,
        dim=dim,
        model=model,
        init=init,
        weights=weights,
        sample_dims=sample_dims,
        min_samples=min_samples,
        loss=loss,
        rgb_space=rgb_space,
        reference_space=reference_space,
        illuminant=illuminant,
        standard=standard,
        mask=mask,
        saturation=saturation,
        lightness_power=lightness_power,
        max_iter=max_iter,
        robust=robust,
        robust_tuning=robust_tuning,
        return_weights=return_weights,
        degree=degree,
        terms=terms,
        ridge=ridge,
        ridge_target=ridge_target,
        white_point=white_point,
        white_patch=white_patch,
    )
    matrix, weighted, weight = core.solve(problem)
    if problem.metric is not None:  # a loss: refine the closed form on it
        closed_form = problem.metric.method == "linear_rgb" and problem.init != "white_balance"
        problem = dataclasses.replace(problem, ridge_matrix=weighted.ridge_matrix)
        matrix, refined = chartfit.refine_matrix(
            matrix, weighted if closed_form else problem, closed_form=closed_form
        )
        if refined is not None:
            weight = refined
    if return_weights:
        weight = core.used_samples(problem) if weight is None else weight
        return matrix, weight.rename("robust_weight")
    return matrix


def _problem(
    measured: xr.DataArray,
    reference: Any,
    *,
    dim: Hashable,
    model: Any,
    init: Any,
    weights: Any,
    sample_dims: Any,
    min_samples: Any,
    loss: str | None,
    rgb_space: str,
    reference_space: str | None,
    illuminant: Any,
    standard: Any,
    mask: Any,
    saturation: Any,
    lightness_power: Any,
    max_iter: Any,
    robust: Any,
    robust_tuning: Any,
    return_weights: Any,
    degree: Any = None,
    terms: Any = None,
    ridge: Any = "auto",
    ridge_target: Any = "linear",
    white_point: Any = None,
    white_patch: Any = None,
) -> core.FitProblem:
    """Check :func:`fit`'s arguments, prepare the colours and pair the inputs."""
    if not isinstance(model, models.ModelSpec):
        check_choice("model", model, Model)
    robust_tuning = _check_robust(robust, robust_tuning, return_weights)
    check_choice("init", init, Init)
    min_samples = 0 if min_samples is None else check_integer(min_samples, "min_samples")
    check_data(measured, "measured", dim)
    spec, ridge = check_model_options(
        model,
        degree=degree,
        terms=terms,
        ridge=ridge,
        ridge_target=ridge_target,
        white_point=white_point,
        white_patch=white_patch,
        init=init,
        n_channels=measured.sizes[dim],
    )
    reference = as_dataarray(reference, "reference", dim)
    other = [d for d in reference.dims if d not in measured.dims]
    if dim not in reference.dims and len(other) == 1:
        raise ValueError(
            f"reference has no dim {dim!r} but {other[0]!r}; measured, reference and the "
            f"matrix share one channel dim name (the output channels are labelled by "
            f"reference's coords): rename it, e.g. reference.rename({{{other[0]!r}: {dim!r}}})"
        )
    check_data(reference, "reference", dim)
    if ridge_target == "identity" and ridge and reference.sizes[dim] != spec.n_channels:
        raise ValueError(
            f"ridge_target='identity' needs as many output as input channels along {dim!r}; "
            f"got {spec.n_channels} in and {reference.sizes[dim]} out (use ridge_target="
            "'linear', the least-squares 3x3)"
        )
    _check_alpha(measured, reference, dim)
    max_iter = check_integer(max_iter, "max_iter")
    colour_attrs: dict[str, Any] = {}
    measure = None
    provenance = _provenance(measured, reference)
    samples = _sample_dims(measured, reference, dim, sample_dims)  # a conversion keeps dims
    _check_reference_dims(reference, samples, dim, given=sample_dims is not None)
    measured = borrow_labels(measured, reference, samples)
    measured = core.grouped(
        measured, [d for d in measured.dims if d not in (*samples, dim)], samples
    )
    if chartfit.wants_colour(reference, loss, reference_space):
        if saturation == "auto":
            saturation = (0.0, 0.98) if loss is not None else None
        reference, weights, measure, colour_attrs = chartfit.prepare(
            measured,
            reference,
            weights,
            dim=dim,
            samples=samples,
            loss=loss,
            rgb_space=rgb_space,
            reference_space=reference_space,
            illuminant=illuminant,
            mask=mask,
            saturation=saturation,
            lightness_power=lightness_power,
            standard=standard,
        )
    elif lightness_power is not None:
        raise ValueError(
            "lightness_power= weights the samples by the reference's L*, which needs its "
            "colour space: pass loss= (e.g. loss='linear_rgb' for least squares) and the "
            "reference's space (attrs['space'] or reference_space=)"
        )
    elif mask is not None or saturation not in ("auto", None):
        weights, colour_attrs = chartfit.masked_weights(
            measured,
            weights,
            samples=samples,
            dim=dim,
            mask=mask,
            saturation=None if saturation == "auto" else saturation,
        )
    problem = core.fit_problem(
        measured,
        reference,
        weights,
        dim=dim,
        sample_dims=samples,
        model=spec.name,
        init=init,
        min_samples=min_samples,
        robust=robust,
        robust_tuning=robust_tuning,
        attrs={**colour_attrs, **provenance},
        metric=measure if loss is not None else None,
        max_iter=max_iter,
        spec=None if spec.is_linear else spec,
        ridge=ridge,
        ridge_target=ridge_target,
    )
    if white_point == "preserve":
        problem = dataclasses.replace(problem, white=core.white_colours(problem, white_patch))
    return problem


def check_model_options(
    model: Any = "linear",
    *,
    degree: Any = None,
    terms: Any = None,
    ridge: Any = "auto",
    ridge_target: Any = "linear",
    white_point: Any = None,
    white_patch: Any = None,
    init: Any = "least_squares",
    n_channels: int = 3,
) -> tuple[models.ModelSpec, float | None]:
    """Check :func:`fit`'s model options without data: the model, its ridge and white point.

    The rules :func:`fit` applies to these arguments, for callers that want to refuse a bad
    combination before reading any data (the command line does).

    Returns
    -------
    (ModelSpec, float or None)
        The resolved model (:func:`xccm.models.resolve_model`) and the ridge weight λ the
        fit will use (None: no penalty; ``"auto"`` resolved for the model).

    Raises
    ------
    ValueError, TypeError
        As :func:`fit` does for these arguments.

    Examples
    --------
    >>> spec, ridge = check_model_options("root_polynomial", degree=2)
    >>> spec.n_terms, ridge
    (6, 0.001)
    >>> check_model_options("linear", degree=3)
    Traceback (most recent call last):
    ...
    ValueError: model 'linear' takes no degree=3; degree= is for 'root_polynomial' and ...
    """
    spec = models.resolve_model(model, degree=degree, terms=terms, n_channels=n_channels)
    lam = _check_ridge(ridge, ridge_target, spec, init)
    if white_point not in (None, "preserve"):
        raise ValueError(
            f"white_point must be None (no constraint) or 'preserve' (map the white patch "
            f"exactly onto its reference); got {white_point!r}"
        )
    if white_patch is not None and white_point is None:
        raise ValueError(
            f"white_patch={white_patch!r} names the patch white_point='preserve' keeps; pass "
            "white_point='preserve' too"
        )
    return spec, lam


#: The default ``ridge`` of a ``root_polynomial`` or ``polynomial`` fit (``ridge="auto"``),
#: chosen by held-out error (benchmarks/bench_models.py, docs/guide/models.md).
DEFAULT_RIDGE = 1e-3


def _check_ridge(ridge, target, spec: models.ModelSpec, init) -> float | None:
    """Validate ``ridge=`` and ``ridge_target=``; return λ (None: no penalty)."""
    if target not in ("linear", "identity"):
        raise ValueError(
            f"ridge_target must be 'linear' (the least-squares 3x3) or 'identity'; got {target!r}"
        )
    if isinstance(ridge, str) and ridge == "auto":
        if spec.is_linear or init == "white_balance":
            return None
        return DEFAULT_RIDGE
    if ridge is None:
        return None
    if (
        isinstance(ridge, bool | np.bool_)
        or not isinstance(ridge, numbers.Real)
        or not (np.isfinite(float(ridge)) and float(ridge) >= 0)
    ):
        raise ValueError(
            f"ridge must be a finite number >= 0 (the Tikhonov weight, relative to each "
            f"term's sum of squares), None (no penalty) or 'auto'; got {ridge!r}"
        )
    if init == "white_balance" and float(ridge) > 0:
        raise ValueError(
            f"ridge={ridge!r} regularises the least squares; init='white_balance' has "
            "nothing to regularise: pass ridge=None"
        )
    return float(ridge) or None


def _check_robust(robust, tuning, return_weights) -> float | None:
    """Validate ``robust=``, ``robust_tuning=`` and ``return_weights=``; return the tuning."""
    if robust is not None and robust not in get_args(Robust):
        raise ValueError(
            f"unknown robust {robust!r}; expected None (plain least squares) or one of "
            f"{get_args(Robust)}"
        )
    if not isinstance(return_weights, bool | np.bool_):
        raise TypeError(f"return_weights must be True or False; got {return_weights!r}")
    if tuning is None:
        return None if robust is None else _kernels.ROBUST_TUNING[robust]
    if robust is None:
        raise ValueError(
            f"robust_tuning={tuning!r} tunes a robust fit, but robust is None; pass "
            "robust='huber' or robust='tukey' too"
        )
    if (
        isinstance(tuning, bool | np.bool_)
        or not isinstance(tuning, numbers.Real)
        or not (np.isfinite(float(tuning)) and float(tuning) > 0)
    ):
        raise ValueError(
            f"robust_tuning must be a finite positive number (in units of the robust scale; "
            f"the default for {robust!r} is {_kernels.ROBUST_TUNING[robust]}); got {tuning!r}"
        )
    return float(tuning)


def _provenance(measured: xr.DataArray, reference: xr.DataArray) -> dict[str, Any]:
    """Return what a fit records of its inputs: the chart, its edition, the linearisation."""
    out = {}
    for key, source, attr in (
        ("chart", reference, "chart"),
        ("chart_edition", reference, "edition"),
        ("linearization", measured, "linearization"),
    ):
        if isinstance(source.attrs.get(attr), str):
            out[key] = source.attrs[attr]
    return out


def _plain_mask_weights(measured, weights, mask, saturation):
    """Fold a plain-array fit's ``mask=`` and ``saturation=`` into its weights (0/1 factors)."""
    factors = []
    if mask is not None:
        mask = asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(
                "mask must be boolean (True = use the sample), shaped like measured without "
                f"its channel axis; got dtype {mask.dtype}"
            )
        factors.append(mask)
    if saturation not in ("auto", None):
        try:
            lo, hi = (float(v) for v in saturation)
        except (TypeError, ValueError):
            raise ValueError(
                f"saturation must be (low, high) or None; got {saturation!r}"
            ) from None
        values = asarray(measured)
        factors.append(((values >= lo) & (values <= hi)).all(axis=-1))
    if not factors:
        return weights
    if weights is not None:
        factors.append(asarray(weights))
    out = factors[0]
    for f in factors[1:]:
        out = out * f
    return out.astype(np.float64)


def _fit_arrays(
    measured,
    reference,
    dim,
    model,
    init,
    weights,
    min_samples,
    *,
    robust=None,
    robust_tuning=None,
    return_weights=False,
    **model_kwargs,
):
    """Fit on plain arrays: ``(*batch, n_samples, n_channels)``, batch aligned from the right."""
    measured, reference = np.asarray(measured), np.asarray(reference)
    for name, arr in (("measured", measured), ("reference", reference)):
        if arr.ndim < 2:
            raise ValueError(
                f"{name} as a plain array must have shape (..., n_samples, n_channels), "
                f"channel axis last; got shape {arr.shape}"
            )
    n_batch = max(measured.ndim, reference.ndim) - 2
    if weights is not None and not isinstance(weights, xr.DataArray):
        weights = np.asarray(weights)
        n_w = weights.ndim - 1
        if n_w < 0 or n_w > n_batch:
            raise ValueError(
                f"weights as a plain array must have shape (..., n_samples) like measured "
                f"{measured.shape[:-1]}; got shape {weights.shape}"
            )
        weights = wrap(weights, (_SAMPLE,), n_batch)
    result = fit(
        wrap(measured, (_SAMPLE, dim), n_batch),
        wrap(reference, (_SAMPLE, dim), n_batch),
        dim=dim,
        model=model,
        init=init,
        weights=weights,
        sample_dims=(_SAMPLE,),
        min_samples=min_samples,
        robust=robust,
        robust_tuning=robust_tuning,
        return_weights=return_weights,
        **model_kwargs,
    )
    if return_weights:
        return result[0].data, result[1].data
    return result.data


def _sample_dims(measured, reference, dim, sample_dims) -> tuple[Hashable, ...]:
    if sample_dims is None:
        samples = tuple(d for d in reference.dims if d != dim)
        if not samples:
            raise ValueError(
                f"reference has no dim besides {dim!r} (its dims are {reference.dims}), so "
                "there are no sample dims to fit over; pass sample_dims= or give reference a "
                "patch/pixel dim"
            )
    else:
        samples = dim_names(sample_dims, "sample_dims")
    if dim in samples:
        raise ValueError(f"sample_dims {samples} must not include the channel dim {dim!r}")
    for d in samples:
        if d not in measured.dims:
            raise ValueError(
                f"measured has no sample dim {d!r}; its dims are {measured.dims}. "
                f"Sample dims are {samples}"
                + (" (the dims of reference)" if sample_dims is None else "")
            )
        if measured.sizes[d] == 0:
            raise ValueError(f"measured is empty along sample dim {d!r}: nothing to fit")
    return samples


def _check_reference_dims(reference: xr.DataArray, samples, dim: Hashable, given: bool) -> None:
    """Refuse sample dims the reference lacks where the fit would be a guess.

    A reference is broadcast over a sample dim it lacks (the same chart for every frame
    pooled into one fit). That is a guess when the reference has none of the sample dims
    (every sample of a fit would be compared with one colour), or when it varies over a
    batch dim instead (e.g. ``sample_dims="time"`` with a ``(patch, channel)`` chart: a
    matrix per patch, each fitted to one colour).
    """
    if not given:
        return
    lacking = [d for d in samples if d not in reference.dims]
    if not lacking:
        return
    batch = [d for d in reference.dims if d != dim and d not in samples]
    if len(lacking) < len(samples) and not batch:
        return  # pooled: the same reference for each entry of the lacking dims
    dims = tuple(reference.dims)
    what = (
        f"its dims {tuple(batch)} would be batch dims, a matrix for each of their entries "
        "fitted to one reference colour,"
        if batch
        else "every sample of a fit would be compared with one reference colour,"
    )
    pooled = tuple(dict.fromkeys([*samples, *batch]))
    raise ValueError(
        f"reference has no sample dim {', '.join(map(repr, lacking))} (sample_dims="
        f"{samples}, reference dims {dims}): {what} which is not a colour fit. Sample dims "
        f"are the dims summed over (patches, pixels, and frames to pool): to fit one matrix "
        f"over all frames pass sample_dims={pooled}; to fit a matrix per frame, leave "
        f"sample_dims out (the reference's dims {tuple(d for d in dims if d != dim)} are "
        "the sample dims by default)"
    )


def _check_alpha(measured: xr.DataArray, reference: xr.DataArray, dim: Hashable) -> None:
    """Refuse a 4-channel ``measured`` against a 3-channel reference that may be RGBA.

    Its fourth channel would be fitted as a colour (an alpha of 1 acts as an offset). An
    alpha-like label (``"A"``, ``"alpha"``) or no labels at all is asked about; other
    labels (``R, G, B, W``) are a 4-channel camera and fitted.
    """
    n_in, n_out = measured.sizes[dim], reference.sizes[dim]
    if (n_in, n_out) != (4, 3):
        return
    labels = index_values(measured, dim)
    if labels is not None:
        targets = set(index_values(reference, dim) or ())
        alpha = [c for c in labels if str(c).strip().lower() in ("a", "alpha") and c not in targets]
        if not alpha:
            return
        keep = [c for c in labels if c != alpha[0]]
        drop = f"measured.sel({dim}={keep!r})"
        which = f"channel {alpha[0]!r} looks like alpha"
    else:
        drop = f"measured.isel({dim}=slice(0, 3)) (or measured[..., :3] for an array)"
        which = "its channels are not labelled, so the fourth may be alpha (an RGBA image)"
    raise ValueError(
        f"measured has 4 channels along {dim!r} but reference has 3, and {which}: a fit "
        f"would treat it as a colour channel. Drop alpha first: {drop}; for a camera with "
        f"4 colour channels, label them, e.g. measured.assign_coords({dim}=['R', 'G', 'B', "
        "'W']) (a DataArray), to fit a 4x3 matrix"
    )
