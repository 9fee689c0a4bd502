"""``crossroute demo``: a small synthetic support world, published, routed, printed.

The data is written here, not taken from anywhere: a shoe-and-electronics shop ("demo" tenant) with
six knowledge articles, three warranty policies, six products whose photos are drawn with Pillow
(plain coloured product silhouettes), and seven tickets — plain text, a screenshot of an error
message (rendered text, read back by OCR), a photo of a product, one question the shop has no
article for (it must go to the human queue), and the same ambiguous words with two customer photos
that the catalog step tells apart (each photo identifies a product; its category has its own
policy). Deterministic: the same events every run, with source
versions from the clock so a rerun updates rather than duplicates.
"""

from __future__ import annotations

import io
import textwrap
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from rich.table import Column, Table

from models.progress import Progress
from router.schemas import Article, ImageRef, Product, Ticket, WarrantyPolicy
from streams.events import (
    ArticleUpserted,
    ProductUpserted,
    RoutingDecided,
    TicketCreated,
    WarrantyPolicyUpserted,
)
from streams.exceptions import ConfigurationError
from streams.settings import WorkerSettings

__all__ = ["TENANT", "DemoRun", "DemoWorld", "decisions_table", "demo_world", "run_demo"]

TENANT = "demo"

ARTICLES = {
    "kb-reset-password": ("Reset your password",
                          "Forgot your password or locked out of your account? Use the reset link "
                          "on the sign-in page; it expires after 30 minutes."),
    "kb-track-order": ("Track your order",
                       "Where is my parcel? Open Orders, pick the order and follow the carrier's "
                       "tracking link. Parcels usually arrive within 3 to 5 working days."),
    "kb-payment-failed": ("Payment failed at checkout",
                          "Card declined, payment gateway timeout or error 504 during checkout: "
                          "wait a minute, check the card details and try again."),
    "kb-return-item": ("Return an item",
                       "Send an item back within 30 days: print the return label from your "
                       "order page and drop the parcel at any post office."),
    "kb-shoe-size": ("Find your shoe size",
                     "Measure your foot from heel to toe and compare with our size chart; "
                     "between two sizes, take the larger one."),
    "kb-laptop-battery": ("Laptop battery drains fast",
                          "Lower the screen brightness, close background apps and update the "
                          "firmware; a battery that lasts under an hour may need a replacement."),
}  # fmt: skip
POLICIES = {
    "wp-footwear": ("Footwear warranty: soles and stitching",
                    "Soles that come off and seams that split within 6 months are repaired or "
                    "replaced for free.", ("shoes",)),
    "wp-electronics": ("Electronics warranty: two years",
                       "Laptops and headphones: manufacturing defects such as a dead battery, a "
                       "broken hinge or a faulty screen are covered for two years.",
                       ("laptops", "headphones")),
    "wp-refunds": ("Refund policy",
                   "Refunds are paid to the original payment method within 5 working days of "
                   "the return arriving at our warehouse.", ()),
}  # fmt: skip
PRODUCTS = {
    "sku-run-black": ("Black running shoe", "shoes", (20, 20, 20)),
    "sku-walk-brown": ("Brown walking shoe", "shoes", (120, 72, 40)),
    "sku-trail-blue": ("Blue trail shoe", "shoes", (30, 70, 160)),
    "sku-laptop-14": ("14-inch laptop", "laptops", (150, 150, 155)),
    "sku-headset": ("Wireless headphones", "headphones", (200, 30, 40)),
    "sku-sandal-tan": ("Tan sandal", "shoes", (210, 170, 120)),
}


_BROKEN = "It broke after three weeks. Is this covered?"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def product_photo(kind: str, colour: tuple[int, int, int], *, customer: bool = False) -> bytes:
    """A plain product shot on white: a shoe-like or device-like silhouette in ``colour``.

    ``customer``: the same product as a customer photographs it: smaller and off-centre in the
    frame (not the catalog's bytes).
    """
    img = Image.new("RGB", (240, 180), "white")
    draw = ImageDraw.Draw(img)
    if kind == "shoes":
        draw.polygon(
            [(30, 120), (60, 70), (120, 80), (200, 110), (210, 140), (30, 140)], fill=colour
        )
        draw.rectangle([(30, 140), (210, 150)], fill=(60, 60, 60))
    elif kind == "laptops":
        draw.rectangle([(50, 30), (190, 120)], fill=colour)
        draw.polygon([(30, 125), (210, 125), (225, 150), (15, 150)], fill=(90, 90, 95))
    else:
        draw.arc([(60, 20), (180, 140)], 180, 360, fill=colour, width=12)
        draw.ellipse([(45, 80), (90, 140)], fill=colour)
        draw.ellipse([(150, 80), (195, 140)], fill=colour)
    if customer:
        shot = Image.new("RGB", (280, 220), "white")
        shot.paste(img.resize((216, 162)), (30, 25))
        img = shot
    return _png(img)


