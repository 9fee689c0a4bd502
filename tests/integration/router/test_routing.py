"""Ticket routing on the real Redis index with the real default bundle: text, screenshot (OCR), photo,
filters, tenant isolation, abstention, calibration per space, and mixed-space refusal."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from models.embedder import Embedder
from models.exceptions import SpaceMismatchError
from router.documents import Indexer, resolve_image
from router.exceptions import RequestError
from router.index import SpaceInfo, VectorIndex
from router.routing import Calibration, Router, load_calibration, save_calibration
from router.schemas import ImageRef, Product, Ticket
from router.settings import IndexSettings, RoutingSettings
from tests.integration.router.conftest import catalog_products, drawn, screenshot


def test_text_ticket_routes_to_the_matching_article(router: Router) -> None:
    d = router.route(Ticket(id="t1", tenant="acme", text="I forgot my password and cannot log in"))
    assert d.queue == "auto" and d.space_id == router.space_id
    assert d.targets[0].doc_id == "acme-reset-password" and d.targets[0].evidence == ("text",)
    assert d.targets[0].score >= d.threshold
    assert [t.score for t in d.targets] == sorted((t.score for t in d.targets), reverse=True)
    assert all(t.kind in ("article", "warranty_policy") for t in d.targets)  # never products


def test_screenshot_only_ticket_routes_through_ocr(router: Router) -> None:
    ticket = Ticket(
        id="t2",
        tenant="acme",
        screenshot=ImageRef(data=screenshot("Payment failed: gateway timeout")),
    )
    tv = router.embed_ticket(ticket)
    assert tv.ocr_text is not None and "timeout" in tv.ocr_text.lower()
    assert set(tv.vectors) == {"screenshot_text", "screenshot_image"}
    d = router.decide(ticket, tv)
    assert d.targets[0].doc_id == "acme-payment-failed"
    assert "screenshot_text" in d.targets[0].evidence


def test_fusion_is_the_weighted_sum_of_modalities(router: Router) -> None:
    a, b = np.eye(router.embedder.dim, dtype=np.float32)[:2]
    fused = router.fuse({"text": a, "screenshot_image": b})
    w_text, w_image = router.settings.weights["text"], router.settings.weights["screenshot_image"]
    expected = (w_text * a + w_image * b) / np.hypot(w_text, w_image)
    assert np.allclose(fused, expected, atol=1e-6)
    zero = Router(router.embedder, router.index, RoutingSettings(threshold=0.3, weights={}))
    with pytest.raises(RequestError, match="weight 0"):
        zero.fuse({"text": a})


def test_product_category_and_tenant_filters(router: Router) -> None:
    shoes = router.route(
        Ticket(id="t3", tenant="acme", text="warranty repair", product_category="shoes"), k=10
    )
    ids = {t.doc_id for t in shoes.targets}
    assert "acme-shoe-warranty" in ids and "acme-laptop-warranty" not in ids
    assert {"acme-reset-password", "acme-track-order"} <= ids  # articles apply to every category
    other = router.route(Ticket(id="t4", tenant="globex", text="warranty repair"), k=10)
    assert other.targets and all(t.doc_id.startswith("globex-") for t in other.targets)
    nobody = router.route(Ticket(id="t5", tenant="initech", text="warranty repair"))
    assert nobody.targets == () and nobody.queue == "human"


def test_unrelated_ticket_goes_to_the_human_queue(router: Router) -> None:
    d = router.route(Ticket(id="t6", tenant="acme", text="which planets have rings?"))
    assert d.queue == "human" and d.abstained
    assert d.targets and d.targets[0].score < d.threshold  # suggestions stay visible to the human


def test_bad_images_are_request_errors(router: Router, tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="not an image"):
        router.route(Ticket(id="t7", tenant="acme", text="broken", photo=ImageRef(data=b"nope")))
    # the router never reads server files on behalf of a ticket unless given a media root
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    with pytest.raises(RequestError, match="inline"):
        router.route(Ticket(id="t8", tenant="acme", text="x", photo=ImageRef(uri=str(secret))))
    with pytest.raises(Exception, match="outside the media root"):
        resolve_image(ImageRef(uri="../secret.png"), "p", tmp_path / "media")


def test_threshold_comes_from_the_calibration_of_this_space(
    embedder: Embedder, index: VectorIndex, tmp_path: Path
) -> None:
    settings = RoutingSettings(calibration_dir=tmp_path)
    # until calibrated here, the threshold fitted on public data that came with the shipped head
    shipped = Router(embedder, index, settings)
    assert shipped.threshold_source == "shipped with head mined (fit on clinc150)"
    assert embedder.manifest.projection is not None
    assert shipped.threshold == embedder.manifest.projection.training["calibration"]["threshold"]
    cal = Calibration(
        space_id=embedder.space_id, threshold=0.42, dataset="clinc150", dataset_digest="x",
        precision=0.5, recall=0.5, f1=0.5, n_queries=10, created_at="2026-11-26T00:00:00Z",
    )  # fmt: skip
    save_calibration(tmp_path, cal.model_copy(update={"space_id": "sp-other", "threshold": 0.9}))
    assert Router(embedder, index, settings).threshold == shipped.threshold  # not this space's
    save_calibration(tmp_path, cal)
    routed = Router(embedder, index, settings)
    assert routed.threshold == 0.42 and "clinc150" in routed.threshold_source
    assert load_calibration(tmp_path, "sp-missing") is None


def test_a_router_refuses_an_index_of_another_space(
    embedder: Embedder, redis_client: redis.Redis
) -> None:
    other = VectorIndex(redis_client, SpaceInfo("sp-0000", embedder.dim), IndexSettings())
    with pytest.raises(SpaceMismatchError, match="sp-0000"):
        Router(embedder, other)
    with pytest.raises(SpaceMismatchError):
        Indexer(embedder, other)


def test_documents_with_bad_images_are_reported_not_indexed(
    embedder: Embedder, index: VectorIndex
) -> None:
    indexer = Indexer(embedder, index)
    good = Product(id="sku-2", tenant="acme", title="Blue shirt", category="shirts")
    bad = Product(
        id="sku-3", tenant="acme", title="Red shirt", category="shirts", image=ImageRef(data=b"x")
    )
    outcome = indexer.upsert([good, bad], [1, 1])
    assert outcome.result.written == 1
    assert [i for i, _ in outcome.failed] == [1] and "sku-3" in str(outcome.failed[0][1])
    assert index.get("acme", "sku-3") is None and index.get("acme", "sku-2") is not None


def test_resolved_tickets_vote_for_their_article(router: Router, embedder: Embedder) -> None:
    """The ``max`` rule: a target scores the best of its own hit and its exemplars' hits."""
    from router.schemas import Exemplar

    router = Router(
        embedder, router.index, router.settings.model_copy(update={"exemplar_rule": "max"})
    )
    text = "the courier left a card but nobody rang the bell"
    before = router.route(Ticket(id="t9", tenant="acme", text=text))
    indexer = Indexer(embedder, router.index)
    ex = Exemplar(id="ex-1", tenant="acme", text=text, target_id="acme-track-order")
    assert indexer.upsert([ex], [1]).result.written == 1
    after = router.route(Ticket(id="t10", tenant="acme", text=text))
    top = after.targets[0]
    assert top.doc_id == "acme-track-order" and top.exemplar_id == "ex-1"
    assert top.score == pytest.approx(1.0, abs=1e-4) and top.kind == "article"
    assert len({t.doc_id for t in after.targets}) == len(after.targets)  # one slot per document
    assert before.targets[0].score < top.score
    # the exemplar never crosses tenants, and dies with its target
    other = router.route(Ticket(id="t11", tenant="globex", text=text))
    assert all(t.exemplar_id is None for t in other.targets)
    indexer.delete([("acme", "acme-track-order", 2)])
    gone = router.route(Ticket(id="t12", tenant="acme", text=text), k=10)
    assert "acme-track-order" not in {t.doc_id for t in gone.targets}


