"""Torch-free preprocessing: safe image decoding, the encoder's image transform, tokenization.

These functions are the serving half of "preprocessing is part of the model": their parameters come
from the bundle's spec (hashed into the space id), and a parity test holds them to the torch reference
(torchvision/timm transform, cosine ≥ 0.9999 after the encoder).
"""

from __future__ import annotations

import io
import re
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tokenizers import Tokenizer

from models.config import (
    ColourFeatures,
    ImageLimits,
    ImagePreprocess,
    LexicalFeatures,
    TextPreprocess,
)
from models.exceptions import EmptyInputError, ImageDecodeError, ImageTooLargeError

__all__ = [
    "ImageInput",
    "TextTokenizer",
    "check_image",
    "colour_histogram",
    "decode_image",
    "image_to_array",
    "lexical_features",
    "normalize_text",
    "read_image_bytes",
    "title_and_text",
]

ImageInput = bytes | Path | Image.Image
"""What the embedding API accepts as an image: encoded bytes, a file path, or a decoded image."""

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def read_image_bytes(source: bytes | Path, limits: ImageLimits, name: str) -> bytes:
    """Return the encoded bytes of ``source``, refusing empty or oversized input before reading it."""
    if isinstance(source, Path):
        try:
            size = source.stat().st_size
        except OSError as e:
            raise ImageDecodeError(name, f"cannot read image file: {e.strerror or e}") from e
        if size > limits.max_bytes:
            raise ImageTooLargeError(name, f"{size} bytes, over the {limits.max_bytes} byte limit")
        source = source.read_bytes()
    if not source:
        raise EmptyInputError(name, "image is empty (0 bytes)")
    if len(source) > limits.max_bytes:
        raise ImageTooLargeError(
            name, f"{len(source)} bytes, over the {limits.max_bytes} byte limit"
        )
    return source


