"""The HTTP API on the real index and bundle: endpoints, multipart, limits (every rejection a 4xx),
fuzzing (no 5xx), metrics, OpenAPI, and routing through the API matching the offline evaluation."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from models.embedder import Embedder
from models.eval.dataset import load_dataset
from models.eval.metrics import rank_metrics
from models.eval.run import evaluate
from router.api import create_app
from router.documents import Indexer
from router.exceptions import FeedbackError, SettingsError
from router.feedback import LoggedTicket, TicketLog
from router.index import Filters, VectorIndex
from router.outcomes import Outcomes
from router.routing import Router
from router.schemas import Ticket
from router.settings import ApiSettings, RoutingSettings
from tests.conftest import require_shared_data
from tests.integration.router.conftest import api_client, catalog_products, screenshot

LIMITS = ApiSettings(
    max_body_bytes=200_000, max_image_bytes=100_000, max_image_pixels=250_000, max_text_chars=2_000
)


@pytest.fixture
def client(router: Router) -> TestClient:
    return api_client(router, LIMITS)


def png(size: tuple[int, int] = (64, 64), colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def test_route_json_and_health(client: TestClient, router: Router) -> None:
    ticket = {"id": "t1", "tenant": "acme", "text": "I forgot my password, how do I log in?"}
    res = client.post("/v1/route", json={"ticket": ticket, "k": 2})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["space_id"] == router.space_id == res.headers["X-Crossroute-Space"]
    assert body["queue"] == "auto" and len(body["targets"]) == 2
    assert body["targets"][0]["doc_id"] == "acme-reset-password"
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["space_id"] == router.space_id
    assert health["documents"] > 0 and health["threshold"] == pytest.approx(0.35)


def test_route_multipart_with_a_screenshot(client: TestClient) -> None:
    res = client.post(
        "/v1/route",
        data={"ticket": json.dumps({"id": "t2", "tenant": "acme"})},
        files={"screenshot": ("s.png", screenshot("Payment failed: gateway timeout"), "image/png")},
    )
    assert res.status_code == 200, res.text
    top = res.json()["targets"][0]
    assert top["doc_id"] == "acme-payment-failed" and "screenshot_text" in top["evidence"]


def test_search_text_and_image(client: TestClient) -> None:
    res = client.post("/v1/search", json={"tenant": "acme", "text": "where is my parcel", "k": 3})
    assert res.status_code == 200, res.text
    assert res.json()["hits"][0]["id"] == "acme-track-order"
    only = client.post(
        "/v1/search", json={"tenant": "acme", "text": "shoe", "kinds": ["product"], "k": 5}
    )
    assert [h["id"] for h in only.json()["hits"]] == ["sku-1"]
    image = client.post(
        "/v1/search",
        data={"query": json.dumps({"tenant": "acme", "k": 2})},
        files={"image": ("p.png", png(), "image/png")},
    )
    assert image.status_code == 200 and len(image.json()["hits"]) == 2
    inline = base64.b64encode(png()).decode()
    assert client.post("/v1/search", json={"tenant": "acme", "image": inline}).status_code == 200


def test_search_fuses_text_and_image_with_the_routing_weights(
    client: TestClient, router: Router
) -> None:
    """A search is fused like a ticket's text and photo (Router.fuse). It used to add the two
    vectors without the routing weights, so text-and-image searches ranked by other scores than
    routing does: that was the bug, and these scores differ from the old ones."""
    text, image = "where is my parcel", png(colour="blue")
    res = client.post(
        "/v1/search",
        json={"tenant": "acme", "text": text, "image": base64.b64encode(image).decode(), "k": 5},
    )
    assert res.status_code == 200, res.text
    got = [(h["id"], h["score"]) for h in res.json()["hits"]]
    q_text = router.embedder.embed_texts([text]).vectors[0]
    q_image = router.embedder.embed_images([image]).vectors[0]
    weighted = router.search(router.fuse({"text": q_text, "photo": q_image}), Filters("acme"), 5)
    assert got == [(h.id, pytest.approx(h.score, abs=1e-5)) for h in weighted]
    assert router.settings.weights["text"] != router.settings.weights["photo"]
    unweighted = (q_text + q_image) / np.linalg.norm(q_text + q_image)
    old = router.search(unweighted, Filters("acme"), 5)
    assert [s for _, s in got] != [pytest.approx(h.score, abs=1e-5) for h in old]


def test_the_api_refuses_image_limits_the_bundle_would_not_honour(router: Router) -> None:
    bundle = router.embedder.manifest.spec.image.preprocess.limits
    with pytest.raises(SettingsError, match="max_image_pixels"):
        create_app(router, ApiSettings(max_image_pixels=bundle.max_pixels + 1))
    create_app(router, ApiSettings(max_image_pixels=bundle.max_pixels))


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"content": b"x" * 300_000, "headers": {"content-type": "application/json"}}, 413, "byte limit"),
        ({"content": b"ticket=1", "headers": {"content-type": "text/plain"}}, 415, "content type"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, ""),
        ({"json": {"ticket": {"id": "t", "tenant": "acme", "text": "x" * 2_001}}}, 413, "characters"),
        ({"json": {"ticket": {"id": "t", "tenant": "ACME!", "text": "hi"}}}, 422, "tenant"),
        ({"json": {"ticket": {"id": "t", "tenant": "acme"}}}, 422, "needs text"),
        ({"json": {"ticket": {"id": "t", "tenant": "acme", "text": "hi"}, "extra": 1}}, 422, "extra"),
        ({"json": {"ticket": {"id": "t", "tenant": "acme", "photo": {"uri": "/etc/passwd"}}}}, 422, "URI"),
        (
            {"json": {"ticket": {"id": "t", "tenant": "acme", "photo": {"data": base64.b64encode(b"junk").decode()}}}},
            422,
            "not an image of an allowed format",  # the embedder's check (was: "not a readable")
        ),
        (
            {"json": {"ticket": {"id": "t", "tenant": "acme", "photo": {"data": base64.b64encode(b"\x89PNG" + bytes(100_000)).decode()}}}},
            413,
            "over the 100000 byte limit",
        ),
        (
            {"json": {"ticket": {"id": "t", "tenant": "acme", "photo": {"data": base64.b64encode(png((600, 600))).decode()}}}},
            413,
            "pixels",
        ),
        ({"data": {"k": "3"}, "files": {"photo": ("p.png", png(), "image/png")}}, 422, "'ticket' field"),
        (
            {"data": {"ticket": '{"id": "t", "tenant": "acme", "text": "hi"}'}, "files": {"photo": ("p.gif", b"GIF89a", "image/gif")}},
            415,
            "image/gif",
        ),
        ({"data": {"ticket": "{oops"}, "files": {"photo": ("p.png", png(), "image/png")}}, 422, "not valid JSON"),
        ({"data": {"ticket": "{}"}}, 415, "x-www-form-urlencoded"),
    ],
)  # fmt: skip
def test_bad_requests_are_4xx_with_a_message(
    client: TestClient, kwargs: dict[str, Any], status: int, message: str
) -> None:
    res = client.post("/v1/route", **kwargs)
    assert res.status_code == status, res.text
    assert message in json.dumps(res.json())


def test_metrics_count_requests_and_decisions(client: TestClient) -> None:
    client.post("/v1/route", json={"ticket": {"id": "t", "tenant": "acme", "text": "password"}})
    client.post("/v1/route", content=b"nope", headers={"content-type": "text/plain"})
    text = client.get("/metrics").text
    assert 'crossroute_api_requests_total{endpoint="/v1/route",status="200"} 1.0' in text
    assert 'crossroute_api_requests_total{endpoint="/v1/route",status="415"} 1.0' in text
    assert "crossroute_routing_decisions_total" in text and "crossroute_serving_space" in text


def test_openapi_is_published(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/route", "/v1/search", "/healthz", "/metrics"} <= set(spec["paths"])
    route_body = spec["paths"]["/v1/route"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(route_body)
    assert {"RouteRequest", "SearchRequest", "RoutingDecision", "Ticket"} <= set(
        spec["components"]["schemas"]
    )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_ticketish = st.fixed_dictionaries(
    {"ticket": st.dictionaries(
        st.sampled_from(["id", "tenant", "text", "locale", "photo", "screenshot", "product_category", "x"]),
        _json | st.text(max_size=50), max_size=6,
    )},
    optional={"k": _json},
)  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(["/v1/route", "/v1/search"]),
    body=_json | _ticketish,
    raw=st.binary(max_size=256),
    ctype=st.sampled_from(
        ["application/json", "multipart/form-data", "text/plain", "", "image/png"]
    ),
    use_raw=st.booleans(),
)
def test_fuzzed_requests_never_get_a_5xx(
    client: TestClient, path: str, body: Any, raw: bytes, ctype: str, use_raw: bool
) -> None:
    content = raw if use_raw else json.dumps(body).encode()
    res = client.post(path, content=content, headers={"content-type": ctype} if ctype else {})
    assert res.status_code < 500, (res.status_code, res.text)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    image=st.binary(min_size=1, max_size=2_000),
    ctype=st.sampled_from(["image/png", "image/jpeg", "application/octet-stream"]),
    ticket=st.text(max_size=80),
)
def test_fuzzed_multipart_never_gets_a_5xx(
    client: TestClient, image: bytes, ctype: str, ticket: str
) -> None:
    res = client.post("/v1/route", data={"ticket": ticket}, files={"photo": ("f", image, ctype)})
    assert res.status_code < 500, (res.status_code, res.text)


@pytest.mark.parametrize("name", ["stackfaq", "banking77", "photo-routing"])
def test_routing_through_the_api_matches_offline_eval(
    name: str, embedder: Embedder, redis_client: Any, tmp_path: Path
) -> None:
    """Text tickets (JSON) and photo-only tickets (multipart uploads of real customer photos)
    through POST /v1/route rank as `crossroute eval` does."""
    from dataclasses import replace

    from router.documents import corpus_document
    from router.settings import IndexSettings

    data = load_dataset(require_shared_data() / name)
    if name == "photo-routing":  # a third of the photos, every class
        data = replace(data, queries=tuple(sorted(data.queries, key=lambda q: q.id)[::3]))
    offline = evaluate(data, embedder, latency_sample=0)
    index = VectorIndex.for_manifest(
        redis_client, embedder.manifest, IndexSettings(namespace="apieval")
    )
    index.create()
    try:
        entities = [corpus_document(doc, "eval") for doc in data.corpus]
        outcome = Indexer(embedder, index, media_root=data.root).upsert(
            entities, [1] * len(entities)
        )
        assert outcome.failed == []
        router = Router(embedder, index, RoutingSettings(threshold=0.0, k=10))
        client = api_client(router, tenant="eval")
        position = {doc.id: i for i, doc in enumerate(data.corpus)}
        ranked = np.full((len(data.queries), 10), -1)
        for qi, q in enumerate(data.queries):
            if q.image is not None:
                res = client.post(
                    "/v1/route",
                    data={"ticket": json.dumps({"id": "q", "tenant": "eval"}), "k": "10"},
                    files={"photo": ("p.jpg", (data.root / q.image).read_bytes(), "image/jpeg")},
                )
            else:
                res = client.post(
                    "/v1/route", json={"ticket": {"id": "q", "tenant": "eval", "text": q.text}}
                )
            assert res.status_code == 200, res.text
            for j, target in enumerate(res.json()["targets"]):
                ranked[qi, j] = position[target["doc_id"]]
        relevant = [frozenset(position[d] for d in data.qrels[q.id]) for q in data.queries]
        online = rank_metrics(ranked, relevant, (1, 5, 10))
        for metric in ("recall@1", "recall@10", "ndcg@10"):
            assert online[metric] == pytest.approx(offline["metrics"][metric], abs=0.01), metric
        if name == "photo-routing":  # valid photos reach their class, far above chance (0.1)
            assert online["recall@1"] >= 0.75
    finally:
        index.drop()


def test_redis_eval_with_exemplars_matches_exact(embedder: Embedder, redis_client: Any) -> None:
    from router.evaluate import evaluate_on_redis
    from router.settings import IndexSettings

    data = load_dataset(require_shared_data() / "banking77")
    exact = evaluate(data, embedder, latency_sample=0, exemplar_folds=5)
    redis_report = evaluate_on_redis(
        data, embedder, redis_client, IndexSettings(), latency_sample=0, exemplar_folds=5
    )
    assert redis_report["exemplars"]["n"] == exact["exemplars"]["n"] == 1000
    assert redis_report["hnsw"]["recall@10_vs_exact"] >= 0.98
    for metric in ("recall@1", "recall@10"):
        assert redis_report["metrics"][metric] == pytest.approx(exact["metrics"][metric], abs=0.01)
    plain = evaluate(data, embedder, latency_sample=0)
    # exemplars help, even with near-duplicate queries kept in one fold (measured: +0.029)
    assert exact["metrics"]["recall@1"] > plain["metrics"]["recall@1"] + 0.02


def test_route_explain_adds_the_screenshot_text_and_the_titles(client: TestClient) -> None:
    res = client.post(
        "/v1/route/explain",
        data={"ticket": json.dumps({"id": "t-explain", "tenant": "acme"})},
        files={"screenshot": ("s.png", screenshot("Payment failed: gateway timeout"), "image/png")},
    )
    assert res.status_code == 200, res.text
    body = res.json()
    top = body["decision"]["targets"][0]
    assert top["doc_id"] == "acme-payment-failed" and "screenshot_text" in top["evidence"]
    assert "payment" in body["ocr_text"].lower()
    assert body["documents"]["acme-payment-failed"]["title"]
    assert set(body["documents"]) == {t["doc_id"] for t in body["decision"]["targets"]}
    assert res.headers["X-Crossroute-Space"] == body["decision"]["space_id"]
    text_only = client.post("/v1/route/explain", json={"ticket": {
        "id": "t-explain-2", "tenant": "acme", "text": "I forgot my password"}})  # fmt: skip
    assert text_only.status_code == 200 and text_only.json()["ocr_text"] is None
    other = client.post("/v1/route/explain", json={"ticket": {
        "id": "t-explain-3", "tenant": "globex", "text": "I forgot my password"}})  # fmt: skip
    assert other.status_code == 403  # the key's tenant only, as /v1/route


def test_whoami_and_the_console_files(client: TestClient) -> None:
    who = client.get("/v1/whoami").json()
    assert who["auth"] == "keys" and who["tenant"] == "acme" and who["scopes"] == ["admin"]
    anonymous = TestClient(client.app)
    assert anonymous.get("/v1/whoami").status_code == 401
    page = anonymous.get("/console/")  # the files hold no data: no key needed
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="console.js">' in page.text
    js = anonymous.get("/console/console.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text  # text reaches the page through textContent only
    assert anonymous.get("/console/../router/api.py").status_code == 404
    assert anonymous.get("/console/secret.txt").status_code == 404
    redirect = anonymous.get("/console", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "/console/"


class RecordingAnswers:
    """The Kafka feedback sink's seam: records what would be published (tests/integration/
    router/test_console.py and streams tests publish for real)."""

    def __init__(self, fail: bool = False) -> None:
        self.answers: list[tuple[str, str, str | None]] = []
        self.fail = fail

    def answer(self, ticket: LoggedTicket, doc_id: str | None) -> str:
        if self.fail:
            raise FeedbackError("broker unreachable")
        self.answers.append((ticket.tenant, ticket.ticket_id, doc_id))
        return "resolved" if doc_id else "escalated"


def test_the_human_queue_lists_abstained_tickets_and_takes_answers(router: Router) -> None:
    ns = router.index.settings.namespace
    log, outcomes = TicketLog(router.index.client, ns, 3600), Outcomes(router.index.client, ns)
    answers = RecordingAnswers()
    client = api_client(router, scopes=("queue",), feedback=answers, outcomes=outcomes)
    ticket = Ticket(id="q-1", tenant="acme", text="the lid hinge squeaks when I open it")
    decision = router.route(ticket).model_copy(update={"queue": "human"})
    log.record([LoggedTicket.of(ticket, decision)])
    outcomes.record_decisions([("acme", "q-1", decision.space_id, "human", decision.decided_at)])

    res = client.get("/v1/queue")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["tenant"] == "acme" and body["open"] == 1 and body["next_before"] is None
    (queued,) = body["tickets"]
    assert queued["ticket_id"] == "q-1" and queued["text"] == ticket.text
    assert [s["doc_id"] for s in queued["suggestions"]] == [t.doc_id for t in decision.targets]
    assert all(s["title"] for s in queued["suggestions"])
    assert sum(b["human"] for b in body["abstention"]) == 1 and body["bucket_s"] == 600
    assert client.get("/v1/queue", params={"tenant": "globex"}).status_code == 403

    article = "acme-reset-password"
    ok = client.post("/v1/queue/q-1/answer", json={"tenant": "acme", "doc_id": article})
    assert ok.status_code == 202 and ok.json()["action"] == "resolved", ok.text
    none = client.post("/v1/queue/q-1/answer", json={"tenant": "acme", "doc_id": None})
    assert none.status_code == 202 and none.json()["action"] == "escalated"
    assert answers.answers == [("acme", "q-1", article), ("acme", "q-1", None)]
    for path, body_, status in (
        ("/v1/queue/q-1/answer", {"tenant": "acme", "doc_id": "sku-1"}, 422),  # a product
        ("/v1/queue/q-1/answer", {"tenant": "acme", "doc_id": "globex-reset-password"}, 422),
        ("/v1/queue/nope/answer", {"tenant": "acme", "doc_id": article}, 404),
        ("/v1/queue/q-1/answer", {"tenant": "globex", "doc_id": None}, 403),
        ("/v1/queue/q-1/answer", {"tenant": "acme"}, 422),  # doc_id must be said, null or not
    ):
        res = client.post(path, json=body_)
        assert res.status_code == status, (body_, res.text)
    assert len(answers.answers) == 2  # nothing refused was published
    # a key without the queue scope, an API that cannot publish, a broker that does not confirm
    route_only = api_client(router, scopes=("route", "search"), feedback=answers)
    assert route_only.get("/v1/queue").status_code == 403
    assert route_only.post("/v1/queue/q-1/answer", json={"tenant": "acme", "doc_id": None}
                           ).status_code == 403  # fmt: skip
    for sink, detail in ((None, "cannot publish"), (RecordingAnswers(fail=True), "not published")):
        res = api_client(router, scopes=("queue",), feedback=sink).post(
            "/v1/queue/q-1/answer", json={"tenant": "acme", "doc_id": None}
        )
        assert res.status_code == 503 and detail in res.json()["detail"]


def test_an_explained_decision_is_shared_by_its_link_within_its_tenant(
    client: TestClient, router: Router
) -> None:
    res = client.post("/v1/route/explain", json={"ticket": {
        "id": "t-share", "tenant": "acme", "text": "I forgot my password"}})  # fmt: skip
    explained = res.json()
    share_id = explained["share_id"]
    assert res.status_code == 200 and len(share_id) == 16
    again = client.get(f"/v1/decisions/{share_id}")
    assert again.status_code == 200 and again.json() == explained | {"share_id": None}
    assert again.json()["text"] == "I forgot my password"
    ttl = router.index.client.ttl(f"{router.index.settings.namespace}:decision:acme:{share_id}")
    assert 7 * 24 * 3600 - 10 <= int(ttl) <= 7 * 24 * 3600
    globex = api_client(router, tenant="globex")
    assert globex.get(f"/v1/decisions/{share_id}").status_code == 404
    assert client.get("/v1/decisions/not-a-share-id").status_code == 404
    assert client.get("/v1/decisions/..%2F..%2Fapikey").status_code == 404
    search_only = api_client(router, scopes=("search",))
    assert search_only.get(f"/v1/decisions/{share_id}").status_code == 403
    assert TestClient(client.app).get(f"/v1/decisions/{share_id}").status_code == 401


def test_search_shows_product_thumbnails(client: TestClient, router: Router) -> None:
    assert Indexer(router.embedder, router.index).upsert(catalog_products(), [1, 1]).failed == []
    res = client.post("/v1/search", json={"tenant": "acme", "text": "laptop shoe", "k": 10,
                                          "kinds": ["product"]})  # fmt: skip
    assert res.status_code == 200, res.text
    thumbs = {h["id"]: h["thumbnail"] for h in res.json()["hits"]}
    assert thumbs["sku-1"] is None  # a product without an image
    for sku in ("sku-laptop", "sku-boot"):
        assert thumbs[sku].startswith("data:image/jpeg;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(thumbs[sku].split(",", 1)[1])))
        assert img.format == "JPEG" and max(img.size) == 96  # from a 240 x 180 catalog shot
    mixed = client.post("/v1/search", json={"tenant": "acme", "text": "password", "k": 20}).json()
    assert {h["kind"] for h in mixed["hits"] if h["thumbnail"]} == {"product"}
    stored = router.index.get("acme", "sku-laptop")
    assert stored is not None and "thumb" not in stored  # the fields routing reads stay small
