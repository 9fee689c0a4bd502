"""The worker's memory stays bounded when Redis stalls (issue #21, item 6), measured on the real
services: the worker indexes a few articles, Redis then refuses to serve writes for ``PAUSE_S``
(``CLIENT PAUSE … WRITE``) while a backlog of ``BACKLOG`` articles of ``BODY_BYTES`` each is
published (about 140 MB); the worker's resident memory is sampled throughout. With faust's own
stream buffer (4096 events per agent) the worker takes in what it can hold; with crossroute's
``CROSSROUTE_WORKER__BUFFER_EVENTS`` (256) the consumer pauses its partitions instead, and memory
stays near its baseline. After Redis resumes, every event is indexed: backpressure loses nothing.

Set ``CROSSROUTE_BACKPRESSURE_JSON`` to write the table (bench/backpressure.json,
docs/reliability.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer

from streams.events import ArticleUpserted, ProductUpserted, encode_event
from tests.integration.conftest import report_rows
from tests.integration.streams.test_fuzz import dead_letters
from tests.integration.streams.test_worker import WorkerEnv, wait_for
from tests.integration.streams.test_worker import deployment as deployment  # the fixture

BACKLOG = 1600
BODY_BYTES = 90_000
PAUSE_S = 45
WARM = 48
ROWS: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def table() -> Iterator[None]:
    yield
    cols = ("buffer_events", "published", "payload_mb", "baseline_rss_mb", "peak_rss_mb",
            "growth_mb", "indexed_after", "lost")  # fmt: skip
    meta = {"backlog": BACKLOG, "body_bytes": BODY_BYTES, "redis_paused_s": PAUSE_S}
    report_rows(ROWS, cols, "CROSSROUTE_BACKPRESSURE_JSON", meta)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def backlog(start: int, n: int, prefix: str = "b") -> list[ArticleUpserted]:
    filler = ("warranty claim for a cracked screen " * (BODY_BYTES // 36 + 1))[:BODY_BYTES]
    return [
        ArticleUpserted.model_validate({"source_version": 1, "article": {
            "id": f"{prefix}{i}", "tenant": "acme", "title": f"Backlog {i}",
            "body": f"{i} {filler}"}})
        for i in range(start, start + n)
    ]  # fmt: skip


@pytest.mark.parametrize("buffer_events", [4096, 256], ids=["faust-default-4096", "bounded-256"])
def test_memory_stays_bounded_while_redis_stalls(
    buffer_events: int, deployment: WorkerEnv, redis_client: redis.Redis, embedder: Any
) -> None:
    env = deployment
    env.env["CROSSROUTE_WORKER__BUFFER_EVENTS"] = str(buffer_events)
    proc = env.start()
    # warm up on events like the backlog's: the encoder's working memory for full-length batches
    # belongs to the baseline, not to the backlog
    assert env.publisher.publish(backlog(0, WARM, prefix="w")).failed == []
    index = env.index(redis_client, embedder)
    wait_for(lambda: index.exists() and index.count("acme") == WARM, "warm-up", 240, env)
    time.sleep(3)
    baseline = rss_mb(proc.pid)

    redis_client.execute_command("CLIENT", "PAUSE", str(PAUSE_S * 1000), "WRITE")
    paused_until = time.monotonic() + PAUSE_S
    peak = baseline
    published = 0
    try:
        while published < BACKLOG:
            assert env.publisher.publish(backlog(published, 200)).failed == []
            published += 200
            peak = max(peak, rss_mb(proc.pid))
        assert time.monotonic() < paused_until - 15, "publishing took most of the pause"
        while time.monotonic() < paused_until:
            peak = max(peak, rss_mb(proc.pid))
            time.sleep(0.25)
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    assert proc.poll() is None, env.log()[-3000:]

    wait_for(lambda: index.count("acme") == WARM + BACKLOG, "the backlog indexed", 900, env)
    ROWS.append({
        "buffer_events": buffer_events, "published": published,
        "payload_mb": round(published * BODY_BYTES / 2**20), "baseline_rss_mb": round(baseline),
        "peak_rss_mb": round(peak), "growth_mb": round(peak - baseline),
        "indexed_after": index.count("acme") - WARM,
        "lost": published - (index.count("acme") - WARM),
    })  # fmt: skip
    # the bound: what the buffer may hold (x3 for Python's objects) and the client's fetch buffers
    bound = buffer_events * BODY_BYTES * 3 / 2**20 + 150
    assert peak - baseline < bound, ROWS[-1]
    if buffer_events <= 256:  # far below the published payload: the consumer paused, not buffered
        assert peak - baseline < published * BODY_BYTES / 2**20 / 3, ROWS[-1]


def test_a_record_larger_than_the_fetch_size_still_arrives(deployment: WorkerEnv,
                                                           redis_client: redis.Redis,
                                                           embedder: Any) -> None:  # fmt: skip
    """The worker asks each partition for FETCH_PARTITION_BYTES (1 MiB) at a time; a record of
    several MiB still arrives whole (the broker returns a first batch larger than asked) and the
    partition goes on: here a 3 MiB undecodable value on the products topic (an image topic, whose
    records may be 16 MiB) is dead-lettered and the products behind it on the same partition are
    indexed."""
    env = deployment
    env.start()
    big = b"\xff" * (3 * 2**20)
    producer = Producer(env.stack.kafka_config(**{"message.max.bytes": 8 * 2**20}))
    errors: list[Any] = []
    topic = env.topics.name("products")
    producer.produce(topic, big, b"k", partition=0,
                     on_delivery=lambda err, _: err and errors.append(err))  # fmt: skip
    for i in range(3):
        event = ProductUpserted.model_validate({"source_version": 1, "product": {
            "id": f"after{i}", "tenant": "acme", "title": f"Black running shoe {i}", "category": "shoes"}})  # fmt: skip
        producer.produce(topic, encode_event(event), event.key, partition=0)
    assert producer.flush(60) == 0 and errors == []
    index = env.index(redis_client, embedder)
    wait_for(lambda: index.exists() and index.count("acme") == 3, "the articles behind", 240, env)
    (letter,) = dead_letters(env, 1, timeout=60)
    assert len(letter.value()) == len(big)  # intact, for a human to inspect
