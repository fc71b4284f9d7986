"""The partial-OT iteration's two state representations (scaling and log domain): one Bregman step each, their
marginals, plans and the plans' ``sum T log(T / K)``, and the optimality residual every stopping test uses."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# Largest (cost range / tau) for which the scaling form stays inside the dtype's exponent range: the iterates reach
# about exp(+-range / tau) and K y multiplies two such factors (float32 underflows near exp(-87), float64 exp(-708)).
_SCALING_LIMIT = {torch.float32: 40.0, torch.float64: 300.0}
# exp(-floor) is far below the dtype's epsilon, so clamping log-sum-exp terms there leaves the sum unchanged.
_LSE_FLOOR = {torch.float32: 50.0, torch.float64: 100.0}
# Stands in for log(0) in the log domain: finite, so masked entries never turn into inf - inf = nan.
_LOG_ZERO = -1e30


def _where(valid: Tensor | None, x: Tensor, fill: float) -> Tensor:
    """``x`` where ``valid`` (None: everywhere), else ``fill``."""
    return x if valid is None else torch.where(valid, x, fill)


def _exponent(cost: Tensor, lo: Tensor, valid: Tensor | None, tau: float, fill: float) -> Tensor:
    """``(lo - C) / tau`` on valid entries and ``fill`` elsewhere, as one new tensor (one pass over C, the mask filled
    in place, unless autograd records it): each extra (B, N_V, N_L) pass costs about as much as an iteration on CPU."""
    exponent = torch.add((lo / tau)[:, None, None], cost, alpha=-1 / tau)  # lo / tau - C / tau, one pass
    if cost.requires_grad and torch.is_grad_enabled():
        # Out of place for autograd; where() gives masked entries (which may hold nan) a zero gradient.
        return _where(valid, exponent, fill)
    return exponent if valid is None else exponent.masked_fill_(~valid, fill)


# State and constants of the iteration. Vectors are kept as (B, 1, n) and scalars as (B, 1, 1) so that every
# matrix-vector product is a plain bmm and no view is taken inside the loop (each costs dispatch time on CPU).
# With acceleration the constants also hold ``relax_x`` / ``relax_y``: (B, 1, n) / (B, 1, p) overshoot omega - 1 of
# each entry (0 on masked rows / columns and, once its residual has risen, on the whole problem), and the scaling
# domain's ``hold_x`` / ``hold_y`` = 1 - overshoot.
State = dict[str, Tensor]
Step = Callable[[State, State], State]
Marginals = Callable[[State, State], tuple[Tensor, Tensor, Tensor, Tensor]]
# (kernel, log x, log y, log s, log upper bounds of x and y), in the state's dtype, per problem: what a Newton step
# works on.
LogView = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


class _ScalingDomain:
    """State (x, y, s) with T = s diag(x) K diag(y); x and y are bounded by ``ubx`` / ``uby``: 1 for partial
    problems, inf for mass 1, stored at the vectors' full shape (a (B, 1, 1) operand would make each minimum a
    broadcasting op, ~50% slower per call on CPU).

    Masked entries keep K = 1 but get zero weight, so x = 0 on masked rows and y = 0 on masked columns.
    """

    def __init__(self, kernel: Tensor, a: Tensor, b: Tensor, m: Tensor) -> None:
        """``kernel``: K = exp((lo - C) / tau) from :func:`_exponent` (1 on masked entries)."""
        ub = torch.where(m < 1, 1.0, math.inf).to(m.dtype)[:, None, None]
        a, b = a[:, None], b[:, None]
        self.const: State = _fresh(
            {
                "k": kernel,
                "a": a,
                "b": b,
                "m": m[:, None, None],
                "ubx": ub.expand_as(a),
                "uby": ub.expand_as(b),
            }
        )

    @staticmethod
    def kernel(exponent: Tensor) -> Tensor:
        """K from :func:`_exponent`'s output, exponentiated in place unless autograd records it."""
        return exponent.exp() if exponent.requires_grad else exponent.exp_()

    def init(self) -> State:
        c = self.const
        k = c["k"]
        ky = k.sum(-1).unsqueeze(1).clone()  # (B, 1, N_V), not a view: torch.compile guards on views
        return {
            "x": torch.ones_like(c["a"]),
            "y": torch.ones_like(c["b"]),
            "s": c["m"] / ky.sum(-1, keepdim=True),
            "ky": ky,
            "ktx": torch.zeros_like(c["b"]),  # overwritten by the first step before anything reads it
        }

    @staticmethod
    def step(st: State, c: State) -> State:
        # Row-vector-times-matrix products: on CPU, bmm is several times faster in this form than as (K @ y).
        s = st["s"]
        if "relax_x" in c:
            x = _relax_scaling(
                c["a"] / (s * st["ky"]), _nonzero(st["x"], c), c["relax_x"], c["hold_x"], c["ubx"]
            )
        else:
            x = torch.minimum(c["a"] / (s * st["ky"]), c["ubx"])
        ktx = torch.bmm(x, c["k"])
        if "relax_y" in c:
            y = _relax_scaling(c["b"] / (s * ktx), _nonzero(st["y"], c), c["relax_y"], c["hold_y"], c["uby"])
        else:
            y = torch.minimum(c["b"] / (s * ktx), c["uby"])
        s = c["m"] / torch.bmm(ktx, y.mT)
        # y K^T on the transposed view: a contiguous copy of K^T is ~15% faster per float32 product, but building it
        # and copying it at each compaction cost more than that saves over a solve's few dozen iterations.
        ky = torch.bmm(y, c["k"].mT)
        return {"x": x, "y": y, "s": s, "ky": ky, "ktx": ktx}

    @staticmethod
    def absorb(st: State) -> State:
        return st

    @staticmethod
    def marginals(st: State, c: State) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Row sums, column sums, and each scaling's gap to its bound (< 0: the bound is active, its dual > 0)."""
        s = st["s"]
        return s * st["x"] * st["ky"], s * st["y"] * st["ktx"], st["x"] - c["ubx"], st["y"] - c["uby"]

    @staticmethod
    def plan(st: State, c: State) -> Tensor:
        plan = st["s"] * st["x"].mT * c["k"]
        return plan * st["y"] if plan.requires_grad else plan.mul_(st["y"])  # one (B, N_V, N_L) allocation

    @staticmethod
    def log_ratio(st: State, c: State, plan: Tensor) -> Tensor:
        """``sum T log(T / K)`` from log T - log K = log s + log x_i + log y_j: no pass over the plan (0 log 0 = 0 on
        masked rows and columns)."""
        rows, cols = st["s"] * st["x"] * st["ky"], st["s"] * st["y"] * st["ktx"]
        scalings = rows.sum(-1) * st["s"][..., 0].log() + _xlogy(rows, st["x"]).sum(-1)
        return (scalings + _xlogy(cols, st["y"]).sum(-1))[:, 0]

    @staticmethod
    def log_view(st: State, c: State) -> LogView:
        return (
            c["k"],
            torch.log(st["x"][:, 0]),
            torch.log(st["y"][:, 0]),
            torch.log(st["s"][:, 0, 0]),
            torch.log(c["ubx"][:, 0]),
            torch.log(c["uby"][:, 0]),
        )

    @staticmethod
    def from_log(st: State, u: Tensor, v: Tensor, w: Tensor, ky: Tensor, ktx: Tensor) -> State:
        """The state for log-scalings (u, v, w) with kernel products ``ky = K e^v`` and ``ktx = e^u K``."""
        return {
            "x": u.exp()[:, None],
            "y": v.exp()[:, None],
            "s": w.exp()[:, None, None],
            "ky": ky[:, None],
            "ktx": ktx[:, None],
        }


