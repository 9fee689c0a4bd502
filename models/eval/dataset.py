"""Datasets in the BEIR-style layout with images: ``corpus.jsonl``, ``queries.jsonl``, ``qrels.tsv``,
optional ``pairs.jsonl`` and ``images/``. Every line is validated; a bad line is an error that names
the file and the line number."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.exceptions import ModelsError
from models.preprocess import title_and_text

__all__ = ["CorpusDoc", "Dataset", "DatasetError", "Pair", "Query", "load_dataset", "load_pairs"]


class DatasetError(ModelsError):
    """A dataset folder or one of its lines is malformed."""


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class CorpusDoc(_Row):
    """One corpus document."""

    id: str = Field(alias="_id", min_length=1)
    kind: str = "document"
    title: str | None = None
    text: str | None = None
    image: str | None = None
    attrs: dict[str, str] = Field(default_factory=dict)

    def full_text(self) -> str | None:
        """Title and text as one string (the text alone when it already starts with the title)."""
        return title_and_text(self.title, self.text)


class Query(_Row):
    """One query."""

    id: str = Field(alias="_id", min_length=1)
    text: str | None = None
    image: str | None = None
    attrs: dict[str, str] = Field(default_factory=dict)


class Pair(_Row):
    """One training pair; pairs sharing ``group`` are never negatives of each other."""

    text: str = Field(min_length=1)
    image: str = Field(min_length=1)
    group: str = Field(min_length=1)


_R = TypeVar("_R", bound=_Row)


def _read_jsonl(path: Path, model: type[_R]) -> Iterator[_R]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = model.model_validate(json.loads(line))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            except ValidationError as e:
                err = e.errors(include_url=False)[0]
                loc = ".".join(str(p) for p in err["loc"])
                raise DatasetError(f"{path}:{lineno}: {loc}: {err['msg']}") from e
            yield row


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset folder."""

    root: Path
    corpus: tuple[CorpusDoc, ...]
    queries: tuple[Query, ...]
    qrels: dict[str, frozenset[str]] = field(default_factory=dict)
    """query id → relevant corpus ids; a query without an entry is out of scope."""

    @property
    def name(self) -> str:
        """The folder name."""
        return self.root.name

    @property
    def n_out_of_scope(self) -> int:
        """Queries with no relevant document."""
        return sum(1 for q in self.queries if q.id not in self.qrels)

    def digest(self) -> str:
        """sha256 over every file of the folder (relative path + content), sorted."""
        h = hashlib.sha256()
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            h.update(path.relative_to(self.root).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


def _check_unique(path: Path, ids: list[str]) -> None:
    seen: set[str] = set()
    for i, x in enumerate(ids, start=1):
        if x in seen:
            raise DatasetError(f"{path}: duplicate _id {x!r} (row {i})")
        seen.add(x)


def _check_image(root: Path, where: str, image: str | None) -> None:
    if image is None:
        return
    rel = Path(image)
    if rel.is_absolute() or ".." in rel.parts:
        raise DatasetError(f"{where}: image path {image!r} must be relative to the dataset folder")
    if not (root / rel).is_file():
        raise DatasetError(f"{where}: image {image!r} not found")


def load_dataset(root: Path) -> Dataset:
    """Load and validate a dataset folder.

    Raises:
        DatasetError: a missing file, a malformed line (named by file and line), duplicate ids, a qrels
            row naming an unknown id, or a missing image.
    """
    if not root.is_dir():
        raise DatasetError(f"{root}: not a dataset folder")
    corpus = tuple(_read_jsonl(root / "corpus.jsonl", CorpusDoc))
    queries = tuple(_read_jsonl(root / "queries.jsonl", Query))
    _check_unique(root / "corpus.jsonl", [d.id for d in corpus])
    _check_unique(root / "queries.jsonl", [q.id for q in queries])
    for i, d in enumerate(corpus, start=1):
        if not d.full_text() and not d.image:
            raise DatasetError(
                f"{root / 'corpus.jsonl'}: row {i} ({d.id}) has neither text nor image"
            )
        _check_image(root, f"{root / 'corpus.jsonl'} ({d.id})", d.image)
    for i, q in enumerate(queries, start=1):
        if not (q.text or "").strip() and not q.image:
            raise DatasetError(
                f"{root / 'queries.jsonl'}: row {i} ({q.id}) has neither text nor image"
            )
        _check_image(root, f"{root / 'queries.jsonl'} ({q.id})", q.image)
    qrels = _load_qrels(root / "qrels.tsv", {d.id for d in corpus}, {q.id for q in queries})
    return Dataset(root=root, corpus=corpus, queries=queries, qrels=qrels)


def _load_qrels(path: Path, corpus_ids: set[str], query_ids: set[str]) -> dict[str, frozenset[str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    rel: dict[str, set[str]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t")[:2] != ["query-id", "corpus-id"]:
        raise DatasetError(f"{path}:1: header must be 'query-id<TAB>corpus-id<TAB>score'")
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise DatasetError(
                f"{path}:{lineno}: expected 3 tab-separated columns, got {len(cols)}"
            )
        qid, did, score = cols
        try:
            if float(score) <= 0:
                continue
        except ValueError as e:
            raise DatasetError(f"{path}:{lineno}: score {score!r} is not a number") from e
        if qid not in query_ids:
            raise DatasetError(f"{path}:{lineno}: unknown query id {qid!r}")
        if did not in corpus_ids:
            raise DatasetError(f"{path}:{lineno}: unknown corpus id {did!r}")
        rel.setdefault(qid, set()).add(did)
    return {k: frozenset(v) for k, v in rel.items()}


def load_pairs(root: Path) -> list[Pair]:
    """Read ``pairs.jsonl`` of a dataset folder (image paths stay relative to ``root``)."""
    pairs = list(_read_jsonl(root / "pairs.jsonl", Pair))
    for i, p in enumerate(pairs, start=1):
        _check_image(root, f"{root / 'pairs.jsonl'}:{i}", p.image)
    return pairs
