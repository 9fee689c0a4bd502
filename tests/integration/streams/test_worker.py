"""The main job on the real broker and Redis: `crossroute worker` indexes what is published, deletes
what is deleted, dead-letters bad events with reasons while indexing the good ones of the same batch,
routes tickets (text + screenshot) to the decisions topic, learns from feedback (resolved, reopened,
escalated tickets change how the next similar ticket is routed), survives kill -9 without losing or
duplicating anything, and splits the partitions with a second worker of the same group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from router.index import VectorIndex
from router.schemas import Article, ImageRef, Product, RoutingDecision, Ticket, WarrantyPolicy
from router.settings import IndexSettings
from streams.devstack import DevStack
from streams.events import (
    ArticleUpserted,
    FeedbackRecorded,
    ProductDeleted,
    ProductUpserted,
    RoutingDecided,
    TicketCreated,
    WarrantyPolicyUpserted,
    decode_event,
    encode_event,
)
from streams.producer import Publisher
from streams.settings import TopicSettings
from tests.conftest import REPO, require_shared_data
from tests.integration.conftest import free_port
from tests.integration.router.conftest import ARTICLES, screenshot


class WorkerEnv:
    """One isolated deployment: its own topics, index namespace and consumer group."""

    def __init__(self, stack: DevStack, bundle: Path, tmp: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.stack = stack
        self.tmp = tmp
        self.topics = TopicSettings(prefix=f"w{tag}.", partitions=3)
        self.index_settings = IndexSettings(namespace=f"w{tag}")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CROSSROUTE_")},
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap(),
            "REDIS_URL": stack.redis_url(),
            "CROSSROUTE_MODEL__BUNDLE_DIR": str(bundle),
            "CROSSROUTE_TOPICS__PREFIX": self.topics.prefix,
            "CROSSROUTE_TOPICS__PARTITIONS": "3",
            "CROSSROUTE_INDEX__NAMESPACE": self.index_settings.namespace,
            "CROSSROUTE_WORKER__GROUP_ID": f"w{tag}",
            "CROSSROUTE_WORKER__BATCH_SIZE": "16",
            "CROSSROUTE_WORKER__TENANTS": '["acme"]',
            "CROSSROUTE_ROUTING__THRESHOLD": "0.2",
            "CROSSROUTE_STACK__STATE_DIR": str(tmp / "state"),
            "HF_HUB_OFFLINE": "1",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.publisher = Publisher(stack.kafka_config(), self.topics)

    def start(self) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def log(self, i: int = -1) -> str:
        return self.logs[i].read_text(errors="replace")

    def index(self, client: redis.Redis, embedder: Any) -> VectorIndex:
        from router.index import SpaceInfo

        return VectorIndex(client, SpaceInfo.from_manifest(embedder.manifest), self.index_settings)

    def stop(self) -> None:
        stop_processes(self.procs)


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process still running, wait 30 s each, kill what is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def deployment(dev_stack: DevStack, default_bundle: Path, tmp_path: Path) -> Iterator[WorkerEnv]:
    env = WorkerEnv(dev_stack, default_bundle, tmp_path)
    yield env
    env.stop()


def wait_for(check: Callable[[], bool], what: str, timeout: float, env: WorkerEnv) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if any(p.poll() not in (None,) and p.returncode not in (0, -9, -15) for p in env.procs):
            pytest.fail(f"a worker died while waiting for {what}:\n{env.log()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{env.log()[-3000:]}")
        time.sleep(0.5)


def consume(stack: DevStack, topic: str, n: int, timeout: float = 60) -> list[Any]:
    consumer = Consumer(stack.kafka_config(**{"group.id": uuid.uuid4().hex}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
        return out
    finally:
        consumer.close()


def indexes_and_routes(env: WorkerEnv, index: VectorIndex, timeout: float) -> None:
    """Publish five articles, wait until ``index`` holds them, route a ticket: a decision comes."""
    assert env.publisher.publish(articles(5)).failed == []
    wait_for(lambda: index.exists() and index.count("acme") == 5, "5 documents", timeout, env)
    ticket = TicketCreated(ticket=Ticket(id="t1", tenant="acme", text="problem number 3"))
    assert env.publisher.publish([ticket]).failed == []
    (msg,) = consume(env.stack, env.topics.name("decisions"), 1, timeout=120)
    assert isinstance(decode_event(msg.value()), RoutingDecided)


class Decisions:
    """The decisions topic as it fills up, by message key (``tenant/ticket id``)."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env
        self.consumer = Consumer(env.stack.kafka_config(**{"group.id": uuid.uuid4().hex}))
        topic = env.topics.name("decisions")
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        self.seen: dict[str, RoutingDecision] = {}

    def of(self, tenant: str, ticket_id: str, timeout: float = 120) -> RoutingDecision:
        key = f"{tenant}/{ticket_id}"
        deadline = time.monotonic() + timeout
        while key not in self.seen:
            if time.monotonic() > deadline:
                pytest.fail(f"no decision for {key}:\n{self.env.log()[-3000:]}")
            msg = self.consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                event = decode_event(msg.value())
                assert isinstance(event, RoutingDecided)
                self.seen[msg.key().decode()] = event.decision
        return self.seen[key]

    def close(self) -> None:
        self.consumer.close()


