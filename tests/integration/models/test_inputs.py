"""Bad inputs become typed per-item errors that name the input; good items in the batch survive."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from models.embedder import Embedder
from models.exceptions import EmptyInputError, ImageDecodeError, ImageTooLargeError, ModelsError


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression-bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg(size: tuple[int, int] = (64, 48), color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def test_one_bad_image_does_not_fail_the_batch(embedder: Embedder, real_images: list[Path]) -> None:
    good = real_images[0]
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, "TIFF")
    inputs = [
        good,
        b"definitely not an image",
        b"",
        _png_claiming(12_000, 12_000),
        real_images[1].read_bytes()[:300],  # truncated JPEG
        tiff.getvalue(),  # a real image, but not an allowed format
        Path("/nonexistent/photo.jpg"),
        real_images[1],
    ]
    names = ["good", "garbage", "empty", "bomb", "truncated", "tiff", "missing", "good2"]
    batch = embedder.embed_images(inputs, names=names)
    kinds = [type(e).__name__ if e else None for e in batch.errors]
    assert kinds == [None, "ImageDecodeError", "EmptyInputError", "ImageTooLargeError",
                     "ImageDecodeError", "ImageDecodeError", "ImageDecodeError", None]  # fmt: skip
    for name, err in zip(names, batch.errors, strict=True):
        if err is not None:
            assert str(err).startswith(f"{name}: ") and err.name == name
    assert "12000x12000 = 144000000 pixels, over the 40000000 limit" in str(batch.errors[3])
    # Far larger headers are already refused by Pillow's own bomb guard: the same typed error.
    huge = embedder.embed_images([_png_claiming(60_000, 60_000)], names=["huge"])
    assert isinstance(huge.errors[0], ImageTooLargeError) and "decompression bomb" in str(
        huge.errors[0]
    )
    assert not batch.vectors[~batch.ok].any()
    alone = embedder.embed_images([good, real_images[1]]).vectors
    assert np.allclose(batch.vectors[[0, 7]], alone, atol=1e-6)
    with pytest.raises(ImageDecodeError):
        batch.raise_first()


def test_byte_limit_is_checked_before_decoding(embedder: Embedder, tmp_path: Path) -> None:
    limit = embedder.manifest.spec.image.preprocess.limits.max_bytes
    big = tmp_path / "big.jpg"
    big.write_bytes(_jpeg() + b"\0" * limit)
    batch = embedder.embed_images([big, _jpeg() + b"\0" * limit])
    assert all(isinstance(e, ImageTooLargeError) for e in batch.errors)


def test_zero_size_and_odd_modes(embedder: Embedder) -> None:
    rgba = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    palette = Image.new("P", (40, 30))
    gray = Image.new("L", (30, 40), 128)
    batch = embedder.embed_images([rgba, palette, gray, Image.new("RGB", (0, 0))])
    assert [e is None for e in batch.errors] == [True, True, True, False]
    assert isinstance(batch.errors[3], EmptyInputError)
    # A fully transparent image is composited onto white: it embeds like a white image.
    white = embedder.embed_images([Image.new("RGB", (40, 30), "white")]).vectors[0]
    assert float(batch.vectors[0] @ white) > 0.9999


def test_exif_orientation_is_applied(embedder: Embedder) -> None:
    img = Image.new("RGB", (80, 40), "white")
    ImageDraw.Draw(img).rectangle((0, 0, 39, 39), fill="black")
    upright = io.BytesIO()
    img.save(upright, "JPEG", quality=95)
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored rotated, tagged
    img.transpose(Image.Transpose.ROTATE_90).save(rotated, "JPEG", quality=95, exif=exif)
    v = embedder.embed_images([upright.getvalue(), rotated.getvalue()]).vectors
    unrotated = embedder.embed_images([img.transpose(Image.Transpose.ROTATE_90)]).vectors[0]
    assert float(v[0] @ v[1]) > float(v[0] @ unrotated)


def test_empty_texts_are_item_errors(embedder: Embedder) -> None:
    batch = embedder.embed_texts(
        ["refund please", "", "   \n\t", "where is my parcel"], names=["a", "b", "c", "d"]
    )
    assert [type(e).__name__ if e else None for e in batch.errors] == [
        None,
        "EmptyInputError",
        "EmptyInputError",
        None,
    ]
    assert str(batch.errors[1]) == "b: text is empty"
    assert np.allclose(
        batch.vectors[[0, 3]],
        embedder.embed_texts(["refund please", "where is my parcel"]).vectors,
        atol=1e-6,
    )


def test_long_text_is_truncated_not_refused(embedder: Embedder) -> None:
    batch = embedder.embed_texts(["refund " * 5000])
    assert batch.ok.all()


def test_screenshot_text_and_image(embedder: Embedder) -> None:
    img = Image.new("RGB", (900, 200), "white")
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 28)
    ImageDraw.Draw(img).text(
        (30, 30), "Error 504: payment gateway timeout", fill="black", font=font
    )
    png = io.BytesIO()
    img.save(png, "PNG")
    blank = Image.new("RGB", (300, 300), "white")
    shots = embedder.embed_screenshots(
        [png.getvalue(), blank, b"junk"], names=["shot", "blank", "junk"]
    )
    assert "payment gateway timeout" in shots.ocr_texts[0].lower()
    assert "504" in shots.ocr_texts[0]
    assert shots.text.ok.tolist() == [True, False, False]
    assert shots.image.ok.tolist() == [True, True, False]
    assert "OCR found no text" in str(shots.text.errors[1])
    assert isinstance(shots.text.errors[2], ImageDecodeError)
    direct = embedder.embed_texts([shots.ocr_texts[0]]).vectors[0]
    assert float(shots.text.vectors[0] @ direct) > 0.9999
    query = embedder.embed_texts(["payment gateway timeout error"]).vectors[0]
    assert float(shots.text.vectors[0] @ query) > 0.5


def test_screenshots_need_an_ocr_model(tmp_path: Path) -> None:
    from models.config import load_spec
    from models.export.build import build_bundle

    spec = load_spec("default").model_copy(update={"ocr": None})
    build_bundle(spec, tmp_path / "no-ocr")
    with pytest.raises(ModelsError, match="no OCR model"):
        Embedder.load(tmp_path / "no-ocr").embed_screenshots([b"x"])
