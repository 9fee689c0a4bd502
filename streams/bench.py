"""``crossroute bench ingest`` and ``bench scale``: the whole ingest path, measured side by side.

Everything runs against the configured (or embedded) Kafka and Redis, in a deployment of its own: a
fresh topic prefix, index namespace and consumer group per run, removed afterwards. Workers are real
``crossroute worker`` processes; the bench process only publishes, watches Redis and, between the
worker's phases, measures the same work without the pipeline:

- **efficiency** = end-to-end events/s (first publish → every document acknowledged by Redis and
  searchable) ÷ the encoders' throughput on the same documents, measured in this process with the
  same batch size and threads (images decoded beforehand: the encoder limit is the models, not I/O);
- **the naive peer**: what a competent team writes first — a confluent-kafka consumer loop that
  embeds each message on arrival with the torch reference encoders and writes each document to
  Redis with redisvl — on the same events (its vectors are checked against ours);
- **freshness**: event time → searchable (the document's key exists; RediSearch indexes a HASH in
  the write that creates it) for a steady stream at a share of the measured capacity;
- **scale**: throughput of 1, 2, 4 workers in one consumer group on a 6-partition topic.

Where the rest of the time goes comes from the worker's own metrics (``crossroute_embed_seconds``,
``crossroute_upsert_seconds``), scraped before and after each phase, and from timing event and image
decoding of the same bytes in this process.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.preprocess import ImageInput
from router.documents import document_inputs
from router.index import VectorIndex
from router.schemas import Article, ImageRef, Product, WarrantyPolicy
from streams.events import (
    ArticleUpserted,
    ProductUpserted,
    WarrantyPolicyUpserted,
    decode_event,
    encode_event,
)
from streams.exceptions import ServiceUnavailableError
from streams.producer import Publisher
from streams.settings import TopicSettings, WorkerSettings

if TYPE_CHECKING:
    from models.embedder import Embedder

__all__ = [
    "FULL_INGEST",
    "QUICK_INGEST",
    "BenchDeployment",
    "IngestPlan",
    "article_events",
    "bench_ingest",
    "bench_restart",
    "bench_scale",
    "product_events",
]

TENANT = "bench"
Upserted = ProductUpserted | ArticleUpserted | WarrantyPolicyUpserted
Progress = Callable[[str], None]


@dataclass(frozen=True)
class IngestPlan:
    """How much ``bench ingest`` does."""

    images: int
    """Product events (title + photo) for the image efficiency."""
    texts: int
    """Article and policy events for the text efficiency."""
    peer_images: int
    """Of those, how many the naive peer processes (it is slow; its rate is what counts)."""
    peer_texts: int
    freshness_s: float
    """Duration of each steady-load run."""
    loads: tuple[float, ...] = (0.5, 0.9)
    """Shares of the measured capacity for the freshness runs."""


QUICK_INGEST = IngestPlan(images=384, texts=512, peer_images=96, peer_texts=128, freshness_s=15)
FULL_INGEST = IngestPlan(images=2000, texts=2000, peer_images=400, peer_texts=400, freshness_s=60)


# -- the events ----------------------------------------------------------------------------------


def product_events(
    data_root: Path, n: int, *, tenant: str = TENANT, tag: str = "p", version: int = 1
) -> list[ProductUpserted]:
    """``n`` product events from the catalog (``myntra-t2i`` pairs: a real title and its real
    photo, inline), cycling through the pairs when ``n`` is larger; ids ``{tag}{i}``."""
    root = data_root / "myntra-t2i"
    rows = [json.loads(line) for line in (root / "pairs.jsonl").read_text().splitlines() if line]
    rows.sort(key=lambda r: r["image"])
    out = []
    for i in range(n):
        row = rows[i % len(rows)]
        data = (root / row["image"]).read_bytes()
        product = Product(
            id=f"{tag}{i}", tenant=tenant, title=row["text"], category="catalog",
            image=ImageRef(data=data, content_type="image/jpeg"),
        )  # fmt: skip
        out.append(ProductUpserted.of(product, source_version=version))
    return out


def article_events(
    data_root: Path, n: int, *, tenant: str = TENANT, tag: str = "a", version: int = 1
) -> list[Upserted]:
    """``n`` text events: the knowledge articles of ``stackfaq`` and the ``warranty-policies``
    corpus (real titles and bodies), cycling when ``n`` is larger; ids ``{tag}{i}``."""
    rows = []
    for name in ("stackfaq", "warranty-policies"):
        path = data_root / name / "corpus.jsonl"
        rows += [json.loads(line) for line in path.read_text().splitlines() if line]
    rows.sort(key=lambda r: r["_id"])
    out: list[Upserted] = []
    for i in range(n):
        row = rows[i % len(rows)]
        title = (row.get("title") or row["_id"])[:1000]
        body = row.get("text") or ""
        if row.get("kind") == "warranty_policy":
            policy = WarrantyPolicy(id=f"{tag}{i}", tenant=tenant, title=title, body=body)
            out.append(WarrantyPolicyUpserted.of(policy, source_version=version))
        else:
            article = Article(id=f"{tag}{i}", tenant=tenant, title=title, body=body)
            out.append(ArticleUpserted.of(article, source_version=version))
    return out


# -- a deployment of its own ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class BenchDeployment:
    """Topics, an index namespace and a consumer group of their own, with worker processes.

    Args:
        settings: the user's settings (where Kafka and Redis are, security, model threads).
        bundle: the model bundle the workers serve.
        workdir: where the workers' logs go.
        partitions: partitions per topic (the user's setting by default).
    """

    def __init__(
        self,
        settings: WorkerSettings,
        bundle: Path,
        workdir: Path,
        *,
        partitions: int | None = None,
    ) -> None:
        from confluent_kafka.admin import AdminClient

        from router.connection import redis_url
        from streams.connections import kafka_bootstrap, kafka_config, redis_client
        from streams.topics import ensure_topics, topic_specs

        tag = uuid.uuid4().hex[:8]
        self.settings = settings
        self.workdir = workdir
        self.topics = TopicSettings(
            prefix=f"bench{tag}.", partitions=partitions or settings.topics.partitions
        )
        self.index_settings = settings.index.model_copy(update={"namespace": f"bench{tag}"})
        self.group = f"bench{tag}"
        self.kafka = kafka_config(settings)
        self.admin = AdminClient(self.kafka)
        ensure_topics(self.admin, topic_specs(self.topics))
        self.redis = redis_client(settings.redis, settings.stack)
        self.publisher = Publisher(self.kafka, self.topics)
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap(settings.kafka, settings.stack),
            "REDIS_URL": redis_url(settings.redis, settings.stack),
            "CROSSROUTE_MODEL__BUNDLE_DIR": str(bundle),
            "CROSSROUTE_TOPICS__PREFIX": self.topics.prefix,
            "CROSSROUTE_TOPICS__PARTITIONS": str(self.topics.partitions),
            "CROSSROUTE_INDEX__NAMESPACE": self.index_settings.namespace,
            "CROSSROUTE_WORKER__GROUP_ID": self.group,
            "CROSSROUTE_WORKER__TENANTS": json.dumps([TENANT]),
            "HF_HUB_OFFLINE": "1",
        }
        self.procs: list[tuple[subprocess.Popen[bytes], Path, int]] = []
        self._index: VectorIndex | None = None
        self._bundle = bundle

    def index(self) -> VectorIndex:
        """The index the workers write (of the bundle's space)."""
        if self._index is None:
            from models.bundle import load_manifest

            manifest = load_manifest(self._bundle, verify=False)
            self._index = VectorIndex.for_manifest(self.redis, manifest, self.index_settings)
        return self._index

    def start_workers(self, n: int) -> None:
        """Start ``n`` worker processes (each with a metrics port of its own)."""
        for _ in range(n):
            port = _free_port()
            log = self.workdir / f"{self.group}-worker-{len(self.procs)}.log"
            env = {**self.env, "CROSSROUTE_WORKER__METRICS_PORT": str(port)}
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "streams.main", "worker"],
                    env=env, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            self.procs.append((proc, log, port))

    def _check_alive(self) -> None:
        for proc, log, _ in self.procs:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise ServiceUnavailableError(
                    f"a bench worker exited with {proc.returncode}; its log ends:\n{tail}"
                )

    def wait_indexed(self, n: int, timeout_s: float = 600) -> float:
        """Wait until ``n`` documents of the bench tenant are searchable; return when (perf
        counter). Polls rarely while much is left (the bench must not take the CPU it measures):
        every eighth of the time left at the rate seen so far, at most 0.5 s, at least 20 ms."""
        index = self.index()
        deadline = time.monotonic() + timeout_s
        first: tuple[float, int] | None = None
        while True:
            now = time.perf_counter()
            count = index.count(TENANT) if index.exists() else 0
            if count >= n:
                return now
            self._check_alive()
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"bench: {n} documents not indexed within {timeout_s:.0f} s ({count} are)"
                )
            first = first or (now, count)
            wait = 0.1
            if count > first[1]:
                rate = (count - first[1]) / (now - first[0])
                wait = min(max((n - count) / rate / 8, 0.02), 0.5)
            time.sleep(wait)

    def wait_group(self, members: int, timeout_s: float = 300) -> None:
        """Wait until the consumer group is stable with ``members`` members."""
        from confluent_kafka import ConsumerGroupState

        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            desc = self.admin.describe_consumer_groups([self.group])[self.group]
            try:
                group = desc.result(timeout=10)
                if group.state == ConsumerGroupState.STABLE and len(group.members) == members:
                    return
            except Exception:  # noqa: S110  # not known to the coordinator yet
                pass
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(f"bench: group {self.group} not stable")
            time.sleep(0.5)

    def publish(self, events: Iterable[Upserted]) -> None:
        """Publish (each as it comes) and wait for the broker's confirmation of each."""
        report = self.publisher.publish(events)
        if report.failed:
            raise ServiceUnavailableError(f"bench: publishing failed: {report.failed[0][1]}")

    def metrics(self) -> dict[str, float]:
        """The workers' embed/write/batch counters, summed over workers."""
        from prometheus_client.parser import text_string_to_metric_families

        wanted = {
            "crossroute_embed_seconds_sum", "crossroute_upsert_seconds_sum",
            "crossroute_batch_size_count", "crossroute_batch_size_sum",
        }  # fmt: skip
        out = dict.fromkeys(wanted, 0.0)
        for _, _, port in self.procs:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/metrics", timeout=10
            ) as r:  # our own loopback port
                text = r.read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in wanted:
                        out[sample.name] += sample.value
        return out

    def stop_workers(self) -> None:
        """SIGTERM the workers, wait, kill what is left."""
        for proc, _, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _, _ in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def close(self) -> None:
        """Stop the workers; remove the topics, the index and every key of the namespace."""
        self.stop_workers()
        self.index().drop()
        keys = list(self.redis.scan_iter(match=f"{self.index_settings.namespace}:*", count=1000))
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start : start + 500])
        from streams.topics import topic_specs

        names = [spec.name for spec in topic_specs(self.topics)]
        for future in self.admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result()
            except Exception:  # noqa: S110  # already gone, or never created: nothing to remove
                pass


