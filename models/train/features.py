"""Frozen-encoder features of training pairs, computed once with the bundle's ONNX encoders and cached
(keyed by the encoders' file hashes and the pairs' digest)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.config import canonical_json
from models.embedder import Embedder
from models.eval.dataset import Pair, load_pairs
from models.progress import Progress, no_progress

__all__ = [
    "PairSet",
    "TextPair",
    "align_pair_texts",
    "encode_pairs",
    "load_pair_sets",
    "support_text_pairs",
]


@dataclass(frozen=True)
class TextPair:
    """A text↔text pair (a support message and the article it belongs to)."""

    query: str
    target: str
    group: str


@dataclass(frozen=True)
class PairSet:
    """Pairs with their frozen features, ready for training."""

    text_feats: np.ndarray  # (n, text_dim): unit-norm encoder features (+ the lexical block)
    image_feats: np.ndarray  # (n, image_dim), unit norm
    groups: np.ndarray  # (n,) int group ids, unique across sources
    texts: tuple[str, ...]
    sources: tuple[str, ...]
    digest: str
    """sha256 over the canonical pairs and the sha256 of every image's bytes (the training-data digest)."""
    lexical_dim: int = 0
    """The last ``lexical_dim`` columns of ``text_feats`` are the lexical block (not unit norm)."""


def load_pair_sets(folders: Sequence[Path]) -> list[tuple[str, Path, list[Pair]]]:
    """``pairs.jsonl`` of each folder, sorted by folder name (deterministic)."""
    return [(f.name, f, load_pairs(f)) for f in sorted(folders, key=lambda p: p.name)]


def align_pair_texts(
    sets: list[tuple[str, Path, list[Pair]]],
) -> tuple[list[tuple[str, Path, list[Pair]]], int]:
    """Pair curation: a pair whose text is the title of a text document of the same folder's corpus
    is trained on that document's whole text, the text the index embeds for it.

    (photo-routing pairs say "Dress"; the article the photo must reach is "Dress\nDress: one-piece
    garment…". Training on the title aligns photos with a text nobody indexes.) Returns the sets and
    the number of pairs changed.
    """
    from models.eval.dataset import load_dataset

    out: list[tuple[str, Path, list[Pair]]] = []
    changed = 0
    for name, root, pairs in sets:
        by_title: dict[str, str] = {}
        if (root / "corpus.jsonl").is_file():
            for doc in load_dataset(root).corpus:
                full = doc.full_text()
                if doc.title and full and not doc.image:
                    by_title.setdefault(doc.title.strip(), full)
        new = []
        for p in pairs:
            full = by_title.get(p.text.strip())
            if full is not None and full != p.text:
                p = p.model_copy(update={"text": full})
                changed += 1
            new.append(p)
        out.append((name, root, new))
    return out, changed


def _digest(sets: list[tuple[str, Path, list[Pair]]], text_pairs: Sequence[TextPair]) -> str:
    h = hashlib.sha256()
    for name, root, pairs in sets:
        for p in pairs:
            img = hashlib.sha256((root / p.image).read_bytes()).hexdigest()
            h.update(canonical_json([name, p.text, p.group, img]))
    for t in text_pairs:
        h.update(canonical_json(["text", t.query, t.target, t.group]))
    return h.hexdigest()


def encode_pairs(
    embedder: Embedder,
    sets: list[tuple[str, Path, list[Pair]]],
    cache_dir: Path | None = None,
    progress: Progress = no_progress,
) -> PairSet:
    """Frozen text and image features of every pair (cached on disk when ``cache_dir`` is given)."""
    digest = _digest(sets, ())
    files = {k: v.sha256 for k, v in embedder.manifest.files.items()}
    image_spec = embedder.manifest.spec.image.preprocess.model_dump(mode="json")
    key = hashlib.sha256(canonical_json([digest, files, image_spec])).hexdigest()[:24]
    cached = cache_dir / f"pairs-{key}.npz" if cache_dir else None
    texts = tuple(p.text for _, _, pairs in sets for p in pairs)
    sources = tuple(name for name, _, pairs in sets for _ in pairs)
    group_names = [f"{name}/{p.group}" for name, _, pairs in sets for p in pairs]
    _, groups = np.unique(np.array(group_names), return_inverse=True)
    if cached is not None and cached.is_file():
        data = np.load(cached)
        text_feats, image_feats = data["text"], data["image"]
    else:
        text_feats, image_feats = _encode(embedder, sets, texts, progress)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, text=text_feats, image=image_feats)
    # The cache holds encoder features only; the lexical block (if any) is cheap and added here.
    lexical_dim = embedder.text_feature_dim - embedder.manifest.text.dim
    text = embedder.with_lexical(texts, text_feats)
    return PairSet(text, image_feats, groups, texts, sources, digest, lexical_dim)


def _encode(
    embedder: Embedder,
    sets: list[tuple[str, Path, list[Pair]]],
    texts: tuple[str, ...],
    progress: Progress,
) -> tuple[np.ndarray, np.ndarray]:
    """Encoder features of the pair texts, and image features of the pair images."""
    progress(f"encoding {len(texts)} pair texts")
    text_feats = embedder.text_features(list(texts))
    chunks = []
    done = 0
    for name, root, pairs in sets:
        for start in range(0, len(pairs), 256):
            chunk = pairs[start : start + 256]
            decoded, errors = embedder.preprocess_images([root / p.image for p in chunk])
            for err in errors:
                if err is not None:
                    raise err
            chunks.append(embedder.decoded_image_features([im for im in decoded if im is not None]))
            done += len(chunk)
            progress(f"encoding pair images {done}/{len(texts)} ({name})")
    return text_feats, np.concatenate(chunks)


def support_text_pairs(folders: Sequence[Path]) -> list[TextPair]:
    """Text↔text pairs from support corpora: each example line of an article ↔ the whole article.

    Only corpus documents are read (never queries), so the dev/held-out queries stay unseen.
    """
    from models.eval.dataset import load_dataset

    out: list[TextPair] = []
    for folder in sorted(folders, key=lambda p: p.name):
        ds = load_dataset(folder)
        for doc in ds.corpus:
            full = doc.full_text()
            if not full or doc.image:
                continue
            lines = [line.strip() for line in (doc.text or "").splitlines() if line.strip()]
            title = (doc.title or "").strip()
            examples = [line for line in lines if line != title]
            # Articles whose body is a list of example messages (banking77/clinc150 style).
            if len(examples) >= 3 and all(len(x) < 200 for x in examples):
                out += [TextPair(x, full, f"{folder.name}/{doc.id}") for x in examples]
            elif title:
                out.append(TextPair(title, full, f"{folder.name}/{doc.id}"))
    return out
