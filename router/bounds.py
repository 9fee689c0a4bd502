"""Bounding HTTP requests before any work: what the API refuses, and how it says so.

The body size is checked on the stream (:class:`BodyLimit`, so a chunked body cannot slip past
``Content-Length``); the content type must be JSON or multipart; text length, image bytes and image
pixels are checked from the header before anything is decoded, by the embedder's own check
(:func:`~models.preprocess.check_image`) with the API's limits (:func:`image_limits`, which refuses
limits the served bundle could not honour). Every refusal is a :class:`Rejected`: a 4xx with a
message that says what to change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from models.config import ImageLimits
from models.exceptions import ImageTooLargeError, InputError
from models.preprocess import check_image
from router.exceptions import SettingsError
from router.settings import ApiSettings

__all__ = [
    "IMAGE_TYPES",
    "BodyLimit",
    "Rejected",
    "check_request_image",
    "check_text",
    "content_kind",
    "form_object",
    "image_field",
    "image_limits",
    "parse_json",
    "read_form",
    "validation_errors",
]

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Rejected(Exception):
    """A request refused with a 4xx (or 503) and a message."""

    def __init__(self, status: int, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
        """For 429 and 503: when to try again (the ``Retry-After`` header, whole seconds)."""

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after_s <= 0:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` (by header, and by counting the stream)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = f"request body over the {self.max_bytes} byte limit"
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _plain(send, 400, "invalid Content-Length header")
                return
            if size > self.max_bytes:
                await _plain(send, 413, too_big)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise Rejected(413, too_big)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Rejected as e:
            if not started:
                await _plain(send, e.status, e.message)


async def _plain(send: Send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def content_kind(request: Request) -> Literal["json", "multipart"]:
    """JSON or multipart; anything else is refused (415)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return "json"
    if ctype == "multipart/form-data":
        return "multipart"
    raise Rejected(
        415, f"content type {ctype or '(none)'!r}: send application/json or multipart/form-data"
    )


def validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Validation errors without the echoed input (it may be megabytes of base64)."""
    out = []
    for err in errors:
        out.append({k: v for k, v in dict(err).items() if k in ("loc", "msg", "type")})
    return out


def parse_json(model: type[Any], raw: bytes) -> Any:
    """``raw`` validated as ``model``; a validation error is refused (422) with what is wrong."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise _RejectedValidation(e) from e


class _RejectedValidation(Rejected):
    def __init__(self, error: ValidationError) -> None:
        parts = [
            f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['msg']}"
            for err in error.errors()
        ]
        super().__init__(422, "; ".join(parts[:10]) or "invalid request body")


def form_object(form: Any, name: str) -> dict[str, Any]:
    """A multipart text field holding a JSON object."""
    raw = form.get(name)
    if not isinstance(raw, str):
        raise Rejected(422, f"multipart body needs a {name!r} field holding a JSON object")
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise Rejected(422, f"field {name!r} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise Rejected(422, f"field {name!r} must be a JSON object")
    return value


async def read_form(request: Request, settings: ApiSettings) -> Any:
    """The multipart form, bounded (two files, eight fields, parts of at most the image limit)."""
    try:
        return await request.form(max_files=2, max_fields=8, max_part_size=settings.max_image_bytes)
    except Rejected:
        raise
    except Exception as e:  # malformed multipart: the client's fault
        if "maximum size" in str(e):
            raise Rejected(
                413, f"a file part is over the {settings.max_image_bytes} byte limit"
            ) from e
        raise Rejected(400, f"malformed multipart body: {e}") from e


async def image_field(form: Any, name: str, limits: ImageLimits) -> bytes | None:
    """The image file part ``name`` (None when absent), type- and limit-checked."""
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, UploadFile):
        raise Rejected(422, f"{name!r} must be an image file part")
    ctype = (value.content_type or "").split(";")[0].strip().lower()
    if ctype not in IMAGE_TYPES:
        raise Rejected(
            415, f"{name!r} has content type {ctype or '(none)'!r}: send {', '.join(IMAGE_TYPES)}"
        )
    data = await value.read(limits.max_bytes + 1)
    check_request_image(data, limits, name)
    return data


def check_text(text: str, settings: ApiSettings) -> None:
    """Refuse a text over ``max_text_chars`` (413)."""
    if len(text) > settings.max_text_chars:
        raise Rejected(
            413, f"text is {len(text)} characters, over the {settings.max_text_chars} limit"
        )


def image_limits(settings: ApiSettings, bundle: ImageLimits) -> ImageLimits:
    """The API's image limits: its settings, the formats the bundle decodes.

    Raises:
        SettingsError: a limit of ``settings`` is above the bundle's (it would not take effect: the
            embedder would refuse such an image after the API accepted it).
    """
    problems = [
        f"api.{name} (CROSSROUTE_API__{name.upper()}) is {mine}, over the {theirs} the served "
        "bundle decodes"
        for name, mine, theirs in (
            ("max_image_bytes", settings.max_image_bytes, bundle.max_bytes),
            ("max_image_pixels", settings.max_image_pixels, bundle.max_pixels),
        )
        if mine > theirs
    ]
    if problems:
        raise SettingsError("; ".join(problems) + ": lower it, a higher limit cannot take effect")
    return ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        formats=bundle.formats,
    )


def check_request_image(data: bytes, limits: ImageLimits, name: str = "image") -> None:
    """Byte, pixel and format checks, from the header only (nothing is decoded here)."""
    try:
        check_image(data, limits, name)
    except ImageTooLargeError as e:
        raise Rejected(413, str(e)) from e
    except InputError as e:  # empty, not an image of an allowed format
        raise Rejected(422, str(e)) from e
