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
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

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
    n_iter: (...,) iterations used.
    residual: (...,) final optimality residual (marginal violation plus complementary slackness, over ``m``).
    log_domain: (...,) bool, solved in the log domain (small ``tau`` relative to the cost range).
    """

    plan: Tensor
    cost: Tensor
    reg_cost: Tensor
    converged: Tensor
    n_iter: Tensor
    residual: Tensor
    log_domain: Tensor


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
    residual (row and column marginal violation plus complementary slackness ``|rowsum - a|`` on rows whose dual
    is active, summed and divided by ``mass``) is at most ``tol``, checked every 10 iterations. In practice the
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
    ``compile=True`` runs the iterations through ``torch.compile`` (one compilation per process, seconds): about
    2x faster on CPU where per-operation dispatch dominates (small batches, the slowest problems' tail).
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
            plan, n_iter, residual, use_log = _solve_split(
                shifted, valid, a, b, m, tau, max_iter, tol, use_log, compile
            )
        plan = _where(valid, plan, 0.0)
        used = plan if differentiable else plan.detach()
        transport = (used * _where(valid, c_full, 0.0)).sum((-2, -1))
        reg = transport + tau * torch.xlogy(used, used).sum((-2, -1))

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
    compile: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Solve the scaling-domain and log-domain problems apart and put the results back in batch order.

    A scaling-domain plan that still left the float range is solved again in the log domain (a safety net: the
    range / tau rule is meant to prevent it). Returns plan, n_iter, residual and the final log-domain flags.
    """
    batch = shifted.shape[0]
    plan = shifted.new_zeros(shifted.shape)
    n_iter = torch.zeros(batch, dtype=torch.long, device=shifted.device)
    res = shifted.new_zeros(batch)
    for domain in (_ScalingDomain, _LogDomain):
        chosen = ~use_log if domain is _ScalingDomain else use_log
        if not bool(chosen.any()):
            continue
        idx = chosen.nonzero()[:, 0]
        whole = idx.numel() == batch
        sub_valid = None if valid is None or whole else valid[idx]
        sub = (shifted, valid, a, b, m) if whole else (shifted[idx], sub_valid, a[idx], b[idx], m[idx])
        p, n, r = _solve(domain(*sub, tau), max_iter, tol, compile)
        if domain is _ScalingDomain:
            bad = ~torch.isfinite(p).all(-1).all(-1)
            if bool(bad.any()):
                use_log = use_log.index_put((idx[bad],), torch.tensor(True, device=use_log.device))
        if whole:
            plan, n_iter, res = p, n, r
        else:
            plan, n_iter, res = (
                plan.index_copy(0, idx, p),
                n_iter.index_copy(0, idx, n),
                res.index_copy(0, idx, r),
            )
    return plan, n_iter, res, use_log


# State and constants of the iteration. Vectors are kept as (B, 1, n) and scalars as (B, 1, 1) so that every
# matrix-vector product is a plain bmm and no view is taken inside the loop (each costs dispatch time on CPU).
State = dict[str, Tensor]
Step = Callable[[State, State], State]
Marginals = Callable[[State, State], tuple[Tensor, Tensor, Tensor, Tensor]]


