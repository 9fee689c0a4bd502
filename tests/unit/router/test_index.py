"""The index's reply parsing and query escaping without Redis: a raw FT.SEARCH reply gives the same
hits in RESP3 (a map) and RESP2 (a flat array), vectors included; TAG escaping backslashes exactly
the punctuation RediSearch reserves. On the real Redis: ``tests/integration/router``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.exceptions import SpaceMismatchError
from router.exceptions import RouterError
from router.index import _TAG_SPECIAL, Pending, _exemplars, _hits, escape_tag

SPACE = "sp-test"
VEC = np.arange(4, dtype="<f4")


def fields(**extra: bytes) -> dict[bytes, bytes]:
    base = {
        b"entity_id": b"kb-1",
        b"kind": b"article",
        b"tenant": b"acme",
        b"source_version": b"3",
        b"space_id": SPACE.encode(),
        b"category": b"shoes|boots",
        b"distance": b"0.25",
    }
    return {**base, **{k.encode(): v for k, v in extra.items()}}


def resp3(*rows: dict[bytes, bytes]) -> dict[bytes, object]:
    return {
        b"attributes": [],
        b"total_results": len(rows),
        b"format": b"STRING",
        b"results": [
            {b"id": b"idx:doc:acme:" + r[b"entity_id"], b"extra_attributes": r, b"values": []}
            for r in rows
        ],
        b"warning": [],
    }


def resp2(*rows: dict[bytes, bytes]) -> list[object]:
    out: list[object] = [len(rows)]
    for r in rows:
        out += [b"idx:doc:acme:" + r[b"entity_id"], [x for kv in r.items() for x in kv]]
    return out


@pytest.mark.parametrize("shape", [resp3, resp2])
def test_a_knn_reply_parses_the_same_in_both_protocols(shape: object) -> None:
    rows = [
        fields(vector=VEC.tobytes(), title=b"Boots", extra=b'{"url":"u"}'),
        fields(entity_id=b"fb-1", kind=b"exemplar", parent=b"kb-1", category=b"_any"),
    ]
    first, second = _hits(shape(*rows), SPACE)  # type: ignore[operator]
    assert (first.id, first.kind, first.score, first.tenant, first.source_version) == (
        "kb-1", "article", 0.75, "acme", 3,
    )  # fmt: skip
    assert first.title == "Boots" and first.payload == {"url": "u"} and first.parent is None
    assert first.categories == ("shoes", "boots") and first.vector is not None
    assert first.vector.tolist() == VEC.tolist()
    assert second.target == "kb-1" and second.vector is None and second.categories == ()
    assert second.title == "" and second.payload == {}
    assert _hits(shape(), SPACE) == []  # type: ignore[operator]


def test_a_hit_of_another_space_is_refused() -> None:
    with pytest.raises(SpaceMismatchError):
        _hits(resp3(fields(space_id=b"sp-other")), SPACE)


@pytest.mark.parametrize("shape", [resp3, resp2])
def test_exemplars_come_with_their_vectors(shape: object) -> None:
    rows = [
        {b"entity_id": b"fb-1", b"parent": b"kb-1", b"vector": VEC.tobytes()},
        {b"entity_id": b"fb-2", b"parent": b"kb-2"},  # no vector: left out
    ]
    found = _exemplars(shape(*rows))  # type: ignore[operator]
    assert [(p, v.tolist()) for p, v in found] == [("kb-1", VEC.tolist())]


def test_a_pending_read_has_no_value_before_its_batch_ran() -> None:
    pending = Pending(int)
    with pytest.raises(RouterError):
        _ = pending.value
    pending.fill(b"7")
    assert pending.value == 7 and Pending.of([1]).value == [1]


@given(st.text(alphabet=st.sampled_from([*_TAG_SPECIAL, "a", "Z", "0", "_", "é", "\n"])))
def test_tag_escaping_backslashes_each_reserved_character(value: str) -> None:
    assert escape_tag(value) == "".join("\\" + c if c in _TAG_SPECIAL else c for c in value)