def articles(n: int, version: int = 1, start: int = 0) -> list[ArticleUpserted]:
    return [
        ArticleUpserted(
            source_version=version,
            article=Article(
                id=f"a{i}",
                tenant="acme",
                title=f"Article {i} v{version}",
                body=f"How to solve problem number {i}",
            ),
        )
        for i in range(start, start + n)
    ]


def test_index_delete_dead_letter_and_route(
    deployment: WorkerEnv, redis_client: redis.Redis, embedder: Any
) -> None:
    env = deployment
    metrics_port = free_port()
    env.env["CROSSROUTE_WORKER__METRICS_PORT"] = str(metrics_port)
    env.env["CROSSROUTE_WORKER__LOG_FORMAT"] = "json"
    env.start()
    image = sorted((require_shared_data() / "photo-routing" / "images").iterdir())[0].read_bytes()
    good = [
        *articles(10),
        WarrantyPolicyUpserted(
            source_version=1,
            policy=WarrantyPolicy(
                id="wp1",
                tenant="acme",
                title="Payment failed",
                body="Card declined or gateway timeout at checkout",
                product_categories=("shoes",),
            ),
        ),
        ProductUpserted(
            source_version=1,
            product=Product(
                id="sku1",
                tenant="acme",
                title="Trail shoe",
                category="shoes",
                image=ImageRef(data=image),
            ),
        ),
        ProductUpserted(
            source_version=1,
            product=Product(id="sku2", tenant="acme", title="Hat", category="hats"),
        ),
    ]
    bad_image = ProductUpserted(
        source_version=1,
        product=Product(
            id="sku3",
            tenant="acme",
            title="Broken",
            category="x",
            image=ImageRef(data=b"not an image"),
        ),
    )
    other_tenant = ArticleUpserted(
        source_version=1, article=Article(id="x1", tenant="globex", title="Nope", body="nope")
    )
    report = env.publisher.publish([*good, bad_image, other_tenant])
    assert report.failed == []
    raw = Producer(env.stack.kafka_config())
    raw.produce(
        env.topics.name("articles"),
        key=b"acme/junk",
        value=b"\x00 not json",
        headers=[("trace-id", b"t-42")],
    )
    misplaced = ProductUpserted(
        source_version=1, product=Product(id="sku8", tenant="acme", title="Lost", category="x")
    )
    raw.produce(env.topics.name("tickets"), key=misplaced.key, value=encode_event(misplaced))
    raw.produce(
        env.topics.name("products"),
        key=b"acme/sku9",
        value=b'{"type": "product.upserted", "schema_version": 1, "source_version": 1}',
    )
    raw.flush(30)
    index = env.index(redis_client, embedder)
    wait_for(lambda: index.exists() and index.count("acme") == len(good), "13 documents", 180, env)
    stored = index.get("acme", "sku1")
    assert stored is not None and stored["kind"] == "product" and stored["category"] == "shoes"
    assert stored["space_id"] == embedder.space_id and stored["source_version"] == "1"

    dead = consume(env.stack, env.topics.name("dead_letters"), 5)
    reasons = sorted(dict(m.headers())["crossroute.error.reason"].decode() for m in dead)
    assert reasons == [
        "bad_input", "invalid_event", "invalid_event", "unexpected_event", "unknown_tenant"
    ]  # fmt: skip
    junk = next(m for m in dead if m.value() == b"\x00 not json")
    headers = dict(junk.headers())
    assert headers["trace-id"] == b"t-42"  # the original headers travel with the dead letter
    assert headers["crossroute.source.topic"].decode() == env.topics.name("articles")
    assert int(headers["crossroute.source.offset"]) >= 0
    assert index.get("acme", "sku3") is None and index.get("globex", "x1") is None
    assert index.get("acme", "sku8") is None  # a product on the tickets topic is not indexed

    env.publisher.publish([ProductDeleted(source_version=2, tenant_id="acme", id="sku2")])
    wait_for(lambda: index.get("acme", "sku2") is None, "the delete", 60, env)

    ticket = TicketCreated(
        ticket=Ticket(
            id="t1",
            tenant="acme",
            text="my payment did not go through",
            screenshot=ImageRef(data=screenshot("Payment failed: gateway timeout")),
        )
    )
    env.publisher.publish([ticket])
    (msg,) = consume(env.stack, env.topics.name("decisions"), 1, timeout=120)
    decided = decode_event(msg.value())
    assert isinstance(decided, RoutingDecided) and msg.key() == b"acme/t1"
    assert decided.decision.space_id == embedder.space_id
    assert decided.decision.targets[0].doc_id == "wp1"
    assert "screenshot_text" in decided.decision.targets[0].evidence

    # observability: the metrics saw all of it, the logs are one JSON object per line
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(
            httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        )
        for s in family.samples
    }  # fmt: skip

    def metric(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert metric("crossroute_events_in_total", topic=env.topics.name("articles")) == 12
    assert metric("crossroute_events_in_total", topic=env.topics.name("tickets")) == 2
    assert metric("crossroute_events_out_total", topic=env.topics.name("decisions")) == 1
    assert metric("crossroute_dead_letters_total", reason="invalid_event") == 2
    assert metric("crossroute_freshness_seconds_count") == len(good)
    assert metric("crossroute_embed_seconds_count") >= 1
    assert metric("crossroute_upsert_seconds_count") >= 2  # upserts, then the delete
    lags = [v for (n, _), v in samples.items() if n == "crossroute_consumer_lag"]
    assert lags and all(v == 0 for v in lags), lags
    records = [json.loads(line) for line in env.log().splitlines() if line.startswith("{")]
    batches = [r for r in records if r.get("event") == "batch"]
    assert sum(r["indexed"] for r in batches) == len(good)
    assert sum(r["dead_lettered"] for r in batches) == 5
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)


