"""Contrastive training of the projection heads (:mod:`models.train.heads`; torch, CPU,
deterministic).

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
attributes (:mod:`models.train.negatives`). Stage 2 starts from stage 1 at a lower LR and keeps
the edits.

Model selection: ``holdout`` of each source's groups is held back from training; each stage ends on
its epoch with the best retrieval on those held-back *training* pairs (epoch 0, where the stage
started, included), never on dev or test data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.train.ablations import (
    EDIT_LOSSES,
    SHIPPED,
    Ablations,
    edit_loss,
    neighbourhood_batches,
)
from models.train.edits import EditSet
from models.train.features import PairSet
from models.train.heads import Heads, TrainConfig, embed
from models.train.negatives import attribute_sets, mine_edits, mine_negatives

__all__ = ["info_nce", "split_holdout", "train_heads", "validation_score"]

Progress = Callable[[str, int, int], None]
Observer = Callable[[str, int, Heads], None]
"""Called with (stage name, epoch, model in eval mode) at each stage's start (epoch 0) and after each
of its epochs: a diagnostic hook (``bench/mining.py --trace``); it must not change the model."""


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
    t, v = embed(model, val)
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
    """Shuffled batches of ``size``; a last batch under a quarter of ``size`` is dropped, except
    when it would be the only one (a set smaller than that is one batch)."""
    order = rng.permutation(n)
    batches = [order[i : i + size] for i in range(0, n - size // 4, size)]
    return batches or ([order] if n >= 2 else [])


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
    sched: torch.optim.lr_scheduler.LRScheduler
    if total >= 3:
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=[lr, lr * cfg.text_lr_scale],
            total_steps=total,
            pct_start=min(0.5, max(0.1, 2.0 / total)),  # at least two warm-up steps on tiny sets
        )
    else:  # one or two steps have no cycle to run (OneCycleLR divides by zero): the base rates
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
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
