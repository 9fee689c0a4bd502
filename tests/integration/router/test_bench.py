"""The index and routing benchmarks on the real Redis, at test size: the report's keys and the
numbers that must hold whatever the machine (HNSW recall at a generous EF_RUNTIME on a small index,
routing overhead measured beside the encoder)."""

from __future__ import annotations

from pathlib import Path

import redis

from models.embedder import Embedder
from models.eval.dataset import load_dataset
from router.bench import IndexGrid, bench_index, bench_route, route_cases
from router.index import VectorIndex
from router.loading import index_dataset
from router.routing import Router
from router.settings import IndexSettings, RoutingSettings
from tests.conftest import require_shared_data


def test_bench_index_reports_recall_latency_and_memory_per_setting(
    redis_client: redis.Redis, embedder: Embedder, tmp_path: Path
) -> None:
    grid = IndexGrid(m=(16,), ef_construction=(100,), ef_runtime=(10, 200))
    report = bench_index(
        redis_client, embedder, require_shared_data(), n=2400, real=800, queries=100, grid=grid,
        cache_dir=tmp_path,
    )  # fmt: skip
    assert report["vectors"]["real"] == 800 and report["vectors"]["augmented"] == 1600
    (build,) = report["builds"]
    assert build["load_docs_per_s"] > 0 and build["bytes_per_doc"] > 4 * report["vectors"]["dim"]
    runs = {(r["ef_runtime"], r["filter"]): r for r in build["runs"]}
    assert set(runs) == {(ef, f) for ef in (10, 200) for f in ("none", "tenant", "tenant+category")}
    for f in ("none", "tenant", "tenant+category"):
        assert runs[200, f]["recall_at_10"] >= 0.95  # 2,400 vectors, EF_RUNTIME 200
        assert runs[200, f]["recall_at_10"] >= runs[10, f]["recall_at_10"]
    best = report["best"]
    assert set(best["params"]) == {"M", "EF_CONSTRUCTION", "EF_RUNTIME"}
    assert best["meets_recall"] == (best["recall_at_10"] >= 0.98)
    # the cache serves the second run: same vectors
    again = bench_index(
        redis_client, embedder, require_shared_data(), n=2400, real=800, queries=100,
        grid=IndexGrid(m=(16,), ef_construction=(100,), ef_runtime=(200,)), cache_dir=tmp_path,
    )  # fmt: skip
    assert again["vectors"] == report["vectors"]


def test_bench_route_measures_overhead_beside_the_encoder(
    redis_client: redis.Redis, embedder: Embedder, tmp_path: Path
) -> None:
    data = require_shared_data()
    index = VectorIndex.for_manifest(
        redis_client, embedder.manifest, IndexSettings(namespace="benchtest")
    )
    try:
        for name in ("stackfaq", "photo-routing"):
            index_dataset(load_dataset(data / name), embedder, index, tenant="bench")
        router = Router(embedder, index, RoutingSettings(threshold=0.3, calibration_dir=tmp_path))
        report = bench_route(router, route_cases(data, 8, "bench"), requests=8, concurrency=(1, 4))
    finally:
        index.drop()
    for kind in ("text", "photo", "screenshot"):
        r = report[kind]
        assert r["requests"] == 8
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        # the encoder is part of the route: route minus encoder, paired per request, is positive
        # (not route p95 against encoder p95 of separate samples: with a few ms of overhead, the
        # encoder's own jitter decides that comparison)
        assert r["encoder_p95_ms"] > 0 and r["overhead_p95_ms"] > 0
    # a screenshot (OCR) costs more to encode than a text
    assert report["screenshot"]["encoder_p95_ms"] > report["text"]["encoder_p95_ms"]
    assert [c["clients"] for c in report["concurrency"]] == [1, 4]
    assert all(c["requests_per_s"] > 0 for c in report["concurrency"])
