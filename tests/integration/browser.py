"""Browser tests' helpers: Debian's chromium, headless, driven through its chromedriver (Selenium;
no browser is downloaded), an app served by uvicorn on a loopback port, and the console's sign-in.

``CROSSROUTE_CONSOLE_SHOTS=docs/console`` saves a screenshot of each page there (docs/console.md).
A test module imports :func:`browser` to get one browser for all its tests."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.conftest import IN_CI
from tests.integration.conftest import free_port

__all__ = ["browser", "serve_app", "shot", "sign_in", "wait"]

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = os.environ.get("CROSSROUTE_CONSOLE_SHOTS")  # read at import: tests run with a clean env


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "Debian's chromium and chromium-driver are not installed (.ci/bootstrap does it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1500", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a loopback port (as ``crossroute api`` serves it); its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait(driver: Any, css: str, timeout: float = 60) -> Any:
    """The visible element ``css`` once it appears; else fail with what the page shows and logs."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(
            ec.visibility_of_element_located(("css selector", css))
        )
    except TimeoutException:
        body = driver.find_element("tag name", "body").text
        logs = driver.get_log("browser")
        pytest.fail(f"{css} did not appear at {driver.current_url}; page: {body!r}; log: {logs}")


def shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def sign_in(driver: Any, base: str, token: str) -> None:
    """Sign in to the console at ``base`` with ``token`` (signed out first)."""
    driver.get(f"{base}/console/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    key = wait(driver, "#api-key")
    shot(driver, "sign-in")
    key.send_keys(token)
    driver.find_element("css selector", "#key-form button[type=submit]").click()
    wait(driver, "#route-form")
    assert "tenant acme" in driver.find_element("css selector", "#who").text
