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
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ConvergenceWarning", "PartialOTResult", "partial_ot", "regularized_cost"]

# Convergence is tested every _CHECK_EVERY iterations (each test is a host sync on GPU); n_iter is a multiple of it.
_CHECK_EVERY = 10
# Largest (cost range / tau) for which the scaling form stays inside the dtype's exponent range: the iterates reach
# about exp(+-range / tau) and K y multiplies two such factors (float32 underflows near exp(-87), float64 exp(-708)).
_SCALING_LIMIT = {torch.float32: 40.0, torch.float64: 300.0}
# exp(-floor) is far below the dtype's epsilon, so clamping log-sum-exp terms there leaves the sum unchanged.
_LSE_FLOOR = {torch.float32: 50.0, torch.float64: 100.0}
# Stands in for log(0) in the log domain: finite, so masked entries never turn into inf - inf = nan.
_LOG_ZERO = -1e30
# Accelerated iterations (``accelerate=True``). Over-relaxation: each scaling vector moves _OVERRELAX times its
# Bregman step (in log space), per problem until its residual rises between two checks, then plain steps. Newton: at
# every check from iteration _NEWTON_AFTER on, open partial problems get one safeguarded Newton step on the dual.
_OVERRELAX = 1.7
_NEWTON_AFTER = 50
# Step lengths tried, per problem: the longest that lowers the dual objective is kept.
_NEWTON_STEPS = (1.0, 0.25, 0.0625)
# Trust region: the largest change of any log-scaling in one Newton step.
_NEWTON_MAX_MOVE = 1.0
# Relative diagonal ridge on the reduced Newton system (keeps Cholesky defined near singular).
_NEWTON_RIDGE = 1e-9


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
    iterations. In practice the
    regularised cost is then within about 1.5 * tol of its limit (relative); POT's rule, the change of the plan over
    an iteration, can instead stop on a plateau far from it. Problems still above ``tol`` after ``max_iter``
    iterations are flagged in ``converged`` and a :class:`ConvergenceWarning` is issued. Costs are shifted per
    problem (the plan is shift invariant) and problems whose ``cost range / tau`` would under- or overflow the
    scaling form (above 40 in float32, 300 in float64: ``tau`` below about 0.05 for costs spread over [0, 2] in
    float32) run in the log domain; half and bfloat16 input is computed in float32.

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
    fixed, the system is solved in float64 through a Schur complement, the step is limited to a change of 1 in any
    log-scaling and kept only if it lowers the dual objective, after which the total mass is made exact again.
    Measured on PVLA-shaped batches (``benchmarks/pvla_solver.py``), the slowest problems drop from 1000-1600
    iterations to under 100. Problems the accelerated run leaves above ``tol`` are solved again with the plain
    iteration, whose result is kept where it is closer (``n_iter`` then counts both runs, up to 2 * ``max_iter``):
    acceleration never ends further from the solution than POT's iteration. Accelerated float64 problems in the
    scaling domain iterate in float32 first (to ``tol / 2``) and finish in float64, where the stopping test is made. ``accelerate=False``, mass 1 and
    ``differentiable=True`` run POT's iteration exactly (iterate for iterate). The stopping test and its guarantee
    are the same either way.
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
        valid = None if (row_mask.all() and col_mask.all()) else row_mask[:, :, None] & col_mask[:, None, :]

        c_solve = c_full if differentiable else c_full.detach()
        lo = _where(valid, c_solve, math.inf).amin((-2, -1)).detach()
        hi = _where(valid, c_solve, -math.inf).amax((-2, -1)).detach()
        if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
            bad = int((~(torch.isfinite(lo) & torch.isfinite(hi))).nonzero()[0, 0])
            raise ValueError(
                f"`cost` has a non-finite entry on unmasked rows/columns of problem {bad} (flattened)"
            )
        shifted = _where(valid, c_solve - lo[:, None, None], 0.0)
        if log_domain is None:
            use_log = (hi - lo) / tau > _SCALING_LIMIT[dtype]
        else:
            use_log = torch.full((batch,), bool(log_domain), device=device)

        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            solved, use_log = _solve_split(
                shifted,
                valid,
                a,
                b,
                m,
                tau,
                max_iter,
                tol,
                use_log,
                accelerate and not differentiable,
                compile,
            )
        plan, n_iter, residual, n_newton = solved.plan, solved.n_iter, solved.residual, solved.n_newton
        plan = _where(valid, plan, 0.0)
        used = plan if differentiable else plan.detach()
        transport = (used * _where(valid, c_full, 0.0)).sum((-2, -1))
        neg_entropy = torch.xlogy(used, used).sum((-2, -1)) if differentiable else solved.neg_entropy
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


