"""Model cards: filled from the model at save time, one template per method, loading code that runs."""

from __future__ import annotations

import importlib.resources
import re
import subprocess
import sys
import warnings
import zipfile
from string import Template

import pytest
import torch
from huggingface_hub import ModelCard
from peft import LoraConfig, PeftModel, PeftType, get_peft_model

import peft_video
from peft_video.integrations import set_card_info
from peft_video.integrations.model_card import CARD_END, CARD_START, card_fields, load_template

from .helpers import ROOT, run_fresh
from .tiny_models import NUM_FRAMES, frames, tiny_clip, tokens


def read_parameters(d: int, k: int, gates: int = 1) -> int:
    """READ's closed-form size per adapted module: 2dk + d + k + g(2k^2 + 2k)."""
    return 2 * d * k + d + k + gates * (2 * k * k + 2 * k)


def read_clip(**kwargs) -> PeftModel:
    torch.manual_seed(0)
    config = peft_video.ReadConfig(recurrence_axis="frames", num_frames=NUM_FRAMES, **kwargs)
    return get_peft_model(tiny_clip(), config)


def python_block(card_text: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card_text, flags=re.S)
    assert len(blocks) == 1, blocks
    return blocks[0]


def test_save_pretrained_writes_the_filled_read_card(tmp_path):
    model = read_clip(r=4, rnn_type="gru")
    set_card_info(
        model,
        base_model="org/tiny-clip",
        training_data="40 synthetic clips with captions",
        datasets="org/tiny-videos",
        metrics={"R@1": 0.625, "loss": 1.5},
        pvla={"weight": 0.1, "tau": 0.05, "n_iter": 20},
        tags=["my-experiment"],
    )
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")

    assert card.data.library_name == "peft"
    assert card.data.base_model == "org/tiny-clip"
    assert card.data.datasets == ["org/tiny-videos"]
    assert {"peft-video", "read", "my-experiment"} <= set(card.data.tags)
    text = card.text
    assert "${" not in text and text.count(CARD_START) == 1 and text.count(CARD_END) == 1
    # trainable parameters: the closed form for two GRU-READ modules of width 32 with k = 4
    expected = 2 * read_parameters(32, 4, gates=3)
    assert f"Trainable parameters: {expected:,} (" in text
    assert "vision_model.encoder.layers.0.mlp" in text and "vision_model.encoder.layers.1.mlp" in text
    assert f"Frames per video: {NUM_FRAMES} (" in text
    assert "| `rnn_type` | `gru` |" in text and "| `r` | `4` |" in text
    assert "| `tau` | `0.05` |" in text and "| `n_iter` | `20` |" in text
    assert "40 synthetic clips with captions" in text and "| `R@1` | 0.625 |" in text
    assert "import peft_video" in python_block(text)
    assert "arXiv:2312.06950" in text and "@inproceedings{nguyen2024readpvla" in text


def clip_encoder_layer_parameters(d: int, ffn: int) -> int:
    """A CLIP encoder layer: q, k, v, out projections, two LayerNorms, a two-layer MLP."""
    return 4 * (d * d + d) + 2 * (2 * d) + (d * ffn + ffn) + (ffn * d + d)


def test_token_mix_card_counts_the_fine_tuned_block(tmp_path):
    torch.manual_seed(0)
    model = get_peft_model(tiny_clip(), peft_video.TokenMixConfig(num_frames=NUM_FRAMES))
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "peft" and {"peft-video", "token-mix"} <= set(card.data.tags)
    assert f"Trainable parameters: {clip_encoder_layer_parameters(32, 64):,} (" in card.text  # the last block
    assert "vision_model.encoder.layers.1.self_attn" in card.text and "layers.0." not in card.text
    assert "@inproceedings{liu2023tokenmixing" in card.text and "${" not in card.text


def test_card_without_recorded_info_says_so_and_keeps_local_paths_out_of_metadata(tmp_path):
    base = tiny_clip()
    base.save_pretrained(tmp_path / "base")
    from transformers import CLIPModel

    model = get_peft_model(
        CLIPModel.from_pretrained(tmp_path / "base"),
        peft_video.ReadConfig(recurrence_axis="tokens"),
    )
    model.save_pretrained(tmp_path / "adapter")
    card = ModelCard.load(tmp_path / "adapter" / "README.md")
    assert "base_model" not in card.data.to_dict()  # a local directory is not a Hub id
    assert f"Base model: {tmp_path / 'base'}" in card.text
    assert "No PVLA settings were recorded" in card.text
    assert card.text.count("Not recorded.") == 2  # training data and metrics
    assert "not fixed in the config" in card.text  # tokens axis: no num_frames


