"""The deployment gate: is a candidate space fit to serve, judged against the live one?

``crossroute gate --candidate NEW --baseline LIVE --eval DATASET…`` runs five checks on the real
indexes and says go or no-go, with its reasons (:func:`run_gate`):

- **versioning**: the candidate's manifest verified (every file's sha256, the space id recomputed
  from the spec), its index holds only candidate-space vectors, and its documents are exactly the
  live entities of the compacted topics (the caller passes that census in);
- **coverage**: every eval corpus document is in the candidate index for the tenant; the index's
  product categories against the eval data's; slices (values of a query attribute) with fewer
  than ``min_slice_queries`` queries are listed as too small to judge, never as passed;
- **retrieval per slice**: recall@1, recall@10 and MRR@10 of both spaces on their own real index
  (KNN through Redis, the tenant's documents as the product indexes them), overall and per slice;
  a judged slice whose recall@1 or recall@10 drops by more than ``tolerance`` against the
  baseline, and significantly so (one-sided exact McNemar test on the queries that changed,
  p < ``significance``: one unlucky query in a slice of 20 is 0.05 but not evidence), is a no-go —
  a mean that holds does not hide a slice that breaks;
- **latency**: p95 of ``Router.route`` on the candidate's index against ``p95_budget_ms``;
- **outcomes**: when feedback exists (:mod:`router.outcomes`), the candidate's canary rates against
  the baseline's, once both have ``min_outcome_decisions`` decisions (fewer: reported, not judged).

Nothing here writes to Redis.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from models.eval.dataset import Dataset
from router.documents import corpus_category, entity_id
from router.index import Filters
from router.outcomes import OutcomeCounts
from router.routing import Router
from router.schemas import Ticket
from router.settings import GateSettings

__all__ = [
    "Check",
    "GateRecords",
    "GateReport",
    "GateSettings",
    "SliceRow",
    "outcome_check",
    "retrieval_ranks",
    "run_gate",
]

METRICS = ("recall@1", "recall@10", "mrr@10")
JUDGED = {"recall@1": 1, "recall@10": 10}
"""The metrics a slice is judged on (per-query hits, so a drop can be tested for significance);
MRR@10 is reported."""
Status = Literal["pass", "fail", "warn", "skip"]


@dataclass
class Check:
    """One check of the gate."""

    name: str
    status: Status
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SliceRow:
    """One row of the per-slice table: a slice's metrics in both spaces."""

    dataset: str
    slice: str
    """``all``, or ``attr=value``."""
    queries: int
    judged: bool
    candidate: dict[str, float]
    baseline: dict[str, float]

    @property
    def deltas(self) -> dict[str, float]:
        return {m: self.candidate[m] - self.baseline[m] for m in METRICS}


