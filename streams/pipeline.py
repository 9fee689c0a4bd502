"""What the worker does with a batch of raw Kafka messages, independent of the consumer framework.

``Pipeline.process(batch)`` decodes every message, sends the ones that can never succeed (not an
event, schema violation, wrong tenant, undecodable or oversized image, feedback about a ticket that
was never routed here) to the dead-letter topic with the original bytes, the error and where they
came from, indexes/deletes the entity events in Redis, routes the tickets (and logs them for their
feedback), publishes their decisions, learns from feedback (exemplars written or deleted), and
returns only when every write has landed (Redis writes acknowledged, dead letters and decisions
confirmed by the broker). Retryable failures (Redis down, broker timeouts) are retried with backoff
inside ``process``; the caller commits the batch's offsets only after ``process`` returned, so a
crash at any point replays the batch, and the idempotent, versioned index writes make the replay
harmless.

What is retried is decided in one place (:func:`is_retryable`): Redis connection errors and timeouts,
and any :class:`~models.exceptions.CrossrouteError` whose ``retryable`` is true (a service that is
down); everything else propagates at once.

The pipeline talks to the world through four seams, typed as protocols so that tests can stand in
for them: the indexer (:class:`~router.documents.Indexer`), the router
(:class:`~router.routing.Router`), the ticket log (:class:`~router.feedback.TicketLog`) and the
Kafka producer (a confluent-kafka ``Producer``, built from ``producer_config`` unless one is passed
in).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import redis
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from models.exceptions import CrossrouteError, InputError
from router.documents import Entity, IndexOutcome
from router.exceptions import RequestError
from router.feedback import LoggedTicket, exemplar_id, feedback_exemplar
from router.index import DocKind, WriteResult
from router.schemas import Exemplar, RoutingDecision, Ticket
from streams.events import (
    EntityDeleted,
    EntityUpserted,
    FeedbackRecorded,
    RoutingDecided,
    TicketCreated,
    decode_event,
    encode_event,
)
from streams.exceptions import EventDecodeError, ServiceUnavailableError
from streams.settings import ConsumerSettings, TopicSettings
from streams.topics import MAX_RECORD_BYTES, topic_role

__all__ = [
    "BatchResult",
    "EntityIndexer",
    "MessageProducer",
    "OutcomeRecorder",
    "Pipeline",
    "RawMessage",
    "TicketLogStore",
    "TicketRouter",
    "WorkerMetrics",
    "is_retryable",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
DeliveryCallback = Callable[[KafkaError | None, Message], None]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_ANSWERS = ("resolved", "escalated")
"""Feedback actions that answer a ticket (an agent resolved it or found no answer)."""


def _version_ms(at: datetime) -> int:
    """The source version of a feedback's writes: its ``occurred_at`` in ms since the epoch."""
    return (at - _EPOCH) // timedelta(milliseconds=1)


class EntityIndexer(Protocol):
    """What the pipeline needs of :class:`~router.documents.Indexer`."""

    def embed(
        self, entities: Sequence[Entity]
    ) -> tuple[list[np.ndarray | None], list[InputError | None]]:
        """Per document, its vector or the error that kept it out."""
        ...

    def write(
        self,
        entities: Sequence[Entity],
        versions: Sequence[int],
        vectors: Sequence[np.ndarray | None],
        errors: Sequence[InputError | None],
    ) -> IndexOutcome:
        """Write an embedded batch (versioned, idempotent)."""
        ...

    def delete(self, refs: Sequence[tuple[str, str, int]]) -> WriteResult:
        """Delete ``(tenant, id, source_version)`` documents."""
        ...

    def kind_of(self, tenant: str, entity_id: str) -> DocKind | None:
        """The kind of a document of ``tenant`` in the index, or None."""
        ...


