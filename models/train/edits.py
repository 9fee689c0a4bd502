"""One-word edits of the pair texts: hard negative *texts* mined from our own catalogue.

Nearest-neighbour mining (``contrastive.mine_negatives``) can only offer other training pairs as
negatives, and a head that has fitted its pairs already keeps them apart: they give little gradient.
An edit differs from a pair's text in one word, and is mostly a text nobody trained on (about 4% of
them on Myntra happen to be another pair's text): "Puma Men **Navy**
T-shirt" for the photo of "Puma Men Black T-shirt". It asks the head exactly the near-miss question
("black running shoe" vs "black walking shoe") and nothing else.

Which words may replace which is learnt from the pairs themselves, not from a word list: two words
are *substitutes* when the corpus holds **minimal pairs** for them, texts that are identical except
for that one word ("Nike Men Black Shoes" / "Nike Men White Shoes"), in at least ``min_pairs``
different contexts. In a catalogue these are colours, genders, patterns and usage words; brands also
show up and are filtered by how differently their photos look (see :func:`substitutes`). During
training, the current model picks, per photo, the edits it finds hardest, again every epoch
(``contrastive.train_heads``).
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


def _distinctness(rows_a: list[int], rows_b: list[int], feats: np.ndarray) -> float:
    """How much more alike the photos within each word's pairs are than across them."""
    fa, fb = feats[rows_a], feats[rows_b]

    def within(f: np.ndarray) -> float:
        s = f @ f.T
        return float((s.sum() - np.trace(s)) / max(1, s.size - len(f)))

    return (within(fa) + within(fb)) / 2 - float((fa @ fb.T).mean())


def substitutes(
    texts: Sequence[str],
    image_feats: np.ndarray,
    *,
    min_pairs: int = 2,
    min_distinctness: float = 0.01,
    sample: int = 200,
) -> dict[str, list[str]]:
    """Words that replace each other in minimal pairs of ``texts``, most frequent first.

    Edge a-b: texts identical but for a ↔ b in at least ``min_pairs`` contexts, and photos that
    differ: within each last word (a category proxy; last words themselves are compared over all
    pairs) where each occurs without the other in 3 pairs or more (up to ``sample`` each, first
    ones), the mean cosine of ``image_feats`` within each word's pairs minus that across them,
    averaged (weighted by the smaller count), is at least ``min_distinctness``. Near synonyms and
    most brand swaps look alike and are dropped.
    """
    words = [_words(t) for t in texts]
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
    # (word, last word) → pairs; a last word itself is compared across all pairs (key "")
    rows: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r, w in enumerate(words):
        for x in sorted(set(w[:-1])):
            rows[(x, w[-1])].append(r)
        if w:
            rows[(w[-1], "")].append(r)
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
            if len(only_a) >= 3 and len(only_b) >= 3:
                gains.append(_distinctness(only_a, only_b, image_feats))
                weights.append(min(len(only_a), len(only_b)))
        if not gains or np.average(gains, weights=weights) < min_distinctness:
            continue
        out[a].append((n, b))
        out[b].append((n, a))
    return {w: [x for _, x in sorted(subs, key=lambda t: (-t[0], t[1]))] for w, subs in out.items()}


def one_word_edits(
    texts: Sequence[str], subs: dict[str, list[str]], per_text: int = 16
) -> tuple[np.ndarray, list[str]]:
    """Up to ``per_text`` edits of each text: one word replaced by one of its substitutes.

    Substitutes are taken in turn across the text's words (each word's most frequent first), so a
    text with a colour and a gender word gets both kinds of edits. The replacement follows the
    original's case when it is lower, Title or UPPER (``Black`` → ``Navy``). Edits equal to the
    text itself are skipped.

    Returns:
        (owner index per edit, edited texts).
    """
    owners: list[int] = []
    edits: list[str] = []
    for i, text in enumerate(texts):
        spans = [(m.start(), m.end(), m.group().casefold()) for m in _WORD.finditer(text)]
        options = [[(s, e, w, r) for r in subs[w]] for s, e, w in spans if w in subs]
        seen: set[str] = set()
        for rank in range(max((len(o) for o in options), default=0)):
            for opts in options:
                if rank >= len(opts) or len(seen) >= per_text:
                    continue
                s, e, _, r = opts[rank]
                original = text[s:e]
                if original.isupper() and len(original) > 1:
                    r = r.upper()
                elif original[:1].isupper():
                    r = r[:1].upper() + r[1:]
                edited = text[:s] + r + text[e:]
                if edited != text and edited not in seen:
                    seen.add(edited)
                    owners.append(i)
                    edits.append(edited)
    return np.array(owners, dtype=np.int64), edits


def encode_edits(
    texts: Sequence[str],
    sources: Sequence[str],
    image_feats: np.ndarray,
    encode: Callable[[list[str]], np.ndarray],
    lexical: LexicalFeatures | None,
    *,
    per_text: int = 16,
    min_pairs: int = 2,
    cache_dir: Path | None = None,
    cache_key: str = "",
    progress: Callable[[str], None] | None = None,
) -> EditSet:
    """Edits of every pair text (substitutes learnt per source), with encoder features from
    ``encode`` (cached on disk under ``cache_dir``, keyed by the edited texts and ``cache_key``,
    which must name the text encoder and its preprocessing, e.g. a manifest digest).

    Raises:
        ValueError: ``cache_dir`` without a ``cache_key``.
    """
    from models.projection import l2_normalize

    if cache_dir is not None and not cache_key:
        raise ValueError("caching edit features needs a cache_key that names the text encoder")

    src = np.array(sources)
    feats = l2_normalize(image_feats)
    owner_parts, edit_texts = [], []
    for source in sorted(set(sources)):
        idx = np.flatnonzero(src == source)
        own = [texts[i] for i in idx.tolist()]
        subs = substitutes(own, feats[idx], min_pairs=min_pairs)
        owners, edits = one_word_edits(own, subs, per_text)
        owner_parts.append(idx[owners])
        edit_texts += edits
    owner = np.concatenate(owner_parts) if owner_parts else np.zeros(0, np.int64)
    key = hashlib.sha256(canonical_json([cache_key, edit_texts])).hexdigest()[:24]
    cached = cache_dir / f"edits-{key}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        enc = np.load(cached)
    else:
        if progress is not None:
            progress(f"encoding {len(edit_texts)} one-word edits of the pair texts")
        enc = encode(edit_texts) if edit_texts else np.zeros((0, 0), np.float32)
        if cached is not None:  # written whole or not at all (an interrupted run leaves no file)
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".partial")
            with partial.open("wb") as f:
                np.save(f, enc)
            os.replace(partial, cached)
    return EditSet(owner, tuple(edit_texts), enc.astype(np.float32), lexical)
