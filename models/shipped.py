"""Heads shipped inside the package: the trained projection a default bundle serves.

A shipped head lives in ``models/heads/NAME/``: ``projection.safetensors`` (float16 storage; the
runtime computes in float32) and ``head.json`` (:class:`ShippedHead`): the weights' sha256, the
training-data digest, the recipe that trained it (datasets, method, hyperparameters, seed), the
preprocessing and encoders it reads, and its dev metrics. ``crossroute models build`` copies the
weights into the bundle verbatim after checking their hash and that they fit the encoders;
``crossroute models head reproduce`` retrains them from the public data and compares them
(:func:`compare_heads`): bit-identical where the encoders' features are, else equal up to float
rounding.

Why "up to rounding": the training is deterministic given its features (same seed, sorted inputs,
one thread order), but ONNX Runtime's kernels may round the last bit of a feature differently on
another machine or thread layout. Twenty epochs carry that into the last bit of about 0.5 % of the
float16 weights (measured: 0.06 % of a tensor's largest magnitude, every validation metric equal).
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
    "HeadComparison",
    "HeadRecipe",
    "ShippedHead",
    "check_fits",
    "compare_heads",
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


WEIGHT_TOLERANCE = 5e-3
"""Largest weight difference that is rounding, relative to the tensor's largest magnitude (five
float16 steps at the top of its range)."""
METRIC_TOLERANCE = 0.005
"""Largest difference of a validation metric in the training record that is rounding."""


class HeadComparison(BaseModel):
    """A reproduced head beside the shipped one (:func:`compare_heads`)."""

    model_config = _FROZEN

    identical: bool
    """Same weights, byte for byte."""
    same_data: bool
    """Same training-data digest (pairs, texts, image bytes)."""
    same_tensors: bool
    """Same tensor names and shapes."""
    max_weight_diff: float
    """Largest |shipped - reproduced| over a tensor, relative to its largest magnitude."""
    changed_fraction: float
    """Share of all weights that differ at all."""
    max_metric_diff: float
    """Largest difference of a validation metric of the training records."""

    @property
    def equivalent(self) -> bool:
        """Identical, or the same data and shapes with differences within float rounding."""
        return self.identical or (
            self.same_data
            and self.same_tensors
            and self.max_weight_diff <= WEIGHT_TOLERANCE
            and self.max_metric_diff <= METRIC_TOLERANCE
        )

    def summary(self) -> str:
        if self.identical:
            return "identical"
        return (
            f"{'equivalent' if self.equivalent else 'different'}: "
            f"data {'same' if self.same_data else 'DIFFERENT'}, "
            f"tensors {'same shapes' if self.same_tensors else 'DIFFERENT'}, "
            f"max weight difference {self.max_weight_diff:.2e} of the tensor's range "
            f"(tolerance {WEIGHT_TOLERANCE:g}), {self.changed_fraction:.2%} of weights changed, "
            f"max validation metric difference {self.max_metric_diff:.4f} "
            f"(tolerance {METRIC_TOLERANCE:g})"
        )


def _validation(head: ShippedHead) -> dict[str, float]:
    out: dict[str, float] = {}
    for stage in ("stage1", "stage2"):
        record = head.training.get(stage)
        if isinstance(record, dict):
            for name, value in (record.get("validation") or {}).items():
                out[f"{stage}/{name}"] = float(value)
    return out


def compare_heads(
    shipped: ShippedHead, shipped_dir: Path, reproduced: ShippedHead, reproduced_dir: Path
) -> HeadComparison:
    """How far a reproduced head is from the shipped one (weights and validation metrics)."""
    from safetensors.numpy import load_file

    a = load_file(str(shipped_dir / shipped.weights))
    b = load_file(str(reproduced_dir / reproduced.weights))
    same_tensors = a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    worst, changed, total = 0.0, 0, 0
    if same_tensors:
        for k in sorted(a):
            x, y = a[k].astype(np.float64), b[k].astype(np.float64)
            diff = np.abs(x - y)
            scale = float(np.abs(x).max()) or 1.0
            worst = max(worst, float(diff.max(initial=0.0)) / scale)
            changed += int(np.count_nonzero(diff))
            total += diff.size
    va, vb = _validation(shipped), _validation(reproduced)
    metric = float("inf")  # other metrics: not comparable
    if va.keys() == vb.keys():
        metric = max((abs(va[k] - vb[k]) for k in va), default=0.0)
    return HeadComparison(
        identical=shipped.weights_sha256 == reproduced.weights_sha256,
        same_data=shipped.training_data_digest == reproduced.training_data_digest,
        same_tensors=same_tensors,
        max_weight_diff=worst if same_tensors else float("inf"),
        changed_fraction=changed / total if total else 1.0,
        max_metric_diff=metric,
    )