class TicketLogStore(Protocol):
    """What the pipeline needs of :class:`~router.feedback.TicketLog`."""

    def record(self, entries: Sequence[LoggedTicket]) -> None:
        """Keep routed tickets for their feedback."""
        ...

    def lookup(self, refs: Sequence[tuple[str, str]]) -> list[LoggedTicket | None]:
        """The logged tickets of ``(tenant, ticket_id)`` pairs, None where there is none."""
        ...

    def answered(self, refs: Sequence[tuple[str, str]]) -> int:
        """Take ``(tenant, ticket_id)`` tickets out of the human queue."""
        ...


class OutcomeRecorder(Protocol):
    """What the pipeline needs of :class:`~router.outcomes.Outcomes`."""

    def record_decisions(self, decisions: Sequence[tuple[str, str, str, str, datetime]]) -> int:
        """Count ``(tenant, ticket_id, space_id, queue, decided_at)`` decisions once each."""
        ...

    def record_feedback(self, events: Sequence[tuple[str, str, str, datetime]]) -> list[str | None]:
        """Count ``(tenant, ticket_id, action, occurred_at)`` for the space that decided."""
        ...


class TicketRouter(Protocol):
    """What the pipeline needs of :class:`~router.routing.Router`."""

    def route(self, ticket: Ticket) -> RoutingDecision:
        """Route one ticket (raises ``RequestError`` for a ticket that cannot be routed)."""
        ...


class MessageProducer(Protocol):
    """What the pipeline needs of a confluent-kafka ``Producer``."""

    def produce(
        self,
        topic: str,
        *,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]] | None,
        on_delivery: DeliveryCallback,
    ) -> None:
        """Queue one message (``BufferError`` when the local queue is full)."""
        ...

    def poll(self, timeout: float) -> int:
        """Serve delivery callbacks."""
        ...

    def flush(self, timeout: float) -> int:
        """Wait for every queued message; return how many are still in the queue."""
        ...


def is_retryable(error: BaseException) -> bool:
    """Whether retrying the same work later can succeed: Redis unreachable or timing out, full
    (``OOM``: at ``maxmemory`` it refuses writes until memory is freed; crashing would only loop)
    or read-only (a replica during a failover), or a crossroute error marked ``retryable`` (such as
    :class:`ServiceUnavailableError`)."""
    if isinstance(
        error,
        redis.ConnectionError
        | redis.TimeoutError
        | redis.exceptions.OutOfMemoryError
        | redis.exceptions.ReadOnlyError,
    ):
        return True
    return isinstance(error, CrossrouteError) and error.retryable


@dataclass(frozen=True)
class RawMessage:
    """One consumed message, as the framework handed it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()

    @classmethod
    def of_confluent(cls, msg: Message) -> RawMessage:
        """A consumed confluent-kafka message (not an error event)."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError("not a consumed message")
        ts_type, ts = msg.timestamp()
        raw = msg.headers() or ()
        items = raw.items() if isinstance(raw, dict) else raw
        return cls(
            topic=topic, partition=partition, offset=offset, key=msg.key(), value=msg.value() or b"",
            timestamp_ms=ts if ts_type else None,
            headers=tuple((k, v.encode() if isinstance(v, str) else v) for k, v in items),
        )  # fmt: skip


@dataclass
class BatchResult:
    """What one batch did."""

    indexed: int = 0
    unchanged: int = 0
    stale: int = 0
    deleted: int = 0
    routed: int = 0
    feedback: int = 0
    """Feedback events taken (learned from, taken back, or only counted); not the dead letters."""
    dead_lettered: int = 0
    decisions: list[RoutingDecided] = field(default_factory=list)


