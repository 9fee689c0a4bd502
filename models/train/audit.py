"""``crossroute pairs audit``: pair quality bounds everything, so look before training.

Checks: duplicates (same text and image bytes), near-duplicate images (same 64-bit difference hash,
different bytes), group consistency (one image or one title in several groups), coverage per slice
(groups and head nouns with too few pairs), broken pairs (empty text, undecodable image), and tokens
that are poorly grounded visually: frequent words whose images do not look more alike than
the other images of the same head noun (visual coherence: within each head noun, the mean cosine of
the frozen image features of the pairs containing the word minus that of all the head noun's pairs,
averaged; near zero or below), typically brand or campaign words that span unrelated categories.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.embedder import Embedder
from models.eval.dataset import Pair, load_pairs
from models.exceptions import InputError
from models.preprocess import decode_image
from models.progress import Progress, no_progress

__all__ = ["audit_pairs", "head_noun", "token_coherence", "visible_attributes", "write_filtered"]

_TOKEN = re.compile(r"[a-z0-9][a-z0-9'&-]*")


def _norm(text: str) -> str:
    return " ".join(_TOKEN.findall(text.lower()))


def _dhash(img: Image.Image) -> int:
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def head_noun(text: str) -> str:
    """The last word of the normalised text: a cheap category proxy ("… running shoes" → "shoes")."""
    words = _norm(text).split()
    return words[-1] if words else ""


def token_coherence(
    texts: Sequence[str],
    feats: np.ndarray,
    min_count: int = 30,
    rng: np.random.Generator | None = None,
) -> list[dict[str, Any]]:
    """Visual coherence of each frequent word (``min_count`` texts or more), lowest first.

    ``feats[i]`` are unit image features of ``texts[i]``'s image. A word's coherence is measured
    *within* a head noun (black t-shirts vs all t-shirts), so it gets no credit for co-occurring with
    a category word: brand words gain little, colours and styles more.
    """
    rng = rng or np.random.default_rng(0)
    heads = [head_noun(t) for t in texts]
    rows_of_head: dict[str, list[int]] = defaultdict(list)
    token_rows: dict[str, list[int]] = defaultdict(list)
    for r, (text, head) in enumerate(zip(texts, heads, strict=True)):
        if not head:
            continue
        rows_of_head[head].append(r)
        for tok in sorted(set(_norm(text).split()[:-1])):
            token_rows[tok].append(r)

    def mean_sim(rows: list[int]) -> float:
        pick = np.array(rows) if len(rows) <= 300 else rng.choice(rows, 300, replace=False)
        sims = feats[pick] @ feats[pick].T
        return float(np.mean(sims[np.triu_indices(len(pick), 1)]))

    tokens: list[dict[str, Any]] = []
    for tok, rows in sorted(token_rows.items()):  # sorted: set order varies with PYTHONHASHSEED
        if len(rows) < min_count:
            continue
        by_head: dict[str, list[int]] = defaultdict(list)
        for r in rows:
            by_head[heads[r]].append(r)
        gains, weights = [], []
        for head, hr in by_head.items():
            if len(hr) >= 5 and len(rows_of_head[head]) > len(hr):
                gains.append(mean_sim(hr) - mean_sim(rows_of_head[head]))
                weights.append(len(hr))
        if not gains:
            continue
        tokens.append(
            {
                "token": tok,
                "count": len(rows),
                "visual_coherence": round(float(np.average(gains, weights=weights)), 4),
                "head_nouns": len(by_head),
            }
        )
    tokens.sort(key=lambda t: t["visual_coherence"])
    return tokens


def visible_attributes(
    texts: Sequence[str], feats: np.ndarray, min_count: int = 30, min_coherence: float = 0.02
) -> list[frozenset[str]]:
    """Per text, the words a photo can show: its head noun and its frequent words whose visual
    coherence is at least ``min_coherence`` (colours, styles; not brands). Two products with the
    same set look alike to the image encoder whatever their other words say."""
    grounded = {
        t["token"]
        for t in token_coherence(texts, feats, min_count)
        if t["visual_coherence"] >= min_coherence
    }
    out = []
    for text in texts:
        words = _norm(text).split()
        out.append(frozenset({*(w for w in words[:-1] if w in grounded), *words[-1:]}))
    return out


def audit_pairs(
    folder: Path,
    embedder: Embedder,
    *,
    min_slice_pairs: int = 20,
    min_token_count: int = 30,
    progress: Progress = no_progress,
) -> tuple[dict[str, Any], list[tuple[int, str]]]:
    """Audit ``folder/pairs.jsonl``.

    Returns:
        The report, and the pairs to drop as (0-based index, reason).
    """
    pairs = load_pairs(folder)
    spec = embedder.manifest.spec.image.preprocess
    drops: dict[int, str] = {}
    sha: list[str] = []
    dhash: list[int | None] = []
    feature_chunks: list[np.ndarray] = []
    pending: list[Image.Image] = []  # decoded, waiting to be encoded (bounded: memory stays small)
    arr_index: list[int] = []
    for i, p in enumerate(pairs):
        data = (folder / p.image).read_bytes()
        sha.append(hashlib.sha256(data).hexdigest())
        try:
            img = decode_image(data, spec, f"line {i + 1}")
        except InputError as e:
            drops[i] = f"image cannot be used: {e.reason}"
            dhash.append(None)
            continue
        dhash.append(_dhash(img))
        pending.append(img)
        arr_index.append(i)
        if len(pending) == 256:
            feature_chunks.append(embedder.decoded_image_features(pending))
            pending = []
        if not _norm(p.text):
            drops[i] = "text is empty after normalisation"
        if (i + 1) % 1000 == 0:
            progress(f"read {i + 1}/{len(pairs)} pairs")
    # Exact duplicates: same normalised text and same image bytes.
    first_seen: dict[tuple[str, str], int] = {}
    for i, p in enumerate(pairs):
        key = (_norm(p.text), sha[i])
        if key in first_seen and i not in drops:
            drops[i] = f"duplicate of line {first_seen[key] + 1}"
        first_seen.setdefault(key, i)
    # Group consistency: one image (bytes) or one title in several groups.
    groups_of_image: dict[str, set[str]] = defaultdict(set)
    groups_of_title: dict[str, set[str]] = defaultdict(set)
    first_group_of_image: dict[str, str] = {}
    for i, p in enumerate(pairs):
        groups_of_image[sha[i]].add(p.group)
        groups_of_title[_norm(p.text)].add(p.group)
        first_group_of_image.setdefault(sha[i], p.group)
    for i, p in enumerate(pairs):
        first = first_group_of_image[sha[i]]
        if i not in drops and p.group != first:
            drops[i] = f"same image bytes already paired in group {first!r}"
    images_multi_group = sum(1 for g in groups_of_image.values() if len(g) > 1)
    titles_multi_group = {t: sorted(g) for t, g in groups_of_title.items() if len(g) > 1}
    # Near-duplicate images: same perceptual hash, different bytes.
    by_hash: dict[int, set[str]] = defaultdict(set)
    for i, h in enumerate(dhash):
        if h is not None:
            by_hash[h].add(sha[i])
    near_dup_images = sum(len(s) for s in by_hash.values() if len(s) > 1)
    # Coverage per slice: groups and head nouns (last word of the text).
    group_sizes = Counter(p.group for p in pairs)
    head_nouns = Counter(_norm(p.text).split()[-1] for p in pairs if _norm(p.text))
    thin_heads = {h: n for h, n in head_nouns.items() if n < min_slice_pairs}
    # Visual grounding of frequent tokens.
    if pending:
        feature_chunks.append(embedder.decoded_image_features(pending))
    feats = np.concatenate(feature_chunks) if feature_chunks else np.zeros((0, 1), np.float32)
    rng = np.random.default_rng(0)
    sample = (
        rng.choice(len(feats), size=min(len(feats), 2000), replace=False)
        if len(feats)
        else np.array([], int)
    )
    base = (
        float(np.mean((feats[sample] @ feats[sample].T)[np.triu_indices(len(sample), 1)]))
        if len(sample) > 1
        else 0.0
    )
    texts = [pairs[i].text for i in arr_index]
    tokens = token_coherence(texts, feats, min_token_count, rng)
    poorly = [t for t in tokens if t["visual_coherence"] < 0.01 and t["head_nouns"] >= 3]
    reasons = Counter(r.split(" of line")[0].split(":")[0] for r in drops.values())
    report: dict[str, Any] = {
        "dataset": folder.name,
        "pairs": len(pairs),
        "groups": len(group_sizes),
        "dropped": len(drops),
        "dropped_by_reason": dict(sorted(reasons.items())),
        "duplicates": sum(1 for r in drops.values() if r.startswith("duplicate")),
        "near_duplicate_images": near_dup_images,
        "images_in_several_groups": images_multi_group,
        "titles_in_several_groups": len(titles_multi_group),
        "titles_in_several_groups_examples": dict(sorted(titles_multi_group.items())[:10]),
        "group_sizes": {
            "min": min(group_sizes.values()),
            "median": float(np.median(list(group_sizes.values()))),
            "max": max(group_sizes.values()),
        },
        "coverage": {
            "head_nouns": len(head_nouns),
            "thin_head_nouns": dict(sorted(thin_heads.items(), key=lambda x: x[1])[:30]),
            "thin_groups": sum(1 for n in group_sizes.values() if n < 2),
        },
        "visual_coherence_baseline": round(base, 4),
        "poorly_grounded_tokens": poorly[:30],
        "best_grounded_tokens": tokens[::-1][:15],
    }
    return report, sorted(drops.items())


def write_filtered(folder: Path, out: Path, drops: list[tuple[int, str]]) -> tuple[int, int]:
    """Write ``out/pairs.jsonl`` without the dropped pairs, ``out/dropped.jsonl`` with the reasons,
    and link ``out/images`` to the source images. Returns (kept, dropped)."""
    pairs: list[Pair] = load_pairs(folder)
    dropped = dict(drops)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "pairs.jsonl").open("w") as kept, (out / "dropped.jsonl").open("w") as gone:
        for i, p in enumerate(pairs):
            row = {"text": p.text, "image": p.image, "group": p.group}
            if i in dropped:
                gone.write(json.dumps({**row, "line": i + 1, "reason": dropped[i]}) + "\n")
            else:
                kept.write(json.dumps(row) + "\n")
    link = out / "images"
    if not link.exists():
        link.symlink_to((folder / "images").resolve(), target_is_directory=True)
    return len(pairs) - len(dropped), len(dropped)
