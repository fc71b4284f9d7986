"""RAP in one minute: adapt a CLIP for text-video retrieval, train with paired captions, retrieve with DSL.

Runs offline on a tiny open_clip CLIP built from a config, on random videos whose captions are random token ids
(a synthetic pairing the frozen model cannot know). Usage: ``python recipes/rap_quickstart.py [--steps 30]``.
"""

from __future__ import annotations

import argparse
import tempfile

import open_clip
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model
from tqdm.auto import tqdm

import peft_video
from peft_video.video import unflatten_frames, video_to_frame_batch


def tiny_clip() -> open_clip.CLIP:
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"width": 64, "layers": 4, "head_width": 32, "image_size": 32, "patch_size": 8},
        text_cfg={"context_length": 16, "vocab_size": 100, "width": 64, "heads": 2, "layers": 2},
    )


def encode_videos(model, videos: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, T, 3, H, W) -> (B, E): frame embeddings, mean-pooled over time (CLIP4Clip's pooling)."""
    return unflatten_frames(model.encode_image(video_to_frame_batch(videos)), num_frames).mean(dim=1)


def recall_at_1(scores: torch.Tensor) -> float:
    return (scores.argmax(dim=1) == torch.arange(scores.shape[0])).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--videos", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)

    base = tiny_clip()
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, peft_video.RapConfig(num_frames=args.frames, rank=2, top_k=3))
    model.print_trainable_parameters()

    videos = torch.randn(args.videos, args.frames, 3, 32, 32)
    captions = torch.randint(0, 100, (args.videos, 16))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    labels = torch.arange(args.videos)
    for _ in tqdm(range(args.steps), desc="RAP training"):
        text = model.encode_text(captions)
        with peft_video.rap_condition(paired=text):  # training: each video sees its own caption
            video = encode_videos(model, videos, args.frames)
        logits = 20 * F.normalize(video, dim=-1) @ F.normalize(text, dim=-1).T
        loss = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"final loss {loss.item():.4f}")

    model.eval()
    with torch.no_grad():
        text = model.encode_text(captions)
        with peft_video.rap_condition(candidates=text):  # retrieval: each video encoded once, eq. 5 picks
            video = encode_videos(model, videos, args.frames)
        plain = peft_video.retrieval_scores(text, video)  # text -> video
        dsl = peft_video.retrieval_scores(text, video, dual_softmax=True)  # RAP*
    print(
        f"text->video R@1: {recall_at_1(plain):.2f} (with DSL: {recall_at_1(dsl):.2f}, chance {1 / args.videos:.2f})"
    )

    with tempfile.TemporaryDirectory() as workdir:
        model.save_pretrained(workdir)
        fresh = tiny_clip()
        fresh.load_state_dict(base_state)
        reloaded = PeftModel.from_pretrained(fresh, workdir).eval()
        with torch.no_grad(), peft_video.rap_condition(candidates=reloaded.encode_text(captions)):
            same = torch.equal(encode_videos(reloaded, videos, args.frames), video)
    print(f"saved adapter reloads with identical outputs: {same}")


if __name__ == "__main__":
    main()
