"""The console's pipeline pages: the worker's metrics over the last hour, and the dead letters.

:class:`MetricsHistory` scrapes the worker's Prometheus endpoint (``CROSSROUTE_WORKER__METRICS_URL``,
by default ``http://127.0.0.1:{METRICS_PORT}/metrics``) every ``every_s`` seconds into a ring buffer
of one hour, from which ``GET /v1/pipeline`` derives per topic consumer lag, events/s, the mean
freshness of what was indexed, dead letters by reason and stale writes, next to the documents of
each registered space (read from Redis). Nothing is stored: a restarted API starts a new hour.

:class:`DeadLetters` reads the newest records of the dead-letter topic (``GET /v1/deadletters``)
without a consumer group (it assigns partitions and never commits, so it takes nothing from the
worker): reason, error, source topic/partition/offset, key and the payload as text, cut at
:data:`PAYLOAD_PREVIEW` bytes. A key sees the dead letters of its tenant only (the tenant of the
record's key ``tenant/id``); a record whose key names no tenant is shown only with auth off.
The console shows every field as text (``textContent``): a hostile payload stays inert.

Both need an ``admin`` key (:mod:`router.api` guards ``/v1/pipeline`` and ``/v1/deadletters``).
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

if TYPE_CHECKING:
    from router.deploy import Deployments
    from router.gate import GateRecords
    from router.index import VectorIndex

__all__ = [
    "PAYLOAD_PREVIEW",
    "REPORT_CSP",
    "DeadLetter",
    "DeadLetters",
    "MetricsHistory",
    "Sample",
    "add_operations",
    "dead_letter",
    "kept_reports",
    "parse_metrics",
    "report_path",
    "spaces_overview",
]

log = logging.getLogger(__name__)
PAYLOAD_PREVIEW = 8192
"""Bytes of a dead letter's payload shown (the record may hold up to the topic's 10 MiB)."""
_SCAN_PER_PARTITION = 500
_PARTITION_EOF = -191
"""librdkafka's ``RD_KAFKA_RESP_ERR__PARTITION_EOF`` (``KafkaError._PARTITION_EOF``)."""


@dataclass(frozen=True)
class Sample:
    """What one scrape of the worker's metrics says (counters as totals since the worker started)."""

    at: float
    lag: dict[str, float] = field(default_factory=dict)
    """Consumer lag per topic (summed over its partitions)."""
    events_in: float = 0.0
    dead_letters: dict[str, float] = field(default_factory=dict)
    stale_writes: float = 0.0
    freshness_sum: float = 0.0
    freshness_count: float = 0.0


def parse_metrics(text: str, at: float) -> Sample:
    """The :class:`Sample` of a Prometheus text exposition of the worker."""
    from prometheus_client.parser import text_string_to_metric_families

    lag: dict[str, float] = {}
    dead: dict[str, float] = {}
    events_in = stale = fresh_sum = fresh_count = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "crossroute_consumer_lag":
                topic = s.labels.get("topic", "")
                lag[topic] = lag.get(topic, 0.0) + s.value
            elif s.name == "crossroute_events_in_total":
                events_in += s.value
            elif s.name == "crossroute_dead_letters_total":
                reason = s.labels.get("reason", "")
                dead[reason] = dead.get(reason, 0.0) + s.value
            elif s.name == "crossroute_stale_writes_total":
                stale += s.value
            elif s.name == "crossroute_freshness_seconds_sum":
                fresh_sum += s.value
            elif s.name == "crossroute_freshness_seconds_count":
                fresh_count += s.value
    return Sample(at, lag, events_in, dead, stale, fresh_sum, fresh_count)


def _get(url: str) -> str:
    import httpx

    response = httpx.get(url, timeout=5.0)
    response.raise_for_status()
    return response.text


