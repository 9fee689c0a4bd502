"""Regenerate the routing table of docs/routing.md: support routing through the real Redis index.

    .venv/bin/python bench/routing.py --data ../shared/data --model BUNDLE [--model BUNDLE2 ...] \
        --out bench/routing.json --markdown docs/routing-table.md

For each bundle and support dataset: exact search vs the Redis HNSW index (recall@1, HNSW recall@10 vs
exact), without and with exemplars (5-fold cross-validation on the dataset's own labelled queries:
each query is ranked with the *other* folds' queries as resolved tickets), and the out-of-scope F1 at
the threshold that `crossroute calibrate` fits. Needs a Redis Stack (the dev stack, or REDIS_URL).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import redis

from models.embedder import Embedder
from models.eval.dataset import load_dataset
from models.eval.run import evaluate
from router.evaluate import evaluate_on_redis
from router.settings import IndexSettings

DATASETS = ("banking77", "clinc150", "stackfaq")


def _row(report: dict[str, Any]) -> dict[str, Any]:
    oos = report.get("out_of_scope") or {}
    return {
        "recall@1": report["metrics"]["recall@1"],
        "recall@10": report["metrics"]["recall@10"],
        "ndcg@10": report["metrics"]["ndcg@10"],
        "oos_f1": oos.get("f1"),
        "oos_threshold": oos.get("threshold"),
        "oos_threshold_source": oos.get("threshold_source"),
        "hnsw_recall@10_vs_exact": (report.get("hnsw") or {}).get("recall@10_vs_exact"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", type=Path, action="append", required=True)
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--out", type=Path, default=Path("bench/routing.json"))
    ap.add_argument("--markdown", type=Path, default=Path("docs/routing-table.md"))
    args = ap.parse_args()
    client = redis.Redis.from_url(args.redis_url)
    settings = IndexSettings()
    results: dict[str, Any] = {"index": settings.model_dump(), "bundles": {}}
    for bundle in args.model:
        embedder = Embedder.load(bundle)
        per: dict[str, Any] = {}
        for name in DATASETS:
            data = load_dataset(args.data / name)
            runs = {
                "exact": evaluate(data, embedder, latency_sample=50),
                "redis": evaluate_on_redis(data, embedder, client, settings, latency_sample=0),
                "exact+exemplars(cv5)": evaluate(
                    data, embedder, latency_sample=0, exemplar_folds=5
                ),
                "redis+exemplars(cv5)": evaluate_on_redis(
                    data, embedder, client, settings, latency_sample=0, exemplar_folds=5
                ),
            }
            per[name] = {k: _row(v) for k, v in runs.items()}
            per[name]["query_embed_ms"] = runs["exact"]["latency_ms"]
            print(f"{embedder.space_id} {name}: {json.dumps(per[name])}", flush=True)
        head = embedder.manifest.spec.head.method
        results["bundles"][f"{head} ({embedder.space_id})"] = per
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| bundle | dataset | retrieval | recall@1 | recall@10 | out-of-scope F1 | HNSW recall@10 vs exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for bundle, per in results["bundles"].items():
        for name, runs in per.items():
            for run, row in runs.items():
                if run == "query_embed_ms":
                    continue
                f1 = (
                    "-"
                    if row["oos_f1"] is None
                    else f"{row['oos_f1']:.3f} (t={row['oos_threshold']:.3f}, "
                    f"{row.get('oos_threshold_source') or 'threshold source not recorded'})"
                )
                hnsw = (
                    "-"
                    if row["hnsw_recall@10_vs_exact"] is None
                    else f"{row['hnsw_recall@10_vs_exact']:.4f}"
                )
                lines.append(
                    f"| {bundle} | {name} | {run} | {row['recall@1']:.3f} | {row['recall@10']:.3f} "
                    f"| {f1} | {hnsw} |"
                )
    args.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
