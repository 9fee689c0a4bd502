"""Versioned specs of the encoders and of a bundle: everything that decides what a vector is.

A :class:`BundleSpec` names the text, image and OCR encoders, their preprocessing and the head that
maps encoder features into the one embedding space. Specs are frozen pydantic models loaded from JSON
(``models/configs/<name>.json`` or any path); their canonical JSON is hashed into the bundle's
space id, so changing any preprocessing parameter changes the space.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from models.exceptions import BundleFormatError

__all__ = [
    "BundleSpec",
    "ColourFeatures",
    "HeadSpec",
    "ImageEncoderSpec",
    "ImageLimits",
    "ImagePreprocess",
    "LexicalFeatures",
    "OcrSpec",
    "OpenClipSource",
    "TextEncoderSpec",
    "TextPreprocess",
    "canonical_json",
    "list_configs",
    "load_spec",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def canonical_json(obj: object) -> bytes:
    """Stable JSON bytes (sorted keys, no whitespace) — the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(obj: object) -> str:
    """sha256 hex of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()


class LexicalFeatures(BaseModel):
    """Hashed words appended to the text encoder's features (a lexical block next to the dense one).

    A sentence encoder blurs the words a catalogue lives by: brand names, "navy" against "blue",
    "kurta" against "kurti". The text's words (Unicode ``\\w+`` runs, case-folded, each counted once)
    are hashed with CRC-32 into ``buckets`` bins; the block is scaled to norm ``weight`` (0 for a text
    without words). A trained head learns a vector per bin; the hash needs no vocabulary file, so
    serving and training read the same features from the text alone. ``weight`` sets how much the
    block counts against the unit-norm encoder features (and how fast its weights learn).
    """

    model_config = _FROZEN

    buckets: Annotated[int, Field(ge=16, le=1 << 20)] = 8192
    weight: Annotated[float, Field(gt=0, le=100)] = 3.0
    hash: Literal["crc32"] = "crc32"

    @property
    def dim(self) -> int:
        """Length of the block."""
        return self.buckets


class TextPreprocess(BaseModel):
    """Tokenization of the text tower (implemented with ``tokenizers``, no torch), and the optional
    lexical block (:class:`LexicalFeatures`) next to the encoder's features."""

    model_config = _FROZEN

    max_length: Annotated[int, Field(ge=8, le=8192)] = 256
    """Tokens per text including special tokens; longer texts are truncated (right side)."""
    pad_id: int = 0
    pad_token: str = "[PAD]"  # noqa: S105  # a vocabulary token, not a secret
    collapse_whitespace: bool = True
    """Fold runs of whitespace to one space and strip the ends before tokenizing."""
    lexical: LexicalFeatures | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out while unset, so the manifests and space ids of existing bundles stay valid.
        data: dict[str, Any] = handler(self)
        if self.lexical is None:
            data.pop("lexical", None)
        return data


class ImageLimits(BaseModel):
    """Refuse an image before decoding it when it is over these limits."""

    model_config = _FROZEN

    max_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    max_pixels: Annotated[int, Field(gt=0)] = 40_000_000
    """Width x height read from the header, checked before any pixel is decoded."""
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
    """Pillow format names accepted; anything else is an :class:`ImageDecodeError`."""


class ColourFeatures(BaseModel):
    """A colour histogram appended to the image encoder's pooled features.

    ImageNet encoders are trained to be colour-invariant, yet "beige", "navy", "check" are what product
    titles and tickets talk about. The histogram is over HSV (``hue_bins x sat_bins x val_bins``, plus
    ``val_bins`` grey bins for unsaturated pixels) of a ``size`` px thumbnail, weighted towards the
    centre (Gaussian, ``centre_sigma`` of the side) and away from a near-white background; its square
    root is unit-norm (Hellinger), so it sits next to the unit-norm encoder features.
    """

    model_config = _FROZEN

    hue_bins: Annotated[int, Field(ge=1, le=64)] = 12
    sat_bins: Annotated[int, Field(ge=2, le=16)] = 3
    val_bins: Annotated[int, Field(ge=1, le=16)] = 3
    size: Annotated[int, Field(ge=8, le=256)] = 64
    centre_sigma: Annotated[float, Field(gt=0, le=10)] = 0.25
    background_min: Annotated[int, Field(ge=0, le=255)] = 235
    """Pixels whose every channel is at least this are background (catalogue shots on white)."""
    background_weight: Annotated[float, Field(ge=0, le=1)] = 0.05

    @property
    def dim(self) -> int:
        """Length of the histogram."""
        return self.hue_bins * self.sat_bins * self.val_bins + self.val_bins


