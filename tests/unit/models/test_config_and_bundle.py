"""Specs and manifests without exporting anything: loading, errors, hashing, verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.bundle import (
    EncoderFiles,
    Manifest,
    compute_space_id,
    file_entry,
    load_manifest,
    write_manifest,
)
from models.config import BundleSpec, list_configs, load_spec
from models.exceptions import BundleFormatError, BundleIntegrityError


def test_packaged_configs_load() -> None:
    assert "default" in list_configs()
    for name in list_configs():
        spec = load_spec(name)
        assert spec.dim >= max(spec.text.dim, spec.image.dim) or spec.head.dim is not None


def test_unknown_or_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleFormatError, match="no packaged config 'nope'; known: default, naive"):
        load_spec("nope")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "version": 1, "text": {}, "image": {}}))
    with pytest.raises(BundleFormatError, match=r"bad.json: text.name: Field required"):
        load_spec(bad)
    spec = load_spec("default").model_dump(mode="json")
    spec["image"]["preprocess"]["resize"] = 100  # smaller than the crop
    bad.write_text(json.dumps(spec))
    with pytest.raises(BundleFormatError, match="resize"):
        load_spec(bad)


def _fake_bundle(root: Path, spec: BundleSpec) -> Manifest:
    root.mkdir()
    for name in ("text.onnx", "image.onnx", "tokenizer.json"):
        (root / name).write_bytes(name.encode() * 10)
    files = {p.name: file_entry(p) for p in sorted(root.iterdir())}
    manifest = Manifest(
        space_id=compute_space_id(spec, files, None),
        spec=spec,
        dim=spec.dim,
        opset=spec.opset,
        text=EncoderFiles(
            onnx="text.onnx",
            inputs=("input_ids",),
            output="o",
            dim=spec.text.dim,
            tokenizer="tokenizer.json",
        ),
        image=EncoderFiles(
            onnx="image.onnx", inputs=("pixel_values",), output="o", dim=spec.image.dim
        ),
        libraries={},
        files=files,
    )
    write_manifest(root, manifest)
    return manifest


def test_manifest_round_trip_and_verification(tmp_path: Path) -> None:
    spec = load_spec("naive")
    manifest = _fake_bundle(tmp_path / "b", spec)
    assert load_manifest(tmp_path / "b") == manifest
    (tmp_path / "b" / "image.onnx").write_bytes(b"changed")
    with pytest.raises(BundleIntegrityError, match="image.onnx was modified"):
        load_manifest(tmp_path / "b")
    assert load_manifest(tmp_path / "b", verify=False).space_id == manifest.space_id


def test_not_a_bundle_and_wrong_format(tmp_path: Path) -> None:
    with pytest.raises(BundleFormatError, match="not a model bundle"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "someone-else/9"}))
    with pytest.raises(BundleFormatError, match="unsupported bundle format"):
        load_manifest(tmp_path)


def test_space_id_covers_files_and_training_not_labels() -> None:
    from models.bundle import FileEntry, ProjectionInfo

    spec = load_spec("naive")
    files = {"text.onnx": FileEntry(sha256="a" * 64, bytes=1)}
    base = compute_space_id(spec, files, None)
    assert base == compute_space_id(
        spec.model_copy(update={"name": "other", "version": 9}), files, None
    )
    assert base != compute_space_id(spec, {"text.onnx": FileEntry(sha256="b" * 64, bytes=1)}, None)
    proj = ProjectionInfo(
        weights="p", weights_sha256="c" * 64, training_data_digest="d" * 64, training={"loss": 1.0}
    )
    with_proj = compute_space_id(spec, files, proj)
    assert with_proj != base
    other_data = proj.model_copy(update={"training_data_digest": "e" * 64})
    assert compute_space_id(spec, files, other_data) != with_proj
    # Measured numbers in the training record do not change the space.
    assert (
        compute_space_id(spec, files, proj.model_copy(update={"training": {"loss": 2.0}}))
        == with_proj
    )


def test_image_feature_options_are_part_of_the_space_and_absent_at_their_defaults() -> None:
    from models.bundle import FileEntry
    from models.config import ColourFeatures

    spec = load_spec("naive")
    files = {"image.onnx": FileEntry(sha256="a" * 64, bytes=1)}
    pre = spec.image.preprocess
    # Options added after bundles existed are left out while at their default: old ids stay valid.
    dumped = pre.model_dump(mode="json")
    assert not {"crop", "colour", "stages"} & set(dumped)

    def with_pre(**update: object) -> BundleSpec:
        image = spec.image.model_copy(update={"preprocess": pre.model_copy(update=update)})
        return spec.model_copy(update={"image": image})

    ids = {
        compute_space_id(s, files, None)
        for s in (
            spec,
            with_pre(stages=True),
            with_pre(crop="pad"),
            with_pre(colour=ColourFeatures()),
            with_pre(stages=True, crop="pad", colour=ColourFeatures()),
        )
    }
    assert len(ids) == 5
    assert with_pre(stages=True).image.preprocess.model_dump(mode="json")["stages"] is True
    # A spec written to JSON and read back keeps the option.
    again = BundleSpec.model_validate_json(with_pre(stages=True).model_dump_json())
    assert again.image.preprocess.stages


def test_the_lexical_block_is_part_of_the_space_and_absent_by_default() -> None:
    from models.bundle import FileEntry
    from models.config import LexicalFeatures

    spec = load_spec("naive")
    files = {"text.onnx": FileEntry(sha256="a" * 64, bytes=1)}
    assert "lexical" not in spec.text.preprocess.model_dump(mode="json")

    def with_lexical(lexical: LexicalFeatures | None) -> BundleSpec:
        pre = spec.text.preprocess.model_copy(update={"lexical": lexical})
        return spec.model_copy(update={"text": spec.text.model_copy(update={"preprocess": pre})})

    ids = {
        compute_space_id(with_lexical(x), files, None)
        for x in (None, LexicalFeatures(), LexicalFeatures(buckets=4096), LexicalFeatures(weight=1))
    }
    assert len(ids) == 4
    assert compute_space_id(with_lexical(None), files, None) == compute_space_id(spec, files, None)
    again = BundleSpec.model_validate_json(with_lexical(LexicalFeatures()).model_dump_json())
    assert again.text.preprocess.lexical == LexicalFeatures()