class _ScalingDomain:
    """State (x, y, s) with T = s diag(x) K diag(y); the bound ``ub`` is 1 for partial problems, inf for mass 1.

    Masked entries keep K = 1 but get zero weight, so x = 0 on masked rows and y = 0 on masked columns.
    """

    def __init__(
        self, shifted: Tensor, valid: Tensor | None, a: Tensor, b: Tensor, m: Tensor, tau: float
    ) -> None:
        k = torch.exp(shifted / -tau)
        ub = torch.where(m < 1, 1.0, math.inf).to(m.dtype)
        kt = k.mT.contiguous()  # K^T stored once: a transposed view costs a dispatch per iteration
        self.const: State = _fresh(
            {
                "k": k,
                "kt": kt,
                "a": a[:, None],
                "b": b[:, None],
                "m": m[:, None, None],
                "ub": ub[:, None, None],
            }
        )

    def init(self) -> State:
        c = self.const
        k = c["k"]
        return {
            "x": torch.ones_like(c["a"]),
            "y": torch.ones_like(c["b"]),
            "s": c["m"] / k.sum((-2, -1), keepdim=True),
            "ky": k.sum(-1).unsqueeze(1).clone(),  # no views in the state: torch.compile guards on them
            "ktx": k.sum(-2, keepdim=True),
        }

    @staticmethod
    def step(st: State, c: State) -> State:
        # Row-vector-times-matrix products: on CPU, bmm is several times faster in this form than as (K @ y).
        s = st["s"]
        x = torch.minimum(c["a"] / (s * st["ky"]), c["ub"])
        ktx = torch.bmm(x, c["k"])
        y = torch.minimum(c["b"] / (s * ktx), c["ub"])
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
        ktx = _logsumexp(st["k"] + x.mT, -2)
        y = torch.minimum(c["lb"] - s - ktx, st["uby"])
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
    """Marginal violation plus complementary slackness (|sum - bound| where the bound's dual is active), over m."""
    rows, cols, row_active, col_active = marginals(st, c)
    dr, dc = rows - c["a"], cols - c["b"]
    r = torch.where(row_active, dr.abs(), dr.clamp_min(0)).sum(-1, keepdim=True)
    col = torch.where(col_active, dc.abs(), dc.clamp_min(0)).sum(-1, keepdim=True)
    return ((r + col) / c["m"]).flatten()


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


def _solve(
    domain: _ScalingDomain | _LogDomain, max_iter: int, tol: float, compile: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Iterate until each problem's residual is <= tol (or max_iter), recording each problem when it first gets there.

    Finished problems keep iterating, unrecorded, until the working set can shrink by a quarter at once: a copy of
    the kernels per finishing problem would cost more than the spare iterations. A problem's iterates depend only
    on itself, so its result does not depend on what else is in the batch.
    """
    const = domain.const
    batch = const["a"].shape[0]
    device = const["a"].device
    advance = _compiled_advance() if compile else _advance
    st = domain.init()
    idx = torch.arange(batch, device=device)  # batch index of each problem in the working set
    pending = torch.ones(batch, dtype=torch.bool, device=device)  # not yet recorded, per working problem
    work = const
    found: list[
        tuple[Tensor, Tensor, Tensor, State]
    ] = []  # (batch ids, n_iter, residual, state) of recorded ones
    it = 0
    while it < max_iter:
        n = min(_CHECK_EVERY, max_iter - it)
        run = advance if n == _CHECK_EVERY else _advance  # a short last chunk would only add a compilation
        st, res = run(domain.step, domain.absorb, domain.marginals, st, work, n)
        it += n
        done = pending & (res <= tol) if it < max_iter else pending
        if not bool(done.any()):
            continue
        fin = done.nonzero()[:, 0]
        found.append(
            (idx[fin], torch.full_like(fin, it), res[fin].detach(), {k: v[fin] for k, v in st.items()})
        )
        pending = pending & ~done
        left = int(pending.sum())
        if left == 0:
            break
        if left <= 0.75 * pending.numel():
            keep = pending.nonzero()[:, 0]
            idx, pending = idx[keep], pending[keep]
            st = {k: v[keep] for k, v in st.items()}
            work = {k: v[keep] for k, v in work.items()}
    order = torch.cat([f[0] for f in found])
    final = {k: _scatter(order, [f[3][k] for f in found]) for k in found[0][3]}
    return (
        domain.plan(final, const),
        _scatter(order, [f[1] for f in found]),
        _scatter(order, [f[2] for f in found]),
    )


def _scatter(order: Tensor, parts: list[Tensor]) -> Tensor:
    """Concatenate ``parts`` and put row i at batch position ``order[i]``."""
    values = torch.cat(parts)
    return values.new_zeros(values.shape).index_copy(0, order, values)
