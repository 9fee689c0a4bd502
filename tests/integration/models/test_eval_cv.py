"""``crossroute eval --exemplars-cv`` with the real default bundle on a tiny support set: reworded
queries share a fold, out-of-scope F1 is cross-validated (the oracle's kept apart and labelled),
and out-of-scope queries become exemplars of the human queue."""

from __future__ import annotations

import json
from pathlib import Path

from models.embedder import Embedder
from models.eval.dataset import load_dataset
from models.eval.run import ORACLE, evaluate

ARTICLES = {
    "refunds": "Refunds\nHow to get your money back for an order.",
    "shipping": "Shipping\nWhen your order arrives and how to track the parcel.",
    "password": "Password reset\nHow to change or reset the password of your account.",
}
QUERIES = {
    "refunds": [
        "where is my refund",
        "where's my refund",
        "i want my money back",
        "can i get a refund for this order",
        "how long does a refund take",
        "refund not received yet",
    ],
    "shipping": [
        "when will my order arrive",
        "when will my order get here",
        "track my parcel",
        "my package is late",
        "how long is delivery",
        "has my order shipped",
    ],
    "password": [
        "i forgot my password",
        "i forgot my password!",
        "how do i reset my password",
        "change my account password",
        "cannot log in, password wrong",
        "password reset link",
    ],
}
OUT_OF_SCOPE = [
    "what's the weather tomorrow",
    "tell me a joke",
    "who won the football game",
    "play some music",
    "what time is it in tokyo",
    "how tall is mount everest",
]


def _dataset(root: Path) -> Path:
    root.mkdir()
    corpus = [{"_id": k, "kind": "article", "text": v, "attrs": {}} for k, v in ARTICLES.items()]
    queries, qrels = [], []
    for doc, texts in QUERIES.items():
        for i, text in enumerate(texts):
            queries.append({"_id": f"{doc}-{i}", "text": text, "attrs": {}})
            qrels.append(f"{doc}-{i}\t{doc}\t1\n")
    queries += [{"_id": f"oos-{i}", "text": t, "attrs": {}} for i, t in enumerate(OUT_OF_SCOPE)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(qrels))
    return root


def test_grouped_cross_validation_report(embedder: Embedder, tmp_path: Path) -> None:
    data = load_dataset(_dataset(tmp_path / "ds"))
    report = evaluate(data, embedder, latency_sample=0, exemplar_folds=3)
    ex = report["exemplars"]
    assert ex["n"] == 18 and ex["human"] == 6 and ex["rule"] == "prototype" and ex["grouped"]
    assert ex["groups"] < 24  # the rewordings ("where is my refund" / "where's my refund") merged
    oos = report["out_of_scope"]
    assert oos["threshold_source"] == "cross-validated" and len(oos["fold_thresholds"]) == 3
    assert oos["oracle"]["threshold_source"] == ORACLE
    assert {"precision", "recall", "f1", "in_scope_accuracy"} <= set(oos) & set(oos["oracle"])

    plain = evaluate(
        data, embedder, latency_sample=0, exemplar_folds=3, grouped=False, human_exemplars=False
    )
    assert plain["exemplars"]["groups"] == 24 and plain["exemplars"]["human"] == 0

    # another split's out-of-scope queries as escalated tickets; an explicit threshold is "given"
    given = evaluate(
        data, embedder, latency_sample=0, threshold=0.3, exemplar_rule="prototype",
        exemplars=[("money back please", "refunds")], escalated=["sing me a song"],
    )  # fmt: skip
    assert given["exemplars"] == {
        "source": "given", "n": 1, "unknown_documents": 0, "human": 1, "rule": "prototype"
    }  # fmt: skip
    assert given["out_of_scope"]["threshold_source"] == "given"
