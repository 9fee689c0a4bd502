"""``crossroute reindex``: build a new embedding space's index by replaying the source of truth.

The entity topics are compacted: they hold the latest event of every product, article, policy and
medium. A new bundle's index is built by consuming them from the beginning, through the same
:class:`~streams.pipeline.Pipeline` as live ingestion, with the new bundle's
:class:`~router.documents.Indexer`: every vector of the candidate is computed by the candidate
bundle, nothing is copied from the live space. Then the feedback topic is replayed (resolved and
escalated tickets become exemplars of the new space, as the worker made them for the live one); it
is read only once the entity topics have caught up, so the articles a feedback names are there.

It runs beside the live worker and never touches its space: its own consumer group, one per space
(:func:`group_id`), partitions assigned (not subscribed), offsets committed after each chunk has
landed (at-least-once; the writes are idempotent), dead letters counted but not published again
(the live worker published them). Once every partition has caught up it says so and keeps
following the topics, so the candidate never falls behind; with ``until_caught_up`` it stops there.

**Deterministic builds.** Embeddings depend, in their last bits, on which inputs share a batch
(padding length, kernel blocking). Batches here are therefore cut by position in the partition,
not by arrival time: a partition's events are processed in chunks of ``batch_size`` consecutive
events, a shorter chunk only at the partition's end. Two builds of the same topic contents with the
same bundle write the same bytes, so ``crossroute index digest`` prints the same digest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.exceptions import ConfigurationError
from streams.pipeline import Pipeline, RawMessage, WorkerMetrics
from streams.settings import WorkerSettings

__all__ = ["ReindexReport", "group_id", "reindex"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def group_id(prefix: str, space_id: str) -> str:
    """The consumer group that builds ``space_id``'s index: one per space."""
    return f"{prefix}-reindex-{space_id}"


@dataclass
class ReindexReport:
    """Where a reindex stands."""

    space_id: str
    index: str
    group: str
    events: int = 0
    indexed: int = 0
    unchanged: int = 0
    deleted: int = 0
    stale: int = 0
    feedback: int = 0
    dead_lettered: int = 0
    lag: dict[str, int] = field(default_factory=dict)
    """Events behind the end of each partition (``topic/partition``)."""
    caught_up_at: float | None = None
    documents: int = 0

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())

    def line(self) -> str:
        """One progress line."""
        lag = " ".join(f"{tp}={n}" for tp, n in sorted(self.lag.items()) if n) or "0"
        return (
            f"{self.index}: {self.events} events, {self.indexed} indexed, {self.deleted} deleted, "
            f"{self.dead_lettered} bad; {self.documents} documents; lag {lag}"
        )


class _NoTickets:
    """A reindex never routes: no ticket topic is read."""

    def route(self, ticket: Any) -> Any:  # pragma: no cover - tickets are never assigned
        raise RuntimeError("reindex does not route tickets")


def reindex(
    settings: WorkerSettings,
    bundle: Path,
    *,
    until_caught_up: bool = False,
    from_scratch: bool = False,
    announce: Callable[[str], None] = log.warning,
    progress_every_s: float = 2.0,
    stop: threading.Event | None = None,
) -> ReindexReport:
    """Build (and with ``until_caught_up`` false, keep following) the index of ``bundle``'s space.

    Args:
        from_scratch: drop the candidate's index and its group's offsets first (refused for a space
            that serves: live or canary).
        stop: set it to stop after the chunk in progress (SIGTERM/SIGINT in the command).

    Raises:
        ConfigurationError: the topics are missing (nothing is created then).
        DeploymentError: ``from_scratch`` for a space that serves.
        ModelsError: the bundle fails verification.
    """
    from confluent_kafka.admin import AdminClient

    from models.embedder import Embedder
    from router.deploy import Deployments
    from router.documents import Indexer
    from router.feedback import TicketLog
    from router.index import VectorIndex
    from streams.connections import kafka_config, redis_client
    from streams.topics import ENTITY_ROLES

    stop = stop or threading.Event()
    embedder = Embedder.from_settings(settings.model, bundle)  # verifies every file's sha256
    space = embedder.space_id
    client = redis_client(settings.redis, settings.stack)
    deployments = Deployments(client, settings.index)
    t = settings.topics
    entity_topics = [t.name(r) for r in ENTITY_ROLES]
    feedback_topic = t.name("feedback")
    admin = AdminClient(kafka_config(settings))
    listed = admin.list_topics(timeout=15).topics
    missing = [name for name in (*entity_topics, feedback_topic) if name not in listed]
    if missing:  # checked before anything is created or registered
        raise ConfigurationError(
            f"topics {', '.join(missing)} do not exist: start the worker once "
            "(`crossroute worker`) or declare them (`crossroute topics ensure`)"
        )
    index = VectorIndex.for_manifest(client, embedder.manifest, settings.index)
    group = group_id(settings.worker.group_id, space)
    if from_scratch:
        deployments.check_droppable(space)
        index.drop()
    if space == deployments.state().live:  # e.g. NEW's follower, restarted after its promotion
        announce(f"space {space} is live: following it beside any worker of that space")
    index.create()
    deployments.register(space, embedder.bundle_dir, index.name)
    partitions = {
        name: sorted(listed[name].partitions) for name in (*entity_topics, feedback_topic)
    }
    consumer = Consumer(
        kafka_config(
            settings,
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            },
        )
    )
    metrics = WorkerMetrics()
    pipeline = Pipeline(
        Indexer(embedder, index, media_root=settings.worker.media_root),
        _NoTickets(),
        kafka_config(settings),
        settings.topics,
        settings.worker,
        metrics,
        ticket_log=TicketLog(client, settings.index.namespace, settings.worker.ticket_log_ttl_s),
        dead_letters=False,
    )
    report = ReindexReport(space, index.name, group)
    announce(
        f"reindexing space {space} into {index.name} from {', '.join(entity_topics)} "
        f"(group {group})"
    )
    replay = _Replay(
        consumer, pipeline, report, settings.worker.batch_size, from_scratch, index.count
    )
    try:
        replay.assign([TopicPartition(n, p) for n in entity_topics for p in partitions[n]])
        replay.run(stop, until_caught_up=True, announce=announce, every_s=progress_every_s)
        if stop.is_set():
            return report
        replay.assign([TopicPartition(feedback_topic, p) for p in partitions[feedback_topic]])
        replay.run(stop, until_caught_up=True, announce=announce, every_s=progress_every_s)
        report.documents = index.count()
        report.caught_up_at = time.time()
        announce(f"caught up: {report.line()}" + ("" if until_caught_up else "; following"))
        if not until_caught_up and not stop.is_set():
            replay.run(stop, until_caught_up=False, announce=announce, every_s=progress_every_s)
    finally:
        consumer.close()
        pipeline.close()
    report.documents = index.count()
    return report


