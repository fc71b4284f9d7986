"""push_to_hub uploads our card; a pushed adapter loads by repo id from the local cache, offline, in a fresh process.

The Hub client is intercepted at its network boundary (``HfApi.create_repo`` / ``create_branch`` / ``create_commit``)
and the Hub is put offline, so any other request would fail; everything above that boundary is the real code.
"""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.hf_api import RepoUrl
from peft import get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load
from transformers import CLIPModel
from transformers.utils import PushToHubMixin

import peft_video
from peft_video.integrations import set_card_info

from .helpers import run_fresh
from .tiny_models import NUM_FRAMES, frames, tiny_clip

FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"


class HubRecorder:
    """Stands in for the Hub's server side: records created repos, branches and the files of each commit."""

    def __init__(self) -> None:
        self.repos: list[str] = []
        self.branches: list[tuple[str, str]] = []
        self.commits: list[dict] = []

    def create_repo(self, api: HfApi, repo_id: str, **kwargs) -> RepoUrl:
        self.repos.append(repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, api: HfApi, repo_id: str, *, branch: str, **kwargs) -> None:
        self.branches.append((repo_id, branch))

    def create_commit(
        self, api: HfApi, repo_id: str, operations, *, commit_message: str, **kwargs
    ) -> CommitInfo:
        files = {}
        for op in operations:
            assert isinstance(op, CommitOperationAdd), op
            source = op.path_or_fileobj
            files[op.path_in_repo] = (
                Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
            )
        self.commits.append({"repo_id": repo_id, "message": commit_message, "files": files, **kwargs})
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{FAKE_SHA}",
            commit_message=commit_message,
            commit_description="",
            oid=FAKE_SHA,
        )


@pytest.fixture
def hub(monkeypatch) -> HubRecorder:
    recorder = HubRecorder()
    for name in ("create_repo", "create_branch", "create_commit"):
        bound = getattr(recorder, name)
        monkeypatch.setattr(HfApi, name, lambda api, *args, _f=bound, **kwargs: _f(api, *args, **kwargs))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # any other request raises
    return recorder


def trained_read_clip(base: torch.nn.Module | None = None):
    torch.manual_seed(0)
    config = peft_video.ReadConfig(recurrence_axis="frames", num_frames=NUM_FRAMES, init_weights=False)
    return get_peft_model(base if base is not None else tiny_clip(), config)


def test_push_to_hub_uploads_config_safetensors_and_our_card(hub):
    model = trained_read_clip()
    set_card_info(model, base_model="org/tiny-clip", pvla={"weight": 0.1})
    result = model.push_to_hub("org/tiny-read", tags=["from-push"], commit_message="first adapter")

    assert hub.repos == ["org/tiny-read"] and hub.branches == [] and len(hub.commits) == 1
    commit = hub.commits[0]
    assert result.oid == FAKE_SHA and commit["message"] == "first adapter"
    files = commit["files"]
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}

    config = json.loads(files["adapter_config.json"])
    assert config["peft_type"] == "PEFT_VIDEO_READ" and config["num_frames"] == NUM_FRAMES
    weights = load(files["adapter_model.safetensors"])
    expected = get_peft_model_state_dict(model)
    assert set(weights) == set(expected) and len(weights) == sum(
        "pvread_" in n for n, _ in model.named_parameters()
    )
    assert all(torch.equal(weights[name], expected[name]) for name in weights)

    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "peft" and card.data.base_model == "org/tiny-clip"
    assert {"peft-video", "read", "from-push"} <= set(card.data.tags)
    assert (
        'PeftModel.from_pretrained(base, "org/tiny-read")' in card.text
    )  # loads from the repo, not a temp dir
    assert "| `weight` | `0.1` |" in card.text


def test_push_to_a_branch_creates_it_first(hub):
    trained_read_clip().push_to_hub("org/tiny-read", revision="v1")
    assert hub.branches == [("org/tiny-read", "v1")] and hub.commits[0]["revision"] == "v1"


def test_transformers_own_push_would_replace_the_card(hub, monkeypatch):
    """Why we override push_to_hub: transformers 5's PushToHubMixin writes a generic transformers card over ours."""

    def readme_not_on_hub(*args, **kwargs):
        raise EntryNotFoundError("README.md is not in the new repo")

    monkeypatch.setattr(huggingface_hub.repocard, "hf_hub_download", readme_not_on_hub)
    PushToHubMixin.push_to_hub(trained_read_clip(), "org/tiny-read")
    card = ModelCard(hub.commits[0]["files"]["README.md"].decode())
    assert card.data.library_name == "transformers" and "peft-video" not in (card.data.tags or [])


def save_to_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay ``files`` out as huggingface_hub's cache holds a downloaded repo: snapshots/<commit>/ and refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / FAKE_SHA
    for name, content in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(content)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(FAKE_SHA)
    return snapshot


def test_pushed_adapter_loads_by_repo_id_offline_in_a_fresh_process(hub, tmp_path):
    """Push, put the uploaded files in the local cache, then run the card's own loading code with HF_HUB_OFFLINE=1."""
    cache = tmp_path / "hub-cache"
    base_dir = tmp_path / "base"
    tiny_clip().save_pretrained(base_dir)
    save_to_cache(cache, "org/tiny-clip", {p.name: p.read_bytes() for p in base_dir.iterdir()})
    base = CLIPModel.from_pretrained("org/tiny-clip", cache_dir=cache, local_files_only=True)
    model = trained_read_clip(base).eval()
    model.push_to_hub("org/tiny-read")
    save_to_cache(cache, "org/tiny-read", hub.commits[0]["files"])
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=frames()).pooler_output
    buffer = BytesIO()
    torch.save(expected, buffer)
    (tmp_path / "expected.pt").write_bytes(buffer.getvalue())

    card = ModelCard(hub.commits[0]["files"]["README.md"].decode())
    assert card.data.base_model == "org/tiny-clip"
    code = card.text.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'CLIPModel.from_pretrained("org/tiny-clip")' in code
    out = run_fresh(
        f"import os\nos.environ['HF_HUB_CACHE'] = {str(cache)!r}\n"
        + code
        + f"""
import torch
from tests.tiny_models import frames
model.eval()
with torch.no_grad():
    got = model.get_image_features(pixel_values=frames()).pooler_output
assert torch.equal(got, torch.load({str(tmp_path / "expected.pt")!r})), "outputs differ after loading by repo id"
print(type(model).__name__, model.peft_config["default"].peft_type.value)
"""
    )
    assert out.split() == ["PeftModel", "PEFT_VIDEO_READ"]
