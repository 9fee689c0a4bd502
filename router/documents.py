"""From domain documents to index documents: what each kind embeds, and batch indexing.

Dataset corpus rows (the EVAL.md layout) become the domain documents they stand for with
:func:`corpus_document`, so that ``crossroute index`` and the tests index a corpus the same way.

A document's vector is the normalised sum of its text vector (title and body) and its image vector,
the same rule the offline eval harness uses for a corpus document with both, so offline numbers and
the live index agree. A document whose image cannot be read or decoded is *not* indexed from its text
alone: it is returned as failed, with the typed error, for the caller to dead-letter.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import numpy as np

from models.embedder import Embedder
from models.exceptions import ImageDecodeError, InputError
from models.preprocess import ImageInput, decode_image, title_and_text
from models.projection import l2_normalize
from router.index import (
    ANY_CATEGORY,
    HUMAN_QUEUE_PARENT,
    THUMBNAIL_PREFIX,
    DocKind,
    IndexDoc,
    VectorIndex,
    WriteResult,
)
from router.schemas import Article, Exemplar, ImageRef, Media, Product, WarrantyPolicy

if TYPE_CHECKING:
    from PIL import Image

    from models.eval.dataset import CorpusDoc

__all__ = [
    "THUMBNAIL_PX",
    "Entity",
    "IndexOutcome",
    "Indexer",
    "corpus_category",
    "corpus_document",
    "document_inputs",
    "entity_id",
    "resolve_image",
    "thumbnail",
]

log = logging.getLogger(__name__)

Entity = Product | Article | WarrantyPolicy | Media | Exemplar


def entity_id(corpus_id: str) -> str:
    """The entity id of a corpus row's ``_id``: spaces become ``_``, cut to 128 characters."""
    return corpus_id.replace(" ", "_")[:128]


def corpus_category(row: CorpusDoc) -> str | None:
    """The product category a corpus row carries: its ``article_type``, ``label`` or ``topic``."""
    return row.attrs.get("article_type") or row.attrs.get("label") or row.attrs.get("topic")


def corpus_document(row: CorpusDoc, tenant: str) -> Article | WarrantyPolicy | Product:
    """A corpus row of the EVAL.md layout as the domain document it stands for.

    ``warranty_policy`` rows become policies, ``article`` rows without an image articles, every other
    row a product (its category from the ``article_type``, ``label`` or ``topic`` attribute, else
    ``uncategorised``; its image, a path relative to the dataset, by ``uri``).
    """
    ident = entity_id(row.id)
    title = (row.title or row.text or row.id).strip()[:1000] or row.id
    category = corpus_category(row)
    if row.kind == "warranty_policy":
        return WarrantyPolicy(id=ident, tenant=tenant, title=title, body=row.text or "")
    if row.kind == "article" and not row.image:
        return Article(id=ident, tenant=tenant, title=title, body=row.text or "", category=category)
    return Product(
        id=ident,
        tenant=tenant,
        title=title,
        description=(row.text or "") if row.title else "",
        category=category or "uncategorised",
        image=ImageRef(uri=row.image) if row.image else None,
    )


THUMBNAIL_PX = 96
"""The longer side of a product's thumbnail (search results show it)."""


def thumbnail(img: Image.Image, size: int = THUMBNAIL_PX) -> str:
    """A small JPEG of a decoded image, as a ``data:image/jpeg;base64,`` URL (a few KB), kept with
    the product's document so that search results can show it without the original image."""
    small = img.copy()
    small.thumbnail((size, size))
    buf = io.BytesIO()
    small.convert("RGB").save(buf, "JPEG", quality=75, optimize=True)
    return THUMBNAIL_PREFIX + base64.b64encode(buf.getvalue()).decode()