@contextmanager
def deployment(
    settings: WorkerSettings, bundle: Path, workdir: Path, *, partitions: int | None = None
) -> Iterator[BenchDeployment]:
    """A :class:`BenchDeployment`, closed afterwards whatever happens."""
    dep = BenchDeployment(settings, bundle, workdir, partitions=partitions)
    try:
        yield dep
    finally:
        dep.close()


# -- the pieces measured -------------------------------------------------------------------------


def _image_bytes(events: Sequence[Upserted]) -> list[tuple[int, ImageInput]]:
    """``(position, image)`` of the events that carry an image, as the worker's indexer reads it."""
    from router.documents import resolve_image

    out: list[tuple[int, ImageInput]] = []
    for i, event in enumerate(events):
        ref = document_inputs(event.document)[2]
        if ref is not None:
            out.append((i, resolve_image(ref, f"#{i}", None)))
    return out


def encoder_rate(embedder: Embedder, events: Sequence[Upserted], batch_size: int) -> float:
    """Documents/s of the encoders alone on the documents of ``events``: the same calls as the
    worker's indexer (texts, then images, per batch of ``batch_size``), images decoded beforehand."""
    texts = [document_inputs(event.document)[1] for event in events]
    images: list[Any] = [None] * len(events)
    found = _image_bytes(events)
    decoded, _ = embedder.preprocess_images([image for _, image in found])
    for (i, _), image in zip(found, decoded, strict=True):
        images[i] = image
    start = time.perf_counter()
    for lo in range(0, len(events), batch_size):
        chunk_texts = [t for t in texts[lo : lo + batch_size] if t]
        chunk_images = [im for im in images[lo : lo + batch_size] if im is not None]
        if chunk_texts:
            embedder.embed_texts(chunk_texts)
        if chunk_images:
            embedder.embed_images(chunk_images)
    return len(events) / (time.perf_counter() - start)


