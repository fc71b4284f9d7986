"""The tensor math of RAP's asynchronous self-attention (eq. 5-7) against float64 references and exact identities."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from peft_video.conditioning import make_condition
from peft_video.tuners.rap.asa import axis_interpolation, plan_warp, select_patches, sentence_directions
from peft_video.video import flatten_frames, unflatten_frames


def reference_warp(x, index, frame_offset, patch_offset):
    """Eq. 7 by explicit loops in float64: selected patch n of frame t reads (t + delta_t, n + gamma_n),
    bilinearly, positions clamped to the grid."""
    video = unflatten_frames(x.double(), frame_offset.shape[0]).clone()
    source = video.clone()
    batch, frames, tokens, _ = video.shape
    patches = tokens - 1

    def sample(b, t_pos, n_pos):
        t_pos = min(max(t_pos, 0.0), frames - 1.0)
        n_pos = min(max(n_pos, 0.0), patches - 1.0)
        t0, n0 = int(t_pos), int(n_pos)
        t1, n1 = min(t0 + 1, frames - 1), min(n0 + 1, patches - 1)
        a, c = t_pos - t0, n_pos - n0
        at = lambda t, n: source[b, t, 1 + n]  # noqa: E731
        return (1 - a) * ((1 - c) * at(t0, n0) + c * at(t0, n1)) + a * ((1 - c) * at(t1, n0) + c * at(t1, n1))

    for b in range(batch):
        for t in range(frames):
            for n in index[b, t].tolist():
                video[b, t, 1 + n] = sample(b, t + float(frame_offset[t]), n + float(patch_offset[n]))
    return flatten_frames(video)


def random_selection(batch, frames, patches, top_k, generator):
    index = torch.stack(
        [torch.randperm(patches, generator=generator)[:top_k] for _ in range(batch * frames)]
    ).view(batch, frames, top_k)
    return index, torch.ones(batch, frames, top_k, dtype=torch.float64)


@settings(max_examples=30, deadline=None)
@given(
    frames=st.integers(1, 5),
    patches=st.integers(1, 7),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.0, 4.0),
)
def test_warp_matches_loop_reference(frames, patches, seed, scale):
    generator = torch.Generator().manual_seed(seed)
    batch, dim, top_k = 2, 3, min(2, patches)
    x = torch.randn(batch * frames, patches + 1, dim, generator=generator, dtype=torch.float64)
    frame_offset = scale * torch.randn(frames, generator=generator, dtype=torch.float64)
    patch_offset = scale * torch.randn(patches, generator=generator, dtype=torch.float64)
    index, gate = random_selection(batch, frames, patches, top_k, generator)
    plan = plan_warp(index, gate, frame_offset, patch_offset)
    torch.testing.assert_close(plan.apply(x), reference_warp(x, index, frame_offset, patch_offset))


def test_zero_offsets_are_bitwise_identity_and_unselected_tokens_untouched():
    generator = torch.Generator().manual_seed(0)
    frames, patches = 4, 9
    x = torch.randn(2 * frames, patches + 1, 5, generator=generator)
    index, gate = random_selection(2, frames, patches, 3, generator)
    zero = plan_warp(index, gate.float(), torch.zeros(frames), torch.zeros(patches))
    assert torch.equal(zero.apply(x), x)

    moved = plan_warp(index, gate.float(), torch.full((frames,), 1.5), torch.full((patches,), -2.25))
    out = unflatten_frames(moved.apply(x), frames)
    video = unflatten_frames(x, frames)
    selected = torch.zeros(2, frames, patches + 1, dtype=torch.bool)
    selected.scatter_(2, index + 1, True)
    assert torch.equal(out[~selected], video[~selected])  # [CLS] and unselected patches keep their own
    assert not torch.equal(out[selected], video[selected])


def test_warp_commutes_with_affine_maps():
    """Warping inputs then projecting == projecting then warping (weights sum to 1): why open_clip's pre-projection
    warp is eq. 7 exactly, like HF's post-projection one."""
    generator = torch.Generator().manual_seed(1)
    frames, patches, dim = 3, 6, 4
    x = torch.randn(2 * frames, patches + 1, dim, generator=generator, dtype=torch.float64)
    weight = torch.randn(7, dim, generator=generator, dtype=torch.float64)
    bias = torch.randn(7, generator=generator, dtype=torch.float64)
    index, gate = random_selection(2, frames, patches, 2, generator)
    plan = plan_warp(
        index, gate, 0.7 * torch.randn(frames, dtype=torch.float64), torch.randn(patches).double()
    )
    torch.testing.assert_close(plan.apply(F.linear(x, weight, bias)), F.linear(plan.apply(x), weight, bias))


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 9), offset=st.floats(-12.0, 12.0), slope=st.floats(-3.0, 3.0))
def test_axis_interpolation_is_exact_on_linear_data(size, offset, slope):
    """Linear interpolation reproduces a linear sequence at the clamped position, in the interior and at borders."""
    offsets = torch.full((size,), offset, dtype=torch.float64)
    lower, upper, frac = axis_interpolation(offsets)
    values = slope * torch.arange(size, dtype=torch.float64) + 0.5
    interpolated = (1 - frac) * values[lower] + frac * values[upper]
    position = (torch.arange(size, dtype=torch.float64) + offset).clamp(0, size - 1)
    torch.testing.assert_close(interpolated, slope * position + 0.5)
    assert bool(((frac >= 0) & (frac <= 1)).all())


