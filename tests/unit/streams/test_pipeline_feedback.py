"""Feedback through ``Pipeline`` with fakes at its seams: which exemplar each action writes or takes
back, at which version, what is dead-lettered (unknown ticket, another tenant's ticket, unknown
document), what is only counted, and that replayed and out-of-order feedback end where the latest
feedback says. The fake index keeps versions and tombstones the way the index's Lua scripts do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from router.documents import Entity, IndexOutcome
from router.index import WriteResult
from router.schemas import Exemplar, ImageRef, Ticket
from streams.events import FeedbackRecorded, TicketCreated
from tests.unit.streams.test_pipeline import FakeIndexer, World, header, make_world, raw

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
T0_MS = int(T0.timestamp()) * 1000


@dataclass
class VersionedIndexer(FakeIndexer):
    """A fake index that keeps what it holds: ``(tenant, id) → (version, entity)``, and tombstones,
    with the write rules of ``router.index`` (newer wins, same version is a no-op, a delete leaves a
    tombstone that refuses older upserts)."""

    docs: dict[tuple[str, str], tuple[int, Entity]] = field(default_factory=dict)
    tombs: dict[tuple[str, str], int] = field(default_factory=dict)

    def write(
        self, entities: Sequence[Entity], versions: Sequence[int], *more: Any
    ) -> IndexOutcome:
        outcome = super().write(entities, versions, *more)
        failed = {i for i, _ in outcome.failed}
        result = WriteResult()
        for i, (entity, version) in enumerate(zip(entities, versions, strict=True)):
            if i in failed:
                continue
            key = (entity.tenant, entity.id)
            current = self.docs.get(key)
            if self.tombs.get(key, -1) >= version or (current and current[0] > version):
                result.stale += 1
            elif current and current[0] == version:
                result.duplicates += 1
            else:
                self.docs[key] = (version, entity)
                self.tombs.pop(key, None)
                result.written += 1
        outcome.result = result
        return outcome

    def delete(self, refs: Sequence[tuple[str, str, int]]) -> WriteResult:
        super().delete(refs)
        result = WriteResult()
        for tenant, ident, version in refs:
            key = (tenant, ident)
            current = self.docs.get(key)
            if current and current[0] > version:
                result.stale += 1
            elif self.tombs.get(key, -1) >= version:
                result.missing += 1
            else:
                result.deleted += int(self.docs.pop(key, None) is not None)
                result.missing += int(current is None)
                self.tombs[key] = version
        return result

    def exemplar(self, ticket_id: str, tenant: str = "acme") -> Exemplar | None:
        stored = self.docs.get((tenant, f"fb-{ticket_id}"))
        assert stored is None or isinstance(stored[1], Exemplar)
        return None if stored is None else stored[1]  # type: ignore[return-value]


@pytest.fixture
def world() -> World:
    """Tenant acme has article ``kb-1`` and policy ``wp-1``, globex has ``kb-9``; acme's ticket
    ``t1`` was routed (so it is in the ticket log)."""
    indexer = VersionedIndexer(
        kinds={
            ("acme", "kb-1"): "article",
            ("acme", "wp-1"): "warranty_policy",
            ("acme", "sku-1"): "product",
            ("globex", "kb-9"): "article",
        }
    )
    world = make_world(indexer, tenants=("acme", "globex"))
    routed = world.pipeline.process([raw(ticket("t1", "my parcel never arrived", locale="fr"))])
    assert routed.routed == 1
    world.producer.sent.clear()
    return world


def ticket(ident: str, text: str, tenant: str = "acme", **kw: Any) -> TicketCreated:
    return TicketCreated(ticket=Ticket(id=ident, tenant=tenant, text=text, **kw))


def feedback(
    action: str, ticket_id: str = "t1", *, at: int = 0, doc_id: str | None = None, **kw: Any
) -> FeedbackRecorded:
    """A feedback ``at`` seconds after T0 (its version is T0_MS + 1000 * at)."""
    return FeedbackRecorded(
        tenant_id=kw.pop("tenant", "acme"), ticket_id=ticket_id, space_id="sp-test",
        action=action, doc_id=doc_id, occurred_at=T0 + timedelta(seconds=at), **kw,
    )  # fmt: skip


def index(world: World) -> VersionedIndexer:
    assert isinstance(world.indexer, VersionedIndexer)
    return world.indexer


def counted(world: World, action: str, outcome: str) -> float:
    labels = {"action": action, "outcome": outcome}
    value = world.pipeline.metrics.registry.get_sample_value("crossroute_feedback_total", labels)
    return value or 0.0


def reasons(world: World) -> list[bytes | str | None]:
    return [header(s, "crossroute.error.reason") for s in world.producer.to("dead_letters")]


# -- each action ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("doc_id", "kind"), [("kb-1", "article"), ("wp-1", "warranty_policy")])
def test_resolved_makes_the_ticket_an_exemplar_of_its_document(
    world: World, doc_id: str, kind: str
) -> None:
    result = world.pipeline.process([raw(feedback("resolved", doc_id=doc_id, at=5))])
    assert result.feedback == 1 and result.indexed == 1 and result.dead_lettered == 0
    assert index(world).writes == [[("fb-t1", T0_MS + 5000)]]  # versioned by occurred_at, in ms
    assert index(world).exemplar("t1") == Exemplar(
        id="fb-t1", tenant="acme", locale="fr", text="my parcel never arrived",
        target_id=doc_id, target_kind=kind,  # type: ignore[arg-type]
    )  # fmt: skip
    assert counted(world, "resolved", "indexed") == 1
    assert world.producer.sent == []  # nothing to publish


def test_escalated_makes_the_ticket_an_out_of_scope_exemplar(world: World) -> None:
    result = world.pipeline.process([raw(feedback("escalated"))])
    assert result.feedback == 1 and result.indexed == 1
    exemplar = index(world).exemplar("t1")
    assert exemplar is not None and exemplar.target_kind == "human"
    assert exemplar.target_id is None and exemplar.text == "my parcel never arrived"
    assert counted(world, "escalated", "indexed") == 1


@pytest.mark.parametrize("action", ["reopened", "wrong_article"])
def test_reopened_and_wrong_article_take_the_exemplar_back(world: World, action: str) -> None:
    world.pipeline.process([raw(feedback("resolved", doc_id="kb-1"))])
    result = world.pipeline.process([raw(feedback(action, at=60, doc_id="kb-1"))])
    assert result.deleted == 1 and result.feedback == 1 and result.dead_lettered == 0
    assert index(world).deletes == [[("acme", "fb-t1", T0_MS + 60_000)]]
    assert index(world).exemplar("t1") is None
    assert counted(world, action, "deleted") == 1


def test_taking_back_needs_no_ticket_log_entry(world: World) -> None:
    """An exemplar outlives the ticket log (30 days): reopening an old ticket still deletes it."""
    world.pipeline.process([raw(feedback("resolved", doc_id="kb-1"))])
    world.ticket_log.entries.clear()  # expired
    result = world.pipeline.process([raw(feedback("reopened", at=1))])
    assert result.deleted == 1 and result.dead_lettered == 0
    assert index(world).exemplar("t1") is None
    nothing = world.pipeline.process([raw(feedback("reopened", "t-never", at=1))])
    assert nothing.dead_lettered == 0 and counted(world, "reopened", "missing") == 1


def test_clicked_is_only_counted(world: World) -> None:
    result = world.pipeline.process([raw(feedback("clicked", doc_id="kb-1"))])
    assert result.feedback == 1 and result.indexed == result.dead_lettered == 0
    assert index(world).writes == [] and index(world).deletes == []
    assert counted(world, "clicked", "counted") == 1


# -- what cannot be learned -----------------------------------------------------------------------


def test_feedback_for_an_unknown_or_another_tenants_ticket_is_dead_lettered(world: World) -> None:
    unknown = raw(feedback("resolved", "t-nope", doc_id="kb-1"), headers=[("trace-id", b"x")])
    other_tenant = raw(feedback("resolved", "t1", doc_id="kb-9", tenant="globex"))
    escalated = raw(feedback("escalated", "t-nope"))
    result = world.pipeline.process([unknown, other_tenant, escalated])
    assert result.dead_lettered == 3 and result.feedback == result.indexed == 0
    assert index(world).writes == [] and index(world).docs == {}
    dead = world.producer.to("dead_letters")
    assert reasons(world) == [b"unknown_ticket"] * 3
    assert [d.value for d in dead] == [unknown.value, other_tenant.value, escalated.value]
    assert dead[0].headers[0] == ("trace-id", b"x")
    assert header(dead[1], "crossroute.error") == (
        b"ticket globex/t1 is not in the ticket log (never routed here, or older than "
        b"CROSSROUTE_WORKER__TICKET_LOG_TTL_S)"
    )
    assert counted(world, "resolved", "unknown_ticket") == 2
    assert counted(world, "escalated", "unknown_ticket") == 1
    metrics = world.pipeline.metrics.registry
    assert (
        metrics.get_sample_value("crossroute_dead_letters_total", {"reason": "unknown_ticket"}) == 3
    )


@pytest.mark.parametrize(
    "doc_id",
    ["kb-404", "sku-1", "kb-9"],  # absent; a product, not a target; another tenant's article
)
def test_a_document_the_tenant_does_not_have_is_dead_lettered(world: World, doc_id: str) -> None:
    result = world.pipeline.process([raw(feedback("resolved", doc_id=doc_id))])
    assert result.dead_lettered == 1 and index(world).writes == []
    assert reasons(world) == [b"unknown_document"]
    (dead,) = world.producer.to("dead_letters")
    assert header(dead, "crossroute.error") == (
        f"{doc_id} is not an article or policy of tenant acme in the index".encode()
    )
    assert counted(world, "resolved", "unknown_document") == 1


def test_a_ticket_without_text_teaches_nothing(world: World) -> None:
    photo = ImageRef(data=b"\x89PNG fake")
    world.pipeline.process(
        [raw(ticket("t2", "", photo=photo)), raw(ticket("t3", "  ", photo=photo))]
    )
    result = world.pipeline.process(
        [raw(feedback("resolved", "t2", doc_id="kb-1")), raw(feedback("escalated", "t3"))]
    )
    assert result.feedback == 2 and result.dead_lettered == 0 and index(world).writes == []
    assert counted(world, "resolved", "no_text") == counted(world, "escalated", "no_text") == 1


def test_resolved_without_a_document_is_counted(world: World) -> None:
    result = world.pipeline.process([raw(feedback("resolved"))])
    assert result.feedback == 1 and result.dead_lettered == 0 and index(world).writes == []
    assert counted(world, "resolved", "no_document") == 1


def test_exemplars_can_be_turned_off_but_taking_back_still_works() -> None:
    indexer = VersionedIndexer(kinds={("acme", "kb-1"): "article"})
    world = make_world(indexer, resolved_exemplars=False, escalation_exemplars=False)
    world.pipeline.process([raw(ticket("t1", "my parcel never arrived"))])
    indexer.docs[("acme", "fb-t1")] = (
        1,
        Exemplar(id="fb-t1", tenant="acme", text="x", target_id="kb-1"),
    )
    result = world.pipeline.process(
        [raw(feedback("resolved", doc_id="kb-1")), raw(feedback("escalated", "t-nope"))]
    )
    assert result.feedback == 2 and result.dead_lettered == 0 and indexer.writes == []
    assert counted(world, "resolved", "disabled") == counted(world, "escalated", "disabled") == 1
    assert world.pipeline.process([raw(feedback("reopened", at=1))]).deleted == 1


def test_an_exemplar_that_cannot_be_embedded_is_dead_lettered(world: World) -> None:
    index(world).bad = {"fb-t1"}
    message = raw(feedback("resolved", doc_id="kb-1"))
    result = world.pipeline.process([message])
    assert result.dead_lettered == 1 and result.feedback == 0 and index(world).docs == {}
    assert reasons(world) == [b"bad_input"]
    assert world.producer.to("dead_letters")[0].value == message.value
    assert counted(world, "resolved", "bad_input") == 1


# -- at least once, in any order ------------------------------------------------------------------


def test_replayed_feedback_changes_nothing(world: World) -> None:
    batch = [raw(feedback("resolved", doc_id="kb-1", at=5)), raw(feedback("reopened", "t0", at=6))]
    world.pipeline.process(batch)
    before = dict(index(world).docs)
    again = world.pipeline.process(batch)
    assert again.indexed == again.deleted == 0 and again.unchanged == 1
    assert index(world).docs == before
    assert (
        counted(world, "resolved", "unchanged") == 1 and counted(world, "reopened", "missing") == 2
    )


@pytest.mark.parametrize("same_batch", [False, True], ids=["two batches", "one batch"])
def test_an_older_feedback_never_overrides_a_newer_one(world: World, same_batch: bool) -> None:
    newer_reopened = raw(feedback("reopened", at=60))
    older_resolved = raw(feedback("resolved", doc_id="kb-1", at=5))
    if same_batch:
        result = world.pipeline.process([newer_reopened, older_resolved])
    else:
        world.pipeline.process([newer_reopened])
        result = world.pipeline.process([older_resolved])
    assert index(world).exemplar("t1") is None  # the reopening is the latest word
    if not same_batch:  # (in one batch the resolution is written first, then deleted)
        assert result.stale == 1 and counted(world, "resolved", "stale") == 1
    # a newer resolution after the reopening is learned again; then the latest action decides
    world.pipeline.process([raw(feedback("resolved", doc_id="wp-1", at=120))])
    assert index(world).exemplar("t1").target_id == "wp-1"  # type: ignore[union-attr]
    world.pipeline.process(
        [raw(feedback("escalated", at=180)), raw(feedback("resolved", doc_id="kb-1", at=90))]
    )
    assert index(world).exemplar("t1").target_kind == "human"  # type: ignore[union-attr]


def test_a_ticket_and_its_feedback_in_one_batch(world: World) -> None:
    result = world.pipeline.process(
        [raw(ticket("t7", "where is my parcel")), raw(feedback("resolved", "t7", doc_id="kb-1"))]
    )
    assert result.routed == 1 and result.feedback == 1 and result.indexed == 1
    assert index(world).exemplar("t7") is not None


def test_redis_failures_while_learning_are_retried(world: World) -> None:
    failing = iter([redis.ConnectionError("down")])

    def lookup(refs: Sequence[tuple[str, str]]) -> Any:
        for error in failing:
            raise error
        return type(world.ticket_log).lookup(world.ticket_log, refs)

    world.ticket_log.lookup = lookup  # type: ignore[method-assign]
    index(world).failures = [redis.TimeoutError("slow")]
    result = world.pipeline.process([raw(feedback("resolved", doc_id="kb-1"))])
    assert result.indexed == 1 and world.sleeps == [0.5, 0.5]
