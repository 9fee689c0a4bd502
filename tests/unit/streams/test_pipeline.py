"""``Pipeline`` without Kafka, Redis or a model: fakes stand in at its four seams (the indexer, the
router, the ticket log and the Kafka producer), so every branch of a batch can be driven and checked
exactly (feedback: ``test_pipeline_feedback.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import redis
from confluent_kafka import KafkaError, Producer

from models.exceptions import CrossrouteError, ImageDecodeError, InputError
from router.documents import Entity, IndexOutcome
from router.exceptions import IndexingFailureError, RequestError
from router.feedback import LoggedTicket
from router.index import DocKind, WriteResult
from router.schemas import Article, ImageRef, Product, RoutingDecision, Ticket
from streams.events import (
    ArticleUpserted,
    FeedbackRecorded,
    ProductDeleted,
    ProductUpserted,
    RoutingDecided,
    TicketCreated,
    decode_event,
    encode_event,
)
from streams.exceptions import ServiceUnavailableError
from streams.pipeline import Pipeline, RawMessage, is_retryable
from streams.settings import ConsumerSettings, TopicSettings
from streams.topics import topic_role

TOPICS = TopicSettings(prefix="t.")
DIM = 4


# -- fakes at the seams -------------------------------------------------------------------------


@dataclass
class FakeIndexer:
    """Embeds every document to a fixed vector unless its id is in ``bad``; ``failures`` are raised
    by the next writes/deletes, one per call, before one succeeds; ``kinds`` are the documents
    ``kind_of`` knows, by ``(tenant, id)``."""

    bad: set[str] = field(default_factory=set)
    failures: list[BaseException] = field(default_factory=list)
    writes: list[list[tuple[str, int]]] = field(default_factory=list)
    deletes: list[list[tuple[str, str, int]]] = field(default_factory=list)
    kinds: dict[tuple[str, str], DocKind] = field(default_factory=dict)

    def embed(
        self, entities: Sequence[Entity]
    ) -> tuple[list[np.ndarray | None], list[InputError | None]]:
        vectors: list[np.ndarray | None] = []
        errors: list[InputError | None] = []
        for e in entities:
            bad = e.id in self.bad
            vectors.append(None if bad else np.ones(DIM, dtype=np.float32) / 2)
            errors.append(ImageDecodeError(e.id, "not an image") if bad else None)
        return vectors, errors

    def _maybe_fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    def write(
        self, entities: Sequence[Entity], versions: Sequence[int], *more: Any
    ) -> IndexOutcome:
        _, errors = more  # vectors, errors
        self._maybe_fail()
        outcome = IndexOutcome()
        ok = []
        for i, (entity, version, err) in enumerate(zip(entities, versions, errors, strict=True)):
            if err is not None:
                outcome.failed.append((i, err))
            else:
                ok.append((entity.id, version))
        self.writes.append(ok)
        outcome.result = WriteResult(written=len(ok))
        return outcome

    def delete(self, refs: Sequence[tuple[str, str, int]]) -> WriteResult:
        self._maybe_fail()
        self.deletes.append(list(refs))
        return WriteResult(deleted=len(refs))

    def kind_of(self, tenant: str, entity_id: str) -> DocKind | None:
        return self.kinds.get((tenant, entity_id))


@dataclass
class FakeTicketLog:
    """The ticket log as a dict keyed by ``(tenant, ticket id)``, like the Redis keys."""

    entries: dict[tuple[str, str], LoggedTicket] = field(default_factory=dict)
    queued: set[tuple[str, str]] = field(default_factory=set)

    def record(self, entries: Sequence[LoggedTicket]) -> None:
        for entry in entries:
            self.entries[(entry.tenant, entry.ticket_id)] = entry
            if entry.queue == "human":
                self.queued.add((entry.tenant, entry.ticket_id))

    def lookup(self, refs: Sequence[tuple[str, str]]) -> list[LoggedTicket | None]:
        return [self.entries.get(ref) for ref in refs]

    def answered(self, refs: Sequence[tuple[str, str]]) -> int:
        there = self.queued & set(refs)
        self.queued -= there
        return len(there)


@dataclass
class FakeRouter:
    """Routes to ``kb-1``; a ticket whose text contains ``???`` goes to the human queue, ``bad`` is
    refused (a ``RequestError``); ``failures`` are raised first, one per call."""

    failures: list[BaseException] = field(default_factory=list)
    routed: list[str] = field(default_factory=list)

    def route(self, ticket: Ticket) -> RoutingDecision:
        if self.failures:
            raise self.failures.pop(0)
        if ticket.text == "bad":
            raise RequestError(f"ticket {ticket.id}: nothing to route on")
        self.routed.append(ticket.id)
        return RoutingDecision(
            ticket_id=ticket.id,
            tenant=ticket.tenant,
            space_id="sp-test",
            queue="human" if "???" in ticket.text else "auto",
            threshold=0.3,
            decided_at=datetime(2026, 12, 1, tzinfo=UTC),
        )


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


@dataclass
class FakeProducer:
    """Records what is produced; ``flush`` reports each delivery (an error for ``fail_topic``);
    the first ``full`` produce calls find the local queue full."""

    fail_topic: str | None = None
    full: int = 0
    pending_flushes: int = 0
    sent: list[Sent] = field(default_factory=list)
    _callbacks: list[tuple[str, Callable[[Any, Any], None]]] = field(default_factory=list)

    def produce(self, topic: str, **kw: Any) -> None:  # value, key, headers, on_delivery
        if self.full:
            self.full -= 1
            raise BufferError("queue full")
        self.sent.append(Sent(topic, kw["key"], kw["value"], list(kw["headers"] or [])))
        self._callbacks.append((topic, kw["on_delivery"]))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        if self.pending_flushes:
            self.pending_flushes -= 1
            return len(self._callbacks)
        for topic, callback in self._callbacks:
            error = KafkaError(KafkaError._MSG_TIMED_OUT) if topic == self.fail_topic else None
            callback(error, None)
        self._callbacks = []
        return 0

    def to(self, role: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == TOPICS.name(role)]


@dataclass
class World:
    pipeline: Pipeline
    indexer: FakeIndexer
    router: FakeRouter
    producer: FakeProducer
    sleeps: list[float]
    ticket_log: FakeTicketLog


@pytest.fixture
def world() -> World:
    return make_world()


def make_world(indexer: FakeIndexer | None = None, **settings: Any) -> World:
    indexer = indexer or FakeIndexer()
    router, producer, sleeps, ticket_log = FakeRouter(), FakeProducer(), [], FakeTicketLog()
    pipeline = Pipeline(
        indexer,
        router,
        {},
        TOPICS,
        ConsumerSettings(**{"retry_initial_s": 0.5, "retry_max_s": 1.5, **settings}),
        sleep=sleeps.append,
        producer=producer,
        ticket_log=ticket_log,
    )
    return World(pipeline, indexer, router, producer, sleeps, ticket_log)


# -- messages -----------------------------------------------------------------------------------

_offsets = iter(range(10**6))


def raw(event: Any, role: str | None = None, **kw: Any) -> RawMessage:
    """The message of ``event`` on its topic (or on ``role``'s)."""
    role = role or topic_role(event)
    return RawMessage(
        topic=TOPICS.name(role), partition=0, offset=next(_offsets), key=event.key,
        value=encode_event(event), **kw,
    )  # fmt: skip


def product(ident: str, version: int, tenant: str = "acme") -> ProductUpserted:
    doc = Product(
        id=ident, tenant=tenant, title=f"Product {ident}", category="shoes",
        image=ImageRef(data=b"\x89PNG fake"),
    )  # fmt: skip
    return ProductUpserted.of(doc, source_version=version)


def ticket(ident: str, text: str, tenant: str = "acme") -> TicketCreated:
    return TicketCreated(ticket=Ticket(id=ident, tenant=tenant, text=text))


def header(sent: Sent, name: str) -> bytes | str | None:
    return dict(sent.headers)[name]


# -- dead letters -------------------------------------------------------------------------------


def test_undecodable_bytes_are_dead_lettered_with_their_bytes_and_headers(world: World) -> None:
    msg = RawMessage(
        topic=TOPICS.name("products"), partition=2, offset=41, key=b"acme/x",
        value=b'{"type": "product.exploded"}', headers=[("trace-id", b"abc")],
    )  # fmt: skip
    result = world.pipeline.process([msg])
    assert result.dead_lettered == 1 and result.indexed == 0
    (dead,) = world.producer.to("dead_letters")
    assert dead.value == msg.value and dead.key == b"acme/x"
    assert dead.headers[0] == ("trace-id", b"abc")  # the original headers come first
    assert header(dead, "crossroute.error.reason") == b"invalid_event"
    assert b"does not match any of the expected tags" in header(dead, "crossroute.error")  # type: ignore[operator]
    assert header(dead, "crossroute.source.topic") == b"t.products"
    assert header(dead, "crossroute.source.partition") == b"2"
    assert header(dead, "crossroute.source.offset") == b"41"
    assert world.indexer.writes == [] and world.producer.sent == [dead]


def test_events_of_a_tenant_not_served_here_are_dead_lettered() -> None:
    world = make_world(tenants=("acme",))
    result = world.pipeline.process(
        [raw(product("p1", 1, tenant="other")), raw(ticket("t1", "help", tenant="other"))]
    )
    assert result.dead_lettered == 2 and result.indexed == result.routed == 0
    reasons = [header(s, "crossroute.error.reason") for s in world.producer.to("dead_letters")]
    assert reasons == [b"unknown_tenant", b"unknown_tenant"]
    assert world.router.routed == [] and world.indexer.writes == []


def test_an_event_on_another_topic_than_its_own_is_dead_lettered(world: World) -> None:
    decision = RoutingDecided(decision=FakeRouter().route(Ticket(id="t", tenant="acme", text="x")))
    result = world.pipeline.process(
        [
            raw(product("p1", 1), role="articles"),
            raw(ticket("t1", "help"), role="products"),
            raw(decision, role="decisions"),  # its own topic, but not one the worker consumes
        ]
    )
    assert result.dead_lettered == 3 and result.indexed == result.routed == 0
    errors = [header(s, "crossroute.error") for s in world.producer.to("dead_letters")]
    assert errors[0] == b"product.upserted belongs on t.products, not t.articles"
    assert errors[1] == b"ticket.created belongs on t.tickets, not t.products"
    assert errors[2] == b"routing.decided is an output of the worker, not an input"
    assert {header(s, "crossroute.error.reason") for s in world.producer.to("dead_letters")} == {
        b"unexpected_event"
    }


def test_documents_that_cannot_be_embedded_are_dead_lettered(world: World) -> None:
    world.indexer.bad = {"p2"}
    bad = raw(product("p2", 1))
    result = world.pipeline.process([raw(product("p1", 1)), bad])
    assert result.indexed == 1 and result.dead_lettered == 1
    assert world.indexer.writes == [[("p1", 1)]]
    (dead,) = world.producer.to("dead_letters")
    assert dead.value == bad.value and header(dead, "crossroute.error.reason") == b"bad_input"
    assert header(dead, "crossroute.error") == b"p2: not an image"


# -- entities -----------------------------------------------------------------------------------


def test_the_newest_event_of_an_entity_in_a_batch_wins(world: World) -> None:
    article = ArticleUpserted.of(
        Article(id="a1", tenant="acme", title="Returns", body="How to"), source_version=1
    )
    batch = [raw(product("p1", 1)), raw(article), raw(product("p1", 3)), raw(product("p2", 1))]
    result = world.pipeline.process(batch)
    assert result.indexed == 3 and result.dead_lettered == 0
    assert world.indexer.writes == [[("p1", 3), ("a1", 1), ("p2", 1)]]
    assert world.indexer.deletes == []


def test_deletes_and_a_delete_after_an_upsert_in_the_same_batch(world: World) -> None:
    batch = [
        raw(product("p1", 1)),
        raw(ProductDeleted(tenant_id="acme", id="p1", source_version=2)),
        raw(ProductDeleted(tenant_id="acme", id="p9", source_version=5)),
    ]
    result = world.pipeline.process(batch)
    assert result.deleted == 2 and result.indexed == 0
    assert world.indexer.writes == []
    assert world.indexer.deletes == [[("acme", "p1", 2), ("acme", "p9", 5)]]


# -- retries ------------------------------------------------------------------------------------


def test_retryable_failures_are_retried_with_backoff_until_they_succeed(world: World) -> None:
    world.indexer.failures = [
        redis.ConnectionError("down"),
        redis.TimeoutError("slow"),
        ServiceUnavailableError("redis is restarting"),
        CrossrouteError("a service said: later", retryable=True),
    ]
    result = world.pipeline.process([raw(product("p1", 1))])
    assert result.indexed == 1 and world.indexer.writes == [[("p1", 1)]]
    assert world.sleeps == [0.5, 1.0, 1.5, 1.5]  # doubling from retry_initial_s, capped at max
    metrics = world.pipeline.metrics.registry
    assert metrics.get_sample_value("crossroute_retries_total", {"kind": "redis"}) == 4


def test_a_routing_failure_that_is_retryable_is_retried_too(world: World) -> None:
    world.router.failures = [redis.ConnectionError("down")]
    result = world.pipeline.process([raw(ticket("t1", "my shoe broke"))])
    assert result.routed == 1 and world.sleeps == [0.5]


@pytest.mark.parametrize(
    "error",
    [
        IndexingFailureError("hash_indexing_failures grew"),
        CrossrouteError("bad configuration"),
        RuntimeError("a bug"),
        redis.ResponseError("WRONGTYPE"),
    ],
    ids=type,
)
def test_other_failures_propagate_at_once(world: World, error: BaseException) -> None:
    world.indexer.failures = [error]
    with pytest.raises(type(error)):
        world.pipeline.process([raw(product("p1", 1))])
    assert world.sleeps == [] and world.indexer.writes == []


def test_retryable_is_what_decides() -> None:
    assert is_retryable(ServiceUnavailableError("x"))
    assert is_retryable(redis.ConnectionError()) and is_retryable(redis.TimeoutError())
    assert not is_retryable(RequestError("x")) and not is_retryable(redis.ResponseError())
    assert is_retryable(redis.exceptions.OutOfMemoryError("OOM command not allowed"))
    assert is_retryable(redis.exceptions.ReadOnlyError("READONLY"))
    assert not is_retryable(ValueError("x"))


# -- tickets ------------------------------------------------------------------------------------


def test_tickets_become_decisions_and_abstentions_also_reach_the_human_queue(
    world: World,
) -> None:
    result = world.pipeline.process(
        [raw(ticket("t1", "my shoe broke")), raw(ticket("t2", "???")), raw(ticket("t3", "bad"))]
    )
    assert result.routed == 2 and result.dead_lettered == 1
    decisions = [decode_event(s.value) for s in world.producer.to("decisions")]
    assert [(d.decision.ticket_id, d.decision.queue) for d in decisions] == [  # type: ignore[union-attr]
        ("t1", "auto"),
        ("t2", "human"),
    ]
    assert [s.key for s in world.producer.to("decisions")] == [b"acme/t1", b"acme/t2"]
    (human,) = world.producer.to("human_queue")
    assert human.key == b"acme/t2" and decode_event(human.value) == decisions[1]
    assert [d.decision.ticket_id for d in result.decisions] == ["t1", "t2"]
    (dead,) = world.producer.to("dead_letters")
    assert header(dead, "crossroute.error.reason") == b"bad_ticket"
    # the routed tickets are logged for their feedback, with their decision; the refused one is not
    logged = world.ticket_log.entries
    assert sorted(logged) == [("acme", "t1"), ("acme", "t2")]
    assert (
        logged[("acme", "t1")].text == "my shoe broke" and logged[("acme", "t2")].queue == "human"
    )
    assert logged[("acme", "t1")].space_id == "sp-test"


# -- the producer -------------------------------------------------------------------------------


def test_a_full_local_queue_waits_and_a_slow_broker_is_waited_for(world: World) -> None:
    world.producer.full = 2
    world.producer.pending_flushes = 2
    result = world.pipeline.process([raw(ticket("t1", "my shoe broke"))])
    assert result.routed == 1 and len(world.producer.to("decisions")) == 1
    assert world.sleeps == [0.5, 1.0]  # two flushes that left messages behind
    metrics = world.pipeline.metrics.registry
    assert metrics.get_sample_value("crossroute_retries_total", {"kind": "kafka"}) == 2


def test_the_worker_builds_its_own_producer_unless_given_one() -> None:
    config = {"bootstrap.servers": "127.0.0.1:1"}  # never reached: nothing is produced
    given = Producer(config)  # an empty one is falsy (len 0): still the one used
    seams = (FakeIndexer(), FakeRouter(), config, TOPICS, ConsumerSettings())
    kept = Pipeline(*seams, producer=given, ticket_log=FakeTicketLog())
    assert kept._producer is given
    built = Pipeline(*seams, ticket_log=FakeTicketLog())
    assert isinstance(built._producer, Producer) and built._producer is not given


def test_delivery_errors_fail_the_batch(world: World) -> None:
    world.producer.fail_topic = TOPICS.name("decisions")
    with pytest.raises(ServiceUnavailableError, match="1 message\\(s\\) not delivered"):
        world.pipeline.process([raw(ticket("t1", "my shoe broke"))])
    world.producer.fail_topic = None  # the errors were for that batch only
    assert world.pipeline.process([raw(ticket("t2", "my shoe broke"))]).routed == 1


# -- outcomes and replays -----------------------------------------------------------------------


@dataclass
class FakeOutcomes:
    decisions: list[tuple[str, str, str, str, datetime]] = field(default_factory=list)
    feedback: list[tuple[str, str, str, datetime]] = field(default_factory=list)

    def record_decisions(self, decisions: Sequence[tuple[str, str, str, str, datetime]]) -> int:
        self.decisions += decisions
        return len(decisions)

    def record_feedback(self, events: Sequence[tuple[str, str, str, datetime]]) -> list[str | None]:
        self.feedback += events
        return ["sp-test"] * len(events)


def test_decisions_and_every_feedback_action_are_counted_for_outcomes(world: World) -> None:
    outcomes = FakeOutcomes()
    world.pipeline.outcomes = outcomes
    world.pipeline.process([raw(ticket("t1", "my shoe broke")), raw(ticket("t2", "???"))])
    assert [(d[1], d[2], d[3]) for d in outcomes.decisions] == [
        ("t1", "sp-test", "auto"), ("t2", "sp-test", "human"),
    ]  # fmt: skip
    at = datetime(2026, 12, 3, tzinfo=UTC)
    events = [
        FeedbackRecorded(tenant_id="acme", ticket_id="t1", space_id="sp-test", action=action,
                         occurred_at=at)
        for action in ("clicked", "reopened")
    ]  # fmt: skip
    world.pipeline.process([raw(e) for e in events])
    assert outcomes.feedback == [("acme", "t1", "clicked", at), ("acme", "t1", "reopened", at)]


@pytest.mark.parametrize("action", ["resolved", "escalated"])
def test_an_answer_takes_the_ticket_out_of_the_human_queue(world: World, action: str) -> None:
    world.pipeline.process([raw(ticket("t1", "???")), raw(ticket("t2", "???"))])
    assert world.ticket_log.queued == {("acme", "t1"), ("acme", "t2")}
    at = datetime(2026, 12, 3, tzinfo=UTC)
    seen = FeedbackRecorded(tenant_id="acme", ticket_id="t2", space_id="sp-test",
                            action="clicked", occurred_at=at)  # fmt: skip
    world.pipeline.process([raw(seen)])  # a click answers nothing
    assert world.ticket_log.queued == {("acme", "t1"), ("acme", "t2")}
    answer = seen.model_copy(update={"action": action, "doc_id": "kb-1"})
    world.pipeline.process([raw(answer)])
    assert world.ticket_log.queued == {("acme", "t1")}


def test_a_replay_counts_dead_letters_without_publishing_them() -> None:
    world = make_world()
    world.pipeline.publish_dead_letters = False
    msg = RawMessage(topic=TOPICS.name("products"), partition=0, offset=1, key=b"k", value=b"{}")
    result = world.pipeline.process([msg, raw(product("p1", 1))])
    assert result.dead_lettered == 1 and result.indexed == 1
    assert world.producer.to("dead_letters") == []
