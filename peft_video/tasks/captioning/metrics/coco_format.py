"""COCO-format caption files: write predictions as results, read results and ground truth back, pair them up, score.

Formats (as Token Mixing's and LAVIS's caption code write them):

- results: a JSON list ``[{"image_id": id, "caption": str}, ...]``, one entry per image (video);
- ground truth: ``{"images": [{"id": id}, ...], "annotations": [{"image_id": id, "id": ann_id, "caption": str}, ...]}``
  (other keys are ignored), each image with one or more annotations.

Image ids are ints or strings. As with pycocotools' ``loadRes`` + ``COCOEvalCap``, results may only name images of the
ground truth, and examples are scored in the ground truth's image order. Unlike LAVIS (which scores whatever images
the results cover) :func:`align_to_ground_truth` by default also requires every ground-truth image to have a
result, so that a half-finished prediction file is an error, not a score; ``require_all=False`` scores the covered
subset.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peft_video.tasks.captioning.metrics.coco_scoring import coco_caption_scores
from peft_video.tasks.text_inputs import check_reference_list

ImageId = int | str
"""A COCO image (video) id: an int, or a string in some video datasets."""


def _check_image_id(value: Any, where: str) -> ImageId:
    """``value`` if it is an int (not a bool) or a string; else a ``ValueError`` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{where} must be an int or a string, got {type(value).__name__}: {value!r:.80}")
    return value


def _load_json(path: str | Path, what: str) -> Any:
    """The JSON content of ``path``, with the file named in a decoding error."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} file {str(path)!r} is not valid JSON: {err}") from err


def write_coco_results(path: str | Path, image_ids: Sequence[ImageId], predictions: Sequence[str]) -> Path:
    """Write ``[{"image_id", "caption"}]`` (COCO results) for one caption per image to ``path``; return the path."""
    image_ids, predictions = list(image_ids), list(predictions)
    if len(image_ids) != len(predictions):
        raise ValueError(
            f"`image_ids` and `predictions` must match one to one, got {len(image_ids)} ids and "
            f"{len(predictions)} predictions"
        )
    seen: set[ImageId] = set()
    for i, (image_id, caption) in enumerate(zip(image_ids, predictions, strict=True)):
        _check_image_id(image_id, f"`image_ids[{i}]`")
        if image_id in seen:
            raise ValueError(
                f"`image_ids[{i}]` repeats image id {image_id!r}: COCO results hold one caption per image"
            )
        seen.add(image_id)
        if not isinstance(caption, str):
            raise ValueError(
                f"`predictions[{i}]` must be a string, got {type(caption).__name__}: {caption!r:.80}"
            )
    path = Path(path)
    path.write_text(
        json.dumps(
            [{"image_id": i, "caption": c} for i, c in zip(image_ids, predictions, strict=True)],
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    return path


def read_coco_results(path: str | Path) -> dict[ImageId, str]:
    """Read a COCO results file into ``{image_id: caption}`` in file order (one caption per image id)."""
    data = _load_json(path, "results")
    if not isinstance(data, list):
        raise ValueError(
            f"results file {str(path)!r} must hold a JSON list of {{image_id, caption}}, got "
            f"{type(data).__name__}"
        )
    results: dict[ImageId, str] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
            raise ValueError(
                f"results[{i}] in {str(path)!r} must be an object with image_id and caption, got "
                f"{entry!r:.120}"
            )
        image_id = _check_image_id(entry["image_id"], f"results[{i}]['image_id']")
        if image_id in results:
            raise ValueError(
                f"results[{i}] repeats image id {image_id!r}: COCO results hold one caption per image"
            )
        if not isinstance(entry["caption"], str):
            raise ValueError(f"results[{i}]['caption'] must be a string, got {entry['caption']!r:.80}")
        results[image_id] = entry["caption"]
    return results


def read_coco_ground_truth(path: str | Path) -> dict[ImageId, list[str]]:
    """Read a COCO caption ground-truth file into ``{image_id: [reference, ...]}`` in the order of ``images``
    (references in annotation order); every annotation must name a listed image and every image needs one."""
    data = _load_json(path, "ground-truth")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise ValueError(
            f"ground-truth file {str(path)!r} must be an object with lists `images` and `annotations`"
        )
    references: dict[ImageId, list[str]] = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image:
            raise ValueError(f"images[{i}] in {str(path)!r} must be an object with an id, got {image!r:.120}")
        image_id = _check_image_id(image["id"], f"images[{i}]['id']")
        if image_id in references:
            raise ValueError(f"images[{i}] in {str(path)!r} repeats image id {image_id!r}")
        references[image_id] = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            raise ValueError(
                f"annotations[{i}] in {str(path)!r} must be an object with image_id and caption, got "
                f"{ann!r:.120}"
            )
        if ann["image_id"] not in references:
            raise ValueError(
                f"annotations[{i}] in {str(path)!r} names image id {ann['image_id']!r}, not in `images`"
            )
        references[ann["image_id"]].append(ann["caption"])
    for image_id, refs in references.items():
        check_reference_list(refs, f"the references of image {image_id!r} in {str(path)!r}")
    return references


def align_to_ground_truth(
    results: Mapping[ImageId, str], ground_truth: Mapping[ImageId, Sequence[str]], *, require_all: bool = True
) -> tuple[list[ImageId], list[str], list[list[str]]]:
    """Pair results with ground truth by image id: ``(image_ids, predictions, references)`` in ground-truth order.

    Every result must name a ground-truth image; with ``require_all`` every ground-truth image needs a result.
    """
    unknown = [image_id for image_id in results if image_id not in ground_truth]
    if unknown:
        raise ValueError(f"results name {len(unknown)} image ids not in the ground truth: {unknown[:10]!r}")
    if require_all:
        missing = [image_id for image_id in ground_truth if image_id not in results]
        if missing:
            raise ValueError(
                f"{len(missing)} ground-truth images have no result: {missing[:10]!r} (pass require_all=False to "
                "score only the images the results cover)"
            )
    image_ids = [image_id for image_id in ground_truth if image_id in results]
    return image_ids, [results[i] for i in image_ids], [list(ground_truth[i]) for i in image_ids]


def score_coco_files(
    results_path: str | Path, ground_truth_path: str | Path, *, require_all: bool = True, **kwargs: Any
) -> dict[str, float]:
    """:func:`~peft_video.tasks.captioning.metrics.coco_scoring.coco_caption_scores` of a COCO results file against a
    COCO ground-truth file (``kwargs``: ``meteor``, ``percent``)."""
    _, predictions, references = align_to_ground_truth(
        read_coco_results(results_path), read_coco_ground_truth(ground_truth_path), require_all=require_all
    )
    return coco_caption_scores(predictions, references, **kwargs)