def test_card_loading_code_runs_in_a_fresh_process(tmp_path):
    """The card's own how-to-load code, run as written, restores both adapters (the second from its subfolder)."""
    from transformers import CLIPModel

    tiny_clip().save_pretrained(tmp_path / "base")
    torch.manual_seed(0)
    model = get_peft_model(
        CLIPModel.from_pretrained(tmp_path / "base"),
        peft_video.ReadConfig(recurrence_axis="frames", num_frames=NUM_FRAMES, init_weights=False),
    )
    model.add_adapter("text", peft_video.ReadConfig(recurrence_axis="tokens", init_weights=False))
    model.base_model.set_adapter(["default", "text"])
    model.eval()
    with torch.no_grad():
        image = model.get_image_features(pixel_values=frames()).pooler_output
        text = model.get_text_features(input_ids=tokens()).pooler_output
    torch.save({"image": image, "text": text}, tmp_path / "expected.pt")
    model.save_pretrained(tmp_path / "adapter")

    code = python_block((tmp_path / "adapter" / "README.md").read_text())
    assert "model.load_adapter(" in code and 'subfolder="text"' in code
    out = run_fresh(
        code
        + f"""
import torch
from tests.tiny_models import frames, tokens
model.base_model.set_adapter(["default", "text"])
model.eval()
expected = torch.load({str(tmp_path / "expected.pt")!r})
with torch.no_grad():
    assert torch.equal(model.get_image_features(pixel_values=frames()).pooler_output, expected["image"])
    assert torch.equal(model.get_text_features(input_ids=tokens()).pooler_output, expected["text"])
print(sorted(model.peft_config))
"""
    )
    assert out.strip() == "['default', 'text']"


def test_saving_again_replaces_our_block_and_keeps_what_others_wrote(tmp_path):
    model = read_clip()
    (tmp_path / "README.md").write_text(
        "---\nlicense: mit\ntags:\n- trainer-tag\n---\n\n# Training summary\n\nlearning_rate: 0.001\n"
    )
    set_card_info(model, metrics={"loss": 2.0})
    model.save_pretrained(tmp_path)
    set_card_info(model, metrics={"loss": 1.0})
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "peft"
    assert {"trainer-tag", "peft-video", "read"} <= set(card.data.tags)
    assert card.text.count(CARD_START) == 1 and "learning_rate: 0.001" in card.text
    assert "| `loss` | 1 |" in card.text and "| `loss` | 2 |" not in card.text


def test_other_peft_methods_keep_peft_card(tmp_path):
    model = get_peft_model(tiny_clip(), LoraConfig(target_modules=["q_proj"], r=2))
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "peft"
    assert "peft-video" not in (card.data.tags or []) and CARD_START not in card.text
    assert "- PEFT " in card.text  # peft's own framework-versions line


def registered_methods() -> list[str]:
    return [
        name.removeprefix("PEFT_VIDEO_").lower()
        for name in PeftType.__members__
        if name.startswith("PEFT_VIDEO_")
    ]


def test_every_registered_method_has_a_template_using_only_known_fields():
    fields = set(card_fields(read_clip(), adapter_location="here"))
    methods = registered_methods()
    assert "read" in methods
    for method in {*methods, "read", "rap", "token_mix", "_generic"}:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a missing template warns and falls back: fail instead
            text = load_template(method)
        card = ModelCard(text)
        assert card.data.library_name == "peft"
        assert "peft-video" in card.data.tags
        placeholders = set(Template(card.text).get_identifiers())
        assert placeholders <= fields, f"{method}.md uses unknown fields {placeholders - fields}"
        required = {"base_model", "peft_type", "trainable_parameters", "target_modules", "num_frames", "pvla"}
        assert required | {"training_data", "metrics", "how_to_load"} <= placeholders, method
        for heading in ("## PVLA settings", "## Training data", "## Metrics", "## How to load"):
            assert heading in card.text, (method, heading)
        if method != "_generic":
            assert "## Citation" in card.text and "@inproceedings{" in card.text
            assert method.replace("_", "-") in card.data.tags


