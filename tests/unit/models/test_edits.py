"""One-word edits: substitutes learnt from minimal pairs, edited texts, and their use in training."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import pytest
import torch

from models.config import LexicalFeatures
from models.preprocess import lexical_features
from models.train.ablations import SHIPPED, Ablations, edit_loss
from models.train.contrastive import info_nce, train_heads
from models.train.edits import EditSet, encode_edits, one_word_edits, substitutes
from models.train.features import PairSet
from models.train.heads import Heads, TrainConfig, embed
from models.train.negatives import mine_edits

from .test_mining import BRANDS, COLOURS, TYPES, _same, catalogue


def test_colours_and_categories_substitute_brands_and_absent_alternatives_do_not() -> None:
    texts, feats = catalogue()
    # brands have minimal pairs, but their photos look alike; "men" has no alternative
    assert set(substitutes(texts, feats, min_distinctness=0.0)) > set(BRANDS)
    subs = substitutes(texts, feats, min_distinctness=0.02)
    assert set(subs) == {*COLOURS, *TYPES}
    assert set(subs["black"]) == set(COLOURS) - {"black"}
    assert subs["shoes"] == ["shirt"]
    # most frequent first: black/white get the most contexts (11 more brands with both)
    extra = [f"zeta{i} men {c} shoes" for i in range(11) for c in ("black", "white")]
    like = [texts.index(f"acme men {t.split()[2]} shoes") for t in extra]
    subs = substitutes(
        [*texts, *extra], np.concatenate([feats, feats[like]]), min_distinctness=0.02
    )
    assert subs["black"][0] == "white"


def test_without_enough_minimal_pairs_there_is_nothing_to_substitute() -> None:
    texts, feats = catalogue(40)
    assert substitutes(texts, feats, min_pairs=1000) == {}
    assert substitutes(texts[:1], feats[:1]) == {}


def test_edits_change_one_word_keep_the_case_and_alternate_between_words() -> None:
    subs = {"black": ["white", "red", "navy"], "men": ["women"]}
    owner, edits = one_word_edits(["Acme MEN Black Shoes", "no match here"], subs, per_text=3)
    assert owner.tolist() == [0, 0, 0]
    # each word's first substitute, in text order (men → women, black → white), then black's next
    assert edits == ["Acme WOMEN Black Shoes", "Acme MEN White Shoes", "Acme MEN Red Shoes"]
    owner, edits = one_word_edits(["black black"], {"black": ["white"]})
    assert edits == ["white black", "black white"]  # each occurrence is its own edit


def _edit_set(texts: list[str], owner: list[int], dim: int = 16) -> EditSet:
    rng = np.random.default_rng(5)
    f = rng.normal(size=(len(texts), dim)).astype(np.float32)
    return EditSet(
        np.array(owner), tuple(texts), f / np.linalg.norm(f, axis=1, keepdims=True), None
    )


def test_edit_sets_follow_their_pairs_through_a_subset_and_read_like_the_head() -> None:
    spec = LexicalFeatures(buckets=64, weight=3.0)
    edits = _edit_set(["a b", "c d", "e f", "g h"], [0, 2, 2, 3])
    edits = EditSet(edits.owner, edits.texts, edits.encoder_feats, spec)
    feats = edits.head_features(np.array([1, 3]))
    assert feats.shape == (2, 16 + 64)
    np.testing.assert_array_equal(feats[:, :16], edits.encoder_feats[[1, 3]])
    np.testing.assert_array_equal(feats[:, 16:], lexical_features(["c d", "g h"], spec))
    kept = edits.subset(np.array([True, False, True, True]))  # pair 1 held back: 2 → 1, 3 → 2
    assert kept.owner.tolist() == [0, 1, 1, 2]
    kept = edits.subset(np.array([False, True, True, False]))
    assert kept.owner.tolist() == [1, 1]
    assert kept.texts == ("c d", "e f")


def test_encode_edits_caches_the_encoder_features(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    texts, feats = catalogue(300)
    calls: list[int] = []

    def features(batch: list[str]) -> np.ndarray:  # a different row for (almost) every text
        return np.array([[len(t), t.count("e"), ord(t[0]), ord(t[-1])] for t in batch], np.float32)

    def encode(batch: list[str]) -> np.ndarray:
        calls.append(len(batch))
        return features(batch)

    args = (texts, ["shop"] * len(texts), feats, encode, None)
    first = encode_edits(*args, per_text=2, cache_dir=tmp_path, cache_key="enc-1")
    again = encode_edits(*args, per_text=2, cache_dir=tmp_path, cache_key="enc-1")
    # each distinct edited text is encoded once (titles repeat, so do their edits)
    assert len(calls) == 1 and len(set(first.texts)) == calls[0] > 0
    assert len(first.owner) > calls[0]
    assert again.texts == first.texts
    # every edit gets its own text's features back, encoded or read from the cache
    np.testing.assert_array_equal(first.encoder_feats, features(list(first.texts)))
    np.testing.assert_array_equal(again.encoder_feats, first.encoder_feats)
    encode_edits(*args, per_text=2, cache_dir=tmp_path, cache_key="enc-2")  # another encoder
    assert len(calls) == 2
    assert not list(tmp_path.glob("*.partial"))  # written whole, then renamed
    with pytest.raises(ValueError, match="cache_key"):  # a cache must name its encoder
        encode_edits(*args, per_text=2, cache_dir=tmp_path)
    for i, text in zip(first.owner, first.texts, strict=True):
        a, b = texts[i].split(), text.split()
        assert sum(x != y for x, y in zip(a, b, strict=True)) == 1


def test_edits_that_are_another_pairs_text_with_the_same_photo_are_left_out() -> None:
    rng = np.random.default_rng(2)
    f = rng.normal(size=(6, 64)).astype(np.float32)
    f[1] = f[0] + 0.01 * rng.normal(size=64)  # pair 1: pair 0's product under another colour word
    texts = ["Acme Black Shoes", "Acme White Shoes", "Zeta Black Shoes", "Zeta Red Shoes",
             "Kilo Black Shoes", "Kilo Red Shoes"]  # fmt: skip
    subs = {"black": ["white", "red"], "white": ["black"], "red": ["black"]}

    def edits_of(groups: np.ndarray | None) -> set[tuple[int, str]]:
        with patch("models.train.edits.substitutes", return_value=subs):
            e = encode_edits(texts, ["shop"] * 6, f, _unit_rows, None, groups=groups)
        return set(zip(e.owner.tolist(), e.texts, strict=True))

    kept = edits_of(None)
    assert (0, "Acme White Shoes") not in kept  # pair 1's text, near-identical photo
    assert (1, "Acme Black Shoes") not in kept
    assert (0, "Acme Red Shoes") in kept  # nobody's text: kept
    assert (2, "Zeta Red Shoes") in kept  # pair 3's text, but another photo: a true negative
    grouped = edits_of(np.array([0, 0, 1, 2, 3, 3]))  # pairs 4 and 5: one product, two captions
    assert (4, "Kilo Red Shoes") not in grouped and (4, "Kilo Red Shoes") in kept


def test_the_per_text_cap_counts_the_edits_left_after_the_false_negative_filter() -> None:
    f = np.eye(3, 8, dtype=np.float32)
    f[1] = f[0]  # one photo, two titles (one in lower case)
    subs = {"black": ["white", "red"], "white": ["black"]}
    texts = ["Acme Black Shoes", "acme white shoes", "Zeta Black Shoes"]
    with patch("models.train.edits.substitutes", return_value=subs):
        e = encode_edits(texts, ["shop"] * 3, f, _unit_rows, None, per_text=1)
    # pair 0's first edit is pair 1's text (case aside) with its photo: the next one takes its slot
    assert list(zip(e.owner.tolist(), e.texts, strict=True)) == [
        (0, "Acme Red Shoes"),
        (2, "Zeta White Shoes"),
    ]


def _unit_rows(batch: list[str]) -> np.ndarray:
    return np.ones((len(batch), 4), np.float32) / 2


def test_captions_of_one_photo_do_not_make_their_words_look_grounded() -> None:
    """Flickr-like: several captions per photo; "a" and "the" only differ by which photos happen
    to be captioned with them, so they are no visual distinction."""
    rng = np.random.default_rng(4)
    texts, groups = [], []
    for p in range(20):
        for prep in ("in", "at", "near"):
            texts.append(f"{'a' if p % 2 else 'the'} {('dog', 'cat', 'cow')[p % 3]} {prep} park")
            groups.append(p)
    photos = rng.normal(size=(20, 256))
    feats = (photos / np.linalg.norm(photos, axis=1, keepdims=True))[groups].astype(np.float32)
    assert "a" in substitutes(texts, feats)  # same-photo captions count as "alike photos"
    assert "a" not in substitutes(texts, feats, groups=np.array(groups))
    # a word seen on fewer than 3 photos is not judged on its captions (however many)
    few = [i for i, t in enumerate(texts) if not t.startswith("a ") or groups[i] in (1, 3)]
    kept = substitutes(
        [texts[i] for i in few], feats[few], groups=np.array(groups)[few], min_distinctness=-1.0
    )
    assert "a" not in kept and "dog" in kept


def test_the_local_edit_loss_is_the_own_text_against_its_edits_only() -> None:
    rng = np.random.default_rng(0)
    v, t, e = (torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=s)), dim=-1)
               for s in ((5, 8), (5, 8), (5, 3, 8)))  # fmt: skip
    scale = torch.tensor(10.0)
    valid = torch.ones((5, 3), dtype=torch.bool)
    valid[4] = False  # an image without edits adds zero
    valid[3, 1:] = False
    got = edit_loss(v, t, e, valid, scale)
    rows = []
    for i in range(5):
        cands = torch.cat([t[i : i + 1], e[i][valid[i]]])
        rows.append(torch.nn.functional.cross_entropy(scale * cands @ v[i], torch.tensor(0)))
    assert torch.allclose(got, torch.stack(rows).mean())
    assert float(rows[4]) == 0.0
    # one-directional InfoNCE: the image→text half of the symmetric one
    groups = torch.arange(5)
    one = info_nce(v, t, groups, scale, e, extra_valid=valid, symmetric=False)
    both = info_nce(v, t, groups, scale, e, extra_valid=valid)
    back = torch.nn.functional.cross_entropy(scale * t @ v.T, torch.arange(5))
    assert torch.allclose(both, (one + back) / 2)


def test_a_fixed_temperature_gets_no_gradient_from_the_edit_term() -> None:
    from models.train.contrastive import _edit_term

    rng = np.random.default_rng(1)
    v, t, e = (torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=s)), dim=-1)
               for s in ((5, 8), (5, 8), (5, 3, 8)))  # fmt: skip
    valid = torch.ones((5, 3), dtype=torch.bool)
    v.requires_grad_(True)
    for form in ("symmetric", "i2t", "local"):
        for moves in (True, False):
            log_scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
            ablations = Ablations(edit_loss=form, edit_moves_temperature=moves)  # type: ignore[arg-type]
            _edit_term(v, t, torch.arange(5), log_scale.exp(), e, valid, None, ablations).backward()
            assert (log_scale.grad is not None) == moves, (form, moves)
    with pytest.raises(ValueError, match="edit_loss"):
        pairs, edits = _pairs_with_edits()
        bad = Ablations(edit_loss="hinge")  # type: ignore[arg-type]
        train_heads(pairs, None, TrainConfig(), mined=True, edits=edits, ablations=bad)


def test_masked_extra_negatives_count_as_absent() -> None:
    rng = np.random.default_rng(0)
    a, b, extra = (torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=s)), dim=-1)
                   for s in ((6, 8), (6, 8), (6, 3, 8)))  # fmt: skip
    groups, scale = torch.arange(6), torch.tensor(10.0)
    valid = torch.zeros((6, 3), dtype=torch.bool)
    valid[:, 0] = True
    masked = info_nce(a, b, groups, scale, extra, extra_valid=valid)
    assert torch.allclose(masked, info_nce(a, b, groups, scale, extra[:, :1]))
    assert not torch.allclose(masked, info_nce(a, b, groups, scale, extra))


def _pairs_with_edits() -> tuple[PairSet, EditSet]:
    texts, feats = catalogue(300)
    rng = np.random.default_rng(3)
    enc = {w: rng.normal(size=16) for w in sorted({*BRANDS, *COLOURS, *TYPES, "men"})}

    def encode(batch: list[str]) -> np.ndarray:  # a toy text encoder: sum of word vectors
        out = np.array([sum(enc[w] for w in t.split()) for t in batch], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    pairs = PairSet(encode(texts), feats, np.arange(len(texts)), tuple(texts), ("shop",) * 300, "t")
    return pairs, encode_edits(texts, pairs.sources, feats, encode, None, per_text=4)


def test_mined_edits_are_each_images_own_edits_hardest_first() -> None:
    pairs, edits = _pairs_with_edits()
    model = Heads(16, 32, TrainConfig(dim=16, hidden=32))
    chosen = mine_edits(model, pairs, edits, 3)
    assert chosen.shape == (300, 3) and (chosen >= 0).all()
    assert (edits.owner[chosen] == np.arange(300)[:, None]).all()
    _, v = embed(model, pairs)
    with torch.no_grad():
        e = model.encode_text(torch.from_numpy(edits.head_features(chosen.reshape(-1)))).numpy()
    sims = np.einsum("nkd,nd->nk", e.reshape(300, 3, 16), v)
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    few = mine_edits(model, pairs, edits, 6)  # 4 edits per text: the rest is -1
    assert (few[:, 4:] == -1).all() and (few[:, :4] >= 0).all()


def test_random_edit_picks_are_each_images_own_seeded_and_not_the_hardest() -> None:
    pairs, edits = _pairs_with_edits()
    model = Heads(16, 32, TrainConfig(dim=16, hidden=32))
    drawn = mine_edits(model, pairs, edits, 3, np.random.default_rng(4))
    assert (edits.owner[drawn] == np.arange(300)[:, None]).all()
    assert (np.sort(drawn, axis=1)[:, 1:] != np.sort(drawn, axis=1)[:, :-1]).all()  # distinct
    np.testing.assert_array_equal(
        drawn, mine_edits(model, pairs, edits, 3, np.random.default_rng(4))
    )
    assert not np.array_equal(drawn, mine_edits(model, pairs, edits, 3, np.random.default_rng(5)))
    hardest = mine_edits(model, pairs, edits, 3)
    assert (np.sort(drawn, axis=1) != np.sort(hardest, axis=1)).any(axis=1).mean() > 0.5


def test_edits_move_the_text_head_only_when_asked() -> None:
    from models.train.contrastive import _edit_embeddings

    pairs, edits = _pairs_with_edits()
    model = Heads(16, 32, TrainConfig(dim=16, hidden=32))
    chosen = mine_edits(model, pairs, edits, 2)[:8]
    for grad in (True, False):
        model.zero_grad()
        out, valid = _edit_embeddings(model, edits, chosen, 16, grad=grad)
        assert valid.all() and out.requires_grad == grad
        if grad:
            out.sum().backward()
            assert all(p.grad is not None for p in model.text.parameters())


def test_training_with_edits_is_deterministic_and_needs_them() -> None:
    pairs, edits = _pairs_with_edits()
    cfg = TrainConfig(
        dim=16, hidden=32, batch_size=32, stage1_epochs=2, stage2_epochs=1, holdout=0.2,
        mined_per_anchor=2, mine_pool=8, edit_negatives=0,
    )  # fmt: skip
    with_edits = TrainConfig(**{**cfg.__dict__, "edit_negatives": 2, "edit_from_epoch": 1})
    plain, _ = train_heads(pairs, None, cfg, mined=True, edits=edits)  # edits unused: off
    alone, _ = train_heads(pairs, None, cfg, mined=True)
    assert _same(plain, alone)
    a, record = train_heads(pairs, None, with_edits, mined=True, edits=edits)
    b, _ = train_heads(pairs, None, with_edits, mined=True, edits=edits)
    assert _same(a, b)
    assert record["mining"]["edits"] > 0
    stage2_only = TrainConfig(**{**with_edits.__dict__, "edit_from_epoch": None, "holdout": 0.0})
    c, _ = train_heads(pairs, None, stage2_only, mined=True, edits=edits)
    d, _ = train_heads(pairs, None, TrainConfig(**{**cfg.__dict__, "holdout": 0.0}), mined=True)
    assert not _same(c, d)  # (no held-back selection that could keep stage 2's start)
    # the three forms of the edit term train three different heads
    heads = [
        train_heads(pairs, None, with_edits, mined=True, edits=edits,
                    ablations=Ablations(edit_loss=form))[0]
        for form in ("local", "i2t", "symmetric")
    ]  # fmt: skip
    assert _same(heads[2], a)  # symmetric is the default
    assert not _same(heads[0], heads[1]) and not _same(heads[1], heads[2])
    shared, rec = train_heads(pairs, None, with_edits, mined=True, edits=edits,
                              ablations=Ablations(edit_moves_temperature=True))  # fmt: skip
    assert not _same(shared, a)  # by default the temperature learns from the other terms only
    assert rec["temperature"] != record["temperature"]
    assert not SHIPPED.edit_moves_text_head  # by default the edits train the image head only
    for option in (Ablations(edit_pick="random"), Ablations(edit_moves_text_head=True)):
        first, rec = train_heads(pairs, None, with_edits, mined=True, edits=edits, ablations=option)
        assert not _same(first, a), option
        again = train_heads(pairs, None, with_edits, mined=True, edits=edits, ablations=option)[0]
        assert _same(first, again)
        assert rec["config"]["edit_pick"] == option.edit_pick  # the ablation is recorded
    with pytest.raises(ValueError, match="edits"):
        train_heads(pairs, None, with_edits, mined=True)
    other = EditSet(edits.owner + 300, edits.texts, edits.encoder_feats, None)  # another pair set
    with pytest.raises(ValueError, match="another pair set"):
        train_heads(pairs, None, with_edits, mined=True, edits=other)


def test_a_pair_set_without_minimal_pairs_trains_with_no_edits() -> None:
    pairs, _ = _pairs_with_edits()
    none = encode_edits(pairs.texts[:1], pairs.sources[:1], pairs.image_feats[:1], np.ones, None)
    assert len(none.owner) == 0
    cfg = TrainConfig(
        dim=16, hidden=32, batch_size=32, stage1_epochs=2, stage2_epochs=1, holdout=0.2,
        mined_per_anchor=2, mine_pool=8, edit_negatives=2, edit_from_epoch=1,
    )  # fmt: skip
    _, record = train_heads(pairs, None, cfg, mined=True, edits=none)
    assert record["mining"]["edits"] == 0 and record["mining"]["images_with_edits"] == 0


def test_edits_whose_swap_the_owners_photo_does_not_show_are_left_out() -> None:
    colours = ["black", "white", "red", "blue"]
    texts = [f"{b} {c} shoes" for b in ("Nike", "Puma", "Acme") for c in colours]
    texts = [t for t in texts if t != "Puma black shoes"] + ["Zeta black shoes", "Zeta white shoes"]
    f = np.stack([np.eye(8, dtype=np.float32)[colours.index(t.split()[1])] for t in texts])
    texts += ["Kilo Black Shoes", "Acme Navy Shoes"]  # a black product photographed as white;
    f = np.concatenate([f, np.eye(8, dtype=np.float32)[[1, 0]]])  # navy: on one photo only
    subs = {"black": ["white", "navy"], "white": ["black"], "nike": ["puma"], "puma": ["nike"]}

    def edits_of(min_visibility: float | None) -> set[tuple[str, str]]:
        with patch("models.train.edits.substitutes", return_value=subs):
            e = encode_edits(
                texts, ["shop"] * len(texts), f, _unit_rows, None, min_visibility=min_visibility
            )
        return {(texts[i], t) for i, t in zip(e.owner.tolist(), e.texts, strict=True)}

    everything = edits_of(None)
    seen = edits_of(0.01)
    assert seen < everything
    # the photo shows black, not white: kept; it shows white: left out
    assert ("Nike black shoes", "Nike white shoes") in seen
    assert ("Kilo Black Shoes", "Kilo White Shoes") in everything - seen
    # nothing in a photo says Nike rather than Puma (both brands' other photos are white, red and
    # blue; the owner's own photo does not vote for its word): left out
    assert ("Nike black shoes", "Puma black shoes") in everything - seen
    # navy is on one photo: the swap cannot be judged, the word-level test stands
    assert ("Nike black shoes", "Nike navy shoes") in seen
