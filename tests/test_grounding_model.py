"""The Moment-DETR-style grounding model: span maths, matching and losses against hand-computed cases, the model's
shapes and padding invariance, save / load, width rebuilds, the methods' targets under real peft, PVLA, Trainer."""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import IA3Config, LoraConfig, get_peft_model
from transformers import TrainingArguments

import peft_video
from peft_video import PVLACallback, PVLALoss, attach_pvla
from peft_video.tasks.grounding import (
    GroundingCollator,
    GroundingConfig,
    GroundingDataset,
    GroundingModel,
    GroundingRecord,
    GroundingTrainer,
    InMemoryFeatures,
)
from peft_video.tasks.grounding.losses import moment_losses, saliency_margin_loss
from peft_video.tasks.grounding.matching import hungarian_match, matching_costs
from peft_video.tasks.grounding.modeling import sine_positions, temporal_endpoint_features
from peft_video.tasks.grounding.spans import cxw_to_se, generalized_temporal_iou, se_to_cxw, temporal_iou
from peft_video.tasks.methods import MethodTargets

from .helpers import run_fresh

VIDEO_DIM, TEXT_DIM = 20, 12


def small_config(**overrides) -> GroundingConfig:
    settings = dict(
        video_feature_dim=VIDEO_DIM,
        text_feature_dim=TEXT_DIM,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        num_queries=5,
    )
    settings.update(overrides)
    return GroundingConfig(**settings)


def small_model(seed: int = 0, **overrides) -> GroundingModel:
    torch.manual_seed(seed)
    return GroundingModel(small_config(**overrides))


