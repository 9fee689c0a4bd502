"""Heads shipped inside the package: the trained projection a default bundle serves.

A shipped head lives in ``models/heads/NAME/``: ``projection.safetensors`` (float16 storage; the
runtime computes in float32) and ``head.json`` (:class:`ShippedHead`): the weights' sha256, the
training-data digest, the recipe that trained it (datasets, method, hyperparameters, seed), the
preprocessing and encoders it reads, and its dev metrics. ``crossroute models build`` copies the
weights into the bundle verbatim after checking their hash and that they fit the encoders;
``crossroute models head reproduce`` retrains them from the public data and compares the hash.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.bundle import Manifest, ProjectionInfo
from models.config import BundleSpec, ImagePreprocess, TextPreprocess
from models.exceptions import BundleFormatError, BundleIntegrityError

__all__ = [
    "HEAD_FILE",
    "WEIGHTS_FILE",
    "HeadRecipe",
    "ShippedHead",
    "check_fits",
    "load_shipped_head",
    "projection_info",
    "read_shipped_head",
    "shipped_head_dir",
    "write_shipped_head",
]

HEAD_FILE = "head.json"
WEIGHTS_FILE = "projection.safetensors"
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class HeadRecipe(BaseModel):
    """How a shipped head was trained: enough for ``crossroute models head reproduce``."""

    model_config = _FROZEN

    base_config: str = "naive"
    """Packaged config of the base bundle whose encoders the head reads."""
    method: Literal["linear", "inbatch", "mined"]
    pairs: tuple[str, ...]
    """Dataset folders (names under the data root) whose ``pairs.jsonl`` it was trained on."""
    support: tuple[str, ...] = ()
    """Dataset folders whose articles gave text↔text support pairs."""


class ShippedHead(BaseModel):
    """The contents of ``head.json``."""

    model_config = _FROZEN

    format: Literal["crossroute.head/1"] = "crossroute.head/1"
    name: str
    method: Literal["linear", "inbatch", "mined"]
    dim: Annotated[int, Field(gt=0)]
    weights: str = WEIGHTS_FILE
    weights_sha256: str
    storage: Literal["float16", "float32"]
    training_data_digest: str
    training: dict[str, Any]
    """The trained bundle's training record (hyperparameters, seed, selection metrics)."""
    recipe: HeadRecipe
    text_encoder: str
    image_encoder: str
    text_preprocess: TextPreprocess
    image_preprocess: ImagePreprocess
    dev_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    """``crossroute eval`` on the public dev splits (exact search): dataset → metric → value."""
    calibration: dict[str, Any] | None = None
    """The abstain threshold fitted on public data (``crossroute calibrate``'s record): what a
    router serving this head uses until it is calibrated on the deployment's own tickets."""


def shipped_head_dir(name: str) -> Path:
    """The folder of the head shipped as ``name``.

    Raises:
        BundleFormatError: no such head in this install.
    """
    root = Path(str(resources.files("models.heads")))
    folder = root / name
    if not (folder / HEAD_FILE).is_file():
        known = sorted(p.name for p in root.iterdir() if (p / HEAD_FILE).is_file())
        raise BundleFormatError(
            f"no shipped head {name!r} in {root}; known: {', '.join(known) or 'none'}"
        )
    return folder


def read_shipped_head(name: str, folder: Path | None = None) -> ShippedHead:
    """The record (``head.json``) of a shipped head, without checking its weights.

    Raises:
        BundleFormatError: no such head, or an unreadable ``head.json``.
    """
    folder = folder if folder is not None else shipped_head_dir(name)
    try:
        return ShippedHead.model_validate_json((folder / HEAD_FILE).read_bytes())
    except (OSError, ValidationError) as e:
        raise BundleFormatError(f"{folder / HEAD_FILE}: unreadable shipped head: {e}") from e


