"""VectorIndex on the real Redis Stack: schema from the manifest, idempotent and ordered writes,
filters, tenant isolation, mixed-space refusal, the alias read path and indexing-failure detection."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from models.bundle import load_manifest
from models.exceptions import SpaceMismatchError
from router.exceptions import IndexingFailureError, IndexNotFoundError, RouterError
from router.index import Filters, IndexDoc, SpaceInfo, VectorIndex
from router.settings import IndexSettings

DIM = 32


@pytest.fixture
def settings() -> IndexSettings:
    return IndexSettings(namespace=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def make_index(
    redis_client: redis.Redis, settings: IndexSettings
) -> Iterator[Callable[[str], VectorIndex]]:
    made: list[VectorIndex] = []

    def make(space_id: str = "sp-aaaa") -> VectorIndex:
        index = VectorIndex(redis_client, SpaceInfo(space_id, DIM), settings)
        index.create()
        made.append(index)
        return index

    yield make
    for index in made:
        index.drop()


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def doc(i: int, version: int = 1, *, space: str = "sp-aaaa", **kw: object) -> IndexDoc:
    fields: dict[str, object] = {
        "tenant": "acme",
        "kind": "article",
        "title": f"doc {i} v{version}",
    }
    fields.update(kw)
    return IndexDoc(
        id=f"d{i}",
        vector=vec(i),
        source_version=version,
        space_id=space,
        **fields,  # type: ignore[arg-type]
    )


def test_schema_comes_from_the_manifest(
    redis_client: redis.Redis, default_bundle: Path, settings: IndexSettings
) -> None:
    manifest = load_manifest(default_bundle)
    index = VectorIndex.for_manifest(redis_client, manifest, settings)
    try:
        assert index.create() is True
        assert index.create() is False  # idempotent
        assert manifest.space_id in index.name and index.prefix.startswith(index.name)
        raw = redis_client.execute_command("FT.INFO", index.name)
        flat = [x.decode() if isinstance(x, bytes) else str(x) for x in _flatten(raw)]
        assert {"vector", "HNSW", "COSINE", "FLOAT32", str(manifest.dim)} <= set(flat)
        meta = redis_client.hgetall(index.meta_key)
        assert meta[b"space_id"].decode() == manifest.space_id
        assert int(meta[b"dim"]) == manifest.dim
        assert meta[b"manifest_digest"].decode() == manifest.digest()
    finally:
        index.drop()
    assert not index.exists()


def _flatten(x: object) -> list[object]:
    if isinstance(x, dict):
        return [y for kv in x.items() for item in kv for y in _flatten(item)]
    if isinstance(x, list | tuple):
        return [y for item in x for y in _flatten(item)]
    return [x]


def test_upsert_is_idempotent_and_refuses_stale_versions(
    make_index: Callable[..., VectorIndex],
) -> None:
    index = make_index()
    first = index.upsert([doc(i) for i in range(5)])
    assert (first.written, first.duplicates, first.stale) == (5, 0, 0)
    replay = index.upsert([doc(i) for i in range(5)])
    assert (replay.written, replay.duplicates) == (0, 5)
    assert index.count() == 5

    newer = index.upsert([doc(0, version=3)])
    assert newer.written == 1
    stale = index.upsert([doc(0, version=2)])
    assert (stale.written, stale.stale, stale.stale_ids) == (0, 1, ["acme/d0"])
    stored = index.get("acme", "d0")
    assert stored is not None and stored["source_version"] == "3" and stored["title"] == "doc 0 v3"
    assert index.count() == 5


def test_delete_leaves_a_tombstone_that_older_writes_cannot_pass(
    make_index: Callable[..., VectorIndex],
) -> None:
    index = make_index()
    index.upsert([doc(1, version=5), doc(2, version=5)])
    too_old = index.delete([("acme", "d1", 4)])
    assert too_old.stale == 1 and index.get("acme", "d1") is not None
    gone = index.delete([("acme", "d1", 6), ("acme", "nope", 1)])
    assert (gone.deleted, gone.missing) == (1, 1)
    assert index.get("acme", "d1") is None and index.count() == 1
    assert index.delete([("acme", "d1", 6)]).missing == 1  # replayed delete: no-op
    resurrect = index.upsert([doc(1, version=5)])  # replay of an older upsert
    assert resurrect.stale == 1 and index.get("acme", "d1") is None
    again = index.upsert([doc(1, version=7)])
    assert again.written == 1 and index.count() == 2


def test_knn_filters_and_tenant_isolation(make_index: Callable[..., VectorIndex]) -> None:
    index = make_index()
    index.upsert(
        [
            doc(1, kind="article", locale="en"),
            doc(2, kind="warranty_policy", categories=("shoes",)),
            doc(3, kind="warranty_policy", categories=("laptops", "phones")),
            doc(4, kind="product", categories=("shoes",), in_stock=False),
            doc(5, kind="product", categories=("shoes",), in_stock=True, locale="de"),
            # Same ids and vectors for another tenant: must never leak across.
            doc(1, tenant="globex"),
            doc(2, tenant="globex"),
        ]
    )

    def ids(filters: Filters, query: int = 1, k: int = 10) -> set[str]:
        return {h.id for h in index.knn(vec(query), "sp-aaaa", k, filters)}

    assert ids(Filters(tenant="acme")) == {"d1", "d2", "d3", "d4", "d5"}
    assert ids(Filters(tenant="globex")) == {"d1", "d2"}
    assert ids(Filters(tenant="initech")) == set()
    assert ids(Filters(tenant="acme", kinds=("article", "warranty_policy"))) == {"d1", "d2", "d3"}
    # category keeps matching documents and documents that apply to every category
    assert ids(Filters(tenant="acme", category="shoes")) == {"d1", "d2", "d4", "d5"}
    assert ids(Filters(tenant="acme", category="phones")) == {"d1", "d3"}
    assert ids(Filters(tenant="acme", kinds=("product",), in_stock=True)) == {"d5"}
    assert ids(Filters(tenant="acme", locale="de")) == {"d5"}
    # odd characters in tag values are escaped, not interpreted
    assert ids(Filters(tenant="acme", category="a|b} @kind:{product")) == {"d1"}

    best = index.knn(vec(3), "sp-aaaa", 1, Filters(tenant="acme"))[0]
    assert best.id == "d3" and best.score == pytest.approx(1.0, abs=1e-5)
    assert best.space_id == "sp-aaaa" and best.source_version == 1


def test_mixed_spaces_are_refused(make_index: Callable[..., VectorIndex]) -> None:
    index = make_index("sp-aaaa")
    with pytest.raises(SpaceMismatchError, match="sp-bbbb"):
        index.knn(vec(1), "sp-bbbb", 3, Filters(tenant="acme"))
    with pytest.raises(SpaceMismatchError):
        index.upsert([doc(1), doc(2, space="sp-bbbb")])
    assert index.count() == 0  # the whole batch was refused before any write
    # an index name reused with another space's dimension is refused too
    other = VectorIndex(index.client, SpaceInfo("sp-aaaa", DIM * 2), index.settings)
    with pytest.raises(SpaceMismatchError):
        other.create()


def test_bad_vectors_are_refused_before_writing(make_index: Callable[..., VectorIndex]) -> None:
    index = make_index()
    bad = IndexDoc("x", "acme", "article", np.ones(DIM + 1, np.float32), 1, "sp-aaaa")
    with pytest.raises(RouterError, match="shape"):
        index.upsert([doc(1), bad])
    nan = IndexDoc("y", "acme", "article", np.full(DIM, np.nan, np.float32), 1, "sp-aaaa")
    with pytest.raises(RouterError, match="NaN"):
        index.upsert([nan])
    assert index.count() == 0


def test_alias_read_path_and_promotion(
    redis_client: redis.Redis, make_index: Callable[..., VectorIndex], settings: IndexSettings
) -> None:
    with pytest.raises(IndexNotFoundError, match="live"):
        VectorIndex.open(redis_client, settings.alias, settings)
    blue, green = make_index("sp-blue"), make_index("sp-green")
    blue.upsert([doc(1, space="sp-blue")])
    green.upsert([doc(2, space="sp-green"), doc(3, space="sp-green")])
    assert blue.promote() is None
    live = VectorIndex.open(redis_client, "live", settings)
    assert live.space_id == "sp-blue" and live.count() == 1
    assert green.promote() == blue.name  # the flip returns what it replaced (for rollback)
    live = VectorIndex.open(redis_client, "live", settings)
    assert live.space_id == "sp-green" and live.count() == 2
    with pytest.raises(SpaceMismatchError):
        live.knn(vec(1), "sp-blue", 1, Filters(tenant="acme"))
    blue.promote()  # roll back
    assert VectorIndex.open(redis_client, "live", settings).space_id == "sp-blue"
    redis_client.execute_command("FT.ALIASDEL", blue.alias_name())


def test_indexing_failures_are_errors(
    redis_client: redis.Redis, make_index: Callable[..., VectorIndex]
) -> None:
    index = make_index()
    index.upsert([doc(1)])
    assert index.indexing_failures() == 0
    # A document written around the class with a wrong-size vector: Redis stores it, cannot index it.
    redis_client.hset(
        f"{index.prefix}acme:rogue",
        mapping={"entity_id": "rogue", "tenant": "acme", "vector": b"\x00" * 12},
    )
    with pytest.raises(IndexingFailureError, match="could not index 1"):
        index.upsert([doc(2)])
    index.upsert([doc(3)])  # reported once, then the next batch is judged on its own
    assert index.count() == 3