class MetricsHistory:
    """The worker's metrics, scraped every ``every_s`` seconds, for the last ``window_s``.

    Args:
        url: the worker's ``/metrics`` (None: not exported; the page says how to turn it on).
        fetch: how a URL is read (a seam for tests; default ``httpx.get``).
    """

    def __init__(
        self,
        url: str | None,
        *,
        every_s: float = 10.0,
        window_s: float = 3600.0,
        fetch: Callable[[str], str] = _get,
    ) -> None:
        self.url = url
        self.every_s = every_s
        self.samples: deque[Sample] = deque(maxlen=max(2, int(window_s / every_s) + 1))
        self.error: str | None = None
        self._fetch = fetch
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scrape(self, now: float | None = None) -> None:
        """Take one sample (an unreachable worker is recorded as the error, not raised)."""
        if self.url is None:
            return
        at = time.time() if now is None else now
        try:
            sample = parse_metrics(self._fetch(self.url), at)
        except Exception as e:  # whatever the scrape hit, the page says it
            with self._lock:
                self.error = f"cannot read {self.url}: {type(e).__name__}: {e}"[:500]
            return
        with self._lock:
            self.samples.append(sample)
            self.error = None

    def start(self) -> None:
        """Scrape in a daemon thread until :meth:`stop`."""
        if self.url is None or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                self.scrape()
                self._stop.wait(self.every_s)

        self._thread = threading.Thread(target=loop, name="crossroute-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def series(self) -> dict[str, Any]:
        """Per sample (oldest first): time, lag per topic, and over the interval before it
        events/s and the mean freshness; totals of dead letters by reason and stale writes."""
        with self._lock:
            samples = list(self.samples)
            error = self.error
        points = []
        for prev, cur in itertools.pairwise(samples):
            dt = cur.at - prev.at
            fresh_n = cur.freshness_count - prev.freshness_count
            restarted = cur.events_in < prev.events_in  # the worker restarted: counters reset
            points.append(
                {
                    "at": cur.at,
                    "lag": cur.lag,
                    "events_per_s": None if restarted or dt <= 0
                    else (cur.events_in - prev.events_in) / dt,
                    "freshness_s": (cur.freshness_sum - prev.freshness_sum) / fresh_n
                    if fresh_n > 0 and not restarted else None,
                }
            )  # fmt: skip
        last = samples[-1] if samples else None
        return {
            "url": self.url,
            "every_s": self.every_s,
            "error": error,
            "scraped_at": last.at if last else None,
            "points": points,
            "lag": last.lag if last else {},
            "dead_letters": last.dead_letters if last else {},
            "stale_writes": last.stale_writes if last else 0.0,
        }


class DeadLetter(BaseModel):
    """One record of the dead-letter topic, as the console shows it."""

    partition: int
    offset: int
    timestamp_ms: int | None
    tenant: str | None
    key: str | None
    reason: str
    error: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    payload: str
    """The record's value as text (invalid UTF-8 replaced), cut at PAYLOAD_PREVIEW bytes."""
    payload_bytes: int
    truncated: bool


def _header(headers: list[tuple[str, bytes | None]], name: str) -> str | None:
    for key, value in reversed(headers):  # the worker's own headers come last
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


def _header_items(headers: Any) -> list[tuple[str, Any]]:
    if not headers:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def dead_letter(partition: int, offset: int, timestamp_ms: int | None, key: bytes | None,
                value: bytes | None, headers: list[tuple[str, bytes | None]]) -> DeadLetter:  # fmt: skip
    """The :class:`DeadLetter` of a record's fields."""
    text_key = key.decode("utf-8", "replace") if key is not None else None
    tenant = text_key.split("/", 1)[0] if text_key and "/" in text_key else None
    raw = value or b""
    return DeadLetter(
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp_ms,
        tenant=tenant,
        key=text_key,
        reason=_header(headers, "crossroute.error.reason") or "unknown",
        error=_header(headers, "crossroute.error") or "",
        source_topic=_header(headers, "crossroute.source.topic"),
        source_partition=_int(_header(headers, "crossroute.source.partition")),
        source_offset=_int(_header(headers, "crossroute.source.offset")),
        payload=raw[:PAYLOAD_PREVIEW].decode("utf-8", "replace"),
        payload_bytes=len(raw),
        truncated=len(raw) > PAYLOAD_PREVIEW,
    )


class DeadLetters:
    """The newest records of the dead-letter topic, read without a consumer group.

    Args:
        config: confluent-kafka config of the cluster.
        topic: the dead-letter topic's name.
    """

    def __init__(self, config: dict[str, Any], topic: str, timeout_s: float = 10.0) -> None:
        self.config = config
        self.topic = topic
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    def newest(self, tenant: str | None, limit: int = 50) -> list[DeadLetter]:
        """Up to ``limit`` records, newest first, of ``tenant`` (None: all, for auth off) among
        the last records of each partition."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {**self.config, "group.id": f"crossroute-console-{uuid.uuid4().hex[:8]}",
             "enable.auto.commit": False, "enable.partition.eof": True,
             "auto.offset.reset": "earliest"}
        )  # fmt: skip
        found: list[DeadLetter] = []
        try:
            with self._lock:
                meta = consumer.list_topics(self.topic, timeout=self.timeout_s)
                parts = (
                    sorted(meta.topics[self.topic].partitions) if self.topic in meta.topics else []
                )
                assign = []
                for p in parts:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), timeout=self.timeout_s
                    )
                    if high > low:
                        assign.append(
                            TopicPartition(self.topic, p, max(low, high - _SCAN_PER_PARTITION))
                        )
                if not assign:
                    return []
                consumer.assign(assign)
                pending = {tp.partition for tp in assign}
                deadline = time.monotonic() + self.timeout_s
                while pending and time.monotonic() < deadline:
                    msg = consumer.poll(0.5)
                    if msg is None:
                        continue
                    error = msg.error()
                    if error is not None:
                        if error.code() == _PARTITION_EOF:
                            pending.discard(msg.partition() or 0)
                        continue
                    ts_type, ts = msg.timestamp()
                    headers = [(k, v if isinstance(v, bytes | None) else v.encode())
                               for k, v in _header_items(msg.headers())]  # fmt: skip
                    at = ts if ts_type else None
                    letter = dead_letter(msg.partition() or 0, msg.offset() or 0, at,
                                         msg.key(), msg.value(), headers)  # fmt: skip
                    if tenant is None or letter.tenant == tenant:
                        found.append(letter)
        finally:
            consumer.close()
        found.sort(key=lambda d: (d.timestamp_ms or 0, d.partition, d.offset), reverse=True)
        return found[:limit]


def add_operations(
    app: FastAPI,
    history: MetricsHistory,
    letters: DeadLetters,
    documents: Callable[[bool], dict[str, Any]],
    reports_dir: Path | None = None,
) -> None:
    """Serve ``GET /v1/pipeline`` (``history`` and ``documents(False)``, the spaces' roles and
    documents), ``GET /v1/spaces`` (``documents(True)``, with manifests, gates and reports),
    ``GET /v1/spaces`` and ``GET /v1/deadletters`` on the API's app (``crossroute api`` does it)."""
    from router.auth import ApiKey

    @app.get("/v1/pipeline", summary="Pipeline health: the worker's metrics over the last hour")
    def pipeline() -> dict[str, Any]:
        return {**history.series(), "spaces": documents(False)}  # polled: roles and counts only

    @app.get("/v1/spaces", summary="Every registered space: role, documents, manifest, gate")
    def spaces() -> dict[str, Any]:
        return documents(True)

    @app.get(
        "/v1/spaces/{space_id}/reports/{name}",
        summary="An eval report kept for a space (HTML, as an attachment)",
        response_class=Response,
    )
    def report(space_id: str, name: str) -> Response:
        from router.bounds import Rejected

        path = report_path(reports_dir, space_id, name)
        if path is None:
            raise Rejected(404, "no such report")
        return Response(path.read_bytes(), media_type="text/html; charset=utf-8", headers={
            "Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'attachment; filename="{space_id}-{name}.html"'})  # fmt: skip

    @app.get(
        "/v1/deadletters",
        response_model=list[DeadLetter],
        summary="The newest dead letters of the key's tenant",
    )
    def deadletters(
        request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> list[DeadLetter]:
        from confluent_kafka import KafkaException

        from router.bounds import Rejected

        key: ApiKey | None = getattr(request.state, "api_key", None)
        try:
            return letters.newest(key.tenant if key is not None else None, limit)
        except KafkaException as e:
            log.warning("dead letters unavailable: %s", e)
            raise Rejected(503, "Kafka is unavailable, retry later") from e


REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""An eval report is served inert: no script, no request, whatever its text holds."""
_SPACE_ID = re.compile(r"^sp-[0-9a-f]{20}$")
_REPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def report_path(reports_dir: Path | None, space_id: str, name: str) -> Path | None:
    """The HTML file of a kept report, or None (a bad space id or name never reaches the disk)."""
    if reports_dir is None or not _SPACE_ID.match(space_id) or not _REPORT_NAME.match(name):
        return None
    path = reports_dir / space_id / f"{name}.html"
    return path if path.is_file() else None


def kept_reports(reports_dir: Path | None, space_id: str) -> list[dict[str, Any]]:
    """The eval reports ``crossroute eval --report`` kept for a space (``models.cli.keep_report``):
    dataset, when, query count and headline metrics, newest first."""
    import json

    folder = reports_dir / space_id if reports_dir is not None else None
    if folder is None or not folder.is_dir():
        return []
    out = []
    for path in folder.glob("*.json"):
        try:
            result = json.loads(path.read_text())
            metrics = {k: float(v) for k, v in result.get("metrics", {}).items()
                       if isinstance(v, int | float)}  # fmt: skip
        except (OSError, ValueError, AttributeError) as e:
            log.warning("skipping unreadable eval report %s: %s", path, e)
            continue
        out.append({
            "name": path.stem, "dataset": str(result.get("dataset", path.stem)),
            "created_at": path.stat().st_mtime, "queries": result.get("n_queries"),
            "metrics": metrics, "html": path.with_suffix(".html").is_file(),
        })  # fmt: skip
    return sorted(out, key=lambda r: r["created_at"], reverse=True)


def spaces_overview(
    deployments: Deployments,
    index_of: Callable[[str], VectorIndex],
    gates: GateRecords | None = None,
    reports_dir: Path | None = None,
    *,
    detail: bool = True,
) -> dict[str, Any]:
    """Each registered space: its role (live, canary, previous), index and documents (None: no
    index), when it was registered; with ``detail``, also a summary of its bundle's manifest (when
    this host can read the bundle), its latest gate report (when ``crossroute gate`` judged it) and
    the eval reports kept for it."""
    from models.bundle import load_manifest

    state = deployments.state()
    roles = {state.live: "live", state.canary: "canary", state.previous: "previous"}
    records = deployments.spaces()
    gated = gates.latest(sorted(records)) if gates is not None and detail else {}
    out: dict[str, Any] = {}
    for space_id, record in sorted(records.items()):
        try:
            count: int | None = index_of(record.index).count()
        except Exception:  # an index dropped since: shown as missing
            count = None
        entry: dict[str, Any] = {
            "role": roles.get(space_id), "index": record.index, "documents": count,
            "registered_at": record.registered_at, "bundle": str(record.bundle),
        }  # fmt: skip
        out[space_id] = entry
        if not detail:
            continue
        entry |= {"manifest": None, "gate": gated.get(space_id),
                  "reports": kept_reports(reports_dir, space_id)}  # fmt: skip
        try:
            m = load_manifest(record.bundle, verify=False)
        except Exception as e:  # the bundle lives on another host, or is gone
            entry["manifest_error"] = f"{type(e).__name__}: {e}"[:300]
        else:
            entry["manifest"] = {
                "name": m.spec.name, "version": m.spec.version, "dim": m.dim, "digest": m.digest(),
                "text": m.text.source, "image": m.image.source, "ocr": m.ocr is not None,
                "projection": None if m.projection is None else {
                    "weights_sha256": m.projection.weights_sha256,
                    "training_data_digest": m.projection.training_data_digest,
                },
            }  # fmt: skip
    return out