def test_kill_9_mid_stream_loses_and_duplicates_nothing(
    deployment: WorkerEnv, redis_client: redis.Redis, embedder: Any
) -> None:
    env = deployment
    first = env.start()
    n = 300
    env.publisher.publish(articles(n))
    index = env.index(redis_client, embedder)
    wait_for(lambda: index.exists() and index.count("acme") > 20, "the first batches", 180, env)
    first.send_signal(signal.SIGKILL)
    first.wait()
    indexed_before = index.count("acme")
    assert indexed_before < n, "the worker finished before it could be killed"
    env.publisher.publish(articles(50, version=2))  # updates while it is down
    env.start()

    def done() -> bool:
        updated = [index.get("acme", f"a{i}") for i in range(50)]
        return index.count("acme") == n and all(u and u["source_version"] == "2" for u in updated)

    wait_for(done, f"{n} documents and 50 updates after restart", 240, env)
    versions = [index.get("acme", f"a{i}") for i in range(n)]
    assert all(v is not None for v in versions)
    assert [v["source_version"] for v in versions[:50]] == ["2"] * 50  # type: ignore[index]
    assert all(v["source_version"] == "1" for v in versions[50:])  # type: ignore[index]
    assert index.count() == n  # no duplicates, nothing from elsewhere


def test_two_workers_split_the_partitions(
    deployment: WorkerEnv, redis_client: redis.Redis, embedder: Any
) -> None:
    env = deployment
    env.start()
    env.start()
    time.sleep(20)  # both join the group before the data arrives
    n = 200
    env.publisher.publish(articles(n))
    index = env.index(redis_client, embedder)
    wait_for(lambda: index.exists() and index.count("acme") == n, f"{n} documents", 240, env)
    assert all("batch of" in env.log(i) for i in range(2)), "one worker did all the work"


