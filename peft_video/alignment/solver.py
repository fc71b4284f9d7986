"""Batched entropic partial optimal transport: the one solver behind PVLA (pure torch, knows nothing of models).

Problem, for every leading batch index (POT's ``ot.partial.entropic_partial_wasserstein`` with ``reg=tau``)::

    min_T  <T, C> + tau * sum_ij T_ij log T_ij
    s.t.   T >= 0,  T 1 <= a,  T^T 1 <= b,  1^T T 1 = m

Solved by Bregman projections onto {rows <= a}, {cols <= b}, {mass = m} with Dykstra's corrections. Those
corrections reduce to two scaling vectors and a scalar: ``T = s diag(x) K diag(y)`` with ``K = exp(-C / tau)`` and
``x, y <= 1`` (``x = exp(-f / tau)`` for the row dual ``f >= 0``), iterated as::

    x = min(1, a / (s K y));   y = min(1, b / (s K^T x));   s = m / (y . K^T x)

i.e. two matrix-vector products per iteration, iterate-for-iterate equal to POT. For ``m = 1`` the bounds are
dropped (``x = a / (s K y)``...): that is Sinkhorn for balanced OT, which reaches the same plan far faster than the
clipped iteration does at ``m = 1``.

For ``m < 1`` the plain iteration settles which bounds are active within a few dozen iterations and then, on some
problems, crawls for 1000+ iterations along an ill-conditioned direction of the dual. By default the iteration is
therefore over-relaxed for its first 50 iterations and then interleaved with safeguarded Newton steps on the dual
(``accelerate``, see :func:`partial_ot`); the limit is the same.

This module holds the public API, input checks and the solve stages (float32-first for float64, plain retry); the
iteration lives in ``_domains`` (scaling / log-domain steps, residual), ``_newton`` and ``_iteration`` (the driver).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from ._domains import _LOG_ZERO, _SCALING_LIMIT, _exponent, _LogDomain, _ScalingDomain, _where
from ._iteration import _solve, _Solved

__all__ = ["ConvergenceWarning", "PartialOTResult", "partial_ot", "regularized_cost"]


class ConvergenceWarning(UserWarning):
    """Some problems in a :func:`partial_ot` batch did not reach ``tol`` within ``max_iter`` iterations."""


@dataclass(frozen=True)
class PartialOTResult:
    """What :func:`partial_ot` returns; every field has the caller's leading batch shape ``...``.

    plan: (..., N_V, N_L) transport plan (float32 for half / bfloat16 / float32 input, else float64).
    cost: (...,) transport cost ``<T, C>``; its gradient with respect to ``C`` is the plan (see :func:`partial_ot`).
    reg_cost: (...,) regularised value ``<T, C> + tau * sum T log T`` (POT's convention), whose exact gradient
        with respect to ``C`` is the plan.
    converged: (...,) bool, the optimality residual fell to ``tol`` within ``max_iter``.
    n_iter: (...,) iterations used (with ``accelerate``, a problem solved again plainly counts both runs).
    residual: (...,) final optimality residual (marginal violation plus complementary slackness, over ``m``).
    log_domain: (...,) bool, solved in the log domain (small ``tau`` relative to the cost range).
    n_newton: (...,) Newton steps taken (``accelerate=True`` only; 0 for problems the Bregman iterations finished).
    """

    plan: Tensor
    cost: Tensor
    reg_cost: Tensor
    converged: Tensor
    n_iter: Tensor
    residual: Tensor
    log_domain: Tensor
    n_newton: Tensor


def regularized_cost(plan: Tensor, cost: Tensor, tau: float) -> Tensor:
    """``<T, C> + tau * sum T log T`` over the last two dims (POT's entropic objective; ``0 log 0 = 0``)."""
    return (plan * cost).sum((-2, -1)) + tau * torch.xlogy(plan, plan).sum((-2, -1))


def partial_ot(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    *,
    mass: float | Tensor,
    tau: float = 0.05,
    max_iter: int = 1000,
    tol: float = 1e-4,
    row_mask: Tensor | None = None,
    col_mask: Tensor | None = None,
    differentiable: bool = False,
    log_domain: bool | None = None,
    accelerate: bool = True,
    compile: bool = False,
) -> PartialOTResult:
    """Entropic partial OT plans and costs for a batch of cost matrices ``cost`` (..., N_V, N_L).

    Marginals: ``a`` (..., N_V) and ``b`` (..., N_L) are non-negative weights (default uniform), zeroed where
    ``row_mask`` / ``col_mask`` is False (padded frames / tokens; True = real) and renormalised to sum to 1 over the
    unmasked entries. ``mass`` (float or tensor broadcastable to ``...``) in (0, 1] is the fraction of that unit mass
    moved: the plan has ``T >= 0``, row sums <= a, column sums <= b and total ``mass``; masked rows and columns get
    exactly zero. ``mass=1`` is balanced OT (the paper's "VLA" variant, Table 6); the paper's count-valued ``s`` in
    ``[0, min(N_V, N_L)]`` is ``mass = s / min(N_V, N_L)``.

    ``tau`` is the entropic regularisation (paper: 0.05). Iteration stops, per problem, once the optimality
    residual (row and column marginal violation, complementary slackness ``|rowsum - a|`` on rows whose dual is
    active and total-mass violation, summed and divided by ``mass``) is at most ``tol``, checked every 10
    iterations. In practice the regularised cost is then within about 1.5 * tol of its limit (relative); POT's rule,
    the change of the plan over an iteration, can instead stop on a plateau far from it. Problems still above
    ``tol`` after ``max_iter`` iterations are flagged in ``converged`` and a :class:`ConvergenceWarning` is
    issued. Costs are shifted per problem (the plan is shift invariant) and problems whose ``cost range / tau``
    would under- or overflow the scaling form (above 40 in float32, 300 in float64: ``tau`` below about 0.05 for
    costs spread over [0, 2] in float32) run in the log domain; half and bfloat16 input is computed in float32.

    Gradient: by default the plan is computed without autograd and treated as a constant, so ``d cost / d C`` is
    the plan. That is the exact gradient of the converged *regularised* value ``reg_cost`` (envelope theorem), not
    of ``<T*(C), C>`` alone, which would add ``<dT*/dC, C>``; memory does not grow with iterations. With
    ``differentiable=True`` autograd runs through every iteration instead (memory grows with ``n_iter``).
    ``log_domain`` forces (True) or avoids (False) the log-domain solver; None chooses per problem. A scaling-form
    plan that leaves the float range anyway is solved again in the log domain, so valid input never gives nan/inf.
    ``accelerate`` (default True) reaches the same solution in far fewer iterations on partial problems
    (``mass < 1``): for the first 50 iterations each scaling vector moves 1.7 times its Bregman step in log space
    (over-relaxation; a problem whose residual rises between two checks goes back to plain steps), and from then on
    every problem still open at a check gets one Newton step on the dual: the bounds currently active are held
    fixed, the system is solved through a Schur complement in the working dtype, the step is limited to a change of 2
    in any log-scaling and kept only if it lowers the dual objective, after which the total mass is made exact again.
    Measured on PVLA-shaped batches (``benchmarks/pvla_solver.py``), the slowest problems drop from 1000-1600
    iterations to under 100. Problems the accelerated run leaves above ``tol`` are solved again with the plain
    iteration, whose result is kept where it is closer (``n_iter`` then counts both runs, up to 2 * ``max_iter``):
    acceleration never ends further from the solution than POT's iteration. Accelerated float64 problems in the
    scaling domain iterate in float32 first (to ``0.9 * tol``) and finish in float64, where the stopping test is made.
    ``accelerate=False``, mass 1 and ``differentiable=True`` run POT's iteration exactly (iterate for iterate). The
    stopping test and its guarantee are the same either way.
    ``compile=True`` runs the iterations through ``torch.compile`` (a compilation per process, seconds): faster on
    CPU, where per-operation dispatch is a large part of each iteration.
    """
    _check_scalars(tau, max_iter, tol)
    if not isinstance(cost, Tensor) or not cost.is_floating_point() or cost.ndim < 2:
        raise ValueError(
            f"`cost` must be a floating-point tensor of shape (..., N_V, N_L), got "
            f"{type(cost).__name__ if not isinstance(cost, Tensor) else f'{cost.dtype} of shape {tuple(cost.shape)}'}"
        )
    *lead, n_v, n_l = cost.shape
    if n_v == 0 or n_l == 0:
        raise ValueError(f"`cost` must have N_V, N_L >= 1, got shape {tuple(cost.shape)}")
    lead = tuple(lead)
    dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32
    device = cost.device
    batch = math.prod(lead)

    with torch.autocast(device.type, enabled=False):
        row_mask = _mask(row_mask, "row_mask", lead, n_v, device)
        col_mask = _mask(col_mask, "col_mask", lead, n_l, device)
        a = _marginal(a, "a", "row_mask", lead, n_v, row_mask, dtype, device)
        b = _marginal(b, "b", "col_mask", lead, n_l, col_mask, dtype, device)
        m = _mass(mass, lead, dtype, device)
        c_full = cost.reshape(batch, n_v, n_l).to(dtype)
        # Without masks every entry is valid: skip the where() passes over the (B, N_V, N_L) tensors.
        valid = (
            None
            if (row_mask is None or row_mask.all()) and (col_mask is None or col_mask.all())
            else _ones_if_none(row_mask, batch, n_v, device)[:, :, None]
            & _ones_if_none(col_mask, batch, n_l, device)[:, None, :]
        )

        c_solve = c_full if differentiable else c_full.detach()
        lo = _where(valid, c_solve, math.inf).amin((-2, -1)).detach()
        hi = _where(valid, c_solve, -math.inf).amax((-2, -1)).detach()
        if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
            bad = int((~(torch.isfinite(lo) & torch.isfinite(hi))).nonzero()[0, 0])
            raise ValueError(
                f"`cost` has a non-finite entry on unmasked rows/columns of problem {bad} (flattened)"
            )
        spread = hi - lo
        if log_domain is None:
            use_log = spread / tau > _SCALING_LIMIT[dtype]
        else:
            use_log = torch.full((batch,), bool(log_domain), device=device)

        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            solved, use_log = _solve_split(
                (c_solve, valid, a, b, m),
                lo,
                spread,
                tau,
                max_iter,
                tol,
                use_log,
                accelerate and not differentiable,
                compile,
            )
        plan, n_iter, residual, n_newton = solved.plan, solved.n_iter, solved.residual, solved.n_newton
        if valid is not None:  # already zero there; made exact (the plan is a fresh tensor)
            plan = _where(valid, plan, 0.0) if differentiable else plan.masked_fill_(~valid, 0.0)
        used = plan if differentiable else plan.detach()
        transport = (used * _where(valid, c_full, 0.0)).sum((-2, -1))
        if differentiable:
            neg_entropy = torch.xlogy(used, used).sum((-2, -1))
        else:  # sum T log T = sum T log(T / K) + sum T log K, and tau sum T log K = lo sum T - <T, C>
            kernel_part = (lo * solved.mass - transport.detach()) / tau  # mass: the plan's (masked entries 0)
            neg_entropy = solved.log_ratio + kernel_part
        reg = transport + tau * neg_entropy

    converged = residual <= tol
    if not bool(converged.all()):
        warnings.warn(
            "partial_ot: some problems did not reach `tol` within `max_iter` iterations; their plans are "
            "approximate (see PartialOTResult.converged / .residual; raise max_iter or tau)",
            ConvergenceWarning,
            stacklevel=2,
        )
    return PartialOTResult(
        plan=plan.reshape(*lead, n_v, n_l),
        cost=transport.reshape(lead),
        reg_cost=reg.reshape(lead),
        converged=converged.reshape(lead),
        n_iter=n_iter.reshape(lead),
        residual=residual.reshape(lead),
        log_domain=use_log.reshape(lead),
        n_newton=n_newton.reshape(lead),
    )


# ----------------------------------------------------------------------------------------------- validation


def _check_scalars(tau: object, max_iter: object, tol: object) -> None:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"`tau` must be a finite number > 0 (paper: 0.05), got {tau!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"`max_iter` must be an integer >= 1 (paper: 1000), got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"`tol` must be a finite number > 0, got {tol!r}")


def _broadcast(t: Tensor, name: str, shape: tuple[int, ...], expected: str) -> Tensor:
    try:
        return torch.broadcast_to(t, shape)
    except RuntimeError:
        raise ValueError(
            f"`{name}` has shape {tuple(t.shape)}, expected {expected} broadcastable to {shape}"
        ) from None


def _mask(
    mask: Tensor | None, name: str, lead: tuple[int, ...], n: int, device: torch.device
) -> Tensor | None:
    """Boolean (B, n) mask, True = real entry (None: no mask given); raise if a problem has no real entry."""
    batch = math.prod(lead)
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"`{name}` must be a bool tensor (True = real frame/token), got {got}")
    mask = _broadcast(mask.to(device), name, (*lead, n), f"(..., {n})").reshape(batch, n)
    empty = ~mask.any(-1)
    if bool(empty.any()):
        raise ValueError(
            f"`{name}` masks every entry of problem {int(empty.nonzero()[0, 0])} (flattened batch index): each "
            "problem needs at least one unmasked row and column"
        )
    return mask


