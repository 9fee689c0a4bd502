"""The fault matrix, measured on the real broker and Redis: under a steady load of article events, a
fault per row (worker ``kill -9`` three times, broker restart, Redis restart, Redis at ``maxmemory``
refusing writes, Redis paused, two workers rebalancing while one dies). For each: events published,
indexed, dead-lettered, lost (must be 0), duplicates in the index (must be 0), and the time from
the end of the fault until every event published before it is searchable.

Run with ``-s`` to see the table; ``CROSSROUTE_FAULTS_JSON=F`` also writes it as JSON
(docs/reliability.md)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from router.index import VectorIndex
from streams.events import ArticleUpserted
from tests.integration.conftest import report_rows
from tests.integration.streams.test_worker import WorkerEnv, consume, wait_for
from tests.integration.streams.test_worker import deployment as deployment  # the fixture

RATE = 20.0  # events/s: steady, well under what one worker indexes
ROWS: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def table() -> Iterator[None]:
    yield
    cols = ("fault", "published", "indexed", "dead_lettered", "lost", "duplicates", "recovery_s")
    report_rows(ROWS, cols, "CROSSROUTE_FAULTS_JSON", {"rate_per_s": RATE})


class Load:
    """Publishes article events at ``RATE``/s from a thread until stopped; what the broker
    acknowledged is ``published`` (failed sends are retried)."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env
        self.published: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            ids = [f"f{i + k}" for k in range(2)]
            events = [ArticleUpserted.model_validate({"source_version": 1, "article": {
                "id": e, "tenant": "acme", "title": f"Fault row {e}", "body": "steady load"}})
                for e in ids]  # fmt: skip
            while not self._stop.is_set():
                report = self.env.publisher.publish(events)
                if not report.failed:
                    self.published += ids
                    break
                time.sleep(1.0)  # the broker is down: retry the same events
            i += 2
            time.sleep(2 / RATE)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=120)
        return list(self.published)


def _present(client: redis.Redis, index: VectorIndex, ids: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for e in ids:
        pipe.exists(f"{index.prefix}acme:{e}")
    return sum(int(x) for x in pipe.execute())


def _tolerant(check: Callable[[], bool]) -> Callable[[], bool]:
    def run() -> bool:
        try:
            return check()
        except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
            return False

    return run


def _kill(proc: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


FAULTS = ["worker kill -9 x3", "broker restart", "redis restart", "redis maxmemory",
          "redis paused 8 s", "rebalance, one of two killed"]  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_loses_and_duplicates_nothing(
    fault: str, deployment: WorkerEnv, redis_client: redis.Redis, embedder: Any
) -> None:
    env = deployment
    if ("redis" in fault and env.stack.redis_external) or (
        "broker" in fault and env.stack.kafka_external
    ):
        pytest.skip("an external service: the test cannot put a fault on it")
    group = env.env["CROSSROUTE_WORKER__GROUP_ID"]
    workers = [env.start()]
    if fault.startswith("rebalance"):
        workers.append(env.start())
    for i in range(len(workers)):
        wait_for(lambda i=i: f"worker {group}:" in env.log(i), "the worker to start", 180, env)  # type: ignore[misc]
    if len(workers) == 2:
        time.sleep(10)  # both in the group before the load
    index = env.index(redis_client, embedder)
    load = Load(env)
    wait_for(_tolerant(lambda: index.exists() and index.count("acme") > 20), "load", 180, env)

    if fault == "worker kill -9 x3":
        for _ in range(3):
            _kill(workers.pop())
            time.sleep(1.0)
            workers.append(env.start())
            time.sleep(6.0)
    elif fault == "broker restart":
        env.stack.restart("kafka")
    elif fault == "redis restart":
        env.stack.restart("redis", lambda: time.sleep(3.0))
    elif fault == "redis maxmemory":
        config = redis_client.config_get("maxmemory*")
        try:
            redis_client.config_set("maxmemory-policy", "noeviction")
            redis_client.config_set("maxmemory", "1mb")  # far below use: every write refused
            wait_for(lambda: "OutOfMemoryError" in env.log(), "the worker to meet OOM", 60, env)
            time.sleep(5.0)
        finally:
            redis_client.config_set("maxmemory", config["maxmemory"])
            redis_client.config_set("maxmemory-policy", config["maxmemory-policy"])
    elif fault == "redis paused 8 s":
        redis_client.execute_command("CLIENT", "PAUSE", "8000", "WRITE")
        time.sleep(8.5)
    else:  # two workers share the partitions; one dies mid-stream, the other takes them over
        _kill(workers.pop(0))
    ended = time.monotonic()
    assert all(w.poll() is None for w in workers), env.log()[-3000:]
    before = list(load.published)
    wait_for(_tolerant(lambda: _present(redis_client, index, before) == len(before)),
             "everything published before the fault's end", 300, env)  # fmt: skip
    recovery = time.monotonic() - ended
    time.sleep(5.0)  # a little steady load after recovery
    published = load.stop()
    wait_for(_tolerant(lambda: _present(redis_client, index, published) == len(published)),
             "every event published", 300, env)  # fmt: skip
    indexed = _present(redis_client, index, published)
    keys = sum(1 for _ in redis_client.scan_iter(f"{index.prefix}acme:*", count=1000))
    dead = len(consume(env.stack, env.topics.name("dead_letters"), 10**6, timeout=5))
    row = {
        "fault": fault, "published": len(published), "indexed": indexed, "dead_lettered": dead,
        "lost": len(published) - indexed - dead, "duplicates": keys - len(set(published)),
        "recovery_s": round(recovery, 1),
    }  # fmt: skip
    ROWS.append(row)
    assert row["lost"] == 0 and row["duplicates"] == 0 and dead == 0, row
    assert all(w.poll() is None for w in workers), "a worker died"
