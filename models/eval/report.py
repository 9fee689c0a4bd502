"""Comparison of two evaluation reports and a self-contained HTML report with inline SVG plots."""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["compare_reports", "render_html"]

WORSE = -0.01
"""A slice whose recall@10 moves by less than this is flagged as worse."""


def compare_reports(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Per-metric and per-slice deltas ``new - old``; slices that got worse are listed."""
    metrics = {k: round(new["metrics"][k] - old["metrics"].get(k, 0.0), 6) for k in new["metrics"]}
    slices: dict[str, dict[str, dict[str, float]]] = {}
    worse = []
    for key, values in new.get("slices", {}).items():
        for value, m in values.items():
            before = old.get("slices", {}).get(key, {}).get(value)
            if before is None:
                continue
            delta = {k: round(m[k] - before[k], 6) for k in m if k != "n" and k in before}
            slices.setdefault(key, {})[value] = {"n": m["n"], **delta}
            if delta.get("recall@10", 0.0) < WORSE:
                worse.append(
                    {"slice": f"{key}={value}", "n": m["n"], "recall@10_delta": delta["recall@10"]}
                )
    oos = None
    if "out_of_scope" in new and "out_of_scope" in old:
        oos = round(new["out_of_scope"]["f1"] - old["out_of_scope"]["f1"], 6)
    return {
        "new": new["model"]["space_id"],
        "old": old["model"]["space_id"],
        "metrics": metrics,
        "out_of_scope_f1": oos,
        "slices": slices,
        "worse_slices": sorted(worse, key=lambda w: w["recall@10_delta"]),
    }


def _bars(title: str, items: list[tuple[str, float]], *, signed: bool = False) -> str:
    """A horizontal bar chart as inline SVG (values in [0, 1], or [-1, 1] when signed)."""
    row, label_w, bar_w = 18, 220, 360
    height = row * len(items) + 30
    zero = label_w + (bar_w / 2 if signed else 0)
    scale = bar_w / 2 if signed else bar_w
    parts = [
        f'<svg width="{label_w + bar_w + 80}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    parts.append(f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>')
    for i, (label, value) in enumerate(items):
        y = 24 + i * row
        w = abs(value) * scale
        x = zero - w if value < 0 else zero
        color = "#c0392b" if value < 0 else "#2e86c1"
        parts.append(f'<text x="0" y="{y + 12}" font-size="11">{html.escape(label[:34])}</text>')
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 4}" fill="{color}"/>'
        )
        parts.append(
            f'<text x="{label_w + bar_w + 4}" y="{y + 12}" font-size="11">{value:+.3f}</text>'
            if signed
            else f'<text x="{label_w + bar_w + 4}" y="{y + 12}" font-size="11">{value:.3f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _curve(title: str, curves: dict[str, list[float]]) -> str:
    w, h, pad = 420, 240, 30
    colors = ["#2e86c1", "#c0392b", "#27ae60", "#8e44ad"]
    parts = [f'<svg width="{w + 160}" height="{h + 2 * pad}" xmlns="http://www.w3.org/2000/svg">']
    parts.append(f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>')
    parts.append(f'<rect x="{pad}" y="{pad}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    for j, (name, ys) in enumerate(curves.items()):
        if not ys:
            continue
        pts = " ".join(
            f"{pad + w * i / max(len(ys) - 1, 1):.1f},{pad + h * (1 - y):.1f}"
            for i, y in enumerate(ys)
        )
        color = colors[j % len(colors)]
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.append(
            f'<text x="{w + pad + 8}" y="{pad + 14 + 16 * j}" fill="{color}" font-size="11">{html.escape(name)}</text>'
        )
    parts.append(
        f'<text x="{pad}" y="{h + pad + 16}" font-size="11">K = 1 … {max(len(v) for v in curves.values())}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def render_html(
    report: dict[str, Any],
    comparison: dict[str, Any] | None = None,
    other: dict[str, Any] | None = None,
) -> str:
    """One HTML page, no external assets: summary, metric per slice, deltas, recall@K curves."""
    sections = [
        f"<h1>crossroute eval — {html.escape(report['dataset'])}</h1>",
        f"<p>space <code>{html.escape(report['model']['space_id'])}</code>, {report['n_queries']} queries, "
        f"{report['n_corpus']} documents, {report['n_out_of_scope']} out of scope; {html.escape(report['retrieval'])}</p>",
        _bars("metrics", sorted(report["metrics"].items())),
    ]
    if "out_of_scope" in report:
        o = report["out_of_scope"]
        sections.append(
            f"<p>out of scope: threshold {o['threshold']:.4f} ({html.escape(o['threshold_source'])}), "
            f"precision {o['precision']:.3f}, recall {o['recall']:.3f}, F1 {o['f1']:.3f}</p>"
        )
    for key, values in report.get("slices", {}).items():
        items = sorted(
            ((f"{v} (n={m['n']})", m["recall@10"]) for v, m in values.items()), key=lambda x: x[1]
        )
        sections.append(_bars(f"recall@10 by {key}", items[:40]))
    curves = {report["model"]["space_id"]: report.get("recall_curve", [])}
    if other is not None:
        curves[other["model"]["space_id"]] = other.get("recall_curve", [])
    sections.append(_curve("recall@K", curves))
    if comparison is not None:
        sections.append(f"<h2>vs {html.escape(comparison['old'])}</h2>")
        sections.append(_bars("metric deltas", sorted(comparison["metrics"].items()), signed=True))
        for key, values in comparison["slices"].items():
            items = sorted(
                ((f"{v} (n={m['n']})", m.get("recall@10", 0.0)) for v, m in values.items()),
                key=lambda x: x[1],
            )
            sections.append(_bars(f"recall@10 delta by {key}", items[:40], signed=True))
        if comparison["worse_slices"]:
            rows = "".join(
                f"<tr><td>{html.escape(w['slice'])}</td><td>{w['n']}</td><td>{w['recall@10_delta']:+.3f}</td></tr>"
                for w in comparison["worse_slices"]
            )
            sections.append(
                f"<h3>slices that got worse</h3><table><tr><th>slice</th><th>n</th><th>Δ recall@10</th></tr>{rows}</table>"
            )
    sections.append(
        f"<details><summary>raw report</summary><pre>{html.escape(json.dumps(report, indent=2))}</pre></details>"
    )
    body = "\n".join(f"<section>{s}</section>" for s in sections)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>crossroute eval</title>"
        "<style>body{font-family:sans-serif;margin:2em}section{margin:1em 0}td,th{padding:2px 8px}</style>"
        f"</head><body>{body}</body></html>\n"
    )
