"""Contrastive training of the projection heads (torch, CPU, deterministic).

Heads: text ``Linear(d_text, D)``, by default D = the encoder's width, initialised as the identity on
the encoder features (and zero on the lexical block, when the text features have one) and trained at a
tenth of the learning rate (LiT-style: text↔text routing starts exactly at raw-encoder cosine and only
moves where the support pairs pull it; ``text_init="pca"`` gives a smaller D from the principal
directions instead); image ``Linear(d_img, H) → GELU → Linear(H, D)``.
Both outputs are L2-normalised; the saved layout is the one ``models.projection.MlpHead`` applies.

Loss: symmetric InfoNCE with a learnable temperature (CLIP's ``logit_scale``, clamped at 100) and
group-aware masking — pairs that share a group are never negatives of each other — plus the same loss
on support text↔article pairs through the text head, so ticket routing learns rather than drifts.

Curriculum: stage 1 uses in-batch negatives only for its first ``edit_from_epoch`` epochs; with
``mined``, each image then also gets one-word edits of its own text (``models.train.edits``) as
negatives, the ones the current model finds hardest, re-mined every epoch (an extra InfoNCE term
that reads the learnt temperature without training it). Stage 2 mines, with the
stage-1 model, each pair's nearest *other-group* items in the training corpus and adds them as extra
negatives, after removing likely false negatives: candidates whose raw image features or raw texts are
near-identical to the positive's (the same product under another title) or that show the same visible
attributes. Stage 2 starts from stage 1 at a lower LR and keeps the edits.

Model selection: ``holdout`` of each source's groups is held back from training; each stage ends on
its epoch with the best retrieval on those held-back *training* pairs (epoch 0, where the stage
started, included), never on dev or test data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.projection import l2_normalize
from models.train.ablations import (
    EDIT_LOSSES,
    SHIPPED,
    Ablations,
    edit_loss,
    neighbourhood_batches,
)
from models.train.edits import EditSet
from models.train.features import PairSet

__all__ = [
    "Heads",
    "TrainConfig",
    "attribute_sets",
    "info_nce",
    "mine_edits",
    "mine_negatives",
    "split_holdout",
    "train_heads",
    "validation_score",
]

Progress = Callable[[str, int, int], None]
Observer = Callable[[str, int, "Heads"], None]
"""Called with (stage name, epoch, model in eval mode) at each stage's start (epoch 0) and after each
of its epochs: a diagnostic hook (``bench/mining.py --trace``); it must not change the model."""


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


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    groups: torch.Tensor,
    scale: torch.Tensor,
    extra_b: torch.Tensor | None = None,
    also_same: torch.Tensor | None = None,
    extra_valid: torch.Tensor | None = None,
    *,
    symmetric: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE between unit vectors ``a[i]`` ↔ ``b[i]`` (``symmetric=False``: the a→b
    direction alone).

    Off-diagonal pairs that share a group are masked out (never negatives). ``extra_b`` (n, m, d)
    adds m mined negatives per row to the a→b direction; ``extra_valid`` (n, m) marks the real
    ones when rows have fewer. ``also_same`` (n, n) masks more pairs (e.g. items with the same
    visible attributes).
    """
    logits = scale * a @ b.T
    same = groups[:, None] == groups[None, :]
    if also_same is not None:
        same = same | also_same
    eye = torch.eye(len(a), dtype=torch.bool)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(len(a))
    a2b = logits
    if extra_b is not None:
        extra = scale * torch.einsum("nd,nmd->nm", a, extra_b)
        if extra_valid is not None:
            extra = extra.masked_fill(~extra_valid, float("-inf"))
        a2b = torch.cat([logits, extra], dim=1)
    if not symmetric:
        return F.cross_entropy(a2b, target)
    return (F.cross_entropy(a2b, target) + F.cross_entropy(logits.T, target)) / 2


def _pca_init(layer: nn.Linear, feats: np.ndarray) -> None:
    """Initialise ``layer`` as the projection on the top principal directions of ``feats``."""
    centered = feats - feats.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(vt[: layer.out_features].astype(np.float32)))
        layer.bias.zero_()


