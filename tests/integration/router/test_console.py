"""The web console in a real browser: Debian's chromium, headless, driven through its chromedriver
(Selenium; no browser is downloaded), against the API served by uvicorn on the real index and
bundle. A user signs in with a key, types a ticket, attaches a photo and sees the right target with
its evidence; hostile titles stay text; the form works from the keyboard alone.

``CROSSROUTE_CONSOLE_SHOTS=docs/console`` saves a screenshot of each page there (docs/console.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router.api import create_app
from router.auth import KeyStore
from router.documents import Indexer
from router.routing import Router
from router.schemas import Article
from tests.integration.browser import browser, serve_app, shot, sign_in, wait
from tests.integration.router.conftest import catalog_products, drawn, screenshot

__all__ = ["browser"]  # the module's browser fixture
HOSTILE = '<img src=x onerror="window.__pwned=1">Screen <script>window.__pwned=2</script>repair'


@pytest.fixture
def served(router: Router) -> Iterator[tuple[str, str]]:
    """The API on a loopback port (uvicorn, as `crossroute api` serves it) and an acme key."""
    indexer = Indexer(router.embedder, router.index)
    docs = [
        *catalog_products(),
        Article(id="acme-hostile", tenant="acme", title=HOSTILE,
                body="Cracked screen repair: book a screen replacement at a repair shop."),
    ]  # fmt: skip
    assert indexer.upsert(docs, [1] * len(docs)).failed == []
    store = KeyStore(router.index.client, router.index.settings.namespace)
    _, token = store.create("acme", ["route", "search"])
    with serve_app(create_app(router, keys=store)) as base:
        yield base, token


def test_route_a_ticket_with_a_photo(browser: Any, served: tuple[str, str], tmp_path: Path) -> None:
    base, token = served
    sign_in(browser, base, token)
    photo = tmp_path / "laptop.png"
    photo.write_bytes(drawn("laptops", (150, 150, 155), customer=True))
    browser.find_element("css selector", "#ticket-text").send_keys(
        "It broke after three weeks. Is this covered?"
    )
    browser.find_element("css selector", "#photo").send_keys(str(photo))
    wait(browser, "#photo-preview img")
    browser.find_element("css selector", "#route-submit").click()
    decision = wait(browser, "#decision")
    assert decision.text == "Routed automatically"
    first = browser.find_element("css selector", "#targets tbody tr")
    assert first.get_attribute("data-doc-id") == "acme-laptop-warranty"
    assert "Laptop warranty" in first.text and "catalog" in first.text
    assert "via product sku-laptop" in first.text
    shot(browser, "route")
    # the decision's link opens it again (a new page load, same tab and key)
    href = browser.find_element("css selector", "#share-link").get_attribute("href")
    browser.get("about:blank")
    browser.get(href)
    assert wait(browser, "#shared-text").text == "It broke after three weeks. Is this covered?"
    shared = browser.find_element("css selector", "#targets tbody tr")
    assert shared.get_attribute("data-doc-id") == "acme-laptop-warranty"
    assert "catalog" in shared.text


def test_hostile_titles_stay_text_and_the_form_works_from_the_keyboard(
    browser: Any, served: tuple[str, str]
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    base, token = served
    sign_in(browser, base, token)
    text = browser.find_element("css selector", "#ticket-text")
    assert browser.switch_to.active_element != text
    # keyboard only: Tab from the page start reaches the skip link, then onwards to the text box
    actions = ActionChains(browser)
    for _ in range(12):
        actions.send_keys(Keys.TAB).perform()
        if browser.switch_to.active_element == text:
            break
    assert browser.switch_to.active_element == text, "the ticket text is not reachable by Tab"
    actions.send_keys("My screen cracked, where can I get a screen repair?").perform()
    for _ in range(6):  # on to the Route button, pressed with Enter
        actions.send_keys(Keys.TAB).perform()
        if browser.switch_to.active_element.get_attribute("id") == "route-submit":
            break
    actions.send_keys(Keys.ENTER).perform()
    wait(browser, "#decision")
    row = browser.find_element("css selector", 'tr[data-doc-id="acme-hostile"]')
    title = row.find_element("css selector", ".title")
    assert title.text == HOSTILE  # shown as the text it is
    assert row.find_elements("css selector", "img, script") == []
    assert browser.execute_script("return window.__pwned") is None


def test_a_wrong_key_is_refused_with_a_message(browser: Any, served: tuple[str, str]) -> None:
    base, _ = served
    browser.get(f"{base}/console/")
    wait(browser, "#api-key").send_keys("crk_0000000000000000_not-a-key")
    browser.find_element("css selector", "#key-form button[type=submit]").click()
    alert = wait(browser, "#key-form [role=alert]")
    assert "invalid or revoked API key" in alert.text
    assert browser.find_elements("css selector", "#route-form") == []


def test_search_by_text_and_by_image_with_filters(
    browser: Any, served: tuple[str, str], tmp_path: Path
) -> None:
    base, token = served
    sign_in(browser, base, token)
    browser.get(f"{base}/console/#/search")
    text = wait(browser, "#search-text")
    text.send_keys("laptop")
    browser.find_element("css selector", 'input[name=kind][value="product"]').click()
    browser.find_element("css selector", "#search-submit").click()
    wait(browser, "#hits")
    rows = browser.find_elements("css selector", "#hits tbody tr")
    assert rows[0].get_attribute("data-id") == "sku-laptop" and "14-inch laptop" in rows[0].text
    thumb = rows[0].find_element("css selector", "img.thumb")  # the product's own thumbnail
    assert thumb.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", thumb) == 96
    assert {r.find_elements("css selector", "td")[2].text for r in rows} == {"product"}

    # an image alone, filtered to the shoes category: the boot, nothing from another category
    text.clear()
    photo = tmp_path / "boot.png"
    photo.write_bytes(drawn("shoes", (120, 72, 40), customer=True))
    browser.find_element("css selector", "#search-image").send_keys(str(photo))
    browser.find_element("css selector", "#search-category").send_keys("shoes")
    browser.find_element("css selector", "#search-submit").click()
    wait(browser, '#hits tbody tr[data-id="sku-boot"]')
    ids = [
        r.get_attribute("data-id") for r in browser.find_elements("css selector", "#hits tbody tr")
    ]
    assert ids[0] == "sku-boot" and "sku-laptop" not in ids
    shot(browser, "search")


def test_a_screenshot_alone_is_a_ticket_and_nothing_at_all_is_refused_on_the_page(
    browser: Any, served: tuple[str, str], tmp_path: Path
) -> None:
    base, token = served
    sign_in(browser, base, token)
    browser.find_element("css selector", "#route-submit").click()  # no text, no image
    alert = wait(browser, "#result [role=alert]")
    assert alert.text == "Type the ticket's text, or attach a photo or a screenshot."
    shot_file = tmp_path / "error.png"
    shot_file.write_bytes(screenshot("Payment failed: gateway timeout"))
    browser.find_element("css selector", "#screenshot").send_keys(str(shot_file))
    browser.find_element("css selector", "#route-submit").click()
    wait(browser, "#decision")
    top = browser.find_element("css selector", "#targets tbody tr")
    assert top.get_attribute("data-doc-id") == "acme-payment-failed"
    assert "payment" in browser.find_element("css selector", "#ocr-text").text.lower()