def test_valid_photos_route_to_their_class(
    embedder: Embedder, redis_client: redis.Redis, shared_data: Path
) -> None:
    """Photo-only tickets (real customer photos of photo-routing's dev split) reach their clothing
    class through the shared space, far above the 0.1 of chance."""
    from models.eval.dataset import load_dataset
    from router.documents import corpus_document

    data = load_dataset(shared_data / "photo-routing")
    index = VectorIndex.for_manifest(
        redis_client, embedder.manifest, IndexSettings(namespace=f"p{uuid.uuid4().hex[:10]}")
    )
    index.create()
    try:
        docs = [corpus_document(row, "shop") for row in data.corpus]
        assert Indexer(embedder, index).upsert(docs, [1] * len(docs)).failed == []
        router = Router(embedder, index, RoutingSettings(threshold=-1.0))
        queries = sorted(data.queries, key=lambda q: q.id)[::8]  # 43 photos, every class
        hits = 0
        for q in queries:
            assert q.image is not None
            ticket = Ticket(
                id="t", tenant="shop", photo=ImageRef(data=(data.root / q.image).read_bytes())
            )
            top = router.route(ticket).targets[0]
            assert top.evidence == ("photo",)
            hits += top.doc_id in data.qrels[q.id]
        assert hits / len(queries) >= 0.75, f"{hits}/{len(queries)}"
    finally:
        index.drop()


