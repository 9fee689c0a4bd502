"""``crossroute bench index``: HNSW on real catalog embeddings, recall against exact search, latency,
load rate and memory, over a grid of M / EF_CONSTRUCTION / EF_RUNTIME, with and without filters.

**Vectors.** The catalog's product images (``myntra-t2i``: the corpus images, then the pair
images, sorted by path) are embedded by the bundle, once, and cached. When fewer than ``n`` are
wanted, more are made from them: copy ``j`` of real vector ``x`` is ``normalize(x + sigma * g_j)`` with
Gaussian ``g_j`` and ``sigma`` set so that a copy's cosine with its source is about 0.9 (a near
duplicate: another shot of that product). Copies crowd the neighbourhoods of real products, which makes search
harder, not easier. Every document gets one of 10 tenants (by its row, round robin) and the
article type of its nearest corpus product (the corpus carries it) as its category.

**Queries.** The catalog's real text queries (``myntra-t2i`` queries: text → image search),
embedded by the bundle. Three filters: ``none`` (a raw KNN over the whole index), ``tenant`` (one
tenant of 10: about 10 % of the index) and ``tenant+category`` (that tenant and the query's
category, the most common article types first). The truth is exact cosine search under the same
filter (numpy).

**Reported** per build (M, EF_CONSTRUCTION): load rate (documents/s through the versioned write
path, until indexing is complete), memory per document (``used_memory`` before and after, so the
HASH and its vector count); per EF_RUNTIME and filter: recall@10 against exact, p50/p95 latency
and QPS of one sequential client (including the Redis round trip). ``best`` is the cheapest
setting (lowest worst-filter p50) whose recall@10 is ≥ 0.98 under every filter.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.commands.search.query import Query

from models.embedder import Embedder
from models.eval.dataset import load_dataset
from router.connection import reply_text
from router.index import Filters, IndexDoc, SpaceInfo, VectorIndex, _ft_info
from router.settings import IndexSettings

__all__ = [
    "GRID",
    "QUICK_GRID",
    "IndexGrid",
    "bench_index",
    "catalog_vectors",
    "load_catalog",
    "wait_indexed",
]

TENANTS = 10
TARGET_COSINE = 0.9


@dataclass(frozen=True)
class IndexGrid:
    """The HNSW settings tried."""

    m: tuple[int, ...]
    ef_construction: tuple[int, ...]
    ef_runtime: tuple[int, ...]


GRID = IndexGrid(m=(8, 16, 32), ef_construction=(100, 200), ef_runtime=(10, 20, 50, 100, 200))
QUICK_GRID = IndexGrid(m=(16,), ef_construction=(100,), ef_runtime=(10, 50, 100))
"""The default build (``IndexSettings``: M 16, EF_CONSTRUCTION 100) and three EF_RUNTIME."""


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


def catalog_vectors(
    embedder: Embedder,
    data_root: Path,
    n: int,
    cache_dir: Path,
    progress: Callable[[str], None] = lambda _: None,
    *,
    real: int | None = None,
) -> tuple[np.ndarray, list[str], int, np.ndarray, list[str]]:
    """``n`` catalog vectors (up to ``real`` real ones first, then augmented), their categories,
    how many are real, and the real text queries with their categories.

    Raises:
        FileNotFoundError: ``data_root/myntra-t2i`` is missing.
    """
    data = load_dataset(data_root / "myntra-t2i")
    corpus_images = sorted(d.image for d in data.corpus if d.image)
    corpus_type = {d.image: d.attrs.get("article_type", "other") for d in data.corpus if d.image}
    pairs = sorted(
        {json.loads(line)["image"] for line in (data.root / "pairs.jsonl").read_text().splitlines()}
        - set(corpus_images)
    )
    images = [*corpus_images, *pairs][: max(min(n, real or n), 1)]
    key = hashlib.sha256(f"{embedder.space_id}:{len(images)}".encode()).hexdigest()[:16]
    cache = cache_dir / f"catalog-{key}.npy"
    if cache.is_file():
        embedded = np.load(cache)
    else:
        parts = []
        for start in range(0, len(images), 256):
            batch = images[start : start + 256]
            parts.append(embedder.embed_images([data.root / p for p in batch]).vectors)
            progress(f"embedded {start + len(batch)}/{len(images)} catalog images")
        embedded = np.concatenate(parts).astype(np.float32)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache, embedded)
    n_corpus = len(corpus_images)
    corpus_vecs = embedded[:n_corpus]
    nearest = np.argmax(embedded @ corpus_vecs.T, axis=1)
    categories = [corpus_type[corpus_images[i]] for i in nearest]
    vecs = embedded
    if n > len(embedded):
        rng = np.random.default_rng(20261203)
        dim = embedded.shape[1]
        # cos(x, x + sigma g) ~ 1/sqrt(1 + sigma^2 dim) for unit x: solve for the target cosine
        sigma = float(np.sqrt((1 / TARGET_COSINE**2 - 1) / dim))
        src = np.arange(n - len(embedded)) % len(embedded)
        extra = _unit(
            embedded[src] + sigma * rng.standard_normal((len(src), dim)).astype(np.float32)
        )
        vecs = np.concatenate([embedded, extra])
        categories += [categories[i] for i in src]
    queries = [q for q in data.queries if q.text]
    q_vecs = embedder.embed_texts([q.text or "" for q in queries]).vectors
    q_cats = [q.attrs.get("article_type", "other") for q in queries]
    return vecs[:n], categories[:n], min(len(embedded), n), q_vecs, q_cats


def _percentiles(ms: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(ms)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def bench_index(
    client: redis.Redis,
    embedder: Embedder,
    data_root: Path,
    *,
    n: int = 100_000,
    real: int | None = None,
    queries: int = 500,
    grid: IndexGrid = GRID,
    cache_dir: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the grid (see the module docstring) in a throw-away namespace; return the report."""
    vecs, cats, n_real, q_all, q_cats_all = catalog_vectors(
        embedder, data_root, n, cache_dir, progress, real=real
    )
    n = len(vecs)
    tenants = [f"t{i % TENANTS}" for i in range(n)]
    common = [c for c, _ in sorted(_count(cats).items(), key=lambda kv: -kv[1])]
    picked = [i for i, c in enumerate(q_cats_all) if c in set(common[:20])][:queries]
    q_vecs = q_all[picked]
    q_cats = [q_cats_all[i] for i in picked]
    q_tenants = [f"t{i % TENANTS}" for i in range(len(picked))]
    tenant_arr, cat_arr = np.array(tenants), np.array(cats)
    scores = q_vecs @ vecs.T
    truth: dict[str, list[np.ndarray]] = {"none": [], "tenant": [], "tenant+category": []}
    for qi in range(len(q_vecs)):
        masks = {
            "none": np.ones(n, dtype=bool),
            "tenant": tenant_arr == q_tenants[qi],
            "tenant+category": (tenant_arr == q_tenants[qi]) & (cat_arr == q_cats[qi]),
        }
        for name, mask in masks.items():
            s = np.where(mask, scores[qi], -np.inf)
            top = np.argsort(-s)[:10]
            truth[name].append(top[np.isfinite(s[top])])
    space = SpaceInfo.from_manifest(embedder.manifest)
    builds: list[dict[str, Any]] = []
    for m in grid.m:
        for efc in grid.ef_construction:
            settings = IndexSettings(
                namespace=f"bench{hashlib.sha256(str(time.time()).encode()).hexdigest()[:8]}",
                hnsw_m=m, hnsw_ef_construction=efc,
            )  # fmt: skip
            index = VectorIndex(client, space, settings)
            try:
                builds.append(
                    _one_build(index, vecs, tenants, cats, q_vecs, q_tenants, q_cats, truth, grid,
                               progress)
                )  # fmt: skip
            finally:
                index.drop()
    best = _best(builds)
    return {
        "vectors": {
            "n": n, "real": n_real, "augmented": n - n_real, "dim": int(vecs.shape[1]),
            "source": "myntra-t2i catalog images (corpus, then pair images), embedded by the bundle",
            "augmentation": f"normalize(x + sigma*g), cosine to its source ~{TARGET_COSINE}",
            "tenants": TENANTS, "categories": len(set(cats)),
        },
        "queries": {"n": len(q_vecs), "source": "myntra-t2i text queries (text -> image)"},
        "builds": builds,
        "best": best,
    }  # fmt: skip


