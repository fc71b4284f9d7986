"""CUDA checks for every tuner: fp16 / bf16 autocast training steps and bf16 base weights, on a GPU.

For each method: three AdamW steps on a CLIP ViT-B/32-sized model (random init, 2 videos x 8 frames), asserting a
finite loss, that only adapter weights change, and that the adapter kept float32 weights. For READ it also checks
that the cuDNN RNN path matches the CPU result. Prints one line per case; exits non-zero on any failure.

    python benchmarks/cuda_checks.py
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable

import torch
from _clip import clip_vit_b32  # benchmarks/_clip.py, beside this script
from peft import PeftConfig, get_peft_model

import peft_video

VIDEOS, FRAMES = 2, 8

METHODS: dict[str, Callable[[], PeftConfig]] = {
    "read": lambda: peft_video.ReadConfig(recurrence_axis="frames", num_frames=FRAMES),
    "token_mix": lambda: peft_video.TokenMixConfig(num_frames=FRAMES),
    "rap": lambda: peft_video.RapConfig(num_frames=FRAMES),  # LoRM + ASA, conditioned on the paired captions
}


def video_text_loss(model: torch.nn.Module, frames: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():  # the paired captions' joint embeddings: RAP's condition (ignored by other tuners)
        text = model.get_text_features(input_ids=input_ids)
        text = getattr(text, "pooler_output", text)
    with peft_video.rap_condition(paired=text.float()):
        out = model(input_ids=input_ids, pixel_values=frames)
    video = out.image_embeds.float().view(VIDEOS, FRAMES, -1).mean(1)
    return (1 - torch.nn.functional.cosine_similarity(video, out.text_embeds.float(), dim=-1)).mean()


def check(name: str, model: torch.nn.Module, autocast: torch.dtype | None, frames, input_ids) -> str:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(3):
        with torch.autocast("cuda", dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = video_text_loss(model, frames, input_ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    adapter_fp32 = all(p.dtype == torch.float32 for n, p in model.named_parameters() if n in trainable)
    ok = all(torch.isfinite(torch.tensor(losses))) and changed == trainable and adapter_fp32
    return f"{'ok  ' if ok else 'FAIL'} {name:<28} losses {', '.join(f'{v:.4f}' for v in losses)}" + (
        "" if ok else f"  changed-only-adapter={changed == trainable} adapter-fp32={adapter_fp32}"
    )


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} cudnn {torch.backends.cudnn.version()}")
    torch.manual_seed(0)
    base = clip_vit_b32()
    frames = torch.randn(VIDEOS * FRAMES, 3, 224, 224, device=device)
    input_ids = torch.randint(0, 49000, (VIDEOS, 16), device=device)
    lines = []
    for method, make_config in METHODS.items():
        for label, autocast, weights in [
            ("fp32", None, torch.float32),
            ("fp16-autocast", torch.float16, torch.float32),
            ("bf16-autocast", torch.bfloat16, torch.float32),
            ("bf16-weights", torch.bfloat16, torch.bfloat16),
        ]:
            torch.manual_seed(0)
            model = get_peft_model(copy.deepcopy(base).to(device, weights), make_config())
            lines.append(check(f"{method} {label}", model, autocast, frames, input_ids))
            print(lines[-1], flush=True)

    for dtype in (
        torch.float32,
        torch.bfloat16,
        torch.float16,
    ):  # PVLA's solver on CUDA against float64 on CPU
        generator = torch.Generator().manual_seed(0)
        cost = 2 * torch.rand(256, 75, 32, generator=generator, dtype=torch.float64)
        reference = peft_video.partial_ot(cost, mass=0.5, tau=0.05, tol=1e-6, max_iter=5000).cost
        result = peft_video.partial_ot(cost.to(device, dtype), mass=0.5, tau=0.05, max_iter=5000)
        error = ((result.cost.double().cpu() - reference).abs() / reference).max().item()
        limit = 1e-3 if dtype == torch.float32 else 2e-2  # half inputs are rounded before the float32 solve
        ok = bool(torch.isfinite(result.plan).all()) and bool(result.converged.all()) and error < limit
        lines.append(
            f"{'ok  ' if ok else 'FAIL'} partial_ot {str(dtype):<17} max rel. cost error {error:.1e}"
        )
        print(lines[-1], flush=True)

    torch.manual_seed(0)  # READ: cuDNN RNN against the CPU implementation, same weights, float32
    model = get_peft_model(copy.deepcopy(base), METHODS["read"]()).eval()
    layer = next(m for m in model.modules() if isinstance(m, peft_video.tuners.read.ReadLayer))
    torch.nn.init.normal_(layer.pvread_up["default"].weight, std=0.1)
    x = torch.randn(VIDEOS * FRAMES, 50, 768)
    with torch.no_grad():
        cpu = layer(x)
        gpu = copy.deepcopy(layer).to(device)(x.to(device)).cpu()
    error = (cpu - gpu).abs().max().item()
    lines.append(f"{'ok  ' if error < 1e-3 else 'FAIL'} read cuDNN RNN vs CPU        max |diff| {error:.2e}")
    print(lines[-1])
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