def error_screenshot(text: str) -> bytes:
    """A screenshot-like image of an error message (OCR reads it back)."""
    img = Image.new("RGB", (760, 200), (245, 245, 245))
    draw = ImageDraw.Draw(img)
    draw.rectangle([(0, 0), (760, 40)], fill=(60, 90, 160))
    draw.text((24, 90), text, fill=(180, 20, 20), font=ImageFont.load_default(size=32))
    return _png(img)


@dataclass(frozen=True)
class DemoWorld:
    """The demo's events, and what each ticket is expected to reach."""

    catalog: list[ProductUpserted | ArticleUpserted | WarrantyPolicyUpserted]
    tickets: list[TicketCreated]
    expected: dict[str, str | None]
    """Ticket id → the document it should be routed to (None: the human queue)."""


def demo_world(version: int) -> DemoWorld:
    """Every demo event, with ``version`` as the source version of the catalog."""
    catalog: list[ProductUpserted | ArticleUpserted | WarrantyPolicyUpserted] = [
        ArticleUpserted(
            source_version=version,
            article=Article(id=i, tenant=TENANT, title=t, body=b),
        )
        for i, (t, b) in ARTICLES.items()
    ]
    catalog += [
        WarrantyPolicyUpserted(
            source_version=version,
            warranty_policy=WarrantyPolicy(
                id=i, tenant=TENANT, title=t, body=b, product_categories=c
            ),
        )
        for i, (t, b, c) in POLICIES.items()
    ]
    catalog += [
        ProductUpserted(
            source_version=version,
            product=Product(
                id=i,
                tenant=TENANT,
                title=t,
                category=c,
                image=ImageRef(data=product_photo(c, rgb), content_type="image/png"),
            ),
        )
        for i, (t, c, rgb) in PRODUCTS.items()
    ]
    tickets = [
        Ticket(id="t-1", tenant=TENANT, text="I can't log in, I forgot my password"),
        Ticket(id="t-2", tenant=TENANT, text="Where is my parcel? It has been a week."),
        Ticket(
            id="t-3",
            tenant=TENANT,
            text="this keeps happening when I pay",
            screenshot=ImageRef(data=error_screenshot("Error 504: payment gateway timeout")),
        ),
        Ticket(
            id="t-4",
            tenant=TENANT,
            text="the sole of my running shoe came off after 2 months",
            product_category="shoes",
            photo=ImageRef(data=product_photo("shoes", (20, 20, 20))),
        ),
        Ticket(id="t-5", tenant=TENANT, text="Do you sell gift cards for the bakery next door?"),
        # The same words, two photos: the photo decides (it identifies the catalog product, whose
        # category has its own warranty).
        Ticket(
            id="t-6",
            tenant=TENANT,
            text=_BROKEN,
            photo=ImageRef(data=product_photo("headphones", (200, 30, 40), customer=True)),
        ),
        Ticket(
            id="t-7",
            tenant=TENANT,
            text=_BROKEN,
            photo=ImageRef(data=product_photo("shoes", (120, 72, 40), customer=True)),
        ),
    ]
    expected: dict[str, str | None] = {
        "t-1": "kb-reset-password",
        "t-2": "kb-track-order",
        "t-3": "kb-payment-failed",
        "t-4": "wp-footwear",
        "t-5": None,
        "t-6": "wp-electronics",
        "t-7": "wp-footwear",
    }
    return DemoWorld(catalog, [TicketCreated(ticket=t) for t in tickets], expected)


@dataclass(frozen=True)
class DemoRun:
    """What :func:`run_demo` published and the decisions the worker published back."""

    world: DemoWorld
    space_id: str
    decisions: dict[str, RoutingDecided]
    """Ticket id → its decision; tickets missing here got none within the timeout."""

    @property
    def missing(self) -> list[str]:
        """Tickets without a decision."""
        return sorted({t.ticket.id for t in self.world.tickets} - set(self.decisions))

    def reached(self, ticket_id: str) -> str:
        """Where the ticket went: a document id, ``human queue``, or ``(no decision)``."""
        got = self.decisions.get(ticket_id)
        if got is None:
            return "(no decision)"
        if got.decision.abstained:
            return "human queue"
        return got.decision.targets[0].doc_id if got.decision.targets else "-"

    def expected(self, ticket_id: str) -> str:
        """Where the demo expects the ticket to go: a document id or ``human queue``."""
        return self.world.expected[ticket_id] or "human queue"

    @property
    def wrong(self) -> list[str]:
        """Tickets decided, but not where the demo expects them (``id → expected``)."""
        return [
            f"{t.ticket.id} → {self.expected(t.ticket.id)}"
            for t in self.world.tickets
            if t.ticket.id in self.decisions
            and self.reached(t.ticket.id) != self.expected(t.ticket.id)
        ]


