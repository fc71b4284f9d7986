"""Pretrain the shipped tiny BART and T5 by denoising the synthetic summarization world's text (deterministic, CPU).

    PYTHONPATH=. python recipes/pretrain_tiny_summarizers.py             # rebuild both assets
    PYTHONPATH=. python recipes/pretrain_tiny_summarizers.py --kind t5   # one of them

Each model (d_model 64, 2 encoder + 2 decoder layers, 4 heads, FFN 128; a word-level tokenizer over the world's
vocabulary) learns BART-style text infilling on the text-only ``pretrain`` split: in every transcript or summary one
span of 1-3 words is replaced by one mask token (BART's ``<mask>``, T5's first sentinel ``<extra_id_0>``) and the
model writes the whole text back. AdamW, peak learning rate 3e-3, linear warm-up and cosine decay over 1500 steps of
32 texts: well under a minute per model on one thread. The assets are plain ``BartForConditionalGeneration`` /
``T5ForConditionalGeneration`` checkpoints with their tokenizers; ``pretraining.json`` records the settings, the
time and the held-out reconstruction accuracy. The same seed and thread count give the same bytes on one machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

from peft_video.tasks.summarization.synthetic import pretraining_texts, vocabulary
from peft_video.tasks.summarization.tokenizer import build_summarization_tokenizer

ASSETS = Path(__file__).resolve().parents[1] / "peft_video" / "assets"


def tiny_model(kind: str, tokenizer) -> BartForConditionalGeneration | T5ForConditionalGeneration:
    """The tiny architecture of ``kind`` for ``tokenizer``'s vocabulary."""
    vocab = len(tokenizer)
    if kind == "bart":
        config = BartConfig(
            vocab_size=vocab,
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            max_position_embeddings=128,
            dropout=0.1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.eos_token_id,
            forced_bos_token_id=None,
            forced_eos_token_id=tokenizer.eos_token_id,
        )
        return BartForConditionalGeneration(config)
    config = T5Config(
        vocab_size=vocab,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=64,
        dropout_rate=0.1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(config)


def corrupt(words: list[str], mask: str, generator: torch.Generator) -> str:
    """The text with one span of 1-3 words replaced by ``mask`` (text infilling)."""
    span = int(torch.randint(1, 4, (1,), generator=generator))
    span = min(span, max(1, len(words) - 1))
    start = int(torch.randint(0, len(words) - span + 1, (1,), generator=generator))
    return " ".join([*words[:start], mask, *words[start + span :]])


def batches(texts: list[str], tokenizer, batch_size: int, generator: torch.Generator):
    """Endless shuffled (corrupted input, original target) batches, tokenised and padded."""
    while True:
        order = torch.randperm(len(texts), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = [texts[i] for i in order[start : start + batch_size]]
            sources = [corrupt(text.split(), tokenizer.mask_token, generator) for text in chosen]
            inputs = tokenizer(sources, padding=True, return_tensors="pt")
            labels = tokenizer(text_target=chosen, padding=True, return_tensors="pt")["input_ids"]
            labels[labels == tokenizer.pad_token_id] = -100
            yield {**inputs, "labels": labels}


@torch.no_grad()
def reconstruction_accuracy(model, tokenizer, texts: list[str], generator: torch.Generator) -> float:
    """Share of held-out corrupted texts that greedy decoding writes back exactly."""
    model.eval()
    sources = [corrupt(text.split(), tokenizer.mask_token, generator) for text in texts]
    inputs = tokenizer(sources, padding=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=64, num_beams=1, do_sample=False)
    decoded = tokenizer.batch_decode(out, skip_special_tokens=True)
    return sum(" ".join(d.split()) == t for d, t in zip(decoded, texts, strict=True)) / len(texts)


def pretrain(kind: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    tokenizer = build_summarization_tokenizer(vocabulary(), kind)
    model = tiny_model(kind, tokenizer)
    texts = pretraining_texts(args.texts, seed=args.seed)
    held_out = pretraining_texts(args.texts + 200, seed=args.seed)[args.texts :]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    def schedule(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    stream = batches(texts, tokenizer, args.batch_size, generator)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.train()
    for step in range(args.steps):
        loss = model(**next(stream)).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"{kind} step {step} loss {loss.item():.4f}", flush=True)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    accuracy = reconstruction_accuracy(
        model, tokenizer, held_out, torch.Generator().manual_seed(args.seed + 1)
    )
    output = ASSETS / f"tiny_{kind}_summarizer"
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    record = {
        "recipe": "recipes/pretrain_tiny_summarizers.py",
        "kind": kind,
        "args": {k: v for k, v in vars(args).items() if k != "kind"},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu, 1),
        "torch": torch.__version__,
        "held_out_exact_reconstruction": round(accuracy, 4),
    }
    (output / "pretraining.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record), flush=True)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", choices=("bart", "t5", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (fixed so sums reproduce)")
    parser.add_argument(
        "--texts", type=int, default=4000, help="pretraining texts (transcripts and summaries)"
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for kind in ("bart", "t5") if args.kind == "both" else (args.kind,):
        pretrain(kind, args)


if __name__ == "__main__":
    main()
