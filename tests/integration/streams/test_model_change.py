"""A model change on the real broker and Redis, as an operator runs it (docs/operations.md):

space A (the untrained bundle) serves; ``crossroute reindex`` builds space B (the default bundle)
from the compacted topics while entity events keep arriving; ``crossroute gate`` says go, and no-go
when one slice is degraded on purpose; ``crossroute promote --canary 20%`` sends exactly the
tickets whose id hashes into the share to B, through the worker and the API, which follow without a
restart; outcome counts are joined per space; ``promote`` completes the flip and ``rollback``
returns in one step. Two reindexes of the same topics with the same bundle give the same digest.
A gate on a corrupt bundle, an empty eval dataset or an index of another space fails in one line
and changes nothing that serves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from models.embedder import Embedder
from models.eval.dataset import load_dataset
from router.auth import KeyStore
from router.deploy import Deployments, canary_bucket
from router.documents import corpus_document, document_inputs, entity_id
from router.index import VectorIndex
from router.schemas import Article, Ticket
from streams.devstack import DevStack
from streams.events import ArticleDeleted, ArticleUpserted, FeedbackRecorded, TicketCreated
from tests.conftest import REPO, require_shared_data
from tests.integration.conftest import free_port
from tests.integration.streams.test_worker import Decisions, WorkerEnv, stop_processes, wait_for

TENANT = "acme"
# Long end-to-end runs (two bundles loaded by several processes, a replay, gates): their own limit
# over the suite's 300 s, so a slow shared machine does not fail them half-way.
pytestmark = pytest.mark.timeout(900)


class Operator:
    """The commands an operator runs, against one isolated deployment."""

    def __init__(self, env: WorkerEnv) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *map(str, args)],
            env=self.env.env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def start(self, name: str, *args: str | Path) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.env.tmp / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", *map(str, args)],
                env=self.env.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(proc)
        return proc, log

    def stop(self) -> None:
        stop_processes(self.procs)


@pytest.fixture
def ops(dev_stack: DevStack, naive_bundle: Path, tmp_path: Path) -> Iterator[Operator]:
    env = WorkerEnv(dev_stack, naive_bundle, tmp_path)
    env.env["CROSSROUTE_WORKER__TENANTS"] = json.dumps([TENANT])
    env.env["CROSSROUTE_ROUTING__DEPLOYMENT_POLL_S"] = "0.5"
    operator = Operator(env)
    yield operator
    operator.stop()
    env.stop()


def corpus_events(root: Path) -> list[ArticleUpserted]:
    data = load_dataset(root)
    events = []
    for doc in data.corpus:
        article = corpus_document(doc, TENANT)
        assert isinstance(article, Article)
        events.append(ArticleUpserted.of(article, source_version=1))
    return events


def wait_log(log: Path, text: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {text!r} in {log.name}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)


def test_reindex_gate_canary_promote_rollback(
    ops: Operator,
    redis_client: redis.Redis,
    naive_bundle: Path,
    default_bundle: Path,
    naive_embedder: Embedder,
    embedder: Embedder,
) -> None:
    env = ops.env
    stackfaq = require_shared_data() / "stackfaq"
    data = load_dataset(stackfaq)
    metrics_port, api_port = free_port(), free_port()
    env.env["CROSSROUTE_WORKER__METRICS_PORT"] = str(metrics_port)
    env.env["CROSSROUTE_API__PORT"] = str(api_port)
    a_space, b_space = naive_embedder.space_id, embedder.space_id
    deployments = Deployments(redis_client, env.index_settings)

    # -- space A serves --------------------------------------------------------------------------
    worker = env.start()
    assert env.publisher.publish(corpus_events(stackfaq)).failed == []
    a = env.index(redis_client, naive_embedder)
    wait_for(lambda: a.exists() and a.count(TENANT) == len(data.corpus), "space A", 300, env)
    assert deployments.state().live == a_space

    # -- reindex into space B while entity events keep arriving ----------------------------------
    reindex, reindex_log = ops.start("reindex", "reindex", "--model", default_bundle)
    extra = [
        Article(id=f"extra-{i}", tenant=TENANT, title=f"Extra {i}", body=f"Extra answer {i}")
        for i in range(40)
    ]

    def keep_publishing() -> None:
        for i, article in enumerate(extra):
            env.publisher.publish([ArticleUpserted.of(article, source_version=1)])
            if i % 8 == 7:  # and some go away again
                env.publisher.publish(
                    [ArticleDeleted(tenant_id=TENANT, id=article.id, source_version=2)]
                )
            time.sleep(0.1)

    publishing = threading.Thread(target=keep_publishing)
    publishing.start()
    wait_log(reindex_log, "caught up", 600, reindex)
    publishing.join()
    b = env.index(redis_client, embedder)
    expected = len(data.corpus) + len(extra) - len(extra) // 8
    for index in (a, b):  # none lost in either index, the candidate following after catching up
        wait_for(lambda i=index: i.count(TENANT) == expected, f"{index.name} complete", 300, env)
    assert a.entity_keys() == b.entity_keys()
    assert b.count_other_spaces() == 0
    # every vector of B was computed by B's bundle, none copied from A
    ident = entity_id(data.corpus[0].id)
    text = document_inputs(corpus_document(data.corpus[0], TENANT))[1] or ""
    mine = b.vectors(TENANT, [ident])[ident]
    assert float(mine @ embedder.embed_texts([text]).vectors[0]) > 0.9999
    theirs = a.vectors(TENANT, [ident])[ident]
    assert theirs.shape != mine.shape or float(theirs @ mine) < 0.99
    assert "lag" in reindex_log.read_text() and reindex.poll() is None  # still following

    # -- the gate: go ----------------------------------------------------------------------------
    gate_args = ("gate", "--candidate", default_bundle, "--baseline", naive_bundle,
                 "--eval", stackfaq, "--tenant", TENANT)  # fmt: skip
    go = ops.run(*gate_args, "--json", env.tmp / "go.json", "--report", env.tmp / "go.html")
    assert go.returncode == 0, go.stdout + go.stderr
    report = json.loads((env.tmp / "go.json").read_text())
    assert report["go"] is True and report["reasons"] == []
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["versioning"]["status"] == "pass"
    assert checks["versioning"]["details"]["expected"] == expected
    assert checks["latency"]["status"] == "pass" and checks["latency"]["details"]["tickets"] == 100
    assert checks["outcomes"]["status"] == "skip"  # no feedback yet: not judged
    assert "google_maps (15)" in " ".join(checks["coverage"]["reasons"])  # too small to judge
    slices = {s["slice"]: s for s in report["slices"]}
    assert slices["topic=dropbox"]["judged"] and not slices["topic=google_maps"]["judged"]
    assert "GO" in (env.tmp / "go.html").read_text()

    # -- the gate: no-go when one slice is degraded on purpose -----------------------------------
    dropbox = [entity_id(d.id) for d in data.corpus if d.attrs.get("topic") == "dropbox"]
    keys = [f"{b.prefix}{TENANT}:{d}" for d in dropbox]
    saved = [redis_client.hget(k, "vector") for k in keys]
    rng = np.random.default_rng(0)
    for key in keys:
        noise = rng.standard_normal(b.space.dim).astype(np.float32)
        redis_client.hset(key, "vector", (noise / np.linalg.norm(noise)).tobytes())
    nogo = ops.run(*gate_args, "--json", env.tmp / "nogo.json")
    assert nogo.returncode == 1, nogo.stdout + nogo.stderr
    report = json.loads((env.tmp / "nogo.json").read_text())
    failing = {r.split(" ")[2] for r in report["reasons"] if r.startswith("retrieval:")}
    assert "topic=dropbox" in failing and failing <= {"topic=dropbox", "all"}, report["reasons"]
    for row in report["slices"]:  # only that slice's mean dropped
        if row["judged"] and row["slice"] not in ("topic=dropbox", "all"):
            assert row["deltas"]["recall@10"] >= -0.03, row
    assert "NO-GO" in nogo.stdout and "topic=dropbox" in nogo.stdout
    for key, vector in zip(keys, saved, strict=True):
        assert vector is not None
        redis_client.hset(key, "vector", vector)

    # -- canary: 20 % of tickets by ticket-id hash, followed by worker and API -------------------
    _, token = KeyStore(redis_client, env.index_settings.namespace).create(
        TENANT, ["route"], rate_per_s=1000.0
    )
    key = {"Authorization": f"Bearer {token}"}
    api, api_log = ops.start("api", "api")
    wait_log(api_log, "following the deployment", 120, api)
    url = f"http://127.0.0.1:{api_port}"
    canary = ops.run("promote", "--model", default_bundle, "--canary", "20%")
    assert canary.returncode == 0, canary.stderr
    assert f"canary {b_space} at 20%" in canary.stdout
    revision = deployments.state().revision

    def followed(rev: int) -> bool:
        health = httpx.get(f"{url}/healthz", timeout=10).json()
        return health.get("revision") == rev and (f"serving deployment revision {rev}" in env.log())

    wait_for(lambda: followed(revision), "worker and API following the canary", 60, env)
    decisions = Decisions(env)
    queries = [q for q in data.queries if q.text][:150]
    try:
        env.publisher.publish(
            [TicketCreated(ticket=Ticket(id=f"k-{i}", tenant=TENANT, text=q.text or ""))
             for i, q in enumerate(queries)]
        )  # fmt: skip
        routed = {f"k-{i}": decisions.of(TENANT, f"k-{i}") for i in range(len(queries))}
        for ticket_id, decision in routed.items():
            want = b_space if canary_bucket(ticket_id) < 20 else a_space
            assert decision.space_id == want, ticket_id
        share = sum(d.space_id == b_space for d in routed.values()) / len(routed)
        assert abs(share - 0.20) <= 0.08, share
        for i, q in enumerate(queries[:40]):
            ticket = {"id": f"h-{i}", "tenant": TENANT, "text": q.text}
            response = httpx.post(
                f"{url}/v1/route", json={"ticket": ticket}, headers=key, timeout=30
            )
            assert response.status_code == 200, response.text
            space = response.json()["space_id"]
            assert space == response.headers["X-Crossroute-Space"]
            assert space == (b_space if canary_bucket(f"h-{i}") < 20 else a_space)

        # outcomes: feedback joined to the decision that caused it, counted per space
        resolved = list(routed.items())[:30]
        env.publisher.publish(
            [FeedbackRecorded(tenant_id=TENANT, ticket_id=t, space_id=d.space_id,
                              action="clicked") for t, d in resolved]
        )  # fmt: skip
        per_space = {s: sum(d.space_id == s for _, d in resolved) for s in (a_space, b_space)}

        def outcome(space: str, name: str) -> float:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name == "crossroute_outcome_tickets" and s.labels == {
                        "space_id": space, "outcome": name,
                    }:  # fmt: skip
                        return float(s.value)
            return 0.0

        wait_for(
            lambda: all(outcome(s, "clicked") == n for s, n in per_space.items()),
            "clicks counted per space", 60, env,
        )  # fmt: skip
        assert outcome(b_space, "decisions") == sum(d.space_id == b_space for d in routed.values())

        # -- promote, then roll back, each followed without a restart ----------------------------
        def served_by(prefix: str) -> set[str]:
            """The spaces that served 10 new tickets sent through Kafka and the worker."""
            env.publisher.publish(
                [TicketCreated(ticket=Ticket(id=f"{prefix}-{i}", tenant=TENANT, text="gmail filters"))
                 for i in range(10)]
            )  # fmt: skip
            return {decisions.of(TENANT, f"{prefix}-{i}").space_id for i in range(10)}

        promoted = ops.run("promote")
        assert promoted.returncode == 0 and f"live {b_space}" in promoted.stdout, promoted.stderr
        wait_for(lambda: followed(revision + 1), "the promotion followed", 60, env)
        assert served_by("p") == {b_space}
        back = ops.run("rollback")
        assert back.returncode == 0 and f"live {a_space}" in back.stdout, back.stderr
        wait_for(lambda: followed(revision + 2), "the rollback followed", 60, env)
        assert served_by("r") == {a_space}
        response = httpx.post(
            f"{url}/v1/route", json={"ticket": {"id": "z", "tenant": TENANT, "text": "x y"}},
            headers=key,
        )  # fmt: skip
        assert response.json()["space_id"] == a_space
    finally:
        decisions.close()
    assert a.exists() and b.exists()  # the index rolled back from is kept
    state = deployments.state()
    assert (state.live, state.previous, state.canary) == (a_space, b_space, None)
    assert worker.poll() is None  # one worker process throughout: no restart


def test_two_reindexes_of_the_same_topics_give_the_same_digest_and_bad_gates_change_nothing(
    ops: Operator,
    redis_client: redis.Redis,
    naive_bundle: Path,
    default_bundle: Path,
    embedder: Embedder,
) -> None:
    env = ops.env
    stackfaq = require_shared_data() / "stackfaq"
    topics = ops.run("topics", "ensure")
    assert topics.returncode == 0, topics.stderr
    events: list[Any] = corpus_events(stackfaq)
    events += [ArticleDeleted(tenant_id=TENANT, id=events[0].article.id, source_version=2)]
    assert env.publisher.publish(events).failed == []

    first = ops.run("reindex", "--model", default_bundle, "--until-caught-up")
    assert first.returncode == 0, first.stderr
    assert "caught up" in first.stderr
    digest = ops.run("index", "digest", "--index", env.index(redis_client, embedder).name)
    assert digest.returncode == 0, digest.stderr
    again = ops.run("reindex", "--model", default_bundle, "--until-caught-up")  # nothing new
    assert again.returncode == 0 and "0 indexed" in again.stdout, again.stdout
    rebuilt = ops.run("reindex", "--model", default_bundle, "--until-caught-up", "--from-scratch")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"{len(events) - 2} documents" in rebuilt.stdout, rebuilt.stdout
    digest2 = ops.run("index", "digest", "--index", env.index(redis_client, embedder).name)
    assert digest2.stdout.split()[0] == digest.stdout.split()[0]
    assert len(digest.stdout.split()[0]) == 64

    # bad gates: one error line, non-zero exit, nothing that serves changed
    deployments = Deployments(redis_client, env.index_settings)
    index = env.index(redis_client, embedder)
    before = (deployments.state(), index.digest())
    corrupt = env.tmp / "corrupt"
    shutil.copytree(default_bundle, corrupt)
    target = next(p for p in sorted(corrupt.rglob("*.onnx")))
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    empty = env.tmp / "empty"
    empty.mkdir()
    (empty / "corpus.jsonl").write_text("")
    (empty / "queries.jsonl").write_text("")
    (empty / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n")
    base = ("gate", "--baseline", naive_bundle, "--tenant", TENANT, "--no-topics")
    cases = {
        "sha256": (*base, "--candidate", corrupt, "--eval", stackfaq),
        "no in-scope queries": (*base, "--candidate", default_bundle, "--eval", empty),
        "space": (*base, "--candidate", naive_bundle, "--candidate-index", index.name,
                  "--eval", stackfaq),
    }  # fmt: skip
    for expected, args in cases.items():
        result = ops.run(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, (expected, result.stdout)  # bad input, not a no-go (1)
        assert len(lines) == 1 and lines[0].startswith("error:"), (expected, result.stderr)
        assert expected in lines[0], (expected, lines[0])
    assert (deployments.state(), index.digest()) == before
    assert isinstance(VectorIndex.open(redis_client, index.name, env.index_settings), VectorIndex)
