"""The HTTP API: ``POST /v1/route``, ``POST /v1/search``, ``GET /healthz``, ``GET /metrics``.

Every request is bounded before any work is done: body size (checked on the stream, so a chunked body
cannot slip past ``Content-Length``), content type (JSON or multipart only), text length, image bytes
and image pixels (read from the header before decoding, by the embedder's own check
:func:`~models.preprocess.check_image`, with the API's limits). Every rejection is a 4xx with a message
that says what to change; a Redis outage is a 503; nothing a client sends can produce a 500.

A search embeds its text and image and fuses them like a ticket's text and photo
(:meth:`~router.routing.Router.query_vector`: the routing weights apply).

Endpoints are plain ``def``: FastAPI runs them in its thread pool, so embedding (CPU-bound, onnxruntime
releases the GIL) never blocks the event loop.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any, Literal

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from models.config import ImageLimits
from models.exceptions import ImageTooLargeError, InputError, ModelsError
from models.preprocess import check_image
from router.exceptions import RequestError, SettingsError
from router.index import DocKind, Filters
from router.routing import Router
from router.schemas import MAX_TEXT_CHARS, EntityId, Locale, RoutingDecision, TenantId, Ticket
from router.settings import ApiSettings

__all__ = [
    "RouteRequest",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
    "create_app",
    "image_limits",
    "serve",
]

log = logging.getLogger(__name__)
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RouteRequest(BaseModel):
    """JSON body of ``/v1/route``: the ticket (images inline as base64) and how many targets."""

    model_config = ConfigDict(extra="forbid")

    ticket: Ticket
    k: Annotated[int, Field(ge=1, le=100)] | None = None


class SearchRequest(BaseModel):
    """JSON body of ``/v1/search``: a text and/or an image (base64), and filters."""

    model_config = ConfigDict(extra="forbid", val_json_bytes="base64")

    tenant: TenantId
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None = None
    image: bytes | None = None
    kinds: tuple[DocKind, ...] = ()
    locale: Locale | None = None
    category: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    in_stock: bool | None = None
    k: Annotated[int, Field(ge=1, le=100)] = 10


class SearchHit(BaseModel):
    """One search result."""

    id: EntityId
    kind: str
    score: float
    title: str = ""
    parent: str | None = None


class SearchResponse(BaseModel):
    """Search results, with the embedding space that produced them."""

    space_id: str
    hits: list[SearchHit]


class _Rejected(Exception):
    """A request refused with a 4xx (or 503) and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
                    raise _Rejected(413, too_big)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _Rejected as e:
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