def resolve_image(ref: ImageRef, name: str, media_root: Path | None) -> ImageInput:
    """The bytes or local path of an image reference.

    Inline ``data`` is always accepted. A ``uri`` is read only when ``media_root`` is set, only as a
    ``file:`` URI or plain path, and only inside ``media_root`` (the HTTP API sets none: a client
    must never make the server read its files).

    Raises:
        ImageDecodeError: the reference cannot be read here.
    """
    if ref.data is not None:
        return ref.data
    assert ref.uri is not None  # noqa: S101  # ImageRef guarantees exactly one of the two
    if media_root is None:
        raise ImageDecodeError(name, "image URIs are not read here; send the image bytes inline")
    parts = urlsplit(ref.uri)
    if parts.scheme not in ("", "file"):
        raise ImageDecodeError(
            name, f"cannot fetch {parts.scheme}:// images; send the bytes or a file path"
        )
    raw = unquote(parts.path) if parts.scheme == "file" else ref.uri
    root = media_root.resolve()
    path = (root / raw).resolve()
    if not path.is_relative_to(root):
        raise ImageDecodeError(name, f"image path {raw!r} is outside the media root {root}")
    return path


def document_inputs(entity: Entity) -> tuple[DocKind, str | None, ImageRef | None]:
    """The kind, the text and the image a domain document is embedded from."""
    if isinstance(entity, Product):
        return "product", title_and_text(entity.title, entity.description), entity.image
    if isinstance(entity, Article):
        return "article", title_and_text(entity.title, entity.body), None
    if isinstance(entity, WarrantyPolicy):
        return "warranty_policy", title_and_text(entity.title, entity.body), None
    if isinstance(entity, Exemplar):
        return "exemplar", entity.text, None
    return "photo", None, entity.image


def _categories(entity: Entity) -> tuple[str, ...]:
    if isinstance(entity, Product):
        return (entity.category,)
    if isinstance(entity, Article):
        return (entity.category,) if entity.category else ()
    if isinstance(entity, WarrantyPolicy):
        return tuple(entity.product_categories)
    return ()


def _title(entity: Entity) -> str:
    return entity.title if isinstance(entity, Product | Article | WarrantyPolicy) else ""


@dataclass
class IndexOutcome:
    """What happened to one batch: the write counts, and the documents that could not be embedded."""

    result: WriteResult = field(default_factory=WriteResult)
    failed: list[tuple[int, InputError]] = field(default_factory=list)
    """(position in the batch, error) of each document left out (bad image, nothing to embed)."""