def _count(items: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def load_catalog(
    index: VectorIndex,
    vecs: np.ndarray,
    tenants: Sequence[str],
    cats: Sequence[str],
    progress: Callable[[str], None] = lambda _: None,
) -> float:
    """Create ``index`` and write one product per vector through the versioned write path, 500
    per pipeline; return the seconds until RediSearch has indexed them all."""
    s = index.settings
    index.create()
    space = index.space_id
    start = time.perf_counter()
    for lo in range(0, len(vecs), 500):
        docs = [
            IndexDoc(str(i), tenants[i], "product", vecs[i], 1, space, categories=(cats[i],))
            for i in range(lo, min(lo + 500, len(vecs)))
        ]
        index.upsert(docs)
        progress(f"M={s.hnsw_m} EF_CONSTRUCTION={s.hnsw_ef_construction}: loaded {lo + len(docs)}")
    wait_indexed(index)
    return time.perf_counter() - start


def wait_indexed(index: VectorIndex, poll_s: float = 0.1) -> None:
    """Wait until RediSearch reports the index fully indexed (``percent_indexed`` 1)."""
    while float(reply_text(_ft_info(index.client, index.name).get("percent_indexed", 1))) < 1:
        time.sleep(poll_s)


def _one_build(
    index: VectorIndex,
    vecs: np.ndarray,
    tenants: list[str],
    cats: list[str],
    q_vecs: np.ndarray,
    q_tenants: list[str],
    q_cats: list[str],
    truth: dict[str, list[np.ndarray]],
    grid: IndexGrid,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    s = index.settings
    client = index.client
    before = int(client.info("memory")["used_memory"])
    load_s = load_catalog(index, vecs, tenants, cats, progress)
    after = int(client.info("memory")["used_memory"])
    runs = []
    for ef in grid.ef_runtime:
        for name in truth:
            lat, hits = [], []
            for qi, q in enumerate(q_vecs):
                t0 = time.perf_counter()
                found = _query(index, q, name, q_tenants[qi], q_cats[qi], ef)
                lat.append((time.perf_counter() - t0) * 1000)
                want = {str(int(i)) for i in truth[name][qi]}
                if want:
                    hits.append(len(want & set(found)) / len(want))
            p50, p95 = _percentiles(lat)
            runs.append({
                "ef_runtime": ef, "filter": name, "recall_at_10": round(float(np.mean(hits)), 4),
                "p50_ms": round(p50, 3), "p95_ms": round(p95, 3),
                "qps": round(1000 / float(np.mean(lat)), 1),
            })  # fmt: skip
        progress(f"M={s.hnsw_m} EF_CONSTRUCTION={s.hnsw_ef_construction} EF_RUNTIME={ef}: done")
    return {
        "m": s.hnsw_m, "ef_construction": s.hnsw_ef_construction,
        "load_docs_per_s": round(len(vecs) / load_s, 1),
        "bytes_per_doc": round((after - before) / len(vecs), 1),
        "runs": runs,
    }  # fmt: skip


def _query(
    index: VectorIndex, q: np.ndarray, name: str, tenant: str, cat: str, ef: int
) -> list[str]:
    if name == "none":  # no filter: what the product never does (tenant is mandatory); a baseline
        query = (
            Query(f"*=>[KNN 10 @vector $vec EF_RUNTIME {ef} AS distance]")
            .return_fields("entity_id").sort_by("distance").paging(0, 10).dialect(2)
        )  # fmt: skip
        res = index.client.ft(index.name).search(query, {"vec": q.astype(np.float32).tobytes()})
        return [reply_text(getattr(d, "entity_id", "")) for d in res.docs]
    filters = Filters(tenant=tenant)
    if name == "tenant+category":
        filters = Filters(tenant=tenant, category=cat, category_only=True)
    return [h.id for h in index.knn(q, index.space_id, 10, filters, ef_runtime=ef)]


def _best(builds: list[dict[str, Any]]) -> dict[str, Any]:
    """The setting with every filter's recall@10 ≥ 0.98 and the lowest worst-filter p50."""
    candidates = []
    for b in builds:
        for ef in sorted({r["ef_runtime"] for r in b["runs"]}):
            rows = [r for r in b["runs"] if r["ef_runtime"] == ef]
            recall = min(r["recall_at_10"] for r in rows)
            p50 = max(r["p50_ms"] for r in rows)
            p95 = max(r["p95_ms"] for r in rows)
            qps = min(r["qps"] for r in rows)
            params = {"M": b["m"], "EF_CONSTRUCTION": b["ef_construction"], "EF_RUNTIME": ef}
            candidates.append((recall >= 0.98, -p50, recall, p95, qps, params, b))
    ok = [c for c in candidates if c[0]] or candidates
    good, neg_p50, recall, p95, qps, params, build = max(
        ok, key=lambda c: (c[1], c[2]) if c[0] else (c[2], c[1])
    )
    return {
        "recall_at_10": recall, "p50_ms": -neg_p50, "p95_ms": p95, "qps": qps, "params": params,
        "meets_recall": good, "bytes_per_doc": build["bytes_per_doc"],
        "load_docs_per_s": build["load_docs_per_s"],
    }  # fmt: skip


# -- bench route ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteCase:
    """One ticket of the routing bench: its JSON body and the same inputs for the encoder alone."""

    body: dict[str, Any]
    text: str
    photo: bytes | None = None
    screenshot: bytes | None = None


def _serve_in_thread(app: Any) -> tuple[Any, Any, str]:
    """Start ``app`` with uvicorn on a free loopback port in a thread; return (server, thread, url)."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start in 30 s")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def _pcts(ms: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {f"p{p}_ms": round(float(np.percentile(arr, p)), 3) for p in (50, 95, 99)}


def bench_route(
    router: Any,
    cases: dict[str, list[RouteCase]],
    *,
    requests: int,
    concurrency: Sequence[int] = (1, 4, 16),
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """``POST /v1/route`` latency per ticket kind at one client, beside the encoder latency of the
    same inputs in the same run (``Router.embed_ticket``: decode, OCR, encoders, fusion inputs),
    paired per request: ``overhead`` is route minus encoder for the same ticket (HTTP, JSON and
    base64, KNN, exemplars, decision). Then text tickets at several concurrent clients."""
    import concurrent.futures

    import httpx

    from router.api import create_app
    from router.auth import KeyStore
    from router.schemas import Ticket

    keys = KeyStore(router.index.client, router.index.settings.namespace)
    tenant = cases["text"][0].body["ticket"]["tenant"]  # the API is measured as served: with a key
    key, token = keys.create(tenant, ["route"], label="crossroute bench route", rate_per_s=1e9)
    server, thread, url = _serve_in_thread(create_app(router, keys=keys))
    report: dict[str, Any] = {}
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url, timeout=60, headers=auth) as client:
            for kind, kind_cases in cases.items():
                route_ms, enc_ms = [], []
                for i in range(requests + 5):
                    case = kind_cases[i % len(kind_cases)]
                    t0 = time.perf_counter()
                    response = client.post("/v1/route", json=case.body)
                    took = (time.perf_counter() - t0) * 1000
                    if response.status_code != 200:
                        raise RuntimeError(f"{kind}: {response.status_code} {response.text[:200]}")
                    ticket = Ticket(
                        id="bench", tenant=case.body["ticket"]["tenant"], text=case.text
                    )
                    t0 = time.perf_counter()
                    router.embed_ticket(ticket, photo=case.photo, screenshot=case.screenshot)
                    enc = (time.perf_counter() - t0) * 1000
                    if i >= 5:  # warm-up
                        route_ms.append(took)
                        enc_ms.append(enc)
                over = [r - e for r, e in zip(route_ms, enc_ms, strict=True)]
                report[kind] = {
                    **_pcts(route_ms),
                    "encoder_p95_ms": round(float(np.percentile(enc_ms, 95)), 3),
                    "overhead_p95_ms": round(float(np.percentile(over, 95)), 3),
                    "overhead_p50_ms": round(float(np.percentile(over, 50)), 3),
                    "requests": len(route_ms),
                }
                progress(f"{kind}: p95 {report[kind]['p95_ms']:.1f} ms")
            text_cases = cases["text"]
            levels = []
            for clients in concurrency:
                n = max(requests, clients * 4)

                def one(i: int) -> float:
                    case = text_cases[i % len(text_cases)]
                    t0 = time.perf_counter()
                    r = client.post("/v1/route", json=case.body)
                    if r.status_code != 200:
                        raise RuntimeError(f"{r.status_code} {r.text[:200]}")
                    return (time.perf_counter() - t0) * 1000

                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    lat = list(pool.map(one, range(n)))
                wall = time.perf_counter() - start
                levels.append(
                    {"clients": clients, "requests_per_s": round(n / wall, 1), **_pcts(lat)}
                )
                progress(f"text at {clients} clients: {n / wall:.1f} req/s")
            report["concurrency"] = levels
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        keys.delete(key.key_id)
    return report


def route_cases(data_root: Path, n: int, tenant: str) -> dict[str, list[RouteCase]]:
    """Text, text+photo and text+screenshot tickets from real data: stackfaq questions,
    photo-routing customer photos, and screenshots rendering stackfaq questions (PNG)."""
    import base64
    import io

    from PIL import Image, ImageDraw, ImageFont

    stack = load_dataset(data_root / "stackfaq")
    texts = [q.text for q in stack.queries if q.text][:n]
    photos = load_dataset(data_root / "photo-routing")
    photo_bytes = [(photos.root / q.image).read_bytes() for q in photos.queries if q.image][:n]

    def shot(text: str) -> bytes:
        img = Image.new("RGB", (900, 140), "white")
        font = ImageFont.load_default(size=26)
        ImageDraw.Draw(img).text((20, 50), text[:60], fill="black", font=font)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()

    def body(i: int, text: str, **images: bytes) -> dict[str, Any]:
        ticket: dict[str, Any] = {"id": f"bench-{i}", "tenant": tenant, "text": text}
        for name, data in images.items():
            ticket[name] = {"data": base64.b64encode(data).decode()}
        return {"ticket": ticket}

    ask = "It broke after three weeks. Is this covered?"
    return {
        "text": [RouteCase(body(i, t), t) for i, t in enumerate(texts)],
        "photo": [
            RouteCase(body(i, ask, photo=p), ask, photo=p) for i, p in enumerate(photo_bytes)
        ],
        "screenshot": [
            RouteCase(body(i, "I get this error", screenshot=s), "I get this error", screenshot=s)
            for i, s in enumerate(shot(t) for t in texts[: max(1, n // 2)])
        ],
    }
