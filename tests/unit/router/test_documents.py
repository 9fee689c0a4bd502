"""Dataset corpus rows → the domain documents they stand for (what `crossroute index` indexes)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from models.config import load_spec
from models.eval.dataset import CorpusDoc
from models.exceptions import ImageTooLargeError
from models.preprocess import decode_image
from router.documents import THUMBNAIL_PX, corpus_document, entity_id, thumbnail
from router.index import THUMBNAIL_PREFIX
from router.schemas import Article, Product, WarrantyPolicy


def row(**fields: object) -> CorpusDoc:
    return CorpusDoc.model_validate(fields)


def test_entity_id_replaces_spaces_and_fits_the_id_limit() -> None:
    assert entity_id("doc 1 a") == "doc_1_a"
    assert entity_id("x" * 300) == "x" * 128


def test_policies_and_articles() -> None:
    policy = corpus_document(
        row(_id="wp 1", kind="warranty_policy", title="Returns", text="30 days"), "acme"
    )
    assert policy == WarrantyPolicy(id="wp_1", tenant="acme", title="Returns", body="30 days")
    article = corpus_document(
        row(_id="a1", kind="article", text="How to reset", attrs={"topic": "login"}), "acme"
    )
    assert article == Article(
        id="a1", tenant="acme", title="How to reset", body="How to reset", category="login"
    )


def test_everything_else_is_a_product() -> None:
    shoe = corpus_document(
        row(_id="p1", title="Shoe", text="Black leather", image="images/p1.jpg",
            attrs={"article_type": "Shoes", "label": "ignored"}),
        "acme",
    )  # fmt: skip
    assert isinstance(shoe, Product)
    assert (shoe.title, shoe.description, shoe.category) == ("Shoe", "Black leather", "Shoes")
    assert shoe.image is not None and shoe.image.uri == "images/p1.jpg"
    # An article with an image is indexed as a product; without a title the text is the title,
    # not the description too; without a category attribute it is "uncategorised".
    photo = corpus_document(row(_id="a2", kind="article", text="A red dress", image="d.png"), "t")
    assert isinstance(photo, Product)
    assert (photo.title, photo.description, photo.category) == ("A red dress", "", "uncategorised")
    bare = corpus_document(row(_id="d3", text="   "), "t")
    assert isinstance(bare, Product) and bare.title == "d3" and bare.image is None


def test_a_thumbnail_is_a_small_jpeg_data_url_and_a_jpeg_is_decoded_in_draft() -> None:
    spec = load_spec("default").image.preprocess
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.new("RGB", (1600, 800), (200, 30, 30)).save(buf, fmt)
        img = decode_image(buf.getvalue(), spec, "p", draft=THUMBNAIL_PX)
        # a JPEG decodes at 1/8 scale (both sides still >= 96), a PNG whole
        assert img.size == ((200, 100) if fmt == "JPEG" else (1600, 800))
        url = thumbnail(img)
        assert url.startswith(THUMBNAIL_PREFIX) and len(url) < 4000
        small = Image.open(io.BytesIO(base64.b64decode(url.removeprefix(THUMBNAIL_PREFIX))))
        assert small.format == "JPEG" and small.size == (96, 48)
        assert small.getpixel((48, 24))[0] > 150  # the same picture
    with pytest.raises(ImageTooLargeError):  # the limits hold in draft mode too
        bomb = io.BytesIO()
        Image.new("RGB", (12000, 12000)).save(bomb, "JPEG")
        decode_image(bomb.getvalue(), spec, "bomb", draft=THUMBNAIL_PX)
