"""The ingest and scale benchmarks on the real broker and Redis, with real worker processes: the
report's keys (docs/performance.md), the numbers that must hold whatever the machine (every event
indexed, the naive peer's vectors equal ours, time shares that add up, every freshness event seen),
and a run that leaves nothing behind (topics, index, keys)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from models.embedder import Embedder
from streams.bench import bench_restart, bench_scale
from streams.devstack import DevStack
from streams.exceptions import ConfigurationError
from streams.settings import WorkerSettings
from tests.conftest import require_shared_data

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(900)


def _env(stack: DevStack, bundle: Path, tmp: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CROSSROUTE_")},
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap(),
        "REDIS_URL": stack.redis_url(),
        "CROSSROUTE_MODEL__BUNDLE_DIR": str(bundle),
        "CROSSROUTE_STACK__STATE_DIR": str(tmp / "state"),
        "HF_HUB_OFFLINE": "1",
    }


OURS = re.compile(r"^bench[0-9a-f]{8}[.:-]")  # what a bench deployment names


def _leftovers(stack: DevStack, client: redis.Redis) -> tuple[list[str], list[str], list[str]]:
    """Topics, indexes and keys of bench deployments still there (topic deletion completes
    asynchronously in the cluster: waited for, up to 60 s)."""
    admin = AdminClient(stack.kafka_config())
    deadline = time.monotonic() + 60
    while True:
        topics = sorted(t for t in admin.list_topics(timeout=30).topics if OURS.match(t))
        if not topics or time.monotonic() > deadline:
            break
        time.sleep(1)
    listed = client.execute_command("FT._LIST")
    indexes = [i.decode() if isinstance(i, bytes) else str(i) for i in listed]
    keys = [k.decode() for k in client.scan_iter(match="bench*", count=1000)]
    return (
        topics,
        sorted(i for i in indexes if OURS.match(i)),
        sorted(k for k in keys if OURS.match(k)),
    )


def test_bench_ingest_quick_reports_efficiency_peer_and_freshness(
    dev_stack: DevStack, default_bundle: Path, redis_client: redis.Redis, tmp_path: Path
) -> None:
    data = require_shared_data()
    out = tmp_path / "ingest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "streams.main", "bench", "ingest", "--quick",
         "--data", str(data), "--json", str(out)],
        env=_env(dev_stack, default_bundle, tmp_path), cwd=REPO, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    full = json.loads(out.read_text())
    assert full["schema_version"] == 1 and full["quick"] is True
    assert full["machine"]["cpu_count"] == os.cpu_count()
    assert full["versions"]["redisvl"]
    report = full["ingest"]
    for kind, n in (("image", 384), ("text", 512)):
        r = report[kind]
        assert r["pipeline"]["events"] == n
        assert r["events_per_s"] > 0 and r["encoder_docs_per_s"] > 0
        assert (
            0
            < r["efficiency"]
            == pytest.approx(r["events_per_s"] / r["encoder_docs_per_s"], abs=0.01)
        )
        # the peer did the same job: its vectors are ours (torch vs ONNX of the same encoders)
        assert r["naive_peer"]["compared"] > 0 and r["naive_peer"]["vector_cosine_min"] > 0.999
        assert r["vs_naive_peer"] > 0
        assert sum(r["time_shares"].values()) == pytest.approx(1.0, abs=0.02)
        assert r["time_shares"]["encoders"] > 0.3  # what is left when the pipeline does its job
    assert report["image"]["time_shares"]["image_decode"] > 0
    assert [row["load"] for row in report["freshness"]] == [0.5, 0.9]
    for row in report["freshness"]:
        assert row["seen"] == row["events"] > 0
        assert 0 < row["p50"] <= row["p95"] <= row["p99"]
    assert report["freshness_ms"] == {
        "p50": report["freshness"][0]["p50"], "p95": report["freshness"][0]["p95"],
        "p99": report["freshness"][0]["p99"], "load": 0.5,
    }  # fmt: skip
    assert _leftovers(dev_stack, redis_client) == ([], [], [])


@pytest.fixture
def bench_env(
    dev_stack: DevStack, default_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Embedder:
    """The process environment of a bench command run here (the session's services, the default
    bundle, this checkout); returns the bundle's embedder."""
    for key, value in _env(dev_stack, default_bundle, tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)  # the workers run `python -m streams.main`
    return Embedder.load(default_bundle)


def test_bench_scale_runs_workers_in_one_group(
    bench_env: Embedder, dev_stack: DevStack, redis_client: redis.Redis, tmp_path: Path
) -> None:
    embedder = bench_env
    report = bench_scale(
        WorkerSettings(), embedder, require_shared_data(), 120, tmp_path, workers=(1, 2)
    )
    assert report["partitions"] == 6 and report["events"] == 120
    one, two = report["workers"]
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["per_worker_efficiency"] == 1.0
    assert one["events_per_s"] > 0 and two["events_per_s"] > 0
    assert two["per_worker_efficiency"] == pytest.approx(
        two["events_per_s"] / (2 * one["events_per_s"]), abs=0.01
    )
    assert _leftovers(dev_stack, redis_client) == ([], [], [])


def test_bench_restart_times_the_embedded_redis_coming_back_with_its_index(
    bench_env: Embedder,
    dev_stack: DevStack,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if dev_stack.redis_external:
        pytest.skip("the session's Redis is external (REDIS_URL): nothing here may restart it")
    embedder = bench_env
    monkeypatch.delenv("REDIS_URL")  # the session stack's embedded Redis, which the bench restarts
    s = dev_stack.settings
    monkeypatch.setenv("CROSSROUTE_STACK__STATE_DIR", str(s.state_dir))
    monkeypatch.setenv("CROSSROUTE_STACK__REDIS_PORT", str(s.redis_port))
    report = bench_restart(WorkerSettings(), embedder, require_shared_data(), 1500, tmp_path)
    assert report["documents"] == 1500
    assert 0 < report["restart_to_ping_s"] <= report["restart_to_indexed_s"]
    assert report["knn_after_restart_finds_itself"] is True
    assert _leftovers(dev_stack, redis_client)[1:] == ([], [])
    # external Redis: refused, with the reason
    monkeypatch.setenv("REDIS_URL", dev_stack.redis_url())
    with pytest.raises(ConfigurationError, match="embedded Redis"):
        bench_restart(WorkerSettings(), embedder, require_shared_data(), 10, tmp_path)
