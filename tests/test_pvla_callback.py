"""PVLACallback in a real transformers.Trainer run, and the same loss from a plain Accelerate loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import Dataset

from peft_video.alignment import PVLALoss, TwoTower, attach_pvla
from peft_video.integrations import PVLACallback

from .pvla_models import clip_batch, hook_ids, tiny_clip

SOURCE = TwoTower(
    video_modules=r"vision_model\.encoder\.layers\.\d+",
    text_modules=r"text_model\.encoder\.layers\.\d+",
)


class _Pairs(Dataset):
    """Fixed random image / caption pairs."""

    def __init__(self, n: int = 8, seed: int = 0) -> None:
        self.batch = clip_batch(batch=n, seed=seed)

    def __len__(self) -> int:
        return self.batch["input_ids"].shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.batch.items()}


def _collate(features: list[dict[str, torch.Tensor]]) -> dict[str, object]:
    out: dict[str, object] = {k: torch.stack([f[k] for f in features]) for k in features[0]}
    out["return_loss"] = True
    return out


def _trainer(model, callbacks, tmp_path, **overrides):
    from transformers import Trainer, TrainingArguments

    kwargs = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "learning_rate": 5e-3,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "max_grad_norm": 0.0,
        "logging_steps": 5,
        "max_steps": 20,
        "train_sampling_strategy": "sequential",
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        **overrides,
    }
    return Trainer(
        model=model,
        args=TrainingArguments(**kwargs),
        train_dataset=_Pairs(),
        eval_dataset=_Pairs(seed=1),
        data_collator=_collate,
        callbacks=callbacks,
    )


def test_trainer_logs_a_falling_pvla_term_and_leaves_no_hooks(tmp_path) -> None:
    model = tiny_clip()
    before = hook_ids(model)
    callback = PVLACallback(PVLALoss(), SOURCE, weight=1.0)
    trainer = _trainer(model, [callback], tmp_path)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    pvla = [h["pvla"] for h in logged]
    assert len(pvla) == 4 and all(math.isfinite(v) and v > 0 for v in pvla)
    assert pvla[-1] < 0.8 * pvla[0]
    assert callback.attachment is None and hook_ids(model) == before

    # Attached by hand, evaluation (eval mode, no grad) adds nothing and records nothing.
    plain = trainer.evaluate()["eval_loss"]
    attachment = callback.attach(trainer.model)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(plain, abs=0)
    assert attachment.pop_mean() is None
    callback.remove()
    assert hook_ids(model) == before


def test_trainer_and_plain_accelerate_loop_give_the_same_losses(tmp_path) -> None:
    from accelerate import Accelerator

    steps, weight = 4, 0.5
    trainer = _trainer(
        tiny_clip(seed=3),
        [PVLACallback(PVLALoss(), SOURCE, weight=weight)],
        tmp_path,
        max_steps=steps,
        logging_steps=1,
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]

    accelerator = Accelerator(cpu=True)
    model = tiny_clip(seed=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    batch = _collate([_Pairs()[i] for i in range(8)])
    losses, terms = [], []
    with attach_pvla(model, PVLALoss(), SOURCE, weight=weight) as pvla:
        for _ in range(steps):
            out = model(**batch)
            accelerator.backward(out.loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(out.loss.item())
            terms.append(pvla.term.item())
    assert [h["loss"] for h in logged] == pytest.approx(losses, rel=1e-4)
    assert [h["pvla"] for h in logged] == pytest.approx(terms, rel=1e-4)


def test_callback_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"`weight` must be a finite number >= 0.*nan"):
        PVLACallback(PVLALoss(), SOURCE, weight=float("nan"))
    with pytest.raises(ValueError, match="`loss` must be a PVLALoss"):
        PVLACallback(torch.nn.MSELoss(), SOURCE)
    with pytest.raises(ValueError, match="`source` must be a TwoTower or SingleStream"):
        PVLACallback(PVLALoss(), {"video_modules": "x"})


def test_trainer_records_the_pvla_settings_in_the_adapter_card(tmp_path) -> None:
    """On a peft model the callback fills the card's PVLA section; settings recorded by the user win."""
    from huggingface_hub import ModelCard
    from peft import get_peft_model

    import peft_video
    from peft_video.integrations import get_card_info, set_card_info

    torch.manual_seed(0)
    model = get_peft_model(tiny_clip(), peft_video.ReadConfig(r=4, recurrence_axis="tokens"))
    loss = PVLALoss(mass=0.4)
    _trainer(model, [PVLACallback(loss, SOURCE, weight=0.25)], tmp_path, max_steps=2).train()
    recorded = get_card_info(model).pvla
    assert recorded["weight"] == 0.25 and recorded["mass"] == 0.4 and recorded["source"] == "TwoTower"
    assert recorded["video_modules"] == SOURCE.video_modules
    model.save_pretrained(tmp_path / "adapter")
    text = ModelCard.load(tmp_path / "adapter" / "README.md").text
    assert "| `weight` | `0.25` |" in text and "| `mass` | `0.4` |" in text

    set_card_info(model, pvla={"weight": 9.0})
    _trainer(model, [PVLACallback(loss, SOURCE, weight=0.25)], tmp_path, max_steps=1).train()
    assert get_card_info(model).pvla == {"weight": 9.0}