def random_batch(batch: int = 3, clips: int = 9, tokens: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    video_mask = torch.ones(batch, clips, dtype=torch.bool)
    video_mask[1, clips - 3 :] = False
    text_mask = torch.ones(batch, tokens, dtype=torch.bool)
    text_mask[2, tokens - 2 :] = False
    return {
        "video_features": torch.randn(batch, clips, VIDEO_DIM, generator=g),
        "text_features": torch.randn(batch, tokens, TEXT_DIM, generator=g),
        "video_mask": video_mask,
        "text_mask": text_mask,
    }


def labelled_batch(**kwargs) -> dict[str, torch.Tensor]:
    batch = random_batch(**kwargs)
    b = batch["video_features"].shape[0]
    spans = torch.tensor([[0.3, 0.2], [0.7, 0.1]]).expand(b, 2, 2).clone()
    span_mask = torch.tensor([[True, True]] + [[True, False]] * (b - 1))
    batch.update(
        span_labels=spans,
        span_mask=span_mask,
        saliency_pos_labels=torch.tensor([[1, 2]] * b),
        saliency_neg_labels=torch.tensor([[4, 5]] * b),
    )
    return batch


# --------------------------------------------------------------------------------------------------------- spans


def test_span_conversions_are_inverse_and_match_hand_values():
    cxw = torch.tensor([[0.5, 1.0], [0.3, 0.2]])
    se = cxw_to_se(cxw)
    torch.testing.assert_close(se, torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    torch.testing.assert_close(se_to_cxw(se), cxw)


def test_temporal_iou_and_giou_of_known_spans():
    a = torch.tensor([[0.0, 0.2], [0.5, 1.0]])
    b = torch.tensor([[0.0, 0.3], [0.0, 1.0]])
    # [0,.2] vs [0,.3]: 0.2 / 0.3; [0,.2] vs [0,1]: 0.2; [.5,1] vs [0,.3]: disjoint; [.5,1] vs [0,1]: 0.5
    torch.testing.assert_close(temporal_iou(a, b), torch.tensor([[2 / 3, 0.2], [0.0, 0.5]]))
    # disjoint pair: hull [0, 1] = 1, union 0.3 + 0.5 = 0.8 -> 0 - (1 - 0.8) / 1 = -0.2; the rest: hull == union
    torch.testing.assert_close(generalized_temporal_iou(a, b), torch.tensor([[2 / 3, 0.2], [-0.2, 0.5]]))
    far = torch.tensor([[0.0, 0.1]]), torch.tensor([[0.9, 1.0]])
    torch.testing.assert_close(generalized_temporal_iou(*far), torch.tensor([[-0.8]]))  # 0 - (1 - 0.2) / 1


# ------------------------------------------------------------------------------------------------------ matching


def test_hungarian_matching_picks_the_pairs_that_fit():
    targets = torch.tensor([[[0.2, 0.1], [0.8, 0.2], [0.5, 0.3]]])
    # prediction k sits on target perm[k]; the rest are far away
    perm = [2, 0, 1]
    spans = torch.tensor([[[0.5, 0.3], [0.2, 0.1], [0.8, 0.2], [0.05, 0.05], [0.95, 0.02]]])
    logits = torch.zeros(1, 5, 2)
    rows, cols = hungarian_match(logits, spans, targets, torch.ones(1, 3, dtype=torch.bool))[0]
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == perm


def test_hungarian_matching_is_the_least_cost_assignment_and_skips_padding():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        queries, windows = 4, int(torch.randint(1, 4, (1,), generator=g))
        logits = torch.randn(1, queries, 2, generator=g)
        spans = torch.rand(1, queries, 2, generator=g) * 0.5 + 0.1
        targets = torch.rand(1, windows + 1, 2, generator=g) * 0.5 + 0.1
        mask = torch.ones(1, windows + 1, dtype=torch.bool)
        mask[0, trial % (windows + 1)] = False  # one padded target anywhere
        rows, cols = hungarian_match(logits, spans, targets, mask)[0]
        costs = matching_costs(logits, spans, targets)[0]
        real = mask[0].nonzero().flatten().tolist()
        best = min(
            sum(costs[q, t].item() for q, t in zip(chosen, real, strict=True))
            for chosen in itertools.permutations(range(queries), len(real))
        )
        assert sorted(cols.tolist()) == real
        assert math.isclose(costs[rows, cols].sum().item(), best, rel_tol=1e-6, abs_tol=1e-6)


def test_matching_cost_formula_by_hand():
    logits = torch.tensor([[[2.0, 0.0]]])
    spans = torch.tensor([[[0.5, 0.2]]])  # [0.4, 0.6]
    targets = torch.tensor([[[0.55, 0.3]]])  # [0.4, 0.7]
    p = 1 / (1 + math.exp(-2.0))
    l1 = 0.05 + 0.1
    giou = 0.2 / 0.3  # nested spans: hull == union
    expected = 10 * l1 - 1 * giou - 4 * p
    assert math.isclose(matching_costs(logits, spans, targets)[0, 0, 0].item(), expected, rel_tol=1e-5)


# -------------------------------------------------------------------------------------------------------- losses


def test_moment_losses_by_hand():
    # two queries, one target; query 1 is the better match (closer and more confident)
    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    spans = torch.tensor([[[0.1, 0.1], [0.5, 0.2]]])
    target = torch.tensor([[[0.55, 0.3]]])
    terms = moment_losses(logits, spans, target, torch.ones(1, 1, dtype=torch.bool), eos_coef=0.1)
    assert math.isclose(terms.span.item(), (0.05 + 0.1) / 2, rel_tol=1e-5)  # mean over both coordinates
    assert math.isclose(terms.giou.item(), 1 - 0.2 / 0.3, rel_tol=1e-5)
    # query 0 is background (weight 0.1), query 1 foreground (weight 1); plain mean over the two queries
    nll_bg = -math.log(math.exp(1) / (1 + math.exp(1)))
    nll_fg = -math.log(math.exp(1) / (1 + math.exp(1)))
    assert math.isclose(terms.label.item(), (0.1 * nll_bg + 1.0 * nll_fg) / 2, rel_tol=1e-5)


def test_moment_losses_leave_out_records_without_windows():
    logits = torch.randn(2, 3, 2, requires_grad=True)
    spans = torch.rand(2, 3, 2).requires_grad_()
    targets = torch.tensor([[[0.5, 0.2]], [[0.0, 0.0]]])
    mask = torch.tensor([[True], [False]])
    both = moment_losses(logits, spans, targets, mask)
    first = moment_losses(logits[:1], spans[:1], targets[:1], mask[:1])
    for name in ("span", "giou", "label"):
        torch.testing.assert_close(getattr(both, name), getattr(first, name))
    none = moment_losses(logits, spans, targets, torch.zeros(2, 1, dtype=torch.bool))
    assert none.span.item() == 0 and none.label.item() == 0
    none.label.backward()  # still part of the graph
    assert logits.grad is not None


def test_saliency_margin_loss_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.2, 0.3, 0.0, 0.0]])
    pos = torch.tensor([[0, 2], [0, -1]])
    neg = torch.tensor([[1, 3], [1, -1]])
    # pairs: 0.2 + 0.1 - 0.9 -> 0; 0.2 + 0.0 - 0.5 -> 0; 0.2 + 0.3 - 0.2 = 0.3; the -1 pair is skipped
    loss = saliency_margin_loss(scores, pos, neg, margin=0.2)
    assert math.isclose(loss.item(), 2 * 0.3 / 3, rel_tol=1e-6)
    assert saliency_margin_loss(scores, -torch.ones(2, 1, dtype=torch.long), neg[:, :1]).item() == 0