class Indexer:
    """Embed domain documents in batches and write them to a :class:`VectorIndex` of the same space.

    Raises (constructor):
        SpaceMismatchError: the embedder and the index are of different spaces.
    """

    def __init__(self, embedder: Embedder, index: VectorIndex, media_root: Path | None = None):
        index.check_space(embedder.space_id, "embedder")
        self.embedder = embedder
        self.index = index
        self.media_root = media_root

    def embed(
        self, entities: Sequence[Entity]
    ) -> tuple[list[np.ndarray | None], list[InputError | None]]:
        """Per document, its vector or the error that kept it out."""
        n = len(entities)
        names = [f"{type(e).__name__.lower()} {e.tenant}/{e.id}" for e in entities]
        inputs = [document_inputs(e) for e in entities]
        errors: list[InputError | None] = [None] * n
        total = np.zeros((n, self.embedder.dim), dtype=np.float32)
        has_any = np.zeros(n, dtype=bool)
        text_idx = [i for i, (_, text, _) in enumerate(inputs) if text]
        if text_idx:
            batch = self.embedder.embed_texts(
                [inputs[i][1] or "" for i in text_idx], names=[names[i] for i in text_idx]
            )
            for j, i in enumerate(text_idx):
                if batch.errors[j] is None:
                    total[i] += batch.vectors[j]
                    has_any[i] = True
        images: list[ImageInput] = []
        image_idx: list[int] = []
        for i, (_, _, ref) in enumerate(inputs):
            if ref is None:
                continue
            try:
                images.append(resolve_image(ref, names[i], self.media_root))
                image_idx.append(i)
            except InputError as e:
                errors[i] = e
        if image_idx:
            batch = self.embedder.embed_images(images, names=[names[i] for i in image_idx])
            for j, i in enumerate(image_idx):
                if batch.errors[j] is not None:
                    errors[i] = batch.errors[j]
                else:
                    total[i] += batch.vectors[j]
                    has_any[i] = True
        vectors = l2_normalize(total)
        out: list[np.ndarray | None] = []
        for i in range(n):
            if errors[i] is None and not has_any[i]:
                errors[i] = InputError(names[i], "nothing to embed: no text and no image")
            out.append(vectors[i] if errors[i] is None else None)
        return out, errors

    def upsert(self, entities: Sequence[Entity], versions: Sequence[int]) -> IndexOutcome:
        """Embed and write a batch; bad documents are reported in ``failed`` and not written."""
        vectors, errors = self.embed(entities)
        return self.write(entities, versions, vectors, errors)

    def write(
        self,
        entities: Sequence[Entity],
        versions: Sequence[int],
        vectors: Sequence[np.ndarray | None],
        errors: Sequence[InputError | None],
    ) -> IndexOutcome:
        """Write a batch embedded by :meth:`embed` (so that retrying a write never re-embeds)."""
        if not len(entities) == len(versions) == len(vectors) == len(errors):
            raise ValueError(
                f"{len(entities)} documents, {len(versions)} versions, {len(vectors)} vectors"
            )
        outcome = IndexOutcome()
        docs = []
        for i, (entity, version, vec, err) in enumerate(
            zip(entities, versions, vectors, errors, strict=True)
        ):
            if err is not None or vec is None:
                outcome.failed.append((i, err or InputError(entity.id, "not embedded")))
                continue
            kind, _, _ = document_inputs(entity)
            categories = _categories(entity)
            parent = None
            if isinstance(entity, Exemplar) and entity.target_id is not None:
                parent = entity.target_id  # filters see the exemplar as its target
                categories = self._target_categories(entity.tenant, entity.target_id)
            elif isinstance(entity, Exemplar):
                parent = HUMAN_QUEUE_PARENT  # out of scope: applies to every category
            docs.append(
                IndexDoc(
                    id=entity.id,
                    tenant=entity.tenant,
                    kind=kind,
                    vector=vec,
                    source_version=version,
                    space_id=self.embedder.space_id,
                    locale=entity.locale,
                    categories=categories,
                    in_stock=entity.in_stock if isinstance(entity, Product) else None,
                    title=_title(entity),
                    parent=parent,
                    thumbnail=self._thumbnail(entity),
                )
            )
        if docs:
            outcome.result = self.index.upsert(docs)
        return outcome

    def _thumbnail(self, entity: Entity) -> str | None:
        """A product's thumbnail (:func:`thumbnail`); None for other documents, for a product
        without an image, or one whose image cannot be read here any more."""
        if not isinstance(entity, Product) or entity.image is None:
            return None
        spec = self.embedder.manifest.spec.image.preprocess
        try:
            source = resolve_image(entity.image, entity.id, self.media_root)
            return thumbnail(decode_image(source, spec, entity.id, draft=THUMBNAIL_PX))
        except InputError as e:  # it was embedded a moment ago: changed since, or unreadable
            log.warning("no thumbnail for product %s/%s: %s", entity.tenant, entity.id, e)
            return None

    def _target_categories(self, tenant: str, target_id: str) -> tuple[str, ...]:
        stored = self.index.get(tenant, target_id)
        if stored is None or stored.get("category", ANY_CATEGORY) == ANY_CATEGORY:
            return ()
        return tuple(stored["category"].split("|"))

    def kind_of(self, tenant: str, entity_id: str) -> DocKind | None:
        """The kind of a document of ``tenant`` in the index (``article``, …), or None when the
        tenant has no such document."""
        return self.index.kind_of(tenant, entity_id)

    def delete(self, refs: Sequence[tuple[str, str, int]]) -> WriteResult:
        """Delete ``(tenant, id, source_version)`` documents."""
        return self.index.delete(refs)
