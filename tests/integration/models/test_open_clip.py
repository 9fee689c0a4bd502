"""open_clip is a supported encoder family, loaded from a LOCAL checkpoint only: a tiny config with
seeded random weights saved to safetensors, exported, and held to the torch model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from models.config import load_spec
from models.embedder import Embedder
from models.export.build import build_bundle
from models.preprocess import TextTokenizer, decode_image

CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TEXTS = [
    "a photo of a dog",
    "red cotton t-shirt for men",
    "Error 504: payment gateway timeout",
    "x",
    "long " * 100,
    "Café au lait, naïve façade — 12,345!",
    "it's   the   customer's  order's   state",
]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    root = tmp_path_factory.mktemp("openclip")
    cfg_file = root / "crossroute-tiny-clip.json"
    cfg_file.write_text(json.dumps(CFG))
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(0)
    model = open_clip.create_model("crossroute-tiny-clip", pretrained=None).eval()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "tiny.safetensors")
    )
    source = {
        "model_name": "crossroute-tiny-clip",
        "model_cfg": CFG,
        "checkpoint": str(root / "tiny.safetensors"),
    }
    spec = {
        "name": "tiny-clip", "version": 1, "ocr": None,
        "text": {"name": "tiny-clip-text", "version": 1, "family": "open_clip", "dim": 64,
                 "preprocess": {"max_length": 77, "pad_id": 0, "pad_token": "!"}, "open_clip": source},
        "image": {"name": "tiny-clip-image", "version": 1, "family": "open_clip", "dim": 64,
                  "preprocess": {"size": 64, "resize": 64, "interpolation": "bicubic",
                                 "mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
                  "open_clip": source},
    }  # fmt: skip
    (root / "spec.json").write_text(json.dumps(spec))
    build_bundle(load_spec(root / "spec.json"), root / "bundle")
    return root / "bundle", model


def test_tokenizer_is_open_clips(tiny_clip: tuple[Path, torch.nn.Module]) -> None:
    bundle, _ = tiny_clip
    embedder = Embedder.load(bundle)
    ours = TextTokenizer(bundle / "tokenizer.json", embedder.manifest.spec.text.preprocess)(TEXTS)[
        "input_ids"
    ]
    ref = open_clip.get_tokenizer("crossroute-tiny-clip")(TEXTS).numpy()
    assert np.array_equal(ours, ref[:, : ours.shape[1]])
    assert not ref[:, ours.shape[1] :].any()  # the rest is padding


def test_text_and_image_towers_match_torch(
    tiny_clip: tuple[Path, torch.nn.Module], real_images: list[Path]
) -> None:
    bundle, model = tiny_clip
    embedder = Embedder.load(bundle)
    assert embedder.dim == 64 and embedder.manifest.text.inputs == ("input_ids",)
    with torch.inference_mode():
        ref_text = model.encode_text(
            open_clip.get_tokenizer("crossroute-tiny-clip")(TEXTS), normalize=True
        ).numpy()
    ours = embedder.embed_texts(TEXTS).vectors
    assert (ours * ref_text).sum(1).min() >= 0.9999

    _, _, preprocess = open_clip.create_model_and_transforms(
        "crossroute-tiny-clip", pretrained=str(bundle.parent / "tiny.safetensors")
    )
    spec = embedder.manifest.spec.image.preprocess
    images = [decode_image(p, spec, p.name) for p in real_images[:12]]
    with torch.inference_mode():
        ref_img = model.encode_image(
            torch.stack([preprocess(im) for im in images]), normalize=True
        ).numpy()
    ours_img = embedder.embed_images(images).vectors
    assert (ours_img * ref_img).sum(1).min() >= 0.9999
    assert (
        embedder.manifest.image.source["checkpoint_sha256"]
        == embedder.manifest.text.source["checkpoint_sha256"]
    )


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    from models.config import OpenClipSource
    from models.exceptions import ModelsError
    from models.export.openclip import load_open_clip_model

    with pytest.raises(ModelsError, match="not found"):
        load_open_clip_model(
            OpenClipSource(model_name="ViT-B-32", checkpoint=tmp_path / "nope.safetensors")
        )
