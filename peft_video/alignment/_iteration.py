"""The partial-OT driver: iterate a batch of problems in chunks, test each problem's residual, record and drop the
finished ones, and (``accelerate``) over-relax early and take Newton steps late."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ._domains import Marginals, State, Step, _LogDomain, _residual, _ScalingDomain
from ._newton import _newton

# Convergence is tested every _CHECK_EVERY iterations (each test is a host sync on GPU); n_iter is a multiple of it.
_CHECK_EVERY = 10
# Accelerated iterations (``accelerate=True``). Over-relaxation: each scaling vector moves _OVERRELAX times its
# Bregman step (in log space), per problem until its residual rises between two checks, then plain steps. Newton: at
# every check from iteration _NEWTON_AFTER on, open partial problems get one safeguarded Newton step on the dual.
_OVERRELAX = 1.7
_NEWTON_AFTER = 50


class _Solved(NamedTuple):
    """Per-problem results of one solve, in the order of the problems it was given."""

    plan: Tensor
    n_iter: Tensor
    residual: Tensor
    n_newton: Tensor
    log_ratio: Tensor  # sum T log(T / K) of the plan, from the domain's state (the caller adds sum T log K)
    mass: Tensor  # sum T of the plan (non-finite if any entry is)

    def put(self, idx: Tensor, part: _Solved) -> _Solved:
        """These results with problems ``idx`` replaced by ``part``'s."""
        return _Solved(*(t.index_copy(0, idx, p) for t, p in zip(self, part, strict=True)))


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
        # Compares and where() cost several times a float op on CPU: the common case (every problem partial, no zero
        # weight) fills the overshoots directly.
        zero_weights = not bool(torch.minimum(const["a"].amin(), const["b"].amin()) > 0)
        if zero_weights or not bool(partial.all()):
            overshoot = torch.where(const["m"] < 1, _OVERRELAX - 1, 0.0).to(const["m"].dtype)
            rows = torch.where(const["a"] > 0, overshoot, 0.0)
            cols = torch.where(const["b"] > 0, overshoot, 0.0)
        else:
            rows, cols = (
                torch.full_like(const["a"], _OVERRELAX - 1),
                torch.full_like(const["b"], _OVERRELAX - 1),
            )
        _set_relaxation(work, rows, cols)
        if zero_weights:
            # Marks a batch with zero weights (masked rows / columns), where the relaxed step must guard its divisor.
            work["zero_weights"] = torch.ones_like(const["m"], dtype=torch.bool)
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
            st, res, newton_steps = _accelerate(
                domain, st, work, res, last_res, it, pending & partial, tol, newton_steps
            )
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
    log_ratio = domain.log_ratio(final, const, plan) if with_plan else const["a"].new_empty(0)
    mass = plan.sum((-2, -1)) if with_plan else const["a"].new_empty(0)
    solved = _Solved(
        plan,
        _scatter(order, [f[1] for f in found]),
        _scatter(order, [f[2] for f in found]),
        _scatter(order, [f[3] for f in found]),
        log_ratio,
        mass,
    )
    return solved, final


def _accelerate(
    domain: _ScalingDomain | _LogDomain,
    st: State,
    work: State,
    res: Tensor,
    last_res: Tensor,
    it: int,
    unrecorded: Tensor,
    tol: float,
    newton_steps: Tensor,
) -> tuple[State, Tensor, Tensor]:
    """At a check: stop over-relaxing problems whose residual rose; from _NEWTON_AFTER on, plain steps only and a
    Newton step for every open problem (``unrecorded``: not yet recorded and partial, residual above ``tol``).
    Updates ``work`` in place; returns state, residual, step counts."""
    if it >= _NEWTON_AFTER:
        for key in _RELAX_KEYS:
            work.pop(key, None)
        return _newton_open(domain, st, work, res, unrecorded & (res > tol), newton_steps)
    if "relax_x" not in work:
        return st, res, newton_steps
    rose = res > last_res
    if bool(rose.any()):  # rare: skipping the rewrite saves ~8 operations per check
        rose = rose[:, None, None]
        rows, cols = torch.where(rose, 0.0, work["relax_x"]), torch.where(rose, 0.0, work["relax_y"])
        _set_relaxation(work, rows, cols)
    return st, res, newton_steps


_RELAX_KEYS = ("relax_x", "relax_y", "hold_x", "hold_y")


def _set_relaxation(work: State, relax_x: Tensor, relax_y: Tensor) -> None:
    """Store the per-entry overshoots omega - 1 and their complements 1 - (omega - 1) in ``work``."""
    work.update(relax_x=relax_x, relax_y=relax_y, hold_x=1 - relax_x, hold_y=1 - relax_y)


def _newton_open(
    domain: _ScalingDomain | _LogDomain, st: State, c: State, res: Tensor, open_: Tensor, newton_steps: Tensor
) -> tuple[State, Tensor, Tensor]:
    """A Newton step for the problems in ``open_`` (the rest untouched); returns state, residual, step counts."""
    if not bool(open_.any()):
        return st, res, newton_steps
    if bool(open_.all()):  # no copies of the kernel for a full working set
        stepped, accepted = _newton(domain, st, c, res)
        res = _residual(domain.marginals, stepped, c).to(res.dtype)
        return stepped, res, newton_steps + accepted.long()
    sel = open_.nonzero()[:, 0]
    sub_c = {k: v[sel] for k, v in c.items()}
    stepped, accepted = _newton(domain, {k: v[sel] for k, v in st.items()}, sub_c, res[sel])
    st = {k: v.index_copy(0, sel, stepped[k]) for k, v in st.items()}
    res = res.index_copy(0, sel, _residual(domain.marginals, stepped, sub_c).to(res.dtype))
    return st, res, newton_steps.index_add(0, sel, accepted.long())


def _scatter(order: Tensor, parts: list[Tensor]) -> Tensor:
    """Concatenate ``parts`` and put row i at batch position ``order[i]``."""
    values = torch.cat(parts)
    return values.new_zeros(values.shape).index_copy(0, order, values)
