"""The router's decision rule with the index faked at its KNN: by the ``max`` exemplar rule, targets
score the best of their own hit and their exemplars' hits (the ``prototype`` rule reads the stored
vectors: tested on the real Redis index); the human queue scores the best out-of-scope exemplar (an escalated
ticket) and wins when it beats every target, whatever the threshold; otherwise the threshold decides.
The same rule on the real Redis index: ``tests/integration/router/test_routing.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.index import HUMAN_QUEUE_PARENT, DocKind, Filters, Hit, Pending
from router.routing import Router, TicketVectors
from router.schemas import RoutingDecision, Ticket
from router.settings import RoutingSettings

SPACE = "sp-test"
DIM = 4


@dataclass
class FakeEmbedder:
    space_id: str = SPACE
    dim: int = DIM


@dataclass
class FakeIndex:
    """Returns ``hits`` (best first, as Redis does) for any query; ``docs`` are what ``get`` (and a
    batch's ``kind_and_vector``) finds."""

    hits: list[Hit] = field(default_factory=list)
    docs: dict[str, DocKind] = field(default_factory=dict)
    name: str = "fake"

    def check_space(self, space_id: str, what: str = "query") -> None:
        assert space_id == SPACE

    def knn(self, vector: Any, space_id: str, k: int, filters: Filters, **kw: Any) -> list[Hit]:
        return sorted(self.hits, key=lambda h: -h.score)[:k]

    def get(self, tenant: str, entity_id: str) -> dict[str, str] | None:
        kind = self.docs.get(entity_id)
        return None if kind is None else {"kind": kind}

    def reads(self) -> FakeReads:
        return FakeReads(self)


@dataclass
class FakeReads:
    """A batch of reads of :class:`FakeIndex`, answered at once."""

    index: FakeIndex

    def knn(self, *args: Any, **kw: Any) -> Pending[list[Hit]]:
        return Pending.of(self.index.knn(*args, **kw))

    def kind_and_vector(
        self, tenant: str, entity_id: str
    ) -> Pending[tuple[str | None, np.ndarray | None]]:
        return Pending.of((self.index.docs.get(entity_id), None))

    def exemplars_of(self, *args: Any, **kw: Any) -> Pending[list[tuple[str, np.ndarray]]]:
        return Pending.of([])

    def run(self) -> None:
        pass


def hit(ident: str, score: float, kind: DocKind = "article", parent: str | None = None) -> Hit:
    return Hit(ident, kind, score, "acme", 1, SPACE, parent=parent)


def exemplar(ident: str, score: float, target: str) -> Hit:
    return hit(ident, score, "exemplar", target)


def human(ident: str, score: float) -> Hit:
    return hit(ident, score, "exemplar", HUMAN_QUEUE_PARENT)


def decide(*hits: Hit, threshold: float = 0.5, **settings: Any) -> RoutingDecision:
    index = FakeIndex(list(hits), {"kb-1": "article", "kb-2": "article", "wp-1": "warranty_policy"})
    router = Router(
        FakeEmbedder(),  # type: ignore[arg-type]
        index,  # type: ignore[arg-type]
        RoutingSettings(threshold=threshold, **{"exemplar_rule": "max", **settings}),
    )
    vectors = TicketVectors({"text": np.eye(DIM, dtype=np.float32)[0]})
    return router.decide(Ticket(id="t", tenant="acme", text="x"), vectors)


def test_a_target_scores_the_best_of_its_hit_and_its_exemplars() -> None:
    d = decide(hit("kb-1", 0.55), exemplar("fb-1", 0.9, "kb-2"), hit("kb-2", 0.4))
    assert d.queue == "auto"
    assert [(t.doc_id, t.score, t.exemplar_id) for t in d.targets] == [
        ("kb-2", 0.9, "fb-1"),
        ("kb-1", 0.55, None),
    ]


def test_the_human_queue_wins_when_an_out_of_scope_exemplar_beats_every_target() -> None:
    d = decide(hit("kb-1", 0.8), human("fb-9", 0.95), exemplar("fb-1", 0.7, "kb-1"))
    assert d.queue == "human"  # although 0.8 is above the threshold
    assert [t.doc_id for t in d.targets] == ["kb-1"]  # suggestions; never the human queue itself
    assert d.targets[0].score == 0.8


def test_a_target_at_least_as_close_as_the_human_exemplars_keeps_the_threshold_rule() -> None:
    assert decide(hit("kb-1", 0.8), human("fb-9", 0.8)).queue == "auto"  # a tie is no win
    assert decide(exemplar("fb-1", 0.9, "wp-1"), human("fb-9", 0.7)).queue == "auto"
    assert decide(hit("kb-1", 0.45), human("fb-9", 0.3)).queue == "human"  # below the threshold
    d = decide(hit("kb-1", 0.3), human("fb-9", 0.35), threshold=0.2)
    assert d.queue == "human"


def test_out_of_scope_exemplars_alone_send_the_ticket_to_a_human() -> None:
    d = decide(human("fb-9", 0.1), threshold=-1.0)
    assert d.queue == "human" and d.targets == ()


def test_an_exemplar_whose_target_is_gone_scores_nothing() -> None:
    # kb-gone is not in the index: its exemplar's 0.99 is not a target's score, so the human
    # exemplar's 0.9 beats the best target (0.6)
    d = decide(exemplar("fb-1", 0.99, "kb-gone"), human("fb-9", 0.9), hit("kb-1", 0.6))
    assert d.queue == "human" and [t.doc_id for t in d.targets] == ["kb-1"]


def test_out_of_scope_exemplars_can_be_ignored() -> None:
    d = decide(hit("kb-1", 0.8), human("fb-9", 0.95), human_exemplars=False)
    assert d.queue == "auto" and [t.doc_id for t in d.targets] == ["kb-1"]
