"""Redis vector round trip on the real Redis Stack: HNSW index, upsert, filtered KNN, delete, and
the silent-failure mode (a wrong-size vector is only visible in ``hash_indexing_failures``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from redis.commands.search.field import NumericField, TagField, VectorField
from redis.commands.search.index_definition import IndexDefinition, IndexType
from redis.commands.search.query import Query

DIM = 16


@pytest.fixture
def index(redis_client: redis.Redis) -> Iterator[tuple[str, str]]:
    name = f"test-idx-{uuid.uuid4().hex[:8]}"
    prefix = f"test:{name}:"
    redis_client.ft(name).create_index(
        [
            TagField("kind"),
            TagField("tenant"),
            NumericField("source_version"),
            VectorField(
                "vec",
                "HNSW",
                {
                    "TYPE": "FLOAT32",
                    "DIM": DIM,
                    "DISTANCE_METRIC": "COSINE",
                    "M": 16,
                    "EF_CONSTRUCTION": 200,
                },
            ),
        ],
        definition=IndexDefinition(prefix=[prefix], index_type=IndexType.HASH),
    )
    # A key written while the initial background scan still runs can be indexed twice (once by the
    # scan, once by the keyspace event), which double-counts its failure: wait for the scan to end.
    deadline = time.monotonic() + 10
    while str(_info(redis_client, name).get("indexing", "0")) not in ("0", "b'0'"):
        assert time.monotonic() < deadline, "the index's initial scan did not finish in 10 s"
        time.sleep(0.02)
    yield name, prefix
    redis_client.ft(name).dropindex(delete_documents=True)


def _vec(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _info(client: redis.Redis, name: str) -> dict[str, object]:
    raw = client.ft(name).info()
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _knn(client: redis.Redis, name: str, vec: np.ndarray, tenant: str, k: int = 5) -> list[str]:
    q = (
        Query(f"(@tenant:{{{tenant}}})=>[KNN {k} @vec $v AS score]")
        .sort_by("score")
        .return_fields("score", "tenant")
        .dialect(2)
    )
    res = client.ft(name).search(q, query_params={"v": vec.tobytes()})
    return [d.id for d in res.docs]


def test_upsert_filtered_knn_delete(redis_client: redis.Redis, index: tuple[str, str]) -> None:
    name, prefix = index
    rng = np.random.default_rng(7)
    vecs = {f"doc-{i}": _vec(rng) for i in range(60)}
    pipe = redis_client.pipeline(transaction=False)
    for i, (doc_id, v) in enumerate(vecs.items()):
        tenant = "acme" if i % 2 == 0 else "globex"
        pipe.hset(
            prefix + doc_id,
            mapping={"kind": "article", "tenant": tenant, "source_version": 1, "vec": v.tobytes()},
        )
    pipe.execute()
    # Upserting the same key again is idempotent: still 60 documents.
    redis_client.hset(
        prefix + "doc-0", mapping={"source_version": 2, "vec": vecs["doc-0"].tobytes()}
    )
    info = _info(redis_client, name)
    assert int(info["num_docs"]) == 60
    assert int(info["hash_indexing_failures"]) == 0

    hits = _knn(redis_client, name, vecs["doc-0"], "acme")
    assert hits[0] == prefix + "doc-0"
    assert len(hits) == 5
    # The tenant filter is applied inside the KNN query: no globex document is ever returned.
    assert all(int(h.rsplit("-", 1)[1]) % 2 == 0 for h in hits)
    assert _knn(redis_client, name, vecs["doc-1"], "acme")[0] != prefix + "doc-1"

    redis_client.delete(prefix + "doc-0")
    assert prefix + "doc-0" not in _knn(redis_client, name, vecs["doc-0"], "acme")
    assert int(_info(redis_client, name)["num_docs"]) == 59


def test_wrong_size_vector_is_only_visible_as_indexing_failure(
    redis_client: redis.Redis, index: tuple[str, str]
) -> None:
    name, prefix = index
    bad = np.ones(DIM + 1, dtype=np.float32).tobytes()
    assert (
        redis_client.hset(prefix + "bad", mapping={"kind": "article", "tenant": "acme", "vec": bad})
        == 3
    )
    info = _info(redis_client, name)
    assert int(info["hash_indexing_failures"]) == 1
    assert int(info["num_docs"]) == 0