def _nonzero(old: Tensor, c: State) -> Tensor:
    """``old`` with zeros (masked rows / columns) raised to the smallest normal number, so that ``new / old`` is 0
    there rather than nan; a no-op, skipped, when the batch has no zero weight (``zero_weights`` not in ``c``)."""
    return old.clamp_min(torch.finfo(old.dtype).tiny) if "zero_weights" in c else old


def _relax_scaling(new: Tensor, old: Tensor, overshoot: Tensor, hold: Tensor, ub: Tensor) -> Tensor:
    """Over-relaxed scaling ``min(ub, new (1 - w + w new / old))`` from the unclipped Bregman update ``new``, with
    ``w = omega - 1`` (0 = plain step) and ``hold = 1 - w``: to first order in log space ``old^(1 - omega)
    new^omega``, without a pow, and >= new (1 - w) > 0. Clipping ``new`` first would give the same result (with
    old <= ub, an update above ub stays above it), at one more pass. ``old`` comes through :func:`_nonzero`: it is 0
    only on zero-weight entries, where ``new`` is 0 too."""
    ratio = new / old
    return torch.minimum(new * torch.addcmul(hold, overshoot, ratio), ub)


class _LogDomain:
    """The same iteration on (log x, log y, log s), with log-sum-exp in place of the matrix-vector products.

    Every check the increments are absorbed into the log-kernel (``k += x + y + s``, bounds lowered by the same
    amount): the potentials reach about range / tau, and keeping them out of the plan's exponent avoids the
    cancellation that would otherwise cost float32 about eps * range / tau of relative accuracy.
    """

    def __init__(self, kernel: Tensor, a: Tensor, b: Tensor, m: Tensor) -> None:
        """``kernel``: log K = (lo - C) / tau from :func:`_exponent` (_LOG_ZERO on masked entries)."""
        self.log_kernel = kernel
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

    @staticmethod
    def kernel(exponent: Tensor) -> Tensor:
        """log K is :func:`_exponent`'s output itself."""
        return exponent

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
        return rows, cols, st["x"] - st["ubx"], st["y"] - st["uby"]

    @staticmethod
    def plan(st: State, c: State) -> Tensor:
        log_plan = st["s"] + st["x"].mT + st["k"]
        return torch.exp(log_plan + st["y"]) if log_plan.requires_grad else log_plan.add_(st["y"]).exp_()

    def log_ratio(self, st: State, c: State, plan: Tensor) -> Tensor:
        """``sum T log(T / K)`` from the log-plan (masked entries: T = 0 times a finite log-zero)."""
        return (plan * (st["s"] + st["x"].mT + (st["k"] - self.log_kernel) + st["y"])).sum((-2, -1))

    @staticmethod
    def log_view(st: State, c: State) -> LogView:
        # exp(k) is the plan's magnitude once increments are absorbed (entries <= 1); masked ones give exactly 0.
        return (
            torch.exp(st["k"]),
            st["x"][:, 0],
            st["y"][:, 0],
            st["s"][:, 0, 0],
            st["ubx"][:, 0],
            st["uby"][:, 0],
        )

    @staticmethod
    def from_log(st: State, u: Tensor, v: Tensor, w: Tensor, ky: Tensor, ktx: Tensor) -> State:
        return {
            "k": st["k"],
            "ubx": st["ubx"],
            "uby": st["uby"],
            "x": u[:, None],
            "y": v[:, None],
            "s": w[:, None, None],
            "ky": torch.log(ky).clamp_min(_LOG_ZERO)[:, None],
            "ktx": torch.log(ktx).clamp_min(_LOG_ZERO)[:, None],
        }