def run_demo(
    settings: WorkerSettings,
    *,
    timeout: float = 900.0,
    model: Path | None = None,
    progress: Progress = lambda _: None,
) -> DemoRun:
    """Publish the demo world, wait for a running worker to index it and route its tickets.

    Waits (up to ``timeout`` seconds in all) for the worker's first start to build the bundle, for
    the catalog to be searchable in the index of the bundle's space, then for one decision per
    ticket on the decisions topic (read from its end as it was before the tickets were sent).

    Raises:
        ConfigurationError: the worker would dead-letter the demo tenant, or it did not build the
            bundle / index the catalog in time (the message says what to check).
    """
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from models.bundle import load_manifest
    from router.index import VectorIndex
    from streams.connections import kafka_config, redis_client
    from streams.events import decode_event
    from streams.producer import Publisher
    from streams.topics import ensure_topics, topic_specs
    from streams.worker import bundle_ready

    if settings.worker.tenants and TENANT not in settings.worker.tenants:
        raise ConfigurationError(
            f"the worker serves only tenants {list(settings.worker.tenants)}: it would dead-letter "
            f"the demo's tenant {TENANT!r}; add it to CROSSROUTE_WORKER__TENANTS or unset that"
        )
    deadline = time.monotonic() + timeout
    bundle = settings.model.resolved_bundle_dir(model)
    ready = (
        (bundle / "manifest.json").is_file
        if model is not None
        else partial(bundle_ready, settings.model)
    )
    if not ready():  # the worker's first run builds it (or rebuilds an outdated default): wait
        progress(f"waiting for the worker to build the model bundle in {bundle}")
        while not ready():
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"no model bundle in {bundle} after {timeout:.0f}s: is `crossroute "
                    "worker` running (it builds the default bundle on its first start)?"
                )
            time.sleep(2)
    manifest = load_manifest(bundle, verify=False)
    world = demo_world(int(time.time() * 1000))
    ensure_topics(AdminClient(kafka_config(settings)), topic_specs(settings.topics))
    publisher = Publisher(kafka_config(settings), settings.topics)
    report = publisher.publish(world.catalog)
    if report.failed:
        raise ConfigurationError(f"publishing the demo catalog failed: {report.failed[0][1]}")
    index = VectorIndex.for_manifest(
        redis_client(settings.redis, settings.stack), manifest, settings.index
    )
    progress(f"waiting for the worker to index {len(world.catalog)} documents")
    while not (index.exists() and index.count(TENANT) >= len(world.catalog)):
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"the demo catalog was not indexed within {timeout:.0f}s: is `crossroute "
                f"worker` running with the same settings (index {index.name})?"
            )
        time.sleep(1)
    progress(f"{len(world.catalog)} documents searchable in {index.name}")
    topic = settings.topics.name("decisions")
    consumer = Consumer(kafka_config(settings, **{"group.id": f"demo-{uuid.uuid4().hex[:8]}"}))
    decisions: dict[str, RoutingDecided] = {}
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = [TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
                for p in parts]  # fmt: skip
        consumer.assign(ends)
        publisher.publish(world.tickets)
        wanted = {t.ticket.id for t in world.tickets}
        progress("waiting for the routing decisions")
        while wanted - set(decisions) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None or msg.value() is None:
                continue
            event = decode_event(msg.value() or b"")
            if isinstance(event, RoutingDecided) and event.decision.tenant == TENANT:
                decisions[event.decision.ticket_id] = event
                progress(f"{len(decisions)}/{len(wanted)} decisions")
    finally:
        consumer.close()
    return DemoRun(world, manifest.space_id, decisions)


def decisions_table(run: DemoRun) -> Table:
    """One row per ticket: its text, where it went (a document or the human queue), the score, the
    evidence, and whether that is where the demo expects it (✓, or ✗ and the caption says where).

    Ids and scores never wrap; the ticket's text keeps at least 20 columns and wraps by words, so
    the table stays readable in an 80-column terminal without a TTY.
    """
    table = Table(
        Column("id", no_wrap=True),
        Column("ticket", min_width=20, ratio=1),
        Column("routed to", no_wrap=True),
        Column("score", no_wrap=True, justify="right"),
        Column("evidence", max_width=16),
        Column("ok", no_wrap=True),
    )
    misses = []
    for t in run.world.tickets:
        text = textwrap.shorten(t.ticket.text or "", 60, placeholder=" …")
        text += " [+screenshot]" if t.ticket.screenshot else ""
        text += " [+photo]" if t.ticket.photo else ""
        want, reached = run.expected(t.ticket.id), run.reached(t.ticket.id)
        got = run.decisions.get(t.ticket.id)
        top = got.decision.targets[0] if got is not None and got.decision.targets else None
        ok = reached == want
        if not ok:
            misses.append(f"{t.ticket.id} → {want}")
        evidence = ", ".join(_evidence(e, top.via_product) for e in top.evidence) if top else ""
        table.add_row(
            t.ticket.id, text, reached, f"{top.score:.3f}" if top else "", evidence,
            "✓" if ok else "✗",
        )  # fmt: skip
    if misses:
        table.caption = "✗ expected: " + ", ".join(misses)
    return table


def _evidence(kind: str, product: str | None) -> str:
    """One evidence item as the table shows it: ``catalog`` names the product the photo matched."""
    if kind == "catalog" and product is not None:
        return f"photo looks like {product}"
    return kind.replace("_", " ")
