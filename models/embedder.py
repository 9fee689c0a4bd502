"""The single embedding API used by ``streams`` and ``router``: torch-free, batched, per-item errors.

``Embedder.load(bundle_dir)`` verifies the bundle and opens its ONNX encoders; ``embed_texts``,
``embed_images`` and ``embed_screenshots`` return L2-normalised float32 vectors of the bundle's one
embedding space, tagged with its space id. A bad item (empty text, undecodable or oversized image)
becomes a typed :class:`~models.exceptions.InputError` in its slot; the other items are embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.bundle import Manifest, load_manifest
from models.exceptions import BundleFormatError, EmptyInputError, InputError, ModelsError
from models.ocr import OcrEngine
from models.preprocess import (
    ImageInput,
    TextTokenizer,
    colour_histogram,
    decode_image,
    image_to_array,
    lexical_features,
    normalize_text,
)
from models.projection import Head, load_head
from models.runtime import Providers, create_session
from models.settings import ModelSettings

__all__ = ["Embedder", "EmbeddingBatch", "ScreenshotBatch"]

TEXT_CHUNK = 1024
"""Texts featurised and projected together by :meth:`Embedder.embed_texts` (bounds its memory)."""


@dataclass(frozen=True)
class EmbeddingBatch:
    """Vectors for a batch of inputs, in input order.

    Attributes:
        space_id: the embedding space of every vector.
        vectors: ``(n, dim)`` float32, unit-norm rows; a failed item's row is all zeros.
        errors: per input, ``None`` or the :class:`InputError` that kept it out.
    """

    space_id: str
    vectors: np.ndarray
    errors: tuple[InputError | None, ...]

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the items that were embedded."""
        return np.array([e is None for e in self.errors], dtype=bool)

    def raise_first(self) -> None:
        """Raise the first item error, if any (for callers that want all-or-nothing)."""
        for error in self.errors:
            if error is not None:
                raise error


@dataclass(frozen=True)
class ScreenshotBatch:
    """Screenshots: the OCR text and both views, each with its own per-item errors."""

    ocr_texts: tuple[str, ...]
    text: EmbeddingBatch
    """Embedding of the OCR text (``EmptyInputError`` where OCR found none)."""
    image: EmbeddingBatch
    """Embedding of the pixels."""


