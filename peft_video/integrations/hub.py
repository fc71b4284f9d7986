"""Push a peft-video adapter to the Hub with its own model card.

transformers' ``PushToHubMixin.push_to_hub`` (which PeftModel inherits) saves the adapter, then writes over its
README a card it loaded from the Hub or a generic ``library_name: transformers`` one. This push uploads exactly what
``save_pretrained`` wrote, so the card is the peft-video card (``library_name: peft``), regenerated for the repo.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi

from .._version import __version__
from .model_card import unwrap_peft_model, write_model_card


def push_adapter_to_hub(
    model: Any,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    tags: Sequence[str] | None = None,
    max_shard_size: int | str | None = None,
    **save_kwargs: Any,
) -> CommitInfo:
    """Create ``repo_id`` if needed and upload the adapter files and their card in one commit.

    Takes the arguments of transformers' ``push_to_hub``; ``max_shard_size`` is accepted and ignored (adapters are
    one safetensors file), other keyword arguments go to ``save_pretrained`` (e.g. ``selected_adapters``).
    """
    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(
            f"`repo_id` must be a non-empty Hub repository id such as 'user/name', got {repo_id!r}"
        )
    peft_model = unwrap_peft_model(model)
    api = HfApi(library_name="peft-video", library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        peft_model.save_pretrained(folder, **save_kwargs)
        # Regenerate the card for the repo: its how-to-load code loads from `repo_id`, not from the temporary folder.
        write_model_card(peft_model, folder, adapter_location=repo_id, extra_tags=tags)
        operations = [
            CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
            for path in sorted(Path(folder).rglob("*"))
            if path.is_file()
        ]
        if revision is not None and not revision.startswith("refs/pr"):
            api.create_branch(repo_id=repo_id, branch=revision, token=token, exist_ok=True)
        return api.create_commit(
            repo_id=repo_id,
            operations=operations,
            commit_message=commit_message or "Upload peft-video adapter",
            commit_description=commit_description,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )
