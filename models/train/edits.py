"""One-word edits of the pair texts: hard negative *texts* mined from our own catalogue.

Nearest-neighbour mining (``negatives.mine_negatives``) can only offer other training pairs as
negatives, and a head that has fitted its pairs already keeps them apart: they give little gradient.
An edit differs from a pair's text in one word, and is mostly a text nobody trained on (a few
percent on Myntra happen to be another pair's text, and those with the owner's photo are left
out): "Puma Men **Navy** T-shirt" for the photo of "Puma Men Black T-shirt". It asks the head
exactly the near-miss question ("black running shoe" vs "black walking shoe") and nothing else.

Which words may replace which is learnt from the pairs themselves, not from a word list: two words
are *substitutes* when the corpus holds **minimal pairs** for them, texts that are identical except
for that one word ("Nike Men Black Shoes" / "Nike Men White Shoes"), in at least ``min_pairs``
different contexts. In a catalogue these are colours, genders, patterns and usage words; brands also
show up and are filtered by how differently their photos look (see :func:`substitutes`). An edit
that is another pair's text with the owner's photo (the same product sold under another colour
word, or another caption of the same photo) would be a false negative and is left out
(:func:`encode_edits`). During training, the current model picks, per photo, the edits it finds
hardest, again every epoch (``negatives.mine_edits``, ``contrastive.train_heads``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.config import LexicalFeatures, canonical_json
from models.preprocess import lexical_features

__all__ = ["EditSet", "encode_edits", "one_word_edits", "substitutes"]

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class EditSet:
    """Edited texts of pairs with their frozen encoder features."""

    owner: np.ndarray  # (m,) index of the pair whose text was edited
    texts: tuple[str, ...]
    encoder_feats: np.ndarray  # (m, text_dim) unit-norm text-encoder features
    lexical: LexicalFeatures | None
    """The lexical block's spec (added per chunk by :meth:`head_features`, not stored densely)."""

    def head_features(self, idx: np.ndarray) -> np.ndarray:
        """What the text head reads for edits ``idx``: encoder features (+ the lexical block)."""
        feats: np.ndarray = self.encoder_feats[idx]
        if self.lexical is None:
            return feats
        block = lexical_features([self.texts[i] for i in idx], self.lexical)
        return np.concatenate([feats, block], axis=1)

    def subset(self, keep: np.ndarray) -> EditSet:
        """Edits of the pairs ``keep`` (a boolean mask over pairs), owners renumbered to match."""
        new_index = np.cumsum(keep) - 1
        rows = np.flatnonzero(keep[self.owner])
        return EditSet(
            new_index[self.owner[rows]],
            tuple(self.texts[i] for i in rows),
            self.encoder_feats[rows],
            self.lexical,
        )


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _category_keys(words: list[str]) -> set[tuple[str, str]]:
    """(word, last word) for each word of a text but the last, a category proxy; the last word
    itself is compared across all pairs (key ``(last word, "")``)."""
    keys = {(x, words[-1]) for x in words[:-1]}
    if words:
        keys.add((words[-1], ""))
    return keys


def _distinctness(
    rows_a: list[int], rows_b: list[int], feats: np.ndarray, groups: np.ndarray
) -> float:
    """How much more alike the photos within each word's pairs are than across them. Pairs of one
    group (e.g. five captions of one photo) are left out of every mean: they are one photo. The
    caller makes sure each word has pairs of at least two groups."""

    def mean_sim(x: list[int], y: list[int], same: bool) -> float:
        apart = groups[x][:, None] != groups[y][None, :]
        if same:
            np.fill_diagonal(apart, False)
        return float((feats[x] @ feats[y].T)[apart].mean())

    within = (mean_sim(rows_a, rows_a, True) + mean_sim(rows_b, rows_b, True)) / 2
    return within - mean_sim(rows_a, rows_b, False)


def substitutes(
    texts: Sequence[str],
    image_feats: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    min_pairs: int = 2,
    min_distinctness: float = 0.01,
    sample: int = 200,
) -> dict[str, list[str]]:
    """Words that replace each other in minimal pairs of ``texts``, most frequent first.

    Edge a-b: texts identical but for a ↔ b in at least ``min_pairs`` contexts, and photos that
    differ: within each last word (a category proxy; last words themselves are compared over all
    pairs) where each occurs without the other in pairs of 3 groups or more (up to ``sample``
    pairs each, first ones), the mean cosine of ``image_feats`` within each word's pairs minus
    that across them, averaged (weighted by the smaller group count), is at least
    ``min_distinctness``. Pairs that share one of ``groups`` (default: each pair its own) are
    not compared: the same photo under two captions would count as "alike". Near synonyms and
    look-alike brands are dropped.
    """
    words = [_words(t) for t in texts]
    grp = np.arange(len(texts)) if groups is None else np.asarray(groups)
    contexts: dict[tuple[tuple[str, ...], tuple[str, ...]], set[str]] = defaultdict(set)
    for w in words:
        for i in range(len(w)):
            contexts[(tuple(w[:i]), tuple(w[i + 1 :]))].add(w[i])
    counts: Counter[tuple[str, str]] = Counter()
    for slot in contexts.values():
        ordered = sorted(slot)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                counts[(a, b)] += 1
    rows: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r, w in enumerate(words):
        for key in sorted(_category_keys(w)):
            rows[key].append(r)
    heads_of: dict[str, set[str]] = defaultdict(set)
    for x, head in rows:
        heads_of[x].add(head)
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for (a, b), n in sorted(counts.items()):
        if n < min_pairs:
            continue
        gains, weights = [], []
        for head in sorted(heads_of[a] & heads_of[b]):
            ra, rb = set(rows[(a, head)]), set(rows[(b, head)])
            only_a, only_b = sorted(ra - rb)[:sample], sorted(rb - ra)[:sample]
            photos = min(len(set(grp[only_a].tolist())), len(set(grp[only_b].tolist())))
            if photos >= 3:
                gains.append(_distinctness(only_a, only_b, image_feats, grp))
                weights.append(photos)
        if not gains or np.average(gains, weights=weights) < min_distinctness:
            continue
        out[a].append((n, b))
        out[b].append((n, a))
    return {w: [x for _, x in sorted(subs, key=lambda t: (-t[0], t[1]))] for w, subs in out.items()}


def one_word_edits(
    texts: Sequence[str], subs: dict[str, list[str]], per_text: int | None = 16
) -> tuple[np.ndarray, list[str]]:
    """Up to ``per_text`` edits of each text (None: all): one word replaced by one of its
    substitutes.

    Substitutes are taken in turn across the text's words (each word's most frequent first), so a
    text with a colour and a gender word gets both kinds of edits. The replacement follows the
    original's case when it is lower, Title or UPPER (``Black`` → ``Navy``). Edits equal to the
    text itself are skipped.

    Returns:
        (owner index per edit, edited texts).
    """
    owners, edits, _ = _edits_with_swaps(texts, subs, per_text)
    return owners, edits


def _edits_with_swaps(
    texts: Sequence[str], subs: dict[str, list[str]], per_text: int | None
) -> tuple[np.ndarray, list[str], list[tuple[int, str]]]:
    """:func:`one_word_edits`, and per edit the swap: (index of the replaced word among the text's
    words, the substitute, lower case)."""
    owners: list[int] = []
    edits: list[str] = []
    swaps: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        spans = [(m.start(), m.end(), m.group().casefold()) for m in _WORD.finditer(text)]
        options = [
            [(s, e, pos, r) for r in subs[w]] for pos, (s, e, w) in enumerate(spans) if w in subs
        ]
        seen: set[str] = set()
        for rank in range(max((len(o) for o in options), default=0)):
            for opts in options:
                if rank >= len(opts) or (per_text is not None and len(seen) >= per_text):
                    continue
                s, e, pos, r = opts[rank]
                original = text[s:e]
                cased = r
                if original.isupper() and len(original) > 1:
                    cased = r.upper()
                elif original[:1].isupper():
                    cased = r[:1].upper() + r[1:]
                edited = text[:s] + cased + text[e:]
                if edited != text and edited not in seen:
                    seen.add(edited)
                    owners.append(i)
                    edits.append(edited)
                    swaps.append((pos, r))
    return np.array(owners, dtype=np.int64), edits, swaps


