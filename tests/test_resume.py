"""Checkpoint and resume with transformers' Trainer: an interrupted run resumed from its checkpoint ends with the same
adapter as an uninterrupted run with the same seed; checkpoints and the final card are peft-video cards."""

from __future__ import annotations

import huggingface_hub
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from peft import get_peft_model
from peft.utils import get_peft_model_state_dict
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

import peft_video
from peft_video.integrations.model_card import CARD_START

from .tiny_models import IMAGE, NUM_FRAMES, tiny_clip

STEPS, SAVE_STEPS = 6, 3


class RandomClips(Dataset):
    """Random clips (T, 3, H, W) with random captions, fixed by the index."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return {
            "pixel_values": torch.randn(NUM_FRAMES, 3, IMAGE, IMAGE, generator=generator),
            "input_ids": torch.randint(2, 99, (12,), generator=generator),
            "labels": torch.tensor(index),
        }


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack videos and flatten them to the B*T frames a frame-wise encoder takes (video-major)."""
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    batch["pixel_values"] = peft_video.video.video_to_frame_batch(batch["pixel_values"])
    return batch


def video_text_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    video = outputs.image_embeds.view(labels.shape[0], NUM_FRAMES, -1).mean(dim=1)
    return (1 - F.cosine_similarity(video, outputs.text_embeds, dim=-1)).mean()


class Interrupt(TrainerCallback):
    """Stops the run with an error right after the checkpoint at ``SAVE_STEPS``, like a killed job."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == SAVE_STEPS:
            raise KeyboardInterrupt("simulated interruption after the first checkpoint")


def make_trainer(output_dir, callbacks=()) -> Trainer:
    torch.manual_seed(0)  # the same frozen base model in every run
    model = get_peft_model(
        tiny_clip(), peft_video.ReadConfig(recurrence_axis="frames", num_frames=NUM_FRAMES)
    )
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=STEPS,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        seed=0,
        data_seed=0,
        use_cpu=True,
        report_to=[],
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["labels"],
        logging_steps=1,
        disable_tqdm=True,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=RandomClips(),
        data_collator=collate,
        compute_loss_func=video_text_loss,
        callbacks=list(callbacks),
    )


def adapter_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.model).items()}


def test_resumed_run_ends_with_the_same_adapter(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # nothing here may reach the Hub
    straight = make_trainer(tmp_path / "straight")
    straight.train()
    expected = adapter_weights(straight)
    initial = adapter_weights(make_trainer(tmp_path / "unused"))
    assert any(not torch.equal(expected[k], initial[k]) for k in expected), "training changed nothing"

    interrupted = make_trainer(tmp_path / "resumed", callbacks=[Interrupt()])
    with pytest.raises(KeyboardInterrupt, match="simulated interruption"):
        interrupted.train()
    checkpoint = tmp_path / "resumed" / f"checkpoint-{SAVE_STEPS}"
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "optimizer.pt").is_file()
    assert not (tmp_path / "resumed" / f"checkpoint-{STEPS}").exists()

    resumed = make_trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == STEPS
    got = adapter_weights(resumed)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)

    card = ModelCard.load(checkpoint / "README.md")
    assert card.data.library_name == "peft" and "read" in card.data.tags and CARD_START in card.text


def test_trainer_model_card_keeps_our_card_and_its_training_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    trainer = make_trainer(tmp_path / "run")
    trainer.args.max_steps = 1
    trainer.train()
    trainer.save_model()
    trainer.create_model_card(model_name="tiny-read")
    card = ModelCard.load(tmp_path / "run" / "README.md")
    assert card.data.library_name == "peft" and {"peft-video", "read"} <= set(card.data.tags)
    assert card.text.count(CARD_START) == 1 and "PEFT_VIDEO_READ" in card.text
    assert "learning_rate: 0.01" in card.text  # Trainer's hyperparameter summary is kept below our card
