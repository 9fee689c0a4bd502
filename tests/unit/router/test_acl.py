"""The ACL rules of each role (their effect is tested on the real Redis in
tests/integration/streams/test_redis_acl.py) and `crossroute index acl`."""

from __future__ import annotations

import hashlib

from router.acl import acl_rules
from tests.unit.test_cli import run_cli


def test_the_api_role_writes_only_shared_decisions() -> None:
    *rules, selector = acl_rules("ns", "api")
    assert rules[:3] == ["resetkeys", "resetchannels", "-@all"]
    assert not any(r in rules for r in ("+@write", "+@scripting", "+@transaction", "+eval"))
    assert not any(r.startswith("+FT.") and r not in ("+FT.SEARCH", "+FT.AGGREGATE", "+FT.INFO",
                                                       "+FT._LIST") for r in rules)  # fmt: skip
    assert rules[-4:] == ["-@dangerous", "-@admin", "-keys", "-scan"]  # last: nothing re-grants
    assert all("~" not in r or r.split("~", 1)[1].startswith("ns:") for r in rules)
    # its one write: SET, in a selector of its own, on shared decisions (router.shared)
    assert selector == "(~ns:decision:* +set)"


def test_the_worker_writes_only_its_spaces_deployment_and_logs() -> None:
    rules = acl_rules("ns", "worker", alias="served")
    writable = {r[1:] for r in rules if r.startswith("~")}
    assert "ns:*" not in writable and not any("apikey" in k for k in writable)
    assert {"ns:sp-*", "ns:deployment", "ns:served"} <= writable
    assert "+@write" in rules and rules[-4:] == ["-@dangerous", "-@admin", "-keys", "-scan"]


def test_crossroute_index_acl_prints_a_users_acl_line_without_the_password() -> None:
    env = {"CROSSROUTE_INDEX__NAMESPACE": "shop", "WORKER_PW": "s3cret-pw"}
    out = run_cli("index", "acl", "worker", "--password-env", "WORKER_PW", env=env)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    digest = hashlib.sha256(b"s3cret-pw").hexdigest()
    assert line == f"user crossroute-worker on #{digest} " + " ".join(acl_rules("shop", "worker"))
    assert "s3cret-pw" not in out.stdout + out.stderr
    assert run_cli("index", "acl", "root").returncode == 2
    missing = run_cli("index", "acl", "api", "--password-env", "NOPE_UNSET")
    assert missing.returncode == 2 and "NOPE_UNSET" in missing.stderr
