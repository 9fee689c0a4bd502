"""Routing reads Redis in few round trips, and that changes no decision: ``Router.decide`` (the KNN
reply carries the hits' vectors; one batch reads the targets reached through exemplars and the
exemplars of every candidate) against the decision rule computed here the long way, one read at a
time (KNN, then a HGET per hit vector, a HGETALL per exemplar's target, the targets' vectors, the
exemplars), on a real index with resolved, escalated and orphaned exemplars and a photo catalog."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pytest
import redis

from models.embedder import Embedder
from models.eval.decision import prototypes
from router.documents import Indexer
from router.index import HUMAN_QUEUE_PARENT, Filters, Hit
from router.routing import EXEMPLAR_FANOUT, TARGET_KINDS, ProductMatch, Router, TicketVectors
from router.schemas import Exemplar, ImageRef, Product, RoutedTarget, Ticket
from tests.integration.router.conftest import drawn

TEXTS = [
    "I forgot my password and cannot log in",
    "the courier left a card but nobody rang the bell",
    "parcel says delivered, it is not",
    "my card was declined at checkout",
    "It broke after three weeks. Is this covered?",
    "the screen of my laptop flickers",
    "the sole of my shoe came off",
    "how do I merge two git branches",
]


@pytest.fixture
def busy(router: Router, embedder: Embedder) -> Router:
    """The fixture index plus exemplars (resolved, escalated, one whose target never existed, one
    of a target deleted since) and catalog products with photos."""
    indexer = Indexer(embedder, router.index)
    exemplars = [
        Exemplar(id="ex-1", tenant="acme", text=TEXTS[1], target_id="acme-track-order"),
        Exemplar(id="ex-2", tenant="acme", text=TEXTS[2], target_id="acme-track-order"),
        Exemplar(id="ex-3", tenant="acme", text="the payment page timed out", target_id="acme-payment-failed"),
        Exemplar(id="ex-4", tenant="acme", text="my boots split at the toe",
                 target_id="acme-shoe-warranty", target_kind="warranty_policy"),
        Exemplar(id="esc-1", tenant="acme", text="I want to talk to a person about my contract",
                 target_kind="human"),
        Exemplar(id="esc-2", tenant="acme", text="my card was declined and I am furious",
                 target_kind="human"),
        Exemplar(id="orphan-1", tenant="acme", text="how do I merge two git branches?",
                 target_id="acme-never-existed"),
        Exemplar(id="orphan-2", tenant="acme", text="reset link never arrives",
                 target_id="acme-reset-password"),
        Exemplar(id="ex-g", tenant="globex", text=TEXTS[1], target_id="globex-track-order"),
    ]  # fmt: skip
    products = [
        Product(id="sku-boot", tenant="acme", title="Brown leather boot", category="shoes",
                image=ImageRef(data=drawn("shoes", (120, 72, 40)))),
        Product(id="sku-laptop", tenant="acme", title="14-inch laptop", category="laptops",
                image=ImageRef(data=drawn("laptops", (150, 150, 155)))),
    ]  # fmt: skip
    entities: list[Any] = [*exemplars, *products]
    assert indexer.upsert(entities, [1] * len(entities)).failed == []
    indexer.delete([("acme", "acme-reset-password", 2)])  # orphan-2's target goes
    return router


def reference(router: Router, ticket: Ticket, tv: TicketVectors, k: int) -> dict[str, Any]:
    """The decision rule of :mod:`router.routing`, computed from separate reads."""
    index = router.index
    settings = router.settings

    def knn(query: np.ndarray, n: int, filters: Filters) -> list[Hit]:
        hits = index.knn(query, router.space_id, n, filters)
        stored = index.vectors(ticket.tenant, [h.id for h in hits])
        return [replace(h, vector=stored.get(h.id)) for h in hits]

    match = None
    photo = tv.vectors.get("photo")
    if photo is not None and settings.product_match is not None:
        product = Filters(tenant=ticket.tenant, kinds=("product",), locale=ticket.locale)
        top = index.knn(photo, router.space_id, 1, product)
        if top and top[0].score >= settings.product_match and top[0].categories:
            category = top[0].categories[0]
            if ticket.product_category in (None, category):
                match = ProductMatch(top[0].id, category, top[0].score)
    filters = Filters(
        tenant=ticket.tenant,
        kinds=(*TARGET_KINDS, "exemplar"),
        locale=ticket.locale,
        category=ticket.product_category or (match.category if match else None),
    )
    query = router.fuse(tv.vectors)
    hits = knn(query, min(k * EXEMPLAR_FANOUT, 1000), filters)
    out_of_scope = [h.score for h in hits if h.parent == HUMAN_QUEUE_PARENT]
    best: dict[str, Hit] = {}
    for hit in hits:
        if hit.parent != HUMAN_QUEUE_PARENT:
            best.setdefault(hit.target, hit)
    targets: list[RoutedTarget] = []
    for target, hit in best.items():
        kind: str = hit.kind
        if hit.parent is not None:
            doc = index.get(ticket.tenant, target)
            if doc is None or doc.get("kind") not in TARGET_KINDS:
                continue
            kind = doc["kind"]
        targets.append(router._target(hit, tv, kind))
    if settings.exemplar_rule == "prototype":
        ids = [t.doc_id for t in targets]
        own = index.vectors(ticket.tenant, ids)
        exemplars = index.exemplars_of(filters, ids)
        if exemplars:
            position = {doc_id: i for i, doc_id in enumerate(ids)}
            zero = np.zeros(router.embedder.dim, np.float32)
            docs = np.stack([own.get(i, zero) for i in ids])
            owner = np.array([position[parent] for parent, _ in exemplars])
            scores = prototypes(docs, np.stack([v for _, v in exemplars]), owner) @ query
            targets = sorted(
                (
                    t.model_copy(update={"score": round(float(s), 6)})
                    for t, s in zip(targets, scores, strict=True)
                ),
                key=lambda t: -t.score,
            )
    best_target = targets[0].score if targets else -math.inf
    if match is not None:
        written_for = replace(filters, kinds=TARGET_KINDS, category_only=True)
        targets = router._through_catalog(targets, knn(query, k, written_for), tv, match)
        best_target = max(best_target, targets[0].score) if targets else best_target
    targets = targets[:k]
    top_score = targets[0].score if targets else -1.0
    queue: Literal["auto", "human"] = "auto" if top_score >= router.threshold else "human"
    if settings.human_exemplars and out_of_scope and max(out_of_scope) > best_target:
        queue = "human"
    return {"queue": queue, "targets": [t.model_dump() for t in targets]}


class RoundTrips:
    """Counts the commands and pipelines a client sends (each one round trip to Redis)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        command = redis.Redis.execute_command
        execute = redis.client.Pipeline.execute

        def counted_command(client: redis.Redis, *args: Any, **options: Any) -> Any:
            self.count += 1
            return command(client, *args, **options)

        def counted_execute(pipe: redis.client.Pipeline, *args: Any, **options: Any) -> Any:
            self.count += bool(pipe.command_stack)
            return execute(pipe, *args, **options)

        monkeypatch.setattr(redis.Redis, "execute_command", counted_command)
        monkeypatch.setattr(redis.client.Pipeline, "execute", counted_execute)