@contextmanager
def _opening(limits: ImageLimits, name: str) -> Iterator[None]:
    """Turn what Pillow raises while opening or decoding into the typed input errors."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit applies; Pillow's global bomb check must not turn into a warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except (ImageTooLargeError, EmptyInputError):
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(name, f"decompression bomb refused: {e}") from e
    except UnidentifiedImageError as e:
        raise ImageDecodeError(
            name, f"not an image of an allowed format ({', '.join(limits.formats)})"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ImageDecodeError(name, f"cannot decode image: {e}") from e


def _open(data: bytes, limits: ImageLimits, name: str) -> Image.Image:
    """Open ``data`` (the header only) and check its size against the pixel limit."""
    img = Image.open(io.BytesIO(data), formats=list(limits.formats))
    _check_pixels(img, limits, name)
    return img


def check_image(source: bytes | Path, limits: ImageLimits, name: str) -> tuple[int, int]:
    """Check an encoded image against ``limits`` without decoding a pixel; return its size.

    The checks :func:`decode_image` makes before decoding, for callers that must refuse an image
    early (the HTTP API, before it queues any work).

    Raises:
        EmptyInputError: zero bytes or a zero-size image.
        ImageTooLargeError: over the byte or pixel limit (decompression bombs included).
        ImageDecodeError: not an image of an allowed format.
    """
    data = read_image_bytes(source, limits, name)
    with _opening(limits, name), _open(data, limits, name) as img:
        size: tuple[int, int] = img.size
    return size


def decode_image(
    source: ImageInput, spec: ImagePreprocess, name: str, *, draft: int | None = None
) -> Image.Image:
    """Decode one image safely and return it as RGB, oriented, alpha flattened.

    With ``draft``, a JPEG is decoded at the smallest scale (1/2, 1/4, 1/8) that keeps both sides
    at least ``draft`` pixels: much faster, for a thumbnail (never for the encoder's input).

    The header is read first and width x height checked against the pixel limit before any pixel is
    decoded (:func:`check_image`), so a decompression bomb costs nothing. Only the formats in
    ``spec.limits.formats`` open.

    Raises:
        EmptyInputError: zero bytes or a zero-size image.
        ImageTooLargeError: over the byte or pixel limit.
        ImageDecodeError: not an image of an allowed format, or truncated/corrupt data.
    """
    limits = spec.limits
    if isinstance(source, Image.Image):
        img = source
        _check_pixels(img, limits, name)
    else:
        data = read_image_bytes(source, limits, name)
        with _opening(limits, name):
            img = _open(data, limits, name)
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", (draft, draft))
            img.load()
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # animated: the first frame
    if spec.exif_transpose:
        img = ImageOps.exif_transpose(img)
    return _to_rgb(img, spec.background)


def _check_pixels(img: Image.Image, limits: ImageLimits, name: str) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise EmptyInputError(name, f"image has zero size ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            name, f"{width}x{height} = {width * height} pixels, over the {limits.max_pixels} limit"
        )


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _resize_shorter(img: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """torchvision ``Resize(size)`` for an int size: shorter side → ``size``, long side truncated."""
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return img  # torchvision leaves it untouched
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    return img.resize(new_size, resample)


def _center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision ``CenterCrop`` (the spec guarantees the image is at least ``size`` a side)."""
    width, height = img.size
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


def _letterbox(img: Image.Image, spec: ImagePreprocess) -> Image.Image:
    """The whole image centred on a ``background`` square, resized to ``size`` a side."""
    width, height = img.size
    side = max(width, height)
    if width != height:
        canvas = Image.new("RGB", (side, side), spec.background)
        canvas.paste(img, ((side - width) // 2, (side - height) // 2))
        img = canvas
    return img.resize((spec.size, spec.size), _RESAMPLE[spec.interpolation])


def image_to_array(img: Image.Image, spec: ImagePreprocess) -> np.ndarray:
    """Resize, crop (or letterbox) and normalise an RGB image into a CHW float32 array."""
    if spec.crop == "pad":
        img = _letterbox(img, spec)
    else:
        img = _resize_shorter(img, spec.resize, _RESAMPLE[spec.interpolation])
        img = _center_crop(img, spec.size)
    pixels: np.ndarray = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def colour_histogram(img: Image.Image, spec: ColourFeatures) -> np.ndarray:
    """Centre-weighted HSV histogram of an RGB image, square-rooted: a unit-norm float32 vector.

    Unsaturated pixels (the lowest saturation bin) fall into grey bins by value, so hue noise of
    whites, greys and blacks does not scatter over the hue bins.
    """
    thumb = img.resize((spec.size, spec.size), Image.Resampling.BILINEAR)
    rgb = np.asarray(thumb, dtype=np.uint8)
    hsv = np.asarray(thumb.convert("HSV"), dtype=np.float32) / np.float32(256.0)
    axis = np.arange(spec.size, dtype=np.float32) / np.float32(max(spec.size - 1, 1)) - 0.5
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    weight = np.exp(-(xx**2 + yy**2) / (2 * spec.centre_sigma**2))
    background = rgb.min(axis=2) >= spec.background_min
    weight = weight * np.where(background, spec.background_weight, 1.0)
    hue = np.minimum((hsv[..., 0] * spec.hue_bins).astype(np.int64), spec.hue_bins - 1)
    sat = np.minimum((hsv[..., 1] * spec.sat_bins).astype(np.int64), spec.sat_bins - 1)
    val = np.minimum((hsv[..., 2] * spec.val_bins).astype(np.int64), spec.val_bins - 1)
    chroma_bins = spec.hue_bins * spec.sat_bins * spec.val_bins
    # Saturation bin 0 is grey: index by value only, after the chromatic bins.
    index = np.where(sat == 0, chroma_bins + val, (hue * spec.sat_bins + sat) * spec.val_bins + val)
    hist = np.bincount(index.ravel(), weights=weight.ravel(), minlength=spec.dim)
    total = hist.sum()
    out: np.ndarray = np.sqrt(hist / total if total > 0 else hist).astype(np.float32)
    return out


def lexical_features(texts: Sequence[str], spec: LexicalFeatures) -> np.ndarray:
    """The hashed-word block of each text, ``(n, spec.buckets)`` float32 of norm ``spec.weight``
    (all zeros for a text without words).

    Words are Unicode ``\\w+`` runs of the case-folded text, each counted once; a word's bin is the
    CRC-32 of its UTF-8 bytes modulo ``spec.buckets`` (stable across platforms and processes,
    unlike Python's salted ``hash``).
    """
    out = np.zeros((len(texts), spec.buckets), dtype=np.float32)
    for row, text in enumerate(texts):
        words = set(_WORD.findall(text.casefold()))
        if not words:
            continue
        for word in words:
            out[row, zlib.crc32(word.encode()) % spec.buckets] += 1.0
        out[row] *= np.float32(spec.weight) / np.linalg.norm(out[row])
    return out


def normalize_text(text: str, spec: TextPreprocess) -> str:
    """Whitespace folding applied to every text before tokenization."""
    return _WS.sub(" ", text).strip() if spec.collapse_whitespace else text


def title_and_text(title: str | None, text: str | None) -> str | None:
    """One document text from a title and a body (the body alone when it already starts with the
    title); what both the eval harness and the router index embed for a document."""
    title, text = (title or "").strip(), (text or "").strip()
    if title and text and not text.startswith(title):
        return f"{title}\n{text}"
    return text or title or None


class TextTokenizer:
    """A ``tokenizers`` tokenizer configured from the spec: truncation and pad-to-longest.

    Args:
        tokenizer_file: the bundle's ``tokenizer.json``.
        spec: max length and padding.
    """

    def __init__(self, tokenizer_file: Path, spec: TextPreprocess) -> None:
        self.spec = spec
        self._tok = Tokenizer.from_file(str(tokenizer_file))
        # The shipped tokenizer.json may carry its own fixed padding/truncation: replace both.
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=spec.max_length)
        self._tok.enable_padding(pad_id=spec.pad_id, pad_token=spec.pad_token)

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenize already-normalised, non-empty texts into ``input_ids`` / ``attention_mask``."""
        encodings = self._tok.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask}