def _where(valid: Tensor | None, x: Tensor, fill: float) -> Tensor:
    """``x`` where ``valid`` (None: everywhere), else ``fill``."""
    return x if valid is None else torch.where(valid, x, fill)


def _broadcast(t: Tensor, name: str, shape: tuple[int, ...], expected: str) -> Tensor:
    try:
        return torch.broadcast_to(t, shape)
    except RuntimeError:
        raise ValueError(
            f"`{name}` has shape {tuple(t.shape)}, expected {expected} broadcastable to {shape}"
        ) from None


def _mask(mask: Tensor | None, name: str, lead: tuple[int, ...], n: int, device: torch.device) -> Tensor:
    """Boolean (B, n) mask, True = real entry; raise if a problem has no real entry on this side."""
    batch = math.prod(lead)
    if mask is None:
        return torch.ones(batch, n, dtype=torch.bool, device=device)
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


def _marginal(
    w: Tensor | None,
    name: str,
    mask_name: str,
    lead: tuple[int, ...],
    n: int,
    mask: Tensor,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """(B, n) weights zeroed on masked entries and normalised to sum 1 per problem."""
    batch = math.prod(lead)
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
        w = torch.where(mask, w, 0.0)
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


# ------------------------------------------------------------------------------------------------ iteration


class _Solved(NamedTuple):
    """Per-problem results of one solve, in the order of the problems it was given."""

    plan: Tensor
    n_iter: Tensor
    residual: Tensor
    n_newton: Tensor
    neg_entropy: Tensor  # sum T log T of the plan, from the domain's own log-plan (no log of the plan taken)

    def put(self, idx: Tensor, part: _Solved) -> _Solved:
        """These results with problems ``idx`` replaced by ``part``'s."""
        return _Solved(*(t.index_copy(0, idx, p) for t, p in zip(self, part, strict=True)))


def _solve_split(
    shifted: Tensor,
    valid: Tensor | None,
    a: Tensor,
    b: Tensor,
    m: Tensor,
    tau: float,
    max_iter: int,
    tol: float,
    use_log: Tensor,
    accelerate: bool,
    compile: bool,
) -> tuple[_Solved, Tensor]:
    """Solve the scaling-domain and log-domain problems apart and put the results back in batch order.

    A scaling-domain plan that still left the float range is solved again in the log domain (a safety net: the
    range / tau rule is meant to prevent it). Returns the results and the final log-domain flags.
    """
    batch = shifted.shape[0]
    n_zeros = torch.zeros(batch, dtype=torch.long, device=shifted.device)
    out = _Solved(
        shifted.new_zeros(shifted.shape), n_zeros, shifted.new_zeros(batch), n_zeros, shifted.new_zeros(batch)
    )
    for domain in (_ScalingDomain, _LogDomain):
        chosen = ~use_log if domain is _ScalingDomain else use_log
        if not bool(chosen.any()):
            continue
        idx = chosen.nonzero()[:, 0]
        whole = idx.numel() == batch
        sub_valid = None if valid is None or whole else valid[idx]
        sub = (shifted, valid, a, b, m) if whole else (shifted[idx], sub_valid, a[idx], b[idx], m[idx])
        if domain is _ScalingDomain and accelerate and shifted.dtype == torch.float64:
            solved = _solve_float64_via_float32(sub, tau, max_iter, tol, compile)
        else:
            solved = _solve(domain(*sub, tau), max_iter, tol, accelerate, compile)[0]
        if accelerate:
            solved = _retry_plain(domain, sub, tau, max_iter, tol, compile, solved)
        if domain is _ScalingDomain:
            bad = ~torch.isfinite(solved.plan.sum((-2, -1)))  # any nan / inf entry makes the sum non-finite
            if bool(bad.any()):
                use_log = use_log.index_put((idx[bad],), torch.tensor(True, device=use_log.device))
        out = solved if whole else out.put(idx, solved)
    return out, use_log


def _solve_float64_via_float32(
    sub: tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor],
    tau: float,
    max_iter: int,
    tol: float,
    compile: bool,
) -> _Solved:
    """Scaling-domain float64 problems: iterate in float32 to ``tol / 2`` (at least 1e-6), then go on in float64
    from there until the float64 residual is <= ``tol``; n_iter and n_newton count both phases.

    Each iteration is two memory-bound matrix-vector products, so float32 halves its cost; the float64 phase starts
    next to the solution (often already within ``tol``, at most a few Newton steps for tight ``tol``), and the
    stopping test is the float64 one. Problems whose cost range / tau exceeds float32's scaling limit skip the
    float32 phase.
    """
    shifted, valid, a, b, m = sub
    domain64 = _ScalingDomain(shifted, valid, a, b, m, tau)
    fits = shifted.amax((-2, -1)) / tau <= _SCALING_LIMIT[torch.float32]
    if not bool(fits.all()):
        return _solve(domain64, max_iter, tol, True, compile)[0]
    f32 = torch.float32
    domain32 = _ScalingDomain(shifted.to(f32), valid, a.to(f32), b.to(f32), m.to(f32), tau)
    first, st32 = _solve(domain32, max_iter, max(tol / 2, 1e-6), True, compile, with_plan=False)
    c64 = domain64.const
    x, y = st32["x"].double(), st32["y"].double()
    ktx = torch.bmm(x, c64["k"])
    s = c64["m"] / torch.bmm(ktx, y.mT)  # the float64 s-update: total mass exactly m again
    start = {"x": x, "y": y, "s": s, "ky": torch.bmm(y, c64["kt"]), "ktx": ktx}
    second = _solve(domain64, max_iter, tol, True, compile, start=start)[0]
    return second._replace(n_iter=second.n_iter + first.n_iter, n_newton=second.n_newton + first.n_newton)


