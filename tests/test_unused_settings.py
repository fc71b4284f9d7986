"""Settings that would silently have no effect: contradictions are errors, a switched-off part's settings are a
documented no-op (kept and saved, so one config serves every row of an ablation)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn

from peft_video import RapConfig, TokenMixConfig
from peft_video.alignment import PVLALoss, SingleStream, TwoTower, attach_pvla
from peft_video.conditioning import sentence_condition

from .pvla_models import bert_batch, tiny_bert_mlm
from .tiny_models import NUM_FRAMES, frames, tiny_clip, tiny_clip_vision

TEXT_ATTENTION = r"text_model\.encoder\.layers\.\d+\.self_attn"
VISION_ATTENTION = r"vision_model\.encoder\.layers\.\d+\.self_attn"


def rap(**kwargs) -> RapConfig:
    return RapConfig(**{"num_frames": NUM_FRAMES, "rank": 2, **kwargs})


# -- RAP ---------------------------------------------------------------------------------------------------------------


def test_rap_text_modulation_follows_the_model_and_is_saved(tmp_path):
    two_towers = get_peft_model(tiny_clip(), rap())
    vision_only = get_peft_model(tiny_clip_vision(), rap())
    assert two_towers.peft_config["default"].text_modulation is True
    assert vision_only.peft_config["default"].text_modulation is False
    vision_only.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["text_modulation"] is False


def test_rap_text_modulation_true_without_a_text_tower_is_an_error():
    with pytest.raises(ValueError, match="`text_modulation`=True, but this model .* has no text tower"):
        get_peft_model(tiny_clip_vision(), rap(text_modulation=True))
    with pytest.raises(
        ValueError, match="`text_modulation`=True, but `target_modules` selects no text-tower"
    ):
        get_peft_model(tiny_clip(), rap(text_modulation=True, target_modules=VISION_ATTENTION))
    vision_targets = get_peft_model(tiny_clip(), rap(target_modules=VISION_ATTENTION))
    assert vision_targets.peft_config["default"].text_modulation is False  # None follows the targets


def test_rap_saved_by_an_older_version_with_text_modulation_on_a_vision_only_model_loads(tmp_path):
    """Older versions saved text_modulation=True (their default) for vision-only models, where it did nothing."""
    torch.manual_seed(0)
    base = tiny_clip_vision().eval()
    model = get_peft_model(copy.deepcopy(base), rap(init_weights=False)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    saved["text_modulation"] = True
    (tmp_path / "adapter_config.json").write_text(json.dumps(saved))
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    assert reloaded.peft_config["default"].text_modulation is False
    condition = torch.randn(2, 512)
    with torch.no_grad(), sentence_condition(paired=condition):
        assert torch.equal(
            reloaded(pixel_values=frames()).last_hidden_state, model(pixel_values=frames()).last_hidden_state
        )


def test_rap_vision_parts_on_but_no_vision_target_is_an_error():
    with pytest.raises(ValueError, match="selects no vision-tower self-attention, so neither would run"):
        get_peft_model(tiny_clip(), rap(target_modules=TEXT_ATTENTION))
    text_only = get_peft_model(tiny_clip(), rap(target_modules=TEXT_ATTENTION, use_lorm=False, use_asa=False))
    assert len(text_only.base_model.targeted_module_names) == 2
    assert text_only.peft_config["default"].text_modulation is True


def test_rap_switched_off_parts_keep_their_settings_without_effect(tmp_path):
    """top_k / proj_init / condition_dim without ASA and rank without LoRM: accepted, saved, and unused."""
    torch.manual_seed(0)
    base = tiny_clip().eval()
    outputs = []
    for config in (
        rap(use_asa=False, init_weights=False),
        rap(use_asa=False, init_weights=False, top_k=9, proj_init="random", condition_dim=7),
    ):
        torch.manual_seed(1)
        model = get_peft_model(copy.deepcopy(base), config).eval()
        with torch.no_grad():
            outputs.append(model.get_image_features(pixel_values=frames()).pooler_output)
    assert torch.equal(outputs[0], outputs[1])
    rap(use_lorm=False, rank=7).save_pretrained(tmp_path)  # rank 7 > num_frames 4: no LoRM, so no check
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert (loaded.rank, loaded.use_lorm) == (7, False)


# -- TokenMix ----------------------------------------------------------------------------------------------------------


def test_token_mix_target_modules_cannot_be_set():
    with pytest.raises(ValueError, match="`target_modules` is derived by TokenMix from `blocks`, `finetune`"):
        TokenMixConfig(target_modules=["mlp"])


def test_token_mix_reloads_with_the_recorded_targets(tmp_path):
    model = get_peft_model(tiny_clip_vision(), TokenMixConfig(num_frames=2))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"]  # recorded
    reloaded = PeftModel.from_pretrained(tiny_clip_vision(), tmp_path)
    assert reloaded.base_model.targeted_module_names == model.base_model.targeted_module_names


def test_token_mix_without_mixing_needs_no_frame_count_and_ignores_mixing_settings():
    torch.manual_seed(0)
    base = tiny_clip_vision().eval()
    plain = get_peft_model(copy.deepcopy(base), TokenMixConfig(strategy="none")).eval()
    weighted = get_peft_model(
        copy.deepcopy(base), TokenMixConfig(strategy="none", cross_frame_weight=0.5, num_frames=4)
    ).eval()
    with torch.no_grad():  # no use_num_frames: strategy 'none' never needs T
        expected = base(pixel_values=frames()).last_hidden_state
        assert torch.equal(plain(pixel_values=frames()).last_hidden_state, expected)
        assert torch.equal(weighted(pixel_values=frames()).last_hidden_state, expected)


# -- PVLA sources ------------------------------------------------------------------------------------------------------


def test_pvla_weight_without_add_to_loss_is_an_error():
    model = tiny_bert_mlm()
    source = SingleStream(modules=["bert.encoder.layer.1"], video_tokens=6)
    with pytest.raises(ValueError, match="`weight`=0.5 has no effect with `add_to_loss`=False"):
        attach_pvla(model, PVLALoss(), source, weight=0.5, add_to_loss=False)
    attach_pvla(model, PVLALoss(), source, add_to_loss=False).remove()


class Joint(nn.Module):
    """A model whose forward takes a fixed set of inputs (no **kwargs)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"loss": self.layer(x).pow(2).mean()}


