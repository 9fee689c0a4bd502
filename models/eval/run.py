"""``crossroute eval``: embed a dataset with a bundle, retrieve exactly, score, slice."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.embedder import Embedder, EmbeddingBatch
from models.eval.dataset import Dataset, DatasetError
from models.eval.metrics import best_f1_threshold, oos_scores, rank_metrics, recall_curve
from models.progress import Progress, no_progress
from models.projection import l2_normalize

__all__ = [
    "Exemplars",
    "Search",
    "embed_items",
    "evaluate",
    "exact_search",
    "exemplar_pairs",
]


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


def exemplar_pairs(dataset: Dataset) -> list[tuple[str, str]]:
    """(query text, relevant corpus id) of every labelled text query: exemplars for another split."""
    return [
        (q.text, doc)
        for q in dataset.queries
        if q.text and q.text.strip()
        for doc in sorted(dataset.qrels.get(q.id, ()))
    ]


def _cross_validated(
    dataset: Dataset,
    embedder: Embedder,
    query_vecs: np.ndarray,
    doc_vecs: np.ndarray,
    depth: int,
    folds: int,
    search: Search,
    index: dict[str, int],
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Rank each fold with the other folds' labelled queries as exemplars (seeded folds)."""
    n = len(dataset.queries)
    fold = np.random.default_rng(20261126).permutation(n) % folds
    rows, owners = [], []
    for i, q in enumerate(dataset.queries):
        if q.text and q.text.strip():
            for doc in sorted(dataset.qrels.get(q.id, ())):
                rows.append(i)
                owners.append(index[doc])
    rows_a, owners_a = np.array(rows, dtype=np.int64), np.array(owners, dtype=np.int64)
    pool = Exemplars(query_vecs[rows_a], owners_a)
    ranked = np.full((n, depth), -1, dtype=np.int64)
    top1 = np.zeros(n, dtype=np.float64)
    for f in range(folds):
        sel = np.flatnonzero(fold == f)
        r, t = search(doc_vecs, query_vecs[sel], depth, pool.take(fold[rows_a] != f))
        ranked[sel], top1[sel] = r, t
    info = {"source": f"{folds}-fold cross-validation on this dataset's queries", "n": len(rows)}
    return ranked, top1, info


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
    exemplar_folds: int = 0,
) -> dict[str, Any]:
    """Run the evaluation and return the report object of the EVAL.md contract (plus extras).

    ``search`` ranks the corpus for the queries: exact by default; ``router`` passes one that goes
    through the real Redis index (``crossroute eval --index redis``), described by ``retrieval``.
    ``exemplars``: (text, corpus id) pairs of labelled past queries (another split's queries and
    qrels) that vote for their document. ``exemplar_folds`` = k > 1: k-fold cross-validation on this
    dataset's own labelled queries: each fold is ranked with the other folds' queries as exemplars
    (how to measure exemplar routing on a split without leaking a query into its own ranking).
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
    given = [(t, index[d]) for t, d in exemplars if d in index and t.strip()]
    ex_info: dict[str, Any] | None = None
    if exemplar_folds > 1:
        ranked, top1, ex_info = _cross_validated(
            dataset, embedder, query_vecs, doc_vecs, depth, exemplar_folds, search, index
        )
    else:
        ex = None
        if given:
            vecs = embedder.embed_texts([t for t, _ in given]).vectors
            ex = Exemplars(vecs, np.array([o for _, o in given], dtype=np.int64))
            ex_info = {
                "source": "given",
                "n": len(given),
                "unknown_documents": len(exemplars) - len(given),
            }
        ranked, top1 = search(doc_vecs, query_vecs, depth, ex)
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
        source = "given"
        if threshold is None:
            threshold, source = best_f1_threshold(top1, ~in_scope), "fit on this dataset (oracle)"
        report["out_of_scope"] = {
            **oos_scores(top1, ~in_scope, threshold),
            "threshold_source": source,
        }
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
