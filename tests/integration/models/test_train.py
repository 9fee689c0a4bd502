"""Training on real pairs (a small deterministic subset): determinism, torch↔numpy head parity,
group masking, mined-negative filtering, and the eval contract on a derived bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from models.bundle import load_manifest
from models.embedder import Embedder
from models.exceptions import BundleFormatError, UsageError
from models.projection import MlpHead
from models.train.contrastive import info_nce
from models.train.features import align_pair_texts, encode_pairs, load_pair_sets
from models.train.heads import Heads, TrainConfig
from models.train.negatives import mine_negatives
from models.train.run import train_bundle
from tests.conftest import require_shared_data
from tests.unit.test_cli import run_cli

SMALL = TrainConfig(
    stage1_epochs=2, stage2_epochs=1, batch_size=64, hidden=128, dim=64, mined_per_anchor=4,
    edit_negatives=0,  # (one-word edits: test_mined_trains_against_one_word_edits_of_real_titles)
)  # fmt: skip


@pytest.fixture(scope="module")
def small_pairs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Subsets of two real pair sets, as dataset folders (images linked, not copied)."""
    data = require_shared_data()
    out = []
    for name, n in (("myntra-t2i", 240), ("photo-routing", 120)):
        folder = tmp_path_factory.mktemp(name)
        lines = (data / name / "pairs.jsonl").read_text().splitlines()
        step = max(1, len(lines) // n)
        (folder / "pairs.jsonl").write_text("\n".join(lines[::step][:n]) + "\n")
        (folder / "images").symlink_to(data / name / "images", target_is_directory=True)
        out.append(folder)
    return out


def test_mined_trains_against_one_word_edits_of_real_titles(
    naive_bundle: Path, tmp_path: Path
) -> None:
    data = require_shared_data()
    folder = tmp_path / "catalogue"  # consecutive product ids: the same brands in several colours
    folder.mkdir()
    lines = (data / "myntra-t2i" / "pairs.jsonl").read_text().splitlines()[:240]
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "images").symlink_to(data / "myntra-t2i" / "images", target_is_directory=True)
    cfg = TrainConfig(**{**SMALL.__dict__, "edit_negatives": 2, "edit_from_epoch": 1})
    cache = tmp_path / "cache"
    first, again, off = (
        train_bundle(
            naive_bundle,
            [folder],
            tmp_path / name,
            method="mined",
            config=cfg,
            cache_dir=cache,
            edits=edits,
        )
        for name, edits in (("a", True), ("b", True), ("c", False))
    )  # fmt: skip  (b reads the edits' features from the cache)
    assert first.projection is not None and off.projection is not None
    mining = first.projection.training["mining"]
    assert mining["edits"] > 50 and mining["images_with_edits"] > 20  # e.g. Black → Blue
    assert len(list(cache.glob("edits-*.npy"))) == 1
    assert again.space_id == first.space_id  # deterministic, cached features included
    assert "edits" not in off.projection.training["mining"]
    assert off.projection.training["config"]["edit_negatives"] == 0
    assert off.space_id != first.space_id


def test_info_nce_masks_same_group_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    scale = torch.tensor(1.0)
    # Different groups: row 2's positive (b[1]) ties with its negative b[0] → log 2 on that row.
    loss = info_nce(a, b, torch.tensor([0, 1]), scale)
    manual_a2b = (
        -torch.log_softmax(torch.tensor([1.0, 1.0]), 0)[0]
        - torch.log_softmax(torch.tensor([0.0, 0.0]), 0)[1]
    ) / 2
    manual_b2a = (
        -torch.log_softmax(torch.tensor([1.0, 0.0]), 0)[0]
        - torch.log_softmax(torch.tensor([1.0, 0.0]), 0)[1]
    ) / 2
    assert float(loss) == pytest.approx(float((manual_a2b + manual_b2a) / 2), abs=1e-6)
    # Same group: the off-diagonal is masked, each row has only its positive → zero loss.
    assert float(info_nce(a, b, torch.tensor([3, 3]), scale)) == pytest.approx(0.0, abs=1e-6)


def test_training_is_deterministic_and_changes_the_space(
    naive_bundle: Path, small_pairs: list[Path], tmp_path: Path
) -> None:
    first = train_bundle(naive_bundle, small_pairs, tmp_path / "a", method="mined", config=SMALL)
    second = train_bundle(naive_bundle, small_pairs, tmp_path / "b", method="mined", config=SMALL)
    assert first.projection is not None and second.projection is not None
    assert first.projection.weights_sha256 == second.projection.weights_sha256
    assert first.space_id == second.space_id
    assert first.space_id != load_manifest(naive_bundle).space_id
    assert "stage1" in first.projection.training and "stage2" in first.projection.training
    # Other training data → another space.
    fewer = train_bundle(
        naive_bundle, small_pairs[:1], tmp_path / "c", method="mined", config=SMALL
    )
    assert (
        fewer.projection is not None
        and fewer.projection.training_data_digest != first.projection.training_data_digest
    )
    assert fewer.space_id != first.space_id