def test_demo_publishes_and_prints_the_decisions(deployment: WorkerEnv) -> None:
    from tests.unit.test_cli import run_cli

    env = deployment
    env.env["CROSSROUTE_WORKER__TENANTS"] = '["acme", "demo"]'
    del env.env["CROSSROUTE_ROUTING__THRESHOLD"]  # the product's own threshold, as users run it
    env.start()
    out = run_cli("demo", "--timeout", "240", env=env.env, timeout=300)
    # exit 0 means every ticket went where the demo expects it (a wrong one exits 1)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:] + env.log()[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("│ t-")]
    assert [r.split("│")[1].strip() for r in rows] == [
        "t-1",
        "t-2",
        "t-3",
        "t-4",
        "t-5",
        "t-6",
        "t-7",
    ]
    assert [r.split("│")[-2].strip() for r in rows] == ["✓"] * 7, out.stdout


def test_photo_tickets_through_kafka_route_as_the_offline_eval_does(
    deployment: WorkerEnv, redis_client: redis.Redis, embedder: Any
) -> None:
    """Real customer photos (photo-routing's dev split) sent as photo-only tickets through the
    broker and the worker reach their class as often as `crossroute eval` says (±0.02), and well
    above chance (0.1)."""
    from dataclasses import replace

    from models.eval.dataset import load_dataset
    from models.eval.run import evaluate
    from router.documents import corpus_document

    env = deployment
    data = load_dataset(require_shared_data() / "photo-routing")
    queries = sorted(data.queries, key=lambda q: q.id)[::3]  # 114 photos of every class
    offline = evaluate(replace(data, queries=tuple(queries)), embedder, latency_sample=0)
    env.start()
    docs = [corpus_document(row, "acme") for row in data.corpus]
    env.publisher.publish([ArticleUpserted.of(d, source_version=1) for d in docs])
    index = env.index(redis_client, embedder)
    wait_for(lambda: index.exists() and index.count("acme") == len(docs), "the articles", 240, env)
    tickets = [
        TicketCreated(
            ticket=Ticket(
                id=q.id[:128], tenant="acme",
                photo=ImageRef(data=(data.root / (q.image or "")).read_bytes()),
            )
        )
        for q in queries
    ]  # fmt: skip
    assert env.publisher.publish(tickets).failed == []
    got = consume(env.stack, env.topics.name("decisions"), len(tickets), timeout=300)
    decisions = {
        d.decision.ticket_id: d.decision for d in map(decode_event, (m.value() for m in got))
    }
    assert len(decisions) == len(tickets)
    hits = sum(decisions[q.id].targets[0].doc_id in data.qrels[q.id] for q in queries)
    online = hits / len(queries)
    assert online == pytest.approx(offline["metrics"]["recall@1"], abs=0.02), offline["metrics"]
    assert online >= 0.75


@pytest.mark.parametrize("service", ["redis", "kafka"])
def test_service_restart_mid_stream_loses_nothing(
    service: str, deployment: WorkerEnv, redis_client: redis.Redis, embedder: Any
) -> None:
    """Redis (or the broker) goes away mid-stream and comes back on the same data: the worker
    retries instead of committing or dying, and every event ends up indexed, once."""
    env = deployment
    if env.stack.redis_external if service == "redis" else env.stack.kafka_external:
        pytest.skip(f"{service} is external: the test cannot restart it")
    worker = env.start()
    n = 600  # enough that the stream is still being indexed when the service goes away
    env.publisher.publish(articles(n))
    index = env.index(redis_client, embedder)

    def tolerant(check: Callable[[], bool]) -> Callable[[], bool]:
        def run() -> bool:
            try:
                return check()
            except (redis.ConnectionError, redis.BusyLoadingError):
                return False

        return run

    wait_for(
        tolerant(lambda: index.exists() and index.count("acme") > 20), "first batches", 180, env
    )
    assert index.count("acme") < n, "the worker finished before the restart: nothing to retry"

    def noticed() -> None:  # Redis stays down until the worker has tried to write, and retries
        wait_for(lambda: "redis unavailable" in env.log(), "the worker to notice", 120, env)

    env.stack.restart(service, noticed if service == "redis" else None)  # type: ignore[arg-type]
    assert worker.poll() is None, f"the worker exited during the {service} restart:\n{env.log()}"
    # after the restart: updates of indexed entities and new ones
    env.publisher.publish([*articles(50, version=2), *articles(100, start=n)])
    total = n + 100

    def done() -> bool:
        updated = [index.get("acme", f"a{i}") for i in range(50)]
        return index.count("acme") == total and all(
            u and u["source_version"] == "2" for u in updated
        )

    wait_for(tolerant(done), f"{total} documents and 50 updates after the restart", 300, env)
    assert worker.poll() is None, "the worker did not survive"
    keys = list(redis_client.scan_iter(f"{index.prefix}acme:*", count=1000))
    assert len(keys) == total  # one document per entity, nothing else