def load_shipped_head(name: str, folder: Path | None = None) -> tuple[ShippedHead, Path]:
    """Read and verify a shipped head: its record, and the path of weights whose sha256 matches.

    Raises:
        BundleFormatError: no such head, or an unreadable ``head.json``.
        BundleIntegrityError: the weights file is missing or its sha256 differs from the record.
    """
    folder = folder if folder is not None else shipped_head_dir(name)
    head = read_shipped_head(name, folder)
    weights = folder / head.weights
    if not weights.is_file():
        raise BundleIntegrityError(f"shipped head {name!r}: {weights} is missing")
    actual = hashlib.sha256(weights.read_bytes()).hexdigest()
    if actual != head.weights_sha256:
        raise BundleIntegrityError(
            f"shipped head {name!r} is corrupt: {weights} has sha256 {actual[:12]}…, its record "
            f"says {head.weights_sha256[:12]}…; reinstall crossroute, or retrain it with "
            "`crossroute models head reproduce`"
        )
    return head, weights


def check_fits(head: ShippedHead, spec: BundleSpec) -> None:
    """Refuse a spec whose encoders or preprocessing are not the ones the head was trained on.

    Raises:
        BundleFormatError: the spec names other encoders, reads them otherwise, or has another
            output dimension or method.
    """
    wrong = []
    if spec.text.name != head.text_encoder:
        wrong.append(f"text encoder {spec.text.name} (head: {head.text_encoder})")
    if spec.image.name != head.image_encoder:
        wrong.append(f"image encoder {spec.image.name} (head: {head.image_encoder})")
    if spec.text.preprocess != head.text_preprocess:
        wrong.append("text preprocessing")
    if spec.image.preprocess != head.image_preprocess:
        wrong.append("image preprocessing")
    if spec.head.dim != head.dim or spec.head.method != head.method:
        wrong.append(f"head {spec.head.method}/{spec.head.dim} (shipped: {head.method}/{head.dim})")
    if wrong:
        raise BundleFormatError(
            f"shipped head {head.name!r} does not match this config: {'; '.join(wrong)}"
        )


def projection_info(head: ShippedHead) -> ProjectionInfo:
    """The manifest record of a bundle serving ``head``."""
    return ProjectionInfo(
        weights=WEIGHTS_FILE,
        weights_sha256=head.weights_sha256,
        training_data_digest=head.training_data_digest,
        training={
            **head.training,
            "shipped_head": head.name,
            **({"calibration": head.calibration} if head.calibration else {}),
        },
    )


def write_shipped_head(
    trained: Path,
    manifest: Manifest,
    out: Path,
    *,
    name: str,
    recipe: HeadRecipe,
    dev_metrics: dict[str, dict[str, float]] | None = None,
    calibration: dict[str, Any] | None = None,
    storage: Literal["float16", "float32"] = "float16",
) -> ShippedHead:
    """Turn a bundle ``crossroute train`` wrote into a shippable head in ``out``.

    The weights are stored as ``storage`` (sorted tensor names, so the bytes are a function of the
    values alone) and hashed.

    Raises:
        BundleFormatError: the bundle has no trained head.
    """
    from safetensors.numpy import load_file, save_file

    if manifest.projection is None or manifest.spec.head.method == "naive":
        raise BundleFormatError(f"{trained}: no trained head to ship")
    tensors = load_file(str(trained / manifest.projection.weights))
    dtype = np.float16 if storage == "float16" else np.float32
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    save_file(
        {k: np.ascontiguousarray(tensors[k].astype(dtype)) for k in sorted(tensors)}, str(weights)
    )
    spec = manifest.spec
    head = ShippedHead(
        name=name,
        method=spec.head.method,  # not naive: checked above
        dim=manifest.dim,
        weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
        storage=storage,
        training_data_digest=manifest.projection.training_data_digest,
        training=manifest.projection.training,
        recipe=recipe,
        text_encoder=spec.text.name,
        image_encoder=spec.image.name,
        text_preprocess=spec.text.preprocess,
        image_preprocess=spec.image.preprocess,
        dev_metrics=dev_metrics or {},
        calibration=calibration,
    )
    (out / HEAD_FILE).write_text(
        json.dumps(head.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    )
    return head
