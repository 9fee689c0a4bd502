"""The torch reference of a bundle's embedding, one item at a time (needs ``crossroute[train]``).

The encoders run as the torch modules they were exported from (:mod:`models.export.towers`);
tokenisation, image preprocessing, the lexical and colour blocks and the projection head are the
serving path's own, so the vectors land in the bundle's space. Used as the "naive peer" of
``crossroute bench ingest`` (what a team writes first: the torch model called per message).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from models.export import require_torch
from models.preprocess import (
    ImageInput,
    TextTokenizer,
    colour_histogram,
    decode_image,
    image_to_array,
    lexical_features,
    normalize_text,
)
from models.projection import l2_normalize, load_head

if TYPE_CHECKING:
    from models.embedder import Embedder

__all__ = ["TorchReference"]


class TorchReference:
    """Embed single texts and images with the torch encoders of ``embedder``'s bundle.

    Args:
        embedder: the bundle (its manifest, tokenizer and head are reused).
        threads: torch intra-op threads (default: torch's own choice).
    """

    def __init__(self, embedder: Embedder, threads: int | None = None) -> None:
        require_torch()
        import torch

        from models.export.towers import load_image_tower, load_text_tower

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        manifest = embedder.manifest
        self.spec = manifest.spec
        self.text_tower = load_text_tower(self.spec.text)
        self.image_tower = load_image_tower(self.spec.image)
        tokenizer_file = manifest.text.tokenizer
        if tokenizer_file is None:
            raise ValueError(f"{embedder.bundle_dir}: the text encoder has no tokenizer file")
        self._tokenizer = TextTokenizer(
            embedder.bundle_dir / tokenizer_file, self.spec.text.preprocess
        )
        self._head = load_head(embedder.bundle_dir, manifest)
        self.dim = manifest.dim

    def text(self, text: str) -> np.ndarray:
        """The unit vector of one (non-empty) text."""
        torch = self._torch
        clean = normalize_text(text, self.spec.text.preprocess)
        feed = self._tokenizer([clean])
        with torch.inference_mode():
            out = self.text_tower.module(
                *[torch.from_numpy(feed[name]) for name in self.text_tower.input_names]
            )
        feats = out.numpy().astype(np.float32)
        lexical = self.spec.text.preprocess.lexical
        if lexical is not None:
            feats = np.concatenate([feats, lexical_features([clean], lexical)], axis=1)
        vector: np.ndarray = self._head.text(feats)[0]
        return vector

    def image(self, source: ImageInput, name: str = "image") -> np.ndarray:
        """The unit vector of one image (decoded with the serving path's limits)."""
        torch = self._torch
        spec = self.spec.image.preprocess
        img = decode_image(source, spec, name)
        pixels = torch.from_numpy(image_to_array(img, spec)[None])
        with torch.inference_mode():
            out = self.image_tower.module(pixels)
        if isinstance(out, tuple):  # pooled features, then the intermediate stages
            parts = [out[0], out[1]] if spec.stages else [out[0]]
            feats = torch.cat(parts, dim=1).numpy().astype(np.float32)
        else:
            feats = out.numpy().astype(np.float32)
        if spec.colour is not None:
            feats = np.concatenate([feats, colour_histogram(img, spec.colour)[None]], axis=1)
        vector: np.ndarray = self._head.image(feats)[0]
        return vector

    def document(self, text: str | None, image: ImageInput | None) -> np.ndarray:
        """A document's vector: the normalised sum of its text and image vectors (the rule of
        :class:`router.documents.Indexer`)."""
        total = np.zeros(self.dim, dtype=np.float32)
        if text:
            total += self.text(text)
        if image is not None:
            total += self.image(image)
        out: np.ndarray = l2_normalize(total[None])[0]
        return out