class ImagePreprocess(BaseModel):
    """Decode → orient → flatten alpha → resize + crop (or letterbox) → normalise (CHW float32).

    ``crop="center"``: resize the shorter side, centre crop; the resize reproduces torchvision's
    ``Resize(int)`` exactly (the long side is truncated, not rounded), so the Pillow/numpy serving path
    matches the torch reference. ``crop="pad"``: letterbox the whole image onto a ``background``
    square, then resize to ``size`` (nothing is cut off: catalogue shots are tall and centre crops
    lose the shoes or the collar). ``colour``: append a colour histogram to the features.
    ``stages``: append the encoder's pooled intermediate-stage features (its second ONNX output;
    EfficientNet stages 1-6), which keep the textures and patterns the last stage pools away.
    """

    model_config = _FROZEN

    size: Annotated[int, Field(ge=16, le=1024)] = 224
    """Side of the square crop fed to the encoder."""
    resize: Annotated[int, Field(ge=16, le=2048)] = 256
    """Shorter side after resizing (timm: ``floor(size / crop_pct)``)."""
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    exif_transpose: bool = True
    """Apply the EXIF orientation (phone photos) before anything else."""
    background: tuple[int, int, int] = (255, 255, 255)
    """Colour transparent pixels are composited onto (screenshots with alpha), and letterbox fill."""
    limits: ImageLimits = ImageLimits()
    crop: Literal["center", "pad"] = "center"
    colour: ColourFeatures | None = None
    stages: bool = False

    @model_serializer(mode="wrap")
    def _omit_unset_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Options added after bundles were built are left out while at their default, so the
        # manifests and space ids of existing bundles stay valid.
        data: dict[str, Any] = handler(self)
        if self.crop == "center":
            data.pop("crop", None)
        if self.colour is None:
            data.pop("colour", None)
        if not self.stages:
            data.pop("stages", None)
        return data

    @model_validator(mode="after")
    def _crop_fits(self) -> ImagePreprocess:
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be >= size ({self.size})")
        return self


class OpenClipSource(BaseModel):
    """An open_clip model built from a config and a LOCAL checkpoint (no hub access)."""

    model_config = _FROZEN

    model_name: str
    """An open_clip config name (e.g. ``ViT-B-32``) or a key of ``model_cfg``."""
    model_cfg: dict[str, object] | None = None
    """An inline open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
    checkpoint: Path
    """Local ``.safetensors`` checkpoint."""


class _EncoderSpec(BaseModel):
    model_config = _FROZEN

    name: str
    version: Annotated[int, Field(ge=1)]
    dim: Annotated[int, Field(gt=0)]
    open_clip: OpenClipSource | None = None
    """Required when ``family`` is ``open_clip``."""


class TextEncoderSpec(_EncoderSpec):
    """The frozen text encoder."""

    kind: Literal["text"] = "text"
    family: Literal["minilm", "open_clip"]
    preprocess: TextPreprocess = TextPreprocess()
    int8: bool = False
    """Per-channel dynamic int8 quantisation of the exported text encoder."""


class ImageEncoderSpec(_EncoderSpec):
    """The frozen image encoder."""

    kind: Literal["image"] = "image"
    family: Literal["timm", "open_clip"]
    timm_model: str | None = None
    preprocess: ImagePreprocess = ImagePreprocess()


class OcrSpec(BaseModel):
    """Text detection + recognition for screenshots (PP-OCR via rapidocr-onnxruntime)."""

    model_config = _FROZEN

    kind: Literal["ocr"] = "ocr"
    name: str = "pp-ocrv4"
    version: Annotated[int, Field(ge=1)] = 1
    family: Literal["rapidocr"] = "rapidocr"
    det_limit_side_len: Annotated[int, Field(ge=32, le=4096)] = 960
    """Longest side the detector sees (``limit_type=max``): bounds OCR time on huge screenshots."""
    box_thresh: Annotated[float, Field(gt=0, lt=1)] = 0.5
    unclip_ratio: Annotated[float, Field(gt=0)] = 1.6
    text_score: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Recognised lines below this confidence are dropped."""
    use_angle_cls: bool = False
    """Run the 0°/180° line classifier (slower; screenshots are upright)."""
    max_chars: Annotated[int, Field(gt=0)] = 2_000
    """OCR text kept per screenshot (lines in reading order)."""


