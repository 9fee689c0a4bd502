"""Bad input at the edges of the worker, on the real broker and Redis: 10,000 fuzzed messages on every
input topic (random bytes, truncated JSON, wrong and future ``schema_version``, huge fields, invalid
UTF-8, random JSON, unknown types, events on the wrong topic or not inputs at all, a tenant not
served, image bombs and SVG/TIFF disguised as JPEG in products, media and tickets, feedback about
unknown tickets) with good articles among them. Every bad message lands in the dead letters with its
reason and its source offset, every good one is indexed, and the worker keeps running."""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from PIL import Image

from router.schemas import Article, Media, Product, RoutingDecision, Ticket
from streams.events import (
    ArticleUpserted,
    FeedbackRecorded,
    MediaUploaded,
    ProductUpserted,
    RoutingDecided,
    TicketCreated,
    encode_event,
)
from tests.integration.streams.test_worker import WorkerEnv, wait_for
from tests.integration.streams.test_worker import deployment as deployment  # the fixture

N_BAD = 10_000
GOOD_EVERY = 50
INPUTS = ("products", "articles", "warranty_policies", "media", "tickets", "feedback")
Fuzz = tuple[str, bytes, str]  # (topic role, value, the reason the dead letter must carry)


def _png_bomb(side: int = 60_000) -> bytes:
    """A valid PNG header claiming side x side pixels (a decompression bomb's signature)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\x00" * 64)  # fmt: skip


def _tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, "TIFF")
    return buf.getvalue()


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="9999" height="9999"><script>alert(1)</script></svg>'
IMAGES = {"bomb": _png_bomb(), "svg": SVG, "tiff": _tiff()}


def _inline(data: bytes) -> dict[str, str]:
    return {"data": base64.b64encode(data).decode(), "content_type": "image/jpeg"}


def _valid(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    """A valid input event (as JSON) and its topic role."""
    tenant = "acme"
    choice = rng.randrange(4)
    if choice == 0:
        e: Any = ArticleUpserted(source_version=1, article=Article(
            id=f"f{i}", tenant=tenant, title="Fuzz", body="body"))  # fmt: skip
        role = "articles"
    elif choice == 1:
        e = ProductUpserted(source_version=1, product=Product(
            id=f"f{i}", tenant=tenant, title="Shoe", category="shoes"))  # fmt: skip
        role = "products"
    elif choice == 2:
        e = TicketCreated(ticket=Ticket(id=f"f{i}", tenant=tenant, text="help"))
        role = "tickets"
    else:
        e = FeedbackRecorded(tenant_id=tenant, ticket_id=f"f{i}", space_id="sp-x", action="clicked")
        role = "feedback"
    return role, json.loads(encode_event(e))


def fuzz(rng: random.Random, i: int) -> Fuzz:
    """One bad message of kind ``i % 14``."""
    kind = i % 14
    role, event = _valid(rng, i)
    if kind == 0:  # random bytes, often invalid UTF-8
        return rng.choice(INPUTS), rng.randbytes(rng.randint(0, 400)), "invalid_event"
    if kind == 1:  # truncated JSON
        raw = json.dumps(event).encode()
        return role, raw[: rng.randint(1, len(raw) - 1)], "invalid_event"
    if kind == 2:  # a wrong or future schema_version
        event["schema_version"] = rng.choice([0, 2, 999, "1", None, -1, 1.5])
        return role, json.dumps(event).encode(), "invalid_event"
    if kind == 3:  # a huge field
        event[rng.choice(["event_id", "type", "huge"])] = "x" * rng.randint(70, 300_000)
        return role, json.dumps(event).encode(), "invalid_event"
    if kind == 4:  # invalid UTF-8 inside a string
        raw = json.dumps(event).encode()
        cut = raw.index(b'"type"') + 1
        return role, raw[:cut] + b"\xff\xfe" + raw[cut:], "invalid_event"
    if kind == 5:  # random JSON
        junk = {str(rng.random()): [rng.random(), None, "x" * rng.randint(0, 9)]}
        return rng.choice(INPUTS), json.dumps(rng.choice([junk, [junk], 7, "s", None])).encode(), "invalid_event"  # fmt: skip
    if kind == 6:  # an unknown type
        event["type"] = rng.choice(["product.exploded", "", "ticket.created.v9"])
        return role, json.dumps(event).encode(), "invalid_event"
    if kind == 7:  # a tenant not served
        for k in ("article", "product", "ticket"):
            if k in event:
                event[k]["tenant"] = "globex"
        if "tenant_id" in event:
            event["tenant_id"] = "globex"
        return role, json.dumps(event).encode(), "unknown_tenant"
    if kind == 8:  # a valid event on another input topic
        other = rng.choice([r for r in INPUTS if r != role and r != "warranty_policies"])
        return other, json.dumps(event).encode(), "unexpected_event"
    if kind == 9:  # an output of the worker on an input topic
        return "tickets", encode_event(_decided(i)), "unexpected_event"
    if kind in (10, 11, 12):  # image bombs, SVG and TIFF disguised as JPEG
        image = IMAGES[("bomb", "svg", "tiff")[kind - 10]]
        where = rng.randrange(3)
        if where == 0:
            p = Product(id=f"f{i}", tenant="acme", title="Shoe", category="shoes")
            e = json.loads(encode_event(ProductUpserted(source_version=1, product=p)))
            e["product"]["image"] = _inline(image)
            return "products", json.dumps(e).encode(), "bad_input"
        if where == 1:
            m = Media(id=f"f{i}", tenant="acme", media_kind="photo", image={"data": b"x"})  # type: ignore[arg-type]
            e = json.loads(encode_event(MediaUploaded(source_version=1, media=m)))
            e["media"]["image"] = _inline(image)
            return "media", json.dumps(e).encode(), "bad_input"
        t = json.loads(
            encode_event(TicketCreated(ticket=Ticket(id=f"f{i}", tenant="acme", text="it broke")))
        )
        t["ticket"]["photo"] = _inline(image)
        return "tickets", json.dumps(t).encode(), "bad_ticket"
    # feedback that resolves a ticket nobody routed
    fb = FeedbackRecorded(tenant_id="acme", ticket_id=f"never-{i}", space_id="sp-x",
                          action="resolved", doc_id="a1")  # fmt: skip
    return "feedback", encode_event(fb), "unknown_ticket"


def _decided(i: int) -> RoutingDecided:
    return RoutingDecided(decision=RoutingDecision(
        ticket_id=f"f{i}", tenant="acme", space_id="sp-x", queue="auto", threshold=0.3,
        decided_at=datetime.now(UTC),
    ))  # fmt: skip


def test_ten_thousand_bad_messages_are_dead_lettered_and_the_good_indexed(
    deployment: WorkerEnv, redis_client: redis.Redis, embedder: Any
) -> None:
    env = deployment
    env.env["CROSSROUTE_WORKER__BATCH_SIZE"] = "64"
    rng = random.Random(20261204)
    bad = [fuzz(rng, i) for i in range(N_BAD)]
    good = [
        ArticleUpserted(source_version=1, article=Article(
            id=f"good-{i}", tenant="acme", title=f"Good article {i}", body="A real answer."))
        for i in range(N_BAD // GOOD_EVERY)
    ]  # fmt: skip
    env.start()
    wait_for(
        lambda: f"worker {env.env['CROSSROUTE_WORKER__GROUP_ID']}:" in env.log(), "start", 180, env
    )

    sent: dict[tuple[str, int, int], str] = {}  # (topic, partition, offset) → expected reason
    errors: list[str] = []

    def on_delivery(reason: str | None) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            elif reason is not None:
                sent[(msg.topic(), msg.partition(), msg.offset())] = reason

        return done

    producer = Producer(env.stack.kafka_config(**{"message.max.bytes": 1_000_000, "linger.ms": 20}))
    started = time.monotonic()
    for i, (role, value, reason) in enumerate(bad):
        key = uuid.uuid4().hex.encode()
        producer.produce(env.topics.name(role), value, key, on_delivery=on_delivery(reason))
        if i % GOOD_EVERY == 0:
            g = good[i // GOOD_EVERY]
            producer.produce(env.topics.name("articles"), encode_event(g), g.key,
                             on_delivery=on_delivery(None))  # fmt: skip
        producer.poll(0)
    assert producer.flush(60) == 0 and errors == [], errors[:3]
    assert len(sent) == N_BAD

    index = env.index(redis_client, embedder)
    wait_for(lambda: index.exists() and index.count("acme") >= len(good), "good articles", 600, env)
    letters = dead_letters(env, N_BAD, timeout=600)
    took = time.monotonic() - started
    got: dict[tuple[str, int, int], str] = {}
    for msg in letters:
        h = {k: (v or b"").decode(errors="replace") for k, v in msg.headers() or []}
        assert h.get("crossroute.error"), h
        got[(h["crossroute.source.topic"], int(h["crossroute.source.partition"]),
             int(h["crossroute.source.offset"]))] = h["crossroute.error.reason"]  # fmt: skip
    missing = sent.keys() - got.keys()
    assert not missing, f"{len(missing)} bad messages not dead-lettered, e.g. {sorted(missing)[:3]}"
    wrong = {k: (sent[k], got[k]) for k in sent if got[k] != sent[k]}
    assert not wrong, Counter(wrong.values()).most_common(5)
    assert len(letters) == N_BAD  # none twice
    assert all(index.get("acme", f"good-{i}") is not None for i in range(len(good)))
    assert all(p.poll() is None for p in env.procs), env.log()[-3000:]  # still running
    print(
        f"\n{N_BAD} bad + {len(good)} good messages: all handled in {took:.0f} s "
        f"({(N_BAD + len(good)) / took:.0f} messages/s); reasons {dict(Counter(sent.values()))}"
    )


def dead_letters(env: WorkerEnv, n: int, timeout: float) -> list[Any]:
    topic = env.topics.name("dead_letters")
    consumer = Consumer(env.stack.kafka_config(**{"group.id": uuid.uuid4().hex}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            out += [m for m in consumer.consume(500, 1.0) if m.error() is None]
        if len(out) >= n:  # anything more (a duplicate) would arrive now
            out += [m for m in consumer.consume(500, 3.0) if m.error() is None]
        return out
    finally:
        consumer.close()
