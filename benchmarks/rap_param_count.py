"""Trainable parameters of RAP on CLIP ViT-B/32 with 12 frames, by component, beside the paper's Table 3/4 figures.

Run: ``PYTHONPATH=. python benchmarks/rap_param_count.py`` (random weights, nothing downloaded).
"""

from __future__ import annotations

import argparse
import warnings

import torch
from _clip import clip_vit_b32  # benchmarks/_clip.py, beside this script
from peft import get_peft_model

import peft_video

PAPER = {  # millions; Table 4 (#1 - #3 = LoRM, #1 - #2 = ASA, #4 = the rest), Table 3 for RAP_light
    "LoRM (video, eq. 1-2)": 0.42,
    "ASA (Proj + gamma + delta, eq. 5-7)": 0.30,
    "text scale/shift (eq. 3)": None,
    "rest (not described; = SSF's 0.34M)": 0.34,
}
COMPONENTS = {
    "LoRM (video, eq. 1-2)": ("pvrap_scale_", "pvrap_shift_"),
    "ASA (Proj + gamma + delta, eq. 5-7)": ("pvrap_proj", "pvrap_patch_offset", "pvrap_frame_offset"),
    "text scale/shift (eq. 3)": ("pvrap_text_",),
    "rest (not described; = SSF's 0.34M)": (),
}


def build(backbone: str) -> torch.nn.Module:
    """CLIP ViT-B/32 with random weights: open_clip's config or HF's ViT-B/32 sizes."""
    if backbone == "open_clip":
        import open_clip

        return open_clip.create_model("ViT-B-32", pretrained=None)
    return clip_vit_b32()


def breakdown(model: torch.nn.Module) -> dict[str, int]:
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = next((c for c, keys in COMPONENTS.items() if any(k in name for k in keys)), None)
        if part is None:
            raise RuntimeError(f"unexpected trainable parameter {name}")
        counts[part] += parameter.numel()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", choices=("open_clip", "hf"), default="open_clip")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    for label, blocks in (("RAP (all 12 blocks)", "all"), ("RAP_light (last 4 blocks)", "light")):
        model = get_peft_model(
            build(args.backbone), peft_video.RapConfig(num_frames=12, rank=3, top_k=3, blocks=blocks)
        )
        counts = breakdown(model)
        trainable, total = model.get_nb_trainable_parameters()
        assert trainable == sum(counts.values())
        rows.append((label, counts, trainable, total))

    print(f"CLIP ViT-B/32 ({args.backbone}, random weights), T=12, R=3, K=3; trainable parameters")
    print(f"{'component':40s} {'ours (all)':>12s} {'ours (light)':>13s} {'paper (M)':>10s}")
    for part in COMPONENTS:
        paper = PAPER[part]
        print(
            f"{part:40s} {rows[0][1][part]:>12,d} {rows[1][1][part]:>13,d} "
            f"{'-' if paper is None else f'{paper:.2f}':>10s}"
        )
    print(f"{'total':40s} {rows[0][2]:>12,d} {rows[1][2]:>13,d} {'1.06':>10s}")
    print(f"(RAP_light in the paper's Table 3: 0.4M; backbone parameters: {rows[0][3] - rows[0][2]:,d})")


if __name__ == "__main__":
    main()
