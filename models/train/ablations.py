"""Training options that were measured and not kept: the switches behind ``bench/mining.py``'s
ablation variants (docs/alignment.md, "tried and not kept"), and the code only they run.

:class:`Ablations` is passed to :func:`models.train.contrastive.train_heads` explicitly; its defaults
are the shipped behaviour, which is what ``crossroute train`` runs (it never passes one). Every
field is recorded in the training record's ``config`` next to the :class:`TrainConfig
<models.train.heads.TrainConfig>` fields, so a bundle's manifest says how it was trained
whichever code path produced it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SHIPPED", "Ablations", "EditLoss", "edit_loss", "neighbourhood_batches"]

EditLoss = Literal["symmetric", "i2t", "local"]
EDIT_LOSSES: tuple[EditLoss, ...] = ("symmetric", "i2t", "local")


@dataclass(frozen=True)
class Ablations:
    """Alternatives to the shipped training, each off (= shipped) at its default."""

    mine_skip: int = 0
    """The nearest candidates skipped (after the false-negative filter): unlabelled duplicates the
    filter misses sit at the very top of the list (``mined-skip8``)."""
    mined_batch_share: float = 0.0
    """Stage 2: share of each batch filled with mined neighbourhoods (a seed pair's mined items),
    so that they are negatives of each other in both directions, not only of their anchor
    (``mined-batch``; :func:`neighbourhood_batches`)."""
    mined_batch_per_seed: int = 7
    """Mined neighbours added per seed pair when ``mined_batch_share`` > 0."""
    edit_loss: EditLoss = "symmetric"
    """The edit term's form. ``symmetric`` (shipped): InfoNCE whose image→text direction has the
    batch's texts plus the edits as candidates, and whose text→image direction is the in-batch one
    (so it adds in-batch loss, edits or not: ``bench/mining.py --variants mined-edit-empty``
    measures that part alone); ``i2t``: the image→text direction alone; ``local``: each image
    against its own text and its edits only (:func:`edit_loss`, no in-batch term; images without
    edits add zero to its mean). The last two cost i2t recall on Myntra dev
    (docs/mining-edit-forms-table.md)."""
    edit_moves_temperature: bool = False
    """False (shipped): the edit term reads the learnt temperature but sends it no gradient, so
    that near-miss texts (cosines close to the positive's) do not sharpen the in-batch losses too
    (i2t recall@10 +0.0025 to +0.003 at each of three dev seeds,
    docs/mining-edit-temperature-table.md)."""
    edit_pick: Literal["hardest", "random"] = "hardest"
    """Which of a photo's edits are its negatives each epoch: the ``edit_negatives`` the current
    model finds closest to the photo (shipped), or as many drawn at random (seeded per epoch)."""
    edit_moves_text_head: bool = False
    """False (shipped): the edits are constants to the text head (no gradient flows back through
    them), so only the image head learns the near-miss question and the text space keeps its shape
    (on three Myntra dev seeds: i2t recall@10 +0.008, attr2i nDCG@10 +0.004 on the mean, i2t above
    ``inbatch`` at every seed; docs/mining-edit-text-head-table.md)."""
    edit_min_visibility: float | None = None
    """Leave out edits whose swap the owner's own photo does not show: the photo is not at least
    this much closer (cosine) to the mean photo of its word than to that of the substitute, within
    its category (``models.train.edits._unseen_swaps``; None, shipped: keep them)."""
    false_negative_attributes: bool = True
    """True (shipped): also drop mining candidates whose visible attributes (head noun + visually
    grounded words, see ``models.train.audit.visible_attributes``) equal the anchor's: the same
    thing under another brand."""
    mask_same_attributes: Literal["none", "stage2", "both"] = "both"
    """In-batch pairs with the same visible attributes are not negatives (in these stages; shipped:
    both)."""
    feature_dropout: float = 0.0
    """Dropout on the heads' input features while training (word dropout on the lexical block)."""
    ema_decay: float = 0.0
    """Per-step exponential moving average of the weights (0: off); with it, the averaged weights are
    the ones validated, selected and kept."""


SHIPPED = Ablations()
"""The shipped behaviour: no ablation."""


def edit_loss(
    v: torch.Tensor,
    t: torch.Tensor,
    edit_t: torch.Tensor,
    valid: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of each image ``v[i]`` choosing its own text ``t[i]`` over its one-word edits
    ``edit_t[i]`` (n, m, d; ``valid`` (n, m) marks the real ones): the near-miss question alone,
    no in-batch term (an image without edits adds zero). The ``local`` form of the edit term."""
    pos = scale * (v * t).sum(-1, keepdim=True)
    extra = (scale * torch.einsum("nd,nmd->nm", v, edit_t)).masked_fill(~valid, float("-inf"))
    logits = torch.cat([pos, extra], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(v), dtype=torch.long))


def neighbourhood_batches(
    neighbours: np.ndarray,
    count: int,
    size: int,
    rng: np.random.Generator,
    share: float,
    per_seed: int,
) -> list[np.ndarray]:
    """``count`` batches over the ``len(neighbours)`` pairs; each is ``1 - share`` of a
    permutation, whose first items are seeds, plus up to ``per_seed`` of each seed's mined
    neighbours (rows of ``neighbours``) until the batch is full (random items when neighbours run
    out)."""
    n = len(neighbours)
    take = max(1, round(size * (1 - share)))
    order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(count * take / n) + 1)])
    out = []
    for b in range(count):
        base = order[b * take : (b + 1) * take]
        chosen = list(dict.fromkeys(base.tolist()))
        seen = set(chosen)
        for i in base:
            if len(chosen) >= size:
                break
            extra = [j for j in dict.fromkeys(neighbours[i].tolist()) if j not in seen]
            extra = extra[: min(per_seed, size - len(chosen))]
            chosen.extend(extra)
            seen.update(extra)
        while len(chosen) < size:
            j = int(rng.integers(n))
            if j not in seen:
                chosen.append(j)
                seen.add(j)
        out.append(np.array(chosen, dtype=np.int64))
    return out