def _retry_plain(
    domain: type[_ScalingDomain] | type[_LogDomain],
    sub: tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor],
    tau: float,
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
    shifted, valid, a, b, m = sub
    again = (shifted[idx], None if valid is None else valid[idx], a[idx], b[idx], m[idx])
    plain = _solve(domain(*again, tau), max_iter, tol, False, compile)[0]
    better = plain.residual < solved.residual[idx]
    counted = solved._replace(n_iter=solved.n_iter.index_add(0, idx, plain.n_iter))
    kept = plain._replace(n_iter=counted.n_iter[idx], n_newton=solved.n_newton[idx])
    return counted.put(idx[better], _Solved(*(t[better] for t in kept)))


# State and constants of the iteration. Vectors are kept as (B, 1, n) and scalars as (B, 1, 1) so that every
# matrix-vector product is a plain bmm and no view is taken inside the loop (each costs dispatch time on CPU).
# With acceleration the constants also hold ``relax_x`` / ``relax_y``: (B, 1, n) / (B, 1, p) overshoot omega - 1 of
# each entry (0 on masked rows / columns and, once its residual has risen, on the whole problem).
State = dict[str, Tensor]
Step = Callable[[State, State], State]
Marginals = Callable[[State, State], tuple[Tensor, Tensor, Tensor, Tensor]]
# (kernel, log x, log y, log s, log upper bounds of x and y), float64, per problem: what a Newton step works on.
LogView = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