class HeadSpec(BaseModel):
    """How encoder features become vectors of the one embedding space.

    ``naive``: no training — each modality's L2-normalised features zero-padded to ``dim`` (the
    baseline: text↔text and image↔image work, text↔image is meaningless). The trained methods load
    ``projection.safetensors`` from the bundle.
    """

    model_config = _FROZEN

    method: Literal["naive", "linear", "inbatch", "mined"] = "naive"
    dim: Annotated[int, Field(gt=0)] | None = None
    """Output dimension; ``naive`` defaults to the widest encoder."""
    shipped: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")] | None = None
    """Name of a head shipped in the package (``models/heads/NAME``) whose weights ``crossroute
    models build`` puts in the bundle; unset for ``naive`` and for heads ``crossroute train`` fits."""

    @model_serializer(mode="wrap")
    def _omit_unset_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out while unset, so the manifests and space ids of existing bundles stay valid.
        data: dict[str, Any] = handler(self)
        if self.shipped is None:
            data.pop("shipped", None)
        return data

    @model_validator(mode="after")
    def _shipped_is_trained(self) -> HeadSpec:
        if self.shipped is not None and self.method == "naive":
            raise ValueError("a shipped head is a trained one: 'method' cannot be 'naive'")
        return self


class BundleSpec(BaseModel):
    """Everything needed to build a bundle (except trained weights, which training supplies)."""

    model_config = _FROZEN

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    version: Annotated[int, Field(ge=1)]
    text: TextEncoderSpec
    image: ImageEncoderSpec
    ocr: OcrSpec | None = OcrSpec()
    head: HeadSpec = HeadSpec()
    opset: Annotated[int, Field(ge=17, le=21)] = 18
    metric: Literal["cosine"] = "cosine"
    dtype: Literal["float32"] = "float32"

    @property
    def dim(self) -> int:
        """Dimension of the vectors this bundle produces."""
        if self.head.dim is not None:
            return self.head.dim
        return max(self.text.dim, self.image.dim)


def list_configs() -> list[str]:
    """Names of the packaged configs in ``models/configs/``."""
    root = resources.files("models.configs")
    return sorted(p.name.removesuffix(".json") for p in root.iterdir() if p.name.endswith(".json"))


def load_spec(name_or_path: str | Path) -> BundleSpec:
    """Load a bundle spec by packaged config name (``default``) or JSON path.

    Raises:
        BundleFormatError: unknown name, unreadable file or invalid spec (the message says which).
    """
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise BundleFormatError(f"cannot read bundle config {path}: {e}") from e
        where = str(path)
    else:
        res = resources.files("models.configs").joinpath(f"{name_or_path}.json")
        if not res.is_file():
            raise BundleFormatError(
                f"no packaged config {name_or_path!r}; known: {', '.join(list_configs())}"
            )
        raw, where = res.read_bytes(), f"models/configs/{name_or_path}.json"
    try:
        return BundleSpec.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise BundleFormatError(f"{where}: {loc}: {first['msg']}") from e