def decode_costs(embedder: Embedder, events: Sequence[Upserted]) -> dict[str, float]:
    """Seconds per event, in this process, of what the worker does before the encoders: parse
    and validate the event JSON (base64 included), and decode its image."""
    raw = [encode_event(e) for e in events]
    start = time.perf_counter()
    for r in raw:
        decode_event(r)
    event_s = (time.perf_counter() - start) / len(raw)
    images = [image for _, image in _image_bytes(events)]
    start = time.perf_counter()
    embedder.preprocess_images(images)
    image_s = (time.perf_counter() - start) / len(raw)
    return {"event_json_ms": event_s * 1000, "image_decode_ms": image_s * 1000}


def pipeline_phase(dep: BenchDeployment, events: Sequence[Upserted], before: int) -> dict[str, Any]:
    """Publish ``events`` at once and time until every one is searchable (``before`` documents of
    the bench tenant are there already); with the workers' time split from their metrics."""
    m0 = dep.metrics()
    start = time.perf_counter()
    dep.publish(events)
    published = time.perf_counter()
    end = dep.wait_indexed(before + len(events))
    m1 = dep.metrics()
    wall = end - start
    embed = m1["crossroute_embed_seconds_sum"] - m0["crossroute_embed_seconds_sum"]
    write = m1["crossroute_upsert_seconds_sum"] - m0["crossroute_upsert_seconds_sum"]
    batches = m1["crossroute_batch_size_count"] - m0["crossroute_batch_size_count"]
    consumed = m1["crossroute_batch_size_sum"] - m0["crossroute_batch_size_sum"]
    return {
        "events": len(events),
        "events_per_s": len(events) / wall,
        "wall_s": wall,
        "publish_s": published - start,
        "batches": int(batches),
        "mean_batch": consumed / batches if batches else 0.0,
        "worker_embed_s": embed,
        "worker_redis_write_s": write,
    }