def _ones_if_none(mask: Tensor | None, batch: int, n: int, device: torch.device) -> Tensor:
    """``mask``, or an all-True (B, n) mask where none was given."""
    return torch.ones(batch, n, dtype=torch.bool, device=device) if mask is None else mask


def _marginal(
    w: Tensor | None,
    name: str,
    mask_name: str,
    lead: tuple[int, ...],
    n: int,
    mask: Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """(B, n) weights zeroed on masked entries (``mask`` None: none masked) and normalised to sum 1 per problem."""
    batch = math.prod(lead)
    if w is None and mask is None:
        return torch.full((batch, n), 1 / n, dtype=dtype, device=device)
    if w is None:
        w = mask.to(dtype)
    else:
        if not isinstance(w, Tensor) or not w.is_floating_point():
            raise ValueError(
                f"`{name}` must be a floating-point tensor of shape (..., {n}), got {type(w).__name__}"
            )
        w = _broadcast(w.detach().to(device, dtype), name, (*lead, n), f"(..., {n})").reshape(batch, n)
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"`{name}` must hold finite non-negative weights, got min {float(w.min())}")
        w = w if mask is None else torch.where(mask, w, 0.0)
    total = w.sum(-1, keepdim=True)
    if bool((total <= 0).any()):
        bad = int((total[:, 0] <= 0).nonzero()[0, 0])
        raise ValueError(
            f"`{name}` has zero total weight on the entries `{mask_name}` keeps in problem {bad}"
        )
    return w / total