def _unseen_swaps(
    texts: Sequence[str],
    owner: np.ndarray,
    swaps: Sequence[tuple[int, str]],
    feats: np.ndarray,
    groups: np.ndarray,
    min_visibility: float,
) -> np.ndarray:
    """Which edits swap a word that the owner's own photo does not show.

    A substitute pair passed :func:`substitutes`' test *on average*: black and white shirts look
    different, and so, on average, do Nike and Adidas shoes. One photo may still not show it (a
    logo too small to see, a dark navy that reads as black). Per edit, the owner's photo ``x`` is
    compared with the mean photo of the pairs whose text has the replaced word ``w`` and with that
    of the pairs whose text has the substitute ``r``, both within the text's last word (a category
    proxy; a last word is compared over all pairs) and without the owner's group: the edit is
    *unseen* when ``x·(mean_w - mean_r) < min_visibility``. Edits that cannot be judged (either
    word on photos of fewer than 3 other groups) are kept: the word-level test stands for them.
    """
    words = [_words(t) for t in texts]
    keys_of = [_category_keys(w) for w in words]
    sums: dict[tuple[str, str], np.ndarray] = {}
    count: Counter[tuple[str, str]] = Counter()
    key_groups: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
    for r, keys in enumerate(keys_of):
        for k in keys:
            sums[k] = sums[k] + feats[r] if k in sums else feats[r].astype(np.float64)
            count[k] += 1
            key_groups[k][int(groups[r])] += 1
    members: dict[int, list[int]] = defaultdict(list)
    for r, g in enumerate(groups.tolist()):
        members[int(g)].append(r)

    def centroid(key: tuple[str, str], i: int) -> np.ndarray | None:
        g = int(groups[i])
        spread = key_groups.get(key)
        if spread is None or len(spread) - (g in spread) < 3:
            return None
        total, n = sums[key], count[key]
        if g in spread:
            own = [j for j in members[g] if key in keys_of[j]]
            total = total - feats[own].sum(axis=0)
            n -= len(own)
        return total / n

    out = np.zeros(len(owner), dtype=bool)
    for e, (i, (pos, sub)) in enumerate(zip(owner.tolist(), swaps, strict=True)):
        w = words[i]
        if pos >= len(w):  # casefolding split the text differently: not judged
            continue
        head = "" if pos == len(w) - 1 else w[-1]
        mean_w, mean_r = centroid((w[pos], head), i), centroid((sub, head), i)
        if mean_w is not None and mean_r is not None:
            out[e] = float(feats[i] @ (mean_w - mean_r)) < min_visibility
    return out


def _false_negatives(
    texts: Sequence[str],
    owner: np.ndarray,
    edits: Sequence[str],
    feats: np.ndarray,
    groups: np.ndarray,
    image_cos: float,
) -> np.ndarray:
    """Which edits are another pair's text (case aside) whose photo is the owner's photo: the same
    group, or raw image cosine above ``image_cos`` (the same product under another colour word)."""
    by_text: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        by_text[t.casefold()].append(i)
    out = np.zeros(len(edits), dtype=bool)
    for e, (i, text) in enumerate(zip(owner.tolist(), edits, strict=True)):
        others = by_text.get(text.casefold())
        if others:
            o = np.array(others)
            out[e] = bool(np.any((groups[o] == groups[i]) | (feats[o] @ feats[i] > image_cos)))
    return out