def test_pvla_mask_naming_no_model_input_is_an_error_at_attach():
    with pytest.raises(ValueError, match=r"`padding_mask`='atention_mask' names no input of Joint.forward"):
        attach_pvla(Joint(), PVLALoss(), SingleStream(["layer"], 2, padding_mask="atention_mask"))
    with pytest.raises(ValueError, match=r"`video_mask`='mask' names no input of Joint.forward"):
        attach_pvla(Joint(), PVLALoss(), TwoTower(["layer"], ["layer"], video_mask="mask"))
    attach_pvla(Joint(), PVLALoss(), SingleStream(["layer"], 2)).remove()  # the default: applies where it can


def test_pvla_named_mask_missing_from_a_forward_is_an_error():
    """HF forwards take **kwargs, so a misspelt name is caught at the first training forward."""
    model = tiny_bert_mlm().train()
    batch = bert_batch()
    with attach_pvla(
        model, PVLALoss(), SingleStream("bert.encoder.layer.1", 6, padding_mask="atention_mask")
    ):
        with pytest.raises(
            RuntimeError, match=r"`padding_mask`='atention_mask' names an input this forward did not"
        ):
            model(**batch)
    with attach_pvla(model, PVLALoss(), SingleStream("bert.encoder.layer.1", 6, padding_mask="input_ids")):
        assert model(**batch).loss.isfinite()  # an input it gets: fine
    del batch["attention_mask"]
    with attach_pvla(model, PVLALoss(), SingleStream("bert.encoder.layer.1", 6)):
        assert model(**batch).loss.isfinite()  # the default, not passed: no padding
