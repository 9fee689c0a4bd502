"""Ticket routing: embed a ticket's modalities, fuse, search the index, decide or abstain.

Fusion is explicit: each modality present in the ticket (``text``, ``photo``, ``screenshot_text`` from
OCR, ``screenshot_image``) is embedded into the one space, and the query vector is the normalised
weighted sum ``Σ w_m q_m`` (weights in :class:`~router.settings.RoutingSettings`). One filtered KNN
query (tenant, locale, product category, kinds article | warranty_policy | exemplar) returns the
candidates; each target's evidence lists the modalities whose own cosine with it reaches the
threshold (at least the best one).

The decision, exactly (the offline evaluator must keep the same rule):

- every target's score is the max of its own hit and its exemplars' hits;
- the human queue is a pseudo-target whose score is the max over the out-of-scope exemplars' hits
  (escalated tickets, ``parent`` :data:`~router.index.HUMAN_QUEUE_PARENT`); they are never targets;
- when the human score is greater than the best target's, the ticket goes to the human queue,
  whatever the threshold; otherwise it goes to the human queue when the best score is below the
  threshold, and is routed automatically when it is not.

The threshold is calibrated per embedding space (``crossroute calibrate``: the out-of-scope F1 optimum
on a labelled set) and stored as ``{space_id}.json``; a calibration can only ever apply to its space.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from models.embedder import Embedder
from models.eval.decision import prototypes
from models.exceptions import EmptyInputError, InputError
from models.preprocess import ImageInput
from models.projection import l2_normalize
from models.settings import xdg_dir
from router.documents import resolve_image
from router.exceptions import RequestError
from router.index import (
    HUMAN_QUEUE_PARENT,
    MAX_EXEMPLARS,
    DocKind,
    Filters,
    Hit,
    Pending,
    VectorIndex,
)
from router.schemas import RoutedTarget, RoutingDecision, Ticket
from router.settings import Modality, RoutingSettings

__all__ = [
    "Calibration",
    "ProductMatch",
    "Router",
    "TicketVectors",
    "calibration_dir",
    "load_calibration",
    "save_calibration",
]

log = logging.getLogger(__name__)
TARGET_KINDS: tuple[DocKind, ...] = ("article", "warranty_policy")
EXEMPLAR_FANOUT = 10
"""Candidates fetched per requested target: exemplars share their target's slot."""


