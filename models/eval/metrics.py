"""Retrieval metrics (binary relevance): recall@K as hit rate, MRR@10 and nDCG@10 as in BEIR, and
out-of-scope detection scored as precision/recall/F1 of the abstain decision."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["best_f1_threshold", "detection_scores", "oos_scores", "rank_metrics", "recall_curve"]


def _first_hit(ranked: np.ndarray, relevant: Sequence[frozenset[int]]) -> np.ndarray:
    """1-based rank of the first relevant document in each row (0 when none in the list)."""
    out = np.zeros(len(ranked), dtype=np.int64)
    for i, (row, rel) in enumerate(zip(ranked, relevant, strict=True)):
        for r, doc in enumerate(row, start=1):
            if int(doc) in rel:
                out[i] = r
                break
    return out


def rank_metrics(
    ranked: np.ndarray, relevant: Sequence[frozenset[int]], ks: Sequence[int]
) -> dict[str, float]:
    """Metrics over in-scope queries. ``ranked``: (n, ≥max(ks, 10)) corpus indices, best first."""
    if len(ranked) == 0:
        return {}
    first = _first_hit(ranked, relevant)
    out = {f"recall@{k}": float(np.mean((first > 0) & (first <= k))) for k in ks}
    rr = np.where((first > 0) & (first <= 10), 1.0 / np.maximum(first, 1), 0.0)
    out["mrr@10"] = float(rr.mean())
    ndcg = []
    for row, rel in zip(ranked[:, :10], relevant, strict=True):
        gains = np.array([1.0 if int(d) in rel else 0.0 for d in row])
        dcg = float((gains / np.log2(np.arange(2, len(gains) + 2))).sum())
        ideal = min(len(rel), 10)
        idcg = float((1.0 / np.log2(np.arange(2, ideal + 2))).sum())
        ndcg.append(dcg / idcg if idcg > 0 else 0.0)
    out["ndcg@10"] = float(np.mean(ndcg))
    return out


def recall_curve(ranked: np.ndarray, relevant: Sequence[frozenset[int]], max_k: int) -> list[float]:
    """recall@1 … recall@max_k."""
    first = _first_hit(ranked[:, :max_k], relevant)
    return [float(np.mean((first > 0) & (first <= k))) for k in range(1, max_k + 1)]


def oos_scores(top1: np.ndarray, is_oos: np.ndarray, threshold: float) -> dict[str, float]:
    """Abstain (top-1 score < threshold) scored as a detector of out-of-scope queries."""
    return {"threshold": float(threshold), **detection_scores(top1 < threshold, is_oos)}


def detection_scores(abstain: np.ndarray, is_oos: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of the abstain decisions as a detector of out-of-scope queries."""
    tp = int(np.sum(abstain & is_oos))
    fp = int(np.sum(abstain & ~is_oos))
    fn = int(np.sum(~abstain & is_oos))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def best_f1_threshold(top1: np.ndarray, is_oos: np.ndarray) -> float:
    """The abstain threshold that maximises out-of-scope F1 on these scores (ties: the lowest)."""
    candidates = np.unique(top1)
    best, best_f1 = float(candidates[0]), -1.0
    for i, c in enumerate(candidates):
        # Abstaining below the midpoint to the next score separates exactly at c.
        t = float((c + candidates[i + 1]) / 2) if i + 1 < len(candidates) else float(c) + 1e-6
        f1 = oos_scores(top1, is_oos, t)["f1"]
        if f1 > best_f1:
            best, best_f1 = t, f1
    return best