class _ScalingDomain:
    """State (x, y, s) with T = s diag(x) K diag(y); the bound ``ub`` is 1 for partial problems, inf for mass 1.

    Masked entries keep K = 1 but get zero weight, so x = 0 on masked rows and y = 0 on masked columns.
    """

    def __init__(
        self, shifted: Tensor, valid: Tensor | None, a: Tensor, b: Tensor, m: Tensor, tau: float
    ) -> None:
        k = torch.exp(shifted / -tau)
        self.shifted, self.tau = shifted, tau  # for the entropy: log K = -shifted / tau, no log needed
        ub = torch.where(m < 1, 1.0, math.inf).to(m.dtype)
        self.const: State = _fresh(
            {"k": k, "a": a[:, None], "b": b[:, None], "m": m[:, None, None], "ub": ub[:, None, None]}
        )
        # K^T for y K^T: a float32 copy is faster per product than the transposed view; in float64 the view is
        # (measured on CPU), and saves the copy.
        kt = self.const["k"].mT
        self.const["kt"] = kt.contiguous() if k.dtype == torch.float32 else kt

    def init(self) -> State:
        c = self.const
        k = c["k"]
        ky = k.sum(-1).unsqueeze(1).clone()  # (B, 1, N_V), not a view: torch.compile guards on views
        return {
            "x": torch.ones_like(c["a"]),
            "y": torch.ones_like(c["b"]),
            "s": c["m"] / ky.sum(-1, keepdim=True),
            "ky": ky,
            "ktx": k.sum(-2, keepdim=True),
        }

    @staticmethod
    def step(st: State, c: State) -> State:
        # Row-vector-times-matrix products: on CPU, bmm is several times faster in this form than as (K @ y).
        s = st["s"]
        x = torch.minimum(c["a"] / (s * st["ky"]), c["ub"])
        if "relax_x" in c:
            x = _relax_scaling(x, st["x"], c["relax_x"], c["ub"])
        ktx = torch.bmm(x, c["k"])
        y = torch.minimum(c["b"] / (s * ktx), c["ub"])
        if "relax_y" in c:
            y = _relax_scaling(y, st["y"], c["relax_y"], c["ub"])
        s = c["m"] / torch.bmm(ktx, y.mT)
        ky = torch.bmm(y, c["kt"])
        return {"x": x, "y": y, "s": s, "ky": ky, "ktx": ktx}

    @staticmethod
    def absorb(st: State) -> State:
        return st

    @staticmethod
    def marginals(st: State, c: State) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Row sums, column sums, and whether each row / column bound is active (its dual is > 0)."""
        s = st["s"]
        return s * st["x"] * st["ky"], s * st["y"] * st["ktx"], st["x"] < c["ub"], st["y"] < c["ub"]

    @staticmethod
    def plan(st: State, c: State) -> Tensor:
        return st["s"] * st["x"].mT * c["k"] * st["y"]

    def neg_entropy(self, st: State, c: State, plan: Tensor) -> Tensor:
        """``sum T log T`` from log T = log s + log x_i + log y_j - shifted_ij / tau: one pass over the plan, no log
        of it (0 log 0 = 0 on masked rows and columns)."""
        rows, cols = st["s"] * st["x"] * st["ky"], st["s"] * st["y"] * st["ktx"]
        scalings = rows.sum(-1) * st["s"][..., 0].log() + torch.xlogy(rows, st["x"]).sum(-1)
        scalings = scalings + torch.xlogy(cols, st["y"]).sum(-1)
        return scalings[:, 0] - (plan * self.shifted).sum((-2, -1)) / self.tau

    @staticmethod
    def log_view(st: State, c: State) -> LogView:
        ub = torch.log(c["ub"][:, 0].double())
        return (
            c["k"].double(),
            torch.log(st["x"][:, 0].double()),
            torch.log(st["y"][:, 0].double()),
            torch.log(st["s"][:, 0, 0].double()),
            ub.expand(-1, c["a"].shape[-1]),
            ub.expand(-1, c["b"].shape[-1]),
        )

    @staticmethod
    def from_log(st: State, u: Tensor, v: Tensor, w: Tensor, ky: Tensor, ktx: Tensor) -> State:
        """The state for log-scalings (u, v, w) with kernel products ``ky = K e^v`` and ``ktx = e^u K``."""
        dt = st["x"].dtype
        return {
            "x": u.exp()[:, None].to(dt),
            "y": v.exp()[:, None].to(dt),
            "s": w.exp()[:, None, None].to(dt),
            "ky": ky[:, None].to(dt),
            "ktx": ktx[:, None].to(dt),
        }


def _relax_scaling(new: Tensor, old: Tensor, overshoot: Tensor, ub: Tensor) -> Tensor:
    """Over-relaxed scaling ``new (1 + w (new / old - 1))``, kept <= ub: to first order in log space the same as
    ``old^(1 - omega) new^omega`` with ``w = omega - 1`` (0 = plain step), without a pow, and >= new (1 - w) > 0.
    ``old`` is 0 only on masked entries, whose overshoot is 0."""
    ratio = new / old.clamp_min(torch.finfo(new.dtype).tiny)
    return torch.minimum(torch.addcmul(new, overshoot, new * (ratio - 1)), ub)


class _LogDomain:
    """The same iteration on (log x, log y, log s), with log-sum-exp in place of the matrix-vector products.

    Every check the increments are absorbed into the log-kernel (``k += x + y + s``, bounds lowered by the same
    amount): the potentials reach about range / tau, and keeping them out of the plan's exponent avoids the
    cancellation that would otherwise cost float32 about eps * range / tau of relative accuracy.
    """

    def __init__(
        self, shifted: Tensor, valid: Tensor | None, a: Tensor, b: Tensor, m: Tensor, tau: float
    ) -> None:
        self.log_kernel = _where(valid, shifted / -tau, _LOG_ZERO)
        self.bound = torch.where(m < 1, 0.0, math.inf).to(m.dtype)[:, None, None]
        self.const: State = _fresh(
            {
                "a": a[:, None],
                "b": b[:, None],
                "m": m[:, None, None],
                "la": torch.where(a > 0, torch.log(a), _LOG_ZERO)[:, None],
                "lb": torch.where(b > 0, torch.log(b), _LOG_ZERO)[:, None],
                "lm": torch.log(m)[:, None, None],
            }
        )

    def init(self) -> State:
        c, lk = self.const, self.log_kernel
        return {
            "k": lk,
            "ubx": self.bound.expand_as(c["a"]).clone(),
            "uby": self.bound.expand_as(c["b"]).clone(),
            "x": torch.zeros_like(c["a"]),
            "y": torch.zeros_like(c["b"]),
            "s": c["lm"] - _logsumexp(lk, (-2, -1)),
            "ky": _logsumexp(lk, -1).mT.clone(),
            "ktx": _logsumexp(lk, -2),
        }

    @staticmethod
    def step(st: State, c: State) -> State:
        s = st["s"]
        x = torch.minimum(c["la"] - s - st["ky"], st["ubx"])
        if "relax_x" in c:
            x = _relax_log(x, st["x"], c["relax_x"], st["ubx"])
        ktx = _logsumexp(st["k"] + x.mT, -2)
        y = torch.minimum(c["lb"] - s - ktx, st["uby"])
        if "relax_y" in c:
            y = _relax_log(y, st["y"], c["relax_y"], st["uby"])
        s = c["lm"] - _logsumexp(ktx + y, -1)
        ky = _logsumexp(st["k"] + y, -1).mT
        return {
            "k": st["k"],
            "ubx": st["ubx"],
            "uby": st["uby"],
            "x": x,
            "y": y,
            "s": s,
            "ky": ky,
            "ktx": ktx,
        }

    @staticmethod
    def absorb(st: State) -> State:
        x, y, s = st["x"], st["y"], st["s"]
        return {
            "k": st["k"] + x.mT + y + s,
            "ubx": st["ubx"] - x,
            "uby": st["uby"] - y,
            "x": torch.zeros_like(x),
            "y": torch.zeros_like(y),
            "s": torch.zeros_like(s),
            "ky": st["ky"] + x + s,
            "ktx": st["ktx"] + y + s,
        }

    @staticmethod
    def marginals(st: State, c: State) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = st["s"]
        rows, cols = torch.exp(s + st["x"] + st["ky"]), torch.exp(s + st["y"] + st["ktx"])
        return rows, cols, st["x"] < st["ubx"], st["y"] < st["uby"]

    @staticmethod
    def plan(st: State, c: State) -> Tensor:
        return torch.exp(st["s"] + st["x"].mT + st["k"] + st["y"])

    @staticmethod
    def neg_entropy(st: State, c: State, plan: Tensor) -> Tensor:
        """``sum T log T`` from the log-plan itself (masked entries: T = 0 times a finite log-zero)."""
        return (plan * (st["s"] + st["x"].mT + st["k"] + st["y"])).sum((-2, -1))

    @staticmethod
    def log_view(st: State, c: State) -> LogView:
        # exp(k) is the plan's magnitude once increments are absorbed (entries <= 1); masked ones give exactly 0.
        return (
            torch.exp(st["k"].double()),
            st["x"][:, 0].double(),
            st["y"][:, 0].double(),
            st["s"][:, 0, 0].double(),
            st["ubx"][:, 0].double(),
            st["uby"][:, 0].double(),
        )

    @staticmethod
    def from_log(st: State, u: Tensor, v: Tensor, w: Tensor, ky: Tensor, ktx: Tensor) -> State:
        dt = st["x"].dtype
        return {
            "k": st["k"],
            "ubx": st["ubx"],
            "uby": st["uby"],
            "x": u[:, None].to(dt),
            "y": v[:, None].to(dt),
            "s": w[:, None, None].to(dt),
            "ky": torch.log(ky).clamp_min(_LOG_ZERO)[:, None].to(dt),
            "ktx": torch.log(ktx).clamp_min(_LOG_ZERO)[:, None].to(dt),
        }


def _relax_log(new: Tensor, old: Tensor, overshoot: Tensor, ub: Tensor) -> Tensor:
    """Over-relaxation in log space, ``new + w (new - old)`` kept <= ub (``w = omega - 1``; 0 = plain step)."""
    return torch.minimum(torch.addcmul(new, overshoot, new - old), ub)


def _fresh(tensors: State) -> State:
    """The same tensors as contiguous non-views: torch.compile guards on view-ness, and compaction makes copies."""
    return {
        k: v.contiguous() if v._base is None else v.clone(memory_format=torch.contiguous_format)
        for k, v in tensors.items()
    }


def _logsumexp(x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """log-sum-exp keeping dims, with terms below exp(-_LSE_FLOOR) relative to the largest clamped to it (no effect
    on the value at float precision): CPU exp() takes a slow path on arguments that underflow."""
    top = x.amax(dim, keepdim=True).detach()
    floor = _LSE_FLOOR[x.dtype]
    return torch.log(torch.exp((x - top).clamp_min(-floor)).sum(dim, keepdim=True)) + top


def _residual(marginals: Marginals, st: State, c: State) -> Tensor:
    """Optimality residual over m: marginal violation, complementary slackness (|sum - bound| where the bound's dual
    is active) and total-mass violation (zero after a Bregman step, not after a Newton step)."""
    rows, cols, row_active, col_active = marginals(st, c)
    dr, dc = rows - c["a"], cols - c["b"]
    r = torch.where(row_active, dr.abs(), dr.clamp_min(0)).sum(-1, keepdim=True)
    col = torch.where(col_active, dc.abs(), dc.clamp_min(0)).sum(-1, keepdim=True)
    total = (rows.sum(-1, keepdim=True) - c["m"]).abs()
    return ((r + col + total) / c["m"]).flatten()


def _advance(
    step: Step, absorb: Callable[[State], State], marginals: Marginals, st: State, c: State, n: int
) -> tuple[State, Tensor]:
    """``n`` iterations, then the absorption and the residual of every problem (one compilable unit)."""
    for _ in range(n):
        st = step(st, c)
    st = absorb(st)
    return st, _residual(marginals, st, c)


@functools.cache
def _compiled_advance() -> Callable[..., tuple[State, Tensor]]:
    return torch.compile(_advance, dynamic=True)


# ----------------------------------------------------------------------------------------------------- newton


def _newton(domain: _ScalingDomain | _LogDomain, st: State, c: State) -> tuple[State, Tensor]:
    """One safeguarded Newton step per problem on the dual of the partial problem; returns the state and accepted.

    In log-scalings (u, v, w) = (log x, log y, log s), T = e^w diag(e^u) K diag(e^v) and the dual objective to
    minimise is ``phi = sum T - a.u - b.v - m w`` subject to ``u <= log ub``, ``v <= log ub``: its gradient is the
    marginal violation. Newton runs on the rows and columns whose bound is active (u < bound, or a row sum above a)
    with the others held at their bound, then clips to the bound; of the step lengths 1, 1/4, 1/16 the first that
    lowers phi (or, once phi is flat to rounding, the residual) is kept, then s is rescaled to the exact total mass;
    a problem with none keeps its state. float64 throughout.
    """
    kernel, u, v, w, ub_u, ub_v = domain.log_view(st, c)
    a, b, m = c["a"][:, 0].double(), c["b"][:, 0].double(), c["m"][:, 0, 0].double()
    real_rows, real_cols = a > 0, b > 0
    plan = w.exp()[:, None, None] * u.exp()[:, :, None] * kernel * v.exp()[:, None, :]
    rows, cols = plan.sum(-1), plan.sum(-2)
    active_rows = ((u < ub_u) | (rows > a)) & real_rows
    active_cols = ((v < ub_v) | (cols > b)) & real_cols
    du, dv, dw, solved = _newton_direction(plan, rows, cols, a, b, m, active_rows, active_cols)
    # Trust region: no log-scaling moves by more than _NEWTON_MAX_MOVE. With tiny tau the inactive rows / columns can
    # carry almost no mass, the reduced system is then nearly singular and its raw step is huge.
    largest = torch.maximum(torch.maximum(du.abs().amax(-1), dv.abs().amax(-1)), dw.abs())
    shrink = (_NEWTON_MAX_MOVE / largest).clamp(max=1.0)
    du, dv, dw = du * shrink[:, None], dv * shrink[:, None], dw * shrink

    # All step lengths at once, as a (B, S, ...) batch of candidates: one kernel product each way for all of them.
    lengths = torch.tensor(_NEWTON_STEPS, dtype=u.dtype, device=u.device)[None, :]
    cu = torch.minimum(u[:, None] + lengths[..., None] * du[:, None], ub_u[:, None])
    cv = torch.minimum(v[:, None] + lengths[..., None] * dv[:, None], ub_v[:, None])
    cw = w[:, None] + lengths * dw[:, None]
    eu, ev, ew = cu.exp(), cv.exp(), cw.exp()[..., None]
    c_ky = torch.bmm(kernel, ev.mT).mT  # (B, S, N_V)
    c_rows, c_cols = ew * eu * c_ky, ew * ev * torch.bmm(eu, kernel)
    a_, b_, m_ = a[:, None], b[:, None], m[:, None]

    def objective(u: Tensor, v: Tensor, w: Tensor, total: Tensor) -> Tensor:
        linear = torch.where(a_ > 0, a_ * u, 0.0).sum(-1) + torch.where(b_ > 0, b_ * v, 0.0).sum(-1)
        return total - linear - m_ * w

    def residual(u: Tensor, v: Tensor, rows: Tensor, cols: Tensor) -> Tensor:  # as _residual, in float64
        dr, dc = rows - a_, cols - b_
        r = torch.where(u < ub_u[:, None], dr.abs(), dr.clamp_min(0)).sum(-1)
        col = torch.where(v < ub_v[:, None], dc.abs(), dc.clamp_min(0)).sum(-1)
        return (r + col + (rows.sum(-1) - m_).abs()) / m_

    now = objective(u[:, None], v[:, None], w[:, None], rows.sum(-1, keepdim=True))
    now_res = residual(u[:, None], v[:, None], rows[:, None], cols[:, None])
    value = objective(cu, cv, cw, c_rows.sum(-1))
    # Near the solution phi changes by less than its rounding error: there a step that keeps phi within rounding
    # and lowers the residual counts as progress.
    slack = 1e-12 * (now.abs() + 1)
    lower = (value < now) | ((value <= now + slack) & (residual(cu, cv, c_rows, c_cols) < now_res))
    ok = solved[:, None] & torch.isfinite(value) & lower
    accepted = ok.any(-1)
    pick = ok.float().argmax(-1)  # the first acceptable, i.e. the longest acceptable step
    rows_b = torch.arange(u.shape[0], device=u.device)
    new_u, new_v, new_w, new_ky = cu[rows_b, pick], cv[rows_b, pick], cw[rows_b, pick], c_ky[rows_b, pick]
    # Rescale to the exact total mass, as a Bregman step ends (the plan moves by a factor 1 +- residual).
    new_w = new_w + torch.log(m / (new_w.exp() * (new_u.exp() * new_ky).sum(-1)))
    ktx = torch.bmm(new_u.exp()[:, None], kernel)[:, 0]
    stepped = domain.from_log(st, new_u, new_v, new_w, new_ky, ktx)
    keep = {k: accepted.view(-1, *[1] * (t.ndim - 1)) for k, t in st.items()}
    return {k: torch.where(keep[k], stepped[k], t) for k, t in st.items()}, accepted


def _newton_direction(
    plan: Tensor,
    rows: Tensor,
    cols: Tensor,
    a: Tensor,
    b: Tensor,
    m: Tensor,
    active_rows: Tensor,
    active_cols: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Newton direction (du, dv, dw) for the equations rows = a (active rows), cols = b (active cols), total = m.

    The Jacobian is the Hessian of sum T: [[diag(r), T, r], [T^T, diag(c), c], [r^T, c^T, m]] on the active
    entries. The row block is diagonal, so it is eliminated and the (N_L + 1)-square Schur complement, positive
    definite once some row and some column are inactive (always so at a mass < 1 solution), is solved by Cholesky.
    Inactive entries get a unit diagonal and a zero right-hand side, i.e. no move. Also returns solved: finite.
    """
    n_l = cols.shape[-1]
    fr, fc = active_rows.to(plan.dtype), active_cols.to(plan.dtype)
    total = rows.sum(-1)
    f_rows = (rows - a) * fr
    f_rest = torch.cat([(cols - b) * fc, (total - m)[:, None]], -1)
    diag_rows = torch.where(active_rows, rows, 1.0)
    coupling = torch.cat([plan * fr[:, :, None] * fc[:, None, :], (rows * fr)[:, :, None]], -1)
    scaled = coupling / diag_rows[:, :, None]
    border = cols * fc
    block = torch.diag_embed(torch.cat([torch.where(active_cols, cols, 1.0), total[:, None]], -1))
    block[:, :n_l, n_l] = border
    block[:, n_l, :n_l] = border
    schur = block - coupling.mT @ scaled
    schur = schur + _NEWTON_RIDGE * torch.diag_embed(schur.diagonal(dim1=-2, dim2=-1))
    rhs = f_rest - (scaled.mT @ f_rows[:, :, None])[..., 0]
    chol, info = torch.linalg.cholesky_ex(schur)
    d_rest = torch.cholesky_solve(rhs[:, :, None], chol)[..., 0]
    d_rows = (f_rows - (coupling @ d_rest[:, :, None])[..., 0]) / diag_rows
    solved = (info == 0) & torch.isfinite(d_rest).all(-1) & torch.isfinite(d_rows).all(-1)
    return -d_rows, -d_rest[:, :n_l], -d_rest[:, n_l], solved


