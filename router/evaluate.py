"""``crossroute eval --index redis``: the offline evaluation, retrieved through the real Redis index.

The corpus vectors are written into a throw-away index of the bundle's space (its own namespace, so
it never touches a serving index), each query runs as a KNN query with the serving HNSW parameters,
and the same metrics are computed. The exact ranking is computed alongside, so the report also says
how much the approximate index loses: ``hnsw.recall@10_vs_exact``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis

from models.embedder import Embedder
from models.eval.dataset import Dataset
from models.eval.run import Exemplars, evaluate, exact_search
from models.exceptions import UsageError
from router.index import Filters, IndexDoc, SpaceInfo, VectorIndex
from router.routing import Calibration, save_calibration
from router.settings import IndexSettings

__all__ = ["RedisSearch", "calibrate", "evaluate_on_redis"]

TENANT = "eval"


class RedisSearch:
    """A :data:`models.eval.run.Search` backed by a temporary Redis index of one space."""

    def __init__(
        self,
        client: redis.Redis,
        space: SpaceInfo,
        settings: IndexSettings,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        temp = settings.model_copy(update={"namespace": f"crossroute-eval-{uuid.uuid4().hex[:8]}"})
        self.index = VectorIndex(client, space, temp)
        self.progress = progress
        self.overlap: list[float] = []

    def __call__(
        self,
        doc_vecs: np.ndarray,
        query_vecs: np.ndarray,
        depth: int,
        exemplars: Exemplars | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        index = self.index
        index.create()
        try:
            return self._search(doc_vecs, query_vecs, depth, exemplars)
        finally:
            index.drop()

    def _search(
        self,
        doc_vecs: np.ndarray,
        query_vecs: np.ndarray,
        depth: int,
        exemplars: Exemplars | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        index = self.index
        space = index.space_id
        docs = [IndexDoc(str(i), TENANT, "article", v, 1, space) for i, v in enumerate(doc_vecs)]
        if exemplars is not None:
            docs += [
                IndexDoc(f"x{j}", TENANT, "exemplar", v, 1, space, parent=str(int(o)))
                for j, (v, o) in enumerate(zip(exemplars.vectors, exemplars.owner, strict=True))
            ]
        for start in range(0, len(docs), 500):
            index.upsert(docs[start : start + 500])
        if self.progress:
            self.progress(f"indexed {len(docs)} documents in Redis; querying")
        ranked = np.full((len(query_vecs), depth), -1, dtype=np.int64)
        top1 = np.full(len(query_vecs), -1.0, dtype=np.float64)
        filters = Filters(tenant=TENANT)
        # Exemplars share their document's slot: fetch enough candidates to fill ``depth`` targets.
        k = depth if exemplars is None else min(len(docs), depth * 10)
        for i, q in enumerate(query_vecs):
            best: dict[int, float] = {}
            for hit in index.knn(q, space, k, filters):
                target = int(hit.target)
                best[target] = max(best.get(target, -2.0), hit.score)
            order = sorted(best, key=lambda t: -best[t])[:depth]
            ranked[i, : len(order)] = order
            if order:
                top1[i] = best[order[0]]
        exact, _ = exact_search(doc_vecs, query_vecs, depth, exemplars)
        cut = min(10, depth)
        self.overlap += [
            len(set(ranked[i, :cut]) & set(exact[i, :cut])) / cut for i in range(len(query_vecs))
        ]
        return ranked, top1

    def close(self) -> None:
        """Drop the temporary index (if a search left it)."""
        self.index.drop()


def evaluate_on_redis(
    dataset: Dataset,
    embedder: Embedder,
    client: redis.Redis,
    settings: IndexSettings,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`models.eval.run.evaluate` with retrieval through a real (temporary) Redis index."""
    search = RedisSearch(client, SpaceInfo.from_manifest(embedder.manifest), settings)
    s = settings
    try:
        report = evaluate(
            dataset,
            embedder,
            search=search,
            retrieval=f"redis HNSW (M={s.hnsw_m}, ef_construction={s.hnsw_ef_construction}, "
            f"ef_runtime={s.hnsw_ef_runtime}), cosine",
            **kwargs,
        )
    finally:
        search.close()
    report["hnsw"] = {
        "recall@10_vs_exact": round(float(np.mean(search.overlap)), 6) if search.overlap else None,
        "m": s.hnsw_m,
        "ef_construction": s.hnsw_ef_construction,
        "ef_runtime": s.hnsw_ef_runtime,
    }
    return report


def calibrate(
    dataset: Dataset,
    embedder: Embedder,
    directory: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[Calibration, Path]:
    """Fit the abstain threshold of the embedder's space on ``dataset`` (the out-of-scope F1 optimum)
    and store it as ``{space_id}.json`` in ``directory`` (see :func:`router.routing.calibration_dir`).

    Raises:
        UsageError: the dataset has no out-of-scope queries to fit a threshold on.
    """
    if dataset.n_out_of_scope == 0:
        raise UsageError(
            f"{dataset.name} has no out-of-scope queries (queries without qrels): cannot fit an "
            "abstain threshold on it"
        )
    report = evaluate(dataset, embedder, latency_sample=0, progress=progress)
    oos = report["out_of_scope"]
    cal = Calibration(
        space_id=embedder.space_id, threshold=oos["threshold"], dataset=dataset.name,
        dataset_digest=report["dataset_digest"], precision=oos["precision"],
        recall=oos["recall"], f1=oos["f1"], n_queries=report["n_queries"],
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    return cal, save_calibration(directory, cal)