def _percentile_ms(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000
    return {f"p{q}": round(float(np.percentile(arr, q)), 1) for q in (50, 95, 99)}


def freshness(
    dep: BenchDeployment,
    data_root: Path,
    rate: float,
    seconds: float,
    *,
    tag: str,
    poll_s: float = 0.05,
) -> dict[str, Any]:
    """Publish product events at a steady ``rate`` for ``seconds``, each stamped with its event
    time as it is sent; watch Redis every ``poll_s`` and record event time → searchable."""
    n = max(int(rate * seconds), 1)
    events = product_events(data_root, n, tag=tag)
    sent: dict[str, float] = {}
    lock = threading.Lock()
    failure: list[BaseException] = []

    def paced() -> Iterator[Upserted]:
        from datetime import UTC, datetime

        start = time.monotonic()
        for i, event in enumerate(events):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = datetime.now(UTC)
            with lock:
                sent[event.entity_id] = now.timestamp()
            yield event.model_copy(update={"occurred_at": now})

    def produce() -> None:
        try:
            dep.publish(paced())
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=produce, name="bench-producer", daemon=True)
    thread.start()
    index = dep.index()
    seen: dict[str, float] = {}
    deadline = time.monotonic() + seconds + 120
    while len(seen) < n and time.monotonic() < deadline and not failure:
        with lock:
            pending = [k for k in sent if k not in seen]
        if pending:
            found = index.present(TENANT, pending)
            now = time.time()
            for key, ok in zip(pending, found, strict=True):
                if ok:
                    seen[key] = now - sent[key]
        time.sleep(poll_s)
    thread.join(timeout=60)
    if failure:
        raise failure[0]
    return {
        "events_per_s": round(rate, 1),
        "events": n,
        "seen": len(seen),
        "poll_ms": poll_s * 1000,
        **_percentile_ms(list(seen.values()) or [float("nan")]),
    }


