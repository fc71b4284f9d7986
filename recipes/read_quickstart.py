"""READ in one minute: wrap a CLIP vision tower with READ, train a few steps on random clips, save and reload.

Runs offline on a tiny CLIP built from a config. Usage: ``python recipes/read_quickstart.py [--steps 20]``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from peft import PeftModel, get_peft_model
from tqdm.auto import tqdm
from transformers import CLIPVisionConfig, CLIPVisionModel

import peft_video


def tiny_vision_tower() -> CLIPVisionModel:
    config = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    return CLIPVisionModel(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)

    base = tiny_vision_tower()
    workdir = tempfile.TemporaryDirectory()
    base.save_pretrained(f"{workdir.name}/base")  # stands in for a Hub checkpoint
    config = peft_video.ReadConfig(recurrence_axis="frames", num_frames=args.frames, r=8)
    model = get_peft_model(base, config)
    model.print_trainable_parameters()

    # Target: a frame-order-sensitive signal (the last frame's mean minus the first's) the frozen tower cannot see.
    videos = torch.randn(4, args.frames, 3, 32, 32)
    target = (videos[:, -1] - videos[:, 0]).mean(dim=(1, 2, 3))
    head = torch.nn.Linear(64, 1)
    optimizer = torch.optim.AdamW(
        [*filter(lambda p: p.requires_grad, model.parameters()), *head.parameters()], 3e-3
    )
    for _ in tqdm(range(args.steps), desc="READ training"):
        hidden = model(pixel_values=peft_video.video.video_to_frame_batch(videos)).pooler_output
        pred = head(hidden.view(4, args.frames, -1)[:, -1]).squeeze(-1)
        loss = torch.nn.functional.mse_loss(pred, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"final loss {loss.item():.4f}")

    model.save_pretrained(f"{workdir.name}/adapter")
    reloaded = PeftModel.from_pretrained(
        CLIPVisionModel.from_pretrained(f"{workdir.name}/base"), f"{workdir.name}/adapter"
    ).eval()
    model.eval()
    frames = peft_video.video.video_to_frame_batch(videos)
    with torch.no_grad():
        same = torch.equal(
            model(pixel_values=frames).pooler_output, reloaded(pixel_values=frames).pooler_output
        )
    print(f"saved adapter reloads with identical outputs: {same}")
    workdir.cleanup()


if __name__ == "__main__":
    main()
