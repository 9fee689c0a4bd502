"""The console's pipeline data: the worker's metrics turned into an hour of series, and dead-letter
records turned into what the page shows (the real scrape and topic: test_console_ops.py)."""

from __future__ import annotations

import time
from pathlib import Path

from models.cli import keep_report
from streams.operations import (
    PAYLOAD_PREVIEW,
    MetricsHistory,
    dead_letter,
    kept_reports,
    parse_metrics,
    report_path,
)

EXPOSITION = """\
# TYPE crossroute_consumer_lag gauge
crossroute_consumer_lag{{partition="0",topic="p.tickets"}} {lag0}
crossroute_consumer_lag{{partition="1",topic="p.tickets"}} 2.0
# TYPE crossroute_events_in counter
crossroute_events_in_total{{topic="p.tickets"}} {events}
crossroute_events_in_total{{topic="p.articles"}} 10.0
# TYPE crossroute_dead_letters counter
crossroute_dead_letters_total{{reason="invalid_event"}} {dead}
# TYPE crossroute_stale_writes counter
crossroute_stale_writes_total 3.0
# TYPE crossroute_freshness_seconds histogram
crossroute_freshness_seconds_sum {fsum}
crossroute_freshness_seconds_count {fcount}
"""


def exposition(lag0: float, events: float, dead: float, fsum: float, fcount: float) -> str:
    return EXPOSITION.format(lag0=lag0, events=events, dead=dead, fsum=fsum, fcount=fcount)


def test_a_scrape_sums_lag_per_topic_and_reads_the_counters() -> None:
    s = parse_metrics(exposition(5, 90, 1, 4.0, 8), at=100.0)
    assert s.lag == {"p.tickets": 7.0} and s.events_in == 100.0
    assert s.dead_letters == {"invalid_event": 1.0} and s.stale_writes == 3.0
    assert (s.freshness_sum, s.freshness_count) == (4.0, 8.0)


def test_the_history_derives_rates_per_interval_and_survives_a_restart_and_an_outage() -> None:
    pages = iter([exposition(5, 90, 1, 4.0, 8), exposition(0, 190, 2, 10.0, 10),
                  exposition(0, 20, 0, 0.0, 0)])  # fmt: skip
    history = MetricsHistory("http://w/metrics", every_s=10, fetch=lambda _: next(pages))
    for t in (0.0, 10.0, 20.0):
        history.scrape(now=t)
    series = history.series()
    first, restarted = series["points"]
    assert first["events_per_s"] == 10.0 and first["freshness_s"] == 3.0  # 100 events, 6 s / 2
    assert restarted["events_per_s"] is None and restarted["freshness_s"] is None  # counters reset
    assert series["lag"] == {"p.tickets": 2.0} and series["error"] is None

    def down(_: str) -> str:
        raise ConnectionError("refused")

    history._fetch = down
    history.scrape(now=30.0)
    assert "refused" in history.series()["error"] and len(history.series()["points"]) == 2
    assert MetricsHistory(None).series()["points"] == []  # no metrics exported: nothing scraped


def test_the_history_keeps_one_hour() -> None:
    history = MetricsHistory("u", every_s=10, fetch=lambda _: exposition(0, 1, 0, 0, 0))
    for t in range(500):
        history.scrape(now=t * 10.0)
    assert len(history.samples) == 361


def test_a_dead_letter_keeps_its_reason_source_and_payload_as_text() -> None:
    hostile = b"<script>alert(1)</script>\xff" + b"x" * PAYLOAD_PREVIEW
    headers = [("trace", b"t-1"), ("crossroute.error.reason", b"invalid_event"),
               ("crossroute.error", b"not JSON"), ("crossroute.source.topic", b"p.tickets"),
               ("crossroute.source.partition", b"2"), ("crossroute.source.offset", b"41")]  # fmt: skip
    d = dead_letter(0, 7, 1_700_000_000_000, b"acme/t-9", hostile, headers)
    assert (d.tenant, d.key, d.reason, d.error) == ("acme", "acme/t-9", "invalid_event", "not JSON")
    assert (d.source_topic, d.source_partition, d.source_offset) == ("p.tickets", 2, 41)
    assert d.payload.startswith("<script>alert(1)</script>\ufffd") and d.truncated
    assert len(d.payload.encode()) <= PAYLOAD_PREVIEW + 2 and d.payload_bytes == len(hostile)
    bare = dead_letter(1, 0, None, None, None, [("crossroute.source.offset", b"nan")])
    assert bare.tenant is None and bare.reason == "unknown" and bare.source_offset is None
    assert bare.payload == "" and not bare.truncated
    assert dead_letter(0, 0, None, b"no-slash", b"{}", []).tenant is None


def test_kept_eval_reports_are_listed_newest_first_and_served_only_by_safe_names(
    tmp_path: Path,
) -> None:
    space = "sp-0123456789abcdef0123"
    for dataset, recall in (("myntra/dev", 0.6), ("banking77", 0.8)):
        result = {"dataset": dataset, "model": {"space_id": space}, "n_queries": 10,
                  "metrics": {"recall@10": recall, "note": "x"}}  # fmt: skip
        kept = keep_report(tmp_path, result, f"<html>{dataset}</html>")
        assert kept.parent == tmp_path / space and kept.read_text() == f"<html>{dataset}</html>"
        time.sleep(0.01)
    reports = kept_reports(tmp_path, space)
    assert [r["name"] for r in reports] == ["banking77", "myntra_dev"]  # newest first
    assert reports[1]["dataset"] == "myntra/dev" and reports[1]["metrics"] == {"recall@10": 0.6}
    assert kept_reports(tmp_path, "sp-ffffffffffffffffffff") == [] == kept_reports(None, space)
    (tmp_path / space / "broken.json").write_text("{not json")
    assert len(kept_reports(tmp_path, space)) == 2  # an unreadable one is skipped
    assert report_path(tmp_path, space, "banking77") == tmp_path / space / "banking77.html"
    for space_id, name in ((space, "../banking77"), (space, "nope"), ("sp-../x", "banking77"),
                           (space, ".hidden"), (space, "a/b")):  # fmt: skip
        assert report_path(tmp_path, space_id, name) is None