def test_a_trained_bundle_serves_with_the_preprocessing_it_was_trained_on(
    naive_bundle: Path, small_pairs: list[Path], tmp_path: Path
) -> None:
    manifest = train_bundle(
        naive_bundle, small_pairs[:1], tmp_path / "m", method="inbatch", config=SMALL
    )
    pre = manifest.spec.image.preprocess
    assert pre.crop == "pad" and pre.colour is not None and pre.stages
    assert manifest.image.stages_dim is not None
    served = Embedder.load(tmp_path / "m", providers="cpu")
    assert served.image_feature_dim == (
        manifest.image.dim + manifest.image.stages_dim + pre.colour.dim
    )
    # Serving = head(features exactly as training computed them): same letterbox, same histogram.
    pairs = encode_pairs(served, load_pair_sets(small_pairs[:1]))
    images = [small_pairs[0] / p.image for p in load_pair_sets(small_pairs[:1])[0][2][:8]]
    head = MlpHead.from_tensors(load_file(str(tmp_path / "m" / "projection.safetensors")))
    assert (
        np.abs(served.embed_images(images).vectors - head.image(pairs.image_feats[:8])).max() < 1e-5
    )
    # Texts: the encoder features and the hashed-word block, as training read them.
    lexical = manifest.spec.text.preprocess.lexical
    assert lexical is not None and pairs.lexical_dim == lexical.dim
    assert served.text_feature_dim == manifest.text.dim + lexical.dim
    texts = list(pairs.texts[:8])
    assert np.abs(served.embed_texts(texts).vectors - head.text(pairs.text_feats[:8])).max() < 1e-5
    # In chunks (embed_texts holds one chunk's features at a time), the same vectors, in order.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("models.embedder.TEXT_CHUNK", 3)
        chunked = served.embed_texts([*texts, " "])
    assert np.abs(chunked.vectors[:8] - head.text(pairs.text_feats[:8])).max() < 1e-5
    assert chunked.errors[8] is not None and not chunked.vectors[8].any()
    # The trained lexical weights are used: without the block the vectors differ.
    encoder_only = np.arange(served.text_feature_dim) < manifest.text.dim
    stripped = head.text(pairs.text_feats[:8] * encoder_only)
    assert np.abs(served.embed_texts(texts).vectors - stripped).max() > 1e-3
    # Weights that do not fit the spec's features are refused when the bundle opens.
    no_words = manifest.spec.text.preprocess.model_copy(update={"lexical": None})
    spec = manifest.spec.model_copy(
        update={"text": manifest.spec.text.model_copy(update={"preprocess": no_words})}
    )
    with pytest.raises(BundleFormatError, match="text head reads"):
        Embedder(tmp_path / "m", manifest.model_copy(update={"spec": spec}), providers="cpu")
    # Center crop without colour, stages or words is another space.
    plain = train_bundle(
        naive_bundle, small_pairs[:1], tmp_path / "p", method="inbatch", config=SMALL,
        image_crop="center", colour=False, stages=False, lexical=False,
    )  # fmt: skip
    assert plain.space_id != manifest.space_id and plain.spec.image.preprocess.colour is None
    assert not plain.spec.image.preprocess.stages and plain.spec.text.preprocess.lexical is None
    plain_served = Embedder.load(tmp_path / "p", providers="cpu")
    assert plain_served.image_feature_dim == manifest.image.dim
    assert plain_served.text_feature_dim == manifest.text.dim
    # The linear baseline maps into the raw text space: no lexical block.
    linear = train_bundle(naive_bundle, small_pairs[:1], tmp_path / "l", method="linear")
    assert linear.spec.text.preprocess.lexical is None


def test_pair_texts_align_with_the_indexed_article(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "images" / "a.png")
    (folder / "corpus.jsonl").write_text(
        '{"_id": "c1", "kind": "article", "title": "Dress", "text": "Dress: one-piece garment"}\n'
    )
    (folder / "queries.jsonl").write_text('{"_id": "q1", "image": "images/a.png"}\n')
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tc1\t1\n")
    (folder / "pairs.jsonl").write_text(
        '{"text": "Dress", "image": "images/a.png", "group": "dress"}\n'
        '{"text": "Hat", "image": "images/a.png", "group": "hat"}\n'
    )
    sets, changed = align_pair_texts(load_pair_sets([folder]))
    assert changed == 1
    assert [p.text for p in sets[0][2]] == ["Dress: one-piece garment", "Hat"]


