"""The router's commands as a user runs them, on the real Redis and a real dataset: load a corpus
into the index of the bundle's space, promote it, calibrate, route from the terminal, evaluate
through Redis (HNSW recall vs exact), and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.devstack import DevStack
from tests.conftest import require_shared_data
from tests.unit.test_cli import run_cli


def test_index_route_calibrate_and_eval_from_the_cli(
    dev_stack: DevStack, default_bundle: Path, tmp_path: Path
) -> None:
    data = require_shared_data() / "stackfaq"
    env = {
        "REDIS_URL": dev_stack.redis_url(),
        "CROSSROUTE_MODEL__BUNDLE_DIR": str(default_bundle),
        "CROSSROUTE_INDEX__NAMESPACE": "clitest",
        "CROSSROUTE_ROUTING__CALIBRATION_DIR": str(tmp_path / "cal"),
        "HF_HUB_OFFLINE": "1",
    }
    missing = run_cli("route", "--text", "hello", env=env)
    assert missing.returncode == 1 and "no index or alias" in missing.stderr
    assert "Traceback" not in missing.stderr

    load = run_cli(
        "index", "load", str(data), "--tenant", "acme", "--promote", env=env, timeout=300
    )
    assert load.returncode == 0, load.stderr[-2000:]
    assert "clitest:live →" in load.stdout and "0 failed" in load.stdout
    info = run_cli("index", "info", "--json", env=env)
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["documents"] > 0 and described["hash_indexing_failures"] == 0

    first_query = json.loads((data / "queries.jsonl").read_text().splitlines()[0])
    expected = (data / "qrels.tsv").read_text().splitlines()[1].split("\t")
    assert expected[0] == first_query["_id"]
    routed = run_cli(
        "route", "--text", first_query["text"], "--tenant", "acme", "--k", "3", env=env, timeout=120
    )
    assert routed.returncode == 0, routed.stderr[-2000:]
    decision = json.loads(routed.stdout)
    assert decision["space_id"] == described["space_id"]
    assert expected[1] in [t["doc_id"] for t in decision["targets"]]

    no_oos = run_cli("calibrate", str(data), env=env, timeout=120)
    assert no_oos.returncode == 2 and "no out-of-scope queries" in no_oos.stderr

    out = tmp_path / "redis.json"
    ev = run_cli("eval", str(data), "--index", "redis", "--json", str(out), env=env, timeout=300)
    assert ev.returncode == 0, ev.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["retrieval"].startswith("redis HNSW")
    assert report["hnsw"]["recall@10_vs_exact"] >= 0.98
    exact = tmp_path / "exact.json"
    assert run_cli("eval", str(data), "--json", str(exact), env=env, timeout=300).returncode == 0
    assert report["metrics"]["recall@1"] == pytest.approx(
        json.loads(exact.read_text())["metrics"]["recall@1"], abs=0.01
    )
    refused = run_cli("index", "drop", "--yes", env=env)
    assert refused.returncode == 2 and "is live" in refused.stderr
    drop = run_cli("index", "drop", "--yes", "--force", env=env)
    assert drop.returncode == 0, drop.stderr
    spaces = run_cli("index", "spaces", "--json", env=env)
    assert json.loads(spaces.stdout)["deployment"]["live"] is None

    cal = run_cli("calibrate", str(data.parent / "clinc150"), env=env, timeout=300)
    assert cal.returncode == 0, cal.stderr[-2000:]
    stored = json.loads((tmp_path / "cal" / f"{described['space_id']}.json").read_text())
    assert stored["dataset"] == "clinc150" and 0 < stored["f1"] <= 1
    assert f"threshold {stored['threshold']:.4f}" in cal.stdout


def test_crossroute_api_serves_over_http(
    dev_stack: DevStack, default_bundle: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import REPO
    from tests.integration.conftest import free_port

    data = require_shared_data() / "stackfaq"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CROSSROUTE_")},
        "REDIS_URL": dev_stack.redis_url(),
        "CROSSROUTE_MODEL__BUNDLE_DIR": str(default_bundle),
        "CROSSROUTE_INDEX__NAMESPACE": "apitest",
        "CROSSROUTE_ROUTING__THRESHOLD": "0.3",
        "CROSSROUTE_API__PORT": str(port),
        "HF_HUB_OFFLINE": "1",
    }
    load = run_cli("index", "load", str(data), "--promote", env=env, timeout=300)
    assert load.returncode == 0, load.stderr[-2000:]
    log = (tmp_path / "api.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "api"], env=env, cwd=REPO, stdout=log, stderr=log
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "api.log").read_text()
                assert time.monotonic() < deadline, "API did not start"
                time.sleep(0.5)
        assert health.status_code == 200 and health.json()["threshold_source"] == "settings"
        assert "API keys required" in (tmp_path / "api.log").read_text()
        ticket = {"ticket": {"id": "t", "tenant": "default", "text": "strikethrough in markdown"}}
        assert httpx.post(f"{base}/v1/route", json=ticket, timeout=30).status_code == 401
        # crossroute keys create | list | revoke, and the key at work
        made = run_cli("keys", "create", "--tenant", "default", "--label", "cli test", "--json",
                       env=env)  # fmt: skip
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)
        assert key["scopes"] == ["route", "search"] and key["token"].startswith("crk_")
        res = httpx.post(f"{base}/v1/route", json=ticket, timeout=30,
                         headers={"Authorization": f"Bearer {key['token']}"})  # fmt: skip
        assert res.status_code == 200, res.text
        assert (
            res.json()["targets"] and res.headers["x-crossroute-space"] == health.json()["space_id"]
        )
        listed = run_cli("keys", "list", "--tenant", "default", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert [k["key_id"] for k in json.loads(listed.stdout)] == [key["key_id"]]
        assert key["token"] not in listed.stdout and "token" not in json.loads(listed.stdout)[0]
        bad_scope = run_cli("keys", "create", "--tenant", "default", "--scope", "root", env=env)
        assert bad_scope.returncode == 2 and "unknown scope root" in bad_scope.stderr
        revoke = run_cli("keys", "revoke", key["key_id"], env=env)
        assert revoke.returncode == 0 and "revoked" in revoke.stderr
        assert run_cli("keys", "revoke", "nosuchkey", env=env).returncode == 2
        text = run_cli("keys", "list", env=env).stdout
        assert key["key_id"] in text and "revoked" in text
        assert key["token"] not in (tmp_path / "api.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    refused = run_cli("index", "drop", "--yes", env=env)
    assert refused.returncode == 2 and "is live" in refused.stderr
    drop = run_cli("index", "drop", "--yes", "--force", env=env)
    assert drop.returncode == 0, drop.stderr
    spaces = run_cli("index", "spaces", "--json", env=env)
    assert json.loads(spaces.stdout)["deployment"]["live"] is None
