"""Evaluation: dataset validation with clear errors, and metrics checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from models.eval.dataset import DatasetError, load_dataset
from models.eval.metrics import best_f1_threshold, oos_scores, rank_metrics, recall_curve
from models.eval.report import compare_reports, render_html


def _write(
    root: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str]]
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels)
    )
    return root


def test_valid_dataset_loads(tmp_path: Path) -> None:
    ds = load_dataset(
        _write(
            tmp_path / "ok",
            [
                {
                    "_id": "d1",
                    "kind": "article",
                    "title": "Refunds",
                    "text": "How refunds work",
                    "attrs": {},
                }
            ],
            [
                {"_id": "q1", "text": "refund?", "attrs": {"topic": "money"}},
                {"_id": "q2", "text": "hello", "attrs": {}},
            ],
            [("q1", "d1")],
        )
    )
    assert ds.n_out_of_scope == 1 and ds.qrels == {"q1": frozenset({"d1"})}
    assert ds.corpus[0].full_text() == "Refunds\nHow refunds work"
    assert len(ds.digest()) == 64


@pytest.mark.parametrize(
    ("corrupt", "needle"),
    [
        (
            lambda r: (r / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n{not json\n'),
            "queries.jsonl:2: not valid JSON",
        ),
        (
            lambda r: (r / "corpus.jsonl").write_text('{"kind": "article", "text": "x"}\n'),
            "corpus.jsonl:1: _id: Field required",
        ),
        (
            lambda r: (r / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tnope\t1\n"),
            "qrels.tsv:2: unknown corpus id 'nope'",
        ),
        (lambda r: (r / "qrels.tsv").write_text("q\tc\n"), "qrels.tsv:1: header"),
        (
            lambda r: (r / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n"),
            "qrels.tsv:2: expected 3 tab-separated columns",
        ),
        (
            lambda r: (r / "corpus.jsonl").write_text(
                '{"_id": "d1", "image": "images/missing.jpg"}\n'
            ),
            "image 'images/missing.jpg' not found",
        ),
        (
            lambda r: (r / "corpus.jsonl").write_text(
                '{"_id": "d1", "image": "../../etc/passwd"}\n'
            ),
            "must be relative to the dataset folder",
        ),
        (
            lambda r: (r / "corpus.jsonl").write_text(
                '{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n'
            ),
            "duplicate _id 'd1'",
        ),
        (lambda r: (r / "queries.jsonl").unlink(), "queries.jsonl: file not found"),
    ],
)
def test_malformed_dataset_names_file_and_line(
    tmp_path: Path, corrupt: object, needle: str
) -> None:
    root = _write(
        tmp_path / "bad", [{"_id": "d1", "text": "a"}], [{"_id": "q1", "text": "x"}], [("q1", "d1")]
    )
    corrupt(root)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=needle):
        load_dataset(root)


def test_rank_metrics_by_hand() -> None:
    ranked = np.array([[5, 1, 2], [3, 4, 9], [7, 8, 0]])
    relevant = [frozenset({1}), frozenset({3, 9}), frozenset({6})]
    m = rank_metrics(ranked, relevant, ks=(1, 2))
    assert m["recall@1"] == pytest.approx(1 / 3)  # only query 2 hits at rank 1
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    ndcg_q1 = (1 / math.log2(3)) / 1.0
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2 + 0) / 3)
    assert recall_curve(ranked, relevant, 3) == pytest.approx([1 / 3, 2 / 3, 2 / 3])


def test_out_of_scope_scoring() -> None:
    top1 = np.array([0.9, 0.8, 0.3, 0.2, 0.6])
    is_oos = np.array([False, False, True, True, True])
    s = oos_scores(top1, is_oos, 0.5)
    assert (s["precision"], s["recall"]) == (1.0, pytest.approx(2 / 3))
    t = best_f1_threshold(top1, is_oos)
    assert 0.6 < t < 0.8 and oos_scores(top1, is_oos, t)["f1"] == 1.0


def test_compare_flags_worse_slices_and_html_is_self_contained() -> None:
    base = {
        "dataset": "d", "model": {"space_id": "sp-old"}, "n_queries": 50, "n_corpus": 5, "n_out_of_scope": 0,
        "retrieval": "exact", "metrics": {"recall@10": 0.8}, "recall_curve": [0.5, 0.8],
        "slices": {"cat": {"a": {"n": 25, "recall@10": 0.9}, "b": {"n": 25, "recall@10": 0.7}}},
    }  # fmt: skip
    new = json.loads(json.dumps(base))
    new["model"]["space_id"] = "sp-new"
    new["slices"]["cat"]["a"]["recall@10"] = 0.8
    new["slices"]["cat"]["b"]["recall@10"] = 0.75
    c = compare_reports(new, base)
    assert [w["slice"] for w in c["worse_slices"]] == ["cat=a"]
    page = render_html(new, c, base)
    assert page.startswith("<!doctype html>") and "<svg" in page and "cat=a" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # no external assets


def test_exemplars_vote_for_their_document() -> None:
    from models.eval.run import Exemplars, exact_search

    docs = np.eye(3, dtype=np.float32)
    query = np.array([[0.6, 0.0, 0.8]], dtype=np.float32)  # closest document: #2 (0.8)
    ranked, top = exact_search(docs, query, 3)
    assert ranked[0, 0] == 2 and top[0] == pytest.approx(0.8)
    # a past query right next to this one, resolved with document #0, outvotes it
    near = np.array([[0.6, 0.0, 0.8]], dtype=np.float32)
    ranked, top = exact_search(docs, query, 3, Exemplars(near, np.array([0])))
    assert ranked[0].tolist()[:2] == [0, 2] and top[0] == pytest.approx(1.0)
    # an exemplar never lowers a document's own score
    far = np.array([[0.0, 1.0, 0.0]], dtype=np.float32)
    ranked, top = exact_search(docs, query, 3, Exemplars(far, np.array([2])))
    assert ranked[0, 0] == 2 and top[0] == pytest.approx(0.8)