def _xlogy(weight: Tensor, x: Tensor) -> Tensor:
    """``weight * log(x)`` with 0 where ``x`` is 0 (then ``weight`` is 0 too); torch.xlogy is far slower on CPU."""
    return weight * torch.log(x).clamp_min(_LOG_ZERO)


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
    """The optimality residual (:func:`_optimality_residual`) of every problem in a state, flattened to (B,)."""
    rows, cols, row_gap, col_gap = marginals(st, c)
    return _optimality_residual(rows, cols, row_gap, col_gap, c["a"], c["b"], c["m"][..., 0]).flatten()


def _optimality_residual(
    rows: Tensor, cols: Tensor, row_gap: Tensor, col_gap: Tensor, a: Tensor, b: Tensor, m: Tensor
) -> Tensor:
    """Marginal violation, complementary slackness (|sum - bound| where the bound's dual is active, i.e. where the
    scaling's gap to its bound is < 0) and total-mass violation (zero after a Bregman step, not after a Newton step),
    over m; sums over the last dim, so ``m`` has the shape of the result.

    ``max(d, sign(gap) d)`` is |d| on active and max(d, 0) on inactive entries (gap <= 0 always): float arithmetic
    only, as comparisons and ``where`` on bool tensors cost several times more per call on CPU."""
    dr, dc = rows - a, cols - b
    r = torch.maximum(dr, dr * row_gap.sign()).sum(-1)
    col = torch.maximum(dc, dc * col_gap.sign()).sum(-1)
    return (r + col + (rows.sum(-1) - m).abs()) / m