def test_holdout_is_whole_groups_and_picks_the_best_epoch(
    naive_bundle: Path, small_pairs: list[Path]
) -> None:
    from models.train.contrastive import split_holdout, train_heads

    pairs = encode_pairs(Embedder.load(naive_bundle), load_pair_sets(small_pairs))
    train, val = split_holdout(pairs, 0.2, seed=7)
    assert val is not None and len(train.texts) + len(val.texts) == len(pairs.texts)
    myntra_val = {g for g, s in zip(val.groups, val.sources, strict=True) if s.startswith("myntra")}
    myntra_train = {
        g for g, s in zip(train.groups, train.sources, strict=True) if s == "myntra-t2i"
    }
    assert myntra_val and not myntra_val & myntra_train  # whole title groups held back
    again = split_holdout(pairs, 0.2, seed=7)[1]
    assert again is not None and again.texts == val.texts  # seeded
    _, record = train_heads(pairs, None, SMALL, mined=True)
    for stage in ("stage1", "stage2"):
        scores = record[stage]["validation_per_epoch"]
        assert len(scores) == record[stage]["epochs"] + 1  # epoch 0 = where the stage started
        assert record[stage]["validation"]["score"] == pytest.approx(max(scores), abs=1e-4)


def test_numpy_head_matches_torch_module(naive_bundle: Path, small_pairs: list[Path]) -> None:
    from models.train.contrastive import train_heads

    embedder = Embedder.load(naive_bundle, providers="cpu")
    pairs = encode_pairs(embedder, load_pair_sets(small_pairs))
    model, _ = train_heads(pairs, None, SMALL, mined=False)
    head = MlpHead.from_tensors(model.tensors())
    with torch.no_grad():
        t_ref = model.encode_text(torch.from_numpy(pairs.text_feats)).numpy()
        v_ref = model.encode_image(torch.from_numpy(pairs.image_feats)).numpy()
    assert np.abs(head.text(pairs.text_feats) - t_ref).max() < 1e-5
    assert np.abs(head.image(pairs.image_feats) - v_ref).max() < 1e-5


def test_mined_negatives_respect_groups_and_filter_near_duplicates(
    naive_bundle: Path, small_pairs: list[Path]
) -> None:
    embedder = Embedder.load(naive_bundle, providers="cpu")
    pairs = encode_pairs(embedder, load_pair_sets(small_pairs))
    model = Heads(pairs.text_feats.shape[1], pairs.image_feats.shape[1], SMALL)
    img_neg, txt_neg, stats = mine_negatives(model, pairs, SMALL)
    assert img_neg.shape == (len(pairs.texts), SMALL.mined_per_anchor)
    for i in range(len(pairs.texts)):
        assert not (pairs.groups[img_neg[i]] == pairs.groups[i]).any()
        assert not (pairs.groups[txt_neg[i]] == pairs.groups[i]).any()
    assert stats["mined"] > 0


