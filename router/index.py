"""A Redis vector index bound to one embedding space.

Everything about the index is derived from the model bundle's manifest, never typed by hand: the vector
field's dimension, dtype and distance metric come from ``Manifest.dim/dtype/metric``, and every name
carries the space id, so two spaces can never share an index::

    {namespace}:{space_id}               the RediSearch index (FT.*)
    {namespace}:{space_id}:doc:{tenant}:{entity_id}    one HASH per document (the index prefix)
    {namespace}:{space_id}:tomb:{tenant}:{entity_id}   tombstone of a delete (source version, TTL)
    {namespace}:{space_id}:meta          HASH: space id, manifest digest, dim, dtype, metric
    {namespace}:{alias}                  FT alias (``live``): the index the API serves

Writes are idempotent and ordered by the entity's ``source_version``: each document is written by one
server-side Lua script that compares versions, so a replayed event is a no-op, an older one is refused
(and counted), and a delete leaves a tombstone that an older upsert cannot resurrect. After every batch
``hash_indexing_failures`` is read back: a document Redis stored but could not index is an error.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar, cast

import numpy as np
import redis
from redis.commands.search.field import NumericField, TagField, TextField, VectorField
from redis.commands.search.index_definition import IndexDefinition, IndexType
from redis.commands.search.query import Query

from models.bundle import Manifest
from models.exceptions import SpaceMismatchError
from router.connection import reply_text
from router.exceptions import IndexingFailureError, IndexNotFoundError, RouterError
from router.settings import IndexSettings

__all__ = [
    "ANY_CATEGORY",
    "HUMAN_QUEUE_PARENT",
    "MAX_EXEMPLARS",
    "THUMBNAIL_PREFIX",
    "DocKind",
    "Filters",
    "Hit",
    "IndexDoc",
    "Pending",
    "Reads",
    "SpaceInfo",
    "VectorIndex",
    "WriteResult",
    "escape_tag",
]

DocKind = Literal["product", "article", "warranty_policy", "photo", "exemplar"]
"""``exemplar``: a resolved ticket's text; ``parent`` is the article/policy it was resolved with."""
ANY_CATEGORY = "_any"
"""Category tag of documents that apply to every product category (a policy with no categories)."""
HUMAN_QUEUE_PARENT = "@human"
"""``parent`` of an out-of-scope exemplar (an escalated ticket): it votes for the human queue, not for
a document. ``@`` is not allowed in an entity id, so no document can ever be that parent."""

MAX_EXEMPLARS = 10_000
"""The most exemplars one :meth:`VectorIndex.exemplars_of` returns (FT.SEARCH's default result cap)."""

_TAG_SPECIAL = set(",.<>{}[]\"':;!@#$%^&*()-+=~|/\\ ?`")
_TAG_ESCAPES = str.maketrans({c: "\\" + c for c in _TAG_SPECIAL})
_SCHEMA_VERSION = "1"

# Upsert one document. KEYS: doc, tombstone. ARGV: source_version, then field/value pairs.
# Returns 1 written, 0 duplicate (same version already stored), -1 stale (an equal or newer delete, or
# a newer version, is already there).
# The shebang (Redis 7+) makes Redis refuse the whole script with OOM at maxmemory. Without it, a
# script whose first write is the DEL below may go on writing past maxmemory: Redis lets a script
# that has written finish, so upserts would grow memory without bound (found by the fault matrix).
# A delete keeps the legacy form: it frees memory.
_UPSERT = """#!lua
local v = tonumber(ARGV[1])
local tomb = redis.call('GET', KEYS[2])
if tomb and tonumber(tomb) >= v then return -1 end
local cur = redis.call('HGET', KEYS[1], 'source_version')
if cur then
  cur = tonumber(cur)
  if cur > v then return -1 end
  if cur == v then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('DEL', KEYS[2])
return 1
"""

# Delete one document. KEYS: doc, tombstone. ARGV: source_version, tombstone ttl (s).
# Returns 1 deleted, 0 nothing to delete (absent or already deleted at >= version), -1 stale.
_DELETE = """
local v = tonumber(ARGV[1])
local cur = redis.call('HGET', KEYS[1], 'source_version')
if cur and tonumber(cur) > v then return -1 end
local tomb = redis.call('GET', KEYS[2])
if tomb and tonumber(tomb) >= v then return 0 end
local n = redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
return n
"""


THUMBNAIL_PREFIX = "data:image/jpeg;base64,"
"""How a stored product thumbnail starts (:meth:`VectorIndex.thumbnails` returns no other)."""


