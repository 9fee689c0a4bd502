from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from router.schemas import (
    MAX_INLINE_IMAGE_BYTES,
    Article,
    ImageRef,
    Media,
    Product,
    RoutedTarget,
    RoutingDecision,
    Ticket,
    WarrantyPolicy,
)
from streams.events import (
    EVENT_TYPES,
    ArticleDeleted,
    ArticleUpserted,
    EntityDeleted,
    EntityUpserted,
    FeedbackRecorded,
    MediaUploaded,
    ProductDeleted,
    ProductUpserted,
    RoutingDecided,
    TicketCreated,
    WarrantyPolicyDeleted,
    WarrantyPolicyUpserted,
    decode_event,
    encode_event,
    json_schemas,
)
from streams.exceptions import ConfigurationError, EventDecodeError
from streams.producer import KINDS, read_events
from streams.settings import TopicSettings
from streams.topics import EVENT_ROLES, MAX_MESSAGE_BYTES, ROLES, topic_role
from tests.conftest import REPO

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256))

EXAMPLES = [
    ProductUpserted(
        source_version=3,
        product=Product(
            id="sku-1", tenant="acme", title="Black running shoe", category="shoes",
            price=59.9, currency="EUR", image=ImageRef(data=JPEG, content_type="image/jpeg"),
        ),
    ),
    ProductDeleted(source_version=4, tenant_id="acme", id="sku-1"),
    ArticleUpserted(
        source_version=1,
        article=Article(id="kb-7", tenant="acme", title="Reset your password", body="Go to …"),
    ),
    ArticleDeleted(source_version=2, tenant_id="acme", id="kb-7"),
    WarrantyPolicyUpserted(
        source_version=1,
        warranty_policy=WarrantyPolicy(
            id="wp-1", tenant="acme", title="2-year warranty", body="…", product_categories=("shoes",)
        ),
    ),
    WarrantyPolicyDeleted(source_version=2, tenant_id="acme", id="wp-1"),
    MediaUploaded(
        source_version=1,
        media=Media(id="m-1", tenant="acme", media_kind="screenshot", image=ImageRef(uri="s3://b/k.png")),
    ),
    TicketCreated(
        ticket=Ticket(id="t-1", tenant="acme", text="my sole came off", photo=ImageRef(data=JPEG))
    ),
    RoutingDecided(
        decision=RoutingDecision(
            ticket_id="t-1", tenant="acme", space_id="sp-abc", queue="auto", threshold=0.4,
            targets=(
                RoutedTarget(doc_id="wp-1", kind="warranty_policy", score=0.8, evidence=("text", "photo")),
            ),
            decided_at=datetime(2026, 11, 26, tzinfo=UTC),
        )
    ),
    FeedbackRecorded(
        tenant_id="acme", ticket_id="t-1", space_id="sp-abc", action="resolved", doc_id="wp-1"
    ),
]  # fmt: skip


def test_every_event_type_has_an_example() -> None:
    assert {type(e) for e in EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.type)
def test_round_trip(event: object) -> None:
    raw = encode_event(event)  # type: ignore[arg-type]
    assert json.loads(raw)["schema_version"] == 1
    assert decode_event(raw) == event


@pytest.mark.parametrize(
    "action", ["clicked", "resolved", "escalated", "reopened", "wrong_article"]
)
def test_feedback_actions(action: str) -> None:
    """The first three are what producers sent before the feedback loop (still valid as they were);
    reopened and wrong_article take a learned exemplar back."""
    wire = json.loads(encode_event(EXAMPLES[-1]))
    wire["action"] = action
    decoded = decode_event(json.dumps(wire))
    assert isinstance(decoded, FeedbackRecorded) and decoded.action == action
    assert decoded.key == b"acme/t-1"
    wire["action"] = "liked"
    with pytest.raises(EventDecodeError, match="action"):
        decode_event(json.dumps(wire))


def test_entity_events_are_keyed_by_tenant_and_id() -> None:
    assert EXAMPLES[0].key == b"acme/sku-1"  # type: ignore[union-attr]
    assert EXAMPLES[1].key == b"acme/sku-1"  # type: ignore[union-attr]
    assert EXAMPLES[7].key == b"acme/t-1"  # type: ignore[union-attr]


def test_inline_image_is_base64_on_the_wire_and_accepts_both_alphabets() -> None:
    wire = json.loads(encode_event(EXAMPLES[0]))
    assert base64.urlsafe_b64decode(wire["product"]["image"]["data"]) == JPEG
    wire["product"]["image"]["data"] = base64.b64encode(JPEG).decode()
    decoded = decode_event(json.dumps(wire))
    assert isinstance(decoded, ProductUpserted) and decoded.product.image is not None
    assert decoded.product.image.data == JPEG


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(type="product.exploded"), "does not match any of the expected tags"),
        (lambda d: d.update(schema_version=2), "schema_version"),
        (lambda d: d.update(surprise=1), "Extra inputs are not permitted"),
        (lambda d: d.pop("source_version"), "source_version"),
        (lambda d: d.update(source_version=-1), "source_version"),
        (lambda d: d["product"].update(tenant="Acme Corp"), "tenant"),
        (lambda d: d.update(occurred_at="2026-11-26T10:00:00"), "timezone"),
    ],
)
def test_invalid_events_are_refused_with_reason(mutate: object, needle: str) -> None:
    wire = json.loads(encode_event(EXAMPLES[0]))
    mutate(wire)  # type: ignore[operator]
    with pytest.raises(EventDecodeError, match=needle):
        decode_event(json.dumps(wire))