# --------------------------------------------------------------------------------------------------------- model


def test_features_tef_and_sine_positions():
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    tef = temporal_endpoint_features(mask)
    torch.testing.assert_close(tef[0], torch.tensor([[0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]]))
    torch.testing.assert_close(tef[1], torch.tensor([[0, 0.5], [0.5, 1.0], [0, 0], [0, 0]]))
    pos = sine_positions(mask, 8)
    angle = 2 * math.pi * 1 / 2  # clip 1 (1-based) of 2 real clips in row 1
    expected = []
    for k in range(4):
        expected += [math.sin(angle / 10000 ** (2 * k / 8)), math.cos(angle / 10000 ** (2 * k / 8))]
    torch.testing.assert_close(pos[1, 0], torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_defaults_are_moment_detr_size():
    config = GroundingConfig()
    assert (config.hidden_size, config.num_encoder_layers, config.num_decoder_layers) == (256, 2, 2)
    assert (config.num_queries, config.num_attention_heads, config.intermediate_size) == (10, 8, 1024)
    assert config.input_dropout == 0.5 and config.temporal_endpoint_features
    assert config.video_input_dim == 2304 + 512 + 2
    with pytest.raises(ValueError, match="multiple"):
        GroundingConfig(hidden_size=30, num_attention_heads=4)


def test_initialisation_is_moment_detr_s():
    model = GroundingModel(GroundingConfig(video_feature_dim=64, text_feature_dim=64))
    layer = model.encoder.layers[0]
    xavier = math.sqrt(6 / (256 + 256))
    assert 0.9 * xavier < layer.self_attn.q_proj.weight.abs().max() <= xavier  # Xavier inside the blocks
    assert layer.self_attn.v_proj.bias.abs().max() == 0
    ffn_xavier = math.sqrt(6 / (256 + 1024))
    assert 0.9 * ffn_xavier < model.decoder.layers[1].ffn.fc2.weight.abs().max() <= ffn_xavier
    default = 1 / math.sqrt(256)  # PyTorch's Linear default elsewhere
    assert 0.9 * default < model.span_head.layers[0].weight.abs().max() <= default
    assert 0.8 < model.query_embed.weight.std() < 1.2


def test_forward_shapes_and_loss_terms():
    model = small_model()
    out = model(**labelled_batch())
    assert out.pred_logits.shape == (3, 5, 2) and out.pred_spans.shape == (3, 5, 2)
    assert out.saliency_scores.shape == (3, 9)
    assert out.aux_pred_logits.shape == (1, 3, 5, 2)
    assert out.encoder_last_hidden_state.shape == (3, 15, 32)
    assert ((out.pred_spans > 0) & (out.pred_spans < 1)).all()
    assert torch.isfinite(out.loss) and out.loss_saliency is not None
    assert model(**random_batch()).loss is None
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_outputs_do_not_depend_on_the_batch_padding():
    model = small_model().eval()
    batch = random_batch()
    with torch.no_grad():
        together = model(**batch)
        alone = model(
            video_features=batch["video_features"][1:2, :6],
            text_features=batch["text_features"][1:2],
            video_mask=batch["video_mask"][1:2, :6],
            text_mask=batch["text_mask"][1:2],
        )
    torch.testing.assert_close(together.pred_spans[1], alone.pred_spans[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        together.saliency_scores[1, :6], alone.saliency_scores[0], atol=1e-5, rtol=1e-5
    )


def test_forward_rejects_wrong_widths_naming_the_fix():
    model = small_model()
    batch = random_batch()
    batch["video_features"] = torch.randn(3, 9, VIDEO_DIM + 1)
    with pytest.raises(ValueError, match=r"video_feature_dim=21"):
        model(**batch)


def test_save_and_load_in_a_fresh_process(tmp_path):
    model = small_model().eval()
    model.save_pretrained(tmp_path)
    batch = random_batch()
    torch.save(batch, tmp_path / "batch.pt")
    with torch.no_grad():
        expected = model(**batch).pred_spans
    torch.save(expected, tmp_path / "expected.pt")
    out = run_fresh(
        f"""
        import torch
        from transformers import AutoModel
        import peft_video.tasks.grounding  # registers the model type
        model = AutoModel.from_pretrained({str(tmp_path)!r}).eval()
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            got = model(**batch).pred_spans
        torch.testing.assert_close(got, torch.load({str(tmp_path / "expected.pt")!r}))
        print(type(model).__name__, model.config.model_type)
        """
    )
    assert out.split() == ["GroundingModel", "peft_video_grounding"]


# --------------------------------------------------------------------------------------------- feature widths


def test_rebuilding_the_input_projections_for_new_widths(tmp_path, caplog):
    model = small_model()
    model.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        same = GroundingModel.from_pretrained(
            tmp_path, video_feature_dim=VIDEO_DIM, text_feature_dim=TEXT_DIM
        )
    assert not [r for r in caplog.records if "rebuilt" in r.getMessage()]
    assert same.config.reinitialized_modules == [] and same.method_targets().new_modules == ()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        wider = GroundingModel.from_pretrained(tmp_path, video_feature_dim=30)
    lines = [r.getMessage() for r in caplog.records if "rebuilt" in r.getMessage()]
    assert len(lines) == 1 and "video_projection (20 -> 30 features)" in lines[0]
    assert wider.config.video_feature_dim == 30 and wider.config.reinitialized_modules == ["video_projection"]
    assert wider.video_projection[0].linear.in_features == 32  # 30 + the 2 temporal endpoint features
    assert wider.method_targets().new_modules == ("video_projection",)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("video_projection")}
    for name, value in kept.items():
        torch.testing.assert_close(wider.state_dict()[name], value, msg=name)
    batch = random_batch()
    batch["video_features"] = torch.randn(3, 9, 30)
    assert wider(**batch).pred_spans.shape == (3, 5, 2)
    wider.save_pretrained(tmp_path / "wider")  # the record survives a round trip
    again = GroundingModel.from_pretrained(tmp_path / "wider")
    assert again.config.reinitialized_modules == ["video_projection"]


# ------------------------------------------------------------------------------------------------------ methods


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_method_targets_name_real_modules():
    model = small_model()
    targets = model.method_targets()
    assert isinstance(targets, MethodTargets)
    modules = dict(model.named_modules())
    for path in targets.blocks:
        assert isinstance(modules[path], torch.nn.ModuleList) and len(modules[path]) == 2
    assert all(name in modules for name in targets.projections)
    import re

    def matched(pattern: str) -> set[str]:
        return {n for n in modules if re.fullmatch(pattern, n)}

    # every attention projection and FFN Linear of all 6 attention blocks (2 enc self, 2 dec self, 2 dec cross)
    assert len(matched(targets.lora)) == 6 * 4 + 4 * 2
    assert matched(targets.read) == {f"{s}.layers.{i}.ffn" for s in ("encoder", "decoder") for i in (0, 1)}
    assert matched(targets.ia3_feedforward) <= matched(targets.ia3)
    assert targets.read_axis == "tokens" and targets.prompt_task_type is None and not targets.rap


@pytest.mark.parametrize("method", ["lora", "ia3", "read"])
def test_peft_methods_train_only_their_parameters(method):
    model = small_model()
    model.rebuild_input_projections(text_feature_dim=TEXT_DIM + 4)  # a new module the method must train too
    targets = model.method_targets()
    save = list(targets.new_modules)
    if method == "lora":
        config = LoraConfig(r=4, lora_alpha=8, target_modules=targets.lora, modules_to_save=save)
        own = "lora_"
    elif method == "ia3":
        config = IA3Config(
            target_modules=targets.ia3, feedforward_modules=targets.ia3_feedforward, modules_to_save=save
        )
        own = "ia3_"
    else:
        config = peft_video.ReadConfig(target_modules=targets.read, r=4, modules_to_save=save)
        own = "pvread_"
    peft_model = get_peft_model(model, config)
    trainable = _trainable(peft_model)
    assert trainable and all(own in n or "text_projection" in n for n in trainable)
    assert any("text_projection" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    batch = labelled_batch()
    batch["text_features"] = torch.randn(3, 6, TEXT_DIM + 4)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        peft_model(**batch).loss.backward()
        optimizer.step()
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable


def test_a_read_adapter_with_rebuilt_projections_saves_and_reloads_only_its_own_weights(tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    small_model().save_pretrained(tmp_path / "backbone")
    model = GroundingModel.from_pretrained(tmp_path / "backbone", text_feature_dim=TEXT_DIM + 4)
    targets = model.method_targets()
    peft_model = get_peft_model(
        model,
        peft_video.ReadConfig(target_modules=targets.read, r=4, modules_to_save=list(targets.new_modules)),
    )
    batch = labelled_batch()
    batch["text_features"] = torch.randn(3, 6, TEXT_DIM + 4)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        peft_model(**batch).loss.backward()
        optimizer.step()
    peft_model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert saved and all("pvread_" in k or "text_projection" in k for k in saved)
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**batch).pred_spans
    torch.manual_seed(123)  # the reloaded backbone's new projection starts different; the adapter restores it
    fresh = GroundingModel.from_pretrained(tmp_path / "backbone", text_feature_dim=TEXT_DIM + 4)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).pred_spans, expected)


