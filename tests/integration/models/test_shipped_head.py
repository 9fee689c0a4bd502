"""The default bundle serves the head shipped in the package; a corrupt or unfitting head never
lands; the shipped weights are reproduced bit for bit from the public data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.bundle import load_manifest, sha256_file
from models.config import load_spec
from models.embedder import Embedder
from models.exceptions import BundleFormatError, BundleIntegrityError
from models.export.build import build_bundle
from models.shipped import load_shipped_head, read_shipped_head, shipped_head_dir
from tests.conftest import require_shared_data
from tests.unit.test_cli import run_cli


def test_the_default_bundle_serves_the_shipped_head(default_bundle: Path) -> None:
    manifest = load_manifest(default_bundle)
    head, weights = load_shipped_head("mined")
    assert manifest.spec.head.shipped == "mined" and manifest.dim == head.dim == 384
    assert manifest.projection is not None
    assert manifest.projection.weights_sha256 == head.weights_sha256 == sha256_file(weights)
    assert manifest.projection.training_data_digest == head.training_data_digest
    assert manifest.projection.training["shipped_head"] == "mined"
    assert sha256_file(default_bundle / "projection.safetensors") == head.weights_sha256
    embedder = Embedder.load(default_bundle, providers="cpu")
    vec = embedder.embed_texts(["black running shoe"]).vectors
    assert vec.shape == (1, 384)


def test_a_corrupt_shipped_head_is_refused_before_anything_is_built(
    default_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.shipped

    copy = tmp_path / "mined"
    shutil.copytree(shipped_head_dir("mined"), copy)
    weights = copy / "projection.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    monkeypatch.setattr(models.shipped, "shipped_head_dir", lambda name: copy)
    out = tmp_path / "bundle"
    shutil.copytree(default_bundle, out)
    before = {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()}
    with pytest.raises(BundleIntegrityError, match="corrupt"):
        build_bundle(load_spec("default"), out)
    assert {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()} == before  # untouched


def test_a_head_that_does_not_fit_its_encoders_is_refused(tmp_path: Path) -> None:
    spec = load_spec("default")
    no_words = spec.model_copy(
        update={
            "text": spec.text.model_copy(
                update={"preprocess": spec.text.preprocess.model_copy(update={"lexical": None})}
            )
        }
    )
    with pytest.raises(BundleFormatError, match="text preprocessing"):
        build_bundle(no_words, tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.timeout(3600)
def test_the_shipped_weights_are_reproduced_from_the_public_data(tmp_path: Path) -> None:
    """Retraining with the recorded recipe on ../shared/data gives the same weights (minutes: the
    whole mined schedule on 16833 pairs; features come from the cache when present): the same
    sha256 where this machine's encoders round features as the shipping one's did, else the same
    data and validation metrics with weights equal up to float rounding (models.shipped)."""
    data = require_shared_data()
    out = run_cli(
        "models", "head", "reproduce", "mined", "--data", str(data), "--out", str(tmp_path / "h"),
        timeout=3600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    head, _ = load_shipped_head("mined")
    reproduced = read_shipped_head("mined", tmp_path / "h")
    assert reproduced.training_data_digest == head.training_data_digest
    if "identical" in out.stdout:
        assert sha256_file(tmp_path / "h" / "projection.safetensors") == head.weights_sha256
    else:
        assert "equivalent: data same, tensors same shapes" in out.stdout, out.stdout