def test_not_json_is_a_decode_error() -> None:
    with pytest.raises(EventDecodeError, match="Invalid JSON"):
        decode_event(b"\x00\x01 not json")


def test_image_ref_rules() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ImageRef()
    with pytest.raises(ValidationError, match="exactly one"):
        ImageRef(uri="x.png", data=JPEG)
    with pytest.raises(ValidationError, match="byte cap"):
        ImageRef(data=b"\0" * (MAX_INLINE_IMAGE_BYTES + 1))
    with pytest.raises(ValidationError, match="empty"):
        ImageRef(data=b"")
    assert len(ImageRef(data=b"\0" * MAX_INLINE_IMAGE_BYTES).data or b"") == MAX_INLINE_IMAGE_BYTES


def test_ticket_needs_content() -> None:
    with pytest.raises(ValidationError, match="needs text"):
        Ticket(id="t", tenant="acme", text="   ")
    assert Ticket(id="t", tenant="acme", screenshot=ImageRef(uri="a.png")).text == ""


def test_events_are_frozen() -> None:
    with pytest.raises(ValidationError):
        EXAMPLES[1].id = "other"  # type: ignore[misc]


def test_exported_json_schemas_are_current() -> None:
    """docs/schemas is what producers in other languages read: regenerate with
    `crossroute schemas export` when an event changes."""
    out = REPO / "docs" / "schemas"
    expected = {
        name: json.dumps(s, indent=2, sort_keys=True) + "\n" for name, s in json_schemas().items()
    }
    actual = {p.name: p.read_text() for p in Path(out).glob("*.schema.json")}
    assert actual == expected


def test_every_event_has_a_tenant_and_a_topic() -> None:
    for event in EXAMPLES:
        assert event.tenant == "acme", event.type
        assert topic_role(event) in ROLES  # type: ignore[arg-type]
    assert set(EVENT_ROLES) == set(EVENT_TYPES)
    assert all(hasattr(TopicSettings(), role) for role in ROLES)


def test_upserts_expose_their_document_under_their_kind() -> None:
    upserts = [e for e in EXAMPLES if isinstance(e, EntityUpserted)]
    assert len(upserts) == 4
    for event in upserts:
        kind = type(event).kind()
        assert event.type.startswith(f"{kind}.")
        assert getattr(event, kind) is event.document  # the field is named like the kind
        assert event.entity_id == event.document.id
        assert type(event).of(event.document, source_version=9).document == event.document
    deletes = [e for e in EXAMPLES if isinstance(e, EntityDeleted)]
    assert [e.entity_id for e in deletes] == ["sku-1", "kb-7", "wp-1"]


def test_the_old_policy_field_still_decodes() -> None:
    """Producers wrote ``policy`` before the field took the kind's name; their events still read."""
    wire = json.loads(encode_event(EXAMPLES[4]))
    assert "warranty_policy" in wire and "policy" not in wire
    wire["policy"] = wire.pop("warranty_policy")
    decoded = decode_event(json.dumps(wire))
    assert decoded == EXAMPLES[4]


def test_an_event_fits_a_kafka_message() -> None:
    """A ticket with an inline image of the cap (base64) and the longest text fits one message."""
    ticket = Ticket(
        id="t",
        tenant="acme",
        text="é" * 20_000,
        photo=ImageRef(data=b"\xff" * MAX_INLINE_IMAGE_BYTES),
    )
    assert len(encode_event(TicketCreated(ticket=ticket))) < MAX_MESSAGE_BYTES


def test_publish_kinds_are_the_topic_roles_and_policies_is_an_alias(tmp_path: Path) -> None:
    assert set(KINDS) <= set(ROLES)
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "wp-1", "tenant": "acme", "title": "t", "body": "b"}) + "\n")
    for kind in ("warranty_policies", "policies"):
        (event,) = read_events(kind, path, version=3)
        assert isinstance(event, WarrantyPolicyUpserted) and event.source_version == 3
        assert topic_role(event) == "warranty_policies"
        (gone,) = read_events(kind, path, version=4, delete=True)
        assert isinstance(gone, WarrantyPolicyDeleted) and gone.key == b"acme/wp-1"
    with pytest.raises(ConfigurationError, match="--delete applies to"):
        list(read_events("media", path, version=1, delete=True))
    with pytest.raises(ConfigurationError, match="kind must be one of"):
        list(read_events("policy", path, version=1))
