"""Mixed precision and data parallel training with Accelerate, on CPU.

- a bf16 autocast training step of every peft-video tuner is finite, matches float32, and changes only the adapter;
- the plain Accelerate recipe runs in bf16 and fp16;
- two gloo processes (``accelerate launch``) keep identical adapters and match one process on the same global batch.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from peft import PeftConfig, PeftType, get_peft_model
from safetensors.torch import load_file

import peft_video
from peft_video.integrations.accelerate_utils import adapter_vector, check_launch

from .helpers import ROOT
from .tiny_models import NUM_FRAMES, VIDEOS, frames, tiny_clip, tokens

# One config per peft-video method, for a tiny CLIP fed B*T frames. A new method adds its line here.
TUNER_CONFIGS: dict[str, Callable[[], PeftConfig]] = {
    "read": lambda: peft_video.ReadConfig(recurrence_axis="frames", num_frames=NUM_FRAMES),
    "token_mix": lambda: peft_video.TokenMixConfig(num_frames=NUM_FRAMES),
    # ASA needs a sentence condition this generic loss cannot give: test_rap.py runs RAP with ASA under autocast
    "rap": lambda: peft_video.RapConfig(num_frames=NUM_FRAMES, rank=2, use_asa=False),
}


def video_text_loss(model: torch.nn.Module) -> torch.Tensor:
    """Mean over videos of 1 - cos(mean frame embedding, caption embedding), through the model's forward."""
    outputs = model(input_ids=tokens(), pixel_values=frames())
    video = outputs.image_embeds.view(VIDEOS, NUM_FRAMES, -1).mean(dim=1)
    return (1 - F.cosine_similarity(video.float(), outputs.text_embeds.float(), dim=-1)).mean()


def video_text_plus_pvla_loss(model: torch.nn.Module) -> torch.Tensor:
    """The video-text loss plus PVLA over every vision/text block pair (per-frame CLS vs caption tokens)."""
    source = peft_video.TwoTower(
        video_modules=r"vision_model\.encoder\.layers\.\d+",
        text_modules=r"text_model\.encoder\.layers\.\d+",
        video_transform=lambda hidden: peft_video.video.unflatten_frames(hidden[:, 0], NUM_FRAMES),
        text_mask=None,
    )
    with peft_video.attach_pvla(model, peft_video.PVLALoss(), source, add_to_loss=False) as pvla:
        loss = video_text_loss(model)
    assert torch.isfinite(pvla.term)
    return loss + 0.5 * pvla.term


# Loss terms trained in mixed precision; each is added to the same tuner models.
LOSSES: dict[str, Callable[[torch.nn.Module], torch.Tensor]] = {
    "video_text": video_text_loss,
    "video_text+pvla": video_text_plus_pvla_loss,
}


def registered_methods() -> set[str]:
    return {
        n.removeprefix("PEFT_VIDEO_").lower() for n in PeftType.__members__ if n.startswith("PEFT_VIDEO_")
    }


def test_every_registered_method_has_a_mixed_precision_case():
    assert registered_methods() <= set(TUNER_CONFIGS), registered_methods() - set(TUNER_CONFIGS)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("method", sorted(TUNER_CONFIGS))
def test_bf16_autocast_steps_are_finite_match_float32_and_change_only_the_adapter(method, loss_name):
    loss_fn = LOSSES[loss_name]
    torch.manual_seed(0)
    model = get_peft_model(tiny_clip(), TUNER_CONFIGS[method]())
    reference = loss_fn(model).item()  # float32, grad enabled (PVLA is only added in training forwards)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0
    )
    for step in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(model)
            embeds = model(input_ids=tokens(), pixel_values=frames()).image_embeds
        assert embeds.dtype == torch.bfloat16  # autocast is really on
        assert torch.isfinite(loss)
        if step == 0:
            assert math.isclose(loss.item(), reference, rel_tol=2e-2, abs_tol=2e-2)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, name  # adapter and base weights stay float32 under autocast
        changed = not torch.equal(before[name], p.detach())
        assert changed == (name in trainable), f"{name}: changed={changed}, trainable={name in trainable}"


def load_recipe():
    spec = importlib.util.spec_from_file_location("accelerate_loop", ROOT / "recipes" / "accelerate_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one global state per process; each in-process recipe run starts from a clean one."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def recipe_args(output_dir, *extra: str) -> list[str]:
    return [
        "--cpu",
        "--steps",
        "4",
        "--batch_size",
        "4",
        "--frames",
        "4",
        "--videos",
        "16",
        "--output_dir",
        str(output_dir),
        *extra,
    ]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_recipe_trains_in_mixed_precision(tmp_path, precision, fresh_accelerate_state):
    report = load_recipe().main(recipe_args(tmp_path / "adapter", "--mixed_precision", precision))
    assert report["mixed_precision"] == precision and report["processes"] == 1
    assert (
        all(math.isfinite(loss) for loss in report["losses"]) and report["losses"][-1] < report["losses"][0]
    )
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert f"{precision} mixed precision" in card and "final_loss" in card
    assert load_file(tmp_path / "adapter" / "adapter_model.safetensors")


def test_adapter_vector_rejects_a_model_without_trainable_parameters():
    model = get_peft_model(tiny_clip(), TUNER_CONFIGS["read"]())
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="`model` has no trainable parameters"):
        adapter_vector(model)


def test_a_multi_process_launch_that_fell_back_to_single_processes_is_an_error(
    monkeypatch, fresh_accelerate_state
):
    monkeypatch.setenv(
        "WORLD_SIZE", "2"
    )  # what `accelerate launch --num_processes 2` sets, on a machine without GPUs
    accelerator = Accelerator()  # no cpu=True: each process would train alone
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE=2.*num_processes=1.*cpu=True"):
        check_launch(accelerator)


@pytest.mark.slow
def test_two_gloo_processes_stay_in_sync_and_match_one_process(tmp_path, fresh_accelerate_state):
    """`accelerate launch` with 2 CPU processes, 2 videos each, vs one process with 4 videos a step: same adapter."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "recipes" / "accelerate_loop.py"),
        *recipe_args(tmp_path / "ddp", "--batch_size", "2", "--report", str(tmp_path / "ddp.json")),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["processes"] == 2 and ddp["global_batch"] == 4
    assert ddp["max_rank_divergence"] == 0.0  # the replicas' adapters are bit-identical after every step

    single = load_recipe().main(recipe_args(tmp_path / "single", "--batch_size", "4"))
    assert single["processes"] == 1 and single["global_batch"] == 4
    torch.testing.assert_close(
        torch.tensor(ddp["losses"]), torch.tensor(single["losses"]), atol=1e-5, rtol=1e-5
    )
    ddp_weights = load_file(tmp_path / "ddp" / "adapter_model.safetensors")
    single_weights = load_file(tmp_path / "single" / "adapter_model.safetensors")
    assert ddp_weights.keys() == single_weights.keys()
    for name in ddp_weights:
        torch.testing.assert_close(ddp_weights[name], single_weights[name], atol=1e-6, rtol=1e-5)
    assert any(w.abs().max() > 0 for n, w in single_weights.items() if "pvread_up" in n)  # it did train
