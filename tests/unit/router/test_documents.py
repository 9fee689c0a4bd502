"""Dataset corpus rows → the domain documents they stand for (what `crossroute index` indexes)."""

from __future__ import annotations

from models.eval.dataset import CorpusDoc
from router.documents import corpus_document, entity_id
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
