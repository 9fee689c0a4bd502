"""What the worker does with a batch of raw Kafka messages, independent of the consumer framework.

``Pipeline.process(batch)`` decodes every message, sends the ones that can never succeed (not an
event, schema violation, wrong tenant, undecodable or oversized image) to the dead-letter topic with
the original bytes, the error and where they came from, indexes/deletes the entity events in Redis,
routes the tickets and publishes their decisions, and returns only when every write has landed (Redis
writes acknowledged, dead letters and decisions confirmed by the broker). Retryable failures (Redis
down, broker timeouts) are retried with backoff inside ``process``; the caller commits the batch's
offsets only after ``process`` returned, so a crash at any point replays the batch, and the
idempotent, versioned index writes make the replay harmless.

What is retried is decided in one place (:func:`is_retryable`): Redis connection errors and timeouts,
and any :class:`~models.exceptions.CrossrouteError` whose ``retryable`` is true (a service that is
down); everything else propagates at once.

The pipeline talks to the world through three seams, typed as protocols so that tests can stand in
for them: the indexer (:class:`~router.documents.Indexer`), the router
(:class:`~router.routing.Router`) and the Kafka producer (a confluent-kafka ``Producer``, built from
``producer_config`` unless one is passed in).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np
import redis
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from models.exceptions import CrossrouteError, InputError
from router.documents import Entity, IndexOutcome
from router.exceptions import RequestError
from router.index import WriteResult
from router.schemas import RoutingDecision, Ticket
from streams.events import (
    EntityDeleted,
    EntityUpserted,
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
    "Pipeline",
    "RawMessage",
    "TicketRouter",
    "WorkerMetrics",
    "is_retryable",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
DeliveryCallback = Callable[[KafkaError | None, Message], None]


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
    """Whether retrying the same work later can succeed: Redis unreachable or timing out, or a
    crossroute error marked ``retryable`` (such as :class:`ServiceUnavailableError`)."""
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
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


@dataclass
class BatchResult:
    """What one batch did."""

    indexed: int = 0
    unchanged: int = 0
    stale: int = 0
    deleted: int = 0
    routed: int = 0
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


class Pipeline:
    """Process batches of raw messages: index entities, route tickets, dead-letter the rest.

    Args:
        indexer: writes entities to the index of the serving space.
        router: routes tickets (same space).
        producer_config: confluent-kafka config for dead letters and decisions.
        topics: topic names.
        settings: retry bounds, tenants.
        metrics: where to count (a fresh registry by default).
        sleep: how to wait between retries.
        producer: the producer to use instead of an idempotent one built from
            ``producer_config`` (tests).
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
    ) -> None:
        self.indexer = indexer
        self.router = router
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
            elif not isinstance(event, TicketCreated | EntityUpserted | EntityDeleted):
                error = f"{event.type} is an output of the worker, not an input"
                self._dead_letter(msg, "unexpected_event", error, result)
            elif isinstance(event, TicketCreated):
                tickets.append((msg, event))
            else:
                entities.append((msg, event))
        if entities:
            self._index(entities, result)
        if tickets:
            start = time.perf_counter()
            self._route(tickets, result)
            self.metrics.route_seconds.observe(time.perf_counter() - start)
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
            result.routed += 1
            result.decisions.append(out)

    # -- plumbing ---------------------------------------------------------------------------------

    def _retrying(self, kind: str, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying what :func:`is_retryable` accepts with exponential backoff until
        it succeeds; any other error propagates."""
        delay = self.settings.retry_initial_s
        while True:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError, CrossrouteError) as e:
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