def _mass(mass: float | Tensor, lead: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    batch = math.prod(lead)
    if isinstance(mass, Tensor):
        m = _broadcast(mass.detach().to(device, dtype), "mass", lead, "a tensor").reshape(batch)
    elif isinstance(mass, (int, float)) and not isinstance(mass, bool):
        m = torch.full((batch,), float(mass), dtype=dtype, device=device)
    else:
        raise ValueError(f"`mass` must be a float in (0, 1] or a tensor of them, got {type(mass).__name__}")
    if not bool(((m > 0) & (m <= 1)).all()):
        bad = m[~((m > 0) & (m <= 1))][0].item()
        raise ValueError(
            f"`mass` must lie in (0, 1] (the fraction of the unit mass transported; 1 = full OT), got {bad!r}"
        )
    return m


# ---------------------------------------------------------------------------------------------------- stages


def _solve_split(
    problems: tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor],
    lo: Tensor,
    spread: Tensor,
    tau: float,
    max_iter: int,
    tol: float,
    use_log: Tensor,
    accelerate: bool,
    compile: bool,
) -> tuple[_Solved, Tensor]:
    """Solve the scaling-domain and log-domain problems apart and put the results back in batch order.

    ``problems``: (cost, valid, a, b, m); ``lo`` and ``spread``: each cost's minimum and range over valid entries.
    Each domain builds its kernel for its own problems only. A scaling-domain plan that still left the float range
    is solved again in the log domain (a safety net: the range / tau rule is meant to prevent it). Returns the
    results and the final log-domain flags.
    """
    batch = lo.shape[0]
    out: _Solved | None = None
    for domain in (_ScalingDomain, _LogDomain):
        chosen = ~use_log if domain is _ScalingDomain else use_log
        if not bool(chosen.any()):
            continue
        idx = chosen.nonzero()[:, 0]
        whole = idx.numel() == batch
        cost, valid, a, b, m, lo_, spread_ = _take((*problems, lo, spread), None if whole else idx)
        fill = 0.0 if domain is _ScalingDomain else _LOG_ZERO
        sub = (domain.kernel(_exponent(cost, lo_, valid, tau, fill)), a, b, m)
        if domain is _ScalingDomain and accelerate and cost.dtype == torch.float64:
            solved = _solve_float64_via_float32(sub, spread_, tau, max_iter, tol, compile)
        else:
            solved = _solve(domain(*sub), max_iter, tol, accelerate, compile)[0]
        if accelerate:
            solved = _retry_plain(domain, sub, max_iter, tol, compile, solved)
        if domain is _ScalingDomain:
            bad = ~torch.isfinite(solved.mass)  # any nan / inf entry makes the sum non-finite
            if bool(bad.any()):
                use_log = use_log.index_put((idx[bad],), torch.tensor(True, device=use_log.device))
        out = solved if whole else _placed(out, batch, idx, solved)
    assert out is not None  # every problem is in one of the two domains
    return out, use_log