class Calibration(BaseModel):
    """An abstain threshold fitted for one embedding space."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    space_id: str
    threshold: float
    dataset: str
    dataset_digest: str
    precision: float
    recall: float
    f1: float
    n_queries: int
    created_at: str


def calibration_dir(settings: RoutingSettings) -> Path:
    """Where calibrations live (``$XDG_DATA_HOME/crossroute/calibration`` by default)."""
    if settings.calibration_dir is not None:
        return settings.calibration_dir
    return xdg_dir("data") / "calibration"


def save_calibration(directory: Path, calibration: Calibration) -> Path:
    """Write ``{space_id}.json`` atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{calibration.space_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(calibration.model_dump(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load_calibration(directory: Path, space_id: str) -> Calibration | None:
    """The calibration of ``space_id``, or None when there is none (or it is unreadable)."""
    path = directory / f"{space_id}.json"
    if not path.is_file():
        return None
    try:
        cal = Calibration.model_validate_json(path.read_bytes())
    except ValueError as e:
        log.warning("ignoring unreadable calibration %s: %s", path, e)
        return None
    return cal if cal.space_id == space_id else None


def _shipped_calibration(embedder: Embedder) -> tuple[float, str] | None:
    """The threshold fitted on public data that came with the bundle's shipped head, if any."""
    projection = embedder.manifest.projection
    record = projection.training.get("calibration") if projection is not None else None
    if not isinstance(record, dict) or not isinstance(record.get("threshold"), int | float):
        return None
    head = projection.training.get("shipped_head") if projection is not None else None
    return float(record["threshold"]), f"shipped with head {head} (fit on {record.get('dataset')})"


@dataclass(frozen=True)
class ProductMatch:
    """A catalog product a ticket's photo looks like."""

    product_id: str
    category: str
    score: float
    """Cosine of the photo with the product's document."""


@dataclass(frozen=True)
class TicketVectors:
    """The embedded modalities of one ticket (unit vectors) and the OCR text, if any."""

    vectors: Mapping[Modality, np.ndarray]
    ocr_text: str | None = None


class Router:
    """Route tickets with an embedder and an index of the same space.

    Args:
        embedder: the serving bundle.
        index: the index to search (usually opened through the ``live`` alias).
        settings: fusion weights, k, threshold.
        media_root: where image URIs may be read from (None: only inline image bytes).

    Raises:
        SpaceMismatchError: the index holds another space than the embedder's.
    """

    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        settings: RoutingSettings | None = None,
        *,
        media_root: Path | None = None,
    ) -> None:
        index.check_space(embedder.space_id, "embedder")
        self.embedder = embedder
        self.index = index
        self.settings = settings or RoutingSettings()
        self.media_root = media_root
        self.calibration: Calibration | None = None
        if self.settings.threshold is not None:
            self.threshold = self.settings.threshold
            self.threshold_source = "settings"
        else:
            self.calibration = load_calibration(calibration_dir(self.settings), self.space_id)
            if self.calibration is not None:
                self.threshold = self.calibration.threshold
                self.threshold_source = f"calibration on {self.calibration.dataset}"
            elif (shipped := _shipped_calibration(embedder)) is not None:
                self.threshold, self.threshold_source = shipped
            else:
                self.threshold = self.settings.default_threshold
                self.threshold_source = "default (uncalibrated)"
                log.warning(
                    "no calibration for space %s: abstaining below the default threshold %.3f; "
                    "run `crossroute calibrate`",
                    self.space_id,
                    self.threshold,
                )

    @property
    def space_id(self) -> str:
        """The embedding space this router serves."""
        return self.embedder.space_id

    # -- embedding --------------------------------------------------------------------------------

    def embed_ticket(
        self,
        ticket: Ticket,
        *,
        photo: ImageInput | None = None,
        screenshot: ImageInput | None = None,
    ) -> TicketVectors:
        """Embed every modality the ticket has (images from the ticket or passed in as bytes).

        Raises:
            RequestError: an image cannot be read or decoded, or nothing could be embedded.
        """
        name = f"ticket {ticket.tenant}/{ticket.id}"
        try:
            if photo is None and ticket.photo is not None:
                photo = resolve_image(ticket.photo, f"{name} photo", self.media_root)
            if screenshot is None and ticket.screenshot is not None:
                screenshot = resolve_image(ticket.screenshot, f"{name} screenshot", self.media_root)
        except InputError as e:
            raise RequestError(str(e)) from e
        vectors = self._text_and_photo(ticket.text, photo, name)
        ocr_text = None
        if screenshot is not None:
            shots = self.embedder.embed_screenshots([screenshot], names=[f"{name} screenshot"])
            if shots.image.errors[0] is not None:
                raise RequestError(str(shots.image.errors[0]))
            vectors["screenshot_image"] = shots.image.vectors[0]
            ocr_text = shots.ocr_texts[0]
            if shots.text.errors[0] is None:
                vectors["screenshot_text"] = shots.text.vectors[0]
            elif not isinstance(shots.text.errors[0], EmptyInputError):
                raise RequestError(str(shots.text.errors[0]))
        if not vectors:
            raise RequestError(f"{name}: nothing to route on (empty text and no image)")
        return TicketVectors(vectors, ocr_text)

    def _text_and_photo(
        self, text: str | None, photo: ImageInput | None, name: str
    ) -> dict[Modality, np.ndarray]:
        """The ``text`` (unless blank) and ``photo`` vectors.

        Raises:
            RequestError: the photo cannot be decoded.
        """
        vectors: dict[Modality, np.ndarray] = {}
        if text and text.strip():
            batch = self.embedder.embed_texts([text], names=[f"{name} text"])
            if batch.errors[0] is None:
                vectors["text"] = batch.vectors[0]
        if photo is not None:
            batch = self.embedder.embed_images([photo], names=[f"{name} photo"])
            if batch.errors[0] is not None:
                raise RequestError(str(batch.errors[0]))
            vectors["photo"] = batch.vectors[0]
        return vectors

    def query_vector(self, text: str | None = None, image: ImageInput | None = None) -> np.ndarray:
        """The search vector of a text and/or an image: fused like a ticket's text and photo
        (:meth:`fuse`, with the routing weights).

        Raises:
            RequestError: the image cannot be decoded, or there is nothing to search with.
        """
        vectors = self._text_and_photo(text, image, "query")
        if not vectors:
            raise RequestError("a search needs a non-blank 'text' or an 'image'")
        return self.fuse(vectors)

    def fuse(self, vectors: Mapping[Modality, np.ndarray]) -> np.ndarray:
        """The query vector: normalised weighted sum of the modality vectors.

        Raises:
            RequestError: every present modality has weight 0.
        """
        total = np.zeros(self.embedder.dim, dtype=np.float32)
        for modality, vec in vectors.items():
            total += np.float32(self.settings.weights.get(modality, 0.0)) * vec
        if not np.any(total):
            raise RequestError(
                f"the ticket's modalities ({', '.join(vectors)}) all have fusion weight 0"
            )
        fused: np.ndarray = l2_normalize(total[None, :])[0]
        return fused

    # -- routing ----------------------------------------------------------------------------------

    def route(
        self,
        ticket: Ticket,
        *,
        photo: ImageInput | None = None,
        screenshot: ImageInput | None = None,
        k: int | None = None,
    ) -> RoutingDecision:
        """Route one ticket to its best articles/policies, or to the human queue.

        Raises:
            RequestError: the ticket cannot be embedded (bad image, nothing to embed).
        """
        tv = self.embed_ticket(ticket, photo=photo, screenshot=screenshot)
        return self.decide(ticket, tv, k=k)

    def identify_product(self, ticket: Ticket, tv: TicketVectors) -> ProductMatch | None:
        """The catalog product the ticket's photo shows, when one of the tenant's products is close
        enough (``RoutingSettings.product_match``) and agrees with a category the ticket names."""
        photo = tv.vectors.get("photo")
        if photo is None or self.settings.product_match is None:
            return None
        hits = self.index.knn(
            photo,
            self.space_id,
            1,
            Filters(tenant=ticket.tenant, kinds=("product",), locale=ticket.locale),
            with_payload=False,
        )
        if not hits or hits[0].score < self.settings.product_match or not hits[0].categories:
            return None
        category = hits[0].categories[0]
        if ticket.product_category is not None and ticket.product_category != category:
            return None  # the customer said otherwise: their word wins
        return ProductMatch(hits[0].id, category, hits[0].score)

    def decide(self, ticket: Ticket, tv: TicketVectors, *, k: int | None = None) -> RoutingDecision:
        """The decision for an already-embedded ticket.

        Redis is read in few round trips: the product match of a photo (its category may filter
        the rest), then the KNN with the hits' vectors (and, after a match, the documents written
        for the product's category), then the stored kind and vector of the targets reached through
        an exemplar and, by the ``prototype`` rule, the exemplars of every candidate target.
        """
        k = k or self.settings.k
        match = self.identify_product(ticket, tv)
        filters = Filters(
            tenant=ticket.tenant,
            kinds=(*TARGET_KINDS, "exemplar"),
            locale=ticket.locale,
            category=ticket.product_category or (match.category if match else None),
        )
        fetch = min(k * EXEMPLAR_FANOUT, 1000)
        query = self.fuse(tv.vectors)
        reads = self.index.reads()
        # the hits' vectors (evidence, prototypes), not their title or payload
        found = reads.knn(
            query, self.space_id, fetch, filters, with_vectors=True, with_payload=False
        )
        written: Pending[list[Hit]] | None = None
        if match is not None:
            written_for = replace(filters, kinds=TARGET_KINDS, category_only=True)
            written = reads.knn(
                query, self.space_id, k, written_for, with_vectors=True, with_payload=False
            )
        reads.run()
        hits = found.value
        out_of_scope = [h.score for h in hits if h.parent == HUMAN_QUEUE_PARENT]
        best = self._best_hits([h for h in hits if h.parent != HUMAN_QUEUE_PARENT])
        ranked, own, exemplars = self._stored(best, filters, ticket.tenant)
        targets = [self._target(hit, tv, kind) for hit, kind in ranked]
        if self.settings.exemplar_rule == "prototype":
            targets = self._prototype_scores(query, targets, own, exemplars)
        best_target = targets[0].score if targets else -math.inf
        if match is not None and written is not None:
            targets = self._through_catalog(targets, written.value, tv, match)
            best_target = max(best_target, targets[0].score) if targets else best_target
        targets = targets[:k]
        best_score = targets[0].score if targets else -1.0
        queue: Literal["auto", "human"] = "auto" if best_score >= self.threshold else "human"
        if self.settings.human_exemplars and out_of_scope:
            if max(out_of_scope) > best_target:
                queue = "human"
        return RoutingDecision(
            ticket_id=ticket.id,
            tenant=ticket.tenant,
            space_id=self.space_id,
            queue=queue,
            threshold=self.threshold,
            targets=tuple(targets),
            decided_at=datetime.now(UTC),
        )

    @staticmethod
    def _best_hits(hits: list[Hit]) -> dict[str, Hit]:
        """The best hit of each target document (its own or one of its exemplars'), best first."""
        best: dict[str, Hit] = {}
        for hit in hits:  # best first
            best.setdefault(hit.target, hit)
        return best

    def _stored(
        self, best: dict[str, Hit], filters: Filters, tenant: str
    ) -> tuple[list[tuple[Hit, str]], dict[str, np.ndarray], list[tuple[str, np.ndarray]]]:
        """What the hits do not carry, in one round trip: ``(hit, kind)`` per target, best first
        (a target reached through an exemplar must still exist: its stored kind, else it is
        dropped), each target's own vector, and, by the ``prototype`` rule, ``(parent, vector)``
        of the exemplars of every target (:meth:`VectorIndex.exemplars_of`)."""
        prototype = self.settings.exemplar_rule == "prototype"
        reads = self.index.reads()
        stored = {
            target: reads.kind_and_vector(tenant, target)
            for target, hit in best.items()
            if hit.parent is not None  # an exemplar (or a passage): read its target
        }
        found = (
            reads.exemplars_of(filters, list(best), MAX_EXEMPLARS) if prototype else Pending.of([])
        )
        reads.run()
        ranked: list[tuple[Hit, str]] = []
        own: dict[str, np.ndarray] = {}
        for target, hit in best.items():
            kind: str = hit.kind
            vector = hit.vector
            if target in stored:
                stored_kind, vector = stored[target].value
                if stored_kind not in TARGET_KINDS:
                    continue
                kind = stored_kind
            if vector is not None:
                own[target] = vector
            ranked.append((hit, kind))
        exemplars = found.value
        if prototype and len(ranked) < len(best):  # a target dropped: keep the others' exemplars
            if len(exemplars) >= MAX_EXEMPLARS:  # the answer may have been cut: ask again
                exemplars = self.index.exemplars_of(filters, [hit.target for hit, _ in ranked])
            else:
                kept = {hit.target for hit, _ in ranked}
                exemplars = [(parent, v) for parent, v in exemplars if parent in kept]
        return ranked, own, exemplars

    def _prototype_scores(
        self,
        query: np.ndarray,
        targets: list[RoutedTarget],
        own: Mapping[str, np.ndarray],
        exemplars: list[tuple[str, np.ndarray]],
    ) -> list[RoutedTarget]:
        """Re-score the candidate targets by the ``prototype`` rule of
        :mod:`models.eval.decision`: the cosine with the normalised sum of the target's own vector
        (``own``) and all its exemplars' vectors (``exemplars``, not only those among the hits);
        best first."""
        if not exemplars:
            return targets  # every prototype is its target's own vector: the scores stand
        ids = [t.doc_id for t in targets]
        position = {doc_id: i for i, doc_id in enumerate(ids)}
        docs = np.stack([own.get(i, np.zeros(self.embedder.dim, np.float32)) for i in ids])
        owner = np.array([position[parent] for parent, _ in exemplars])
        vecs = np.stack([v for _, v in exemplars])
        scores = prototypes(docs, vecs, owner) @ query
        rescored = [
            t.model_copy(update={"score": round(float(score), 6)})
            for t, score in zip(targets, scores, strict=True)
        ]
        return sorted(rescored, key=lambda t: -t.score)

    def _through_catalog(
        self, targets: list[RoutedTarget], own: list[Hit], tv: TicketVectors, match: ProductMatch
    ) -> list[RoutedTarget]:
        """Documents written for the matched product's category score at least the match, with
        ``catalog`` evidence naming the product; re-ranked best first."""
        by_id = {t.doc_id: t for t in targets}
        for hit in own:
            if hit.id not in by_id:
                by_id[hit.id] = self._target(hit, tv, hit.kind)
            t = by_id[hit.id]
            by_id[hit.id] = t.model_copy(
                update={
                    "score": round(max(t.score, match.score), 6),
                    "evidence": ("catalog", *t.evidence),
                    "via_product": match.product_id,
                }
            )
        return sorted(by_id.values(), key=lambda t: -t.score)

    def _target(self, hit: Hit, tv: TicketVectors, kind: str) -> RoutedTarget:
        sims: dict[Modality, float] = {}
        if hit.vector is not None:
            sims = {m: float(v @ hit.vector) for m, v in tv.vectors.items()}
        ranked = sorted(sims, key=lambda m: -sims[m])
        evidence = tuple(m for m in ranked if sims[m] >= self.threshold) or tuple(ranked[:1])
        return RoutedTarget(
            doc_id=hit.target,
            kind="warranty_policy" if kind == "warranty_policy" else "article",
            score=round(hit.score, 6),
            evidence=evidence,
            exemplar_id=hit.id if hit.parent is not None else None,
        )

    def search(
        self, vector: np.ndarray, filters: Filters, k: int, *, space_id: str | None = None
    ) -> list[Hit]:
        """Plain filtered KNN in this router's space (for ``/v1/search``)."""
        return self.index.knn(vector, space_id or self.space_id, k, filters)

    def describe(self) -> dict[str, Any]:
        """What this router serves: space, index, threshold and where it came from."""
        return {
            "space_id": self.space_id,
            "index": self.index.name,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "weights": dict(self.settings.weights),
            "k": self.settings.k,
        }
