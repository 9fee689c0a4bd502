"""The ticket log on the real Redis: entries per tenant, with their TTL, found in one round trip;
the human queue; abstention counted per tenant over time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from router.feedback import LoggedTicket, TicketLog
from router.outcomes import BUCKET_S, Outcomes


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A namespace of this test's own, its keys deleted afterwards."""
    name = f"f{uuid.uuid4().hex[:10]}"
    yield name
    for key in redis_client.scan_iter(f"{name}:*"):
        redis_client.delete(key)


def entry(tenant: str, ticket: str, text: str) -> LoggedTicket:
    return LoggedTicket(
        tenant=tenant, ticket_id=ticket, text=text, locale="en", space_id="sp-1", queue="human",
        decided_at=datetime(2026, 12, 1, tzinfo=UTC),
    )  # fmt: skip


def test_the_ticket_log_keeps_tickets_per_tenant_for_its_ttl(
    redis_client: redis.Redis, namespace: str
) -> None:
    log = TicketLog(redis_client, namespace, ttl_s=3600)
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


def test_the_human_queue_lists_abstained_tickets_newest_first_per_tenant(
    redis_client: redis.Redis,
    namespace: str,
) -> None:
    log = TicketLog(redis_client, namespace, ttl_s=3600)
    now = datetime.now(UTC)

    def queued(tenant: str, ticket: str, minutes_ago: float, queue: str = "human") -> LoggedTicket:
        return entry(tenant, ticket, f"text of {ticket}").model_copy(
            update={"decided_at": now - timedelta(minutes=minutes_ago), "queue": queue}
        )

    log.record(
        [queued("acme", "t-old", 30), queued("acme", "t-new", 1), queued("acme", "t-mid", 10),
         queued("acme", "t-auto", 0, queue="auto"), queued("globex", "g-1", 5)]
    )  # fmt: skip
    page = log.queue("acme")
    assert page.open == 3
    assert [t.ticket_id for t in page.tickets] == ["t-new", "t-mid", "t-old"]
    assert page.tickets[0].text == "text of t-new"
    assert [t.ticket_id for t in log.queue("globex").tickets] == ["g-1"]
    # paging: the next page starts before the last decision shown
    first = log.queue("acme", limit=2)
    assert [t.ticket_id for t in first.tickets] == ["t-new", "t-mid"]
    before = int(first.tickets[-1].decided_at.timestamp() * 1000)
    assert [t.ticket_id for t in log.queue("acme", before_ms=before).tickets] == ["t-old"]
    # answered tickets leave their own tenant's queue only
    assert log.answered([("acme", "t-mid"), ("globex", "t-new"), ("acme", "nope")]) == 1
    assert [t.ticket_id for t in log.queue("acme").tickets] == ["t-new", "t-old"]
    log.record([queued("acme", "t-mid", 10)])  # its ticket event redelivered: stays answered
    assert [t.ticket_id for t in log.queue("acme").tickets] == ["t-new", "t-old"]
    # a ticket whose log entry expired is not listed; one older than the TTL is shed
    redis_client.delete(log.key("acme", "t-old"))
    assert [t.ticket_id for t in log.queue("acme").tickets] == ["t-new"]
    log.record([queued("acme", "t-ancient", 61 * 60)])
    assert redis_client.zscore(log.queue_key("acme"), "t-ancient") is None
    assert 3590 <= int(redis_client.ttl(log.queue_key("acme"))) <= 3600


def test_abstention_is_counted_per_tenant_in_ten_minute_buckets_once_per_ticket(
    redis_client: redis.Redis,
    namespace: str,
) -> None:
    outcomes = Outcomes(redis_client, namespace, ttl_s=3600)
    now = datetime(2026, 12, 4, 0, 5, tzinfo=UTC)  # buckets on both sides of midnight
    decided = [
        ("acme", "t-1", "sp-1", "human", now - timedelta(minutes=20)),
        ("acme", "t-2", "sp-1", "human", now - timedelta(minutes=1)),
        ("acme", "t-3", "sp-1", "auto", now - timedelta(minutes=2)),
        ("globex", "g-1", "sp-1", "human", now - timedelta(minutes=1)),
    ]
    assert outcomes.record_decisions(decided) == 4
    assert outcomes.record_decisions(decided[:1]) == 0  # a replay counts nothing
    buckets = outcomes.abstention("acme", window_s=3600, now=now)
    assert len(buckets) == 3600 // BUCKET_S
    assert buckets[-1].start == datetime(2026, 12, 4, 0, 0, tzinfo=UTC)
    counted = [(b.start.strftime("%H:%M"), b.decisions, b.human) for b in buckets if b.decisions]
    assert counted == [("23:40", 1, 1), ("00:00", 2, 1)]
    assert sum(b.decisions for b in outcomes.abstention("globex", now=now)) == 1
    assert outcomes.abstention("initech", now=now)[-1].decisions == 0
