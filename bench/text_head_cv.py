"""Measure a text head trained on labelled tickets, by grouped cross-validation (issue #18's lever).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/text_head_cv.py --data ../shared/data --model BUNDLE \
        [--cache /tmp/text-head-cv-cache] --out bench/text-head-cv.json

A measurement, not a product change. The vectors are the bundle's own text vectors (the default
bundle: the shipped ``mined`` head over all-MiniLM-L6-v2), embedded once with
:func:`models.eval.run.embed_items` exactly as ``crossroute eval`` does. On top of them, per
cross-validation fold, a **residual linear adapter** ``z = normalize(v + W v)`` (``W`` 384x384, zero
at the start, so an untrained adapter is the bundle itself) is trained on the *other folds'*
labelled queries only, by a supervised contrastive (InfoNCE) loss with the **articles as anchors**:
each training query's logits are its cosines with every article's adapted vector over a fixed
temperature, its target its own article. The adapter is applied to every text (articles, exemplars,
routed queries), as a text head would be, then the fold is routed by the product's rule
(:mod:`models.eval.decision`: prototypes + human exemplars; exact search).

Variants (fixed a priori, before any score was seen; no grid search):

- ``baseline``: no adapter (must reproduce docs/routing.md "Measured", prototypes + human
  exemplars: banking77 0.808, stackfaq 0.981, clinc150 0.937, OOS F1 0.772 (oracle 0.793));
- ``adapter``: the adapter trained on in-scope queries only (out-of-scope queries are not trained
  on; they still serve as human exemplars when routing);
- ``adapter+human``: also the out-of-scope training queries, as one more class, the **human**
  class, whose anchor is the normalised mean of the adapted out-of-scope training queries
  (recomputed each step); in-scope queries see it as a negative (datasets with out-of-scope queries
  only);
- ``prototype-anchors`` (``+human`` where there are out-of-scope queries): the anchors are the
  articles' prototypes as the routing rule builds them (the article plus its training exemplars,
  adapted, the scored query left out of its own), so training matches the decision rule. **Added
  after** the first three variants' numbers were seen (the only variant chosen that way); its
  hyperparameters are the same, not re-tuned.

Hyperparameters (a priori): temperature 0.05, AdamW lr 1e-3, weight decay 0.01, 20 epochs, batch
64, seed fixed per (dataset, fold); torch on one thread, deterministic.

Folds: the grouped folds of :mod:`models.eval.cv` (near-duplicate groups, ``assign_folds``, 5 folds,
``CV_SEED``). Threshold: cross-validated as :func:`models.eval.cv.fold_thresholds` does, nested
for the adapter too: for scored fold ``f`` and each other fold ``g``, an adapter is trained on the
folds other than ``f`` and ``g`` only, ``g`` is routed with it and with the exemplars of the folds
other than ``f`` and ``g``, and ``f``'s threshold maximises out-of-scope F1 on those scores. So
nothing of fold ``f`` (neither its queries, nor its labels, nor its vectors through training) reaches
the adapter that routes it, its exemplars, or its threshold. The oracle threshold (fitted on the
scored queries themselves) is reported apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.embedder import Embedder
from models.eval.cv import (
    CV_SEED,
    Pool,
    assign_folds,
    cross_validate,
    fold_thresholds,
    near_duplicate_groups,
)
from models.eval.dataset import load_dataset
from models.eval.decision import ExemplarRule
from models.eval.metrics import best_f1_threshold, detection_scores, rank_metrics
from models.eval.run import embed_items, grouping_vectors
from models.eval.search import exact_search, route
from models.projection import l2_normalize

DATASETS = ("banking77", "clinc150", "stackfaq")
FOLDS = 5
DEPTH = 10
RULE: ExemplarRule = "prototype"
VARIANTS = (
    "baseline",
    "adapter",
    "adapter+human",
    "prototype-anchors",
    "prototype-anchors+human",
)
HUMAN_VARIANTS = ("adapter+human", "prototype-anchors+human")

Adapt = Callable[[np.ndarray], np.ndarray]
"""Maps (n, dim) unit-norm bundle vectors to (n, dim) unit-norm routing vectors."""


@dataclass(frozen=True)
class AdapterConfig:
    """The adapter's training, fixed a priori."""

    temperature: float = 0.05
    lr: float = 1e-3
    weight_decay: float = 0.01
    epochs: int = 20
    batch_size: int = 64


