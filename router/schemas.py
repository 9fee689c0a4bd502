"""Domain documents: what the catalog, the knowledge base and the support tool send us.

They live in ``router`` because routing reads them and ``router`` may not import ``streams``; the wire
events in ``streams/events.py`` wrap them. Every model is frozen and rejects unknown fields.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MAX_INLINE_IMAGE_BYTES",
    "MAX_TEXT_CHARS",
    "Article",
    "EntityId",
    "Exemplar",
    "ImageRef",
    "Locale",
    "Media",
    "Product",
    "RoutedTarget",
    "RoutingDecision",
    "TenantId",
    "Ticket",
    "WarrantyPolicy",
]

MAX_INLINE_IMAGE_BYTES = 8 * 1024 * 1024
"""Largest image that may travel inside an event; bigger ones go to object storage, by ``uri``."""
MAX_TEXT_CHARS = 20_000
"""Longest text of a ticket (or of a resolved ticket kept as an exemplar)."""

TenantId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["acme"])]
EntityId = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$", examples=["sku-123"])
]
Locale = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$", examples=["en", "en-GB"])]
Title = Annotated[str, Field(min_length=1, max_length=1_000)]
Body = Annotated[str, Field(max_length=100_000)]
Label = Annotated[str, Field(min_length=1, max_length=200)]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ImageRef(BaseModel):
    """An image, either by reference (``uri``) or inline (``data``, base64 on the wire).

    Exactly one of the two is set. Inline images are capped at :data:`MAX_INLINE_IMAGE_BYTES`;
    pixel limits are enforced where the image is decoded.
    """

    # bytes travel as base64 in JSON; Python callers pass raw bytes.
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    uri: Annotated[str, Field(min_length=1, max_length=2_048)] | None = None
    """``file:///…``, ``s3://…`` or ``https://…``; a plain path is read relative to the worker."""
    data: bytes | None = None
    """The image bytes, base64-encoded in JSON."""
    content_type: Literal["image/jpeg", "image/png", "image/webp"] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        if (self.uri is None) == (self.data is None):
            raise ValueError("exactly one of 'uri' and 'data' must be set")
        if self.data is not None:
            if not self.data:
                raise ValueError("inline image 'data' is empty")
            if len(self.data) > MAX_INLINE_IMAGE_BYTES:
                raise ValueError(
                    f"inline image is {len(self.data)} bytes, over the {MAX_INLINE_IMAGE_BYTES} "
                    "byte cap; upload it and send its 'uri'"
                )
        return self


class _Entity(BaseModel):
    model_config = _FROZEN

    id: EntityId
    tenant: TenantId
    locale: Locale = "en"


class Product(_Entity):
    """A catalog product."""

    title: Title
    description: Body = ""
    category: Label
    brand: Label | None = None
    price: Annotated[float, Field(ge=0)] | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    in_stock: bool = True
    image: ImageRef | None = None
    attrs: dict[Label, Annotated[str, Field(max_length=1_000)]] = Field(default_factory=dict)


class Article(_Entity):
    """A knowledge-base article: a routing target."""

    title: Title
    body: Body
    category: Label | None = None
    tags: tuple[Label, ...] = ()


class WarrantyPolicy(_Entity):
    """A warranty, return or refund policy: a routing target."""

    title: Title
    body: Body
    product_categories: tuple[Label, ...] = ()
    region: Label | None = None


class Exemplar(_Entity):
    """A resolved ticket: its text, and the article or policy that resolved it. Indexed next to its
    target, it votes for it (routing learns from the support data itself).

    An **out-of-scope** exemplar (``target_kind="human"``, no ``target_id``) is an escalated ticket:
    it votes for the human queue (``router.routing``: a ticket closer to it than to any target goes
    to a human, whatever the threshold).
    """

    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
    target_id: EntityId | None = None
    """The article or policy that resolved the ticket; none for an out-of-scope exemplar."""
    target_kind: Literal["article", "warranty_policy", "human"] = "article"

    @model_validator(mode="after")
    def _target(self) -> Exemplar:
        if (self.target_kind == "human") != (self.target_id is None):
            raise ValueError(
                "an exemplar names its target_id, except an out-of-scope one "
                "(target_kind 'human'), which has none"
            )
        return self


class Media(_Entity):
    """A customer-uploaded screenshot or photo."""

    media_kind: Literal["screenshot", "photo"]
    image: ImageRef
    ticket_id: EntityId | None = None
    product_id: EntityId | None = None


class Ticket(_Entity):
    """A support ticket: text and optionally a photo and/or a screenshot."""

    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] = ""
    photo: ImageRef | None = None
    screenshot: ImageRef | None = None
    product_category: Label | None = None
    customer_id: EntityId | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Ticket:
        if not self.text.strip() and self.photo is None and self.screenshot is None:
            raise ValueError("a ticket needs text, a photo or a screenshot")
        return self


Evidence = Literal["text", "photo", "screenshot_text", "screenshot_image", "catalog"]
"""A modality of the ticket that matched the target, or ``catalog``: the ticket's photo identified a
product of the tenant's catalog, and the target is written for that product's category."""


class RoutedTarget(BaseModel):
    """One candidate answer for a ticket."""

    model_config = _FROZEN

    doc_id: EntityId
    kind: Literal["article", "warranty_policy"]
    score: float
    evidence: tuple[Evidence, ...]
    """Which of the ticket's modalities matched this document."""
    exemplar_id: EntityId | None = None
    """When the score came from a resolved ticket similar to this one (an exemplar), its id."""
    via_product: EntityId | None = None
    """With ``catalog`` evidence: the catalog product the ticket's photo looks like."""


class RoutingDecision(BaseModel):
    """Where a ticket goes: ranked targets, or the human queue when nothing fits."""

    model_config = _FROZEN

    ticket_id: EntityId
    tenant: TenantId
    space_id: Annotated[str, Field(min_length=1, max_length=128)]
    """The embedding space that served this decision (ties feedback to a model version)."""
    queue: Literal["auto", "human"]
    threshold: float
    targets: tuple[RoutedTarget, ...] = ()
    decided_at: AwareDatetime

    @property
    def abstained(self) -> bool:
        """Whether the router abstained (the ticket goes to a human)."""
        return self.queue == "human"