# ---------------------------------------------------------------------------------------------------- driver


def _solve(
    domain: _ScalingDomain | _LogDomain,
    max_iter: int,
    tol: float,
    accelerate: bool,
    compile: bool,
    start: State | None = None,
    with_plan: bool = True,
) -> tuple[_Solved, State]:
    """Iterate until each problem's residual is <= tol (or max_iter), recording each problem when it first gets there.

    Finished problems keep iterating, unrecorded, until the working set can shrink by a quarter at once: a copy of
    the kernels per finishing problem would cost more than the spare iterations. A problem's iterates depend only
    on itself, so its result does not depend on what else is in the batch. ``start``: a state to begin from (checked
    before any iteration). Returns the results (without plan and entropy unless ``with_plan``) and the final state.
    """
    const = domain.const
    batch = const["a"].shape[0]
    device = const["a"].device
    advance = _compiled_advance() if compile else _advance
    st = domain.init() if start is None else start
    idx = torch.arange(batch, device=device)  # batch index of each problem in the working set
    pending = torch.ones(batch, dtype=torch.bool, device=device)  # not yet recorded, per working problem
    work = dict(const)
    partial = const["m"].flatten() < 1  # acceleration is for partial problems (mass 1 runs plain Sinkhorn)
    if accelerate and _OVERRELAX != 1:
        overshoot = torch.where(const["m"] < 1, _OVERRELAX - 1, 0.0).to(const["m"].dtype)
        work["relax_x"] = torch.where(const["a"] > 0, overshoot, 0.0)
        work["relax_y"] = torch.where(const["b"] > 0, overshoot, 0.0)
    newton_steps = torch.zeros(batch, dtype=torch.long, device=device)
    last_res = torch.full((batch,), math.inf, dtype=const["a"].dtype, device=device)
    # (batch ids, n_iter, residual, newton steps, state) of recorded problems
    found: list[tuple[Tensor, Tensor, Tensor, Tensor, State]] = []
    it = 0
    check_start = start is not None
    while it < max_iter:
        if check_start:  # a given start may already be converged: check it before iterating
            check_start = False
            res = _residual(domain.marginals, st, work)
        else:
            n = min(_CHECK_EVERY, max_iter - it)
            run = (
                advance if n == _CHECK_EVERY else _advance
            )  # a short last chunk would only add a compilation
            st, res = run(domain.step, domain.absorb, domain.marginals, st, work, n)
            it += n
        if accelerate:
            open_ = pending & partial & (res > tol)
            st, res, newton_steps = _accelerate(domain, st, work, res, last_res, it, open_, newton_steps)
            last_res = res
        done = pending & (res <= tol) if it < max_iter else pending
        if not bool(done.any()):
            continue
        fin = done.nonzero()[:, 0]
        found.append(
            (
                idx[fin],
                torch.full_like(fin, it),
                res[fin].detach(),
                newton_steps[fin],
                {k: v[fin] for k, v in st.items()},
            )
        )
        pending = pending & ~done
        left = int(pending.sum())
        if left == 0:
            break
        if left <= 0.75 * pending.numel():
            keep = pending.nonzero()[:, 0]
            idx, pending, partial = idx[keep], pending[keep], partial[keep]
            newton_steps, last_res = newton_steps[keep], last_res[keep]
            st = {k: v[keep] for k, v in st.items()}
            work = {k: v[keep] for k, v in work.items()}
    order = torch.cat([f[0] for f in found])
    final = {k: _scatter(order, [f[4][k] for f in found]) for k in found[0][4]}
    plan = domain.plan(final, const) if with_plan else const["a"].new_empty(0)
    neg_entropy = domain.neg_entropy(final, const, plan) if with_plan else const["a"].new_empty(0)
    solved = _Solved(
        plan,
        _scatter(order, [f[1] for f in found]),
        _scatter(order, [f[2] for f in found]),
        _scatter(order, [f[3] for f in found]),
        neg_entropy,
    )
    return solved, final


