"""``crossroute worker``: faust-streaming agents that keep the index live and route tickets.

Two agents in one consumer group: ``entities`` (products, articles, warranty policies, media) and
``tickets``. Each takes batches (``CROSSROUTE_WORKER__BATCH_SIZE`` events or
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
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from streams.pipeline import Pipeline, RawMessage

__all__ = ["EXIT_CRASH", "build_app"]

log = logging.getLogger(__name__)
EXIT_CRASH = 70


def build_app(
    pipeline: Pipeline,
    *,
    broker_options: Mapping[str, Any],
    group_id: str,
    entity_topics: Sequence[str],
    ticket_topic: str,
    batch_size: int,
    batch_window_s: float,
    datadir: Path,
    session_timeout_s: float = 10.0,
) -> Any:
    """The faust app with its two agents (not started).

    Args:
        broker_options: where and how to connect, as ``KafkaSettings.as_faust`` renders it
            (``broker``, ``broker_client_id``, ``broker_credentials`` for SSL/SASL).
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
        producer_max_request_size=17 * 1024 * 1024,
        consumer_max_fetch_size=17 * 1024 * 1024,
        broker_session_timeout=session_timeout_s,
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
            "deleted": result.deleted, "routed": result.routed,
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
    return app


def _headers(headers: Any) -> tuple[tuple[str, bytes | None], ...]:
    """Kafka headers as (name, value) pairs, whichever shape the framework handed them in."""
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(k), v) for k, v in items)
