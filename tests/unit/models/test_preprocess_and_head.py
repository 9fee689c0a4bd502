"""Torch-free preprocessing and heads, on synthetic inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.config import (
    ColourFeatures,
    ImageLimits,
    ImagePreprocess,
    LexicalFeatures,
    TextPreprocess,
)
from models.exceptions import (
    BundleFormatError,
    EmptyInputError,
    ImageDecodeError,
    ImageTooLargeError,
    ModelsError,
)
from models.preprocess import (
    _resize_shorter,
    colour_histogram,
    decode_image,
    image_to_array,
    lexical_features,
    normalize_text,
    title_and_text,
)
from models.projection import MlpHead, NaiveHead, gelu_tanh
from models.runtime import resolve_providers


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "blue").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 480), (341, 256)),
        ((480, 640), (256, 341)),
        ((256, 1000), (256, 1000)),
        ((1000, 999), (256, 256)),
    ],
)
def test_resize_truncates_the_long_side_like_torchvision(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert _resize_shorter(Image.new("RGB", size), 256, Image.Resampling.BICUBIC).size == expected


def test_image_to_array_shape_and_normalisation() -> None:
    spec = ImagePreprocess()
    x = image_to_array(Image.new("RGB", (300, 500), (255, 0, 128)), spec)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.allclose(x[0], 1.0) and np.allclose(x[1], -1.0)


def test_letterbox_keeps_the_whole_image() -> None:
    # A tall red bar: a centre crop cuts its ends off, the letterbox keeps them on a white square.
    img = Image.new("RGB", (60, 80), (255, 0, 0))
    padded = image_to_array(img, ImagePreprocess(crop="pad"))
    cropped = image_to_array(img, ImagePreprocess())
    assert padded.shape == cropped.shape == (3, 224, 224)
    assert np.allclose(cropped, cropped[:, :1, :1])  # all red: the crop lost the white nowhere
    # letterbox: white columns left and right (x < 28 of 224 for a 60:80 image), red in the middle
    assert np.allclose(padded[:, 112, :10], 1.0) and np.allclose(padded[1:, 112, 112], -1.0)
    assert np.allclose(padded[0, :, 112], 1.0)  # red reaches the top and the bottom rows


def test_colour_histogram_sees_colour_and_ignores_background() -> None:
    spec = ColourFeatures()
    red, navy = Image.new("RGB", (64, 64), (200, 20, 20)), Image.new("RGB", (64, 64), (20, 20, 110))
    h_red, h_navy = colour_histogram(red, spec), colour_histogram(navy, spec)
    assert h_red.shape == (spec.dim,) and h_red.dtype == np.float32
    assert np.linalg.norm(h_red) == pytest.approx(1.0, abs=1e-6)
    assert float(h_red @ h_navy) < 0.05
    # A red product on a white background stays red: background pixels barely count.
    on_white = Image.new("RGB", (64, 64), (255, 255, 255))
    on_white.paste(red.resize((24, 24)), (20, 20))
    assert float(colour_histogram(on_white, spec) @ h_red) > 0.95
    # Greys go to the grey bins by value, whatever their (meaningless) hue.
    grey = colour_histogram(Image.new("RGB", (64, 64), (128, 128, 130)), spec)
    assert grey[spec.dim - spec.val_bins :].sum() == pytest.approx(1.0, abs=1e-6)


def test_lexical_features_hash_each_word_once_to_a_stable_bin() -> None:
    spec = LexicalFeatures(buckets=8192, weight=3.0)
    x = lexical_features(["Navy  T-Shirt navy", "NAVY t shirt", "", "!!", "Café"], spec)
    assert x.shape == (5, 8192) and x.dtype == np.float32
    # Case-folded, split on non-word characters, each word once: the first two texts are equal.
    np.testing.assert_array_equal(x[0], x[1])
    # CRC-32 bins (fixed across processes and platforms; Python's hash() is salted).
    assert set(np.flatnonzero(x[0])) == {2515, 6824, 3088}  # navy, t, shirt
    assert np.flatnonzero(x[4]).tolist() == [693]  # "café": Unicode words count
    np.testing.assert_allclose(np.linalg.norm(x[[0, 4]], axis=1), 3.0, rtol=1e-6)
    assert not x[2].any() and not x[3].any()  # no words: a zero block, not NaN
    small = lexical_features(["navy t shirt"], LexicalFeatures(buckets=16, weight=1.0))
    assert small.shape == (1, 16) and np.linalg.norm(small) == pytest.approx(1.0)


def test_title_and_text() -> None:
    assert title_and_text("Dress", "Dress: a one-piece garment") == "Dress: a one-piece garment"
    assert title_and_text("Refunds", "How to ask for one") == "Refunds\nHow to ask for one"
    assert title_and_text(" ", None) is None and title_and_text(None, "body") == "body"


def test_limits_are_checked_before_decoding() -> None:
    spec = ImagePreprocess(limits=ImageLimits(max_bytes=10_000, max_pixels=100 * 100))
    with pytest.raises(ImageTooLargeError, match="over the 10000 byte limit"):
        decode_image(b"\0" * 10_001, spec, "big")
    with pytest.raises(ImageTooLargeError, match="101x100 = 10100 pixels"):
        decode_image(_png((101, 100)), spec, "wide")
    assert decode_image(_png((100, 100)), spec, "ok").size == (100, 100)
    with pytest.raises(EmptyInputError, match="empty: image is empty"):
        decode_image(b"", spec, "empty")
    with pytest.raises(ImageDecodeError, match="junk: not an image"):
        decode_image(b"GIF89a-but-not-really", spec, "junk")


def test_normalize_text() -> None:
    assert normalize_text("  hello\n\tworld  ", TextPreprocess()) == "hello world"
    assert normalize_text(" a  b ", TextPreprocess(collapse_whitespace=False)) == " a  b "


def test_naive_head_pads_and_keeps_unit_norm() -> None:
    head = NaiveHead(6)
    feats = np.array([[0.6, 0.8, 0.0]], dtype=np.float32)
    out = head.text(feats)
    assert out.shape == (1, 6) and np.allclose(out[0, :3], feats[0]) and not out[0, 3:].any()


def test_mlp_head_validates_and_applies() -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "text.0.weight": rng.standard_normal((8, 4)).astype(np.float32), "text.0.bias": np.zeros(8, np.float32),
        "text.1.weight": rng.standard_normal((3, 8)).astype(np.float32), "text.1.bias": np.ones(3, np.float32),
        "image.0.weight": rng.standard_normal((3, 5)).astype(np.float32), "image.0.bias": np.zeros(3, np.float32),
    }  # fmt: skip
    head = MlpHead.from_tensors(tensors)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    manual = gelu_tanh(x @ tensors["text.0.weight"].T) @ tensors["text.1.weight"].T + 1.0
    manual /= np.linalg.norm(manual, axis=1, keepdims=True)
    assert np.allclose(head.text(x), manual, atol=1e-6)
    assert head.image(rng.standard_normal((2, 5)).astype(np.float32)).shape == (2, 3)
    bad = dict(tensors)
    del bad["text.1.bias"]
    with pytest.raises(BundleFormatError, match="text.1"):
        MlpHead.from_tensors(bad)
    with pytest.raises(BundleFormatError, match="unexpected tensor"):
        MlpHead.from_tensors({**tensors, "audio.0.weight": np.zeros((1, 1), np.float32)})


def test_provider_selection() -> None:
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert resolve_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(ModelsError, match="crossroute\\[gpu\\]"):
            resolve_providers("cuda")
