"""Safeguarded Newton steps on the dual of the entropic partial-OT problem: what ends the slow tail of the Bregman
iteration (see :func:`peft_video.alignment.solver.partial_ot`, ``accelerate``)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ._domains import _LOG_ZERO, State, _LogDomain, _optimality_residual, _ScalingDomain

# Step lengths tried, per problem: the longest that lowers the dual objective is kept.
_NEWTON_STEPS = (1.0, 0.5, 0.25, 0.125)
# Trust region: the largest change of any log-scaling in one Newton step.
_NEWTON_MAX_MOVE = 2.0
# Per working dtype: the relative diagonal ridge on the reduced Newton system (keeps Cholesky defined near singular),
# and the relative change of the dual objective below which it counts as flat to rounding.
_NEWTON_RIDGE = {torch.float32: 1e-6, torch.float64: 1e-9}
_NEWTON_FLAT = {torch.float32: 1e-6, torch.float64: 1e-12}


def _newton(
    domain: _ScalingDomain | _LogDomain, st: State, c: State, residual: Tensor
) -> tuple[State, Tensor]:
    """One safeguarded Newton step per problem on the dual of the partial problem; returns the state and accepted.
    ``residual``: each problem's optimality residual in ``st`` (:func:`_residual`, which the caller has at hand).

    In log-scalings (u, v, w) = (log x, log y, log s), T = e^w diag(e^u) K diag(e^v) and the dual objective to
    minimise is ``phi = sum T - a.u - b.v - m w`` subject to ``u <= log ub``, ``v <= log ub``: its gradient is the
    marginal violation. Newton runs on the rows and columns whose bound is active (u < bound, or a row sum above a)
    with the others held at their bound, then clips to the bound; of the step lengths 1, 1/2, 1/4, 1/8 the first that
    lowers phi (or, once phi is flat to rounding, the residual) is kept, then s is rescaled to the exact total mass;
    a problem with none keeps its state. The duals are handled as one vector z = [u, v, w] (and the weights as
    [a, b, m]): on CPU a Newton step costs mostly per-operation dispatch, so fewer, larger operations.

    It runs in the state's dtype. float32 suffices: a step is only a proposal that the objective (or residual) test
    accepts or rejects, so the direction's rounding error can slow a step, never corrupt the result. float64 on a
    float32 state would take a copy of the kernel and twice the memory traffic: on PVLA-shaped batches a call takes
    about twice as long, for the same accepted steps.
    """
    kernel, u, v, w, ub_u, ub_v = domain.log_view(st, c)
    n_v, n_l = u.shape[-1], v.shape[-1]
    a, b, m = c["a"][:, 0], c["b"][:, 0], c["m"][:, 0, 0]
    plan = domain.plan(st, c)
    rows, cols = plan.sum(-1), plan.sum(-2)
    total = rows.sum(-1)
    active_rows = ((u < ub_u) | (rows > a)) & (a > 0)
    active_cols = ((v < ub_v) | (cols > b)) & (b > 0)
    descent, solved = _newton_direction(plan, rows, cols, total, a, b, m, active_rows, active_cols)
    # Trust region: no log-scaling moves by more than _NEWTON_MAX_MOVE. With tiny tau the inactive rows / columns can
    # carry almost no mass, the reduced system is then nearly singular and its raw step is huge. A non-finite
    # direction gives non-finite candidates, which the objective test below rejects.
    scale = (-_NEWTON_MAX_MOVE / descent.abs().amax(-1)).clamp(min=-1.0)
    step = descent * scale[:, None]

    # All step lengths at once, as a (B, S, N_V + N_L + 1) batch of candidates. log(0) = -inf on zero-weight rows
    # and columns is raised to _LOG_ZERO (exp still 0) so that their zero weight times it is 0, not nan.
    z = torch.cat([u, v, w[:, None]], -1).clamp_min_(_LOG_ZERO)
    ub_z = torch.cat([ub_u, ub_v, torch.full_like(w[:, None], math.inf)], -1)
    weights = torch.cat([a, b, m[:, None]], -1)[:, :, None]
    cz = torch.minimum(torch.addcmul(z[:, None], _lengths(z.dtype, z.device), step[:, None]), ub_z[:, None])
    ez = cz.exp()
    c_ky = torch.bmm(ez[..., n_v : n_v + n_l], kernel.mT)  # (B, S, N_V): K e^v for every candidate
    c_rows = torch.mul(ez[..., :n_v], c_ky).mul_(ez[..., -1:])
    now = total - torch.bmm(z[:, None], weights)[:, 0, 0]
    value = c_rows.sum(-1) - torch.bmm(cz, weights)[..., 0]
    # Near the solution phi changes by less than its rounding error: there a step that keeps phi within rounding
    # and lowers the residual counts as progress (evaluated only where some candidate is that flat).
    lower = value < now[:, None]
    flat = (value <= torch.add(now, now.abs() + 1, alpha=_NEWTON_FLAT[now.dtype])[:, None]) & ~lower
    if bool(flat.any()):
        a_, b_, m_ = a[:, None], b[:, None], m[:, None]
        c_cols = torch.bmm(ez[..., :n_v], kernel).mul_(ez[..., n_v : n_v + n_l]).mul_(ez[..., -1:])
        c_res = _optimality_residual(
            c_rows,
            c_cols,
            cz[..., :n_v] - ub_u[:, None],
            cz[..., n_v : n_v + n_l] - ub_v[:, None],
            a_,
            b_,
            m_,
        )
        lower = lower | (flat & (c_res < residual[:, None].to(c_res.dtype)))
    ok = lower & torch.isfinite(value) & solved[:, None]
    accepted = ok.any(-1)
    pick = ok.float().argmax(-1)  # the first acceptable, i.e. the longest acceptable step
    batch = torch.arange(u.shape[0], device=u.device)
    new_z, new_ky, new_rows = cz[batch, pick], c_ky[batch, pick], c_rows[batch, pick]
    new_u, new_v, new_w = new_z[:, :n_v], new_z[:, n_v : n_v + n_l], new_z[:, -1]
    # Rescale to the exact total mass, as a Bregman step ends (the plan moves by a factor 1 +- residual).
    new_w = new_w + torch.log(m / new_rows.sum(-1))
    ktx = torch.bmm(ez[batch, pick, None, :n_v], kernel)[:, 0]
    stepped = domain.from_log(st, new_u, new_v, new_w, new_ky, ktx)
    if bool(accepted.all()):
        return stepped, accepted
    return {
        k: torch.where(accepted.view(-1, *[1] * (t.ndim - 1)), stepped[k], t) for k, t in st.items()
    }, accepted


@functools.cache
def _lengths(dtype: torch.dtype, device: torch.device) -> Tensor:
    """_NEWTON_STEPS as a (1, S, 1) tensor, made once per dtype and device."""
    return torch.tensor(_NEWTON_STEPS, dtype=dtype, device=device)[None, :, None]


def _newton_direction(
    plan: Tensor,
    rows: Tensor,
    cols: Tensor,
    total: Tensor,
    a: Tensor,
    b: Tensor,
    m: Tensor,
    active_rows: Tensor,
    active_cols: Tensor,
) -> tuple[Tensor, Tensor]:
    """Newton direction for the equations rows = a (active rows), cols = b (active cols), total = m, as the descent
    ``-(du, dv, dw)`` in one (B, N_V + N_L + 1) tensor, and whether its Cholesky factorisation succeeded.

    The Jacobian is the Hessian of sum T: [[diag(r), T, r], [T^T, diag(c), c], [r^T, c^T, m]] on the active
    entries. The row block is diagonal, so it is eliminated and the (N_L + 1)-square Schur complement, positive
    definite once some row and some column are inactive (always so at a mass < 1 solution), is solved by Cholesky.
    Inactive entries get a unit diagonal and a zero right-hand side, i.e. no move.
    """
    n_l = cols.shape[-1]
    fr, fc = active_rows.to(plan.dtype), active_cols.to(plan.dtype)
    f_rows = (rows - a) * fr
    f_rest = torch.cat([(cols - b) * fc, (total - m)[:, None]], -1)
    diag_rows = torch.where(active_rows, rows, 1.0)
    coupling = plan.new_empty(*plan.shape[:-1], n_l + 1)  # [T, r] on active rows and columns, filled in place
    torch.mul(plan, fr[:, :, None], out=coupling[..., :n_l]).mul_(fc[:, None, :])
    torch.mul(rows, fr, out=coupling[..., n_l])
    scaled = coupling / diag_rows[:, :, None]
    border = cols * fc
    block = torch.diag_embed(torch.cat([torch.where(active_cols, cols, 1.0), total[:, None]], -1))
    block[:, :n_l, n_l] = border
    block[:, n_l, :n_l] = border
    schur = torch.baddbmm(block, coupling.mT, scaled, alpha=-1)
    schur.diagonal(dim1=-2, dim2=-1).mul_(1 + _NEWTON_RIDGE[schur.dtype])
    # Matrix-vector products as row vector times matrix: on CPU several times faster than matrix times column.
    rhs = torch.baddbmm(f_rest[:, None], f_rows[:, None], scaled, alpha=-1)[:, 0]
    chol, info = torch.linalg.cholesky_ex(schur)
    d_rest = torch.cholesky_solve(rhs[:, :, None], chol)[..., 0]
    d_rows = torch.baddbmm(f_rows[:, None], d_rest[:, None], coupling.mT, alpha=-1)[:, 0] / diag_rows
    return torch.cat([d_rows, d_rest], -1), info == 0
