"""Attribute-aware mining: which words a photo can show, and negatives that differ in them."""

from __future__ import annotations

import numpy as np

from models.train.ablations import Ablations
from models.train.audit import token_coherence, visible_attributes
from models.train.features import PairSet
from models.train.heads import Heads, TrainConfig
from models.train.negatives import mine_negatives

COLOURS = ("black", "white", "red", "navy")
TYPES = ("shoes", "shirt")
BRANDS = ("acme", "globex", "initech", "umbrella", "hooli")


def catalogue(n: int = 1000, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Titles '<brand> men <colour> <type>' whose image features show colour and type only."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(COLOURS) * len(TYPES), 32))
    texts, feats = [], []
    for _ in range(n):
        b, c, t = rng.integers(len(BRANDS)), rng.integers(len(COLOURS)), rng.integers(len(TYPES))
        texts.append(f"{BRANDS[b]} men {COLOURS[c]} {TYPES[t]}")
        feats.append(centres[c * len(TYPES) + t] + 0.3 * rng.normal(size=32))
    f = np.array(feats, dtype=np.float32)
    return texts, f / np.linalg.norm(f, axis=1, keepdims=True)


def test_colours_are_grounded_brands_and_ubiquitous_words_are_not() -> None:
    texts, feats = catalogue()
    coherence = {t["token"]: t["visual_coherence"] for t in token_coherence(texts, feats)}
    assert min(coherence[c] for c in COLOURS) > 0.1
    assert max(abs(coherence[b]) for b in BRANDS) < 0.05
    attrs = visible_attributes(texts, feats)
    assert attrs[0] == frozenset(texts[0].split()[2:])  # colour + head noun, no brand, no "men"


def test_mined_negatives_never_share_the_anchors_visible_attributes() -> None:
    texts, feats = catalogue()
    rng = np.random.default_rng(1)
    text_feats = rng.normal(size=(len(texts), 16)).astype(np.float32)
    pairs = PairSet(
        text_feats / np.linalg.norm(text_feats, axis=1, keepdims=True),
        feats,
        np.arange(len(texts)),  # every title its own group: only attributes can protect them
        tuple(texts),
        ("shop",) * len(texts),
        "test",
    )
    cfg = TrainConfig(dim=16, hidden=32, mined_per_anchor=4, mine_pool=32)
    model = Heads(16, 32, cfg)
    attrs = [frozenset(t.split()[2:]) for t in texts]
    unfiltered = Ablations(false_negative_attributes=False)
    plain, _, _ = mine_negatives(model, pairs, cfg, ablations=unfiltered)
    assert any(attrs[j] == attrs[i] for i in range(len(texts)) for j in plain[i])  # it happens
    img_neg, txt_neg, stats = mine_negatives(model, pairs, cfg)  # the shipped filter
    for i in range(len(texts)):
        assert all(attrs[j] != attrs[i] for j in (*img_neg[i], *txt_neg[i]))
    assert stats["candidates_dropped_as_false_negatives"] > 0


def test_info_nce_also_same_masks_pairs_like_a_shared_group() -> None:
    import torch

    from models.train.contrastive import info_nce

    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.9, 0.2], [0.0, 1.0]]), dim=-1)
    scale = torch.tensor(10.0)
    same_attrs = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    masked = info_nce(a, a, torch.tensor([0, 1, 2]), scale, also_same=same_attrs)
    grouped = info_nce(a, a, torch.tensor([0, 0, 2]), scale)
    plain = info_nce(a, a, torch.tensor([0, 1, 2]), scale)
    assert float(masked) == float(grouped) < float(plain)


def test_the_false_negative_filter_compares_cosines_of_concatenated_features() -> None:
    """Image features are two unit blocks side by side (encoder + colour, norm √2): the filter
    must normalise them, or every moderately similar candidate looks like a duplicate."""
    n = 200
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(n, 64))
    block = 0.77 * np.eye(64)[0] + 0.64 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    block = (block / np.linalg.norm(block, axis=1, keepdims=True)).astype(np.float32)
    cos = block @ block.T
    assert 0.4 < np.median(cos) < 0.8  # alike, but no duplicates
    wide = np.concatenate([block, block], axis=1)  # norm √2, like encoder ‖ colour features
    text_feats = rng.normal(size=(n, 16)).astype(np.float32)
    pairs = PairSet(
        text_feats / np.linalg.norm(text_feats, axis=1, keepdims=True),
        wide,
        np.arange(n),
        tuple(f"item {i}" for i in range(n)),
        ("shop",) * n,
        "test",
    )
    cfg = TrainConfig(dim=16, hidden=32, mined_per_anchor=4, mine_pool=32)
    _, _, stats = mine_negatives(Heads(16, 128, cfg), pairs, cfg)
    assert stats["candidates_dropped_as_false_negatives"] < 0.05 * n * 32


def _tiny_pairs(n: int = 300) -> PairSet:
    texts, feats = catalogue(n)
    rng = np.random.default_rng(3)
    text_feats = rng.normal(size=(len(texts), 16)).astype(np.float32)
    return PairSet(
        text_feats / np.linalg.norm(text_feats, axis=1, keepdims=True),
        feats,
        np.arange(len(texts)),
        tuple(texts),
        ("shop",) * len(texts),
        "test",
    )