@dataclass(frozen=True)
class Prepared:
    """One dataset's bundle vectors, labels and grouped folds."""

    name: str
    doc_vecs: np.ndarray
    query_vecs: np.ndarray
    rows: np.ndarray
    owner: np.ndarray
    oos: np.ndarray
    fold: np.ndarray
    relevant: list[frozenset[int]]
    groups: int


def _identity(v: np.ndarray) -> np.ndarray:
    return v


def prepare(embedder: Embedder, root: Path, name: str, cache: Path | None) -> Prepared:
    """Embed (or read from ``cache``) one dataset's documents, queries and grouping features."""
    dataset = load_dataset(root / name)
    cached = cache / f"{name}-{embedder.space_id}.npz" if cache is not None else None
    if cached is not None and cached.is_file():
        with np.load(cached) as z:
            doc_vecs, query_vecs, grouping = z["docs"], z["queries"], z["grouping"]
    else:
        doc_vecs = embed_items(
            embedder, dataset.root, [(d.id, d.full_text(), d.image) for d in dataset.corpus], "doc"
        )
        query_vecs = embed_items(
            embedder, dataset.root, [(q.id, q.text, q.image) for q in dataset.queries], "query"
        )
        grouping = grouping_vectors(embedder, dataset)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, docs=doc_vecs, queries=query_vecs, grouping=grouping)
    index = {d.id: i for i, d in enumerate(dataset.corpus)}
    rows: list[int] = []
    owner: list[int] = []
    oos: list[int] = []
    for i, q in enumerate(dataset.queries):
        if q.text and q.text.strip():
            docs = sorted(dataset.qrels.get(q.id, ()))
            rows += [i] * len(docs)
            owner += [index[d] for d in docs]
            if not docs:
                oos.append(i)
    groups = near_duplicate_groups(grouping)
    return Prepared(
        name=name,
        doc_vecs=doc_vecs,
        query_vecs=query_vecs,
        rows=np.array(rows, dtype=np.int64),
        owner=np.array(owner, dtype=np.int64),
        oos=np.array(oos, dtype=np.int64),
        fold=assign_folds(groups, FOLDS, CV_SEED),
        relevant=[
            frozenset(index[d] for d in dataset.qrels.get(q.id, ())) for q in dataset.queries
        ],
        groups=int(groups.max()) + 1,
    )


