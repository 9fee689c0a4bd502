"""Deployments on the real Redis: promotion, canary, rollback and their refusals; serving processes
that follow them without a restart (two real bundles, two spaces); outcome counts per space that
replays do not inflate; the index digest."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from models.embedder import Embedder
from models.settings import ModelSettings
from router.deploy import Deployments, canary_bucket
from router.documents import Indexer
from router.exceptions import DeploymentError
from router.index import VectorIndex
from router.outcomes import OutcomeCollector, Outcomes
from router.schemas import Article, Ticket
from router.serving import Serving, router_loader
from router.settings import IndexSettings, RoutingSettings
from tests.integration.router.conftest import ARTICLES


@pytest.fixture
def settings() -> IndexSettings:
    return IndexSettings(namespace=f"d{uuid.uuid4().hex[:10]}")


@pytest.fixture
def two_spaces(
    redis_client: redis.Redis,
    settings: IndexSettings,
    embedder: Embedder,
    naive_embedder: Embedder,
) -> Iterator[tuple[Deployments, VectorIndex, VectorIndex]]:
    """Space A (naive) and space B (default), each with its own index of the same articles,
    registered."""
    deployments = Deployments(redis_client, settings)
    made = []
    for emb in (naive_embedder, embedder):
        index = VectorIndex.for_manifest(redis_client, emb.manifest, settings)
        index.create()
        docs = [Article(id=k, tenant="acme", title=t, body=b) for k, (t, b) in ARTICLES.items()]
        assert Indexer(emb, index).upsert(docs, [1] * len(docs)).failed == []
        deployments.register(emb.space_id, emb.bundle_dir, index.name)
        made.append(index)
    yield deployments, made[0], made[1]
    for index in made:
        index.drop()
    redis_client.delete(deployments.state_key, deployments.spaces_key)


def alias_target(client: redis.Redis, deployments: Deployments) -> str:
    info = client.ft(deployments.alias).info()
    name = info["index_name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def following(deployments: Deployments, live: VectorIndex, tmp: Path) -> Serving:
    """``live`` promoted, and a Serving of the real bundles following the record."""
    deployments.promote(live.space_id)
    routing = RoutingSettings(threshold=0.2, calibration_dir=tmp)
    client, settings = deployments.client, deployments.settings
    load = router_loader(client, ModelSettings(providers="cpu"), settings, routing)
    return Serving.following(deployments, load, poll_s=0.05)


def test_promote_canary_rollback_and_refusals(
    redis_client: redis.Redis, two_spaces: tuple[Deployments, VectorIndex, VectorIndex]
) -> None:
    deployments, a, b = two_spaces
    with pytest.raises(DeploymentError, match="nothing is live"):
        deployments.start_canary(b.space_id, 5)
    with pytest.raises(DeploymentError, match="nothing to roll back"):
        deployments.rollback()
    with pytest.raises(DeploymentError, match="not registered"):
        deployments.promote("sp-00000000000000000000")

    state = deployments.promote(a.space_id)
    assert (state.live, state.previous, state.canary) == (a.space_id, None, None)
    assert alias_target(redis_client, deployments) == a.name

    with pytest.raises(DeploymentError, match="is live already"):
        deployments.start_canary(a.space_id, 5)
    state = deployments.start_canary(b.space_id, 5)
    assert (state.live, state.canary, state.canary_percent) == (a.space_id, b.space_id, 5.0)
    assert alias_target(redis_client, deployments) == a.name  # a canary does not move the alias
    with pytest.raises(DeploymentError, match="is the canary"):
        deployments.forget(b.space_id)

    state = deployments.promote()  # the canary becomes live
    assert (state.live, state.previous, state.canary) == (b.space_id, a.space_id, None)
    assert alias_target(redis_client, deployments) == b.name

    state = deployments.rollback()
    assert (state.live, state.previous) == (a.space_id, b.space_id)
    assert alias_target(redis_client, deployments) == a.name
    assert a.exists() and b.exists()  # nothing is dropped by a flip
    assert state.revision == 4

    # a space whose index is gone cannot be promoted; the state stays as it was
    b.drop()
    with pytest.raises(DeploymentError, match="has no index"):
        deployments.promote(b.space_id)
    assert deployments.state() == state
    with pytest.raises(DeploymentError, match="is live"):
        deployments.forget(a.space_id)
    deployments.forget(b.space_id)  # the rollback target, dropped explicitly: no rollback now
    assert deployments.state().previous is None and b.space_id not in deployments.spaces()
    with pytest.raises(DeploymentError, match="nothing to roll back"):
        deployments.rollback()


def test_concurrent_changes_are_serialised(
    two_spaces: tuple[Deployments, VectorIndex, VectorIndex],
) -> None:
    deployments, a, b = two_spaces
    deployments.promote(a.space_id)
    errors: list[BaseException] = []

    def flip(n: int) -> None:
        try:
            for i in range(n):
                deployments.start_canary(b.space_id, 1 + i % 50)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=flip, args=(20,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert deployments.state().revision == 1 + 4 * 20  # no change lost to a race


def test_serving_follows_the_deployment_without_a_restart(
    redis_client: redis.Redis,
    settings: IndexSettings,
    two_spaces: tuple[Deployments, VectorIndex, VectorIndex],
    tmp_path: Path,
) -> None:
    deployments, a, b = two_spaces
    serving = following(deployments, a, tmp_path)
    ids = [f"ticket-{i}" for i in range(400)]

    def spaces() -> dict[str, str]:
        return {
            i: serving.route(Ticket(id=i, tenant="acme", text="I forgot my password")).space_id
            for i in ids
        }

    assert set(spaces().values()) == {a.space_id}
    deployments.start_canary(b.space_id, 25)
    assert serving.refresh()
    served = spaces()
    expected = {i: (b.space_id if canary_bucket(i) < 25 else a.space_id) for i in ids}
    assert served == expected  # every ticket where its hash puts it, and nowhere else
    assert abs(sum(s == b.space_id for s in served.values()) / len(ids) - 0.25) < 0.06
    # each router answers with its own embedder on its own index
    for space, router in serving.routers().items():
        assert router.space_id == router.index.space_id == space

    deployments.promote()
    serving.start()  # the background poll picks it up
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while serving.deployment.live != b.space_id and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
        assert set(spaces().values()) == {b.space_id}
        deployments.rollback()
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while serving.deployment.live != a.space_id and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
        assert set(spaces().values()) == {a.space_id}
    finally:
        serving.stop()


def test_a_deployment_that_cannot_load_keeps_the_last_good_one(
    redis_client: redis.Redis,
    settings: IndexSettings,
    two_spaces: tuple[Deployments, VectorIndex, VectorIndex],
    tmp_path: Path,
) -> None:
    deployments, a, b = two_spaces
    serving = following(deployments, a, tmp_path)
    deployments.register(b.space_id, tmp_path / "no-such-bundle", b.name)
    deployments.start_canary(b.space_id, 50)
    assert not serving.refresh()  # logged; still serving A alone
    assert serving.deployment.live == a.space_id and serving.deployment.canary is None
    ticket = Ticket(id="x", tenant="acme", text="where is my parcel")
    assert serving.route(ticket).space_id == a.space_id


def test_outcomes_are_joined_by_ticket_and_counted_once(
    redis_client: redis.Redis, settings: IndexSettings
) -> None:
    outcomes = Outcomes(redis_client, settings.namespace, ttl_s=3600)
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    decisions = [
        ("acme", "t1", "sp-a", "auto", t0),
        ("acme", "t2", "sp-a", "human", t0),
        ("acme", "t3", "sp-b", "auto", t0),
    ]
    assert outcomes.record_decisions(decisions) == 3
    assert outcomes.record_decisions(decisions) == 0  # a replayed routing is not a new decision
    feedback = [
        ("acme", "t1", "resolved", t0 + timedelta(minutes=10)),
        ("acme", "t2", "escalated", t0 + timedelta(minutes=1)),
        ("acme", "t3", "clicked", t0 + timedelta(seconds=5)),
        ("globex", "t1", "resolved", t0),  # another tenant's ticket t1: no decision
    ]
    assert outcomes.record_feedback(feedback) == ["sp-a", "sp-a", "sp-b", ""]
    assert outcomes.record_feedback(feedback[:1]) == [None]  # replay: counted already
    a, b = outcomes.counts("sp-a"), outcomes.counts("sp-b")
    assert (a.decisions, a.auto, a.human, a.resolved, a.escalated) == (2, 1, 1, 1, 1)
    assert a.auto_route_rate == 0.5 and a.resolution_rate == 0.5 and a.escalation_rate == 0.5
    assert a.mean_time_to_resolution_s == 600.0
    assert (b.decisions, b.clicked, b.resolved) == (1, 1, 0) and b.resolution_rate == 0.0
    assert outcomes.spaces() == ["sp-a", "sp-b"]

    samples = {
        (m.name, tuple(sorted(s.labels.items()))): s.value
        for m in OutcomeCollector(outcomes).collect()
        for s in m.samples
    }
    assert (
        samples[("crossroute_outcome_rate", (("rate", "resolution"), ("space_id", "sp-a")))] == 0.5
    )
    assert (
        samples[("crossroute_outcome_tickets", (("outcome", "clicked"), ("space_id", "sp-b")))] == 1
    )
    key = ("crossroute_outcome_time_to_resolution_seconds", (("space_id", "sp-a"),))
    assert samples[key] == 600.0


def test_the_digest_covers_vectors_and_metadata_not_write_times(
    redis_client: redis.Redis, settings: IndexSettings, naive_embedder: Embedder
) -> None:
    index = VectorIndex.for_manifest(redis_client, naive_embedder.manifest, settings)
    index.create()
    try:
        indexer = Indexer(naive_embedder, index)
        docs = [Article(id=k, tenant="acme", title=t, body=b) for k, (t, b) in ARTICLES.items()]
        indexer.upsert(docs, [1] * len(docs))
        first, n = index.digest()
        assert n == len(docs)
        indexer.upsert(list(reversed(docs)), [2] * len(docs))  # rewritten later, in another order
        second, _ = index.digest()
        assert second != first  # the source version is content
        index.drop()
        index.create()
        indexer = Indexer(naive_embedder, index)
        indexer.upsert(list(reversed(docs)), [2] * len(docs))
        assert index.digest()[0] == second  # same documents, written at another time: same digest
        title = f"{index.prefix}acme:{docs[0].id}"
        redis_client.hset(title, "title", "changed")
        assert index.digest()[0] != second
    finally:
        index.drop()


def test_what_the_gate_reads_of_an_index(index: VectorIndex, redis_client: redis.Redis) -> None:
    """Categories per tenant, presence of ids, the (tenant, id) keys that are not exemplars, and
    documents of another space (none, unless written behind the index's back)."""
    assert index.categories("acme") == ["_any", "laptops", "shoes"]
    assert index.present("acme", ["acme-track-order", "globex-track-order", "sku-1"]) == [
        True, False, True,
    ]  # fmt: skip
    keys = index.entity_keys()
    assert ("acme", "sku-1") in keys and len(keys) == index.count() == 11
    assert index.count_other_spaces() == 0
    redis_client.hset(f"{index.prefix}acme:sku-1", "space_id", "sp-other")
    assert index.count_other_spaces() == 1
