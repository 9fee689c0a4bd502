"""The console's operations pages in a real browser (Debian's chromium, headless), against a real
deployment: a worker and ``crossroute api`` as processes, on the dev stack's Kafka and Redis.

An agent answers a ticket of the human queue from the keyboard alone; the answer is published to
Kafka, the worker learns from it, and the next similar ticket is routed automatically (by the
worker, and in the console's Route page), while the abstention rate moves. The pipeline page
charts the worker's metrics; a hostile dead letter is browsed and stays inert text; the models
page lists the deployment's spaces with their manifests and gate verdicts.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from confluent_kafka import Producer

from models.cli import keep_report
from router.auth import KeyStore
from router.deploy import Deployments
from router.feedback import TicketLog
from router.gate import METRICS, Check, GateRecords, GateReport, SliceRow
from router.schemas import Article, Ticket
from streams.devstack import DevStack
from streams.events import ArticleUpserted, TicketCreated
from tests.conftest import REPO
from tests.integration.browser import browser, shot, sign_in, wait
from tests.integration.conftest import free_port
from tests.integration.streams.test_worker import Decisions, WorkerEnv, stop_processes, wait_for

__all__ = ["browser"]  # the module's browser fixture

ARTICLES = {
    "reset-password": ("Reset your password", "Forgot your password? Use the reset link to sign in."),
    "track-order": ("Track your order", "Where is my parcel? Follow the delivery tracking page."),
    "returns": ("Returns and repairs",
                "Send a faulty item back for a repair or a refund within 30 days."),
    "gift-cards": ("Gift cards", "Buy, redeem and check the balance of a gift card."),
}  # fmt: skip
ZIPPER = "The zipper on my winter jacket broke off after two days"
SIMILAR = "The zipper of my winter coat broke after two days"
DOG = 'Can I bring my dog <img src=x onerror="window.__pwned=6"> into the store?'  # hostile text
HOSTILE = b'<img src=x onerror="window.__pwned=3">{"type": <script>window.__pwned=4</script>'


class Ops:
    """A deployment with its API: the worker env, the API's URL, an admin key of acme."""

    def __init__(self, env: WorkerEnv, base: str, token: str, decisions: Decisions) -> None:
        self.env, self.base, self.token, self.decisions = env, base, token, decisions

    def route(self, ticket_id: str, text: str) -> Any:
        ticket = TicketCreated(ticket=Ticket(id=ticket_id, tenant="acme", text=text))
        assert self.env.publisher.publish([ticket]).failed == []
        return self.decisions.of("acme", ticket_id)