def encode_edits(
    texts: Sequence[str],
    sources: Sequence[str],
    image_feats: np.ndarray,
    encode: Callable[[list[str]], np.ndarray],
    lexical: LexicalFeatures | None,
    *,
    groups: np.ndarray | None = None,
    per_text: int = 16,
    min_pairs: int = 2,
    false_negative_image_cos: float = 0.92,
    min_visibility: float | None = None,
    cache_dir: Path | None = None,
    cache_key: str = "",
    progress: Callable[[str], None] | None = None,
) -> EditSet:
    """Edits of every pair text (substitutes learnt per source), with encoder features from
    ``encode`` (cached on disk under ``cache_dir``, keyed by the edited texts and ``cache_key``,
    which must name the text encoder and its preprocessing, e.g. a manifest digest).

    Edits that are likely false negatives are left out: those equal (case aside) to the text of a
    pair of the owner's group (``groups``; each pair its own group when None), or of a pair whose
    photo has a raw image cosine above ``false_negative_image_cos`` with the owner's (the same
    threshold as the mined neighbours' filter). With ``min_visibility``, so are edits whose swap
    the owner's photo does not show (:func:`_unseen_swaps`). Each distinct edited text is encoded
    once.

    Raises:
        ValueError: ``cache_dir`` without a ``cache_key``.
    """
    from models.projection import l2_normalize

    if cache_dir is not None and not cache_key:
        raise ValueError("caching edit features needs a cache_key that names the text encoder")

    src = np.array(sources)
    feats = l2_normalize(image_feats)
    grp = np.arange(len(texts)) if groups is None else np.asarray(groups)
    owner_parts, edit_texts = [], []
    dropped = unseen = 0
    for source in sorted(set(sources)):
        idx = np.flatnonzero(src == source)
        own = [texts[i] for i in idx.tolist()]
        subs = substitutes(own, feats[idx], groups=grp[idx], min_pairs=min_pairs)
        owners, edits, swaps = _edits_with_swaps(own, subs, per_text=None)
        keep = ~_false_negatives(own, owners, edits, feats[idx], grp[idx], false_negative_image_cos)
        dropped += int((~keep).sum())
        if min_visibility is not None:
            hidden = _unseen_swaps(own, owners, swaps, feats[idx], grp[idx], min_visibility)
            unseen += int((hidden & keep).sum())
            keep &= ~hidden
        rank = np.zeros(len(own), dtype=np.int64)  # the first per_text edits left of each text
        for e in np.flatnonzero(keep):
            keep[e] = rank[owners[e]] < per_text
            rank[owners[e]] += 1
        owner_parts.append(idx[owners[keep]])
        edit_texts += [e for e, k in zip(edits, keep.tolist(), strict=True) if k]
    owner = np.concatenate(owner_parts) if owner_parts else np.zeros(0, np.int64)
    unique, inverse = np.unique(np.array(edit_texts, dtype=object), return_inverse=True)
    distinct = [str(t) for t in unique]
    key = hashlib.sha256(canonical_json(["distinct", cache_key, distinct])).hexdigest()[:24]
    cached = cache_dir / f"edits-{key}.npy" if cache_dir else None
    if progress is not None and dropped:
        progress(
            f"{dropped} candidate edits left out as likely false negatives"
            " (another pair's text, same photo)"
        )
    if progress is not None and unseen:
        progress(f"{unseen} candidate edits left out: their photo does not show the swapped word")
    if cached is not None and cached.is_file():
        enc = np.load(cached)
    else:
        if progress is not None:
            progress(f"encoding {len(distinct)} distinct one-word edits of the pair texts")
        enc = encode(distinct) if distinct else np.zeros((0, 0), np.float32)
        if cached is not None:  # written whole or not at all (an interrupted run leaves no file)
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".partial")
            with partial.open("wb") as f:
                np.save(f, enc)
            os.replace(partial, cached)
    feats_out = enc[inverse.reshape(-1)] if distinct else enc
    return EditSet(owner, tuple(edit_texts), feats_out.astype(np.float32), lexical)
