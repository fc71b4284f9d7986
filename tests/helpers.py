"""Shared test helpers: run code in a fresh interpreter, and train a few steps."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(code: str, timeout: int = 240) -> str:
    """Run ``code`` in a fresh Python interpreter (repo on sys.path, Hub offline); return stdout or fail loudly."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(ROOT),
    )
    if proc.returncode != 0:
        raise AssertionError(f"fresh interpreter failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def train_steps(
    model: torch.nn.Module, loss_fn, steps: int, lr: float = 1e-2
) -> list[dict[str, torch.Tensor]]:
    """Take ``steps`` AdamW steps on ``loss_fn(model)``; return the gradients seen at each step (by param name)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    grads = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model).backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        optimizer.step()
    return grads
