"""Exact retrieval for the offline evaluation, with exemplars, and the routing decision on top."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.eval.decision import ExemplarRule, human_scores, prototypes, routing_score

__all__ = ["Exemplars", "Search", "exact_search", "route"]


@dataclass(frozen=True)
class Exemplars:
    """Labelled past queries (resolved tickets): each vector stands for the corpus document
    ``owner`` it was resolved with. A document scores the max of its own cosine and its exemplars'."""

    vectors: np.ndarray  # (m, dim), unit norm
    owner: np.ndarray  # (m,) corpus indices

    def take(self, mask: np.ndarray) -> Exemplars:
        """The exemplars where ``mask`` holds."""
        return Exemplars(self.vectors[mask], self.owner[mask])


Search = Callable[[np.ndarray, np.ndarray, int, Exemplars | None], tuple[np.ndarray, np.ndarray]]
"""``search(doc_vecs, query_vecs, depth, exemplars) → (ranked corpus indices (n, depth), top-1
scores (n,))``. Rows with fewer hits are padded with -1."""


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def exact_search(
    doc_vecs: np.ndarray, query_vecs: np.ndarray, depth: int, exemplars: Exemplars | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force cosine over the whole corpus (the default :data:`Search`)."""
    scores = query_vecs @ doc_vecs.T
    if exemplars is not None and len(exemplars.owner):
        ex = query_vecs @ exemplars.vectors.T
        for owner in np.unique(exemplars.owner):
            best = ex[:, exemplars.owner == owner].max(axis=1)
            scores[:, owner] = np.maximum(scores[:, owner], best)
    ranked = _topk(scores, depth)
    return ranked, scores[np.arange(len(scores)), ranked[:, 0]]


def route(
    search: Search,
    doc_vecs: np.ndarray,
    query_vecs: np.ndarray,
    depth: int,
    exemplars: Exemplars | None,
    human: np.ndarray,
    rule: ExemplarRule = "max",
) -> tuple[np.ndarray, np.ndarray]:
    """Rank the real targets for each query and give its routing score, by the rule of
    :mod:`models.eval.decision`.

    Args:
        search: ranks the targets (``rule`` ``max``: with the exemplars; ``prototype``: the
            prototypes, without them).
        doc_vecs: (n_targets, dim) target vectors.
        query_vecs: (n, dim) query vectors.
        depth: targets to rank per query.
        exemplars: labelled exemplars of the real targets, if any.
        human: (h, dim) exemplars of the human queue (may be empty); their scores are computed
            exactly, in memory, whatever ``search`` is.
        rule: how exemplars score their target.

    Returns:
        ranked target indices (n, depth) and routing scores (n,): abstain below a threshold.
    """
    if rule == "prototype" and exemplars is not None:
        doc_vecs = prototypes(doc_vecs, exemplars.vectors, exemplars.owner)
        exemplars = None
    ranked, top1 = search(doc_vecs, query_vecs, depth, exemplars)
    return ranked, routing_score(top1, human_scores(query_vecs, human))