@dataclass
class GateReport:
    """The verdict and everything it rests on."""

    candidate: str
    baseline: str
    tenant: str
    go: bool
    checks: list[Check]
    slices: list[SliceRow]
    settings: dict[str, Any]
    created_at: float = field(default_factory=time.time)

    @property
    def reasons(self) -> list[str]:
        """Why it is a no-go (empty for a go)."""
        return [f"{c.name}: {r}" for c in self.checks if c.status == "fail" for r in c.reasons]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (stable keys: ``go``, ``reasons``, ``checks``, ``slices``)."""
        return {
            "go": self.go,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "tenant": self.tenant,
            "reasons": self.reasons,
            "checks": [asdict(c) for c in self.checks],
            "slices": [{**asdict(s), "deltas": s.deltas} for s in self.slices],
            "settings": self.settings,
            "created_at": self.created_at,
        }

    def to_html(self) -> str:
        """A self-contained HTML page: the verdict, the checks and the per-slice table."""
        e = html.escape
        verdict = "GO" if self.go else "NO-GO"
        colour = "#1a7f37" if self.go else "#cf222e"
        rows = []
        for s in self.slices:
            cells = "".join(
                f"<td>{s.baseline[m]:.3f}</td><td>{s.candidate[m]:.3f}</td>"
                f"<td class='{_delta_class(s.deltas[m], s.judged)}'>{s.deltas[m]:+.3f}</td>"
                for m in METRICS
            )
            judged = "" if s.judged else " (too few to judge)"
            rows.append(
                f"<tr><td>{e(s.dataset)}</td><td>{e(s.slice)}{judged}</td><td>{s.queries}</td>"
                f"{cells}</tr>"
            )
        checks = "".join(
            f"<li><b>{e(c.name)}</b>: {e(c.status)}"
            + (
                "<ul>" + "".join(f"<li>{e(r)}</li>" for r in c.reasons) + "</ul>"
                if c.reasons
                else ""
            )
            + "</li>"
            for c in self.checks
        )
        head = "".join(f"<th colspan=3>{e(m)} (base / cand / Δ)</th>" for m in METRICS)
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>crossroute gate</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;"
            "border-bottom:1px solid #ddd;text-align:right}td:nth-child(-n+2){text-align:left}"
            ".bad{color:#cf222e;font-weight:bold}.good{color:#1a7f37}.muted{color:#888}</style>"
            f"</head><body><h1 style='color:{colour}'>{verdict}</h1>"
            f"<p>candidate <code>{e(self.candidate)}</code> against baseline "
            f"<code>{e(self.baseline)}</code>, tenant <code>{e(self.tenant)}</code></p>"
            f"<h2>Checks</h2><ul>{checks}</ul><h2>Retrieval per slice</h2>"
            f"<table><tr><th>dataset</th><th>slice</th><th>queries</th>{head}</tr>"
            f"{''.join(rows)}</table></body></html>"
        )


def _delta_class(delta: float, judged: bool) -> str:
    if not judged:
        return "muted"
    return "bad" if delta < 0 else "good"


# -- retrieval on a real index -------------------------------------------------------------------


def worse_p_value(lost: int, gained: int) -> float:
    """One-sided exact McNemar (sign) test on paired binary outcomes: the probability of losing at
    least ``lost`` queries of the ``lost + gained`` that changed, if the two spaces were equally
    good. Small: the candidate is really worse on them, not unlucky."""
    n = lost + gained
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(lost, n + 1)) / 2.0**n


def retrieval_ranks(
    router: Router, dataset: Dataset, tenant: str, *, depth: int = 10, batch: int = 64
) -> np.ndarray:
    """The 1-based rank of each in-scope query's first relevant document among the targets that
    KNN on ``router``'s index returns for the tenant (0: not in the top ``depth``).

    Queries are embedded like tickets (text and image fused by the routing weights) and searched
    among the kinds of the dataset's corpus documents; exemplar hits count for their document.
    """
    kinds = sorted({_kind(d.kind, d.image) for d in dataset.corpus})
    filters = Filters(tenant=tenant, kinds=tuple(kinds))  # type: ignore[arg-type]
    queries = [q for q in dataset.queries if q.id in dataset.qrels]
    ranks = np.zeros(len(queries), dtype=np.int64)
    for i, q in enumerate(queries):
        image = dataset.root / q.image if q.image else None
        vector = router.query_vector(q.text, image)
        seen: list[str] = []
        for hit in router.search(vector, filters, depth * 3):
            if hit.target not in seen:
                seen.append(hit.target)
        relevant = {entity_id(d) for d in dataset.qrels[q.id]}
        for r, target in enumerate(seen[:depth], start=1):
            if target in relevant:
                ranks[i] = r
                break
    return ranks


def _kind(kind: str, image: str | None) -> str:
    """The index kind a corpus row becomes (as ``router.documents.corpus_document`` makes it)."""
    if kind == "warranty_policy":
        return "warranty_policy"
    if kind == "article" and not image:
        return "article"
    return "product"


def _metrics(ranks: np.ndarray) -> dict[str, float]:
    if len(ranks) == 0:
        return dict.fromkeys(METRICS, 0.0)
    hit = ranks > 0
    return {
        "recall@1": float(np.mean(ranks == 1)),
        "recall@10": float(np.mean(hit & (ranks <= 10))),
        "mrr@10": float(np.mean(np.where(hit, 1.0 / np.maximum(ranks, 1), 0.0))),
    }


def _slices(dataset: Dataset) -> dict[str, np.ndarray]:
    """Masks over the in-scope queries: ``all`` and every ``attr=value``."""
    queries = [q for q in dataset.queries if q.id in dataset.qrels]
    out = {"all": np.ones(len(queries), dtype=bool)}
    keys = sorted({k for q in queries for k in q.attrs})
    for key in keys:
        for value in sorted({q.attrs[key] for q in queries if key in q.attrs}):
            out[f"{key}={value}"] = np.array([q.attrs.get(key) == value for q in queries])
    return out


# -- the checks ----------------------------------------------------------------------------------


def _retrieval(
    candidate: Router,
    baseline: Router,
    datasets: Sequence[Dataset],
    tenant: str,
    settings: GateSettings,
    progress: Callable[[str], None],
) -> tuple[Check, list[SliceRow]]:
    rows: list[SliceRow] = []
    reasons: list[str] = []
    for data in datasets:
        progress(f"retrieval on {data.name}: candidate")
        cand = retrieval_ranks(candidate, data, tenant)
        progress(f"retrieval on {data.name}: baseline")
        base = retrieval_ranks(baseline, data, tenant)
        for name, mask in _slices(data).items():
            n = int(mask.sum())
            judged = n >= settings.min_slice_queries
            row = SliceRow(data.name, name, n, judged, _metrics(cand[mask]), _metrics(base[mask]))
            rows.append(row)
            if not judged:
                continue
            for metric, k in JUDGED.items():
                delta = row.deltas[metric]
                c_hit = (cand[mask] > 0) & (cand[mask] <= k)
                b_hit = (base[mask] > 0) & (base[mask] <= k)
                p = worse_p_value(int((b_hit & ~c_hit).sum()), int((c_hit & ~b_hit).sum()))
                if delta < -settings.tolerance and p < settings.significance:
                    reasons.append(
                        f"{data.name} {name} ({n} queries): {metric} {row.baseline[metric]:.3f} → "
                        f"{row.candidate[metric]:.3f} ({delta:+.3f}, tolerance "
                        f"{settings.tolerance}, p={p:.3g})"
                    )
    n_judged = sum(r.judged for r in rows)
    check = Check(
        "retrieval",
        "fail" if reasons else "pass",
        reasons,
        {"slices_judged": n_judged, "slices_too_small": len(rows) - n_judged},
    )
    return check, rows


def _coverage(
    candidate: Router,
    datasets: Sequence[Dataset],
    tenant: str,
    settings: GateSettings,
) -> Check:
    reasons: list[str] = []
    warnings: list[str] = []
    details: dict[str, Any] = {}
    index = candidate.index
    indexed_categories = set(index.categories(tenant))
    for data in datasets:
        ids = [entity_id(d.id) for d in data.corpus]
        present = index.present(tenant, ids)
        missing = [i for i, ok in zip(ids, present, strict=True) if not ok]
        if missing:
            reasons.append(
                f"{data.name}: {len(missing)} of {len(ids)} corpus documents are not in the "
                f"candidate index for tenant {tenant} (e.g. {', '.join(missing[:3])}): its "
                "metrics would not mean what they say"
            )
        eval_categories = {corpus_category(d) for d in data.corpus} - {None}
        small = [
            f"{name} ({int(mask.sum())})"
            for name, mask in _slices(data).items()
            if mask.sum() < settings.min_slice_queries
        ]
        if small:
            warnings.append(
                f"{data.name}: {len(small)} slices have fewer than {settings.min_slice_queries} "
                f"queries, too few to judge: {', '.join(small[:8])}{' …' if len(small) > 8 else ''}"
            )
        details[data.name] = {
            "corpus_documents": len(ids),
            "missing": len(missing),
            "queries": len(data.queries),
            "in_scope": len(data.qrels),
            "eval_categories": len(eval_categories),
            "slices_too_small": len(small),
        }
    covered = {corpus_category(d) for data in datasets for d in data.corpus}
    uncovered = sorted(indexed_categories - covered - {"_any", "uncategorised"})
    if uncovered:
        warnings.append(
            f"{len(uncovered)} categories of the index have no eval data: "
            f"{', '.join(uncovered[:8])}{' …' if len(uncovered) > 8 else ''}"
        )
    details["index_categories"] = len(indexed_categories)
    details["warnings"] = warnings
    status: Status = "fail" if reasons else "warn" if warnings else "pass"
    return Check("coverage", status, reasons or warnings, details)


def _versioning(
    candidate: Router, tenant_documents: Mapping[tuple[str, str], bool | None] | None
) -> Check:
    reasons: list[str] = []
    index = candidate.index
    manifest = candidate.embedder.manifest
    foreign = index.count_other_spaces()
    if foreign:
        reasons.append(
            f"{foreign} documents of {index.name} carry another space than {index.space_id}"
        )
    details: dict[str, Any] = {
        "space_id": candidate.space_id,
        "index": index.name,
        "manifest_verified": True,  # Embedder.load verified every file before the gate ran
        "files": sorted(manifest.files),
        "projection": manifest.projection.model_dump(mode="json") if manifest.projection else None,
    }
    if tenant_documents is None:
        details["topics"] = "not compared"
    else:
        indexed = set(index.entity_keys())
        expected = {key for key, live in tenant_documents.items() if live is True}
        unjudged = {key for key, live in tenant_documents.items() if live is None}
        missing = sorted(expected - indexed)
        extra = sorted(indexed - expected - unjudged)
        details.update(expected=len(expected), indexed=len(indexed), dead_lettered=len(unjudged))
        if missing:
            reasons.append(
                f"{len(missing)} live entities of the topics are not in the index "
                f"(e.g. {', '.join('/'.join(k) for k in missing[:3])}): the reindex has not caught up"
            )
        if extra:
            reasons.append(
                f"{len(extra)} documents of the index are not live in the topics "
                f"(e.g. {', '.join('/'.join(k) for k in extra[:3])})"
            )
    return Check("versioning", "fail" if reasons else "pass", reasons, details)


def _latency(
    candidate: Router,
    baseline: Router,
    datasets: Sequence[Dataset],
    tenant: str,
    settings: GateSettings,
) -> Check:
    tickets: list[tuple[Ticket, Any]] = []
    for data in datasets:
        for q in data.queries:
            if len(tickets) >= settings.latency_queries:
                break
            tickets.append(
                (Ticket(id=f"gate-{q.id}"[:128], tenant=tenant, text=q.text or ""),
                 (data.root / q.image) if q.image else None)
            )  # fmt: skip

    def p95(router: Router) -> float:
        took = []
        for ticket, photo in tickets:
            start = time.perf_counter()
            router.route(ticket, photo=photo)
            took.append((time.perf_counter() - start) * 1000)
        return float(np.percentile(took, 95)) if took else math.nan

    router_p95 = p95(candidate)
    base_p95 = p95(baseline)
    ok = router_p95 <= settings.p95_budget_ms
    reason = (
        f"p95 {router_p95:.1f} ms over {len(tickets)} tickets, budget {settings.p95_budget_ms:.0f} ms"
        f" (baseline {base_p95:.1f} ms)"
    )
    return Check(
        "latency",
        "pass" if ok else "fail",
        [] if ok else [reason],
        {"p95_ms": router_p95, "baseline_p95_ms": base_p95, "tickets": len(tickets)},
    )


def outcome_check(
    candidate: OutcomeCounts | None, baseline: OutcomeCounts | None, settings: GateSettings
) -> Check:
    if candidate is None or baseline is None:
        return Check("outcomes", "skip", ["no outcome data given"])
    details = {
        "candidate": {"decisions": candidate.decisions, **candidate.rates()},
        "baseline": {"decisions": baseline.decisions, **baseline.rates()},
        "min_decisions": settings.min_outcome_decisions,
    }
    need = settings.min_outcome_decisions
    if candidate.decisions < need or baseline.decisions < need:
        return Check(
            "outcomes",
            "skip",
            [
                f"not judged: {candidate.decisions} candidate and {baseline.decisions} baseline "
                f"decisions, {need} needed each"
            ],
            details,
        )
    reasons = []
    tol = settings.outcome_tolerance
    c_res, b_res = candidate.resolution_rate or 0.0, baseline.resolution_rate or 0.0
    if c_res < b_res - tol:
        reasons.append(f"resolution rate {b_res:.3f} → {c_res:.3f} (tolerance {tol})")
    c_esc, b_esc = candidate.escalation_rate or 0.0, baseline.escalation_rate or 0.0
    if c_esc > b_esc + tol:
        reasons.append(f"escalation rate {b_esc:.3f} → {c_esc:.3f} (tolerance {tol})")
    return Check("outcomes", "fail" if reasons else "pass", reasons, details)


def run_gate(
    candidate: Router,
    baseline: Router,
    datasets: Sequence[Dataset],
    *,
    tenant: str,
    settings: GateSettings | None = None,
    topic_documents: Mapping[tuple[str, str], bool | None] | None = None,
    outcomes: tuple[OutcomeCounts, OutcomeCounts] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> GateReport:
    """Judge ``candidate`` against ``baseline`` (each a Router on its own space's index).

    Args:
        datasets: eval datasets whose corpus the tenant's documents hold (non-empty each).
        topic_documents: ``(tenant, entity_id) → live`` from the compacted topics (None for an
            entity whose newest event was dead-lettered); None: not compared.
        outcomes: (candidate, baseline) outcome counts; None: not judged.
    """
    settings = settings or GateSettings()
    progress("versioning")
    checks = [_versioning(candidate, topic_documents)]
    progress("coverage")
    checks.append(_coverage(candidate, datasets, tenant, settings))
    retrieval, rows = _retrieval(candidate, baseline, datasets, tenant, settings, progress)
    checks.append(retrieval)
    progress("latency")
    checks.append(_latency(candidate, baseline, datasets, tenant, settings))
    cand_out, base_out = outcomes if outcomes is not None else (None, None)
    checks.append(outcome_check(cand_out, base_out, settings))
    go = not any(c.status == "fail" for c in checks)
    return GateReport(
        candidate.space_id, baseline.space_id, tenant, go, checks, rows, settings.model_dump()
    )


class GateRecords:
    """The latest gate report of each candidate space, in Redis (``{namespace}:gate:{space_id}``,
    JSON of :meth:`GateReport.to_json`): ``crossroute gate`` records it, the console's models page
    shows it."""

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.prefix = f"{namespace}:gate:"

    def record(self, report: GateReport) -> None:
        import json

        self.client.set(self.prefix + report.candidate, json.dumps(report.to_json()))

    def latest(self, space_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The recorded reports of ``space_ids`` (spaces never gated are left out)."""
        import json

        if not space_ids:
            return {}
        raw = self.client.mget([self.prefix + s for s in space_ids])
        return {s: json.loads(r) for s, r in zip(space_ids, raw, strict=True) if r is not None}
