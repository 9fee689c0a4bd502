"""Cross-validation of exemplar routing: near-duplicate groups never split, thresholds fitted
without the fold they score, and the human-queue rule, on small synthetic vectors."""

from __future__ import annotations

import numpy as np
import pytest

from models.eval.cv import (
    NEAR_DUPLICATE_COSINE,
    Pool,
    assign_folds,
    cross_validate,
    fold_thresholds,
    near_duplicate_groups,
)
from models.eval.decision import HUMAN_WINS, abstains, prototypes, routing_score
from models.eval.search import Exemplars, exact_search, route
from models.projection import l2_normalize


def _paraphrases(
    rng: np.random.Generator, n_base: int, per: int, dim: int = 64, noise: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """``n_base`` random sentences, each with ``per`` rewordings (cosine ~0.96 with each other); returns
    the vectors (shuffled) and the sentence each came from. ``noise``: a rewording's distance."""
    base = l2_normalize(rng.normal(size=(n_base, dim)))
    src = np.repeat(np.arange(n_base), per)
    vecs = l2_normalize(base[src] + noise * rng.normal(size=(len(src), dim)) / np.sqrt(dim))
    order = rng.permutation(len(src))
    return vecs[order], src[order]


def test_near_duplicates_are_one_group_and_never_split_across_folds() -> None:
    rng = np.random.default_rng(0)
    vecs, src = _paraphrases(rng, n_base=40, per=3)
    groups = near_duplicate_groups(vecs)
    # rewordings of one sentence share a group; different sentences (cosine ~0) never do
    assert len(np.unique(groups)) == 40
    for s in range(40):
        assert len(np.unique(groups[src == s])) == 1
    for folds in (2, 3, 5, 10):
        fold = assign_folds(groups, folds)
        for g in np.unique(groups):
            assert len(np.unique(fold[groups == g])) == 1
        sizes = np.bincount(fold, minlength=folds)
        assert sizes.max() - sizes.min() <= 3  # balanced up to one group


def test_grouping_is_transitive_and_leaves_zero_rows_alone() -> None:
    # a ~ b and b ~ c (cosine 0.95) but a !~ c (0.81): one group; a zero vector: its own group
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([np.cos(0.32), np.sin(0.32), 0.0])
    c = np.array([np.cos(0.64), np.sin(0.64), 0.0])
    assert a @ b >= NEAR_DUPLICATE_COSINE > a @ c
    vecs = np.stack([a, np.zeros(3), c, np.array([0.0, 0.0, 1.0]), b]).astype(np.float32)
    assert near_duplicate_groups(vecs).tolist() == [0, 1, 0, 2, 0]
    with pytest.raises(ValueError, match="must be in"):
        near_duplicate_groups(vecs, 0.0)


def test_fold_assignment_is_deterministic_and_seeded() -> None:
    groups = near_duplicate_groups(_paraphrases(np.random.default_rng(1), 50, 2)[0])
    once = assign_folds(groups, 5, seed=7)
    assert np.array_equal(once, assign_folds(groups, 5, seed=7))
    assert not np.array_equal(once, assign_folds(groups, 5, seed=8))
    # blocks compared at a time change nothing
    vecs = _paraphrases(np.random.default_rng(1), 50, 2)[0]
    assert np.array_equal(near_duplicate_groups(vecs, block=7), near_duplicate_groups(vecs))


def _labelled_pool(rng: np.random.Generator) -> tuple[Pool, np.ndarray, np.ndarray, np.ndarray]:
    """Six targets; 60 in-scope queries around them (each with one rewording) and 20 scattered
    out-of-scope queries. Returns the pool, the target vectors, the near-duplicate groups and the
    out-of-scope mask."""
    dim = 16
    docs = l2_normalize(rng.normal(size=(6, dim)))
    owner = np.repeat(np.arange(6), 10)
    ins = l2_normalize(docs[owner] + 0.9 * rng.normal(size=(60, dim)) / np.sqrt(dim))
    twins = l2_normalize(ins + 0.02 * rng.normal(size=ins.shape))
    oos = l2_normalize(rng.normal(size=(20, dim)))
    queries = np.concatenate([ins, twins, oos]).astype(np.float32)
    labels = np.concatenate([owner, owner])
    is_oos = np.arange(len(queries)) >= 120
    pool = Pool(queries, np.arange(120), labels, np.flatnonzero(is_oos))
    return pool, docs, near_duplicate_groups(queries), is_oos


def test_grouped_folds_keep_a_query_from_finding_its_own_twin() -> None:
    pool, docs, groups, _ = _labelled_pool(np.random.default_rng(2))
    plain = assign_folds(np.arange(len(groups)), 5)
    grouped = assign_folds(groups, 5)
    twinned = np.arange(120)
    _, plain_score = cross_validate(pool, plain, docs, 3)
    _, grouped_score = cross_validate(pool, grouped, docs, 3)
    # plain folds: most in-scope queries find their twin (cosine ~1) among the exemplars
    assert np.mean(plain_score[twinned] > 0.99) > 0.5
    assert np.mean(grouped_score[twinned] > 0.99) == 0.0


def test_fold_threshold_never_sees_its_own_fold() -> None:
    rng = np.random.default_rng(3)
    pool, docs, groups, is_oos = _labelled_pool(rng)
    fold = assign_folds(groups, 4)
    before = fold_thresholds(pool, fold, docs, is_oos)
    assert sorted(before) == [0, 1, 2, 3]
    # rewrite fold 0 entirely: other vectors, other targets, other out-of-scope status
    mine = fold == 0
    queries = pool.queries.copy()
    queries[mine] = l2_normalize(rng.normal(size=(int(mine.sum()), queries.shape[1])))
    owner = pool.owner.copy()
    owner[mine[pool.rows]] = (owner[mine[pool.rows]] + 1) % 6
    flipped = is_oos.copy()
    flipped[mine] = ~flipped[mine]
    changed = Pool(queries, pool.rows, owner, np.flatnonzero(flipped))
    after = fold_thresholds(changed, fold, docs, flipped)
    assert after[0] == before[0]
    assert any(after[f] != before[f] for f in (1, 2, 3))  # the others did see fold 0


def test_human_queue_wins_whatever_the_threshold() -> None:
    docs = np.eye(3, dtype=np.float32)
    query = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)  # target 0 scores 1.0 on its own
    labelled = Exemplars(np.array([[0.0, 1.0, 0.0]], dtype=np.float32), np.array([1]))
    far_human = np.array([[0.0, 0.0, 1.0]], dtype=np.float32)  # cosine 0 < best target's 1.0
    ranked, score = route(exact_search, docs, query, 3, labelled, far_human)
    assert ranked[0, 0] == 0 and score[0] == pytest.approx(1.0)
    assert not abstains(1.0, 0.0, 0.5) and abstains(1.0, 0.0, 1.5)  # the threshold decides
    # an escalated ticket closer than every target: the human queue wins even at threshold -1
    q = l2_normalize(np.array([[0.6, 0.0, 0.8]], dtype=np.float32))
    human = q.copy()
    _, score = route(exact_search, docs, q, 3, labelled, human)
    assert score[0] == HUMAN_WINS and abstains(0.6, 1.0, -1.0)
    # a tie is not a win: the threshold rule applies
    assert routing_score(0.7, 0.7) == pytest.approx(0.7) and not abstains(0.7, 0.7, 0.5)
    # no human exemplars: the human queue scores -inf
    _, score = route(exact_search, docs, q, 3, labelled, docs[:0])
    assert score[0] == pytest.approx(0.8)


def test_routing_score_agrees_with_the_rule() -> None:
    rng = np.random.default_rng(4)
    best, human = rng.uniform(-1, 1, 500), rng.uniform(-1, 1, 500)
    for t in (-1.0, -0.3, 0.0, 0.4, 0.99):
        assert np.array_equal(routing_score(best, human) < t, abstains(best, human, t))


def test_prototypes_average_a_target_with_its_exemplars() -> None:
    docs = np.eye(3, dtype=np.float32)
    ex = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    proto = prototypes(docs, ex, np.array([0, 0]))
    assert proto[0] == pytest.approx(np.array([1.0, 1.0, 1.0]) / np.sqrt(3), abs=1e-6)
    assert np.array_equal(proto[1:], docs[1:])  # no exemplars: the target's own vector
    # rule prototype ranks by the prototype's cosine
    q = np.array([[0.0, 0.6, 0.8]], dtype=np.float32)
    ranked, score = route(
        exact_search, docs, q, 3, Exemplars(ex, np.array([0, 0])), docs[:0], "prototype"
    )
    assert ranked[0, 0] == 0 and score[0] == pytest.approx(1.4 / np.sqrt(3), abs=1e-6)
