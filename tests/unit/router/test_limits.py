"""Limits are defined once: the API's defaults are the hard limits, a configured limit above one is
refused (it would not take effect), and the API checks images with the embedder's own check."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from pydantic import ValidationError

from models.config import ImageLimits
from models.exceptions import EmptyInputError, ImageDecodeError, ImageTooLargeError
from models.preprocess import check_image
from router.bounds import image_limits
from router.exceptions import SettingsError
from router.schemas import MAX_INLINE_IMAGE_BYTES, MAX_TEXT_CHARS, ImageRef, Ticket
from router.settings import ApiSettings, RouterSettings


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, "PNG")
    return buf.getvalue()


def test_the_api_defaults_are_the_hard_limits() -> None:
    api = ApiSettings()
    assert api.max_image_bytes == MAX_INLINE_IMAGE_BYTES
    assert api.max_image_pixels == ImageLimits().max_pixels
    assert api.max_text_chars == MAX_TEXT_CHARS
    assert Ticket.model_fields["text"].metadata[0].max_length == MAX_TEXT_CHARS


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("max_image_bytes", MAX_INLINE_IMAGE_BYTES + 1, "MAX_INLINE_IMAGE_BYTES"),
        ("max_text_chars", MAX_TEXT_CHARS + 1, "MAX_TEXT_CHARS"),
    ],
)
def test_a_limit_above_what_a_ticket_can_carry_is_refused(
    field: str, value: int, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match=f"{field} is {value}, over the .*{needle}"):
        ApiSettings(**{field: value})
    monkeypatch.setenv(f"CROSSROUTE_API__{field.upper()}", str(value))
    with pytest.raises(Exception, match=needle):  # the process settings refuse it too
        RouterSettings()
    assert getattr(ApiSettings(**{field: value - 2}), field) == value - 2  # lower is fine


def test_without_the_cap_such_an_image_would_be_refused_later() -> None:
    """Why the cap: a ticket (what the API routes, what events carry) cannot hold a bigger image."""
    with pytest.raises(ValidationError, match="byte cap"):
        ImageRef(data=b"\0" * (MAX_INLINE_IMAGE_BYTES + 1))
    with pytest.raises(ValidationError, match="at most 20000 characters"):
        Ticket(id="t", tenant="acme", text="x" * (MAX_TEXT_CHARS + 1))


def test_image_limits_above_the_bundles_are_refused() -> None:
    bundle = ImageLimits(max_bytes=1_000_000, max_pixels=500_000, formats=("PNG",))
    ok = image_limits(ApiSettings(max_image_bytes=1_000_000, max_image_pixels=400_000), bundle)
    assert (ok.max_bytes, ok.max_pixels, ok.formats) == (1_000_000, 400_000, ("PNG",))
    with pytest.raises(
        SettingsError,
        match=r"max_image_bytes \(CROSSROUTE_API__MAX_IMAGE_BYTES\) is 1000001, over the 1000000",
    ):
        image_limits(ApiSettings(max_image_bytes=1_000_001, max_image_pixels=400_000), bundle)
    with pytest.raises(SettingsError, match="MAX_IMAGE_PIXELS.* is 500001, over the 500000"):
        image_limits(ApiSettings(max_image_bytes=1_000, max_image_pixels=500_001), bundle)
    image_limits(ApiSettings(), ImageLimits())  # the defaults fit the default bundle limits


def test_check_image_reads_the_header_only() -> None:
    limits = ImageLimits(max_bytes=50_000, max_pixels=100 * 100, formats=("PNG",))
    assert check_image(png((100, 100)), limits, "ok") == (100, 100)
    with pytest.raises(ImageTooLargeError, match="big: 101x100 = 10100 pixels"):
        check_image(png((101, 100)), limits, "big")
    with pytest.raises(ImageTooLargeError, match="byte limit"):
        check_image(b"\x89PNG" + bytes(50_000), limits, "heavy")
    with pytest.raises(EmptyInputError):
        check_image(b"", limits, "empty")
    with pytest.raises(ImageDecodeError, match="not an image of an allowed format"):
        check_image(json.dumps({"not": "an image"}).encode(), limits, "junk")
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, "JPEG")
    with pytest.raises(ImageDecodeError, match=r"allowed format \(PNG\)"):
        check_image(jpeg.getvalue(), limits, "jpeg")
    # A truncated PNG: its header is fine, so only decoding would notice (the embedder does).
    assert check_image(png((50, 50))[:60], limits, "truncated") == (50, 50)