def test_feedback_closes_the_loop(
    deployment: WorkerEnv, redis_client: redis.Redis, embedder: Any
) -> None:
    """A ticket nothing matches goes to a human, who resolves it with an article: the next ticket
    like it is routed there automatically, through the resolved ticket's exemplar, until the first
    ticket is reopened. An escalated ticket sends the next one like it to a human although its
    article scores above the threshold. Feedback about a ticket the tenant never had (unknown, or
    another tenant's) and about a document it does not have is dead-lettered with its reason."""
    env = deployment
    metrics_port = free_port()
    env.env["CROSSROUTE_WORKER__METRICS_PORT"] = str(metrics_port)
    env.env["CROSSROUTE_WORKER__TENANTS"] = '["acme", "globex"]'
    env.start()
    env.publisher.publish(
        [
            ArticleUpserted.of(Article(id=k, tenant="acme", title=t, body=b), source_version=1)
            for k, (t, b) in ARTICLES.items()
        ]
    )
    index = env.index(redis_client, embedder)
    wait_for(lambda: index.exists() and index.count("acme") == len(ARTICLES), "articles", 180, env)
    decisions = Decisions(env)
    space = embedder.space_id

    def route(ticket_id: str, text: str) -> RoutingDecision:
        env.publisher.publish(
            [TicketCreated(ticket=Ticket(id=ticket_id, tenant="acme", text=text))]
        )
        return decisions.of("acme", ticket_id)

    def feedback(
        action: Any, ticket_id: str, doc_id: str | None = None, tenant: str = "acme"
    ) -> None:
        event = FeedbackRecorded(
            tenant_id=tenant, ticket_id=ticket_id, space_id=space, action=action, doc_id=doc_id
        )
        assert env.publisher.publish([event]).failed == []

    try:
        first = route("t1", "which planets in the solar system have rings?")
        assert first.queue == "human" and first.targets[0].score < first.threshold
        feedback("resolved", "t1", "track-order")
        feedback("clicked", "t1", "track-order")
        feedback("resolved", "t-never", "track-order")  # never routed
        feedback("resolved", "t1", "track-order", tenant="globex")  # acme's ticket, not globex's
        feedback("resolved", "t1", "no-such-article")
        wait_for(lambda: index.get("acme", "fb-t1") is not None, "the exemplar of t1", 60, env)
        exemplar = index.get("acme", "fb-t1")
        assert exemplar is not None and exemplar["parent"] == "track-order"

        second = route("t2", "which planets of the solar system have rings?")
        assert second.queue == "auto"
        assert second.targets[0].doc_id == "track-order"
        assert second.targets[0].exemplar_id == "fb-t1"

        feedback("reopened", "t1")
        wait_for(lambda: index.get("acme", "fb-t1") is None, "the exemplar taken back", 60, env)
        third = route("t3", "which planets in our solar system have rings?")
        assert third.queue == "human" and all(t.exemplar_id is None for t in third.targets)

        fourth = route("t4", "I forgot my password and cannot log in")
        assert fourth.queue == "auto" and fourth.targets[0].doc_id == "reset-password"
        feedback("escalated", "t4")
        wait_for(lambda: index.get("acme", "fb-t4") is not None, "the escalation of t4", 60, env)
        fifth = route("t5", "I forgot my password and I cannot log in")
        assert fifth.queue == "human"  # although its article scores above the threshold:
        assert fifth.targets[0].doc_id == "reset-password"
        assert fifth.targets[0].score >= fifth.threshold
    finally:
        decisions.close()

    dead = consume(env.stack, env.topics.name("dead_letters"), 3)
    got = sorted(
        (m.key().decode(), dict(m.headers())["crossroute.error.reason"].decode()) for m in dead
    )
    assert got == [
        ("acme/t-never", "unknown_ticket"), ("acme/t1", "unknown_document"),
        ("globex/t1", "unknown_ticket"),
    ]  # fmt: skip
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(
            httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        )
        for s in family.samples
        if s.name == "crossroute_feedback_total"
    }  # fmt: skip
    assert {tuple(dict(k[1]).values()): v for k, v in samples.items()} == {
        ("resolved", "indexed"): 1, ("clicked", "counted"): 1, ("reopened", "deleted"): 1,
        ("escalated", "indexed"): 1, ("resolved", "unknown_ticket"): 2,
        ("resolved", "unknown_document"): 1,
    }  # fmt: skip