def attribute_sets(pairs: PairSet) -> list[frozenset[str]]:
    """Visible attributes of every pair's text, grounded per source on its own image features."""
    from models.train.audit import visible_attributes

    feats = l2_normalize(pairs.image_feats)
    out: list[frozenset[str]] = [frozenset()] * len(pairs.texts)
    sources = np.array(pairs.sources)
    for source in sorted(set(pairs.sources)):
        idx = np.flatnonzero(sources == source)
        for i, attrs in zip(
            idx, visible_attributes([pairs.texts[i] for i in idx], feats[idx]), strict=True
        ):
            out[i] = attrs
    return out


@contextmanager
def _inference(model: Heads) -> Iterator[None]:
    """Eval mode (no dropout) and no gradients inside; the model's mode is restored after."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(training)


def _embed(model: Heads, pairs: PairSet) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' projected texts and images, in eval mode (no dropout); the model's mode is kept."""
    with _inference(model):
        t = model.encode_text(torch.from_numpy(pairs.text_feats)).numpy()
        v = model.encode_image(torch.from_numpy(pairs.image_feats)).numpy()
    return t, v


def mine_negatives(
    model: Heads,
    pairs: PairSet,
    cfg: TrainConfig,
    attrs: list[frozenset[str]] | None = None,
    *,
    ablations: Ablations = SHIPPED,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Hard negatives per pair, in both directions, with false-negative filtering.

    ``attrs``: the pairs' visible attributes (:func:`attribute_sets`) when already computed.
    ``ablations``: ``false_negative_attributes`` and ``mine_skip`` apply.

    Returns:
        (image negatives for each text anchor, text negatives for each image anchor) as index arrays
        of shape (n, mined_per_anchor), and mining statistics.
    """
    t, v = _embed(model, pairs)
    n, k = len(t), cfg.mined_per_anchor
    # Raw features for the false-negative filter, as cosines: image features are unit blocks side by
    # side (pooled encoder features, then stage features and the colour histogram when the spec asks
    # for them; norm √blocks), so normalise them as a whole. Texts are compared on the encoder's
    # features alone (not the lexical block).
    text_dim = pairs.text_feats.shape[1] - pairs.lexical_dim
    raw_img, raw_txt = l2_normalize(pairs.image_feats), l2_normalize(pairs.text_feats[:, :text_dim])
    img_neg = np.zeros((n, k), dtype=np.int64)
    txt_neg = np.zeros((n, k), dtype=np.int64)
    dropped = kept = 0
    sources = np.array(pairs.sources)
    if not ablations.false_negative_attributes:
        attrs = None
    elif attrs is None:
        attrs = attribute_sets(pairs)
    for start in range(0, n, 1024):
        idx = np.arange(start, min(start + 1024, n))
        for anchors, cands, out in ((t, v, img_neg), (v, t, txt_neg)):
            sims = anchors[idx] @ cands.T
            same_group = pairs.groups[idx][:, None] == pairs.groups[None, :]
            other_source = sources[idx][:, None] != sources[None, :]
            sims[same_group | other_source] = -np.inf
            m = min(cfg.mine_pool, sims.shape[1] - 1)
            part = np.argpartition(-sims, m, axis=1)[:, :m]
            order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
            pool = np.take_along_axis(part, order, axis=1)
            for row, i in enumerate(idx):
                cand = pool[row][np.isfinite(sims[row, pool[row]])]
                img_close = raw_img[cand] @ raw_img[i] > cfg.false_negative_image_cos
                txt_close = raw_txt[cand] @ raw_txt[i] > cfg.false_negative_text_cos
                close = img_close | txt_close
                if attrs is not None and attrs[i]:
                    close |= np.array([attrs[j] == attrs[i] for j in cand], dtype=bool)
                ok = cand[~close][ablations.mine_skip :]
                dropped += int(close.sum())
                rng = np.random.default_rng(cfg.seed + int(i))
                if len(ok) < k:  # too few safe hard negatives: fill with random other-group items
                    others = pairs.groups != pairs.groups[i]
                    if attrs is not None and attrs[i]:
                        others &= np.array([a != attrs[i] for a in attrs], dtype=bool)
                    fill = rng.choice(np.flatnonzero(others), k - len(ok))
                    ok = np.concatenate([ok, fill])
                out[i] = rng.choice(ok, k, replace=False) if len(ok) > k else ok[:k]
                kept += k
    return (
        img_neg,
        txt_neg,
        {"candidates_dropped_as_false_negatives": dropped / 2, "mined": kept / 2},
    )


def mine_edits(
    model: Heads,
    pairs: PairSet,
    edits: EditSet,
    k: int,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Per pair, the ``k`` edits of its own text closest to its image under ``model`` (hardest
    first; -1 where a text has fewer edits), shape (n, k). With ``rng``: ``k`` drawn at random
    instead (the model is not used)."""
    if rng is not None:
        return _first_per_owner(rng.random(len(edits.owner)), edits.owner, len(pairs.texts), k)
    sims = np.zeros(len(edits.owner), np.float32)
    with _inference(model):
        v = model.encode_image(torch.from_numpy(pairs.image_feats)).numpy()
        for start in range(0, len(edits.owner), 2048):
            idx = np.arange(start, min(start + 2048, len(edits.owner)))
            e = model.encode_text(torch.from_numpy(edits.head_features(idx))).numpy()
            sims[idx] = np.einsum("nd,nd->n", e, v[edits.owner[idx]])
    return _first_per_owner(sims, edits.owner, len(pairs.texts), k)


def _first_per_owner(score: np.ndarray, owner: np.ndarray, n: int, k: int) -> np.ndarray:
    """Per owner ``0..n-1``, its ``k`` items of highest ``score`` (-1 where it has fewer)."""
    out = np.full((n, k), -1, dtype=np.int64)
    order = np.lexsort((-score, owner))  # by owner, then highest first (stable)
    owners = owner[order]
    starts = np.searchsorted(owners, np.arange(n))
    ends = np.searchsorted(owners, np.arange(n), side="right")
    for i in np.flatnonzero(ends > starts):
        take = order[starts[i] : min(ends[i], starts[i] + k)]
        out[i, : len(take)] = take
    return out


def _holdout(pairs: PairSet, share: float, seed: int) -> np.ndarray:
    """Which pairs :func:`split_holdout` holds back (boolean mask)."""
    rng = np.random.default_rng(seed)
    sources = np.array(pairs.sources)
    held = np.zeros(len(sources), dtype=bool)
    for source in sorted(set(pairs.sources)):
        idx = np.flatnonzero(sources == source)
        groups = np.unique(pairs.groups[idx])
        if len(groups) >= 20:
            chosen = rng.choice(groups, max(1, round(share * len(groups))), replace=False)
            held[idx[np.isin(pairs.groups[idx], chosen)]] = True
        else:
            held[rng.choice(idx, max(1, round(share * len(idx))), replace=False)] = True
    return held


def split_holdout(pairs: PairSet, share: float, seed: int) -> tuple[PairSet, PairSet | None]:
    """Hold back ``share`` of each source's groups (whole groups, seeded); sources with fewer than
    20 groups (class-like groups, e.g. photo categories) hold back ``share`` of their pairs instead."""
    if share <= 0:
        return pairs, None
    held = _holdout(pairs, share, seed)
    return _subset(pairs, np.flatnonzero(~held)), _subset(pairs, np.flatnonzero(held))


def _subset(pairs: PairSet, idx: np.ndarray) -> PairSet:
    return PairSet(
        pairs.text_feats[idx],
        pairs.image_feats[idx],
        pairs.groups[idx],
        tuple(pairs.texts[i] for i in idx),
        tuple(pairs.sources[i] for i in idx),
        pairs.digest,
        pairs.lexical_dim,
    )


def validation_score(model: Heads, val: PairSet) -> dict[str, float]:
    """Retrieval on held-back pairs, per source: text→image and image→text recall@1/@10 (a hit is
    any item of the same group); ``score`` is their mean over directions, cut-offs and sources."""
    t, v = _embed(model, val)
    sources = np.array(val.sources)
    out: dict[str, float] = {}
    per_source = []
    for source in sorted(set(val.sources)):
        idx = np.flatnonzero(sources == source)
        sims = t[idx] @ v[idx].T
        same = val.groups[idx][:, None] == val.groups[idx][None, :]
        vals = []
        for name, s in (("t2i", sims), ("i2t", sims.T)):
            order = np.argsort(-s, axis=1, kind="stable")[:, :10]
            hits = np.take_along_axis(same if name == "t2i" else same.T, order, axis=1)
            for k in (1, 10):
                r = float(hits[:, :k].any(axis=1).mean())
                out[f"{source}/{name}_recall@{k}"] = round(r, 5)
                vals.append(r)
        per_source.append(float(np.mean(vals)))
    out["score"] = round(float(np.mean(per_source)), 5)
    return out


def _batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + size] for i in range(0, n - size // 4, size)]


def train_heads(
    pairs: PairSet,
    text_pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    cfg: TrainConfig,
    *,
    mined: bool,
    progress: Progress | None = None,
    observe: Observer | None = None,
    edits: EditSet | None = None,
    ablations: Ablations = SHIPPED,
) -> tuple[Heads, dict[str, Any]]:
    """Train the heads; return them and a JSON-ready training record.

    Args:
        pairs: text↔image pairs with frozen features.
        text_pairs: support (query features, target features, group ids), or None.
        mined: run stage 2 (mined negatives) after stage 1.
        observe: see :data:`Observer`.
        edits: one-word edits of ``pairs``' texts (owners index ``pairs``), the candidates of
            ``cfg.edit_negatives``.
        ablations: options measured and not kept (``bench/mining.py``); the default is the shipped
            training.

    Raises:
        ValueError: ``cfg.edit_negatives`` > 0 with ``mined`` but no ``edits``, edits whose
            owners are not pairs of ``pairs``, or an unknown ``ablations.edit_loss``.
    """
    if ablations.edit_loss not in EDIT_LOSSES:
        raise ValueError(f"edit_loss must be symmetric, i2t or local, not {ablations.edit_loss!r}")
    if mined and cfg.edit_negatives > 0 and edits is None:
        raise ValueError("edit_negatives > 0 needs the one-word edits of the pair texts (edits=)")
    if edits is not None and len(edits.owner) and int(edits.owner.max()) >= len(pairs.texts):
        raise ValueError("the edits belong to another pair set: an owner index is out of range")
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical results whatever the machine's core count
    if cfg.holdout > 0:
        held = _holdout(pairs, cfg.holdout, cfg.seed)
        if edits is not None:
            edits = edits.subset(~held)
        pairs, val = _subset(pairs, np.flatnonzero(~held)), _subset(pairs, np.flatnonzero(held))
    else:
        val = None
    try:
        model = Heads(
            pairs.text_feats.shape[1],
            pairs.image_feats.shape[1],
            cfg,
            dropout=ablations.feature_dropout,
        )
        first = model.text[0]
        assert isinstance(first, nn.Linear)  # noqa: S101  # built just above
        if cfg.text_init == "identity":  # (a lexical block's columns start at zero)
            with torch.no_grad():
                first.weight.copy_(torch.eye(cfg.dim, first.in_features))
                first.bias.zero_()
        else:
            _pca_init(
                first,
                pairs.text_feats
                if text_pairs is None
                else np.concatenate([pairs.text_feats, text_pairs[0], text_pairs[1]]),
            )
        record: dict[str, Any] = {
            "config": {**asdict(cfg), **asdict(ablations)},
            "pairs": len(pairs.texts),
            "held_back": 0 if val is None else len(val.texts),
        }
        masks = ablations.mask_same_attributes
        attr_ids = None
        sets = None  # visible attributes, computed once for masking and mining
        if masks != "none" or (mined and ablations.false_negative_attributes):
            sets = attribute_sets(pairs)
        if masks != "none" and sets is not None:
            known: dict[frozenset[str], int] = {}
            attr_ids = np.array(
                [known.setdefault(a, len(known)) if a else -1 - i for i, a in enumerate(sets)],
                dtype=np.int64,
            )
        use_edits = edits if mined and cfg.edit_negatives > 0 else None
        stage = partial(
            _run_stage,
            model,
            pairs,
            cfg=cfg,
            ablations=ablations,
            text_pairs=text_pairs,
            val=val,
            progress=progress,
            observe=observe,
        )
        record["stage1"] = stage(
            name="stage 1",
            epochs=cfg.stage1_epochs,
            lr=cfg.lr,
            attr_ids=attr_ids if masks == "both" else None,
            edits=None if cfg.edit_from_epoch is None else use_edits,
            edits_from=cfg.edit_from_epoch or 0,
        )
        if mined:
            img_neg, txt_neg, stats = mine_negatives(model, pairs, cfg, sets, ablations=ablations)
            if use_edits is not None:
                stats["edits"] = len(use_edits.owner)
                stats["images_with_edits"] = len(np.unique(use_edits.owner))
            record["mining"] = stats
            record["stage2"] = stage(
                name="stage 2",
                epochs=cfg.stage2_epochs,
                lr=cfg.stage2_lr,
                negatives=(img_neg, txt_neg),
                attr_ids=attr_ids,
                edits=use_edits,
            )
        record["temperature"] = round(float(1 / model.scale().item()), 6)
        model.eval()
    finally:
        torch.set_num_threads(threads)
    return model, record


def _edit_embeddings(
    model: Heads, edits: EditSet, chosen: np.ndarray, dim: int, *, grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The projected edits ``chosen`` (n, k; -1: none) as (n, k, dim), and which are real (n, k).
    ``grad=False``: constants (no gradient flows back into the text head through them)."""
    valid = torch.from_numpy(chosen >= 0)
    out = torch.zeros((*chosen.shape, dim), dtype=torch.float32)
    if valid.any():
        with torch.set_grad_enabled(grad):
            feats = torch.from_numpy(edits.head_features(chosen[chosen >= 0]))
            out[valid] = model.encode_text(feats)
    return out, valid


def _edit_term(
    v: torch.Tensor,
    t: torch.Tensor,
    groups: torch.Tensor,
    scale: torch.Tensor,
    edit_t: torch.Tensor,
    valid: torch.Tensor,
    also: torch.Tensor | None,
    ablations: Ablations = SHIPPED,
) -> torch.Tensor:
    """The edit loss of one batch (unweighted): a symmetric InfoNCE term whose image→text direction
    also has the edits as candidates, whose gradient does not reach the temperature (or in the
    form and with the temperature ``ablations`` say)."""
    s = scale if ablations.edit_moves_temperature else scale.detach()
    if ablations.edit_loss == "local":
        return edit_loss(v, t, edit_t, valid, s)
    return info_nce(
        v, t, groups, s, edit_t, also, valid, symmetric=ablations.edit_loss == "symmetric"
    )


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's weights."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _run_stage(
    model: Heads,
    pairs: PairSet,
    *,
    name: str,
    epochs: int,
    lr: float,
    cfg: TrainConfig,
    ablations: Ablations,
    text_pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    val: PairSet | None,
    negatives: tuple[np.ndarray, np.ndarray] | None = None,
    attr_ids: np.ndarray | None = None,
    edits: EditSet | None = None,
    edits_from: int = 0,
    progress: Progress | None = None,
    observe: Observer | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``pairs`` (and the support ``text_pairs``) for ``epochs`` at peak
    learning rate ``lr``; with ``val``, end on the epoch that scored best on it (epoch 0, the
    starting point, included: a stage that does not help changes nothing).

    ``negatives``: mined (image, text) negatives per pair (stage 2); ``attr_ids``: pairs with equal
    ids are not in-batch negatives; ``edits``: one-word edits mined as negatives each epoch from
    epoch ``edits_from`` on; ``name`` labels ``progress`` and ``observe`` calls.
    """
    rng = np.random.default_rng(cfg.seed + (1 if negatives is not None else 0))

    def observed(epoch: int) -> None:
        if observe is not None:
            model.eval()
            observe(name, epoch, model)
            model.train()

    observed(0)
    best_state = None
    scores: list[float] = []
    if val is not None:
        best = validation_score(model, val)["score"]
        scores.append(best)
        best_state = _snapshot(model)
    text_params = list(model.text.parameters())
    other = [p for n, p in model.named_parameters() if not n.startswith("text.")]
    opt = torch.optim.AdamW(
        [{"params": other, "lr": lr}, {"params": text_params, "lr": lr * cfg.text_lr_scale}],
        lr=lr,
        weight_decay=cfg.weight_decay,
    )
    t_all = torch.from_numpy(pairs.text_feats)
    v_all = torch.from_numpy(pairs.image_feats)
    g_all = torch.from_numpy(pairs.groups.astype(np.int64))
    a_all = None if attr_ids is None else torch.from_numpy(attr_ids)
    steps_per_epoch = len(_batches(len(pairs.texts), cfg.batch_size, np.random.default_rng(0)))
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[lr, lr * cfg.text_lr_scale],
        total_steps=total,
        pct_start=min(0.5, max(0.1, 2.0 / total)),  # at least two warm-up steps on tiny sets
    )
    losses = []
    step = 0
    ema = _snapshot(model) if ablations.ema_decay > 0 else None
    tp = None if text_pairs is None else tuple(torch.from_numpy(x) for x in text_pairs)
    for epoch in range(epochs):
        epoch_loss = []
        tp_batches: list[np.ndarray] = []
        if text_pairs is not None:
            tp_batches = _batches(len(text_pairs[0]), cfg.batch_size, rng)
        batches = _batches(len(pairs.texts), cfg.batch_size, rng)
        if negatives is not None and ablations.mined_batch_share > 0:
            mixed = np.empty((len(pairs.texts), 2 * negatives[0].shape[1]), dtype=np.int64)
            mixed[:, 0::2], mixed[:, 1::2] = negatives[0], negatives[1]
            batches = neighbourhood_batches(
                mixed, len(batches), cfg.batch_size, rng, ablations.mined_batch_share,
                ablations.mined_batch_per_seed,
            )  # fmt: skip
        chosen = None  # this epoch's edit negatives, mined with the model as it is now
        if edits is not None and epoch >= edits_from:
            draw = (
                np.random.default_rng([cfg.seed, int(negatives is not None), epoch])
                if ablations.edit_pick == "random"
                else None
            )
            chosen = mine_edits(model, pairs, edits, cfg.edit_negatives, draw)
        for b, idx in enumerate(batches):
            ti = torch.from_numpy(idx)
            t = model.encode_text(t_all[ti])
            v = model.encode_image(v_all[ti])
            scale = model.scale()
            extra_v = extra_t = None
            if negatives is not None and cfg.mined_weight > 0:
                extra_v = model.encode_image(
                    v_all[torch.from_numpy(negatives[0][idx].reshape(-1))]
                ).view(len(idx), -1, cfg.dim)
                extra_t = model.encode_text(
                    t_all[torch.from_numpy(negatives[1][idx].reshape(-1))]
                ).view(len(idx), -1, cfg.dim)
            also = None if a_all is None else a_all[ti][:, None] == a_all[ti][None, :]
            loss = info_nce(t, v, g_all[ti], scale, also_same=also)
            if extra_v is not None and extra_t is not None:
                mined = info_nce(t, v, g_all[ti], scale, extra_v, also) + info_nce(
                    v, t, g_all[ti], scale, extra_t, also
                )
                loss = loss + cfg.mined_weight * mined / 2
            if chosen is not None and edits is not None:
                edit_t, valid = _edit_embeddings(
                    model, edits, chosen[idx], cfg.dim, grad=ablations.edit_moves_text_head
                )
                term = _edit_term(v, t, g_all[ti], scale, edit_t, valid, also, ablations)
                loss = loss + cfg.edit_weight * term
            if tp is not None and tp_batches:
                j = torch.from_numpy(tp_batches[b % len(tp_batches)])
                q, a = model.encode_text(tp[0][j]), model.encode_text(tp[1][j])
                loss = loss + cfg.text_pair_weight * info_nce(q, a, tp[2][j], scale)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            if ema is not None:
                with torch.no_grad():
                    for k, w in model.state_dict().items():
                        ema[k].mul_(ablations.ema_decay).add_(
                            w.detach(), alpha=1 - ablations.ema_decay
                        )
            step += 1
            epoch_loss.append(float(loss.item()))
        losses.append(round(float(np.mean(epoch_loss)), 5))
        if val is not None:
            live = None
            if ema is not None:  # validate (and keep) the averaged weights
                live = _snapshot(model)
                model.load_state_dict(ema)
            score = validation_score(model, val)["score"]
            scores.append(score)
            if score > best:
                best = score
                best_state = _snapshot(model)
            if live is not None:
                model.load_state_dict(live)
        observed(epoch + 1)
        if progress is not None:
            progress(name, epoch + 1, epochs)
    out: dict[str, Any] = {"epochs": epochs, "lr": lr, "loss_per_epoch": losses}
    if val is None and ema is not None:
        model.load_state_dict(ema)
    if val is not None and best_state is not None:
        model.load_state_dict(best_state)
        out["validation_per_epoch"] = scores
        out["best_epoch"] = int(np.argmax(scores))
        out["validation"] = validation_score(model, val)
    return out