def naive_peer(
    dep: BenchDeployment,
    embedder: Embedder,
    roles: Sequence[str],
    n: int,
    *,
    threads: int | None,
    timeout_s: float = 900,
) -> dict[str, Any]:
    """The naive peer on the first ``n`` events of the ``roles`` topics: a confluent-kafka loop
    that decodes each message, embeds it with the torch reference and writes it with redisvl
    (its own index, same HNSW parameters), one at a time. Returns its rate (first message →
    ``n``-th written) and the cosine of its vectors with the worker's for the same documents."""
    from confluent_kafka import Consumer
    from redisvl.index import SearchIndex

    from models.export.reference import TorchReference
    from models.preprocess import title_and_text

    reference = TorchReference(embedder, threads)
    name = f"{dep.index_settings.namespace}-peer"
    hnsw = dep.index_settings
    schema = {
        "index": {"name": name, "prefix": f"{name}:doc", "storage_type": "hash"},
        "fields": [
            {"name": "tenant", "type": "tag"},
            {"name": "kind", "type": "tag"},
            {"name": "title", "type": "text"},
            {
                "name": "vector", "type": "vector",
                "attrs": {
                    "dims": embedder.dim, "algorithm": "hnsw", "distance_metric": "cosine",
                    "datatype": "float32", "m": hnsw.hnsw_m,
                    "ef_construction": hnsw.hnsw_ef_construction,
                },
            },
        ],
    }  # fmt: skip
    index = SearchIndex.from_dict(schema, redis_client=dep.redis)
    index.create(overwrite=True, drop=True)
    consumer = Consumer(
        {**dep.kafka, "group.id": f"{dep.group}-peer", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([dep.topics.name(role) for role in roles])
    vectors: dict[str, np.ndarray] = {}
    done = 0
    first: float | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while done < n:
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(f"bench: the naive peer did {done}/{n} in time")
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            if first is None:
                first = time.perf_counter()
            payload = json.loads(msg.value() or b"{}")
            kind, doc = next(
                (k, payload[k]) for k in ("product", "article", "warranty_policy") if k in payload
            )
            text = title_and_text(doc.get("title"), doc.get("body") or doc.get("description"))
            image = None
            if doc.get("image"):
                image = base64.urlsafe_b64decode(doc["image"]["data"])  # pydantic writes urlsafe
            vector = reference.document(text or None, image)
            key = f"{name}:doc:{doc['tenant']}:{doc['id']}"
            index.load(
                [{"tenant": doc["tenant"], "kind": kind, "title": doc.get("title", ""),
                  "vector": vector.astype(np.float32).tobytes()}],
                keys=[key],
            )  # fmt: skip
            vectors[doc["id"]] = vector
            done += 1
        end = time.perf_counter()
    finally:
        consumer.close()
        index.delete(drop=True)
    ours = dep.index().vectors(TENANT, sorted(vectors)[:50])
    cosines = [float(ours[k] @ vectors[k]) for k in ours]
    return {
        "events": n,
        "events_per_s": n / (end - (first or end)) if first else 0.0,
        "vector_cosine_min": round(min(cosines), 6) if cosines else None,
        "compared": len(cosines),
    }


# -- the benches ---------------------------------------------------------------------------------


def _split(phase: dict[str, Any], per_event: dict[str, float], image: bool) -> dict[str, float]:
    """Where a phase's wall time went, as shares: the worker's embedding (split into image decode,
    timed in this process, and the encoders), its Redis writes, and the rest (Kafka fetch, event
    JSON and base64, batching, the framework)."""
    wall = phase["wall_s"]
    n = phase["events"]
    decode = per_event["image_decode_ms"] * n / 1000 if image else 0.0
    event_json = per_event["event_json_ms"] * n / 1000
    embed = phase["worker_embed_s"]
    write = phase["worker_redis_write_s"]
    rest = max(wall - embed - write - event_json, 0.0)
    return {
        "encoders": round(max(embed - decode, 0.0) / wall, 3),
        "image_decode": round(decode / wall, 3),
        "event_json_base64": round(event_json / wall, 3),
        "redis_writes": round(write / wall, 3),
        "kafka_batching_framework": round(rest / wall, 3),
    }


def bench_ingest(
    settings: WorkerSettings,
    embedder: Embedder,
    data_root: Path,
    plan: IngestPlan,
    workdir: Path,
    *,
    peer: bool = True,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Ingest efficiency (images, texts), the naive peer and freshness; see the module docstring.

    Raises:
        ServiceUnavailableError: a worker died or did not index in time.
    """
    batch = settings.worker.batch_size
    threads = settings.model.threads
    images = product_events(data_root, plan.images)
    texts = article_events(data_root, plan.texts)
    warm = [*product_events(data_root, 16, tag="w"), *article_events(data_root, 16, tag="wa")]
    costs = {
        "image": decode_costs(embedder, images[:200]),
        "text": decode_costs(embedder, texts[:200]),
    }
    progress("measuring the encoders alone")
    limit_before = {
        "image": encoder_rate(embedder, images, batch),
        "text": encoder_rate(embedder, texts, batch),
    }
    out: dict[str, Any] = {}
    with deployment(settings, embedder.bundle_dir, workdir) as dep:
        progress("starting a worker")
        dep.start_workers(1)
        dep.publish(warm)
        dep.wait_indexed(len(warm))
        progress(f"worker: {len(images)} product events (title + photo)")
        phases = {"image": pipeline_phase(dep, images, len(warm))}
        progress(f"worker: {len(texts)} article and policy events")
        phases["text"] = pipeline_phase(dep, texts, len(warm) + len(images))
        capacity = phases["image"]["events_per_s"]
        fresh = []
        for load in plan.loads:
            progress(
                f"freshness at {load:.0%} of {capacity:.1f} events/s for {plan.freshness_s:g} s"
            )
            row = freshness(dep, data_root, load * capacity, plan.freshness_s, tag=f"f{load}")
            fresh.append({"load": load, **row})
        dep.stop_workers()
        progress("measuring the encoders alone, again")
        limit_after = {
            "image": encoder_rate(embedder, images, batch),
            "text": encoder_rate(embedder, texts, batch),
        }
        peers: dict[str, Any] = {}
        if peer:
            progress(f"naive peer: {plan.peer_images} product events")
            peers["image"] = naive_peer(
                dep, embedder, ["products"], plan.peer_images, threads=threads
            )
            progress(f"naive peer: {plan.peer_texts} article and policy events")
            peers["text"] = naive_peer(
                dep, embedder, ["articles", "warranty_policies"], plan.peer_texts, threads=threads
            )
    for kind in ("image", "text"):
        limit = (limit_before[kind] + limit_after[kind]) / 2
        phase = phases[kind]
        summary: dict[str, Any] = {
            "events_per_s": round(phase["events_per_s"], 1),
            "encoder_docs_per_s": round(limit, 1),
            "encoder_docs_per_s_before_after": [
                round(limit_before[kind], 1),
                round(limit_after[kind], 1),
            ],
            "efficiency": round(phase["events_per_s"] / limit, 3),
            "time_shares": _split(phase, costs[kind], kind == "image"),
            "per_event": {k: round(v, 3) for k, v in costs[kind].items()},
            "pipeline": {k: round(v, 3) if isinstance(v, float) else v for k, v in phase.items()},
        }
        if kind in peers:
            summary["naive_peer"] = peers[kind]
            summary["vs_naive_peer"] = round(phase["events_per_s"] / peers[kind]["events_per_s"], 2)
        out[kind] = summary
    out["freshness_ms"] = {k: fresh[0][k] for k in ("p50", "p95", "p99")} | {
        "load": fresh[0]["load"]
    }
    out["freshness"] = fresh
    out["batch_size"] = batch
    out["batch_window_s"] = settings.worker.batch_window_s
    out["threads"] = threads
    return out


def bench_scale(
    settings: WorkerSettings,
    embedder: Embedder,
    data_root: Path,
    events: int,
    workdir: Path,
    *,
    workers: Sequence[int] = (1, 2, 4),
    partitions: int = 6,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Ingest throughput of 1, 2, 4 workers in one consumer group on ``partitions`` partitions.

    Raises:
        ServiceUnavailableError: a worker died or did not index in time.
    """
    products = product_events(data_root, events)
    rows = []
    for n in workers:
        with deployment(settings, embedder.bundle_dir, workdir, partitions=partitions) as dep:
            progress(f"{n} worker(s): starting")
            dep.start_workers(n)
            dep.wait_group(n)
            warm = product_events(data_root, 8 * partitions, tag="w")
            dep.publish(warm)
            dep.wait_indexed(len(warm))
            dep.wait_group(n)
            progress(f"{n} worker(s): {events} product events")
            phase = pipeline_phase(dep, products, len(warm))
            rows.append({"workers": n, "events_per_s": round(phase["events_per_s"], 1)})
    base = rows[0]["events_per_s"] / rows[0]["workers"]
    for row in rows:
        row["per_worker_efficiency"] = round(row["events_per_s"] / (row["workers"] * base), 3)
    return {
        "partitions": partitions,
        "events": events,
        "cores": os.cpu_count(),
        "workers": rows,
    }


def bench_restart(
    settings: WorkerSettings,
    embedder: Embedder,
    data_root: Path,
    n: int,
    cache_dir: Path,
    *,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """How long the embedded Redis takes to come back after a restart with an index of ``n``
    catalog vectors (the default HNSW settings): the AOF replayed, then HNSW rebuilt by RediSearch.

    Raises:
        ConfigurationError: Redis is external (``REDIS_URL``): the dev stack cannot restart it.
    """
    from router.bench import TENANTS, catalog_vectors, load_catalog, wait_indexed
    from router.index import Filters
    from streams.connections import dev_services, redis_client
    from streams.devstack import DevStack
    from streams.exceptions import ConfigurationError

    if "redis" not in dev_services(settings):
        raise ConfigurationError(
            "bench restart restarts the embedded Redis; with REDIS_URL set it cannot (restart "
            "yours and time FT.INFO's percent_indexed instead)"
        )
    vecs, cats, n_real, _, _ = catalog_vectors(embedder, data_root, n, cache_dir, progress)
    tenants = [f"t{i % TENANTS}" for i in range(len(vecs))]
    client = redis_client(settings.redis, settings.stack)
    index_settings = settings.index.model_copy(update={"namespace": f"bench{uuid.uuid4().hex[:8]}"})
    index = VectorIndex.for_manifest(client, embedder.manifest, index_settings)
    stack = DevStack.from_settings(settings)
    try:
        load_s = load_catalog(index, vecs, tenants, cats, progress)
        used = int(client.info("memory")["used_memory"])
        # the AOF is fsynced every second: make sure the last writes are in it
        time.sleep(2)
        progress(f"restarting Redis with {len(vecs)} documents")
        start = time.perf_counter()
        stack.restart("redis")
        up = time.perf_counter()
        client = redis_client(settings.redis, settings.stack)
        index = VectorIndex.for_manifest(client, embedder.manifest, index_settings)
        wait_indexed(index, poll_s=0.05)
        indexed = time.perf_counter()
        docs = index.count()
        probe = index.knn(vecs[0], index.space_id, 10, Filters(tenant=tenants[0]))
    finally:
        index.drop()
    return {
        "documents": docs,
        "real": n_real,
        "load_s": round(load_s, 2),
        "used_memory_bytes": used,
        "restart_to_ping_s": round(up - start, 2),
        "restart_to_indexed_s": round(indexed - start, 2),
        "knn_after_restart_finds_itself": bool(probe and probe[0].id == "0"),
    }
