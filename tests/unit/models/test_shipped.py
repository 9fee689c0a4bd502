"""The head shipped in the package: its record, its weights, and the checks that guard them."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from models.bundle import compute_space_id
from models.config import HeadSpec, load_spec
from models.exceptions import BundleFormatError, BundleIntegrityError
from models.projection import MlpHead
from models.shipped import (
    ShippedHead,
    check_fits,
    compare_heads,
    load_shipped_head,
    read_shipped_head,
    shipped_head_dir,
)

MAX_WEIGHTS_BYTES = 12 * 1024 * 1024


def test_the_default_config_serves_the_shipped_mined_head() -> None:
    spec = load_spec("default")
    assert spec.head.method == "mined"
    assert spec.head.shipped == "mined"
    head, weights = load_shipped_head("mined")
    check_fits(head, spec)  # same encoders, same preprocessing, same dim
    assert weights.stat().st_size <= MAX_WEIGHTS_BYTES
    assert head.storage == "float16"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == head.weights_sha256
    # what it was trained on and how it did, beside the weights
    assert head.recipe.pairs == ("myntra-t2i", "photo-routing", "flickr8k")
    assert len(head.training_data_digest) == 64
    assert head.training["config"]["seed"] == 20261126
    for dataset in ("myntra-t2i", "myntra-i2t", "myntra-attr2i", "photo-routing"):
        assert 0.0 < head.dev_metrics[dataset]["recall@10"] <= 1.0


def test_the_shipped_weights_form_a_head_of_the_recorded_shape() -> None:
    head, weights = load_shipped_head("mined")
    tensors = load_file(str(weights))
    assert {t.dtype for t in tensors.values()} == {np.dtype(np.float16)}
    mlp = MlpHead.from_tensors(tensors)
    assert mlp.dim == head.dim == 384
    spec = load_spec("default")
    lexical = spec.text.preprocess.lexical
    assert lexical is not None
    assert mlp.input_dims()["text"] == spec.text.dim + lexical.dim


def test_naive_stays_reachable_by_name_and_keeps_its_space() -> None:
    naive = load_spec("naive")
    assert naive.head == HeadSpec(method="naive")
    # an unset `shipped` is not serialised: specs (and space ids) of existing bundles are unchanged
    assert "shipped" not in naive.model_dump(mode="json")["head"]
    assert compute_space_id(naive, {}, None) == compute_space_id(
        naive.model_copy(update={"head": HeadSpec()}), {}, None
    )


def test_a_shipped_head_must_be_trained() -> None:
    with pytest.raises(ValueError, match="cannot be 'naive'"):
        HeadSpec(method="naive", shipped="mined")


def test_corrupt_shipped_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mined"
    shutil.copytree(shipped_head_dir("mined"), folder)
    weights = folder / "projection.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="shipped head 'mined' is corrupt"):
        load_shipped_head("mined", folder)
    weights.unlink()
    with pytest.raises(BundleIntegrityError, match="is missing"):
        load_shipped_head("mined", folder)


def test_unknown_or_unreadable_shipped_head(tmp_path: Path) -> None:
    with pytest.raises(BundleFormatError, match="no shipped head 'nope'.*known: mined"):
        shipped_head_dir("nope")
    (tmp_path / "head.json").write_text("{not json")
    with pytest.raises(BundleFormatError, match="unreadable shipped head"):
        read_shipped_head("x", tmp_path)


def test_a_head_that_does_not_fit_the_encoders_is_refused() -> None:
    head = read_shipped_head("mined")
    spec = load_spec("default")
    centre = spec.model_copy(
        update={
            "image": spec.image.model_copy(
                update={"preprocess": spec.image.preprocess.model_copy(update={"crop": "center"})}
            )
        }
    )
    with pytest.raises(BundleFormatError, match="does not match this config: image preprocessing"):
        check_fits(head, centre)
    other = spec.model_copy(
        update={"text": spec.text.model_copy(update={"name": "all-mpnet-base-v2"})}
    )
    with pytest.raises(BundleFormatError, match="text encoder all-mpnet-base-v2"):
        check_fits(head, other)
    with pytest.raises(BundleFormatError, match="head mined/256"):
        check_fits(head, spec.model_copy(update={"head": HeadSpec(method="mined", dim=256)}))


def _copy(tmp_path: Path, name: str, change: dict[str, np.ndarray] | None = None,
          **record: object) -> tuple[ShippedHead, Path]:  # fmt: skip
    """The shipped head copied to ``tmp_path/name``, with tensors and record fields replaced."""
    from safetensors.numpy import save_file

    head = read_shipped_head("mined")
    folder = tmp_path / name
    folder.mkdir()
    tensors = load_file(str(shipped_head_dir("mined") / head.weights)) | (change or {})
    save_file({k: tensors[k] for k in sorted(tensors)}, str(folder / head.weights))
    digest = hashlib.sha256((folder / head.weights).read_bytes()).hexdigest()
    return head.model_copy(update={"weights_sha256": digest, **record}), folder


def test_a_reproduction_is_identical_equivalent_or_different(tmp_path: Path) -> None:
    shipped = read_shipped_head("mined")
    ship_dir = shipped_head_dir("mined")
    weights = load_file(str(ship_dir / shipped.weights))
    name = sorted(weights)[0]
    w = weights[name].copy()

    same, folder = _copy(tmp_path, "same")
    assert compare_heads(shipped, ship_dir, same, folder).summary() == "identical"

    rounded = w.copy()
    rounded.flat[::97] = np.nextafter(rounded.flat[::97], np.float16(np.inf))  # one float16 step
    head, folder = _copy(tmp_path, "rounded", {name: rounded})
    c = compare_heads(shipped, ship_dir, head, folder)
    assert not c.identical and c.equivalent and 0 < c.changed_fraction < 0.02
    assert c.summary().startswith("equivalent: data same")

    moved = w.copy()
    moved.flat[0] += np.float16(0.05) * np.abs(w).max()  # 5 % of the tensor's range: not rounding
    head, folder = _copy(tmp_path, "moved", {name: moved})
    assert not compare_heads(shipped, ship_dir, head, folder).equivalent

    head, folder = _copy(tmp_path, "data", {name: rounded}, training_data_digest="0" * 64)
    c = compare_heads(shipped, ship_dir, head, folder)
    assert not c.equivalent and "data DIFFERENT" in c.summary()

    training = dict(shipped.training)
    stage = dict(training["stage1"])
    stage["validation"] = {k: v - 0.02 for k, v in stage["validation"].items()}
    training["stage1"] = stage
    head, folder = _copy(tmp_path, "metrics", {name: rounded}, training=training)
    assert not compare_heads(shipped, ship_dir, head, folder).equivalent

    head, folder = _copy(tmp_path, "shape", {name: w[:-1]})
    c = compare_heads(shipped, ship_dir, head, folder)
    assert not c.equivalent and not c.same_tensors