@pytest.mark.parametrize("rule", ["prototype", "max"])
def test_decide_matches_the_rule_read_piece_by_piece(busy: Router, rule: str) -> None:
    router = Router(
        busy.embedder, busy.index, busy.settings.model_copy(update={"exemplar_rule": rule})
    )
    photos = {
        "boot": drawn("shoes", (120, 72, 40), customer=True),
        "laptop": drawn("laptops", (150, 150, 155), customer=True),
    }
    tickets = [Ticket(id=f"t{i}", tenant="acme", text=t) for i, t in enumerate(TEXTS)]
    tickets += [Ticket(id="g1", tenant="globex", text=TEXTS[1])]
    tickets += [
        Ticket(id=f"p-{name}-{c}", tenant="acme", text=TEXTS[4], photo=ImageRef(data=photo),
               product_category=c)
        for name, photo in photos.items()
        for c in (None, "shoes")
    ]  # fmt: skip
    seen = {"catalog": 0, "exemplar": 0, "human": 0}
    for ticket in tickets:
        tv = router.embed_ticket(ticket)
        for k in (1, 3, 10):
            got = router.decide(ticket, tv, k=k)
            want = reference(router, ticket, tv, k)
            assert {"queue": got.queue, "targets": [t.model_dump() for t in got.targets]} == want
            seen["catalog"] += any(t.via_product for t in got.targets)
            seen["exemplar"] += any(t.exemplar_id for t in got.targets)
            seen["human"] += got.queue == "human"
    assert all(seen.values()), seen  # every path of the rule was taken


def test_a_text_ticket_is_decided_in_two_round_trips(
    busy: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The KNN with its vectors, then one batch: the targets reached through exemplars and the
    exemplars of every candidate (even when an orphaned exemplar drops its target); a photo that
    identifies a product adds its own search first."""
    texts = [TEXTS[1], TEXTS[0], "how do I merge two git branches?"]
    vectors = [
        busy.embed_ticket(Ticket(id=f"t{i}", tenant="acme", text=t)) for i, t in enumerate(texts)
    ]
    photo = ImageRef(data=drawn("shoes", (120, 72, 40), customer=True))
    shot = Ticket(id="p", tenant="acme", text=TEXTS[4], photo=photo)
    shot_vectors = busy.embed_ticket(shot)
    trips = RoundTrips(monkeypatch)
    for i, tv in enumerate(vectors):
        before = trips.count
        d = busy.decide(Ticket(id=f"t{i}", tenant="acme", text=texts[i]), tv)
        assert trips.count - before == 2, texts[i]
        assert d.targets
    before = trips.count
    d = busy.decide(shot, shot_vectors)
    assert d.targets[0].via_product == "sku-boot"
    assert trips.count - before == 3