class _Metrics:
    def __init__(self, registry: CollectorRegistry, space_id: str) -> None:
        self.requests = Counter(
            "crossroute_api_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "crossroute_api_request_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.decisions = Counter(
            "crossroute_routing_decisions",
            "Routing decisions by queue (auto or human).",
            ["queue"],
            registry=registry,
        )
        info = Gauge(
            "crossroute_serving_space",
            "The embedding space served.",
            ["space_id"],
            registry=registry,
        )
        info.labels(space_id=space_id).set(1)


def create_app(router: Router, settings: ApiSettings | None = None) -> FastAPI:
    """Build the API around a :class:`Router` (its embedder and index must share one space).

    Raises:
        SettingsError: an image limit of ``settings`` is above the bundle's decode limit.
    """
    settings = settings or ApiSettings()
    limits = image_limits(settings, router.embedder.manifest.spec.image.preprocess.limits)
    registry = CollectorRegistry()
    metrics = _Metrics(registry, router.space_id)
    app = FastAPI(
        title="crossroute",
        version="1",
        summary="Route support tickets (text, photo, screenshot) to knowledge articles and "
        "warranty policies; search the multimodal index.",
    )

    @app.middleware("http")
    async def _observe(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        response: Response = await call_next(request)
        endpoint = request.url.path if request.url.path in _PATHS else "other"
        metrics.requests.labels(endpoint=endpoint, status=str(response.status_code)).inc()
        metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)
        response.headers["X-Crossroute-Space"] = router.space_id
        return response

    @app.exception_handler(_Rejected)
    async def _rejected(_: Request, exc: _Rejected) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestError)
    async def _bad_request(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis unavailable: %s", type(exc).__name__)
        return JSONResponse({"detail": "the index is unavailable, retry later"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _errors(exc.errors())}, status_code=422)

    @app.get("/healthz", summary="Liveness and the space served")
    def healthz() -> JSONResponse:
        try:
            count = router.index.count()
        except redis.RedisError:
            return JSONResponse(
                {"status": "unavailable", "space_id": router.space_id}, status_code=503
            )
        return JSONResponse({"status": "ok", **router.describe(), "documents": count})

    @app.get("/metrics", summary="Prometheus metrics")
    def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/route",
        response_model=RoutingDecision,
        summary="Route a ticket",
        description="JSON (`RouteRequest`, images base64) or multipart/form-data with a `ticket` "
        "field (the ticket as JSON) and optional `photo` / `screenshot` image files.",
        responses={413: {"description": "Too large"}, 415: {"description": "Bad content type"}},
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/RouteRequest"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["ticket"],
                            "properties": {
                                "ticket": {"type": "string", "description": "Ticket JSON"},
                                "k": {"type": "integer", "minimum": 1, "maximum": 100},
                                "photo": {"type": "string", "format": "binary"},
                                "screenshot": {"type": "string", "format": "binary"},
                            },
                        }
                    },
                },
                "required": True,
            }
        },
    )
    async def route(request: Request) -> RoutingDecision:
        kind = _content_kind(request)
        if kind == "json":
            body = _parse(RouteRequest, await request.body())
        else:
            form = await _form(request, settings)
            try:
                ticket_json = _form_object(form, "ticket")
                for name in ("photo", "screenshot"):
                    data = await _image_field(form, name, limits)
                    if data is not None:  # the file part becomes the ticket's inline image
                        ticket_json[name] = {"data": base64.b64encode(data).decode()}
                payload: dict[str, Any] = {"ticket": ticket_json}
                k_raw = form.get("k")
                if isinstance(k_raw, str):
                    payload["k"] = k_raw
            finally:
                await form.close()
            body = _parse(RouteRequest, json.dumps(payload).encode())
        ticket = body.ticket
        _check_text(ticket.text, settings)
        for ref in (ticket.photo, ticket.screenshot):
            if ref is not None:
                if ref.uri is not None:
                    raise _Rejected(422, "image URIs are not fetched by the API; send the bytes")
                _check_image(ref.data or b"", limits)
        decision: RoutingDecision = await _in_thread(lambda: router.route(ticket, k=body.k))
        metrics.decisions.labels(queue=decision.queue).inc()
        return decision

    @app.post(
        "/v1/search",
        response_model=SearchResponse,
        summary="Search the index by text and/or image",
        description="JSON (`SearchRequest`, image base64) or multipart/form-data with a `query` "
        "field (the SearchRequest JSON without the image) and an `image` file.",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["query"],
                            "properties": {
                                "query": {"type": "string", "description": "SearchRequest JSON"},
                                "image": {"type": "string", "format": "binary"},
                            },
                        }
                    },
                },
                "required": True,
            }
        },
    )
    async def search(request: Request) -> SearchResponse:
        kind = _content_kind(request)
        image: bytes | None
        if kind == "json":
            body = _parse(SearchRequest, await request.body())
            image = body.image
        else:
            form = await _form(request, settings)
            try:
                body = _parse(SearchRequest, json.dumps(_form_object(form, "query")).encode())
                image = await _image_field(form, "image", limits) or body.image
            finally:
                await form.close()
        if image is not None:  # (an image part was checked already; a base64 one not yet)
            _check_image(image, limits)
        if body.text is not None:
            _check_text(body.text, settings)
        if not (body.text and body.text.strip()) and image is None:
            raise _Rejected(422, "a search needs a non-blank 'text' or an 'image'")
        filters = Filters(
            tenant=body.tenant,
            kinds=body.kinds,
            locale=body.locale,
            category=body.category,
            in_stock=body.in_stock,
        )

        def run() -> SearchResponse:
            query = router.query_vector(body.text, image)
            hits = router.search(query, filters, body.k)
            return SearchResponse(
                space_id=router.space_id,
                hits=[
                    SearchHit(id=h.id, kind=h.kind, score=round(h.score, 6), title=h.title,
                              parent=h.parent)
                    for h in hits
                ],
            )  # fmt: skip

        response: SearchResponse = await _in_thread(run)
        return response

    def openapi() -> dict[str, Any]:
        # The request bodies are parsed by hand (JSON or multipart), so FastAPI does not know their
        # models: publish them next to the response models the $refs above point at.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi
            from pydantic.json_schema import models_json_schema

            spec = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            _, defs = models_json_schema(
                [(RouteRequest, "validation"), (SearchRequest, "validation")],
                ref_template="#/components/schemas/{model}",
            )
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in defs.get("$defs", {}).items():
                schemas.setdefault(name, schema)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