def test_eval_of_a_trained_bundle_follows_the_contract(
    default_bundle: Path, naive_bundle: Path, small_pairs: list[Path], tmp_path: Path
) -> None:
    data = require_shared_data()
    # from the default bundle (the shipped head): training reads its encoders, not its head
    train_bundle(default_bundle, small_pairs, tmp_path / "m", method="linear")
    out = tmp_path / "eval.json"
    res = run_cli("eval", str(data / "clinc150"), "--model", str(tmp_path / "m"), "--json", str(out),
                  "--compare", str(naive_bundle), "--report", str(tmp_path / "r.html"), timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    for key in (
        "dataset",
        "dataset_digest",
        "model",
        "n_queries",
        "n_corpus",
        "n_out_of_scope",
        "metrics",
        "out_of_scope",
        "slices",
        "latency_ms",
    ):
        assert key in report
    assert (
        report["n_queries"] == 3100
        and report["n_corpus"] == 150
        and report["n_out_of_scope"] == 100
    )
    assert set(report["metrics"]) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
    assert set(report["out_of_scope"]) >= {"threshold", "precision", "recall", "f1"}
    assert all(v["n"] >= 20 for values in report["slices"].values() for v in values.values())
    assert report["latency_ms"]["query_embed_p95"] >= report["latency_ms"]["query_embed_p50"] > 0
    # The linear head keeps text in the raw encoder space: text routing equals raw cosine.
    assert report["comparison"]["metrics"]["recall@1"] == pytest.approx(0.0, abs=1e-9)
    assert (tmp_path / "r.html").read_text().count("<svg") >= 3


def test_eval_of_a_malformed_dataset_is_one_line(naive_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": oops}\n')
    res = run_cli("eval", str(tmp_path / "ds"), "--model", str(naive_bundle))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "corpus.jsonl:2: not valid JSON" in res.stderr


def test_pairs_audit_drops_with_reasons_and_filters(naive_bundle: Path, tmp_path: Path) -> None:
    data = require_shared_data()
    src = data / "myntra-t2i"
    rows = [json.loads(line) for line in (src / "pairs.jsonl").read_text().splitlines()[:60]]
    folder = tmp_path / "pairs"
    (folder / "images").mkdir(parents=True)
    for r in rows:
        (folder / r["image"]).write_bytes((src / r["image"]).read_bytes())
    (folder / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    extra = [
        dict(rows[0]),  # exact duplicate of line 1
        {
            "text": "Black leaping cat tee",
            "image": rows[1]["image"],
            "group": "another-group",
        },  # image in a 2nd group
        {"text": "Nike Men Black Shoes", "image": "images/broken.jpg", "group": "g-broken"},
    ]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + extra))
    out = tmp_path / "report.json"
    res = run_cli("pairs", "audit", str(folder), "--model", str(naive_bundle), "--json", str(out),
                  "--filter", str(tmp_path / "clean"), "--min-slice-pairs", "5", timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["pairs"] == 63 and report["dropped"] == 3
    assert report["images_in_several_groups"] == 1
    dropped = [
        json.loads(line) for line in (tmp_path / "clean" / "dropped.jsonl").read_text().splitlines()
    ]
    reasons = {d["line"]: d["reason"] for d in dropped}
    assert reasons[61] == "duplicate of line 1"
    assert reasons[62].startswith("same image bytes already paired in group")
    assert reasons[63].startswith("image cannot be used")
    kept = (tmp_path / "clean" / "pairs.jsonl").read_text().splitlines()
    assert len(kept) == 60
    # The cleaned folder is itself a valid pairs folder (images linked, not copied).
    from models.eval.dataset import load_pairs

    assert len(load_pairs(tmp_path / "clean")) == 60
    assert "coverage" in report and "poorly_grounded_tokens" in report


FLOOR = TrainConfig(
    stage1_epochs=8, stage2_epochs=2, batch_size=64, hidden=256, dim=128, mined_per_anchor=4,
    edit_negatives=0,
)  # fmt: skip
"""A short training run (about 10 s on two cores) that must already route photos."""


def test_training_beats_the_untrained_bundle_on_held_out_photos(
    naive_bundle: Path, small_pairs: list[Path], tmp_path: Path
) -> None:
    """Quality floor: photo-routing's dev photos (none of them in the training pairs) routed to one
    of 10 class articles. The untrained bundle is at chance (its image and text features share no
    space); a head trained on 360 real pairs must route most of them (measured: recall@1 0.094 →
    0.610). A broken image head, or a head trained on shuffled pairs, stays near chance."""
    from models.embedder import Embedder
    from models.eval.dataset import load_dataset
    from models.eval.run import evaluate

    dev = load_dataset(require_shared_data() / "photo-routing")
    trained = tmp_path / "mined"
    train_bundle(naive_bundle, small_pairs, trained, method="mined", config=FLOOR)
    untrained, mined = (
        evaluate(dev, Embedder.load(b, providers="cpu"), latency_sample=0)["metrics"]
        for b in (naive_bundle, trained)
    )
    assert untrained["recall@1"] < 0.2  # chance is 0.1
    assert mined["recall@1"] >= 0.45, (untrained, mined)
    assert mined["mrr@10"] >= untrained["mrr@10"] + 0.3, (untrained, mined)


def test_training_on_fewer_pairs_than_a_batch(naive_bundle: Path, tmp_path: Path) -> None:
    """A set smaller than a quarter batch is one batch (it used to make no batch at all and crash
    the scheduler with a division by zero); a set too small to train on is a clear error."""
    data = require_shared_data()
    lines = (data / "photo-routing" / "pairs.jsonl").read_text().splitlines()
    for n in (40, 3):
        folder = tmp_path / f"pairs-{n}"
        folder.mkdir()
        (folder / "pairs.jsonl").write_text("\n".join(lines[:n]) + "\n")
        (folder / "images").symlink_to(data / "photo-routing" / "images", target_is_directory=True)
    small = TrainConfig(**{**SMALL.__dict__, "batch_size": 256})
    manifest = train_bundle(
        naive_bundle, [tmp_path / "pairs-40"], tmp_path / "b40", method="inbatch", config=small
    )
    assert manifest.projection is not None and "stage1" in manifest.projection.training
    assert manifest.projection.training["pair_folders"] == ["pairs-40"]
    with pytest.raises(UsageError, match="3 usable pairs .* at least 8"):
        train_bundle(naive_bundle, [tmp_path / "pairs-3"], tmp_path / "b3", method="mined")
