"""Training a video-text task model with ``transformers.Trainer``: a sampler that keeps order-only pairs together.

Contrastive training only teaches temporal order if a video and its time-reversal (whose captions differ only in
order) meet as negatives in one batch; a random sampler rarely puts them together. :class:`OrderPairSampler`
shuffles whole pairs instead of single videos, which is a choice of batches, not of data: every video is still
seen once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler
from transformers import Trainer

from ...data.schema import NO_PAIR

ORDER_PAIR_COLUMN = "order_pair_id"


class OrderPairSampler(Sampler[int]):
    """Indices in a random order of whole order-only pairs, partners adjacent; videos without a pair (-1) alone.

    With every video in a pair and an even batch size, both members of each pair land in the same batch. The order
    is a function of ``seed`` and the epoch (``set_epoch``, which Accelerate calls), so runs are reproducible.
    """

    def __init__(self, order_pair_ids: Sequence[int], seed: int = 0) -> None:
        groups: dict[int, list[int]] = {}
        singles: list[list[int]] = []
        for index, pair in enumerate(order_pair_ids):
            pair = int(pair)
            if pair == NO_PAIR:
                singles.append([index])
            else:
                groups.setdefault(pair, []).append(index)
        if not groups and not singles:
            raise ValueError("`order_pair_ids` is empty: nothing to sample")
        self.groups = [*groups.values(), *singles]
        self.size = len(order_pair_ids)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for group in torch.randperm(len(self.groups), generator=generator).tolist():
            yield from self.groups[group]


class VideoTextTrainer(Trainer):
    """``Trainer`` that samples order-only pairs together when the training set has an ``order_pair_id`` column.

    Pass ``keep_order_pairs=False`` for the plain random sampler. Use ``remove_unused_columns=False`` in the
    ``TrainingArguments``: the collator needs the raw ``frames`` and ``caption`` columns.
    """

    def __init__(self, *args, keep_order_pairs: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.keep_order_pairs = keep_order_pairs

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset
        columns = getattr(dataset, "column_names", None) or ()
        if self.keep_order_pairs and ORDER_PAIR_COLUMN in columns:
            return OrderPairSampler(dataset[ORDER_PAIR_COLUMN], seed=self.args.data_seed or self.args.seed)
        return super()._get_train_sampler(train_dataset)