def escape_tag(value: str) -> str:
    """Escape a TAG value for a RediSearch query (punctuation and spaces get a backslash)."""
    return value.translate(_TAG_ESCAPES)


def _tag_clause(field_name: str, values: Iterable[str]) -> str:
    joined = "|".join(escape_tag(v) for v in values)
    return f"@{field_name}:{{{joined}}}"


@dataclass(frozen=True)
class SpaceInfo:
    """What an index needs to know about the embedding space: taken from a bundle manifest."""

    space_id: str
    dim: int
    dtype: Literal["float32"] = "float32"
    metric: Literal["cosine"] = "cosine"
    manifest_digest: str = ""

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> SpaceInfo:
        """The space of a bundle."""
        return cls(
            manifest.space_id, manifest.dim, manifest.dtype, manifest.metric, manifest.digest()
        )


@dataclass(frozen=True)
class IndexDoc:
    """One document to index: an entity of a tenant, its vector and its filterable metadata.

    Attributes:
        id: the entity id (unique per tenant).
        source_version: monotonic version from the source system; older writes are refused.
        space_id: the space ``vector`` was embedded in (checked against the index's).
        categories: product categories it applies to; empty means every category.
        payload: extra JSON-able fields returned with hits (title, url, …), not searchable.
    """

    id: str
    tenant: str
    kind: DocKind
    vector: np.ndarray
    source_version: int
    space_id: str
    locale: str = "en"
    categories: tuple[str, ...] = ()
    in_stock: bool | None = None
    title: str = ""
    parent: str | None = None
    """For a passage of a longer document: the id of the document it belongs to."""
    payload: Mapping[str, Any] = field(default_factory=dict)
    thumbnail: str | None = None
    """A product's small JPEG as a data URL (``router.documents.thumbnail``); kept in the hash,
    not indexed, read only by :meth:`VectorIndex.thumbnails`."""


@dataclass(frozen=True)
class Filters:
    """Pre-filters applied inside the KNN query. ``tenant`` is mandatory: tenants never mix."""

    tenant: str
    kinds: tuple[DocKind, ...] = ()
    locale: str | None = None
    category: str | None = None
    """Keep documents of this product category and documents that apply to every category."""
    category_only: bool = False
    """With ``category``: keep only the documents written for that category."""
    in_stock: bool | None = None

    def query(self) -> str:
        """The RediSearch filter expression."""
        clauses = [_tag_clause("tenant", [self.tenant])]
        if self.kinds:
            clauses.append(_tag_clause("kind", sorted(set(self.kinds))))
        if self.locale is not None:
            clauses.append(_tag_clause("locale", [self.locale]))
        if self.category is not None:
            allowed = [self.category] if self.category_only else [self.category, ANY_CATEGORY]
            clauses.append(_tag_clause("category", allowed))
        if self.in_stock is not None:
            n = int(self.in_stock)
            clauses.append(f"@in_stock:[{n} {n}]")
        return "(" + " ".join(clauses) + ")"


@dataclass(frozen=True)
class Hit:
    """One KNN result. ``score`` is the cosine similarity (1 - cosine distance)."""

    id: str
    kind: DocKind
    score: float
    tenant: str
    source_version: int
    space_id: str
    title: str = ""
    parent: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    vector: np.ndarray | None = None
    categories: tuple[str, ...] = ()
    """Product categories the document applies to; empty means every category."""

    @property
    def target(self) -> str:
        """The document this hit stands for (its parent when it is a passage)."""
        return self.parent or self.id


@dataclass
class WriteResult:
    """Counts of one write batch."""

    written: int = 0
    duplicates: int = 0
    """Writes of a version already stored (replays): no-ops."""
    stale: int = 0
    """Writes older than what the index holds: refused."""
    deleted: int = 0
    missing: int = 0
    """Deletes of documents that were not there (or already deleted)."""
    stale_ids: list[str] = field(default_factory=list)

    @classmethod
    def tally(cls, outcomes: Sequence[tuple[str, int]], done: str, noop: str) -> WriteResult:
        """Count script outcomes: 1 → ``done``, 0 → ``noop``, -1 → stale (with its label)."""
        result = cls()
        for label, outcome in outcomes:
            if outcome == 1:
                setattr(result, done, getattr(result, done) + 1)
            elif outcome == 0:
                setattr(result, noop, getattr(result, noop) + 1)
            else:
                result.stale += 1
                result.stale_ids.append(label)
        return result

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.written += other.written
        self.duplicates += other.duplicates
        self.stale += other.stale
        self.deleted += other.deleted
        self.missing += other.missing
        self.stale_ids += other.stale_ids
        return self