@pytest.fixture(scope="module")
def ops(
    dev_stack: DevStack, default_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ops]:
    env = WorkerEnv(dev_stack, default_bundle, tmp_path_factory.mktemp("ops"))
    port = free_port()
    env.env.update({
        "CROSSROUTE_ROUTING__THRESHOLD": "0.3",  # the zipper tickets score about 0.26 at best
        "CROSSROUTE_WORKER__METRICS_PORT": str(free_port()),
        "CROSSROUTE_API__PORT": str(port),
        "CROSSROUTE_MODEL__REPORTS_DIR": str(env.tmp / "reports"),
    })  # fmt: skip
    env.start()
    articles = [
        ArticleUpserted(source_version=1, article=Article(id=f"acme-{k}", tenant="acme", title=t,
                                                          body=b))
        for k, (t, b) in ARTICLES.items()
    ]  # fmt: skip
    assert env.publisher.publish(articles).failed == []
    client = redis.Redis.from_url(dev_stack.redis_url())
    ns = env.index_settings.namespace
    wait_for(lambda: client.exists(f"{ns}:deployment") == 1, "the worker's space", 240, env)
    log = env.tmp / "api.log"
    with log.open("wb") as out:  # `crossroute api` as users run it, once the worker serves
        api = subprocess.Popen([sys.executable, "-m", "streams.cli", "api"], env=env.env,
                               cwd=REPO, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert api.poll() is None, log.read_text()
        try:
            return int(httpx.get(f"{base}/healthz").json().get("documents", 0)) >= len(ARTICLES)
        except httpx.HTTPError:
            return False

    wait_for(healthy, "the API and the articles", 240, env)
    _, token = KeyStore(client, ns).create("acme", ["admin"])
    decisions = Decisions(env)
    yield Ops(env, base, token, decisions)
    decisions.close()
    stop_processes([api])
    env.stop()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def tab_to(driver: Any, css: str, limit: int = 40) -> Any:
    """Press Tab until the focus is on ``css``; the element."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(limit):
        active = driver.switch_to.active_element
        if driver.execute_script("return arguments[0].matches(arguments[1])", active, css):
            return active
        ActionChains(driver).send_keys(Keys.TAB).perform()
    pytest.fail(f"{css} is not reachable with Tab")


def reloaded(driver: Any, css: str, starts: str, timeout: float = 30) -> str:
    """The text of ``css`` once it starts with ``starts``, reloading the page until then."""
    deadline = time.monotonic() + timeout
    text = None
    while True:
        driver.refresh()
        for _ in range(20):  # the page renders after its API call
            found = driver.find_elements("css selector", css)
            if found:
                text = found[0].text
                if text.startswith(starts):
                    return str(text)
                break
            time.sleep(0.25)
        assert time.monotonic() < deadline, f"{css}: {text!r}, not {starts!r}"
        time.sleep(1)


def keys(driver: Any, *sequence: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*sequence).perform()


def test_an_answer_from_the_queue_routes_the_next_similar_ticket(browser: Any, ops: Ops) -> None:
    from selenium.webdriver.common.keys import Keys

    assert ops.route("zip-1", ZIPPER).queue == "human"
    assert ops.route("dog-1", DOG).queue == "human"
    sign_in(browser, ops.base, ops.token)
    browser.get(f"{ops.base}/console/#/queue")
    wait(browser, 'li.ticket[data-ticket-id="zip-1"]')
    hour = browser.find_element("css selector", "#abstention-hour").text
    assert hour.startswith("Last hour: 2 of 2 tickets (100%)"), hour
    listed = [li.get_attribute("data-ticket-id") for li in
              browser.find_elements("css selector", "li.ticket")]  # fmt: skip
    assert listed == ["dog-1", "zip-1"]  # newest first
    dog = browser.find_element("css selector", 'li[data-ticket-id="dog-1"] .ticket-text')
    assert dog.text == DOG  # shown as the text it is: no element, no script
    assert browser.find_elements("css selector", "#queue-list img") == []
    assert browser.execute_script("return window.__pwned") is None
    shot(browser, "queue")

    # keyboard only: Tab to the queue, ↓ to the zipper ticket, Enter, type the article, send
    first = tab_to(browser, "li.ticket")
    assert first.get_attribute("data-ticket-id") == "dog-1"
    keys(browser, Keys.ARROW_DOWN)
    current = browser.switch_to.active_element
    assert current.get_attribute("data-ticket-id") == "zip-1"
    assert current.get_attribute("aria-current") == "true"
    keys(browser, "k")  # vi keys too: back up, and down again
    assert browser.switch_to.active_element.get_attribute("data-ticket-id") == "dog-1"
    keys(browser, "j", Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("type") == "radio"
    tab_to(browser, 'li[data-ticket-id="zip-1"] input.other-id').send_keys("acme-returns")
    tab_to(browser, 'li[data-ticket-id="zip-1"] button.send')
    keys(browser, Keys.ENTER)
    status = wait(browser, "#queue-status")
    wait_for(lambda: "zip-1 resolved with acme-returns" in status.text, "the answer", 30, ops.env)
    assert [li.get_attribute("data-ticket-id") for li in
            browser.find_elements("css selector", "li.ticket")] == ["dog-1"]  # fmt: skip

    # the worker learns from it: out of the queue, an exemplar; the next similar ticket is routed
    client = redis.Redis.from_url(ops.env.stack.redis_url())
    log = TicketLog(client, ops.env.index_settings.namespace, 3600)
    wait_for(lambda: [t.ticket_id for t in log.queue("acme").tickets] == ["dog-1"],
             "the answered ticket to leave the queue", 120, ops.env)  # fmt: skip
    decision = ops.route("zip-2", SIMILAR)
    assert decision.queue == "auto", decision
    assert decision.targets[0].doc_id == "acme-returns"
    assert decision.targets[0].exemplar_id == "fb-zip-1"
    # the rate moved (the worker counts a decision just after publishing it: reload until then)
    hour = reloaded(browser, "#abstention-hour", "Last hour: 2 of 3 tickets (67%)")
    assert hour.endswith("Last 24 hours: 2 of 3 (67%).")
    assert wait(browser, "#queue-open").text == "1 open"

    # and in the console's Route page
    browser.get(f"{ops.base}/console/#/route")
    wait(browser, "#ticket-text").send_keys(SIMILAR)
    browser.find_element("css selector", "#route-submit").click()
    assert wait(browser, "#decision").text == "Routed automatically"
    top = browser.find_element("css selector", "#targets tbody tr")
    assert top.get_attribute("data-doc-id") == "acme-returns"
    assert "via resolved ticket fb-zip-1" in top.text


def test_pipeline_health_and_a_hostile_dead_letter(browser: Any, ops: Ops) -> None:
    producer = Producer(ops.env.stack.kafka_config())
    producer.produce(ops.env.topics.name("tickets"), key=b"acme/evil", value=HOSTILE)
    assert producer.flush(30) == 0
    ops.route("after-evil", "Where is my parcel?")  # processed after the hostile record
    sign_in(browser, ops.base, ops.token)

    # the pipeline page: the worker's metrics scraped every 10 s, so two samples make a chart
    browser.get(f"{ops.base}/console/#/pipeline")
    reloaded(browser, "#dead-reasons", "invalid_event", timeout=60)
    assert wait(browser, "#events-chart rect", 30)
    lag = browser.find_element("css selector", "#lag").text
    assert ops.env.topics.name("tickets") in lag
    live = browser.find_element("css selector", "#space-docs tbody tr")
    cells = [td.text for td in live.find_elements("css selector", "td")]
    assert cells[0] == "live" and int(cells[1]) >= len(ARTICLES), cells
    shot(browser, "pipeline")

    # the dead letter: its reason, source offset and payload, as text; nothing ran
    browser.get(f"{ops.base}/console/#/deadletters")
    row = wait(browser, "#dead-letters tbody tr")
    assert "acme/evil" in row.text and ops.env.topics.name("tickets") in row.text
    row.find_element("css selector", "button.open").click()
    payload = wait(browser, "#dead-payload")
    assert payload.text == HOSTILE.decode()
    detail = browser.find_element("css selector", "#dead-detail")
    assert detail.find_elements("css selector", "img, script") == []
    assert browser.execute_script("return window.__pwned") is None
    shot(browser, "deadletters")


def test_models_and_spaces(browser: Any, ops: Ops) -> None:
    client = redis.Redis.from_url(ops.env.stack.redis_url())
    ns = ops.env.index_settings.namespace
    space_id = Deployments(client, ops.env.index_settings).state().live
    assert space_id is not None
    sign_in(browser, ops.base, ops.token)
    browser.get(f"{ops.base}/console/#/models")
    card = wait(browser, f'section.space[data-space-id="{space_id}"]')
    assert "live" in card.find_element("css selector", "h2").text
    assert card.find_element("css selector", "td.spec").text.startswith("default v")
    documents = re.search(r"· (\d+) documents", card.text)
    assert documents and int(documents[1]) >= len(ARTICLES)  # (and the exemplars answers made)
    assert "Not gated yet" in card.text
    # what `crossroute gate` records (its verdict on this space against another), shown per slice
    report = GateReport(
        candidate=space_id, baseline="sp-00000000000000000000", tenant="acme", go=False,
        checks=[Check("retrieval", "fail", ["slice kind=photo lost 0.040 recall@10"])],
        slices=[SliceRow("myntra", "all", 120, True, {m: 0.5 for m in METRICS},
                         {m: 0.48 for m in METRICS}),
                SliceRow("myntra", "kind=photo", 40, True, {m: 0.4 for m in METRICS},
                         {m: 0.44 for m in METRICS})],
        settings={},
    )  # fmt: skip
    GateRecords(client, ns).record(report)
    browser.refresh()
    verdict = wait(browser, f'[id="gate-{space_id}"]')
    assert verdict.text.startswith("NO-GO against sp-00000000000000000000")
    rows = browser.find_elements("css selector", f'[id="slices-{space_id}"] tbody tr')
    assert [r.find_elements("css selector", "td")[1].text for r in rows] == ["all", "kind=photo"]
    assert rows[1].find_elements("css selector", "td.worse")  # the slice that got worse stands out
    assert "slice kind=photo lost" in browser.find_element("css selector", "#spaces").text

    # an eval report kept by `crossroute eval --report` (models.cli.keep_report): listed, and
    # served only as an inert attachment
    result = {"dataset": "myntra-dev", "model": {"space_id": space_id}, "n_queries": 300,
              "metrics": {"recall@10": 0.61, "mrr@10": 0.42, "ndcg@10": 0.47}}  # fmt: skip
    keep_report(Path(ops.env.env["CROSSROUTE_MODEL__REPORTS_DIR"]), result,
                "<html><script>window.__pwned=5</script>report</html>")  # fmt: skip
    browser.refresh()
    row = wait(browser, f'[id="reports-{space_id}"] tr[data-report="myntra-dev"]')
    assert "myntra-dev" in row.text and "0.610" in row.text and "300" in row.text
    assert row.find_element("css selector", "button.download").text == "Download HTML"
    headers = {"Authorization": f"Bearer {ops.token}"}
    page = httpx.get(f"{ops.base}/v1/spaces/{space_id}/reports/myntra-dev", headers=headers)
    assert page.status_code == 200 and "window.__pwned=5" in page.text
    assert page.headers["content-security-policy"].startswith("sandbox;")
    assert page.headers["content-disposition"].startswith("attachment;")
    for bad in (f"{space_id}/reports/..%2F..%2Fsecret", "sp-x/reports/myntra-dev"):
        assert httpx.get(f"{ops.base}/v1/spaces/{bad}", headers=headers).status_code == 404
    assert httpx.get(f"{ops.base}/v1/spaces/{space_id}/reports/myntra-dev").status_code == 401
    shot(browser, "models")