def _accelerate(
    domain: _ScalingDomain | _LogDomain,
    st: State,
    work: State,
    res: Tensor,
    last_res: Tensor,
    it: int,
    open_: Tensor,
    newton_steps: Tensor,
) -> tuple[State, Tensor, Tensor]:
    """At a check: stop over-relaxing problems whose residual rose; from _NEWTON_AFTER on, plain steps only and a
    Newton step for every open partial problem. Updates ``work`` in place; returns state, residual, step counts."""
    if it >= _NEWTON_AFTER:
        work.pop("relax_x", None)
        work.pop("relax_y", None)
        return _newton_open(domain, st, work, res, open_, newton_steps)
    if "relax_x" in work:
        rose = (res > last_res)[:, None, None]
        work["relax_x"] = torch.where(rose, 0.0, work["relax_x"])
        work["relax_y"] = torch.where(rose, 0.0, work["relax_y"])
    return st, res, newton_steps


def _newton_open(
    domain: _ScalingDomain | _LogDomain, st: State, c: State, res: Tensor, open_: Tensor, newton_steps: Tensor
) -> tuple[State, Tensor, Tensor]:
    """A Newton step for the problems in ``open_`` (the rest untouched); returns state, residual, step counts."""
    if not bool(open_.any()):
        return st, res, newton_steps
    sel = open_.nonzero()[:, 0]
    sub_c = {k: v[sel] for k, v in c.items()}
    stepped, accepted = _newton(domain, {k: v[sel] for k, v in st.items()}, sub_c)
    st = {k: v.index_copy(0, sel, stepped[k]) for k, v in st.items()}
    res = res.index_copy(0, sel, _residual(domain.marginals, stepped, sub_c).to(res.dtype))
    return st, res, newton_steps.index_add(0, sel, accepted.long())


def _scatter(order: Tensor, parts: list[Tensor]) -> Tensor:
    """Concatenate ``parts`` and put row i at batch position ``order[i]``."""
    values = torch.cat(parts)
    return values.new_zeros(values.shape).index_copy(0, order, values)
