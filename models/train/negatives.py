"""Hard negatives for the heads: each pair's nearest other-group items (stage 2), filtered of likely
false negatives, and each photo's hardest one-word edits of its own text (re-mined every epoch)."""

from __future__ import annotations

import numpy as np
import torch

from models.projection import l2_normalize
from models.train.ablations import SHIPPED, Ablations
from models.train.edits import EditSet
from models.train.features import PairSet
from models.train.heads import Heads, TrainConfig, embed, inference

__all__ = ["attribute_sets", "mine_edits", "mine_negatives"]


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
    t, v = embed(model, pairs)
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
    with inference(model):
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
