"""The HTTP API: ``POST /v1/route`` (and ``/v1/route/explain``), ``POST /v1/search``, the human
queue (``GET /v1/queue``, ``POST /v1/queue/{ticket_id}/answer``), shared decisions
(``GET /v1/decisions/{share_id}``), ``GET /v1/whoami``, ``GET /healthz``, ``GET /metrics``, and
the web console at ``/console/``.

Every call but ``/healthz`` (and the OpenAPI pages) carries an API key (:mod:`router.auth`): the
key's scope must allow the endpoint (``route``, ``search``; ``admin`` for ``/metrics``), the tenant a
body names must be the key's (else 403), and a key over its rate gets 429 with ``Retry-After``.
Embedding runs at most ``max_concurrent`` at once with ``max_queued`` waiting; past that the API
answers 503 with ``Retry-After`` instead of queueing without bound.

Every request is bounded before any work is done (:mod:`router.bounds`: body size on the stream,
content type, text length, image bytes and pixels from the header). Every rejection is a 4xx with a
message that says what to change; a Redis outage is a 503; nothing a client sends can produce a 500.

A search embeds its text and image and fuses them like a ticket's text and photo
(:meth:`~router.routing.Router.query_vector`: the routing weights apply).

Endpoints are plain ``def``: FastAPI runs them in its thread pool, so embedding (CPU-bound, onnxruntime
releases the GIL) never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import redis
from fastapi import FastAPI, Query, Request
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
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.exceptions import ModelsError
from router.auth import ApiKey, Authenticator, AuthError, KeyStore, RateLimiter, bearer_token
from router.auth import Scope as KeyScope
from router.bounds import (
    BodyLimit,
    Rejected,
    check_request_image,
    check_text,
    content_kind,
    form_object,
    image_field,
    image_limits,
    parse_json,
    read_form,
    validation_errors,
)
from router.console import add_console
from router.exceptions import FeedbackError, RequestError
from router.feedback import FeedbackSink, LoggedTicket, TicketLog
from router.index import DocKind, Filters
from router.outcomes import BUCKET_S, OutcomeCollector, Outcomes
from router.routing import Router
from router.schemas import MAX_TEXT_CHARS, EntityId, Locale, RoutingDecision, TenantId, Ticket
from router.serving import Serving
from router.settings import ApiSettings
from router.shared import SharedDecisions

__all__ = [
    "AbstentionPoint",
    "DocumentSummary",
    "ExplainedDecision",
    "QueueAnswer",
    "QueueResponse",
    "QueuedTicket",
    "RouteRequest",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
    "WhoAmI",
    "create_app",
    "serve",
]

log = logging.getLogger(__name__)


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
    thumbnail: str | None = None
    """A product's thumbnail, a ``data:image/jpeg;base64,`` URL (None: not a product, or no
    image)."""


class SearchResponse(BaseModel):
    """Search results, with the embedding space that produced them."""

    space_id: str
    hits: list[SearchHit]


class DocumentSummary(BaseModel):
    """What the console shows of a target document."""

    kind: str
    title: str = ""


class ExplainedDecision(BaseModel):
    """``/v1/route/explain``: the decision, and what a person needs to judge it."""

    decision: RoutingDecision
    ocr_text: str | None = None
    """The text read from the ticket's screenshot (None without a screenshot)."""
    documents: dict[str, DocumentSummary] = Field(default_factory=dict)
    """Title and kind of each target, by document id (absent: deleted since the search)."""
    text: str = ""
    """The ticket's text."""
    share_id: str | None = None
    """Where ``GET /v1/decisions/{share_id}`` finds this explanation again (None: not kept)."""


class QueuedSuggestion(BaseModel):
    """A target the router had for a queued ticket (below its threshold)."""

    doc_id: str
    kind: str
    score: float
    title: str | None = None
    """None: the document was deleted since."""


class QueuedTicket(BaseModel):
    """A ticket of the human queue."""

    ticket_id: str
    text: str
    locale: str
    space_id: str
    decided_at: str
    images: list[str]
    suggestions: list[QueuedSuggestion]


