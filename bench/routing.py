"""Regenerate the routing table of docs/routing.md: support routing with exemplars, cross-validated.

    .venv/bin/python bench/routing.py --data ../shared/data --model BUNDLE [--model BUNDLE2 ...] \
        --out bench/routing.json --markdown docs/routing-table.md [--no-redis]

For each bundle and support dataset, exact search:

- ``articles``: the corpus alone (no exemplars); out-of-scope F1 at the oracle threshold;
- ``cv5 plain``: exemplars by plain 5-fold cross-validation on the dataset's own labelled queries
  (the old protocol: a query's near-duplicates serve as its exemplars, so it overstates);
- ``cv5 grouped``: near-duplicate queries kept in one fold (models/eval/cv.py), the protocol to trust;
- ``+human``: the other folds' out-of-scope queries are exemplars of the human queue (datasets with
  out-of-scope queries only);
- ``+prototype``: a target scores the cosine with its prototype (the normalised sum of its own and
  its exemplars' vectors) instead of the best single cosine.

With cross-validation, out-of-scope F1 is measured at thresholds fitted on the other folds only
(``cross-validated``); the oracle's (fitted on the scored queries) is kept beside it, labelled. Unless
``--no-redis``, the article-only and the ``cv5 grouped +human`` runs are repeated through the real
Redis index (the dev stack, or REDIS_URL) with HNSW recall@10 against exact.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.embedder import Embedder, EmbeddingBatch
from models.eval.dataset import load_dataset
from models.eval.run import evaluate

DATASETS = ("banking77", "clinc150", "stackfaq")
RUNS: dict[str, dict[str, Any]] = {
    f"cv5 {folds}{' +human' * human}{' +prototype' * proto}": {
        "exemplar_folds": 5,
        "latency_sample": 0,
        "grouped": folds == "grouped",
        "human_exemplars": human,
        "exemplar_rule": "prototype" if proto else "max",
    }
    for folds in ("plain", "grouped")
    for human in (False, True)
    for proto in (False, True)
}


class CachedEmbedder:
    """An :class:`Embedder` that embeds each text once per process (every run re-embeds the same
    dataset; the vectors are the same)."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._texts: dict[str, tuple[np.ndarray, Any]] = {}
        self._features: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)

    def embed_texts(self, texts: Sequence[str], **kwargs: Any) -> EmbeddingBatch:
        missing = list(dict.fromkeys(t for t in texts if t not in self._texts))
        if missing:
            batch = self._embedder.embed_texts(missing, **kwargs)
            for t, v, e in zip(missing, batch.vectors, batch.errors, strict=True):
                self._texts[t] = (v, e)
        got = [self._texts[t] for t in texts]
        vectors = np.stack([v for v, _ in got]) if got else np.zeros((0, self._embedder.dim))
        return EmbeddingBatch(self._embedder.space_id, vectors, tuple(e for _, e in got))

    def text_features(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._features))
        if missing:
            feats = self._embedder.text_features(missing, **kwargs)
            self._features.update(zip(missing, feats, strict=True))
        return np.stack([self._features[t] for t in texts])


def _row(report: dict[str, Any]) -> dict[str, Any]:
    oos = report.get("out_of_scope") or {}
    oracle = oos.get("oracle") or {}
    return {
        "recall@1": report["metrics"]["recall@1"],
        "recall@10": report["metrics"]["recall@10"],
        "ndcg@10": report["metrics"]["ndcg@10"],
        "oos_f1": oos.get("f1"),
        "oos_precision": oos.get("precision"),
        "oos_recall": oos.get("recall"),
        "oos_threshold": oos.get("threshold"),
        "oos_threshold_source": oos.get("threshold_source"),
        "oos_in_scope_accuracy": oos.get("in_scope_accuracy"),
        "oracle_oos_f1": oracle.get("f1"),
        "oracle_oos_threshold": oracle.get("threshold"),
        "oracle_oos_threshold_source": oracle.get("threshold_source"),
        "groups": (report.get("exemplars") or {}).get("groups"),
        "hnsw_recall@10_vs_exact": (report.get("hnsw") or {}).get("recall@10_vs_exact"),
    }


def _f1(row: dict[str, Any], prefix: str = "") -> str:
    f1 = row[f"{prefix}oos_f1"]
    if f1 is None:
        return "-"
    source = row.get(f"{prefix}oos_threshold_source") or "threshold source not recorded"
    return f"{f1:.3f} (t={row[f'{prefix}oos_threshold']:.3f}, {source})"


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "| bundle | dataset | run | recall@1 | recall@10 | out-of-scope F1 (threshold, source) "
        "| in-scope accuracy | oracle out-of-scope F1 | groups | HNSW recall@10 vs exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for bundle, per in results["bundles"].items():
        for name, runs in per.items():
            for run, row in runs.items():
                if run == "query_embed_ms":
                    continue
                acc = row["oos_in_scope_accuracy"]
                hnsw = row["hnsw_recall@10_vs_exact"]
                lines.append(
                    f"| {bundle} | {name} | {run} | {row['recall@1']:.3f} | {row['recall@10']:.3f} "
                    f"| {_f1(row)} | {'-' if acc is None else f'{acc:.3f}'} "
                    f"| {_f1(row, 'oracle_')} | {row['groups'] or '-'} "
                    f"| {'-' if hnsw is None else f'{hnsw:.4f}'} |"
                )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", type=Path, action="append", required=True)
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--no-redis", action="store_true", help="exact search only (no Redis runs)")
    ap.add_argument("--out", type=Path, default=Path("bench/routing.json"))
    ap.add_argument("--markdown", type=Path, default=Path("docs/routing-table.md"))
    args = ap.parse_args()
    results: dict[str, Any] = {"bundles": {}}
    redis_eval = None
    if not args.no_redis:
        import redis

        from router.evaluate import evaluate_on_redis
        from router.settings import IndexSettings

        client, settings = redis.Redis.from_url(args.redis_url), IndexSettings()
        results["index"] = settings.model_dump()

        def redis_eval(data: Any, embedder: Any, **kwargs: Any) -> dict[str, Any]:
            return evaluate_on_redis(data, embedder, client, settings, **kwargs)

    for bundle in args.model:
        embedder = Embedder.load(bundle)
        cached: Any = CachedEmbedder(embedder)
        per: dict[str, Any] = {}
        for name in DATASETS:
            data = load_dataset(args.data / name)
            runs = {"articles": evaluate(data, embedder, latency_sample=50)}
            for run, options in RUNS.items():
                if "+human" in run and data.n_out_of_scope == 0:
                    continue  # no out-of-scope queries: the same as without
                runs[run] = evaluate(data, cached, **options)
            if redis_eval is not None:
                runs["redis articles"] = redis_eval(data, embedder, latency_sample=0)
                runs["redis cv5 grouped +human"] = redis_eval(
                    data, embedder, **RUNS["cv5 grouped +human"]
                )
            per[name] = {k: _row(v) for k, v in runs.items()}
            per[name]["query_embed_ms"] = runs["articles"]["latency_ms"]
            print(f"{embedder.space_id} {name}: {json.dumps(per[name])}", flush=True)
        head = embedder.manifest.spec.head.method
        results["bundles"][f"{head} ({embedder.space_id})"] = per
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.markdown.write_text(_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
