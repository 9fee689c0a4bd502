"""``crossroute eval``: embed a dataset with a bundle, retrieve exactly, score, slice."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.embedder import Embedder, EmbeddingBatch
from models.eval.cv import (
    CV_SEED,
    NEAR_DUPLICATE_COSINE,
    Pool,
    assign_folds,
    cross_validate,
    fold_thresholds,
    near_duplicate_groups,
)
from models.eval.dataset import Dataset, DatasetError
from models.eval.decision import ExemplarRule
from models.eval.metrics import (
    best_f1_threshold,
    detection_scores,
    rank_metrics,
    recall_curve,
)
from models.eval.search import Exemplars, Search, exact_search, route
from models.preprocess import normalize_text
from models.progress import Progress, no_progress
from models.projection import l2_normalize

__all__ = [
    "ORACLE",
    "Exemplars",
    "Search",
    "embed_items",
    "escalated_texts",
    "evaluate",
    "exact_search",
    "exemplar_pairs",
    "grouping_vectors",
]
ORACLE = "fit on this dataset (oracle)"
"""The threshold source of a threshold fitted on the very queries it scores (an upper bound)."""


MIN_SLICE = 20
CURVE_K = 20


def embed_items(
    embedder: Embedder,
    root: Any,
    items: Sequence[tuple[str, str | None, str | None]],
    what: str,
) -> np.ndarray:
    """Embed (id, text, image path) items: text and/or image, averaged when both, unit norm.

    Raises:
        DatasetError: an item cannot be embedded (names it).
    """
    n = len(items)
    text_idx = [i for i, (_, t, _) in enumerate(items) if t and t.strip()]
    image_idx = [i for i, (_, _, im) in enumerate(items) if im]
    total = np.zeros((n, embedder.dim), dtype=np.float32)
    batches: list[tuple[list[int], EmbeddingBatch]] = []
    if text_idx:
        batches.append(
            (
                text_idx,
                embedder.embed_texts(
                    [items[i][1] or "" for i in text_idx], names=[items[i][0] for i in text_idx]
                ),
            )
        )
    if image_idx:
        batches.append(
            (
                image_idx,
                embedder.embed_images(
                    [root / (items[i][2] or "") for i in image_idx],
                    names=[items[i][0] for i in image_idx],
                ),
            )
        )
    for idx, batch in batches:
        for err in batch.errors:
            if err is not None:
                raise DatasetError(f"{what} {err}")
        total[idx] += batch.vectors
    return l2_normalize(total)


def exemplar_pairs(dataset: Dataset) -> list[tuple[str, str]]:
    """(query text, relevant corpus id) of every labelled text query: exemplars for another split."""
    return [
        (q.text, doc)
        for q in dataset.queries
        if q.text and q.text.strip()
        for doc in sorted(dataset.qrels.get(q.id, ()))
    ]


def escalated_texts(dataset: Dataset) -> list[str]:
    """The text of every out-of-scope query (no qrels): exemplars of the human queue for another
    split, as escalated tickets."""
    return [
        q.text for q in dataset.queries if q.id not in dataset.qrels and q.text and q.text.strip()
    ]


def grouping_vectors(embedder: Embedder, dataset: Dataset) -> np.ndarray:
    """The text-encoder features (before any head) of the queries, zero without text: near-duplicate
    groups are then the same for every bundle over one text encoder."""
    spec = embedder.manifest.spec.text.preprocess
    texts = [normalize_text(q.text, spec) if q.text else "" for q in dataset.queries]
    idx = [i for i, t in enumerate(texts) if t]
    out = np.zeros((len(texts), embedder.manifest.text.dim), dtype=np.float32)
    if idx:
        out[idx] = l2_normalize(embedder.text_features([texts[i] for i in idx]))
    return out


def _cross_validated(
    dataset: Dataset,
    embedder: Embedder,
    query_vecs: np.ndarray,
    doc_vecs: np.ndarray,
    depth: int,
    folds: int,
    search: Search,
    index: dict[str, int],
    *,
    grouped: bool,
    human: bool,
    rule: ExemplarRule,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], tuple[Pool, np.ndarray]]:
    """Route each fold with the other folds' labelled queries as exemplars (and, with ``human``,
    their out-of-scope queries as exemplars of the human queue); folds hold whole groups of
    near-duplicates unless ``grouped`` is false (see :mod:`models.eval.cv`)."""
    rows, owners, oos = [], [], []
    for i, q in enumerate(dataset.queries):
        if q.text and q.text.strip():
            docs = sorted(dataset.qrels.get(q.id, ()))
            rows += [i] * len(docs)
            owners += [index[d] for d in docs]
            if not docs:
                oos.append(i)
    pool = Pool(
        query_vecs,
        np.array(rows, dtype=np.int64),
        np.array(owners, dtype=np.int64),
        np.array(oos if human else [], dtype=np.int64),
    )
    n = len(dataset.queries)
    groups = (
        near_duplicate_groups(grouping_vectors(embedder, dataset))
        if grouped
        else np.arange(n, dtype=np.int64)
    )
    fold = assign_folds(groups, folds, CV_SEED)
    ranked, score = cross_validate(pool, fold, doc_vecs, depth, search=search, rule=rule)
    how = (
        f"near-duplicates (text-encoder cosine >= {NEAR_DUPLICATE_COSINE}) kept in one fold"
        if grouped
        else "plain folds (near-duplicates split: overstates)"
    )
    info = {
        "source": f"{folds}-fold cross-validation on this dataset's queries, {how}",
        "n": len(rows),
        "human": len(pool.human),
        "rule": rule,
        "folds": folds,
        "grouped": grouped,
        "groups": int(groups.max()) + 1 if n else 0,
        "seed": CV_SEED,
    }
    if grouped:
        info["near_duplicate_cosine"] = NEAR_DUPLICATE_COSINE
    return ranked, score, info, (pool, fold)


def _oos_report(
    score: np.ndarray, is_oos: np.ndarray, correct: np.ndarray, threshold: np.ndarray | float
) -> dict[str, float]:
    """Out-of-scope detection at ``threshold`` (one, or one per query), and the in-scope accuracy:
    the share of in-scope queries routed automatically to a relevant target (as CLINC150's)."""
    abstain = score < threshold
    ins = ~is_oos
    accuracy = float(np.mean(~abstain[ins] & correct[ins])) if ins.any() else 0.0
    return {**detection_scores(abstain, is_oos), "in_scope_accuracy": accuracy}


def _latency(embedder: Embedder, dataset: Dataset, sample: int) -> dict[str, float]:
    times = []
    for q in dataset.queries[:sample]:
        start = time.perf_counter()
        embed_items(embedder, dataset.root, [(q.id, q.text, q.image)], "query")
        times.append((time.perf_counter() - start) * 1000)
    if not times:  # not measured (latency_sample=0)
        return {"n": 0}
    return {
        "query_embed_p50": round(float(np.percentile(times, 50)), 3),
        "query_embed_p95": round(float(np.percentile(times, 95)), 3),
        "n": len(times),
    }


def _given(
    embedder: Embedder,
    query_vecs: np.ndarray,
    doc_vecs: np.ndarray,
    depth: int,
    search: Search,
    index: dict[str, int],
    exemplars: Sequence[tuple[str, str]],
    escalated: Sequence[str],
    rule: ExemplarRule,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """Route with the given exemplars (none: the corpus alone) and human exemplars."""
    given = [(t, index[d]) for t, d in exemplars if d in index and t.strip()]
    texts = [t for t in escalated if t.strip()]
    ex = None
    if given:
        vecs = embedder.embed_texts([t for t, _ in given]).vectors
        ex = Exemplars(vecs, np.array([o for _, o in given], dtype=np.int64))
    human = embedder.embed_texts(texts).vectors if texts else query_vecs[:0]
    info: dict[str, Any] | None = None
    if given or texts:
        info = {
            "source": "given",
            "n": len(given),
            "unknown_documents": len(exemplars) - len(given),
            "human": len(texts),
            "rule": rule,
        }
    ranked, score = route(search, doc_vecs, query_vecs, depth, ex, human, rule)
    return ranked, score, info


def _out_of_scope(
    score: np.ndarray,
    is_oos: np.ndarray,
    correct: np.ndarray,
    threshold: float | None,
    cv: tuple[Pool, np.ndarray] | None,
    doc_vecs: np.ndarray,
    rule: ExemplarRule,
) -> dict[str, Any]:
    """The out-of-scope block of the report: at the given threshold; else, cross-validated, at
    thresholds fitted on the other folds (with the oracle's apart); else at the oracle's.

    Cross-validated, each fold abstains at its own threshold (``fold_thresholds``); ``threshold``
    is their median. A fold threshold under every real target's score (halfway between
    :data:`~models.eval.decision.HUMAN_WINS` and the lowest) means that abstaining only where the
    human queue wins was that fold's F1 optimum."""
    if threshold is not None:
        return {
            **_oos_report(score, is_oos, correct, threshold),
            "threshold": threshold,
            "threshold_source": "given",
        }
    fitted = best_f1_threshold(score, is_oos)
    oracle = {
        **_oos_report(score, is_oos, correct, fitted),
        "threshold": fitted,
        "threshold_source": ORACLE,
    }
    if cv is None:
        return oracle
    pool, fold = cv
    per_fold = fold_thresholds(pool, fold, doc_vecs, is_oos, rule=rule)
    at = np.array([per_fold.get(int(f), fitted) for f in fold])
    return {
        **_oos_report(score, is_oos, correct, at),
        "threshold": float(np.median(list(per_fold.values()))),
        "fold_thresholds": [per_fold[f] for f in sorted(per_fold)],
        "threshold_source": "cross-validated",
        "oracle": oracle,
    }


def evaluate(
    dataset: Dataset,
    embedder: Embedder,
    *,
    ks: Sequence[int] = (1, 5, 10),
    threshold: float | None = None,
    latency_sample: int = 100,
    progress: Progress = no_progress,
    search: Search = exact_search,
    retrieval: str = "exact (brute-force cosine over the whole corpus)",
    exemplars: Sequence[tuple[str, str]] = (),
    escalated: Sequence[str] = (),
    exemplar_folds: int = 0,
    grouped: bool = True,
    human_exemplars: bool = True,
    exemplar_rule: ExemplarRule = "prototype",
) -> dict[str, Any]:
    """Run the evaluation and return the report object of the EVAL.md contract (plus extras).

    Args:
        search: ranks the corpus for the queries: exact by default; ``router`` passes one that goes
            through the real Redis index (``crossroute eval --index redis``), described by
            ``retrieval``.
        exemplars: (text, corpus id) pairs of labelled past queries (another split's queries and
            qrels) that vote for their document.
        escalated: texts of past out-of-scope queries (another split's): exemplars of the human
            queue (with ``human_exemplars``).
        exemplar_folds: k > 1: k-fold cross-validation on this dataset's own queries, each fold
            routed with the other folds' as exemplars (:mod:`models.eval.cv`); the out-of-scope F1
            is then scored at thresholds fitted on the other folds only (``cross-validated``), and
            the oracle's kept apart.
        grouped: keep near-duplicate queries in one fold (false: plain folds, which overstate).
        human_exemplars: out-of-scope exemplars (``escalated``, or the other folds' out-of-scope
            queries) route to the human queue (:mod:`models.eval.decision`).
        exemplar_rule: how exemplars score their target (:data:`models.eval.decision.ExemplarRule`).
    """
    progress(f"embedding {len(dataset.corpus)} corpus documents")
    doc_vecs = embed_items(
        embedder,
        dataset.root,
        [(d.id, d.full_text(), d.image) for d in dataset.corpus],
        "corpus document",
    )
    progress(f"embedding {len(dataset.queries)} queries")
    query_vecs = embed_items(
        embedder, dataset.root, [(q.id, q.text, q.image) for q in dataset.queries], "query"
    )
    progress(f"retrieving ({retrieval})")
    depth = min(max(max(ks), 10, CURVE_K), len(doc_vecs))
    index = {d.id: i for i, d in enumerate(dataset.corpus)}
    in_scope = np.array([q.id in dataset.qrels for q in dataset.queries])
    ex_info: dict[str, Any] | None = None
    cv: tuple[Pool, np.ndarray] | None = None
    if exemplar_folds > 1:
        ranked, score, ex_info, cv = _cross_validated(
            dataset, embedder, query_vecs, doc_vecs, depth, exemplar_folds, search, index,
            grouped=grouped, human=human_exemplars, rule=exemplar_rule,
        )  # fmt: skip
    else:
        ranked, score, ex_info = _given(
            embedder, query_vecs, doc_vecs, depth, search, index, exemplars,
            escalated if human_exemplars else (), exemplar_rule,
        )  # fmt: skip
    relevant = [frozenset(index[d] for d in dataset.qrels.get(q.id, ())) for q in dataset.queries]

    def metrics_for(mask: np.ndarray) -> dict[str, float]:
        sel = np.flatnonzero(mask & in_scope)
        return rank_metrics(ranked[sel], [relevant[i] for i in sel], ks)

    report: dict[str, Any] = {
        "dataset": dataset.name,
        "dataset_digest": dataset.digest(),
        "model": {"space_id": embedder.space_id, "manifest_digest": embedder.manifest.digest()},
        "retrieval": retrieval,
        "n_queries": len(dataset.queries),
        "n_corpus": len(dataset.corpus),
        "n_out_of_scope": int((~in_scope).sum()),
        "metrics": metrics_for(np.ones(len(in_scope), dtype=bool)),
    }
    if ex_info is not None:
        report["exemplars"] = ex_info
    sel = np.flatnonzero(in_scope)
    report["recall_curve"] = recall_curve(ranked[sel], [relevant[i] for i in sel], CURVE_K)
    if (~in_scope).any():
        correct = np.array([int(r[0]) in rel for r, rel in zip(ranked, relevant, strict=True)])
        report["out_of_scope"] = _out_of_scope(
            score, ~in_scope, correct, threshold, cv, doc_vecs, exemplar_rule
        )
    slices: dict[str, dict[str, dict[str, float]]] = {}
    keys = sorted({k for q in dataset.queries for k in q.attrs})
    for key in keys:
        values = sorted({q.attrs[key] for q in dataset.queries if key in q.attrs})
        for value in values:
            mask = np.array([q.attrs.get(key) == value for q in dataset.queries])
            n = int((mask & in_scope).sum())
            if n < MIN_SLICE:
                continue
            m = metrics_for(mask)
            slices.setdefault(key, {})[value] = {
                "n": n,
                **{k: round(v, 6) for k, v in m.items() if k in ("recall@10", "mrr@10", "ndcg@10")},
            }
    report["slices"] = slices
    progress("measuring query latency")
    report["latency_ms"] = _latency(embedder, dataset, latency_sample)
    report["metrics"] = {k: round(v, 6) for k, v in report["metrics"].items()}
    return report