def test_a_photo_identifies_the_product_and_its_category_decides(router: Router) -> None:
    """The same ambiguous words with two photos: each photo is matched to a catalog product, whose
    category leads to its own warranty policy, and the evidence names the product."""
    indexer = Indexer(router.embedder, router.index)
    products = catalog_products()
    assert indexer.upsert(products, [1, 1]).failed == []
    text = "It broke after three weeks. Is this covered?"
    for product, policy, kind, colour in (
        ("sku-boot", "acme-shoe-warranty", "shoes", (120, 72, 40)),
        ("sku-laptop", "acme-laptop-warranty", "laptops", (150, 150, 155)),
    ):
        photo = ImageRef(data=drawn(kind, colour, customer=True))
        d = router.route(Ticket(id="t13", tenant="acme", text=text, photo=photo))
        top = d.targets[0]
        assert d.queue == "auto" and top.doc_id == policy, d.targets
        assert top.evidence[0] == "catalog" and top.via_product == product
        assert all(t.kind != "product" for t in d.targets)
    # without the catalog step the photo is only a modality of the query
    plain = Router(
        router.embedder, router.index, router.settings.model_copy(update={"product_match": None})
    )
    d = plain.route(Ticket(id="t14", tenant="acme", text=text, photo=photo))
    assert all("catalog" not in t.evidence and t.via_product is None for t in d.targets)
    # the customer's own category wins over what the photo looks like
    d = router.route(
        Ticket(id="t15", tenant="acme", text=text, photo=photo, product_category="shoes")
    )
    assert all(t.via_product is None for t in d.targets)
    assert "acme-laptop-warranty" not in {t.doc_id for t in d.targets}


def test_escalated_tickets_send_their_neighbours_to_the_human_queue(
    router: Router, embedder: Embedder
) -> None:
    """An out-of-scope exemplar closer than every target wins over a score above the threshold;
    it is never a target, stays in its tenant and locale, and goes with a delete."""
    from router.index import HUMAN_QUEUE_PARENT
    from router.schemas import Exemplar

    text = "I forgot my password and cannot log in"
    before = router.route(Ticket(id="t13", tenant="acme", text=text))
    assert before.queue == "auto" and before.targets[0].doc_id == "acme-reset-password"
    indexer = Indexer(embedder, router.index)
    escalated = Exemplar(id="fb-t13", tenant="acme", text=text, target_kind="human")
    assert indexer.upsert([escalated], [5]).result.written == 1
    stored = router.index.get("acme", "fb-t13")
    assert stored is not None and stored["kind"] == "exemplar"
    assert stored["parent"] == HUMAN_QUEUE_PARENT and stored["category"] == "_any"
    after = router.route(Ticket(id="t14", tenant="acme", text=text, product_category="shoes"))
    assert after.queue == "human"
    assert after.targets and after.targets[0].score >= after.threshold  # the threshold alone: auto
    assert all(t.exemplar_id != "fb-t13" for t in after.targets)  # never a target itself
    assert after.targets[0].doc_id == "acme-reset-password"  # still the suggestion for the human
    # another tenant does not see it; a closer target (a resolved ticket's exemplar) still wins
    assert router.route(Ticket(id="t15", tenant="globex", text=text)).queue == "auto"
    resolved = Exemplar(
        id="fb-t17", tenant="acme", text=text + "!", target_id="acme-reset-password"
    )
    indexer.upsert([resolved], [1])
    by_max = Router(
        embedder, router.index, router.settings.model_copy(update={"exemplar_rule": "max"})
    )
    assert by_max.route(Ticket(id="t18", tenant="acme", text=text + "!")).queue == "auto"
    # by the prototype rule the target scores its centroid (article + exemplar), which the
    # escalated twin of the ticket still beats
    assert router.route(Ticket(id="t18", tenant="acme", text=text + "!")).queue == "human"
    indexer.delete([("acme", "fb-t13", 6), ("acme", "fb-t17", 2)])
    assert router.route(Ticket(id="t19", tenant="acme", text=text)).queue == "auto"


def test_the_prototype_rule_scores_the_centroid_of_a_target_and_all_its_exemplars(
    router: Router, embedder: Embedder
) -> None:
    """The default rule: a target scores the cosine with the normalised sum of its own vector and
    every exemplar it has (also those outside the nearest hits), as `crossroute eval` does."""
    from models.eval.decision import prototypes
    from router.index import Filters
    from router.schemas import Exemplar

    assert router.settings.exemplar_rule == "prototype"
    texts = ["the courier left a card but nobody rang the bell", "parcel says delivered, it is not"]
    exemplars = [
        Exemplar(id=f"ex-{i}", tenant="acme", text=t, target_id="acme-track-order")
        for i, t in enumerate(texts)
    ]
    assert Indexer(embedder, router.index).upsert(exemplars, [1, 1]).result.written == 2
    query = "nobody rang the bell, the courier just left a card"
    d = router.route(Ticket(id="t20", tenant="acme", text=query), k=10)
    top = d.targets[0]
    assert top.doc_id == "acme-track-order" and top.exemplar_id == "ex-0"
    stored = router.index.vectors("acme", ["acme-track-order", "ex-0", "ex-1"])
    proto = prototypes(
        stored["acme-track-order"][None, :],
        np.stack([stored["ex-0"], stored["ex-1"]]),
        np.array([0, 0]),
    )[0]
    q = embedder.embed_texts([query]).vectors[0]
    assert top.score == pytest.approx(float(proto @ q), abs=1e-5)
    found = router.index.exemplars_of(Filters(tenant="acme"), ["acme-track-order"])
    assert sorted(p for p, _ in found) == ["acme-track-order"] * 2
    assert router.index.exemplars_of(Filters(tenant="globex"), ["acme-track-order"]) == []
