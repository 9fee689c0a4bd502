"""Heads that map encoder features into the one embedding space, applied with numpy (no torch).

``naive``: zero-pad each modality's unit-norm features to the space's dimension (no training; the
baseline in which text↔image similarity is meaningless). Trained heads (``linear``, ``inbatch``,
``mined``) are small MLPs stored in ``projection.safetensors`` as ``{tower}.{i}.weight`` /
``{tower}.{i}.bias`` for tower ``text`` or ``image`` and layer ``i``, tanh-GELU between layers; their
output is L2-normalised. The torch training module (``models/train``) writes the same layout, and a
parity test holds the two to each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from models.bundle import Manifest
from models.exceptions import BundleFormatError

__all__ = ["Head", "MlpHead", "NaiveHead", "gelu_tanh", "l2_normalize", "load_head"]

_KEY = re.compile(r"^(text|image)\.(\d+)\.(weight|bias)$")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise unit norm (rows of zeros stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (``torch.nn.GELU(approximate="tanh")``)."""
    c = np.float32(np.sqrt(2.0 / np.pi))
    out: np.ndarray = (0.5 * x * (1.0 + np.tanh(c * (x + np.float32(0.044715) * x**3)))).astype(
        np.float32
    )
    return out


class Head(Protocol):
    """Maps unit-norm encoder features to unit-norm vectors of the space."""

    def text(self, feats: np.ndarray) -> np.ndarray: ...

    def image(self, feats: np.ndarray) -> np.ndarray: ...

    def input_dims(self) -> dict[str, int | None]:
        """Feature width each tower reads (``None``: any)."""
        ...


@dataclass(frozen=True)
class NaiveHead:
    """Zero-pad to ``dim`` (features are already unit-norm, so rows stay unit-norm)."""

    dim: int

    def _pad(self, feats: np.ndarray) -> np.ndarray:
        out = np.zeros((feats.shape[0], self.dim), dtype=np.float32)
        width = min(feats.shape[1], self.dim)
        out[:, :width] = feats[:, :width]
        return l2_normalize(out)

    def text(self, feats: np.ndarray) -> np.ndarray:
        return self._pad(feats)

    def image(self, feats: np.ndarray) -> np.ndarray:
        return self._pad(feats)

    def input_dims(self) -> dict[str, int | None]:
        return {"text": None, "image": None}


@dataclass(frozen=True)
class MlpHead:
    """Per-tower MLPs: ``x → W0 x + b0 → GELU → … → W_last x + b_last → L2``."""

    towers: dict[str, list[tuple[np.ndarray, np.ndarray]]]

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> MlpHead:
        """Build from ``{tower}.{i}.{weight|bias}`` arrays.

        Raises:
            BundleFormatError: unknown keys, missing layers or mismatched shapes.
        """
        layers: dict[str, dict[int, dict[str, np.ndarray]]] = {"text": {}, "image": {}}
        for key, value in tensors.items():
            m = _KEY.match(key)
            if m is None:
                raise BundleFormatError(f"projection: unexpected tensor {key!r}")
            tower, i, kind = m.group(1), int(m.group(2)), m.group(3)
            layers[tower].setdefault(i, {})[kind] = np.asarray(value, dtype=np.float32)
        towers: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for tower, by_index in layers.items():
            if sorted(by_index) != list(range(len(by_index))) or not by_index:
                raise BundleFormatError(f"projection: tower {tower!r} has missing layers")
            seq: list[tuple[np.ndarray, np.ndarray]] = []
            for i in range(len(by_index)):
                w, b = by_index[i].get("weight"), by_index[i].get("bias")
                if w is None or b is None or w.ndim != 2 or b.shape != (w.shape[0],):
                    raise BundleFormatError(f"projection: {tower}.{i} has bad weight/bias shapes")
                if seq and seq[-1][0].shape[0] != w.shape[1]:
                    raise BundleFormatError(
                        f"projection: {tower}.{i} input does not match layer {i - 1}"
                    )
                seq.append((w, b))
            towers[tower] = seq
        if towers["text"][-1][0].shape[0] != towers["image"][-1][0].shape[0]:
            raise BundleFormatError("projection: text and image towers end in different dimensions")
        return cls(towers)

    @property
    def dim(self) -> int:
        """Output dimension."""
        return int(self.towers["text"][-1][0].shape[0])

    def _apply(self, tower: str, x: np.ndarray) -> np.ndarray:
        layers = self.towers[tower]
        for i, (w, b) in enumerate(layers):
            x = x @ w.T + b
            if i < len(layers) - 1:
                x = gelu_tanh(x)
        return l2_normalize(x)

    def input_dims(self) -> dict[str, int | None]:
        return {tower: int(layers[0][0].shape[1]) for tower, layers in self.towers.items()}

    def text(self, feats: np.ndarray) -> np.ndarray:
        return self._apply("text", feats.astype(np.float32, copy=False))

    def image(self, feats: np.ndarray) -> np.ndarray:
        return self._apply("image", feats.astype(np.float32, copy=False))


def load_head(bundle_dir: Path, manifest: Manifest) -> Head:
    """The head a (verified) bundle declares."""
    if manifest.projection is None:
        if manifest.spec.head.method != "naive":
            raise BundleFormatError(
                f"{bundle_dir}: head {manifest.spec.head.method!r} needs projection weights"
            )
        return NaiveHead(manifest.dim)
    from safetensors.numpy import load_file

    head = MlpHead.from_tensors(load_file(str(bundle_dir / manifest.projection.weights)))
    if head.dim != manifest.dim:
        raise BundleFormatError(
            f"{bundle_dir}: projection outputs {head.dim}-d, manifest says {manifest.dim}"
        )
    return head
