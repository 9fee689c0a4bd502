"""``crossroute index load``: a dataset's corpus (EVAL.md layout) as domain documents, indexed.

Corpus rows become the documents they stand for (articles, warranty policies, products with
images); with ``exemplars`` the dataset's labelled text queries are indexed too, as resolved tickets
that vote for their document. Written in chunks through :class:`~router.documents.Indexer`, so
reruns are idempotent (same source version: unchanged) and bad rows are reported, not fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from models.embedder import Embedder
from models.eval.dataset import Dataset
from router.documents import Entity, Indexer, corpus_document, entity_id
from router.index import VectorIndex
from router.schemas import Exemplar

__all__ = ["LoadReport", "index_dataset"]

CHUNK = 64


@dataclass
class LoadReport:
    """What :func:`index_dataset` wrote."""

    total: int = 0
    written: int = 0
    unchanged: int = 0
    stale: int = 0
    failed: list[str] = field(default_factory=list)


def index_dataset(
    data: Dataset,
    embedder: Embedder,
    index: VectorIndex,
    *,
    tenant: str,
    version: int = 1,
    exemplars: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> LoadReport:
    """Index ``data``'s corpus (and its labelled queries as exemplars) for ``tenant``.

    Creates the index if needed. Images are read relative to the dataset folder.
    """
    from models.eval.run import exemplar_pairs

    index.create()
    indexer = Indexer(embedder, index, media_root=data.root)
    entities: list[Entity] = [corpus_document(doc, tenant) for doc in data.corpus]
    if exemplars:
        entities += [
            Exemplar(id=f"ex-{i}", tenant=tenant, text=text, target_id=entity_id(doc))
            for i, (text, doc) in enumerate(exemplar_pairs(data))
        ]
    report = LoadReport(total=len(entities))
    for start in range(0, len(entities), CHUNK):
        chunk = entities[start : start + CHUNK]
        outcome = indexer.upsert(chunk, [version] * len(chunk))
        report.written += outcome.result.written
        report.unchanged += outcome.result.duplicates
        report.stale += outcome.result.stale
        report.failed += [str(e) for _, e in outcome.failed]
        progress(f"indexed {start + len(chunk)}/{len(entities)}")
    return report