def _placed(out: _Solved | None, batch: int, idx: Tensor, part: _Solved) -> _Solved:
    """``out`` (None: zeros for ``batch`` problems) with problems ``idx`` replaced by ``part``'s results."""
    if out is None:
        out = _Solved(*(t.new_zeros((batch, *t.shape[1:])) for t in part))
    return out.put(idx, part)


def _solve_float64_via_float32(
    sub: tuple[Tensor, Tensor, Tensor, Tensor],
    spread: Tensor,
    tau: float,
    max_iter: int,
    tol: float,
    compile: bool,
) -> _Solved:
    """Scaling-domain float64 problems (``sub``: kernel, a, b, m; ``spread``: cost ranges): iterate in float32 to
    ``0.9 * tol`` (at least 1e-6), then go on in float64 from there until the float64 residual is <= ``tol``; n_iter
    and n_newton count both phases. The margin covers float32 rounding, which moves the residual by a few 1e-6 of
    the mass: with it the float64 phase rarely iterates, and a tighter float32 target (tol / 2 was tried) costs a
    few percent more float32 iterations for nothing.

    Each iteration is mostly two matrix-vector products, which float32 makes nearly twice as fast; the float64 phase
    starts next to the solution (often already within ``tol``, at most a few Newton steps for tight ``tol``), and the
    stopping test is the float64 one. Problems whose cost range / tau exceeds float32's scaling limit skip the
    float32 phase.
    """
    kernel, a, b, m = sub
    fits = spread / tau <= _SCALING_LIMIT[torch.float32]
    if not bool(fits.all()):  # each problem takes its own path, whatever else is in the batch
        out = _solve(_ScalingDomain(*_take(sub, ~fits)), max_iter, tol, True, compile)[0]
        if bool(fits.any()):
            out = _placed(None, kernel.shape[0], (~fits).nonzero()[:, 0], out)
            out = out.put(
                fits.nonzero()[:, 0],
                _solve_float64_via_float32(_take(sub, fits), spread[fits], tau, max_iter, tol, compile),
            )
        return out
    domain64 = _ScalingDomain(*sub)
    f32 = torch.float32
    domain32 = _ScalingDomain(kernel.to(f32), a.to(f32), b.to(f32), _float32_mass(m))
    first, st32 = _solve(domain32, max_iter, max(0.9 * tol, 1e-6), True, compile, with_plan=False)
    c64 = domain64.const
    x, y = st32["x"].double(), st32["y"].double()
    ktx = torch.bmm(x, c64["k"])
    s = c64["m"] / torch.bmm(ktx, y.mT)  # the float64 s-update: total mass exactly m again
    start = {"x": x, "y": y, "s": s, "ky": torch.bmm(y, c64["k"].mT), "ktx": ktx}
    second = _solve(domain64, max_iter, tol, True, compile, start=start)[0]
    return second._replace(n_iter=second.n_iter + first.n_iter, n_newton=second.n_newton + first.n_newton)