@pytest.mark.filterwarnings("default")
def test_a_method_without_template_gets_the_generic_card_with_a_warning():
    with pytest.warns(UserWarning, match="no model card template for method 'not_a_method'"):
        text = load_template("not_a_method")
    assert text == load_template("_generic")


def test_set_card_info_rejects_bad_input():
    model = read_clip()
    with pytest.raises(TypeError, match="`pvla` must be a mapping or a dataclass instance, got int"):
        set_card_info(model, pvla=3)
    with pytest.raises(TypeError, match="`datasets` must be a string or a sequence of non-empty strings"):
        set_card_info(model, datasets=[""])
    with pytest.raises(TypeError, match="`model` must be a peft PeftModel .* got Linear"):
        set_card_info(torch.nn.Linear(2, 2), metrics={"a": 1})


def test_hooks_wrap_peft_once():
    from peft_video.integrations import peft_hooks

    before = PeftModel.create_or_update_model_card, PeftModel.push_to_hub
    peft_hooks.install()
    assert (PeftModel.create_or_update_model_card, PeftModel.push_to_hub) == before
    original = PeftModel.create_or_update_model_card.__wrapped__
    assert not hasattr(original, "__wrapped__") and original.__module__ == "peft.peft_model"


def test_templates_ship_in_the_wheel(tmp_path):
    """The pyproject package-data rule puts model_cards/*.md into the installed package (via peft_video/model_cards)."""
    assert (importlib.resources.files("peft_video") / "model_cards" / "read.md").is_file()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("peft_video-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (ROOT / "model_cards").glob("*.md"):
        assert f"peft_video/model_cards/{template.name}" in names


def test_task_model_records_its_backbone_in_the_adapter_config_and_card(tmp_path):
    from transformers import CLIPModel

    from peft_video.tasks import load_clip_backbone, prepare_model
    from peft_video.tasks.retrieval import VideoTextRetrievalModel

    tiny_clip().save_pretrained(tmp_path / "clip")
    model = prepare_model(
        VideoTextRetrievalModel(CLIPModel.from_pretrained(tmp_path / "clip")), "read", NUM_FRAMES
    )
    assert model.peft_config["default"].base_model_name_or_path == str(tmp_path / "clip")
    model.save_pretrained(tmp_path / "adapter")
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert str(tmp_path / "clip") in card and "unnamed" not in card
    shipped = VideoTextRetrievalModel(load_clip_backbone().model)
    assert shipped.name_or_path.endswith("tiny_clip")


def test_loading_without_import_fails_as_the_saved_config_and_card_say(tmp_path):
    """In a process that never imported peft_video, every loading entry point raises exactly the error that
    adapter_config.json's `how_to_load` and the card quote, so the saved files point at the cure."""
    model = get_peft_model(tiny_clip(), peft_video.ReadConfig(num_frames=NUM_FRAMES))
    model.save_pretrained(tmp_path / "adapter")
    tiny_clip().save_pretrained(tmp_path / "base")
    import json

    note = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["how_to_load"]
    assert "import peft_video" in note and "KeyError: 'PEFT_VIDEO_READ'" in note
    assert "KeyError: 'PEFT_VIDEO_READ'" in (tmp_path / "adapter" / "README.md").read_text()
    out = run_fresh(
        f"""
        import sys
        from peft import AutoPeftModel, PeftConfig, PeftModel
        from transformers import CLIPModel
        adapter, base = {str(tmp_path / "adapter")!r}, {str(tmp_path / "base")!r}
        calls = {{
            "PeftConfig": lambda: PeftConfig.from_pretrained(adapter),
            "PeftModel": lambda: PeftModel.from_pretrained(CLIPModel.from_pretrained(base), adapter),
            "AutoPeftModel": lambda: AutoPeftModel.from_pretrained(adapter),
            "load_adapter": lambda: CLIPModel.from_pretrained(base).load_adapter(adapter),
        }}
        for name, call in calls.items():
            try:
                call()
                print(name, "loaded")
            except Exception as error:
                print(name, f"{{type(error).__name__}}: {{error}}")
        assert "peft_video" not in sys.modules
        """
    )
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines()[-4:])
    assert lines == {
        name: "KeyError: 'PEFT_VIDEO_READ'"
        for name in ("PeftConfig", "PeftModel", "AutoPeftModel", "load_adapter")
    }
