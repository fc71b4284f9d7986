"""PVLALoss: cosine cost, plan-weighted cost over batch and layers, masks, gradients, Table 9 distances, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from peft_video.alignment import PVLALoss, cosine_cost, partial_ot


def _reps(batch: int = 3, n_v: int = 9, n_l: int = 5, d: int = 16, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(batch, 4, d, generator=g, dtype=dtype)
    video = centres[:, torch.arange(n_v) % 4] + 0.3 * torch.randn(batch, n_v, d, generator=g, dtype=dtype)
    text = centres[:, torch.arange(n_l) % 2] + 0.3 * torch.randn(batch, n_l, d, generator=g, dtype=dtype)
    return video, text


def test_cosine_cost_matches_definition() -> None:
    video, text = _reps()
    cost = cosine_cost(video, text)
    i, j = 4, 3
    expected = 1 - (video[1, i] @ text[1, j]) / (video[1, i].norm() * text[1, j].norm())
    torch.testing.assert_close(cost[1, i, j], expected)
    assert cost.shape == (3, 9, 5) and cost.min() >= 0 and cost.max() <= 2


def test_loss_is_batch_mean_of_plan_weighted_cost() -> None:
    video, text = _reps()
    loss = PVLALoss(mass=0.5, tau=0.05)(video, text)
    res = partial_ot(cosine_cost(video, text), mass=0.5, tau=0.05)
    torch.testing.assert_close(loss, res.cost.mean())
    torch.testing.assert_close(loss, (res.plan * cosine_cost(video, text)).sum((-2, -1)).mean())


def test_layers_are_averaged_and_stacking_is_equivalent() -> None:
    layers = [_reps(seed=s) for s in range(3)]
    videos, texts = [v for v, _ in layers], [t for _, t in layers]
    loss = PVLALoss()
    per_layer = torch.stack([loss(v, t) for v, t in layers])
    torch.testing.assert_close(loss(videos, texts), per_layer.mean())
    torch.testing.assert_close(loss(torch.stack(videos), torch.stack(texts)), per_layer.mean())


def test_masks_equal_unpadded_samples() -> None:
    video, text = _reps(batch=2)
    vm = torch.tensor([[1] * 6 + [0] * 3, [1] * 9])
    tm = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    padded_v, padded_t = video.clone(), text.clone()
    padded_v[0, 6:] = 0.0  # zero padding vectors: their cosine would be undefined, masks keep them out
    padded_t[1, 3:] = 0.0
    loss = PVLALoss(tol=1e-10, max_iter=20000)
    got = loss(padded_v, padded_t, vm, tm)
    one = loss(video[:1, :6], text[:1])
    two = loss(video[1:], text[1:, :3])
    torch.testing.assert_close(got, (one + two) / 2)


def test_mass_one_is_vla_and_cost_grows_with_mass() -> None:
    video, text = _reps()
    losses = [PVLALoss(mass=m, tol=1e-9, max_iter=20000)(video, text) for m in (0.1, 0.5, 0.9, 1.0)]
    assert all(a < b for a, b in zip(losses, losses[1:], strict=False))
    vla = partial_ot(cosine_cost(video, text), mass=1.0, tau=0.05, tol=1e-9, max_iter=20000)
    torch.testing.assert_close(losses[-1], vla.cost.mean())
    torch.testing.assert_close(vla.plan.sum(-1), torch.full((3, 9), 1 / 9, dtype=torch.float64))


def test_gradient_is_plan_weighted_cosine_gradient() -> None:
    video, text = _reps()
    video.requires_grad_(True)
    text.requires_grad_(True)
    loss_fn = PVLALoss()
    loss = loss_fn(video, text)
    gv, gt = torch.autograd.grad(loss, (video, text))
    plan = loss_fn.last_result.plan.detach()
    ref = (plan * cosine_cost(video, text)).sum((-2, -1)).mean()
    rv, rt = torch.autograd.grad(ref, (video, text))
    torch.testing.assert_close(gv, rv)
    torch.testing.assert_close(gt, rt)
    assert gv.abs().sum() > 0 and gt.abs().sum() > 0


def test_optimising_representations_lowers_the_loss() -> None:
    video, text = _reps(dtype=torch.float32)
    video.requires_grad_(True)
    opt = torch.optim.Adam([video], lr=0.05)
    loss_fn = PVLALoss()
    values = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(video, text)
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.5 * values[0] and all(b < a for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_representations(dtype: torch.dtype) -> None:
    video, text = _reps(dtype=torch.float32)
    loss_fn = PVLALoss()
    low = loss_fn(video.to(dtype), text.to(dtype))
    assert low.dtype == torch.float32 and torch.isfinite(low)
    torch.testing.assert_close(low, loss_fn(video, text), atol=2e-2, rtol=0)


def test_under_autocast_the_cost_is_float32() -> None:
    video, text = _reps(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cosine_cost(video, text).dtype == torch.float32
        loss = PVLALoss()(video, text)
    torch.testing.assert_close(loss, PVLALoss()(video, text))


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_pooled_distances_of_table_9(kind: str, metric: str) -> None:
    video, text = _reps(batch=2)
    vm = torch.tensor([[True] * 6 + [False] * 3, [True] * 9])
    got = PVLALoss(distance=f"{kind}_{metric}")(video, text, video_mask=vm)
    values = []
    for i, n in enumerate((6, 9)):
        v, t = video[i, :n], text[i]
        pv = v.mean(0) if kind == "avg" else v.amax(0)
        pt = t.mean(0) if kind == "avg" else t.amax(0)
        values.append(1 - F.cosine_similarity(pv, pt, dim=0) if metric == "cosine" else (pv - pt).norm())
    torch.testing.assert_close(got, torch.stack(values).mean())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda f: f(torch.rand(2, 5, 8), torch.rand(3, 4, 8)),
            r"video batch 2 and text batch 3 must both equal 2",
        ),
        (lambda f: f(torch.rand(2, 5, 8), torch.rand(2, 4, 6)), r"video feature dim 8 != text feature dim 6"),
        (
            lambda f: f([torch.rand(2, 5, 8)] * 2, [torch.rand(2, 4, 8)]),
            r"got 2 video layers but 1 text layers",
        ),
        (lambda f: f(torch.rand(5, 8), torch.rand(2, 4, 8)), r"`video` must be \(B, N, D\)"),
        (
            lambda f: f(torch.rand(2, 5, 8), torch.rand(2, 4, 8), torch.ones(2, 4, dtype=torch.bool)),
            r"`video_mask` must be a \(B, N\) = \(2, 5\) tensor",
        ),
        (
            lambda f: f(
                torch.rand(2, 5, 8), torch.rand(2, 4, 8), None, torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
            ),
            r"`col_mask` masks every entry of problem 1",
        ),
    ],
)
def test_bad_input_raises_clearly(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(PVLALoss())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mass": 0.0}, r"`mass` must be a float in \(0, 1\].*0\.0"),
        ({"mass": 2}, r"`mass` must be a float in \(0, 1\].*2"),
        ({"tau": 0}, r"`tau` must be a finite number > 0.*0"),
        ({"distance": "wasserstein"}, r"`distance` must be one of .*'wasserstein'"),
    ],
)
def test_bad_settings_raise_clearly(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PVLALoss(**kwargs)