# The largest float32 below 1 (float32's spacing just below 1 is 2**-24).
_FLOAT32_BELOW_ONE = 1 - 2**-24


def _float32_mass(m: Tensor) -> Tensor:
    """The float64 masses ``m`` for the float32 phase: rounded to float32, but a partial mass stays below 1.

    A mass within 2**-25 of 1 (e.g. 1 - 1e-9) rounds to 1.0 in float32, which would make the float32 phase solve
    balanced OT: scalings without the bound 1 (Sinkhorn), handed to a float64 phase whose residual assumes
    ``x, y <= 1`` for partial problems. Its complementary-slackness term ``max(d, sign(x - 1) d)`` is then the
    signed ``d`` on every scaling above 1, so the start check could report a negative residual and stop on a plan
    that breaks its marginals (issue 16). Rounding such a mass down to the largest float32 below 1 keeps both phases
    on the same (bounded) problem, within float32's rounding of the same mass; the float64 phase rescales to the
    exact ``m`` before its first check.
    """
    return torch.where(m < 1, m.to(torch.float32).clamp_max(_FLOAT32_BELOW_ONE), 1.0).to(torch.float32)


def _take(tensors: tuple[Tensor | None, ...], keep: Tensor | None) -> tuple[Tensor | None, ...]:
    """The problems (leading index) of each tensor that ``keep`` (bool or index tensor; None: all) selects."""
    if keep is None:
        return tensors
    return tuple(None if t is None else t[keep] for t in tensors)


def _retry_plain(
    domain: type[_ScalingDomain] | type[_LogDomain],
    sub: tuple[Tensor, Tensor, Tensor, Tensor],
    max_iter: int,
    tol: float,
    compile: bool,
    solved: _Solved,
) -> _Solved:
    """Safety net for acceleration: problems it left above ``tol`` are solved again with POT's plain iteration, whose
    result replaces the accelerated one where its residual is lower (n_iter then counts both runs).

    Seen on degenerate problems (the mass a whole number of saturated rows, tau ~0.005, tol ~1e-11): early Newton
    steps can leave a row deep in its active set, from where the plain steps crawl back for 10^4+ iterations.
    """
    open_ = solved.residual > tol
    if not bool(open_.any()):
        return solved
    idx = open_.nonzero()[:, 0]
    plain = _solve(domain(*_take(sub, idx)), max_iter, tol, False, compile)[0]
    better = plain.residual < solved.residual[idx]
    counted = solved._replace(n_iter=solved.n_iter.index_add(0, idx, plain.n_iter))
    kept = plain._replace(n_iter=counted.n_iter[idx], n_newton=solved.n_newton[idx])
    return counted.put(idx[better], _Solved(*(t[better] for t in kept)))