def test_zero_offset_has_gradient_everywhere_inside():
    """At zero offset the interpolation is exact and the offset still gets the neighbour difference as gradient."""
    offsets = torch.zeros(5, requires_grad=True)
    lower, upper, frac = axis_interpolation(offsets)
    assert torch.equal(frac.detach(), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]))
    values = torch.tensor([1.0, 4.0, 9.0, 16.0, 25.0])
    ((1 - frac) * values[lower] + frac * values[upper]).sum().backward()
    assert torch.equal(offsets.grad, torch.tensor([3.0, 5.0, 7.0, 9.0, 9.0]))


def test_select_patches_is_top_k_of_projected_similarity_with_straight_through_gate():
    generator = torch.Generator().manual_seed(2)
    batch, frames, patches, dim, width = 2, 3, 8, 6, 5
    video = torch.randn(batch, frames, patches + 1, dim, generator=generator)  # [CLS] first
    weight = torch.randn(width, dim, generator=generator, requires_grad=True)
    sentences = torch.randn(batch, width, generator=generator)
    directions = sentence_directions(weight, make_condition(sentences, None), video[:, :, 0])
    index, gate = select_patches(video, directions, top_k=3)
    # reference: Proj(u) . w* literally (eq. 6) over the patches, with the normalised sentence
    projected = F.linear(video[:, :, 1:], weight.detach())
    scores = torch.einsum("btne,be->btn", projected, F.normalize(sentences, dim=-1))
    expected = scores.topk(3, dim=-1).indices
    assert torch.equal(index.sort(-1).values, expected.sort(-1).values)
    assert torch.equal(gate.detach(), torch.ones_like(gate))
    (gate * torch.randn_like(gate)).sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_candidates_pick_best_sentence_for_mean_frame_feature():
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(4, 6, generator=generator)
    frame_cls = torch.randn(3, 5, 6, generator=generator)
    candidates = torch.randn(7, 4, generator=generator)
    directions = sentence_directions(weight, make_condition(None, candidates), frame_cls)
    scores = F.linear(frame_cls.mean(1), weight) @ F.normalize(candidates, dim=-1).T  # eq. 5
    expected = F.normalize(candidates, dim=-1)[scores.argmax(1)] @ weight
    torch.testing.assert_close(directions, expected)


def test_condition_errors_name_the_argument():
    weight = torch.randn(4, 6)
    with pytest.raises(ValueError, match="`paired` has 3 sentence embeddings but the batch holds 2 videos"):
        sentence_directions(weight, make_condition(torch.randn(3, 4), None), torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="`candidates` has sentence embeddings of width 5"):
        sentence_directions(weight, make_condition(None, torch.randn(3, 5)), torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="exactly one of `paired`"):
        make_condition(None, None)
    with pytest.raises(ValueError, match="exactly one of `paired`"):
        make_condition(torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"`paired` must be a tensor of shape \(S, E\)"):
        make_condition(torch.randn(4), None)
    with pytest.raises(ValueError, match="`candidates` must be a floating-point tensor"):
        make_condition(None, torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="`top_k`=9 exceeds the 8 patches"):
        select_patches(torch.randn(1, 2, 9, 3), torch.randn(1, 3), top_k=9)
