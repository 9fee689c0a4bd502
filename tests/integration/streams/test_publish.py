"""crossroute publish on the real broker: documents → events on their topics, keyed tenant/id, in
order, images inline, deletions, feedback; bad lines are file:line errors and nothing is sent."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from streams.devstack import DevStack
from streams.events import (
    ArticleUpserted,
    FeedbackRecorded,
    ProductDeleted,
    ProductUpserted,
    TicketCreated,
    WarrantyPolicyDeleted,
    WarrantyPolicyUpserted,
    decode_event,
)
from streams.settings import TopicSettings
from tests.conftest import require_shared_data
from tests.unit.test_cli import run_cli


def consume_all(stack: DevStack, topic: str, partitions: int = 3) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        stack.kafka_config(**{"group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: list[tuple[bytes, bytes]] = []
        idle = 0
        while idle < 5:
            msg = consumer.poll(1.0)
            if msg is None:
                idle += 1
                continue
            assert msg.error() is None, msg.error()
            out.append((msg.key(), msg.value()))
        return out
    finally:
        consumer.close()


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli_env(stack: DevStack) -> dict[str, str]:
    """CLI environment for the session broker, with topics under a fresh prefix."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap(),
        "CROSSROUTE_TOPICS__PREFIX": f"p{uuid.uuid4().hex[:8]}.",
    }


def test_publish_documents_tickets_deletions_and_feedback(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    env = cli_env(dev_stack)
    prefix = env["CROSSROUTE_TOPICS__PREFIX"]
    topics = TopicSettings(prefix=prefix)
    image = sorted((require_shared_data() / "photo-routing" / "images").iterdir())[0]
    (tmp_path / "img.jpg").write_bytes(image.read_bytes())
    big = tmp_path / "big.png"  # over the broker's default 1 MB message limit
    big.write_bytes(b"\x89PNG" + os.urandom(1_500_000))
    products = write_jsonl(
        tmp_path / "products.jsonl",
        [
            {"id": "sku-1", "tenant": "acme", "title": "Shoe", "category": "shoes",
             "image": {"uri": "img.jpg"}, "source_version": 5},
            {"id": "sku-1", "tenant": "acme", "title": "Shoe v2", "category": "shoes",
             "image": {"uri": "big.png"}, "source_version": 6},
            {"id": "sku-2", "tenant": "acme", "title": "Hat", "category": "hats"},
        ],
    )  # fmt: skip
    out = run_cli(
        "publish", "products", str(products), "--inline-images", "--source-version", "3",
        env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "3 delivered, 0 failed" in out.stdout
    articles = write_jsonl(
        tmp_path / "a.jsonl", [{"id": "a1", "tenant": "acme", "title": "Returns", "body": "How to"}]
    )
    assert run_cli("publish", "articles", str(articles), env=env, timeout=60).returncode == 0
    deletes = write_jsonl(
        tmp_path / "d.jsonl", [{"tenant": "acme", "id": "sku-2", "source_version": 9}]
    )
    assert run_cli("publish", "products", str(deletes), "--delete", env=env).returncode == 0
    tickets = write_jsonl(
        tmp_path / "t.jsonl",
        [{"id": "t1", "tenant": "acme", "text": "my shoe broke", "photo": {"uri": "img.jpg"}}],
    )
    assert run_cli("publish", "tickets", str(tickets), "--inline-images", env=env).returncode == 0
    feedback = write_jsonl(
        tmp_path / "f.jsonl",
        [{"tenant_id": "acme", "ticket_id": "t1", "space_id": "sp-x", "action": "resolved",
          "doc_id": "a1"}],
    )  # fmt: skip
    assert run_cli("publish", "feedback", str(feedback), env=env).returncode == 0

    product_msgs = consume_all(dev_stack, topics.name("products"))
    events = [(k, decode_event(v)) for k, v in product_msgs]
    sku1 = [e for k, e in events if k == b"acme/sku-1"]
    assert [e.source_version for e in sku1] == [5, 6]  # one partition, in order
    assert all(isinstance(e, ProductUpserted) and e.product.image.data for e in sku1)  # type: ignore[union-attr]
    sku2 = [e for k, e in events if k == b"acme/sku-2"]
    assert [type(e) for e in sku2] == [ProductUpserted, ProductDeleted]
    assert [e.source_version for e in sku2] == [3, 9]
    (article,) = [decode_event(v) for _, v in consume_all(dev_stack, topics.name("articles"))]
    assert isinstance(article, ArticleUpserted) and article.source_version > 10**12  # now, in ms
    (ticket,) = [decode_event(v) for _, v in consume_all(dev_stack, topics.name("tickets"))]
    assert isinstance(ticket, TicketCreated) and ticket.ticket.photo is not None
    assert ticket.ticket.photo.data == image.read_bytes()
    (fb,) = [decode_event(v) for _, v in consume_all(dev_stack, topics.name("feedback"))]
    assert isinstance(fb, FeedbackRecorded) and fb.action == "resolved"


def test_warranty_policies_under_their_name_and_the_old_one(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    """`publish warranty_policies` (the topic role) and `publish policies` (its name before) both
    put policies on the warranty-policies topic."""
    env = cli_env(dev_stack)
    topics = TopicSettings(prefix=env["CROSSROUTE_TOPICS__PREFIX"])
    rows = [{"id": "wp-1", "tenant": "acme", "title": "Returns", "body": "30 days"}]
    policies = write_jsonl(tmp_path / "p.jsonl", rows)
    out = run_cli("publish", "warranty_policies", str(policies), "--source-version", "1", env=env)
    assert out.returncode == 0 and "1 delivered, 0 failed" in out.stdout, out.stderr
    out = run_cli(
        "publish", "policies", str(policies), "--delete", "--source-version", "2", env=env
    )
    assert out.returncode == 0, out.stderr
    assert (
        topics.name("warranty_policies") == env["CROSSROUTE_TOPICS__PREFIX"] + "warranty-policies"
    )
    events = [
        (k, decode_event(v)) for k, v in consume_all(dev_stack, topics.name("warranty_policies"))
    ]
    assert [(k, type(e), e.source_version) for k, e in events] == [  # type: ignore[union-attr]
        (b"acme/wp-1", WarrantyPolicyUpserted, 1),
        (b"acme/wp-1", WarrantyPolicyDeleted, 2),
    ]


def test_bad_lines_are_one_line_errors_and_nothing_is_sent(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    env = cli_env(dev_stack)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"id": "a1", "tenant": "acme", "title": "ok", "body": "fine"}) + "\n\n"
        + json.dumps({"id": "a2", "tenant": "ACME", "title": "x", "body": "y"}) + "\n"
    )  # fmt: skip
    out = run_cli("publish", "articles", str(bad), env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{bad}:3: tenant" in out.stderr.replace("\n", "")
    assert run_cli("publish", "nope", str(bad), env=env).returncode == 2
    missing = run_cli("publish", "products", str(tmp_path / "none.jsonl"), env=env)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    image_missing = tmp_path / "m.jsonl"
    write_jsonl(
        image_missing,
        [
            {
                "id": "s",
                "tenant": "acme",
                "title": "t",
                "category": "c",
                "image": {"uri": "gone.jpg"},
            }
        ],
    )
    out = run_cli("publish", "products", str(image_missing), "--inline-images", env=env)
    assert out.returncode == 2 and "m.jsonl:1: cannot read image" in out.stderr.replace("\n", "")
