"""The demo's decisions table as a user sees it in a plain 80-column terminal (no TTY)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from router.schemas import RoutedTarget, RoutingDecision
from streams.demo import DemoRun, decisions_table, demo_world
from streams.events import RoutingDecided


def _decided(ticket_id: str, doc_id: str, score: float, queue: str = "auto") -> RoutingDecided:
    target = RoutedTarget(doc_id=doc_id, kind="article", score=score, evidence=("text", "photo"))
    decision = RoutingDecision(
        ticket_id=ticket_id, tenant="demo", space_id="sp-test", queue=queue,  # type: ignore[arg-type]
        threshold=0.3, targets=(target,), decided_at=datetime.now(UTC),
    )  # fmt: skip
    return RoutingDecided(decision=decision)


def _render(run: DemoRun, width: int = 80) -> list[str]:
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False, color_system=None).print(
        decisions_table(run)
    )
    return buffer.getvalue().splitlines()


def test_table_is_readable_in_80_columns() -> None:
    world = demo_world(1)
    decisions = {
        "t-1": _decided("t-1", "kb-reset-password", 0.71),
        "t-2": _decided("t-2", "kb-payment-failed", 0.52),  # a wrong one
        "t-3": _decided("t-3", "kb-payment-failed", 0.64),
        "t-5": _decided("t-5", "kb-return-item", 0.12, queue="human"),
        "t-6": RoutingDecided(
            decision=_decided("t-6", "wp-electronics", 0.64).decision.model_copy(
                update={
                    "targets": (
                        RoutedTarget(
                            doc_id="wp-electronics",
                            kind="warranty_policy",
                            score=0.64,
                            evidence=("catalog", "text"),
                            via_product="sku-headset",
                        ),
                    )
                }
            )
        ),
    }  # t-4 and t-7 got no decision
    lines = _render(DemoRun(world, "sp-test", decisions))
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.startswith("│ t-")]
    assert [r.split("│")[1].strip() for r in rows] == [f"t-{i}" for i in range(1, 8)]
    # the ticket text wraps by words into a column of at least 20 characters, never one word a line
    cell = rows[0].split("│")[2]
    assert len(cell) - 2 >= 20 and cell.strip().startswith("I can't log in"), cell
    text = " ".join(line.split("│")[2].strip() for line in lines if line.count("│") > 3)
    assert "I can't log in, I forgot my password" in text
    # ids and scores stay whole on their row
    assert "kb-reset-password" in rows[0] and "0.710" in rows[0] and "✓" in rows[0]
    assert "kb-payment-failed" in rows[1] and "✗" in rows[1]
    assert "(no decision)" in rows[3] and "✗" in rows[3]
    caption = " ".join(lines[lines.index(next(r for r in lines if r.startswith("└"))) + 1 :])
    assert "t-2 → kb-track-order" in caption and "t-4 → wp-footwear" in caption
    assert "human queue" in rows[4] and "✓" in rows[4]
    # a decision through the catalog names the product the photo looks like
    t6 = lines[lines.index(rows[5]) : lines.index(rows[6])]
    evidence = " ".join(line.split("│")[5].strip() for line in t6)
    assert "photo looks like sku-headset" in evidence and "✓" in rows[5], t6


def test_wrong_decisions_are_named_missing_ones_apart() -> None:
    world = demo_world(1)
    right = {
        t.ticket.id: _decided(t.ticket.id, world.expected[t.ticket.id] or "kb-x", 0.5)
        if world.expected[t.ticket.id]
        else _decided(t.ticket.id, "kb-x", 0.1, queue="human")
        for t in world.tickets
    }
    assert DemoRun(world, "sp", right).wrong == []
    wrong = {**right, "t-2": _decided("t-2", "kb-payment-failed", 0.5)}
    wrong.pop("t-4")
    run = DemoRun(world, "sp", wrong)
    assert run.wrong == ["t-2 → kb-track-order"] and run.missing == ["t-4"]