def _same(a: Heads, b: Heads) -> bool:
    wa, wb = a.tensors(), b.tensors()
    return all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_weight_averaging_is_deterministic_and_keeps_the_averaged_weights() -> None:
    from models.train.contrastive import train_heads

    pairs = _tiny_pairs()
    base = TrainConfig(dim=16, hidden=32, batch_size=32, stage1_epochs=3, holdout=0.0)
    ema = Ablations(ema_decay=0.9)
    plain_model, _ = train_heads(pairs, None, base, mined=False)
    a, record = train_heads(pairs, None, base, mined=False, ablations=ema)
    b, _ = train_heads(pairs, None, base, mined=False, ablations=ema)
    assert record["config"]["ema_decay"] == 0.9  # the ablation is recorded
    assert _same(a, b)  # same inputs, same weights
    wa, wp = a.tensors(), plain_model.tensors()
    assert any(not np.allclose(wa[k], wp[k]) for k in wa)  # and not the last step's weights


def test_neighbourhood_batches_put_a_seeds_mined_items_next_to_it() -> None:
    from models.train.ablations import neighbourhood_batches

    n, size = 1000, 64
    neighbours = (np.arange(n)[:, None] + np.arange(1, 9)[None, :]) % n  # i's items: i+1..i+8
    batches = neighbourhood_batches(neighbours, 15, size, np.random.default_rng(0), 0.5, 3)
    assert len(batches) == 15
    for b in batches:
        assert len(b) == size == len(set(b.tolist()))  # full, no pair twice
        members = set(b.tolist())
        seed = int(b[0])  # the first item is a seed: its first three mined items are in the batch
        assert {(seed + k) % n for k in (1, 2, 3)} <= members
    plain = neighbourhood_batches(neighbours, 15, size, np.random.default_rng(0), 0.0, 3)
    assert all(len(b) == size for b in plain)


def test_feature_dropout_trains_only_and_the_observer_sees_every_epoch() -> None:
    import torch

    from models.train.contrastive import train_heads, validation_score

    pairs = _tiny_pairs()
    cfg = TrainConfig(
        dim=16, hidden=32, batch_size=32, stage1_epochs=2, stage2_epochs=1, holdout=0.2,
        mined_per_anchor=2, mine_pool=8, edit_negatives=0,
    )  # fmt: skip
    dropout = Ablations(feature_dropout=0.5)
    seen: list[tuple[str, int, bool]] = []
    model, record = train_heads(
        pairs, None, cfg, mined=True, ablations=dropout,
        observe=lambda s, e, m: seen.append((s, e, m.training)),
    )  # fmt: skip
    assert seen == [("stage 1", e, False) for e in range(3)] + [
        ("stage 2", e, False) for e in range(2)
    ]
    assert not model.training  # returned ready to embed: no dropout
    x = torch.from_numpy(pairs.image_feats[:8])
    assert torch.equal(model.encode_image(x), model.encode_image(x))
    model.train()
    assert not torch.equal(model.encode_image(x), model.encode_image(x))  # dropout while training
    validation_score(model, pairs)
    assert model.training  # validation restores the mode it found
    # the observer changes nothing
    again, record2 = train_heads(pairs, None, cfg, mined=True, ablations=dropout)
    assert _same(model, again)
    assert record["stage1"]["validation_per_epoch"] == record2["stage1"]["validation_per_epoch"]


def test_stage_two_can_fill_batches_with_mined_neighbourhoods() -> None:
    from models.train.contrastive import train_heads

    pairs = _tiny_pairs()
    base = TrainConfig(
        dim=16, hidden=32, batch_size=32, stage1_epochs=2, stage2_epochs=1, holdout=0.0,
        mined_per_anchor=4, mine_pool=16, mined_weight=0.0, edit_negatives=0,
    )  # fmt: skip
    hard = Ablations(mined_batch_share=0.5)
    a, _ = train_heads(pairs, None, base, mined=True)
    b, _ = train_heads(pairs, None, base, mined=True, ablations=hard)
    c, _ = train_heads(pairs, None, base, mined=True, ablations=hard)
    assert _same(b, c)  # deterministic
    assert not _same(a, b)  # other batches, other weights


RECORDED_CONFIG = {  # a training record's "config" keys, as bundles written before the split have
    "dim", "hidden", "batch_size", "stage1_epochs", "stage2_epochs", "lr", "stage2_lr",
    "weight_decay", "init_temperature", "text_pair_weight", "text_init", "text_lr_scale",
    "mined_per_anchor", "mine_skip", "mine_pool", "mined_weight", "mined_batch_share",
    "mined_batch_per_seed", "edit_negatives", "edit_from_epoch", "edit_weight", "edit_loss",
    "edit_moves_temperature", "edit_pick", "edit_moves_text_head", "edit_min_visibility",
    "false_negative_image_cos", "false_negative_text_cos", "false_negative_attributes",
    "mask_same_attributes", "feature_dropout", "ema_decay", "holdout", "seed",
}  # fmt: skip


def test_the_record_keeps_its_form_and_trainconfig_holds_only_what_ships() -> None:
    """The manifest's training record names every option, shipped or ablation, as before the
    ablations left TrainConfig (so a default training writes the same manifest); TrainConfig
    itself has none of the ablation switches."""
    from dataclasses import asdict, fields

    from models.train.ablations import SHIPPED
    from models.train.contrastive import train_heads

    cfg = TrainConfig(dim=16, hidden=32, batch_size=32, stage1_epochs=1, holdout=0.0)
    _, record = train_heads(_tiny_pairs(), None, cfg, mined=False)
    assert record["config"] == {**asdict(cfg), **asdict(SHIPPED)}
    assert set(record["config"]) == RECORDED_CONFIG
    shipped, ablations = {f.name for f in fields(TrainConfig)}, set(asdict(SHIPPED))
    assert not shipped & ablations
    assert {"ema_decay", "feature_dropout", "mined_batch_share", "edit_pick"} <= ablations