_PATHS = {"/v1/route", "/v1/search", "/healthz", "/metrics"}


async def _in_thread(fn: Callable[[], Any]) -> Any:
    from starlette.concurrency import run_in_threadpool

    try:
        return await run_in_threadpool(fn)
    except ModelsError as e:  # an input the models layer refused
        raise RequestError(str(e)) from e


def _content_kind(request: Request) -> Literal["json", "multipart"]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return "json"
    if ctype == "multipart/form-data":
        return "multipart"
    raise _Rejected(
        415, f"content type {ctype or '(none)'!r}: send application/json or multipart/form-data"
    )


def _errors(errors: Any) -> list[dict[str, Any]]:
    """Validation errors without the echoed input (it may be megabytes of base64)."""
    out = []
    for err in errors:
        out.append({k: v for k, v in dict(err).items() if k in ("loc", "msg", "type")})
    return out


def _parse(model: type[Any], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise _RejectedValidation(e) from e


class _RejectedValidation(_Rejected):
    def __init__(self, error: ValidationError) -> None:
        parts = [
            f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['msg']}"
            for err in error.errors()
        ]
        super().__init__(422, "; ".join(parts[:10]) or "invalid request body")


def _form_object(form: Any, name: str) -> dict[str, Any]:
    """A multipart text field holding a JSON object."""
    raw = form.get(name)
    if not isinstance(raw, str):
        raise _Rejected(422, f"multipart body needs a {name!r} field holding a JSON object")
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise _Rejected(422, f"field {name!r} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise _Rejected(422, f"field {name!r} must be a JSON object")
    return value


async def _form(request: Request, settings: ApiSettings) -> Any:
    try:
        return await request.form(max_files=2, max_fields=8, max_part_size=settings.max_image_bytes)
    except _Rejected:
        raise
    except Exception as e:  # malformed multipart: the client's fault
        if "maximum size" in str(e):
            raise _Rejected(
                413, f"a file part is over the {settings.max_image_bytes} byte limit"
            ) from e
        raise _Rejected(400, f"malformed multipart body: {e}") from e


async def _image_field(form: Any, name: str, limits: ImageLimits) -> bytes | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, UploadFile):
        raise _Rejected(422, f"{name!r} must be an image file part")
    ctype = (value.content_type or "").split(";")[0].strip().lower()
    if ctype not in IMAGE_TYPES:
        raise _Rejected(
            415, f"{name!r} has content type {ctype or '(none)'!r}: send {', '.join(IMAGE_TYPES)}"
        )
    data = await value.read(limits.max_bytes + 1)
    _check_image(data, limits, name)
    return data


def _check_text(text: str, settings: ApiSettings) -> None:
    if len(text) > settings.max_text_chars:
        raise _Rejected(
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


def _check_image(data: bytes, limits: ImageLimits, name: str = "image") -> None:
    """Byte, pixel and format checks, from the header only (nothing is decoded here)."""
    try:
        check_image(data, limits, name)
    except ImageTooLargeError as e:
        raise _Rejected(413, str(e)) from e
    except InputError as e:  # empty, not an image of an allowed format
        raise _Rejected(422, str(e)) from e


def serve(router: Router, settings: ApiSettings) -> None:
    """Serve :func:`create_app` with uvicorn on ``settings.host:settings.port`` until stopped."""
    import uvicorn

    uvicorn.run(
        create_app(router, settings), host=settings.host, port=settings.port, log_level="info",
        access_log=False,
    )  # fmt: skip
