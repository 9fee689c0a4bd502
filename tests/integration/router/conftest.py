"""Router fixtures: a small multi-tenant index of articles and policies in the default bundle's space."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFont

from models.embedder import Embedder
from router.api import create_app
from router.auth import KeyStore, Scope
from router.documents import Indexer
from router.feedback import FeedbackSink
from router.index import VectorIndex
from router.outcomes import Outcomes
from router.routing import Router
from router.schemas import Article, ImageRef, Product, WarrantyPolicy
from router.settings import ApiSettings, IndexSettings, RoutingSettings

ARTICLES = {
    "reset-password": (
        "Reset your password",
        "Forgot your password? Use the reset link to sign in.",
    ),
    "track-order": ("Track your order", "Where is my parcel? Follow the delivery tracking page."),
    "payment-failed": (
        "Payment failed",
        "Card declined or payment gateway timeout during checkout: what to do.",
    ),
}
POLICIES = {
    "shoe-warranty": (
        "Footwear warranty",
        "Soles and stitching are covered for 6 months.",
        "shoes",
    ),
    "laptop-warranty": ("Laptop warranty", "Screens, batteries and keyboards: 2 years.", "laptops"),
}


@pytest.fixture
def index(redis_client: redis.Redis, embedder: Embedder) -> Iterator[VectorIndex]:
    settings = IndexSettings(namespace=f"r{uuid.uuid4().hex[:10]}")
    index = VectorIndex.for_manifest(redis_client, embedder.manifest, settings)
    index.create()
    indexer = Indexer(embedder, index)
    docs: list[Article | WarrantyPolicy | Product] = []
    for tenant in ("acme", "globex"):
        docs += [
            Article(id=f"{tenant}-{k}", tenant=tenant, title=t, body=b)
            for k, (t, b) in ARTICLES.items()
        ]
        docs += [
            WarrantyPolicy(
                id=f"{tenant}-{k}", tenant=tenant, title=t, body=b, product_categories=(c,)
            )
            for k, (t, b, c) in POLICIES.items()
        ]
    docs.append(Product(id="sku-1", tenant="acme", title="Trail running shoe", category="shoes"))
    outcome = indexer.upsert(docs, [1] * len(docs))
    assert outcome.failed == [] and outcome.result.written == len(docs)
    yield index
    index.drop()


@pytest.fixture
def router(embedder: Embedder, index: VectorIndex, tmp_path: Path) -> Router:
    return Router(
        embedder,
        index,
        RoutingSettings(threshold=0.35, calibration_dir=tmp_path / "calibration"),
    )


def screenshot(text: str) -> bytes:
    """A PNG screenshot showing ``text`` (for the OCR path)."""
    img = Image.new("RGB", (720, 160), "white")
    ImageDraw.Draw(img).text((24, 50), text, fill="black", font=ImageFont.load_default(size=30))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def drawn(kind: str, colour: tuple[int, int, int], *, customer: bool = False) -> bytes:
    """A product silhouette on white (a catalog shot), or, with ``customer``, the same product
    smaller and off-centre (a customer's photo of it)."""
    img = Image.new("RGB", (240, 180), "white")
    draw = ImageDraw.Draw(img)
    if kind == "shoes":
        draw.polygon(
            [(30, 120), (60, 70), (120, 80), (200, 110), (210, 140), (30, 140)], fill=colour
        )
        draw.rectangle([(30, 140), (210, 150)], fill=(60, 60, 60))
    else:
        draw.rectangle([(50, 30), (190, 120)], fill=colour)
        draw.polygon([(30, 125), (210, 125), (225, 150), (15, 150)], fill=(90, 90, 95))
    if customer:
        shot = Image.new("RGB", (280, 220), "white")
        shot.paste(img.resize((216, 162)), (30, 25))
        img = shot
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def api_client(
    router: Router,
    settings: ApiSettings | None = None,
    *,
    tenant: str = "acme",
    scopes: tuple[Scope, ...] = ("admin",),
    rate_per_s: float | None = 1e6,
    feedback: FeedbackSink | None = None,
    outcomes: Outcomes | None = None,
) -> TestClient:
    """A test client of the API (auth on, as served) holding a key of ``tenant`` in the router's
    namespace (by default unlimited in rate, so that tests sending many requests are not
    throttled)."""
    store = KeyStore(router.index.client, router.index.settings.namespace)
    _, token = store.create(tenant, scopes, rate_per_s=rate_per_s)
    return TestClient(
        create_app(router, settings, keys=store, feedback=feedback, outcomes=outcomes),
        raise_server_exceptions=False,
        headers={"Authorization": f"Bearer {token}"},
    )


def catalog_products() -> list[Product]:
    """Two catalog products with drawn images: a brown boot (shoes) and a laptop (laptops)."""
    return [
        Product(id="sku-boot", tenant="acme", title="Brown leather boot", category="shoes",
                image=ImageRef(data=drawn("shoes", (120, 72, 40)))),
        Product(id="sku-laptop", tenant="acme", title="14-inch laptop", category="laptops",
                image=ImageRef(data=drawn("laptops", (150, 150, 155)))),
    ]  # fmt: skip
