"""``crossroute worker``: faust-streaming agents that keep the index live and route tickets.

Three agents in one consumer group: ``entities`` (products, articles, warranty policies, media),
``tickets`` and ``feedback``. Each takes batches (``CROSSROUTE_WORKER__BATCH_SIZE`` events or
``BATCH_WINDOW_S`` seconds) of raw bytes (no faust codecs: events are decoded by ``streams.events``
so that bad bytes reach the dead letters intact) and hands them to :class:`~streams.pipeline.Pipeline`
in a single worker thread, so the event loop never blocks and batches stay in partition order.

Offsets: faust's ``take_events`` acks a batch's events only after the agent resumes, i.e. after
``Pipeline.process`` returned — every write of the batch has landed by then — and the acked offsets
are committed by the consumer afterwards. Retryable failures are retried inside ``process``. Anything
else (a bug, a fatal broker error) ends the process at once with exit code 70, *without* acking: the
batch is redelivered to whoever owns the partition next, and the versioned writes make that harmless.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.pipeline import Pipeline, RawMessage
from streams.topics import MAX_RECORD_BYTES

if TYPE_CHECKING:
    from models.settings import ModelSettings
    from streams.settings import WorkerSettings

__all__ = ["EXIT_CRASH", "build_app", "bundle_ready", "run"]

log = logging.getLogger(__name__)
EXIT_CRASH = 70
FETCH_PARTITION_BYTES = 1024 * 1024
"""The most a partition's fetch asks for (aiokafka's ``max_partition_fetch_bytes``)."""


def build_app(
    pipeline: Pipeline,
    *,
    broker_options: Mapping[str, Any],
    group_id: str,
    entity_topics: Sequence[str],
    ticket_topic: str,
    feedback_topic: str,
    batch_size: int,
    batch_window_s: float,
    datadir: Path,
    session_timeout_s: float = 10.0,
    buffer_events: int = 256,
) -> Any:
    """The faust app with its three agents (not started).

    Args:
        broker_options: where and how to connect, as ``KafkaSettings.as_faust`` renders it
            (``broker``, ``broker_client_id``, ``broker_credentials`` for SSL/SASL).
        buffer_events: faust's ``stream_buffer_maxsize``: the events an agent may hold
            unprocessed before its partitions are paused (the worker's memory bound).
    """
    import faust

    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        group_id,
        **broker_options,
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_allow_declare=False,  # topics are declared by streams.topics, with their configs
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=batch_size,
        broker_commit_interval=1.0,
        producer_max_request_size=MAX_RECORD_BYTES,
        # Fetch sizes bound what sits in the client before faust's buffer: a partition's fetch stops
        # after FETCH_PARTITION_BYTES (a larger record still arrives whole: brokers return the
        # first batch even when it is bigger, KIP-74), and one poll hands over buffer_events.
        consumer_max_fetch_size=FETCH_PARTITION_BYTES,
        broker_max_poll_records=buffer_events,
        broker_session_timeout=session_timeout_s,
        # backpressure: past this many unprocessed events an agent's partitions are paused
        stream_buffer_maxsize=buffer_events,
        broker_heartbeat_interval=min(3.0, session_timeout_s / 3),
    )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crossroute-batch")

    def process(batch: list[RawMessage]) -> None:
        try:
            result = pipeline.process(batch)
        except BaseException:
            log.critical("batch processing failed: exiting without committing", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_CRASH)
        counts = {
            "indexed": result.indexed, "unchanged": result.unchanged, "stale": result.stale,
            "deleted": result.deleted, "routed": result.routed, "feedback": result.feedback,
            "dead_lettered": result.dead_lettered,
        }  # fmt: skip
        log.info(
            "batch of %d: %s", len(batch), ", ".join(f"{v} {k.replace('_', '-')}" for k, v in counts.items()),
            extra={"event": "batch", "size": len(batch), **counts},
        )  # fmt: skip

    def record_lag(events: Sequence[Any]) -> None:
        """Lag of each partition the batch came from: its end offset minus what was processed."""
        last: dict[Any, int] = {}
        for e in events:
            last[e.message.tp] = max(last.get(e.message.tp, -1), e.message.offset)
        for tp, offset in last.items():
            try:
                end = app.consumer.highwater(tp)
            except Exception as e:  # not known yet (no fetch response): skip this round
                log.debug("no end offset for %s yet: %s", tp, e)
                continue
            if end is not None:
                pipeline.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, end - offset - 1)
                )

    async def run_batches(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(batch_size, within=batch_window_s):
            batch = [
                RawMessage(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                    timestamp_ms=int(e.message.timestamp * 1000) if e.message.timestamp else None,
                    headers=_headers(e.message.headers),
                )
                for e in events
            ]
            await loop.run_in_executor(executor, process, batch)
            record_lag(events)

    def raw_topic(*names: str) -> Any:
        return app.topic(
            *names,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    app.agent(raw_topic(*entity_topics), name="entities")(run_batches)
    app.agent(raw_topic(ticket_topic), name="tickets")(run_batches)
    app.agent(raw_topic(feedback_topic), name="feedback")(run_batches)
    return app


def _headers(headers: Any) -> tuple[tuple[str, bytes | None], ...]:
    """Kafka headers as (name, value) pairs, whichever shape the framework handed them in."""
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(k), v) for k, v in items)


def run(
    settings: WorkerSettings,
    *,
    model: Path | None = None,
    loglevel: str = "info",
    announce: Callable[[str], None] = log.warning,
) -> None:
    """Wire and run the worker until it is stopped (``crossroute worker``).

    Starts the dev stack's services that are not configured as external (with Kafka and Redis both
    configured the dev stack is never touched), builds the default model bundle if it is missing,
    declares the topics, creates the index of the bundle's space (and points the serving alias at
    it when nothing serves yet), then consumes: entity events are embedded and indexed, tickets
    routed (and logged for their feedback), feedback learned from, bad events dead-lettered.
    ``announce`` receives one line per step a user should see.
    """
    from confluent_kafka.admin import AdminClient

    from models.embedder import Embedder
    from router.deploy import Deployments
    from router.documents import Indexer
    from router.feedback import TicketLog
    from router.index import VectorIndex
    from router.outcomes import OutcomeCollector, Outcomes
    from router.routing import Router
    from router.serving import Serving, router_loader
    from streams.connections import kafka_bootstrap, kafka_config, redis_client, start_dev_stack
    from streams.logs import setup_logging
    from streams.pipeline import WorkerMetrics
    from streams.topics import ENTITY_ROLES, ensure_topics, topic_specs

    setup_logging(loglevel, settings.worker.log_format)
    start_dev_stack(settings)
    if model is None:
        _ensure_default_bundle(settings.model, announce)
    embedder = Embedder.from_settings(settings.model, model)
    ensure_topics(AdminClient(kafka_config(settings)), topic_specs(settings.topics))
    client = redis_client(settings.redis, settings.stack)
    index = VectorIndex.for_manifest(client, embedder.manifest, settings.index)
    index.create()
    deployments = Deployments(client, settings.index)
    deployments.register(embedder.space_id, embedder.bundle_dir, index.name)
    if deployments.state().live is None:
        deployments.promote(embedder.space_id)  # nothing serves yet: this space does
    media_root = settings.worker.media_root
    own = Router(embedder, index, settings.routing, media_root=media_root)
    # tickets: routed by the live space (and the canary's share), followed without a restart;
    # entities: indexed into this bundle's own space
    serving = Serving.following(
        deployments,
        router_loader(
            client, settings.model, settings.index, settings.routing, media_root=media_root
        ),
        poll_s=settings.routing.deployment_poll_s,
        preloaded=own,
    )
    serving.start()
    metrics = WorkerMetrics()
    outcomes = Outcomes(client, settings.index.namespace, settings.worker.ticket_log_ttl_s)
    metrics.registry.register(OutcomeCollector(outcomes))
    if settings.worker.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(
            settings.worker.metrics_port, settings.worker.metrics_host, registry=metrics.registry
        )
    ticket_log = TicketLog(client, settings.index.namespace, settings.worker.ticket_log_ttl_s)
    pipeline = Pipeline(
        Indexer(embedder, index, media_root=media_root), serving, kafka_config(settings),
        settings.topics, settings.worker, metrics, ticket_log=ticket_log, outcomes=outcomes,
    )  # fmt: skip
    t = settings.topics
    app = build_app(
        pipeline,
        broker_options=settings.kafka.as_faust(kafka_bootstrap(settings.kafka, settings.stack)),
        group_id=settings.worker.group_id,
        entity_topics=[t.name(r) for r in ENTITY_ROLES],
        ticket_topic=t.name("tickets"),
        feedback_topic=t.name("feedback"),
        batch_size=settings.worker.batch_size,
        batch_window_s=settings.worker.batch_window_s,
        datadir=settings.stack.state_dir / "faust" / settings.worker.group_id,
        session_timeout_s=settings.worker.session_timeout_s,
        buffer_events=settings.worker.buffer_events,
    )
    d = serving.deployment
    canary = f", canary {d.canary} at {d.canary_percent:g}%" if d.canary else ""
    announce(
        f"worker {settings.worker.group_id}: space {embedder.space_id}, index {index.name}, "
        f"topics {t.prefix}*; routing with live {d.live}{canary}"
    )
    import faust

    # faust keeps our logging setup (text or JSON) instead of installing its own handlers
    faust.Worker(
        app, loglevel=loglevel, quiet=True, override_logging=False, redirect_stdouts=False
    ).execute_from_commandline()


def _ensure_default_bundle(settings: ModelSettings, announce: Callable[[str], None]) -> None:
    """Build the configured bundle from the default spec when it is missing (needs [train]); the
    bundle at the default location is rebuilt too when this version's default spec differs from
    the one it was built from (an upgrade that ships another head or preprocessing)."""
    import importlib.util

    from models.config import load_spec
    from streams.exceptions import ConfigurationError

    bundle = settings.resolved_bundle_dir()
    if bundle_ready(settings):
        return
    if (bundle / "manifest.json").is_file():
        announce(f"the default bundle in {bundle} predates this version's default: rebuilding")
    if importlib.util.find_spec("torch") is None:
        raise ConfigurationError(
            f"no model bundle in {bundle}, and this install cannot build one (no torch): "
            "run `crossroute models build --out DIR` where the [train] extras are installed "
            "and point CROSSROUTE_MODEL__BUNDLE_DIR at DIR"
        )
    from models.export.build import build_bundle

    announce(f"building the default model bundle into {bundle}")
    build_bundle(load_spec("default"), bundle)


def bundle_ready(settings: ModelSettings) -> bool:
    """Whether the bundle the settings point at can be served: it exists, and, at the default
    location, was built from this version's default spec (else the worker rebuilds it)."""
    from models.bundle import load_manifest
    from models.config import load_spec
    from models.exceptions import ModelsError

    bundle = settings.resolved_bundle_dir()
    if not (bundle / "manifest.json").is_file():
        return False
    if settings.bundle_dir is not None:
        return True  # a bundle the user chose: served as it is
    try:
        return load_manifest(bundle, verify=False).spec == load_spec("default")
    except ModelsError:
        return False