def _ft_info(client: redis.Redis, name: str) -> dict[str, Any]:
    """FT.INFO as a dict with str keys (raises ``redis.ResponseError`` for an unknown index)."""
    raw = client.ft(name).info()  # type: ignore[no-untyped-call]
    return {reply_text(k): v for k, v in raw.items()}


def _command(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


class VectorIndex:
    """The index of one embedding space in Redis.

    Args:
        client: a redis-py client (bytes responses, i.e. ``decode_responses=False``).
        space: the embedding space this index holds.
        settings: names and HNSW parameters.
    """

    def __init__(self, client: redis.Redis, space: SpaceInfo, settings: IndexSettings) -> None:
        self.client = client
        self.space = space
        self.settings = settings
        ns = settings.namespace
        self.name = f"{ns}:{space.space_id}"
        self.prefix = f"{self.name}:doc:"
        self._tomb_prefix = f"{self.name}:tomb:"
        self.meta_key = f"{self.name}:meta"
        self._upsert = client.register_script(_UPSERT)
        self._delete = client.register_script(_DELETE)
        self._failures_seen: int | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    @classmethod
    def for_manifest(
        cls, client: redis.Redis, manifest: Manifest, settings: IndexSettings
    ) -> VectorIndex:
        """The index of a bundle's space (not created yet: call :meth:`create`)."""
        return cls(client, SpaceInfo.from_manifest(manifest), settings)

    @classmethod
    def open(cls, client: redis.Redis, name: str, settings: IndexSettings) -> VectorIndex:
        """Open an existing index by index name or alias (``live``), reading its space from Redis.

        Raises:
            IndexNotFoundError: no such index or alias, or it was not created by crossroute.
        """
        full = name if name.startswith(settings.namespace + ":") else f"{settings.namespace}:{name}"
        try:
            info_d = _ft_info(client, full)
        except redis.ResponseError as e:
            raise IndexNotFoundError(
                f"no index or alias {full!r} in Redis: build one with `crossroute index create` "
                "or promote one to the alias"
            ) from e
        index_name = reply_text(info_d.get("index_name", full))
        raw = client.hgetall(f"{index_name}:meta")
        meta = {reply_text(k): reply_text(v) for k, v in raw.items()}
        if "space_id" not in meta:
            raise IndexNotFoundError(f"index {index_name!r} has no crossroute metadata")
        space = SpaceInfo(
            meta["space_id"],
            int(meta["dim"]),
            "float32",
            "cosine",
            meta.get("manifest_digest", ""),
        )
        return cls(client, space, settings)

    @property
    def space_id(self) -> str:
        """The embedding space of every vector in this index."""
        return self.space.space_id

    def alias_name(self, alias: str | None = None) -> str:
        """The full name of an alias (default: the serving alias from settings)."""
        return f"{self.settings.namespace}:{alias or self.settings.alias}"

    def exists(self) -> bool:
        """Whether the index exists in Redis."""
        try:
            _ft_info(self.client, self.name)
        except redis.ResponseError:
            return False
        return True

    def schema(self) -> list[Any]:
        """The RediSearch schema, derived from the space (dim, dtype, metric) and settings (HNSW)."""
        s = self.settings
        return [
            TagField("entity_id"),
            TagField("tenant"),
            TagField("kind"),
            TagField("locale"),
            TagField("category", separator="|"),
            TagField("parent"),
            TagField("space_id"),
            NumericField("in_stock"),
            NumericField("source_version"),
            NumericField("indexed_at"),
            TextField("title"),
            VectorField(
                "vector",
                "HNSW",
                {
                    "TYPE": self.space.dtype.upper(),
                    "DIM": self.space.dim,
                    "DISTANCE_METRIC": self.space.metric.upper(),
                    "M": s.hnsw_m,
                    "EF_CONSTRUCTION": s.hnsw_ef_construction,
                    "EF_RUNTIME": s.hnsw_ef_runtime,
                },
            ),
        ]

    def create(self) -> bool:
        """Create the index and its metadata if missing; return whether it was created.

        Raises:
            SpaceMismatchError: an index of this name exists with metadata of another space.
        """
        meta = {reply_text(k): reply_text(v) for k, v in self.client.hgetall(self.meta_key).items()}
        if meta and (meta.get("space_id") != self.space_id or int(meta["dim"]) != self.space.dim):
            raise SpaceMismatchError(
                f"{self.meta_key} describes space {meta.get('space_id')} ({meta.get('dim')}-d), "
                f"not {self.space_id} ({self.space.dim}-d)"
            )
        if self.exists():
            return False
        self.client.hset(
            self.meta_key,
            mapping={
                "space_id": self.space_id,
                "dim": self.space.dim,
                "dtype": self.space.dtype,
                "metric": self.space.metric,
                "manifest_digest": self.space.manifest_digest,
                "schema_version": _SCHEMA_VERSION,
                "created_at": f"{time.time():.3f}",
            },
        )
        self.client.ft(self.name).create_index(
            self.schema(),
            definition=IndexDefinition(  # type: ignore[no-untyped-call]
                prefix=[self.prefix], index_type=IndexType.HASH
            ),
        )
        return True

    def drop(self) -> None:
        """Drop the index, its documents, tombstones and metadata."""
        if self.exists():
            self.client.ft(self.name).dropindex(delete_documents=True)
        for key in self.client.scan_iter(match=f"{self._tomb_prefix}*", count=1000):
            self.client.delete(key)
        self.client.delete(self.meta_key)

    def promote(self, alias: str | None = None) -> str | None:
        """Point ``alias`` (default: the serving alias) at this index; return the index it left."""
        full = self.alias_name(alias)
        previous: str | None = None
        try:
            previous = reply_text(_ft_info(self.client, full)["index_name"])
        except redis.ResponseError:
            previous = None
        if previous is None:
            _command(self.client, "FT.ALIASADD", full, self.name)
        else:
            _command(self.client, "FT.ALIASUPDATE", full, self.name)
        return previous

    # -- writes -----------------------------------------------------------------------------------

    def check_space(self, space_id: str, what: str = "query") -> None:
        """Refuse anything embedded in another space.

        Raises:
            SpaceMismatchError: ``space_id`` is not this index's space.
        """
        if space_id != self.space_id:
            raise SpaceMismatchError.between(self.space_id, space_id, what)

    def key(self, tenant: str, entity_id: str) -> str:
        """The Redis key of a document."""
        return f"{self.prefix}{tenant}:{entity_id}"

    def _tomb(self, tenant: str, entity_id: str) -> str:
        return f"{self._tomb_prefix}{tenant}:{entity_id}"

    def _vector_bytes(self, doc: IndexDoc) -> bytes:
        vec = np.asarray(doc.vector)
        if vec.shape != (self.space.dim,):
            raise RouterError(
                f"document {doc.tenant}/{doc.id}: vector shape {vec.shape}, index wants "
                f"({self.space.dim},)"
            )
        if not np.all(np.isfinite(vec)):
            raise RouterError(f"document {doc.tenant}/{doc.id}: vector has NaN or inf values")
        return vec.astype("<f4").tobytes()

    def _fields(self, doc: IndexDoc, now: float) -> list[Any]:
        # Field names avoid "id" and "payload": redis-py's search Document reserves both.
        fields: dict[str, Any] = {
            "entity_id": doc.id,
            "tenant": doc.tenant,
            "kind": doc.kind,
            "locale": doc.locale,
            "category": "|".join(doc.categories) if doc.categories else ANY_CATEGORY,
            "space_id": doc.space_id,
            "source_version": doc.source_version,
            "indexed_at": f"{now:.3f}",
            "title": doc.title,
            "extra": json.dumps(dict(doc.payload), sort_keys=True, separators=(",", ":")),
            "vector": self._vector_bytes(doc),
        }
        if doc.parent is not None:
            fields["parent"] = doc.parent
        if doc.thumbnail is not None:
            fields["thumb"] = doc.thumbnail
        if doc.in_stock is not None:
            fields["in_stock"] = int(doc.in_stock)
        return [x for kv in fields.items() for x in kv]

    def upsert(self, docs: Sequence[IndexDoc]) -> WriteResult:
        """Write documents idempotently; a write older than the stored version is refused and counted.

        Raises:
            SpaceMismatchError: a document was embedded in another space (nothing is written).
            RouterError: a vector of the wrong shape or with non-finite values (nothing is written).
            IndexingFailureError: Redis stored a document it could not index.
            redis.ConnectionError, redis.TimeoutError: retryable; the batch may be replayed as is.
        """
        for doc in docs:
            self.check_space(doc.space_id, f"document {doc.tenant}/{doc.id}")
        now = time.time()
        prepared = [(doc, self._fields(doc, now)) for doc in docs]
        self._baseline_failures()
        outcomes = self._run(
            self._upsert,
            [(d.tenant, d.id, [d.source_version, *fields]) for d, fields in prepared],
        )
        self.check_failures()
        return WriteResult.tally(outcomes, "written", "duplicates")

    def delete(self, refs: Sequence[tuple[str, str, int]]) -> WriteResult:
        """Delete ``(tenant, entity_id, source_version)`` documents; older deletes are refused."""
        ttl = self.settings.tombstone_ttl_s
        outcomes = self._run(self._delete, [(t, e, [v, ttl]) for t, e, v in refs])
        return WriteResult.tally(outcomes, "deleted", "missing")

    def _run(
        self, script: Any, items: Sequence[tuple[str, str, list[Any]]]
    ) -> list[tuple[str, int]]:
        """Run a write script per ``(tenant, entity_id, args)`` in one pipeline; (label, outcome)."""
        pipe = self.client.pipeline(transaction=False)
        for tenant, entity_id, args in items:
            keys = [self.key(tenant, entity_id), self._tomb(tenant, entity_id)]
            script(keys=keys, args=args, client=pipe)
        return [(f"{t}/{e}", int(o)) for (t, e, _), o in zip(items, pipe.execute(), strict=True)]

    def _baseline_failures(self) -> None:
        if self._failures_seen is None:
            self._failures_seen = self.indexing_failures()

    def indexing_failures(self) -> int:
        """``hash_indexing_failures`` of the index: documents stored but not indexed."""
        info = _ft_info(self.client, self.name)
        return int(reply_text(info.get("hash_indexing_failures", 0)))

    def check_failures(self) -> None:
        """Raise if Redis failed to index any document since the last check.

        Raises:
            IndexingFailureError: ``hash_indexing_failures`` grew.
        """
        current = self.indexing_failures()
        seen = self._failures_seen if self._failures_seen is not None else current
        self._failures_seen = current
        if current > seen:
            raise IndexingFailureError(
                f"Redis could not index {current - seen} document(s) in {self.name} "
                f"(hash_indexing_failures {seen} → {current}): they are stored but invisible to search"
            )

    # -- reads ------------------------------------------------------------------------------------

    def count(self, tenant: str | None = None) -> int:
        """Number of indexed documents (of one tenant)."""
        expr = _tag_clause("tenant", [tenant]) if tenant else "*"
        q = Query(expr).no_content().paging(0, 0).dialect(2)
        return int(self.client.ft(self.name).search(q).total)

    def count_other_spaces(self) -> int:
        """Documents whose ``space_id`` is not this index's (must be 0: writes refuse them)."""
        expr = "-" + _tag_clause("space_id", [self.space_id])
        q = Query(expr).no_content().paging(0, 0).dialect(2)
        return int(self.client.ft(self.name).search(q).total)

    def entity_keys(self) -> list[tuple[str, str]]:
        """``(tenant, entity_id)`` of every document that is not an exemplar, sorted (from the
        keys: tenant ids have no ``:``)."""
        exemplars: set[str] = set()
        q = Query(_tag_clause("kind", ["exemplar"])).no_content().dialect(2)
        total = self.count()
        for start in range(0, total, 10_000):  # FT.SEARCH pages (MAXSEARCHRESULTS 10k by default)
            res = self.client.ft(self.name).search(q.paging(start, 10_000))
            exemplars.update(reply_text(d.id) for d in res.docs)
            if len(res.docs) < 10_000:
                break
        out = []
        for key in self.client.scan_iter(match=f"{self.prefix}*", count=1000):
            name = reply_text(key)
            if name in exemplars:
                continue
            tenant, _, ident = name[len(self.prefix) :].partition(":")
            out.append((tenant, ident))
        return sorted(out)

    def present(self, tenant: str, entity_ids: Sequence[str]) -> list[bool]:
        """Whether each of ``entity_ids`` has a document of ``tenant`` here."""
        pipe = self.client.pipeline(transaction=False)
        for ident in entity_ids:
            pipe.exists(self.key(tenant, ident))
        return [bool(n) for n in pipe.execute()] if entity_ids else []

    def titles(self, tenant: str, entity_ids: Sequence[str]) -> dict[str, str]:
        """The title of each of ``entity_ids`` that has a document of ``tenant`` here, in one
        round trip (a document without a title has "")."""
        pipe = self.client.pipeline(transaction=False)
        for ident in entity_ids:
            pipe.exists(self.key(tenant, ident))
            pipe.hget(self.key(tenant, ident), "title")
        replies = pipe.execute() if entity_ids else []
        return {
            ident: reply_text(title) if title is not None else ""
            for ident, found, title in zip(entity_ids, replies[::2], replies[1::2], strict=True)
            if found
        }

    def thumbnails(self, tenant: str, entity_ids: Sequence[str]) -> dict[str, str]:
        """The thumbnail of each of ``entity_ids`` that has one (products with an image), in one
        round trip; only ``data:image/jpeg;base64,`` URLs, as :class:`~router.documents.Indexer`
        writes them."""
        pipe = self.client.pipeline(transaction=False)
        for ident in entity_ids:
            pipe.hget(self.key(tenant, ident), "thumb")
        replies = pipe.execute() if entity_ids else []
        found = {ident: reply_text(t) for ident, t in zip(entity_ids, replies, strict=True) if t}
        return {i: t for i, t in found.items() if t.startswith(THUMBNAIL_PREFIX)}

    def categories(self, tenant: str) -> list[str]:
        """The product categories of the tenant's documents, sorted."""
        from redis.commands.search.aggregation import AggregateRequest
        from redis.commands.search.reducers import count

        request = (
            AggregateRequest(_tag_clause("tenant", [tenant]))
            .group_by("@category", count())
            .dialect(2)
        )
        result = self.client.ft(self.name).aggregate(request)
        rows: Any = getattr(result, "rows", None)
        if rows is None and isinstance(result, dict):  # RESP3: {"results": [{"extra_attributes"…}]}
            rows = [r.get("extra_attributes", r) for r in result.get("results", [])]
        found: set[str] = set()
        for row in rows or []:
            fields = row if isinstance(row, dict) else dict(zip(row[::2], row[1::2], strict=False))
            value = next((v for k, v in fields.items() if reply_text(k) == "category"), None)
            if value is not None:
                found.update(c for c in reply_text(value).split("|") if c)
        return sorted(found)

    def digest(self, *, chunk: int = 500) -> tuple[str, int]:
        """sha256 over the space's metadata and every document, in sorted key order: each key and
        its fields (vector bytes included) sorted by name, except ``indexed_at`` (when it was
        written, not what). Two builds of the same documents with the same bundle give the same
        digest, whatever order the events arrived in. Returns ``(hex digest, documents)``."""
        h = hashlib.sha256()
        meta = {reply_text(k): reply_text(v) for k, v in self.client.hgetall(self.meta_key).items()}
        for name in ("space_id", "dim", "dtype", "metric", "manifest_digest"):
            h.update(f"{name}={meta.get(name, '')}\n".encode())
        keys = sorted(
            k if isinstance(k, bytes) else str(k).encode()
            for k in self.client.scan_iter(match=f"{self.prefix}*", count=1000)
        )
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            pipe = self.client.pipeline(transaction=False)
            for key in part:
                pipe.hgetall(key)
            for key, fields in zip(part, pipe.execute(), strict=True):
                h.update(b"key\0" + key + b"\0")
                for name in sorted(fields):
                    if name == b"indexed_at":
                        continue
                    value = fields[name]
                    h.update(name + b"\0" + len(value).to_bytes(8, "big") + value)
        return h.hexdigest(), len(keys)

    def vectors(self, tenant: str, entity_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of documents of one tenant (missing ones left out)."""
        pipe = self.client.pipeline(transaction=False)
        for entity_id in entity_ids:
            pipe.hget(self.key(tenant, entity_id), "vector")
        return {
            entity_id: np.frombuffer(raw, "<f4")
            for entity_id, raw in zip(entity_ids, pipe.execute(), strict=True)
            if raw is not None
        }

    def exemplars_of(
        self, filters: Filters, parents: Sequence[str], limit: int = MAX_EXEMPLARS
    ) -> list[tuple[str, np.ndarray]]:
        """``(parent, vector)`` of every exemplar of the ``parents`` documents passing ``filters``
        (its tenant, locale and category; the kinds are ignored), at most ``limit``."""
        reads = self.reads()
        found = reads.exemplars_of(filters, parents, limit)
        reads.run()
        return found.value

    def kind_of(self, tenant: str, entity_id: str) -> DocKind | None:
        """The kind of a document of ``tenant`` (``article``, …), or None when it has none."""
        kind = self.client.hget(self.key(tenant, entity_id), "kind")
        # the index writes only DocKind values (IndexDoc.kind)
        return None if kind is None else cast("DocKind", reply_text(kind))

    def get(self, tenant: str, entity_id: str) -> dict[str, str] | None:
        """The stored fields of one document (vector and thumbnail omitted), or None."""
        raw = self.client.hgetall(self.key(tenant, entity_id))
        if not raw:
            return None
        return {reply_text(k): reply_text(v) for k, v in raw.items()
                if reply_text(k) not in ("vector", "thumb")}  # fmt: skip

    def knn(
        self,
        vector: np.ndarray,
        space_id: str,
        k: int,
        filters: Filters,
        *,
        with_vectors: bool = False,
        with_payload: bool = True,
        ef_runtime: int | None = None,
    ) -> list[Hit]:
        """The ``k`` nearest documents to ``vector`` that pass ``filters`` (filters apply inside the KNN).

        Args:
            with_vectors: the hits carry their stored vector (in the same reply).
            with_payload: the hits carry their title and payload (without: ``""`` and ``{}``, and
                a smaller reply).

        Raises:
            SpaceMismatchError: ``vector`` was embedded in another space.
        """
        reads = self.reads()
        found = reads.knn(
            vector,
            space_id,
            k,
            filters,
            with_vectors=with_vectors,
            with_payload=with_payload,
            ef_runtime=ef_runtime,
        )
        reads.run()
        return found.value

    def reads(self) -> Reads:
        """A batch of reads sent to Redis in one round trip (:class:`Reads`)."""
        return Reads(self)


_T = TypeVar("_T")


class Pending(Generic[_T]):
    """The answer of one read queued in a :class:`Reads` batch: :attr:`value` once the batch ran."""

    __slots__ = ("_done", "_parse", "_value")

    def __init__(self, parse: Callable[[Any], _T]) -> None:
        self._parse = parse
        self._done = False
        self._value: _T | None = None

    @classmethod
    def of(cls, value: _T) -> Pending[_T]:
        """An answer known without asking Redis."""
        pending = cls(lambda raw: cast("_T", raw))
        pending.fill(value)
        return pending

    def fill(self, raw: Any) -> None:
        """Set the answer from the raw Redis reply (done by :meth:`Reads.run`)."""
        self._value = self._parse(raw)
        self._done = True

    @property
    def value(self) -> _T:
        """The parsed answer.

        Raises:
            RouterError: the batch has not run yet.
        """
        if not self._done:
            raise RouterError("a read was used before its batch ran (call Reads.run first)")
        return cast("_T", self._value)


class Reads:
    """Reads of one index queued into one redis-py pipeline: :meth:`run` sends them all in one round
    trip and parses each reply into its :class:`Pending`. Replies are parsed here from the raw
    FT.SEARCH reply (RESP3 map or RESP2 array), and vectors come in the KNN reply itself, so a search
    with its vectors is one command, not one per hit.
    """

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        self._pipe = index.client.pipeline(transaction=False)
        self._pending: list[Pending[Any]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def _queue(self, args: Sequence[Any], parse: Callable[[Any], _T]) -> Pending[_T]:
        self._pipe.execute_command(*args)  # type: ignore[no-untyped-call]
        pending = Pending(parse)
        self._pending.append(pending)
        return pending

    def knn(
        self,
        vector: np.ndarray,
        space_id: str,
        k: int,
        filters: Filters,
        *,
        with_vectors: bool = False,
        with_payload: bool = True,
        ef_runtime: int | None = None,
    ) -> Pending[list[Hit]]:
        """Queue :meth:`VectorIndex.knn`.

        Raises:
            SpaceMismatchError: ``vector`` was embedded in another space.
            RouterError: ``vector`` has the wrong shape.
        """
        index = self.index
        index.check_space(space_id)
        vec = np.asarray(vector, dtype=np.float32)
        if vec.shape != (index.space.dim,):
            raise RouterError(f"query vector shape {vec.shape}, index wants ({index.space.dim},)")
        ef = ef_runtime or max(index.settings.hnsw_ef_runtime, k)
        fields = [*_HIT_FIELDS, *_PAYLOAD_FIELDS] if with_payload else list(_HIT_FIELDS)
        if with_vectors:
            fields.append("vector")
        args = [
            "FT.SEARCH",
            index.name,
            f"{filters.query()}=>[KNN {k} @vector $vec EF_RUNTIME {ef} AS distance]",
            "PARAMS",
            2,
            "vec",
            vec.astype("<f4").tobytes(),
            "RETURN",
            len(fields),
            *fields,
            "SORTBY",
            "distance",
            "LIMIT",
            0,
            k,
            "DIALECT",
            2,
        ]
        return self._queue(args, lambda raw: _hits(raw, index.space_id))

    def exemplars_of(
        self, filters: Filters, parents: Sequence[str], limit: int = MAX_EXEMPLARS
    ) -> Pending[list[tuple[str, np.ndarray]]]:
        """Queue :meth:`VectorIndex.exemplars_of` (their vectors come in the same reply)."""
        if not parents:
            return Pending.of([])
        only = replace(filters, kinds=("exemplar",))
        expr = f"({only.query()} {_tag_clause('parent', parents)})"
        args = ["FT.SEARCH", self.index.name, expr, "RETURN", 2, "parent", "vector"]
        args += ["LIMIT", 0, limit, "DIALECT", 2]
        return self._queue(args, _exemplars)

    def kind_and_vector(
        self, tenant: str, entity_id: str
    ) -> Pending[tuple[str | None, np.ndarray | None]]:
        """Queue a read of one document's stored ``kind`` and vector (None for what is missing)."""
        args = ["HMGET", self.index.key(tenant, entity_id), "kind", "vector"]
        return self._queue(args, _kind_and_vector)

    def run(self) -> None:
        """Send the queued reads in one round trip and fill their answers (nothing queued: no-op).

        Raises:
            redis.RedisError: the first error of the batch.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for p, raw in zip(pending, self._pipe.execute(), strict=True):
            p.fill(raw)


_HIT_FIELDS = (
    "entity_id",
    "kind",
    "tenant",
    "source_version",
    "space_id",
    "parent",
    "category",
    "distance",
)
_PAYLOAD_FIELDS = ("title", "extra")


def _search_rows(reply: Any) -> list[tuple[bytes, Mapping[bytes, Any]]]:
    """``(key, fields)`` of each document of a raw FT.SEARCH reply: a RESP3 map
    (``results: [{id, extra_attributes}]``) or a RESP2 array (``[total, key, [f, v, …], …]``)."""
    if isinstance(reply, dict):
        return [(r[b"id"], r.get(b"extra_attributes") or {}) for r in reply.get(b"results", ())]
    rows: list[tuple[bytes, Mapping[bytes, Any]]] = []
    for i in range(1, len(reply) - 1, 2):
        flat = reply[i + 1] or []
        rows.append((reply[i], dict(zip(flat[::2], flat[1::2], strict=True))))
    return rows


def _hits(reply: Any, space_id: str) -> list[Hit]:
    """The hits of a raw KNN reply.

    Raises:
        SpaceMismatchError: a document of another space (written around this class).
    """
    hits = []
    for _, f in _search_rows(reply):
        parent = f.get(b"parent")
        raw_vector = f.get(b"vector")
        hit = Hit(
            id=reply_text(f[b"entity_id"]),
            kind=cast("DocKind", reply_text(f[b"kind"])),
            score=1.0 - float(f[b"distance"]),
            tenant=reply_text(f[b"tenant"]),
            source_version=int(f[b"source_version"]),
            space_id=reply_text(f[b"space_id"]),
            title=reply_text(f.get(b"title", b"")),
            parent=reply_text(parent) if parent else None,
            payload=json.loads(extra) if (extra := f.get(b"extra")) else {},
            vector=None if raw_vector is None else np.frombuffer(raw_vector, "<f4"),
            categories=_categories(reply_text(f.get(b"category", b""))),
        )
        if hit.space_id != space_id:
            raise SpaceMismatchError.between(space_id, hit.space_id, f"document {hit.id}")
        hits.append(hit)
    return hits


def _exemplars(reply: Any) -> list[tuple[str, np.ndarray]]:
    return [
        (reply_text(f[b"parent"]), np.frombuffer(f[b"vector"], "<f4"))
        for _, f in _search_rows(reply)
        if f.get(b"vector") is not None
    ]


def _kind_and_vector(reply: Any) -> tuple[str | None, np.ndarray | None]:
    kind, vector = reply
    return (
        None if kind is None else reply_text(kind),
        None if vector is None else np.frombuffer(vector, "<f4"),
    )


def _categories(stored: str) -> tuple[str, ...]:
    """The categories of a stored ``category`` tag value (``_any`` or empty: every category)."""
    if not stored or stored == ANY_CATEGORY:
        return ()
    return tuple(stored.split("|"))