def _names(n: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"#{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"got {len(names)} names for {n} inputs")
    return [str(x) for x in names]


class Embedder:
    """Embed texts, images and screenshots into one bundle's space.

    Use :meth:`load`; the constructor takes already-verified parts.
    """

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        *,
        providers: Providers = "auto",
        threads: int | None = None,
    ) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        spec = manifest.spec
        self._text_session = create_session(
            bundle_dir / manifest.text.onnx, providers=providers, threads=threads
        )
        self._image_session = create_session(
            bundle_dir / manifest.image.onnx, providers=providers, threads=threads
        )
        self._image_outputs = [manifest.image.output]
        if spec.image.preprocess.stages:
            if manifest.image.stages_output is None or manifest.image.stages_dim is None:
                raise ModelsError(
                    f"{bundle_dir}: the spec asks for intermediate-stage image features but the "
                    f"image encoder {spec.image.name} exports none (rebuild the base bundle with "
                    "`crossroute models build`, or train with `--no-stages`; open_clip encoders "
                    "have none)"
                )
            self._image_outputs.append(manifest.image.stages_output)
        if manifest.text.tokenizer is None:
            raise ModelsError(f"{bundle_dir}: the text encoder has no tokenizer file")
        self._tokenizer = TextTokenizer(bundle_dir / manifest.text.tokenizer, spec.text.preprocess)
        self._head: Head = load_head(bundle_dir, manifest)
        widths = self._head.input_dims()
        expected = {"text": self.text_feature_dim, "image": self.image_feature_dim}
        for tower, width in widths.items():
            if width is not None and width != expected[tower]:
                raise BundleFormatError(
                    f"{bundle_dir}: the {tower} head reads {width} features but the spec gives "
                    f"{expected[tower]} (projection weights and spec do not belong together)"
                )
        self._ocr: OcrEngine | None = None
        if manifest.ocr is not None and spec.ocr is not None:
            self._ocr = OcrEngine(
                {role: bundle_dir / rel for role, rel in manifest.ocr.items()}, spec.ocr, threads
            )

    @classmethod
    def load(
        cls, bundle_dir: Path, *, providers: Providers = "auto", threads: int | None = None
    ) -> Embedder:
        """Verify a bundle (every sha256) and open its encoders.

        Raises:
            BundleFormatError, BundleIntegrityError: the bundle cannot be trusted.
        """
        manifest = load_manifest(bundle_dir, verify=True)
        return cls(bundle_dir, manifest, providers=providers, threads=threads)

    @classmethod
    def from_settings(
        cls, settings: ModelSettings, bundle_dir: Path | None = None, threads: int | None = None
    ) -> Embedder:
        """:meth:`load` the bundle ``bundle_dir`` (else the configured one) with the configured
        providers and threads (``threads`` overrides)."""
        return cls.load(
            settings.resolved_bundle_dir(bundle_dir),
            providers=settings.providers,
            threads=threads or settings.threads,
        )

    @property
    def space_id(self) -> str:
        """The embedding space every vector of this embedder belongs to."""
        return self.manifest.space_id

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return self.manifest.dim

    @property
    def encoder_feature_dim(self) -> int:
        """Width of :meth:`image_features`: the pooled features, plus the stage features if asked."""
        image = self.manifest.image
        stages = image.stages_dim if self.manifest.spec.image.preprocess.stages else None
        return image.dim + (stages or 0)

    @property
    def text_feature_dim(self) -> int:
        """Width of the text features the head reads (:meth:`head_text_features`): the encoder's,
        plus the lexical block when the spec asks for it."""
        lexical = self.manifest.spec.text.preprocess.lexical
        return self.manifest.text.dim + (lexical.dim if lexical is not None else 0)

    @property
    def image_feature_dim(self) -> int:
        """Width of the image features the head reads: the encoder's (:attr:`encoder_feature_dim`),
        plus the colour histogram."""
        colour = self.manifest.spec.image.preprocess.colour
        return self.encoder_feature_dim + (colour.dim if colour is not None else 0)

    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers in use."""
        return list(self._text_session.get_providers())

    # -- encoder features (before the head) ------------------------------------------------------

    def text_features(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Unit-norm text-encoder features of non-empty, normalised texts, ``(n, text.dim)``."""
        out = np.zeros((len(texts), self.manifest.text.dim), dtype=np.float32)
        # Sort by length so each batch pads to similar lengths; results return in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            tokens = self._tokenizer([texts[i] for i in idx])
            feed = {name: tokens[name] for name in self.manifest.text.inputs}
            (feats,) = self._text_session.run([self.manifest.text.output], feed)
            out[idx] = feats
        return out

    def with_lexical(self, texts: Sequence[str], feats: np.ndarray) -> np.ndarray:
        """``feats`` (the encoder features of ``texts``) with the lexical block appended when the
        spec asks for it (unchanged otherwise): the head's text input."""
        lexical = self.manifest.spec.text.preprocess.lexical
        if lexical is None:
            return feats
        return np.concatenate([feats, lexical_features(texts, lexical)], axis=1)

    def head_text_features(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """What the head reads for each text, ``(n, text_feature_dim)``: :meth:`text_features`,
        then the lexical block when the spec asks for it."""
        return self.with_lexical(texts, self.text_features(texts, batch_size=batch_size))

    def image_features(self, arrays: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
        """Image-encoder features of preprocessed ``(n, 3, H, W)`` arrays: the unit-norm pooled
        features, then (when the spec asks for them) the unit-norm stage features of each stage."""
        out = np.zeros((len(arrays), self.encoder_feature_dim), dtype=np.float32)
        name = self.manifest.image.inputs[0]
        for start in range(0, len(arrays), batch_size):
            feats = self._image_session.run(
                self._image_outputs, {name: arrays[start : start + batch_size]}
            )
            out[start : start + batch_size] = np.concatenate(feats, axis=1)
        return out

    def decoded_image_features(
        self, images: Sequence[Image.Image], *, batch_size: int = 32
    ) -> np.ndarray:
        """Image features of decoded images, ``(n, image_feature_dim)``: the encoder features
        (:meth:`image_features`), then (when the spec asks for it) the unit-norm colour histogram.

        Images are resized and normalised one batch at a time, so memory stays bounded by the batch
        (a 224 px float tensor is 0.6 MB per image).
        """
        spec = self.manifest.spec.image.preprocess
        enc_dim = self.encoder_feature_dim
        out = np.zeros((len(images), self.image_feature_dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            arrays = np.stack([image_to_array(im, spec) for im in chunk])
            out[start : start + len(chunk), :enc_dim] = self.image_features(
                arrays, batch_size=batch_size
            )
            if spec.colour is not None:
                out[start : start + len(chunk), enc_dim:] = np.stack(
                    [colour_histogram(im, spec.colour) for im in chunk]
                )
        return out

    def preprocess_images(
        self, images: Sequence[ImageInput], names: Sequence[str] | None = None
    ) -> tuple[list[Image.Image | None], list[InputError | None]]:
        """Decode images safely; per item, the image or the error."""
        spec = self.manifest.spec.image.preprocess
        decoded: list[Image.Image | None] = []
        errors: list[InputError | None] = []
        for name, src in zip(_names(len(images), names), images, strict=True):
            try:
                decoded.append(decode_image(src, spec, name))
                errors.append(None)
            except InputError as e:
                decoded.append(None)
                errors.append(e)
        return decoded, errors

    # -- the embedding API -----------------------------------------------------------------------

    def embed_texts(
        self, texts: Sequence[str], *, names: Sequence[str] | None = None, batch_size: int = 64
    ) -> EmbeddingBatch:
        """Embed texts; blank ones become :class:`EmptyInputError` in their slot."""
        spec = self.manifest.spec.text.preprocess
        labels = _names(len(texts), names)
        clean = [normalize_text(t, spec) if isinstance(t, str) else "" for t in texts]
        errors: list[InputError | None] = [
            None if t else EmptyInputError(labels[i], "text is empty") for i, t in enumerate(clean)
        ]
        # Shortest first, so each chunk pads to similar lengths; a chunk's head input (with a
        # lexical block, 8192 floats per text) is all that is held at once.
        good = sorted((i for i, e in enumerate(errors) if e is None), key=lambda i: len(clean[i]))
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(good), TEXT_CHUNK):
            chunk = good[start : start + TEXT_CHUNK]
            feats = self.head_text_features([clean[i] for i in chunk], batch_size=batch_size)
            vectors[chunk] = self._head.text(feats)
        return EmbeddingBatch(self.space_id, vectors, tuple(errors))

    def embed_images(
        self,
        images: Sequence[ImageInput],
        *,
        names: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> EmbeddingBatch:
        """Embed images (bytes, paths or decoded); bad ones become typed errors in their slot."""
        decoded, errors = self.preprocess_images(images, names)
        return self._embed_decoded(decoded, errors, batch_size)

    def _embed_decoded(
        self,
        decoded: Sequence[Image.Image | None],
        errors: Sequence[InputError | None],
        batch_size: int,
    ) -> EmbeddingBatch:
        good = [i for i, img in enumerate(decoded) if img is not None]
        vectors = np.zeros((len(decoded), self.dim), dtype=np.float32)
        if good:
            images = [img for img in decoded if img is not None]
            feats = self.decoded_image_features(images, batch_size=batch_size)
            vectors[good] = self._head.image(feats)
        return EmbeddingBatch(self.space_id, vectors, tuple(errors))

    def embed_screenshots(
        self,
        images: Sequence[ImageInput],
        *,
        names: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> ScreenshotBatch:
        """OCR each screenshot and embed both its text and its pixels.

        Raises:
            ModelsError: the bundle has no OCR model.
        """
        if self._ocr is None:
            raise ModelsError(f"bundle {self.space_id} has no OCR model: screenshots need one")
        labels = _names(len(images), names)
        decoded, errors = self.preprocess_images(images, labels)
        texts = [self._ocr.read(img) if img is not None else "" for img in decoded]
        text_batch = self.embed_texts(texts, names=labels)
        # Where decoding failed the text slot carries the decode error; where OCR read nothing, say so.
        text_errors = tuple(
            err if err is not None
            else EmptyInputError(name, "OCR found no text in the screenshot") if t is not None
            else None
            for name, err, t in zip(labels, errors, text_batch.errors, strict=True)
        )  # fmt: skip
        text_batch = EmbeddingBatch(self.space_id, text_batch.vectors, text_errors)
        image_batch = self._embed_decoded(decoded, errors, batch_size)
        return ScreenshotBatch(tuple(texts), text_batch, image_batch)
