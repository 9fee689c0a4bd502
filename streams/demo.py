"""``crossroute demo``: a small synthetic support world, published, routed, printed.

The data is written here, not taken from anywhere: a shoe-and-electronics shop ("demo" tenant) with
six knowledge articles, three warranty policies, six products whose photos are drawn with Pillow
(plain coloured product silhouettes), and five tickets — plain text, a screenshot of an error
message (rendered text, read back by OCR), a photo of a product, and one question the shop has no
article for (it must go to the human queue). Deterministic: the same events every run, with source
versions from the clock so a rerun updates rather than duplicates.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from router.schemas import Article, ImageRef, Product, Ticket, WarrantyPolicy
from streams.events import (
    ArticleUpserted,
    ProductUpserted,
    TicketCreated,
    WarrantyPolicyUpserted,
)

__all__ = ["TENANT", "DemoWorld", "demo_world"]

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


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def product_photo(kind: str, colour: tuple[int, int, int]) -> bytes:
    """A plain product shot on white: a shoe-like or device-like silhouette in ``colour``."""
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
            policy=WarrantyPolicy(id=i, tenant=TENANT, title=t, body=b, product_categories=c),
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
    ]
    expected: dict[str, str | None] = {
        "t-1": "kb-reset-password",
        "t-2": "kb-track-order",
        "t-3": "kb-payment-failed",
        "t-4": "wp-footwear",
        "t-5": None,
    }
    return DemoWorld(catalog, [TicketCreated(ticket=t) for t in tickets], expected)