class AbstentionPoint(BaseModel):
    """The tenant's decisions in one bucket, and how many went to the human queue."""

    start: str
    decisions: int
    human: int


class QueueResponse(BaseModel):
    """``GET /v1/queue``: the newest tickets of the tenant's human queue, and how the abstention
    rate moved over the window asked for."""

    tenant: str
    open: int
    """Tickets waiting in the queue (all pages)."""
    tickets: list[QueuedTicket]
    next_before: int | None
    """Pass as ``before`` for the next page (None: this was the last)."""
    bucket_s: int
    abstention: list[AbstentionPoint]
    """Oldest first, empty buckets included (empty when outcomes are not counted)."""


class QueueAnswer(BaseModel):
    """``POST /v1/queue/{ticket_id}/answer``: the article or policy that answers the ticket, or
    ``null`` when none does (the ticket is escalated: similar tickets keep going to people)."""

    model_config = ConfigDict(extra="forbid")

    tenant: TenantId
    doc_id: EntityId | None


class WhoAmI(BaseModel):
    """``/v1/whoami``: the caller's key (or that auth is off)."""

    auth: Literal["keys", "off"]
    tenant: str | None = None
    scopes: list[str] = Field(default_factory=list)
    key_id: str | None = None


class _Metrics:
    def __init__(self, registry: CollectorRegistry, serving: Serving) -> None:
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
        self.shed = Counter(
            "crossroute_api_shed",
            "Requests refused to protect the service: reason capacity (503) or rate_limit (429).",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.embedding = Gauge(
            "crossroute_api_embedding_requests",
            "Requests embedding now or waiting for an embedding slot.",
            registry=registry,
        )
        self.decisions = Counter(
            "crossroute_routing_decisions",
            "Routing decisions by queue (auto or human) and the space that made them.",
            ["queue", "space_id"],
            registry=registry,
        )
        registry.register(_ServingCollector(serving))


class _ServingCollector(Collector):
    """``crossroute_serving_space{space_id, role}``: what serves now (live, canary share)."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving

    def collect(self) -> Iterator[GaugeMetricFamily]:
        d = self.serving.deployment
        family = GaugeMetricFamily(
            "crossroute_serving_space",
            "The embedding spaces served: 1 for live; the canary's share of tickets (0-1).",
            labels=["space_id", "role"],
        )
        if d.live is not None:
            family.add_metric([d.live, "live"], 1.0)
        if d.canary is not None:
            family.add_metric([d.canary, "canary"], d.canary_percent / 100.0)
        yield family


def create_app(
    router: Router | Serving,
    settings: ApiSettings | None = None,
    *,
    outcomes: Outcomes | None = None,
    keys: KeyStore | None = None,
    feedback: FeedbackSink | None = None,
) -> FastAPI:
    """Build the API around a :class:`Router` (its embedder and index must share one space), or
    a :class:`Serving` that follows the deployment (live space and canary) without a restart.

    Args:
        outcomes: when given, ``/metrics`` also exports the outcome counts and rates per space.
        keys: where the API keys are (default: the served index's Redis and namespace); unused
            when ``settings.auth`` is ``off``.
        feedback: where answers to the human queue are published (None: the queue can be read,
            not answered; ``crossroute api`` gives the Kafka one of ``streams``).

    Raises:
        SettingsError: an image limit of ``settings`` is above the bundle's decode limit.
    """
    settings = settings or ApiSettings()
    serving = router if isinstance(router, Serving) else Serving.fixed(router)
    limits = image_limits(settings, serving.live.embedder.manifest.spec.image.preprocess.limits)
    registry = CollectorRegistry()
    metrics = _Metrics(registry, serving)
    if outcomes is not None:
        registry.register(OutcomeCollector(outcomes))
    app = FastAPI(
        title="crossroute",
        version="1",
        summary="Route support tickets (text, photo, screenshot) to knowledge articles and "
        "warranty policies; search the multimodal index.",
    )

    guard: Authenticator | None = None
    if settings.auth == "keys":
        index = serving.live.index
        guard = Authenticator(
            keys or KeyStore(index.client, index.settings.namespace),
            RateLimiter(settings.rate_per_s, settings.rate_burst),
            cache_s=settings.key_cache_s,
        )
    else:
        log.warning(
            "API AUTHENTICATION IS OFF: anyone who reaches this port can route and search for any "
            "tenant and read /metrics (CROSSROUTE_API__AUTH=off; for local development only)"
        )
    slots = _Slots(settings.max_concurrent, settings.max_queued, metrics)
    store = serving.live.index
    namespace = store.settings.namespace
    ticket_log = TicketLog(store.client, namespace, ttl_s=30 * 24 * 3600)  # read only here
    shared = SharedDecisions(store.client, namespace)

    def tenant_of(request: Request, named: str | None) -> str:
        """The tenant a request acts for: the key's; a tenant named in the request must be it
        (with auth off, the named one, which is then required)."""
        if guard is None:
            if named is None:
                raise Rejected(422, "name the 'tenant' (authentication is off)")
            return named
        key: ApiKey | None = getattr(request.state, "api_key", None)
        if key is None:  # the guard always sets it: fail closed all the same
            raise AuthError(401, "an API key is required")
        if named is not None and key.tenant != named:
            raise AuthError(403, f"this API key is for tenant {key.tenant!r}, not {named!r}")
        return key.tenant

    app.add_middleware(_Guard, guard=guard, metrics=metrics)
    app.add_middleware(_Observe, metrics=metrics, serving=serving)

    @app.exception_handler(Rejected)
    async def _rejected(_: Request, exc: Rejected) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestError)
    async def _bad_request(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis unavailable: %s", type(exc).__name__)
        return JSONResponse({"detail": "the index is unavailable, retry later"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    @app.get("/healthz", summary="Liveness and the space served")
    def healthz() -> JSONResponse:
        try:
            count = serving.live.index.count()
        except redis.RedisError:
            return JSONResponse(
                {"status": "unavailable", "space_id": serving.space_id}, status_code=503
            )
        return JSONResponse({"status": "ok", **serving.describe(), "documents": count})

    @app.get("/metrics", summary="Prometheus metrics")
    def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def read_route(request: Request) -> RouteRequest:
        """The route request of a JSON or multipart body, bounded and checked for the key."""
        kind = content_kind(request)
        body: RouteRequest
        if kind == "json":
            body = parse_json(RouteRequest, await request.body())
        else:
            form = await read_form(request, settings)
            try:
                ticket_json = form_object(form, "ticket")
                for name in ("photo", "screenshot"):
                    data = await image_field(form, name, limits)
                    if data is not None:  # the file part becomes the ticket's inline image
                        ticket_json[name] = {"data": base64.b64encode(data).decode()}
                payload: dict[str, Any] = {"ticket": ticket_json}
                k_raw = form.get("k")
                if isinstance(k_raw, str):
                    payload["k"] = k_raw
            finally:
                await form.close()
            body = parse_json(RouteRequest, json.dumps(payload).encode())
        ticket = body.ticket
        tenant_of(request, ticket.tenant)
        check_text(ticket.text, settings)
        for ref in (ticket.photo, ticket.screenshot):
            if ref is not None:
                if ref.uri is not None:
                    raise Rejected(422, "image URIs are not fetched by the API; send the bytes")
                check_request_image(ref.data or b"", limits)
        return body

    def decided(decision: RoutingDecision, response: Response) -> None:
        """Count a decision and name the space that made it."""
        metrics.decisions.labels(queue=decision.queue, space_id=decision.space_id).inc()
        response.headers["X-Crossroute-Space"] = decision.space_id

    async def route(request: Request, response: Response) -> RoutingDecision:
        body = await read_route(request)
        decision: RoutingDecision = await slots.run(
            "/v1/route", lambda: serving.route(body.ticket, k=body.k)
        )
        decided(decision, response)
        return decision

    route_body: dict[str, Any] = {
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
    }

    app.post(
        "/v1/route",
        response_model=RoutingDecision,
        summary="Route a ticket",
        description="JSON (`RouteRequest`, images base64) or multipart/form-data with a `ticket` "
        "field (the ticket as JSON) and optional `photo` / `screenshot` image files.",
        responses={413: {"description": "Too large"}, 415: {"description": "Bad content type"}},
        openapi_extra=route_body,
    )(route)

    @app.post(
        "/v1/route/explain",
        response_model=ExplainedDecision,
        summary="Route a ticket and explain the decision",
        description="The bodies of /v1/route; the answer adds the text read from a screenshot "
        "and the title of each target (what the console shows).",
        openapi_extra=route_body,
    )
    async def route_explain(request: Request, response: Response) -> ExplainedDecision:
        body = await read_route(request)

        def run() -> ExplainedDecision:
            router = serving.router_for(body.ticket.id)
            tv = router.embed_ticket(body.ticket)
            decision = router.decide(body.ticket, tv, k=body.k)
            titles = router.index.titles(decision.tenant, [t.doc_id for t in decision.targets])
            documents = {
                t.doc_id: DocumentSummary(kind=t.kind, title=titles[t.doc_id])
                for t in decision.targets
                if t.doc_id in titles
            }
            explained = ExplainedDecision(
                decision=decision, ocr_text=tv.ocr_text, documents=documents, text=body.ticket.text
            )
            try:
                share_id = shared.keep(decision.tenant, explained.model_dump_json())
            except redis.exceptions.NoPermissionError:
                log.warning("cannot keep shared decisions: the API's Redis user lacks SET on "
                            "%s:decision:* (crossroute index acl api)", namespace)  # fmt: skip
                return explained
            return explained.model_copy(update={"share_id": share_id})

        explained: ExplainedDecision = await slots.run("/v1/route/explain", run)
        decided(explained.decision, response)
        return explained

    @app.get(
        "/v1/decisions/{share_id}",
        response_model=ExplainedDecision,
        summary="A decision explained by /v1/route/explain, kept for 7 days",
        responses={404: {"description": "Unknown, expired, or another tenant's"}},
    )
    def shared_decision(share_id: str, request: Request) -> Response:
        tenant = tenant_of(request, request.query_params.get("tenant"))
        payload = shared.get(tenant, share_id)
        if payload is None:
            raise Rejected(404, "no such decision (links last 7 days, for their tenant only)")
        return Response(payload, media_type="application/json")

    @app.get(
        "/v1/queue",
        response_model=QueueResponse,
        summary="The human queue: abstained tickets, newest first, with their suggestions",
    )
    def queue(
        request: Request,
        tenant: Annotated[str | None, Query(description="Default: the key's tenant.")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        before: Annotated[int | None, Query(ge=0, description="Decided before (ms).")] = None,
        window_s: Annotated[int, Query(ge=BUCKET_S, le=2 * 24 * 3600)] = 24 * 3600,
    ) -> QueueResponse:
        who = tenant_of(request, tenant)
        page = ticket_log.queue(who, limit, before)
        ids = sorted({s.doc_id for t in page.tickets for s in t.suggestions})
        titles = serving.live.index.titles(who, ids) if ids else {}
        buckets = outcomes.abstention(who, window_s) if outcomes is not None else []
        last = page.tickets[-1] if len(page.tickets) == limit else None
        return QueueResponse(
            tenant=who,
            open=page.open,
            tickets=[_queued(t, titles) for t in page.tickets],
            next_before=int(last.decided_at.timestamp() * 1000) if last else None,
            bucket_s=BUCKET_S,
            abstention=[
                AbstentionPoint(start=b.start.isoformat(), decisions=b.decisions, human=b.human)
                for b in buckets
            ],
        )

    @app.post(
        "/v1/queue/{ticket_id}/answer",
        status_code=202,
        summary="Answer a ticket of the human queue",
        description="Publishes the feedback the worker learns from: `resolved` with the article "
        "or policy (the ticket becomes an exemplar of it, so similar tickets are routed there), "
        "or `escalated` when `doc_id` is null. The worker takes the ticket out of the queue.",
        responses={404: {"description": "Not in the ticket log"}},
    )
    def answer(ticket_id: str, body: QueueAnswer, request: Request) -> dict[str, Any]:
        who = tenant_of(request, body.tenant)
        if feedback is None:
            raise Rejected(503, "this API process cannot publish feedback: answer the queue "
                           "through `crossroute api`, which has a Kafka producer")  # fmt: skip
        (ticket,) = ticket_log.lookup([(who, ticket_id)])
        if ticket is None:
            raise Rejected(404, f"ticket {ticket_id!r} is not in the ticket log of {who!r}")
        if body.doc_id is not None:
            if serving.live.index.kind_of(who, body.doc_id) not in ("article", "warranty_policy"):
                raise Rejected(
                    422, f"{body.doc_id!r} is not an article or warranty policy of {who!r}"
                )
        try:
            action = feedback.answer(ticket, body.doc_id)
        except FeedbackError as e:
            log.warning("feedback not published: %s", e)
            raise Rejected(503, f"the answer was not published, retry: {e}") from e
        return {"ticket_id": ticket_id, "action": action, "doc_id": body.doc_id}

    @app.get("/v1/whoami", response_model=WhoAmI, summary="The caller's API key")
    def whoami(request: Request) -> WhoAmI:
        key: ApiKey | None = getattr(request.state, "api_key", None)
        if guard is None or key is None:
            return WhoAmI(auth="off")
        return WhoAmI(auth="keys", tenant=key.tenant, scopes=sorted(key.scopes),
                      key_id=key.key_id)  # fmt: skip

    add_console(app)

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
        kind = content_kind(request)
        image: bytes | None
        if kind == "json":
            body = parse_json(SearchRequest, await request.body())
            image = body.image
        else:
            form = await read_form(request, settings)
            try:
                body = parse_json(SearchRequest, json.dumps(form_object(form, "query")).encode())
                image = await image_field(form, "image", limits) or body.image
            finally:
                await form.close()
        tenant_of(request, body.tenant)
        if image is not None:  # (an image part was checked already; a base64 one not yet)
            check_request_image(image, limits)
        if body.text is not None:
            check_text(body.text, settings)
        if not (body.text and body.text.strip()) and image is None:
            raise Rejected(422, "a search needs a non-blank 'text' or an 'image'")
        filters = Filters(
            tenant=body.tenant,
            kinds=body.kinds,
            locale=body.locale,
            category=body.category,
            in_stock=body.in_stock,
        )

        def run() -> SearchResponse:
            live = serving.live  # one router for the query and the search: one space
            query = live.query_vector(body.text, image)
            hits = live.search(query, filters, body.k)
            products = [h.id for h in hits if h.kind == "product"]
            thumbs = live.index.thumbnails(body.tenant, products) if products else {}
            return SearchResponse(
                space_id=live.space_id,
                hits=[
                    SearchHit(id=h.id, kind=h.kind, score=round(h.score, 6), title=h.title,
                              parent=h.parent, thumbnail=thumbs.get(h.id))
                    for h in hits
                ],
            )  # fmt: skip

        response: SearchResponse = await slots.run("/v1/search", run)
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
_SPACE_HEADER = b"x-crossroute-space"
_SCOPES: dict[str, KeyScope | Literal["any"]] = {
    "/v1/route": "route", "/v1/route/explain": "route", "/v1/search": "search",
    "/v1/whoami": "any", "/metrics": "admin", "/v1/queue": "queue",
    # the console's pipeline pages (served by streams.operations)
    "/v1/pipeline": "admin", "/v1/deadletters": "admin", "/v1/spaces": "admin",
}  # fmt: skip
_PREFIX_SCOPES: tuple[tuple[str, KeyScope | Literal["any"]], ...] = (
    ("/v1/queue/", "queue"), ("/v1/decisions/", "route"), ("/v1/spaces/", "admin"),
    ("/v1/", "any"),
)  # fmt: skip
"""What each guarded path needs (``any``: a valid key), exactly or by prefix (any other ``/v1/``
path needs a valid key too); every other path (``/healthz``, the OpenAPI pages, the console's
static files, which hold no data) is open."""


def _needed(path: str) -> KeyScope | Literal["any"] | None:
    """The scope a path needs, None for an open path."""
    needed = _SCOPES.get(path)
    if needed is None:
        needed = next((scope for prefix, scope in _PREFIX_SCOPES if path.startswith(prefix)), None)
    return needed


class _Guard:
    """ASGI middleware: the API key of every guarded request (:class:`~router.auth.Authenticator`),
    put in ``request.state.api_key``; a refusal is answered here, before the body is read."""

    def __init__(self, app: ASGIApp, guard: Authenticator | None, metrics: _Metrics) -> None:
        self.app = app
        self.guard = guard
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        needed = _needed(scope["path"]) if scope["type"] == "http" else None
        if self.guard is None or needed is None:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope.get("headers", ()))
        try:
            key = self.guard.authenticate(token, None if needed == "any" else needed)
        except Rejected as e:
            if e.status == 429:
                self.metrics.shed.labels(endpoint=scope["path"], reason="rate_limit").inc()
            await JSONResponse({"detail": e.message}, e.status, e.headers)(scope, receive, send)
            return
        except redis.RedisError as e:
            log.warning("key store unavailable: %s", type(e).__name__)
            response = JSONResponse({"detail": "the key store is unavailable, retry later"}, 503)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)


class _Slots:
    """Bounded embedding: ``concurrent`` requests run in the thread pool, ``queued`` wait; one more
    is refused with 503 and ``Retry-After`` rather than queued without bound."""

    def __init__(self, concurrent: int, queued: int, metrics: _Metrics) -> None:
        self.running = asyncio.Semaphore(concurrent)
        self.limit = concurrent + queued
        self.admitted = 0
        self.metrics = metrics
        metrics.embedding.set_function(lambda: self.admitted)

    async def run(self, endpoint: str, fn: Callable[[], Any]) -> Any:
        if self.admitted >= self.limit:
            self.metrics.shed.labels(endpoint=endpoint, reason="capacity").inc()
            raise Rejected(503, "the API is at capacity, retry later", retry_after_s=1.0)
        self.admitted += 1
        try:
            async with self.running:
                return await _in_thread(fn)
        finally:
            self.admitted -= 1


class _Observe:
    """ASGI middleware: count and time every request by endpoint and status, and name the space
    that answered (``X-Crossroute-Space``: the endpoint's own, else the live space). Plain ASGI
    rather than ``@app.middleware("http")``, which costs a task and a stream per request."""

    def __init__(self, app: ASGIApp, metrics: _Metrics, serving: Serving) -> None:
        self.app = app
        self.metrics = metrics
        self.serving = serving

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", ()))
                if not any(k.lower() == _SPACE_HEADER and v for k, v in headers):
                    headers = [(k, v) for k, v in headers if k.lower() != _SPACE_HEADER]
                    headers.append((_SPACE_HEADER, self.serving.space_id.encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, observed_send)
        if status is None:
            return
        endpoint = scope["path"] if scope["path"] in _PATHS else "other"
        self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)


def _queued(ticket: LoggedTicket, titles: dict[str, str]) -> QueuedTicket:
    return QueuedTicket(
        ticket_id=ticket.ticket_id,
        text=ticket.text,
        locale=ticket.locale,
        space_id=ticket.space_id,
        decided_at=ticket.decided_at.isoformat(),
        images=list(ticket.images),
        suggestions=[
            QueuedSuggestion(
                doc_id=s.doc_id, kind=s.kind, score=s.score, title=titles.get(s.doc_id)
            )
            for s in ticket.suggestions
        ],
    )


async def _in_thread(fn: Callable[[], Any]) -> Any:
    from starlette.concurrency import run_in_threadpool

    try:
        return await run_in_threadpool(fn)
    except ModelsError as e:  # an input the models layer refused
        raise RequestError(str(e)) from e


def serve(app: FastAPI, settings: ApiSettings) -> None:
    """Serve an app of :func:`create_app` with uvicorn on ``settings.host:settings.port`` until
    stopped."""
    import uvicorn

    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