def train_adapter(
    data: Prepared,
    train: np.ndarray,
    *,
    human: bool,
    prototype: bool,
    cfg: AdapterConfig,
    seed: int,
) -> Adapt:
    """Train the residual linear adapter on the queries where ``train`` ((n,) bool) holds.

    Each labelled (query, article) pair of a training query is one example whose logits are the
    query's cosines with every article (and, with ``human``, the human anchor) over the
    temperature; with ``human``, each out-of-scope training query is one example of the human
    class, whose anchor is the normalised mean of the adapted out-of-scope training queries.
    With ``prototype``, an article's anchor is its prototype as the routing rule builds it, the
    normalised sum of its adapted vector and its adapted training exemplars', leaving the scored
    query itself out of its own article's prototype (episodic, as a held-out query meets it).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dim = data.query_vecs.shape[1]
    layer = nn.Linear(dim, dim, bias=False)
    nn.init.zeros_(layer.weight)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x + layer(x), dim=-1)

    keep = train[data.rows]
    x_rows = data.rows[keep]
    y_rows = data.owner[keep]
    oos_rows = data.oos[train[data.oos]] if human else np.zeros(0, dtype=np.int64)
    n_docs = len(data.doc_vecs)
    x = torch.from_numpy(np.concatenate([x_rows, oos_rows]))
    y = torch.from_numpy(np.concatenate([y_rows, np.full(len(oos_rows), n_docs, dtype=np.int64)]))
    queries = torch.from_numpy(data.query_vecs.astype(np.float32))
    docs = torch.from_numpy(data.doc_vecs.astype(np.float32))
    oos_vecs = queries[torch.from_numpy(oos_rows)]
    ex_vecs = queries[torch.from_numpy(x_rows)]
    ex_owner = torch.from_numpy(y_rows)
    opt = torch.optim.AdamW(layer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), cfg.batch_size):
            b = perm[start : start + cfg.batch_size]
            z = forward(queries[x[b]])
            if prototype:
                sums = forward(docs).index_add(0, ex_owner, forward(ex_vecs))
                cos = z @ F.normalize(sums, dim=-1).T
                own = torch.clamp(y[b], max=n_docs - 1)  # the human class has no prototype
                loo = F.normalize(sums[own] - z, dim=-1)  # the query out of its own prototype
                mine = (y[b] < n_docs)[:, None] & (torch.arange(n_docs)[None, :] == own[:, None])
                cos = torch.where(mine, (z * loo).sum(-1, keepdim=True), cos)
            else:
                cos = z @ forward(docs).T
            if len(oos_rows):
                centre = F.normalize(forward(oos_vecs).mean(0, keepdim=True), dim=-1)
                cos = torch.cat([cos, z @ centre.T], dim=1)
            loss = F.cross_entropy(cos / cfg.temperature, y[b])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    weight = layer.weight.detach().numpy().astype(np.float32).T.copy()

    def adapt(v: np.ndarray) -> np.ndarray:
        return l2_normalize(v + v @ weight)

    return adapt


def route_fold(
    data: Prepared, adapt: Adapt, scored: np.ndarray, held_out: list[int], depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Route the queries ``scored`` with the exemplars (and human exemplars) of every fold but
    ``held_out``, every vector through ``adapt``."""
    pool = Pool(adapt(data.query_vecs), data.rows, data.owner, data.oos)
    exemplars, human = pool.without(np.isin(data.fold, held_out))
    return route(
        exact_search, adapt(data.doc_vecs), pool.queries[scored], depth, exemplars, human, RULE
    )


def cross_validated(
    data: Prepared, variant: str, cfg: AdapterConfig
) -> tuple[np.ndarray, np.ndarray, dict[int, float], int]:
    """Ranked targets and routing scores of every query (each fold routed by an adapter trained on
    the other folds), and each fold's nested cross-validated threshold; and the adapters trained."""
    n = len(data.query_vecs)
    folds = np.unique(data.fold).tolist()
    ranked = np.full((n, DEPTH), -1, dtype=np.int64)
    score = np.zeros(n, dtype=np.float64)
    thresholds: dict[int, float] = {}
    is_oos = np.zeros(n, dtype=bool)
    is_oos[data.oos] = True
    trained = 0

    def adapter(held_out: list[int]) -> Adapt:
        nonlocal trained
        if variant == "baseline":
            return _identity
        trained += 1
        seed = CV_SEED + 100 * held_out[0] + (held_out[1] + 1 if len(held_out) > 1 else 0)
        return train_adapter(
            data,
            ~np.isin(data.fold, held_out),
            human=variant in ("adapter+human", "prototype-anchors+human"),
            prototype=variant.startswith("prototype-anchors"),
            cfg=cfg,
            seed=seed,
        )

    for f in folds:
        sel = np.flatnonzero(data.fold == f)
        ranked[sel], score[sel] = route_fold(data, adapter([f]), sel, [f], DEPTH)
        if len(data.oos) == 0:
            continue
        inner_score = np.zeros(n, dtype=np.float64)
        for g in folds:
            if g == f:
                continue
            inner = np.flatnonzero(data.fold == g)
            _, inner_score[inner] = route_fold(data, adapter([f, g]), inner, [f, g], 1)
        others = np.flatnonzero(data.fold != f)
        thresholds[f] = best_f1_threshold(inner_score[others], is_oos[others])
    return ranked, score, thresholds, trained


