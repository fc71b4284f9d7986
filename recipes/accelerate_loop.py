"""Train a READ adapter on a tiny CLIP in a plain Accelerate loop (no Trainer): one process or many, any precision.

Accelerate places the model, wraps it for data parallelism, shards the data and runs mixed precision; the loop is
the same everywhere. The clips are random (B, T, 3, H, W) videos with random captions, so it runs offline::

    python recipes/accelerate_loop.py                                   # one process (CPU or one GPU)
    python recipes/accelerate_loop.py --mixed_precision bf16            # or fp16
    accelerate launch --multi_gpu --num_processes 2 recipes/accelerate_loop.py        # data parallel on 2 GPUs
    accelerate launch --multi_gpu --num_processes 2 recipes/accelerate_loop.py --cpu  # 2 CPU processes over gloo

The loss pulls each video's embedding (mean over its frames) towards its caption's, plus ``--pvla_weight`` times
PVLA between every vision block's per-frame CLS features and the paired text block's token features (attached with
``peft_video.attach_pvla``). Both are means over videos, so data parallel training on P processes equals one process
on the same global batch (P * --batch_size).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import get_peft_model
from torch.utils.data import DataLoader, TensorDataset
from transformers import CLIPConfig, CLIPModel

import peft_video
from peft_video.integrations.accelerate_utils import check_launch, max_rank_divergence, save_adapter
from peft_video.video import video_to_frame_batch

IMAGE = 32


def tiny_clip() -> CLIPModel:
    """A small CLIP built from a config (no download); swap in ``CLIPModel.from_pretrained(...)`` for real work."""
    text = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=99,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE,
        patch_size=8,
    )
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))


def random_clips(videos: int, frames: int, seed: int) -> TensorDataset:
    """``videos`` random clips (T, 3, H, W) with random 12-token captions, identical on every process."""
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(videos, frames, 3, IMAGE, IMAGE, generator=generator)
    captions = torch.randint(2, 99, (videos, 12), generator=generator)
    return TensorDataset(clips, captions)


def alignment_loss(model: torch.nn.Module, clips: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
    """Mean over videos of 1 - cos(video embedding, caption embedding); the forward goes through ``model(...)``
    so that DDP sees it."""
    outputs = model(input_ids=captions, pixel_values=video_to_frame_batch(clips))
    video = outputs.image_embeds.view(clips.shape[0], clips.shape[1], -1).mean(dim=1)
    return (1 - F.cosine_similarity(video.float(), outputs.text_embeds.float(), dim=-1)).mean()


def pvla_source(frames: int) -> peft_video.TwoTower:
    """Every vision block's per-frame CLS features (B, T, D) against the paired text block's tokens (B, L, D)."""
    return peft_video.TwoTower(
        video_modules=r"vision_model\.encoder\.layers\.\d+",
        text_modules=r"text_model\.encoder\.layers\.\d+",
        video_transform=lambda hidden: peft_video.video.unflatten_frames(hidden[:, 0], frames),
        text_mask=None,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=4, help="videos per process and step")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--videos", type=int, default=64, help="size of the random training set")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pvla_weight", type=float, default=0.1, help="weight of the PVLA term (0 switches it off)"
    )
    parser.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        default=None,
        help="default: what `accelerate launch` / `accelerate config` say, else no",
    )
    parser.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    parser.add_argument(
        "--output_dir", default="outputs/accelerate_loop", help="where the adapter and card go"
    )
    parser.add_argument(
        "--report", default=None, help="write losses and the cross-process check to this JSON"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu)
    check_launch(accelerator)
    set_seed(args.seed)  # same base weights and adapter init on every process

    config = peft_video.ReadConfig(recurrence_axis="frames", num_frames=args.frames, r=8)
    model = get_peft_model(tiny_clip(), config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    loader = DataLoader(
        random_clips(args.videos, args.frames, args.seed), batch_size=args.batch_size, shuffle=False
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    pvla = peft_video.attach_pvla(
        model, peft_video.PVLALoss(mass=0.5, tau=0.05), pvla_source(args.frames), add_to_loss=False
    )
    losses: list[float] = []
    model.train()
    while len(losses) < args.steps:
        for clips, captions in loader:
            loss = alignment_loss(model, clips, captions)
            if args.pvla_weight:
                loss = loss + args.pvla_weight * pvla.term
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())
            if len(losses) == args.steps:
                break

    pvla.remove()
    divergence = max_rank_divergence(accelerator, model)
    global_batch = args.batch_size * accelerator.num_processes
    report = {
        "processes": accelerator.num_processes,
        "global_batch": global_batch,
        "mixed_precision": accelerator.mixed_precision,
        "losses": losses,
        "max_rank_divergence": divergence,
    }
    save_adapter(
        accelerator,
        model,
        args.output_dir,
        training_data=f"{args.videos} random {args.frames}-frame clips with random captions (recipes/accelerate_loop.py), "
        f"{args.steps} steps, global batch {global_batch}, {accelerator.mixed_precision} mixed precision",
        metrics={"final_loss": losses[-1]},
        pvla={"weight": args.pvla_weight, "mass": 0.5, "tau": 0.05, "layers": "all vision/text blocks"},
    )
    if accelerator.is_main_process:
        accelerator.print(
            f"{accelerator.num_processes} process(es), global batch {global_batch}, "
            f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, replicas differ by {divergence:.2e}"
        )
        if args.report:
            Path(args.report).write_text(json.dumps(report, indent=2))
    accelerator.end_training()
    return report


if __name__ == "__main__":
    main()
