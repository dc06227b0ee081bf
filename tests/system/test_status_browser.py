"""The status page in a real browser: headless Chromium (Debian's, driven by Selenium)
loads /status from a gateway started by start.sh, with real traffic in flight and one
real dead letter; reads the numbers, presses replay, sees the entry leave the list and
the message answered. The screenshot goes to tmp (``STATUS_SCREENSHOT`` names another
file: that is how docs/status-page.png was made)."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import signed_headers
from tests.support import Stand, wait_for
from tests.system.test_start_sh import _boot, _container_env, _ready, _stop

pytestmark = pytest.mark.slow


def _browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1600"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def _post(url: str, payload: dict) -> int:  # type: ignore[type-arg]
    import requests

    body = json.dumps(payload).encode()
    return requests.post(
        f"{url}/webhook/chatwoot/default", data=body, headers=signed_headers(body), timeout=5
    ).status_code


def test_the_status_page_in_a_browser_shows_the_queue_and_replays_a_dead_letter(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    stand.reset()
    env, port = _container_env(
        redis_url,
        stand,
        tmp_path,
        STATUS_BASIC_AUTH="ops:st4tus-pass",
        GAUGES_INTERVAL_SECONDS="0.5",
        BOT_BACKEND="http",
        BOT_URL=f"{stand.url}/bot",
        CELERY_POOL="threads",  # the periodic tasks run while a bot call is in flight
        CELERY_CONCURRENCY="4",
    )
    log = tmp_path / "start.log"
    proc = _boot(env, log)
    url = f"http://127.0.0.1:{port}"
    browser = None
    try:
        wait_for(lambda: _ready(url) or proc.poll() is not None, timeout=40)
        assert proc.poll() is None, log.read_text()[-3000:]
        stand.fail_next.append(422)  # Chatwoot refuses the first reply: a real dead letter
        assert _post(url, cw.message("please refund my order", 120)) == 202
        wait_for(lambda: rdb.llen(keys.dead_letters("default")) == 1, timeout=15)
        stand.bot_delay = 6.0  # the bot thinks: a batch in flight, fragments waiting behind it
        assert _post(url, cw.message("first question", 121)) == 202
        wait_for(lambda: any(str(c["conversation_id"]) == "121" for c in stand.bot_calls), timeout=10)
        for text in ("second", "third"):
            assert _post(url, cw.message(text, 121)) == 202
        wait_for(lambda: rdb.hget(keys.gauges("default"), "waiting") == "3", timeout=10)

        browser = _browser()
        browser.execute_cdp_cmd("Network.enable", {})
        token = base64.b64encode(b"ops:st4tus-pass").decode()
        browser.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        browser.get(f"{url}/status")
        text = browser.find_element(By.TAG_NAME, "body").text
        assert re.search(r"messages waiting or in flight\s+3", text), text[:2000]
        assert re.search(r"dead letters waiting\s+1", text)
        assert "121" in text and "please refund" not in text  # no message bodies on the page
        assert browser.find_elements(By.TAG_NAME, "svg") or "no fragment pairs" in text
        screenshot = Path(os.environ.get("STATUS_SCREENSHOT") or tmp_path / "status-page.png")
        browser.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000

        stand.bot_delay = 0.0
        browser.find_element(By.CSS_SELECTOR, "table form input[name=confirm]").click()  # the entry's own
        browser.find_element(By.CSS_SELECTOR, "table form button").click()
        wait_for(
            lambda: (
                "Dead letters" in browser.page_source
                and "<h3>Dead letters</h3><p>none" in browser.page_source
            ),
            timeout=10,
        )
        assert rdb.llen(keys.dead_letters("default")) == 0
        wait_for(lambda: stand.replies(120) == ["please refund my order"], timeout=30)  # answered after all
    finally:
        if browser is not None:
            browser.quit()
        _stop(proc, log)