_COORDINATOR_WAITS = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,  # noqa: SLF001  # librdkafka's local error codes start with _
    KafkaError._TRANSPORT,  # noqa: SLF001
}


def _retrying(fn: Callable[[], T], timeout_s: float = 120.0) -> T:
    """Run a group-coordinator call, retrying what the broker calls retriable (a new group's
    coordinator is still loading: NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS) until
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            return fn()
        except KafkaException as e:
            err = e.args[0] if e.args else None
            retriable = isinstance(err, KafkaError) and (
                err.retriable() or err.code() in _COORDINATOR_WAITS
            )
            if not retriable or time.monotonic() + delay > deadline:
                raise
            log.info("group coordinator not ready (%s); retrying in %.1fs", err, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class _Replay:
    """The consumer loop: per-partition chunks of consecutive events, committed after each."""

    def __init__(
        self,
        consumer: Consumer,
        pipeline: Pipeline,
        report: ReindexReport,
        batch_size: int,
        from_scratch: bool,
        count: Callable[[], int],
    ) -> None:
        self.consumer = consumer
        self.count = count
        self.pipeline = pipeline
        self.report = report
        self.batch_size = batch_size
        self.from_scratch = from_scratch
        self.assigned: list[TopicPartition] = []
        self.buffers: dict[tuple[str, int], list[RawMessage]] = {}
        self.ends: dict[tuple[str, int], int] = {}
        self.positions: dict[tuple[str, int], int] = {}

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Add partitions, each from its committed offset (or the beginning)."""
        if self.from_scratch:
            starts = [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]
        else:
            committed = _retrying(lambda: self.consumer.committed(list(partitions), timeout=30))
            starts = [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0)
                for tp in committed
            ]
        for tp in starts:
            low, _ = self.consumer.get_watermark_offsets(tp, timeout=30, cached=False)
            key = (tp.topic, tp.partition)
            self.positions[key] = max(tp.offset, low)
            self.buffers[key] = []
        self.assigned += starts
        self.consumer.assign(
            [TopicPartition(tp.topic, tp.partition, self.positions[(tp.topic, tp.partition)])
             for tp in self.assigned]
        )  # fmt: skip
        self._refresh_ends()

    def _refresh_ends(self) -> None:
        for tp in self.assigned:
            _, high = self.consumer.get_watermark_offsets(tp, timeout=30, cached=False)
            self.ends[(tp.topic, tp.partition)] = high
        self._update_lag()

    def _update_lag(self) -> None:
        self.report.lag = {
            f"{topic}/{part}": max(0, self.ends[(topic, part)] - pos)
            for (topic, part), pos in self.positions.items()
        }

    def _at_end(self, key: tuple[str, int]) -> bool:
        return self.positions[key] >= self.ends.get(key, 0)

    def _process(self, key: tuple[str, int]) -> None:
        chunk, self.buffers[key] = self.buffers[key], []
        result = self.pipeline.process(chunk)
        r = self.report
        r.events += len(chunk)
        r.indexed += result.indexed
        r.unchanged += result.unchanged
        r.deleted += result.deleted
        r.stale += result.stale
        r.feedback += result.feedback
        r.dead_lettered += result.dead_lettered
        topic, partition = key
        offsets = [TopicPartition(topic, partition, chunk[-1].offset + 1)]
        _retrying(lambda: self.consumer.commit(offsets=offsets, asynchronous=False))

    def run(
        self,
        stop: threading.Event,
        *,
        until_caught_up: bool,
        announce: Callable[[str], None],
        every_s: float,
    ) -> None:
        """Consume until every assigned partition is at its end (``until_caught_up``) or ``stop``."""
        last = time.monotonic()
        while not stop.is_set():
            for msg in self.consumer.consume(num_messages=self.batch_size, timeout=0.5):
                if (err := msg.error()) is not None:
                    raise KafkaException(err)
                raw = RawMessage.of_confluent(msg)
                key = (raw.topic, raw.partition)
                self.buffers[key].append(raw)
                self.positions[key] = raw.offset + 1
                if len(self.buffers[key]) >= self.batch_size:
                    self._process(key)
            self._refresh_ends()
            for key, buffered in self.buffers.items():
                if buffered and self._at_end(key):  # the partition's last, shorter chunk
                    self._process(key)
            self._update_lag()
            if time.monotonic() - last >= every_s:
                last = time.monotonic()
                self.report.documents = self.count()
                announce(self.report.line())
            if until_caught_up and all(self._at_end(k) for k in self.positions):
                return
