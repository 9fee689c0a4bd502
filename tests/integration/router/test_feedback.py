"""The ticket log on the real Redis: entries per tenant, with their TTL, found in one round trip."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import redis

from router.feedback import LoggedTicket, TicketLog


def entry(tenant: str, ticket: str, text: str) -> LoggedTicket:
    return LoggedTicket(
        tenant=tenant, ticket_id=ticket, text=text, locale="en", space_id="sp-1", queue="human",
        decided_at=datetime(2026, 12, 1, tzinfo=UTC),
    )  # fmt: skip


def test_the_ticket_log_keeps_tickets_per_tenant_for_its_ttl(redis_client: redis.Redis) -> None:
    namespace = f"f{uuid.uuid4().hex[:10]}"
    log = TicketLog(redis_client, namespace, ttl_s=3600)
    try:
        log.record([entry("acme", "t-1", "where is my parcel"), entry("acme", "t-2", "")])
        log.record([])
        found = log.lookup([("acme", "t-1"), ("globex", "t-1"), ("acme", "t-9"), ("acme", "t-2")])
        assert found == [
            entry("acme", "t-1", "where is my parcel"),
            None,
            None,
            entry("acme", "t-2", ""),
        ]
        assert 3590 <= int(redis_client.ttl(log.key("acme", "t-1"))) <= 3600
        log.record([entry("acme", "t-1", "where is my parcel, again")])  # routed again: replaced
        assert log.lookup([("acme", "t-1")])[0].text == "where is my parcel, again"  # type: ignore[union-attr]
        redis_client.set(log.key("acme", "t-3"), b"{not json")
        assert log.lookup([("acme", "t-3")]) == [None]  # unreadable: as if absent
        assert log.lookup([]) == []
    finally:
        for key in redis_client.scan_iter(f"{namespace}:*"):
            redis_client.delete(key)