SELECTED = {
    "frozen": lambda n: False,
    "full": lambda n: True,
    "bitfit": lambda n: n.endswith("bias"),
    "partial": lambda n: n.startswith(("encoder.layers.1.", "decoder.layers.1.")),
    "proj": lambda n: n.startswith(("class_head.", "span_head.", "saliency_head.")),
}
PEFT_OWN = {"lora": "lora_", "ia3": "ia3_", "adapter": "pvread_", "read": "pvread_"}


@pytest.mark.parametrize("method", [*SELECTED, *PEFT_OWN])
def test_every_registry_method_trains_and_saves_only_its_own_parameters(method, tmp_path):
    from peft_video.tasks import methods

    if not hasattr(methods, "selected_parameters"):
        pytest.skip("the method registry (prepare_model with every method) is not on this branch's base")
    if method == "adapter" and "none" not in peft_video.tuners.read.config.RNN_TYPES:
        pytest.skip("ReadConfig(rnn_type='none') is not on this branch's base")
    model = small_model()
    model.rebuild_input_projections(text_feature_dim=TEXT_DIM + 4)
    prepared = methods.prepare_model(model, method)
    trainable = _trainable(prepared)
    new = {n for n in trainable if "text_projection" in n}
    assert new, "the rebuilt projection must train under every method"
    if method in SELECTED:
        expected = {
            n for n, _ in model.named_parameters() if SELECTED[method](n) or n.startswith("text_projection")
        }
        assert trainable == expected
    else:
        assert all(PEFT_OWN[method] in n for n in trainable - new) and trainable - new
    batch = labelled_batch()
    batch["text_features"] = torch.randn(3, 6, TEXT_DIM + 4)
    before = {n: p.detach().clone() for n, p in prepared.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in prepared.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        prepared(**batch).loss.backward()
        optimizer.step()
    changed = {n for n, p in prepared.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    if method in SELECTED:
        methods.save_trainable(prepared, tmp_path, method)
        from safetensors.torch import load_file

        assert set(load_file(tmp_path / methods.TRAINABLE_WEIGHTS)) == trainable
    for other in ("prompt", "rap", "token_mix"):
        with pytest.raises(ValueError, match=f"method '{other}' does not apply to GroundingModel"):
            methods.prepare_model(small_model(), other)


def test_zero_initialised_read_and_adapter_leave_the_outputs_unchanged():
    batch = random_batch()
    base = small_model().eval()
    with torch.no_grad():
        expected = base(**batch)
    kinds = ["rnn"]
    if "none" in peft_video.tuners.read.config.RNN_TYPES:
        kinds.append("none")  # the plain bottleneck adapter, on branch tuners-house
    for rnn_type in kinds:
        model = get_peft_model(
            small_model().eval(),
            peft_video.ReadConfig(target_modules=base.method_targets().read, rnn_type=rnn_type),
        )
        with torch.no_grad():
            got = model(**batch)
        torch.testing.assert_close(got.pred_spans, expected.pred_spans)
        torch.testing.assert_close(got.saliency_scores, expected.saliency_scores)


def test_read_recurs_over_the_clip_sequence_without_crossing_into_the_query():
    """The encoder FFN runs on the clip part and the query part separately: READ's recurrence over the clips does
    not see the query, so a clip's output is the same whatever query tokens follow (at the FFN output)."""
    model = get_peft_model(
        small_model().eval(),
        peft_video.ReadConfig(target_modules=r"encoder\.layers\.0\.ffn", init_weights=False),
    )
    ffn = model.base_model.model.encoder.layers[0].ffn
    seen = []
    ffn.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    batch = random_batch(clips=9, tokens=6)
    with torch.no_grad():
        model(**batch)
    assert seen == [9, 6]


# --------------------------------------------------------------------------------------------------------- PVLA


def test_pvla_reads_every_encoder_block_split_into_clips_and_query_tokens():
    model = small_model()
    batch = labelled_batch()
    with attach_pvla(model, PVLALoss(max_iter=50), model.pvla_source(), add_to_loss=False) as pvla:
        captured = {}
        original = pvla._representations

        def spy():
            video, text, vm, tm = original()
            captured.update(video=video, text=text, vm=vm, tm=tm)
            return video, text, vm, tm

        pvla._representations = spy
        out = model(**batch)
    assert len(captured["video"]) == 2  # both encoder blocks
    assert captured["video"][0].shape[:2] == (3, 9) and captured["text"][0].shape[:2] == (3, 6)
    assert captured["vm"].sum(1).tolist() == [9, 6, 9] and captured["tm"].sum(1).tolist() == [6, 6, 4]
    assert torch.isfinite(pvla.term) and out.loss is not None
    with attach_pvla(model, PVLALoss(max_iter=50), model.pvla_source(), weight=0.5) as pvla:
        torch.manual_seed(0)
        with_term = model(**batch).loss
        torch.manual_seed(0)
        pvla.remove()
        without = model(**batch).loss
    assert math.isclose(with_term.item(), without.item() + 0.5 * pvla.term.item(), rel_tol=1e-4)


# ------------------------------------------------------------------------------------------------------ Trainer


def _toy_dataset(num: int = 12, clips: int = 10) -> GroundingDataset:
    rng = np.random.default_rng(0)
    records, videos, queries = [], {}, {}
    for i in range(num):
        start = int(rng.integers(0, clips - 3))
        videos[f"v{i}"] = rng.normal(size=(clips, VIDEO_DIM)).astype(np.float32)
        videos[f"v{i}"][start : start + 3] += 3.0  # the moment stands out
        queries[i] = rng.normal(size=(5, TEXT_DIM)).astype(np.float32)
        records.append(
            GroundingRecord(
                qid=i,
                query="q",
                vid=f"v{i}",
                duration=clips * 2.0,
                windows=((start * 2.0, start * 2.0 + 6.0),),
                clip_ids=(start, start + 1, start + 2),
                saliency=((4, 3, 4), (4, 4, 4), (3, 3, 2)),
            )
        )
    return GroundingDataset(records, InMemoryFeatures(videos, queries), clip_length=2.0)


def _mean_loss(model: GroundingModel, dataset: GroundingDataset) -> float:
    model.eval()
    batch = GroundingCollator(seed=0)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return model(**batch).loss.item()


def test_trainer_steps_reduce_the_loss(tmp_path):
    dataset = _toy_dataset()
    model = small_model(input_dropout=0.0, dropout=0.0)
    before = _mean_loss(model, dataset)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_train_epochs=10,
        learning_rate=3e-3,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = GroundingTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=dataset,
        callbacks=[PVLACallback(PVLALoss(max_iter=50), model.pvla_source(), weight=0.1)],
    )
    trainer.train()
    after = _mean_loss(model, dataset)
    assert after < 0.7 * before
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert {"loss_span", "loss_giou", "loss_label", "loss_saliency", "pvla"} <= set(logged[0])
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"])


def test_trainer_refuses_a_foreign_collator(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="GroundingCollator"):
        GroundingTrainer(
            model=small_model(), args=args, train_dataset=_toy_dataset(2), data_collator=lambda x: x
        )


def test_loss_is_differentiable_through_every_term():
    model = small_model()
    out = model(**labelled_batch())
    grads = torch.autograd.grad(out.loss_saliency, model.saliency_head.weight, retain_graph=True)
    assert grads[0].abs().sum() > 0
    grads = torch.autograd.grad(out.loss_span + out.loss_giou, model.span_head.layers[-1].weight)
    assert grads[0].abs().sum() > 0
    assert F.softmax(out.pred_logits, -1).shape == (3, 5, 2)