class WorkerMetrics:
    """Prometheus metrics of the worker (its own registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "crossroute_events_in", "Events consumed, by topic.", ["topic"], registry=r
        )
        self.events_out = Counter(
            "crossroute_events_out", "Events produced, by topic.", ["topic"], registry=r
        )
        self.dead_letters = Counter(
            "crossroute_dead_letters", "Events sent to the dead letters, by reason.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "crossroute_batch_size", "Events per batch.", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )  # fmt: skip
        self.embed_seconds = Histogram(
            "crossroute_embed_seconds", "Embedding time per batch of entities.", registry=r
        )
        self.upsert_seconds = Histogram(
            "crossroute_upsert_seconds",
            "Index write time per batch of upserts or deletes (retries included).",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "crossroute_consumer_lag",
            "Events behind the end of each assigned partition, after the last batch.",
            ["topic", "partition"],
            registry=r,
        )
        self.route_seconds = Histogram(
            "crossroute_route_seconds", "Routing time per ticket batch.", registry=r
        )
        self.freshness_seconds = Histogram(
            "crossroute_freshness_seconds",
            "Event time (occurred_at) to searchable in Redis.",
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
        )
        self.retries = Counter(
            "crossroute_retries", "Retries of retryable failures, by kind.", ["kind"], registry=r
        )
        self.stale = Counter("crossroute_stale_writes", "Stale updates refused.", registry=r)
        self.feedback = Counter(
            "crossroute_feedback", "Feedback events, by action and outcome.", ["action", "outcome"],
            registry=r,
        )  # fmt: skip


class Pipeline:
    """Process batches of raw messages: index entities, route tickets, dead-letter the rest.

    Args:
        indexer: writes entities (and the exemplars feedback makes) to the index of the serving
            space.
        router: routes tickets (same space).
        producer_config: confluent-kafka config for dead letters and decisions.
        topics: topic names.
        settings: retry bounds, tenants.
        metrics: where to count (a fresh registry by default).
        sleep: how to wait between retries.
        producer: the producer to use instead of an idempotent one built from
            ``producer_config`` (tests).
        ticket_log: where routed tickets are kept for their feedback.
        outcomes: where decisions and their feedback are counted per space (None: not counted).
        dead_letters: publish dead letters (false for a replay: ``crossroute reindex`` reads
            events the live worker has dead-lettered already; it counts and logs them only).
    """

    def __init__(
        self,
        indexer: EntityIndexer,
        router: TicketRouter,
        producer_config: dict[str, Any],
        topics: TopicSettings,
        settings: ConsumerSettings,
        metrics: WorkerMetrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
        *,
        producer: MessageProducer | None = None,
        ticket_log: TicketLogStore,
        outcomes: OutcomeRecorder | None = None,
        dead_letters: bool = True,
    ) -> None:
        self.indexer = indexer
        self.outcomes = outcomes
        self.publish_dead_letters = dead_letters
        self.router = router
        self.ticket_log = ticket_log
        self.topics = topics
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self._sleep = sleep
        if producer is None:  # (not `or`: a confluent Producer with an empty queue is falsy)
            producer = Producer(
                {
                    **producer_config,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "message.max.bytes": MAX_RECORD_BYTES,
                }
            )
        self._producer: MessageProducer = producer
        self._delivery_errors: list[str] = []

    # -- the batch --------------------------------------------------------------------------------

    def process(self, batch: Sequence[RawMessage]) -> BatchResult:
        """Process one batch; return when everything it wrote has landed (see module docstring)."""
        result = BatchResult()
        self.metrics.batch_size.observe(len(batch))
        entities: list[tuple[RawMessage, EntityUpserted | EntityDeleted]] = []
        tickets: list[tuple[RawMessage, TicketCreated]] = []
        feedback: list[tuple[RawMessage, FeedbackRecorded]] = []
        for msg in batch:
            self.metrics.events_in.labels(topic=msg.topic).inc()
            try:
                event = decode_event(msg.value)
            except EventDecodeError as e:
                self._dead_letter(msg, "invalid_event", str(e), result)
                continue
            if self.settings.tenants and event.tenant not in self.settings.tenants:
                self._dead_letter(
                    msg, "unknown_tenant", f"tenant {event.tenant!r} is not served here", result
                )
                continue
            home = self.topics.name(topic_role(event))
            if msg.topic != home:
                error = f"{event.type} belongs on {home}, not {msg.topic}"
                self._dead_letter(msg, "unexpected_event", error, result)
            elif not isinstance(
                event, TicketCreated | FeedbackRecorded | EntityUpserted | EntityDeleted
            ):
                error = f"{event.type} is an output of the worker, not an input"
                self._dead_letter(msg, "unexpected_event", error, result)
            elif isinstance(event, TicketCreated):
                tickets.append((msg, event))
            elif isinstance(event, FeedbackRecorded):
                feedback.append((msg, event))
            else:
                entities.append((msg, event))
        if entities:
            self._index(entities, result)
        if tickets:
            start = time.perf_counter()
            self._route(tickets, result)
            self.metrics.route_seconds.observe(time.perf_counter() - start)
        if feedback:
            self._feedback(feedback, result)
        self._flush()
        return result

    # -- entities ---------------------------------------------------------------------------------

    def _index(
        self, items: list[tuple[RawMessage, EntityUpserted | EntityDeleted]], result: BatchResult
    ) -> None:
        # Keep only the newest event per entity in the batch (they share a partition, in order);
        # the versioned writes would refuse the older ones anyway.
        latest: dict[tuple[str, str], tuple[RawMessage, EntityUpserted | EntityDeleted]] = {}
        for msg, event in items:
            latest[(event.tenant, event.entity_id)] = (msg, event)
        upserts = [(m, e) for m, e in latest.values() if isinstance(e, EntityUpserted)]
        deletes = [(m, e) for m, e in latest.values() if isinstance(e, EntityDeleted)]
        if upserts:
            docs: list[Entity] = [e.document for _, e in upserts]
            versions = [e.source_version for _, e in upserts]
            start = time.perf_counter()
            vectors, errors = self.indexer.embed(docs)
            self.metrics.embed_seconds.observe(time.perf_counter() - start)
            start = time.perf_counter()
            outcome = self._retrying(
                "redis", lambda: self.indexer.write(docs, versions, vectors, errors)
            )
            self.metrics.upsert_seconds.observe(time.perf_counter() - start)
            failed = dict(outcome.failed)
            for i, (msg, _) in enumerate(upserts):
                if i in failed:
                    self._dead_letter(msg, "bad_input", str(failed[i]), result)
            result.indexed += outcome.result.written
            result.unchanged += outcome.result.duplicates
            result.stale += outcome.result.stale
            self.metrics.stale.inc(outcome.result.stale)
            now = time.time()
            for i, (_, event) in enumerate(upserts):
                if i not in failed:
                    self.metrics.freshness_seconds.observe(
                        max(0.0, now - event.occurred_at.timestamp())
                    )
        if deletes:
            refs = [(e.tenant, e.entity_id, e.source_version) for _, e in deletes]
            start = time.perf_counter()
            written = self._retrying("redis", lambda: self.indexer.delete(refs))
            self.metrics.upsert_seconds.observe(time.perf_counter() - start)
            result.deleted += written.deleted
            result.stale += written.stale
            self.metrics.stale.inc(written.stale)

    # -- tickets ----------------------------------------------------------------------------------

    def _route(self, items: list[tuple[RawMessage, TicketCreated]], result: BatchResult) -> None:
        logged: list[LoggedTicket] = []
        for msg, event in items:
            try:
                decision = self._retrying("redis", partial(self.router.route, event.ticket))
            except RequestError as e:
                self._dead_letter(msg, "bad_ticket", str(e), result)
                continue
            out = RoutingDecided(decision=decision)
            self._send(self.topics.name("decisions"), out.key, encode_event(out))
            if decision.abstained:
                self._send(self.topics.name("human_queue"), out.key, encode_event(out))
            logged.append(LoggedTicket.of(event.ticket, decision))
            result.routed += 1
            result.decisions.append(out)
        if logged:
            self._retrying("redis", partial(self.ticket_log.record, logged))
        if logged and self.outcomes is not None:
            decided = [(t.tenant, t.ticket_id, t.space_id, t.queue, t.decided_at) for t in logged]
            self._retrying("redis", partial(self.outcomes.record_decisions, decided))

    # -- feedback ---------------------------------------------------------------------------------

    def _feedback(
        self, items: list[tuple[RawMessage, FeedbackRecorded]], result: BatchResult
    ) -> None:
        """Learn from feedback: ``resolved``/``escalated`` write the ticket's exemplar,
        ``reopened``/``wrong_article`` delete it, at the feedback's time as source version (replays
        are no-ops, an older feedback never overrides a newer one); ``clicked`` is counted."""
        if self.outcomes is not None:  # joined to the decision by ticket id, counted once
            events = [(e.tenant, e.ticket_id, e.action, e.occurred_at) for _, e in items]
            self._retrying("redis", partial(self.outcomes.record_feedback, events))
        answers = [(e.tenant, e.ticket_id) for _, e in items if e.action in _ANSWERS]
        if answers:  # answered: out of the human queue, whether or not it teaches an exemplar
            self._retrying("redis", partial(self.ticket_log.answered, answers))
        learn: list[tuple[RawMessage, FeedbackRecorded]] = []
        forget: list[FeedbackRecorded] = []
        for msg, event in items:
            skipped = self._unused(event)
            if skipped is not None:
                self._count_feedback(event.action, skipped, 1, result)
            elif event.action in ("resolved", "escalated"):
                learn.append((msg, event))
            else:
                forget.append(event)
        if learn:
            self._learn(learn, result)
        for action in ("reopened", "wrong_article"):
            refs = [
                (e.tenant, exemplar_id(e.ticket_id), _version_ms(e.occurred_at))
                for e in forget
                if e.action == action
            ]
            if refs:
                start = time.perf_counter()
                written = self._retrying("redis", partial(self.indexer.delete, refs))
                self.metrics.upsert_seconds.observe(time.perf_counter() - start)
                self._count_writes(action, written, result)

    def _unused(self, event: FeedbackRecorded) -> str | None:
        """The outcome of a feedback that changes nothing in the index, or None."""
        settings = self.settings
        if event.action == "clicked":
            return "counted"
        if (event.action == "resolved" and not settings.resolved_exemplars) or (
            event.action == "escalated" and not settings.escalation_exemplars
        ):
            return "disabled"
        if event.action == "resolved" and event.doc_id is None:
            return "no_document"
        return None

    def _learn(self, items: list[tuple[RawMessage, FeedbackRecorded]], result: BatchResult) -> None:
        """Write the exemplars of ``resolved``/``escalated`` feedback (dead-letter what names a
        ticket or a document the tenant does not have)."""
        refs = [(event.tenant, event.ticket_id) for _, event in items]
        logged = self._retrying("redis", partial(self.ticket_log.lookup, refs))
        learned: list[tuple[RawMessage, FeedbackRecorded, Exemplar]] = []
        for (msg, event), ticket in zip(items, logged, strict=True):
            if ticket is None:
                error = (
                    f"ticket {event.tenant}/{event.ticket_id} is not in the ticket log "
                    "(never routed here, or older than CROSSROUTE_WORKER__TICKET_LOG_TTL_S)"
                )
                self._feedback_dead_letter(msg, event, "unknown_ticket", error, result)
            elif not ticket.text.strip():  # images only: nothing to learn from
                self._count_feedback(event.action, "no_text", 1, result)
            elif event.action == "escalated":
                learned.append((msg, event, feedback_exemplar(ticket, None, "human")))
            elif (target := self._resolved_target(event)) is not None:
                learned.append((msg, event, feedback_exemplar(ticket, *target)))
            else:
                error = (
                    f"{event.doc_id} is not an article or policy of tenant {event.tenant} "
                    "in the index"
                )
                self._feedback_dead_letter(msg, event, "unknown_document", error, result)
        if not learned:
            return
        vectors, errors = self.indexer.embed([exemplar for _, _, exemplar in learned])
        for action in ("resolved", "escalated"):
            group = [i for i, (_, event, _) in enumerate(learned) if event.action == action]
            if not group:
                continue
            write = partial(
                self.indexer.write,
                [learned[i][2] for i in group],
                [_version_ms(learned[i][1].occurred_at) for i in group],
                [vectors[i] for i in group],
                [errors[i] for i in group],
            )
            start = time.perf_counter()
            outcome = self._retrying("redis", write)
            self.metrics.upsert_seconds.observe(time.perf_counter() - start)
            for j, failure in outcome.failed:
                msg, event, _ = learned[group[j]]
                self._feedback_dead_letter(msg, event, "bad_input", str(failure), result)
            self._count_writes(action, outcome.result, result)

    def _resolved_target(
        self, event: FeedbackRecorded
    ) -> tuple[str, Literal["article", "warranty_policy"]] | None:
        """The ``doc_id`` of a resolved feedback and its kind, when the tenant has that article or
        policy in the index."""
        if event.doc_id is None:
            return None
        kind = self._retrying("redis", partial(self.indexer.kind_of, event.tenant, event.doc_id))
        if kind == "article" or kind == "warranty_policy":
            return event.doc_id, kind
        return None

    def _count_writes(self, action: str, written: WriteResult, result: BatchResult) -> None:
        """Count the exemplar writes of one action's feedback."""
        outcomes = {
            "indexed": written.written, "unchanged": written.duplicates, "stale": written.stale,
            "deleted": written.deleted, "missing": written.missing,
        }  # fmt: skip
        for outcome, n in outcomes.items():
            self._count_feedback(action, outcome, n, result)
        result.indexed += written.written
        result.unchanged += written.duplicates
        result.stale += written.stale
        result.deleted += written.deleted
        self.metrics.stale.inc(written.stale)

    def _count_feedback(self, action: str, outcome: str, n: int, result: BatchResult) -> None:
        if n:
            self.metrics.feedback.labels(action=action, outcome=outcome).inc(n)
            result.feedback += n

    def _feedback_dead_letter(
        self, msg: RawMessage, event: FeedbackRecorded, reason: str, error: str, result: BatchResult
    ) -> None:
        self.metrics.feedback.labels(action=event.action, outcome=reason).inc()
        self._dead_letter(msg, reason, error, result)

    # -- plumbing ---------------------------------------------------------------------------------

    def _retrying(self, kind: str, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying what :func:`is_retryable` accepts with exponential backoff until
        it succeeds; any other error propagates."""
        delay = self.settings.retry_initial_s
        while True:
            try:
                return fn()
            except (redis.RedisError, CrossrouteError) as e:
                if not is_retryable(e):
                    raise
                self.metrics.retries.labels(kind=kind).inc()
                log.warning("%s unavailable (%s); retrying in %.1fs", kind, type(e).__name__, delay)
                self._sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)

    def _dead_letter(self, msg: RawMessage, reason: str, error: str, result: BatchResult) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            *msg.headers,  # the original headers (trace ids…), then what went wrong
            ("crossroute.error.reason", reason.encode()),
            ("crossroute.error", error[:4000].encode()),
            ("crossroute.source.topic", msg.topic.encode()),
            ("crossroute.source.partition", str(msg.partition).encode()),
            ("crossroute.source.offset", str(msg.offset).encode()),
        ]
        log.info("dead letter from %s/%d@%d: %s", msg.topic, msg.partition, msg.offset, reason)
        if self.publish_dead_letters:
            self._send(self.topics.name("dead_letters"), msg.key, msg.value, headers)
        self.metrics.dead_letters.labels(reason=reason).inc()
        result.dead_lettered += 1

    def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        def on_delivery(err: KafkaError | None, _: Message) -> None:
            if err is not None:
                self._delivery_errors.append(str(err))

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.5)
        self.metrics.events_out.labels(topic=topic).inc()

    def _flush(self) -> None:
        """Wait until the broker confirmed every message of the batch (retrying while it is away)."""
        delay = self.settings.retry_initial_s
        while self._producer.flush(30) > 0:
            self.metrics.retries.labels(kind="kafka").inc()
            self._sleep(delay)
            delay = min(delay * 2, self.settings.retry_max_s)
        if self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            # The idempotent producer already retried; what is left is fatal for this batch.
            raise ServiceUnavailableError(f"{len(errors)} message(s) not delivered: {errors[0]}")

    def close(self) -> None:
        """Flush what is pending."""
        self._producer.flush(30)