def measure(data: Prepared, variant: str, cfg: AdapterConfig) -> dict[str, Any]:
    """One variant's cross-validated figures on one dataset."""
    start = time.perf_counter()
    ranked, score, thresholds, trained = cross_validated(data, variant, cfg)
    in_scope = np.ones(len(ranked), dtype=bool)
    in_scope[data.oos] = False
    sel = np.flatnonzero(in_scope)
    metrics = rank_metrics(ranked[sel], [data.relevant[i] for i in sel], (1, 5, 10))
    row: dict[str, Any] = {
        "recall@1": metrics["recall@1"],
        "recall@10": metrics["recall@10"],
        "adapters_trained": trained,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if len(data.oos):
        is_oos = ~in_scope
        at = np.array([thresholds[int(f)] for f in data.fold])
        oracle = best_f1_threshold(score, is_oos)
        row |= {
            "oos_f1": detection_scores(score < at, is_oos)["f1"],
            "oos_fold_thresholds": [thresholds[f] for f in sorted(thresholds)],
            "oracle_oos_f1": detection_scores(score < oracle, is_oos)["f1"],
            "oracle_threshold": oracle,
        }
    return row


def check_baseline(data: Prepared, row: dict[str, Any]) -> None:
    """The baseline of :func:`cross_validated` is models.eval.cv's own (same folds, same rule)."""
    pool = Pool(data.query_vecs, data.rows, data.owner, data.oos)
    ranked, _ = cross_validate(pool, data.fold, data.doc_vecs, DEPTH, rule=RULE)
    sel = np.setdiff1d(np.arange(len(ranked)), data.oos)
    r1 = rank_metrics(ranked[sel], [data.relevant[i] for i in sel], (1,))["recall@1"]
    if abs(r1 - row["recall@1"]) > 1e-12:
        raise AssertionError(f"{data.name}: baseline recall@1 {row['recall@1']} != cv.py's {r1}")
    if len(data.oos):
        is_oos = np.zeros(len(ranked), dtype=bool)
        is_oos[data.oos] = True
        per = fold_thresholds(pool, data.fold, data.doc_vecs, is_oos, rule=RULE)
        if [per[f] for f in sorted(per)] != row["oos_fold_thresholds"]:
            raise AssertionError(f"{data.name}: baseline thresholds differ from fold_thresholds")


def _cell(row: dict[str, Any] | None, key: str) -> str:
    value = None if row is None else row.get(key)
    return "-" if value is None else f"{value:.3f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| dataset | variant | recall@1 (clinc150: in-scope) | OOS F1 (cross-validated thr.) "
        "| OOS F1 (oracle thr.) |",
        "|---|---|---|---|---|",
    ]
    for name, per in results["datasets"].items():
        for variant in VARIANTS:
            row = per.get(variant)
            if row is None:
                continue
            lines.append(
                f"| {name} | {variant} | {_cell(row, 'recall@1')} | {_cell(row, 'oos_f1')} "
                f"| {_cell(row, 'oracle_oos_f1')} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", type=Path, required=True, help="the default (mined) bundle")
    ap.add_argument("--cache", type=Path, default=None, help="folder caching embedded vectors")
    ap.add_argument("--out", type=Path, default=Path("bench/text-head-cv.json"))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cfg = AdapterConfig()
    start = time.perf_counter()
    embedder = Embedder.load(args.model)
    results: dict[str, Any] = {
        "space_id": embedder.space_id,
        "head": embedder.manifest.spec.head.method,
        "folds": FOLDS,
        "cv_seed": CV_SEED,
        "rule": f"{RULE} + human exemplars",
        "adapter": {"form": "z = normalize(v + W v), W zero-initialised", **asdict(cfg)},
        "datasets": {},
    }
    for name in args.datasets:
        data = prepare(embedder, args.data, name, args.cache)
        per: dict[str, Any] = {"groups": data.groups, "n_out_of_scope": len(data.oos)}
        for variant in VARIANTS:
            if variant in HUMAN_VARIANTS and len(data.oos) == 0:
                continue  # no out-of-scope queries: the same as without the human class
            per[variant] = measure(data, variant, cfg)
            if variant == "baseline":
                check_baseline(data, per[variant])
            print(f"{name} {variant}: {json.dumps(per[variant])}", flush=True)
        results["datasets"][name] = per
    results["seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
