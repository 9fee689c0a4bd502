"""Cross-validating exemplar routing on one split, without leaking a query into its own decision.

Exemplar routing is measured on a split's own labelled queries: each fold is routed with the other
folds' queries as exemplars (resolved tickets) and their out-of-scope queries as exemplars of the
human queue (escalated tickets). Two leaks make plain k-fold overstate what held-out tickets get:

1. **Near-duplicates.** A split of paraphrased queries holds rewordings of one sentence ("how do i
   set up a meeting" / "how can i set up a meeting"); plain folds put one in the scored fold and its
   twin among the exemplars, where it finds itself. So near-duplicate queries are grouped
   (:func:`near_duplicate_groups`: connected components of the graph joining queries whose
   text-encoder cosine is at least :data:`NEAR_DUPLICATE_COSINE`) and whole groups are assigned to
   folds (:func:`assign_folds`, seeded and balanced).
2. **The threshold.** An abstain threshold fitted on the very queries it scores is an oracle. Each
   fold's threshold is fitted on the other folds only, by an inner cross-validation over them that
   never sees the fold, neither as queries nor as exemplars (:func:`fold_thresholds`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.eval.decision import ExemplarRule
from models.eval.metrics import best_f1_threshold
from models.eval.search import Exemplars, Search, exact_search, route

__all__ = [
    "CV_SEED",
    "NEAR_DUPLICATE_COSINE",
    "Pool",
    "assign_folds",
    "cross_validate",
    "fold_thresholds",
    "near_duplicate_groups",
]

NEAR_DUPLICATE_COSINE = 0.9
"""Two queries whose text-encoder (all-MiniLM-L6-v2, before any trained head) cosine is at least
this are near-duplicates. Fixed from reading pairs of the support dev splits before any score was
computed with it: at 0.9 and above they are one sentence reworded ("help me find my phone please" /
"please help me in finding my phone"); below, different phrasings of one need begin ("report a card
lost for me" / "what are the steps to take to report a lost card", 0.88). Not tuned on scores."""
CV_SEED = 20261126


def near_duplicate_groups(
    vecs: np.ndarray, threshold: float = NEAR_DUPLICATE_COSINE, *, block: int = 1024
) -> np.ndarray:
    """Group near-duplicates: the connected components of the graph joining rows whose cosine is
    at least ``threshold`` (union-find; a chain of near-duplicates is one group).

    Args:
        vecs: (n, dim) unit-norm vectors (a zero row is a group of its own).
        threshold: the cosine that makes two rows near-duplicates, in (0, 1].
        block: rows compared at once (memory: ``block * n`` floats).

    Returns:
        (n,) group ids 0..g-1, numbered in the order of each group's first row.

    Raises:
        ValueError: ``threshold`` is not in (0, 1].
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    n = len(vecs)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for start in range(0, n, block):
        rows, cols = np.nonzero(vecs[start : start + block] @ vecs.T >= threshold)
        for r, c in zip((rows + start).tolist(), cols.tolist(), strict=True):
            if c > r:
                a, b = find(r), find(c)
                if a != b:
                    parent[max(a, b)] = min(a, b)  # the root is the component's first row
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    groups: np.ndarray = np.unique(roots, return_inverse=True)[1]
    return groups


def assign_folds(groups: np.ndarray, folds: int, seed: int = CV_SEED) -> np.ndarray:
    """Assign whole groups to ``folds`` folds, balanced by size: groups in a seeded random order,
    largest first (stable), each to the fold with the fewest rows so far (the lowest on ties).

    Returns:
        (n,) the fold of each row. Deterministic for given ``groups``, ``folds`` and ``seed``.
    """
    sizes = np.bincount(groups)
    order = np.random.default_rng(seed).permutation(len(sizes))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(folds, dtype=np.int64)
    of_group = np.zeros(len(sizes), dtype=np.int64)
    for g in order.tolist():
        f = int(np.argmin(load))
        of_group[g] = f
        load[f] += sizes[g]
    out: np.ndarray = of_group[groups]
    return out


@dataclass(frozen=True)
class Pool:
    """A split's queries, as exemplars of each other.

    Attributes:
        queries: (n, dim) unit-norm query vectors.
        rows: (m,) the query of each labelled exemplar (one per relevant target).
        owner: (m,) the target of each labelled exemplar.
        human: (h,) the queries that are exemplars of the human queue (out of scope; empty: none).
    """

    queries: np.ndarray
    rows: np.ndarray
    owner: np.ndarray
    human: np.ndarray

    def without(self, dropped: np.ndarray) -> tuple[Exemplars, np.ndarray]:
        """The labelled exemplars and the human exemplars' vectors of the queries not ``dropped``
        ((n,) bool)."""
        keep = ~dropped[self.rows]
        human = self.human[~dropped[self.human]]
        return Exemplars(self.queries[self.rows[keep]], self.owner[keep]), self.queries[human]


def _route_folds(
    pool: Pool,
    fold: np.ndarray,
    doc_vecs: np.ndarray,
    scored: np.ndarray,
    held_out: list[int],
    depth: int,
    search: Search,
    rule: ExemplarRule,
) -> tuple[np.ndarray, np.ndarray]:
    """Route the queries ``scored`` with the exemplars of every fold but ``held_out``."""
    exemplars, human = pool.without(np.isin(fold, held_out))
    return route(search, doc_vecs, pool.queries[scored], depth, exemplars, human, rule)


def cross_validate(
    pool: Pool,
    fold: np.ndarray,
    doc_vecs: np.ndarray,
    depth: int,
    *,
    search: Search = exact_search,
    rule: ExemplarRule = "max",
) -> tuple[np.ndarray, np.ndarray]:
    """Route each fold with the other folds' queries as exemplars.

    Returns:
        ranked targets (n, depth) and routing scores (n,) of every query (see
        :func:`models.eval.search.route`).
    """
    n = len(pool.queries)
    ranked = np.full((n, depth), -1, dtype=np.int64)
    score = np.zeros(n, dtype=np.float64)
    for f in np.unique(fold).tolist():
        sel = np.flatnonzero(fold == f)
        ranked[sel], score[sel] = _route_folds(pool, fold, doc_vecs, sel, [f], depth, search, rule)
    return ranked, score


def fold_thresholds(
    pool: Pool,
    fold: np.ndarray,
    doc_vecs: np.ndarray,
    is_oos: np.ndarray,
    *,
    rule: ExemplarRule = "max",
) -> dict[int, float]:
    """The abstain threshold of each fold, fitted without it (nested cross-validation).

    For fold ``f``, every other fold ``g`` is routed (exact search) with the exemplars of the folds
    other than ``f`` and ``g``; the threshold maximising out-of-scope F1 on those routing scores is
    ``f``'s. Fold ``f``'s queries never influence it: not as scored queries, not as exemplars.

    Returns:
        {fold: threshold}, for every fold with at least one other fold.
    """
    folds = np.unique(fold).tolist()
    out: dict[int, float] = {}
    for f in folds:
        inner = np.flatnonzero(fold != f)
        if len(inner) == 0:
            continue
        score = np.zeros(len(fold), dtype=np.float64)
        for g in folds:
            if g != f:
                sel = np.flatnonzero(fold == g)
                _, score[sel] = _route_folds(
                    pool, fold, doc_vecs, sel, [f, g], 1, exact_search, rule
                )
        out[f] = best_f1_threshold(score[inner], is_oos[inner])
    return out
