"""The feedback loop's domain pieces: exemplar ids, out-of-scope exemplars, ticket log entries (the
Redis side of the ticket log: ``tests/integration/router/test_feedback.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis
from pydantic import ValidationError

from router.feedback import LoggedTicket, Suggestion, TicketLog, exemplar_id, feedback_exemplar
from router.schemas import EntityId, Exemplar, RoutedTarget, RoutingDecision, Ticket


def test_exemplar_ids_are_fb_ticket_and_always_valid_entity_ids() -> None:
    from pydantic import TypeAdapter

    valid = TypeAdapter(EntityId).validate_python
    assert exemplar_id("t-1") == "fb-t-1"
    fits = "x" * 125
    assert exemplar_id(fits) == "fb-" + fits
    long_a, long_b = "a" * 126 + "-1", "a" * 126 + "-2"
    assert len(exemplar_id(long_a)) == 128 and exemplar_id(long_a).startswith("fb-" + "a" * 108)
    assert exemplar_id(long_a) != exemplar_id(long_b)  # a digest of the whole id keeps them apart
    assert exemplar_id(long_a) == exemplar_id(long_a)
    for ident in ("t-1", fits, long_a, "z" * 128):
        valid(exemplar_id(ident))


def test_an_exemplar_has_a_target_unless_it_is_out_of_scope() -> None:
    assert Exemplar(id="e", tenant="acme", text="hi", target_id="kb-1").target_kind == "article"
    human = Exemplar(id="e", tenant="acme", text="hi", target_kind="human")
    assert human.target_id is None
    with pytest.raises(ValidationError, match="target_id"):
        Exemplar(id="e", tenant="acme", text="hi")
    with pytest.raises(ValidationError, match="target_id"):
        Exemplar(id="e", tenant="acme", text="hi", target_id="kb-1", target_kind="human")


def test_a_logged_ticket_keeps_its_text_and_its_decision() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    ticket = Ticket(id="t-1", tenant="acme", text="where is my parcel", locale="de")
    target = RoutedTarget(doc_id="kb-1", kind="article", score=0.9, evidence=("text",))
    decision = RoutingDecision(
        ticket_id="t-1", tenant="acme", space_id="sp-1", queue="auto", threshold=0.5,
        targets=(target,), decided_at=at,
    )  # fmt: skip
    logged = LoggedTicket.of(ticket, decision)
    assert logged == LoggedTicket(
        tenant="acme", ticket_id="t-1", text="where is my parcel", locale="de", space_id="sp-1",
        queue="auto", top_target="kb-1", decided_at=at,
        suggestions=(Suggestion(doc_id="kb-1", kind="article", score=0.9),),
    )  # fmt: skip
    # an older entry (before suggestions and images were kept) still reads
    old = logged.model_dump(mode="json", exclude={"suggestions", "images"})
    assert LoggedTicket.model_validate(old).suggestions == ()
    empty = LoggedTicket.of(ticket, decision.model_copy(update={"targets": (), "queue": "human"}))
    assert empty.top_target is None and empty.queue == "human"
    resolved = feedback_exemplar(logged, "kb-2", "warranty_policy")
    assert resolved == Exemplar(
        id="fb-t-1", tenant="acme", locale="de", text="where is my parcel", target_id="kb-2",
        target_kind="warranty_policy",
    )  # fmt: skip
    escalated = feedback_exemplar(logged, None, "human")
    assert escalated.target_kind == "human" and escalated.target_id is None


def test_ticket_log_keys_carry_the_tenant() -> None:
    log = TicketLog(redis.Redis(), "ns", 60)  # keys need no connection (none is made)
    assert log.key("acme", "t-1") == "ns:ticketlog:acme:t-1"
    assert log.key("acme", "t-1") != log.key("globex", "t-1")
    assert log.queue_key("acme") == "ns:humanqueue:acme"
    with pytest.raises(ValueError, match="ttl_s"):
        TicketLog(redis.Redis(), "ns", 0)
