"""Safeguarded Newton steps on the dual of the entropic partial-OT problem: what ends the slow tail of the Bregman
iteration (see :func:`peft_video.alignment.solver.partial_ot`, ``accelerate``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._domains import State, _LogDomain, _optimality_residual, _ScalingDomain

# Step lengths tried, per problem: the longest that lowers the dual objective is kept.
_NEWTON_STEPS = (1.0, 0.5, 0.25, 0.125)
# Trust region: the largest change of any log-scaling in one Newton step.
_NEWTON_MAX_MOVE = 2.0
# Relative diagonal ridge on the reduced Newton system (keeps Cholesky defined near singular).
_NEWTON_RIDGE = 1e-9


def _newton(domain: _ScalingDomain | _LogDomain, st: State, c: State) -> tuple[State, Tensor]:
    """One safeguarded Newton step per problem on the dual of the partial problem; returns the state and accepted.

    In log-scalings (u, v, w) = (log x, log y, log s), T = e^w diag(e^u) K diag(e^v) and the dual objective to
    minimise is ``phi = sum T - a.u - b.v - m w`` subject to ``u <= log ub``, ``v <= log ub``: its gradient is the
    marginal violation. Newton runs on the rows and columns whose bound is active (u < bound, or a row sum above a)
    with the others held at their bound, then clips to the bound; of the step lengths 1, 1/2, 1/4, 1/8 the first that
    lowers phi (or, once phi is flat to rounding, the residual) is kept, then s is rescaled to the exact total mass;
    a problem with none keeps its state. float64 throughout.
    """
    kernel, u, v, w, ub_u, ub_v = domain.log_view(st, c)
    a, b, m = c["a"][:, 0].double(), c["b"][:, 0].double(), c["m"][:, 0, 0].double()
    real_rows, real_cols = a > 0, b > 0
    row_scale = w.exp()[:, None, None] * u.exp()[:, :, None]
    plan = torch.mul(row_scale, kernel).mul_(v.exp()[:, None, :])  # one full-size allocation
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
    c_rows = ew * eu * c_ky
    a_, b_, m_ = a[:, None], b[:, None], m[:, None]

    def objective(u: Tensor, v: Tensor, w: Tensor, total: Tensor) -> Tensor:
        linear = torch.where(a_ > 0, a_ * u, 0.0).sum(-1) + torch.where(b_ > 0, b_ * v, 0.0).sum(-1)
        return total - linear - m_ * w

    def residual(
        u: Tensor, v: Tensor, rows: Tensor, cols: Tensor
    ) -> Tensor:  # the stopping test's, in float64
        return _optimality_residual(rows, cols, u < ub_u[:, None], v < ub_v[:, None], a_, b_, m_)

    now = objective(u[:, None], v[:, None], w[:, None], rows.sum(-1, keepdim=True))
    value = objective(cu, cv, cw, c_rows.sum(-1))
    # Near the solution phi changes by less than its rounding error: there a step that keeps phi within rounding
    # and lowers the residual counts as progress (evaluated only where some candidate is that flat).
    lower = value < now
    flat = (value <= now + 1e-12 * (now.abs() + 1)) & ~lower
    if bool(flat.any()):
        c_cols = ew * ev * torch.bmm(eu, kernel)
        now_res = residual(u[:, None], v[:, None], rows[:, None], cols[:, None])
        lower = lower | (flat & (residual(cu, cv, c_rows, c_cols) < now_res))
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
    coupling = plan.new_empty(*plan.shape[:-1], n_l + 1)  # [T, r] on active rows and columns, filled in place
    torch.mul(plan, fr[:, :, None], out=coupling[..., :n_l]).mul_(fc[:, None, :])
    torch.mul(rows, fr, out=coupling[..., n_l])
    scaled = coupling / diag_rows[:, :, None]
    border = cols * fc
    block = torch.diag_embed(torch.cat([torch.where(active_cols, cols, 1.0), total[:, None]], -1))
    block[:, :n_l, n_l] = border
    block[:, n_l, :n_l] = border
    schur = block - coupling.mT @ scaled
    schur = schur + _NEWTON_RIDGE * torch.diag_embed(schur.diagonal(dim1=-2, dim2=-1))
    # Matrix-vector products as row vector times matrix: on CPU several times faster than matrix times column.
    rhs = f_rest - (f_rows[:, None, :] @ scaled)[:, 0]
    chol, info = torch.linalg.cholesky_ex(schur)
    d_rest = torch.cholesky_solve(rhs[:, :, None], chol)[..., 0]
    d_rows = (f_rows - (d_rest[:, None, :] @ coupling.mT)[:, 0]) / diag_rows
    solved = (info == 0) & torch.isfinite(d_rest).all(-1) & torch.isfinite(d_rows).all(-1)
    return -d_rows, -d_rest[:, :n_l], -d_rest[:, n_l], solved
