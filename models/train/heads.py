"""The projection heads and the hyperparameters of their shipped training.

Heads: text ``Linear(d_text, D)``, by default D = the encoder's width, initialised as the identity on
the encoder features (and zero on the lexical block, when the text features have one) and trained at a
tenth of the learning rate (LiT-style: text↔text routing starts exactly at raw-encoder cosine and only
moves where the support pairs pull it; ``text_init="pca"`` gives a smaller D from the principal
directions instead); image ``Linear(d_img, H) → GELU → Linear(H, D)``.
Both outputs are L2-normalised; the saved layout is the one ``models.projection.MlpHead`` applies.
Training them: :mod:`models.train.contrastive`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.train.features import PairSet

__all__ = ["Heads", "TrainConfig", "embed", "inference"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the shipped training (recorded in the bundle manifest, next to the
    :class:`~models.train.ablations.Ablations` fields)."""

    dim: int = 384
    hidden: int = 1024
    batch_size: int = 256
    stage1_epochs: int = 12
    stage2_epochs: int = 8
    lr: float = 2e-3
    stage2_lr: float = 5e-4
    weight_decay: float = 1e-4
    init_temperature: float = 0.07
    text_pair_weight: float = 1.0
    text_init: str = "identity"
    """``pca``: top principal directions of the training texts (needs dim <= text dim); ``identity``:
    start as the raw text space (dim == text dim), so text↔text routing starts at raw cosine."""
    text_lr_scale: float = 0.1
    """Learning-rate multiplier of the text head (small values keep it near its initialisation)."""
    mined_per_anchor: int = 8
    mine_pool: int = 64
    """Mined negatives are drawn (seeded) from the nearest ``mine_pool`` candidates that survive the
    filter."""
    mined_weight: float = 0.5
    """Weight of the mined-negative loss, added to the in-batch loss (not replacing it)."""
    edit_negatives: int = 4
    """``mined``: per image, this many one-word edits of its own text (``models.train.edits``:
    "Navy" for "Black"), those the current model finds closest to the image (re-mined each epoch),
    as extra text negatives in stage 2 and in stage 1 from ``edit_from_epoch`` on (needs the
    ``edits`` argument of :func:`train_heads`; 0: off, ``crossroute train --no-edits``)."""
    edit_from_epoch: int | None = 4
    """Stage 1 trains this many epochs on in-batch negatives only (the curriculum), then adds the
    edits (None: stage 2 only)."""
    edit_weight: float = 0.5
    """Weight of the edit term (a symmetric InfoNCE term, see :func:`train_heads`)."""
    false_negative_image_cos: float = 0.92
    """Mined neighbours (and, in ``crossroute train``, one-word edits that are another pair's
    text) whose raw image cosine with the anchor's is above this are left out."""
    false_negative_text_cos: float = 0.92
    holdout: float = 0.1
    """Share of each source's groups held back from training to pick the best epoch of each stage
    (validation recall on *training* data; dev and test splits are never looked at). 0: keep the last
    epoch."""
    seed: int = 20261126


class Heads(nn.Module):
    """Text and image projection heads (``dropout``: on their input features, while training)."""

    def __init__(
        self, text_dim: int, image_dim: int, cfg: TrainConfig, *, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.text = nn.Sequential(nn.Linear(text_dim, cfg.dim))
        self.image = nn.Sequential(
            nn.Linear(image_dim, cfg.hidden),
            nn.GELU(approximate="tanh"),
            nn.Linear(cfg.hidden, cfg.dim),
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.init_temperature)))
        self.dropout = dropout  # on the input features, while training (an ablation)

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(F.dropout(x, self.dropout, self.training)), dim=-1)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(F.dropout(x, self.dropout, self.training)), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(100.0)).exp()

    def tensors(self) -> dict[str, np.ndarray]:
        """The ``{tower}.{i}.{weight|bias}`` layout of ``models.projection.MlpHead``."""
        out: dict[str, np.ndarray] = {}
        for tower, seq in (("text", self.text), ("image", self.image)):
            linears = [m for m in seq if isinstance(m, nn.Linear)]
            for i, lin in enumerate(linears):
                out[f"{tower}.{i}.weight"] = lin.weight.detach().cpu().numpy().astype(np.float32)
                out[f"{tower}.{i}.bias"] = lin.bias.detach().cpu().numpy().astype(np.float32)
        return out


@contextmanager
def inference(model: Heads) -> Iterator[None]:
    """Eval mode (no dropout) and no gradients inside; the model's mode is restored after."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(training)


def embed(model: Heads, pairs: PairSet) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' projected texts and images, in eval mode (no dropout); the model's mode is kept."""
    with inference(model):
        t = model.encode_text(torch.from_numpy(pairs.text_feats)).numpy()
        v = model.encode_image(torch.from_numpy(pairs.image_feats)).numpy()
    return t, v
